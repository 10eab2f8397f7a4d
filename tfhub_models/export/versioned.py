"""Versioned, atomic writes of BASE/NAME/VERSION (serving and TF Hub exports alike).

The version is written into a hidden staging directory beside the target and
renamed into place last: same file system, so the rename is atomic, and a
non-numeric name, which TF Serving ignores, so a server polling BASE/NAME
never sees half a version.

An export killed before its rename (kill -9, a lost node) leaves its staging
directory behind; the next export into the same BASE/NAME removes it, unless a
live process still holds it (see `tfhub_models.atomic`, where staging lives).
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Callable

from tfhub_models import atomic

log = logging.getLogger("tfhub_models.export")

STAGING_PREFIX = ".tmp-"
# TF Serving reads a version directory's name as an int64 and ignores others.
MAX_VERSION = 2 ** 63 - 1


def remove_stale_staging(model_dir: pathlib.Path, started: float) -> list[pathlib.Path]:
  """Removes the staging directories of interrupted exports in `model_dir`: those no
  live process holds locked and last changed `atomic.GRACE_SECONDS` before
  `started` (a time.time()).  Returns what it removed."""
  return atomic.remove_stale(model_dir, STAGING_PREFIX, started, log=log)


def next_version(model_dir: pathlib.Path) -> int:
  """One more than the largest version directory TF Serving would read (1 if none)."""
  names = [p.name for p in model_dir.iterdir() if p.is_dir()] if model_dir.exists() else []
  versions = [int(n) for n in names if n.isascii() and n.isdigit() and len(n) <= 19]
  return max([v for v in versions if v <= MAX_VERSION], default=0) + 1


def write_atomically(base: str | os.PathLike, name: str, version: int | None,
                     write: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """Calls write(staging_dir), then renames staging_dir to BASE/NAME/VERSION.

  On any failure the staging directory is removed and nothing is left behind;
  an existing version is never overwritten.  Staging directories of interrupted
  exports are removed first (`remove_stale_staging`), each logged as a warning.
  Returns the version directory.
  """
  if not name or "/" in name or name.startswith("."):
    raise ValueError(f"invalid model name {name!r}")
  model_dir = pathlib.Path(base) / name
  model_dir.mkdir(parents=True, exist_ok=True)
  if version is None:
    version = next_version(model_dir)
  if not 1 <= int(version) <= MAX_VERSION:
    raise ValueError(f"version must be an integer from 1 to {MAX_VERSION} (TF Serving reads "
                     f"versions as int64), got {version}")
  final = model_dir / str(int(version))
  if final.exists():
    raise FileExistsError(f"{final} already exists; versions are never overwritten")
  with atomic.staging_directory(model_dir, f"{STAGING_PREFIX}{int(version)}-{os.getpid()}-",
                                stale_prefix=STAGING_PREFIX, log=log) as staging:
    write(staging)
    atomic.seal(staging)
    if final.exists():
      raise FileExistsError(f"{final} appeared while exporting; versions are never overwritten")
    os.rename(staging, final)
  return final
