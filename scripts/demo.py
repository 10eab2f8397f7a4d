#!/usr/bin/env python
"""The main job on an embedded default, with no downloads.

Exports a small XLM-RoBERTa fill-mask model (random weights, a SentencePiece
vocabulary trained on the text shipped in the package) as a versioned
SavedModel, serves it on loopback with `serving.server` (started in this
process, with the server's own flags), sends one real gRPC request through the
client and prints the answer.  The weights are random, so
the fillers are meaningless; the path from export to answer is the real one.

  python scripts/demo.py [--output DIR] [--no-xla] [TEXT...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODEL = "xlm_roberta_demo"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--output", help="model base directory (default: a temporary one)")
  parser.add_argument("--no-xla", action="store_true", help="export without XLA")
  parser.add_argument("texts", nargs="*", metavar="TEXT",
                      default=["The capital of France is <mask>.",
                               "Die Hauptstadt von <mask> ist <mask>."])
  args = parser.parse_args(argv)

  import tensorflow as tf

  from serving import server
  from serving.client import ServingClient, format_fill_mask
  from tfhub_models import demo, export

  with tempfile.TemporaryDirectory() as scratch:
    base = args.output or os.path.join(scratch, "models")
    task = demo.tiny_xlm_roberta()
    path = export.export(task, base, MODEL, options=export.ExportOptions(
        top_k=5, jit_compile=not args.no_xla, warmup_batch_sizes=(1,)))
    print(f"exported {path}")
    # --port 0: a free port; --xla_cpu_compilation_enabled=true: the flag TF Serving
    # needs for XLA exports.  As `python -m serving.server`, no deprecation notes
    # from TensorFlow's TF1 session loader.
    tf.get_logger().setLevel("ERROR")
    with server.start(["--port", "0", "--model_name", MODEL, "--model_base_path",
                       os.path.join(base, MODEL), "--xla_cpu_compilation_enabled=true"]) as running:
      print(f"serving {MODEL} on {running.grpc_target}")
      with ServingClient(running.grpc_target, MODEL) as client:
        print(format_fill_mask(args.texts, client.fill_mask(args.texts)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
