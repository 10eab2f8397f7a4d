"""An embedded default model: no downloads, no files on disk.

A small SentencePiece vocabulary trained on the multilingual text shipped in
`tfhub_models/data/demo_corpus.txt`, and XLM-RoBERTa modules with random
weights.  Its answers are real computations of an untrained model: fine for
trying the export and serving path, meaningless as language.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import pathlib

from tfhub_models.models import xlm_roberta
from tfhub_models.tokenizers import XLMRobertaTokenizer

CORPUS = pathlib.Path(__file__).parent / "data" / "demo_corpus.txt"

# A small XLM-RoBERTa shape: fast to export and compile on a laptop CPU.
TINY = xlm_roberta.XLMRobertaConfig(vocabulary_size=0, num_layers=2, num_heads=4, hidden_dim=64,
                                    intermediate_dim=128, max_sequence_length=128)


def train_sentencepiece(lines, vocab_size: int, model_type: str = "unigram") -> bytes:
  """Trains a SentencePiece model on `lines` (deterministic: one thread)."""
  import sentencepiece

  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(list(lines)), model_writer=model, vocab_size=vocab_size,
      model_type=model_type, character_coverage=1.0, num_threads=1, minloglevel=2,
      hard_vocab_limit=False, seed_sentencepiece_size=100000, shuffle_input_sentence=False)
  return model.getvalue()


@functools.lru_cache(maxsize=1)
def demo_sentencepiece() -> bytes:
  """The embedded demo vocabulary (trained on first use, then cached)."""
  lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
  return train_sentencepiece(lines, vocab_size=1000)


def random_xlm_roberta(config: xlm_roberta.XLMRobertaConfig, proto: bytes, *,
                       dtype="float32", sequence_length: int | None = None):
  """A fill-mask task with random weights whose vocabulary follows `proto`."""
  tokenizer = XLMRobertaTokenizer(proto)
  config = dataclasses.replace(config, vocabulary_size=tokenizer.vocabulary_size)
  return xlm_roberta.random_task(config, tokenizer, dtype=dtype, sequence_length=sequence_length)


@functools.lru_cache(maxsize=1)
def demo_wordpiece_vocabulary() -> tuple:
  """An uncased WordPiece vocabulary built from the demo corpus, no trainer needed.

  The specials, every character of the normalized corpus alone and as a
  `##` continuation (so every corpus word can be spelled), then the corpus
  words by frequency.
  """
  import collections
  import unicodedata

  words = collections.Counter()
  for line in CORPUS.read_text(encoding="utf-8").splitlines():
    text = "".join(c for c in unicodedata.normalize("NFD", line.lower())
                   if unicodedata.category(c) != "Mn")
    for word in text.split():
      token = ""
      for c in word:  # punctuation stands alone, as the pre-tokenizer splits it
        if unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum()):
          if token:
            words[token] += 1
          words[c] += 1
          token = ""
        else:
          token += c
      if token:
        words[token] += 1
  characters = sorted({c for word in words for c in word})
  vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  vocabulary += characters + ["##" + c for c in characters]
  vocabulary += [w for w, _ in sorted(words.items(), key=lambda x: (-x[1], x[0]))
                 if len(w) > 1]
  return tuple(dict.fromkeys(vocabulary))


def random_electra(config, vocabulary, task: str, *, dtype="float32",
                   sequence_length: int | None = None):
  """An ELECTRA task with random weights whose vocabulary size follows `vocabulary`."""
  from tfhub_models.models import electra
  from tfhub_models.tokenizers import WordPieceTokenizer

  tokenizer = WordPieceTokenizer(list(vocabulary))
  config = dataclasses.replace(config, vocabulary_size=tokenizer.vocabulary_size)
  return electra.build_task(task, config, tokenizer, dtype=dtype,
                            sequence_length=sequence_length)


def demo_bpe_vocabulary() -> tuple:
  """A byte-level BPE vocabulary with no merges: the specials and the 256 bytes.

  Every text tokenizes (one id per byte); enough to try BART exports with
  random weights.  Returns (vocabulary dict, merges list).
  """
  from tfhub_models.tokenizers import bytes_to_unicode

  vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
  for code in sorted(bytes_to_unicode().values()):
    vocabulary[chr(code)] = len(vocabulary)
  vocabulary["<mask>"] = len(vocabulary)
  return vocabulary, []


def random_bart(config, vocabulary: dict, merges, *, dtype="float32",
                sequence_length: int | None = None):
  """A BART generation task with random weights whose vocabulary follows `vocabulary`."""
  from tfhub_models.models.bart_generation import BartSeq2SeqLM
  from tfhub_models.tokenizers import ByteLevelBPETokenizer

  tokenizer = ByteLevelBPETokenizer(vocabulary, merges)
  config = dataclasses.replace(config, vocabulary_size=tokenizer.vocabulary_size)
  return BartSeq2SeqLM.build(config, tokenizer, dtype=dtype, sequence_length=sequence_length)
