"""Learning-rate schedules: `tf.Module`s called with the optimizer's step count.

Each equals its `transformers` (PyTorch) namesake: `LinearWarmupDecay` is
`get_linear_schedule_with_warmup`, `CosineWarmupDecay` is
`get_cosine_schedule_with_warmup` (half a cosine), both scaled by `peak`.
Step k (0-based, the number of updates done) gives the rate of update k + 1.
"""

from __future__ import annotations

import math

import tensorflow as tf


def _check(peak: float, warmup_steps: int, total_steps: int) -> None:
  if not 0 < peak < math.inf:
    raise ValueError(f"peak learning rate must be finite and positive, got {peak}")
  if warmup_steps < 0 or total_steps < 1 or warmup_steps > total_steps:
    raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got "
                     f"warmup_steps={warmup_steps}, total_steps={total_steps}")


class WarmupDecay(tf.Module):
  """0 -> peak linearly over warmup_steps, then down to 0 at total_steps as
  `decay(step)` says (a subclass's)."""

  def __init__(self, peak: float, warmup_steps: int, total_steps: int, *, name: str):
    super().__init__(name=name)
    _check(peak, warmup_steps, total_steps)
    self.peak, self.warmup_steps = float(peak), int(warmup_steps)
    self.total_steps = int(total_steps)

  def decay(self, step: tf.Tensor) -> tf.Tensor:
    raise NotImplementedError

  def __call__(self, step) -> tf.Tensor:
    """step: int scalar (updates done) -> float32 scalar learning rate."""
    step = tf.cast(step, tf.float32)
    warmup = step / max(1, self.warmup_steps)
    return self.peak * tf.where(step < self.warmup_steps, warmup,
                                tf.maximum(0.0, self.decay(step)))


class LinearWarmupDecay(WarmupDecay):
  """0 -> peak linearly over warmup_steps, then linearly down to 0 at total_steps."""

  def __init__(self, peak: float, warmup_steps: int, total_steps: int, *,
               name: str = "linear_warmup_decay"):
    super().__init__(peak, warmup_steps, total_steps, name=name)

  def decay(self, step: tf.Tensor) -> tf.Tensor:
    return (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps)


class CosineWarmupDecay(WarmupDecay):
  """0 -> peak linearly over warmup_steps, then half a cosine down to 0 at total_steps."""

  def __init__(self, peak: float, warmup_steps: int, total_steps: int, *,
               name: str = "cosine_warmup_decay"):
    super().__init__(peak, warmup_steps, total_steps, name=name)

  def decay(self, step: tf.Tensor) -> tf.Tensor:
    progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
    return 0.5 * (1.0 + tf.cos(math.pi * progress))


__all__ = ["LinearWarmupDecay", "CosineWarmupDecay"]
