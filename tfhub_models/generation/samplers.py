"""Sampling functions (pure, seeds explicit) and the warpers they apply, and
`Sampler`, the choice of one with its settings.  Shapes: B rows, V vocabulary."""

from __future__ import annotations

import dataclasses
import math
import operator

import tensorflow as tf


NEG_INF = float("-inf")   # what upstream's processors use


# ---------------------------------------------------------------------------
# Warpers (upstream's TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper):
# logits float32 [B, V] -> logits, the ids they rule out at -inf.  A setting is a
# Python number for every row or a tensor [B], one per row.

def rows(value, logits, dtype) -> tf.Tensor:
  """A setting as a column [B, 1] (or a scalar) broadcasting against logits [B, V]."""
  value = tf.cast(value, dtype)
  return value[:, None] if value.shape.rank == 1 else value


def scale(logits: tf.Tensor, temperature) -> tf.Tensor:
  """logits / temperature."""
  return logits / rows(temperature, logits, logits.dtype)


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
  drop = mass <= 1.0 - rows(p, logits, mass.dtype)
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
