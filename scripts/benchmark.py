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

The earlier single-model modes still work: --model xlm_roberta (the small fill-mask
comparison, --layers/--hidden/--heads/--sequence-length), --model bart (the
generation case), --model serving, --model training; each with --json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import multiprocessing
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Training last: at base size its three models with their optimizer states are the
# largest memory of the run.
CASES = ("encoder", "fill_mask", "generation", "bfloat16", "serving", "export", "training")
ROOT = pathlib.Path(__file__).resolve().parent.parent

# Targets: ours / peer (> 1 is faster), or a fraction for bounds and agreement.
TARGETS = {
    ("encoder", "keras_hub"): 1.1, ("encoder", "onnxruntime"): 1.1, ("encoder", "pytorch"): 1.4,
    ("fill_mask", "pytorch"): 5.0,
    ("greedy_batch1", "keras_hub"): 1.5, ("greedy_batch8", "keras_hub"): 1.3,
    ("beam4_batch1", "keras_hub"): 1.5, ("beam4_batch1", "pytorch"): 1.3,
    ("greedy_batch1", "weight_streaming_bound"): 0.75,
    ("encoder_bfloat16", "ours_float32"): 1.6, ("greedy_batch1_bfloat16", "ours_float32"): 1.6,
    ("fill_mask_top1_agreement", "float32"): 0.99, ("greedy_agreement", "float32"): 0.95,
    ("training_step", "keras_hub"): 1.2,
    ("serving_batching_gain", "without_batching"): 1.5,
}
TRAINING_TARGET_VS_KERAS_HUB = TARGETS[("training_step", "keras_hub")]


# ---------------------------------------------------------------------------
# Timing

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


def _threads():
  cores = os.cpu_count() or 1
  try:
    import torch
    torch.set_num_threads(cores)
  except ImportError:
    pass
  return cores


def _worker_main(connection, builder: str, spec: dict):
  """A child process holding one system: builds it, then runs what it is told."""
  try:
    _threads()
    system = BUILDERS[builder](**spec)
    connection.send(("ready", getattr(system, "info", {})))
  except BaseException as e:  # reported to the parent, which raises
    import traceback
    connection.send(("error", f"{builder}: {type(e).__name__}: {e}\n{traceback.format_exc()}"))
    return
  while True:
    command, argument = connection.recv()
    if command == "stop":
      return
    try:
      if command == "time":
        times = []
        for _ in range(argument):
          start = time.perf_counter()
          system.run()
          times.append(time.perf_counter() - start)
        connection.send(("ok", times))
      else:  # a method of the system, e.g. its answers for an agreement check
        connection.send(("ok", getattr(system, command)(*argument)))
    except BaseException as e:
      connection.send(("error", f"{builder}.{command}: {type(e).__name__}: {e}"))


class Worker:
  """One system (BUILDERS[builder](**spec)) in a spawned child process."""

  def __init__(self, builder: str, **spec):
    context = multiprocessing.get_context("spawn")
    self.name = builder
    self.connection, child = context.Pipe()
    self.process = context.Process(target=_worker_main, args=(child, builder, spec), daemon=True)
    self.process.start()
    self.info = self._receive()

  def _receive(self):
    while not self.connection.poll(1.0):
      if not self.process.is_alive():
        raise RuntimeError(f"{self.name}: the worker process died (exit code "
                           f"{self.process.exitcode}; out of memory?)")
    status, value = self.connection.recv()
    if status == "error":
      raise RuntimeError(value)
    return value

  def time(self, runs: int = 1) -> list:
    self.connection.send(("time", runs))
    return self._receive()

  def call(self, method: str, *args):
    self.connection.send((method, args))
    return self._receive()

  def close(self):
    if self.process.is_alive():
      self.connection.send(("stop", None))
      self.process.join(30)
    if self.process.is_alive():
      self.process.kill()


@contextlib.contextmanager
def workers(**specs):
  """{name: Worker} from name=(builder, spec); built one after another, all closed at exit."""
  started = {}
  try:
    for name, (builder, spec) in specs.items():
      started[name] = Worker(builder, **spec)
    yield started
  finally:
    for worker in started.values():
      worker.close()


def in_turns(systems: dict, repeats: int, warmup: int = 2) -> dict:
  """{name: [seconds of each timed run]}: `warmup` runs each, then `repeats` rounds
  of one run of each system in turn."""
  for worker in systems.values():
    worker.time(warmup)
  times = {name: [] for name in systems}
  for _ in range(repeats):
    for name, worker in systems.items():
      times[name] += worker.time(1)
  return times


def comparison(name: str, unit: str, work: float, times: dict, *, ours: str = "ours",
               higher_is_better: bool = True, note: str = "") -> dict:
  """A comparison record: each system's rate (`work` per median second), its runs,
  their spread (max/min - 1), and ours / each peer with the target when there is one."""
  record = {"name": name, "unit": unit, "note": note, "systems": {}, "ratios": {},
            "targets": {}}
  for system, seconds in times.items():
    median = statistics.median(seconds)
    record["systems"][system] = {
        "value": work / median if higher_is_better else median * 1000,
        "median_s": median, "runs_s": seconds,
        "spread": max(seconds) / min(seconds) - 1 if len(seconds) > 1 else 0.0}
  value = record["systems"][ours]["value"]
  for system, row in record["systems"].items():
    if system == ours:
      continue
    ratio = value / row["value"] if higher_is_better else row["value"] / value
    record["ratios"][system] = ratio
    target = TARGETS.get((name, system)) or TARGETS.get((name.split(":")[0], system))
    if target is not None:
      record["targets"][system] = target
  return record


