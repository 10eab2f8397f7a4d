"""A model's `GenerationConfig`, each row's `RowSettings` and the `Limits` of
what a compiled loop can do for them; the processors and warpers applied with
them."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import tensorflow as tf

from tfhub_models.generation.processors import force_token, no_repeat_ngram, repetition_penalty
from tfhub_models.generation.samplers import (NEG_INF, Sampler, keep_top_k, keep_top_p,
                                              scale)


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  """A model's generation settings, by the names of a `generation_config.json`.

  The lengths, the token ids and the logit processors (min_length,
  no_repeat_ngram_size, repetition_penalty, forced BOS/EOS) are read from here
  while decoding; the sampling fields (do_sample, num_beams, top_k, ...) only
  choose the default `Sampler` (see `sampler()`); `compile(sampler=...)`
  replaces that choice.
  """
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
  eos_token_id: int | tuple = 2         # one id, or several (any of them ends a row)
  pad_token_id: int = 1
  do_sample: bool = False
  top_k: int = 50
  top_p: float = 1.0
  temperature: float = 1.0
  num_return_sequences: int = 1

  @classmethod
  def from_dict(cls, settings: dict) -> GenerationConfig:
    """From the keys of a `generation_config.json` (others are ignored)."""
    known = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in settings.items() if k in known and v is not None}
    # Upstream's early_stopping is True, False (a heuristic) or "never".
    early = values.get("early_stopping", False)
    values["early_stopping"] = "never" if early == "never" else early is True
    if isinstance(values.get("eos_token_id"), (list, tuple)):
      values["eos_token_id"] = tuple(int(i) for i in values["eos_token_id"])
    return cls(**values)

  @property
  def eos_token_ids(self) -> tuple:
    """The ids that end a row (and that min_length holds back)."""
    eos = self.eos_token_id
    return tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)

  def sampler(self) -> Sampler:
    """The sampler these settings describe (upstream's choice rules)."""
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


def choose_sampler(config: GenerationConfig, name: str | None = None, **settings) -> Sampler:
  """The sampler of `config`, with a name and Sampler fields given explicitly taking
  precedence (None values are ignored); more than one beam means beam search."""
  settings = {k: v for k, v in settings.items() if v is not None}
  base = config.sampler()
  if name is None:
    name = "beam" if settings.get("num_beams", 1) > 1 else base.name
  return dataclasses.replace(base, name=name, **settings)


# ---------------------------------------------------------------------------
# Per-row settings and what the compiled loop can do for them.

class RowSettings(NamedTuple):
  """Each row's settings, tensors [B] (a value: while_loop state).

  max_length int32: the row's ids, its decoder start token included (upstream's
    max_length; max_new_tokens + 1); the row ends there, its last id forced to
    forced_eos_token_id when the config has one.
  min_length int32: no end id before this many ids (upstream's min_length;
    min_new_tokens + 1, the forced BOS counted); 0 or 1: none.
  repetition_penalty float32 (1: none); no_repeat_ngram_size int32 (0: none).
  temperature, top_p float32 (1: none), top_k int32 (0: none): the warpers of the
    samplers that draw.
  seed int64: the row's random stream (`draw_rows`).
  """
  max_length: tf.Tensor
  min_length: tf.Tensor
  repetition_penalty: tf.Tensor
  no_repeat_ngram_size: tf.Tensor
  temperature: tf.Tensor
  top_k: tf.Tensor
  top_p: tf.Tensor
  seed: tf.Tensor

  def repeat(self, n: int) -> RowSettings:
    """Each row n times (row b*n + j is copy j of row b: beams, candidates)."""
    return RowSettings(*(tf.repeat(x, n, axis=0) for x in self))


SETTING_DTYPES = RowSettings(tf.int32, tf.int32, tf.float32, tf.int32, tf.float32, tf.int32,
                             tf.float32, tf.int64)


def default_settings(config: GenerationConfig, sampler: Sampler, batch, max_length: int,
                     seed=0) -> RowSettings:
  """Every row with the config's and the sampler's settings, max_length ids long;
  seed: int64 [B] or one for every row."""
  values = RowSettings(max_length, config.min_length, config.repetition_penalty,
                       config.no_repeat_ngram_size, sampler.temperature, sampler.default_top_k,
                       sampler.default_top_p, 0)
  rows = RowSettings(*(tf.fill([batch], tf.constant(v, d)) for v, d in zip(values,
                                                                             SETTING_DTYPES)))
  return rows._replace(seed=tf.broadcast_to(tf.cast(seed, tf.int64), [batch]))


@dataclasses.dataclass(frozen=True)
class Limits:
  """What the compiled loop can do for its rows: fixed at compile time, since these
  choose shapes and which processors are in the graph.

  max_length: the id buffer, the longest a row's max_length may be.
  no_repeat_ngram_size: the largest n a row may ban (0: no ban compiled in).
  repetition_penalty: whether the penalty is compiled in.
  top_k: the largest k a row may ask for (0: no top-k); top_p: whether top-p is.
  """
  max_length: int
  no_repeat_ngram_size: int = 0
  repetition_penalty: bool = False
  top_k: int = 0
  top_p: bool = False

  @classmethod
  def of(cls, config: GenerationConfig, sampler: Sampler, max_length: int) -> Limits:
    """Just what `default_settings` rows need."""
    return cls(max_length, config.no_repeat_ngram_size, config.repetition_penalty != 1.0,
               sampler.default_top_k if sampler.draws else 0,
               sampler.draws and sampler.default_top_p < 1.0)


def process_logits(logits, ids, length, settings: RowSettings, limits: Limits,
                   config: GenerationConfig):
  """The logit processors on logits float32 [B, V] for position `length` (the ids
  so far, decoder start token included; a scalar), given the ids [B, T], in
  upstream's order; each row with its own settings."""
  if limits.repetition_penalty:
    logits = repetition_penalty(logits, ids, length, settings.repetition_penalty)
  if limits.no_repeat_ngram_size > 0:
    logits = no_repeat_ngram(logits, ids, length, settings.no_repeat_ngram_size,
                             limits.no_repeat_ngram_size)
  eos = tf.reduce_any(tf.range(logits.shape[-1])[:, None]
                      == tf.constant(config.eos_token_ids)[None, :], axis=1)        # [V]
  early = length < settings.min_length                                              # [B]
  logits = tf.where(eos[None, :] & early[:, None], NEG_INF, logits)
  if config.forced_bos_token_id is not None:
    logits = force_token(logits, config.forced_bos_token_id, tf.equal(length, 1))
  if config.forced_eos_token_id is not None:
    logits = force_token(logits, config.forced_eos_token_id,
                         tf.equal(length, settings.max_length - 1))
  return logits


def warp(logits, settings: RowSettings, limits: Limits):
  """The sampling warpers (temperature, top-k, top-p, upstream's order), per row."""
  logits = scale(logits, settings.temperature)
  if limits.top_k > 0:
    logits = keep_top_k(logits, settings.top_k, limits.top_k)
  if limits.top_p:
    logits = keep_top_p(logits, settings.top_p)
  return logits


def num_generated(ids: tf.Tensor, stop_token_ids, max_length: tf.Tensor) -> tf.Tensor:
  """int32 [B]: the ids each row generated after its decoder start token, its end id
  included: up to its first stop id, else its max_length - 1.  ids int32 [B, T]."""
  stops = stop_ids(stop_token_ids)
  after_start = tf.reduce_any(ids[:, 1:, None] == stops[None, None, :], axis=-1)   # [B, T-1]
  positions = tf.range(1, tf.shape(ids)[1])[None, :]
  first = tf.reduce_min(tf.where(after_start, positions, tf.shape(ids)[1]), axis=1)
  return tf.minimum(first, max_length - 1)


def stop_ids(stop_token_ids) -> tf.Tensor:
  return tf.constant(list(stop_token_ids) or [-1], tf.int32)
