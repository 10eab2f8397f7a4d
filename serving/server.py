"""A local model server that speaks TF Serving's API and reads its config files.

  python -m serving.server --model_name NAME --model_base_path BASE/NAME [--rest_api_port 8501]
  python -m serving.server --model_config_file models.config [--enable_batching \\
      --batching_parameters_file batching.config] [--monitoring_config_file monitoring.config]

Flags carry `tensorflow_model_server`'s names, defaults and meanings, so a
command line, a config file or a client that works here works against TF
Serving, and the other way round.  Models run through the TF1 session loader,
the path TF Serving's C++ loader takes, from the signature graph alone.

  gRPC   tensorflow.serving.PredictionService   Predict, GetModelMetadata
                                                (Classify, Regress, MultiInference: UNIMPLEMENTED)
         tensorflow.serving.ModelService        GetModelStatus, HandleReloadConfigRequest
         grpc.health.v1.Health
  REST   /v1/models/NAME[/versions/N|/labels/L][/metadata|:predict], the Prometheus path

Where it differs from TF Serving, on purpose (README.md, "Serve and query locally"):
  - it binds 127.0.0.1 unless --host says otherwise (TF Serving binds every address);
  - HandleReloadConfigRequest may change policies, labels and the model list, but not
    name a base path the operator's own config (flags or --model_config_file) does not
    have: a request never makes the server read a path it chose;
  - a model whose base path is missing or whose versions all fail is reported, and the
    others serve (TF Serving refuses to start); a label may point at a version that is not
    loaded (answered NOT_FOUND until it is), and an unknown label is NOT_FOUND, as the
    issue asks (TF Serving: INVALID_ARGUMENT);
  - a version that fails to load is tried again when its files change, not on a timer;
  - with --ssl_config_file the REST port speaks HTTPS too (TF Serving keeps it plain);
  - the gRPC health service is always on; XLA exports load without the XLA flags, with
    a warning that TF Serving would refuse them;
  - REST: request bodies are capped (--rest_api_max_body_bytes), output strings that
    are not UTF-8 are {"b64": ...} (TF Serving writes them raw, which is not JSON);
  - --port 0 picks a free port, and --port_file writes the ports once serving.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import tempfile
import threading
import time
from concurrent import futures

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  (registers the ops the exports use)
from google.protobuf import text_format  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402
from tensorflow_serving.apis import (get_model_metadata_pb2, model_management_pb2,  # noqa: E402
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from serving import protos, tensors  # noqa: E402
from serving.batching import Batcher, BatchingOptions  # noqa: E402
from serving.metrics import DEFAULT_PATH, Metrics  # noqa: E402
from serving.registry import (Registry, Servable, ServingError, check_config,  # noqa: E402
                              invalid)

log = logging.getLogger("serving.server")

# TF Serving accepts messages up to 2 GB; generation outputs need more than gRPC's 4 MB.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# Health names: TF Serving's (unqualified) and the services' full names.
SERVICES = ("PredictionService", "ModelService", "tensorflow.serving.PredictionService",
            "tensorflow.serving.ModelService")


class ModelServer:
  """What the gRPC and REST front ends share: models, batching, metrics."""

  def __init__(self, registry: Registry, metrics: Metrics, *, metrics_path: str | None = None,
               max_request_bytes: int = MAX_MESSAGE_BYTES,
               max_rest_body_bytes: int = 32 * 1024 * 1024, allowed_base_paths=()):
    self.registry, self.metrics = registry, metrics
    self.metrics_path = metrics_path
    self.max_request_bytes = max_request_bytes
    self.max_rest_body_bytes = min(max_rest_body_bytes, max_request_bytes)
    self.allowed_base_paths = set(allowed_base_paths)
    self.config_lock = threading.Lock()

  def run(self, servable: Servable, spec, inputs: dict, output_filter) -> tuple:
    """Checks and runs one predict on an acquired version: (served spec, outputs)."""
    signature_name = spec.signature_name or "serving_default"
    servable.check_inputs(signature_name, inputs)
    outputs = servable.output_names(signature_name, output_filter)
    runner = servable.batcher.run if servable.batcher else servable.run
    result = runner(signature_name, inputs, outputs)
    return (servable.name, servable.version, signature_name), result

  def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    with self.registry.acquire(request.model_spec) as servable:
      servable.signature(request.model_spec.signature_name or "serving_default")
      inputs = {key: tensors.from_proto(key, tensor, self.max_request_bytes)
                for key, tensor in request.inputs.items()}
      (name, version, signature_name), outputs = self.run(
          servable, request.model_spec, inputs, request.output_filter)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = name
    response.model_spec.version.value = version
    response.model_spec.signature_name = signature_name
    for key, value in outputs.items():
      response.outputs[key].CopyFrom(tensors.to_proto(value))
    return response

  def metadata(self, spec) -> get_model_metadata_pb2.GetModelMetadataResponse:
    with self.registry.acquire(spec) as servable:
      signature_map = get_model_metadata_pb2.SignatureDefMap()
      for key, value in servable.signatures.items():
        signature_map.signature_def[key].CopyFrom(value)
      response = get_model_metadata_pb2.GetModelMetadataResponse()
      response.model_spec.name = servable.name
      response.model_spec.version.value = servable.version
      response.metadata["signature_def"].Pack(signature_map)
    return response

  def status(self, spec):
    return self.registry.status(spec)

  def reload_config(self, config: model_server_config_pb2.ModelServerConfig,
                    from_request: bool) -> None:
    """Serves `config`'s models; waits for their first load like TF Serving."""
    try:
      check_config(config)
    except ValueError as e:
      raise invalid(str(e)) from None
    if from_request:
      for model in config.model_config_list.config:
        if os.path.realpath(model.base_path) not in self.allowed_base_paths:
          raise ServingError(
              grpc.StatusCode.PERMISSION_DENIED,
              f"model {model.name}: base path {model.base_path} is not one of the server's "
              "configured base paths; base paths come only from --model_base_path or "
              "--model_config_file")
    with self.config_lock:
      added = self.registry.set_config(config)
      self.registry.poll()
    failed = [name for name in added if not self.registry.available().get(name)]
    if failed and from_request:
      raise ServingError(grpc.StatusCode.UNKNOWN,
                         f"{len(failed)} model(s) did not become available: "
                         + "; ".join(f"{n}: {self.registry.problem(n)}" for n in failed))


