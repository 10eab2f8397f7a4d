"""`ServingCore` in process on a tiny SavedModel: one version resolution and one signature
lookup per predict, gRPC and REST through the same core and the same metrics, errors."""

from __future__ import annotations

import collections
import json
import threading
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving import tensors
from serving.core import ServingCore
from serving.errors import ServingError
from serving.grpc_api import build_grpc
from serving.metrics import Metrics
from serving.registry import Registry
from serving.rest import RestServer
from serving.servable import Servable


class Doubler(tf.Module):

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def double(self, x):
    """x: float32 [batch] -> y = 2x [batch], rows: int32 [batch] (0, 1, ...)."""
    return {"y": x * 2.0, "rows": tf.range(tf.shape(x)[0])}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """BASE/m/1: a SavedModel whose serving_default doubles its input."""
  base = tmp_path_factory.mktemp("models")
  module = Doubler()
  tf.saved_model.save(module, str(base / "m" / "1"), signatures={"serving_default": module.double})
  return base


def model_config(*models):
  """A ModelServerConfig of (name, base path) pairs."""
  text = "model_config_list {" + "".join(
      f' config {{ name: "{name}" base_path: "{path}" }}' for name, path in models) + " }"
  return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


@pytest.fixture
def served(base):
  """(core, counts): a core over the model `m`; counts["acquire"] and counts["signature"]
  count the registry's version resolutions and the servable's signature lookups."""
  counts = collections.Counter()

  def load(name, version, path):
    servable = Servable(name, version, path)
    lookup = servable.signature

    def counted_lookup(signature_name):
      counts["signature"] += 1
      return lookup(signature_name)

    servable.signature = counted_lookup
    return servable

  registry = Registry(load, warmup=False)
  acquire = registry.acquire

  def counted_acquire(model_spec):
    counts["acquire"] += 1
    return acquire(model_spec)

  registry.acquire = counted_acquire
  core = ServingCore(registry, Metrics())
  core.reload_config(model_config(("m", base / "m")), from_request=False)
  yield core, counts
  registry.stop()


def metric_families(core) -> dict:
  """{family name: family} of the core's Prometheus page."""
  text = core.metrics.render().decode()
  assert "_created" not in text  # TF Serving has no *_created series
  return {f.name: f for f in text_string_to_metric_families(text)}


def request_counts(core) -> dict:
  """{(model, status): requests}."""
  return {(s.labels["model_name"], s.labels["status"]): s.value
          for s in metric_families(core)[":tensorflow:serving:request_count"].samples}


def latency_counts(core) -> dict:
  """{(API, entrypoint): requests timed} (successful ones, as TF Serving)."""
  return {(s.labels["API"], s.labels["entrypoint"]): s.value
          for s in metric_families(core)[":tensorflow:serving:request_latency"].samples
          if s.name.endswith("_count")}


def test_predict_resolves_the_version_and_looks_the_signature_up_once(served):
  core, counts = served
  seen = []

  def read_inputs(signature):
    seen.append(signature.name)
    return {"x": np.array([1.0, 2.0], np.float32)}

  spec, outputs = core.predict(model_pb2.ModelSpec(name="m"), read_inputs, ["y"])
  assert spec == ("m", 1, "serving_default")
  assert list(outputs) == ["y"] and outputs["y"].tolist() == [2.0, 4.0]
  assert seen == ["serving_default"]
  assert counts == {"acquire": 1, "signature": 1}
  assert request_counts(core) == {("m", "OK"): 1}


