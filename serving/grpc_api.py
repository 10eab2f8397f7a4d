"""TF Serving's gRPC services over a `ServingCore`: protos to core calls and back.

  tensorflow.serving.PredictionService   Predict, GetModelMetadata
                                         (Classify, Regress, MultiInference: UNIMPLEMENTED)
  tensorflow.serving.ModelService        GetModelStatus, HandleReloadConfigRequest
  grpc.health.v1.Health
"""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving import tensors
from serving.core import ServingCore
from serving.errors import ServingError

# TF Serving accepts messages up to 2 GB; generation outputs need more than gRPC's 4 MB.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# Names the health service answers for: the server's own (""), TF Serving's
# unqualified service names and the services' full names.
HEALTH_NAMES = ("", "PredictionService", "ModelService", "tensorflow.serving.PredictionService",
                "tensorflow.serving.ModelService")


def _abort(context, error: ServingError):
  context.abort(error.code, error.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict and GetModelMetadata; TensorProtos are decoded up to `max_request_bytes`."""

  def __init__(self, core: ServingCore, max_request_bytes: int):
    self._core, self._max_request_bytes = core, max_request_bytes

  def Predict(self, request, context):  # noqa: N802
    limit = self._max_request_bytes

    def read_inputs(signature):
      return {key: tensors.from_proto(key, tensor, limit) for key, tensor in request.inputs.items()}

    try:
      served, outputs = self._core.predict(request.model_spec, read_inputs,
                                           request.output_filter, "GRPC")
    except ServingError as e:
      _abort(context, e)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = served.name
    response.model_spec.version.value = served.version
    response.model_spec.signature_name = served.signature_name
    for key, value in outputs.items():
      response.outputs[key].CopyFrom(tensors.to_proto(value))
    return response

  def GetModelMetadata(self, request, context):  # noqa: N802
    try:
      return self._core.metadata(request.model_spec, request.metadata_field, "GRPC")
    except ServingError as e:
      _abort(context, e)

  def _unimplemented(self, request, context):
    context.abort(grpc.StatusCode.UNIMPLEMENTED,
                  "Classify, Regress and MultiInference need classification or regression "
                  "signatures; the exported models have predict signatures only: use Predict")

  Classify = Regress = MultiInference = _unimplemented


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus and HandleReloadConfigRequest."""

  def __init__(self, core: ServingCore):
    self._core = core

  def GetModelStatus(self, request, context):  # noqa: N802
    try:
      return self._core.status(request.model_spec, "GRPC")
    except ServingError as e:
      _abort(context, e)

  def HandleReloadConfigRequest(self, request, context):  # noqa: N802
    try:
      self._core.reload_config(request.config, from_request=True)
    except ServingError as e:
      _abort(context, e)
    return model_management_pb2.ReloadConfigResponse()


def build_grpc(core: ServingCore, host: str, port: int, *, max_workers: int = 64,
               credentials=None, channel_arguments=(), max_request_bytes: int = MAX_MESSAGE_BYTES):
  """An unstarted grpc.Server with every service; returns (server, bound port, health).

  Raises OSError when the address cannot be bound.
  """
  options = [("grpc.max_receive_message_length", max_request_bytes),
             ("grpc.max_send_message_length", MAX_MESSAGE_BYTES), *channel_arguments]
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(core, max_request_bytes), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
  health_servicer = health.HealthServicer()
  health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
  address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
  try:
    bound = (server.add_secure_port(address, credentials) if credentials
             else server.add_insecure_port(address))
  except RuntimeError as e:  # grpcio raises this for a port in use
    raise OSError(f"gRPC cannot bind {address}: {e}") from None
  if bound == 0:
    raise OSError(f"gRPC cannot bind {address}")
  return server, bound, health_servicer
