"""XLM-RoBERTa: config, backbone, masked-LM head and the fill-mask task.

Numerically matches Hugging Face `XLMRobertaModel` / `XLMRobertaForMaskedLM`.
Einsum legend: B batch, L sequence length, M mask positions, D hidden, V vocab.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import tensorflow as tf

from tfhub_models import layers, tasks
from tfhub_models.tasks import find_masks
from tfhub_models.tokenizers import XLMRobertaPreprocessor, XLMRobertaTokenizer


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
  def head_dim(self) -> int:
    return self.hidden_dim // self.num_heads

  @property
  def num_positions(self) -> int:
    """Rows of the position table: positions start at pad_token_id + 1."""
    return self.max_sequence_length + self.pad_token_id + 1

  @classmethod
  def from_hf(cls, config: dict) -> "XLMRobertaConfig":
    """From a Hugging Face `config.json` dict."""
    pad = int(config.get("pad_token_id", 1))
    return cls(
        vocabulary_size=int(config["vocab_size"]),
        num_layers=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]),
        hidden_dim=int(config["hidden_size"]),
        intermediate_dim=int(config["intermediate_size"]),
        dropout=float(config.get("hidden_dropout_prob", 0.1)),
        max_sequence_length=int(config["max_position_embeddings"]) - pad - 1,
        layer_norm_epsilon=float(config.get("layer_norm_eps", 1e-5)),
        type_vocabulary_size=int(config.get("type_vocab_size", 1)),
        pad_token_id=pad,
        hidden_activation=str(config.get("hidden_act", "gelu")),
    )

  @classmethod
  def from_keras_hub(cls, config: dict) -> "XLMRobertaConfig":
    """From the `config` entry of a keras-hub `XLMRobertaBackbone` config.json."""
    return cls(
        vocabulary_size=int(config["vocabulary_size"]),
        num_layers=int(config["num_layers"]),
        num_heads=int(config["num_heads"]),
        hidden_dim=int(config["hidden_dim"]),
        intermediate_dim=int(config["intermediate_dim"]),
        dropout=float(config.get("dropout", 0.1)),
        max_sequence_length=int(config.get("max_sequence_length", 512)),
    )


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


class XLMRobertaBackbone(tf.Module):
  """Token + position (+ type) embeddings, layer norm, post-norm encoder stack."""

  def __init__(self, config: XLMRobertaConfig | None = None, *,
               vocabulary_size: int | None = None, num_layers: int | None = None,
               num_heads: int | None = None, hidden_dim: int | None = None,
               intermediate_dim: int | None = None, dropout: float | None = None,
               max_sequence_length: int | None = None, dtype="float32", name: str = "backbone"):
    """Takes a config, or keras-hub's argument names (unset ones keep the config's)."""
    super().__init__(name=name)
    named = dict(vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
                 hidden_dim=hidden_dim, intermediate_dim=intermediate_dim, dropout=dropout,
                 max_sequence_length=max_sequence_length)
    config = dataclasses.replace(config or XLMRobertaConfig(),
                                 **{k: v for k, v in named.items() if v is not None})
    self.config = config
    self.dtype = layers.as_dtype(dtype)
    c = config
    with self.name_scope:
      self.token_embedding = layers.Embedding(c.vocabulary_size, c.hidden_dim, dtype=dtype,
                                              name="token_embedding")
      self.position_embedding = layers.Embedding(c.num_positions, c.hidden_dim, dtype=dtype,
                                                 name="position_embedding")
      self.type_embedding = layers.Embedding(c.type_vocabulary_size, c.hidden_dim, dtype=dtype,
                                             name="type_embedding")
      self.embeddings_layer_norm = layers.LayerNorm(c.hidden_dim, epsilon=c.layer_norm_epsilon,
                                                    dtype=dtype, name="embeddings_layer_norm")
      self.transformer_layers = [
          layers.TransformerEncoderLayer(
              c.hidden_dim, c.num_heads, c.intermediate_dim, dropout=c.dropout,
              activation_name=c.hidden_activation, layer_norm_epsilon=c.layer_norm_epsilon,
              dtype=dtype, name=f"transformer_layer_{i}")
          for i in range(c.num_layers)
      ]

  @classmethod
  def from_preset(cls, preset: str, *, load_weights: bool = True,
                  dtype="float32") -> "XLMRobertaBackbone":
    """Loads the backbone of a checkpoint directory, hf:// or kaggle:// handle or preset."""
    from tfhub_models import checkpoints
    return checkpoints.load(preset, dtype=dtype, load_weights=load_weights, task="backbone")

  def __call__(self, token_ids, padding_mask=None, training: bool = False) -> tf.Tensor:
    """Encodes a batch.

    Args:
      token_ids: int [B, L], or a dict with "token_ids" and "padding_mask".
      padding_mask: int/bool [B, L], 1 = real token.
      training: enables dropout.

    Returns:
      sequence_output [B, L, D] in the backbone's dtype.
    """
    if isinstance(token_ids, dict):
      token_ids, padding_mask = token_ids["token_ids"], token_ids["padding_mask"]
    token_ids = tf.cast(token_ids, tf.int32)
    real = tf.cast(tf.cast(padding_mask, tf.bool), tf.int32)             # [B, L]
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
    return x


