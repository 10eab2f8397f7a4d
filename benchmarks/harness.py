"""Timing in turns, worker processes holding one system each, and the records
of a comparison (ratios against peers) or a fraction (against a target)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pathlib
import statistics
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Training last: at base size its three models with their optimizer states are the
# largest memory of the run.
CASES = ("encoder", "fill_mask", "generation", "bfloat16", "serving", "export", "training")

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


def threads():
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
    from benchmarks.peers import BUILDERS
    threads()
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
