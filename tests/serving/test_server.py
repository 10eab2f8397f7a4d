"""The local server end to end on loopback: gRPC and REST, several models, versions,
labels, failed loads, batching, metrics, bad requests, the client and the CLI.

One server process (`served`) serves a model config with:
  xlmr      versions 1 and 2 (different weights) and a corrupt version 3, policy `all`,
            labels stable → 1, canary → 2
  electra   a replaced-token detection export (with an `embedding` signature)
  bart      a generation export
  ghost     a base path that does not exist
  broken    a single corrupt version
with batching, REST, Prometheus and a 4 MiB request limit.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from conftest import ROOT, write_bart_checkpoint, write_electra_checkpoint, write_hf_checkpoint
from servers import ServerProcess, assert_same_fillers
from serving import client as serving_client
from serving.client import ServingClient
import tfhub_models
from tfhub_models import export

AVAILABLE, END = 30, 50
NO_XLA = dict(jit_compile=False, warmup_batch_sizes=(1,))


def texts_array(texts) -> np.ndarray:
  return np.array([t.encode() if isinstance(t, str) else t for t in texts], dtype=object)


def write_corrupt_version(directory):
  directory.mkdir(parents=True)
  (directory / "saved_model.pb").write_bytes(b"this is not a SavedModel")


@pytest.fixture(scope="module")
def models(tmp_path_factory, sp_file, vocab_size, wordpiece_dir, bpe_dir):
  base = tmp_path_factory.mktemp("model_base")
  work = tmp_path_factory.mktemp("checkpoints")
  tasks = {}
  for version, seed in ((1, 1), (2, 2)):
    task = tfhub_models.load(write_hf_checkpoint(work / f"xlmr{seed}", sp_file, vocab_size,
                                                seed=seed), sequence_length=32)
    export.export(task, base, "xlmr", version, export.ExportOptions(top_k=3, **NO_XLA))
    tasks[("xlmr", version)] = task
  write_corrupt_version(base / "xlmr" / "3")
  vocab = len((wordpiece_dir / "vocab.txt").read_text().splitlines())
  electra = tfhub_models.load(write_electra_checkpoint(work / "electra", wordpiece_dir, vocab,
                                                      "discriminator"), sequence_length=32)
  export.export(electra, base, "electra", 1, export.ExportOptions(**NO_XLA))
  tasks["electra"] = electra
  bart = tfhub_models.load(write_bart_checkpoint(work / "bart", bpe_dir,
                                                 generation=dict(min_length=6)),
                          sequence_length=32)
  bart.compile(sampler="greedy")  # deterministic, so in-process answers are comparable
  export.export(bart, base, "bart", 1, export.ExportOptions(max_new_tokens=8, **NO_XLA))
  tasks["bart"] = bart
  write_corrupt_version(base / "broken" / "1")
  # A version whose warmup request names an input the model does not have.
  shutil.copytree(base / "xlmr" / "1", base / "badwarmup" / "1")
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "badwarmup"
  request.inputs["texts"].CopyFrom(serving_client._to_proto(texts_array(["warm <mask>"])))
  with tf.io.TFRecordWriter(str(base / "badwarmup" / "1" / "assets.extra" /
                                "tf_serving_warmup_requests")) as writer:
    writer.write(prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
  return {"base": base, "tasks": tasks}


MODEL_CONFIG = """
model_config_list {{
  config {{
    name: "xlmr" base_path: "{base}/xlmr" model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "electra" base_path: "{base}/electra" model_platform: "tensorflow" }}
  config {{ name: "bart" base_path: "{base}/bart" model_platform: "tensorflow" }}
  config {{ name: "ghost" base_path: "{base}/ghost" model_platform: "tensorflow" }}
  config {{ name: "broken" base_path: "{base}/broken" model_platform: "tensorflow" }}
  config {{ name: "badwarmup" base_path: "{base}/badwarmup" model_platform: "tensorflow" }}
}}
"""

BATCHING = """
max_batch_size { value: 16 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 64 }
num_batch_threads { value: 2 }
allowed_batch_sizes: 4
allowed_batch_sizes: 16
"""


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
  config_dir = tmp_path_factory.mktemp("config")
  (config_dir / "models.config").write_text(MODEL_CONFIG.format(base=models["base"]))
  (config_dir / "batching.config").write_text(BATCHING)
  (config_dir / "monitoring.config").write_text(
      'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
  server = ServerProcess(
      config_dir, "--model_config_file", str(config_dir / "models.config"),
      "--enable_batching", "--batching_parameters_file", str(config_dir / "batching.config"),
      "--monitoring_config_file", str(config_dir / "monitoring.config"),
      "--grpc_channel_arguments", "grpc.max_receive_message_length=4194304", rest=True)
  yield {"server": server, **models}
  server.stop()


def stubs(target):
  channel = grpc.insecure_channel(target)
  return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
          model_service_pb2_grpc.ModelServiceStub(channel), channel)


def rest(served, method, path, body=None, raw: bytes | None = None, headers=None):
  """(HTTP status, parsed JSON body) of one REST call."""
  data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
  request = urllib.request.Request(f"http://{served['server'].rest}{path}", data=data,
                                   method=method, headers=headers or {})
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


# --- answers ------------------------------------------------------------------------------

def test_fill_mask_over_grpc_matches_in_process(served):
  texts = ["The capital of France is <mask>.", "<mask> and <mask>", "none"]
  with ServingClient(served["server"].grpc, "xlmr") as client:
    answers = client.fill_mask(texts)
  assert [len(a) for a in answers] == [1, 2, 0]
  assert_same_fillers(answers, served["tasks"][("xlmr", 2)].fill_mask(texts, top_k=3))
  table = serving_client.format_fill_mask(texts, answers)
  assert "mask 2:" in table and "(no mask token in this text)" in table


def test_versions_and_labels_pick_the_version(served):
  texts = ["Hello <mask> world."]
  for selection, version in ((dict(version=1), 1), (dict(label="stable"), 1),
                             (dict(label="canary"), 2), ({}, 2)):
    with ServingClient(served["server"].grpc, "xlmr", **selection) as client:
      assert_same_fillers(client.fill_mask(texts),
                          served["tasks"][("xlmr", version)].fill_mask(texts, top_k=3))
  prediction, _, channel = stubs(served["server"].grpc)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "xlmr"
  request.model_spec.version_label = "stable"
  request.inputs["text"].CopyFrom(serving_client._to_proto(texts_array(texts)))
  response = prediction.Predict(request, timeout=60)
  assert (response.model_spec.name, response.model_spec.version.value,
          response.model_spec.signature_name) == ("xlmr", 1, "serving_default")
  # Typed value fields, as TF Serving answers (clients read `.float_val`).
  scores = response.outputs["top_k_scores"]
  assert len(scores.float_val) == 3 and not scores.tensor_content
  assert list(response.outputs["num_masks"].int_val) == [1]
  channel.close()


def test_replaced_token_detection_and_embedding(served):
  texts = ["the quick brown fox", "jumps"]
  with ServingClient(served["server"].grpc, "electra") as client:
    answers = client.detect_replaced(texts)
    embeddings = client.embed(texts, signature="embedding")
  want = served["tasks"]["electra"].detect_replaced(texts)
  for got, expected in zip(answers, want):
    assert [t.token for t in got] == [token for token, _ in expected]
    np.testing.assert_allclose([t.replaced_probability for t in got],
                               [p for _, p in expected], atol=1e-5)
  # One vector per real token; the pooled output is the [CLS] state (no pooler weights).
  assert [e.sequence.shape[0] for e in embeddings] == [len(a) for a in answers]
  for e in embeddings:
    np.testing.assert_allclose(e.pooled, e.sequence[0], atol=1e-6)
    np.testing.assert_allclose(e.mean, e.sequence.mean(axis=0), atol=1e-5)
  printed = serving_client.format_embeddings(texts, embeddings).splitlines()
  assert printed[0] == texts[0] and printed[1].startswith("  pooled [")
  assert printed[2].startswith("  mean [")     # what scripts/predict.py prints
  table = serving_client.format_replaced(texts, answers)
  assert table.splitlines()[0] == texts[0] and "[CLS]" in table


def test_generation(served):
  texts = ["the quick brown fox jumps over the lazy dog", "hello"]
  with ServingClient(served["server"].grpc, "bart") as client:
    generated = client.generate(texts)
    detailed = client.generate(texts, all_sequences=True)
  want = served["tasks"]["bart"].generate(texts, max_length=9)
  assert generated == [w if isinstance(w, str) else w.decode() for w in want]
  assert all(generated)  # min_length=6: never empty
  assert [[g.text for g in d] for d in detailed] == [[t] for t in generated]


def _batches_of_16(served) -> float:
  """How many merged batches the server padded to 16 rows (more than 4) for bart."""
  with urllib.request.urlopen(f"http://{served['server'].rest}/monitoring/prometheus/metrics",
                              timeout=30) as response:
    text = response.read().decode()
  from prometheus_client.parser import text_string_to_metric_families
  family = {f.name: f for f in text_string_to_metric_families(text)}[
      ":tensorflow:serving:batching_session:batch_size"]
  buckets = {s.labels["le"]: s.value for s in family.samples
             if s.name.endswith("_bucket") and s.labels.get("model_name") == "bart"}
  return buckets.get("16.0", 0) - buckets.get("8.0", 0)


def test_batched_requests_with_different_settings_each_get_their_own(served):
  """Requests of three texts, each with its own settings, merged by the batcher (two
  of them make a batch of 16): each answer is the one it gets alone."""
  import concurrent.futures
  texts = ["the quick brown fox jumps over the lazy dog", "hello", "a b c d e f"]
  settings = [dict(max_new_tokens=n, no_repeat_ngram_size=g, repetition_penalty=r,
                   min_new_tokens=m)
              for n, g, r, m in [(2, 0, 1.0, 0), (8, 1, 1.0, 0), (5, 2, 1.8, 4), (8, 0, 0.6, 7),
                                 (3, 3, 1.0, 2), (7, 4, 1.2, 0)]]
  with ServingClient(served["server"].grpc, "bart") as client:
    requests = [client.generation_inputs(texts, **s) for s in settings]
    alone = [client.predict(r, "generate_with_options") for r in requests]
    for request, out in zip(requests, alone):
      assert (out["num_generated_tokens"] <= request["max_new_tokens"]).all()
      assert (out["num_generated_tokens"] >= np.minimum(request["min_new_tokens"],
                                                        request["max_new_tokens"])).all()
    assert len({tuple(out["num_generated_tokens"]) for out in alone}) > 2
    before = _batches_of_16(served)
    for _ in range(5):   # until the batcher has merged some of them
      with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: client.predict(r, "generate_with_options"),
                                 requests))
      for out, want in zip(together, alone):
        for key in ("generated_ids", "num_generated_tokens", "generated_text"):
          np.testing.assert_array_equal(out[key], want[key])
        np.testing.assert_allclose(out["scores"], want["scores"], atol=1e-5)
      if _batches_of_16(served) > before:
        break
    assert _batches_of_16(served) > before, "the batcher never merged two requests"
    # A bad request among them (max_new_tokens past the export's 8) fails alone:
    # the others, merged with it or not, get their answers.
    bad = client.generation_inputs(texts, max_new_tokens=99)
    for _ in range(3):
      with concurrent.futures.ThreadPoolExecutor(len(requests) + 1) as pool:
        calls = [pool.submit(client.predict, r, "generate_with_options")
                 for r in [bad, *requests]]
        concurrent.futures.wait(calls, timeout=300)
      error = calls[0].exception()
      assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.INVALID_ARGUMENT
      assert "max_new_tokens" in error.details(), error.details()
      for call, want in zip(calls[1:], alone):
        np.testing.assert_array_equal(call.result()["generated_ids"], want["generated_ids"])
    # The client's generate() with settings; REST takes the same inputs.
    assert client.generate(texts, **settings[2]) == [t.decode()
                                                     for t in alone[2]["generated_text"]]
    # A setting left out takes the export's default: min_length 6 holds the end back.
    short = client.generate(texts, all_sequences=True, max_new_tokens=3)
    assert all(len(g[0].token_ids) == 1 + 8 and g[0].token_ids[4:] == (1,) * 5 for g in short)
  body = {"signature_name": "generate_with_options",
          "inputs": {k: (v.tolist() if k != "text" else texts) for k, v in requests[2].items()}}
  status, answer = rest(served, "POST", "/v1/models/bart:predict", body)
  assert status == 200, answer
  assert answer["outputs"]["generated_text"] == [t.decode() for t in alone[2]["generated_text"]]
  assert answer["outputs"]["num_generated_tokens"] == alone[2]["num_generated_tokens"].tolist()
  body["inputs"]["max_new_tokens"] = [9, 9, 9]     # above the export's --max-new-tokens 8
  status, answer = rest(served, "POST", "/v1/models/bart:predict", body)
  assert status == 400 and "max_new_tokens must be in 1..8" in answer["error"], answer


def test_metadata_and_status(served):
  with ServingClient(served["server"].grpc, "xlmr") as client:
    signatures = client.metadata().signature_def
    assert set(signatures) == {"serving_default", "logits", "tokenize"}
    assert set(signatures["serving_default"].outputs) == {
        "top_k_ids", "top_k_scores", "top_k_tokens", "num_masks"}
    status = client.status().model_version_status
  assert [(s.version, s.state) for s in status] == [(3, END), (2, AVAILABLE), (1, AVAILABLE)]
  from grpc_health.v1 import health_pb2, health_pb2_grpc
  with grpc.insecure_channel(served["server"].grpc) as channel:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService", "PredictionService"):
      answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
      assert answer.status == health_pb2.HealthCheckResponse.SERVING
  assert status[0].status.error_code != 0 and status[0].status.error_message
  assert status[1].status.error_code == 0


def test_failed_and_missing_models_are_reported_and_others_serve(served):
  with ServingClient(served["server"].grpc, "broken") as client:
    status = client.status().model_version_status
    assert [(s.version, s.state) for s in status] == [(1, END)]
    assert "saved_model" in status[0].status.error_message.lower(), status[0].status
    with pytest.raises(grpc.RpcError) as error:
      client.fill_mask(["x"])
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
  with ServingClient(served["server"].grpc, "ghost") as client:
    with pytest.raises(grpc.RpcError) as error:
      client.status()
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "does not exist" in error.value.details()
  code, body = rest(served, "GET", "/v1/models/ghost")
  assert code == 404 and "does not exist" in body["error"]
  with ServingClient(served["server"].grpc, "xlmr") as client:
    assert len(client.fill_mask(["still <mask>"])[0]) == 1


# --- load ---------------------------------------------------------------------------------

LOAD_TEXTS = ["The <mask> of France.", "<mask> and <mask> went home.", "no mask here",
              "Ein <mask> Test.", "<mask>", "A long sentence with a <mask> near the end of it."]


def test_32_clients_200_requests_each_twice_no_errors_and_memory_settles(served):
  """Two rounds of 32 concurrent clients x 200 requests (batched on the server)."""
  import threading
  want = {t: a for t, a in zip(LOAD_TEXTS, served["tasks"][("xlmr", 2)].fill_mask(
      LOAD_TEXTS, top_k=3))}
  server = served["server"]

  def client_loop(index, errors, wrong):
    with ServingClient(server.grpc, "xlmr", timeout=60, retries=0) as client:
      for i in range(200):
        text = LOAD_TEXTS[(index + i) % len(LOAD_TEXTS)]
        try:
          answer = client.fill_mask([text])[0]
        except grpc.RpcError as e:
          errors.append(f"{e.code().name}: {e.details()}")
          continue
        try:
          assert_same_fillers([answer], [want[text]])
        except AssertionError as e:
          wrong.append((text, str(e)[:300]))

  rss = []
  for _ in range(2):
    errors, wrong = [], []
    threads = [threading.Thread(target=client_loop, args=(i, errors, wrong))
               for i in range(32)]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and wrong == [], (errors[:5], wrong[:5])
    rss.append(server.rss_bytes())
  assert rss[1] <= rss[0] * 1.10, f"resident memory grew from {rss[0]} to {rss[1]} bytes"


def test_warmup_requests_are_replayed_and_a_failing_one_fails_the_load(served):
  log = served["server"].output()
  counts = re.findall(r"model xlmr version (\d) is available \((\d+) warmup requests", log)
  assert sorted(v for v, _ in counts) == ["1", "2"], log
  assert all(int(c) > 0 for _, c in counts), counts
  with ServingClient(served["server"].grpc, "badwarmup") as client:
    (status,) = client.status().model_version_status
  assert status.state == END and "texts" in status.status.error_message


# --- REST ---------------------------------------------------------------------------------

def test_rest_status_metadata_and_both_predict_formats(served):
  code, body = rest(served, "GET", "/v1/models/xlmr/versions/1")
  assert code == 200
  assert body["model_version_status"] == [
      {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
  code, body = rest(served, "GET", "/v1/models/xlmr/labels/canary/metadata")
  assert code == 200 and body["model_spec"]["version"] == "2"
  assert "serving_default" in body["metadata"]["signature_def"]["signature_def"]

  texts = ["A <mask> day.", "b"]
  with ServingClient(served["server"].grpc, "xlmr") as client:
    want = client.predict({"text": texts_array(texts)})
  code, body = rest(served, "POST", "/v1/models/xlmr:predict", {"instances": texts})
  assert code == 200 and len(body["predictions"]) == 2
  assert [p["num_masks"] for p in body["predictions"]] == [1, 0]
  assert body["predictions"][0]["top_k_ids"] == want["top_k_ids"][0].tolist()
  assert body["predictions"][0]["top_k_tokens"] == [
      [t.decode() for t in row] for row in want["top_k_tokens"][0]]
  # Columnar, binary strings as b64, a version in the path, a signature by name.
  encoded = [{"b64": base64.b64encode(t.encode()).decode()} for t in texts]
  code, body = rest(served, "POST", "/v1/models/xlmr/versions/2:predict",
                    {"inputs": {"text": encoded}, "signature_name": "tokenize"})
  assert code == 200 and set(body["outputs"]) == {"token_ids", "padding_mask"}
  with ServingClient(served["server"].grpc, "xlmr") as client:
    tokens = client.predict({"text": texts_array(texts)}, signature="tokenize")
  assert body["outputs"]["token_ids"] == tokens["token_ids"].tolist()


def test_prometheus_metrics(served):
  with ServingClient(served["server"].grpc, "xlmr") as client:
    client.fill_mask(["<mask>"])
  with urllib.request.urlopen(f"http://{served['server'].rest}/monitoring/prometheus/metrics",
                              timeout=30) as response:
    text = response.read().decode()
    assert response.headers["Content-Type"].startswith("text/plain")
  from prometheus_client.parser import text_string_to_metric_families
  families = {f.name: f for f in text_string_to_metric_families(text)}
  counts = {tuple(sorted(s.labels.items())): s.value
            for s in families[":tensorflow:serving:request_count"].samples}
  assert counts[(("model_name", "xlmr"), ("status", "OK"))] >= 1
  assert families[":tensorflow:serving:request_latency"].type == "histogram"
  assert any(s.labels.get("status") == "fail"
             for s in families[":tensorflow:cc:saved_model:load_attempt_count"].samples)


# --- bad requests -------------------------------------------------------------------------

def _predict_request(model="xlmr", inputs=None, signature="", **spec):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = signature
  if "version" in spec:
    request.model_spec.version.value = spec["version"]
  if "label" in spec:
    request.model_spec.version_label = spec["label"]
  for key, value in (inputs if inputs is not None else {"text": texts_array(["a <mask>"])}
                     ).items():
    request.inputs[key].CopyFrom(value if isinstance(value, type(request.inputs["x"]))
                                 else serving_client._to_proto(value))
  request.inputs.pop("x", None)
  return request


def _huge_repeated_tensor():
  """22 bytes on the wire, [20000, 20000] int32 (1.6 GB) once expanded."""
  proto = serving_client._to_proto(np.zeros([1], np.int32))
  del proto.tensor_shape.dim[:]
  proto.tensor_shape.dim.add(size=20000)
  proto.tensor_shape.dim.add(size=20000)
  proto.ClearField("tensor_content")
  proto.int_val.append(7)
  return proto


def _bad_tensor_content():
  proto = serving_client._to_proto(np.zeros([4], np.int32))
  proto.tensor_content = b"\x00" * 7  # 7 bytes cannot hold int32s
  return proto


GRPC_BAD = [
    # (what, method, request, code, words the message must contain)
    ("unknown model", "Predict", lambda: _predict_request("nope"), "NOT_FOUND", ["nope"]),
    ("unknown version", "Predict", lambda: _predict_request(version=99), "NOT_FOUND",
     ["xlmr", "99"]),
    ("version that failed to load", "Predict", lambda: _predict_request(version=3),
     "NOT_FOUND", ["3"]),
    ("unknown label", "Predict", lambda: _predict_request(label="prod"), "NOT_FOUND", ["prod"]),
    ("model path in the name", "Predict", lambda: _predict_request("../xlmr"), "NOT_FOUND",
     ["../xlmr"]),
    ("unknown signature", "Predict", lambda: _predict_request(signature="nope"), "NOT_FOUND",
     ["nope"]),
    ("wrong input name", "Predict",
     lambda: _predict_request(inputs={"texts": texts_array(["a"])}), "INVALID_ARGUMENT",
     ["texts", "text"]),
    ("no inputs", "Predict", lambda: _predict_request(inputs={}), "INVALID_ARGUMENT", ["text"]),
    ("an extra input", "Predict",
     lambda: _predict_request(inputs={"text": texts_array(["a"]), "pair": texts_array(["b"])}),
     "INVALID_ARGUMENT", ["pair"]),
    ("float for text", "Predict",
     lambda: _predict_request(inputs={"text": np.array([1.0], np.float32)}),
     "INVALID_ARGUMENT", ["text", "DT_FLOAT", "DT_STRING"]),
    ("int for text", "Predict",
     lambda: _predict_request(inputs={"text": np.array([1], np.int32)}),
     "INVALID_ARGUMENT", ["text", "DT_INT32"]),
    ("rank 2 text", "Predict",
     lambda: _predict_request(inputs={"text": texts_array(["a", "b"]).reshape(1, 2)}),
     "INVALID_ARGUMENT", ["text", "shape"]),
    ("scalar text", "Predict",
     lambda: _predict_request(inputs={"text": np.array(b"a", dtype=object)}),
     "INVALID_ARGUMENT", ["text", "shape"]),
    ("empty batch", "Predict",
     lambda: _predict_request(inputs={"text": np.array([], dtype=object)}),
     "INVALID_ARGUMENT", ["text", "empty"]),
    ("batch larger than max_batch_size", "Predict",
     lambda: _predict_request(inputs={"text": texts_array(["a"] * 17)}), "INVALID_ARGUMENT",
     ["17", "16"]),
    ("malformed tensor", "Predict", lambda: _predict_request(
        signature="logits", inputs={"token_ids": _bad_tensor_content(),
                                    "padding_mask": np.ones([1, 4], np.int32),
                                    "mask_positions": np.zeros([1, 1], np.int32)}),
     "INVALID_ARGUMENT", ["token_ids"]),
    ("token id out of range", "Predict", lambda: _predict_request(
        signature="logits", inputs={"token_ids": np.array([[0, 10 ** 6, 2]], np.int32),
                                    "padding_mask": np.ones([1, 3], np.int32),
                                    "mask_positions": np.zeros([1, 1], np.int32)}),
     "INVALID_ARGUMENT", ["token_ids"]),
    ("a few bytes declaring a huge tensor", "Predict", lambda: _predict_request(
        signature="logits", inputs={"token_ids": _huge_repeated_tensor(),
                                    "padding_mask": np.ones([1, 4], np.int32),
                                    "mask_positions": np.zeros([1, 1], np.int32)}),
     "INVALID_ARGUMENT", ["token_ids", "bytes"]),
    ("oversized message", "Predict",
     lambda: _predict_request(inputs={"text": texts_array(["x" * (5 << 20)])}),
     "RESOURCE_EXHAUSTED", ["larger than max"]),
    ("metadata with a wrong field", "GetModelMetadata",
     lambda: get_model_metadata_pb2.GetModelMetadataRequest(
         model_spec={"name": "xlmr"}, metadata_field=["signatures"]),
     "INVALID_ARGUMENT", ["signature_def", "signatures"]),
    ("metadata of an unknown model", "GetModelMetadata",
     lambda: get_model_metadata_pb2.GetModelMetadataRequest(
         model_spec={"name": "nope"}, metadata_field=["signature_def"]),
     "NOT_FOUND", ["nope"]),
    ("status of an unknown model", "GetModelStatus",
     lambda: get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "nope"}),
     "NOT_FOUND", ["nope"]),
    ("status of an unknown version", "GetModelStatus",
     lambda: get_model_status_pb2.GetModelStatusRequest(
         model_spec={"name": "xlmr", "version": {"value": 42}}), "NOT_FOUND", ["42"]),
    ("classify", "Classify",
     lambda: classification_pb2.ClassificationRequest(model_spec={"name": "xlmr"}),
     "UNIMPLEMENTED", ["Predict"]),
    ("reload naming a new base path", "HandleReloadConfigRequest",
     lambda: model_management_pb2.ReloadConfigRequest(
         config=model_server_config_pb2.ModelServerConfig(
             model_config_list={"config": [{"name": "etc", "base_path": "/etc",
                                            "model_platform": "tensorflow"}]})),
     "PERMISSION_DENIED", ["/etc"]),
    ("reload with a duplicate model", "HandleReloadConfigRequest",
     lambda: model_management_pb2.ReloadConfigRequest(
         config=model_server_config_pb2.ModelServerConfig(
             model_config_list={"config": [{"name": "a", "base_path": "/a"},
                                           {"name": "a", "base_path": "/a"}]})),
     "INVALID_ARGUMENT", ["a"]),
]


def _rest_case(method, path, body=None, raw=None, headers=None):
  return (method, path, body, raw, headers)


REST_BAD = [
    ("malformed JSON", _rest_case("POST", "/v1/models/xlmr:predict", raw=b'{"instances": ['),
     400, ["JSON Parse error"]),
    ("body not UTF-8", _rest_case("POST", "/v1/models/xlmr:predict",
                                  raw=b'{"instances": ["\xff\xfe"]}'), 400, ["UTF-8"]),
    ("body not an object", _rest_case("POST", "/v1/models/xlmr:predict", [1, 2]), 400,
     ["object"]),
    ("empty body", _rest_case("POST", "/v1/models/xlmr:predict", raw=b""), 400,
     ["JSON Parse error"]),
    ("neither instances nor inputs", _rest_case("POST", "/v1/models/xlmr:predict",
                                                {"instance": ["a"]}), 400,
     ["'inputs' or 'instances'"]),
    ("both instances and inputs", _rest_case("POST", "/v1/models/xlmr:predict",
                                             {"instances": ["a"], "inputs": ["a"]}), 400,
     ["only one"]),
    ("empty instances", _rest_case("POST", "/v1/models/xlmr:predict", {"instances": []}), 400,
     ["instances"]),
    ("number for a string", _rest_case("POST", "/v1/models/xlmr:predict", {"instances": [3]}),
     400, ["text", "string"]),
    ("bad base64", _rest_case("POST", "/v1/models/xlmr:predict",
                              {"instances": [{"b64": "***"}]}), 400, ["base64"]),
    ("ragged list", _rest_case("POST", "/v1/models/xlmr:predict",
                               {"signature_name": "logits", "inputs": {
                                   "token_ids": [[0, 5], [0]], "padding_mask": [[1, 1], [1]],
                                   "mask_positions": [[1], [0]]}}), 400, ["ragged"]),
    ("wrong input name", _rest_case("POST", "/v1/models/xlmr:predict",
                                    {"instances": [{"texts": "a"}]}), 400, ["texts"]),
    ("float for an int input", _rest_case("POST", "/v1/models/xlmr:predict", {
        "signature_name": "logits", "inputs": {"token_ids": [[0.5]], "padding_mask": [[1]],
                                               "mask_positions": [[0]]}}), 400, ["token_ids"]),
    ("unknown model", _rest_case("POST", "/v1/models/nope:predict", {"instances": ["a"]}), 404,
     ["nope"]),
    ("unknown version", _rest_case("POST", "/v1/models/xlmr/versions/9:predict",
                                   {"instances": ["a"]}), 404, ["9"]),
    ("unknown label", _rest_case("GET", "/v1/models/xlmr/labels/prod/metadata"), 404,
     ["prod"]),
    ("unknown signature", _rest_case("POST", "/v1/models/xlmr:predict",
                                     {"instances": ["a"], "signature_name": "nope"}), 404,
     ["nope"]),
    ("GET of :predict", _rest_case("GET", "/v1/models/xlmr:predict"), 400,
     ["Malformed request"]),
    ("unknown path", _rest_case("GET", "/v2/models/xlmr"), 404, ["/v2/models/xlmr"]),
    ("version beyond int64", _rest_case("GET", "/v1/models/xlmr/versions/99999999999999999999"),
     400, ["99999999999999999999"]),
    ("JSON nested too deeply", _rest_case("POST", "/v1/models/xlmr:predict",
                                          raw=b'{"instances": ' + b"[" * 50000 + b"]" * 50000
                                          + b"}"), 400, ["nested"]),
    ("bad gzip body", _rest_case("POST", "/v1/models/xlmr:predict", raw=b"not gzip",
                                 headers={"Content-Encoding": "gzip"}), 400, ["gzip"]),
    ("classify", _rest_case("POST", "/v1/models/xlmr:classify", {"examples": []}), 501,
     ["predict"]),
    ("oversized body", _rest_case("POST", "/v1/models/xlmr:predict",
                                  raw=b'{"instances": ["' + b"x" * (5 << 20) + b'"]}'), 429,
     ["limit"]),
    ("batch larger than max_batch_size", _rest_case("POST", "/v1/models/xlmr:predict",
                                                    {"instances": ["a"] * 17}), 400, ["17"]),
]


@pytest.mark.parametrize("what,method,make,code,words", GRPC_BAD, ids=[c[0] for c in GRPC_BAD])
def test_bad_grpc_request_gets_its_status(served, what, method, make, code, words):
  prediction, models, channel = stubs(served["server"].grpc)
  stub = models if method in ("GetModelStatus", "HandleReloadConfigRequest") else prediction
  with pytest.raises(grpc.RpcError) as error:
    getattr(stub, method)(make(), timeout=60)
  channel.close()
  assert error.value.code().name == code, error.value.details()
  for word in words:
    assert word in error.value.details(), (word, error.value.details())


@pytest.mark.parametrize("what,case,code,words", REST_BAD, ids=[c[0] for c in REST_BAD])
def test_bad_rest_request_gets_its_status(served, what, case, code, words):
  method, path, body, raw, headers = case
  got, answer = rest(served, method, path, body, raw, headers)
  assert got == code, answer
  for word in words:
    assert word in answer["error"], (word, answer)


def test_rest_chunked_gzip_and_broken_framing(served):
  import gzip
  host, port = served["server"].rest.split(":")
  body = json.dumps({"instances": ["A <mask> day."]}).encode()

  def send(headers, payload):
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", "/v1/models/xlmr:predict")
    for key, value in headers.items():
      connection.putheader(key, value)
    connection.endheaders()
    connection.send(payload)
    response = connection.getresponse()
    answer = (response.status, json.loads(response.read()))
    connection.close()
    return answer

  chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
  status, answer = send({"Transfer-Encoding": "chunked"}, chunked + b"0\r\n\r\n")
  assert status == 200 and answer["predictions"][0]["num_masks"] == 1
  status, answer = send({"Content-Encoding": "gzip", "Content-Length": str(len(
      gzip.compress(body)))}, gzip.compress(body))
  assert status == 200 and answer["predictions"][0]["num_masks"] == 1
  status, answer = send({"Content-Length": "-1"}, b"")
  assert status == 400 and "Content-Length" in answer["error"]
  status, answer = send({"Transfer-Encoding": "chunked"}, b"zz\r\n")
  assert status == 400 and "chunk" in answer["error"]


def test_server_keeps_serving_after_bad_requests(served):
  """Every bad request of the lists above, sent again here (so the test stands
  alone): afterwards the answers are still right and the process lives."""
  prediction, models, channel = stubs(served["server"].grpc)
  for _, method, make, code, _ in GRPC_BAD:
    stub = models if method in ("GetModelStatus", "HandleReloadConfigRequest") else prediction
    with pytest.raises(grpc.RpcError) as error:
      getattr(stub, method)(make(), timeout=60)
    assert error.value.code().name == code
  channel.close()
  for _, (method, path, body, raw, headers), code, _ in REST_BAD:
    assert rest(served, method, path, body, raw, headers)[0] == code
  texts = ["After the storm, <mask>."]
  with ServingClient(served["server"].grpc, "xlmr") as client:
    assert_same_fillers(client.fill_mask(texts),
                        served["tasks"][("xlmr", 2)].fill_mask(texts, top_k=3))
  assert served["server"].process.poll() is None


def test_invalid_utf8_and_overlong_text_answer_like_in_process(served):
  """Invalid UTF-8 is replaced by U+FFFD and over-long text truncated, as documented."""
  texts = [b"caf\xe9 <mask>", ("word " * 2000 + "<mask>").encode(),
           ("<mask> " + "w " * 500).encode()]
  with ServingClient(served["server"].grpc, "xlmr") as client:
    answers = client.fill_mask(texts)
  want = served["tasks"][("xlmr", 2)].fill_mask(
      ["caf\ufffd <mask>", texts[1].decode(), texts[2].decode()], top_k=3)
  assert [len(a) for a in answers] == [1, 0, 1]
  assert_same_fillers(answers, want)


def test_reload_config_changes_labels_and_keeps_paths(served):
  """HandleReloadConfigRequest may re-point a label within the configured paths."""
  _, models, channel = stubs(served["server"].grpc)
  config = model_server_config_pb2.ModelServerConfig()
  text = MODEL_CONFIG.format(base=served["base"]).replace('key: "stable" value: 1',
                                                          'key: "stable" value: 2')
  from google.protobuf import text_format
  text_format.Parse(text, config)
  models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config),
                                   timeout=300)
  try:
    with ServingClient(served["server"].grpc, "xlmr", label="stable") as client:
      texts = ["<mask>!"]
      assert_same_fillers(client.fill_mask(texts),
                          served["tasks"][("xlmr", 2)].fill_mask(texts, top_k=3))
  finally:
    text_format.Parse(MODEL_CONFIG.format(base=served["base"]), config := type(config)())
    models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config),
                                     timeout=300)
    channel.close()


# --- the CLI ------------------------------------------------------------------------------

def run_predict(*args):
  return subprocess.run([sys.executable, "scripts/predict.py", *args], capture_output=True,
                        text=True, cwd=ROOT, timeout=120)


def test_predict_cli_tables_and_json(served):
  target = served["server"].grpc
  result = run_predict("--server", target, "--model", "xlmr", "--label", "stable",
                       "Hello <mask>!")
  assert result.returncode == 0, result.stderr
  assert "mask 1:" in result.stdout and " 1. " in result.stdout
  result = run_predict("--server", target, "--model", "bart", "hello there")
  assert result.returncode == 0, result.stderr
  want = served["tasks"]["bart"].generate(["hello there"], max_length=9)[0]
  assert f"→ {want if isinstance(want, str) else want.decode()}" in result.stdout
  result = run_predict("--server", target, "--model", "bart", "--max-new-tokens", "2", "--json",
                       "hello there")
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)["num_generated_tokens"][0] <= 2
  result = run_predict("--server", target, "--model", "bart", "--temperature", "0", "hi")
  assert result.returncode == 1 and "INVALID_ARGUMENT" in result.stderr \
      and "temperature must be > 0" in result.stderr, result.stderr
  result = run_predict("--server", target, "--model", "electra", "a b c")
  assert result.returncode == 0 and "a" in result.stdout, result.stderr
  result = run_predict("--server", target, "--model", "xlmr", "--json", "<mask> x")
  assert result.returncode == 0, result.stderr
  answer = json.loads(result.stdout)
  assert answer["num_masks"] == [1] and len(answer["top_k_tokens"][0][0]) == 3
  result = run_predict("--server", target, "--model", "nope", "x")
  assert result.returncode == 1 and "NOT_FOUND" in result.stderr


# --- binding ------------------------------------------------------------------------------

def test_server_binds_loopback_by_default(served):
  """The server starts without --host: it listens on 127.0.0.1 only (gRPC and REST)."""
  from serving import server
  args = server.build_parser().parse_args([])
  assert args.host == "127.0.0.1" and args.port == 8500 and args.rest_api_port == 0
  assert args.file_system_poll_wait_seconds == 1 and args.enable_model_warmup is True
  ports = [int(served["server"].grpc.rsplit(":", 1)[1]),
           int(served["server"].rest.rsplit(":", 1)[1])]
  for port in ports:
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
      if os.path.exists(table):
        for line in open(table).read().splitlines()[1:]:
          local, state = line.split()[1], line.split()[3]
          address, local_port = local.split(":")
          if int(local_port, 16) == port and state == "0A":  # LISTEN
            listening.append(address)
    # 127.0.0.1, as IPv4 or IPv4-mapped IPv6 (::ffff:127.0.0.1), and nothing else.
    assert listening and all(a in ("0100007F", "0000000000000000FFFF00000100007F")
                             for a in listening), listening


def test_bad_flags_and_config_files_fail_clearly(tmp_path, monkeypatch, capsys):
  (tmp_path / "bad.config").write_text("model_config_list { config { nme: 'x' } }")
  (tmp_path / "batching.config").write_text(
      "max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 6")
  (tmp_path / "ssl.config").write_text('server_key: "not a key" server_cert: "not a cert"')
  cases = [
      ([], "--model_base_path"),
      (["--model_config_file", str(tmp_path / "bad.config")], "bad.config"),
      (["--model_config_file", str(tmp_path / "missing.config")], "missing.config"),
      (["--model_base_path", str(tmp_path), "--enable_batching", "--batching_parameters_file",
        str(tmp_path / "batching.config")], "allowed_batch_sizes"),
      (["--model_base_path", str(tmp_path), "--batching_parameters_file",
        str(tmp_path / "batching.config")], "--enable_batching"),
      (["--model_base_path", str(tmp_path), "--ssl_config_file", str(tmp_path / "ssl.config")],
       "ssl.config"),
  ]
  # The first as a command (its exit status), the others through main() in this process.
  args, words = cases[0]
  result = subprocess.run([sys.executable, "-m", "serving.server", "--port", "0", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert result.returncode == 2 and words in result.stderr, (args, result.stderr[-800:])
  from serving import server

  def never_started(settings):
    raise AssertionError("the server started")   # instead of serving until killed
  monkeypatch.setattr(server, "_start", never_started)
  for args, words in cases[1:]:
    capsys.readouterr()
    try:
      code = server.main(["--port", "0", *args])
    except SystemExit as e:   # argparse
      code = e.code
    stderr = capsys.readouterr().err
    assert code == 2 and words in stderr, (args, stderr[-800:])


def test_demo_runs_end_to_end():
  # main() in this process: tests/test_demo.py runs scripts/demo.py as a command.
  from servers import script_main
  code, stdout, stderr = script_main("demo", "--random", "Ein <mask> Test.")
  assert code == 0, stderr[-2000:]
  assert "Ein <mask> Test." in stdout and "mask 1:" in stdout


def test_server_code_never_unpickles():
  """The server reads SavedModels and text protos only."""
  for path in (ROOT / "serving").glob("*.py"):
    source = path.read_text()
    for word in ("pickle", "torch.load", "allow_pickle", "joblib", "dill"):
      assert word not in source, (path.name, word)
