"""ELECTRA: config, presets, backbone, discriminator and generator heads, tasks.

Numerically matches Hugging Face `ElectraModel`, `ElectraForPreTraining` and
`ElectraForMaskedLM`.  Einsum legend: B batch, L length, M mask positions,
E embedding size, D hidden size, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow as tf

from tfhub_models import classification, layers, tasks
from tfhub_models.checkpoints import electra as files
from tfhub_models.checkpoints import loader
from tfhub_models.preprocessing import BertPreprocessor
from tfhub_models.tokenizers import WordPieceTokenizer
from tfhub_models.tokenizers import demo as demo_vocabularies


@dataclasses.dataclass(frozen=True)
class ElectraConfig:
  """Sizes of an ELECTRA model, named as keras-hub's `ElectraBackbone`."""
  vocabulary_size: int = 30522
  num_layers: int = 12
  num_heads: int = 4
  hidden_dim: int = 256
  embedding_dim: int = 128
  intermediate_dim: int = 1024
  dropout: float = 0.1
  max_sequence_length: int = 512
  num_segments: int = 2
  layer_norm_epsilon: float = 1e-12
  hidden_activation: str = "gelu"
  pad_token_id: int = 0


def _electra(num_layers, hidden, heads, intermediate, embedding):
  return ElectraConfig(num_layers=num_layers, hidden_dim=hidden, num_heads=heads,
                       intermediate_dim=intermediate, embedding_dim=embedding)


# Configs of the public google/electra-{small,base,large}-{discriminator,generator}
# checkpoints (uncased English WordPiece, 30522 ids).
PRESETS = {
    "electra_small_discriminator_uncased_en": _electra(12, 256, 4, 1024, 128),
    "electra_small_generator_uncased_en": _electra(12, 256, 4, 1024, 128),
    "electra_base_discriminator_uncased_en": _electra(12, 768, 12, 3072, 768),
    "electra_base_generator_uncased_en": _electra(12, 256, 4, 1024, 768),
    "electra_large_discriminator_uncased_en": _electra(24, 1024, 16, 4096, 1024),
    "electra_large_generator_uncased_en": _electra(24, 256, 4, 1024, 1024),
}

PRESET_HANDLES = {
    name: (f"hf://google/electra-{name.split('_')[1]}-{name.split('_')[2]}",)
    for name in PRESETS
}

# The task of each preset's checkpoint.
PRESET_TASKS = {name: ("fill_mask" if "generator" in name else "replaced_token_detection")
                for name in PRESETS}


def _presets_of(task: str) -> dict:
  return {name: config for name, config in PRESETS.items() if PRESET_TASKS[name] == task}