def fraction(name: str, value: float, of: str, target_key=None, **extra) -> dict:
  """A record of one fraction (a bound reached, an agreement rate), drawn as a ratio."""
  target = TARGETS.get(target_key or (name, of))
  return {"name": name, "unit": "fraction", "note": extra.pop("note", ""), "systems": {},
          "ratios": {of: value}, "targets": {of: target} if target is not None else {},
          **extra}


# ---------------------------------------------------------------------------
# The machine

def machine() -> dict:
  """CPU model, cores, bfloat16 support and measured memory read bandwidth."""
  import numpy as np

  model, flags = platform.processor() or "unknown", set()
  with contextlib.suppress(OSError):
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
      elif line.startswith("flags") and not flags:
        flags = set(line.split(":", 1)[1].split())
  return {"cpu": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
          "amx": "amx_bf16" in flags, "memory_gb": _memory_gb(),
          "memory_read_gb_s": memory_bandwidth(), "platform": platform.platform(),
          "numpy": np.__version__}


def _memory_gb():
  with contextlib.suppress(OSError, ValueError):
    for line in open("/proc/meminfo"):
      if line.startswith("MemTotal"):
        return round(int(line.split()[1]) / 2**20, 1)
  return None


def memory_bandwidth(gigabytes: float = 1.0, runs: int = 7) -> float:
  """GB/s of reading a `gigabytes` float32 array with every core (torch's sum):
  the best of `runs`, as streaming weights from memory at its fastest would be."""
  import torch

  _threads()
  data = torch.ones(int(gigabytes * 1e9 / 4), dtype=torch.float32)
  data.sum()
  best = float("inf")
  for _ in range(runs):
    start = time.perf_counter()
    data.sum()
    best = min(best, time.perf_counter() - start)
  return data.numel() * 4 / best / 1e9


def versions() -> dict:
  import importlib.metadata

  out = {}
  for package in ("tensorflow", "tensorflow-text", "tensorflow-serving-api", "torch",
                  "transformers", "tokenizers", "keras", "keras-hub", "onnx", "onnxruntime",
                  "numpy", "tfhub-models"):
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      out[package] = None
  with contextlib.suppress(OSError, subprocess.CalledProcessError):
    out["tfhub-models commit"] = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
        text=True, check=True).stdout.strip()
  return out


# ---------------------------------------------------------------------------
# Model files: random checkpoints at the public configs, built once per run

def sizes(quick: bool) -> dict:
  if quick:  # the demo model's
    return dict(layers=2, hidden=64, heads=4, intermediate=128, vocabulary=250002 // 50)
  return dict(layers=12, hidden=768, heads=12, intermediate=3072, vocabulary=250002)


def large_sentencepiece(pieces: int, seed: int = 0) -> bytes:
  """A SentencePiece unigram model of `pieces` pieces (XLM-R's has 250,000; the
  fairseq offset and <mask> make its 250,002 ids): the demo vocabulary's pieces,
  then word-like pieces of random letters with lower scores, so that tokenizing
  searches a trie of the public size and text still splits as the demo's does."""
  import numpy as np
  from sentencepiece import sentencepiece_model_pb2

  from tfhub_models import demo

  model = sentencepiece_model_pb2.ModelProto()
  model.ParseFromString(demo.demo_sentencepiece())
  seen = {piece.piece for piece in model.pieces}
  lowest = min(piece.score for piece in model.pieces if piece.type == 1)
  rng = np.random.default_rng(seed)
  letters = np.array(list("abcdefghijklmnopqrstuvwxyzäöüéèàçñßøå"))
  while len(model.pieces) < pieces:
    length = int(rng.integers(2, 12))
    text = ("\u2581" if rng.random() < 0.5 else "") + "".join(rng.choice(letters, length))
    if text in seen:
      continue
    seen.add(text)
    piece = model.pieces.add()
    piece.piece, piece.score, piece.type = text, lowest - 1 - float(rng.random()) * 10, 1
  model.trainer_spec.vocab_size = len(model.pieces)
  return model.SerializeToString()


def xlm_roberta_checkpoint(directory: str, quick: bool) -> str:
  """A random XLMRobertaForMaskedLM at base size (transformers' safetensors) with a
  SentencePiece model of the public vocabulary's size."""
  import torch
  import transformers

  path = os.path.join(directory, "xlm-roberta")
  if os.path.exists(os.path.join(path, "config.json")):
    return path
  s = sizes(quick)
  torch.manual_seed(0)
  model = transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(
      vocab_size=s["vocabulary"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
      num_attention_heads=s["heads"], intermediate_size=s["intermediate"],
      max_position_embeddings=514, type_vocab_size=1)).eval()
  model.save_pretrained(path)
  with open(os.path.join(path, "sentencepiece.bpe.model"), "wb") as f:
    f.write(large_sentencepiece(s["vocabulary"] - 2))
  # transformers reads the SentencePiece file beside the weights (and converts it
  # to its fast tokenizer), as it does a public checkpoint's.
  transformers.XLMRobertaTokenizer.from_pretrained(path).save_pretrained(path)
  return path


def bart_config(quick: bool) -> dict:
  if quick:
    return dict(vocab_size=50265, d_model=64, encoder_layers=2, decoder_layers=2,
                encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                decoder_ffn_dim=128)
  return dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
              encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
              decoder_ffn_dim=3072)


