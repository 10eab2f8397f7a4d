"""Checkpoint side files: the history so far and the current epoch's step
losses, so that a resumed run reports whole epochs."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tfhub_models import atomic
from tfhub_models.training.errors import TrainingError


def _side_file(directory: str, number: int) -> str:
  return os.path.join(directory, f"history-{number}.json")


def save_checkpoint(manager, directory: str, history: dict, epoch: int,
                    partial: tuple) -> None:
  """The side file of the next checkpoint (history, and the current epoch's step
  losses, weight and hit sums so far, so that a resumed epoch reports the whole
  epoch), then the checkpoint.  Each checkpoint has its own side file, written
  first: a crash between the two leaves the previous pair intact."""
  number = int(manager.checkpoint.save_counter) + 1
  losses, weights, hits = partial
  try:
    atomic.write_json(_side_file(directory, number),
                      {"history": history, "epoch": epoch, "losses": losses, "weights": weights,
                       "hits": hits})
    manager.save(checkpoint_number=number)
  except (OSError, tf.errors.OpError) as e:   # a full disk, a directory gone: say so, keep going?
    last = manager.latest_checkpoint
    raise TrainingError(f"could not write checkpoint {number} to {directory} "
                        f"({getattr(e, 'message', None) or e}); "
                        + (f"{last} is the last good checkpoint" if last else
                           "no checkpoint was written before")) from None
  kept = {_side_file(directory, int(path.rsplit("-", 1)[1])) for path in manager.checkpoints}
  for name in os.listdir(directory):
    path = os.path.join(directory, name)
    if name.startswith("history-") and name.endswith(".json") and path not in kept:
      os.remove(path)


def read_side_file(directory: str | None, checkpoint_path: str | None) -> dict | None:
  """The side file of checkpoint `checkpoint_path` (".../ckpt-N")."""
  if directory is None or checkpoint_path is None:
    return None
  path = _side_file(directory, int(checkpoint_path.rsplit("-", 1)[1]))
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_partial(saved: dict | None, epoch: int, skip: int) -> tuple:
  """(step losses, weight sum, hit sum) of a resumed epoch's first `skip` steps."""
  if not skip or saved is None or saved.get("epoch") != epoch or len(saved["losses"]) != skip:
    return [], 0.0, 0.0
  return list(saved["losses"]), float(saved["weights"]), float(saved["hits"])
