"""Adam / AdamW and the schedules against torch.optim and transformers' schedules."""

import numpy as np
import pytest
import tensorflow as tf

from tfhub_models import optimizers
from tfhub_models.optimizers import schedules


def _torch_run(initial, gradients, *, lr, weight_decay, betas, eps, schedule=None, adam=False):
  import torch
  params = [torch.nn.Parameter(torch.tensor(x, dtype=torch.float64)) for x in initial]
  cls = torch.optim.Adam if adam else torch.optim.AdamW
  kwargs = {} if adam else {"weight_decay": weight_decay}
  optimizer = cls(params, lr=lr, betas=betas, eps=eps, **kwargs)
  scheduler = None
  if schedule is not None:
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup
    make = {"linear": get_linear_schedule_with_warmup,
            "cosine": get_cosine_schedule_with_warmup}[schedule[0]]
    scheduler = make(optimizer, schedule[1], schedule[2])
  for step_gradients in gradients:
    for p, g in zip(params, step_gradients):
      p.grad = torch.tensor(g, dtype=torch.float64)
    optimizer.step()
    if scheduler is not None:
      scheduler.step()
  return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("schedule", [None, ("linear", 2, 6), ("cosine", 1, 5)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_equals_torch(schedule, weight_decay):
  rng = np.random.default_rng(0)
  initial = [rng.normal(size=(3, 4)), rng.normal(size=(5,))]
  gradients = [[rng.normal(size=x.shape) * 10 ** rng.uniform(-3, 1) for x in initial]
               for _ in range(6)]
  lr = 1e-2
  rate = lr
  if schedule is not None:
    cls = {"linear": schedules.LinearWarmupDecay, "cosine": schedules.CosineWarmupDecay}
    rate = cls[schedule[0]](lr, schedule[1], schedule[2])
  optimizer = optimizers.AdamW(rate, weight_decay=weight_decay, beta_1=0.8, beta_2=0.95,
                               epsilon=1e-6)
  variables = [tf.Variable(x.astype(np.float32)) for x in initial]
  optimizer.build(variables)
  step = tf.function(lambda g: optimizer.apply(g, variables), jit_compile=True)
  for step_gradients in gradients:
    step([tf.constant(g, tf.float32) for g in step_gradients])
  expected = _torch_run(initial, gradients, lr=lr, weight_decay=weight_decay, betas=(0.8, 0.95),
                        eps=1e-6, schedule=schedule)
  for variable, want in zip(variables, expected):
    np.testing.assert_allclose(variable.numpy(), want, rtol=2e-6, atol=1e-7)
  assert int(optimizer.iterations) == 6


def test_adam_equals_torch_adam_and_excludes_nothing():
  rng = np.random.default_rng(1)
  initial = [rng.normal(size=(4,))]
  gradients = [[rng.normal(size=(4,))] for _ in range(3)]
  optimizer = optimizers.Adam(1e-2)
  variables = [tf.Variable(initial[0].astype(np.float32))]
  optimizer.build(variables)
  for g in gradients:
    optimizer.apply([tf.constant(g[0], tf.float32)], variables)
  want = _torch_run(initial, gradients, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.999),
                    eps=1e-8, adam=True)
  np.testing.assert_allclose(variables[0].numpy(), want[0], rtol=2e-6)


def test_exclusion_clipping_and_nonfinite_steps():
  bias = tf.Variable([1.0, 1.0], name="bias")
  kernel = tf.Variable([1.0, 1.0], name="kernel")
  optimizer = optimizers.AdamW(0.1, weight_decay=0.5, exclude_from_weight_decay=["bias"])
  optimizer.build([bias, kernel])
  zero = tf.zeros([2])
  optimizer.apply([zero, zero], [bias, kernel])
  np.testing.assert_allclose(bias.numpy(), [1.0, 1.0])            # excluded: no decay
  np.testing.assert_allclose(kernel.numpy(), [0.95, 0.95], rtol=1e-6)
  before = [bias.numpy(), kernel.numpy(), [m.numpy() for m in optimizer.first_moments]]
  optimizer.apply([tf.constant([np.nan, 1.0]), zero], [bias, kernel])
  assert int(optimizer.iterations) == 1                           # the NaN step did nothing
  np.testing.assert_array_equal(bias.numpy(), before[0])
  np.testing.assert_array_equal(kernel.numpy(), before[1])
  clipped = optimizers.AdamW(1.0, weight_decay=0.0, global_clipnorm=1.0)
  x = tf.Variable([0.0, 0.0])
  clipped.build([x])
  clipped.apply([tf.constant([300.0, 400.0])], [x])
  np.testing.assert_allclose(clipped.first_moments[0].numpy(), [0.06, 0.08], rtol=1e-5)


def test_state_is_checkpointable(tmp_path):
  variables = [tf.Variable([1.0, 2.0])]
  optimizer = optimizers.AdamW(0.1)
  optimizer.build(variables)
  optimizer.apply([tf.constant([1.0, -1.0])], variables)
  path = tf.train.Checkpoint(optimizer=optimizer, v=variables[0]).save(str(tmp_path / "ckpt"))
  other_variables = [tf.Variable([0.0, 0.0])]
  other = optimizers.AdamW(0.1)
  other.build(other_variables)
  tf.train.Checkpoint(optimizer=other, v=other_variables[0]).restore(path).assert_consumed()
  assert int(other.iterations) == 1
  np.testing.assert_array_equal(other.first_moments[0].numpy(), optimizer.first_moments[0].numpy())
  np.testing.assert_array_equal(other.second_moments[0].numpy(),
                                optimizer.second_moments[0].numpy())


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="learning_rate"):
    optimizers.AdamW(0.0)
  with pytest.raises(ValueError, match="beta_2"):
    optimizers.AdamW(1e-3, beta_2=1.0)
  with pytest.raises(ValueError, match="warmup_steps"):
    schedules.LinearWarmupDecay(1e-3, 10, 5)
  with pytest.raises(ValueError, match="not built"):
    optimizers.AdamW(1e-3).apply([tf.zeros([1])], [tf.Variable([0.0])])
  with pytest.raises(ValueError, match="unknown optimizer"):
    optimizers.get("sgd", 1e-3)
