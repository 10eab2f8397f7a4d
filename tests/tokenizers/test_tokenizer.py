"""The in-graph XLM-RoBERTa tokenizer against transformers' tokenizer."""

from __future__ import annotations

import random
import unicodedata

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CORPUS
from tfhub_models.preprocessing import XLMRobertaPreprocessor, bucket_lengths_for
from tfhub_models.tokenizers import XLMRobertaTokenizer


def varied_lines() -> list:
  """Over 500 lines: several scripts, case, accents (NFC and NFD), emoji, odd and
  repeated whitespace, special tokens and <mask> at start, middle and end."""
  rng = random.Random(1234)
  odd_space = ["  ", "\t", "\n", "\u00a0", "\u3000", "\u2009", " \t ", "\r\n", "\u202f", "\u0085"]
  emoji = ["😀", "👍🏽", "🎉", "❤️", "🇫🇷", "👩‍💻", "🙂🙂"]
  lines = []
  for line in CORPUS:
    words = line.split(" ")
    middle = len(words) // 2
    lines += [
        line,
        line.lower(),
        line.upper(),
        unicodedata.normalize("NFD", line),
        "<mask> " + line,
        line + " <mask>",
        " ".join(words[:middle] + ["<mask>"] + words[middle:]),
        " ".join(words[:middle] + ["<mask><mask>"] + words[middle + 1:]),
        rng.choice(odd_space).join(words),
        "  " + line + "   ",
        " ".join(w + (rng.choice(emoji) if rng.random() < 0.3 else "") for w in words),
        "<s>" + line + "</s>",
        line.replace(" ", "  ", 2) + "!!!???...",
    ]
  return lines


LINES = varied_lines()


@pytest.fixture(scope="module")
def tokenizer(sp_proto):
  return XLMRobertaTokenizer(sp_proto)


def ours(tokenizer, texts):
  return tokenizer.tokenize(tf.constant([t.encode("utf-8") for t in texts])).to_list()


def test_id_layout_matches_upstream(tokenizer, hf_tokenizer):
  assert len(LINES) >= 500
  assert tokenizer.vocabulary_size == len(hf_tokenizer)
  assert tokenizer.mask_token_id == hf_tokenizer.mask_token_id
  for token in ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]:
    assert ours(tokenizer, [token]) == [[hf_tokenizer.convert_tokens_to_ids(token)]]


def has_combining_mark(text: str) -> bool:
  return any(unicodedata.category(c).startswith("M") for c in text)


def grapheme_sensitive(text: str) -> bool:
  """Text where transformers' grapheme-wise normaliser differs from SentencePiece's
  longest-match one: combining marks, or sequences NFC would compose (Hangul jamo)."""
  return has_combining_mark(text) or not unicodedata.is_normalized("NFC", text)


class Explainer:
  """Why our ids may differ from transformers' on a line, and only why.

  1. A tie: both segmentations spell the same pieces' text with the same total
     score; SentencePiece and the `tokenizers` Unigram break exact ties
     differently (float32 vs float64 sums).
  2. Grapheme normalisation (see grapheme_sensitive).
  """

  def __init__(self, sp_proto):
    import sentencepiece
    self.sp = sentencepiece.SentencePieceProcessor(model_proto=sp_proto)

  def _sp_id(self, i):
    return 0 if i == 3 else i - 1

  def spelling(self, ids):
    return "".join(self.sp.id_to_piece(self._sp_id(i)) if 3 <= i < self.sp.get_piece_size() + 1
                   else f"<{i}>" for i in ids)

  def score(self, ids):
    return sum(self.sp.get_score(self._sp_id(i)) for i in ids
               if 3 < i < self.sp.get_piece_size() + 1)

  def why(self, line, ours_ids, theirs_ids):
    if ours_ids == theirs_ids:
      return "equal"
    if (self.spelling(ours_ids) == self.spelling(theirs_ids)
        and abs(self.score(ours_ids) - self.score(theirs_ids)) < 1e-4):
      return "tie"
    if grapheme_sensitive(line):
      return "grapheme"
    return "unexplained"


@pytest.fixture(scope="module")
def explainer(sp_proto):
  return Explainer(sp_proto)


def test_varied_lines_match_transformers(tokenizer, hf_tokenizer, explainer):
  """At least 500 lines give exactly transformers' ids; every other line differs
  only by an exact score tie or grapheme normalisation (see Explainer)."""
  expected = hf_tokenizer(LINES, add_special_tokens=False)["input_ids"]
  got = ours(tokenizer, LINES)
  reasons = [explainer.why(line, g, e) for line, g, e in zip(LINES, got, expected)]
  unexplained = [(line, g, e) for line, g, e, r in zip(LINES, got, expected, reasons)
                 if r == "unexplained"]
  assert not unexplained, f"{len(unexplained)} lines differ: {unexplained[:3]}"
  plain = [r for line, r in zip(LINES, reasons) if not grapheme_sensitive(line)]
  assert reasons.count("equal") >= 500
  assert plain.count("equal") >= 0.99 * len(plain), {r: plain.count(r) for r in set(plain)}