def _timed(metrics: Metrics, api: str, entrypoint: str = "GRPC"):
  """Wraps a servicer method: TF Serving's status codes, and request metrics."""
  def wrap(method):
    def call(self, request, context):
      started = time.monotonic()
      name = request.model_spec.name if hasattr(request, "model_spec") else ""
      try:
        response = method(self, request, context)
      except ServingError as e:
        metrics.request(name, api, entrypoint, e.code.name, time.monotonic() - started)
        context.abort(e.code, e.message)
      except Exception as e:
        log.exception("%s failed", api)
        metrics.request(name, api, entrypoint, "INTERNAL", time.monotonic() - started)
        context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
      metrics.request(name, api, entrypoint, "OK", time.monotonic() - started)
      return response
    return call
  return wrap


def build_grpc(model_server: ModelServer, host: str, port: int, *, max_workers: int = 64,
               credentials=None, channel_arguments=()):
  """An unstarted grpc.Server with every service; returns (server, bound port, health)."""
  metrics = model_server.metrics

  class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

    @_timed(metrics, "predict")
    def Predict(self, request, context):  # noqa: N802
      return model_server.predict(request)

    @_timed(metrics, "GetModelMetadata")
    def GetModelMetadata(self, request, context):  # noqa: N802
      if list(request.metadata_field) != ["signature_def"]:
        raise invalid("Metadata field must be exactly [\"signature_def\"], got "
                      f"{list(request.metadata_field)}")
      return model_server.metadata(request.model_spec)

    def _unimplemented(self, request, context):
      context.abort(grpc.StatusCode.UNIMPLEMENTED,
                    "Classify, Regress and MultiInference need classification or regression "
                    "signatures; the exported models have predict signatures only: use Predict")

    Classify = Regress = MultiInference = _unimplemented

  class ModelService(model_service_pb2_grpc.ModelServiceServicer):

    @_timed(metrics, "GetModelStatus")
    def GetModelStatus(self, request, context):  # noqa: N802
      return model_server.status(request.model_spec)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
      try:
        model_server.reload_config(request.config, from_request=True)
      except ServingError as e:
        context.abort(e.code, e.message)
      return model_management_pb2.ReloadConfigResponse()

  options = [("grpc.max_receive_message_length", model_server.max_request_bytes),
             ("grpc.max_send_message_length", MAX_MESSAGE_BYTES), *channel_arguments]
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(), server)
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


