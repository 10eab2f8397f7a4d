"""BART: config, encoder, decoder with a fixed-size cache, LM head.

Numerically matches Hugging Face `BartModel` / `BartForConditionalGeneration`.
Einsum legend: B batch, S encoder length, T decoder length, D hidden, N heads,
H head size, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import tensorflow as tf

from tfhub_models import layers

POSITION_OFFSET = 2   # upstream's learned positions start at row 2


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  """Generation settings (the fields of a `generation_config.json` we use)."""
  max_length: int = 20
  min_length: int = 0
  num_beams: int = 1
  length_penalty: float = 1.0
  early_stopping: bool | str = False    # True, False or "never", as upstream
  no_repeat_ngram_size: int = 0
  repetition_penalty: float = 1.0
  forced_bos_token_id: int | None = None
  forced_eos_token_id: int | None = None
  decoder_start_token_id: int = 2
  do_sample: bool = False
  top_k: int = 50
  top_p: float = 1.0
  temperature: float = 1.0
  num_return_sequences: int = 1

  def sampler(self):
    """The sampler these settings describe (upstream's choice rules)."""
    from tfhub_models.generation import Sampler
    if self.num_beams > 1:
      return Sampler(name="beam", num_beams=self.num_beams, length_penalty=self.length_penalty,
                     early_stopping=self.early_stopping,
                     num_return_sequences=self.num_return_sequences)
    if not self.do_sample:
      return Sampler(name="greedy")
    if self.top_p < 1.0:
      return Sampler(name="top_p", p=self.top_p, k=self.top_k or None,
                     temperature=self.temperature)
    if self.top_k:
      return Sampler(name="top_k", k=self.top_k, temperature=self.temperature)
    return Sampler(name="random", temperature=self.temperature)

  @classmethod
  def from_hf(cls, config: dict) -> "GenerationConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in config.items() if k in known and v is not None}
    # Upstream's early_stopping is True, False (a heuristic) or "never".
    early = values.get("early_stopping", False)
    values["early_stopping"] = "never" if early == "never" else early is True
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class BartConfig:
  """Sizes of a BART model, named as keras-hub's `BartBackbone`."""
  vocabulary_size: int = 50265
  num_layers: int = 6
  num_decoder_layers: int | None = None   # None: the same as num_layers
  num_heads: int = 12
  hidden_dim: int = 768
  intermediate_dim: int = 3072
  dropout: float = 0.1
  max_sequence_length: int = 1024
  scale_embedding: bool = False
  activation: str = "gelu"
  layer_norm_epsilon: float = 1e-5
  pad_token_id: int = 1
  bos_token_id: int = 0
  eos_token_id: int = 2
  generation: GenerationConfig = GenerationConfig()

  @property
  def decoder_layers(self) -> int:
    return self.num_decoder_layers or self.num_layers

  @property
  def head_dim(self) -> int:
    return self.hidden_dim // self.num_heads

  @classmethod
  def from_hf(cls, config: dict, generation: dict | None = None) -> "BartConfig":
    """From a Hugging Face `config.json` (and `generation_config.json`) dict."""
    if config["encoder_attention_heads"] != config["decoder_attention_heads"] or config[
        "encoder_ffn_dim"] != config["decoder_ffn_dim"]:
      raise ValueError("encoder and decoder with different head counts or feed-forward sizes "
                       "are not supported")
    settings = dict(config)
    settings.update(generation or {})
    return cls(
        vocabulary_size=int(config["vocab_size"]),
        num_layers=int(config["encoder_layers"]),
        num_decoder_layers=int(config["decoder_layers"]),
        num_heads=int(config["encoder_attention_heads"]),
        hidden_dim=int(config["d_model"]),
        intermediate_dim=int(config["encoder_ffn_dim"]),
        dropout=float(config.get("dropout", 0.1)),
        max_sequence_length=int(config.get("max_position_embeddings", 1024)),
        scale_embedding=bool(config.get("scale_embedding", False)),
        activation=str(config.get("activation_function", "gelu")),
        pad_token_id=int(config.get("pad_token_id", 1)),
        bos_token_id=int(config.get("bos_token_id", 0)),
        eos_token_id=int(config.get("eos_token_id", 2)),
        generation=GenerationConfig.from_hf(settings),
    )


_SUMMARY = GenerationConfig(num_beams=4, early_stopping=True, no_repeat_ngram_size=3,
                            forced_bos_token_id=0, forced_eos_token_id=2)
_CNN = dataclasses.replace(_SUMMARY, max_length=142, min_length=56, length_penalty=2.0)
# Configs and generation settings of facebook/bart-base, bart-large, bart-large-cnn.
PRESETS = {
    "bart_base_en": BartConfig(generation=_SUMMARY),
    "bart_large_en": BartConfig(num_layers=12, num_heads=16, hidden_dim=1024,
                                intermediate_dim=4096, generation=_SUMMARY),
    "bart_large_en_cnn": BartConfig(num_layers=12, num_heads=16, hidden_dim=1024,
                                    intermediate_dim=4096, generation=_CNN),
}
PRESET_HANDLES = {"bart_base_en": ("hf://facebook/bart-base",),
                  "bart_large_en": ("hf://facebook/bart-large",),
                  "bart_large_en_cnn": ("hf://facebook/bart-large-cnn",)}


class DecoderLayer(tf.Module):
  """Post-norm decoder layer: causal self-attention, cross-attention, feed-forward."""

  def __init__(self, config: BartConfig, *, dtype="float32", name: str | None = None):
    super().__init__(name=name)
    c = config
    self.dropout = c.dropout
    with self.name_scope:
      self.self_attention = layers.MultiHeadAttention(c.hidden_dim, c.num_heads, dropout=c.dropout,
                                                      dtype=dtype, name="self_attention")
      self.self_attention_layer_norm = layers.LayerNorm(
          c.hidden_dim, epsilon=c.layer_norm_epsilon, dtype=dtype, name="self_attention_layer_norm")
      self.cross_attention = layers.MultiHeadAttention(c.hidden_dim, c.num_heads,
                                                       dropout=c.dropout, dtype=dtype,
                                                       name="cross_attention")
      self.cross_attention_layer_norm = layers.LayerNorm(
          c.hidden_dim, epsilon=c.layer_norm_epsilon, dtype=dtype,
          name="cross_attention_layer_norm")
      self.feedforward = layers.FeedForward(c.hidden_dim, c.intermediate_dim,
                                            activation_name=c.activation, dtype=dtype,
                                            name="feedforward")
      self.feedforward_layer_norm = layers.LayerNorm(
          c.hidden_dim, epsilon=c.layer_norm_epsilon, dtype=dtype, name="feedforward_layer_norm")

  def _rest(self, x, attended, cross_kv, cross_mask, training):
    x = self.self_attention_layer_norm(x + layers.dropout(attended, self.dropout, training))
    crossed = self.cross_attention.attend(x, cross_kv.key, cross_kv.value, cross_mask, training)
    x = self.cross_attention_layer_norm(x + layers.dropout(crossed, self.dropout, training))
    fed = self.feedforward(x, training=training)
    return self.feedforward_layer_norm(x + layers.dropout(fed, self.dropout, training))

  def __call__(self, x, self_mask, cross_kv: layers.KVCache, cross_mask, training=False):
    """Full-sequence step: x [B, T, D]; self_mask [B, T, T]; cross_mask [B, 1, S]."""
    attended = self.self_attention(x, mask=self_mask, training=training)
    return self._rest(x, attended, cross_kv, cross_mask, training)

  def call_cached(self, x, cache: layers.KVCache, index, self_mask, cross_kv, cross_mask):
    """One decoding step: x [B, 1, D] at position `index`; returns (y, cache)."""
    attended, cache = self.self_attention.call_cached(x, cache, index, self_mask)
    return self._rest(x, attended, cross_kv, cross_mask, False), cache


class DecoderState(NamedTuple):
  """What the decoder carries between steps (a value: while_loop state)."""
  self_caches: tuple          # per layer KVCache of [B, T_max, N, H]
  cross_kv: tuple             # per layer KVCache of [B, S, N, H], computed once
  cross_mask: tf.Tensor       # bool [B, 1, S]


class BartBackbone(tf.Module):
  """Shared embeddings, encoder, decoder, and the tied LM head with its bias."""

  def __init__(self, config: BartConfig | None = None, *, vocabulary_size: int | None = None,
               num_layers: int | None = None, num_heads: int | None = None,
               hidden_dim: int | None = None, intermediate_dim: int | None = None,
               dropout: float | None = None, max_sequence_length: int | None = None,
               dtype="float32", name: str = "backbone"):
    """Takes a config, or keras-hub's argument names (unset ones keep the config's)."""
    super().__init__(name=name)
    named = dict(vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
                 hidden_dim=hidden_dim, intermediate_dim=intermediate_dim, dropout=dropout,
                 max_sequence_length=max_sequence_length)
    config = dataclasses.replace(config or BartConfig(),
                                 **{k: v for k, v in named.items() if v is not None})
    self.config = config
    self.dtype = layers.as_dtype(dtype)
    c = config
    self.embed_scale = math.sqrt(c.hidden_dim) if c.scale_embedding else 1.0
    positions = c.max_sequence_length + POSITION_OFFSET
    with self.name_scope:
      self.token_embedding = layers.Embedding(c.vocabulary_size, c.hidden_dim, dtype=dtype,
                                              name="token_embedding")
      self.encoder_position_embedding = layers.Embedding(positions, c.hidden_dim, dtype=dtype,
                                                         name="encoder_position_embedding")
      self.decoder_position_embedding = layers.Embedding(positions, c.hidden_dim, dtype=dtype,
                                                         name="decoder_position_embedding")
      self.encoder_embeddings_layer_norm = layers.LayerNorm(
          c.hidden_dim, epsilon=c.layer_norm_epsilon, dtype=dtype,
          name="encoder_embeddings_layer_norm")
      self.decoder_embeddings_layer_norm = layers.LayerNorm(
          c.hidden_dim, epsilon=c.layer_norm_epsilon, dtype=dtype,
          name="decoder_embeddings_layer_norm")
      self.encoder_layers = [
          layers.TransformerEncoderLayer(c.hidden_dim, c.num_heads, c.intermediate_dim,
                                         dropout=c.dropout, activation_name=c.activation,
                                         layer_norm_epsilon=c.layer_norm_epsilon, dtype=dtype,
                                         name=f"encoder_layer_{i}")
          for i in range(c.num_layers)]
      self.decoder_layers = [DecoderLayer(c, dtype=dtype, name=f"decoder_layer_{i}")
                             for i in range(c.decoder_layers)]
      self.final_logits_bias = tf.Variable(tf.zeros([c.vocabulary_size], self.dtype),
                                           name="final_logits_bias")

  def _embed(self, token_ids, positions, position_embedding, layer_norm, training):
    x = self.token_embedding(token_ids) * tf.cast(self.embed_scale, self.dtype)
    x = x + position_embedding(positions + POSITION_OFFSET)
    return layers.dropout(layer_norm(x), self.config.dropout, training)

  def encode(self, token_ids, padding_mask, training: bool = False) -> tf.Tensor:
    """int32 [B, S] ids and mask -> encoder output [B, S, D]."""
    token_ids = tf.cast(token_ids, tf.int32)
    positions = tf.range(tf.shape(token_ids)[1])[None, :]
    x = self._embed(token_ids, positions, self.encoder_position_embedding,
                    self.encoder_embeddings_layer_norm, training)
    for layer in self.encoder_layers:
      x = layer(x, padding_mask, training=training)
    return x

  def decode(self, decoder_token_ids, decoder_padding_mask, encoder_output,
             encoder_padding_mask, training: bool = False) -> tf.Tensor:
    """Full decoder pass with a causal mask: -> [B, T, D]."""
    token_ids = tf.cast(decoder_token_ids, tf.int32)
    length = tf.shape(token_ids)[1]
    positions = tf.range(length)[None, :]
    x = self._embed(token_ids, positions, self.decoder_position_embedding,
                    self.decoder_embeddings_layer_norm, training)
    causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)[None]   # [1, T, T]
    self_mask = causal & tf.cast(decoder_padding_mask, tf.bool)[:, None, :]
    cross_mask = tf.cast(encoder_padding_mask, tf.bool)[:, None, :]
    for layer in self.decoder_layers:
      cross_kv = layer.cross_attention.project_key_value(encoder_output)
      x = layer(x, self_mask, cross_kv, cross_mask, training=training)
    return x

  def logits(self, hidden: tf.Tensor) -> tf.Tensor:
    """Tied LM head plus final_logits_bias: [..., D] -> float32 [..., V]."""
    return tf.cast(self.token_embedding.attend(hidden) + self.final_logits_bias, tf.float32)

  def __call__(self, inputs: dict, training: bool = False) -> dict:
    """keras-hub's inputs (encoder_token_ids, encoder_padding_mask, decoder_token_ids,
    decoder_padding_mask) -> {"encoder_sequence_output", "decoder_sequence_output"}."""
    encoded = self.encode(inputs["encoder_token_ids"], inputs["encoder_padding_mask"], training)
    decoded = self.decode(inputs["decoder_token_ids"], inputs["decoder_padding_mask"], encoded,
                          inputs["encoder_padding_mask"], training)
    return {"encoder_sequence_output": encoded, "decoder_sequence_output": decoded}

  # Cached decoding.
  def init_decoder_state(self, encoder_output, encoder_padding_mask, max_length: int):
    """Cross-attention keys/values (once per request) and empty self-attention caches."""
    batch = tf.shape(encoder_output)[0]
    return DecoderState(
        self_caches=tuple(layer.self_attention.init_cache(batch, max_length)
                          for layer in self.decoder_layers),
        cross_kv=tuple(layer.cross_attention.project_key_value(encoder_output)
                       for layer in self.decoder_layers),
        cross_mask=tf.cast(encoder_padding_mask, tf.bool)[:, None, :])

  def decode_step(self, token_ids, index, state: DecoderState):
    """One step: token_ids int32 [B] at position `index` -> (logits float32 [B, V], state)."""
    logits, _, state = self.decode_step_with_hidden(token_ids, index, state)
    return logits, state

  def decode_step_with_hidden(self, token_ids, index, state: DecoderState):
    """As decode_step, also returning the decoder output float32 [B, D]."""
    x = self._embed(token_ids[:, None], tf.reshape(index, [1, 1]),
                    self.decoder_position_embedding, self.decoder_embeddings_layer_norm, False)
    max_length = tf.shape(state.self_caches[0].key)[1]
    visible = (tf.range(max_length) <= index)[None, None, :]                       # [1, 1, T]
    caches = []
    for layer, cache, cross_kv in zip(self.decoder_layers, state.self_caches, state.cross_kv):
      x, cache = layer.call_cached(x, cache, index, visible, cross_kv, state.cross_mask)
      caches.append(cache)
    hidden = x[:, 0]
    return (self.logits(hidden), tf.cast(hidden, tf.float32),
            state._replace(self_caches=tuple(caches)))


__all__ = ["BartConfig", "GenerationConfig", "BartBackbone", "DecoderLayer", "DecoderState",
           "PRESETS", "PRESET_HANDLES"]
