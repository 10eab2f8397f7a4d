"""Pure sampling functions, logit processors and the decoding loop.  No variables.

Every function takes and returns tensors of static shape, so the whole loop
compiles with XLA.  Randomness is stateless: a seed int32 [2] in, folded with
the step.  Shapes: B rows, V vocabulary, T the id buffer length.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import tensorflow as tf

from tfhub_models.layers import LARGE_NEGATIVE

NEG_INF = float("-inf")   # what upstream's processors use


# ---------------------------------------------------------------------------
# Samplers: logits float32 [B, V], seed int32 [2] -> ids int32 [B].

def greedy(logits: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The most likely id."""
  del seed
  return tf.argmax(logits, axis=-1, output_type=tf.int32)


def random(logits: tf.Tensor, seed: tf.Tensor, temperature: float = 1.0) -> tf.Tensor:
  """An id drawn from softmax(logits / temperature)."""
  return tf.random.stateless_categorical(logits / temperature, 1, seed, dtype=tf.int32)[:, 0]


def top_k(logits: tf.Tensor, seed: tf.Tensor, k: int = 5, temperature: float = 1.0) -> tf.Tensor:
  """An id drawn from the k most likely, renormalised (ids tied with the k-th kept,
  as upstream's TopKLogitsWarper)."""
  logits = logits / temperature
  kth = tf.math.top_k(logits, k=k).values[:, -1:]                             # [B, 1]
  kept = tf.where(logits >= kth, logits, NEG_INF)
  return tf.random.stateless_categorical(kept, 1, seed, dtype=tf.int32)[:, 0]


def top_p(logits: tf.Tensor, seed: tf.Tensor, p: float = 0.9, k: int | None = None,
          temperature: float = 1.0) -> tf.Tensor:
  """An id drawn from the smallest set of most likely ids whose mass reaches p
  (after top-k when k is given), as upstream's TopPLogitsWarper: ids sorted
  ascending (stably), those whose cumulative mass stays at or below 1 - p
  dropped, the most likely always kept."""
  logits = logits / temperature
  if k is not None:
    kth = tf.math.top_k(logits, k=k).values[:, -1:]
    logits = tf.where(logits >= kth, logits, NEG_INF)
  order = tf.argsort(logits, axis=-1, direction="ASCENDING", stable=True)       # [B, V]
  ascending = tf.gather(logits, order, batch_dims=1)
  mass = tf.cumsum(tf.nn.softmax(ascending, axis=-1), axis=-1)
  drop = mass <= 1.0 - p
  drop = tf.concat([drop[:, :-1], tf.zeros_like(drop[:, -1:])], axis=-1)       # keep the best
  dropped = tf.scatter_nd(
      tf.stack([tf.repeat(tf.range(tf.shape(order)[0]), tf.shape(order)[1]),
                tf.reshape(order, [-1])], axis=1),
      tf.reshape(drop, [-1]), tf.shape(order))
  kept = tf.where(dropped, NEG_INF, logits)
  return tf.random.stateless_categorical(kept, 1, seed, dtype=tf.int32)[:, 0]


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
    if self.temperature <= 0:
      raise ValueError("temperature must be > 0")
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

  def function(self, vocabulary_size: int) -> Callable:
    """(logits, seed) -> ids, for the samplers that pick one id per row."""
    k = None if self.k is None else min(self.k, vocabulary_size)
    if self.name == "greedy":
      return greedy
    if self.name == "random":
      return lambda logits, seed: random(logits, seed, self.temperature)
    if self.name == "top_k":
      return lambda logits, seed: top_k(logits, seed, k or min(5, vocabulary_size),
                                        self.temperature)
    if self.name == "top_p":
      return lambda logits, seed: top_p(logits, seed, self.p, k, self.temperature)
    raise ValueError(f"{self.name} is not a one-id-per-row sampler")


SAMPLERS = ("greedy", "random", "top_k", "top_p", "beam", "contrastive")


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


def repetition_penalty(logits, ids, length, penalty: float):
  """Divides positive, multiplies negative logits of ids already generated."""
  seen = presence(ids, length, logits.shape[-1])
  penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
  return tf.where(seen, penalised, logits)


