#!/usr/bin/env python
"""Writes TF Serving's model, batching and monitoring configs for a set of exports.

  python scripts/make_serving_config.py --output-dir DIR --model NAME[=BASE_PATH] ...
      [--base-path /models]
  python scripts/make_serving_config.py --output-dir DIR --scan EXPORT_BASE [--base-path /models]
      [--policy latest|all|specific] [--latest N] [--versions 1,2] [--pin NAME=V[,V...]]
      [--label NAME:LABEL=VERSION] [--max-batch-size 8] [--batch-timeout-micros 2000]
      [--max-enqueued-batches 64] [--num-batch-threads 4] [--allowed-batch-sizes 1,2,4,8]
      [--pad-variable-length-inputs] [--prometheus-path PATH | --no-prometheus]

Writes DIR/models.config (ModelServerConfig), DIR/batching.config
(BatchingParameters) and DIR/monitoring.config (MonitoringConfig) as text-format
protos: the files that both `tensorflow_model_server` and `python -m
serving.server` read with --model_config_file, --batching_parameters_file and
--monitoring_config_file.  Each file is parsed back as its proto before it
replaces the old one by a rename, so a reader never sees half a file.  The
configs are checked with the server's own rules (`serving.config`,
`serving.batching`), so a file written here is one `serving.server` accepts.

A model's base path is BASE_PATH/NAME: the directory that holds its numeric
version directories, as `scripts/export.py --output BASE` writes them.
--base-path is where the server sees the exports (default: the --scan
directory, else /models, where k8s/ mounts them).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import sys
import tempfile

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import protos
from serving.batching import BatchingOptions
from serving.config import check_config, wanted_versions

MODELS_FILE = "models.config"
BATCHING_FILE = "batching.config"
MONITORING_FILE = "monitoring.config"
DEFAULT_BASE_PATH = "/models"
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
  """A request that would make an invalid or inconsistent config."""


def _positive_ints(text: str, what: str) -> list:
  try:
    values = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise ConfigError(f"{what}: expected integers separated by commas, got {text!r}") from None
  if not values or min(values) < 1:
    raise ConfigError(f"{what}: expected positive integers, got {text!r}")
  return values


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--output-dir", required=True, help="where the three files are written")
  models = parser.add_argument_group("models")
  models.add_argument("--model", action="append", default=[], metavar="NAME[=BASE_PATH]",
                      help="a model to serve (repeatable); its base path defaults to "
                           "BASE_PATH/NAME")
  models.add_argument("--scan", metavar="EXPORT_BASE",
                      help="serve every model found under EXPORT_BASE (NAME/VERSION/"
                           "saved_model.pb)")
  models.add_argument("--base-path",
                      help="directory holding the models as the server sees it (default: "
                           f"the --scan directory, else {DEFAULT_BASE_PATH})")
  versions = parser.add_argument_group("versions")
  versions.add_argument("--policy", choices=["latest", "all", "specific"], default="latest",
                        help="version policy of every model (default: latest)")
  versions.add_argument("--latest", type=int, default=1, metavar="N",
                        help="with --policy latest: how many newest versions to serve "
                             "(default 1)")
  versions.add_argument("--versions", metavar="V[,V...]",
                        help="with --policy specific: the versions to serve")
  versions.add_argument("--pin", action="append", default=[], metavar="NAME=V[,V...]",
                        help="serve exactly these versions of one model (a specific policy "
                             "for it alone; repeatable)")
  versions.add_argument("--label", action="append", default=[], metavar="NAME:LABEL=VERSION",
                        help="a version label (e.g. xlmr:stable=3; repeatable); the version "
                             "must be one the policy serves")
  batching = parser.add_argument_group("batching (BatchingParameters)")
  batching.add_argument("--max-batch-size", type=int, default=8,
                        help="largest batch the batcher forms (default 8, the largest "
                             "warmup batch of scripts/export.py)")
  batching.add_argument("--batch-timeout-micros", type=int, default=2000,
                        help="longest wait for a batch to fill (default 2000)")
  batching.add_argument("--max-enqueued-batches", type=int, default=64,
                        help="queue length before requests are refused (default 64)")
  batching.add_argument("--num-batch-threads", type=int, default=4,
                        help="batches processed in parallel (default 4)")
  batching.add_argument("--allowed-batch-sizes", metavar="B[,B...]",
                        help="batch sizes a batch is padded up to (default: the powers of two "
                             "up to --max-batch-size, and it)")
  batching.add_argument("--pad-variable-length-inputs", action="store_true",
                        help="pad inputs of different lengths to batch them (not needed for "
                             "the text signatures)")
  monitoring = parser.add_argument_group("monitoring (MonitoringConfig)")
  monitoring.add_argument("--prometheus-path", default=DEFAULT_PROMETHEUS_PATH,
                          help=f"metrics path on the REST port (default {DEFAULT_PROMETHEUS_PATH})")
  monitoring.add_argument("--no-prometheus", action="store_true",
                          help="do not export Prometheus metrics")
  args = parser.parse_args(argv)
  if bool(args.model) == bool(args.scan):
    parser.error("give --model (one or more) or --scan, not both")
  return args


# ---------------------------------------------------------------------------
# Models and versions.

def scan_exports(base: pathlib.Path) -> dict:
  """{name: sorted versions} of the servable exports under `base`.

  A model is a directory holding numeric version directories that contain
  saved_model.pb; hidden staging directories (.tmp-*) and TF Hub-format
  exports (VERSION/encoder) are not servable and are skipped.
  """
  if not base.is_dir():
    raise ConfigError(f"--scan: {base} is not a directory")
  found = {}
  for model_dir in sorted(base.iterdir()):
    if not model_dir.is_dir() or model_dir.name.startswith("."):
      continue
    versions = sorted(int(v.name) for v in model_dir.iterdir()
                      if v.name.isdigit() and (v / "saved_model.pb").is_file())
    if versions:
      found[model_dir.name] = versions
  if not found:
    raise ConfigError(f"--scan: no exports (NAME/VERSION/saved_model.pb) under {base}")
  return found


def _policy(args, pins: dict, name: str):
  """(kind, versions): the version policy of one model."""
  if name in pins:
    return "specific", pins[name]
  if args.policy == "specific":
    return "specific", _positive_ints(args.versions or "", "--versions")
  if args.policy == "latest":
    return "latest", args.latest
  return "all", None


def build_models(args) -> model_server_config_pb2.ModelServerConfig:
  """The ModelServerConfig the arguments ask for; inconsistent requests raise ConfigError."""
  if args.scan:
    scanned = scan_exports(pathlib.Path(args.scan))
    base_path = args.base_path or os.path.abspath(args.scan)
    paths = {name: f"{base_path.rstrip('/')}/{name}" for name in scanned}
  else:
    scanned = {}
    base_path = args.base_path or DEFAULT_BASE_PATH
    paths = {}
    for entry in args.model:
      name, _, path = entry.partition("=")
      if name in paths:
        raise ConfigError(f"--model {name} is given twice")
      paths[name] = path or f"{base_path.rstrip('/')}/{name}"
  for name, path in paths.items():
    if not _NAME.match(name):
      raise ConfigError(f"invalid model name {name!r} (letters, digits, '.', '_', '-')")
    if not (path.startswith("/") or "://" in path):
      raise ConfigError(f"model {name}: base path {path!r} must be absolute or a URL")
  if args.latest < 1:
    raise ConfigError("--latest must be at least 1")
  if args.versions and args.policy != "specific":
    raise ConfigError("--versions needs --policy specific")

  pins = {}
  for entry in args.pin:
    name, _, versions = entry.partition("=")
    if name not in paths:
      raise ConfigError(f"--pin {entry}: no model named {name!r}")
    pins[name] = _positive_ints(versions, f"--pin {entry}")

  labels = {name: {} for name in paths}
  for entry in args.label:
    match = re.match(r"^([^:]+):([^=]+)=(\d+)$", entry)
    if not match:
      raise ConfigError(f"--label {entry}: expected NAME:LABEL=VERSION")
    name, label, version = match.group(1), match.group(2), int(match.group(3))
    if name not in paths:
      raise ConfigError(f"--label {entry}: no model named {name!r}")
    if not _LABEL.match(label):
      raise ConfigError(f"--label {entry}: invalid label {label!r}")
    labels[name][label] = version

  config = model_server_config_pb2.ModelServerConfig()
  for name, path in paths.items():
    model = config.model_config_list.config.add(name=name, base_path=path,
                                                model_platform="tensorflow")
    kind, value = _policy(args, pins, name)
    if kind == "latest":
      model.model_version_policy.latest.num_versions = value
    elif kind == "specific":
      model.model_version_policy.specific.versions.extend(sorted(set(value)))
    else:
      model.model_version_policy.all.SetInParent()
    on_disk = scanned.get(name)
    if on_disk is not None:
      if kind == "specific" and set(value) - set(on_disk):
        raise ConfigError(f"model {name}: versions {sorted(set(value) - set(on_disk))} are not "
                          f"under {args.scan}/{name} (found {on_disk})")
      served = wanted_versions(model.model_version_policy, on_disk)
    else:  # without --scan, only a specific policy says which versions serve
      served = set(value) if kind == "specific" else None
    for label, version in sorted(labels[name].items()):
      if served is not None and version not in served:
        raise ConfigError(f"--label {name}:{label}={version}: version {version} is not served "
                          f"(served: {sorted(served)})")
      model.version_labels[label] = version
  try:
    check_config(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return config


def build_batching(args):
  """BatchingParameters, checked by the server's own rules (`BatchingOptions`)."""
  if args.allowed_batch_sizes:
    allowed = _positive_ints(args.allowed_batch_sizes, "--allowed-batch-sizes")
  else:  # the powers of two below --max-batch-size, and it
    allowed = [2 ** i for i in range(args.max_batch_size.bit_length())
               if 2 ** i < args.max_batch_size] + [args.max_batch_size]
  params = protos.BatchingParameters()
  params.max_batch_size.value = args.max_batch_size
  params.batch_timeout_micros.value = args.batch_timeout_micros
  params.max_enqueued_batches.value = args.max_enqueued_batches
  params.num_batch_threads.value = args.num_batch_threads
  params.allowed_batch_sizes.extend(allowed)
  params.pad_variable_length_inputs = args.pad_variable_length_inputs
  try:
    BatchingOptions.from_proto(params)
  except ValueError as e:
    raise ConfigError(_in_flag_names(str(e))) from None
  return params


