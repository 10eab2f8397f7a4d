"""BART as a text-in, text-out task: keras-hub's `Seq2SeqLM` API without Keras.

  model = BartSeq2SeqLM.from_preset("path/to/bart")
  model.compile(sampler="greedy")          # or "top_k", Sampler(name="top_p", p=0.9), ...
  model.generate(["The tower is 324 metres tall..."], max_length=60)
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tfhub_models import generation
from tfhub_models.models.bart import BartBackbone, BartConfig
from tfhub_models.tokenizers import BartPreprocessor, ByteLevelBPETokenizer


class _FunctionCache:
  """`generate`'s compiled functions, kept out of tf.Module tracking so that a task
  that has generated can still be saved (tf.saved_model cannot save a dict with
  tuple keys)."""

  def __init__(self):
    self.functions = {}


class BartSeq2SeqLM(tf.Module):
  """Backbone + preprocessor + a compiled generate function."""

  def __init__(self, backbone: BartBackbone, preprocessor: BartPreprocessor, *,
               name: str = "bart_seq2seq_lm"):
    super().__init__(name=name)
    if preprocessor.sequence_length > backbone.config.max_sequence_length:
      raise ValueError(f"sequence_length {preprocessor.sequence_length} exceeds the model's "
                       f"max_sequence_length {backbone.config.max_sequence_length}")
    self.backbone = backbone
    self.preprocessor = preprocessor
    self.sampler = generation.Sampler(name="top_k")   # keras-hub's default; see compile()
    self.jit_compile = True
    self._compiled = _FunctionCache()

  @classmethod
  def build(cls, config: BartConfig, tokenizer: ByteLevelBPETokenizer, *, dtype="float32",
            sequence_length: int | None = None) -> "BartSeq2SeqLM":
    """Random weights for `config`."""
    length = min(sequence_length or config.max_sequence_length, config.max_sequence_length)
    return cls(BartBackbone(config, dtype=dtype), BartPreprocessor(tokenizer, length))

  @classmethod
  def from_preset(cls, preset: str, *, load_weights: bool = True, dtype="float32",
                  sequence_length: int | None = None) -> "BartSeq2SeqLM":
    from tfhub_models import checkpoints
    return checkpoints.load(preset, dtype=dtype, sequence_length=sequence_length,
                            load_weights=load_weights)

  @property
  def tokenizer(self) -> ByteLevelBPETokenizer:
    return self.preprocessor.tokenizer

  def compile(self, sampler="top_k", *, jit_compile: bool = True) -> None:
    """Chooses the sampler (a name, dict or generation.Sampler) and XLA or not."""
    self.sampler = generation.get_sampler(sampler)
    self.jit_compile = jit_compile
    self._compiled = _FunctionCache()

  def check_max_length(self, max_length: int) -> None:
    """Decoder positions end at max_sequence_length (XLA would clamp silently)."""
    limit = self.backbone.config.max_sequence_length
    if not 2 <= max_length <= limit:
      raise ValueError(f"max_length {max_length} (the decoder start token included) must be in "
                       f"2..{limit}, the model's positions")

  def processors(self, stop_token_ids=None) -> generation.Processors:
    g = self.backbone.config.generation
    return generation.Processors(
        min_length=g.min_length, no_repeat_ngram_size=g.no_repeat_ngram_size,
        repetition_penalty=g.repetition_penalty, forced_bos_token_id=g.forced_bos_token_id,
        forced_eos_token_id=g.forced_eos_token_id, eos_token_id=self.backbone.config.eos_token_id)

  def generate_ids(self, token_ids, padding_mask, max_length: int, seed=(0, 0),
                   stop_token_ids: Sequence[int] | None = None):
    """The numeric core (compile it with XLA): encoder ids -> decoder ids.

    Args:
      token_ids, padding_mask: int32 [B, S].
      max_length: ids out, the decoder start token included (a Python int).
      seed: int32 [2].

    Returns:
      (generated_ids int32 [B, max_length], scores float32 [B]).
    """
    config = self.backbone.config
    stops = [config.eos_token_id] if stop_token_ids is None else list(stop_token_ids)
    encoded = self.backbone.encode(token_ids, padding_mask)
    start = tf.fill([tf.shape(token_ids)[0]], config.generation.decoder_start_token_id)
    if self.sampler.name == "beam":
      beams = self.sampler.num_beams
      state = self.backbone.init_decoder_state(tf.repeat(encoded, beams, axis=0),
                                               tf.repeat(padding_mask, beams, axis=0), max_length)
      return generation.beam_search(
          self.backbone.decode_step, state, start, max_length, beams, self.processors(), stops,
          config.pad_token_id, config.vocabulary_size, self.sampler.length_penalty,
          self.sampler.early_stopping, self.sampler.num_return_sequences,
          reorder_state=lambda s, rows: s._replace(self_caches=tf.nest.map_structure(
              lambda c: tf.gather(c, rows), s.self_caches)))
    state = self.backbone.init_decoder_state(encoded, padding_mask, max_length)
    if self.sampler.name == "contrastive":
      k = min(self.sampler.k or 5, config.vocabulary_size)
      return generation.contrastive_search(
          self.backbone.decode_step_with_hidden, state, start, max_length, k,
          self.sampler.alpha, self.processors(), stops, config.pad_token_id, config.hidden_dim,
          tile_state=lambda s, n: s._replace(
              self_caches=tf.nest.map_structure(lambda c: tf.repeat(c, n, axis=0), s.self_caches),
              cross_kv=tf.nest.map_structure(lambda c: tf.repeat(c, n, axis=0), s.cross_kv),
              cross_mask=tf.repeat(s.cross_mask, n, axis=0)),
          select_state=lambda s, rows: tf.nest.map_structure(lambda c: tf.gather(c, rows), s))
    return generation.sample_loop(
        self.backbone.decode_step, state, start, max_length,
        self.sampler.function(config.vocabulary_size), self.processors(),
        tf.cast(tf.convert_to_tensor(seed), tf.int32), stops, config.pad_token_id)

  def _function(self, max_length: int, stop_token_ids):
    self.check_max_length(max_length)
    key = (max_length, tuple(stop_token_ids) if stop_token_ids is not None else None)
    if key not in self._compiled.functions:
      self._compiled.functions[key] = tf.function(
          lambda ids, mask, seed: self.generate_ids(ids, mask, max_length, seed, stop_token_ids),
          jit_compile=self.jit_compile, autograph=False)
    return self._compiled.functions[key]

  def generate(self, inputs, max_length: int | None = None, stop_token_ids="auto",
               seed: Sequence[int] = (0, 0)):
    """Generates text for a list of strings, a string tensor [B] or a tf.data.Dataset.

    Args:
      inputs: the texts (a Dataset is generated batch by batch, results concatenated).
      max_length: decoder ids, the start token included (default: the config's).
      stop_token_ids: "auto" (end of sequence), None (run to max_length) or ids.

    Returns:
      A list of strings for a list input, else a string tensor [B].
    """
    if isinstance(inputs, tf.data.Dataset):
      parts = [self.generate(batch, max_length, stop_token_ids, seed) for batch in inputs]
      return tf.concat(parts, axis=0) if parts else tf.constant([], tf.string)
    as_list = isinstance(inputs, (list, tuple))
    text = tf.constant(list(inputs), tf.string) if as_list else tf.convert_to_tensor(inputs)
    stops = (None if stop_token_ids == "auto" else (list(stop_token_ids or [])))
    length = max_length or self.backbone.config.generation.max_length
    encoded = self.preprocessor(text)
    ids, _ = self._function(length, None if stops is None else tuple(stops))(
        encoded["token_ids"], encoded["padding_mask"], tf.constant(seed, tf.int32))
    out = self.tokenizer.detokenize(ids)
    return [t.decode("utf-8") for t in out.numpy()] if as_list else out


__all__ = ["BartSeq2SeqLM"]
