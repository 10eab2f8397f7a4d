"""BART: config, presets, encoder, decoder with a fixed-size cache, LM head, and
the text-in, text-out generation task (keras-hub's `Seq2SeqLM` API without Keras).

Numerically matches Hugging Face `BartModel` / `BartForConditionalGeneration`.
Einsum legend: B batch, S encoder length, T decoder length, D hidden, N heads,
H head size, V vocabulary.

  model = BartSeq2SeqLM.from_preset("path/to/bart")
  model.compile(sampler="greedy")          # or "top_k", Sampler(name="top_p", p=0.9), ...
  model.generate(["The tower is 324 metres tall..."], max_length=60)
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import NamedTuple
from collections.abc import Sequence

import tensorflow as tf

from tfhub_models import generation, layers, tasks, training
from tfhub_models.checkpoints import bart as files
from tfhub_models.checkpoints import loader
from tfhub_models.generation import GenerationConfig
from tfhub_models.preprocessing import BartPreprocessor
from tfhub_models.tokenizers import ByteLevelBPETokenizer
from tfhub_models.tokenizers import demo as demo_vocabularies

POSITION_OFFSET = files.POSITION_OFFSET   # upstream's learned positions start at row 2


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
  generation: GenerationConfig = GenerationConfig()

  @property
  def decoder_layers(self) -> int:
    return self.num_decoder_layers or self.num_layers


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


class DecoderLayer(layers.Module):
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
  """What the decoder carries between steps (a value: while_loop state).

  Implements `generation.DecoderState` (repeat, reorder, select).
  """
  self_caches: tuple          # per layer KVCache of [B, T_max, N, H]
  cross_kv: tuple             # per layer KVCache of [B, S, N, H], computed once
  cross_mask: tf.Tensor       # bool [B, 1, S]

  def repeat(self, n: int) -> DecoderState:
    """Each row n times (row b*n + j is copy j of row b)."""
    return tf.nest.map_structure(lambda x: tf.repeat(x, n, axis=0), self)

  def reorder(self, rows: tf.Tensor) -> DecoderState:
    """The self-attention caches of rows [N]; the encoder's part is shared by the
    rows of one input (beams), so it stays."""
    return self._replace(self_caches=tf.nest.map_structure(lambda c: tf.gather(c, rows),
                                                           self.self_caches))

  def select(self, rows: tf.Tensor) -> DecoderState:
    """Everything of rows [N]."""
    return tf.nest.map_structure(lambda x: tf.gather(x, rows), self)


class BartBackbone(tasks.Backbone):
  """Shared embeddings, encoder, decoder, and the tied LM head with its bias."""

  config_class = BartConfig
  presets = PRESETS

  def __init__(self, config: BartConfig | None = None, *, vocabulary_size: int | None = None,
               num_layers: int | None = None, num_heads: int | None = None,
               hidden_dim: int | None = None, intermediate_dim: int | None = None,
               dropout: float | None = None, max_sequence_length: int | None = None,
               dtype="float32", name: str = "backbone"):
    """Takes a config, or keras-hub's argument names (unset ones keep the config's)."""
    super().__init__(config, dict(
        vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
        hidden_dim=hidden_dim, intermediate_dim=intermediate_dim, dropout=dropout,
        max_sequence_length=max_sequence_length), dtype=dtype, name=name)
    c = self.config
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
      # A buffer upstream, not a parameter: training leaves it as loaded.
      self.final_logits_bias = tf.Variable(tf.zeros([c.vocabulary_size], self.dtype),
                                           trainable=False, name="final_logits_bias")

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
    """One step at position `index`: token_ids int32 [B] -> (logits float32 [B, V],
    decoder output float32 [B, D], the state with this step's keys and values)."""
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


PREPROCESSED_INPUTS = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
                       "decoder_padding_mask")


class _FunctionCache:
  """`generate`'s compiled functions, kept out of tf.Module tracking so that a task
  that has generated can still be saved (tf.saved_model cannot save a dict with
  tuple keys)."""

  def __init__(self):
    self.functions = {}


