"""The in-graph WordPiece tokenizer against transformers' ElectraTokenizer (uncased)."""

from __future__ import annotations

import types

import random
import unicodedata

import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CORPUS
from tfhub_models.preprocessing import BertPreprocessor
from tfhub_models.tokenizers import WordPieceTokenizer


def varied_lines() -> list:
  """Over 500 lines: scripts, case, accents (NFC, NFD), CJK, punctuation runs,
  control characters, odd whitespace, special tokens, very long words."""
  rng = random.Random(7)
  controls = ["\x00", "\x07", "\x1b", "\u200b", "\u200d", "\ufeff", "\x7f", "\u0085", "\ufffd"]
  spaces = ["  ", "\t", "\n", "\u00a0", "\u3000", "\u2009", "\r\n", "\u2028"]
  lines = []
  for line in CORPUS:
    words = line.split(" ")
    middle = len(words) // 2
    lines += [
        line,
        line.upper(),
        unicodedata.normalize("NFD", line),
        " ".join(words[:middle] + ["[MASK]"] + words[middle:]),
        "[CLS] " + line + " [SEP] [unk] [MASK]",
        rng.choice(spaces).join(words),
        "".join(c + (rng.choice(controls) if rng.random() < 0.1 else "") for c in line),
        line.replace(" ", "!?", 2) + "...!!!---",
    ]
  lines += ["a" * 99, "a" * 100, "a" * 101, "é" * 101, "д" * 60 + " ok", "東" * 120,
            "supercalifragilisticexpialidocious" * 4, "ΣΑΣ ΣΊΣΥΦΟΣ", "İstanbul ǅ ß ﬁ Ⅻ"]
  return lines


LINES = varied_lines()


@pytest.fixture(scope="module")
def tokenizer(wordpiece_vocab):
  return WordPieceTokenizer(wordpiece_vocab)


def ours(tokenizer, texts):
  return tokenizer.tokenize(tf.constant([t.encode("utf-8") for t in texts])).to_list()


def test_varied_lines_match_transformers(tokenizer, hf_electra_tokenizer):
  assert len(LINES) >= 500
  expected = hf_electra_tokenizer(LINES, add_special_tokens=False)["input_ids"]
  mismatches = [(line, g, e) for line, g, e in zip(LINES, ours(tokenizer, LINES), expected)
                if g != e]
  assert not mismatches, f"{len(mismatches)} of {len(LINES)} differ, first: {mismatches[:3]}"


def test_pairs_match_transformers_with_truncation(tokenizer, hf_electra_tokenizer):
  rng = random.Random(3)
  firsts = LINES[:300]
  seconds = [rng.choice(LINES) for _ in firsts]
  for length in (3, 4, 5, 12, 33, 128):
    pre = BertPreprocessor(tokenizer, sequence_length=length)
    out = pre(tf.constant([t.encode() for t in firsts]), tf.constant([t.encode() for t in seconds]))
    expected = hf_electra_tokenizer(firsts, seconds, truncation=True, max_length=length)
    ids, segments = out["token_ids"].numpy(), out["segment_ids"].numpy()
    mask = out["padding_mask"].numpy()
    for row, (e, t) in enumerate(zip(expected["input_ids"], expected["token_type_ids"])):
      assert ids[row, : len(e)].tolist() == e, (length, firsts[row], seconds[row])
      assert segments[row, : len(t)].tolist() == t
      assert mask[row].sum() == len(e) and (ids[row, len(e):] == 0).all()


def test_single_texts_match_transformers_with_truncation(tokenizer, hf_electra_tokenizer):
  pre = BertPreprocessor(tokenizer, sequence_length=20)
  out = pre(tf.constant([t.encode() for t in LINES]))
  expected = hf_electra_tokenizer(LINES, truncation=True, max_length=20)
  for row, (e, t) in enumerate(zip(expected["input_ids"], expected["token_type_ids"])):
    assert out["token_ids"][row, : len(e)].numpy().tolist() == e
    assert out["segment_ids"][row, : len(t)].numpy().tolist() == t


def _stable(c: str) -> bool:
  """Assigned by Unicode 3.2 with the same category today: every implementation's
  tables agree on it (transformers' `tokenizers` ships old Unicode tables, so
  characters added later, e.g. U+061D, are classified differently there)."""
  category = unicodedata.category(c)
  return category not in ("Cn", "Cs") and unicodedata.ucd_3_2_0.category(c) == category


_PIECES = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)).filter(_stable), max_size=12),
    st.sampled_from(["[MASK]", "[SEP]", "[mask]", " ", "\t", "\x00", "!!", "東京", "e\u0301",
                     "\u0130", "ΣΑΣ", "\ufffd"]))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_PIECES, max_size=6).map("".join), min_size=1, max_size=8))
