"""XLM-RoBERTa: config, presets, backbone, the fill-mask task and the encoder.

Numerically matches Hugging Face `XLMRobertaModel` / `XLMRobertaForMaskedLM`.
Einsum legend: B batch, L sequence length, M mask positions, D hidden, V vocab.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfhub_models import classification, layers, tasks
from tfhub_models.checkpoints import loader
from tfhub_models.checkpoints import xlm_roberta as files
from tfhub_models.preprocessing import XLMRobertaPreprocessor
from tfhub_models.tokenizers import XLMRobertaTokenizer
from tfhub_models.tokenizers import demo as demo_vocabularies


@dataclasses.dataclass(frozen=True)
class XLMRobertaConfig:
  """Sizes of an XLM-RoBERTa model, named as keras-hub's `XLMRobertaBackbone`."""
  vocabulary_size: int = 250002
  num_layers: int = 12
  num_heads: int = 12
  hidden_dim: int = 768
  intermediate_dim: int = 3072
  dropout: float = 0.1
  max_sequence_length: int = 512
  layer_norm_epsilon: float = 1e-5
  type_vocabulary_size: int = 1
  pad_token_id: int = 1
  hidden_activation: str = "gelu"

  @property
  def num_positions(self) -> int:
    """Rows of the position table: positions start at pad_token_id + 1."""
    return self.max_sequence_length + self.pad_token_id + 1


# Configs of the public checkpoints (FacebookAI/xlm-roberta-{base,large};
# keras-hub presets of the same names).
PRESETS = {
    "xlm_roberta_base_multi": XLMRobertaConfig(),
    "xlm_roberta_large_multi": XLMRobertaConfig(
        num_layers=24, num_heads=16, hidden_dim=1024, intermediate_dim=4096),
}

PRESET_HANDLES = {
    "xlm_roberta_base_multi": ("hf://FacebookAI/xlm-roberta-base",
                               "kaggle://keras/xlm_roberta/keras/xlm_roberta_base_multi"),
    "xlm_roberta_large_multi": ("hf://FacebookAI/xlm-roberta-large",
                                "kaggle://keras/xlm_roberta/keras/xlm_roberta_large_multi"),
}


class XLMRobertaBackbone(tasks.Backbone):
  """Token + position (+ type) embeddings, layer norm, post-norm encoder stack.

  `pooled_output` is tanh(dense(`<s>` state)) when built with `pooler=True` (an
  `XLMRobertaModel` checkpoint with `pooler.dense.*`, as transformers'
  `pooler_output`), else the `<s>` state itself.
  """

  config_class = XLMRobertaConfig
  presets = PRESETS

  def __init__(self, config: XLMRobertaConfig | None = None, *,
               vocabulary_size: int | None = None, num_layers: int | None = None,
               num_heads: int | None = None, hidden_dim: int | None = None,
               intermediate_dim: int | None = None, dropout: float | None = None,
               max_sequence_length: int | None = None, pooler: bool = False, dtype="float32",
               name: str = "backbone"):
    """Takes a config, or keras-hub's argument names (unset ones keep the config's)."""
    super().__init__(config, dict(
        vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
        hidden_dim=hidden_dim, intermediate_dim=intermediate_dim, dropout=dropout,
        max_sequence_length=max_sequence_length), dtype=dtype, name=name)
    c = self.config
    with self.name_scope:
      self.token_embedding = layers.Embedding(c.vocabulary_size, c.hidden_dim, dtype=dtype,
                                              name="token_embedding")
      self.position_embedding = layers.Embedding(c.num_positions, c.hidden_dim, dtype=dtype,
                                                 name="position_embedding")
      self.type_embedding = layers.Embedding(c.type_vocabulary_size, c.hidden_dim, dtype=dtype,
                                             name="type_embedding")
      self.embeddings_layer_norm = layers.LayerNorm(c.hidden_dim, epsilon=c.layer_norm_epsilon,
                                                    dtype=dtype, name="embeddings_layer_norm")
      self.transformer_layers = layers.encoder_stack(c, dtype)
      self.pooler = layers.optional_pooler(c.hidden_dim, pooler, dtype)

  def __call__(self, inputs: dict, training: bool = False) -> dict:
    """Encodes a batch.

    Args:
      inputs: {"token_ids": int [B, L], "padding_mask": int/bool [B, L] (1 = real token)}.
      training: enables dropout.

    Returns:
      {"sequence_output": [B, L, D], "pooled_output": [B, D] (the `<s>` state, through
      the pooler when there is one)}, in the backbone's dtype.
    """
    token_ids = tf.cast(inputs["token_ids"], tf.int32)
    real = tf.cast(tf.cast(inputs["padding_mask"], tf.bool), tf.int32)    # [B, L]
    # As upstream: positions count the ids that are not <pad> from
    # pad_token_id + 1, and every <pad> id sits at pad_token_id, a literal
    # "<pad>" in the text included (keras-hub counts 0..L-1 instead).
    not_pad = tf.cast(token_ids != self.config.pad_token_id, tf.int32)
    positions = tf.cumsum(not_pad, axis=1) * not_pad + self.config.pad_token_id
    x = (self.token_embedding(token_ids) + self.position_embedding(positions)
         + self.type_embedding(tf.zeros_like(token_ids)))               # [B, L, D]
    x = layers.dropout(self.embeddings_layer_norm(x), self.config.dropout, training)
    for layer in self.transformer_layers:
      x = layer(x, real, training=training)
    return {"sequence_output": x, "pooled_output": layers.pool(x, self.pooler)}


