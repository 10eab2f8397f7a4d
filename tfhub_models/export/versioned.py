"""Versioned, atomic writes of BASE/NAME/VERSION (serving and TF Hub exports alike).

The version is written into a hidden staging directory beside the target and
renamed into place last: same file system, so the rename is atomic, and a
non-numeric name, which TF Serving ignores, so a server polling BASE/NAME
never sees half a version.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Callable

from tfhub_models.atomic import fsync_tree


def next_version(model_dir: pathlib.Path) -> int:
  """One more than the largest numeric version directory (1 if none)."""
  versions = [int(p.name) for p in model_dir.iterdir()
              if p.is_dir() and p.name.isdigit()] if model_dir.exists() else []
  return max(versions, default=0) + 1


def write_atomically(base: str | os.PathLike, name: str, version: int | None,
                     write: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """Calls write(staging_dir), then renames staging_dir to BASE/NAME/VERSION.

  On any failure the staging directory is removed and nothing is left behind;
  an existing version is never overwritten.  Returns the version directory.
  """
  if not name or "/" in name or name.startswith("."):
    raise ValueError(f"invalid model name {name!r}")
  model_dir = pathlib.Path(base) / name
  model_dir.mkdir(parents=True, exist_ok=True)
  if version is None:
    version = next_version(model_dir)
  if int(version) < 1:
    raise ValueError(f"version must be a positive integer, got {version}")
  final = model_dir / str(int(version))
  if final.exists():
    raise FileExistsError(f"{final} already exists; versions are never overwritten")
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{int(version)}-", dir=model_dir))
  try:
    write(staging)
    os.chmod(staging, 0o755)
    fsync_tree(staging)
    if final.exists():
      raise FileExistsError(f"{final} appeared while exporting; versions are never overwritten")
    os.rename(staging, final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return final
