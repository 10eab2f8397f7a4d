"""BERT's WordPiece (ELECTRA), in the graph, matching the upstream `BertNormalizer`,
`BertPreTokenizer` and `WordPiece` of the `tokenizers` library."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import tensorflow as tf
import tensorflow_text as tf_text

from tfhub_models.tokenizers import tokenizer_json
from tfhub_models.tokenizers.text import (char_offsets, clean_utf8, join_tokens, lookup_tokens,
                                          merge_pieces, ordinary_ids, split_special_tokens)


# Code points the upstream counts as CJK ideographs, each split into its own word.
_CJK = (r"\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
        r"\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}")
# ASCII punctuation (which includes symbols like $ + < = > ^ ` | ~) and Unicode P*.
_PUNCTUATION = r"[!-/:-@\[-`{-~\p{P}]"
_WORD_DELIMITERS = rf"[ \x{{2028}}\x{{2029}}]+|{_PUNCTUATION}"
# The upstream WordPiece decoder's clean-up of spaces before punctuation and
# contractions (not the Python clean_up_tokenization's " ' " -> "'").
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _clean_up(text: tf.Tensor) -> tf.Tensor:
  for before, after in _CLEAN_UP:
    text = tf.strings.regex_replace(text, re.escape(before), after)
  return text


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
               added_tokens: Sequence = (), name: str | None = None):
    super().__init__(name=name)
    self.added_tokens = tuple(added_tokens)   # tokenizer_json.AddedToken, ids past the vocabulary
    self.base_vocabulary_size = len(vocabulary)
    if [t.id for t in self.added_tokens] != list(range(len(vocabulary),
                                                       len(vocabulary) + len(self.added_tokens))):
      raise ValueError(f"added tokens must take the ids from {len(vocabulary)} on, in order")
    vocabulary = [str(v) for v in vocabulary] + [t.content for t in self.added_tokens]
    index = {token: i for i, token in enumerate(vocabulary)}
    missing = [t for t in (unk_token, cls_token, sep_token, pad_token, mask_token)
               if t not in index]
    if missing:
      raise ValueError(f"vocabulary lacks special tokens {missing}")
    self.vocabulary = vocabulary
    self.vocabulary_size = len(vocabulary)
    self.lowercase = lowercase
    self.strip_accents = lowercase if strip_accents is None else strip_accents
    self.split_cjk = split_cjk
    self.max_chars_per_word = max_chars_per_word
    self.suffix_indicator = suffix_indicator
    self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
    self.pad_token, self.mask_token = pad_token, mask_token
    self.unk_token_id, self.cls_token_id = index[unk_token], index[cls_token]
    self.sep_token_id, self.pad_token_id = index[sep_token], index[pad_token]
    self.mask_token_id = index[mask_token]
    self._specials = (unk_token, cls_token, sep_token, pad_token, mask_token)
    self._specials += tuple(t.content for t in self.added_tokens)
    self._special_ids = tuple(index[t] for t in self._specials)
    with self.name_scope:
      self._wordpiece = tf_text.FastWordpieceTokenizer(
          vocab=vocabulary, suffix_indicator=suffix_indicator,
          max_bytes_per_word=4 * max_chars_per_word, token_out_type=tf.int32,
          unknown_token=unk_token, no_pretokenization=True, support_detokenization=True)
      self._tokens = tf.constant(vocabulary)

  @classmethod
  def from_files(cls, vocabulary_path: str | os.PathLike, *, lowercase: bool = True,
                 strip_accents: bool | None = None, split_cjk: bool = True,
                 **special_tokens) -> WordPieceTokenizer:
    """From a `vocab.txt` (one token a line); special_tokens: unk_token, cls_token,
    sep_token, pad_token, mask_token when not BERT's.  ValueError naming the file
    when it is not usable."""
    try:
      with open(vocabulary_path, "rb") as f:
        # One token a line, split on "\n" only, as upstream (a token may hold other breaks).
        vocabulary = f.read().decode("utf-8").split("\n")
    except OSError as e:
      raise ValueError(f"{vocabulary_path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
      raise ValueError(f"{vocabulary_path}: not UTF-8 text ({e})") from None
    if vocabulary and vocabulary[-1] == "":
      vocabulary.pop()
    vocabulary = [token.rstrip("\r") for token in vocabulary]
    # Upstream maps a repeated token to its last line; earlier copies keep their
    # ids but can never be produced, so they get unique placeholders.
    last = {token: i for i, token in enumerate(vocabulary)}
    vocabulary = [token if last[token] == i else f"[unreachable duplicate {i}]"
                  for i, token in enumerate(vocabulary)]
    try:
      return cls(vocabulary, lowercase=lowercase, strip_accents=strip_accents,
                 split_cjk=split_cjk, **special_tokens)
    except (ValueError, RuntimeError) as e:
      raise ValueError(f"{vocabulary_path}: {e}") from None

  @classmethod
  def from_tokenizer_json(cls, path: str | os.PathLike,
                          tokenizer_config: dict | None = None) -> WordPieceTokenizer:
    """From a `tokenizers` tokenizer.json and its tokenizer_config.json, as
    transformers' BertTokenizer reads them: the vocabulary and added tokens
    from the first, the normalizer settings (do_lower_case, strip_accents,
    tokenize_chinese_chars) from the second.  ValueError naming the file and the
    component it cannot reproduce."""
    source = tokenizer_json.TokenizerJson(path, tokenizer_config or {},
                                          ("BertTokenizer", "ElectraTokenizer"))
    vocabulary, options, added = source.wordpiece()
    try:
      return cls(vocabulary, added_tokens=added, **options)
    except (ValueError, RuntimeError) as e:
      raise ValueError(f"{path}: {e}") from None

  def save_assets(self, directory: str | os.PathLike) -> str:
    """Writes the vocabulary as directory/vocab.txt (one token a line) and
    tokenizer.json (what transformers 5 reads); returns the first's path."""
    path = os.path.join(directory, "vocab.txt")
    base = self.vocabulary[:self.base_vocabulary_size]
    with open(path, "w", encoding="utf-8") as f:
      f.write("\n".join(base) + "\n")
    specials = [tokenizer_json.AddedToken(t, i)
                for t, i in zip(self._specials[:5], self._special_ids[:5])]
    with open(os.path.join(directory, tokenizer_json.TOKENIZER_JSON), "w", encoding="utf-8") as f:
      f.write(tokenizer_json.wordpiece_json(
          base, sorted(specials, key=lambda t: t.id) + list(self.added_tokens),
          lowercase=self.lowercase, strip_accents=self.strip_accents, split_cjk=self.split_cjk,
          unk=self.unk_token, cls=self.cls_token, sep=self.sep_token,
          suffix_indicator=self.suffix_indicator, max_chars_per_word=self.max_chars_per_word))
    return path

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
    return tf_text.regex_split(self.normalize(text), _WORD_DELIMITERS, _PUNCTUATION)

  def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
    """string [B] -> int32 RaggedTensor [B, (tokens)], no [CLS]/[SEP] added."""
    pieces, special_id = split_special_tokens(self._cleaned(text), self._specials,
                                              self._special_ids)
    words = self.words(tf.where(special_id >= 0, "", pieces.flat_values))         # [P, (W)]
    word_ids = self._wordpiece.tokenize(words.flat_values)                         # [W, (n)]
    word_ids = _replace_rows(word_ids, self._too_long(words.flat_values), self.unk_token_id)
    piece_ids = tf.RaggedTensor.from_row_splits(word_ids, words.row_splits).merge_dims(1, 2)
    return merge_pieces(pieces, special_id, piece_ids)

  def _cleaned(self, text: tf.Tensor) -> tf.Tensor:
    # regex_split stops at U+0000; cleaning removes both it and U+FFFD anyway.
    return tf.strings.regex_replace(clean_utf8(text), r"\x00", "\ufffd")

  def _too_long(self, words: tf.Tensor) -> tf.Tensor:
    return tf.strings.length(words, unit="UTF8_CHAR") > self.max_chars_per_word

  def tokenize_with_offsets(self, text: tf.Tensor):
    """tokenize, with where each token is in the text.

    Args:
      text: string [B].

    Returns:
      (ids, starts, ends): int32 RaggedTensors [B, (tokens)]; starts and ends
      are character offsets into clean_utf8(text) of the characters a token
      was normalized from, as Hugging Face's tokenizer reports them (`[UNK]`
      covers its whole word).
    """
    text = self._cleaned(text)
    pieces, special_id, piece_starts, piece_ends = split_special_tokens(
        text, self._specials, self._special_ids, with_offsets=True)
    ordinary = tf.where(special_id >= 0, "", pieces.flat_values)                  # [P]
    # Normalized a character at a time, so that each normalized byte knows the
    # character (of its piece) it came from: origin [P, (normalized bytes)].
    characters = tf.strings.unicode_split(ordinary, "UTF-8")                     # [P, (c)]
    normalized = characters.with_flat_values(self.normalize(characters.flat_values))
    sizes = tf.strings.length(normalized.flat_values)
    origin = tf.RaggedTensor.from_row_lengths(
        tf.repeat(tf.ragged.range(characters.row_lengths()).flat_values, sizes),
        tf.reduce_sum(tf.RaggedTensor.from_row_splits(tf.cast(sizes, tf.int64),
                                                      characters.row_splits), axis=1))
    words, word_starts, _ = tf_text.regex_split_with_offsets(
        tf.strings.reduce_join(normalized, axis=1), _WORD_DELIMITERS, _PUNCTUATION)  # [P, (W)]
    word_ids, starts, ends = self._wordpiece.tokenize_with_offsets(words.flat_values)  # [W, (n)]
    too_long = self._too_long(words.flat_values)
    word_ids = _replace_rows(word_ids, too_long, self.unk_token_id)
    starts = _replace_rows(starts, too_long, 0)
    ends = _replace_rows(ends, too_long, tf.strings.length(words.flat_values))
    # Bytes of the normalized piece -> characters of the piece -> of the text.
    def regroup(rows):
      return tf.RaggedTensor.from_row_splits(rows, words.row_splits).merge_dims(1, 2)
    piece_ids = regroup(word_ids)                                                # [P, (n)]
    byte_starts = regroup(starts + tf.expand_dims(word_starts.flat_values, 1))
    byte_ends = regroup(ends + tf.expand_dims(word_starts.flat_values, 1))
    base = tf.gather(origin.row_splits, byte_starts.value_rowids())
    char_starts = tf.cast(tf.gather(origin.flat_values, base + byte_starts.flat_values), tf.int32)
    char_ends = tf.cast(tf.gather(origin.flat_values, base + byte_ends.flat_values - 1),
                        tf.int32) + 1
    first_char = char_offsets(text, pieces.with_flat_values(piece_starts)).flat_values
    last_char = char_offsets(text, pieces.with_flat_values(piece_ends)).flat_values
    shift = tf.gather(first_char, byte_starts.value_rowids())
    return (merge_pieces(pieces, special_id, piece_ids),
            merge_pieces(pieces, special_id, byte_starts.with_flat_values(char_starts + shift),
                         special_values=first_char),
            merge_pieces(pieces, special_id, byte_ends.with_flat_values(char_ends + shift),
                         special_values=last_char))

  def __call__(self, text: tf.Tensor) -> tf.RaggedTensor:
    return self.tokenize(text)

  @property
  def subword_prefix(self) -> str:
    """What starts a token that continues a word (`##`)."""
    return self.suffix_indicator

  def tokens_to_string(self, tokens: tf.RaggedTensor) -> tf.Tensor:
    """Hugging Face's convert_tokens_to_string (the WordPiece decoder) on each row
    of tokens: string [G, (n)] -> [G].  The first token stays as it is (`##`
    kept), a later `##x` joins the one before, any other is set off by a space;
    then the decoder's clean-up."""
    prefix = re.escape(self.suffix_indicator)
    joined = join_tokens(
        tokens, lambda t: t,
        lambda t: tf.where(tf.strings.regex_full_match(t, f"{prefix}.+"),
                           tf.strings.regex_replace(t, f"^{prefix}", ""), " " + t))
    return _clean_up(joined)

  def detokenize(self, ids) -> tf.Tensor:
    """Ids int [B, L] (dense or ragged) -> string [B]; special tokens dropped."""
    kept = ordinary_ids(ids, [i for i in self._special_ids if i != self.unk_token_id],
                        self.vocabulary_size)
    return _clean_up(self._wordpiece.detokenize(kept))

  def id_to_token(self, ids: tf.Tensor) -> tf.Tensor:
    """Each id's vocabulary entry (`##ing`): int [...] -> string [...], "" out of range."""
    return lookup_tokens(self._tokens, ids)

  def id_to_text(self, ids: tf.Tensor) -> tf.Tensor:
    """Each id as readable text (`##ing` -> `ing`): int [...] -> string [...]."""
    tokens = self.id_to_token(ids)
    return tf.strings.regex_replace(tokens, "^##", "")


def _replace_rows(rows: tf.RaggedTensor, where: tf.Tensor, value) -> tf.RaggedTensor:
  """Replaces the rows of ragged [N, (n)] flagged in `where` [N] by [value]
  (value: a scalar, or one per row [N])."""
  lengths = tf.where(where, tf.ones_like(rows.row_lengths()), rows.row_lengths())
  keep = tf.repeat(~where, rows.row_lengths())
  kept = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(rows.flat_values, keep),
                                          tf.where(where, tf.zeros_like(lengths), lengths))
  fill = tf.RaggedTensor.from_row_lengths(
      tf.boolean_mask(tf.broadcast_to(tf.cast(value, rows.dtype), tf.shape(where)), where),
      tf.cast(where, tf.int64))
  return tf.concat([fill, kept], axis=1)
