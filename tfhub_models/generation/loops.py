"""The decoding loops (sampling, beam search, contrastive search) over a small
decoder interface, each one compiled function of static shapes."""

from __future__ import annotations

from typing import Protocol

import tensorflow as tf

from tfhub_models.generation.samplers import NEG_INF, Sampler, draw_rows, greedy
from tfhub_models.generation.settings import (GenerationConfig, Limits, RowSettings, stop_ids,
                                              process_logits, warp)
from tfhub_models.layers import LARGE_NEGATIVE


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
  stops = stop_ids(stop_token_ids)

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
  stops = stop_ids(stop_token_ids)
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
  stops = stop_ids(stop_token_ids)
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
