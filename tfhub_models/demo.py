"""An embedded default model: no downloads, no files on disk.

Small vocabularies built from the multilingual text shipped in
`tfhub_models/data/demo_corpus.txt` (tokenizers/demo.py: a SentencePiece model
trained on it, a WordPiece vocabulary of its words, the 256 bytes for BPE), and
any preset's modules with random weights over them (`random_model`).  Their answers are
real computations of untrained models: fine for trying the export and serving
path, meaningless as language.
"""

from __future__ import annotations

import dataclasses

from tfhub_models import models
from tfhub_models.models import xlm_roberta
from tfhub_models.tokenizers.demo import (CORPUS, corpus_lines, demo_bpe_vocabulary,
                                          demo_sentencepiece, demo_wordpiece_vocabulary,
                                          train_sentencepiece)

# A small XLM-RoBERTa shape: fast to export and compile on a laptop CPU.
TINY = xlm_roberta.XLMRobertaConfig(vocabulary_size=0, num_layers=2, num_heads=4, hidden_dim=64,
                                    intermediate_dim=128, max_sequence_length=128)


def random_model(preset: str, task: str | None = None, *, config=None,
                 vocabulary_file: str | None = None, dtype="float32",
                 sequence_length: int | None = None):
  """A preset's task with random weights over the demo vocabulary (or the
  vocabulary in `vocabulary_file`: a SentencePiece model, a vocab.txt, or a
  file beside BART's vocab.json and merges.txt); the vocabulary size follows it.

  config: replaces the preset's sizes (e.g. `TINY`).  task: None for the preset's own.
  """
  family = models.family_of(preset)
  tokenizer = (family.tokenizer_from_file(vocabulary_file) if vocabulary_file
               else family.demo_tokenizer())
  config = dataclasses.replace(config or family.presets[preset],
                               vocabulary_size=tokenizer.vocabulary_size)
  task = task or family.preset_task(preset)
  # A length past the model's positions is the model's longest (the CLI's behaviour).
  length = min(sequence_length or config.max_sequence_length, config.max_sequence_length)
  return family.build(config, tokenizer, task, dtype=dtype, sequence_length=length)


def tiny_xlm_roberta(**options):
  """The README's demo model: a tiny XLM-RoBERTa fill-mask task, random weights."""
  return random_model("xlm_roberta_base_multi", "fill_mask", config=TINY, **options)


__all__ = ["CORPUS", "TINY", "corpus_lines", "demo_bpe_vocabulary", "demo_sentencepiece",
           "demo_wordpiece_vocabulary", "random_model", "tiny_xlm_roberta", "train_sentencepiece"]
