"""XLM-RoBERTa's SentencePiece tokenizer (tensorflow-text) with the fairseq id layout."""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Sequence

import sentencepiece
import tensorflow as tf

from tfhub_models.tokenizers import tokenizer_json
from tfhub_models.tokenizers.text import (WHITE_SPACE, char_offsets, clean_utf8, join_tokens,
                                          merge_pieces, sentencepiece_tokenizer,
                                          split_special_tokens)

# White_Space less U+000B, which SentencePiece's nmt_nfkc normaliser deletes
# before the upstream tokenizer splits; SentencePiece maps only some of the
# others to a space itself.
_SPACES = "[" + WHITE_SPACE.replace(r"\x{0B}", "") + "]"


@functools.cache
def _controls_and_spaces() -> tuple:
  """The characters a SentencePiece normaliser may delete or make a space (U+FFFD too)."""
  return tuple(chr(c) for c in range(0x110000)
               if unicodedata.category(chr(c)) in ("Cc", "Cf", "Zs", "Zl", "Zp")) + ("\ufffd",)


def unigram_model(pieces: Sequence[tuple], charsmap: bytes | None) -> bytes:
  """A serialized SentencePiece Unigram model of XLM-RoBERTa's kind: `<unk>`,
  `<s>`, `</s>`, then `pieces` [(piece, score)]; `charsmap` (a precompiled
  normaliser, None for none), a dummy prefix, extra whitespace removed.

  A piece with a `▁` inside it is marked unused: the upstream tokenizer
  splits words before its Unigram model runs, so it can never produce one.
  """
  from sentencepiece import sentencepiece_model_pb2 as pb

  model = pb.ModelProto()
  model.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
  model.trainer_spec.vocab_size = len(pieces) + 3
  model.trainer_spec.unk_id, model.trainer_spec.bos_id, model.trainer_spec.eos_id = 0, 1, 2
  model.trainer_spec.pad_id = -1
  model.trainer_spec.byte_fallback = False
  spec = model.normalizer_spec
  spec.name = "nmt_nfkc" if charsmap else "identity"
  if charsmap:
    spec.precompiled_charsmap = charsmap
  spec.add_dummy_prefix = spec.remove_extra_whitespaces = spec.escape_whitespaces = True
  kinds = pb.ModelProto.SentencePiece
  for piece, kind in (("<unk>", kinds.UNKNOWN), ("<s>", kinds.CONTROL), ("</s>", kinds.CONTROL)):
    entry = model.pieces.add()
    entry.piece, entry.type, entry.score = piece, kind, 0.0
  for piece, score in pieces:
    entry = model.pieces.add()
    entry.piece, entry.score = piece, score
    entry.type = kinds.UNUSED if "▁" in piece[1:] else kinds.NORMAL
  return model.SerializeToString()


