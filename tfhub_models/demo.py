"""An embedded default model: no downloads, no files on disk.

Small vocabularies built from the multilingual text shipped in
`tfhub_models/data/demo_corpus.txt` (a SentencePiece model trained on it, a
WordPiece vocabulary of its words, the 256 bytes for BPE), and any preset's
modules with random weights over them (`random_model`).  Their answers are
real computations of untrained models: fine for trying the export and serving
path, meaningless as language.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import os
import pathlib
import unicodedata

from tfhub_models import models
from tfhub_models.models import bart, electra, xlm_roberta
from tfhub_models.tokenizers import (ByteLevelBPETokenizer, WordPieceTokenizer,
                                     XLMRobertaTokenizer, bytes_to_unicode)

CORPUS = pathlib.Path(__file__).parent / "data" / "demo_corpus.txt"

# A small XLM-RoBERTa shape: fast to export and compile on a laptop CPU.
TINY = xlm_roberta.XLMRobertaConfig(vocabulary_size=0, num_layers=2, num_heads=4, hidden_dim=64,
                                    intermediate_dim=128, max_sequence_length=128)


def corpus_lines() -> list:
  return [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


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
  return train_sentencepiece(corpus_lines(), vocab_size=1000)


@functools.lru_cache(maxsize=1)
def demo_wordpiece_vocabulary() -> tuple:
  """An uncased WordPiece vocabulary built from the demo corpus, no trainer needed.

  The specials, every character of the normalized corpus alone and as a
  `##` continuation (so every corpus word can be spelled), then the corpus
  words by frequency.
  """
  words = collections.Counter()
  for line in corpus_lines():
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


def demo_bpe_vocabulary() -> tuple:
  """A byte-level BPE vocabulary with no merges: the specials and the 256 bytes.

  Every text tokenizes (one id per byte); enough to try BART exports with
  random weights.  Returns (vocabulary dict, merges list).
  """
  vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
  for code in sorted(bytes_to_unicode().values()):
    vocabulary[chr(code)] = len(vocabulary)
  vocabulary["<mask>"] = len(vocabulary)
  return vocabulary, []


# Per family: (the demo tokenizer, the tokenizer of a user's vocabulary file).
TOKENIZERS = {
    xlm_roberta.FAMILY.name: (lambda: XLMRobertaTokenizer(demo_sentencepiece()),
                              XLMRobertaTokenizer.from_file),
    electra.FAMILY.name: (lambda: WordPieceTokenizer(list(demo_wordpiece_vocabulary())),
                          WordPieceTokenizer.from_files),
    bart.FAMILY.name: (lambda: ByteLevelBPETokenizer(*demo_bpe_vocabulary()),
                       lambda path: ByteLevelBPETokenizer.from_files(
                           os.path.join(os.path.dirname(os.path.abspath(path)), "vocab.json"),
                           os.path.join(os.path.dirname(os.path.abspath(path)), "merges.txt"))),
}


def random_model(preset: str, task: str | None = None, *, config=None,
                 vocabulary_file: str | None = None, dtype="float32",
                 sequence_length: int | None = None):
  """A preset's task with random weights over the demo vocabulary (or the
  vocabulary in `vocabulary_file`: a SentencePiece model, a vocab.txt, or a
  file beside BART's vocab.json and merges.txt); the vocabulary size follows it.

  config: replaces the preset's sizes (e.g. `TINY`).  task: None for the preset's own.
  """
  family = models.family_of(preset)
  demo, from_file = TOKENIZERS[family.FAMILY.name]
  tokenizer = from_file(vocabulary_file) if vocabulary_file else demo()
  config = dataclasses.replace(config or family.PRESETS[preset],
                               vocabulary_size=tokenizer.vocabulary_size)
  task = task or getattr(family, "PRESET_TASKS", {}).get(preset, family.FAMILY.tasks[0])
  # A length past the model's positions is the model's longest (the CLI's behaviour).
  length = min(sequence_length or config.max_sequence_length, config.max_sequence_length)
  return family.build(config, tokenizer, task, dtype=dtype, sequence_length=length)


def tiny_xlm_roberta(**options):
  """The README's demo model: a tiny XLM-RoBERTa fill-mask task, random weights."""
  return random_model("xlm_roberta_base_multi", "fill_mask", config=TINY, **options)
