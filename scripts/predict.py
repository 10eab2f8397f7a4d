#!/usr/bin/env python
"""Sends text to a served model and prints the answer.

  python scripts/predict.py --server HOST:PORT --model NAME [--signature S] [--json] TEXT...
  python scripts/predict.py --model bart --max-new-tokens 20 --temperature 0.7 --seed 3 TEXT...

Works against TF Serving and `serving.server` alike.  The answer is printed as
a table (fill-mask fillers with scores, replaced-token probabilities,
generated text, embedding summaries) or, with --json, as the signature's
outputs in JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving import contract

GENERATION_FLAGS = (
    ("--max-new-tokens", int, "new tokens at most (1 to the export's --max-new-tokens)"),
    ("--min-new-tokens", int, "new tokens before the end may come"),
    ("--temperature", float, "sampling exports: > 0"),
    ("--top-k", int, "sampling exports: 0 (off) to the export's --max-top-k"),
    ("--top-p", float, "sampling exports: in (0, 1], 1 is off"),
    ("--repetition-penalty", float, "> 0, 1 is off"),
    ("--no-repeat-ngram-size", int, "0 (off) to the export's --max-no-repeat-ngram-size"),
    ("--seed", int, "a reproducible sample (0: a fresh one)"),
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--server", default="127.0.0.1:8500", help="HOST:PORT of the gRPC API")
  parser.add_argument("--model", required=True)
  parser.add_argument("--signature", default=contract.DEFAULT_SIGNATURE,
                      help="a signature whose input is `text` (serving_default, tokenize, "
                           "embedding); default serving_default")
  parser.add_argument("--text-pair", action="append", dest="text_pairs", metavar="TEXT",
                      help="second segment, once per TEXT (exports made with --pair)")
  which = parser.add_mutually_exclusive_group()
  which.add_argument("--version", type=int)
  which.add_argument("--label")
  parser.add_argument("--timeout", type=float, default=30.0, help="seconds, retries included")
  parser.add_argument("--tls", action="store_true", help="connect with TLS")
  parser.add_argument("--root-cert", help="PEM file of the CA to trust (implies --tls)")
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  generation = parser.add_argument_group(
      "generation settings (BART exports; any of them sends the request to "
      "generate_with_options, the others taking the export's defaults)")
  for flag, kind, text in GENERATION_FLAGS:
    generation.add_argument(flag, type=kind, help=text)
  parser.add_argument("texts", nargs="+", metavar="TEXT")
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  if args.text_pairs is not None and len(args.text_pairs) != len(args.texts):
    print(f"error: {len(args.texts)} texts but {len(args.text_pairs)} --text-pair values",
          file=sys.stderr)
    return 2

  import grpc
  import numpy as np
  from serving import client as serving_client

  root = None
  if args.root_cert:
    try:
      root = open(args.root_cert, "rb").read()
    except OSError as e:
      print(f"error: cannot read --root-cert: {e.strerror}", file=sys.stderr)
      return 2
  inputs = {"text": np.array([t.encode() for t in args.texts], dtype=object)}
  if args.text_pairs:
    inputs["text_pair"] = np.array([t.encode() for t in args.text_pairs], dtype=object)
  try:
    with serving_client.ServingClient(args.server, args.model, version=args.version,
                                      label=args.label, timeout=args.timeout, tls=args.tls,
                                      root_certificates=root) as client:
      options = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
                 for flag, _, _ in GENERATION_FLAGS}
      options = {k: v for k, v in options.items() if v is not None}
      signature = args.signature
      if options:
        if signature != contract.DEFAULT_SIGNATURE:
          print("error: generation settings go to generate_with_options, not --signature "
                f"{signature}", file=sys.stderr)
          return 2
        inputs = client.generation_inputs(args.texts, **options)
        signature = contract.GENERATE_WITH_OPTIONS
      out = client.predict(inputs, signature=signature)
  except grpc.RpcError as e:
    print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
    return 1
  except ValueError as e:   # settings the client refuses, an export without the signature
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.json:
    print(json.dumps({k: _plain(v) for k, v in out.items()}, ensure_ascii=False))
  else:
    print(format_answer(args.texts, out))
  return 0


def format_answer(texts, out: dict) -> str:
  """The table for whichever task's outputs `out` holds."""
  from serving import client as c
  if "top_k_ids" in out:
    return c.format_fill_mask(texts, c.fill_mask_answers(out))
  if "replaced_probability" in out:
    return c.format_replaced(texts, c.replaced_answers(out))
  if "top_k_labels" in out:
    return c.format_classifications(texts, c.classification_answers(out))
  if "entity_group" in out:
    return c.format_entities(texts, c.entity_answers(out))
  if "labels" in out and "tokens" in out:
    return c.format_token_labels(texts, out)
  if "generated_text" in out:
    return c.format_generations(texts, c.generation_answers(out, len(texts)))
  if "pooled_output" in out:
    return c.format_embeddings(texts, c.embedding_answers(out))
  return json.dumps({k: _plain(v) for k, v in out.items()}, ensure_ascii=False, indent=2)


def _plain(value):
  import numpy as np
  if value.dtype == object:
    return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value).tolist() \
        if value.size else value.tolist()
  return value.tolist()


if __name__ == "__main__":
  sys.exit(main())
