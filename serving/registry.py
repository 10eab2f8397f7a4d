"""The models a server serves: their versions on disk, in memory, and by label.

A `Registry` holds one `Model` per entry of a `ModelServerConfig`.  Polling
(`poll`) lists the numeric version directories under each model's base path,
picks the ones its `model_version_policy` wants, loads the new ones (TF1 session
loader, then the warmup requests) and unloads the ones no longer wanted, in
that order, so a model that had a version keeps answering throughout:

  on disk {1}        serving {1}
  copy in 2          load 2 (1 still answers)  → serving {1, 2} → unload 1 → {2}
  2 fails to load    2 reported as END with its error, 1 keeps serving

A request takes a reference on the version it resolves to (`acquire`), and an
unloaded version closes its session only once the last such request is done,
so a swap never fails a request in flight.  A version that failed to load is
not tried again until its files change (a half-copied directory that is then
completed loads on the next poll).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import threading
import time
from typing import Callable, Iterator

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

log = logging.getLogger("serving.registry")

State = get_model_status_pb2.ModelVersionStatus
# tensorflow.error.Code values used in StatusProto.
_OK, _UNKNOWN_ERROR = 0, 2
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
  """An error answered with the gRPC status code TF Serving would use."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


def not_found(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.NOT_FOUND, message)


