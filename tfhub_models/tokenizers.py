"""In-graph tokenizers built only from core TensorFlow and tensorflow-text ops.

Strings in, ids out; every op here is one that the stock `tensorflow/serving`
image links, and the tokenizer models are graph constants, so they travel
inside the SavedModel.
"""

from __future__ import annotations

import re
from typing import Sequence

import sentencepiece
import tensorflow as tf
import tensorflow_text as tf_text

# Characters with the Unicode White_Space property (what Rust's
# `char::is_whitespace`, and so the `tokenizers` library's WhitespaceSplit,
# splits on), less U+000B, which SentencePiece's nmt_nfkc normaliser deletes
# before the upstream tokenizer splits.  SentencePiece maps only some of the
# others to a space itself.
_WHITE_SPACE = (r"[\t\n\x{0C}\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}"
                r"\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]")

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)


def bucket_lengths_for(sequence_length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> tuple:
  """The padded lengths a batch may take: buckets below sequence_length, then it."""
  if sequence_length < 3:
    raise ValueError(f"sequence_length must be at least 3, got {sequence_length}")
  return tuple(sorted({b for b in buckets if b < sequence_length} | {sequence_length}))


def pad_to_bucket(ids: tf.RaggedTensor, pad_id: int, buckets: Sequence[int]):
  """Pads ragged ids [B, (n)] to the smallest bucket >= the longest row.

  Rows must already be at most buckets[-1] long.

  Returns:
    (token_ids int32 [B, L], padding_mask int32 [B, L]), L one of `buckets`.
  """
  longest = tf.reduce_max(tf.concat([ids.row_lengths(), [0]], axis=0))
  buckets_t = tf.constant(buckets, tf.int64)
  # Index of the first bucket that fits; the rows fit the last one by construction.
  index = tf.reduce_sum(tf.cast(buckets_t < longest, tf.int32))
  length = tf.gather(buckets_t, tf.minimum(index, len(buckets) - 1))
  batch = ids.nrows()
  token_ids = ids.to_tensor(default_value=pad_id, shape=tf.stack([batch, length]))
  padding_mask = tf.ones_like(ids, tf.int32).to_tensor(shape=tf.stack([batch, length]))
  return tf.cast(token_ids, tf.int32), padding_mask


class XLMRobertaTokenizer(tf.Module):
  """SentencePiece with the fairseq id layout that XLM-RoBERTa uses.

  `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, SentencePiece piece i >= 3 is i + 1,
  `<mask>` is the last id.  The special tokens written literally in text are
  recognised as those tokens, as the upstream (Hugging Face) tokenizer does;
  whitespace around them is dropped (so `<mask>` absorbs the space before it).
  Invalid UTF-8 is replaced by U+FFFD before tokenizing.
  """

  special_tokens = ("<s>", "<pad>", "</s>", "<unk>")
  bos_token_id, pad_token_id, eos_token_id, unk_token_id = 0, 1, 2, 3

  def __init__(self, proto: bytes, *, name: str | None = None):
    super().__init__(name=name)
    if not isinstance(proto, (bytes, bytearray)) or not proto:
      raise ValueError("XLMRobertaTokenizer needs the serialized SentencePiece model (bytes)")
    self.proto = bytes(proto)
    with self.name_scope:
      self._sp = tf_text.SentencepieceTokenizer(model=self.proto, out_type=tf.int32)
    self.sp_vocabulary_size = int(self._sp.vocab_size())
    # SentencePiece's C++ normaliser stops at U+0000, where the upstream
    # tokenizer sees an unknown character.  U+0000 is therefore replaced by a
    # private-use character that no piece contains, which is unknown too.
    pieces = sentencepiece.SentencePieceProcessor(model_proto=self.proto)
    alphabet = set("".join(pieces.id_to_piece(i) for i in range(pieces.get_piece_size())))
    self._nul_stand_in = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in alphabet)
    # Piece ids 0..n-1 become 0..n (fairseq offset 1, <unk> moves to 3), then <mask>.
    self.mask_token_id = self.sp_vocabulary_size + 1
    self.vocabulary_size = self.sp_vocabulary_size + 2
    self._specials = self.special_tokens + ("<mask>",)
    self._special_ids = (0, 1, 2, 3, self.mask_token_id)
    self._split_pattern = "|".join(re.escape(t) for t in self._specials)

  @property
  def mask_token(self) -> str:
    return "<mask>"

  def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
    """Tokenizes without adding `<s>`/`</s>`.

    Args:
      text: string [B].

    Returns:
      int32 RaggedTensor [B, (tokens)] of model ids.
    """
    text = tf.convert_to_tensor(text, tf.string)
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace",
                                        replacement_char=0xFFFD)
    text = tf.strings.regex_replace(text, _WHITE_SPACE, " ")
    text = tf.strings.regex_replace(text, "\\x00", self._nul_stand_in)
    pieces = tf_text.regex_split(text, self._split_pattern, self._split_pattern)  # [B, (P)]
    flat = pieces.flat_values                                                    # [P]
    special_id = tf.fill(tf.shape(flat), -1)
    for token, token_id in zip(self._specials, self._special_ids):
      special_id = tf.where(tf.equal(flat, token), token_id, special_id)
    is_special = special_id >= 0
    sp_ids = self._sp.tokenize(tf.where(is_special, "", flat))                    # [P, (n)]
    ids = tf.where(sp_ids == 0, self.unk_token_id, sp_ids + 1)
    special_rows = tf.RaggedTensor.from_row_lengths(
        tf.boolean_mask(special_id, is_special), tf.cast(is_special, tf.int64))
    per_piece = tf.concat([special_rows, ids], axis=1)                            # [P, (n)]
    return tf.RaggedTensor.from_row_splits(per_piece, pieces.row_splits).merge_dims(1, 2)

  def __call__(self, text: tf.Tensor) -> tf.RaggedTensor:
    return self.tokenize(text)

  def _to_sp_ids(self, ids: tf.Tensor) -> tf.Tensor:
    ids = tf.cast(ids, tf.int32)
    return tf.where(ids == self.unk_token_id, 0, ids - 1)

  def _is_special(self, ids: tf.Tensor) -> tf.Tensor:
    ids = tf.cast(ids, tf.int32)
    return (ids < 3) | (ids >= self.mask_token_id) | (ids < 0)

  def detokenize(self, ids) -> tf.Tensor:
    """Ids int [B, L] (dense or ragged) -> string [B]; special tokens dropped."""
    if not isinstance(ids, tf.RaggedTensor):
      ids = tf.RaggedTensor.from_tensor(tf.convert_to_tensor(ids))
    keep = tf.ragged.map_flat_values(lambda v: ~self._is_special(v), ids)
    kept = tf.ragged.boolean_mask(ids, keep)
    return self._sp.detokenize(tf.ragged.map_flat_values(self._to_sp_ids, kept))

  def id_to_text(self, ids: tf.Tensor) -> tf.Tensor:
    """Each id on its own as readable text: int [...] -> string [...].

    A piece is detokenized alone (`▁Paris` -> `Paris`); special tokens and
    `<mask>` give their literal form, ids out of range give "".
    """
    ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
    flat = tf.reshape(ids, [-1])
    rows = tf.RaggedTensor.from_tensor(self._to_sp_ids(flat)[:, None])
    safe = tf.ragged.map_flat_values(
        lambda v: tf.clip_by_value(v, 0, self.sp_vocabulary_size - 1), rows)
    text = self._sp.detokenize(safe)
    for token, token_id in zip(self._specials, self._special_ids):
      text = tf.where(flat == token_id, token, text)
    text = tf.where((flat < 0) | (flat >= self.vocabulary_size), "", text)
    return tf.reshape(text, tf.shape(ids))

  def id_to_token(self, ids: tf.Tensor) -> tf.Tensor:
    """Each id's vocabulary piece (`▁Paris`): int [...] -> string [...]."""
    ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
    pieces = self._sp.id_to_string(tf.clip_by_value(self._to_sp_ids(ids), 0,
                                                     self.sp_vocabulary_size - 1))
    for token, token_id in zip(self._specials, self._special_ids):
      pieces = tf.where(ids == token_id, token, pieces)
    return pieces


