#!/usr/bin/env python
"""Fill-mask latency of our exports against transformers, in the same run.

  python scripts/benchmark.py [--layers 6] [--hidden 384] [--repeats 20] [--json]

Builds one random XLM-RoBERTa checkpoint with transformers (PyTorch, CPU),
exports it with and without XLA, and times text-in, top-k-out requests:
our SavedModel signature (tokenization in the graph) against transformers'
tokenizer + `XLMRobertaForMaskedLM` + softmax + top-k.  Also times a short
request served with bucketed padding against the same request padded to the
full sequence length, which is what a fixed-shape export would pay.

Results are ratios against the peer measured in the same run (lower is
better for ours / theirs); absolute milliseconds are printed for context only.
Needs the test extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def median_ms(fn, repeats: int) -> float:
  fn()  # warm (and compile)
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append((time.perf_counter() - start) * 1000)
  return statistics.median(times)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--layers", type=int, default=6)
  parser.add_argument("--hidden", type=int, default=384)
  parser.add_argument("--heads", type=int, default=6)
  parser.add_argument("--sequence-length", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)

  import numpy as np
  import tensorflow as tf
  import torch
  from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaTokenizer

  from tfhub_models import checkpoints, demo, export

  torch.set_num_threads(os.cpu_count() or 1)
  proto = demo.demo_sentencepiece()
  sentence = "The capital of France is <mask>, and the river that crosses it is the Seine."
  cases = {
      "batch1_short": [sentence],
      "batch8_short": [sentence] * 8,
      "batch1_long": [" ".join([sentence.replace("<mask>", "Paris")] * 9) + " <mask>."],
  }
  results = {"config": vars(args), "cases": {}}
  with tempfile.TemporaryDirectory() as scratch:
    checkpoint = os.path.join(scratch, "ckpt")
    vocab = demo.random_xlm_roberta(demo.TINY, proto).tokenizer.vocabulary_size
    config = XLMRobertaConfig(
        vocab_size=vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
        max_position_embeddings=args.sequence_length + 2, type_vocab_size=1)
    reference = XLMRobertaForMaskedLM(config).eval()
    reference.save_pretrained(checkpoint)
    with open(os.path.join(checkpoint, "sentencepiece.bpe.model"), "wb") as f:
      f.write(proto)
    hf_tokenizer = XLMRobertaTokenizer.from_pretrained(checkpoint)
    task = checkpoints.load(checkpoint)
    base = os.path.join(scratch, "models")
    signatures = {}
    for name, jit in (("xla", True), ("no_xla", False)):
      path = export.export(task, base, name, options=export.ExportOptions(
          top_k=5, jit_compile=jit, warmup_batch_sizes=(1,)))
      signatures[name] = tf.saved_model.load(str(path)).signatures

    def transformers_fill_mask(texts):
      encoded = hf_tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                             max_length=args.sequence_length)
      with torch.no_grad():
        logits = reference(**encoded).logits
      at = encoded["input_ids"] == hf_tokenizer.mask_token_id
      return torch.topk(torch.softmax(logits[at], dim=-1), 5)

    for case, texts in cases.items():
      text = tf.constant(texts)
      row = {"transformers_ms": median_ms(lambda: transformers_fill_mask(texts), args.repeats)}
      for name, signature in signatures.items():
        row[f"ours_{name}_ms"] = median_ms(lambda: signature["serving_default"](text=text),
                                           args.repeats)
        row[f"ours_{name}_vs_transformers"] = row[f"ours_{name}_ms"] / row["transformers_ms"]
      results["cases"][case] = row

    # Bucketed padding against padding to the full sequence length (XLA logits path).
    inputs = task.preprocessor(tf.constant(cases["batch1_short"]))
    ids, mask = inputs["token_ids"], inputs["padding_mask"]
    positions = tf.constant([[int(np.argmax(ids.numpy()[0] == task.tokenizer.mask_token_id))]])
    full_ids = tf.pad(ids, [[0, 0], [0, args.sequence_length - ids.shape[1]]], constant_values=1)
    full_mask = tf.pad(mask, [[0, 0], [0, args.sequence_length - ids.shape[1]]])
    logits = signatures["xla"]["logits"]
    bucket = median_ms(lambda: logits(token_ids=ids, padding_mask=mask,
                                      mask_positions=positions), args.repeats)
    full = median_ms(lambda: logits(token_ids=full_ids, padding_mask=full_mask,
                                    mask_positions=positions), args.repeats)
    results["bucketing"] = {"tokens": int(mask.numpy().sum()), "bucket_length": ids.shape[1],
                            "bucket_ms": bucket, "full_length_ms": full,
                            "bucket_vs_full_length": bucket / full}

  if args.json:
    print(json.dumps(results, indent=2))
    return 0
  print(f"XLM-RoBERTa {args.layers} layers, hidden {args.hidden}, random weights; "
        f"median of {args.repeats}; ratio < 1 means ours is faster")
  for case, row in results["cases"].items():
    print(f"  {case:<14} transformers {row['transformers_ms']:7.2f} ms | "
          f"ours XLA {row['ours_xla_ms']:7.2f} ms ({row['ours_xla_vs_transformers']:.2f}x) | "
          f"ours no-XLA {row['ours_no_xla_ms']:7.2f} ms ({row['ours_no_xla_vs_transformers']:.2f}x)")
  b = results["bucketing"]
  print(f"  bucketing: {b['tokens']} tokens padded to {b['bucket_length']}: {b['bucket_ms']:.2f} ms"
        f" vs {args.sequence_length}: {b['full_length_ms']:.2f} ms "
        f"({b['bucket_vs_full_length']:.2f}x)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
