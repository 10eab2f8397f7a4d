"""SavedModel export: the serving module, its signatures, warmup requests.

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

import tensorflow as tf

from tfhub_models.models.xlm_roberta import XLMRobertaMaskedLM, find_masks

WARMUP_FILE = "tf_serving_warmup_requests"
FILL_MASK_SIGNATURES = ("serving_default", "logits", "tokenize")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  top_k: int = 5
  jit_compile: bool = True
  # Batch sizes the warmup requests cover, per length bucket.  With XLA a batch
  # is padded to the next power of two, so powers of two cover every size up to
  # the largest one.
  warmup_batch_sizes: tuple = (1, 2, 4, 8)


def _next_power_of_two(n: tf.Tensor) -> tf.Tensor:
  """Smallest power of two >= max(n, 1), int32 scalar."""
  n = tf.maximum(tf.cast(n, tf.int32), 1)
  exponent = tf.math.ceil(tf.math.log(tf.cast(n, tf.float64)) / tf.math.log(tf.constant(2.0, tf.float64)))
  power = tf.cast(tf.pow(tf.constant(2.0, tf.float64), exponent), tf.int32)
  return tf.where(power < n, power * 2, power)  # guards against log rounding down


def _pad_rows(x: tf.Tensor, rows: tf.Tensor, value) -> tf.Tensor:
  """Pads x [B, ...] with `value` up to `rows` rows."""
  extra = rows - tf.shape(x)[0]
  paddings = tf.concat([[[0, extra]], tf.zeros([tf.rank(x) - 1, 2], tf.int32)], axis=0)
  return tf.pad(x, paddings, constant_values=value)


class FillMaskServingModule(tf.Module):
  """Serving signatures of a fill-mask task (XLM-RoBERTa, ELECTRA generator)."""

  def __init__(self, task: XLMRobertaMaskedLM, options: ExportOptions = ExportOptions()):
    super().__init__(name="fill_mask_serving")
    self.task = task
    self.jit_compile = options.jit_compile
    self.top_k = max(1, min(int(options.top_k), task.backbone.config.vocabulary_size))
    self._top_k_core = tf.function(self._top_k_numeric, jit_compile=options.jit_compile,
                                   autograph=False)
    self._logits_core = tf.function(self._logits_numeric, jit_compile=options.jit_compile,
                                    autograph=False)

  def _top_k_numeric(self, token_ids, padding_mask, mask_positions):
    logits = self.task(token_ids, padding_mask, mask_positions)          # [B, M, V]
    scores, ids = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=self.top_k)
    return ids, scores

  def _logits_numeric(self, token_ids, padding_mask, mask_positions):
    return self.task(token_ids, padding_mask, mask_positions)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
  def serving_default(self, text):
    """Top-k fillers of every `<mask>` in each text.

    Returns:
      top_k_ids int32 [B, M, K] (-1 past a row's masks), top_k_scores float32
      [B, M, K] (probabilities, 0 past a row's masks), top_k_tokens string
      [B, M, K] (each filler detokenized alone, "" past a row's masks),
      num_masks int32 [B]; M is the largest number of masks in the batch.
    """
    inputs = self.task.preprocessor(text)
    token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
    mask_positions, num_masks = find_masks(token_ids, self.task.tokenizer.mask_token_id)
    batch = tf.shape(token_ids)[0]
    most = tf.shape(mask_positions)[1]
    if self.jit_compile:
      # Bounded shapes for XLA: batch and mask count rounded up to powers of two.
      rows = _next_power_of_two(batch)
      masks = _next_power_of_two(most)
      padded_positions = tf.pad(mask_positions, [[0, 0], [0, masks - most]])
      ids, scores = self._top_k_core(
          _pad_rows(token_ids, rows, self.task.tokenizer.pad_token_id),
          _pad_rows(padding_mask, rows, 0), _pad_rows(padded_positions, rows, 0))
      ids, scores = ids[:batch, :most], scores[:batch, :most]
    else:
      ids, scores = self._top_k_core(token_ids, padding_mask, mask_positions)
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
    """Vocabulary logits float32 [B, M, V] at preprocessed mask positions."""
    return {"logits": self._logits_core(token_ids, padding_mask, mask_positions)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
  def tokenize(self, text):
    """token_ids, padding_mask: int32 [B, L], L a bucket length."""
    inputs = self.task.preprocessor(text)
    return {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}

  def signatures(self) -> dict:
    return {"serving_default": self.serving_default.get_concrete_function(),
            "logits": self.logits.get_concrete_function(),
            "tokenize": self.tokenize.get_concrete_function()}


# ---------------------------------------------------------------------------
# Warmup requests.

def _predict_log(model_name: str, signature: str, inputs: dict):
  from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
  for key, value in inputs.items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
  return prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))


def fill_mask_warmup(module: FillMaskServingModule, model_name: str,
                     batch_sizes: Sequence[int]) -> list:
  """PredictionLogs covering every length bucket (and batch sizes) of each signature.

  A text of `<mask>` followed by n-3 literal `<unk>` tokenizes to exactly n
  ids, whatever the vocabulary, so each bucket is hit exactly.
  """
  import numpy as np

  logs = []
  mask_id = module.task.tokenizer.mask_token_id
  for length in module.task.preprocessor.bucket_lengths:
    text = "<mask>" + " <unk>" * (length - 3)
    for batch in batch_sizes:
      logs.append(_predict_log(model_name, "serving_default",
                               {"text": np.array([text.encode()] * batch, dtype=object)}))
    token_ids = np.full([1, length], 3, np.int32)
    token_ids[0, 0], token_ids[0, 1], token_ids[0, -1] = 0, mask_id, 2
    logs.append(_predict_log(model_name, "logits", {
        "token_ids": token_ids, "padding_mask": np.ones([1, length], np.int32),
        "mask_positions": np.array([[1]], np.int32)}))
  logs.append(_predict_log(model_name, "tokenize",
                           {"text": np.array([b"Warm <mask> up."], dtype=object)}))
  return logs


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


def export(task, base: str | os.PathLike, name: str, version: int | None = None,
           options: ExportOptions = ExportOptions()) -> pathlib.Path:
  """Writes BASE/NAME/VERSION atomically and returns its path."""
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
  if not isinstance(task, XLMRobertaMaskedLM):
    raise TypeError(f"cannot export a {type(task).__name__}")
  module = FillMaskServingModule(task, options)
  # The temporary directory is a hidden sibling: same file system, so the final
  # rename is atomic, and a non-numeric name, which TF Serving ignores.
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{int(version)}-", dir=model_dir))
  try:
    tf.saved_model.save(module, str(staging), signatures=module.signatures())
    write_warmup(staging, fill_mask_warmup(module, name, options.warmup_batch_sizes))
    os.chmod(staging, 0o755)
    if final.exists():
      raise FileExistsError(f"{final} appeared while exporting; versions are never overwritten")
    os.rename(staging, final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return final
