"""The models a server serves: their versions on disk, in memory, and by label.

A `Registry` holds one `Model` per entry of a `ModelServerConfig`.  Polling
(`poll`) lists the numeric version directories under each model's base path,
picks the ones its `model_version_policy` wants, loads the new ones (with the
`load` callable it is given, then the warmup requests) and unloads the ones no
longer wanted, in that order, so a model that had a version keeps answering
throughout:

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
from collections.abc import Callable, Iterator

from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.config import check_config, version_of, wanted_versions
from serving.errors import invalid, not_found, shown
from serving.servable import Servable

log = logging.getLogger("serving.registry")

State = get_model_status_pb2.ModelVersionStatus
# tensorflow.error.Code values used in StatusProto.
_OK, _UNKNOWN_ERROR = 0, 2
# (model name, version, version directory) -> a loaded version, e.g. `Servable`.
Loader = Callable[[str, int, pathlib.Path], Servable]


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
    self.ignored: frozenset = frozenset()  # directory names that are not versions, logged once

  @property
  def name(self) -> str:
    return self.config.name

  def wanted(self, on_disk: list[int]) -> set[int]:
    """The versions the model's version policy asks for, among `on_disk`."""
    return wanted_versions(self.config.model_version_policy, on_disk)


def version_directories(base: pathlib.Path) -> tuple[dict[int, str], set[str]]:
  """({version: directory name}, numeric names that are no version) under `base`.

  Names are parsed as TF Serving parses them (config.version_of): `0007` is
  version 7, loaded from `0007`; a number beyond int64 is no version; of two
  names for one version (`7`, `007`) the shorter is taken.
  """
  found, ignored = {}, set()
  for path in base.iterdir():
    if not path.is_dir() or path.name.startswith("."):
      continue
    version = version_of(path.name)
    if version is None:
      if path.name.isascii() and path.name.isdigit():
        ignored.add(path.name)
      continue
    if version not in found or (len(path.name), path.name) < (len(found[version]),
                                                               found[version]):
      found[version] = path.name
  return found, ignored


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


class Registry:
  """All configured models; thread-safe lookups, loading (through `load`) on `poll`."""

  def __init__(self, load: Loader, *, warmup: bool = True, metrics=None):
    self.loader = load  # the server's loads a Servable and attaches a batcher; tests pass fakes
    self.warmup = warmup
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
    directories = self._version_directories(model, base)
    on_disk = sorted(directories)
    self._report(model, "" if on_disk else f"no numeric version directory under {base}")
    # The policy picks among everything on disk, failed versions included, so a
    # newest version that fails keeps the previous one serving (as TF Serving's
    # availability-preserving policy); a failed version is retried only once its
    # files have changed.
    wanted = model.wanted(on_disk)
    for version in sorted(wanted - set(model.servables), reverse=True):
      status = model.statuses.get(version)
      path = base / directories[version]
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
  def _version_directories(model: Model, base: pathlib.Path) -> dict[int, str]:
    """version_directories(base), the names it ignores logged once."""
    found, ignored = version_directories(base)
    new = ignored - model.ignored
    if new:
      log.warning("model %s: ignoring %s under %s: not a version number (versions are "
                  "int64, at most %d)", model.name, ", ".join(shown(n, 24) for n in sorted(new)),
                  base, 2 ** 63 - 1)
    model.ignored = frozenset(ignored)
    return found

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
      servable = self.loader(model.name, version, path)
      try:
        ran = servable.warmup() if self.warmup else 0
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
    model = self.models.get(model_spec.name)
    name = shown(model_spec.name)
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
      version = model.config.version_labels.get(model_spec.version_label)
      label = shown(model_spec.version_label)
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
    name = shown(model_spec.name)
    with self._lock:
      model = self.models.get(model_spec.name)
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
