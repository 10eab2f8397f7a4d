"""Versioned, atomic writes of BASE/NAME/VERSION (serving and TF Hub exports alike).

The version is written into a hidden staging directory beside the target and
renamed into place last: same file system, so the rename is atomic, and a
non-numeric name, which TF Serving ignores, so a server polling BASE/NAME
never sees half a version.

An export killed before its rename (kill -9, a lost node) leaves its staging
directory behind; the next export into the same BASE/NAME removes it.  Each
export holds an exclusive `flock` on its staging directory while it writes (the
kernel drops it when the process dies, however it dies), so a staging
directory is stale when nobody holds its lock and it was last changed well
before the running export began; one still being written by a live export is
never touched.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import pathlib
import shutil
import tempfile
import time
from typing import Callable

from tfhub_models.atomic import fsync_tree

log = logging.getLogger("tfhub_models.export")

STAGING_PREFIX = ".tmp-"
# A staging directory changed less than this long before ours began is left alone,
# even unlocked: it may belong to an export between creating it and locking it.
_GRACE_SECONDS = 1.0


def _lock(directory: pathlib.Path, blocking: bool) -> int | None:
  """An exclusive flock on `directory` (its fd, to close to release), or None when
  another process holds it."""
  fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
  except OSError as e:
    os.close(fd)
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      return None
    raise
  return fd


def remove_stale_staging(model_dir: pathlib.Path, started: float) -> list[pathlib.Path]:
  """Removes the staging directories of interrupted exports in `model_dir`: those no
  live process holds locked and last changed `_GRACE_SECONDS` before `started`
  (a time.time()).  Returns what it removed."""
  removed = []
  for path in sorted(model_dir.glob(STAGING_PREFIX + "*")):
    try:
      if not path.is_dir() or path.is_symlink():
        continue
      if path.stat().st_mtime > started - _GRACE_SECONDS:
        continue
      fd = _lock(path, blocking=False)
    except OSError:  # gone already, or a file system without flock: leave it
      continue
    if fd is None:  # a live export holds it
      continue
    try:
      shutil.rmtree(path)
      removed.append(path)
    except OSError as e:
      log.warning("could not remove %s, left by an interrupted export: %s", path, e)
    finally:
      os.close(fd)
  for path in removed:
    log.warning("removed %s, the staging directory of an interrupted export", path)
  return removed


def next_version(model_dir: pathlib.Path) -> int:
  """One more than the largest numeric version directory (1 if none)."""
  versions = [int(p.name) for p in model_dir.iterdir()
              if p.is_dir() and p.name.isdigit()] if model_dir.exists() else []
  return max(versions, default=0) + 1


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
  if int(version) < 1:
    raise ValueError(f"version must be a positive integer, got {version}")
  final = model_dir / str(int(version))
  if final.exists():
    raise FileExistsError(f"{final} already exists; versions are never overwritten")
  started = time.time()
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{int(version)}-{os.getpid()}-",
                                          dir=model_dir))
  try:
    lock = _lock(staging, blocking=True)
  except OSError as e:  # a file system without flock: export, but clean nothing up
    log.warning("cannot lock %s (%s); stale staging directories are not removed", staging, e)
    lock = None
  try:
    if lock is not None:
      remove_stale_staging(model_dir, started)
    write(staging)
    os.chmod(staging, 0o755)
    fsync_tree(staging)
    if final.exists():
      raise FileExistsError(f"{final} appeared while exporting; versions are never overwritten")
    os.rename(staging, final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  finally:
    if lock is not None:
      os.close(lock)
  return final
