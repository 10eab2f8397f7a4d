"""Prometheus metrics under TF Serving's own names.

TF Serving exports its monitoring counters with `/` turned into `:`, e.g.
`:tensorflow:serving:request_count{model_name="m",status="OK"}`; dashboards
and alerts written for it read these names, so the local server uses them too.
Histograms are prometheus_client's, rendered without the `*_created` series
TF Serving does not have.  Counters keep TF Serving's names exactly, without
the `_total` prometheus_client would add to the family and sample names, so
they are written out by `_Counters.render`.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_PATH = "/monitoring/prometheus/metrics"

# Microseconds, as TF Serving's latency histograms.
_LATENCY_BUCKETS = tuple(10 * 1.8 ** i for i in range(33)) + (float("inf"),)


class _Counters:
  """Counters rendered with exactly the names given."""

  def __init__(self):
    self._lock = threading.Lock()
    self._values: dict[str, dict[tuple, float]] = {}
    self._help: dict[str, tuple[str, tuple[str, ...]]] = {}

  def declare(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
    self._help[name] = (help_text, labels)
    self._values[name] = {}

  def inc(self, name: str, *label_values: str, amount: float = 1.0) -> None:
    with self._lock:
      values = self._values[name]
      values[label_values] = values.get(label_values, 0.0) + amount

  def render(self) -> str:
    with self._lock:
      snapshot = {name: dict(values) for name, values in self._values.items()}
    lines = []
    for name, values in snapshot.items():
      help_text, labels = self._help[name]
      lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
      for label_values, value in sorted(values.items()):
        pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(labels, label_values))
        lines.append(f"{name}{{{pairs}}} {value:g}")
    return "".join(line + "\n" for line in lines)


class _WithoutCreated:
  """A registry's metric families without their `*_created` samples (TF Serving has none).

  Filtering here, rather than prometheus_client's process-wide
  `disable_created_metrics()`, leaves other users of the library alone.
  """

  def __init__(self, registry: CollectorRegistry):
    self._registry = registry

  def collect(self):
    for family in self._registry.collect():
      created = family.name + "_created"
      family.samples = [s for s in family.samples if s.name != created]
      yield family


def _escape(value: str) -> str:
  return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
  """The server's request, load and batching metrics."""

  def __init__(self):
    self.registry = CollectorRegistry(auto_describe=False)
    self._counters = _Counters()
    self._counters.declare(":tensorflow:serving:request_count",
                           "The total number of requests.", ("model_name", "status"))
    self._counters.declare(":tensorflow:cc:saved_model:load_attempt_count",
                           "The number of times a SavedModel was successfully loaded.",
                           ("model_path", "status"))
    self._latency = Histogram(
        ":tensorflow:serving:request_latency",
        "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
        ("model_name", "API", "entrypoint"), registry=self.registry, buckets=_LATENCY_BUCKETS)
    self._load_latency = Histogram(
        ":tensorflow:serving:model_load_latency",
        "Distribution of wall time (in microseconds) to load a model version.",
        ("model_name", "model_version"), registry=self.registry, buckets=_LATENCY_BUCKETS)
    self._batch_size = Histogram(
        ":tensorflow:serving:batching_session:batch_size",
        "Tracks the batch size distribution on processing.", ("model_name",),
        registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024,
                                         float("inf")))

  def request(self, model_name: str, api: str, entrypoint: str, status: str,
              seconds: float) -> None:
    self._counters.inc(":tensorflow:serving:request_count", model_name, status)
    if status == "OK":  # as TF Serving: latency of successful requests
      self._latency.labels(model_name, api, entrypoint).observe(seconds * 1e6)

  def load_attempt(self, model_name: str, status: str) -> None:
    self._counters.inc(":tensorflow:cc:saved_model:load_attempt_count", model_name, status)

  def load_latency(self, model_name: str, version: int, seconds: float) -> None:
    self._load_latency.labels(model_name, str(version)).observe(seconds * 1e6)

  def batch(self, model_name: str, size: int) -> None:
    self._batch_size.labels(model_name).observe(size)

  def render(self) -> bytes:
    return self._counters.render().encode("utf-8") + generate_latest(
        _WithoutCreated(self.registry))