def _our_bart(quick: bool, dtype: str = "float32", sampler="greedy"):
  """Our BART at base size with random weights: the full 50,265-row embedding and
  LM head over the demo byte-level vocabulary (which names 260 of them)."""
  from tfhub_models import demo
  from tfhub_models.models import bart
  from tfhub_models.tokenizers import ByteLevelBPETokenizer

  c = bart_config(quick)
  preset = bart.PRESETS["bart_base_en"]
  # The same work as the peers' generate: no n-gram ban (bart-base's config bans
  # repeated 3-grams), no forced first or last token.
  generation = dataclasses.replace(preset.generation, no_repeat_ngram_size=0,
                                   forced_bos_token_id=None, forced_eos_token_id=None)
  config = dataclasses.replace(
      preset, vocabulary_size=c["vocab_size"], hidden_dim=c["d_model"],
      num_layers=c["encoder_layers"], num_heads=c["encoder_attention_heads"],
      intermediate_dim=c["encoder_ffn_dim"], generation=generation)
  vocabulary, merges = demo.demo_bpe_vocabulary()
  model = bart.build(config, ByteLevelBPETokenizer(vocabulary, merges), dtype=dtype,
                     sequence_length=64 if quick else 128)
  model.compile(sampler=sampler)
  return model


def export_in_child(kind: str, directory: str, name: str, **spec) -> dict:
  """Exports one model in a fresh process; {path, seconds, peak_rss_mb, size_mb}."""
  worker = Worker("exporter", kind=kind, directory=directory, name=name, **spec)
  worker.close()
  return worker.info


