"""What every serving part shares: `ExportOptions`, input specs, the XLA-compiled
numeric `Compiled` core (aliased for TPU conversion), id checks, text warmup;
and the text parts every encoder task uses (`Tokenize`, `Embedding`)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import tensorflow as tf

from serving import contract
from tfhub_models.export.warmup import predict_log, strings, text_of_length
from tfhub_models.preprocessing import POWERS_OF_TWO, pad_columns, pad_rows, round_up


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  top_k: int = 5
  jit_compile: bool = True
  # Batch sizes the warmup requests cover, per length bucket.  With XLA a batch
  # is padded to the next power of two, so powers of two cover every size up to
  # the largest one.
  warmup_batch_sizes: tuple = (1, 2, 4, 8)
  # Sentence-pair encoders and discriminators: a second input `text_pair`.
  pair: bool = False
  # Generation (BART): the most new tokens a request gets (None: the model's
  # max_length - 1), the largest no_repeat_ngram_size and top_k that
  # generate_with_options takes, and the seed of serving_default's samplers
  # (None: a fresh one for each request row; an int: the same text always gets
  # the same output).
  max_new_tokens: int | None = None
  max_no_repeat_ngram_size: int = 4
  max_top_k: int = 50
  seed: int | None = None
  # Embeddings: L2-normalize pooled_output and mean_output.
  normalize: bool = False
  # Token classification: how tokens become entities, the transformers
  # pipeline's aggregation_strategy (tfhub_models.entities.STRATEGIES).
  aggregation: str = "simple"


def text_spec(name: str) -> tf.TensorSpec:
  return tf.TensorSpec([None], tf.string, name=name)


def make_signature(input_signature):
  """A serving signature's tf.function.  No AutoGraph: the code has no Python
  control flow on tensors, and converting the whole call tree is most of the
  time an export takes to trace."""
  return functools.partial(tf.function, input_signature=input_signature, autograph=False)


def text_signature(fn, pair: bool):
  """A tf.function of `text` (and `text_pair`) [B] strings calling fn(text, text_pair)."""
  if pair:
    return make_signature([text_spec("text"), text_spec("text_pair")])(
        lambda text, text_pair: fn(text, text_pair))
  return make_signature([text_spec("text")])(lambda text: fn(text, None))


TPU_FUNCTION_ALIAS = contract.TPU_FUNCTION_ALIAS


class Compiled:
  """A numeric core on int inputs [B, ...], compiled with XLA (or not), whose batch
  is padded to a power of two under XLA so that a bounded set of shapes compiles.

  Not a tf.Module: the signatures that call it carry its graph, and its variables
  belong to the task.
  """

  def __init__(self, fn: Callable, jit_compile: bool, pad_values: dict, *,
               rows_per_input: int = 1):
    self.jit_compile = jit_compile
    self.pad_values = dict(pad_values)
    self.rows_per_input = rows_per_input
    self._fn = tf.function(fn, jit_compile=jit_compile, autograph=False)

  def __call__(self, inputs: dict):
    """inputs {name: [B, ...]} -> fn's outputs, B·rows_per_input rows each."""
    if not self.jit_compile:
      return self._fn(inputs)
    batch = tf.shape(next(iter(inputs.values())))[0]
    rows = round_up(batch, POWERS_OF_TWO)
    outputs = self._fn({k: pad_rows(v, rows, self.pad_values.get(k, 0))
                        for k, v in inputs.items()})
    return tf.nest.map_structure(lambda y: y[:batch * self.rows_per_input], outputs)


def id_checks(token_ids, name: str, vocabulary_size: int) -> list:
  """Assertions (INVALID_ARGUMENT naming the input `name`) that every id of
  token_ids is in 0..vocabulary_size - 1, to depend on."""
  return [
      tf.debugging.assert_non_negative(token_ids, message=f"{name} must be >= 0"),
      tf.debugging.assert_less(token_ids, vocabulary_size,
                               message=f"{name} must be < the vocabulary size "
                                       f"{vocabulary_size}"),
  ]


