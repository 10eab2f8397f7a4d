"""In-graph tokenizers built only from core TensorFlow and tensorflow-text ops.

Strings in, ids out; every op here is one that the stock `tensorflow/serving`
image links, and the tokenizer models are graph constants, so they travel
inside the SavedModel.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
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


# Unicode White_Space (Rust's char::is_whitespace), for lstrip/rstrip of added tokens.
_ANY_SPACE = (r"[\t\n\x{0B}\x{0C}\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}"
              r"\x{202F}\x{205F}\x{3000}]*")


def split_special_tokens(text: tf.Tensor, tokens: Sequence[str], ids: Sequence[int],
                         lstrip: Sequence[str] = (), rstrip: Sequence[str] = ()):
  """Splits raw text on literal special tokens, as the upstream added-token matcher does.

  A token in `lstrip` (`rstrip`) also takes the whitespace before (after) it, as
  an upstream AddedToken with lstrip=True (rstrip=True).

  Args:
    text: string [B].

  Returns:
    (pieces RaggedTensor string [B, (P)], special_id int32 [total P], -1 where a
    piece is ordinary text).
  """
  patterns = [(_ANY_SPACE if t in lstrip else "") + re.escape(t)
              + (_ANY_SPACE if t in rstrip else "") for t in tokens]
  pattern = "|".join(patterns)
  pieces = tf_text.regex_split(text, pattern, pattern)                        # [B, (P)]
  flat = pieces.flat_values
  special_id = tf.fill(tf.shape(flat), -1)
  for token, token_id, token_pattern in zip(tokens, ids, patterns):
    match = (tf.strings.regex_full_match(flat, token_pattern) if token_pattern != re.escape(token)
             else tf.equal(flat, token))
    special_id = tf.where(match, token_id, special_id)
  return pieces, special_id


def merge_pieces(pieces: tf.RaggedTensor, special_id: tf.Tensor,
                 piece_ids: tf.RaggedTensor) -> tf.RaggedTensor:
  """Puts each special piece's id in place of its (empty) tokenization.

  Args:
    pieces: string [B, (P)] from split_special_tokens.
    special_id: int32 [total P].
    piece_ids: int32 [total P, (n)], the ids of each ordinary piece (empty rows
      for special pieces).

  Returns:
    int32 [B, (ids)].
  """
  is_special = special_id >= 0
  special_rows = tf.RaggedTensor.from_row_lengths(
      tf.boolean_mask(special_id, is_special), tf.cast(is_special, tf.int64))
  per_piece = tf.concat([special_rows, tf.cast(piece_ids, tf.int32)], axis=1)   # [P, (n)]
  return tf.RaggedTensor.from_row_splits(per_piece, pieces.row_splits).merge_dims(1, 2)


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

  mask_token = "<mask>"
  unk_token = "<unk>"

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
    pieces, special_id = split_special_tokens(text, self._specials, self._special_ids)
    sp_ids = self._sp.tokenize(tf.where(special_id >= 0, "", pieces.flat_values))  # [P, (n)]
    return merge_pieces(pieces, special_id, tf.where(sp_ids == 0, self.unk_token_id, sp_ids + 1))

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


# ---------------------------------------------------------------------------
# WordPiece (BERT / ELECTRA), matching the upstream `BertNormalizer`,
# `BertPreTokenizer` and `WordPiece` of the `tokenizers` library.

# Code points the upstream counts as CJK ideographs, each split into its own word.
_CJK = (r"\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
        r"\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}")
# ASCII punctuation (which includes symbols like $ + < = > ^ ` | ~) and Unicode P*.
_PUNCTUATION = r"[!-/:-@\[-`{-~\p{P}]"


class WordPieceTokenizer(tf.Module):
  """BERT's uncased (or cased) WordPiece, in the graph.

  Steps, in the upstream order: special tokens written in the raw text are
  split out; each other piece is cleaned (control characters, U+0000 and
  U+FFFD removed, whitespace made a space), CJK ideographs spaced, accents
  stripped (NFD, drop Mn) and lower-cased when `lowercase`; split on
  whitespace and punctuation; each word goes through FastWordpiece, and a
  word of more than `max_chars_per_word` characters becomes `[UNK]`.
  Invalid UTF-8 is replaced by U+FFFD first (which cleaning then removes).
  Character classes come from TensorFlow's (newer) Unicode tables: characters
  added after Unicode 9 (U+061D, U+2E43...) may be classified differently from
  transformers' `tokenizers`, which ships older tables.
  """

  def __init__(self, vocabulary: Sequence[str], *, lowercase: bool = True,
               strip_accents: bool | None = None, split_cjk: bool = True,
               max_chars_per_word: int = 100,
               unk_token: str = "[UNK]", cls_token: str = "[CLS]", sep_token: str = "[SEP]",
               pad_token: str = "[PAD]", mask_token: str = "[MASK]", suffix_indicator: str = "##",
               name: str | None = None):
    super().__init__(name=name)
    vocabulary = [str(v) for v in vocabulary]
    index = {token: i for i, token in enumerate(vocabulary)}
    missing = [t for t in (unk_token, cls_token, sep_token, pad_token, mask_token) if t not in index]
    if missing:
      raise ValueError(f"vocabulary lacks special tokens {missing}")
    self.vocabulary = vocabulary
    self.vocabulary_size = len(vocabulary)
    self.lowercase = lowercase
    self.strip_accents = lowercase if strip_accents is None else strip_accents
    self.split_cjk = split_cjk
    self.max_chars_per_word = max_chars_per_word
    self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
    self.pad_token, self.mask_token = pad_token, mask_token
    self.unk_token_id, self.cls_token_id = index[unk_token], index[cls_token]
    self.sep_token_id, self.pad_token_id = index[sep_token], index[pad_token]
    self.mask_token_id = index[mask_token]
    self._specials = (unk_token, cls_token, sep_token, pad_token, mask_token)
    self._special_ids = tuple(index[t] for t in self._specials)
    with self.name_scope:
      self._wordpiece = tf_text.FastWordpieceTokenizer(
          vocab=vocabulary, suffix_indicator=suffix_indicator,
          max_bytes_per_word=4 * max_chars_per_word, token_out_type=tf.int32,
          unknown_token=unk_token, no_pretokenization=True, support_detokenization=True)
      self._tokens = tf.constant(vocabulary)

  def normalize(self, text: tf.Tensor) -> tf.Tensor:
    """The upstream BertNormalizer on string [...]."""
    text = tf.strings.regex_replace(text, r"[\t\n\r\p{Zs}]", " ")
    text = tf.strings.regex_replace(text, r"[\x{0}\x{FFFD}\p{Cc}\p{Cf}\p{Co}]", "")
    if self.split_cjk:
      text = tf.strings.regex_replace(text, f"([{_CJK}])", r" \1 ")
    if self.strip_accents:
      text = tf.strings.regex_replace(tf_text.normalize_utf8(text, "NFD"), r"\p{Mn}", "")
    if self.lowercase:
      # Per character, as upstream: no final-sigma rule (ΣΑΣ -> σασ).
      text = tf.strings.lower(tf.strings.regex_replace(text, "Σ", "σ"), encoding="utf-8")
    return text

  def words(self, text: tf.Tensor) -> tf.RaggedTensor:
    """Normalized words of string [N]: RaggedTensor string [N, (words)]."""
    return tf_text.regex_split(self.normalize(text), rf"[ \x{{2028}}\x{{2029}}]+|{_PUNCTUATION}",
                               _PUNCTUATION)

  def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
    """string [B] -> int32 RaggedTensor [B, (tokens)], no [CLS]/[SEP] added."""
    text = tf.convert_to_tensor(text, tf.string)
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace",
                                        replacement_char=0xFFFD)
    # regex_split stops at U+0000; cleaning removes both it and U+FFFD anyway.
    text = tf.strings.regex_replace(text, r"\x00", "\ufffd")
    pieces, special_id = split_special_tokens(text, self._specials, self._special_ids)
    words = self.words(tf.where(special_id >= 0, "", pieces.flat_values))         # [P, (W)]
    word_ids = self._wordpiece.tokenize(words.flat_values)                         # [W, (n)]
    too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > self.max_chars_per_word
    word_ids = _replace_rows(word_ids, too_long, self.unk_token_id)
    piece_ids = tf.RaggedTensor.from_row_splits(word_ids, words.row_splits).merge_dims(1, 2)
    return merge_pieces(pieces, special_id, piece_ids)

  def __call__(self, text: tf.Tensor) -> tf.RaggedTensor:
    return self.tokenize(text)

  def detokenize(self, ids) -> tf.Tensor:
    """Ids int [B, L] (dense or ragged) -> string [B]; special tokens dropped."""
    kept = ordinary_ids(ids, [i for i in self._special_ids if i != self.unk_token_id],
                        self.vocabulary_size)
    text = self._wordpiece.detokenize(kept)
    # The upstream decode's clean-up of spaces before punctuation and contractions.
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                          (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                          (" 're", "'re")):
      text = tf.strings.regex_replace(text, re.escape(before), after)
    return text

  def id_to_token(self, ids: tf.Tensor) -> tf.Tensor:
    """Each id's vocabulary entry (`##ing`): int [...] -> string [...], "" out of range."""
    ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
    inside = (ids >= 0) & (ids < self.vocabulary_size)
    return tf.where(inside, tf.gather(self._tokens, tf.where(inside, ids, 0)), "")

  def id_to_text(self, ids: tf.Tensor) -> tf.Tensor:
    """Each id as readable text (`##ing` -> `ing`): int [...] -> string [...]."""
    tokens = self.id_to_token(ids)
    return tf.strings.regex_replace(tokens, "^##", "")


