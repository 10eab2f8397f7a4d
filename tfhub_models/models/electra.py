"""ELECTRA: config, backbone, discriminator and generator heads, tasks.

Numerically matches Hugging Face `ElectraModel`, `ElectraForPreTraining` and
`ElectraForMaskedLM`.  Einsum legend: B batch, L length, M mask positions,
E embedding size, D hidden size, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import tensorflow as tf

from tfhub_models import layers, tasks
from tfhub_models.tokenizers import BertPreprocessor, WordPieceTokenizer


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

  @property
  def head_dim(self) -> int:
    return self.hidden_dim // self.num_heads

  @classmethod
  def from_hf(cls, config: dict) -> "ElectraConfig":
    """From a Hugging Face `config.json` dict."""
    hidden = int(config["hidden_size"])
    return cls(
        vocabulary_size=int(config["vocab_size"]),
        num_layers=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]),
        hidden_dim=hidden,
        embedding_dim=int(config.get("embedding_size", hidden)),
        intermediate_dim=int(config["intermediate_size"]),
        dropout=float(config.get("hidden_dropout_prob", 0.1)),
        max_sequence_length=int(config.get("max_position_embeddings", 512)),
        num_segments=int(config.get("type_vocab_size", 2)),
        layer_norm_epsilon=float(config.get("layer_norm_eps", 1e-12)),
        hidden_activation=str(config.get("hidden_act", "gelu")),
        pad_token_id=int(config.get("pad_token_id", 0) or 0),
    )


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

PRESET_TASKS = {name: ("fill_mask" if "generator" in name else "replaced_token_detection")
                for name in PRESETS}


class ElectraBackbone(tf.Module):
  """Embeddings (projected when embedding_dim != hidden_dim) and the encoder stack.

  `pooled_output` is the hidden state of the first token (`[CLS]`): no public
  ELECTRA checkpoint has pooler weights.  When a checkpoint does carry them
  (`pooler.dense.*`, built with `pooler=True`), it is tanh(dense([CLS])).
  """

  def __init__(self, config: ElectraConfig | None = None, *, vocabulary_size: int | None = None,
               num_layers: int | None = None, num_heads: int | None = None,
               hidden_dim: int | None = None, embedding_dim: int | None = None,
               intermediate_dim: int | None = None, dropout: float | None = None,
               max_sequence_length: int | None = None, num_segments: int | None = None,
               pooler: bool = False, dtype="float32", name: str = "backbone"):
    """Takes a config, or keras-hub's argument names (unset ones keep the config's)."""
    super().__init__(name=name)
    named = dict(vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
                 hidden_dim=hidden_dim, embedding_dim=embedding_dim,
                 intermediate_dim=intermediate_dim, dropout=dropout,
                 max_sequence_length=max_sequence_length, num_segments=num_segments)
    config = dataclasses.replace(config or ElectraConfig(),
                                 **{k: v for k, v in named.items() if v is not None})
    self.config = config
    self.dtype = layers.as_dtype(dtype)
    c = config
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
      self.transformer_layers = [
          layers.TransformerEncoderLayer(
              c.hidden_dim, c.num_heads, c.intermediate_dim, dropout=c.dropout,
              activation_name=c.hidden_activation, layer_norm_epsilon=c.layer_norm_epsilon,
              dtype=dtype, name=f"transformer_layer_{i}")
          for i in range(c.num_layers)
      ]
      self.pooler = (layers.Dense(c.hidden_dim, c.hidden_dim, dtype=dtype, name="pooler")
                     if pooler else None)

  def __call__(self, token_ids, segment_ids=None, padding_mask=None,
               training: bool = False) -> dict:
    """Encodes a batch.

    Args:
      token_ids: int [B, L], or a dict with "token_ids", "segment_ids", "padding_mask".
      segment_ids: int [B, L] (0 = first segment), zeros if None.
      padding_mask: int/bool [B, L], 1 = real token; all ones if None.
      training: enables dropout.

    Returns:
      {"sequence_output": [B, L, D], "pooled_output": [B, D]} in the backbone's dtype.
    """
    if isinstance(token_ids, dict):
      inputs = token_ids
      token_ids = inputs["token_ids"]
      segment_ids = inputs.get("segment_ids")
      padding_mask = inputs.get("padding_mask")
    token_ids = tf.cast(token_ids, tf.int32)
    segment_ids = tf.zeros_like(token_ids) if segment_ids is None else tf.cast(segment_ids,
                                                                               tf.int32)
    padding_mask = tf.ones_like(token_ids) if padding_mask is None else padding_mask
    positions = tf.range(tf.shape(token_ids)[1])[None, :]                 # [1, L]
    x = (self.token_embedding(token_ids) + self.position_embedding(positions)
         + self.segment_embedding(segment_ids))                          # [B, L, E]
    x = layers.dropout(self.embeddings_layer_norm(x), self.config.dropout, training)
    if self.embeddings_projection is not None:
      x = self.embeddings_projection(x)                                  # [B, L, D]
    for layer in self.transformer_layers:
      x = layer(x, padding_mask, training=training)
    first = x[:, 0]
    pooled = tf.math.tanh(self.pooler(first)) if self.pooler is not None else first
    return {"sequence_output": x, "pooled_output": pooled}


class ElectraDiscriminatorHead(tf.Module):
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


class ElectraGeneratorHead(tf.Module):
  """Dense to embedding_dim, exact GELU, layer norm, tied decoder plus bias."""

  def __init__(self, config: ElectraConfig, token_embedding: layers.Embedding, *,
               dtype="float32", name: str = "generator_head"):
    super().__init__(name=name)
    self.token_embedding = token_embedding
    with self.name_scope:
      self.dense = layers.Dense(config.hidden_dim, config.embedding_dim, dtype=dtype,
                                name="dense")
      self.layer_norm = layers.LayerNorm(config.embedding_dim, epsilon=config.layer_norm_epsilon,
                                         dtype=dtype, name="layer_norm")
      self.bias = tf.Variable(tf.zeros([config.vocabulary_size], layers.as_dtype(dtype)),
                              name="bias")

  def __call__(self, sequence_output: tf.Tensor, mask_positions: tf.Tensor) -> tf.Tensor:
    """Logits at the mask positions only: [B, L, D], int [B, M] -> float32 [B, M, V]."""
    x = tf.gather(sequence_output, tf.cast(mask_positions, tf.int32), batch_dims=1)  # [B, M, D]
    x = self.layer_norm(layers.gelu(self.dense(x)))                                  # [B, M, E]
    return tf.cast(self.token_embedding.attend(x) + self.bias, tf.float32)


def _check_sizes(backbone: ElectraBackbone, preprocessor: BertPreprocessor):
  if preprocessor.tokenizer.vocabulary_size != backbone.config.vocabulary_size:
    raise ValueError(f"the vocabulary has {preprocessor.tokenizer.vocabulary_size} entries but "
                     f"the model's vocabulary_size is {backbone.config.vocabulary_size}")
  if preprocessor.sequence_length > backbone.config.max_sequence_length:
    raise ValueError(f"sequence_length {preprocessor.sequence_length} exceeds the model's "
                     f"max_sequence_length {backbone.config.max_sequence_length}")


class ElectraEncoder(tf.Module):
  """The backbone with its preprocessor: text -> sequence and pooled outputs."""

  def __init__(self, backbone: ElectraBackbone, preprocessor: BertPreprocessor, *,
               name: str = "electra_encoder"):
    super().__init__(name=name)
    _check_sizes(backbone, preprocessor)
    self.backbone = backbone
    self.preprocessor = preprocessor

  @property
  def tokenizer(self) -> WordPieceTokenizer:
    return self.preprocessor.tokenizer


class ElectraDiscriminator(tf.Module):
  """Replaced-token detection (`ElectraForPreTraining`)."""

  def __init__(self, backbone: ElectraBackbone, preprocessor: BertPreprocessor,
               head: ElectraDiscriminatorHead | None = None, *,
               name: str = "electra_discriminator"):
    super().__init__(name=name)
    _check_sizes(backbone, preprocessor)
    self.backbone = backbone
    self.preprocessor = preprocessor
    self.head = head or ElectraDiscriminatorHead(backbone.config, dtype=backbone.dtype.name)

  @property
  def tokenizer(self) -> WordPieceTokenizer:
    return self.preprocessor.tokenizer

  @classmethod
  def from_preset(cls, preset: str, *, load_weights: bool = True, dtype="float32",
                  sequence_length: int | None = None) -> "ElectraDiscriminator":
    from tfhub_models import checkpoints
    return checkpoints.load(preset, dtype=dtype, sequence_length=sequence_length,
                            load_weights=load_weights, task="replaced_token_detection")

  def __call__(self, token_ids, segment_ids, padding_mask, training: bool = False) -> tf.Tensor:
    """Replaced-token logits float32 [B, L] (all int32 [B, L] inputs)."""
    outputs = self.backbone(token_ids, segment_ids, padding_mask, training=training)
    return self.head(outputs["sequence_output"])

  def detect_replaced(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> list:
    """For each text, [(token, probability that it was replaced)] (eager)."""
    inputs = self.preprocessor(tf.constant(list(texts)),
                               None if text_pairs is None else tf.constant(list(text_pairs)))
    probability = tf.sigmoid(self(inputs["token_ids"], inputs["segment_ids"],
                                  inputs["padding_mask"])).numpy()
    tokens = self.tokenizer.id_to_token(inputs["token_ids"]).numpy()
    lengths = inputs["padding_mask"].numpy().sum(axis=1)
    return [[(tokens[b, i].decode("utf-8"), float(probability[b, i])) for i in range(n)]
            for b, n in enumerate(lengths)]


class ElectraMaskedLM(tf.Module):
  """The generator (`ElectraForMaskedLM`) as a fill-mask task with `[MASK]`."""

  def __init__(self, backbone: ElectraBackbone, preprocessor: BertPreprocessor,
               head: ElectraGeneratorHead | None = None, *, name: str = "electra_masked_lm"):
    super().__init__(name=name)
    _check_sizes(backbone, preprocessor)
    self.backbone = backbone
    self.preprocessor = preprocessor
    self.head = head or ElectraGeneratorHead(backbone.config, backbone.token_embedding,
                                             dtype=backbone.dtype.name)

  @property
  def tokenizer(self) -> WordPieceTokenizer:
    return self.preprocessor.tokenizer

  @classmethod
  def from_preset(cls, preset: str, *, load_weights: bool = True, dtype="float32",
                  sequence_length: int | None = None) -> "ElectraMaskedLM":
    from tfhub_models import checkpoints
    return checkpoints.load(preset, dtype=dtype, sequence_length=sequence_length,
                            load_weights=load_weights, task="fill_mask")

  def __call__(self, token_ids, padding_mask, mask_positions, training: bool = False):
    """Logits float32 [B, M, V] at mask_positions int32 [B, M] (one segment)."""
    outputs = self.backbone(token_ids, None, padding_mask, training=training)
    return self.head(outputs["sequence_output"], mask_positions)

  def top_k(self, token_ids, padding_mask, top_k: int) -> dict:
    return tasks.top_k_fillers(self, token_ids, padding_mask, top_k)

  def fill_mask(self, texts: Sequence[str], top_k: int = 5) -> list:
    """Fills every `[MASK]` of each text; see tasks.fill_mask."""
    return tasks.fill_mask(self, texts, top_k)


def build_task(task: str, config: ElectraConfig, tokenizer: WordPieceTokenizer, *,
               dtype="float32", sequence_length: int | None = None, pooler: bool = False):
  """A task module with random weights: "replaced_token_detection", "fill_mask" or "embedding"."""
  backbone = ElectraBackbone(config, pooler=pooler, dtype=dtype)
  length = min(sequence_length or config.max_sequence_length, config.max_sequence_length)
  preprocessor = BertPreprocessor(tokenizer, length)
  if task == "replaced_token_detection":
    return ElectraDiscriminator(backbone, preprocessor)
  if task == "fill_mask":
    return ElectraMaskedLM(backbone, preprocessor)
  if task == "embedding":
    return ElectraEncoder(backbone, preprocessor)
  raise ValueError(f"unknown ELECTRA task {task!r}")


__all__ = ["ElectraConfig", "ElectraBackbone", "ElectraDiscriminatorHead", "ElectraGeneratorHead",
           "ElectraEncoder", "ElectraDiscriminator", "ElectraMaskedLM", "PRESETS", "build_task"]