def invalid(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def dtype_name(dtype: int) -> str:
  return types_pb2.DataType.Name(dtype)


class Servable:
  """One SavedModel version, loaded into its own graph and session."""

  def __init__(self, name: str, version: int, path: pathlib.Path):
    self.name, self.version, self.path = name, version, path
    self.graph = tf.Graph()
    # No ConfigProto of our own: the context's (thread pools set with tf.config.threading).
    self.session = tf.compat.v1.Session(graph=self.graph)
    try:
      meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path))
    except BaseException:
      self.session.close()
      raise
    self.signatures = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}
    self.uses_xla = any(f.attr["_XlaMustCompile"].b for f in meta.graph_def.library.function)
    self._in_flight = 0
    self._idle = threading.Condition()
    self._closed = False
    self.batcher = None  # set by the server when batching is on

  # --- what a request runs --------------------------------------------------

  def signature(self, name: str):
    signature = self.signatures.get(name or "serving_default")
    if signature is None:
      raise not_found(f"Serving signature name: \"{name}\" not found in signature def "
                      f"(model {self.name} version {self.version} has "
                      f"{', '.join(sorted(self.signatures))})")
    return signature

  def check_inputs(self, signature_name: str, inputs: dict[str, np.ndarray]) -> None:
    """Names, dtypes and shapes of `inputs` against the signature; raises INVALID_ARGUMENT."""
    signature = self.signature(signature_name)
    if set(signature.inputs) != set(inputs):  # TF Serving's message, which names both sides
      extra = sorted(set(inputs) - set(signature.inputs))
      missing = sorted(set(signature.inputs) - set(inputs))
      raise invalid(
          f"input size does not match signature: {len(inputs)}!={len(signature.inputs)} "
          f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(signature.inputs))}}})"
          f". Sent extra: {{{','.join(extra)}}}. Missing but required: "
          f"{{{','.join(missing)}}}.")
    for key, value in inputs.items():
      spec = signature.inputs[key]
      want = tf.dtypes.as_dtype(spec.dtype).as_numpy_dtype
      got_string = value.dtype == object or value.dtype.kind in "SU"
      if (spec.dtype == types_pb2.DT_STRING) != got_string or (
          not got_string and value.dtype != want):
        got = "DT_STRING" if got_string else dtype_name(tf.dtypes.as_dtype(value.dtype)
                                                        .as_datatype_enum)
        raise invalid(f"input {key} has dtype {got}, the signature expects "
                      f"{dtype_name(spec.dtype)}")
      if spec.tensor_shape.unknown_rank:
        continue
      expected = [d.size for d in spec.tensor_shape.dim]
      if len(expected) != value.ndim or any(
          e not in (-1, v) for e, v in zip(expected, value.shape)):
        raise invalid(f"input {key} has shape {list(value.shape)}, the signature expects "
                      f"{['?' if e == -1 else e for e in expected]}")
      if expected and value.shape[0] == 0:
        raise invalid(f"input {key} is an empty batch (its 0th dimension is 0)")

  def output_names(self, signature_name: str, output_filter) -> tuple[str, ...]:
    signature = self.signature(signature_name)
    wanted = list(output_filter) or sorted(signature.outputs)
    for i, alias in enumerate(wanted):
      if alias not in signature.outputs:
        raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected "
                      f"to be in the set {{{','.join(sorted(signature.outputs))}}}.")
      if alias in wanted[:i]:
        raise invalid(f"duplicate output tensor alias: {alias}")
    return tuple(wanted)

  def run(self, signature_name: str, inputs: dict[str, np.ndarray],
          outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """One session run of a signature (inputs already checked)."""
    signature = self.signature(signature_name)
    feed = {signature.inputs[k].name: v for k, v in inputs.items()}
    fetch = {k: signature.outputs[k].name for k in outputs}
    try:
      return self.session.run(fetch, feed_dict=feed)
    except tf.errors.OpError as e:  # TensorFlow's codes are gRPC's
      raise ServingError(_GRPC_CODES.get(e.error_code, grpc.StatusCode.INTERNAL),
                         e.message) from None

  def warmup(self, run: Callable) -> int:
    """Replays assets.extra/tf_serving_warmup_requests through `run`; returns the count.

    `run(signature_name, inputs, outputs)` is the path requests take (with the
    batcher when batching is on).  A failing warmup request fails the load.
    """
    records = self.path / "assets.extra" / "tf_serving_warmup_requests"
    if not records.exists():
      return 0
    count = 0
    for record in tf.compat.v1.io.tf_record_iterator(str(records)):
      if count == 1000:
        raise ValueError(f"Number of warmup records exceeds the maximum (1000) at {records}")
      entry = prediction_log_pb2.PredictionLog.FromString(record)
      if entry.WhichOneof("log_type") != "predict_log":  # no such signatures here
        log.warning("%s: skipping warmup record of type %s (only predict_log is replayed)",
                    records, entry.WhichOneof("log_type"))
        continue
      request = entry.predict_log.request
      signature_name = request.model_spec.signature_name or "serving_default"
      inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
      self.check_inputs(signature_name, inputs)
      run(signature_name, inputs, self.output_names(signature_name, request.output_filter))
      count += 1
    return count

  # --- lifetime ----------------------------------------------------------------

  def acquire(self) -> None:
    with self._idle:
      self._in_flight += 1

  def release(self) -> None:
    with self._idle:
      self._in_flight -= 1
      if self._in_flight == 0:
        self._idle.notify_all()

  def close(self) -> None:
    """Waits for the requests in flight, then frees the session."""
    with self._idle:
      while self._in_flight:
        self._idle.wait()
      if self._closed:
        return
      self._closed = True
    if self.batcher is not None:
      self.batcher.stop()
    self.session.close()


@dataclasses.dataclass
class VersionStatus:
  state: int
  error: str = ""
  fingerprint: tuple = ()


class Model:
  """One `ModelConfig`: where its versions live, which to serve, their labels."""

  def __init__(self, config: model_server_config_pb2.ModelConfig):
    self.config = config
    self.servables: dict[int, Servable] = {}
    self.statuses: dict[int, VersionStatus] = {}
    self.problem = ""  # why no version can be found (e.g. a missing base path)

  @property
  def name(self) -> str:
    return self.config.name

  def wanted(self, on_disk: list[int]) -> set[int]:
    """The versions the model's version policy asks for, among `on_disk`."""
    policy = self.config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
      return set(on_disk)
    if kind == "specific":
      return set(policy.specific.versions) & set(on_disk)
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
    return set(sorted(on_disk)[-count:])


def _fingerprint(path: pathlib.Path) -> tuple:
  """Names, sizes and times of a version's files: a failed load is retried when they change."""
  entries = []
  for root, _, files in os.walk(path):
    for f in files:
      try:
        st = os.stat(os.path.join(root, f))
      except OSError:
        continue
      entries.append((os.path.relpath(os.path.join(root, f), path), st.st_size, st.st_mtime_ns))
  return tuple(sorted(entries))


def check_config(config: model_server_config_pb2.ModelServerConfig) -> None:
  """Rejects configs TF Serving would reject, naming the problem."""
  if config.WhichOneof("config") == "custom_model_config":
    raise ValueError("custom_model_config is not supported; use model_config_list")
  names = set()
  for model in config.model_config_list.config:
    if not model.name:
      raise ValueError("a model config has no name")
    if model.name in names:
      raise ValueError(f"model {model.name} is configured twice")
    names.add(model.name)
    if not model.base_path:
      raise ValueError(f"model {model.name} has no base_path")
    if model.model_platform not in ("", "tensorflow"):
      raise ValueError(f"model {model.name}: model_platform {model.model_platform!r} is not "
                       "supported (only tensorflow)")
    policy = model.model_version_policy
    if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
      raise ValueError(f"model {model.name}: a specific version policy lists no versions")
    if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 0:
      raise ValueError(f"model {model.name}: latest.num_versions must be positive")
    for label, version in model.version_labels.items():
      if version <= 0:
        raise ValueError(f"model {model.name}: label {label} points to version {version}")


class Registry:
  """All configured models; thread-safe lookups, loading on `poll`."""

  def __init__(self, *, warmup: bool = True,
               on_load: Callable[[Servable], None] | None = None,
               metrics=None):
    self.warmup = warmup
    self.on_load = on_load  # e.g. attaches a batcher before warmup
    self.metrics = metrics
    self.models: dict[str, Model] = {}
    self._lock = threading.RLock()
    self._poll_lock = threading.Lock()  # one poll at a time
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  # --- configuration -----------------------------------------------------------

  def set_config(self, config: model_server_config_pb2.ModelServerConfig) -> list[str]:
    """Serves exactly the models in `config` (new ones load on the next poll); returns
    the names of the models it added."""
    check_config(config)
    entries = {m.name: m for m in config.model_config_list.config}
    before = set(self.models)
    dropped = []
    with self._poll_lock, self._lock:  # never while a poll is loading into a model
      for name in list(self.models):
        if name not in entries:
          dropped.append(self.models.pop(name))
      for name, entry in entries.items():
        if name in self.models:
          self.models[name].config = entry
        else:
          self.models[name] = Model(entry)
    for model in dropped:
      log.info("model %s removed from the config: unloading it", model.name)
      for version in list(model.servables):
        self._unload(model, version)
    return [name for name in entries if name not in before]

  # --- polling -----------------------------------------------------------------

  def poll(self) -> None:
    """One pass over every model: load wanted versions, then unload unwanted ones."""
    with self._poll_lock:
      with self._lock:
        models = list(self.models.values())
      for model in models:
        try:
          self._poll_model(model)
        except Exception:  # never let one model stop the poller
          log.exception("polling %s failed", model.name)

  def _poll_model(self, model: Model) -> None:
    base = pathlib.Path(model.config.base_path)
    if not base.is_dir():
      # As TF Serving: a missing base path changes nothing (what serves keeps serving).
      self._report(model, f"base path {base} does not exist or is not a directory")
      return
    on_disk = sorted({int(p.name) for p in base.iterdir()
                      if p.is_dir() and p.name.isascii() and p.name.isdigit()})
    self._report(model, "" if on_disk else f"no numeric version directory under {base}")
    # The policy picks among everything on disk, failed versions included, so a
    # newest version that fails keeps the previous one serving (as TF Serving's
    # availability-preserving policy); a failed version is retried only once its
    # files have changed.
    wanted = model.wanted(on_disk)
    for version in sorted(wanted - set(model.servables), reverse=True):
      status = model.statuses.get(version)
      path = base / str(version)
      if status and status.state == State.END and status.error and (
          status.fingerprint == _fingerprint(path)):
        continue
      self._load(model, version, path)
    if set(model.servables) & wanted or not wanted:
      for version in sorted(set(model.servables) - wanted):
        self._unload(model, version)
    for version in list(model.statuses):  # forget removed versions that never loaded
      if version not in on_disk and version not in model.servables and (
          model.statuses[version].state != State.END or model.statuses[version].error):
        del model.statuses[version]

  @staticmethod
  def _report(model: Model, problem: str) -> None:
    """Records why a model has no version on disk; logs it when it changes."""
    if problem and problem != model.problem:
      log.warning("model %s: %s", model.name, problem)
    model.problem = problem

  def _load(self, model: Model, version: int, path: pathlib.Path) -> None:
    fingerprint = _fingerprint(path)  # before loading: files that change during it retry
    model.statuses[version] = VersionStatus(State.LOADING)
    started = time.monotonic()
    try:
      servable = Servable(model.name, version, path)
      try:
        if self.on_load:
          self.on_load(servable)
        ran = servable.warmup(servable.batcher.run if servable.batcher else servable.run) \
            if self.warmup else 0
      except BaseException:
        servable.close()
        raise
    except Exception as e:  # corrupt or half-copied: report it, keep what serves
      error = f"{type(e).__name__}: {e}".strip()
      model.statuses[version] = VersionStatus(State.END, error, fingerprint)
      log.error("model %s version %d failed to load: %s", model.name, version, error)
      if self.metrics:
        self.metrics.load_attempt(str(path), "fail")
      return
    with self._lock:
      orphaned = self.models.get(model.name) is not model  # dropped from the config meanwhile
      if not orphaned:
        model.servables[version] = servable
        model.statuses[version] = VersionStatus(State.AVAILABLE)
    if orphaned:
      servable.close()
      return
    log.info("model %s version %d is available (%d warmup requests, %.1f s)", model.name,
             version, ran, time.monotonic() - started)
    if self.metrics:
      self.metrics.load_attempt(str(path), "success")
      self.metrics.load_latency(model.name, version, time.monotonic() - started)

  def _unload(self, model: Model, version: int) -> None:
    with self._lock:
      servable = model.servables.pop(version, None)
      if servable is None:
        return
      model.statuses[version] = VersionStatus(State.UNLOADING)
    servable.close()  # waits for its requests in flight
    model.statuses[version] = VersionStatus(State.END)
    log.info("model %s version %d unloaded", model.name, version)

  def start_polling(self, interval: float) -> None:
    """Polls every `interval` seconds in a daemon thread (interval <= 0: never)."""
    if interval <= 0:
      return

    def loop():
      while not self._stop.wait(interval):
        self.poll()

    self._thread = threading.Thread(target=loop, name="version-poller", daemon=True)
    self._thread.start()

  def stop(self) -> None:
    self._stop.set()
    if self._thread:
      self._thread.join(timeout=30)
    with self._lock:
      models = list(self.models.values())
    for model in models:
      for version in list(model.servables):
        self._unload(model, version)

  # --- lookups -----------------------------------------------------------------

  def _resolve(self, model_spec) -> Servable:
    name = model_spec.name
    model = self.models.get(name)
    has_version = model_spec.HasField("version")
    if has_version and model_spec.version_label:
      raise invalid("model_spec has both a version and a version_label; give one")
    if model is None:
      what = f"Specific({name}, {model_spec.version.value})" if has_version else f"Latest({name})"
      raise not_found(f"Servable not found for request: {what}")
    if has_version:
      servable = model.servables.get(model_spec.version.value)
      if servable is None:
        raise not_found(f"Servable not found for request: Specific({name}, "
                        f"{model_spec.version.value})")
      return servable
    if model_spec.version_label:
      label = model_spec.version_label
      version = model.config.version_labels.get(label)
      if version is None:
        raise not_found(f"Unrecognized servable version label: {label} (model {name} has "
                        f"labels: {', '.join(sorted(model.config.version_labels)) or 'none'})")
      servable = model.servables.get(version)
      if servable is None:
        raise not_found(f"Servable not found for request: label {label} of {name} points to "
                        f"version {version}, which is not available")
      return servable
    if not model.servables:
      reason = f" ({model.problem})" if model.problem else ""
      raise not_found(f"Servable not found for request: Latest({name}){reason}")
    return model.servables[max(model.servables)]

  @contextlib.contextmanager
  def acquire(self, model_spec) -> Iterator[Servable]:
    """The version a request names, kept loaded until the block ends."""
    with self._lock:
      servable = self._resolve(model_spec)
      servable.acquire()
    try:
      yield servable
    finally:
      servable.release()

  def status(self, model_spec) -> get_model_status_pb2.GetModelStatusResponse:
    """Every version ever seen, newest first (like TF Serving, a label is ignored)."""
    name = model_spec.name
    with self._lock:
      model = self.models.get(name)
      if model is None:
        raise not_found(f"Could not find any versions of model {name}")
      statuses = dict(model.statuses)
    if model_spec.HasField("version"):
      version = model_spec.version.value
      if version not in statuses:
        raise not_found(f"Could not find version {version} of model {name}")
      statuses = {version: statuses[version]}
    if not statuses:
      reason = f": {model.problem}" if model.problem else ""
      raise not_found(f"Could not find any versions of model {name}{reason}")
    response = get_model_status_pb2.GetModelStatusResponse()
    for version in sorted(statuses, reverse=True):
      entry = response.model_version_status.add(version=version, state=statuses[version].state)
      if statuses[version].error:
        entry.status.error_code = _UNKNOWN_ERROR
        entry.status.error_message = statuses[version].error
      else:
        entry.status.error_code = _OK
    return response

  def problem(self, name: str) -> str:
    """Why a model has nothing to serve: its base path, or its versions' load errors."""
    model = self.models.get(name)
    if model is None:
      return "not configured"
    errors = [f"version {v}: {s.error}" for v, s in sorted(model.statuses.items()) if s.error]
    return model.problem or "; ".join(errors) or "no version loaded"

  def available(self) -> dict[str, list[int]]:
    with self._lock:
      return {name: sorted(m.servables) for name, m in self.models.items()}
