#!/usr/bin/env python
"""Speed of our models against their peers, measured side by side in one run.

  python scripts/benchmark.py [--layers 6] [--hidden 384] [--repeats 20] [--json]
  python scripts/benchmark.py --model bart [--repeats 5] [--json]
  python scripts/benchmark.py --model serving [--layers 12 --hidden 768 --heads 12] [--json]
  python scripts/benchmark.py --model training [--vocabulary-size N] [--quick] [--json]

XLM-RoBERTa fill-mask (default):

Builds one random XLM-RoBERTa checkpoint with transformers (PyTorch, CPU),
exports it with and without XLA, and times text-in, top-k-out requests:
our SavedModel signature (tokenization in the graph) against transformers'
tokenizer + `XLMRobertaForMaskedLM` + softmax + top-k.  Also times a short
request served with bucketed padding against the same request padded to the
full sequence length, which is what a fixed-shape export would pay.

BART generation (--model bart): BART-base shapes with random weights, 64 input
tokens, 32 new tokens, greedy, batch 1 and batch 8: our XLA-compiled loop against
transformers (PyTorch) `generate` and keras-hub's `BartSeq2SeqLM` (XLA), as new
tokens per second.  Target: at least 1.5 x keras-hub at batch 1.

Serving (--model serving): XLM-RoBERTa exports (random weights, the demo
vocabulary, XLA) served by `serving.server`.  (1) The median latency of one
small fill-mask request through gRPC against the same signature run in process
through the same session loader, on the tiny demo model (the fixed overhead)
and on one of base size (12 layers x 768) (target: at most 2 ms more).  (2) The
throughput of 32 concurrent clients on the base-size model, against a server
with --enable_batching and one without (target: at least 1.5x).

Training (--model training): one XLA-compiled training step of XLM-RoBERTa
masked LM at base size (12 layers x 768, 12 heads, intermediate 3072; random
weights; the demo vocabulary as above, or --vocabulary-size: with the public
250002 each model is 278M parameters, some 4.5 GB with its gradients and AdamW
moments, and the three are alive at once) on one preprocessed batch of 8 x 128
(rows of 96 to 128 real tokens, 20 masks a row), AdamW at 5e-5 with weight decay
0.01: our `XLMRobertaMaskedLM` (its compiled step, `_train_function`) against
keras-hub's `XLMRobertaMaskedLM.train_on_batch` (TensorFlow backend,
jit_compile) and transformers' `XLMRobertaForMaskedLM` with `torch.optim.AdamW`
(the LM head applied at the mask positions only, as ours and keras-hub's are),
as real tokens (padding_mask) per second.  The three steps run in turns after
their warm-up, so a busy spell of a shared machine slows them alike.  Target: at
least 1.2 x keras-hub.  --quick: 2 layers x 64 (the demo model's sizes), to
check that the case runs.

Results are ratios against the peer measured in the same run; absolute numbers
are printed for context only.  Needs the test extra (torch, transformers, keras-hub).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def median_ms(fn, repeats: int) -> float:
  fn()  # warm (and compile)
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append((time.perf_counter() - start) * 1000)
  return statistics.median(times)


def median_ms_in_turns(functions: dict, repeats: int) -> dict:
  """median_ms of each of `functions` (name -> callable), each warmed (and compiled)
  twice first, then timed in turns: one run of each per round."""
  for fn in functions.values():
    fn()
    fn()
  times = {name: [] for name in functions}
  for _ in range(repeats):
    for name, fn in functions.items():
      start = time.perf_counter()
      fn()
      times[name].append((time.perf_counter() - start) * 1000)
  return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--layers", type=int, default=6)
  parser.add_argument("--hidden", type=int, default=384)
  parser.add_argument("--heads", type=int, default=6)
  parser.add_argument("--sequence-length", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--model", choices=["xlm_roberta", "bart", "serving", "training"],
                      default="xlm_roberta")
  parser.add_argument("--requests-per-client", type=int, default=40,
                      help="--model serving: requests each of the 32 clients sends")
  parser.add_argument("--vocabulary-size", type=int, default=None,
                      help="--model training: rows of the embedding and LM head (default: the "
                      "demo vocabulary's, as the other cases; 250002 is the public one)")
  parser.add_argument("--quick", action="store_true",
                      help="--model training: the demo model's sizes and 2 runs, to check "
                      "that the case runs")
  args = parser.parse_args(argv)
  if args.model == "bart":
    return bart_benchmark(args)
  if args.model == "serving":
    return serving_benchmark(args)
  if args.model == "training":
    return training_benchmark(args)

  import numpy as np
  import tensorflow as tf
  import torch
  from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaTokenizer

  from tfhub_models import demo, export, models

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
    vocab = demo.tiny_xlm_roberta().tokenizer.vocabulary_size
    config = XLMRobertaConfig(
        vocab_size=vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
        max_position_embeddings=args.sequence_length + 2, type_vocab_size=1)
    reference = XLMRobertaForMaskedLM(config).eval()
    reference.save_pretrained(checkpoint)
    with open(os.path.join(checkpoint, "sentencepiece.bpe.model"), "wb") as f:
      f.write(proto)
    hf_tokenizer = XLMRobertaTokenizer.from_pretrained(checkpoint)
    task = models.load(checkpoint)
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


def bart_benchmark(args) -> int:
  """New tokens per second: ours (XLA) vs transformers (PyTorch) vs keras-hub (XLA)."""
  import dataclasses
  import json

  import numpy as np
  import tensorflow as tf
  import torch
  import transformers

  from tfhub_models import demo
  from tfhub_models.models import bart

  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  torch.set_num_threads(os.cpu_count() or 1)
  repeats = min(args.repeats, 5)
  new_tokens, input_length = 32, 64
  config = dataclasses.replace(bart.PRESETS["bart_base_en"], vocabulary_size=50265)
  from tfhub_models.tokenizers import ByteLevelBPETokenizer

  vocabulary, merges = demo.demo_bpe_vocabulary()
  # The full 50265-row embedding and LM head (the demo vocabulary only names 261).
  ours = bart.build(config, ByteLevelBPETokenizer(vocabulary, merges), sequence_length=128)
  assert ours.backbone.token_embedding.embeddings.shape[0] == 50265
  ours.compile("greedy")
  run_ours = ours._function(new_tokens + 1, ())          # no stop id: exactly 32 new tokens
  reference = transformers.BartForConditionalGeneration(transformers.BartConfig(
      vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
      encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
      decoder_ffn_dim=3072)).eval()
  results = {"new_tokens": new_tokens, "input_tokens": input_length, "cases": {}}
  keras_model = None
  try:
    import keras_hub
    keras_model = keras_hub.models.BartSeq2SeqLM(
        backbone=keras_hub.models.BartBackbone(
            vocabulary_size=50265, num_layers=6, num_heads=12, hidden_dim=768,
            intermediate_dim=3072, max_sequence_length=1024), preprocessor=None)
    keras_model.compile(sampler="greedy")
  except Exception as e:  # keras-hub is a peer, not a dependency
    results["keras_hub_error"] = f"{type(e).__name__}: {e}"
  rng = np.random.default_rng(0)
  for batch in (1, 8):
    ids = rng.integers(4, 250, size=(batch, input_length)).astype(np.int32)
    mask = np.ones_like(ids)
    row = {}
    seconds = median_ms(lambda: run_ours(ids, mask, tf.constant([0, 0])), repeats) / 1000
    row["ours_tokens_per_s"] = batch * new_tokens / seconds

    def torch_generate():
      with torch.no_grad():
        reference.generate(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask),
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=1,
                           do_sample=False)
    row["pytorch_tokens_per_s"] = batch * new_tokens / (median_ms(torch_generate, repeats) / 1000)
    if keras_model is not None:
      decoder = np.zeros((batch, new_tokens + 1), np.int32)
      decoder[:, 0] = 2
      inputs = {"encoder_token_ids": ids, "encoder_padding_mask": mask,
                "decoder_token_ids": decoder,
                "decoder_padding_mask": (np.arange(new_tokens + 1) < 1)[None].repeat(batch, 0)
                .astype(np.int32)}
      keras_seconds = median_ms(lambda: keras_model.generate(inputs, stop_token_ids=None),
                                repeats) / 1000
      row["keras_hub_tokens_per_s"] = batch * new_tokens / keras_seconds
      row["ours_vs_keras_hub"] = row["ours_tokens_per_s"] / row["keras_hub_tokens_per_s"]
    row["ours_vs_pytorch"] = row["ours_tokens_per_s"] / row["pytorch_tokens_per_s"]
    results["cases"][f"batch{batch}"] = row
  if args.json:
    print(json.dumps(results, indent=2))
    return 0
  print(f"BART-base shapes, random weights, {input_length} input / {new_tokens} new tokens, "
        f"greedy; median of {repeats}; new tokens per second (higher is better)")
  for case, row in results["cases"].items():
    keras = (f" | keras-hub {row['keras_hub_tokens_per_s']:6.1f} "
             f"(ours {row['ours_vs_keras_hub']:.2f}x)" if "keras_hub_tokens_per_s" in row else "")
    print(f"  {case:<7} ours {row['ours_tokens_per_s']:6.1f} | PyTorch "
          f"{row['pytorch_tokens_per_s']:6.1f} (ours {row['ours_vs_pytorch']:.2f}x){keras}")
  if "keras_hub_error" in results:
    print(f"  keras-hub not measured: {results['keras_hub_error']}")
  return 0


def serving_benchmark(args) -> int:
  """gRPC overhead over an in-process call, and batching's throughput gain."""
  import dataclasses

  from tfhub_models import demo, export

  layers = args.layers if args.layers != 6 else 12  # base size unless asked otherwise
  hidden = args.hidden if args.hidden != 384 else 768
  heads = args.heads if args.heads != 6 else 12
  base_config = dataclasses.replace(demo.TINY, num_layers=layers, hidden_dim=hidden,
                                    num_heads=heads, intermediate_dim=4 * hidden)
  text = "The capital of France is <mask>."
  clients, per_client = 32, args.requests_per_client
  results = {"model": f"XLM-RoBERTa {layers}x{hidden}", "clients": clients,
             "requests_per_client": per_client, "latency_ms": {}}
  with tempfile.TemporaryDirectory() as scratch:
    models = {}
    for name, config, sizes in (("tiny", demo.TINY, (1,)),
                                ("base", base_config, (1, 2, 4, 8, 16, 32))):
      task = demo.random_model("xlm_roberta_base_multi", "fill_mask", config=config,
                               sequence_length=64)
      models[name] = export.export(task, os.path.join(scratch, name), "xlmr",
                                   options=export.ExportOptions(top_k=5,
                                                                warmup_batch_sizes=sizes))
      del task
      # (1) Latency of one small request: in process, then through gRPC.
      results["latency_ms"][name] = _latency(models[name], text, args.repeats * 10,
                                             os.path.join(scratch, f"{name}-server"))

    # (2) Throughput of 32 clients without and with batching: up to 32 rows, one
    # batch at a time (one session run already uses every core).
    base = os.path.dirname(models["base"])
    batching = os.path.join(scratch, "batching.config")
    with open(batching, "w") as f:
      f.write("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
              "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 1 }\n"
              + "".join(f"allowed_batch_sizes: {b}\n" for b in (1, 2, 4, 8, 16, 32)))
    rates = {}
    for case, extra in (("without_batching", ()),
                        ("with_batching", ("--enable_batching", "--batching_parameters_file",
                                           batching))):
      with _server_process(os.path.join(scratch, case), "--model_name", "xlmr",
                           "--model_base_path", base, "--xla_cpu_compilation_enabled=true",
                           *extra) as target:
        rates[case] = _throughput(target, text, clients, per_client)
  results["throughput_requests_per_s"] = dict(
      rates, batching_gain=rates["with_batching"] / rates["without_batching"])
  if args.json:
    print(json.dumps(results, indent=2))
    return 0
  print(f"{results['model']} and a tiny XLM-RoBERTa, fill-mask, XLA, served by serving.server "
        "on loopback")
  for name, latency in results["latency_ms"].items():
    print(f"  one small request, {name} model: in process {latency['in_process']:.2f} ms, "
          f"gRPC {latency['grpc']:.2f} ms (+{latency['grpc_overhead']:.2f} ms; target <= 2 ms)")
  throughput = results["throughput_requests_per_s"]
  print(f"  {clients} clients x {per_client} requests, {results['model']}: "
        f"{throughput['without_batching']:.1f} req/s without batching, "
        f"{throughput['with_batching']:.1f} with ({throughput['batching_gain']:.2f}x; "
        "target >= 1.5x)")
  return 0