class XLMRobertaTokenizer(tf.Module):
  """SentencePiece with the fairseq id layout that XLM-RoBERTa uses.

  `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, SentencePiece piece i >= 3 is i + 1,
  `<mask>` follows them, then the `added_tokens` (a tokenizer.json's, past
  `<mask>`; tokenizer_json.AddedToken).  The special tokens written literally in text are
  recognised as those tokens, as the upstream (Hugging Face) tokenizer does;
  whitespace around them is dropped (so `<mask>` absorbs the space before it).
  Invalid UTF-8 is replaced by U+FFFD before tokenizing.
  """

  special_tokens = ("<s>", "<pad>", "</s>", "<unk>")
  bos_token_id, pad_token_id, eos_token_id, unk_token_id = 0, 1, 2, 3
  mask_token = "<mask>"
  unk_token = "<unk>"

  def __init__(self, proto: bytes, *, added_tokens: Sequence = (), name: str | None = None):
    super().__init__(name=name)
    if not isinstance(proto, (bytes, bytearray)) or not proto:
      raise ValueError("XLMRobertaTokenizer needs the serialized SentencePiece model (bytes)")
    self.proto = bytes(proto)
    with self.name_scope:
      self._sp = sentencepiece_tokenizer(self.proto)
    self.sp_vocabulary_size = int(self._sp.vocab_size())
    # SentencePiece's C++ normaliser stops at U+0000, where the upstream
    # tokenizer sees an unknown character.  U+0000 is therefore replaced by a
    # private-use character that no piece contains, which is unknown too.
    pieces = sentencepiece.SentencePieceProcessor(model_proto=self.proto)
    alphabet = set("".join(pieces.id_to_piece(i) for i in range(pieces.get_piece_size())))
    self._nul_stand_in = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in alphabet)
    # The characters this model's normaliser deletes or makes a space: no
    # token's offsets start at one (see tokenize_with_offsets).
    blank = [c for c in _controls_and_spaces() if pieces.normalize(f"a{c}b") in ("▁ab", "▁a▁b")]
    self._blank = "[ " + "".join(f"\\x{{{ord(c):X}}}" for c in blank) + "]"
    # Piece ids 0..n-1 become 0..n (fairseq offset 1, <unk> moves to 3), then <mask>.
    self.mask_token_id = self.sp_vocabulary_size + 1
    self.added_tokens = tuple(added_tokens)
    expected = list(range(self.mask_token_id + 1, self.mask_token_id + 1 + len(self.added_tokens)))
    if [t.id for t in self.added_tokens] != expected:
      raise ValueError(f"added tokens must take the ids after <mask> ({self.mask_token_id}) in "
                       f"order, not {[t.id for t in self.added_tokens]}")
    self.vocabulary_size = self.mask_token_id + 1 + len(self.added_tokens)
    self._specials = self.special_tokens + ("<mask>",) + tuple(t.content for t in self.added_tokens)
    self._special_ids = (0, 1, 2, 3, self.mask_token_id) + tuple(t.id for t in self.added_tokens)

  @classmethod
  def from_file(cls, path: str | os.PathLike) -> XLMRobertaTokenizer:
    """From a SentencePiece model file (`sentencepiece.bpe.model`, keras-hub's
    `vocabulary.spm`); ValueError naming the file if it is not one."""
    try:
      with open(path, "rb") as f:
        proto = f.read()
      return cls(proto)
    except OSError as e:
      raise ValueError(f"{path}: {e.strerror}") from None
    except Exception as e:  # what the SentencePiece op says of a bad model
      reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
      raise ValueError(f"{path}: not a valid SentencePiece model ({reason[:200]})") from None

  @classmethod
  def from_tokenizer_json(cls, path: str | os.PathLike,
                          tokenizer_config: dict | None = None) -> XLMRobertaTokenizer:
    """From a `tokenizers` tokenizer.json (and its tokenizer_config.json's
    settings), as transformers' XLMRobertaTokenizer reads it: the Unigram
    pieces and scores, the Precompiled charsmap, the added tokens.  ValueError
    naming the file and the component it cannot reproduce."""
    source = tokenizer_json.TokenizerJson(path, tokenizer_config or {}, ("XLMRobertaTokenizer",))
    pieces, charsmap, added = source.unigram_pieces()
    try:
      return cls(unigram_model(pieces, charsmap), added_tokens=added)
    except Exception as e:  # what the SentencePiece op says of the model
      reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
      raise ValueError(f"{path}: its Unigram model is not usable ({reason[:200]})") from None

  def pieces(self) -> list:
    """The SentencePiece pieces past `<unk>`, `<s>`, `</s>`: [(piece, score)]."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    model = pb.ModelProto.FromString(self.proto)
    return [(p.piece, p.score) for p in model.pieces[3:]]

  def save_assets(self, directory: str | os.PathLike) -> str:
    """Writes directory/sentencepiece.bpe.model (the SentencePiece model) and
    tokenizer.json (what transformers 5 reads); returns the first's path."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    path = os.path.join(directory, "sentencepiece.bpe.model")
    with open(path, "wb") as f:
      f.write(self.proto)
    charsmap = pb.ModelProto.FromString(self.proto).normalizer_spec.precompiled_charsmap
    specials = [tokenizer_json.AddedToken(t, i) for t, i in
                zip(self.special_tokens + ("<mask>",), (0, 1, 2, 3, self.mask_token_id))]
    with open(os.path.join(directory, tokenizer_json.TOKENIZER_JSON), "w", encoding="utf-8") as f:
      f.write(tokenizer_json.unigram_json(self.pieces(), charsmap or None,
                                          specials + list(self.added_tokens)))
    return path

  def tokenize(self, text: tf.Tensor) -> tf.RaggedTensor:
    """Tokenizes without adding `<s>`/`</s>`.

    Args:
      text: string [B].

    Returns:
      int32 RaggedTensor [B, (tokens)] of model ids.
    """
    pieces, special_id = split_special_tokens(self._spaced(text), self._specials,
                                              self._special_ids)
    sp_ids = self._sp.tokenize(tf.where(special_id >= 0, "", pieces.flat_values))  # [P, (n)]
    return merge_pieces(pieces, special_id, tf.where(sp_ids == 0, self.unk_token_id, sp_ids + 1))

  def _spaced(self, text: tf.Tensor) -> tf.Tensor:
    """What SentencePiece is fed: UTF-8 cleaned, each white space a space, U+0000 its
    stand-in; as many characters as clean_utf8(text)."""
    text = tf.strings.regex_replace(clean_utf8(text), _SPACES, " ")
    return tf.strings.regex_replace(text, "\\x00", self._nul_stand_in)

  def tokenize_with_offsets(self, text: tf.Tensor):
    """tokenize, with where each token is in the text.

    Args:
      text: string [B].

    Returns:
      (ids, starts, ends): int32 RaggedTensors [B, (tokens)]; starts and ends
      are character offsets into clean_utf8(text) as Hugging Face's XLM-R
      tokenizer reports them: a piece's leading space is not part of it, and a
      piece that covers no character (a lone `▁`) gets the character after it.
    """
    spaced = self._spaced(text)
    pieces, special_id, piece_starts, piece_ends = split_special_tokens(
        spaced, self._specials, self._special_ids, with_offsets=True)
    ordinary = tf.where(special_id >= 0, "", pieces.flat_values)
    sp_ids, sp_starts, sp_ends = self._sp.tokenize_with_offsets(ordinary)   # [P, (n)], bytes
    ids = merge_pieces(pieces, special_id, tf.where(sp_ids == 0, self.unk_token_id, sp_ids + 1))
    starts, ends = (char_offsets(spaced, merge_pieces(
        pieces, special_id, offsets + tf.expand_dims(piece_starts, 1), special_values=whole))
                    for offsets, whole in ((sp_starts, piece_starts), (sp_ends, piece_ends)))
    # Blank characters (spaces, and those the normaliser deletes) at either end
    # of a token are not part of it: its first and last solid characters.
    characters = tf.strings.unicode_split(spaced, "UTF-8")                 # [B, (C)]
    positions = tf.ragged.range(tf.cast(characters.row_lengths(), tf.int32))
    solid = tf.ragged.boolean_mask(positions, ~tf.strings.regex_full_match(characters,
                                                                           self._blank))
    # Each row's solid positions, then its length; int32 max pads the rows.
    solid = tf.concat([solid, tf.cast(characters.row_lengths()[:, None], tf.int32)], axis=1)
    solid = solid.to_tensor(default_value=tf.int32.max)
    lengths = starts.row_lengths()
    first = tf.gather(solid, tf.searchsorted(solid, starts.to_tensor(0), side="left"),
                      batch_dims=1)
    last = tf.gather(solid, tf.maximum(tf.searchsorted(solid, ends.to_tensor(0), side="left") - 1,
                                       0), batch_dims=1)
    first = tf.RaggedTensor.from_tensor(first, lengths=lengths)
    last = tf.RaggedTensor.from_tensor(last, lengths=lengths)
    empty = first >= ends
    return ids, tf.where(empty, ends, first), tf.where(empty, ends + 1, last + 1)

  def __call__(self, text: tf.Tensor) -> tf.RaggedTensor:
    return self.tokenize(text)

  # No continuing-subword marker: the token-classification pipeline's words
  # are told by spaces instead (see tfhub_models.entities).
  subword_prefix = None

  def tokens_to_string(self, tokens: tf.RaggedTensor) -> tf.Tensor:
    """Hugging Face's convert_tokens_to_string (the Metaspace decoder) on each row
    of pieces: string [G, (n)] -> [G].  The first piece loses every `▁`, the
    others turn each into a space; a lone `▁` alone gives ""."""
    return join_tokens(tokens, lambda t: tf.strings.regex_replace(t, "▁", ""),
                       lambda t: tf.strings.regex_replace(t, "▁", " "))

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
