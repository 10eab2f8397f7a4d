#!/usr/bin/env python
"""The main job on an embedded default, with no downloads.

Trains two tiny models on tasks whose right answers are plain to see (on first
use; then they come from a cache), exports each as a versioned SavedModel with
`scripts/export.py`, serves both on loopback with `serving.server`, sends real
gRPC requests through the client and prints questions and answers:

  arithmetic  XLM-RoBERTa fill-mask   "three plus four is <mask>." -> seven
  reverse     BART generation          "red fox jumps" -> "jumps fox red"

  python scripts/demo.py [--cache DIR] [--seed N] [--output BASE] [--no-xla] [TEXT...]
  python scripts/demo.py --random      random weights: the export and serving path only

TEXTs with `<mask>` go to the arithmetic model (e.g. "sechs plus <mask> ist
zwölf."), the others to the reverse model (words of
tfhub_models/data/demo_words.txt).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RANDOM_MODEL = "xlm_roberta_demo"
QUESTIONS = ["three plus four is <mask>.", "<mask> plus five is nine.",
             "eight plus nine is <mask>.",
             "zwei plus <mask> ist fünf.", "sechs plus sieben ist <mask>."]
REVERSALS = ["red fox jumps", "old king reads book", "big dog runs over cold hill"]


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cache", help="where the trained demo models are kept (default "
                                      "$XDG_CACHE_HOME/tfhub-models/demo)")
  parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
  parser.add_argument("--output", help="model base directory (default: a temporary one)")
  parser.add_argument("--no-xla", action="store_true", help="export without XLA")
  parser.add_argument("--random", action="store_true",
                      help="a random-weights XLM-RoBERTa instead (nothing trained; its "
                           "answers are meaningless)")
  parser.add_argument("texts", nargs="*", metavar="TEXT")
  return parser.parse_args(argv)


def _serve(base: str, names, no_xla: bool):
  """serving.server on a free loopback port, serving BASE/NAME for each name."""
  from serving import server
  config = os.path.join(base, "models.config")
  with open(config, "w", encoding="utf-8") as f:
    f.write("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{os.path.join(base, n)}" '
        'model_platform: "tensorflow" }\n' for n in names) + "}\n")
  # --xla_cpu_compilation_enabled=true: the flag TF Serving needs for XLA exports.
  flags = ["--port", "0", "--model_config_file", config]
  return server.start(flags + ([] if no_xla else ["--xla_cpu_compilation_enabled=true"]))


def _random(args, base: str) -> int:
  from serving.client import ServingClient, format_fill_mask
  from tfhub_models import demo, export

  task = demo.tiny_xlm_roberta()
  path = export.export(task, base, RANDOM_MODEL, options=export.ExportOptions(
      top_k=5, jit_compile=not args.no_xla, warmup_batch_sizes=(1,)))
  print(f"exported {path}")
  texts = args.texts or ["The capital of France is <mask>.",
                         "Die Hauptstadt von <mask> ist <mask>."]
  with _serve(base, [RANDOM_MODEL], args.no_xla) as running:
    print(f"serving {RANDOM_MODEL} on {running.grpc_target} (random weights: the answers "
          "are meaningless)")
    with ServingClient(running.grpc_target, RANDOM_MODEL) as client:
      print(format_fill_mask(texts, client.fill_mask(texts)))
  return 0


def _trained(args, base: str) -> int:
  import export as export_cli   # scripts/export.py: the plain export a user runs
  from serving.client import ServingClient
  from tfhub_models import demo_tasks

  questions = [t for t in args.texts if "<mask>" in t] or ([] if args.texts else QUESTIONS)
  reversals = [t for t in args.texts if "<mask>" not in t] or ([] if args.texts else REVERSALS)
  checkpoints = demo_tasks.cached_demos(args.cache or demo_tasks.default_cache(), seed=args.seed)
  started = time.perf_counter()
  for checkpoint in checkpoints.values():
    flags = ["--checkpoint", checkpoint, "--output", base, "--warmup-batch-sizes", "1"]
    if export_cli.main(flags + (["--no-xla"] if args.no_xla else [])) != 0:
      return 1
  print(f"exported both in {time.perf_counter() - started:.0f} s")
  with _serve(base, list(checkpoints), args.no_xla) as running:
    print(f"serving {', '.join(checkpoints)} on {running.grpc_target}\n")
    width = max(map(len, questions + reversals), default=0)
    if questions:
      with ServingClient(running.grpc_target, "arithmetic") as client:
        print("arithmetic: XLM-RoBERTa fill-mask, trained on \"A plus B is C.\" in English "
              "and German")
        # One text a request: the exports' warmup compiled batch size 1, and a new
        # batch size would be an XLA compile of its own.
        for text in questions:
          masks = client.fill_mask([text])[0]
          answers = "; ".join(f"{m[0].token} ({m[0].score:.2f})" for m in masks) or "(no mask)"
          print(f"  {text:<{width}}  ->  {answers}")
    if reversals:
      with ServingClient(running.grpc_target, "reverse") as client:
        print("reverse: BART generation, trained to reverse the order of 3 to 8 words")
        for text in reversals:
          answer = client.generate([text])[0]
          print(f"  {text:<{width}}  ->  {answer}")
  return 0


def main(argv=None) -> int:
  args = parse_args(argv)
  import tensorflow as tf
  tf.get_logger().setLevel("ERROR")
  with tempfile.TemporaryDirectory() as scratch:
    base = args.output or os.path.join(scratch, "models")
    os.makedirs(base, exist_ok=True)
    return _random(args, base) if args.random else _trained(args, base)


if __name__ == "__main__":
  sys.exit(main())
