#!/usr/bin/env python
"""Sends text to a served model and prints the answer.

  python scripts/predict.py --server HOST:PORT --model NAME [--signature S] [--json] TEXT...
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--server", default="127.0.0.1:8500")
  parser.add_argument("--model", required=True)
  parser.add_argument("--signature", default="serving_default",
                      help="a signature whose input is `text` (serving_default, tokenize, "
                           "embedding); default serving_default")
  parser.add_argument("--version", type=int)
  parser.add_argument("--label")
  parser.add_argument("--timeout", type=float, default=30.0)
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  parser.add_argument("texts", nargs="+", metavar="TEXT")
  args = parser.parse_args(argv)

  import grpc
  import numpy as np
  from serving.client import ServingClient, format_fill_mask

  try:
    with ServingClient(args.server, args.model, version=args.version, label=args.label,
                       timeout=args.timeout) as client:
      if args.signature == "serving_default":
        answers = client.fill_mask(args.texts)
        if args.json:
          print(json.dumps([{"text": t, "masks": [[f.__dict__ for f in fs] for fs in masks]}
                            for t, masks in zip(args.texts, answers)], ensure_ascii=False, indent=2))
        else:
          print(format_fill_mask(args.texts, answers))
      else:
        out = client.predict({"text": np.array([t.encode() for t in args.texts], dtype=object)},
                             signature=args.signature)
        print(json.dumps({k: v.tolist() if v.dtype != object else
                          np.vectorize(lambda b: b.decode("utf-8", "replace"))(v).tolist()
                          for k, v in out.items()}, ensure_ascii=False, indent=None if args.json else 2))
  except grpc.RpcError as e:
    print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
