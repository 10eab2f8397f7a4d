"""Atomic writes: a file or a whole directory appears complete or not at all.

Everything is written into a hidden sibling (same file system), flushed, and
renamed into place last.  Exports (`export.versioned`), saved presets
(`checkpoints.save`) and training side files (`training`) all write this way.

A writer killed before its rename (kill -9, a lost node) leaves its hidden
sibling behind; the next write of the same kind into the same directory removes
it.  Each writer holds an exclusive `flock` on its sibling while it writes (the
kernel drops it when the process dies, however it dies), so a sibling is stale
when nobody holds its lock and it was last changed well before the running
write began; one still being written by a live process is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator

_log = logging.getLogger("tfhub_models.atomic")

# A sibling changed less than this long before our write began is left alone, even
# unlocked: it may belong to a writer between creating it and locking it.
GRACE_SECONDS = 1.0


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


def seal(staging: pathlib.Path) -> None:
  """Makes a staging directory readable by all and flushes it to disk: ready to be
  renamed into place."""
  os.chmod(staging, 0o755)
  fsync_tree(staging)


def _lock(path: pathlib.Path, blocking: bool) -> int | None:
  """An exclusive flock on the file or directory `path` (its fd, to close to
  release it), or None when another process holds it."""
  fd = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
  except OSError as e:
    os.close(fd)
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      return None
    raise
  return fd


def remove_stale(directory: pathlib.Path, prefix: str, started: float, *,
                 log: logging.Logger = _log) -> list[pathlib.Path]:
  """Removes what interrupted writers left in `directory` under names starting with
  `prefix`: entries no live process holds locked and last changed `GRACE_SECONDS`
  before `started` (a time.time()).  Each removal is logged as a warning on `log`.
  Returns what it removed."""
  removed = []
  for path in sorted(pathlib.Path(directory).glob(glob_escape(prefix) + "*")):
    try:
      if path.is_symlink() or not (path.is_dir() or path.is_file()):
        continue
      if path.stat().st_mtime > started - GRACE_SECONDS:
        continue
      fd = _lock(path, blocking=False)
    except OSError:  # gone already, or a file system without flock: leave it
      continue
    if fd is None:  # a live writer holds it
      continue
    try:
      if path.is_dir():
        shutil.rmtree(path)
      else:
        path.unlink()
      removed.append(path)
    except OSError as e:
      log.warning("could not remove %s, left by an interrupted write: %s", path, e)
    finally:
      os.close(fd)
  for path in removed:
    log.warning("removed %s, left by an interrupted write", path)
  return removed


def glob_escape(text: str) -> str:
  """`text` matched literally by pathlib's glob."""
  return "".join(f"[{c}]" if c in "*?[" else c for c in text)


@contextlib.contextmanager
def staging_directory(parent: pathlib.Path, prefix: str, *, stale_prefix: str | None = None,
                      log: logging.Logger = _log) -> Iterator[pathlib.Path]:
  """A new directory PARENT/PREFIX…, locked for as long as the block runs.

  Before the block runs, what interrupted writers left under `stale_prefix`
  (default `prefix`) is removed (`remove_stale`).  If the block raises, the new
  directory is removed; if it renamed the directory into place, that stays.
  On a file system without flock the write still happens, and nothing is
  cleaned up (logged).
  """
  started = time.time()
  path = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
  try:
    lock = _lock(path, blocking=True)
  except OSError as e:
    log.warning("cannot lock %s (%s); what interrupted writes left is not removed", path, e)
    lock = None
  try:
    if lock is not None:
      remove_stale(parent, stale_prefix or prefix, started, log=log)
    yield path
  except BaseException:
    shutil.rmtree(path, ignore_errors=True)
    raise
  finally:
    if lock is not None:
      os.close(lock)


def write_json(path: str | os.PathLike, value) -> None:
  """Writes `value` as JSON to `path` through a hidden temporary file and a rename."""
  path = pathlib.Path(path)
  prefix = f".{path.name}.tmp-"
  started = time.time()
  fd, temporary = tempfile.mkstemp(prefix=prefix, dir=path.parent)
  try:
    with os.fdopen(fd, "w") as f:
      try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
      except OSError as e:  # a file system without flock: write, but clean nothing up
        _log.warning("cannot lock %s (%s); what interrupted writes left is not removed",
                     temporary, e)
      else:
        remove_stale(path.parent, prefix, started)
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
  portable exchange of two directories), which is never removed for you.  On
  any failure the staging directory is removed and `target` is untouched;
  staging directories (`.NAME.tmp-*`) of interrupted writes are removed first.
  """
  target = pathlib.Path(target).absolute()
  if target.exists() and not target.is_dir():
    raise FileExistsError(f"{target} exists and is not a directory")
  if target.exists() and any(target.iterdir()) and not overwrite:
    raise FileExistsError(f"{target} exists and is not empty; pass overwrite=True to replace it")
  target.parent.mkdir(parents=True, exist_ok=True)
  with staging_directory(target.parent, f".{target.name}.tmp-") as staging:
    write(staging)
    seal(staging)
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
  return target
