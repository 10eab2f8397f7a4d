"""Building blocks: shapes, dtypes, dropout, cache, and parity with torch."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfhub_models import layers


def test_variables_exist_before_the_first_call():
  block = layers.TransformerEncoderLayer(16, 4, 24, name="block")
  shapes = {v.name: tuple(v.shape) for v in block.variables}
  assert shapes["block/self_attention/query/kernel:0"] == (16, 16)
  assert shapes["block/feedforward/intermediate/kernel:0"] == (16, 24)
  assert shapes["block/feedforward_layer_norm/gamma:0"] == (16,)
  assert len(block.trainable_variables) == 16


def test_exact_gelu_matches_torch():
  import torch
  x = np.linspace(-6, 6, 101).astype(np.float32)
  expected = torch.nn.functional.gelu(torch.tensor(x), approximate="none").numpy()
  np.testing.assert_allclose(layers.gelu(tf.constant(x)).numpy(), expected, atol=1e-6)
  tanh = torch.nn.functional.gelu(torch.tensor(x), approximate="tanh").numpy()
  assert np.abs(layers.gelu(tf.constant(x)).numpy() - tanh).max() > 1e-4


def test_layer_norm_matches_torch():
  import torch
  x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32) * 10 + 3
  norm = layers.LayerNorm(8, epsilon=1e-5)
  norm.gamma.assign(np.arange(8, dtype=np.float32))
  norm.beta.assign(np.ones(8, np.float32))
  ref = torch.nn.functional.layer_norm(torch.tensor(x), (8,), torch.arange(8.0), torch.ones(8),
                                       eps=1e-5).numpy()
  np.testing.assert_allclose(norm(tf.constant(x)).numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_keeps_softmax_and_norm_in_float32(dtype):
  block = layers.TransformerEncoderLayer(16, 4, 24, dtype=dtype)
  assert all(v.dtype == tf.as_dtype(dtype) for v in block.variables)
  x = tf.cast(tf.random.normal([2, 7, 16]), dtype)
  y = block(x, tf.ones([2, 7], tf.int32))
  assert y.dtype == tf.as_dtype(dtype)
  norm = layers.LayerNorm(16, dtype=dtype)
  big = tf.cast(tf.fill([1, 16], 300.0) + tf.range(16, dtype=tf.float32), dtype)
  out = tf.cast(norm(big), tf.float32).numpy()
  # Computed in float32, the normalised values span about +-1.6.
  assert np.isfinite(out).all() and 1.4 < out.max() < 1.8


def test_unsupported_dtype_is_rejected():
  with pytest.raises(ValueError, match="unsupported dtype"):
    layers.Dense(2, 2, dtype="int8")


def test_dropout_only_when_training():
  block = layers.TransformerEncoderLayer(16, 4, 24, dropout=0.5)
  x = tf.random.normal([2, 7, 16])
  mask = tf.ones([2, 7], tf.int32)
  a, b = block(x, mask), block(x, mask)
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  c = block(x, mask, training=True)
  assert np.abs(c.numpy() - a.numpy()).max() > 1e-3


def test_padding_does_not_change_real_positions():
  block = layers.TransformerEncoderLayer(16, 4, 24)
  x = tf.random.normal([1, 5, 16])
  padded = tf.concat([x, tf.random.normal([1, 3, 16])], axis=1)
  short = block(x, tf.ones([1, 5], tf.int32))
  long = block(padded, tf.constant([[1] * 5 + [0] * 3]))
  np.testing.assert_allclose(long[:, :5].numpy(), short.numpy(), atol=1e-5)


def test_cached_attention_equals_causal_attention():
  attention = layers.MultiHeadAttention(16, 4)
  x = tf.random.normal([2, 6, 16])
  causal = tf.linalg.band_part(tf.ones([6, 6], tf.bool), -1, 0)[None]     # [1, T, S]
  full = attention(x, mask=causal)
  cache = attention.init_cache(2, 8)
  steps = []
  for t in range(6):
    visible = (tf.range(8) <= t)[None, None, :]                            # [1, 1, S_max]
    out, cache = attention.call_cached(x[:, t:t + 1], cache, tf.constant(t), visible)
    steps.append(out)
  np.testing.assert_allclose(tf.concat(steps, axis=1).numpy(), full.numpy(), atol=1e-5)
  assert cache.key.shape == (2, 8, 4, 4)
  np.testing.assert_array_equal(cache.key[:, 6:].numpy(), 0.0)


def test_write_cache_under_xla_matches_eager():
  buffer = tf.zeros([2, 5, 1, 3])
  update = tf.ones([2, 2, 1, 3])
  eager = layers.write_cache(buffer, update, tf.constant(2))
  compiled = tf.function(layers.write_cache, jit_compile=True)(buffer, update, tf.constant(2))
  np.testing.assert_array_equal(eager.numpy(), compiled.numpy())
  assert eager[:, 2:4].numpy().min() == 1.0 and eager.numpy().sum() == 2 * 2 * 3
