"""A local model server that speaks TF Serving's gRPC API.

  python -m serving.server --model_name NAME --model_base_path BASE/NAME [--port 8500]

It loads the newest numeric version under --model_base_path through the TF1
session loader (the path TF Serving's C++ loader corresponds to), replays its
warmup requests, and answers `tensorflow.serving.PredictionService/Predict`
and `GetModelMetadata`, `tensorflow.serving.ModelService/GetModelStatus`, and
the standard gRPC health service.  Unlike TF Serving it binds to 127.0.0.1
unless --host says otherwise.

This is the first cut used by the README's demo; REST, config files, version
polling and batching are tracked in the serving issue.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import signal
import sys
import threading
from concurrent import futures

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  (registers the ops the exports use)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,  # noqa: E402
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_log_pb2, prediction_service_pb2_grpc)

log = logging.getLogger("serving.server")

# Generation outputs can be large; TF Serving itself allows up to 2 GB.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class ServingError(Exception):
  """An error with the gRPC status code TF Serving would answer."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code


class LoadedVersion:
  """One SavedModel version in its own graph and session."""

  def __init__(self, name: str, version: int, path: pathlib.Path):
    self.name, self.version, self.path = name, version, path
    self.graph = tf.Graph()
    self.session = tf.compat.v1.Session(graph=self.graph)
    meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path))
    self.meta_graph = meta
    self.signatures = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}

  def warmup(self) -> int:
    """Replays assets.extra/tf_serving_warmup_requests; returns how many ran."""
    warmup = self.path / "assets.extra" / "tf_serving_warmup_requests"
    if not warmup.exists():
      return 0
    count = 0
    for record in tf.compat.v1.io.tf_record_iterator(str(warmup)):
      entry = prediction_log_pb2.PredictionLog.FromString(record)
      if entry.WhichOneof("log_type") == "predict_log":
        self.predict(entry.predict_log.request)
        count += 1
    return count

  def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    name = request.model_spec.signature_name or "serving_default"
    signature = self.signatures.get(name)
    if signature is None:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"Serving signature name: \"{name}\" not found in signature def")
    missing = sorted(set(signature.inputs) - set(request.inputs))
    if missing:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"input(s) missing from the request: {', '.join(missing)} "
                         f"(signature {name} takes {', '.join(sorted(signature.inputs))})")
    extra = sorted(set(request.inputs) - set(signature.inputs))
    if extra:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"input(s) not in signature {name}: {', '.join(extra)}")
    feed = {}
    for key, tensor in request.inputs.items():
      spec = signature.inputs[key]
      if tensor.dtype != spec.dtype:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {key} has dtype {types_pb2.DataType.Name(tensor.dtype)}, the signature "
            f"expects {types_pb2.DataType.Name(spec.dtype)}")
      try:
        value = tf.make_ndarray(tensor)
      except Exception as e:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input {key}: {e}") from None
      expected = [d.size for d in spec.tensor_shape.dim]
      if not spec.tensor_shape.unknown_rank and (
          len(expected) != value.ndim
          or any(e not in (-1, v) for e, v in zip(expected, value.shape))):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {key} has shape {list(value.shape)}, the signature expects "
                           f"{['?' if e == -1 else e for e in expected]}")
      feed[spec.name] = value
    wanted = list(request.output_filter) or sorted(signature.outputs)
    unknown = [k for k in wanted if k not in signature.outputs]
    if unknown:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"output_filter names unknown output(s): {', '.join(unknown)}")
    fetch = {k: signature.outputs[k].name for k in wanted}
    try:
      outputs = self.session.run(fetch, feed_dict=feed)
    except tf.errors.InvalidArgumentError as e:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, e.message) from None
    except tf.errors.OpError as e:
      raise ServingError(grpc.StatusCode.INTERNAL, e.message) from None
    response = predict_pb2.PredictResponse()
    response.model_spec.name = self.name
    response.model_spec.version.value = self.version
    response.model_spec.signature_name = name
    for key, value in outputs.items():
      response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response

  def close(self):
    self.session.close()


