"""A local model server that speaks TF Serving's API and reads its config files.

  python -m serving.server --model_name NAME --model_base_path BASE/NAME [--rest_api_port 8501]
  python -m serving.server --model_config_file models.config [--enable_batching \\
      --batching_parameters_file batching.config] [--monitoring_config_file monitoring.config]

In this process, with the same flags (scripts/demo.py):

  with server.start(["--model_name", "m", "--model_base_path", base, "--port", "0"]) as running:
    ServingClient(running.grpc_target, "m").fill_mask([...])

Flags carry `tensorflow_model_server`'s names, defaults and meanings, so a
command line, a config file or a client that works here works against TF
Serving, and the other way round.  Models run through the TF1 session loader,
the path TF Serving's C++ loader takes, from the signature graph alone.  XLA is
gated as TF Serving's main gates it: off for the whole process
(`tensorflow::DisableXlaCompilation`, serving/c_api.py) unless
--xla_cpu_compilation_enabled=true or --xla_gpu_compilation_enabled=true, so an
XLA export fails its warmup and is reported END with the flag named.  This
file reads the flags and the files they name, and wires the parts together:
registry (versions) → core (the one predict path, metrics) → gRPC (grpc_api.py)
and REST (rest.py) front ends.

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
  - the gRPC health service is always on;
  - REST: request bodies are capped (--rest_api_max_body_bytes), output strings that
    are not UTF-8 are {"b64": ...} (TF Serving writes them raw, which is not JSON);
  - --port 0 picks a free port, and --port_file writes the ports once serving.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # a program, not an import: quiet TensorFlow's C++ logs before it loads
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import dataclasses
import logging
import signal
import ssl
import sys
import tempfile
import threading
from collections.abc import Sequence

import grpc
import tensorflow as tf
from google.protobuf import text_format
from grpc_health.v1 import health_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import c_api, protos
from serving.batching import Batcher, BatchingOptions
from serving.config import check_config
from serving.core import ServingCore
from serving.grpc_api import HEALTH_NAMES, MAX_MESSAGE_BYTES, build_grpc
from serving.metrics import DEFAULT_PATH, Metrics
from serving.registry import Loader, Registry
from serving.rest import RestServer
from serving.servable import Servable

log = logging.getLogger("serving.server")


# --- flags ------------------------------------------------------------------------------

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

  def boolean(name, default, help):
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
          "run XLA-compiled exports; without it (or the GPU flag) XLA is off for the whole "
          "process, as in TF Serving, and an XLA export fails its warmup")
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


# --- config files -----------------------------------------------------------------------

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


@dataclasses.dataclass(frozen=True)
class _Settings:
  """What the flags and the files they name say, read and checked once."""
  args: argparse.Namespace
  config: model_server_config_pb2.ModelServerConfig
  config_bytes: bytes               # --model_config_file as applied ("" without one)
  batching: BatchingOptions | None  # None: batching off
  metrics_path: str | None          # the Prometheus path on the REST port, or None
  credentials: grpc.ServerCredentials | None
  ssl_context: ssl.SSLContext | None


def _read_settings(args) -> _Settings:
  """Reads the config files the flags name; raises protos.ConfigError or ValueError."""
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
  return _Settings(args, config, config_bytes, batching, metrics_path, credentials, ssl_context)


def _loader(batching: BatchingOptions | None, metrics: Metrics) -> Loader:
  """The registry's loader: a `Servable`, with a batcher when batching is on."""

  def load(name: str, version: int, path) -> Servable:
    servable = Servable(name, version, path)
    if batching is not None:
      servable.batcher = Batcher(servable.run_session, batching,
                                 on_batch=lambda size: metrics.batch(name, size))
    return servable

  return load


def _watch_config_file(core: ServingCore, path: str, last: bytes, interval: int,
                       stop: threading.Event) -> None:
  """Applies `path` whenever its bytes differ from `last` (what was applied)."""
  while not stop.wait(interval):
    try:
      with open(path, "rb") as f:
        text = f.read()
      if text == last:
        continue
      config = text_format.Parse(text.decode("utf-8"), model_server_config_pb2.ModelServerConfig())
      core.reload_config(config, from_request=False)
      last = text
      log.info("applied the changed %s", path)
    except Exception as e:  # keep serving the last good config
      log.error("ignoring %s: %s", path, e)


# --- a running server -------------------------------------------------------------------