def test_random_unicode_matches_transformers(tokenizer, hf_electra_tokenizer, texts):
  expected = hf_electra_tokenizer(texts, add_special_tokens=False)["input_ids"]
  assert ours(tokenizer, texts) == expected


def test_edge_inputs(tokenizer):
  pre = BertPreprocessor(tokenizer, sequence_length=16)
  assert pre(tf.constant([], tf.string))["token_ids"].shape == (0, 16)
  out = pre(tf.constant([b"", b"\xff\xfe ok \xc3"]), tf.constant([b"", b""]))
  ids = out["token_ids"].numpy()
  assert ids[0, :3].tolist() == [2, 3, 3]          # [CLS] [SEP] [SEP]
  # Invalid bytes become U+FFFD, which cleaning removes: " ok " is left.
  expected = [2] + ours(tokenizer, ["ok"])[0] + [3, 3]
  assert ids[1, :len(expected)].tolist() == expected
  with pytest.raises(tf.errors.InvalidArgumentError, match="text_pair must have the same shape"):
    pre(tf.constant(["a", "b"]), tf.constant(["c"]))


def test_detokenize_and_tokens(tokenizer, hf_electra_tokenizer):
  texts = ["the capital of france is paris.", "der zug fährt um acht uhr ab."]
  ids = tokenizer.tokenize(tf.constant(texts))
  back = [t.decode() for t in tokenizer.detokenize(ids).numpy()]
  assert back == [hf_electra_tokenizer.decode(i) for i in ids.to_list()]
  tokens = tokenizer.id_to_token(ids.to_tensor(-1)).numpy()
  assert [t.decode() for t in tokens[0] if t] == hf_electra_tokenizer.convert_ids_to_tokens(
      ids.to_list()[0])


def test_cjk_splitting_follows_the_tokenizer_config(wordpiece_vocab, wordpiece_dir, tmp_path):
  import shutil
  from transformers import ElectraTokenizer
  shutil.copy(wordpiece_dir / "vocab.txt", tmp_path / "vocab.txt")
  (tmp_path / "tokenizer_config.json").write_text('{"tokenize_chinese_chars": false}')
  upstream = ElectraTokenizer.from_pretrained(str(tmp_path))
  ours_tokenizer = checkpoint_tokenizer(tmp_path)
  texts = ["東京 大阪 中国的首都是北京", "mixed 東京abc"]
  assert ours(ours_tokenizer, texts) == upstream(texts, add_special_tokens=False)["input_ids"]


def checkpoint_tokenizer(directory):
  """The tokenizer the loader builds from a checkpoint directory's vocab.txt and
  tokenizer_config.json."""
  from tfhub_models.checkpoints import Checkpoint, electra
  vocabulary_size = len((directory / "vocab.txt").read_text(encoding="utf-8").split("\n")) - 1
  (directory / "config.json").write_text('{"model_type": "electra"}')
  return electra.tokenizer(Checkpoint(directory),
                           types.SimpleNamespace(vocabulary_size=vocabulary_size))


def test_duplicate_vocabulary_entries_load(wordpiece_vocab, tmp_path):
  from transformers import ElectraTokenizer
  vocabulary = list(wordpiece_vocab) + ["the", "paris"]
  (tmp_path / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
  upstream = ElectraTokenizer.from_pretrained(str(tmp_path))
  ours_tokenizer = checkpoint_tokenizer(tmp_path)
  texts = ["the capital is paris", "there"]
  assert ours(ours_tokenizer, texts) == upstream(texts, add_special_tokens=False)["input_ids"]


def test_vocabulary_without_specials_is_rejected():
  with pytest.raises(ValueError, match=r"lacks special tokens \['\[MASK\]'\]"):
    WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])


def test_offsets_match_transformers(tokenizer, hf_electra_tokenizer):
  """tokenize_with_offsets: the ids of tokenize and the character offsets of the
  upstream fast tokenizer, on every varied line (normalization, controls, CJK,
  specials, over-long words)."""
  encoded = hf_electra_tokenizer(LINES, add_special_tokens=False, return_offsets_mapping=True)
  ids, starts, ends = tokenizer.tokenize_with_offsets(tf.constant([t.encode() for t in LINES]))
  assert ids.to_list() == ours(tokenizer, LINES)
  for line, got_starts, got_ends, offsets in zip(LINES, starts.to_list(), ends.to_list(),
                                                 encoded["offset_mapping"]):
    assert list(zip(got_starts, got_ends)) == [tuple(o) for o in offsets], line