class BartSeq2SeqLM(tasks.Task, training.Trainable):
  """Backbone + preprocessor + a compiled generate function."""

  task = "generate"
  presets = PRESETS
  default_learning_rate = 2e-5   # upstream's Seq2SeqLM default
  exact_vocabulary = False       # the tokenizer may have fewer ids than the embedding rows

  def __init__(self, backbone: BartBackbone, preprocessor: BartPreprocessor, *,
               name: str = "bart_seq2seq_lm"):
    super().__init__(backbone, preprocessor, name=name)
    self.sampler = generation.Sampler(name="top_k")   # keras-hub's default; see compile()
    self.jit_compile = True
    self._compiled = _FunctionCache()

  def compile(self, optimizer="auto", loss="auto", metrics="auto", jit_compile: bool = True, *,
              sampler="top_k") -> None:
    """Sets up training (see training.Trainable.compile) and generation's sampler
    (a name, dict or generation.Sampler); jit_compile applies to both."""
    if isinstance(optimizer, (generation.Sampler, dict)) or (
        isinstance(optimizer, str) and optimizer in generation.SAMPLERS):
      raise ValueError(f"compile's first argument is the optimizer; pass the sampler as "
                       f"compile(sampler={optimizer!r})")
    training.Trainable.compile(self, optimizer, loss, metrics, jit_compile)
    self.sampler = generation.get_sampler(sampler)
    self.jit_compile = jit_compile
    self._compiled = _FunctionCache()

  def prepare(self, x, y=None, sample_weight=None, mode: str = "fit"):
    """Training inputs of one batch (see tfhub_models.training).

    Raw: {"encoder_text": string [B], "decoder_text": string [B]} (see
    BartPreprocessor.text_pairs).  Preprocessed: {"encoder_token_ids",
    "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask"}, y int
    [B, T] (the next token at each decoder position), sample_weight [B, T]
    (default: decoder_padding_mask).

    Returns:
      (inputs, labels int32 [B, T], weights float32 [B, T]).
    """
    vocabulary = self.backbone.config.vocabulary_size
    if not isinstance(x, dict):
      raise training.TrainingError(
          "BartSeq2SeqLM trains on {\"encoder_text\", \"decoder_text\"} or on preprocessed "
          "{\"encoder_token_ids\", \"encoder_padding_mask\", \"decoder_token_ids\", "
          "\"decoder_padding_mask\"}; generate() takes plain strings")
    if "encoder_text" in x or "decoder_text" in x:
      tasks.require_preprocessor(self, "raw text")
      if "encoder_text" not in x or "decoder_text" not in x:
        raise training.TrainingError("raw seq2seq inputs need both encoder_text and decoder_text")
      if y is not None or sample_weight is not None:
        raise training.TrainingError("raw text pairs carry their own targets: pass no y or "
                                     "sample_weight")
      return self.preprocessor.text_pairs(
          x["encoder_text"], x["decoder_text"],
          self.backbone.config.generation.decoder_start_token_id)
    missing = [k for k in PREPROCESSED_INPUTS if k not in x]
    if missing:
      raise training.TrainingError(f"preprocessed seq2seq inputs need {', '.join(missing)} (got "
                                   f"{', '.join(sorted(x))})")
    inputs = {k: tf.cast(x[k], tf.int32) for k in PREPROCESSED_INPUTS}
    if mode == "predict" or y is None:
      return inputs, None if y is None else tf.cast(y, tf.int32), sample_weight
    labels = tf.cast(y, tf.int32)
    weights = tf.cast(inputs["decoder_padding_mask"] if sample_weight is None else sample_weight,
                      tf.float32)
    checks = [tf.debugging.assert_equal(tf.shape(labels), tf.shape(inputs["decoder_token_ids"]),
                                        message="y must have the shape of decoder_token_ids "
                                                "[B, T]"),
              tf.debugging.assert_equal(tf.shape(weights), tf.shape(labels),
                                        message="sample_weight must have the shape of y [B, T]"),
              training.check_labels(labels, weights, vocabulary, "vocabulary")]
    with tf.control_dependencies(checks):
      return inputs, tf.identity(labels), tf.identity(weights)

  def __call__(self, inputs: dict, training: bool = False) -> tf.Tensor:
    """Teacher-forced logits float32 [B, T, V] of the preprocessed inputs."""
    decoded = self.backbone(inputs, training=training)["decoder_sequence_output"]
    return self.backbone.logits(decoded)

  def check_max_length(self, max_length: int) -> None:
    """Decoder positions end at max_sequence_length (XLA would clamp silently)."""
    limit = self.backbone.config.max_sequence_length
    if not 2 <= max_length <= limit:
      raise ValueError(f"max_length {max_length} (the decoder start token included) must be in "
                       f"2..{limit}, the model's positions")

  def generate_ids(self, token_ids, padding_mask, max_length: int, seed=0,
                   stop_token_ids: Sequence[int] | None = None,
                   settings: generation.RowSettings | None = None,
                   limits: generation.Limits | None = None):
    """The numeric core (compile it with XLA): encoder ids -> decoder ids.

    Args:
      token_ids, padding_mask: int32 [B, S].
      max_length: ids out, the decoder start token included (a Python int).
      seed: int64 [B], each row's seed, or one for every row (when `settings` is
        None; the samplers that draw use it).
      stop_token_ids: ids that end a row (None: the end-of-sequence ids).
      settings: each row's settings (default: the config's and the sampler's, all
        rows max_length ids long).
      limits: what the loop can do for `settings` (default: what the default
        settings need); its max_length is max_length.

    Returns:
      (generated_ids int32 [B·R, max_length], scores float32 [B·R]); R is
      num_return_sequences for beam search, else 1.
    """
    config = self.backbone.config.generation
    stops = config.eos_token_ids if stop_token_ids is None else list(stop_token_ids)
    batch = tf.shape(token_ids)[0]
    if settings is None:
      settings = generation.default_settings(config, self.sampler, batch, max_length, seed)
    limits = limits or generation.Limits.of(config, self.sampler, max_length)
    if limits.max_length != max_length:
      raise ValueError(f"limits.max_length {limits.max_length} is not max_length {max_length}")
    encoded = self.backbone.encode(token_ids, padding_mask)
    state = self.backbone.init_decoder_state(encoded, padding_mask, max_length)
    start = tf.fill([batch], config.decoder_start_token_id)
    return generation.decode(self.backbone.decode_step, state, start, self.sampler, config,
                             settings, limits, stops)

  def _function(self, max_length: int, stop_token_ids):
    self.check_max_length(max_length)
    key = (max_length, tuple(stop_token_ids) if stop_token_ids is not None else None)
    if key not in self._compiled.functions:
      self._compiled.functions[key] = tf.function(
          lambda ids, mask, seed: self.generate_ids(ids, mask, max_length, seed, stop_token_ids),
          jit_compile=self.jit_compile, autograph=False)
    return self._compiled.functions[key]

  def generate(self, inputs, max_length: int | None = None, stop_token_ids="auto", seed=None):
    """Generates text for a string, a list of strings, a string tensor [B], a
    tf.data.Dataset of those, or keras-hub's dicts.

    Args:
      inputs: the texts (a Dataset is generated batch by batch, results
        concatenated); {"encoder_text": texts} as keras-hub takes them; or
        preprocessed {"encoder_token_ids", "encoder_padding_mask": int [B, S]}
        (a task built with preprocessor=None takes only these).
      max_length: decoder ids, the start token included (default: the config's).
      stop_token_ids: "auto" (end of sequence), None (run to max_length) or ids.
      seed: None (the samplers that draw sample differently on each call) or an
        int (every row drawn from that seed: reproducible).

    Returns:
      A string for a string, a list of strings for a list, else a string tensor
      [B]; for preprocessed inputs {"decoder_token_ids": int32 [B·R, max_length]
      (the start token first, padding after the end), "decoder_padding_mask"}.
    """
    if isinstance(inputs, dict):
      return self._generate_dict(inputs, max_length, stop_token_ids, seed)
    if isinstance(inputs, str):
      return self.generate([inputs], max_length, stop_token_ids, seed)[0]
    if isinstance(inputs, tf.data.Dataset):
      parts = [self.generate(batch, max_length, stop_token_ids, seed) for batch in inputs]
      return tf.concat(parts, axis=0) if parts else tf.constant([], tf.string)
    tasks.require_preprocessor(self, "generate on text")
    as_list = isinstance(inputs, (list, tuple))
    text = tf.constant(list(inputs), tf.string) if as_list else tf.convert_to_tensor(inputs)
    encoded = self.preprocessor(text)
    ids = self._generate_ids(encoded["token_ids"], encoded["padding_mask"], max_length,
                             stop_token_ids, seed)
    out = self.tokenizer.detokenize(ids)
    return [t.decode("utf-8") for t in out.numpy()] if as_list else out

  def _generate_ids(self, token_ids, padding_mask, max_length, stop_token_ids, seed):
    stops = (None if stop_token_ids == "auto" else (list(stop_token_ids or [])))
    length = max_length or self.backbone.config.generation.max_length
    rows = tf.shape(token_ids)[:1]
    if seed is None:     # 0 in every row: fresh ones
      seeds = generation.row_seeds(tf.zeros(rows, tf.int64))
    else:
      seeds = tf.fill(rows, tf.constant(generation.seed_int(seed), tf.int64))
    ids, _ = self._function(length, None if stops is None else tuple(stops))(
        tf.cast(token_ids, tf.int32), tf.cast(padding_mask, tf.int32), seeds)
    return ids

  def _generate_dict(self, inputs: dict, max_length, stop_token_ids, seed):
    """keras-hub's dict forms of generate's inputs."""
    keys = set(inputs)
    if "decoder_text" in keys or "decoder_token_ids" in keys:
      raise ValueError("generate takes no decoder prompt (decoder_text / decoder_token_ids): "
                       "decoding starts from the decoder start token")
    if keys == {"encoder_text"}:
      return self.generate(inputs["encoder_text"], max_length, stop_token_ids, seed)
    if keys == {"encoder_token_ids", "encoder_padding_mask"}:
      ids = self._generate_ids(inputs["encoder_token_ids"], inputs["encoder_padding_mask"],
                               max_length, stop_token_ids, seed)
      stops = (self.backbone.config.generation.eos_token_ids if stop_token_ids == "auto"
               else list(stop_token_ids or []))
      # Real up to a row's first stop token (after the start token), padding after it.
      is_stop = tf.reduce_any(ids[:, 1:, None] == tf.constant(stops or [-1], tf.int32), axis=-1)
      ended = tf.cumsum(tf.cast(is_stop, tf.int32), axis=1, exclusive=True) > 0    # [B, T-1]
      mask = tf.concat([tf.ones_like(ids[:, :1]), tf.cast(~ended, tf.int32)], axis=1)
      return {"decoder_token_ids": ids, "decoder_padding_mask": mask}
    raise ValueError(f"generate takes {{\"encoder_text\"}} or {{\"encoder_token_ids\", "
                     f"\"encoder_padding_mask\"}}, not {{{', '.join(sorted(map(repr, keys)))}}}")