class Exporter:
  """Builds a model (`kind`) and exports it; its info is the export's cost."""

  def __init__(self, kind: str, directory: str, name: str, quick: bool = False,
               dtype: str = "float32", jit_compile: bool = True, checkpoint: str = ""):
    import resource

    from tfhub_models import export, models

    start = time.perf_counter()
    if kind == "xlm_roberta":
      # --quick: a shorter sequence, so fewer length buckets to compile and warm up.
      task = models.load(checkpoint, "fill_mask", dtype=dtype,
                         sequence_length=encoder_length(quick))
      options = export.ExportOptions(top_k=5, jit_compile=jit_compile,
                                     warmup_batch_sizes=(1,) if quick else (1, 8))
    elif kind == "preset":  # a saved model as it is, e.g. a trained demo
      task = models.load(checkpoint, dtype=dtype)
      options = export.ExportOptions(jit_compile=jit_compile, warmup_batch_sizes=(1,))
    else:
      task = _our_bart(quick, dtype)
      options = export.ExportOptions(jit_compile=jit_compile, max_new_tokens=32,
                                     warmup_batch_sizes=(1,))
    built = time.perf_counter()
    path = export.export(task, directory, name, options=options)
    seconds = time.perf_counter() - built
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    self.info = {"path": str(path), "build_s": built - start, "export_s": seconds,
                 "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                 "size_mb": size / 1e6, "dtype": dtype, "xla": jit_compile}


# ---------------------------------------------------------------------------
# Systems (each built in its own worker process)

def _masked_ids(vocabulary: int, batch: int, length: int, seed: int = 0):
  """Random rows <s> ids </s> with one <mask> (the last id) at a random position."""
  import numpy as np

  rng = np.random.default_rng(seed)
  ids = rng.integers(4, vocabulary - 1, size=(batch, length)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 0, 2
  positions = rng.integers(1, length - 1, size=(batch, 1)).astype(np.int32)
  np.put_along_axis(ids, positions, vocabulary - 1, axis=1)
  return ids, np.ones_like(ids), positions


class OurSignature:
  """A signature of our export, loaded as TF Serving loads it (serving.servable's
  session loader), run on fixed inputs."""

  def __init__(self, path: str, signature: str, inputs: dict, outputs: tuple = ()):
    from serving.servable import Servable

    self.servable = Servable("benchmark", 1, pathlib.Path(path))
    self.signature = self.servable.signature(signature)
    self.inputs = {k: _array(v) for k, v in inputs.items()}
    self.outputs = self.signature.output_names(outputs)
    self.info = {}

  def run(self):
    return self.servable.run_session(self.signature, self.inputs, self.outputs)

  def answers(self, texts):
    """Top-1 fillers of serving_default for `texts`."""
    import numpy as np

    result = self.servable.run_session(self.servable.signature("serving_default"), {
        "text": np.array([t.encode() for t in texts], dtype=object)}, ("top_k_tokens",))
    return [row[0][0].decode() for row in result["top_k_tokens"]]

  def generated(self, texts):
    import numpy as np

    result = self.servable.run_session(self.servable.signature("serving_default"), {
        "text": np.array([t.encode() for t in texts], dtype=object)}, ("generated_text",))
    return [t.decode() for t in result["generated_text"]]


def _array(value):
  import numpy as np

  if isinstance(value, list) and value and isinstance(value[0], str):
    return np.array([v.encode() for v in value], dtype=object)
  return np.asarray(value)


class KerasHubEncoder:
  """keras-hub's XLMRobertaMaskedLM (TensorFlow backend, jit_compile) at the
  same sizes: the encoder and the LM head at the mask positions."""

  def __init__(self, quick: bool, batch: int, length: int):
    import keras_hub

    s = sizes(quick)
    self.model = keras_hub.models.XLMRobertaMaskedLM(keras_hub.models.XLMRobertaBackbone(
        vocabulary_size=s["vocabulary"], num_layers=s["layers"], num_heads=s["heads"],
        hidden_dim=s["hidden"], intermediate_dim=s["intermediate"], max_sequence_length=512),
        preprocessor=None)
    self.model.compile(jit_compile=True)
    ids, mask, positions = _masked_ids(s["vocabulary"], batch, length)
    self.inputs = {"token_ids": ids, "padding_mask": mask, "mask_positions": positions}
    self.info = {"keras_hub_dtype": self.model.dtype_policy.name}

  def run(self):
    return self.model.predict_on_batch(self.inputs)


class TorchEncoder:
  """transformers' XLMRobertaForMaskedLM: the encoder, then the LM head at the mask
  positions only (as ours and keras-hub's)."""

  def __init__(self, checkpoint: str, batch: int, length: int):
    import torch
    import transformers

    self.torch = torch
    self.model = transformers.XLMRobertaForMaskedLM.from_pretrained(checkpoint).eval()
    ids, mask, positions = _masked_ids(self.model.config.vocab_size, batch, length)
    self.inputs = (torch.tensor(ids).long(), torch.tensor(mask).long(),
                   torch.tensor(positions).long())
    self.info = {}

  def run(self):
    with self.torch.inference_mode():
      return masked_lm_at(self.model, *self.inputs)


def masked_lm_at(model, ids, mask, positions):
  import torch

  hidden = model.roberta(input_ids=ids, attention_mask=mask).last_hidden_state
  hidden = torch.gather(hidden, 1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
  return model.lm_head(hidden)


class OnnxEncoder:
  """ONNX Runtime on the PyTorch model exported with torch.onnx.export (TorchScript
  exporter), all graph optimizations, intra-op threads = cores."""

  def __init__(self, checkpoint: str, directory: str, batch: int, length: int):
    import onnxruntime
    import torch
    import transformers

    path = os.path.join(directory, "encoder.onnx")
    model = transformers.XLMRobertaForMaskedLM.from_pretrained(checkpoint).eval()
    ids, mask, positions = _masked_ids(model.config.vocab_size, batch, length)

    class AtMasks(torch.nn.Module):
      def __init__(self):
        super().__init__()
        self.model = model

      def forward(self, ids, mask, positions):
        return masked_lm_at(self.model, ids, mask, positions)

    start = time.perf_counter()
    with torch.no_grad():
      torch.onnx.export(
          AtMasks().eval(), (torch.tensor(ids).long(), torch.tensor(mask).long(),
                             torch.tensor(positions).long()), path,
          input_names=["ids", "mask", "positions"], output_names=["logits"], dynamo=False,
          dynamic_axes={"ids": {0: "b", 1: "t"}, "mask": {0: "b", 1: "t"},
                        "positions": {0: "b", 1: "m"}})
    exported = time.perf_counter() - start
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = os.cpu_count() or 1
    self.session = onnxruntime.InferenceSession(path, options,
                                                providers=["CPUExecutionProvider"])
    self.inputs = {"ids": ids.astype("int64"), "mask": mask.astype("int64"),
                   "positions": positions.astype("int64")}
    self.info = {"onnx_export_s": exported}

  def run(self):
    return self.session.run(None, self.inputs)


class PipelineFillMask:
  """transformers' fill-mask pipeline (PyTorch), top-5, the 8 texts in one batch."""

  def __init__(self, checkpoint: str, texts: list):
    import transformers

    self.pipeline = transformers.pipeline("fill-mask", model=checkpoint, tokenizer=checkpoint,
                                          top_k=5, device="cpu")
    self.texts = texts
    self.info = {"tokens": [len(self.pipeline.tokenizer(t)["input_ids"]) for t in texts]}

  def run(self):
    return self.pipeline(self.texts, batch_size=len(self.texts))

  def answers(self, texts):
    return [rows[0]["token_str"] for rows in self.pipeline(texts, batch_size=8)]


class KerasHubFillMask:
  """keras-hub's tokenizer (the same SentencePiece model) + XLMRobertaMaskedLM:
  tokenize, pack, find the masks, predict, top-5, detokenize the fillers."""

  def __init__(self, checkpoint: str, quick: bool, texts: list):
    import keras
    import keras_hub
    import tensorflow as tf

    s = sizes(quick)
    with open(os.path.join(checkpoint, "sentencepiece.bpe.model"), "rb") as f:
      self.tokenizer = keras_hub.tokenizers.XLMRobertaTokenizer(proto=f.read())
    self.packer = keras_hub.layers.StartEndPacker(
        start_value=self.tokenizer.start_token_id, end_value=self.tokenizer.end_token_id,
        pad_value=self.tokenizer.pad_token_id, sequence_length=None, return_padding_mask=True)
    self.model = keras_hub.models.XLMRobertaMaskedLM(keras_hub.models.XLMRobertaBackbone(
        vocabulary_size=s["vocabulary"], num_layers=s["layers"], num_heads=s["heads"],
        hidden_dim=s["hidden"], intermediate_dim=s["intermediate"], max_sequence_length=512),
        preprocessor=None)
    self.model.compile(jit_compile=True)
    self.mask_id = self.tokenizer.mask_token_id
    self.tf, self.keras, self.texts = tf, keras, texts
    self.info = {}

  def run(self):
    tf = self.tf
    # keras-hub's tokenizer does not split "<mask>" out of text: the pieces on each
    # side are tokenized and the mask id put between them.
    parts = [text.split("<mask>") for text in self.texts]
    left, right = (self._ragged(self.tokenizer(tf.constant([p[i] for p in parts])))
                   for i in (0, 1))
    masks = tf.fill([len(parts), 1], self.mask_id)
    ids = tf.concat([left, tf.RaggedTensor.from_tensor(masks), right], axis=1)
    # Padded to the longest row (not the preprocessor's 512): the least work.
    ids, padding = self.packer(ids, sequence_length=int(ids.bounding_shape()[1]) + 2)
    positions = tf.cast(tf.where(tf.equal(ids, self.mask_id))[:, 1:], tf.int32)
    probabilities = self.model.predict_on_batch(
        {"token_ids": ids, "padding_mask": padding, "mask_positions": positions})
    scores, top = self.keras.ops.top_k(self.keras.ops.softmax(probabilities), k=5)
    return self.tokenizer.id_to_token(int(top[0, 0, 0])), scores

  def _ragged(self, ids):
    """keras-hub's tokenizer answers eager calls with Python lists of ids."""
    return self.tf.ragged.constant(ids, dtype=self.tf.int32) if isinstance(ids, list) else ids


class OurGeneration:
  """Our compiled generation loop (the one BART exports run), stop tokens off."""

  def __init__(self, quick: bool, batch: int, new_tokens: int, input_length: int,
               sampler: dict, dtype: str = "float32"):
    import numpy as np
    import tensorflow as tf

    from tfhub_models import generation

    self.model = _our_bart(quick, dtype, generation.Sampler(**sampler))
    self.function = self.model._function(new_tokens + 1, ())
    rng = np.random.default_rng(0)
    self.ids = rng.integers(4, 250, size=(batch, input_length)).astype(np.int32)
    self.mask = np.ones_like(self.ids)
    self.seed = tf.constant(1, tf.int64)   # every row from one seed
    self.info = {"weights_read_per_step_bytes": decoder_bytes_per_step(self.model)}

  def run(self):
    return self.function(self.ids, self.mask, self.seed)

  def generated_ids(self, ids):
    import numpy as np

    ids = np.asarray(ids, np.int32)
    out, _ = self.function(ids, np.ones_like(ids), self.seed)
    return out.numpy().tolist()


def decoder_bytes_per_step(model) -> int:
  """Bytes of weights one decoding step reads: each decoder layer's (but the
  cross-attention key and value projections, applied once to the encoder's output),
  the tied LM head's (the whole token embedding) and its bias; one row of the
  position embedding."""
  backbone = model.backbone

  def size(variables):
    return sum(v.shape.num_elements() * v.dtype.size for v in variables)

  total = 0
  for layer in backbone.decoder_layers:
    skipped = {id(v) for part in (layer.cross_attention.key, layer.cross_attention.value)
               for v in part.trainable_variables}
    total += size(v for v in layer.trainable_variables if id(v) not in skipped)
  total += size(backbone.decoder_embeddings_layer_norm.trainable_variables)
  total += size(backbone.token_embedding.trainable_variables)
  position = backbone.decoder_position_embedding.embeddings
  total += position.shape[-1] * position.dtype.size
  total += size([backbone.final_logits_bias])
  return int(total)


class KerasHubGeneration:
  def __init__(self, quick: bool, batch: int, new_tokens: int, input_length: int,
               sampler: dict):
    import keras_hub
    import numpy as np

    c = bart_config(quick)
    self.model = keras_hub.models.BartSeq2SeqLM(
        backbone=keras_hub.models.BartBackbone(
            vocabulary_size=c["vocab_size"], num_layers=c["encoder_layers"],
            num_heads=c["encoder_attention_heads"], hidden_dim=c["d_model"],
            intermediate_dim=c["encoder_ffn_dim"], max_sequence_length=1024),
        preprocessor=None)
    if sampler["name"] == "beam":
      self.model.compile(sampler=keras_hub.samplers.BeamSampler(num_beams=sampler["num_beams"]))
    else:
      self.model.compile(sampler="greedy")
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 250, size=(batch, input_length)).astype(np.int32)
    decoder = np.zeros((batch, new_tokens + 1), np.int32)
    decoder[:, 0] = 2
    self.inputs = {"encoder_token_ids": ids, "encoder_padding_mask": np.ones_like(ids),
                   "decoder_token_ids": decoder,
                   "decoder_padding_mask": (np.arange(new_tokens + 1) < 1)[None]
                   .repeat(batch, 0).astype(np.int32)}
    self.info = {}

  def run(self):
    return self.model.generate(self.inputs, stop_token_ids=None)


class TorchGeneration:
  def __init__(self, quick: bool, batch: int, new_tokens: int, input_length: int,
               sampler: dict):
    import numpy as np
    import torch
    import transformers

    torch.manual_seed(0)
    self.torch = torch
    self.model = transformers.BartForConditionalGeneration(
        transformers.BartConfig(**bart_config(quick))).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 250, size=(batch, input_length))
    self.ids, self.mask = torch.tensor(ids).long(), torch.ones(batch, input_length).long()
    beams = sampler["num_beams"] if sampler["name"] == "beam" else 1
    self.settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams,
                         do_sample=False, early_stopping=False, no_repeat_ngram_size=0,
                         forced_bos_token_id=None, forced_eos_token_id=None)
    self.info = {}

  def run(self):
    with self.torch.inference_mode():
      return self.model.generate(input_ids=self.ids, attention_mask=self.mask, **self.settings)