class XLMRobertaPreprocessor(tf.Module):
  """Text -> `<s> ids </s>`, truncated and padded to a bucket length.

  Truncation keeps `</s>`: a row keeps its first sequence_length - 2 tokens.
  The batch is padded to its longest row rounded up to one of
  `bucket_lengths`, not to sequence_length.
  """

  def __init__(self, tokenizer: XLMRobertaTokenizer, sequence_length: int = 512,
               bucket_lengths: Sequence[int] | None = None, *, name: str | None = None):
    super().__init__(name=name)
    self.tokenizer = tokenizer
    self.sequence_length = int(sequence_length)
    self.bucket_lengths = (bucket_lengths_for(self.sequence_length) if bucket_lengths is None
                           else bucket_lengths_for(self.sequence_length, bucket_lengths))

  def __call__(self, text: tf.Tensor) -> dict:
    """Preprocesses a batch.

    Args:
      text: string [B].

    Returns:
      {"token_ids": int32 [B, L], "padding_mask": int32 [B, L]}, L a bucket length.
    """
    tok = self.tokenizer
    ids = tok.tokenize(text)[:, : self.sequence_length - 2]
    batch = ids.nrows()
    bos = tf.fill(tf.stack([batch, 1]), tok.bos_token_id)
    eos = tf.fill(tf.stack([batch, 1]), tok.eos_token_id)
    ids = tf.concat([tf.RaggedTensor.from_tensor(bos), ids, tf.RaggedTensor.from_tensor(eos)],
                    axis=1)
    token_ids, padding_mask = pad_to_bucket(ids, tok.pad_token_id, self.bucket_lengths)
    return {"token_ids": token_ids, "padding_mask": padding_mask}