def post(url: str, body) -> tuple[int, dict]:
  request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
  try:
    with urllib.request.urlopen(request, timeout=30) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_grpc_and_rest_go_through_the_core_and_are_counted_alike(served):
  core, counts = served
  grpc_server, grpc_port, _ = build_grpc(core, "127.0.0.1", 0)
  grpc_server.start()
  rest = RestServer(("127.0.0.1", 0), core, metrics_path="/metrics")
  threading.Thread(target=rest.serve_forever, daemon=True).start()
  url = f"http://127.0.0.1:{rest.server_address[1]}"
  try:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
      request = predict_pb2.PredictRequest()
      request.model_spec.name = "m"
      request.inputs["x"].CopyFrom(tensors.to_proto(np.array([1.0, 2.0], np.float32)))
      response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
          request, timeout=30)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [2.0, 4.0]
    assert (response.model_spec.version.value, response.model_spec.signature_name) == (
        1, "serving_default")
    assert post(f"{url}/v1/models/m:predict", {"instances": [3.0]}) == (
        200, {"predictions": [{"rows": 0, "y": 6.0}]})
    code, answer = post(f"{url}/v1/models/m:predict",
                        {"instances": [3.0], "signature_name": "nope"})
    assert code == 404 and "nope" in answer["error"]
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as page:
      assert b":tensorflow:serving:request_count" in page.read()
  finally:
    rest.shutdown()
    rest.server_close()
    grpc_server.stop(None)
  assert counts == {"acquire": 3, "signature": 3}  # one of each per predict
  assert request_counts(core) == {("m", "OK"): 2, ("m", "NOT_FOUND"): 1}
  assert latency_counts(core) == {("predict", "GRPC"): 1, ("predict", "REST"): 1}


def test_errors_keep_their_code_and_unexpected_ones_become_internal(served):
  core, _ = served

  def broken(signature):
    raise KeyError("x")

  with pytest.raises(ServingError) as error:
    core.predict(model_pb2.ModelSpec(name="m"), broken)
  assert error.value.code == grpc.StatusCode.INTERNAL and error.value.message == "KeyError: 'x'"
  with pytest.raises(ServingError) as error:
    core.predict(model_pb2.ModelSpec(name="m"), lambda signature: {"x": np.zeros([1], np.int32)})
  assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and "DT_INT32" in error.value.message
  with pytest.raises(ServingError) as error:
    core.metadata(model_pb2.ModelSpec(name="m"), ["signatures"], "REST")
  assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
  metadata = core.metadata(model_pb2.ModelSpec(name="m"), entrypoint="REST")
  assert metadata.model_spec.version.value == 1
  assert [s.version for s in core.status(model_pb2.ModelSpec(name="m")).model_version_status] \
      == [1]
  assert request_counts(core) == {("m", "INTERNAL"): 1, ("m", "INVALID_ARGUMENT"): 2,
                                  ("m", "OK"): 2}
  assert latency_counts(core) == {("GetModelMetadata", "REST"): 1,
                                  ("GetModelStatus", "GRPC"): 1}


def test_a_reload_request_may_name_only_the_operators_base_paths(served, base, tmp_path):
  core, _ = served
  with pytest.raises(ServingError) as error:
    core.reload_config(model_config(("m", base / "m"), ("etc", tmp_path)), from_request=True)
  assert error.value.code == grpc.StatusCode.PERMISSION_DENIED and str(tmp_path) in \
      error.value.message
  with pytest.raises(ServingError) as error:
    core.reload_config(model_config(("m", base / "m"), ("m", base / "m")), from_request=True)
  assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert core.registry.available() == {"m": [1]}  # neither request changed anything
  core.reload_config(model_config(("again", base / "m")), from_request=True)  # a known path
  assert core.registry.available() == {"again": [1]}


def test_a_reload_naming_a_missing_version_is_a_client_error(served, base):
  """A HandleReloadConfigRequest whose specific version policy names a version that
  is not on disk answers NOT_FOUND (was UNKNOWN); the request's own fault."""
  core, _ = served
  text = (f'model_config_list {{ config {{ name: "m" base_path: "{base / "m"}" '
          'model_version_policy { specific { versions: 7 } } } }')
  with pytest.raises(ServingError) as error:
    core.reload_config(text_format.Parse(text, model_server_config_pb2.ModelServerConfig()),
                       from_request=True)
  assert error.value.code == grpc.StatusCode.NOT_FOUND and "[7] not found" in error.value.message
