"""Adam and AdamW as `tf.Module`s whose update equals `torch.optim.AdamW`.

  optimizer = AdamW(schedules.LinearWarmupDecay(5e-5, 100, 1000), weight_decay=0.01)
  optimizer.build(task.trainable_variables)      # the moments, once, before tracing
  optimizer.apply(gradients, task.trainable_variables)

One update of a variable p with gradient g, at update t (1-based) and learning
rate lr (a float, or a schedule of the updates done):

  p <- p * (1 - lr * weight_decay)                       (decoupled decay; AdamW)
  m <- m + (1 - beta_1) * (g - m);  v <- beta_2 * v + (1 - beta_2) * g^2
  p <- p - lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + epsilon)

as torch's, epsilon outside the square root.  Gradients are made dense first
(an embedding's every row decays its moments, as in torch).  `clipnorm` clips
each gradient to that norm and `global_clipnorm` all of them together (Keras'
names).  A step whose gradients are not all finite changes nothing, so a NaN
never reaches the weights.  Under a `tf.distribute` strategy, `apply` from a
replica sums the replicas' gradients and updates every copy.  The moments and
the update count are variables, so `tf.train.Checkpoint` saves and restores them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from tfhub_models.optimizers import schedules


class _SlotIndex:
  """Variable -> position of its moments; a plain object, so tf.Module does not
  track it (its keys are not strings)."""

  def __init__(self):
    self.positions = {}


class AdamW(tf.Module):
  """Adam with decoupled weight decay (torch.optim.AdamW, Keras' AdamW arguments)."""

  def __init__(self, learning_rate=1e-3, weight_decay: float = 0.01, beta_1: float = 0.9,
               beta_2: float = 0.999, epsilon: float = 1e-8, clipnorm: float | None = None,
               exclude_from_weight_decay: Sequence[str] | None = None, *,
               global_clipnorm: float | None = None, name: str = "adamw"):
    """Args:
      learning_rate: a float, or a callable of the updates done (int64 scalar)
        returning the rate (e.g. `schedules.LinearWarmupDecay`).
      weight_decay: decoupled decay per unit of learning rate (0 = Adam).
      exclude_from_weight_decay: variables whose name contains one of these
        strings do not decay (e.g. ["bias", "layer_norm"]); None: every variable
        decays, as in torch.
      clipnorm, global_clipnorm: clip each gradient / all gradients to this norm.
    """
    super().__init__(name=name)
    if not callable(learning_rate) and not 0 < float(learning_rate) < math.inf:
      raise ValueError(f"learning_rate must be finite and positive, or a schedule, got "
                       f"{learning_rate!r}")
    if not 0 <= weight_decay < math.inf:   # NaN too: it would turn decay off silently
      raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay}")
    for label, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
      if not 0.0 <= beta < 1.0:
        raise ValueError(f"{label} must be in [0, 1), got {beta}")
    if not epsilon > 0:
      raise ValueError(f"epsilon must be positive, got {epsilon}")
    for label, norm in (("clipnorm", clipnorm), ("global_clipnorm", global_clipnorm)):
      if norm is not None and not 0 < norm < math.inf:
        raise ValueError(f"{label} must be finite and positive, got {norm}")
    if isinstance(exclude_from_weight_decay, str):
      exclude_from_weight_decay = [exclude_from_weight_decay]
    self.learning_rate = learning_rate if callable(learning_rate) else float(learning_rate)
    self.weight_decay = float(weight_decay)
    self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
    self.clipnorm = clipnorm
    self.global_clipnorm = global_clipnorm
    self.exclude_from_weight_decay = tuple(exclude_from_weight_decay or ())
    with self.name_scope:
      self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
    self.first_moments = []
    self.second_moments = []
    self._slots = _SlotIndex()

  def current_learning_rate(self, step=None) -> tf.Tensor:
    """The rate of the next update (or of the update after `step` updates), float32."""
    step = self.iterations if step is None else step
    if callable(self.learning_rate):
      return tf.cast(self.learning_rate(tf.convert_to_tensor(step)), tf.float32)
    return tf.constant(self.learning_rate, tf.float32)

  def build(self, variables) -> None:
    """Creates the moments of variables that have none yet (call eagerly, under the
    strategy's scope when there is one)."""
    for variable in variables:
      if variable.ref() in self._slots.positions:
        continue
      self._slots.positions[variable.ref()] = len(self.first_moments)
      base = variable.name.rsplit(":", 1)[0].replace("/", "_")
      with tf.init_scope(), self.name_scope:
        self.first_moments.append(tf.Variable(tf.zeros(variable.shape, variable.dtype),
                                              trainable=False, name=f"m_{base}"))
        self.second_moments.append(tf.Variable(tf.zeros(variable.shape, variable.dtype),
                                               trainable=False, name=f"v_{base}"))

  def _decays(self, variable) -> bool:
    return self.weight_decay > 0 and not any(s in variable.name
                                             for s in self.exclude_from_weight_decay)

  def apply(self, gradients, variables) -> None:
    """One update of `variables` (built before) from `gradients` (None = skipped, as
    torch skips a parameter without a gradient)."""
    pairs = [(tf.convert_to_tensor(g), v) for g, v in zip(gradients, variables) if g is not None]
    missing = [v.name for _, v in pairs if v.ref() not in self._slots.positions]
    if missing:
      raise ValueError(f"the optimizer was not built for {', '.join(missing[:5])}; call "
                       "build(variables) first")
    if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context() is False:
      tf.distribute.get_replica_context().merge_call(self._apply_reduced, args=(pairs,))
    else:
      self._update_all([g for g, _ in pairs], [v for _, v in pairs])

  def _apply_reduced(self, strategy, pairs) -> None:
    """Cross-replica: sums the replicas' gradients, then updates every copy."""
    reduced = strategy.extended.batch_reduce_to(tf.distribute.ReduceOp.SUM, pairs)
    variables = [v for _, v in pairs]
    gradients, finite, lr, step = self._prepare(reduced)
    for gradient, variable in zip(gradients, variables):
      position = self._slots.positions[variable.ref()]
      strategy.extended.update(
          variable, self._update_one,
          args=(gradient, self.first_moments[position], self.second_moments[position], lr, step,
                finite, self._decays(variable)), group=False)
    strategy.extended.update(self.iterations,
                             lambda it, ok: it.assign_add(tf.cast(ok, tf.int64)),
                             args=(finite,), group=False)

  def _prepare(self, gradients):
    """(clipped gradients, all finite, learning rate, updates done)."""
    gradients = [tf.cast(g, tf.float32) for g in gradients]
    norm = tf.linalg.global_norm(gradients)
    finite = tf.math.is_finite(norm)
    if self.clipnorm is not None:
      gradients = [tf.clip_by_norm(g, self.clipnorm) for g in gradients]
    if self.global_clipnorm is not None:
      gradients, _ = tf.clip_by_global_norm(gradients, self.global_clipnorm, use_norm=norm)
    step = self.iterations.read_value()
    return gradients, finite, self.current_learning_rate(step), step

  def _update_all(self, gradients, variables) -> None:
    gradients, finite, lr, step = self._prepare(gradients)
    for gradient, variable in zip(gradients, variables):
      position = self._slots.positions[variable.ref()]
      self._update_one(variable, gradient, self.first_moments[position],
                       self.second_moments[position], lr, step, finite, self._decays(variable))
    self.iterations.assign_add(tf.cast(finite, tf.int64))

  def _update_one(self, variable, gradient, m, v, lr, step, finite, decays: bool):
    # Bias corrections in float64, as torch computes them in Python floats.
    t = tf.cast(step + 1, tf.float64)
    correction_1 = 1.0 - tf.pow(tf.constant(self.beta_1, tf.float64), t)
    correction_2 = tf.sqrt(1.0 - tf.pow(tf.constant(self.beta_2, tf.float64), t))
    step_size = tf.cast(tf.cast(lr, tf.float64) / correction_1, tf.float32)
    correction_2 = tf.cast(correction_2, tf.float32)
    g = tf.cast(gradient, tf.float32)
    p, m_old, v_old = (tf.cast(x, tf.float32) for x in (variable, m, v))
    m_new = m_old + (1.0 - self.beta_1) * (g - m_old)
    v_new = self.beta_2 * v_old + (1.0 - self.beta_2) * g * g
    if decays:
      p = p * (1.0 - lr * self.weight_decay)
    p = p - step_size * (m_new / (tf.sqrt(v_new) / correction_2 + self.epsilon))
    for target, new, old in ((m, m_new, m_old), (v, v_new, v_old), (variable, p, None)):
      value = tf.where(finite, new, tf.cast(target, tf.float32) if old is None else old)
      target.assign(tf.cast(value, target.dtype))


class Adam(AdamW):
  """AdamW without weight decay (torch.optim.Adam with weight_decay=0)."""

  def __init__(self, learning_rate=1e-3, beta_1: float = 0.9, beta_2: float = 0.999,
               epsilon: float = 1e-8, clipnorm: float | None = None, *,
               global_clipnorm: float | None = None, name: str = "adam"):
    super().__init__(learning_rate, 0.0, beta_1, beta_2, epsilon, clipnorm,
                     global_clipnorm=global_clipnorm, name=name)


def get(identifier, default_learning_rate: float) -> AdamW:
  """An optimizer from "auto" / "adam" (Adam at the default rate), "adamw", or itself."""
  if isinstance(identifier, AdamW):
    return identifier
  if identifier in ("auto", "adam"):
    return Adam(default_learning_rate)
  if identifier == "adamw":
    return AdamW(default_learning_rate)
  raise ValueError(f"unknown optimizer {identifier!r}: use \"auto\", \"adam\", \"adamw\" or a "
                   "tfhub_models.optimizers.Adam / AdamW")


__all__ = ["Adam", "AdamW", "get", "schedules"]
