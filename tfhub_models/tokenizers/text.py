"""What every in-graph tokenizer shares: UTF-8 cleaning, the whitespace class,
literal special tokens.

Strings in, ragged ids out; only core TensorFlow and tensorflow-text ops.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.python.ops.sentencepiece_tokenizer import gen_sentencepiece_tokenizer

# The characters with the Unicode White_Space property (what Rust's
# `char::is_whitespace`, and so the `tokenizers` library, splits on), as the
# body of an RE2 character class.
WHITE_SPACE = (r"\t\n\x{0B}\x{0C}\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}"
               r"\x{202F}\x{205F}\x{3000}")


class _SharedSentencepieceModel(tf.saved_model.experimental.TrackableResource):
  """tensorflow-text's SentencePiece model resource, but one that outlives a
  cleared kernel cache when created eagerly.

  tensorflow-text's own resource is owned by the kernel that made it, and
  `tf.random.set_seed` (any clearing of the eager kernel cache) deletes it: every
  later tokenize fails with "Resource ... SentencepieceOp ... does not exist".
  Created eagerly, this one is named after the model's content, so the resource
  manager keeps it.  Traced for a SavedModel it is created as upstream's
  (kernel-owned, per session): the exported graph is unchanged.
  """

  def __init__(self, model: bytes, name: str):
    super().__init__()
    self._model = model
    self._name = name
    self._shared_name = "sentencepiece_" + hashlib.sha256(model).hexdigest()[:32]
    _ = self.resource_handle

  def _create_resource(self):
    with tf.name_scope(self._name):
      shared = self._shared_name if tf.executing_eagerly() else ""
      return gen_sentencepiece_tokenizer.sentencepiece_op(model=self._model, shared_name=shared)


def sentencepiece_tokenizer(model: bytes, name: str = "SentenceTokenizerInitializer"):
  """A `tf_text.SentencepieceTokenizer` (int32 ids) whose eagerly created model
  survives `tf.random.set_seed`; see _SharedSentencepieceModel."""
  tokenizer = tf_text.SentencepieceTokenizer(model=model, out_type=tf.int32)
  tokenizer._model_resource = _SharedSentencepieceModel(bytes(model), name)  # pylint: disable=protected-access
  return tokenizer


def clean_utf8(text) -> tf.Tensor:
  """string [...] with invalid UTF-8 replaced by U+FFFD."""
  text = tf.convert_to_tensor(text, tf.string)
  return tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace",
                                      replacement_char=0xFFFD)


def split_special_tokens(text: tf.Tensor, tokens: Sequence[str], ids: Sequence[int],
                         lstrip: Sequence[str] = (), rstrip: Sequence[str] = (), *,
                         with_offsets: bool = False):
  """Splits raw text on literal special tokens, as the upstream added-token matcher does.

  A token in `lstrip` (`rstrip`) also takes the whitespace before (after) it, as
  an upstream AddedToken with lstrip=True (rstrip=True).

  Args:
    text: string [B].

  Returns:
    (pieces RaggedTensor string [B, (P)], special_id int32 [total P], -1 where a
    piece is ordinary text); with_offsets, also each piece's byte start and end
    in its text, int64 [total P] each.
  """
  spaces = f"[{WHITE_SPACE}]*"
  patterns = [(spaces if t in lstrip else "") + re.escape(t) + (spaces if t in rstrip else "")
              for t in tokens]
  pattern = "|".join(patterns)
  pieces, starts, ends = tf_text.regex_split_with_offsets(text, pattern, pattern)  # [B, (P)]
  flat = pieces.flat_values
  special_id = tf.fill(tf.shape(flat), -1)
  for token, token_id, token_pattern in zip(tokens, ids, patterns):
    match = (tf.strings.regex_full_match(flat, token_pattern) if token_pattern != re.escape(token)
             else tf.equal(flat, token))
    special_id = tf.where(match, token_id, special_id)
  if with_offsets:
    return pieces, special_id, starts.flat_values, ends.flat_values
  return pieces, special_id


def merge_pieces(pieces: tf.RaggedTensor, special_id: tf.Tensor,
                 piece_ids: tf.RaggedTensor, special_values: tf.Tensor | None = None
                 ) -> tf.RaggedTensor:
  """Puts each special piece's id in place of its (empty) tokenization.

  Args:
    pieces: string [B, (P)] from split_special_tokens.
    special_id: int32 [total P].
    piece_ids: int [total P, (n)], the ids (or offsets) of each ordinary piece
      (empty rows for special pieces).
    special_values: int [total P], what a special piece's one token gets
      (default: its id; its offsets when piece_ids are offsets).

  Returns:
    int32 [B, (ids)].
  """
  is_special = special_id >= 0
  values = special_id if special_values is None else special_values
  special_rows = tf.RaggedTensor.from_row_lengths(
      tf.cast(tf.boolean_mask(values, is_special), tf.int32), tf.cast(is_special, tf.int64))
  per_piece = tf.concat([special_rows, tf.cast(piece_ids, tf.int32)], axis=1)   # [P, (n)]
  return tf.RaggedTensor.from_row_splits(per_piece, pieces.row_splits).merge_dims(1, 2)


def char_offsets(text: tf.Tensor, byte_offsets: tf.RaggedTensor) -> tf.RaggedTensor:
  """Byte offsets into valid UTF-8 text [B] as character (code point) offsets,
  what Python's str slicing takes: int [B, (n)] -> int32 [B, (n)].  An offset
  inside a character counts as the next character's."""
  _, starts = tf.strings.unicode_decode_with_offsets(text, "UTF-8")          # [B, (C)]
  ends = tf.strings.length(text)[:, None]
  # Each row's character starts, then its byte length; int64 max pads the rows.
  starts = tf.concat([starts, tf.RaggedTensor.from_tensor(tf.cast(ends, tf.int64))], axis=1)
  sorted_starts = starts.to_tensor(default_value=tf.int64.max)
  values = tf.cast(byte_offsets, tf.int64).to_tensor(default_value=0)
  index = tf.searchsorted(sorted_starts, values, side="left", out_type=tf.int32)
  return tf.RaggedTensor.from_tensor(index, lengths=byte_offsets.row_lengths())


