"""SavedModel export: the serving modules, their signatures, warmup requests.

The only place that knows signature names.  A signature is tokenization in
plain graph mode, then a numeric core compiled with XLA (`jit_compile=True`,
unless exported with `jit_compile=False`), then detokenization.  Exports are
written to a hidden temporary directory beside the target and renamed into
place as the last step, so a server polling BASE/NAME never sees half a
version.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import tempfile
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfhub_models.models import bart_generation, electra, xlm_roberta
from tfhub_models.tasks import find_masks

WARMUP_FILE = "tf_serving_warmup_requests"


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  top_k: int = 5
  jit_compile: bool = True
  # Batch sizes the warmup requests cover, per length bucket.  With XLA a batch
  # is padded to the next power of two, so powers of two cover every size up to
  # the largest one.
  warmup_batch_sizes: tuple = (1, 2, 4, 8)
  # Sentence-pair models (ELECTRA): a second input `text_pair`.
  pair: bool = False
  # Generation (BART): new tokens per request (None: the model's max_length - 1)
  # and the seed of the stateless samplers.
  max_new_tokens: int | None = None
  seed: tuple = (0, 0)


def _next_power_of_two(n: tf.Tensor) -> tf.Tensor:
  """Smallest power of two >= max(n, 1), int32 scalar."""
  n = tf.maximum(tf.cast(n, tf.int32), 1)
  two = tf.constant(2.0, tf.float64)
  exponent = tf.math.ceil(tf.math.log(tf.cast(n, tf.float64)) / tf.math.log(two))
  power = tf.cast(tf.pow(two, exponent), tf.int32)
  return tf.where(power < n, power * 2, power)  # guards against log rounding down


def _pad_rows(x: tf.Tensor, rows: tf.Tensor, value) -> tf.Tensor:
  """Pads x [B, ...] with `value` up to `rows` rows."""
  extra = rows - tf.shape(x)[0]
  paddings = tf.concat([[[0, extra]], tf.zeros([tf.rank(x) - 1, 2], tf.int32)], axis=0)
  return tf.pad(x, paddings, constant_values=value)


def _text_spec(name: str) -> tf.TensorSpec:
  return tf.TensorSpec([None], tf.string, name=name)


def _text_signature(fn, pair: bool):
  """A tf.function of `text` (and `text_pair`) [B] strings calling fn(text, text_pair)."""
  if pair:
    return tf.function(lambda text, text_pair: fn(text, text_pair),
                       input_signature=[_text_spec("text"), _text_spec("text_pair")])
  return tf.function(lambda text: fn(text, None), input_signature=[_text_spec("text")])


def _predict_log(model_name: str, signature: str, inputs: dict):
  from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
  for key, value in inputs.items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
  return prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))


def _strings(texts) -> np.ndarray:
  return np.array([t.encode("utf-8") for t in texts], dtype=object)


def _text_of_length(tokenizer, length: int, *, mask: bool, pair: bool) -> tuple:
  """(text, text_pair) that preprocess to exactly `length` ids, whatever the vocabulary.

  Literal special tokens are one id each: a mask (when asked) and unknowns.
  """
  specials = 3 if pair else 2
  words = [tokenizer.mask_token] * mask + [tokenizer.unk_token] * (length - specials - mask)
  return "".join(words), ("" if pair else None)


class _ServingModule(tf.Module):
  """What every serving module shares: the task, XLA switch, bucketed batches."""

  def __init__(self, task, options: ExportOptions, name: str):
    super().__init__(name=name)
    self.task = task
    self.options = options
    self.jit_compile = options.jit_compile
    self.pair = options.pair
    self._embed_core = tf.function(self._embed_numeric, jit_compile=options.jit_compile,
                                   autograph=False)

  def _compiled_on_bucket(self, core, batched: Sequence[tf.Tensor], pad_values: Sequence[int]):
    """Runs core on inputs [B, ...], with B rounded up to a power of two under XLA."""
    if not self.jit_compile:
      return core(*batched)
    batch = tf.shape(batched[0])[0]
    rows = _next_power_of_two(batch)
    outputs = core(*[_pad_rows(x, rows, v) for x, v in zip(batched, pad_values)])
    return tf.nest.map_structure(lambda y: y[:batch], outputs)

  # Embedding (ELECTRA exports): the backbone's outputs.
  def _embed_numeric(self, token_ids, segment_ids, padding_mask):
    outputs = self.task.backbone(token_ids, segment_ids, padding_mask)
    return (tf.cast(outputs["sequence_output"], tf.float32),
            tf.cast(outputs["pooled_output"], tf.float32))

  def _embedding(self, text, text_pair):
    """sequence_output float32 [B, L, D] (0 at padding), pooled_output float32 [B, D]."""
    inputs = self.task.preprocessor(text, text_pair)
    pad = self.task.tokenizer.pad_token_id
    sequence, pooled = self._compiled_on_bucket(
        self._embed_core, [inputs["token_ids"], inputs["segment_ids"], inputs["padding_mask"]],
        [pad, 0, 0])
    real = tf.cast(inputs["padding_mask"], tf.float32)[..., None]
    return {"sequence_output": sequence * real, "pooled_output": pooled,
            "padding_mask": inputs["padding_mask"]}

  def _embedding_warmup(self, model_name: str, signature: str, batch_sizes) -> list:
    logs = []
    for length in self.task.preprocessor.bucket_lengths:
      text, text_pair = _text_of_length(self.task.tokenizer, length, mask=False, pair=self.pair)
      for batch in batch_sizes:
        inputs = {"text": _strings([text] * batch)}
        if self.pair:
          inputs["text_pair"] = _strings([text_pair] * batch)
        logs.append(_predict_log(model_name, signature, inputs))
    return logs


class FillMaskServingModule(_ServingModule):
  """Fill-mask signatures (XLM-RoBERTa, ELECTRA generator): serving_default,
  logits, tokenize, and embedding for ELECTRA."""

  def __init__(self, task, options: ExportOptions = ExportOptions()):
    super().__init__(task, options, name="fill_mask_serving")
    if options.pair:
      raise ValueError("fill-mask exports take one text; --pair is for ELECTRA discriminators "
                       "and encoders")
    self.top_k = max(1, min(int(options.top_k), task.backbone.config.vocabulary_size))
    self.with_embedding = isinstance(task, electra.ElectraMaskedLM)
    self._top_k_core = tf.function(self._top_k_numeric, jit_compile=options.jit_compile,
                                   autograph=False)
    self._logits_core = tf.function(self._logits_numeric, jit_compile=options.jit_compile,
                                    autograph=False)
    if self.with_embedding:
      self.embedding = _text_signature(self._embedding, pair=False)

  def _top_k_numeric(self, token_ids, padding_mask, mask_positions):
    logits = self.task(token_ids, padding_mask, mask_positions)          # [B, M, V]
    scores, ids = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=self.top_k)
    return ids, scores

  def _logits_numeric(self, token_ids, padding_mask, mask_positions):
    return self.task(token_ids, padding_mask, mask_positions)

  @tf.function(input_signature=[_text_spec("text")])
  def serving_default(self, text):
    """Top-k fillers of every mask token in each text.

    Returns:
      top_k_ids int32 [B, M, K] (-1 past a row's masks), top_k_scores float32
      [B, M, K] (probabilities, 0 past a row's masks), top_k_tokens string
      [B, M, K] (each filler detokenized alone, "" past a row's masks),
      num_masks int32 [B]; M is the largest number of masks in the batch.
    """
    inputs = self.task.preprocessor(text)
    token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
    mask_positions, num_masks = find_masks(token_ids, self.task.tokenizer.mask_token_id)
    most = tf.shape(mask_positions)[1]
    if self.jit_compile:  # the mask count, too, rounded up to a power of two
      mask_positions = tf.pad(mask_positions, [[0, 0], [0, _next_power_of_two(most) - most]])
    ids, scores = self._compiled_on_bucket(
        self._top_k_core, [token_ids, padding_mask, mask_positions],
        [self.task.tokenizer.pad_token_id, 0, 0])
    ids, scores = ids[:, :most], scores[:, :most]
    valid = (tf.range(most)[None, :] < num_masks[:, None])[..., None]    # [B, M, 1]
    ids = tf.where(valid, ids, -1)
    return {
        "top_k_ids": ids,
        "top_k_scores": tf.where(valid, scores, 0.0),
        "top_k_tokens": tf.where(valid, self.task.tokenizer.id_to_text(tf.maximum(ids, 0)), ""),
        "num_masks": num_masks,
    }

  @tf.function(input_signature=[
      tf.TensorSpec([None, None], tf.int32, name="token_ids"),
      tf.TensorSpec([None, None], tf.int32, name="padding_mask"),
      tf.TensorSpec([None, None], tf.int32, name="mask_positions"),
  ])
  def logits(self, token_ids, padding_mask, mask_positions):
    """Vocabulary logits float32 [B, M, V] at preprocessed mask positions.

    The inputs are checked (XLA would clamp bad indices silently), then padded
    like serving_default's: L to a bucket length, B and M to powers of two.
    """
    buckets = self.task.preprocessor.bucket_lengths
    shape = tf.shape(token_ids)
    vocabulary = self.task.backbone.config.vocabulary_size
    checks = [
        tf.debugging.assert_equal(shape, tf.shape(padding_mask),
                                  message="token_ids and padding_mask must have the same shape"),
        tf.debugging.assert_equal(shape[0], tf.shape(mask_positions)[0],
                                  message="mask_positions must have one row per token_ids row"),
        tf.debugging.assert_less_equal(shape[1], buckets[-1],
                                       message=f"token_ids may hold at most {buckets[-1]} tokens"),
        tf.debugging.assert_non_negative(token_ids, message="token_ids must be >= 0"),
        tf.debugging.assert_less(token_ids, vocabulary,
                                 message=f"token_ids must be < the vocabulary size {vocabulary}"),
        tf.debugging.assert_non_negative(mask_positions, message="mask_positions must be >= 0"),
        tf.debugging.assert_less(mask_positions, shape[1],
                                 message="mask_positions must be < the length of token_ids"),
    ]
    with tf.control_dependencies(checks):
      token_ids, padding_mask, mask_positions = (
          tf.identity(token_ids), tf.identity(padding_mask), tf.identity(mask_positions))
    if not self.jit_compile:
      return {"logits": self._logits_core(token_ids, padding_mask, mask_positions)}
    bucket = tf.reduce_sum(tf.cast(tf.constant(buckets) < shape[1], tf.int32))
    length = tf.gather(tf.constant(buckets, tf.int32), tf.minimum(bucket, len(buckets) - 1))
    token_ids = tf.pad(token_ids, [[0, 0], [0, length - shape[1]]],
                       constant_values=self.task.tokenizer.pad_token_id)
    padding_mask = tf.pad(padding_mask, [[0, 0], [0, length - shape[1]]])
    most = tf.shape(mask_positions)[1]
    mask_positions = tf.pad(mask_positions, [[0, 0], [0, _next_power_of_two(most) - most]])
    logits = self._compiled_on_bucket(self._logits_core, [token_ids, padding_mask, mask_positions],
                                      [self.task.tokenizer.pad_token_id, 0, 0])
    return {"logits": logits[:, :most]}

  @tf.function(input_signature=[_text_spec("text")])
  def tokenize(self, text):
    """token_ids, padding_mask: int32 [B, L], L a bucket length."""
    inputs = self.task.preprocessor(text)
    return {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}

  def signatures(self) -> dict:
    out = {"serving_default": self.serving_default.get_concrete_function(),
           "logits": self.logits.get_concrete_function(),
           "tokenize": self.tokenize.get_concrete_function()}
    if self.with_embedding:
      out["embedding"] = self.embedding.get_concrete_function()
    return out

  def warmup(self, model_name: str, batch_sizes: Sequence[int]) -> list:
    logs = []
    tokenizer = self.task.tokenizer
    for length in self.task.preprocessor.bucket_lengths:
      text, _ = _text_of_length(tokenizer, length, mask=True, pair=False)
      for batch in batch_sizes:
        logs.append(_predict_log(model_name, "serving_default", {"text": _strings([text] * batch)}))
      for masks in (2, 4):  # mask counts round up to powers of two; more compile on first use
        if masks + 2 <= length:
          several = text.replace(tokenizer.unk_token, tokenizer.mask_token, masks - 1)
          logs.append(_predict_log(model_name, "serving_default", {"text": _strings([several])}))
      inputs = self.task.preprocessor(tf.constant([text]))
      positions, _ = find_masks(inputs["token_ids"], tokenizer.mask_token_id)
      logs.append(_predict_log(model_name, "logits", {
          "token_ids": inputs["token_ids"].numpy(), "padding_mask": inputs["padding_mask"].numpy(),
          "mask_positions": positions.numpy()}))
    logs.append(_predict_log(model_name, "tokenize",
                             {"text": _strings([f"Warm {tokenizer.mask_token} up."])}))
    if self.with_embedding:
      logs += self._embedding_warmup(model_name, "embedding", (1,))
    return logs


class TextServingModule(_ServingModule):
  """ELECTRA discriminator or encoder: serving_default and embedding.

  serving_default answers replaced-token probabilities for a discriminator
  (`detect=True`), and the embedding outputs for an encoder.
  """

  def __init__(self, task, options: ExportOptions = ExportOptions(), *, detect: bool):
    super().__init__(task, options, name="replaced_token_serving" if detect else "embedding_serving")
    self._probability_core = tf.function(self._probability_numeric,
                                         jit_compile=options.jit_compile, autograph=False)
    self.serving_default = _text_signature(self._detect if detect else self._embedding, self.pair)
    self.embedding = _text_signature(self._embedding, self.pair)

  def _probability_numeric(self, token_ids, segment_ids, padding_mask):
    return tf.sigmoid(self.task(token_ids, segment_ids, padding_mask))

  def _detect(self, text, text_pair):
    """token_ids, padding_mask int32 [B, L], tokens string [B, L] ("" at padding),
    replaced_probability float32 [B, L] (sigmoid of the discriminator logit, 0 at padding)."""
    inputs = self.task.preprocessor(text, text_pair)
    token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
    probability = self._compiled_on_bucket(
        self._probability_core, [token_ids, inputs["segment_ids"], padding_mask],
        [self.task.tokenizer.pad_token_id, 0, 0])
    real = padding_mask > 0
    return {"token_ids": token_ids,
            "tokens": tf.where(real, self.task.tokenizer.id_to_token(token_ids), ""),
            "padding_mask": padding_mask,
            "replaced_probability": tf.where(real, probability, 0.0)}

  def signatures(self) -> dict:
    return {"serving_default": self.serving_default.get_concrete_function(),
            "embedding": self.embedding.get_concrete_function()}

  def warmup(self, model_name: str, batch_sizes: Sequence[int]) -> list:
    return (self._embedding_warmup(model_name, "serving_default", batch_sizes)
            + self._embedding_warmup(model_name, "embedding", (1,)))


class GenerateServingModule(_ServingModule):
  """BART: serving_default (text -> generated text), generate_ids, tokenize, detokenize.

  The whole generation (encoder, decoding loop, sampler) is one function,
  compiled with XLA unless jit_compile is off; the sampler is the task's
  (`task.compile(sampler=...)`), the seed fixed at export.
  """

  def __init__(self, task: bart_generation.BartSeq2SeqLM, options: ExportOptions = ExportOptions()):
    super().__init__(task, options, name="generate_serving")
    if options.pair:
      raise ValueError("--pair is for ELECTRA; BART takes one text")
    generation_config = task.backbone.config.generation
    new_tokens = options.max_new_tokens or generation_config.max_length - 1
    if new_tokens < 1:
      raise ValueError("max_new_tokens must be at least 1")
    self.max_length = int(new_tokens) + 1
    task.check_max_length(self.max_length)
    self.returns = task.sampler.num_return_sequences if task.sampler.name == "beam" else 1
    seed = tf.constant(list(options.seed), tf.int32)
    self._generate_core = tf.function(
        lambda ids, mask: task.generate_ids(ids, mask, self.max_length, seed),
        jit_compile=options.jit_compile, autograph=False)

  def _generate(self, token_ids, padding_mask):
    """Generates for preprocessed inputs, batch rounded up to a power of two under XLA."""
    if not self.jit_compile:
      return self._generate_core(token_ids, padding_mask)
    batch = tf.shape(token_ids)[0]
    rows = _next_power_of_two(batch)
    ids, scores = self._generate_core(
        _pad_rows(token_ids, rows, self.task.tokenizer.pad_token_id), _pad_rows(padding_mask, rows, 0))
    return ids[: batch * self.returns], scores[: batch * self.returns]

  @tf.function(input_signature=[_text_spec("text")])
  def serving_default(self, text):
    """generated_text string [B·R], generated_ids int32 [B·R, T] (the decoder start
    id first, padding after the end), scores float32 [B·R] (what the sampler ranked
    by: summed log-probabilities, length-penalized for beam search); R is
    num_return_sequences (1 but for beam search), rows of one input adjacent."""
    inputs = self.task.preprocessor(text)
    ids, scores = self._generate(inputs["token_ids"], inputs["padding_mask"])
    return {"generated_text": self.task.tokenizer.detokenize(ids), "generated_ids": ids,
            "scores": scores}

  @tf.function(input_signature=[
      tf.TensorSpec([None, None], tf.int32, name="encoder_token_ids"),
      tf.TensorSpec([None, None], tf.int32, name="encoder_padding_mask")])
  def generate_ids(self, encoder_token_ids, encoder_padding_mask):
    """generated_ids int32 [B·R, T] for preprocessed encoder inputs (checked, then
    padded to a bucket length as serving_default's)."""
    buckets = self.task.preprocessor.bucket_lengths
    shape = tf.shape(encoder_token_ids)
    vocabulary = self.task.backbone.config.vocabulary_size
    checks = [
        tf.debugging.assert_equal(shape, tf.shape(encoder_padding_mask),
                                  message="encoder_token_ids and encoder_padding_mask must have "
                                          "the same shape"),
        tf.debugging.assert_less_equal(shape[1], buckets[-1],
                                       message=f"encoder_token_ids may hold at most "
                                               f"{buckets[-1]} tokens"),
        tf.debugging.assert_non_negative(encoder_token_ids,
                                         message="encoder_token_ids must be >= 0"),
        tf.debugging.assert_less(encoder_token_ids, vocabulary,
                                 message=f"encoder_token_ids must be < the vocabulary size "
                                         f"{vocabulary}"),
    ]
    with tf.control_dependencies(checks):
      token_ids, padding_mask = tf.identity(encoder_token_ids), tf.identity(encoder_padding_mask)
    bucket = tf.reduce_sum(tf.cast(tf.constant(buckets) < shape[1], tf.int32))
    length = tf.gather(tf.constant(buckets, tf.int32), tf.minimum(bucket, len(buckets) - 1))
    token_ids = tf.pad(token_ids, [[0, 0], [0, length - shape[1]]],
                       constant_values=self.task.tokenizer.pad_token_id)
    padding_mask = tf.pad(padding_mask, [[0, 0], [0, length - shape[1]]])
    ids, _ = self._generate(token_ids, padding_mask)
    return {"generated_ids": ids}

  @tf.function(input_signature=[_text_spec("text")])
  def tokenize(self, text):
    """token_ids, padding_mask int32 [B, L] (`<s> ... </s>`, L a bucket length)."""
    inputs = self.task.preprocessor(text)
    return {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids")])
  def detokenize(self, token_ids):
    """text string [B] of ids int32 [B, T], special tokens dropped."""
    return {"text": self.task.tokenizer.detokenize(token_ids)}

  def signatures(self) -> dict:
    return {name: getattr(self, name).get_concrete_function()
            for name in ("serving_default", "generate_ids", "tokenize", "detokenize")}

  def warmup(self, model_name: str, batch_sizes: Sequence[int]) -> list:
    logs = []
    for length in self.task.preprocessor.bucket_lengths:
      text, _ = _text_of_length(self.task.tokenizer, length, mask=False, pair=False)
      for batch in batch_sizes:
        logs.append(_predict_log(model_name, "serving_default", {"text": _strings([text] * batch)}))
      inputs = self.task.preprocessor(tf.constant([text]))
      logs.append(_predict_log(model_name, "generate_ids", {
          "encoder_token_ids": inputs["token_ids"].numpy(),
          "encoder_padding_mask": inputs["padding_mask"].numpy()}))
    logs.append(_predict_log(model_name, "tokenize", {"text": _strings(["Warm up."])}))
    logs.append(_predict_log(model_name, "detokenize",
                             {"token_ids": np.array([[0, 2]], np.int32)}))
    return logs


def serving_module(task, options: ExportOptions = ExportOptions()) -> _ServingModule:
  """The serving module for a task module."""
  if isinstance(task, (xlm_roberta.XLMRobertaMaskedLM, electra.ElectraMaskedLM)):
    return FillMaskServingModule(task, options)
  if isinstance(task, electra.ElectraDiscriminator):
    return TextServingModule(task, options, detect=True)
  if isinstance(task, electra.ElectraEncoder):
    return TextServingModule(task, options, detect=False)
  if isinstance(task, bart_generation.BartSeq2SeqLM):
    return GenerateServingModule(task, options)
  raise TypeError(f"cannot export a {type(task).__name__} for serving (XLM-RoBERTa exports "
                  "need the masked-LM head)")


def write_warmup(directory: pathlib.Path, logs: list) -> pathlib.Path:
  path = directory / "assets.extra" / WARMUP_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for log in logs:
      writer.write(log.SerializeToString())
  return path


# ---------------------------------------------------------------------------
# Versioned, atomic export.

def next_version(model_dir: pathlib.Path) -> int:
  """One more than the largest numeric version directory (1 if none)."""
  versions = [int(p.name) for p in model_dir.iterdir()
              if p.is_dir() and p.name.isdigit()] if model_dir.exists() else []
  return max(versions, default=0) + 1


def _fsync_tree(directory: pathlib.Path) -> None:
  """Flushes every file and directory below `directory` to disk (before the rename)."""
  for root, _, files in os.walk(directory):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        os.fsync(f.fileno())
    handle = os.open(root, os.O_RDONLY)
    try:
      os.fsync(handle)
    finally:
      os.close(handle)


def write_atomically(base: str | os.PathLike, name: str, version: int | None,
                     write) -> pathlib.Path:
  """Calls write(staging_dir), then renames staging_dir to BASE/NAME/VERSION.

  The staging directory is a hidden sibling: same file system, so the rename
  is atomic, and a non-numeric name, which TF Serving ignores.  On any failure
  it is removed and nothing is left behind.
  """
  if not name or "/" in name or name.startswith("."):
    raise ValueError(f"invalid model name {name!r}")
  model_dir = pathlib.Path(base) / name
  model_dir.mkdir(parents=True, exist_ok=True)
  if version is None:
    version = next_version(model_dir)
  if int(version) < 1:
    raise ValueError(f"version must be a positive integer, got {version}")
  final = model_dir / str(int(version))
  if final.exists():
    raise FileExistsError(f"{final} already exists; versions are never overwritten")
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{int(version)}-", dir=model_dir))
  try:
    write(staging)
    os.chmod(staging, 0o755)
    _fsync_tree(staging)
    if final.exists():
      raise FileExistsError(f"{final} appeared while exporting; versions are never overwritten")
    os.rename(staging, final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return final


def export(task, base: str | os.PathLike, name: str, version: int | None = None,
           options: ExportOptions = ExportOptions()) -> pathlib.Path:
  """Writes the serving SavedModel of `task` to BASE/NAME/VERSION atomically."""
  module = serving_module(task, options)

  def write(staging: pathlib.Path):
    tf.saved_model.save(module, str(staging), signatures=module.signatures())
    write_warmup(staging, module.warmup(name, options.warmup_batch_sizes))

  return write_atomically(base, name, version, write)
