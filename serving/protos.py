"""TF Serving's config messages that the `tensorflow-serving-api` wheel leaves out.

The wheel ships `ModelServerConfig` (tensorflow_serving.config) but not the
messages behind three of `tensorflow_model_server`'s flags:

  --batching_parameters_file   BatchingParameters
                               (tensorflow_serving/servables/tensorflow/session_bundle_config.proto)
  --monitoring_config_file     MonitoringConfig, PrometheusConfig
                               (tensorflow_serving/config/monitoring_config.proto)
  --ssl_config_file            SSLConfig (tensorflow_serving/config/ssl_config.proto)

They are declared here with TF Serving's package, field names, numbers and
types, in a descriptor pool of their own, so the same text-format files parse
here and in the real server.  `parse_text(cls, path)` reads one, naming the
file and the problem when it does not parse.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto

# (message, [(field, number, type, label, type_name)])
_MESSAGES = {
    "BatchingParameters": [
        ("max_batch_size", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
         ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
         ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
         ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
         ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, _F.TYPE_INT64, _F.LABEL_REPEATED, None),
        ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
        ("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
         ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
         ".google.protobuf.Int64Value"),
    ],
    "PrometheusConfig": [
        ("enable", 1, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
        ("path", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
    ],
    "MonitoringConfig": [
        ("prometheus_config", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
         ".tensorflow.serving.PrometheusConfig"),
    ],
    "SSLConfig": [
        ("server_key", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("server_cert", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("custom_ca", 3, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ("client_verify", 4, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
    ],
}


def _build():
  pool = descriptor_pool.DescriptorPool()
  wrappers = descriptor_pb2.FileDescriptorProto()
  wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
  pool.Add(wrappers)
  file = descriptor_pb2.FileDescriptorProto(
      name="tfhub_models/serving_config.proto", package="tensorflow.serving", syntax="proto3",
      dependency=[wrappers.name])
  for name, fields in _MESSAGES.items():
    message = file.message_type.add(name=name)
    for field, number, kind, label, type_name in fields:
      entry = message.field.add(name=field, number=number, type=kind, label=label)
      if type_name:
        entry.type_name = type_name
  pool.Add(file)
  return {name: message_factory.GetMessageClass(
      pool.FindMessageTypeByName(f"tensorflow.serving.{name}")) for name in _MESSAGES}


_CLASSES = _build()
BatchingParameters = _CLASSES["BatchingParameters"]
PrometheusConfig = _CLASSES["PrometheusConfig"]
MonitoringConfig = _CLASSES["MonitoringConfig"]
SSLConfig = _CLASSES["SSLConfig"]


class ConfigError(ValueError):
  """A config file that cannot be read or parsed; the message names the file."""


def parse_text(cls, path):
  """Reads a text-format `cls` message from `path`."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except OSError as e:
    raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
  except UnicodeDecodeError as e:
    raise ConfigError(f"{path} is not UTF-8 text: {e}") from None
  try:
    return text_format.Parse(text, cls())
  except text_format.ParseError as e:
    raise ConfigError(f"{path} is not a text-format {cls.DESCRIPTOR.name}: {e}") from None