class XLMRobertaMaskedLM(tasks.MaskedLM):
  """`XLMRobertaForMaskedLM`: the most likely fillers of each `<mask>`."""

  presets = PRESETS

  def __init__(self, backbone: XLMRobertaBackbone, preprocessor: XLMRobertaPreprocessor,
               head: layers.MaskedLMHead | None = None, *, name: str = "xlm_roberta_masked_lm"):
    super().__init__(backbone, preprocessor, head, name=name, head_name="masked_lm_head")


class XLMRobertaEncoder(tasks.Task):
  """`XLMRobertaModel`: the backbone with its preprocessor (no head), for
  embedding and TF Hub exports."""

  task = "embedding"
  presets = PRESETS

  def __init__(self, backbone: XLMRobertaBackbone, preprocessor: XLMRobertaPreprocessor, *,
               name: str = "xlm_roberta_encoder"):
    super().__init__(backbone, preprocessor, name=name)


class XLMRobertaTextClassifier(classification.TextClassifier):
  """`XLMRobertaForSequenceClassification`: dense + tanh + out_proj on `<s>`."""

  presets = PRESETS
  head_activation = "tanh"
  module_name = "xlm_roberta_text_classifier"


class XLMRobertaTokenClassifier(classification.TokenClassifier):
  """`XLMRobertaForTokenClassification`: one dense layer at every token."""

  presets = PRESETS
  module_name = "xlm_roberta_token_classifier"


def build(config: XLMRobertaConfig, tokenizer: XLMRobertaTokenizer, task: str = "fill_mask", *,
          dtype="float32", sequence_length: int | None = None, pooler: bool = False,
          fresh_head: bool = False, **options):
  """The module of `task` (FAMILY.tasks) with random weights; `pooler` for the
  tasks of an XLMRobertaModel (backbone, embedding); options: a classifier's
  num_classes, labels, problem_type."""
  del fresh_head   # the loader's concern (assign)
  preprocessor = (None if tokenizer is None else   # None: a task on token ids
                  XLMRobertaPreprocessor(tokenizer, sequence_length or config.max_sequence_length))
  return tasks.build(FAMILY, XLMRobertaBackbone(config, pooler=pooler, dtype=dtype), preprocessor,
                     task, **options)


FAMILY = loader.Family(
    name="XLM-RoBERTa", hf_model_types=("xlm-roberta", "xlm_roberta"),
    keras_hub_classes=("XLMRobertaBackbone",), tasks=files.TASKS,
    config=lambda checkpoint: XLMRobertaConfig(**files.config_fields(checkpoint)),
    tokenizer=files.tokenizer, task=files.task, build=build, assign=files.assign,
    save=files.hf_files, options=files.options,
    demo_tokenizer=lambda: XLMRobertaTokenizer(demo_vocabularies.demo_sentencepiece()),
    tokenizer_from_file=XLMRobertaTokenizer.from_file,
    task_classes={"fill_mask": XLMRobertaMaskedLM, "embedding": XLMRobertaEncoder,
                  "text_classification": XLMRobertaTextClassifier,
                  "token_classification": XLMRobertaTokenClassifier},
    backbone_class=XLMRobertaBackbone,
    handles=PRESET_HANDLES, presets=PRESETS, preset_tasks=dict.fromkeys(PRESETS, "fill_mask"))

__all__ = ["XLMRobertaConfig", "XLMRobertaBackbone", "XLMRobertaMaskedLM", "XLMRobertaEncoder",
           "XLMRobertaTextClassifier", "XLMRobertaTokenClassifier",
           "PRESETS", "PRESET_HANDLES", "FAMILY", "build"]
