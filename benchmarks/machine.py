"""What a run was measured on: the machine (cores, memory, bandwidth) and the
package versions."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time

from benchmarks.harness import ROOT, threads

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

  threads()
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