def _bool(text: str) -> bool:
  value = str(text).lower()
  if value in ("true", "1", "yes"):
    return True
  if value in ("false", "0", "no"):
    return False
  raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _channel_arguments(text: str) -> list:
  """TF Serving's --grpc_channel_arguments: `key=value,key=value`."""
  arguments = []
  for item in filter(None, (s.strip() for s in text.split(","))):
    key, sep, value = item.partition("=")
    if not sep:
      raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
    arguments.append((key, int(value) if value.lstrip("-").isdigit() else value))
  return arguments


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  flag = parser.add_argument

  def boolean(name, default, help):  # noqa: A002
    flag(name, type=_bool, nargs="?", const=True, default=default, metavar="true|false",
         help=help)

  flag("--port", type=int, default=8500, help="gRPC port (0 picks a free one)")
  flag("--rest_api_port", type=int, default=0, help="REST port; 0 turns REST off")
  flag("--host", default="127.0.0.1",
       help="address to bind (default loopback; TF Serving binds every address)")
  flag("--model_name", default="default", help="the model's name (with --model_base_path)")
  flag("--model_base_path", default="",
       help="directory holding the model's numeric version directories")
  flag("--model_config_file", default="",
       help="text-format ModelServerConfig: several models, version policies, labels")
  flag("--model_config_file_poll_wait_seconds", type=int, default=0,
       help="re-read --model_config_file this often (0: read once)")
  flag("--file_system_poll_wait_seconds", type=int, default=1,
       help="look for new and removed versions this often (0: only at start)")
  boolean("--enable_batching", False, "merge concurrent requests into batches")
  flag("--batching_parameters_file", default="",
       help="text-format BatchingParameters (defaults are TF Serving's)")
  boolean("--enable_model_warmup", True,
          "replay assets.extra/tf_serving_warmup_requests before serving a version")
  flag("--monitoring_config_file", default="",
       help="text-format MonitoringConfig: Prometheus metrics on the REST port")
  flag("--ssl_config_file", default="", help="text-format SSLConfig: serve TLS only")
  boolean("--enable_grpc_healthcheck_service", True,
          "serve grpc.health.v1 (always on here; accepted for TF Serving command lines)")
  boolean("--xla_cpu_compilation_enabled", False,
          "TF Serving refuses XLA-compiled exports without it; here a version that needs it "
          "loads with a warning when it is off, so a command line missing it is noticed")
  boolean("--xla_gpu_compilation_enabled", False, "as --xla_cpu_compilation_enabled, for GPU")
  flag("--tensorflow_intra_op_parallelism", type=int, default=0,
       help="threads of one op (0: TensorFlow's choice)")
  flag("--tensorflow_inter_op_parallelism", type=int, default=0,
       help="ops run at once (0: TensorFlow's choice)")
  flag("--grpc_channel_arguments", type=_channel_arguments, default=[],
       help="comma-separated key=value gRPC server arguments, e.g. "
            "grpc.max_receive_message_length=1048576")
  flag("--grpc_max_threads", type=int, default=64, help="threads answering gRPC requests")
  flag("--rest_api_timeout_in_ms", type=int, default=30000,
       help="REST read timeout per connection")
  flag("--rest_api_num_threads", type=int, default=4 * (os.cpu_count() or 1),
       help="REST requests handled at once (more connections wait)")
  flag("--rest_api_max_body_bytes", type=int, default=32 * 1024 * 1024,
       help="largest REST request body (JSON takes many times its size to parse)")
  flag("--port_file", help="write the bound ports here once serving (gRPC, then REST)")
  return parser