def test_lines_match_sentencepiece_library(tokenizer, sp_proto, explainer):
  """Without special tokens in the text, our ids are those of the SentencePiece
  library itself (which the checkpoints were trained with), combining marks
  included, up to exact score ties (tensorflow-text links an older SentencePiece
  that breaks them the other way: `555` -> `55 5` there, `5 55` here)."""
  import sentencepiece

  processor = sentencepiece.SentencePieceProcessor(model_proto=sp_proto)
  lines = [line for line in LINES
           if not any(t in line for t in ("<s>", "</s>", "<mask>", "\u0085", "\u1680"))]
  assert len(lines) >= 500 and sum(map(grapheme_sensitive, lines)) >= 60
  expected = [[3 if i == 0 else i + 1 for i in processor.encode(line)] for line in lines]
  got = ours(tokenizer, lines)
  reasons = [explainer.why("", g, e) for g, e in zip(got, expected)]
  mismatches = [(line, g, e) for line, g, e, r in zip(lines, got, expected, reasons)
                if r != "equal" and r != "tie"]
  assert not mismatches, mismatches[:3]
  assert reasons.count("equal") >= 0.99 * len(lines)


def test_preprocessor_matches_transformers_with_truncation(tokenizer, hf_tokenizer, explainer):
  pre = XLMRobertaPreprocessor(tokenizer, sequence_length=24)
  out = pre(tf.constant([t.encode() for t in LINES]))
  expected = hf_tokenizer(LINES, truncation=True, max_length=24)["input_ids"]
  ids, mask = out["token_ids"].numpy(), out["padding_mask"].numpy()
  untruncated = zip(LINES, ours(tokenizer, LINES),
                    hf_tokenizer(LINES, add_special_tokens=False)["input_ids"])
  equal = [explainer.why(line, g, e) == "equal" for line, g, e in untruncated]
  checked = 0
  for row, (e, line) in enumerate(zip(expected, LINES)):
    if not equal[row]:
      continue  # explained in test_varied_lines_match_transformers
    checked += 1
    assert ids[row, : len(e)].tolist() == e, line
    assert mask[row].sum() == len(e)
    assert (ids[row, len(e):] == 1).all()
  assert checked >= 500


# Known divergence, kept visible: transformers' `Precompiled` normaliser maps a
# whole grapheme by its first character when that character is rewritten, so a
# combining mark after a rewritten character (no-break space, full-width letter)
# is dropped there, and kept by SentencePiece itself (what the checkpoints were
# trained with).  The property test below therefore leaves out combining marks;
# this test fails (xfail strict) the day the two agree.
@pytest.mark.xfail(strict=True, reason="transformers drops combining marks after rewritten chars")
def test_combining_mark_after_rewritten_character(tokenizer, hf_tokenizer):
  text = "a\u00a0\u0301b \uff28\u0308"
  assert ours(tokenizer, [text])[0] == hf_tokenizer(text, add_special_tokens=False)["input_ids"]


_ALPHABET = st.characters(  # surrogates; combining marks and jamo (see grapheme_sensitive)
    blacklist_categories=("Cs", "Mn", "Mc", "Me"),
).filter(lambda c: unicodedata.is_normalized("NFC", c) and not 0x1100 <= ord(c) <= 0x11FF)
_PIECES = st.one_of(st.text(_ALPHABET, max_size=12),
                    st.sampled_from(["<mask>", " <mask> ", "<s>", "</s>", "  ", "\t", "\u3000",
                                     "\x00", "\x0b", "\u0085", "😀", "é", "55", "!!"]))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_PIECES, max_size=6).map("".join).filter(
    lambda t: unicodedata.is_normalized("NFC", t)), min_size=1, max_size=8))
def test_random_unicode_matches_transformers(tokenizer, hf_tokenizer, explainer, texts):
  expected = hf_tokenizer(texts, add_special_tokens=False)["input_ids"]
  for text, got, want in zip(texts, ours(tokenizer, texts), expected):
    assert explainer.why(text, got, want) in ("equal", "tie"), (text, got, want)


def test_bucket_padding(tokenizer):
  pre = XLMRobertaPreprocessor(tokenizer, sequence_length=100)
  assert pre.bucket_lengths == (16, 32, 64, 100)
  assert bucket_lengths_for(512) == (16, 32, 64, 128, 256, 512)
  short = pre(tf.constant(["short text"]))
  assert short["token_ids"].shape == (1, 16)
  long = pre(tf.constant(["short", " ".join(["word"] * 20)]))
  assert long["token_ids"].shape[1] in (32, 64)
  longest = pre(tf.constant([" ".join(["x y z"] * 200)]))
  assert longest["token_ids"].shape == (1, 100)
  assert longest["token_ids"][0, -1] == tokenizer.eos_token_id


