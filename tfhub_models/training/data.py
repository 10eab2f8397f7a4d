"""User data -> batches: arrays, tuples of text pairs, dicts or tf.data
Datasets, in a fixed order per epoch and seed, resumable at a step; and the
validation data's batches."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfhub_models.training.errors import TrainingError

DEFAULT_BATCH_SIZE = 32


def _is_string_list(x) -> bool:
  return isinstance(x, (list, tuple)) and (not x or isinstance(x[0], (str, bytes)))


def _as_array(x, name: str) -> np.ndarray:
  if isinstance(x, tf.Tensor):
    x = x.numpy()
  array = np.asarray(x, dtype=object if _is_string_list(x) else None)
  if array.ndim == 0:
    raise TrainingError(f"{name} must have a batch dimension, got a scalar")
  if array.dtype == object or array.dtype.kind in "SU":
    array = np.array([s if isinstance(s, bytes) else str(s).encode("utf-8") for s in array.ravel()],
                     dtype=object).reshape(array.shape)
  return array


def _structure(x, name: str):
  """Arrays of the user's x: an array, a tuple of arrays (pairs), or a dict of arrays."""
  if isinstance(x, dict):
    if not x:
      raise TrainingError(f"{name} is an empty dict")
    return {k: _as_array(v, f"{name}[{k!r}]") for k, v in x.items()}
  if isinstance(x, tuple) and len(x) == 2 and not _is_string_list(x):
    return tuple(_as_array(v, f"{name}[{i}]") for i, v in enumerate(x))
  return _as_array(x, name)


def _check_rows(data: dict) -> int:
  """The common row count of every array in data (name -> structure); errors name the problem."""
  counts = {}
  for name, structure in data.items():
    for i, array in enumerate(tf.nest.flatten(structure)):
      counts[name if len(tf.nest.flatten(structure)) == 1 else f"{name} part {i}"] = len(array)
      if array.dtype == object:
        empty = [j for j, s in enumerate(array.ravel()) if not s.strip()]
        if empty:
          raise TrainingError(f"{name} has empty strings (rows {empty[:5]})")
  if len(set(counts.values())) > 1:
    raise TrainingError("x, y and sample_weight must have the same number of rows, got "
                        + ", ".join(f"{k}: {v}" for k, v in counts.items()))
  rows = next(iter(counts.values()))
  if rows == 0:
    raise TrainingError("the data set is empty")
  return rows


