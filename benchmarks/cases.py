"""The cases, each a function of the `Run` returning its comparisons, and the
run of a list of them."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import tempfile
import time

from benchmarks.harness import CASES, TARGETS, Worker, comparison, fraction, in_turns, workers
from benchmarks.machine import machine, memory_bandwidth, versions
from benchmarks.models import encoder_length, sizes, xlm_roberta_checkpoint
from benchmarks.peers import masked_ids
from benchmarks.report import chart
from benchmarks.serving import serving_results
from benchmarks.training import training_results


def export_in_child(kind: str, directory: str, name: str, **spec) -> dict:
  """Exports one model in a fresh process; {path, seconds, peak_rss_mb, size_mb}."""
  worker = Worker("exporter", kind=kind, directory=directory, name=name, **spec)
  worker.close()
  return worker.info


class Run:
  """What the cases of one run share: scratch files, exports made once, settings."""

  def __init__(self, scratch: str, quick: bool, repeats: int):
    self.scratch, self.quick, self.repeats = scratch, quick, repeats
    self.warmup = 1 if quick else 2
    self._exports = {}
    self.bandwidth = None

  @property
  def checkpoint(self) -> str:
    return xlm_roberta_checkpoint(self.scratch, self.quick)

  def export(self, kind: str, dtype: str = "float32", xla: bool = True) -> dict:
    key = (kind, dtype, xla)
    if key not in self._exports:
      name = f"{kind}-{dtype}-{'xla' if xla else 'no-xla'}"
      self._exports[key] = export_in_child(
          kind, os.path.join(self.scratch, "exports"), name, quick=self.quick, dtype=dtype,
          jit_compile=xla, checkpoint=self.checkpoint if kind == "xlm_roberta" else "")
    return self._exports[key]


ENCODER_BATCH = 8


def _encoder_spec(path: str, quick: bool):
  ids, mask, positions = masked_ids(sizes(quick)["vocabulary"], ENCODER_BATCH,
                                     encoder_length(quick))
  return ("ours_signature", dict(path=path, signature="logits", inputs={
      "token_ids": ids.tolist(), "padding_mask": mask.tolist(),
      "mask_positions": positions.tolist()}))


def case_encoder(run: Run) -> dict:
  checkpoint = run.checkpoint
  path = run.export("xlm_roberta")["path"]
  tokens = ENCODER_BATCH * encoder_length(run.quick)
  shape = dict(batch=ENCODER_BATCH, length=encoder_length(run.quick))
  with workers(ours=_encoder_spec(path, run.quick),
               keras_hub=("keras_hub_encoder", dict(quick=run.quick, **shape)),
               pytorch=("pytorch_encoder", dict(checkpoint=checkpoint, **shape)),
               onnxruntime=("onnxruntime_encoder", dict(
                   checkpoint=checkpoint, directory=run.scratch, **shape))) as systems:
    times = in_turns(systems, run.repeats, warmup=run.warmup)
    info = {name: w.info for name, w in systems.items()}
  return {"comparisons": [comparison(
      "encoder", "tokens/s", tokens, times,
      note=f"XLM-R {_size_name(run.quick)}, batch {ENCODER_BATCH} x {shape['length']}, LM head "
      "at one mask a row; ours: the fill-mask export's logits signature, session-loaded")],
      "info": info}


def _size_name(quick: bool) -> str:
  s = sizes(quick)
  return f"{s['layers']} layers x {s['hidden']}, vocabulary {s['vocabulary']:,}"


def fill_mask_texts(count: int = 8, seed: int = 0) -> list:
  """`count` lines of the demo corpus of about 25 tokens, one word replaced by <mask>."""
  import numpy as np

  from tfhub_models import demo

  rng = np.random.default_rng(seed)
  lines = [line for line in demo.corpus_lines() if 12 <= len(line.split()) <= 22]
  if not lines:
    lines = demo.corpus_lines()
  texts = []
  while len(texts) < count:
    words = lines[int(rng.integers(len(lines)))].split()
    words[int(rng.integers(len(words)))] = "<mask>"
    texts.append(" ".join(words))
  return texts


def case_fill_mask(run: Run) -> dict:
  checkpoint = run.checkpoint
  path = run.export("xlm_roberta")["path"]
  texts = fill_mask_texts(8)
  with workers(ours=("ours_signature", dict(path=path, signature="serving_default",
                                            inputs={"text": texts})),
               pytorch=("pipeline_fill_mask", dict(checkpoint=checkpoint, texts=texts)),
               keras_hub=("keras_hub_fill_mask", dict(checkpoint=checkpoint, quick=run.quick,
                                                      texts=texts))) as systems:
    times = in_turns(systems, run.repeats, warmup=run.warmup)
    ours_top1 = systems["ours"].call("answers", texts)
    pipeline_top1 = systems["pytorch"].call("answers", texts)
    tokens = systems["pytorch"].info["tokens"]
  same = sum(a == b for a, b in zip(ours_top1, pipeline_top1))
  record = comparison(
      "fill_mask", "requests/s", 1, times,
      note=f"XLM-R {_size_name(run.quick)}; 8 texts of {min(tokens)}-{max(tokens)} tokens, "
      "one <mask> each, top-5, tokenization included; pytorch: the transformers fill-mask "
      "pipeline (batch 8)")
  return {"comparisons": [record], "texts": texts, "tokens": tokens,
          "top1_equal_to_pipeline": f"{same}/{len(texts)}"}


GENERATION = dict(new_tokens=32, input_length=64)
GENERATION_CASES = {
    "greedy_batch1": dict(batch=1, sampler={"name": "greedy"}),
    "greedy_batch8": dict(batch=8, sampler={"name": "greedy"}),
    "beam4_batch1": dict(batch=1, sampler={"name": "beam", "num_beams": 4}),
}


def _bandwidth(run: Run) -> float:
  if run.bandwidth is None:
    run.bandwidth = memory_bandwidth()
  return run.bandwidth


def case_generation(run: Run) -> dict:
  records, details = [], {}
  specs = {name: dict(quick=run.quick, **GENERATION, **setting)
           for name, setting in GENERATION_CASES.items()}
  with workers(**{system: ("several", dict(system=f"{system}_generation", specs=specs))
                  for system in ("ours", "keras_hub", "pytorch")}) as systems:
    for name, setting in GENERATION_CASES.items():
      for worker in systems.values():
        worker.call("select", name)
      times = in_turns(systems, run.repeats if run.quick else max(3, run.repeats // 2),
                       warmup=run.warmup)
      records.append(comparison(
          name, "new tokens/s", setting["batch"] * GENERATION["new_tokens"], times,
          note=f"BART {'base' if not run.quick else 'tiny'}, {GENERATION['input_length']} "
          f"input tokens, {GENERATION['new_tokens']} new, stop tokens off"))
      if name == "greedy_batch1":
        weights = systems["ours"].info[name]["weights_read_per_step_bytes"]
        bandwidth = _bandwidth(run)
        bound = bandwidth * 1e9 / weights
        ours = records[-1]["systems"]["ours"]["value"]
        details["weight_streaming"] = {"bytes_per_step": weights,
                                       "memory_read_gb_s": bandwidth,
                                       "bound_tokens_per_s": bound, "ours_tokens_per_s": ours}
        records.append(fraction(
            "greedy_batch1:weight_streaming", ours / bound, "weight_streaming_bound",
            target_key=("greedy_batch1", "weight_streaming_bound"),
            note=f"{weights / 1e6:.0f} MB of decoder and LM-head weights a step at "
            f"{bandwidth:.1f} GB/s: at most {bound:.1f} tokens/s"))
  return {"comparisons": records, **details}


def case_bfloat16(run: Run) -> dict:
  import numpy as np

  records, details = [], {}
  tokens = ENCODER_BATCH * encoder_length(run.quick)
  # The encoder: bfloat16 exports with and without XLA against our float32 XLA one.
  paths = {"ours_float32": run.export("xlm_roberta")["path"],
           "bfloat16_xla": run.export("xlm_roberta", "bfloat16", True)["path"],
           "bfloat16_no_xla": run.export("xlm_roberta", "bfloat16", False)["path"]}
  texts = fill_mask_texts(16 if run.quick else 500, seed=1)
  with workers(**{name: _encoder_spec(path, run.quick) for name, path in paths.items()}) as systems:
    times = in_turns(systems, run.repeats, warmup=run.warmup)
    # Fill-mask top-1 agreement with float32 on masked lines (serving_default).
    answers = {name: [a for i in range(0, len(texts), 50)
                      for a in worker.call("answers", texts[i:i + 50])]
               for name, worker in systems.items()}
  for ours in ("bfloat16_no_xla", "bfloat16_xla"):
    record = comparison("encoder_bfloat16", "tokens/s", tokens,
                        {ours: times[ours], "ours_float32": times["ours_float32"]}, ours=ours,
                        note=f"the {ours.replace('_', ' ')} export against float32 (XLA)")
    record["name"] = f"encoder_bfloat16:{ours}"
    records.append(record)
  for name in ("bfloat16_no_xla", "bfloat16_xla"):
    agree = np.mean([a == b for a, b in zip(answers[name], answers["ours_float32"])])
    records.append(fraction(f"fill_mask_top1_agreement:{name}", float(agree), "float32",
                            target_key=("fill_mask_top1_agreement", "float32"),
                            note=f"{len(texts)} masked lines, random base-size weights"))
  # Batch-1 greedy in bfloat16 against float32, and their outputs on the same prompts.
  spec = dict(quick=run.quick, **GENERATION, **GENERATION_CASES["greedy_batch1"])
  prompts = np.random.default_rng(2).integers(4, 250, size=(10 if run.quick else 40, 64))
  with workers(ours=("ours_generation", dict(spec, dtype="bfloat16")),
               ours_float32=("ours_generation", spec)) as systems:
    times = in_turns(systems, run.repeats if run.quick else max(3, run.repeats // 2),
                     warmup=run.warmup)
    outputs = {name: w.call("generated_ids", prompts.tolist()) for name, w in systems.items()}
    weights = systems["ours"].info["weights_read_per_step_bytes"]
  record = comparison("greedy_batch1_bfloat16", "new tokens/s", GENERATION["new_tokens"], times,
                      note="BART, batch-1 greedy, bfloat16 weights against float32")
  records.append(record)
  details["greedy_bfloat16_bytes_per_step"] = weights
  same = np.mean([a == b for a, b in zip(outputs["ours"], outputs["ours_float32"])])
  # No target here: random weights give nearly flat distributions, whose near-ties
  # bfloat16 rounding flips; the target applies to the trained model below.
  records.append(fraction("greedy_agreement:random_base", float(same), "float32",
                          target_key=("untargeted", "float32"),
                          note=f"{len(prompts)} random prompts, random weights: 32 greedy "
                          "tokens equal to float32's"))
  if not run.quick:
    records.append(_trained_greedy_agreement(run))
  return {"comparisons": records, **details}


def _trained_greedy_agreement(run: Run) -> dict:
  """Greedy outputs of the trained demo BART (scripts/demo.py's reverse model) in
  bfloat16 against float32, on 200 held-out prompts."""
  from tfhub_models import demo_tasks

  checkpoints = demo_tasks.cached_demos(demo_tasks.default_cache(), seed=0, log=lambda *a: None)
  inputs, _ = demo_tasks.reverse_examples(200, seed=12345)
  answers = {}
  for dtype in ("float32", "bfloat16"):
    info = export_in_child("preset", os.path.join(run.scratch, "demo"), f"reverse-{dtype}",
                           dtype=dtype, checkpoint=str(checkpoints["reverse"]))
    with workers(ours=("ours_signature", dict(path=info["path"], signature="serving_default",
                                              inputs={"text": inputs[:1]}))) as systems:
      answers[dtype] = [t for i in range(0, len(inputs), 50)
                        for t in systems["ours"].call("generated", inputs[i:i + 50])]
  same = sum(a == b for a, b in zip(answers["bfloat16"], answers["float32"])) / len(inputs)
  return fraction("greedy_agreement:trained_demo", same, "float32",
                  target_key=("greedy_agreement", "float32"),
                  note="the trained demo BART (word reversal), 200 held-out prompts")


def case_training(run: Run) -> dict:
  result = training_results(quick=run.quick, repeats=run.repeats,
                            vocabulary_size=sizes(run.quick)["vocabulary"])
  times = {name: [result[f"{name}_ms"] / 1000] for name in ("ours", "keras_hub", "pytorch")
           if f"{name}_ms" in result}
  record = comparison("training_step", "real tokens/s", result["real_tokens"], times,
                      note=f"XLM-R masked LM {_size_name(run.quick)}, AdamW, XLA, batch 8 x "
                      "128, 20 masks a row; the three steps in turns in one process")
  return {"comparisons": [record], "details": result}


def case_serving(run: Run) -> dict:
  s = sizes(run.quick)
  result = serving_results(layers=s["layers"], hidden=s["hidden"], heads=s["heads"],
                           repeats=2 if run.quick else run.repeats,
                           requests_per_client=2 if run.quick else 40, quick=run.quick)
  records = []
  throughput = result["throughput_requests_per_s"]
  records.append(fraction("serving_batching_gain", throughput["batching_gain"],
                          "without_batching",
                          note=f"32 clients, {result['model']}: with --enable_batching against "
                          "without"))
  cold = {}
  for kind in ("xlm_roberta", "bart"):
    cold[kind] = Worker("cold_start", path=run.export(kind)["path"])
    cold[kind].close()
    cold[kind] = cold[kind].info
  return {"comparisons": records, "latency_ms": result["latency_ms"],
          "throughput_requests_per_s": throughput, "cold_start": cold,
          "grpc_overhead_target_ms": 2.0}


def case_export(run: Run) -> dict:
  return {"comparisons": [], "exports": {
      f"{kind} {dtype} {'XLA' if xla else 'no XLA'}": run.export(kind, dtype, xla)
      for kind, dtype, xla in [("xlm_roberta", "float32", True), ("bart", "float32", True)]
      + [k for k in run._exports if k[0] in ("xlm_roberta", "bart")]}}


CASE_FUNCTIONS = {"encoder": case_encoder, "fill_mask": case_fill_mask,
                  "generation": case_generation, "bfloat16": case_bfloat16,
                  "training": case_training, "serving": case_serving, "export": case_export}


def run_cases(cases, quick: bool, repeats: int, output: pathlib.Path, log=print,
              update: bool = False) -> dict:
  results = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
             "quick": quick, "repeats": repeats, "cases": {}}
  previous = output / "results.json"
  if update and previous.exists():  # keep the cases not run again
    kept = json.loads(previous.read_text())
    if kept.get("quick") != quick or kept.get("repeats") != repeats:
      raise SystemExit(f"--update: {previous} was measured with quick={kept.get('quick')}, "
                       f"repeats={kept.get('repeats')}; run every case instead")
    results["cases"] = {k: v for k, v in kept["cases"].items() if k not in cases}
    results["started"] = kept["started"]
  results["machine"], results["versions"] = machine(), versions()
  results["targets"] = {f"{name} / {peer}": t for (name, peer), t in TARGETS.items()}
  output.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
    run = Run(scratch, quick, repeats)
    # The bound uses the bandwidth measured before any worker started.
    run.bandwidth = results["machine"]["memory_read_gb_s"]
    for case in cases:
      log(f"== {case}", flush=True)
      start = time.perf_counter()
      try:
        results["cases"][case] = CASE_FUNCTIONS[case](run)
      except Exception as e:  # one failing case does not lose the others
        import traceback
        results["cases"][case] = {"error": f"{type(e).__name__}: {e}",
                                  "traceback": traceback.format_exc()}
      results["cases"][case]["seconds"] = time.perf_counter() - start
      results["cases"][case]["measured"] = datetime.datetime.now(
          datetime.timezone.utc).isoformat()
      _write(results, output)
  results["cases"] = {c: results["cases"][c] for c in CASES if c in results["cases"]}
  results["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
  _write(results, output)
  chart(results, output / "results.png")
  return results


def _write(results: dict, output: pathlib.Path) -> None:
  """results.json, atomically (a rename), so a killed run leaves the last good one."""
  temporary = output / ".results.json.tmp"
  temporary.write_text(json.dumps(results, indent=2, default=float) + "\n")
  os.replace(temporary, output / "results.json")