class ColdStart:
  """Loads an export as the server does and replays its warmup requests."""

  def __init__(self, path: str):
    from serving.servable import Servable

    start = time.perf_counter()
    servable = Servable("cold", 1, pathlib.Path(path))
    loaded = time.perf_counter()
    requests = servable.warmup()
    done = time.perf_counter()
    self.info = {"load_s": loaded - start, "warmup_s": done - loaded, "total_s": done - start,
                 "warmup_requests": requests}


class Several:
  """Several systems of one builder in one process (one import, one start-up); `run`
  runs the one chosen last with `select`."""

  def __init__(self, system: str, specs: dict):
    self.systems = {name: BUILDERS[system](**spec) for name, spec in specs.items()}
    self.info = {name: system.info for name, system in self.systems.items()}
    self.current = next(iter(self.systems.values()))

  def select(self, name: str):
    self.current = self.systems[name]

  def run(self):
    return self.current.run()

  def __getattr__(self, name):  # the chosen system's other methods
    return getattr(self.__dict__["current"], name)


BUILDERS = {
    "several": Several, "exporter": Exporter, "ours_signature": OurSignature,
    "keras_hub_encoder": KerasHubEncoder,
    "pytorch_encoder": TorchEncoder, "onnxruntime_encoder": OnnxEncoder,
    "pipeline_fill_mask": PipelineFillMask, "keras_hub_fill_mask": KerasHubFillMask,
    "ours_generation": OurGeneration, "keras_hub_generation": KerasHubGeneration,
    "pytorch_generation": TorchGeneration, "cold_start": ColdStart,
}


