"""One list of conformance cases, every module of the package through the same checks.

A case is a factory (seed -> a module with fresh random weights), the inputs it
is called on, and how it is called.  `tests/models/test_conformance.py` runs each case
eagerly, as a tf.function, compiled with XLA, with an unknown batch size,
after a SavedModel round trip and after a checkpoint restore into a module
built with other random weights, and requires the same answer every time (the
habit of Sonnet's `conformance/` goldens).  A new module gets a case here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfhub_models import classification, demo, layers
from tfhub_models.models import bart, electra

B, L, D = 2, 7, 8     # batch, length, hidden size of the layer cases


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  make: Callable            # seed (int) -> module, its variables created
  inputs: Callable          # () -> {name: np.ndarray}, batch first
  call: Callable = lambda module, inputs: module(inputs)
  atol: float = 1e-5
  xla: bool = True


def _seeded(build):
  def make(seed: int):
    tf.random.set_seed(seed)
    return build()
  return make


def _floats(*shape):
  return np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)


def _mask(lengths, length=L):
  return (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)


def _ids(vocabulary: int, mask: np.ndarray, first: int = 0):
  ids = np.random.default_rng(vocabulary).integers(5, vocabulary, mask.shape).astype(np.int32)
  ids[:, 0] = first
  return np.where(mask > 0, ids, 1).astype(np.int32)


_TINY_XLMR = dataclasses.replace(demo.TINY, num_layers=2, hidden_dim=16, num_heads=2,
                                 intermediate_dim=24, max_sequence_length=32)
_TINY_ELECTRA = electra.ElectraConfig(num_layers=2, num_heads=2, hidden_dim=16, embedding_dim=8,
                                      intermediate_dim=24, max_sequence_length=32)
_TINY_BART = bart.BartConfig(num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=24,
                             max_sequence_length=32)


def _xlmr(task):
  return _seeded(lambda: demo.random_model("xlm_roberta_base_multi", task, config=_TINY_XLMR,
                                           sequence_length=16))


def _electra(task):
  return _seeded(lambda: demo.random_model("electra_small_discriminator_uncased_en", task,
                                           config=_TINY_ELECTRA, sequence_length=16))


def _bart(sampler):
  def build():
    model = demo.random_model("bart_base_en", "generate", config=_TINY_BART, sequence_length=16)
    model.compile(sampler=sampler)
    return model
  return _seeded(build)


def _encoder_inputs(vocabulary):
  mask = _mask([L, 4])
  return {"token_ids": _ids(vocabulary, mask), "padding_mask": mask}


# Ids below 100 exist in every demo vocabulary.
_XLMR_VOCABULARY = _ELECTRA_VOCABULARY = _BART_VOCABULARY = 100

CASES = [
    # Blocks.
    Case("dense", _seeded(lambda: layers.Dense(D, 5)), lambda: {"x": _floats(B, L, D)},
         lambda m, i: m(i["x"])),
    Case("embedding", _seeded(lambda: layers.Embedding(20, D)),
         lambda: {"ids": np.array([[1, 5, 19], [0, 0, 7]], np.int32)}, lambda m, i: m(i["ids"])),
    Case("layer_norm", _seeded(lambda: layers.LayerNorm(D)), lambda: {"x": _floats(B, L, D)},
         lambda m, i: m(i["x"])),
    Case("attention", _seeded(lambda: layers.MultiHeadAttention(D, 2)),
         lambda: {"x": _floats(B, L, D), "mask": _mask([L, 3])},
         lambda m, i: m(i["x"], mask=tf.cast(i["mask"], tf.bool)[:, None, :])),
    Case("feedforward", _seeded(lambda: layers.FeedForward(D, 12)),
         lambda: {"x": _floats(B, L, D)}, lambda m, i: m(i["x"])),
    Case("encoder_layer", _seeded(lambda: layers.TransformerEncoderLayer(D, 2, 12)),
         lambda: {"x": _floats(B, L, D), "mask": _mask([L, 3])},
         lambda m, i: m(i["x"], i["mask"])),
    Case("masked_lm_head",
         _seeded(lambda: layers.MaskedLMHead(D, layers.Embedding(20, 6), name="head")),
         lambda: {"x": _floats(B, L, D), "positions": np.array([[1, 3], [0, 6]], np.int32)},
         lambda m, i: m(i["x"], i["positions"])),
    Case("classification_head",
         _seeded(lambda: classification.ClassificationHead(D, 3, "tanh")),
         lambda: {"x": _floats(B, L, D)}, lambda m, i: m(i["x"])),
    # Backbones: dict in, dict out.
    Case("xlm_roberta_backbone", _xlmr("backbone"), lambda: _encoder_inputs(_XLMR_VOCABULARY)),
    Case("electra_backbone", _electra("backbone"),
         lambda: dict(_encoder_inputs(_ELECTRA_VOCABULARY),
                      segment_ids=np.array([[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0]],
                                           np.int32))),
    Case("bart_backbone", _seeded(lambda: bart.BartBackbone(_TINY_BART)),
         lambda: {"encoder_token_ids": _ids(_TINY_BART.vocabulary_size, _mask([L, 4])),
                  "encoder_padding_mask": _mask([L, 4]),
                  "decoder_token_ids": _ids(_TINY_BART.vocabulary_size, _mask([5, 3], 5), 2),
                  "decoder_padding_mask": _mask([5, 3], 5)}),
    # Tasks.
    Case("xlm_roberta_masked_lm", _xlmr("fill_mask"),
         lambda: dict(_encoder_inputs(_XLMR_VOCABULARY),
                      mask_positions=np.array([[1, 5], [2, 0]], np.int32))),
    Case("electra_discriminator", _electra("replaced_token_detection"),
         lambda: _encoder_inputs(_ELECTRA_VOCABULARY)),
    Case("electra_masked_lm", _electra("fill_mask"),
         lambda: dict(_encoder_inputs(_ELECTRA_VOCABULARY),
                      mask_positions=np.array([[1, 5], [2, 0]], np.int32))),
    Case("xlm_roberta_text_classifier", _xlmr("text_classification"),
         lambda: _encoder_inputs(_XLMR_VOCABULARY)),
    Case("electra_text_classifier", _electra("text_classification"),
         lambda: dict(_encoder_inputs(_ELECTRA_VOCABULARY),
                      segment_ids=np.array([[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0]],
                                           np.int32))),
    Case("xlm_roberta_token_classifier", _xlmr("token_classification"),
         lambda: _encoder_inputs(_XLMR_VOCABULARY)),
    Case("electra_token_classifier", _electra("token_classification"),
         lambda: _encoder_inputs(_ELECTRA_VOCABULARY)),
    # Embedding encoders (what the embedding export computes from).
    Case("xlm_roberta_encoder", _xlmr("embedding"), lambda: _encoder_inputs(_XLMR_VOCABULARY),
         lambda m, i: m.backbone(i)),
    Case("electra_encoder", _electra("embedding"), lambda: _encoder_inputs(_ELECTRA_VOCABULARY),
         lambda m, i: m.backbone(i)),
    # Generation: the whole decoding loop is one function.
    Case("bart_greedy_generation", _bart("greedy"), lambda: _encoder_inputs(_BART_VOCABULARY),
         lambda m, i: m.generate_ids(i["token_ids"], i["padding_mask"], 6)),
    Case("bart_beam_search", _bart(dict(name="beam", num_beams=3)),
         lambda: _encoder_inputs(_BART_VOCABULARY),
         lambda m, i: m.generate_ids(i["token_ids"], i["padding_mask"], 6), atol=1e-4),
    Case("bart_contrastive_search", _bart(dict(name="contrastive", k=3)),
         lambda: _encoder_inputs(_BART_VOCABULARY),
         lambda m, i: m.generate_ids(i["token_ids"], i["padding_mask"], 6), atol=1e-4),
    # The samplers that draw: one seed, one answer, however it is run.
    *[Case(f"bart_{name}_sampling", _bart(dict(name=name, **options)),
           lambda: _encoder_inputs(_BART_VOCABULARY),
           lambda m, i: m.generate_ids(i["token_ids"], i["padding_mask"], 6, seed=7), atol=1e-4)
      for name, options in (("random", {}), ("top_k", dict(k=5)), ("top_p", dict(p=0.9)))],
]

# tf.Module classes of the package that are no conformance case's, and why.
NOT_NUMERIC_MODULES = {
    # Strings in, strings out (XLA cannot compile them): tests/test_tokenizer*.py,
    # tests/test_*_tokenizer.py and the export tests check them against transformers.
    "XLMRobertaTokenizer", "WordPieceTokenizer", "ByteLevelBPETokenizer",
    "XLMRobertaPreprocessor", "BertPreprocessor", "BartPreprocessor", "_SegmentPreprocessor",
    # Export wrappers: the signatures around the cases above (tests/test_export.py and
    # the family tests serve them through the C API loader).
    "ServingModule", "TextPart", "FillMask", "ReplacedTokens", "TextClassification",
    "TokenClassification", "Embedding", "Generate", "Tokenize", "Detokenize",
    "HubEncoder", "HubPreprocessor",
    # Training state, checked step by step against torch (tests/test_optimizers.py).
    "Adam", "AdamW", "WarmupDecay", "LinearWarmupDecay", "CosineWarmupDecay",
    # Bases without computation of their own.
    "Module", "Task", "Backbone", "MaskedLM", "TextClassifier", "TokenClassifier",
}