def _model_config(args) -> model_server_config_pb2.ModelServerConfig:
  if args.model_config_file:
    if args.model_base_path:
      log.warning("--model_config_file is given: --model_name and --model_base_path are "
                  "ignored (as TF Serving does)")
    return protos.parse_text(model_server_config_pb2.ModelServerConfig, args.model_config_file)
  if not args.model_base_path:
    raise protos.ConfigError("give --model_base_path (with --model_name) or "
                             "--model_config_file")
  config = model_server_config_pb2.ModelServerConfig()
  config.model_config_list.config.add(name=args.model_name, base_path=args.model_base_path,
                                      model_platform="tensorflow")
  return config


def _ssl(args):
  """(gRPC credentials, REST ssl context) from --ssl_config_file, or (None, None)."""
  if not args.ssl_config_file:
    return None, None
  config = protos.parse_text(protos.SSLConfig, args.ssl_config_file)
  if not config.server_key or not config.server_cert:
    raise protos.ConfigError(f"{args.ssl_config_file}: server_key and server_cert (PEM "
                             "contents) are both required")
  if config.client_verify and not config.custom_ca:
    raise protos.ConfigError(f"{args.ssl_config_file}: client_verify needs custom_ca")
  credentials = grpc.ssl_server_credentials(
      [(config.server_key.encode(), config.server_cert.encode())],
      root_certificates=config.custom_ca.encode() or None,
      require_client_auth=config.client_verify)
  context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  with tempfile.TemporaryDirectory() as tmp:  # ssl wants files; they never outlive this block
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    for path, text in ((cert, config.server_cert), (key, config.server_key)):
      with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(text)
    try:
      context.load_cert_chain(cert, key)
    except ssl.SSLError as e:
      raise protos.ConfigError(f"{args.ssl_config_file}: the key or certificate does not "
                               f"load: {e}") from None
  if config.custom_ca:
    try:
      context.load_verify_locations(cadata=config.custom_ca)
    except (ssl.SSLError, ValueError) as e:
      raise protos.ConfigError(f"{args.ssl_config_file}: custom_ca does not load: {e}") \
          from None
    if config.client_verify:
      context.verify_mode = ssl.CERT_REQUIRED
  return credentials, context


