"""A small typed client over the stock `tensorflow_serving.apis` stubs.

  client = ServingClient("127.0.0.1:8500", "xlm_roberta")
  client.fill_mask(["The capital of France is <mask>."])

Works unchanged against TF Serving and `serving.server`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Mapping, Sequence

import grpc
import numpy as np
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def _to_proto(value):
  from tensorflow import make_tensor_proto  # TensorProto conversion, no ops run
  return make_tensor_proto(value)


def _from_proto(proto):
  from tensorflow import make_ndarray
  return make_ndarray(proto)


@dataclasses.dataclass(frozen=True)
class Filler:
  token: str
  token_id: int
  score: float


class ServingClient:
  """Predict, metadata and status calls for one model on one server."""

  def __init__(self, target: str, model: str, *, version: int | None = None,
               label: str | None = None, timeout: float = 30.0, retries: int = 3):
    if version is not None and label is not None:
      raise ValueError("give a version or a label, not both")
    self.model, self.version, self.label = model, version, label
    self.timeout, self.retries = timeout, retries
    self.channel = grpc.insecure_channel(target, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

  def close(self):
    self.channel.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def _spec(self, spec, signature: str | None = None):
    spec.name = self.model
    if self.version is not None:
      spec.version.value = self.version
    if self.label is not None:
      spec.version_label = self.label
    if signature is not None:
      spec.signature_name = signature

  def _call(self, method, request):
    delay = 0.1
    for attempt in range(self.retries + 1):
      try:
        return method(request, timeout=self.timeout)
      except grpc.RpcError as e:  # only UNAVAILABLE is worth another try
        if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
          raise
        time.sleep(delay)
        delay *= 2

  def predict(self, inputs: Mapping[str, object], signature: str = "serving_default") -> dict:
    """Runs a signature; inputs and outputs are numpy arrays (strings as bytes)."""
    request = predict_pb2.PredictRequest()
    self._spec(request.model_spec, signature)
    for key, value in inputs.items():
      request.inputs[key].CopyFrom(_to_proto(value))
    response = self._call(self.prediction.Predict, request)
    return {key: _from_proto(value) for key, value in response.outputs.items()}

  def fill_mask(self, texts: Sequence[str]) -> list:
    """For each text, for each mask token, the fillers best first."""
    return fill_mask_answers(
        self.predict({"text": np.array([t.encode("utf-8") for t in texts], dtype=object)}))

  def metadata(self):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    self._spec(request.model_spec)
    response = self._call(self.prediction.GetModelMetadata, request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return signatures

  def status(self):
    request = get_model_status_pb2.GetModelStatusRequest()
    self._spec(request.model_spec)
    return self._call(self.models.GetModelStatus, request)


def fill_mask_answers(out: dict) -> list:
  """A fill-mask signature's outputs as [text][mask][rank] Fillers."""
  answers = []
  for b, count in enumerate(out["num_masks"]):
    answers.append([[Filler(out["top_k_tokens"][b, m, k].decode("utf-8", "replace"),
                            int(out["top_k_ids"][b, m, k]), float(out["top_k_scores"][b, m, k]))
                     for k in range(out["top_k_ids"].shape[2])] for m in range(int(count))])
  return answers


def format_replaced(texts: Sequence[str], out: dict) -> str:
  """A readable table of a replaced-token detection answer."""
  lines = []
  for b, text in enumerate(texts):
    lines.append(text)
    for token, probability, real in zip(out["tokens"][b], out["replaced_probability"][b],
                                        out["padding_mask"][b]):
      if real:
        flag = "  replaced?" if probability > 0.5 else ""
        lines.append(f"  {token.decode('utf-8', 'replace'):<16} {probability:.4f}{flag}")
  return "\n".join(lines)


def format_fill_mask(texts: Sequence[str], answers: list) -> str:
  """A readable table of `fill_mask` answers."""
  lines = []
  for text, masks in zip(texts, answers):
    lines.append(text)
    if not masks:
      lines.append("  (no <mask> in this text)")
    for m, fillers in enumerate(masks):
      lines.append(f"  mask {m + 1}:")
      width = max((len(f.token) for f in fillers), default=5)
      for rank, f in enumerate(fillers, 1):
        lines.append(f"    {rank:>2}. {f.token or repr(f.token):<{width}}  {f.score:.4f}  (id {f.token_id})")
  return "\n".join(lines)