def _replace_rows(rows: tf.RaggedTensor, where: tf.Tensor, value: int) -> tf.RaggedTensor:
  """Replaces the rows of ragged [N, (n)] flagged in `where` [N] by [value]."""
  lengths = tf.where(where, tf.ones_like(rows.row_lengths()), rows.row_lengths())
  keep = tf.repeat(~where, rows.row_lengths())
  kept = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(rows.flat_values, keep),
                                          tf.where(where, tf.zeros_like(lengths), lengths))
  fill = tf.RaggedTensor.from_row_lengths(
      tf.fill([tf.reduce_sum(tf.cast(where, tf.int32))], tf.cast(value, rows.dtype)),
      tf.cast(where, tf.int64))
  return tf.concat([fill, kept], axis=1)


def truncate_longest_first(first: tf.RaggedTensor, second: tf.RaggedTensor, budget: int):
  """The upstream "longest_first" rule for a pair, row by row.

  The shorter row keeps what it has if the longer one can make room; otherwise
  both get budget // 2 and the longer one the odd token (the second row on a tie).

  Args:
    first, second: ragged [B, (n)].
    budget: tokens both may keep together (specials excluded).

  Returns:
    (first, second) truncated.
  """
  n_first, n_second = first.row_lengths(), second.row_lengths()
  swap = n_first > n_second
  short = tf.minimum(n_first, n_second)
  long_keep = tf.where(short > budget, short, tf.maximum(short, budget - short))
  short_keep = short
  over = short_keep + long_keep > budget
  short_keep = tf.where(over, tf.cast(budget // 2, tf.int64), short_keep)
  long_keep = tf.where(over, tf.cast(budget // 2 + budget % 2, tf.int64), long_keep)
  keep_first = tf.where(swap, long_keep, short_keep)
  keep_second = tf.where(swap, short_keep, long_keep)
  return _keep_first_n(first, keep_first), _keep_first_n(second, keep_second)


def _keep_first_n(rows: tf.RaggedTensor, keep: tf.Tensor) -> tf.RaggedTensor:
  """Keeps the first keep[i] items of row i (all of it if shorter)."""
  mask = tf.ragged.range(rows.row_lengths()) < tf.expand_dims(keep, 1)
  return tf.ragged.boolean_mask(rows, mask)


class BertPreprocessor(tf.Module):
  """`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` with segment ids, bucket-padded.

  Truncation as upstream: a single text keeps its first sequence_length - 2
  tokens; a pair is cut with the "longest first" rule.
  """

  def __init__(self, tokenizer: WordPieceTokenizer, sequence_length: int = 512,
               bucket_lengths: Sequence[int] | None = None, *, name: str | None = None):
    super().__init__(name=name)
    self.tokenizer = tokenizer
    self.sequence_length = int(sequence_length)
    self.bucket_lengths = (bucket_lengths_for(self.sequence_length) if bucket_lengths is None
                           else bucket_lengths_for(self.sequence_length, bucket_lengths))

  def __call__(self, text: tf.Tensor, text_pair: tf.Tensor | None = None) -> dict:
    """Preprocesses a batch.

    Args:
      text: string [B].
      text_pair: optional string [B], the second segment.

    Returns:
      {"token_ids", "segment_ids", "padding_mask"}: int32 [B, L], L a bucket length.
    """
    tok = self.tokenizer
    first = tok.tokenize(text)
    batch = first.nrows()
    cls = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([batch, 1]), tok.cls_token_id))
    sep = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([batch, 1]), tok.sep_token_id))
    if text_pair is None:
      first = first[:, : self.sequence_length - 2]
      ids = tf.concat([cls, first, sep], axis=1)
      segments = tf.zeros_like(ids)
    else:
      text_pair = tf.convert_to_tensor(text_pair, tf.string)
      tf.debugging.assert_equal(tf.shape(text_pair), tf.shape(tf.convert_to_tensor(text)),
                                message="text_pair must have the same shape as text")
      second = tok.tokenize(text_pair)
      first, second = truncate_longest_first(first, second, self.sequence_length - 3)
      first_part = tf.concat([cls, first, sep], axis=1)
      second_part = tf.concat([second, sep], axis=1)
      ids = tf.concat([first_part, second_part], axis=1)
      segments = tf.concat([tf.zeros_like(first_part), tf.ones_like(second_part)], axis=1)
    token_ids, padding_mask = pad_to_bucket(ids, tok.pad_token_id, self.bucket_lengths)
    segment_ids = segments.to_tensor(0, shape=tf.shape(token_ids))
    return {"token_ids": token_ids, "segment_ids": tf.cast(segment_ids, tf.int32),
            "padding_mask": padding_mask}


