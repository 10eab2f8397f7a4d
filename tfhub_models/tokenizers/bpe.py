"""Byte-level BPE (GPT-2 / RoBERTa / BART) from core TensorFlow and tensorflow-text ops."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from tfhub_models.tokenizers import tokenizer_json
from tfhub_models.tokenizers.text import (WHITE_SPACE, clean_utf8, lookup_tokens, merge_pieces,
                                          ordinary_ids, sentencepiece_tokenizer,
                                          split_special_tokens)

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
_BPE_SPACE = WHITE_SPACE
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
  which; built from vocab.json/merges.txt alone, none does), and so do the
  `added_tokens` (tokenizer_json.AddedToken: a tokenizer.json's tokens past the
  five specials, or with other ids);
  the rest is pre-split with GPT-2's regex, mapped byte by byte to GPT-2's
  printable alphabet and merged by a SentencePiece BPE model built from the
  merges.  No mutable tables: the maps are constants, the model a graph
  constant.  Invalid UTF-8 is replaced by U+FFFD first.
  """

  def __init__(self, vocabulary: dict, merges: Sequence[tuple], *, bos_token: str = "<s>",
               eos_token: str = "</s>", pad_token: str = "<pad>", unk_token: str = "<unk>",
               mask_token: str = "<mask>", lstrip: Sequence[str] = (),
               rstrip: Sequence[str] = (), added_tokens: Sequence = (),
               name: str | None = None):
    super().__init__(name=name)
    self.vocabulary = dict(vocabulary)          # the BPE model's own (vocab.json)
    self.merges = [tuple(m) for m in merges]
    self.added_tokens = tuple(added_tokens)
    clash = [t.content for t in self.added_tokens
             if self.vocabulary.get(t.content, t.id) != t.id]
    if clash:
      raise ValueError(f"added tokens {clash} have other ids in the vocabulary")
    ids = dict(self.vocabulary, **{t.content: t.id for t in self.added_tokens})
    missing = [t for t in (bos_token, eos_token, pad_token, unk_token, mask_token) if t not in ids]
    if missing:
      raise ValueError(f"vocabulary lacks special tokens {missing}")
    self.vocabulary_size = max(ids.values()) + 1
    self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
    self.unk_token, self.mask_token = unk_token, mask_token
    self.bos_token_id, self.eos_token_id = ids[bos_token], ids[eos_token]
    self.pad_token_id, self.unk_token_id = ids[pad_token], ids[unk_token]
    self.mask_token_id = ids[mask_token]
    standard = (bos_token, eos_token, pad_token, unk_token, mask_token)
    self._specials = standard + tuple(t.content for t in self.added_tokens
                                      if t.content not in standard)
    self._special_ids = tuple(ids[t] for t in self._specials)
    self.lstrip = tuple(lstrip) + tuple(t.content for t in self.added_tokens if t.lstrip)
    self.rstrip = tuple(rstrip) + tuple(t.content for t in self.added_tokens if t.rstrip)
    proto, to_vocabulary = bpe_sentencepiece_model(self.vocabulary, self.merges,
                                                   self._specials)
    byte_map = bytes_to_unicode()
    self._nul_mapped = re.escape("".join(chr(byte_map[b]) for b in _NUL_STAND_IN.encode()))
    self._nul_char = chr(byte_map[0])
    inverse = np.full([max(byte_map.values()) + 1], -1, np.int32)
    for byte, code in byte_map.items():
      inverse[code] = byte
    tokens = [""] * self.vocabulary_size
    for token, index in ids.items():
      tokens[index] = token
    with self.name_scope:
      self._bpe = sentencepiece_tokenizer(proto)
      self._to_vocabulary = tf.constant(to_vocabulary, tf.int32)
      self._byte_to_char = tf.constant([byte_map[b] for b in range(256)], tf.int32)
      self._char_to_byte = tf.constant(inverse)
      self._byte_strings = tf.constant([bytes([b]) for b in range(256)])
      self._tokens = tf.constant(tokens)

  @classmethod
  def from_files(cls, vocabulary_path: str | os.PathLike, merges_path: str | os.PathLike,
                 tokenizer_json_path: str | os.PathLike | None = None) -> ByteLevelBPETokenizer:
    """From `vocab.json` and `merges.txt`, and, when given, the `tokenizer.json`
    whose added tokens say which strip the spaces around them (upstream loads it
    in preference to the other two); ValueError naming the file that is unusable."""
    vocabulary = tokenizer_json.read_json(vocabulary_path)
    try:
      with open(merges_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    except OSError as e:
      raise ValueError(f"{merges_path}: {e.strerror}") from None
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    bad = [m for m in merges if len(m) != 2]
    if bad:
      raise ValueError(f"{merges_path}: a merge is two tokens separated by a space, not {bad[0]}")
    lstrip, rstrip = [], []
    if tokenizer_json_path is not None:
      for added in tokenizer_json.read_json(tokenizer_json_path).get("added_tokens", []):
        if added.get("lstrip"):
          lstrip.append(added.get("content"))
        if added.get("rstrip"):
          rstrip.append(added.get("content"))
    try:
      return cls(vocabulary, merges, lstrip=lstrip, rstrip=rstrip)
    except ValueError as e:
      raise ValueError(f"{os.path.dirname(os.path.abspath(vocabulary_path))}: {e}") from None

  @classmethod
  def from_tokenizer_json(cls, path: str | os.PathLike,
                          tokenizer_config: dict | None = None) -> ByteLevelBPETokenizer:
    """From a `tokenizers` tokenizer.json (and its tokenizer_config.json's
    special tokens), as transformers' RobertaTokenizer reads it: the vocabulary,
    merges and added tokens.  ValueError naming the file and the component it
    cannot reproduce."""
    source = tokenizer_json.TokenizerJson(path, tokenizer_config or {},
                                          ("BartTokenizer", "RobertaTokenizer"))
    vocabulary, merges, added = source.byte_level_bpe()
    names = {name: source.special_token(name, default) for name, default in
             (("bos_token", "<s>"), ("eos_token", "</s>"), ("pad_token", "<pad>"),
              ("unk_token", "<unk>"), ("mask_token", "<mask>"))}
    try:
      return cls(vocabulary, merges, added_tokens=added, **names)
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from None

  def save_assets(self, directory: str | os.PathLike) -> str:
    """Writes directory/vocab.json and merges.txt, and tokenizer.json (what
    transformers 5 reads); returns the vocabulary's path."""
    path = os.path.join(directory, "vocab.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump(self.vocabulary, f, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
      f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges))
    given = {t.content: t for t in self.added_tokens}
    tokens = [given.get(t) or tokenizer_json.AddedToken(t, i, lstrip=t in self.lstrip,
                                                        rstrip=t in self.rstrip)
              for t, i in zip(self._specials, self._special_ids)]
    with open(os.path.join(directory, tokenizer_json.TOKENIZER_JSON), "w", encoding="utf-8") as f:
      f.write(tokenizer_json.byte_level_bpe_json(self.vocabulary, self.merges, tokens,
                                                 self.bos_token, self.eos_token))
    return path

  def _split(self, text: tf.Tensor) -> tf.RaggedTensor:
    """GPT-2 pre-split of string [N]: RaggedTensor string [N, (pieces)]."""
    text = tf.strings.regex_replace(text, _BPE_MARK, "")
    text = tf.strings.regex_replace(text, f"([{_BPE_SPACE}])([^{_BPE_SPACE}])",
                                    _BPE_MARK + r"\1\2")
    return tf_text.regex_split(text, _BPE_PIECES + "|" + _BPE_MARK, _BPE_PIECES)

  def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
    """string [B] -> int32 RaggedTensor [B, (tokens)], no <s>/</s> added."""
    text = clean_utf8(text)
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
        lambda c: tf.gather(self._char_to_byte,
                            tf.clip_by_value(c, 0, tf.size(self._char_to_byte) - 1)),
        codes)
    raw = tf.strings.reduce_join(tf.ragged.map_flat_values(
        lambda b: tf.gather(self._byte_strings, tf.maximum(b, 0)), byte_values), axis=-1)
    return tf.strings.unicode_transcode(raw, "UTF-8", "UTF-8", errors="replace",
                                        replacement_char=0xFFFD)

  def id_to_token(self, ids: tf.Tensor) -> tf.Tensor:
    """Each id's vocabulary entry (`Ġworld`): int [...] -> string [...], "" out of range."""
    return lookup_tokens(self._tokens, ids)


_NUL_STAND_IN = "\ufdd1"   # stands for U+0000 until after the byte mapping
