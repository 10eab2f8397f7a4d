"""Warmup requests: `assets.extra/tf_serving_warmup_requests`, which TF Serving
replays before it serves a version, so XLA compiles those shapes at load time."""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from serving import contract

WARMUP_FILE = contract.WARMUP_FILE


def predict_log(model_name: str, signature: str, inputs: dict) -> prediction_log_pb2.PredictionLog:
  """One warmup record: a PredictRequest of `inputs` (name -> array) to `signature`."""
  request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
  for key, value in inputs.items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
  return prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))


def strings(texts) -> np.ndarray:
  return np.array([t.encode("utf-8") for t in texts], dtype=object)


def text_of_length(preprocessor, length: int, *, mask: bool, pair: bool) -> tuple:
  """(text, text_pair) that preprocess to exactly `length` ids, whatever the vocabulary.

  Literal special tokens are one id each: a mask (when asked) and unknowns.
  """
  tokenizer = preprocessor.tokenizer
  specials = preprocessor.special_count(2 if pair else 1)
  words = [tokenizer.mask_token] * mask + [tokenizer.unk_token] * (length - specials - mask)
  return "".join(words), ("" if pair else None)


def write_warmup(directory: pathlib.Path, logs: list) -> pathlib.Path:
  """Writes the records into directory/assets.extra/tf_serving_warmup_requests."""
  path = pathlib.Path(directory) / contract.WARMUP_PATH
  path.parent.mkdir(parents=True, exist_ok=True)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for log in logs:
      writer.write(log.SerializeToString())
  return path