def checked_ids(token_ids, padding_mask, *, names: tuple, vocabulary_size: int,
                buckets: Sequence[int], pad_id: int, bucketed: bool):
  """Preprocessed ids [B, L] and mask checked (XLA would clamp bad indices
  silently), then padded to a bucket length when `bucketed`.

  Returns:
    (token_ids, padding_mask) int32 [B, L'], and the checks to depend on.
  """
  ids_name, mask_name = names
  shape = tf.shape(token_ids)
  checks = [
      tf.debugging.assert_equal(shape, tf.shape(padding_mask),
                                message=f"{ids_name} and {mask_name} must have the same shape"),
      tf.debugging.assert_less_equal(shape[1], buckets[-1],
                                     message=f"{ids_name} may hold at most {buckets[-1]} tokens"),
      *id_checks(token_ids, ids_name, vocabulary_size),
  ]
  with tf.control_dependencies(checks):
    token_ids, padding_mask = tf.identity(token_ids), tf.identity(padding_mask)
  if bucketed:
    length = round_up(shape[1], buckets)
    token_ids = pad_columns(token_ids, length, pad_id)
    padding_mask = pad_columns(padding_mask, length, 0)
  return token_ids, padding_mask


def text_warmup(preprocessor, model_name: str, signature: str, batch_sizes, *,
                pair: bool) -> list:
  """One request per length bucket and batch size, of texts of exactly that length."""
  logs = []
  for length in preprocessor.bucket_lengths:
    text, text_pair = text_of_length(preprocessor, length, mask=False, pair=pair)
    for batch in batch_sizes:
      inputs = {"text": strings([text] * batch)}
      if pair:
        inputs["text_pair"] = strings([text_pair] * batch)
      logs.append(predict_log(model_name, signature, inputs))
  return logs


class TextPart(tf.Module):
  """A part whose one signature is serving_default on text (and text_pair when
  `pair`), warmed up at every length bucket."""

  def signatures(self) -> dict:
    return {"serving_default": self.serving_default}

  def warmup(self, model_name: str, batch_sizes) -> list:
    return text_warmup(self.task.preprocessor, model_name, "serving_default", batch_sizes,
                       pair=self.pair)


class Tokenize(tf.Module):
  """tokenize: text string [B] -> token_ids, padding_mask int32 [B, L], L a bucket."""

  def __init__(self, task, options: ExportOptions):
    super().__init__(name="tokenize")
    del options
    self.task = task

  @make_signature([text_spec("text")])
  def tokenize(self, text):
    inputs = self.task.preprocessor(text)
    return {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}

  def signatures(self) -> dict:
    return {"tokenize": self.tokenize}

  def warmup(self, model_name: str, batch_sizes) -> list:
    del batch_sizes
    mask = getattr(self.task.tokenizer, "mask_token", "") if self.task.task == "fill_mask" else ""
    text = f"Warm {mask} up." if mask else "Warm up."
    return [predict_log(model_name, "tokenize", {"text": strings([text])})]


class Embedding(tf.Module):
  """The backbone's outputs of text (and text_pair): sequence_output float32 [B, L, D]
  (0 at padding), pooled_output float32 [B, D], mean_output float32 [B, D] (the mean
  over real tokens, specials included: sentence-transformers' default pooling),
  padding_mask int32 [B, L]; with `normalize`, pooled and mean outputs have unit
  L2 norm."""

  def __init__(self, task, options: ExportOptions, *, names: tuple = ("embedding",),
               pair: bool | None = None):
    super().__init__(name="embedding")
    self.task = task
    self.names = names
    self.pair = options.pair if pair is None else pair
    self.normalize = options.normalize
    self._core = Compiled(self._numeric, options.jit_compile,
                          {"token_ids": task.tokenizer.pad_token_id})
    self.embedding = text_signature(self._embedding, self.pair)

  def _numeric(self, inputs):
    outputs = self.task.backbone(inputs)
    sequence = tf.cast(outputs["sequence_output"], tf.float32)           # [B, L, D]
    pooled = tf.cast(outputs["pooled_output"], tf.float32)               # [B, D]
    real = tf.cast(inputs["padding_mask"], tf.float32)[..., None]        # [B, L, 1]
    mean = tf.reduce_sum(sequence * real, axis=1) / tf.maximum(tf.reduce_sum(real, axis=1), 1.0)
    if self.normalize:
      pooled, mean = tf.math.l2_normalize(pooled, axis=-1), tf.math.l2_normalize(mean, axis=-1)
    return sequence * real, pooled, mean

  def _embedding(self, text, text_pair):
    inputs = self.task.preprocessor(text, text_pair)
    sequence, pooled, mean = self._core(inputs)
    return {"sequence_output": sequence, "pooled_output": pooled, "mean_output": mean,
            "padding_mask": inputs["padding_mask"]}

  def signatures(self) -> dict:
    return {name: self.embedding for name in self.names}

  def warmup(self, model_name: str, batch_sizes) -> list:
    logs = []
    for name in self.names:
      sizes = batch_sizes if name == "serving_default" else (1,)
      logs += text_warmup(self.task.preprocessor, model_name, name, sizes, pair=self.pair)
    return logs