def no_repeat_ngram(logits, ids, length, n: int):
  """Bans every id that would complete an n-gram already in ids[:, :length]."""
  total = ids.shape[1] if ids.shape[1] is not None else tf.shape(ids)[1]
  batch = tf.shape(ids)[0]
  starts = tf.range(total)                                                     # [T]
  offsets = tf.range(n - 1)                                                    # [n-1]
  window = tf.gather(ids, tf.clip_by_value(starts[:, None] + offsets[None, :], 0, total - 1),
                     axis=1)                                                   # [B, T, n-1]
  last = tf.gather(ids, tf.clip_by_value(length - (n - 1) + offsets, 0, total - 1), axis=1)
  match = tf.reduce_all(tf.equal(window, last[:, None, :]), axis=-1)          # [B, T]
  match &= (starts[None, :] + n - 1 < length) & (length >= n - 1)
  following = tf.gather(ids, tf.clip_by_value(starts + n - 1, 0, total - 1), axis=1)  # [B, T]
  vocabulary = logits.shape[-1]
  segments = tf.range(batch)[:, None] * vocabulary + following
  banned = tf.math.unsorted_segment_max(tf.reshape(tf.cast(match, tf.float32), [-1]),
                                        tf.reshape(segments, [-1]), batch * vocabulary)
  return tf.where(tf.reshape(banned, [batch, vocabulary]) > 0, NEG_INF, logits)


def force_token(logits, token_id: int, when: tf.Tensor):
  """Where `when` (bool scalar), only token_id may come next."""
  forced = tf.where(tf.range(logits.shape[-1]) == token_id, 0.0, NEG_INF)[None, :]
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
  def from_dict(cls, settings: dict) -> "GenerationConfig":
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


def process_logits(logits, ids, length, max_length, config: GenerationConfig):
  """The logit processors of `config` on logits float32 [B, V] for position
  `length`, given the ids so far [B, T]."""
  if config.repetition_penalty != 1.0:
    logits = repetition_penalty(logits, ids, length, config.repetition_penalty)
  if config.no_repeat_ngram_size > 0:
    logits = no_repeat_ngram(logits, ids, length, config.no_repeat_ngram_size)
  if config.min_length > 0:
    eos = tf.reduce_any(tf.range(logits.shape[-1])[:, None]
                        == tf.constant(config.eos_token_ids)[None, :], axis=1)      # [V]
    logits = tf.where(eos[None, :] & (length < config.min_length), NEG_INF, logits)
  if config.forced_bos_token_id is not None:
    logits = force_token(logits, config.forced_bos_token_id, tf.equal(length, 1))
  if config.forced_eos_token_id is not None:
    logits = force_token(logits, config.forced_eos_token_id, tf.equal(length, max_length - 1))
  return logits


# ---------------------------------------------------------------------------
# The decoder the loops drive.

class DecoderState(Protocol):
  """What a decoder carries between steps: a nest of tensors (while_loop state)."""

  def repeat(self, n: int) -> "DecoderState":
    """Each row repeated n times (row b*n + j is copy j of row b)."""

  def reorder(self, rows: tf.Tensor) -> "DecoderState":
    """The rows int32 [N] of the per-step state (beams of one input share the rest)."""

  def select(self, rows: tf.Tensor) -> "DecoderState":
    """The whole state of rows int32 [N]."""



# ---------------------------------------------------------------------------
# The loop.

def _stops(stop_token_ids) -> tf.Tensor:
  return tf.constant(list(stop_token_ids) or [-1], tf.int32)


def decode(step, state: DecoderState, start_ids: tf.Tensor, max_length: int, sampler: Sampler,
           config: GenerationConfig, seed: tf.Tensor, stop_token_ids):
  """Decodes with `sampler`, the one place a sampler name picks a loop.

  Args:
    step: (token_ids int32 [N], index int32, state) -> (logits float32 [N, V],
      hidden float32 [N, D], state), the decoder's one step at position `index`.
    state: the decoder state of the B rows of start_ids.
    start_ids: int32 [B], the decoder start token of each row.
    max_length: ids out, the start token included (a Python int).
    sampler: which loop and its settings.
    config: the processors, token ids and lengths.
    seed: int32 [2], for the samplers that draw.
    stop_token_ids: ids that end a row.

  Returns:
    (ids int32 [B*R, max_length], pad_token_id after a row's end; scores float32
    [B*R]); R = num_return_sequences for beam search, else 1.
  """
  if sampler.name == "beam":
    return beam_search(step, state.repeat(sampler.num_beams), start_ids, max_length, sampler,
                       config, stop_token_ids)
  if sampler.name == "contrastive":
    return contrastive_search(step, state, start_ids, max_length, sampler, config,
                              stop_token_ids)
  return sample_loop(step, state, start_ids, max_length, sampler, config, seed, stop_token_ids)