class ModelRegistry:
  """The served model: its newest numeric version directory."""

  def __init__(self, name: str, base_path: str, warmup: bool = True):
    self.name = name
    self.base_path = pathlib.Path(base_path)
    self.lock = threading.Lock()
    self.loaded: LoadedVersion | None = None
    self.error: str | None = None
    self.warmup = warmup

  def load_latest(self) -> None:
    if not self.base_path.is_dir():
      raise FileNotFoundError(f"--model_base_path {self.base_path} is not a directory")
    versions = sorted((int(p.name) for p in self.base_path.iterdir()
                       if p.is_dir() and p.name.isdigit()), reverse=True)
    if not versions:
      raise FileNotFoundError(f"no numeric version directory under {self.base_path}")
    for version in versions:  # newest first; a broken version is skipped
      try:
        loaded = LoadedVersion(self.name, version, self.base_path / str(version))
        ran = loaded.warmup() if self.warmup else 0
        log.info("loaded %s version %d (%d warmup requests)", self.name, version, ran)
        with self.lock:
          self.loaded = loaded
          self.error = None
        return
      except Exception as e:  # corrupt or half-copied version: report, try the previous one
        self.error = f"version {version}: {type(e).__name__}: {e}"
        log.error("could not load %s: %s", self.name, self.error)
    raise RuntimeError(f"no version of {self.name} could be loaded: {self.error}")

  def get(self, model_spec) -> LoadedVersion:
    if model_spec.name != self.name:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"Servable not found for request: Latest({model_spec.name})")
    loaded = self.loaded
    if loaded is None:
      raise ServingError(grpc.StatusCode.UNAVAILABLE, f"{self.name} has no version loaded")
    if model_spec.HasField("version") and model_spec.version.value != loaded.version:
      raise ServingError(
          grpc.StatusCode.NOT_FOUND,
          f"Servable not found for request: Specific({self.name}, {model_spec.version.value})")
    if model_spec.version_label:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"Unrecognized servable version label: {model_spec.version_label}")
    return loaded


def _abort(context, error: ServingError):
  context.abort(error.code, str(error))


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, registry: ModelRegistry):
    self.registry = registry

  def Predict(self, request, context):
    try:
      return self.registry.get(request.model_spec).predict(request)
    except ServingError as e:
      _abort(context, e)

  def GetModelMetadata(self, request, context):
    try:
      loaded = self.registry.get(request.model_spec)
    except ServingError as e:
      _abort(context, e)
    if list(request.metadata_field) != ["signature_def"]:
      _abort(context, ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "metadata_field must be exactly [\"signature_def\"]"))
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, value in loaded.signatures.items():
      signature_map.signature_def[key].CopyFrom(value)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = loaded.name
    response.model_spec.version.value = loaded.version
    response.metadata["signature_def"].Pack(signature_map)
    return response

  def _unimplemented(self, request, context):
    context.abort(grpc.StatusCode.UNIMPLEMENTED,
                  "only Predict is supported by the exported signatures")

  Classify = Regress = MultiInference = _unimplemented


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, registry: ModelRegistry):
    self.registry = registry

  def GetModelStatus(self, request, context):
    if request.model_spec.name != self.registry.name:
      context.abort(grpc.StatusCode.NOT_FOUND,
                    f"Could not find any versions of model {request.model_spec.name}")
    response = get_model_status_pb2.GetModelStatusResponse()
    loaded = self.registry.loaded
    if loaded is not None:
      status = response.model_version_status.add()
      status.version = loaded.version
      status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    return response


def build_server(registry: ModelRegistry, host: str, port: int, max_workers: int = 8):
  """A started-ready grpc.Server; returns (server, bound port)."""
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=[
      ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
      ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(registry), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry), server)
  health_servicer = health.HealthServicer()
  health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
  bound = server.add_insecure_port(f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")
  if bound == 0:
    raise OSError(f"could not bind {host}:{port}")
  health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
  health_servicer.set("tensorflow.serving.PredictionService",
                      health_pb2.HealthCheckResponse.SERVING)
  return server, bound


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--port", type=int, default=8500, help="gRPC port (0 = pick a free one)")
  parser.add_argument("--host", default="127.0.0.1",
                      help="address to bind (default loopback; TF Serving binds all addresses)")
  parser.add_argument("--model_name", required=True)
  parser.add_argument("--model_base_path", required=True)
  parser.add_argument("--enable_model_warmup", default="true", choices=["true", "false"])
  parser.add_argument("--port_file", help="write the bound gRPC port here once serving")
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  tf.get_logger().setLevel(logging.ERROR)
  registry = ModelRegistry(args.model_name, args.model_base_path,
                           warmup=args.enable_model_warmup == "true")
  try:
    registry.load_latest()
  except (FileNotFoundError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  server, port = build_server(registry, args.host, args.port)
  server.start()
  log.info("serving %s on %s:%d (gRPC)", args.model_name, args.host, port)
  if args.port_file:
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
      f.write(str(port))
    os.replace(tmp, args.port_file)
  stop = threading.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stop.set())
  stop.wait()
  server.stop(grace=5).wait()
  return 0


if __name__ == "__main__":
  sys.exit(main())
