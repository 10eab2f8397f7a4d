#!/usr/bin/env python
"""Speed of our models against their peers, measured side by side in one run.

  python scripts/benchmark.py                       # every case, base sizes (about an hour)
  python scripts/benchmark.py --case generation     # one case (repeatable)
  python scripts/benchmark.py --quick               # every case at tiny sizes, seconds each
  python scripts/benchmark.py --markdown [FILE]     # the README's table from a results file

Each case measures this project and its peers on the same shapes, at the public
base-size configs with random weights.  Every system runs in its own child
process (spawned by this one); after two warm-up runs each, the systems run in
turns, one timed run each per round, and the median of the rounds is reported,
so that a busy spell of a shared machine slows all of them alike.  Results are
ratios against the peers measured in the same run (> 1: ours is faster);
absolute figures are for context.

Cases:
  encoder     XLM-R base encoder (+ the LM head at one mask position a row, the work
              of our `logits` signature), batch 8 x 128, tokens/s: our export loaded
              as TF Serving's session loader does, keras-hub (XLA), transformers
              (PyTorch) and ONNX Runtime (the PyTorch model through torch.onnx.export;
              graph optimizations on, threads = cores).
  fill_mask   a fill-mask request at the public 250,002-token vocabulary: 8 raw
              strings of about 25 tokens, one <mask> each, top-5, end to end: our
              serving_default, the transformers fill-mask pipeline, keras-hub's
              tokenizer + XLMRobertaMaskedLM.
  generation  BART base, 64 input tokens, exactly 32 new tokens (stop tokens off):
              greedy at batch 1 and 8, beam search (4 beams) at batch 1, new tokens/s,
              against keras-hub (XLA) and transformers (PyTorch); and batch-1 greedy as
              a fraction of the weight-streaming bound (measured memory bandwidth over
              the bytes of decoder and LM-head weights read per step).
  bfloat16    the encoder and batch-1 greedy with bfloat16 weights against our float32,
              and how often bfloat16 answers equal float32's (fill-mask top-1 on 500
              masked lines; greedy outputs on held-out prompts of the trained demo
              model and of the random base one).
  training    one XLA training step of the XLM-R masked LM at base size (public
              vocabulary), real tokens/s, against keras-hub and PyTorch.
  serving     gRPC overhead and batching gain (serving.server), and each base-size
              export's cold start (session load + warmup requests).
  export      time, peak memory and size of exporting each base-size model.

Writes benchmarks/results.json (every figure, the machine, the versions) and
benchmarks/results.png (each comparison as a ratio, the target drawn), and prints a
table.  Needs the test extra (torch, transformers, keras-hub, onnxruntime, matplotlib).

The code is the `benchmarks` package; this is its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from benchmarks.cases import run_cases
from benchmarks.harness import CASES
from benchmarks.harness import ROOT
from benchmarks.report import markdown, table


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--case", action="append", choices=CASES,
                      help="a case to run (repeatable; default: all)")
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes and few runs: checks that every case runs")
  parser.add_argument("--repeats", type=int, default=None,
                      help="timed rounds a comparison (default 7, --quick 2)")
  parser.add_argument("--output", default=str(ROOT / "benchmarks"),
                      help="where results.json and results.png go (default: benchmarks/)")
  parser.add_argument("--markdown", nargs="?", const=str(ROOT / "benchmarks" / "results.json"),
                      help="print the README's table from a results file and exit")
  parser.add_argument("--json", action="store_true", help="print the results as JSON")
  parser.add_argument("--update", action="store_true",
                      help="keep the other cases of the results file already in --output "
                      "(same --quick and --repeats) and measure only --case again")
  args = parser.parse_args(argv)
  if args.markdown:
    print(markdown(json.loads(pathlib.Path(args.markdown).read_text())))
    return 0
  if args.repeats is not None and args.repeats < 1:
    parser.error("--repeats must be at least 1")
  repeats = args.repeats or (2 if args.quick else 7)
  results = run_cases(args.case or CASES, args.quick, repeats, pathlib.Path(args.output),
                      log=(lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json
                      else print, update=args.update)
  if args.json:
    print(json.dumps(results, indent=2, default=float))
  else:
    print(table(results))
    print(f"wrote {pathlib.Path(args.output) / 'results.json'} and results.png")
  failed = [case for case, result in results["cases"].items() if "error" in result]
  for case in failed:
    print(f"{case} failed:\n{results['cases'][case]['traceback']}", file=sys.stderr)
  return 1 if failed else 0




if __name__ == "__main__":
  sys.exit(main())
