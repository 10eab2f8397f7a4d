"""Pure sampling functions, logit processors and the decoding loops.  No variables.

Every function takes and returns tensors of static shape, so the whole loop
compiles with XLA.  Shapes: B rows, V vocabulary, T the id buffer length.

Each row carries its own settings (`RowSettings`, tensors [B]: its length
limits, processors, sampling warpers and seed), so that rows of different
requests merged into one batch are each decoded as if alone; `Limits` is what
the compiled loop can do for them (the buffer length, the largest n-gram ban
and top-k, which processors are compiled in).  Randomness is stateless inside
the loop: a row's draw at a step depends only on its seed and the step
(`draw_rows`); `row_seeds` draws fresh seeds, outside compiled code.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import NamedTuple, Protocol

import tensorflow as tf

from tfhub_models.layers import LARGE_NEGATIVE

NEG_INF = float("-inf")   # what upstream's processors use


# ---------------------------------------------------------------------------
# Warpers (upstream's TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper):
# logits float32 [B, V] -> logits, the ids they rule out at -inf.  A setting is a
# Python number for every row or a tensor [B], one per row.

def _rows(value, logits, dtype) -> tf.Tensor:
  """A setting as a column [B, 1] (or a scalar) broadcasting against logits [B, V]."""
  value = tf.cast(value, dtype)
  return value[:, None] if value.shape.rank == 1 else value


def scale(logits: tf.Tensor, temperature) -> tf.Tensor:
  """logits / temperature."""
  return logits / _rows(temperature, logits, logits.dtype)


def keep_top_k(logits: tf.Tensor, k, max_k: int | None = None) -> tf.Tensor:
  """Keeps the k most likely ids of each row and those tied with the k-th (as
  upstream); k <= 0 keeps all.  A per-row k [B] needs max_k, the largest k the
  row may ask for (a row asking more than V keeps all V)."""
  vocabulary = logits.shape[-1]
  largest = min(int(k if max_k is None else max_k), vocabulary)
  values = tf.math.top_k(logits, k=largest).values                            # [B, K]
  k = tf.broadcast_to(tf.cast(k, tf.int32), tf.shape(logits)[:1])              # [B]
  kth = tf.gather(values, tf.clip_by_value(k - 1, 0, largest - 1), batch_dims=1)[:, None]
  return tf.where((logits >= kth) | (k <= 0)[:, None], logits, NEG_INF)


def keep_top_p(logits: tf.Tensor, p) -> tf.Tensor:
  """Keeps the smallest set of most likely ids whose mass reaches p, as upstream:
  ids sorted ascending (stably), those whose cumulative mass stays at or below
  1 - p dropped, the most likely always kept; p = 1 keeps all."""
  order = tf.argsort(logits, axis=-1, direction="ASCENDING", stable=True)       # [B, V]
  ascending = tf.gather(logits, order, batch_dims=1)
  mass = tf.cumsum(tf.nn.softmax(ascending, axis=-1), axis=-1)
  drop = mass <= 1.0 - _rows(p, logits, mass.dtype)
  drop = tf.concat([drop[:, :-1], tf.zeros_like(drop[:, -1:])], axis=-1)       # keep the best
  dropped = tf.scatter_nd(
      tf.stack([tf.repeat(tf.range(tf.shape(order)[0]), tf.shape(order)[1]),
                tf.reshape(order, [-1])], axis=1),
      tf.reshape(drop, [-1]), tf.shape(order))
  return tf.where(dropped, NEG_INF, logits)


# ---------------------------------------------------------------------------
# Samplers: logits float32 [B, V], seed int32 [2] -> ids int32 [B].

def greedy(logits: tf.Tensor, seed: tf.Tensor = None) -> tf.Tensor:
  """The most likely id."""
  del seed
  return tf.argmax(logits, axis=-1, output_type=tf.int32)


def _uniform(shape, seed: tf.Tensor) -> tf.Tensor:
  """Floats in (0, 1) from Philox bits.  The bits are the same compiled with XLA
  or not, but the two turn them into floats differently (and
  tf.random.stateless_categorical draws differently altogether), so the float
  is made here: the top 24 bits, centred in their interval."""
  bits = tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32,
                                     alg="philox")
  return (tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) + 0.5) * (
      1.0 / (1 << 24))


def _categorical(logits: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """An id per row drawn from softmax(logits), the same with or without XLA
  (Gumbel-max: argmax of logits + Gumbel noise)."""
  gumbel = -tf.math.log(-tf.math.log(_uniform(tf.shape(logits), seed)))
  return tf.argmax(tf.cast(logits, tf.float32) + gumbel, axis=-1, output_type=tf.int32)


def random(logits: tf.Tensor, seed: tf.Tensor, temperature: float = 1.0) -> tf.Tensor:
  """An id drawn from softmax(logits / temperature)."""
  return _categorical(scale(logits, temperature), seed)


def top_k(logits: tf.Tensor, seed: tf.Tensor, k: int = 5, temperature: float = 1.0) -> tf.Tensor:
  """An id drawn from the k most likely, renormalised (ids tied with the k-th kept,
  as upstream's TopKLogitsWarper)."""
  return _categorical(keep_top_k(scale(logits, temperature), k), seed)


def top_p(logits: tf.Tensor, seed: tf.Tensor, p: float = 0.9, k: int | None = None,
          temperature: float = 1.0) -> tf.Tensor:
  """An id drawn from the smallest set of most likely ids whose mass reaches p
  (after top-k when k is given), as upstream's TopPLogitsWarper."""
  logits = scale(logits, temperature)
  if k is not None:
    logits = keep_top_k(logits, k)
  return _categorical(keep_top_p(logits, p), seed)


def draw_rows(logits: tf.Tensor, seeds: tf.Tensor, step) -> tf.Tensor:
  """An id drawn from softmax(logits) of each row, from the row's own stream:
  row b's draw depends only on its logits, seeds[b] and `step`, whatever the
  other rows are.  logits float32 [B, V], seeds int64 [B], step int32 -> int32 [B]."""
  pairs = tf.bitcast(tf.cast(seeds, tf.int64), tf.int32)                     # [B, 2]
  step = tf.cast(step, tf.int32)

  def draw(row):
    logits, pair = row
    return _categorical(logits[None], tf.random.experimental.stateless_fold_in(pair, step))[0]

  return tf.map_fn(draw, (logits, pairs), fn_output_signature=tf.int32)


def seed_int(seed) -> int:
  """A seed (an int that fits in 64 bits) as one int64 value."""
  if isinstance(seed, bool) or isinstance(seed, (list, tuple)):
    raise TypeError(f"a seed is an int, not {type(seed).__name__} {seed!r}")
  try:
    seed = operator.index(seed)
  except TypeError:
    raise TypeError(f"a seed is an int, not {type(seed).__name__}") from None
  if not -2**63 <= seed < 2**63:
    raise ValueError(f"seed {seed} does not fit in 64 bits")
  return seed


def row_seeds(seeds: tf.Tensor) -> tf.Tensor:
  """int64 [B]: each row's seed, a fresh random one where `seeds` is 0.  A stateful
  op, seeded by the OS when its kernel is made (whatever the program's global
  seed): run it outside compiled code, once per request."""
  seeds = tf.cast(seeds, tf.int64)
  fresh = tf.raw_ops.RandomUniformInt(shape=tf.shape(seeds), minval=tf.constant(1, tf.int64),
                                      maxval=tf.constant(2**63 - 1, tf.int64), seed=0, seed2=0)
  return tf.where(tf.equal(seeds, 0), fresh, seeds)


@dataclasses.dataclass(frozen=True)
class Sampler:
  """A sampler chosen at compile time: name and its settings.

  greedy; random (temperature); top_k (k, temperature); top_p (p, and k when
  given, temperature); beam (num_beams, length_penalty, early_stopping,
  num_return_sequences); contrastive (k, alpha).
  """
  name: str = "top_k"
  k: int | None = None
  p: float = 0.9
  temperature: float = 1.0
  num_beams: int = 4
  length_penalty: float = 1.0
  early_stopping: bool | str = False     # True, False or "never", as upstream
  num_return_sequences: int = 1
  alpha: float = 0.6

  def __post_init__(self):
    if self.name not in SAMPLERS:
      raise ValueError(f"unknown sampler {self.name!r}; known: {', '.join(SAMPLERS)}")
    if not (math.isfinite(self.temperature) and self.temperature > 0):
      raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
    if not math.isfinite(self.length_penalty):
      raise ValueError(f"length_penalty must be finite, got {self.length_penalty}")
    if self.k is not None and self.k < 1:
      raise ValueError("k must be >= 1")
    if not 0 <= self.alpha <= 1:
      raise ValueError("alpha must be in [0, 1]")
    if self.num_beams < 1 or not 1 <= self.num_return_sequences <= self.num_beams:
      raise ValueError("num_beams must be >= 1 and num_return_sequences in 1..num_beams")
    if not 0 < self.p <= 1:
      raise ValueError("p must be in (0, 1]")

  @property
  def sequences_per_input(self) -> int:
    """Rows generated per input: num_return_sequences for beam search, else 1."""
    return self.num_return_sequences if self.name == "beam" else 1

  @property
  def draws(self) -> bool:
    """Whether it draws at random (random, top_k, top_p): what seeds and the
    temperature, top-k and top-p settings apply to."""
    return self.name in DRAWING

  @property
  def default_top_k(self) -> int:
    """The k its rows use by default (0: no top-k)."""
    if self.name == "top_k":
      return self.k or 5
    return self.k or 0 if self.name == "top_p" else 0

  @property
  def default_top_p(self) -> float:
    return self.p if self.name == "top_p" else 1.0


SAMPLERS = ("greedy", "random", "top_k", "top_p", "beam", "contrastive")
DRAWING = ("random", "top_k", "top_p")


def get_sampler(sampler) -> Sampler:
  """"greedy" | Sampler | dict -> Sampler."""
  if isinstance(sampler, Sampler):
    return sampler
  if isinstance(sampler, str):
    return Sampler(name=sampler)
  if isinstance(sampler, dict):
    return Sampler(**sampler)
  raise TypeError(f"a sampler is a name, a dict or a Sampler, not {type(sampler).__name__}")


# ---------------------------------------------------------------------------
# Logit processors (upstream semantics; `length` counts the ids so far,
# decoder start token included).

def presence(ids: tf.Tensor, length: tf.Tensor, vocabulary_size: int) -> tf.Tensor:
  """bool [B, V]: which ids occur among the first `length` of ids int32 [B, T]."""
  batch, total = tf.shape(ids)[0], tf.shape(ids)[1]
  seen = tf.cast(tf.range(total)[None, :] < length, tf.float32) * tf.ones([batch, 1])
  segments = tf.range(batch)[:, None] * vocabulary_size + ids                  # [B, T]
  hits = tf.math.unsorted_segment_max(tf.reshape(seen, [-1]), tf.reshape(segments, [-1]),
                                      batch * vocabulary_size)
  return tf.reshape(hits > 0, [batch, vocabulary_size])


def repetition_penalty(logits, ids, length, penalty):
  """Divides positive, multiplies negative logits of ids already generated;
  penalty a number or float32 [B] (1: no change)."""
  seen = presence(ids, length, logits.shape[-1])
  penalty = _rows(penalty, logits, logits.dtype)
  penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
  return tf.where(seen, penalised, logits)


def no_repeat_ngram(logits, ids, length, n, max_n: int | None = None):
  """Bans every id that would complete an n-gram already in ids[:, :length].

  n: an int, or int32 [B] (0: no ban for that row) with max_n the largest.
  """
  largest = int(n if max_n is None else max_n)
  total = ids.shape[1] if ids.shape[1] is not None else tf.shape(ids)[1]
  batch = tf.shape(ids)[0]
  n = tf.broadcast_to(tf.cast(n, tf.int32), [batch])[:, None]                 # [B, 1]
  starts = tf.range(total)                                                     # [T]
  offsets = tf.range(max(largest - 1, 0))                                      # [N-1]
  window = tf.gather(ids, tf.clip_by_value(starts[:, None] + offsets[None, :], 0, total - 1),
                     axis=1)                                                   # [B, T, N-1]
  last = tf.gather(ids, tf.clip_by_value(length - (n - 1) + offsets[None, :], 0, total - 1),
                   batch_dims=1)                                               # [B, N-1]
  compared = offsets[None, :] < n - 1                                          # [B, N-1]
  equal = tf.equal(window, last[:, None, :]) | ~compared[:, None, :]
  match = tf.reduce_all(equal, axis=-1)                                        # [B, T]
  match &= (starts[None, :] + n - 1 < length) & (length >= n - 1) & (n > 0)
  following = tf.gather(ids, tf.clip_by_value(starts[None, :] + n - 1, 0, total - 1),
                        batch_dims=1)                                          # [B, T]
  vocabulary = logits.shape[-1]
  segments = tf.range(batch)[:, None] * vocabulary + following
  banned = tf.math.unsorted_segment_max(tf.reshape(tf.cast(match, tf.float32), [-1]),
                                        tf.reshape(segments, [-1]), batch * vocabulary)
  return tf.where(tf.reshape(banned, [batch, vocabulary]) > 0, NEG_INF, logits)


def force_token(logits, token_id: int, when: tf.Tensor):
  """Where `when` (bool, a scalar or [B] per row), only token_id may come next."""
  forced = tf.where(tf.range(logits.shape[-1]) == token_id, 0.0, NEG_INF)[None, :]
  when = when[:, None] if when.shape.rank == 1 else when
  return tf.where(when, tf.broadcast_to(forced, tf.shape(logits)), logits)


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
  stops = _stops(stop_token_ids)
  after_start = tf.reduce_any(ids[:, 1:, None] == stops[None, None, :], axis=-1)   # [B, T-1]
  positions = tf.range(1, tf.shape(ids)[1])[None, :]
  first = tf.reduce_min(tf.where(after_start, positions, tf.shape(ids)[1]), axis=1)
  return tf.minimum(first, max_length - 1)


# ---------------------------------------------------------------------------
# The decoder the loops drive.

class DecoderState(Protocol):
  """What a decoder carries between steps: a nest of tensors (while_loop state)."""

  def repeat(self, n: int) -> DecoderState:
    """Each row repeated n times (row b*n + j is copy j of row b)."""

  def reorder(self, rows: tf.Tensor) -> DecoderState:
    """The rows int32 [N] of the per-step state (beams of one input share the rest)."""

  def select(self, rows: tf.Tensor) -> DecoderState:
    """The whole state of rows int32 [N]."""



# ---------------------------------------------------------------------------
# The loop.

def _stops(stop_token_ids) -> tf.Tensor:
  return tf.constant(list(stop_token_ids) or [-1], tf.int32)


def decode(step, state: DecoderState, start_ids: tf.Tensor, sampler: Sampler,
           config: GenerationConfig, settings: RowSettings, limits: Limits, stop_token_ids):
  """Decodes with `sampler`, the one place a sampler name picks a loop.

  Args:
    step: (token_ids int32 [N], index int32, state) -> (logits float32 [N, V],
      hidden float32 [N, D], state), the decoder's one step at position `index`.
    state: the decoder state of the B rows of start_ids.
    start_ids: int32 [B], the decoder start token of each row.
    sampler: which loop and its fixed settings (beams, contrastive k and alpha).
    config: the token ids (start, pad, forced BOS and EOS, ends).
    settings: each row's lengths, processors, warpers and seed.
    limits: what the compiled loop can do; limits.max_length ids come out.
    stop_token_ids: ids that end a row.

  Returns:
    (ids int32 [B*R, limits.max_length], pad_token_id after a row's end; scores
    float32 [B*R]); R = num_return_sequences for beam search, else 1.
  """
  if sampler.name == "beam":
    return beam_search(step, state.repeat(sampler.num_beams), start_ids, sampler, config,
                       settings, limits, stop_token_ids)
  if sampler.name == "contrastive":
    return contrastive_search(step, state, start_ids, sampler, config, settings, limits,
                              stop_token_ids)
  return sample_loop(step, state, start_ids, sampler, config, settings, limits, stop_token_ids)


def _ends(chosen, stops, index, settings: RowSettings) -> tf.Tensor:
  """bool [B]: rows that end with the id chosen for position index + 1 (an end id,
  or their last position)."""
  return (tf.reduce_any(chosen[:, None] == stops[None, :], axis=1)
          | (index + 2 >= settings.max_length))


def sample_loop(step, state, start_ids: tf.Tensor, sampler: Sampler, config: GenerationConfig,
                settings: RowSettings, limits: Limits, stop_token_ids):
  """Decodes one id per row and step until every row has ended (greedy, random,
  top_k, top_p); arguments as `decode`.

  Returns:
    (ids int32 [B, T], scores float32 [B], the sum of the chosen ids'
    log-probabilities after the processors).
  """
  batch = tf.shape(start_ids)[0]
  pad, total = config.pad_token_id, limits.max_length
  ids = tf.concat([start_ids[:, None], tf.fill([batch, total - 1], pad)], axis=1)
  stops = _stops(stop_token_ids)

  def condition(index, ids, state, finished, scores):
    return (index < total - 1) & ~tf.reduce_all(finished)

  def body(index, ids, state, finished, scores):
    current = tf.gather(ids, index, axis=1)                                    # [B]
    logits, _, state = step(current, index, state)
    logits = process_logits(logits, ids, index + 1, settings, limits, config)
    if sampler.draws:
      chosen = draw_rows(warp(logits, settings, limits), settings.seed, index)
    else:
      chosen = greedy(logits)
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    chosen_log_prob = tf.gather(log_probs, chosen, batch_dims=1)
    chosen = tf.where(finished, pad, chosen)
    scores += tf.where(finished, 0.0, chosen_log_prob)
    write = tf.range(total)[None, :] == index + 1
    ids = tf.where(write, chosen[:, None], ids)
    finished |= _ends(chosen, stops, index, settings)
    return index + 1, ids, state, finished, scores

  _, ids, _, _, scores = tf.while_loop(
      condition, body,
      (tf.constant(0), ids, state, tf.zeros([batch], tf.bool), tf.zeros([batch], tf.float32)),
      maximum_iterations=total - 1)
  return ids, scores


# ---------------------------------------------------------------------------
# Beam search, upstream's vectorized algorithm (transformers' `_beam_search`).

def beam_search(step, state, start_ids: tf.Tensor, sampler: Sampler, config: GenerationConfig,
                settings: RowSettings, limits: Limits, stop_token_ids):
  """Beam search with the upstream's scoring and stopping rules (sampler.num_beams,
  length_penalty, early_stopping, num_return_sequences); arguments as `decode`, but
  `state` holds B*K rows, batch-major (row b*K + k is beam k of input b).  An input
  whose max_length is reached finalizes its beams then (as upstream's last step)
  and takes no part in the later steps.

  Returns:
    (ids int32 [B*R, max_length], scores float32 [B*R]), R = num_return_sequences,
    pad_token_id after each sequence's end; scores are length-penalized sums of
    log-probabilities.
  """
  batch = tf.shape(start_ids)[0]
  static_batch = start_ids.shape[0]
  beams = sampler.num_beams
  max_length = limits.max_length
  row_max = settings.max_length[:, None]                                      # [B, 1]
  beam_settings = settings.repeat(beams)
  length_penalty, early_stopping = sampler.length_penalty, sampler.early_stopping
  stops = _stops(stop_token_ids)
  keep = max(2, 1 + len(list(stop_token_ids))) * beams
  top_beam_mask = tf.range(keep) < beams                                      # [keep]
  running = tf.concat([tf.tile(start_ids[:, None, None], [1, beams, 1]),
                       tf.fill([batch, beams, max_length - 1], config.pad_token_id)], axis=2)
  running_scores = tf.tile(tf.where(tf.range(beams) == 0, 0.0, LARGE_NEGATIVE)[None, :],
                           [batch, 1])
  best = running
  best_scores = tf.fill([batch, beams], LARGE_NEGATIVE)
  finished = tf.zeros([batch, beams], tf.bool)
  improvable = tf.ones([batch, 1], tf.bool)
  hits = tf.zeros([batch, keep], tf.bool)

  def gather_beams(x, indices):
    return tf.gather(x, indices, batch_dims=1)

  stop_when_full = early_stopping is True

  def condition(length, running, running_scores, best, best_scores, finished, improvable, hits,
                state):
    open_beam = ~(tf.reduce_all(finished) & stop_when_full)
    return (tf.reduce_any(improvable) & open_beam & ~tf.reduce_all(hits)
            & (length < max_length))

  def body(length, running, running_scores, best, best_scores, finished, improvable, hits,
           state):
    flat = tf.reshape(running, [batch * beams, max_length])
    logits, _, state = step(tf.gather(flat, length - 1, axis=1), length - 1, state)
    vocabulary_size = logits.shape[-1]
    log_probs = process_logits(tf.nn.log_softmax(logits, axis=-1), flat, length,
                               beam_settings, limits, config)
    log_probs = tf.reshape(log_probs, [batch, beams, vocabulary_size]) + running_scores[..., None]
    top_log_probs, top_indices = tf.math.top_k(tf.reshape(log_probs, [batch, -1]), k=keep)
    source = top_indices // vocabulary_size                                    # [B, keep]
    tokens = top_indices % vocabulary_size
    candidates = gather_beams(running, source)                                 # [B, keep, T]
    at = tf.range(max_length)[None, None, :] == length
    candidates = tf.where(at, tokens[..., None], candidates)
    hits = (length + 1 >= row_max) | tf.reduce_any(
        tokens[..., None] == stops[None, None, :], axis=-1)                    # [B, keep]

    # The best unfinished candidates keep running.
    running_log_probs = top_log_probs + tf.cast(hits, tf.float32) * LARGE_NEGATIVE
    chosen = tf.math.top_k(running_log_probs, k=beams).indices                  # [B, K]
    running = gather_beams(candidates, chosen)
    running_scores = gather_beams(running_log_probs, chosen)
    rows = tf.reshape(gather_beams(source, chosen) + tf.range(batch)[:, None] * beams, [-1])

    # Candidates that just finished compete with the finished ones.
    just_finished = hits & top_beam_mask[None, :]
    penalized = top_log_probs / tf.pow(tf.cast(length, tf.float32), length_penalty)
    full = tf.reduce_all(finished, axis=-1, keepdims=True) & stop_when_full
    for ruled_out in (full, ~improvable, ~just_finished):
      penalized += tf.cast(ruled_out, tf.float32) * LARGE_NEGATIVE
    merged_scores = tf.concat([best_scores, penalized], axis=1)
    top = tf.math.top_k(merged_scores, k=beams).indices
    best = gather_beams(tf.concat([best, candidates], axis=1), top)
    best_scores = gather_beams(merged_scores, top)
    finished = gather_beams(tf.concat([finished, just_finished], axis=1), top)

    reordered = state.reorder(rows)
    state = tf.nest.map_structure(lambda new, old: tf.ensure_shape(new, old.shape), reordered,
                                  state)
    # Keep the static shapes the loop started with.
    running = tf.ensure_shape(running, [static_batch, beams, max_length])
    best = tf.ensure_shape(best, [static_batch, beams, max_length])
    running_scores = tf.ensure_shape(running_scores, [static_batch, beams])
    best_scores = tf.ensure_shape(best_scores, [static_batch, beams])
    finished = tf.ensure_shape(finished, [static_batch, beams])
    hits = tf.ensure_shape(hits, [static_batch, keep])
    length += 1
    # Can a running beam still beat the worst finished one? (upstream's heuristic)
    if early_stopping == "never" and length_penalty > 0.0:
      hypothetical = tf.cast(row_max - 1, tf.float32)   # longer can only score better
    else:
      hypothetical = tf.cast(length - 1, tf.float32)
    best_possible = running_scores[:, :1] / tf.pow(hypothetical, length_penalty)
    worst = tf.where(finished, tf.reduce_min(best_scores, axis=1, keepdims=True),
                     LARGE_NEGATIVE)
    improvable &= tf.reduce_any(best_possible > worst, axis=-1, keepdims=True)
    return length, running, running_scores, best, best_scores, finished, improvable, hits, state

  loop = tf.while_loop(
      condition, body,
      (tf.constant(1), running, running_scores, best, best_scores, finished, improvable, hits,
       state), maximum_iterations=max_length - 1)
  best, best_scores = loop[3], loop[4]
  returns = sampler.num_return_sequences
  ids = tf.reshape(best[:, :returns], [-1, max_length])
  return ids, tf.reshape(best_scores[:, :returns], [-1])


# ---------------------------------------------------------------------------
# Contrastive search (Su et al. 2022, as keras-hub's ContrastiveSampler).

def contrastive_search(step, state, start_ids: tf.Tensor, sampler: Sampler,
                       config: GenerationConfig, settings: RowSettings, limits: Limits,
                       stop_token_ids):
  """Picks, among the k most likely next ids (sampler.k, default 5), the one
  maximising (1 - alpha) * probability - alpha * (largest cosine similarity of
  its decoder output to the outputs of every earlier position); arguments as
  `decode`.

  Returns:
    (ids int32 [B, max_length], scores float32 [B], summed log-probabilities).
  """
  batch = tf.shape(start_ids)[0]
  stops = _stops(stop_token_ids)
  alpha, pad_token_id = sampler.alpha, config.pad_token_id
  max_length = limits.max_length
  ids = tf.concat([start_ids[:, None], tf.fill([batch, max_length - 1], pad_token_id)], axis=1)
  logits, hidden, state = step(start_ids, tf.constant(0), state)
  k = min(sampler.k or 5, logits.shape[-1])
  hidden_size = hidden.shape[-1]
  history = tf.concat([hidden[:, None], tf.zeros([batch, max_length - 1, hidden_size])], axis=1)

  def condition(index, ids, logits, history, state, finished, scores):
    return (index < max_length - 1) & ~tf.reduce_all(finished)

  def body(index, ids, logits, history, state, finished, scores):
    processed = process_logits(logits, ids, index + 1, settings, limits, config)
    probabilities = tf.nn.softmax(processed, axis=-1)
    top_probabilities, candidates = tf.math.top_k(probabilities, k=k)           # [B, k]
    candidate_logits, candidate_hidden, candidate_state = step(
        tf.reshape(candidates, [-1]), index + 1, state.repeat(k))
    unit = tf.math.l2_normalize(tf.reshape(candidate_hidden, [batch, k, hidden_size]), -1)
    past = tf.math.l2_normalize(history, -1)                                     # [B, T, D]
    similarity = tf.einsum("bkd,btd->bkt", unit, past)
    similarity = tf.where(tf.range(max_length)[None, None, :] <= index, similarity, -1.0)
    score = (1.0 - alpha) * top_probabilities - alpha * tf.reduce_max(similarity, axis=-1)
    # An id the processors ruled out (probability 0) is never a candidate.
    score = tf.where(top_probabilities > 0, score, NEG_INF)
    best = tf.argmax(score, axis=-1, output_type=tf.int32)                       # [B]
    rows = tf.range(batch) * k + best
    chosen = tf.gather(candidates, best, batch_dims=1)
    chosen_log_prob = tf.math.log(tf.gather(top_probabilities, best, batch_dims=1))
    chosen = tf.where(finished, pad_token_id, chosen)
    scores += tf.where(finished, 0.0, chosen_log_prob)
    at = tf.range(max_length)[None, :] == index + 1
    ids = tf.where(at, chosen[:, None], ids)
    chosen_hidden = tf.gather(candidate_hidden, rows)
    history = tf.where(at[..., None], chosen_hidden[:, None, :], history)
    new_state = candidate_state.select(rows)
    state = tf.nest.map_structure(lambda new, old: tf.ensure_shape(new, old.shape), new_state,
                                  state)
    logits = tf.ensure_shape(tf.gather(candidate_logits, rows), logits.shape)
    finished |= _ends(chosen, stops, index, settings)
    return index + 1, ids, logits, history, state, finished, scores

  loop = tf.while_loop(condition, body,
                       (tf.constant(0), ids, logits, history, state, tf.zeros([batch], tf.bool),
                        tf.zeros([batch], tf.float32)), maximum_iterations=max_length - 1)
  return loop[1], loop[6]
