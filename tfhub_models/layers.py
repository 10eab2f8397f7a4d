"""Keras-free building blocks: every variable is created in `__init__`.

Einsum legend used throughout:
  B batch, T query length, S key length, D hidden size, N heads, H head size,
  I intermediate size, V vocabulary size.

`dtype` sets both the weights and the compute dtype of a block.  Softmax and
layer normalisation are always computed in float32 and cast back, as the
upstream (keras-hub) mixed-precision policy promises.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

# An additive bias or score that softmax and top-k treat as "never", without the
# NaN an infinity would give where every entry is masked.
LARGE_NEGATIVE = -1e9

DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}


def as_dtype(dtype: str | tf.DType) -> tf.DType:
  """Returns the tf.DType for "float32" | "bfloat16" | "float16"."""
  if isinstance(dtype, tf.DType):
    if dtype.name not in DTYPES:
      raise ValueError(f"unsupported dtype {dtype.name!r}; use one of {sorted(DTYPES)}")
    return dtype
  if dtype not in DTYPES:
    raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(DTYPES)}")
  return DTYPES[dtype]


class Module(tf.Module):
  """A tf.Module with a `trainable` switch (Keras' name and meaning).

  `module.trainable = False` freezes the module and every module inside it:
  their variables leave `trainable_variables` of it and of every module that
  contains it, so training leaves them unchanged.  A variable shared with a
  trainable module (a tied embedding) is frozen too when any owner is frozen.
  """

  _trainable = True

  @property
  def trainable(self) -> bool:
    return self._trainable

  @trainable.setter
  def trainable(self, value: bool) -> None:
    if not isinstance(value, bool):
      raise TypeError(f"trainable must be True or False, got {value!r}")
    self._trainable = value

  @property
  def trainable_variables(self) -> tuple:
    """Trainable variables of this module and its submodules, frozen ones left out."""
    if not self._trainable:
      return ()
    frozen = {v.ref() for m in self.submodules
              if isinstance(m, Module) and not m.trainable for v in m.variables}
    return tuple(v for v in super().trainable_variables if v.ref() not in frozen)

  def count_params(self) -> int:
    """How many weights the module holds, trainable or not, a shared (tied)
    variable once (Keras' `count_params`)."""
    return sum(v.shape.num_elements() for v in _unique(self.variables))

  def summary(self, print_fn=print, max_depth: int | None = None) -> None:
    """Prints the module tree as a table (Keras' `summary`): each module with its
    own weights' shapes and the parameters under it (a shared variable counted
    where it is first met), then the totals.  max_depth: deeper modules are
    counted in their parent's row."""
    rows, seen_modules, seen_variables = [], set(), set()

    def walk(module, name, depth):
      if id(module) in seen_modules:
        return 0
      seen_modules.add(id(module))
      own = [v for v in module._flatten(recursive=False,   # pylint: disable=protected-access
                                        predicate=lambda x: isinstance(x, tf.Variable))
             if v.ref() not in seen_variables]
      seen_variables.update(v.ref() for v in own)
      row = [name, type(module).__name__, own, sum(v.shape.num_elements() for v in own)]
      if max_depth is None or depth <= max_depth:
        rows.append((depth, row))
      children = module._flatten(recursive=False,   # pylint: disable=protected-access
                                 predicate=lambda x: isinstance(x, tf.Module), with_path=True)
      for path, child in children:
        row[3] += walk(child, "/".join(map(str, path)), depth + 1)
      return row[3]

    walk(self, self.name, 0)
    rows = [(d, r) for d, r in rows if r[3]]    # tokenizers and other weightless parts
    def shape(v) -> str:
      return v.name.split("/")[-1].split(":")[0] + str(v.shape.as_list())
    table = [("  " * d + f"{r[0]} ({r[1]})", ", ".join(map(shape, r[2])) or "-", f"{r[3]:,}")
             for d, r in rows]
    header = ("Module (type)", "Own weights", "Params")
    widths = [min(max(len(line[i]) for line in [header, *table]), 60) for i in range(3)]
    rule = "-" * (sum(widths) + 4)
    print_fn(f"{type(self).__name__} {self.name!r}")
    print_fn(rule)
    print_fn(f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]:>{widths[2]}}")
    print_fn(rule)
    for line in table:
      print_fn(f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  {line[2]:>{widths[2]}}")
    total = self.count_params()
    trainable = sum(v.shape.num_elements() for v in _unique(self.trainable_variables))
    print_fn(rule)
    print_fn(f"Total params: {total:,}")
    print_fn(f"Trainable params: {trainable:,}")
    print_fn(f"Non-trainable params: {total - trainable:,}")


def _unique(variables) -> list:
  """variables without repeats (a tied weight is one variable reached twice)."""
  seen, out = set(), []
  for v in variables:
    if v.ref() not in seen:
      seen.add(v.ref())
      out.append(v)
  return out


def _init(shape, dtype, stddev=0.02):
  return tf.cast(tf.random.truncated_normal(shape, stddev=stddev), dtype)


def gelu(x: tf.Tensor) -> tf.Tensor:
  """Exact GELU, x * Phi(x), with erf (not the tanh approximation)."""
  return 0.5 * x * (1.0 + tf.math.erf(x * tf.cast(1.0 / math.sqrt(2.0), x.dtype)))


ACTIVATIONS = {
    "gelu": gelu,
    "gelu_new": lambda x: tf.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: tf.nn.gelu(x, approximate=True),
    "relu": tf.nn.relu,
    "tanh": tf.math.tanh,
    "silu": tf.nn.silu,
    "swish": tf.nn.silu,
}


def activation(name: str):
  """Looks up an activation by its Hugging Face `hidden_act` name."""
  if name not in ACTIVATIONS:
    raise ValueError(f"unsupported activation {name!r}; known: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def dropout(x: tf.Tensor, rate: float, training: bool) -> tf.Tensor:
  """Inverted dropout, active only when `training` is True (a Python bool)."""
  if not training or rate == 0.0:
    return x
  return tf.nn.dropout(x, rate=rate)


class Dense(Module):
  """y = x @ kernel + bias; kernel float [in_dim, out_dim]."""

  def __init__(self, in_dim: int, out_dim: int, *, use_bias: bool = True,
               dtype="float32", name: str | None = None):
    super().__init__(name=name)
    self.dtype = as_dtype(dtype)
    with self.name_scope:
      self.kernel = tf.Variable(_init([in_dim, out_dim], self.dtype), name="kernel")
      self.bias = (tf.Variable(tf.zeros([out_dim], self.dtype), name="bias")
                   if use_bias else None)

  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    """x: [..., in_dim] -> [..., out_dim]."""
    # tensordot, not einsum("...i,io->...o"): TensorFlow's gradient of the
    # ellipsis form builds an [in, out, ...] tensor before summing it (9.7 GB and
    # 8 s for one base-size feed-forward kernel); tensordot is one matmul.
    y = tf.tensordot(x, self.kernel, axes=1)
    return y + self.bias if self.bias is not None else y


class Embedding(Module):
  """A lookup table float [vocab_size, dim]."""

  def __init__(self, vocab_size: int, dim: int, *, dtype="float32", name: str | None = None):
    super().__init__(name=name)
    self.dtype = as_dtype(dtype)
    with self.name_scope:
      self.embeddings = tf.Variable(_init([vocab_size, dim], self.dtype), name="embeddings")

  def __call__(self, ids: tf.Tensor) -> tf.Tensor:
    """ids: int [...] -> [..., dim]."""
    return tf.gather(self.embeddings, ids)

  def attend(self, x: tf.Tensor) -> tf.Tensor:
    """Tied output projection: x [..., dim] -> logits [..., vocab_size]."""
    # A matmul against the [vocab, dim] table itself (transpose_b), not tensordot:
    # tensordot transposes the table, and inside XLA's decoding loop at batch 1
    # that transpose was materialized every step (a 154 MB copy for BART base,
    # 83 ms a step against 25).  Its gradient is matmuls too (see Dense).
    vocab_size, dim = self.embeddings.shape
    flat = tf.reshape(x, [-1, dim])
    logits = tf.matmul(flat, self.embeddings, transpose_b=True)         # [N, vocab]
    logits = tf.reshape(logits, tf.concat([tf.shape(x)[:-1], [vocab_size]], axis=0))
    logits.set_shape(x.shape[:-1].concatenate([vocab_size]))
    return logits


class LayerNorm(Module):
  """Layer normalisation over the last axis, computed in float32."""

  def __init__(self, dim: int, *, epsilon: float = 1e-5, dtype="float32", name: str | None = None):
    super().__init__(name=name)
    self.dtype = as_dtype(dtype)
    self.epsilon = epsilon
    with self.name_scope:
      self.gamma = tf.Variable(tf.ones([dim], self.dtype), name="gamma")
      self.beta = tf.Variable(tf.zeros([dim], self.dtype), name="beta")

  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    """x: [..., dim] -> [..., dim], same dtype as x."""
    x32 = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
    y = (x32 - mean) * tf.math.rsqrt(variance + self.epsilon)
    y = y * tf.cast(self.gamma, tf.float32) + tf.cast(self.beta, tf.float32)
    return tf.cast(y, x.dtype)


class KVCache(NamedTuple):
  """A fixed-size key/value buffer; a value, so it can be while_loop state."""
  key: tf.Tensor    # [B, S_max, N, H]
  value: tf.Tensor  # [B, S_max, N, H]


def attention_bias(mask: tf.Tensor) -> tf.Tensor:
  """Turns a boolean mask (True = may attend) into an additive float32 bias."""
  return tf.where(tf.cast(mask, tf.bool), 0.0, LARGE_NEGATIVE)


class MultiHeadAttention(Module):
  """Multi-head scaled dot-product attention with separate q/k/v projections.

  Called as self-attention, cross-attention (keys/values from another
  sequence) or one decoding step against a fixed-size `KVCache`.
  """

  def __init__(self, hidden_dim: int, num_heads: int, *, dropout: float = 0.0,
               dtype="float32", name: str | None = None):
    super().__init__(name=name)
    if hidden_dim % num_heads:
      raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
    self.dtype = as_dtype(dtype)
    self.num_heads = num_heads
    self.head_dim = hidden_dim // num_heads
    self.dropout = dropout
    with self.name_scope:
      self.query = Dense(hidden_dim, hidden_dim, dtype=dtype, name="query")
      self.key = Dense(hidden_dim, hidden_dim, dtype=dtype, name="key")
      self.value = Dense(hidden_dim, hidden_dim, dtype=dtype, name="value")
      self.output = Dense(hidden_dim, hidden_dim, dtype=dtype, name="output")

  def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
    """[B, T, D] -> [B, T, N, H]."""
    shape = tf.shape(x)
    return tf.reshape(x, [shape[0], shape[1], self.num_heads, self.head_dim])

  def project_key_value(self, x: tf.Tensor) -> KVCache:
    """Keys and values of x [B, S, D], each [B, S, N, H] (cross-attention, once)."""
    return KVCache(self._split_heads(self.key(x)), self._split_heads(self.value(x)))

  def attend(self, x: tf.Tensor, key: tf.Tensor, value: tf.Tensor,
             mask: tf.Tensor | None, training: bool = False) -> tf.Tensor:
    """Attends queries from x [B, T, D] over key/value [B, S, N, H].

    Args:
      x: [B, T, D] query input.
      key, value: [B, S, N, H].
      mask: bool broadcastable to [B, T, S] (True = may attend), or None.
      training: enables attention dropout.

    Returns:
      [B, T, D], dtype of x.
    """
    query = self._split_heads(self.query(x))                   # [B, T, N, H]
    query = query * tf.cast(1.0 / math.sqrt(self.head_dim), query.dtype)
    scores = tf.einsum("BTNH,BSNH->BNTS", query, key)          # [B, N, T, S]
    scores = tf.cast(scores, tf.float32)
    if mask is not None:
      scores += attention_bias(mask)[:, None, :, :]
    probs = tf.cast(tf.nn.softmax(scores, axis=-1), x.dtype)
    probs = dropout(probs, self.dropout, training)
    context = tf.einsum("BNTS,BSNH->BTNH", probs, value)       # [B, T, N, H]
    shape = tf.shape(x)
    context = tf.reshape(context, [shape[0], shape[1], self.num_heads * self.head_dim])
    return self.output(context)

  def __call__(self, x: tf.Tensor, mask: tf.Tensor | None = None,
               context: tf.Tensor | None = None, training: bool = False) -> tf.Tensor:
    """Self-attention over x [B, T, D], or cross-attention to context [B, S, D]."""
    kv = self.project_key_value(x if context is None else context)
    return self.attend(x, kv.key, kv.value, mask, training)

  def init_cache(self, batch_size, max_length: int) -> KVCache:
    """An all-zero cache of [batch_size, max_length, N, H]."""
    shape = [batch_size, max_length, self.num_heads, self.head_dim]
    return KVCache(tf.zeros(shape, self.dtype), tf.zeros(shape, self.dtype))

  def call_cached(self, x: tf.Tensor, cache: KVCache, index: tf.Tensor,
                  mask: tf.Tensor | None) -> tuple[tf.Tensor, KVCache]:
    """One self-attention step against a fixed-size cache.

    Args:
      x: [B, T, D], the new positions index .. index + T - 1.
      cache: KVCache of [B, S_max, N, H].
      index: int32 scalar, where x's keys/values are written.
      mask: bool broadcastable to [B, T, S_max] (True = may attend), or None.

    Returns:
      ([B, T, D], the updated KVCache).
    """
    new = self.project_key_value(x)                             # [B, T, N, H]
    cache = KVCache(write_cache(cache.key, new.key, index),
                    write_cache(cache.value, new.value, index))
    return self.attend(x, cache.key, cache.value, mask), cache


def write_cache(buffer: tf.Tensor, update: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """Writes update [B, T, N, H] into buffer [B, S_max, N, H] at time `index`.

  A select over a time mask, so it runs with and without XLA (XLA-only ops
  such as XlaDynamicUpdateSlice would break the --no-xla export).
  """
  length = tf.shape(buffer)[1]
  steps = tf.shape(update)[1]
  positions = tf.range(length)                                         # [S_max]
  inside = (positions >= index) & (positions < index + steps)          # [S_max]
  gathered = tf.gather(update, tf.clip_by_value(positions - index, 0, steps - 1), axis=1)
  return tf.where(inside[None, :, None, None], gathered, buffer)


class FeedForward(Module):
  """Dense(D -> I), activation, dropout, Dense(I -> D)."""

  def __init__(self, hidden_dim: int, intermediate_dim: int, *, activation_name: str = "gelu",
               dropout: float = 0.0, dtype="float32", name: str | None = None):
    super().__init__(name=name)
    self.activation = activation(activation_name)
    self.dropout = dropout
    with self.name_scope:
      self.intermediate = Dense(hidden_dim, intermediate_dim, dtype=dtype, name="intermediate")
      self.output = Dense(intermediate_dim, hidden_dim, dtype=dtype, name="output")

  def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
    """x: [B, T, D] -> [B, T, D]."""
    return self.output(dropout(self.activation(self.intermediate(x)), self.dropout, training))


class TransformerEncoderLayer(Module):
  """Post-norm encoder layer (BERT/RoBERTa/BART):

  x = LN(x + Dropout(SelfAttention(x)));  x = LN(x + Dropout(FFN(x))).
  """

  def __init__(self, hidden_dim: int, num_heads: int, intermediate_dim: int, *,
               dropout: float = 0.0, activation_name: str = "gelu",
               layer_norm_epsilon: float = 1e-5, dtype="float32", name: str | None = None):
    super().__init__(name=name)
    self.dropout = dropout
    with self.name_scope:
      self.self_attention = MultiHeadAttention(hidden_dim, num_heads, dropout=dropout,
                                               dtype=dtype, name="self_attention")
      self.self_attention_layer_norm = LayerNorm(hidden_dim, epsilon=layer_norm_epsilon,
                                                 dtype=dtype, name="self_attention_layer_norm")
      self.feedforward = FeedForward(hidden_dim, intermediate_dim, activation_name=activation_name,
                                     dropout=0.0, dtype=dtype, name="feedforward")
      self.feedforward_layer_norm = LayerNorm(hidden_dim, epsilon=layer_norm_epsilon,
                                              dtype=dtype, name="feedforward_layer_norm")

  def __call__(self, x: tf.Tensor, padding_mask: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Encodes x.

    Args:
      x: [B, T, D].
      padding_mask: bool/int [B, T], True (1) = real token.
      training: enables dropout.

    Returns:
      [B, T, D].
    """
    mask = tf.cast(padding_mask, tf.bool)[:, None, :]            # [B, 1, S]
    attended = self.self_attention(x, mask=mask, training=training)
    x = self.self_attention_layer_norm(x + dropout(attended, self.dropout, training))
    fed = self.feedforward(x, training=training)
    return self.feedforward_layer_norm(x + dropout(fed, self.dropout, training))


def encoder_stack(config, dtype) -> list:
  """config.num_layers post-norm encoder layers of a BERT-like config (hidden_dim,
  num_heads, intermediate_dim, dropout, hidden_activation, layer_norm_epsilon)."""
  c = config
  return [TransformerEncoderLayer(c.hidden_dim, c.num_heads, c.intermediate_dim,
                                  dropout=c.dropout, activation_name=c.hidden_activation,
                                  layer_norm_epsilon=c.layer_norm_epsilon, dtype=dtype,
                                  name=f"transformer_layer_{i}")
          for i in range(c.num_layers)]


def optional_pooler(hidden_dim: int, pooler: bool, dtype) -> Dense | None:
  """The dense layer of a checkpoint's pooler (`pooler.dense.*`), or None."""
  return Dense(hidden_dim, hidden_dim, dtype=dtype, name="pooler") if pooler else None


def pool(sequence: tf.Tensor, pooler: Dense | None) -> tf.Tensor:
  """pooled_output of [B, L, D]: tanh(pooler(first token)), or the first token's state."""
  first = sequence[:, 0]
  return tf.math.tanh(pooler(first)) if pooler is not None else first


class MaskedLMHead(Module):
  """Dense (D -> E), exact GELU, layer norm, then the tied embedding decoder plus a bias.

  XLM-RoBERTa's `lm_head` (E = D) and ELECTRA's generator head (E = the
  embedding size).  Upstream applies exact GELU whatever the config's hidden_act.
  """

  def __init__(self, hidden_dim: int, token_embedding: Embedding, *,
               layer_norm_epsilon: float = 1e-5, dtype="float32", name: str | None = None):
    super().__init__(name=name)
    vocabulary_size, embedding_dim = token_embedding.embeddings.shape
    self.token_embedding = token_embedding
    with self.name_scope:
      self.dense = Dense(hidden_dim, embedding_dim, dtype=dtype, name="dense")
      self.layer_norm = LayerNorm(embedding_dim, epsilon=layer_norm_epsilon, dtype=dtype,
                                  name="layer_norm")
      self.bias = tf.Variable(tf.zeros([vocabulary_size], as_dtype(dtype)), name="bias")

  def __call__(self, sequence_output: tf.Tensor, mask_positions: tf.Tensor) -> tf.Tensor:
    """Vocabulary logits at the mask positions only.

    Args:
      sequence_output: [B, L, D].
      mask_positions: int [B, M], indices into L.

    Returns:
      float32 [B, M, V].
    """
    x = tf.gather(sequence_output, tf.cast(mask_positions, tf.int32), batch_dims=1)  # [B, M, D]
    x = self.layer_norm(gelu(self.dense(x)))                                         # [B, M, E]
    return tf.cast(self.token_embedding.attend(x) + self.bias, tf.float32)
