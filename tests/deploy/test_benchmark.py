"""scripts/benchmark.py --quick: every case runs against every peer and the report
(results.json, results.png, the table) is written from what was measured."""

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT
PEERS = {
    "encoder": {"encoder": {"ours", "keras_hub", "pytorch", "onnxruntime"}},
    "fill_mask": {"fill_mask": {"ours", "pytorch", "keras_hub"}},
    "generation": {name: {"ours", "keras_hub", "pytorch"}
                   for name in ("greedy_batch1", "greedy_batch8", "beam4_batch1")},
    "training": {"training_step": {"ours", "keras_hub", "pytorch"}},
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  output = tmp_path_factory.mktemp("benchmark")
  done = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--quick",
                         "--output", str(output)], capture_output=True, text=True,
                        timeout=1500)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
  return output, json.loads((output / "results.json").read_text()), done.stdout


def _records(results, case):
  return {record["name"]: record for record in results["cases"][case]["comparisons"]}


def test_every_case_and_peer_is_measured(quick_run):
  _, results, _ = quick_run
  assert set(results["cases"]) == {"encoder", "fill_mask", "generation", "bfloat16",
                                   "training", "serving", "export"}
  for case, result in results["cases"].items():
    assert "error" not in result, (case, result.get("traceback"))
  for case, comparisons in PEERS.items():
    records = _records(results, case)
    for name, systems in comparisons.items():
      record = records[name]
      assert set(record["systems"]) == systems, (case, name)
      for system, row in record["systems"].items():
        assert row["value"] > 0 and math.isfinite(row["value"]), (case, name, system)
        if case != "training":   # its steps are timed in one process, medians kept
          assert len(row["runs_s"]) == results["repeats"]
      ours = record["systems"]["ours"]["value"]
      for peer in systems - {"ours"}:   # the ratio is what was measured
        assert record["ratios"][peer] == pytest.approx(ours / record["systems"][peer]["value"])
  generation = results["cases"]["generation"]
  bound = generation["weight_streaming"]
  assert bound["bound_tokens_per_s"] == pytest.approx(
      bound["memory_read_gb_s"] * 1e9 / bound["bytes_per_step"])
  fractions = [r for r in generation["comparisons"] if "weight_streaming_bound" in r["ratios"]]
  assert fractions[0]["ratios"]["weight_streaming_bound"] == pytest.approx(
      bound["ours_tokens_per_s"] / bound["bound_tokens_per_s"])


def test_bfloat16_serving_and_export_figures(quick_run):
  _, results, _ = quick_run
  bf16 = _records(results, "bfloat16")
  for name in ("encoder_bfloat16:bfloat16_no_xla", "encoder_bfloat16:bfloat16_xla",
               "greedy_batch1_bfloat16"):
    assert "ours_float32" in bf16[name]["ratios"], name
  for name in ("fill_mask_top1_agreement:bfloat16_no_xla", "fill_mask_top1_agreement:bfloat16_xla",
               "greedy_agreement:random_base"):
    assert 0.0 <= bf16[name]["ratios"]["float32"] <= 1.0, name
  # bfloat16 weights stream half the bytes of float32's.
  weights = results["cases"]["generation"]["weight_streaming"]["bytes_per_step"]
  assert results["cases"]["bfloat16"]["greedy_bfloat16_bytes_per_step"] == pytest.approx(
      weights / 2, rel=0.01)
  serving = results["cases"]["serving"]
  assert serving["latency_ms"]["base"]["grpc"] > 0
  assert serving["throughput_requests_per_s"]["with_batching"] > 0
  for kind in ("xlm_roberta", "bart"):
    cold = serving["cold_start"][kind]
    assert cold["warmup_requests"] > 0 and cold["total_s"] >= cold["load_s"] > 0
  exports = results["cases"]["export"]["exports"]
  assert {"xlm_roberta float32 XLA", "bart float32 XLA"} <= set(exports)
  for info in exports.values():
    assert info["export_s"] > 0 and info["peak_rss_mb"] > 0 and info["size_mb"] > 0


def test_machine_versions_chart_and_table(quick_run):
  output, results, stdout = quick_run
  machine = results["machine"]
  assert machine["cores"] >= 1 and machine["cpu"] and machine["memory_read_gb_s"] > 0
  for package in ("tensorflow", "torch", "transformers", "keras-hub", "onnxruntime"):
    assert results["versions"][package], package
  png = (output / "results.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
  assert "encoder" in stdout and "onnxruntime" in stdout and "keras_hub" in stdout
  table = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--markdown",
                          str(output / "results.json")], capture_output=True, text=True,
                         check=True).stdout
  assert f"| encoder | {_records(results, 'encoder')['encoder']['systems']['ours']['value']:,.1f}" \
      in table