class XLMRobertaMaskedLMHead(tf.Module):
  """Dense, exact GELU, layer norm, then the tied embedding decoder plus a bias."""

  def __init__(self, config: XLMRobertaConfig, token_embedding: layers.Embedding, *,
               dtype="float32", name: str = "masked_lm_head"):
    super().__init__(name=name)
    self.token_embedding = token_embedding
    with self.name_scope:
      self.dense = layers.Dense(config.hidden_dim, config.hidden_dim, dtype=dtype, name="dense")
      self.layer_norm = layers.LayerNorm(config.hidden_dim, epsilon=config.layer_norm_epsilon,
                                         dtype=dtype, name="layer_norm")
      self.bias = tf.Variable(tf.zeros([config.vocabulary_size], layers.as_dtype(dtype)),
                              name="bias")

  def __call__(self, sequence_output: tf.Tensor, mask_positions: tf.Tensor) -> tf.Tensor:
    """Vocabulary logits at the mask positions only.

    Args:
      sequence_output: [B, L, D].
      mask_positions: int [B, M], indices into L.

    Returns:
      float32 [B, M, V].
    """
    x = tf.gather(sequence_output, tf.cast(mask_positions, tf.int32), batch_dims=1)  # [B, M, D]
    # Exact GELU whatever the config's hidden_act, as upstream's LM head.
    x = self.layer_norm(layers.gelu(self.dense(x)))
    return tf.cast(self.token_embedding.attend(x) + self.bias, tf.float32)


class XLMRobertaMaskedLM(tf.Module):
  """The fill-mask task: preprocessor, backbone and masked-LM head.

  `generate`-free; answers the most likely fillers of each `<mask>`.
  """

  def __init__(self, backbone: XLMRobertaBackbone, preprocessor: XLMRobertaPreprocessor,
               head: XLMRobertaMaskedLMHead | None = None, *, name: str = "xlm_roberta_masked_lm"):
    super().__init__(name=name)
    if preprocessor.tokenizer.vocabulary_size != backbone.config.vocabulary_size:
      raise ValueError(
          f"tokenizer has {preprocessor.tokenizer.vocabulary_size} ids but the model's "
          f"vocabulary_size is {backbone.config.vocabulary_size}")
    if preprocessor.sequence_length > backbone.config.max_sequence_length:
      raise ValueError(
          f"sequence_length {preprocessor.sequence_length} exceeds the model's "
          f"max_sequence_length {backbone.config.max_sequence_length}")
    self.backbone = backbone
    self.preprocessor = preprocessor
    self.head = head or XLMRobertaMaskedLMHead(backbone.config, backbone.token_embedding,
                                               dtype=backbone.dtype.name)

  @property
  def tokenizer(self) -> XLMRobertaTokenizer:
    return self.preprocessor.tokenizer

  @classmethod
  def from_preset(cls, preset: str, *, load_weights: bool = True, dtype="float32",
                  sequence_length: int | None = None) -> "XLMRobertaMaskedLM":
    """Loads a checkpoint directory, an hf:// or kaggle:// handle, or a preset name."""
    from tfhub_models import checkpoints
    return checkpoints.load(preset, dtype=dtype, sequence_length=sequence_length,
                            load_weights=load_weights, task="fill_mask")

  def __call__(self, token_ids, padding_mask, mask_positions, training: bool = False):
    """Logits at the mask positions.

    Args:
      token_ids: int32 [B, L].
      padding_mask: int32 [B, L].
      mask_positions: int32 [B, M].

    Returns:
      float32 [B, M, V].
    """
    sequence_output = self.backbone(token_ids, padding_mask, training=training)
    return self.head(sequence_output, mask_positions)

  def top_k(self, token_ids, padding_mask, top_k: int) -> dict:
    """Top-k fillers of every mask; see tasks.top_k_fillers."""
    return tasks.top_k_fillers(self, token_ids, padding_mask, top_k)

  def fill_mask(self, texts: Sequence[str], top_k: int = 5) -> list:
    """Fills every `<mask>` of each text; see tasks.fill_mask."""
    return tasks.fill_mask(self, texts, top_k)


class XLMRobertaEncoder(tf.Module):
  """The backbone with its preprocessor (no head): for embedding and TF Hub exports."""

  def __init__(self, backbone: XLMRobertaBackbone, preprocessor: XLMRobertaPreprocessor, *,
               name: str = "xlm_roberta_encoder"):
    super().__init__(name=name)
    self.backbone = backbone
    self.preprocessor = preprocessor

  @property
  def tokenizer(self) -> XLMRobertaTokenizer:
    return self.preprocessor.tokenizer


def random_task(config: XLMRobertaConfig, tokenizer: XLMRobertaTokenizer, *,
                dtype="float32", sequence_length: int | None = None):
  """A fill-mask task with random weights for `config`."""
  backbone = XLMRobertaBackbone(config, dtype=dtype)
  length = min(sequence_length or config.max_sequence_length, config.max_sequence_length)
  return XLMRobertaMaskedLM(backbone, XLMRobertaPreprocessor(tokenizer, length))


__all__ = [
    "XLMRobertaConfig", "XLMRobertaBackbone", "XLMRobertaMaskedLMHead", "XLMRobertaMaskedLM",
    "XLMRobertaEncoder",
    "PRESETS", "PRESET_HANDLES", "find_masks", "random_task",
]