class Server:
  """A server running in this process: made by `start`, ended by `stop` (or `with`)."""

  def __init__(self, core: ServingCore, host: str, grpc_server, grpc_port: int,
               health_servicer, rest_server: RestServer | None, xla_before: bool = True):
    self.core, self.host = core, host
    self._xla_before = xla_before   # the process's XLA setting before this server set it
    self.grpc_port = grpc_port
    self.rest_port = rest_server.server_address[1] if rest_server else 0  # 0: REST is off
    self._grpc_server, self._health, self._rest_server = grpc_server, health_servicer, rest_server
    self._rest_thread: threading.Thread | None = None
    self._stop_watching = threading.Event()
    self._stopped = False

  @property
  def grpc_target(self) -> str:
    """HOST:PORT for a gRPC channel."""
    return f"[{self.host}]:{self.grpc_port}" if ":" in self.host else \
        f"{self.host}:{self.grpc_port}"

  def _serve(self, settings: _Settings) -> None:
    """Loads the models, then answers: gRPC, health SERVING, REST, config-file polling."""
    args = settings.args
    self.core.reload_config(settings.config, from_request=False)  # first load, before serving
    self.core.registry.start_polling(args.file_system_poll_wait_seconds)
    self._grpc_server.start()
    for name in HEALTH_NAMES:
      self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
    if self._rest_server:
      self._rest_thread = threading.Thread(target=self._rest_server.serve_forever, name="rest",
                                           daemon=True)
      self._rest_thread.start()
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
      threading.Thread(target=_watch_config_file, daemon=True, name="config-poller", args=(
          self.core, args.model_config_file, settings.config_bytes,
          args.model_config_file_poll_wait_seconds, self._stop_watching)).start()

  def stop(self) -> None:
    """Health NOT_SERVING, gRPC drains for up to 5 s, REST closes, every version unloads."""
    if self._stopped:
      return
    self._stopped = True
    self._stop_watching.set()
    self._health.enter_graceful_shutdown()
    self._grpc_server.stop(grace=5).wait()
    if self._rest_server:
      if self._rest_thread:
        self._rest_server.shutdown()
      self._rest_server.server_close()
    self.core.registry.stop()
    c_api.set_xla_compilation(self._xla_before)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.stop()


def _start(settings: _Settings) -> Server:
  """Sets the thread pools and XLA as the flags say, then `_serve_with`."""
  args = settings.args
  # Sessions take TensorFlow's context config (an explicit ConfigProto() of its own
  # measured twice as slow on small requests), with the thread pools set through it.
  if args.tensorflow_intra_op_parallelism:
    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
  if args.tensorflow_inter_op_parallelism:
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
  # TF Serving's main: XLA off unless a flag enables it, for every session of the
  # process (one server per process; stop() puts the previous setting back).
  xla_before = c_api.set_xla_compilation(args.xla_cpu_compilation_enabled
                                         or args.xla_gpu_compilation_enabled)
  try:
    return _serve_with(settings, xla_before)
  except BaseException:
    c_api.set_xla_compilation(xla_before)
    raise


def _serve_with(settings: _Settings, xla_before: bool) -> Server:
  """Binds the ports (OSError when one is taken: before minutes of loading), loads, serves."""
  args = settings.args
  metrics = Metrics()
  registry = Registry(_loader(settings.batching, metrics), warmup=args.enable_model_warmup,
                      metrics=metrics)
  core = ServingCore(registry, metrics)
  max_request = dict(args.grpc_channel_arguments).get("grpc.max_receive_message_length",
                                                      MAX_MESSAGE_BYTES)
  grpc_server, grpc_port, health_servicer = build_grpc(
      core, args.host, args.port, max_workers=args.grpc_max_threads,
      credentials=settings.credentials, channel_arguments=args.grpc_channel_arguments,
      max_request_bytes=max_request)
  rest_server = None
  if args.rest_api_port:
    try:
      rest_server = RestServer(
          (args.host, args.rest_api_port), core, ssl_context=settings.ssl_context,
          timeout=args.rest_api_timeout_in_ms / 1000, max_threads=args.rest_api_num_threads,
          max_body_bytes=min(args.rest_api_max_body_bytes, max_request),
          metrics_path=settings.metrics_path)
    except BaseException:
      grpc_server.stop(None)
      raise
  server = Server(core, args.host, grpc_server, grpc_port, health_servicer, rest_server,
                  xla_before)
  try:
    server._serve(settings)
  except BaseException:
    server.stop()
    raise
  log.info("serving %s on %s: gRPC %d%s%s", ", ".join(
      m.name for m in settings.config.model_config_list.config), args.host, grpc_port,
      f", REST {server.rest_port}" if rest_server else "",
      " (TLS)" if settings.credentials else "")
  return server


def start(argv: Sequence[str]) -> Server:
  """Starts a server in this process from `python -m serving.server` flags.

  Returns once the models have loaded.  Raises protos.ConfigError or ValueError
  for bad flags or config files, OSError when a port cannot be bound (argparse
  exits on flags it does not know).
  """
  return _start(_read_settings(build_parser().parse_args(list(argv))))


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  tf.get_logger().setLevel(logging.ERROR)
  try:
    settings = _read_settings(args)
  except (protos.ConfigError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    server = _start(settings)
  except (OSError, RuntimeError) as e:
    print(f"error: cannot listen on {args.host}: {e}", file=sys.stderr)
    return 1
  if args.port_file:
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
      f.write(f"{server.grpc_port}\n{server.rest_port}\n")
    os.replace(tmp, args.port_file)
  stop = threading.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stop.set())
  stop.wait()
  log.info("shutting down")
  server.stop()
  return 0


if __name__ == "__main__":
  sys.exit(main())
