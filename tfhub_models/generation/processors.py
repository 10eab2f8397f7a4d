"""Logit processors, with upstream's semantics.  Shapes: B rows, V vocabulary,
T the id buffer length."""

from __future__ import annotations

import tensorflow as tf

from tfhub_models.generation.samplers import NEG_INF, rows


# ---------------------------------------------------------------------------
# Logit processors (upstream semantics; `length` counts the ids so far,
# decoder start token included).

def presence(ids: tf.Tensor, length: tf.Tensor, vocabulary_size: int) -> tf.Tensor:
  """bool [B, V]: which ids occur among the first `length` of ids int32 [B, T]."""
  batch, total = tf.shape(ids)[0], tf.shape(ids)[1]
  seen = tf.cast(tf.range(total)[None, :] < length, tf.float32) * tf.ones([batch, 1])
  segments = tf.range(batch)[:, None] * vocabulary_size + ids                  # [B, T]
  hits = tf.math.unsorted_segment_max(tf.reshape(seen, [-1]), tf.reshape(segments, [-1]),
                                      batch * vocabulary_size)
  return tf.reshape(hits > 0, [batch, vocabulary_size])


def repetition_penalty(logits, ids, length, penalty):
  """Divides positive, multiplies negative logits of ids already generated;
  penalty a number or float32 [B] (1: no change)."""
  seen = presence(ids, length, logits.shape[-1])
  penalty = rows(penalty, logits, logits.dtype)
  penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
  return tf.where(seen, penalised, logits)


def no_repeat_ngram(logits, ids, length, n, max_n: int | None = None):
  """Bans every id that would complete an n-gram already in ids[:, :length].

  n: an int, or int32 [B] (0: no ban for that row) with max_n the largest.
  """
  largest = int(n if max_n is None else max_n)
  total = ids.shape[1] if ids.shape[1] is not None else tf.shape(ids)[1]
  batch = tf.shape(ids)[0]
  n = tf.broadcast_to(tf.cast(n, tf.int32), [batch])[:, None]                 # [B, 1]
  starts = tf.range(total)                                                     # [T]
  offsets = tf.range(max(largest - 1, 0))                                      # [N-1]
  window = tf.gather(ids, tf.clip_by_value(starts[:, None] + offsets[None, :], 0, total - 1),
                     axis=1)                                                   # [B, T, N-1]
  last = tf.gather(ids, tf.clip_by_value(length - (n - 1) + offsets[None, :], 0, total - 1),
                   batch_dims=1)                                               # [B, N-1]
  compared = offsets[None, :] < n - 1                                          # [B, N-1]
  equal = tf.equal(window, last[:, None, :]) | ~compared[:, None, :]
  match = tf.reduce_all(equal, axis=-1)                                        # [B, T]
  match &= (starts[None, :] + n - 1 < length) & (length >= n - 1) & (n > 0)
  following = tf.gather(ids, tf.clip_by_value(starts[None, :] + n - 1, 0, total - 1),
                        batch_dims=1)                                          # [B, T]
  vocabulary = logits.shape[-1]
  segments = tf.range(batch)[:, None] * vocabulary + following
  banned = tf.math.unsorted_segment_max(tf.reshape(tf.cast(match, tf.float32), [-1]),
                                        tf.reshape(segments, [-1]), batch * vocabulary)
  return tf.where(tf.reshape(banned, [batch, vocabulary]) > 0, NEG_INF, logits)


def force_token(logits, token_id: int, when: tf.Tensor):
  """Where `when` (bool, a scalar or [B] per row), only token_id may come next."""
  forced = tf.where(tf.range(logits.shape[-1]) == token_id, 0.0, NEG_INF)[None, :]
  when = when[:, None] if when.shape.rank == 1 else when
  return tf.where(when, tf.broadcast_to(forced, tf.shape(logits)), logits)