# ---------------------------------------------------------------------------
# Byte-level BPE (GPT-2 / RoBERTa / BART), from core and tensorflow-text ops.

def bytes_to_unicode() -> dict:
  """GPT-2's map from the 256 byte values to printable characters (code points)."""
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
               + list(range(ord("®"), ord("ÿ") + 1)))
  mapping = {b: b for b in printable}
  extra = 0
  for b in range(256):
    if b not in mapping:
      mapping[b] = 256 + extra
      extra += 1
  return mapping


# GPT-2's pre-split regex, `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
# ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, for RE2: \s as Unicode White_Space, and the
# lookahead `\s+(?!\S)` emulated by a marker put before the last whitespace
# character of a run that a non-space follows (the marker splits the run there
# and is dropped).
_BPE_SPACE = (r"\t\n\x{0B}\x{0C}\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}"
              r"\x{202F}\x{205F}\x{3000}")
_BPE_MARK = "\ufdd0"   # a noncharacter; removed from input text first
_BPE_PIECES = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^" + _BPE_SPACE + r"\p{L}\p{N}"
               + _BPE_MARK + r"]+|[" + _BPE_SPACE + r"]+")


def bpe_sentencepiece_model(vocabulary: dict, merges: Sequence[tuple], specials: Sequence[str]):
  """A SentencePiece BPE model that merges as `merges` do.

  Identity normaliser, no dummy prefix; every single character and every merge
  result of the vocabulary is a piece, a merge result scored minus its merge
  rank, so SentencePiece's "best-scored pair first" is BPE's "lowest rank first".

  Returns:
    (serialized ModelProto, [vocabulary id of each SentencePiece id]).
  """
  from sentencepiece import sentencepiece_model_pb2 as pb

  model = pb.ModelProto()
  model.trainer_spec.model_type = pb.TrainerSpec.BPE
  model.trainer_spec.byte_fallback = False
  model.normalizer_spec.name = "identity"
  model.normalizer_spec.add_dummy_prefix = False
  model.normalizer_spec.remove_extra_whitespaces = False
  model.normalizer_spec.escape_whitespaces = False
  unk = model.pieces.add()
  unk.piece, unk.type, unk.score = "<unk>", pb.ModelProto.SentencePiece.UNKNOWN, 0.0
  to_vocabulary = [vocabulary.get("<unk>", 0)]
  rank_of = {}
  for rank, (left, right) in enumerate(merges):
    rank_of.setdefault(left + right, rank)
  for token, index in sorted(vocabulary.items(), key=lambda item: item[1]):
    if token in specials or (len(token) > 1 and token not in rank_of):
      continue  # specials are matched in text; unreachable entries never come out of BPE
    piece = model.pieces.add()
    piece.piece, piece.type = token, pb.ModelProto.SentencePiece.NORMAL
    piece.score = 0.0 if len(token) == 1 else -float(rank_of[token] + 1)
    to_vocabulary.append(index)
  return model.SerializeToString(), to_vocabulary