def _in_flag_names(message: str) -> str:
  """A BatchingParameters message in this script's flags (max_batch_size: --max-batch-size)."""
  for field in protos.BatchingParameters.DESCRIPTOR.fields_by_name:
    message = message.replace(field, "--" + field.replace("_", "-"))
  return message.replace("batching parameter ", "")


def build_monitoring(args):
  config = protos.MonitoringConfig()
  config.prometheus_config.enable = not args.no_prometheus
  if not args.no_prometheus:
    if not args.prometheus_path.startswith("/"):
      raise ConfigError(f"--prometheus-path must start with '/', got {args.prometheus_path!r}")
    config.prometheus_config.path = args.prometheus_path
  return config


# ---------------------------------------------------------------------------
# Writing.

def _header(argv) -> str:
  """The command that regenerates the files (without --output-dir, which does not matter)."""
  kept, skip = [], False
  for arg in argv:
    if skip:
      skip = False
    elif arg == "--output-dir":
      skip = True
    elif not arg.startswith("--output-dir="):
      kept.append(arg)
  return ("# Generated by scripts/make_serving_config.py; regenerate it rather than edit it:\n"
          f"#   python scripts/make_serving_config.py {shlex.join(kept)} --output-dir DIR\n")


def _parse_back(cls, path: str):
  if cls is model_server_config_pb2.ModelServerConfig:
    try:
      with open(path, encoding="utf-8") as f:
        return text_format.Parse(f.read(), cls())
    except text_format.ParseError as e:
      raise protos.ConfigError(f"{path} is not a text-format ModelServerConfig: {e}") from None
  return protos.parse_text(cls, path)


