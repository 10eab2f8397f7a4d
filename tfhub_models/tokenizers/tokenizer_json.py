"""The `tokenizers` library's `tokenizer.json`, read into what the in-graph
tokenizers are built from, and written back.

`transformers` 5 saves a tokenizer as `tokenizer.json` and
`tokenizer_config.json` alone.  Loading one, its classes for our families
(`XLMRobertaTokenizer`, `BertTokenizer`, `RobertaTokenizer`) take from
`tokenizer.json` the vocabulary (with the merges, or the SentencePiece
charsmap of a `Precompiled` normalizer) and the added tokens, and build the
rest of the pipeline themselves from `tokenizer_config.json`'s settings
(`add_prefix_space`, `do_lower_case`...); the file's own normalizer and
pre-tokenizer only count when `tokenizer_config.json` names the generic
class (`TokenizersBackend`, `PreTrainedTokenizerFast`).  The readers here
follow the same rules, so the ids are those `transformers` gives, and refuse
what the in-graph tokenizers cannot reproduce exactly with a `ValueError`
naming the file, the component and what is supported.

The writers build the pipeline those classes build with the `tokenizers`
library itself, so what `save_to_preset` writes loads in `transformers` 4
(which runs the file as it is) and 5 alike.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pathlib
from collections.abc import Sequence

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# tokenizer_config.json's tokenizer_class values that run tokenizer.json as it is.
GENERIC_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
_METASPACE = "\u2581"


@dataclasses.dataclass(frozen=True)
class AddedToken:
  """An entry of tokenizer.json's `added_tokens`: matched in raw text before
  the model runs.  `lstrip`/`rstrip`: it takes the whitespace before/after it."""
  content: str
  id: int
  lstrip: bool = False
  rstrip: bool = False
  special: bool = True
  normalized: bool = False


def read_json(path: str | os.PathLike) -> dict:
  """A JSON object from a file; ValueError naming the file if unreadable or not
  an object (a truncated file included)."""
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except OSError as e:
    raise ValueError(f"{path}: {e.strerror}") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(data, dict):
    raise ValueError(f"{path}: not a JSON object")
  return data


def token_content(value) -> str | None:
  """A special token of tokenizer_config.json: a string or an AddedToken dict."""
  if isinstance(value, dict):
    value = value.get("content")
  return None if value is None else str(value)


class TokenizerJson:
  """One checkpoint's tokenizer.json with its tokenizer_config.json.

  Args:
    path: the tokenizer.json.
    tokenizer_config: the parsed tokenizer_config.json ({} when there is none).
    family_classes: the `transformers` tokenizer classes of the family (without
      "Fast"); a config naming another class is refused.
  """

  def __init__(self, path: str | os.PathLike, tokenizer_config: dict,
               family_classes: Sequence[str]):
    self.path = pathlib.Path(path)
    self.data = read_json(self.path)
    self.tokenizer_config = dict(tokenizer_config or {})
    model = self.data.get("model")
    if not isinstance(model, dict):
      raise ValueError(f"{self.path}: no \"model\" object (not a tokenizers tokenizer.json)")
    self.model = model
    named = self.tokenizer_config.get("tokenizer_class")
    bare = named[:-len("Fast")] if isinstance(named, str) and named.endswith("Fast") else named
    self.generic = named in GENERIC_CLASSES
    if named is not None and not self.generic and bare not in family_classes:
      raise ValueError(
          f"{self.path.parent / TOKENIZER_CONFIG}: tokenizer_class {named!r} is not one the "
          f"in-graph tokenizer reproduces (supported: {', '.join(family_classes)}, "
          f"{', '.join(GENERIC_CLASSES)})")

  def refuse(self, component: str, found, supported: str):
    """ValueError naming the file, the component and what is supported."""
    raise ValueError(f"{self.path}: {component} {found!r} cannot be reproduced exactly by the "
                     f"in-graph tokenizer (supported: {supported})")

  def setting(self, name: str, default):
    """A tokenizer_config.json setting, as the transformers class reads it."""
    value = self.tokenizer_config.get(name, default)
    return default if value is None and default is not None else value

  def special_token(self, name: str, default: str) -> str:
    return token_content(self.tokenizer_config.get(name)) or default

  def model_type(self, expected: str) -> None:
    found = self.model.get("type")
    if found is None:   # files older than the "type" field: told apart by their keys
      found = ("Unigram" if isinstance(self.model.get("vocab"), list) else
               "BPE" if "merges" in self.model else "WordPiece" if "continuing_subword_prefix"
               in self.model else None)
    if found != expected:
      self.refuse("model.type", found, f"{expected} for this model family")

  def added_tokens(self, *, normalized_ok: bool) -> list:
    """The added tokens, checked: single_word ones are refused, and so are
    non-special `normalized` ones unless the family has no normalizer
    (`normalized_ok`): they are matched in normalized text, the in-graph
    tokenizers match in raw text."""
    out = []
    for entry in self.data.get("added_tokens") or []:
      try:
        token = AddedToken(str(entry["content"]), int(entry["id"]), bool(entry.get("lstrip")),
                           bool(entry.get("rstrip")), bool(entry.get("special", True)),
                           bool(entry.get("normalized", False)))
      except (KeyError, TypeError, ValueError):
        raise ValueError(f"{self.path}: added_tokens entry {entry!r} needs content and "
                         "id") from None
      if entry.get("single_word"):
        self.refuse(f"added token {token.content!r} single_word", True, "single_word false")
      if token.normalized and not token.special and not normalized_ok:
        self.refuse(f"added token {token.content!r} normalized", True,
                    "special tokens, or tokens added with normalized=False, which are matched "
                    "in the raw text")
      out.append(token)
    return out

  # --- the families ---------------------------------------------------------

  def unigram_pieces(self) -> tuple:
    """XLM-RoBERTa (`XLMRobertaTokenizer`): a Unigram model in the fairseq layout.

    Returns:
      (pieces [(piece, score)] between `<unk>` and `<mask>`, the SentencePiece
      precompiled charsmap bytes or None, extra AddedTokens past `<mask>`).
    """
    self.model_type("Unigram")
    vocab = self.model.get("vocab")
    try:
      pieces = [(str(p), float(s)) for p, s in vocab]
    except (TypeError, ValueError):
      raise ValueError(f"{self.path}: model.vocab must be a list of [piece, score]") from None
    layout = ["<s>", "<pad>", "</s>", "<unk>"]
    if len(pieces) < 6 or [p for p, _ in pieces[:4]] != layout or pieces[-1][0] != "<mask>":
      self.refuse("model.vocab layout", [p for p, _ in pieces[:4]] + ["...", pieces[-1][0]
                                                                     if pieces else None],
                  "XLM-RoBERTa's: <s>, <pad>, </s>, <unk>, the SentencePiece pieces, <mask>")
    for name, default in (("bos_token", "<s>"), ("pad_token", "<pad>"), ("eos_token", "</s>"),
                          ("unk_token", "<unk>"), ("mask_token", "<mask>")):
      if self.special_token(name, default) != default:
        raise ValueError(f"{self.path.parent / TOKENIZER_CONFIG}: {name} "
                         f"{self.special_token(name, default)!r} is not XLM-RoBERTa's {default!r}")
    if not self.setting("add_prefix_space", True):
      self.refuse(f"{TOKENIZER_CONFIG} add_prefix_space", False,
                  "true: every word starts with \u2581, as SentencePiece's dummy prefix")
    charsmap = self._precompiled_charsmap()
    if self.generic:
      self._check_generic_unigram(charsmap is not None)
    added = self.added_tokens(normalized_ok=False)
    return pieces[4:-1], charsmap, self._extra(added, len(pieces))

  def _precompiled_charsmap(self) -> bytes | None:
    """The first Precompiled normalizer's charsmap, as transformers takes it."""
    normalizer = self.data.get("normalizer") or {}
    candidates = (normalizer.get("normalizers") or [] if normalizer.get("type") == "Sequence"
                  else [normalizer])
    for candidate in candidates:
      if candidate.get("type") == "Precompiled" and candidate.get("precompiled_charsmap"):
        try:
          return base64.b64decode(candidate["precompiled_charsmap"], validate=True)
        except (ValueError, TypeError):
          raise ValueError(f"{self.path}: normalizer Precompiled: precompiled_charsmap is not "
                           "base64") from None
    return None

  def _check_generic_unigram(self, has_charsmap: bool) -> None:
    normalizer = self.data.get("normalizer")
    kinds = ([n.get("type") for n in normalizer.get("normalizers") or []]
             if normalizer and normalizer.get("type") == "Sequence"
             else [normalizer.get("type")] if normalizer else [])
    if kinds not in ([], ["Precompiled"]) or (kinds and not has_charsmap):
      self.refuse("normalizer", "+".join(map(str, kinds)), "Precompiled (SentencePiece's "
                  "charsmap) or none")
    pre = self.data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps or []]
    metaspace = (steps or [{}])[-1]
    if (kinds != ["WhitespaceSplit", "Metaspace"] or metaspace.get("replacement") != _METASPACE
        or metaspace.get("prepend_scheme", "always") != "always"):
      self.refuse("pre_tokenizer", "+".join(map(str, kinds)),
                  "WhitespaceSplit then Metaspace(\u2581, prepend_scheme always)")
    if self.model.get("byte_fallback"):
      self.refuse("model.byte_fallback", True, "false")
    if self.model.get("unk_id", 3) != 3:
      self.refuse("model.unk_id", self.model.get("unk_id"), "3")

  def byte_level_bpe(self) -> tuple:
    """BART (`RobertaTokenizer`): a byte-level BPE.

    Returns:
      (vocabulary {token: id}, merges [(left, right)], AddedTokens).
    """
    self.model_type("BPE")
    if self.model.get("dropout") not in (None, 0, 0.0):
      self.refuse("model.dropout", self.model.get("dropout"),
                  "null: BPE dropout samples a different split on every call")
    if self.setting("add_prefix_space", False):
      self.refuse(f"{TOKENIZER_CONFIG} add_prefix_space", True, "false, as BART's tokenizer")
    if self.generic:
      for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if self.model.get(key):
          self.refuse(f"model.{key}", self.model[key], "none")
      pre = self.data.get("pre_tokenizer") or {}
      if (pre.get("type") != "ByteLevel" or pre.get("add_prefix_space")
          or not pre.get("use_regex", True) or self.data.get("normalizer")):
        self.refuse("pre_tokenizer", pre.get("type"),
                    "ByteLevel (add_prefix_space false, use_regex true) and no normalizer")
    vocabulary = self.model.get("vocab")
    if not isinstance(vocabulary, dict):
      raise ValueError(f"{self.path}: model.vocab must be an object {{token: id}}")
    merges = []
    for merge in self.model.get("merges") or []:
      pair = tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge)
      if len(pair) != 2:
        raise ValueError(f"{self.path}: model.merges: a merge is two tokens, not {merge!r}")
      merges.append(pair)
    added = self.added_tokens(normalized_ok=True)   # BART has no normalizer
    return {str(k): int(v) for k, v in vocabulary.items()}, merges, added

  def wordpiece(self) -> tuple:
    """ELECTRA (`BertTokenizer`): WordPiece with BERT's normalizer.

    Returns:
      (vocabulary [token by id], options of WordPieceTokenizer, extra AddedTokens).
    """
    self.model_type("WordPiece")
    vocabulary = self.model.get("vocab")
    if not isinstance(vocabulary, dict):
      raise ValueError(f"{self.path}: model.vocab must be an object {{token: id}}")
    by_id = sorted((int(i), str(t)) for t, i in vocabulary.items())
    if [i for i, _ in by_id] != list(range(len(by_id))):
      raise ValueError(f"{self.path}: model.vocab ids must be 0..{len(by_id) - 1} without gaps")
    options = {name: self.special_token(name, default) for name, default in
               (("unk_token", "[UNK]"), ("cls_token", "[CLS]"), ("sep_token", "[SEP]"),
                ("pad_token", "[PAD]"), ("mask_token", "[MASK]"))}
    if self.generic:
      normalizer = self.data.get("normalizer") or {}
      if normalizer.get("type") != "BertNormalizer" or not normalizer.get("clean_text", True):
        self.refuse("normalizer", normalizer.get("type"), "BertNormalizer with clean_text")
      if (self.data.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
        self.refuse("pre_tokenizer", (self.data.get("pre_tokenizer") or {}).get("type"),
                    "BertPreTokenizer")
      options.update(lowercase=bool(normalizer.get("lowercase", True)),
                     strip_accents=normalizer.get("strip_accents"),
                     split_cjk=bool(normalizer.get("handle_chinese_chars", True)),
                     suffix_indicator=str(self.model.get("continuing_subword_prefix", "##")),
                     max_chars_per_word=int(self.model.get("max_input_chars_per_word", 100)))
    else:   # BertTokenizer's own pipeline, with tokenizer_config.json's settings
      options.update(lowercase=bool(self.setting("do_lower_case", True)),
                     strip_accents=self.tokenizer_config.get("strip_accents"),
                     split_cjk=bool(self.setting("tokenize_chinese_chars", True)))
    if options["unk_token"] not in vocabulary:
      self.refuse("unk_token", options["unk_token"], "a token of model.vocab")
    added = self.added_tokens(normalized_ok=False)
    return [t for _, t in by_id], options, self._extra(added, len(by_id))

  def _extra(self, added: list, size: int) -> list:
    """Added tokens past the model's vocabulary, their ids checked to follow it."""
    extra = sorted((t for t in added if t.id >= size), key=lambda t: t.id)
    if [t.id for t in extra] != list(range(size, size + len(extra))):
      raise ValueError(f"{self.path}: added_tokens past the vocabulary must take the ids from "
                       f"{size} on, in order (got {[t.id for t in extra]})")
    return extra


def vocabulary_disagreement(legacy: Sequence, from_json: Sequence) -> str | None:
  """None when two vocabularies (sequences of tokens, or of (token, id)) agree,
  else a short description of the first difference."""
  legacy, from_json = list(legacy), list(from_json)
  if len(legacy) != len(from_json):
    return f"{len(legacy)} entries against {len(from_json)}"
  for i, (a, b) in enumerate(zip(legacy, from_json)):
    if a != b:
      return f"entry {i}: {a!r} against {b!r}"
  return None


# --- writing ---------------------------------------------------------------

def _added(tokenizer_object, tokens: Sequence[AddedToken]) -> None:
  from tokenizers import AddedToken as LibraryToken
  for token in sorted(tokens, key=lambda t: t.id):
    made = LibraryToken(token.content, lstrip=token.lstrip, rstrip=token.rstrip,
                        normalized=token.normalized, special=token.special)
    if token.special:
      tokenizer_object.add_special_tokens([made])
    else:
      tokenizer_object.add_tokens([made])
    got = tokenizer_object.token_to_id(token.content)
    if got != token.id:
      raise ValueError(f"added token {token.content!r} would get id {got}, not {token.id}")


def unigram_json(pieces: Sequence[tuple], charsmap: bytes | None,
                 added: Sequence[AddedToken]) -> str:
  """tokenizer.json of XLMRobertaTokenizer: the fairseq layout around `pieces`
  [(piece, score)], Precompiled(charsmap), WhitespaceSplit + Metaspace."""
  from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
  from tokenizers.models import Unigram

  vocab = ([("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + list(pieces)
           + [("<mask>", 0.0)])
  tok = Tokenizer(Unigram(vocab, unk_id=3, byte_fallback=False))
  if charsmap:
    tok.normalizer = normalizers.Precompiled(charsmap)
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.WhitespaceSplit(),
      pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always")])
  tok.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always")
  tok.post_processor = processors.TemplateProcessing(
      single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
      special_tokens=[("<s>", 0), ("</s>", 2)])
  _added(tok, added)
  return tok.to_str(pretty=True)


def byte_level_bpe_json(vocabulary: dict, merges: Sequence[tuple], added: Sequence[AddedToken],
                        bos: str, eos: str) -> str:
  """tokenizer.json of RobertaTokenizer (BART): byte-level BPE over `vocabulary`
  {token: id} (added tokens past it not included), RobertaProcessing."""
  from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
  from tokenizers.models import BPE

  tok = Tokenizer(BPE(vocab=dict(vocabulary), merges=[tuple(m) for m in merges], dropout=None,
                      continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.RobertaProcessing((eos, vocabulary[eos]), (bos, vocabulary[bos]),
                                                    trim_offsets=True, add_prefix_space=False)
  _added(tok, added)
  return tok.to_str(pretty=True)


def wordpiece_json(vocabulary: Sequence[str], added: Sequence[AddedToken], *, lowercase: bool,
                   strip_accents, split_cjk: bool, unk: str, cls: str, sep: str,
                   suffix_indicator: str = "##", max_chars_per_word: int = 100) -> str:
  """tokenizer.json of BertTokenizer (ELECTRA): BertNormalizer, BertPreTokenizer,
  WordPiece over `vocabulary` (tokens by id, added tokens past it not included)."""
  from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
  from tokenizers.models import WordPiece

  index = {t: i for i, t in enumerate(vocabulary)}
  tok = Tokenizer(WordPiece(index, unk_token=unk, continuing_subword_prefix=suffix_indicator,
                            max_input_chars_per_word=max_chars_per_word))
  tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=split_cjk,
                                              strip_accents=strip_accents, lowercase=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece(prefix=suffix_indicator)
  tok.post_processor = processors.TemplateProcessing(
      single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
      special_tokens=[(cls, index[cls]), (sep, index[sep])])
  _added(tok, added)
  return tok.to_str(pretty=True)