class ElectraBackbone(tasks.Backbone):
  """Embeddings (projected when embedding_dim != hidden_dim) and the encoder stack.

  `pooled_output` is the hidden state of the first token (`[CLS]`): no public
  ELECTRA checkpoint has pooler weights.  When a checkpoint does carry them
  (`pooler.dense.*`, built with `pooler=True`), it is tanh(dense([CLS])).
  """

  config_class = ElectraConfig
  presets = PRESETS

  def __init__(self, config: ElectraConfig | None = None, *, vocabulary_size: int | None = None,
               vocab_size: int | None = None, num_layers: int | None = None,
               num_heads: int | None = None, hidden_dim: int | None = None,
               embedding_dim: int | None = None, intermediate_dim: int | None = None,
               dropout: float | None = None, max_sequence_length: int | None = None,
               num_segments: int | None = None, pooler: bool = False, dtype="float32",
               name: str = "backbone"):
    """Takes a config, or keras-hub's argument names (unset ones keep the config's);
    `vocab_size` (keras-hub's name for ELECTRA) and `vocabulary_size` are the same."""
    if vocab_size is not None and vocabulary_size not in (None, vocab_size):
      raise ValueError(f"vocab_size {vocab_size} and vocabulary_size {vocabulary_size} differ")
    super().__init__(config, dict(
        vocabulary_size=vocabulary_size or vocab_size, num_layers=num_layers,
        num_heads=num_heads, hidden_dim=hidden_dim, embedding_dim=embedding_dim,
        intermediate_dim=intermediate_dim, dropout=dropout,
        max_sequence_length=max_sequence_length, num_segments=num_segments),
        dtype=dtype, name=name)
    c = self.config
    with self.name_scope:
      self.token_embedding = layers.Embedding(c.vocabulary_size, c.embedding_dim, dtype=dtype,
                                              name="token_embedding")
      self.position_embedding = layers.Embedding(c.max_sequence_length, c.embedding_dim,
                                                 dtype=dtype, name="position_embedding")
      self.segment_embedding = layers.Embedding(c.num_segments, c.embedding_dim, dtype=dtype,
                                                name="segment_embedding")
      self.embeddings_layer_norm = layers.LayerNorm(c.embedding_dim, epsilon=c.layer_norm_epsilon,
                                                    dtype=dtype, name="embeddings_layer_norm")
      self.embeddings_projection = (
          layers.Dense(c.embedding_dim, c.hidden_dim, dtype=dtype, name="embeddings_projection")
          if c.embedding_dim != c.hidden_dim else None)
      self.transformer_layers = layers.encoder_stack(c, dtype)
      self.pooler = layers.optional_pooler(c.hidden_dim, pooler, dtype)

  def __call__(self, inputs: dict, training: bool = False) -> dict:
    """Encodes a batch.

    Args:
      inputs: {"token_ids": int [B, L], "segment_ids": int [B, L] (0 = first
        segment; zeros if absent), "padding_mask": int/bool [B, L] (1 = real
        token; all ones if absent)}.
      training: enables dropout.

    Returns:
      {"sequence_output": [B, L, D], "pooled_output": [B, D]} in the backbone's dtype.
    """
    token_ids = tf.cast(inputs["token_ids"], tf.int32)
    segment_ids = inputs.get("segment_ids")
    segment_ids = tf.zeros_like(token_ids) if segment_ids is None else tf.cast(segment_ids,
                                                                               tf.int32)
    padding_mask = inputs.get("padding_mask")
    padding_mask = tf.ones_like(token_ids) if padding_mask is None else padding_mask
    positions = tf.range(tf.shape(token_ids)[1])[None, :]                 # [1, L]
    x = (self.token_embedding(token_ids) + self.position_embedding(positions)
         + self.segment_embedding(segment_ids))                          # [B, L, E]
    x = layers.dropout(self.embeddings_layer_norm(x), self.config.dropout, training)
    if self.embeddings_projection is not None:
      x = self.embeddings_projection(x)                                  # [B, L, D]
    for layer in self.transformer_layers:
      x = layer(x, padding_mask, training=training)
    return {"sequence_output": x, "pooled_output": layers.pool(x, self.pooler)}


class ElectraDiscriminatorHead(layers.Module):
  """Dense, the config's activation, dense to one logit per token."""

  def __init__(self, config: ElectraConfig, *, dtype="float32",
               name: str = "discriminator_head"):
    super().__init__(name=name)
    self.activation = layers.activation(config.hidden_activation)
    with self.name_scope:
      self.dense = layers.Dense(config.hidden_dim, config.hidden_dim, dtype=dtype, name="dense")
      self.prediction = layers.Dense(config.hidden_dim, 1, dtype=dtype, name="prediction")

  def __call__(self, sequence_output: tf.Tensor) -> tf.Tensor:
    """[B, L, D] -> float32 logits [B, L] (positive = replaced)."""
    return tf.cast(self.prediction(self.activation(self.dense(sequence_output)))[..., 0],
                   tf.float32)


class ElectraEncoder(tasks.Task):
  """`ElectraModel`: the backbone with its preprocessor, text -> sequence and
  pooled outputs."""

  task = "embedding"
  presets = PRESETS
  extra_signatures = ("embedding",)

  def __init__(self, backbone: ElectraBackbone, preprocessor: BertPreprocessor, *,
               name: str = "electra_encoder"):
    super().__init__(backbone, preprocessor, name=name)


