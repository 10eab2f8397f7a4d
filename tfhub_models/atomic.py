"""Atomic writes: a file or a whole directory appears complete or not at all.

Everything is written into a hidden sibling (same file system), flushed, and
renamed into place last.  Exports (`export.versioned`), saved presets
(`checkpoints.save`) and training side files (`training`) all write this way.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Callable


def fsync_tree(directory: pathlib.Path) -> None:
  """Flushes every file and directory below `directory` to disk (before a rename)."""
  for root, _, files in os.walk(directory):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        os.fsync(f.fileno())
    handle = os.open(root, os.O_RDONLY)
    try:
      os.fsync(handle)
    finally:
      os.close(handle)


def write_json(path: str | os.PathLike, value) -> None:
  """Writes `value` as JSON to `path` through a hidden temporary file and a rename."""
  path = pathlib.Path(path)
  fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(value, f, indent=2)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def write_directory(target: str | os.PathLike, write: Callable[[pathlib.Path], None], *,
                    overwrite: bool = False) -> pathlib.Path:
  """Calls write(staging), then puts the staging directory at `target`.

  A `target` that exists and is not an empty directory is refused unless
  `overwrite`; then the old one is moved aside (a hidden sibling
  `.NAME.old-*/previous`), the new one renamed in, and the old one removed.
  Both are complete at every moment; only a crash between the two renames
  leaves `target` absent, with the old directory in that sibling (Linux has no
  portable exchange of two directories).  On any failure the staging directory
  is removed and `target` is untouched.
  """
  target = pathlib.Path(target).absolute()
  if target.exists() and not target.is_dir():
    raise FileExistsError(f"{target} exists and is not a directory")
  if target.exists() and any(target.iterdir()) and not overwrite:
    raise FileExistsError(f"{target} exists and is not empty; pass overwrite=True to replace it")
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
  try:
    write(staging)
    os.chmod(staging, 0o755)
    fsync_tree(staging)
    if target.exists():
      old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
      os.rename(target, old / "previous")
      try:
        os.rename(staging, target)
      except BaseException:
        os.rename(old / "previous", target)
        raise
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(staging, target)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return target
