"""What the task modules of every family share: size checks, preset loading,
mask finding and the fill-mask answers.

A fill-mask task is any module with `preprocessor`, `tokenizer`,
`backbone.config.vocabulary_size` and `__call__({"token_ids", "padding_mask",
"mask_positions"}) -> logits [B, M, V]`.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tfhub_models.checkpoints import loader
from tfhub_models.preprocessing import check_sequence_length


def check_compatible(backbone, preprocessor, *, exact_vocabulary: bool = True) -> None:
  """ValueError unless the preprocessor's ids and lengths fit the backbone."""
  config = backbone.config
  ids = preprocessor.tokenizer.vocabulary_size
  if (ids != config.vocabulary_size) if exact_vocabulary else (ids > config.vocabulary_size):
    raise ValueError(f"the tokenizer has {ids} ids but the model's vocabulary_size is "
                     f"{config.vocabulary_size}")
  check_sequence_length(preprocessor.sequence_length, config.max_sequence_length)


def load_preset(family: loader.Family, task: str, preset, load_weights: bool, **options):
  """`from_preset` of every task and backbone class: the family's loader, one task."""
  return loader.load(preset, family, task=task, load_weights=load_weights, **options)


def find_masks(token_ids: tf.Tensor, mask_token_id: int):
  """Positions of the mask token in each row.

  Args:
    token_ids: int32 [B, L].

  Returns:
    (mask_positions int32 [B, M], num_masks int32 [B]); M = most masks in a row,
    rows with fewer are padded with position 0.
  """
  is_mask = tf.equal(token_ids, mask_token_id)
  where = tf.cast(tf.where(is_mask), tf.int32)                          # [n, 2]
  positions = tf.RaggedTensor.from_value_rowids(
      where[:, 1], where[:, 0], nrows=tf.shape(token_ids, out_type=tf.int32)[0])
  return positions.to_tensor(0), tf.cast(positions.row_lengths(), tf.int32)


def top_k_fillers(task, token_ids: tf.Tensor, padding_mask: tf.Tensor, top_k: int) -> dict:
  """Top-k fillers of every mask (eager or graph; not XLA: mask count is data).

  Returns:
    top_k_ids int32 [B, M, K] (-1 past a row's masks), top_k_scores float32
    [B, M, K] (probabilities, 0 past a row's masks), num_masks int32 [B].
  """
  mask_positions, num_masks = find_masks(token_ids, task.tokenizer.mask_token_id)
  logits = task({"token_ids": token_ids, "padding_mask": padding_mask,
                 "mask_positions": mask_positions})
  scores, ids = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=top_k)
  valid = tf.range(tf.shape(mask_positions)[1])[None, :] < num_masks[:, None]   # [B, M]
  return {
      "top_k_ids": tf.where(valid[..., None], ids, -1),
      "top_k_scores": tf.where(valid[..., None], scores, 0.0),
      "num_masks": num_masks,
  }


def fill_mask(task, texts: Sequence[str], top_k: int = 5) -> list:
  """Fills every mask token of each text (eager convenience API).

  Returns:
    One list per text, one list per mask, of {"token_id", "token", "score"}.
  """
  inputs = task.preprocessor(tf.constant(list(texts), tf.string))
  out = top_k_fillers(task, inputs["token_ids"], inputs["padding_mask"],
                      min(top_k, task.backbone.config.vocabulary_size))
  tokens = task.tokenizer.id_to_text(tf.maximum(out["top_k_ids"], 0)).numpy()
  ids, scores = out["top_k_ids"].numpy(), out["top_k_scores"].numpy()
  answers = []
  for b, count in enumerate(out["num_masks"].numpy()):
    answers.append([[{"token_id": int(ids[b, m, k]), "token": tokens[b, m, k].decode("utf-8"),
                      "score": float(scores[b, m, k])} for k in range(ids.shape[2])]
                    for m in range(count)])
  return answers
