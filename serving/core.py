"""The one path every front end calls: predict, metadata, status and config reloads.

  core = ServingCore(registry, metrics)
  served, outputs = core.predict(model_spec, read_inputs, output_filter, entrypoint="REST")

A predict resolves the version once (`registry.acquire`, which keeps it loaded
until the run is done), looks its signature up once and hands that `Signature`
to the front end's `read_inputs(signature) -> {name: array}`, to the checks and
to the run (through the version's batcher when batching is on).  `read_inputs`
is a callable because JSON needs the signature's dtypes to become arrays, and
because TF Serving checks the version and the signature before it decodes any
input.  Every call is timed and counted here, under TF Serving's request
metrics, with the front end as `entrypoint`; an unexpected exception becomes
INTERNAL, so front ends only translate `ServingError`s.
"""

from __future__ import annotations

import logging
import os
import pathlib
import threading
import time
from typing import NamedTuple
from collections.abc import Callable, Sequence

import grpc
import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.config import check_config
from serving.errors import ServingError, invalid, shown
from serving.metrics import Metrics
from serving.registry import Registry, version_directories
from serving.servable import Signature

log = logging.getLogger("serving.core")

# (the version's signature) -> {input name: array}: the front end's request decoding.
ReadInputs = Callable[[Signature], dict[str, np.ndarray]]


class ServedSpec(NamedTuple):
  """Which version and signature answered a predict."""
  name: str
  version: int
  signature_name: str


class _Counted:
  """Times one call and counts its status code; any other exception becomes INTERNAL."""

  __slots__ = ("_metrics", "_model", "_api", "_entrypoint", "_started")

  def __init__(self, metrics: Metrics, model: str, api: str, entrypoint: str):
    self._metrics, self._model, self._api, self._entrypoint = metrics, model, api, entrypoint

  def __enter__(self) -> None:
    self._started = time.monotonic()

  def __exit__(self, kind, error, traceback) -> bool:
    seconds = time.monotonic() - self._started
    if kind is None:
      status = "OK"
    elif isinstance(error, ServingError):
      status = error.code.name
    elif isinstance(error, Exception):
      status = "INTERNAL"
    else:  # KeyboardInterrupt and the like are not a request's answer
      return False
    self._metrics.request(self._model, self._api, self._entrypoint, status, seconds)
    if status == "INTERNAL" and not isinstance(error, ServingError):
      log.error("%s failed", self._api, exc_info=(kind, error, traceback))
      raise ServingError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}") \
          from error
    return False


class ServingCore:
  """Models (a `Registry`) and request metrics, behind the calls of TF Serving's API."""

  def __init__(self, registry: Registry, metrics: Metrics):
    self.registry, self.metrics = registry, metrics
    # Base paths a HandleReloadConfigRequest may name: those of the operator's configs.
    self.allowed_base_paths: set[str] = set()
    self._config_lock = threading.Lock()

  def predict(self, model_spec: model_pb2.ModelSpec, read_inputs: ReadInputs,
              output_filter: Sequence[str] = (), entrypoint: str = "GRPC",
              ) -> tuple[ServedSpec, dict[str, np.ndarray]]:
    """Runs one predict: (the version and signature that answered, {output: array})."""
    with _Counted(self.metrics, model_spec.name, "predict", entrypoint):
      with self.registry.acquire(model_spec) as servable:
        signature = servable.signature(model_spec.signature_name)
        inputs = read_inputs(signature)
        signature.check_inputs(inputs)
        outputs = servable.run(signature, inputs, signature.output_names(output_filter))
        return ServedSpec(servable.name, servable.version, signature.name), outputs

  def metadata(self, model_spec: model_pb2.ModelSpec, fields: Sequence[str] = ("signature_def",),
               entrypoint: str = "GRPC") -> get_model_metadata_pb2.GetModelMetadataResponse:
    """The signatures of the version `model_spec` names (`fields` must be [signature_def])."""
    with _Counted(self.metrics, model_spec.name, "GetModelMetadata", entrypoint):
      if list(fields) != ["signature_def"]:
        raise invalid("Metadata field must be exactly [\"signature_def\"], got "
                      f"{shown(list(fields))}")
      with self.registry.acquire(model_spec) as servable:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signatures.items():
          signature_map.signature_def[name].CopyFrom(signature.proto)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
      response.metadata["signature_def"].Pack(signature_map)
      return response

  def status(self, model_spec: model_pb2.ModelSpec, entrypoint: str = "GRPC",
             ) -> get_model_status_pb2.GetModelStatusResponse:
    """Every known version of the model (or the one `model_spec` names), newest first."""
    with _Counted(self.metrics, model_spec.name, "GetModelStatus", entrypoint):
      return self.registry.status(model_spec)

  def reload_config(self, config: model_server_config_pb2.ModelServerConfig,
                    from_request: bool) -> None:
    """Serves `config`'s models; waits for their first load, like TF Serving.

    from_request: a HandleReloadConfigRequest, which may only name base paths
    the operator's configs (flags, --model_config_file) named; otherwise the
    operator's config, whose base paths become allowed.
    """
    try:
      check_config(config)
    except ValueError as e:
      raise invalid(str(e)) from None
    models = config.model_config_list.config
    with self._config_lock:
      if from_request:
        for model in models:
          if os.path.realpath(model.base_path) not in self.allowed_base_paths:
            raise ServingError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"model {shown(model.name)}: base path {shown(model.base_path, 256)} is not "
                "one of the server's "
                "configured base paths; base paths come only from --model_base_path or "
                "--model_config_file")
        _check_specific_versions(models)
      else:
        self.allowed_base_paths |= {os.path.realpath(m.base_path) for m in models}
      added = self.registry.set_config(config)
      self.registry.poll()
    failed = [name for name in added if not self.registry.available().get(name)]
    if failed and from_request:   # on disk but not loadable: the request's, not UNKNOWN
      raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                         f"{len(failed)} model(s) did not become available: "
                         + "; ".join(f"{shown(n)}: {self.registry.problem(n)}"
                                     for n in failed[:8]))


def _check_specific_versions(models) -> None:
  """NOT_FOUND, before anything changes, when a request's specific version policy
  names versions its base path does not hold."""
  for model in models:
    policy = model.model_version_policy
    if policy.WhichOneof("policy_choice") != "specific":
      continue
    base = pathlib.Path(model.base_path)
    on_disk = version_directories(base)[0] if base.is_dir() else {}
    missing = sorted(set(policy.specific.versions) - set(on_disk))
    if missing:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model {shown(model.name)}: version(s) {shown(missing)} not found "
                         f"under {shown(model.base_path, 256)} (it has "
                         f"{shown(sorted(on_disk)) if on_disk else 'none'}); nothing changed")
