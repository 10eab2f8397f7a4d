"""TF Serving's gRPC services over a `ServingCore`: protos to core calls and back.

  tensorflow.serving.PredictionService   Predict, GetModelMetadata
                                         (Classify, Regress, MultiInference: UNIMPLEMENTED)
  tensorflow.serving.ModelService        GetModelStatus, HandleReloadConfigRequest
  grpc.health.v1.Health
"""

from __future__ import annotations

from concurrent import futures

import grpc
from google.protobuf import message_factory
from grpc_health.v1 import health, health_pb2_grpc
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2, prediction_service_pb2_grpc)

from serving import tensors
from serving.core import ServingCore
from serving.errors import ServingError, shown

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

  def Predict(self, request, context):
    limit = self._max_request_bytes

    def read_inputs(signature):
      # Names, dtypes and declared shapes against the signature before any value
      # is decoded: what a request declares costs nothing to send.
      signature.check_names(request.inputs)
      for key, tensor in request.inputs.items():
        signature.check_declared(key, tensor.dtype, [d.size for d in tensor.tensor_shape.dim]
                                 if not tensor.tensor_shape.unknown_rank else None)
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

  def GetModelMetadata(self, request, context):
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

  def GetModelStatus(self, request, context):
    try:
      return self._core.status(request.model_spec, "GRPC")
    except ServingError as e:
      _abort(context, e)

  def HandleReloadConfigRequest(self, request, context):
    try:
      self._core.reload_config(request.config, from_request=True)
    except ServingError as e:
      _abort(context, e)
    return model_management_pb2.ReloadConfigResponse()


class _Undecodable:
  """What a request's bytes became when they are not its message."""

  def __init__(self, message_name: str, error: Exception):
    self.message_name, self.error = message_name, error


def _lenient(message_class):
  """A request deserializer that never raises (grpcio answers INTERNAL and logs a
  traceback when one does): bytes that are not the message become _Undecodable."""
  def deserialize(data: bytes):
    try:
      return message_class.FromString(data)
    except Exception as e:  # DecodeError, RecursionError: the bytes' fault
      return _Undecodable(message_class.DESCRIPTOR.name, e)
  return deserialize


def _refusing_undecodable(method):
  def handle(request, context):
    if isinstance(request, _Undecodable):
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request is not a valid {request.message_name}: "
                    f"{shown(f'{type(request.error).__name__}: {request.error}', 200)}")
    return method(request, context)
  return handle


def _add_service(server, servicer, service_descriptor) -> None:
  """Registers every (unary) method of a service, as the generated
  add_*Servicer_to_server does, but with lenient request deserializers."""
  handlers = {}
  for method in service_descriptor.methods:
    request = message_factory.GetMessageClass(method.input_type)
    response = message_factory.GetMessageClass(method.output_type)
    handlers[method.name] = grpc.unary_unary_rpc_method_handler(
        _refusing_undecodable(getattr(servicer, method.name)),
        request_deserializer=_lenient(request), response_serializer=response.SerializeToString)
  server.add_generic_rpc_handlers(
      (grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers),))


def build_grpc(core: ServingCore, host: str, port: int, *, max_workers: int = 64,
               credentials=None, channel_arguments=(), max_request_bytes: int = MAX_MESSAGE_BYTES):
  """An unstarted grpc.Server with every service; returns (server, bound port, health).

  Raises OSError when the address cannot be bound.
  """
  options = [("grpc.max_receive_message_length", max_request_bytes),
             ("grpc.max_send_message_length", MAX_MESSAGE_BYTES), *channel_arguments]
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
  _add_service(server, PredictionService(core, max_request_bytes),
               prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"])
  _add_service(server, ModelService(core),
               model_service_pb2.DESCRIPTOR.services_by_name["ModelService"])
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