class ElectraDiscriminator(tasks.Task):
  """Replaced-token detection (`ElectraForPreTraining`)."""

  task = "replaced_token_detection"
  presets = _presets_of(task)
  extra_signatures = ("embedding",)

  def __init__(self, backbone: ElectraBackbone, preprocessor: BertPreprocessor,
               head: ElectraDiscriminatorHead | None = None, *,
               name: str = "electra_discriminator"):
    super().__init__(backbone, preprocessor, name=name)
    self.head = head or ElectraDiscriminatorHead(backbone.config, dtype=backbone.dtype.name)

  def __call__(self, inputs: dict, training: bool = False) -> tf.Tensor:
    """Replaced-token logits float32 [B, L] of {"token_ids", "segment_ids",
    "padding_mask"} (int32 [B, L])."""
    return self.head(self.backbone(inputs, training=training)["sequence_output"])

  def detect_replaced(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> list:
    """For each text, [(token, probability that it was replaced)] (eager)."""
    inputs = self.preprocessor(tf.constant(list(texts)),
                               None if text_pairs is None else tf.constant(list(text_pairs)))
    probability = tf.sigmoid(self(inputs)).numpy()
    tokens = self.tokenizer.id_to_token(inputs["token_ids"]).numpy()
    lengths = inputs["padding_mask"].numpy().sum(axis=1)
    return [[(tokens[b, i].decode("utf-8"), float(probability[b, i])) for i in range(n)]
            for b, n in enumerate(lengths)]


class ElectraMaskedLM(tasks.MaskedLM):
  """The generator (`ElectraForMaskedLM`) as a fill-mask task with `[MASK]`."""

  presets = _presets_of("fill_mask")
  extra_signatures = ("embedding",)

  def __init__(self, backbone: ElectraBackbone, preprocessor: BertPreprocessor,
               head: layers.MaskedLMHead | None = None, *, name: str = "electra_masked_lm"):
    super().__init__(backbone, preprocessor, head, name=name, head_name="generator_head")


class ElectraTextClassifier(classification.TextClassifier):
  """`ElectraForSequenceClassification`: dense + GELU + out_proj on `[CLS]`."""

  presets = PRESETS
  head_activation = "gelu"
  module_name = "electra_text_classifier"


class ElectraTokenClassifier(classification.TokenClassifier):
  """`ElectraForTokenClassification`: one dense layer at every token."""

  presets = PRESETS
  module_name = "electra_token_classifier"


def build(config: ElectraConfig, tokenizer: WordPieceTokenizer,
          task: str = "replaced_token_detection", *, dtype="float32",
          sequence_length: int | None = None, pooler: bool = False, fresh_head: bool = False,
          **options):
  """The module of `task` (FAMILY.tasks) with random weights; options: a
  classifier's num_classes, labels, problem_type."""
  del fresh_head   # the loader's concern (assign)
  preprocessor = (None if tokenizer is None else   # None: a task on token ids
                  BertPreprocessor(tokenizer, sequence_length or config.max_sequence_length))
  return tasks.build(FAMILY, ElectraBackbone(config, pooler=pooler, dtype=dtype), preprocessor,
                     task, **options)


FAMILY = loader.Family(
    name="ELECTRA", hf_model_types=("electra",), keras_hub_classes=("ElectraBackbone",),
    tasks=files.TASKS, config=lambda checkpoint: ElectraConfig(**files.config_fields(checkpoint)),
    tokenizer=files.tokenizer, task=files.task, build=build, assign=files.assign,
    save=files.hf_files, options=files.options,
    demo_tokenizer=lambda: WordPieceTokenizer(list(
        demo_vocabularies.demo_wordpiece_vocabulary())),
    tokenizer_from_file=WordPieceTokenizer.from_files,
    task_classes={"replaced_token_detection": ElectraDiscriminator, "fill_mask": ElectraMaskedLM,
                  "embedding": ElectraEncoder, "text_classification": ElectraTextClassifier,
                  "token_classification": ElectraTokenClassifier},
    backbone_class=ElectraBackbone,
    handles=PRESET_HANDLES, presets=PRESETS, preset_tasks=PRESET_TASKS)

__all__ = ["ElectraConfig", "ElectraBackbone", "ElectraDiscriminatorHead", "ElectraEncoder",
           "ElectraTextClassifier", "ElectraTokenClassifier",
           "ElectraDiscriminator", "ElectraMaskedLM", "PRESETS", "PRESET_TASKS", "FAMILY", "build"]
