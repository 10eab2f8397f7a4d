#!/usr/bin/env python
"""Trains the two demo models, from scratch, with fixed seeds.

  python scripts/train_demo.py --output DIR [--seed N]

DIR (new or empty) receives two Hugging Face checkpoint directories, loadable
by `transformers` and by `scripts/export.py --checkpoint`:

  DIR/arithmetic  XLM-RoBERTa masked LM: "three plus four is <mask>." -> seven,
                  "zwei plus <mask> ist fünf." -> drei
  DIR/reverse     BART: "red fox jumps" -> "jumps fox red"

About two minutes on two CPU cores; see tfhub_models/demo_tasks.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--output", required=True, help="directory to write (new or empty)")
  parser.add_argument("--seed", type=int, default=0, help="seed of weights, data and masking")
  parser.add_argument("--scale", type=float, default=1.0,
                      help="share of the training steps to run (default 1; less is quicker "
                           "and may answer wrongly)")
  args = parser.parse_args(argv)

  from tfhub_models import demo_tasks

  started = time.perf_counter()
  try:
    demo_tasks.train_demos(args.output, seed=args.seed, scale=args.scale)
  except (FileExistsError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"trained in {time.perf_counter() - started:.0f} s: {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