class ByteLevelBPETokenizer(tf.Module):
  """Byte-level BPE (BART, RoBERTa) in the graph, as the upstream tokenizer.

  Special tokens written in text are recognised; those in `lstrip`/`rstrip`
  take the whitespace before/after them (a checkpoint's tokenizer.json says
  which; built from vocab.json/merges.txt alone, none does);
  the rest is pre-split with GPT-2's regex, mapped byte by byte to GPT-2's
  printable alphabet and merged by a SentencePiece BPE model built from the
  merges.  No mutable tables: the maps are constants, the model a graph
  constant.  Invalid UTF-8 is replaced by U+FFFD first.
  """

  def __init__(self, vocabulary: dict, merges: Sequence[tuple], *, bos_token: str = "<s>",
               eos_token: str = "</s>", pad_token: str = "<pad>", unk_token: str = "<unk>",
               mask_token: str = "<mask>", lstrip: Sequence[str] = (),
               rstrip: Sequence[str] = (), name: str | None = None):
    super().__init__(name=name)
    missing = [t for t in (bos_token, eos_token, pad_token, unk_token, mask_token)
               if t not in vocabulary]
    if missing:
      raise ValueError(f"vocabulary lacks special tokens {missing}")
    self.vocabulary = dict(vocabulary)
    self.merges = [tuple(m) for m in merges]
    self.vocabulary_size = max(vocabulary.values()) + 1
    self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
    self.unk_token, self.mask_token = unk_token, mask_token
    self.bos_token_id, self.eos_token_id = vocabulary[bos_token], vocabulary[eos_token]
    self.pad_token_id, self.unk_token_id = vocabulary[pad_token], vocabulary[unk_token]
    self.mask_token_id = vocabulary[mask_token]
    self._specials = (bos_token, eos_token, pad_token, unk_token, mask_token)
    self._special_ids = tuple(vocabulary[t] for t in self._specials)
    self.lstrip, self.rstrip = tuple(lstrip), tuple(rstrip)
    proto, to_vocabulary = bpe_sentencepiece_model(vocabulary, self.merges, self._specials)
    byte_map = bytes_to_unicode()
    self._nul_mapped = re.escape("".join(chr(byte_map[b]) for b in _NUL_STAND_IN.encode()))
    self._nul_char = chr(byte_map[0])
    inverse = np.full([max(byte_map.values()) + 1], -1, np.int32)
    for byte, code in byte_map.items():
      inverse[code] = byte
    tokens = [""] * self.vocabulary_size
    for token, index in vocabulary.items():
      tokens[index] = token
    with self.name_scope:
      self._bpe = tf_text.SentencepieceTokenizer(model=proto, out_type=tf.int32)
      self._to_vocabulary = tf.constant(to_vocabulary, tf.int32)
      self._byte_to_char = tf.constant([byte_map[b] for b in range(256)], tf.int32)
      self._char_to_byte = tf.constant(inverse)
      self._byte_strings = tf.constant([bytes([b]) for b in range(256)])
      self._tokens = tf.constant(tokens)

  def _split(self, text: tf.Tensor) -> tf.RaggedTensor:
    """GPT-2 pre-split of string [N]: RaggedTensor string [N, (pieces)]."""
    text = tf.strings.regex_replace(text, _BPE_MARK, "")
    text = tf.strings.regex_replace(text, f"([{_BPE_SPACE}])([^{_BPE_SPACE}])",
                                    _BPE_MARK + r"\1\2")
    return tf_text.regex_split(text, _BPE_PIECES + "|" + _BPE_MARK, _BPE_PIECES)

  def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
    """string [B] -> int32 RaggedTensor [B, (tokens)], no <s>/</s> added."""
    text = tf.convert_to_tensor(text, tf.string)
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace",
                                        replacement_char=0xFFFD)
    # regex_split stops at U+0000: a stand-in of the same regex class (Cn, "other")
    # takes its place, and its mapped bytes become byte 0's character again below.
    text = tf.strings.regex_replace(text, r"\x00", _NUL_STAND_IN)
    parts, special_id = split_special_tokens(text, self._specials, self._special_ids,
                                             self.lstrip, self.rstrip)
    words = self._split(tf.where(special_id >= 0, "", parts.flat_values))         # [P, (W)]
    word_bytes = tf.strings.bytes_split(words.flat_values)                        # [W, (b)]
    values = tf.cast(tf.reshape(tf.io.decode_raw(word_bytes.flat_values, tf.uint8), [-1]),
                     tf.int32)                                                   # one byte each
    characters = tf.RaggedTensor.from_row_splits(tf.gather(self._byte_to_char, values),
                                                 word_bytes.row_splits)
    mapped = tf.strings.regex_replace(tf.strings.unicode_encode(characters, "UTF-8"),
                                      self._nul_mapped, self._nul_char)
    word_ids = self._bpe.tokenize(mapped)                                          # [W, (n)]
    word_ids = tf.ragged.map_flat_values(lambda v: tf.gather(self._to_vocabulary, v), word_ids)
    piece_ids = tf.RaggedTensor.from_row_splits(word_ids, words.row_splits).merge_dims(1, 2)
    return merge_pieces(parts, special_id, piece_ids)

  def __call__(self, text: tf.Tensor) -> tf.RaggedTensor:
    return self.tokenize(text)

  def detokenize(self, ids) -> tf.Tensor:
    """Ids int [B, L] (dense or ragged) -> string [B]; special tokens dropped."""
    kept = ordinary_ids(ids, self._special_ids, self.vocabulary_size)
    text = tf.strings.reduce_join(tf.ragged.map_flat_values(
        lambda v: tf.gather(self._tokens, v), kept), axis=-1)                 # [B]
    codes = tf.strings.unicode_decode(text, "UTF-8")                           # [B, (chars)]
    byte_values = tf.ragged.map_flat_values(
        lambda c: tf.gather(self._char_to_byte, tf.clip_by_value(c, 0, tf.size(self._char_to_byte) - 1)),
        codes)
    raw = tf.strings.reduce_join(tf.ragged.map_flat_values(
        lambda b: tf.gather(self._byte_strings, tf.maximum(b, 0)), byte_values), axis=-1)
    return tf.strings.unicode_transcode(raw, "UTF-8", "UTF-8", errors="replace",
                                        replacement_char=0xFFFD)

  def id_to_token(self, ids: tf.Tensor) -> tf.Tensor:
    """Each id's vocabulary entry (`Ġworld`): int [...] -> string [...], "" out of range."""
    ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)
    inside = (ids >= 0) & (ids < self.vocabulary_size)
    return tf.where(inside, tf.gather(self._tokens, tf.where(inside, ids, 0)), "")