def sample_loop(step, state, start_ids: tf.Tensor, max_length: int, sampler: Sampler,
                config: GenerationConfig, seed: tf.Tensor, stop_token_ids):
  """Decodes one id per row and step until every row has stopped or max_length
  ids exist (greedy, random, top_k, top_p); arguments as `decode`.

  Returns:
    (ids int32 [B, max_length], scores float32 [B], the sum of the chosen ids'
    log-probabilities).
  """
  batch = tf.shape(start_ids)[0]
  pad = config.pad_token_id
  ids = tf.concat([start_ids[:, None], tf.fill([batch, max_length - 1], pad)], axis=1)
  stops = _stops(stop_token_ids)
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)

  def condition(index, ids, state, finished, scores):
    return (index < max_length - 1) & ~tf.reduce_all(finished)

  def body(index, ids, state, finished, scores):
    current = tf.gather(ids, index, axis=1)                                    # [B]
    logits, _, state = step(current, index, state)
    sample = sampler.function(logits.shape[-1])
    logits = process_logits(logits, ids, index + 1, max_length, config)
    step_seed = tf.random.experimental.stateless_fold_in(seed, index)
    chosen = sample(logits, step_seed)
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    chosen_log_prob = tf.gather(log_probs, chosen, batch_dims=1)
    chosen = tf.where(finished, pad, chosen)
    scores += tf.where(finished, 0.0, chosen_log_prob)
    write = tf.range(max_length)[None, :] == index + 1
    ids = tf.where(write, chosen[:, None], ids)
    finished |= tf.reduce_any(chosen[:, None] == stops[None, :], axis=1)
    return index + 1, ids, state, finished, scores

  _, ids, _, _, scores = tf.while_loop(
      condition, body,
      (tf.constant(0), ids, state, tf.zeros([batch], tf.bool), tf.zeros([batch], tf.float32)),
      maximum_iterations=max_length - 1)
  return ids, scores


# ---------------------------------------------------------------------------
# Beam search, upstream's vectorized algorithm (transformers' `_beam_search`).

def beam_search(step, state, start_ids: tf.Tensor, max_length: int, sampler: Sampler,
                config: GenerationConfig, stop_token_ids):
  """Beam search with the upstream's scoring and stopping rules (sampler.num_beams,
  length_penalty, early_stopping, num_return_sequences); arguments as `decode`, but
  `state` holds B*K rows, batch-major (row b*K + k is beam k of input b).

  Returns:
    (ids int32 [B*R, max_length], scores float32 [B*R]), R = num_return_sequences,
    pad_token_id after each sequence's end; scores are length-penalized sums of
    log-probabilities.
  """
  batch = tf.shape(start_ids)[0]
  static_batch = start_ids.shape[0]
  beams = sampler.num_beams
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
    log_probs = process_logits(tf.nn.log_softmax(logits, axis=-1), flat, length, max_length,
                               config)
    log_probs = tf.reshape(log_probs, [batch, beams, vocabulary_size]) + running_scores[..., None]
    top_log_probs, top_indices = tf.math.top_k(tf.reshape(log_probs, [batch, -1]), k=keep)
    source = top_indices // vocabulary_size                                    # [B, keep]
    tokens = top_indices % vocabulary_size
    candidates = gather_beams(running, source)                                 # [B, keep, T]
    at = tf.range(max_length)[None, None, :] == length
    candidates = tf.where(at, tokens[..., None], candidates)
    hits = (length + 1 >= max_length) | tf.reduce_any(
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
      hypothetical = tf.constant(max_length - 1, tf.float32)   # longer can only score better
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

def contrastive_search(step, state, start_ids: tf.Tensor, max_length: int, sampler: Sampler,
                       config: GenerationConfig, stop_token_ids):
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
  ids = tf.concat([start_ids[:, None], tf.fill([batch, max_length - 1], pad_token_id)], axis=1)
  logits, hidden, state = step(start_ids, tf.constant(0), state)
  k = min(sampler.k or 5, logits.shape[-1])
  hidden_size = hidden.shape[-1]
  history = tf.concat([hidden[:, None], tf.zeros([batch, max_length - 1, hidden_size])], axis=1)

  def condition(index, ids, logits, history, state, finished, scores):
    return (index < max_length - 1) & ~tf.reduce_all(finished)

  def body(index, ids, logits, history, state, finished, scores):
    processed = process_logits(logits, ids, index + 1, max_length, config)
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
    finished |= tf.reduce_any(chosen[:, None] == stops[None, :], axis=1)
    return index + 1, ids, logits, history, state, finished, scores

  loop = tf.while_loop(condition, body,
                       (tf.constant(0), ids, logits, history, state, tf.zeros([batch], tf.bool),
                        tf.zeros([batch], tf.float32)), maximum_iterations=max_length - 1)
  return loop[1], loop[6]