def test_truncation_keeps_eos_and_drops_masks_past_the_cut(tokenizer):
  pre = XLMRobertaPreprocessor(tokenizer, sequence_length=8)
  out = pre(tf.constant(["<mask> " + "<unk> " * 20 + "<mask>"]))
  ids = out["token_ids"].numpy()[0]
  assert ids.tolist() == [0, tokenizer.mask_token_id] + [3] * 5 + [2]


def test_edge_inputs(tokenizer):
  pre = XLMRobertaPreprocessor(tokenizer, sequence_length=32)
  empty_batch = pre(tf.constant([], tf.string))
  assert empty_batch["token_ids"].shape == (0, 16)
  out = pre(tf.constant([b"", b"\xff\xfe broken \xc3", b"<mask>"]))
  ids = out["token_ids"].numpy()
  assert ids[0, :3].tolist() == [0, 2, 1]
  # Invalid UTF-8 is replaced by U+FFFD, which tokenizes like that character.
  replaced = ours(tokenizer, ["\ufffd\ufffd broken \ufffd"])[0]
  assert ids[1, 1: 1 + len(replaced)].tolist() == replaced
  assert ids[2, :3].tolist() == [0, tokenizer.mask_token_id, 2]


def test_detokenize_round_trip(tokenizer, hf_tokenizer):
  texts = [line for line in CORPUS if "😀" not in line][:20]
  ids = tokenizer.tokenize(tf.constant([t.encode() for t in texts]))
  back = [t.decode() for t in tokenizer.detokenize(ids).numpy()]
  expected = [hf_tokenizer.decode(i, skip_special_tokens=True) for i in ids.to_list()]
  assert back == expected
  assert tokenizer.id_to_text(tf.constant([tokenizer.mask_token_id, 0, -5])).numpy().tolist() == [
      b"<mask>", b"<s>", b""]


def test_tokenizer_survives_saved_model(tokenizer, tmp_path):
  module = tf.Module()
  module.tokenizer = tokenizer
  module.run = tf.function(lambda text: tokenizer.tokenize(text).to_tensor(-1),
                           input_signature=[tf.TensorSpec([None], tf.string)])
  tf.saved_model.save(module, str(tmp_path))
  del module
  loaded = tf.saved_model.load(str(tmp_path))
  text = tf.constant([LINES[7].encode(), b"x"])
  assert np.array_equal(loaded.run(text).numpy(), tokenizer.tokenize(text).to_tensor(-1).numpy())


def test_offsets_match_transformers(tokenizer, hf_tokenizer, explainer):
  """tokenize_with_offsets: the ids of tokenize and the character offsets of the
  upstream tokenizer (leading spaces and deleted characters left out, a lone `▁`
  on the character after it) on every line whose ids agree, but those with
  combining marks: SentencePiece's alignment gives a composed character its
  marks' span, upstream its first character's (a known, documented difference)."""
  encoded = hf_tokenizer(LINES, add_special_tokens=False, return_offsets_mapping=True)
  ids, starts, ends = tokenizer.tokenize_with_offsets(tf.constant([t.encode() for t in LINES]))
  assert ids.to_list() == ours(tokenizer, LINES)
  checked = 0
  for line, got, want, s, e, offsets in zip(LINES, ids.to_list(), encoded["input_ids"],
                                            starts.to_list(), ends.to_list(),
                                            encoded["offset_mapping"]):
    if got != want or grapheme_sensitive(line):
      continue
    checked += 1
    assert list(zip(s, e)) == [tuple(o) for o in offsets], line
  assert checked >= 450


def test_tokenizers_survive_set_seed(sp_proto, bpe_dir):
  """tf.random.set_seed clears the eager kernel cache, which deleted
  tensorflow-text's kernel-owned SentencePiece model: every later tokenize (eager,
  tf.function or tf.data, so `fit` on raw strings) failed with "Resource ...
  does not exist".  Both SentencePiece-backed tokenizers keep working."""
  from tfhub_models.tokenizers import ByteLevelBPETokenizer
  tokenizers = [XLMRobertaTokenizer(sp_proto),
                ByteLevelBPETokenizer.from_files(bpe_dir / "vocab.json", bpe_dir / "merges.txt")]
  text = tf.constant(["the cat sat", "on the mat"])
  before = [t.tokenize(text).to_list() for t in tokenizers]
  tf.random.set_seed(1)
  for tokenizer, expected in zip(tokenizers, before):
    assert tokenizer.tokenize(text).to_list() == expected
    assert tf.function(lambda x, t=tokenizer: t.tokenize(x).to_tensor())(text).numpy().tolist() \
        == tokenizer.tokenize(text).to_tensor().numpy().tolist()
    batches = tf.data.Dataset.from_tensor_slices(text).batch(2).map(
        lambda x, t=tokenizer: t.tokenize(x).to_tensor())
    assert [b.numpy().tolist() for b in batches] == [
        tokenizer.tokenize(text).to_tensor().numpy().tolist()]