def build(config: BartConfig, tokenizer: ByteLevelBPETokenizer, task: str = "generate", *,
          dtype="float32", sequence_length: int | None = None, **options):
  """The module of `task` (generate, backbone) with random weights."""
  preprocessor = (None if tokenizer is None else   # None: a task on token ids
                  BartPreprocessor(tokenizer, sequence_length or config.max_sequence_length))
  return tasks.build(FAMILY, BartBackbone(config, dtype=dtype), preprocessor, task, **options)


def _config(checkpoint) -> BartConfig:
  fields = files.config_fields(checkpoint)
  return BartConfig(**dict(fields, generation=GenerationConfig.from_dict(fields["generation"])))


def _tokenizer_beside(path: str) -> ByteLevelBPETokenizer:
  """The tokenizer of the vocab.json and merges.txt in the folder of `path`."""
  folder = os.path.dirname(os.path.abspath(path))
  return ByteLevelBPETokenizer.from_files(os.path.join(folder, "vocab.json"),
                                          os.path.join(folder, "merges.txt"))


FAMILY = loader.Family(
    name="BART", hf_model_types=("bart",), keras_hub_classes=("BartBackbone",), tasks=files.TASKS,
    config=_config, tokenizer=files.tokenizer, task=files.task, build=build, assign=files.assign,
    save=files.hf_files,
    demo_tokenizer=lambda: ByteLevelBPETokenizer(*demo_vocabularies.demo_bpe_vocabulary()),
    tokenizer_from_file=_tokenizer_beside, backbone_class=BartBackbone,
    task_classes={"generate": BartSeq2SeqLM},
    handles=PRESET_HANDLES, presets=PRESETS)

__all__ = ["BartConfig", "BartBackbone", "BartSeq2SeqLM", "DecoderLayer", "DecoderState",
           "PRESETS", "PRESET_HANDLES", "FAMILY", "build"]