def _watch_config_file(model_server: ModelServer, path: str, last: bytes, interval: int,
                       stop: threading.Event) -> None:
  """Applies `path` whenever its bytes differ from `last` (what was applied)."""
  while not stop.wait(interval):
    try:
      with open(path, "rb") as f:
        text = f.read()
      if text == last:
        continue
      config = text_format.Parse(text.decode("utf-8"), model_server_config_pb2.ModelServerConfig())
      check_config(config)
      model_server.allowed_base_paths |= {os.path.realpath(m.base_path)
                                          for m in config.model_config_list.config}
      model_server.reload_config(config, from_request=False)
      last = text
      log.info("applied the changed %s", path)
    except Exception as e:  # keep serving the last good config
      log.error("ignoring %s: %s", path, e)


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  tf.get_logger().setLevel(logging.ERROR)
  try:
    config = _model_config(args)
    config_bytes = open(args.model_config_file, "rb").read() if args.model_config_file else b""
    check_config(config)
    batching = None
    if args.enable_batching:
      batching = BatchingOptions()
      if args.batching_parameters_file:
        batching = BatchingOptions.from_proto(
            protos.parse_text(protos.BatchingParameters, args.batching_parameters_file))
    elif args.batching_parameters_file:
      raise protos.ConfigError("--batching_parameters_file is set without "
                               "--enable_batching=true")
    metrics_path = None
    if args.monitoring_config_file:
      monitoring = protos.parse_text(protos.MonitoringConfig, args.monitoring_config_file)
      if monitoring.prometheus_config.enable:
        metrics_path = monitoring.prometheus_config.path or DEFAULT_PATH
        if not args.rest_api_port:
          log.warning("Prometheus metrics need the REST port: set --rest_api_port")
    credentials, ssl_context = _ssl(args)
  except (protos.ConfigError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  metrics = Metrics()

  def attach_batcher(servable: Servable) -> None:
    if batching is not None:
      servable.batcher = Batcher(servable.run, batching,
                                 on_batch=lambda size: metrics.batch(servable.name, size))

  def on_load(servable: Servable) -> None:
    if servable.uses_xla and not (args.xla_cpu_compilation_enabled
                                  or args.xla_gpu_compilation_enabled):
      log.warning("model %s version %d is XLA-compiled: tensorflow_model_server refuses to "
                  "load it without --xla_cpu_compilation_enabled=true (or the GPU flag)",
                  servable.name, servable.version)
    attach_batcher(servable)

  # Sessions take TensorFlow's context config (an explicit ConfigProto() of its own
  # measured twice as slow on small requests), with the thread pools set through it.
  if args.tensorflow_intra_op_parallelism:
    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
  if args.tensorflow_inter_op_parallelism:
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
  registry = Registry(warmup=args.enable_model_warmup, on_load=on_load, metrics=metrics)
  max_request = dict(args.grpc_channel_arguments).get("grpc.max_receive_message_length",
                                                      MAX_MESSAGE_BYTES)
  model_server = ModelServer(
      registry, metrics, metrics_path=metrics_path, max_request_bytes=max_request,
      max_rest_body_bytes=args.rest_api_max_body_bytes,
      allowed_base_paths={os.path.realpath(m.base_path) for m in config.model_config_list.config})
  try:  # bind first: a taken port fails now, not after minutes of loading
    grpc_server, grpc_port, health_servicer = build_grpc(
        model_server, args.host, args.port, max_workers=args.grpc_max_threads,
        credentials=credentials, channel_arguments=args.grpc_channel_arguments)
    rest_server = None
    if args.rest_api_port:
      from serving.rest import RestServer
      rest_server = RestServer((args.host, args.rest_api_port), model_server, ssl_context,
                               timeout=args.rest_api_timeout_in_ms / 1000,
                               max_threads=args.rest_api_num_threads)
  except (OSError, RuntimeError) as e:
    print(f"error: cannot listen on {args.host}: {e}", file=sys.stderr)
    return 1
  model_server.reload_config(config, from_request=False)  # first load, before serving
  registry.start_polling(args.file_system_poll_wait_seconds)
  grpc_server.start()
  for service in ("",) + SERVICES:
    health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
  if rest_server:
    threading.Thread(target=rest_server.serve_forever, name="rest", daemon=True).start()
  log.info("serving %s on %s: gRPC %d%s%s", ", ".join(m.name for m in
           config.model_config_list.config), args.host, grpc_port,
           f", REST {rest_server.server_address[1]}" if rest_server else "",
           " (TLS)" if credentials else "")

  stop = threading.Event()
  if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
    threading.Thread(target=_watch_config_file, daemon=True, name="config-poller", args=(
        model_server, args.model_config_file, config_bytes,
        args.model_config_file_poll_wait_seconds, stop)).start()
  if args.port_file:
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
      f.write(f"{grpc_port}\n{rest_server.server_address[1] if rest_server else 0}\n")
    os.replace(tmp, args.port_file)
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stop.set())
  stop.wait()
  log.info("shutting down")
  health_servicer.enter_graceful_shutdown()
  grpc_server.stop(grace=5).wait()
  if rest_server:
    rest_server.shutdown()
  registry.stop()
  return 0


if __name__ == "__main__":
  sys.exit(main())