# ---------------------------------------------------------------------------
# Cases: each returns {"comparisons": [...], ...details}

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


ENCODER_BATCH, ENCODER_LENGTH = 8, 128


def encoder_length(quick: bool) -> int:
  return 32 if quick else ENCODER_LENGTH


def _encoder_spec(path: str, quick: bool):
  ids, mask, positions = _masked_ids(sizes(quick)["vocabulary"], ENCODER_BATCH,
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
  args = argparse.Namespace(quick=run.quick, repeats=run.repeats,
                            vocabulary_size=sizes(run.quick)["vocabulary"])
  result = training_results(args)
  times = {name: [result[f"{name}_ms"] / 1000] for name in ("ours", "keras_hub", "pytorch")
           if f"{name}_ms" in result}
  record = comparison("training_step", "real tokens/s", result["real_tokens"], times,
                      note=f"XLM-R masked LM {_size_name(run.quick)}, AdamW, XLA, batch 8 x "
                      "128, 20 masks a row; the three steps in turns in one process")
  return {"comparisons": [record], "details": result}


def case_serving(run: Run) -> dict:
  s = sizes(run.quick)
  args = argparse.Namespace(layers=s["layers"], hidden=s["hidden"], heads=s["heads"],
                            repeats=2 if run.quick else run.repeats,
                            requests_per_client=2 if run.quick else 40, quick=run.quick)
  result = serving_results(args)
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


# ---------------------------------------------------------------------------
# Report: results.json, results.png, the table

def passed(record: dict, peer: str):
  target = record["targets"].get(peer)
  return None if target is None else record["ratios"][peer] >= target


def rows(result: dict):
  """(record, ours: its systems entry or None, peer, ratio, target or None) of each
  ratio a case's comparisons hold."""
  for record in result.get("comparisons", []):
    ours = next(iter(v for k, v in record["systems"].items() if k not in record["ratios"]),
                None)
    for peer, ratio in record["ratios"].items():
      yield record, ours, peer, ratio, record["targets"].get(peer)


def table(results: dict) -> str:
  lines = [f"{'case':<11} {'comparison':<38} {'ours':>12} {'peer':<24} {'ratio':>7} "
           f"{'target':>7}"]
  for case, result in results["cases"].items():
    if "error" in result:
      lines.append(f"{case:<11} ERROR: {result['error'].splitlines()[0]}")
      continue
    for record, ours, peer, ratio, target in rows(result):
      ours_text = f"{ours['value']:.1f}" if ours else ""
      verdict = "" if target is None else (" ok" if ratio >= target else " MISS")
      lines.append(f"{case:<11} {record['name']:<38} {ours_text:>12} {peer:<24} "
                   f"{ratio:>6.2f}x {'' if target is None else f'{target:.2f}':>7}{verdict}")
    if case == "export":
      for name, info in result["exports"].items():
        lines.append(f"{case:<11} {name:<38} {info['export_s']:>10.1f} s  peak "
                     f"{info['peak_rss_mb']:.0f} MB, {info['size_mb']:.0f} MB on disk")
    if case == "serving":
      for name, latency in result["latency_ms"].items():
        lines.append(f"{case:<11} grpc overhead, {name} model{'':<17} "
                     f"{latency['grpc_overhead']:>10.2f} ms (target <= 2 ms)")
      for name, cold in result["cold_start"].items():
        lines.append(f"{case:<11} cold start {name:<27} {cold['total_s']:>10.1f} s  (load "
                     f"{cold['load_s']:.1f} s + {cold['warmup_requests']} warmup requests)")
  return "\n".join(lines)


def markdown(results: dict) -> str:
  m = results["machine"]
  out = [f"Measured {results['finished'][:10]} on {m['cpu']}, {m['cores']} cores, "
         f"{m['memory_read_gb_s']:.1f} GB/s memory read "
         f"({'quick' if results['quick'] else 'base sizes'}, "
         f"median of {results['repeats']} runs in turns; `benchmarks/results.json`).", "",
         "| case | ours | against | ratio | target |", "|---|---|---|---|---|"]
  for result in results["cases"].values():
    for record, ours, peer, ratio, target in rows(result):
      value = f"{ours['value']:,.1f} {record['unit']}" if ours else ""
      mark = "" if target is None else (" ✓" if ratio >= target else " ✗")
      out.append(f"| {record['name']} | {value} | {peer} | {ratio:.2f}{mark} | "
                 f"{'' if target is None else f'≥ {target:g}'} |")
  return "\n".join(out)


def chart(results: dict, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = []
  for case, result in results["cases"].items():
    for record in result.get("comparisons", []):
      for peer, ratio in record["ratios"].items():
        rows.append((case, f"{record['name']} / {peer}", ratio, record["targets"].get(peer)))
  cases = list(dict.fromkeys(r[0] for r in rows))
  if not rows:
    rows, cases = [("none", "no comparisons", 0.0, None)], ["none"]
  heights = [max(1, sum(r[0] == c for r in rows)) for c in cases]
  figure, axes = plt.subplots(len(cases), 1, figsize=(9, 1.2 + 0.45 * sum(heights)),
                              gridspec_kw={"height_ratios": heights}, squeeze=False)
  for axis, case in zip(axes[:, 0], cases):
    mine = [r for r in rows if r[0] == case]
    y = list(range(len(mine)))[::-1]
    colors = ["#4c72b0" if r[3] is None else ("#55a868" if r[2] >= r[3] else "#c44e52")
              for r in mine]
    axis.barh(y, [r[2] for r in mine], color=colors)
    for yy, r in zip(y, mine):
      if r[3] is not None:
        axis.plot([r[3], r[3]], [yy - 0.4, yy + 0.4], color="black", linewidth=2)
      axis.text(r[2], yy, f" {r[2]:.2f}", va="center", fontsize=8)
    axis.axvline(1.0, color="gray", linestyle="--", linewidth=0.8)
    axis.set_yticks(y)
    axis.set_yticklabels([r[1] for r in mine], fontsize=8)
    axis.set_title(case, fontsize=9, loc="left")
    axis.set_xlim(0, max(max(r[2] for r in mine), max((r[3] or 0) for r in mine), 1.0) * 1.25)
  m = results["machine"]
  figure.suptitle(f"ours / peer (> 1: ours faster; black: target) — {m['cpu']}, {m['cores']} "
                  f"cores{' — quick' if results['quick'] else ''}", fontsize=9)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)


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
  # The earlier single-model modes.
  parser.add_argument("--model", choices=["xlm_roberta", "bart", "serving", "training"])
  parser.add_argument("--layers", type=int, default=None)
  parser.add_argument("--hidden", type=int, default=None)
  parser.add_argument("--heads", type=int, default=None)
  parser.add_argument("--sequence-length", type=int, default=512)
  parser.add_argument("--requests-per-client", type=int, default=40,
                      help="--model serving: requests each of the 32 clients sends")
  parser.add_argument("--vocabulary-size", type=int, default=None,
                      help="--model training: rows of the embedding and LM head (default: the "
                      "demo vocabulary's; 250002 is the public one)")
  args = parser.parse_args(argv)
  if args.markdown:
    print(markdown(json.loads(pathlib.Path(args.markdown).read_text())))
    return 0
  if args.model:
    return legacy(args)
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


def legacy(args) -> int:
  """--model: the earlier single-model modes, their defaults and output."""
  if args.model == "bart":
    with tempfile.TemporaryDirectory() as scratch:
      run = Run(scratch, False, min(args.repeats or 5, 5))
      result = {"generation": case_generation(run)}
    if args.json:
      print(json.dumps(result, indent=2, default=float))
    else:
      print(table({"cases": result}))
    return 0
  if args.model == "serving":
    args.layers, args.hidden, args.heads = args.layers or 12, args.hidden or 768, args.heads or 12
    args.repeats = args.repeats or 20
    return serving_benchmark(args)
  if args.model == "training":
    args.repeats = args.repeats or 20
    return training_benchmark(args)
  args.layers, args.hidden, args.heads = args.layers or 6, args.hidden or 384, args.heads or 6
  args.repeats = args.repeats or 20
  return legacy_fill_mask(args)


def legacy_fill_mask(args) -> int:
  """--model xlm_roberta: the small fill-mask comparison against transformers."""
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
      row = {"transformers_ms": median_ms(lambda texts=texts: transformers_fill_mask(texts),
                                          args.repeats)}
      for name, signature in signatures.items():
        row[f"ours_{name}_ms"] = median_ms(
            lambda signature=signature, text=text: signature["serving_default"](text=text),
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
          f"ours no-XLA {row['ours_no_xla_ms']:7.2f} ms "
          f"({row['ours_no_xla_vs_transformers']:.2f}x)")
  b = results["bucketing"]
  print(f"  bucketing: {b['tokens']} tokens padded to {b['bucket_length']}: {b['bucket_ms']:.2f} ms"
        f" vs {args.sequence_length}: {b['full_length_ms']:.2f} ms "
        f"({b['bucket_vs_full_length']:.2f}x)")
  return 0



def serving_benchmark(args) -> int:
  """--model serving: gRPC overhead over an in-process call, and batching's gain."""
  results = serving_results(args)
  if args.json:
    print(json.dumps(results, indent=2))
    return 0
  print(f"{results['model']} and a tiny XLM-RoBERTa, fill-mask, XLA, served by serving.server "
        "on loopback")
  for name, latency in results["latency_ms"].items():
    print(f"  one small request, {name} model: in process {latency['in_process']:.2f} ms, "
          f"gRPC {latency['grpc']:.2f} ms (+{latency['grpc_overhead']:.2f} ms; target <= 2 ms)")
  throughput = results["throughput_requests_per_s"]
  clients, per_client = results["clients"], results["requests_per_client"]
  print(f"  {clients} clients x {per_client} requests, {results['model']}: "
        f"{throughput['without_batching']:.1f} req/s without batching, "
        f"{throughput['with_batching']:.1f} with ({throughput['batching_gain']:.2f}x; "
        "target >= 1.5x)")
  return 0


def serving_results(args) -> dict:
  """gRPC overhead over an in-process call, and batching's throughput gain."""
  from tfhub_models import demo, export

  layers, hidden, heads = args.layers, args.hidden, args.heads
  base_config = dataclasses.replace(demo.TINY, num_layers=layers, hidden_dim=hidden,
                                    num_heads=heads, intermediate_dim=4 * hidden)
  text = "The capital of France is <mask>."
  clients, per_client = 32, args.requests_per_client
  results = {"model": f"XLM-RoBERTa {layers}x{hidden}", "clients": clients,
             "requests_per_client": per_client, "latency_ms": {}}
  with tempfile.TemporaryDirectory() as scratch:
    models = {}
    quick = getattr(args, "quick", False)  # one model, warmed at batch 1 only
    for name, config, sizes in ((("tiny", demo.TINY, (1,)),) if not quick else ()) + (
        ("base", base_config, (1,) if quick else (1, 2, 4, 8, 16, 32)),):
      task = demo.random_model("xlm_roberta_base_multi", "fill_mask", config=config,
                               sequence_length=32 if quick else 64)
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
  return results


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
  """--model training: one training step of ours, keras-hub's and PyTorch's."""
  results = training_results(args)
  config_layers, hidden, vocabulary = (results["model"][k] for k in (
      "num_layers", "hidden_dim", "vocabulary_size"))
  batch, length, tokens, masks = (results[k] for k in ("batch", "length", "real_tokens",
                                                        "masks_per_row"))
  repeats = results["repeats"]
  if args.json:
    print(json.dumps(results, indent=2))
    return 0
  print(f"XLM-RoBERTa masked LM {config_layers} layers x {hidden}, vocabulary "
        f"{vocabulary}, random weights{' (--quick)' if args.quick else ''}; one "
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


def training_results(args) -> dict:
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
  return results


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