def write_configs(output_dir, messages: dict, header: str) -> list:
  """Writes {file name: message} into output_dir; all files are checked before any is replaced."""
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  staged = []
  try:
    for name, message in messages.items():
      handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=output_dir)
      staged.append((temporary, output_dir / name))
      with os.fdopen(handle, "w", encoding="utf-8") as f:
        f.write(header + text_format.MessageToString(message))
        f.flush()
        os.fsync(f.fileno())
      os.chmod(temporary, 0o644)
      if _parse_back(type(message), temporary) != message:
        raise ConfigError(f"{name} does not read back as the message written")
    for temporary, final in staged:
      os.replace(temporary, final)
  finally:
    for temporary, _ in staged:
      if os.path.exists(temporary):
        os.remove(temporary)
  return [final for _, final in staged]


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  try:
    models = build_models(args)
    messages = {MODELS_FILE: models, BATCHING_FILE: build_batching(args),
                MONITORING_FILE: build_monitoring(args)}
    paths = write_configs(args.output_dir, messages, _header(argv))
  except (ConfigError, protos.ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except OSError as e:
    print(f"error: {e.strerror or e}: {e.filename or args.output_dir}", file=sys.stderr)
    return 1
  for path in paths:
    print(path)
  first = models.model_config_list.config[0].name
  print(f"models: {', '.join(m.name for m in models.model_config_list.config)} "
        f"(k8s readiness probe: /v1/models/{first})", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