def ordinary_ids(ids, special_ids: Sequence[int], vocabulary_size: int) -> tf.RaggedTensor:
  """ids int [B, L] (dense or ragged) without special and out-of-range ids: int32 [B, (n)]."""
  if not isinstance(ids, tf.RaggedTensor):
    ids = tf.RaggedTensor.from_tensor(tf.convert_to_tensor(ids))
  ids = tf.cast(ids, tf.int32)
  special = tf.constant(list(special_ids) or [-1], tf.int32)
  keep = tf.ragged.map_flat_values(
      lambda v: tf.reduce_all(v[:, None] != special[None, :], axis=1)
      & (v >= 0) & (v < vocabulary_size), ids)
  return tf.ragged.boolean_mask(ids, keep)


def lookup_tokens(table: tf.Tensor, ids) -> tf.Tensor:
  """Each id's entry of string table [V]: int [...] -> string [...], "" out of range."""
  ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
  inside = (ids >= 0) & (ids < tf.shape(table)[0])
  return tf.where(inside, tf.gather(table, tf.where(inside, ids, 0)), "")


def join_tokens(tokens: tf.RaggedTensor, first, rest) -> tf.Tensor:
  """Each row of tokens string [G, (n)] joined into one string [G], its first
  token through `first` and the others through `rest` (string ops on [N])."""
  position = tf.ragged.range(tokens.row_lengths()).flat_values
  flat = tokens.flat_values
  flat = tf.where(position == 0, first(flat), rest(flat))
  return tf.strings.reduce_join(tokens.with_flat_values(flat), axis=1)