TRAINING_TARGET_VS_KERAS_HUB = 1.2


def _masked_lm_batch(vocabulary: int, batch: int, length: int, masks: int, seed: int = 0):
  """One preprocessed masked-LM batch: rows <s> ids </s> <pad>... of length*3/4 to
  length real tokens, `masks` positions of each masked (the last id is <mask>).

  Returns (token_ids, padding_mask, mask_positions, labels: int32, weights: float32).
  """
  import numpy as np

  rng = np.random.default_rng(seed)
  token_ids = np.full((batch, length), 1, np.int32)                  # <pad>
  padding_mask = np.zeros((batch, length), np.int32)
  positions = np.zeros((batch, masks), np.int32)
  for r in range(batch):
    real = int(rng.integers(length * 3 // 4, length + 1))
    token_ids[r, 0], token_ids[r, real - 1] = 0, 2                      # <s>, </s>
    token_ids[r, 1:real - 1] = rng.integers(4, vocabulary - 1, real - 2)
    padding_mask[r, :real] = 1
    positions[r] = np.sort(rng.choice(np.arange(1, real - 1), size=masks, replace=False))
  labels = np.take_along_axis(token_ids, positions, axis=1)
  np.put_along_axis(token_ids, positions, vocabulary - 1, axis=1)
  return token_ids, padding_mask, positions, labels, np.ones((batch, masks), np.float32)


def training_benchmark(args) -> int:
  """Real tokens per second of one training step: ours (XLA) vs keras-hub (XLA) vs
  transformers (PyTorch), on the same batch, timed in turns."""
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  import tensorflow as tf
  import torch
  import transformers

  import tfhub_models
  from tfhub_models import demo, optimizers

  torch.set_num_threads(os.cpu_count() or 1)
  learning_rate, weight_decay = 5e-5, 0.01
  vocabulary = args.vocabulary_size or demo.tiny_xlm_roberta().tokenizer.vocabulary_size
  if args.quick:
    sizes = dict(vocabulary_size=vocabulary, num_layers=demo.TINY.num_layers,
                 num_heads=demo.TINY.num_heads, hidden_dim=demo.TINY.hidden_dim,
                 intermediate_dim=demo.TINY.intermediate_dim)
    repeats = 2
  else:
    sizes = dict(vocabulary_size=vocabulary, num_layers=12, num_heads=12, hidden_dim=768,
                 intermediate_dim=3072)
    repeats = min(args.repeats, 5)
  batch, length, masks = 8, 128, 20
  config = tfhub_models.XLMRobertaConfig(**sizes)
  token_ids, padding_mask, positions, labels, weights = _masked_lm_batch(
      config.vocabulary_size, batch, length, masks)
  tokens = int(padding_mask.sum())
  results = {"model": {**sizes, "max_sequence_length": config.max_sequence_length},
             "batch": batch, "length": length, "masks_per_row": masks, "real_tokens": tokens,
             "repeats": repeats, "quick": args.quick}
  steps = {}

  # Ours: the compiled step fit runs, called directly on the batch.
  ours = tfhub_models.XLMRobertaMaskedLM(tfhub_models.XLMRobertaBackbone(config), None)
  ours.compile(optimizer=optimizers.AdamW(learning_rate, weight_decay=weight_decay),
               jit_compile=True)
  ours_step = ours._train_function()
  ours_inputs = ({"token_ids": tf.constant(token_ids), "padding_mask": tf.constant(padding_mask),
                  "mask_positions": tf.constant(positions)},
                 tf.constant(labels), tf.constant(weights))
  counted = []

  def ours_run():
    counted.append(int(ours_step(*ours_inputs)[3]))    # the step's own count of real tokens
  steps["ours"] = ours_run

  # keras-hub (a peer, not a dependency): Keras 3 on the TensorFlow backend.
  try:
    import keras
    import keras_hub
    if keras.backend.backend() != "tensorflow":
      raise RuntimeError(f"KERAS_BACKEND is {keras.backend.backend()!r}, not tensorflow")
    keras_model = keras_hub.models.XLMRobertaMaskedLM(
        keras_hub.models.XLMRobertaBackbone(
            vocabulary_size=config.vocabulary_size, num_layers=config.num_layers,
            num_heads=config.num_heads, hidden_dim=config.hidden_dim,
            intermediate_dim=config.intermediate_dim, dropout=config.dropout,
            max_sequence_length=config.max_sequence_length), preprocessor=None)
    keras_model.compile(optimizer=keras.optimizers.AdamW(learning_rate,
                                                         weight_decay=weight_decay),
                        jit_compile=True)
    keras_x = dict(ours_inputs[0])
    steps["keras_hub"] = lambda: keras_model.train_on_batch(
        keras_x, ours_inputs[1], sample_weight=ours_inputs[2])
  except Exception as e:
    results["keras_hub_error"] = f"{type(e).__name__}: {e}"

  # transformers: the same sizes, dropout on, the LM head at the mask positions.
  reference = transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(
      vocab_size=config.vocabulary_size, hidden_size=config.hidden_dim,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      intermediate_size=config.intermediate_dim, hidden_dropout_prob=config.dropout,
      attention_probs_dropout_prob=config.dropout,
      max_position_embeddings=config.num_positions, type_vocab_size=1)).train()
  torch_optimizer = torch.optim.AdamW(reference.parameters(), lr=learning_rate,
                                      weight_decay=weight_decay)
  torch_ids, torch_mask = torch.tensor(token_ids).long(), torch.tensor(padding_mask)
  torch_positions = torch.tensor(positions).long()
  torch_labels, torch_weights = torch.tensor(labels).long(), torch.tensor(weights)

  def torch_step():
    torch_optimizer.zero_grad()
    hidden = reference.roberta(input_ids=torch_ids, attention_mask=torch_mask).last_hidden_state
    at_masks = torch.gather(hidden, 1, torch_positions[..., None].expand(-1, -1,
                                                                         hidden.shape[-1]))
    logits = reference.lm_head(at_masks)                                 # [B, M, V]
    per = torch.nn.functional.cross_entropy(logits.transpose(1, 2), torch_labels,
                                            reduction="none")
    loss = (per * torch_weights).sum() / torch_weights.sum()
    loss.backward()
    torch_optimizer.step()
    return float(loss.detach())
  steps["pytorch"] = torch_step

  for name, ms in median_ms_in_turns(steps, repeats).items():
    results[f"{name}_ms"] = ms
    results[f"{name}_tokens_per_s"] = tokens / (ms / 1000)
  if set(counted) != {tokens}:
    raise RuntimeError(f"our step counted {sorted(set(counted))} real tokens, the batch has "
                       f"{tokens}")
  results["ours_vs_pytorch"] = results["ours_tokens_per_s"] / results["pytorch_tokens_per_s"]
  results["target_vs_keras_hub"] = TRAINING_TARGET_VS_KERAS_HUB
  if "keras_hub_tokens_per_s" in results:
    results["ours_vs_keras_hub"] = (results["ours_tokens_per_s"]
                                    / results["keras_hub_tokens_per_s"])
    results["meets_target"] = results["ours_vs_keras_hub"] >= TRAINING_TARGET_VS_KERAS_HUB
  if args.json:
    print(json.dumps(results, indent=2))
    return 0
  print(f"XLM-RoBERTa masked LM {config.num_layers} layers x {config.hidden_dim}, vocabulary "
        f"{config.vocabulary_size}, random weights{' (--quick)' if args.quick else ''}; one "
        f"training step (AdamW, XLA) on {batch} x {length}, {tokens} real tokens, {masks} masks "
        f"a row; median of {repeats} in turns; real tokens per second (higher is better)")
  if "keras_hub_tokens_per_s" in results:
    keras = (f" | keras-hub {results['keras_hub_tokens_per_s']:7.1f} (ours "
             f"{results['ours_vs_keras_hub']:.2f}x; target >= "
             f"{TRAINING_TARGET_VS_KERAS_HUB}x: {'pass' if results['meets_target'] else 'FAIL'})")
  else:
    keras = ""
  print(f"  ours {results['ours_tokens_per_s']:7.1f}{keras} | PyTorch "
        f"{results['pytorch_tokens_per_s']:7.1f} (ours {results['ours_vs_pytorch']:.2f}x)")
  if "keras_hub_error" in results:
    print(f"  keras-hub not measured: {results['keras_hub_error']}")
  return 0


@contextlib.contextmanager
def _server_process(directory: str, *flags: str, timeout: float = 600):
  """`python -m serving.server FLAGS` in a child process; yields its gRPC HOST:PORT once
  it serves (its output goes to DIRECTORY/server.log)."""
  os.makedirs(directory, exist_ok=True)
  port_file, log_path = os.path.join(directory, "ports"), os.path.join(directory, "server.log")
  if os.path.exists(port_file):  # a previous server's
    os.remove(port_file)
  with open(log_path, "w") as log:
    process = subprocess.Popen([sys.executable, "-m", "serving.server", "--port", "0",
                                "--port_file", port_file, *flags],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
      deadline = time.monotonic() + timeout
      while not os.path.exists(port_file):
        if process.poll() is not None or time.monotonic() > deadline:
          with open(log_path) as f:
            raise RuntimeError(f"the server did not start:\n{f.read()[-4000:]}")
        time.sleep(0.2)
      with open(port_file) as f:
        yield f"127.0.0.1:{f.read().split()[0]}"
    finally:
      process.terminate()
      process.wait()


def _latency(path: str, text: str, repeats: int, directory: str) -> dict:
  """Median ms of one request: the signature run in this process through the same
  session loader as the server, then (that session closed) the client through gRPC
  to a server in another process."""
  import numpy as np

  from serving.client import ServingClient
  from serving.servable import Servable

  servable = Servable("xlmr", 1, path)
  signature = servable.signature("serving_default")
  inputs = {"text": np.array([text.encode()], dtype=object)}
  outputs = signature.output_names(())
  in_process = median_ms(lambda: servable.run(signature, inputs, outputs), repeats)
  servable.close()
  with _server_process(directory, "--model_name", "xlmr", "--model_base_path",
                       os.path.dirname(path), "--xla_cpu_compilation_enabled=true") as target:
    with ServingClient(target, "xlmr") as client:
      through_grpc = median_ms(lambda: client.fill_mask([text]), repeats)
  return {"in_process": in_process, "grpc": through_grpc,
          "grpc_overhead": through_grpc - in_process}


def _throughput(target: str, text: str, clients: int, per_client: int) -> float:
  """Requests per second of `clients` threads each sending `per_client` requests."""
  import threading

  from serving.client import ServingClient

  errors = []

  def run():
    with ServingClient(target, "xlmr", timeout=120) as client:
      client.fill_mask([text])  # connect before the clock starts
      barrier.wait()
      for _ in range(per_client):
        try:
          client.fill_mask([text])
        except Exception as e:  # counted, reported
          errors.append(e)

  barrier = threading.Barrier(clients + 1)
  threads = [threading.Thread(target=run) for _ in range(clients)]
  for thread in threads:
    thread.start()
  barrier.wait()
  start = time.perf_counter()
  for thread in threads:
    thread.join()
  seconds = time.perf_counter() - start
  if errors:
    raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
  return clients * per_client / seconds


if __name__ == "__main__":
  sys.exit(main())