class Batches:
  """The batches of one call: user data in a fixed order per epoch, as
  (x, y, sample_weight) with None where absent."""

  def __init__(self, x, y=None, sample_weight=None, *, batch_size=None):
    self.dataset = x if isinstance(x, tf.data.Dataset) else None
    if self.dataset is not None:
      if y is not None or sample_weight is not None:
        raise TrainingError("with a tf.data.Dataset, y and sample_weight come from the dataset "
                            "(elements x, (x, y) or (x, y, sample_weight))")
      if batch_size is not None:
        raise TrainingError("a tf.data.Dataset is batched already; do not pass batch_size")
      cardinality = int(self.dataset.cardinality())
      if cardinality == int(tf.data.INFINITE_CARDINALITY):
        raise TrainingError("the dataset repeats forever, so an epoch never ends: take a finite "
                            "number of batches (dataset.take(n)) per epoch")
      if cardinality == 0:
        raise TrainingError("the dataset is empty")
      self.steps = cardinality if cardinality > 0 else None
      return
    if x is None:
      raise TrainingError("x is required")
    self.batch_size = int(batch_size or DEFAULT_BATCH_SIZE)
    if self.batch_size < 1:
      raise TrainingError(f"batch_size must be >= 1, got {batch_size}")
    self.data = {"x": _structure(x, "x")}
    if y is not None:
      self.data["y"] = _structure(y, "y")
    if sample_weight is not None:
      self.data["sample_weight"] = _structure(sample_weight, "sample_weight")
    self.rows = _check_rows(self.data)
    self.steps = math.ceil(self.rows / self.batch_size)

  def epoch(self, order_seed: int | None, epoch: int, skip: int = 0) -> tf.data.Dataset:
    """One epoch's batches from batch `skip` on (see `stream`)."""
    return self.stream(order_seed, epoch, epoch + 1, skip)

  def stream(self, order_seed: int | None, first_epoch: int, epochs: int,
             skip: int = 0) -> tf.data.Dataset:
    """The batches of epochs first_epoch .. epochs - 1 in one dataset, the first
    from batch `skip` on, as dicts {"x"[, "y"][, "sample_weight"]}.

    Each epoch's order is shuffled by (order_seed, epoch) unless order_seed is
    None.  One dataset for the whole run: a tf.data iterator costs about a
    second to start when preprocessing holds a tokenizer's graph, so fit
    starts one and counts `steps` batches off it per epoch.  A Dataset of
    unknown length gives one epoch only (first_epoch + 1 == epochs).
    """
    if self.dataset is not None:
      if self.steps is None and epochs - first_epoch != 1:
        raise ValueError("a dataset of unknown length streams one epoch at a time")
      stream = self.dataset.skip(skip)
      if epochs - first_epoch > 1:
        stream = stream.concatenate(self.dataset.repeat(epochs - first_epoch - 1))
      return stream.map(_element_dict)
    rows, batch_size = self.rows, self.batch_size
    data = tf.nest.map_structure(tf.constant, self.data)

    def epoch_rows(epoch):
      order = tf.range(rows, dtype=tf.int64)
      if order_seed is not None:
        order = tf.random.experimental.stateless_shuffle(
            order, seed=tf.stack([tf.constant(order_seed, tf.int64), epoch]))
      first = tf.where(tf.equal(epoch, first_epoch), tf.constant(skip, tf.int64), 0)
      return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).skip(first)

    batches = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_rows)
    return batches.map(lambda rows: tf.nest.map_structure(lambda a: tf.gather(a, rows), data))


def _element_dict(*element) -> dict:
  """A dataset element x, (x, y) or (x, y, sample_weight) as a batch dict (a pair of
  texts as x is nested: ((texts, pairs), y))."""
  if len(element) > 3:
    raise TrainingError(f"dataset elements are x, (x, y) or (x, y, sample_weight), not "
                        f"{len(element)} parts")
  return dict(zip(("x", "y", "sample_weight"), element))


def stack_padded(parts: list) -> np.ndarray:
  """Batches' arrays [b, ...] stacked; axis 1 padded with 0 to the longest (bucketed
  token lengths differ from batch to batch)."""
  if parts[0].ndim >= 2 and len({p.shape[1:] for p in parts}) > 1:
    longest = max(p.shape[1] for p in parts)
    parts = [np.pad(p, [(0, 0), (0, longest - p.shape[1])] + [(0, 0)] * (p.ndim - 2))
             for p in parts]
  return np.concatenate(parts, axis=0)


def validation_batches(data, batch_size, examples) -> Batches:
  """Batches of validation_data: x, (x, y) or (x, y, sample_weight), or a Dataset;
  `examples` (the task's training_examples) turns the user's x, y into arrays."""
  if isinstance(data, tf.data.Dataset):
    return Batches(data)
  if isinstance(data, tuple) and len(data) == 1:
    data = data[0]                       # (x,): x alone
  if isinstance(data, tuple) and len(data) in (2, 3) and not _is_string_list(data):
    # (x, y) or (x, y, w); a pair of text lists (texts, pairs) is x itself only
    # when its parts are strings and there is no third part.
    if not (len(data) == 2 and _looks_like_texts(data[0]) and _looks_like_texts(data[1])):
      x, y = examples(data[0], data[1])
      return Batches(x, y, *data[2:], batch_size=batch_size)
  return Batches(examples(data, None)[0], batch_size=batch_size)


def _looks_like_texts(x) -> bool:
  return _is_string_list(x) or (isinstance(x, np.ndarray) and x.dtype.kind in "OSU")


def guarded(dataset):
  """Iterates a prepared dataset; an assertion from preprocessing is a TrainingError."""
  iterator = iter(dataset)
  while True:
    try:
      element = next(iterator)
    except StopIteration:
      return
    except tf.errors.InvalidArgumentError as e:
      raise TrainingError(e.message.split("\n")[0].strip()) from None
    yield element
