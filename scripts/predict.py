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
  from serving.client import (ServingClient, fill_mask_answers, format_fill_mask,
                              format_replaced)

  try:
    with ServingClient(args.server, args.model, version=args.version, label=args.label,
                       timeout=args.timeout) as client:
      out = client.predict({"text": np.array([t.encode() for t in args.texts], dtype=object)},
                           signature=args.signature)
  except grpc.RpcError as e:
    print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
    return 1
  if args.json:
    print(json.dumps({k: _plain(v) for k, v in out.items()}, ensure_ascii=False))
  elif "top_k_ids" in out:
    print(format_fill_mask(args.texts, fill_mask_answers(out)))
  elif "replaced_probability" in out:
    print(format_replaced(args.texts, out))
  else:
    print(json.dumps({k: _plain(v) for k, v in out.items()}, ensure_ascii=False, indent=2))
  return 0


def _plain(value):
  import numpy as np
  if value.dtype == object:
    return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value).tolist()
  return value.tolist()


if __name__ == "__main__":
  sys.exit(main())
