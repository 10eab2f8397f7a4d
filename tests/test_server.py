"""The local server and client end to end, on loopback, with the stock stubs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from conftest import ROOT
from serving.client import ServingClient, format_fill_mask
from tfhub_models import checkpoints, export


@pytest.fixture(scope="module")
def served(hf_checkpoint, tmp_path_factory):
  base = tmp_path_factory.mktemp("served")
  task = checkpoints.load(hf_checkpoint, sequence_length=32)
  path = export.export(task, base, "xlmr", options=export.ExportOptions(
      top_k=3, warmup_batch_sizes=(1,)))
  port_file = base / "port"
  process = subprocess.Popen(
      [sys.executable, "-m", "serving.server", "--model_name", "xlmr", "--model_base_path",
       str(base / "xlmr"), "--port", "0", "--port_file", str(port_file)],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  deadline = time.monotonic() + 300
  while not port_file.exists():
    if process.poll() is not None or time.monotonic() > deadline:
      process.kill()
      pytest.fail(f"server did not start: {process.stdout.read()}")
    time.sleep(0.2)
  yield {"target": f"127.0.0.1:{port_file.read_text()}", "task": task, "path": path}
  process.terminate()
  process.wait(timeout=30)


def test_fill_mask_over_grpc(served):
  texts = ["The capital of France is <mask>.", "<mask> and <mask>", "none"]
  with ServingClient(served["target"], "xlmr") as client:
    answers = client.fill_mask(texts)
  expected = served["task"].fill_mask(texts, top_k=3)
  assert [len(a) for a in answers] == [1, 2, 0]
  for got_masks, want_masks in zip(answers, expected):
    for got, want in zip(got_masks, want_masks):
      assert [f.token_id for f in got] == [w["token_id"] for w in want]
      np.testing.assert_allclose([f.score for f in got], [w["score"] for w in want], atol=1e-5)
      assert [f.token for f in got] == [w["token"] for w in want]
  table = format_fill_mask(texts, answers)
  assert "mask 2:" in table and "(no <mask> in this text)" in table


def test_metadata_and_status(served):
  with ServingClient(served["target"], "xlmr") as client:
    signatures = client.metadata().signature_def
    assert set(signatures) == {"serving_default", "logits", "tokenize"}
    assert set(signatures["serving_default"].outputs) == {
        "top_k_ids", "top_k_scores", "top_k_tokens", "num_masks"}
    status = client.status().model_version_status
    assert [(s.version, s.state) for s in status] == [(1, 30)]  # AVAILABLE


def test_errors_have_tf_serving_codes(served):
  with ServingClient(served["target"], "other") as client:
    with pytest.raises(grpc.RpcError) as error:
      client.fill_mask(["x"])
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
  with ServingClient(served["target"], "xlmr", version=7) as client:
    with pytest.raises(grpc.RpcError) as error:
      client.fill_mask(["x"])
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
  with ServingClient(served["target"], "xlmr") as client:
    with pytest.raises(grpc.RpcError) as error:
      client.predict({"texts": np.array([b"x"], dtype=object)})
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "text" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
      client.predict({"text": np.array([1.0], np.float32)})
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DT_FLOAT" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
      client.predict({"text": np.array([b"x"], dtype=object)}, signature="nope")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    # The server keeps serving after bad requests.
    assert len(client.fill_mask(["still <mask> up"])[0]) == 1


def test_predict_cli(served):
  result = subprocess.run(
      [sys.executable, "scripts/predict.py", "--server", served["target"], "--model", "xlmr",
       "Hello <mask>!"], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "mask 1:" in result.stdout and " 1. " in result.stdout
  result = subprocess.run(
      [sys.executable, "scripts/predict.py", "--server", served["target"], "--model", "nope",
       "x"], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert result.returncode == 1 and "NOT_FOUND" in result.stderr


def test_server_binds_loopback_by_default(served):
  """The served fixture starts the server without --host: it listens on 127.0.0.1 only."""
  from serving import server
  args = server.build_parser().parse_args(["--model_name", "m", "--model_base_path", "/m"])
  assert args.host == "127.0.0.1" and args.port == 8500
  port = int(served["target"].rsplit(":", 1)[1])
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


def test_demo_runs_end_to_end():
  result = subprocess.run([sys.executable, "scripts/demo.py", "Ein <mask> Test."],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "Ein <mask> Test." in result.stdout and "mask 1:" in result.stdout