_NUL_STAND_IN = "\ufdd1"   # stands for U+0000 until after the byte mapping


class BartPreprocessor(tf.Module):
  """Encoder inputs `<s> ids </s>`, truncated keeping `</s>`, padded to a bucket."""

  def __init__(self, tokenizer: ByteLevelBPETokenizer, sequence_length: int = 1024,
               bucket_lengths: Sequence[int] | None = None, *, name: str | None = None):
    super().__init__(name=name)
    self.tokenizer = tokenizer
    self.sequence_length = int(sequence_length)
    self.bucket_lengths = bucket_lengths_for(
        self.sequence_length, DEFAULT_BUCKETS + (1024,) if bucket_lengths is None else bucket_lengths)

  def __call__(self, text: tf.Tensor) -> dict:
    """string [B] -> {"token_ids", "padding_mask"}: int32 [B, L], L a bucket length."""
    tok = self.tokenizer
    ids = tok.tokenize(text)[:, : self.sequence_length - 2]
    batch = ids.nrows()
    bos = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([batch, 1]), tok.bos_token_id))
    eos = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([batch, 1]), tok.eos_token_id))
    token_ids, padding_mask = pad_to_bucket(tf.concat([bos, ids, eos], axis=1), tok.pad_token_id,
                                            self.bucket_lengths)
    return {"token_ids": token_ids, "padding_mask": padding_mask}
