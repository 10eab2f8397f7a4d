"""What training refuses, and the loss it computes by default."""

from __future__ import annotations

import tensorflow as tf


class TrainingError(ValueError):
  """Bad training input, or a run that cannot go on (a NaN loss)."""


def sparse_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Per-position cross-entropy from logits: labels int [B, ...], logits [B, ..., C]."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32))


LOSSES = {"auto": sparse_cross_entropy, "sparse_categorical_crossentropy": sparse_cross_entropy}


def check_labels(labels: tf.Tensor, weights: tf.Tensor, limit: int, what: str):
  """An assertion op: every counted label lies in [0, limit)."""
  counted = tf.cast(weights, tf.float32) > 0
  bad = counted & ((labels < 0) | (labels >= limit))
  return tf.debugging.assert_equal(
      tf.reduce_any(bad), False,
      message=f"labels outside the {what} (0..{limit - 1}) at weighted positions")
