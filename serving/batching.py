"""Server-side batching with TF Serving's `BatchingParameters` and their meaning.

Requests for the same version, signature, inputs and outputs go to one queue.
A queue holds batches being filled; a task joins the newest batch when it fits
in `max_batch_size` rows, else opens a new one, and is refused with UNAVAILABLE
when that would make more than `max_enqueued_batches`.  `num_batch_threads`
workers take a batch once it is full, once another batch waits behind it, or
once its first task has waited `batch_timeout_micros`.  The batch's inputs are
concatenated along the 0th dimension (other dimensions padded to the largest
when `pad_variable_length_inputs`), padded up to the next `allowed_batch_sizes`
entry, run once, and every output is split back by rows:

  task a: text [2]  ┐                         ┌ a: outputs[0:2]
  task b: text [1]  ├→ text [3] → pad to [4] → run → split ┤ b: outputs[2:3]
  task c: text [1]  ┘                         └ c: outputs[3:4]   (row 4 dropped)

As in TF Serving, every output's 0th dimension must be the batch's: a
signature whose outputs are not per-row cannot be batched.

Clients stay apart: without `pad_variable_length_inputs` only requests whose
inputs have the same shapes past the 0th dimension share a queue (others wait
in their own, instead of failing together); and when a merged batch fails on
its input (INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION: one request's
bad row), each request runs again alone, so only the bad one fails, with an
error about its own rows.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from collections.abc import Callable

import grpc
import numpy as np

from serving.errors import ServingError, invalid


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """BatchingParameters with TF Serving's defaults for the fields left unset.

  Checked when made (the one place these rules live): ValueError naming the field.
  """
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 10
  num_batch_threads: int = os.cpu_count() or 1
  allowed_batch_sizes: tuple[int, ...] = ()
  pad_variable_length_inputs: bool = False

  def __post_init__(self):
    for field in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
      if getattr(self, field) < 1:
        raise ValueError(f"batching parameter {field} must be positive, "
                         f"got {getattr(self, field)}")
    if self.batch_timeout_micros < 0:
      raise ValueError(f"batching parameter batch_timeout_micros must not be negative, got "
                       f"{self.batch_timeout_micros}")
    sizes = self.allowed_batch_sizes
    if sizes:
      if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
        raise ValueError(f"allowed_batch_sizes must be positive and increasing, got "
                         f"{list(sizes)}")
      if sizes[-1] != self.max_batch_size:
        raise ValueError(f"Last entry in allowed_batch_sizes must match max_batch_size; last "
                         f"entry was {sizes[-1]}; expected {self.max_batch_size} (the sizes "
                         "must increase and end at max_batch_size)")

  @classmethod
  def from_proto(cls, params) -> BatchingOptions:
    """From a `protos.BatchingParameters`; raises ValueError as the constructor does."""
    def get(field):
      return getattr(params, field).value if params.HasField(field) else getattr(cls, field)
    return cls(max_batch_size=get("max_batch_size"),
               batch_timeout_micros=get("batch_timeout_micros"),
               max_enqueued_batches=get("max_enqueued_batches"),
               num_batch_threads=get("num_batch_threads"),
               allowed_batch_sizes=tuple(params.allowed_batch_sizes),
               pad_variable_length_inputs=params.pad_variable_length_inputs)


# The codes a run answers when its input is at fault (TensorFlow's checks of values).
_INPUT_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE,
                          grpc.StatusCode.FAILED_PRECONDITION})


class _Task:
  __slots__ = ("inputs", "size", "done", "result", "error", "enqueued")

  def __init__(self, inputs: dict[str, np.ndarray], size: int):
    self.inputs, self.size = inputs, size
    self.done = threading.Event()
    self.result = self.error = None
    self.enqueued = time.monotonic()


class _Queue:
  def __init__(self, key):
    self.key = key
    self.batches: collections.deque[list[_Task]] = collections.deque()
    self.sizes: collections.deque[int] = collections.deque()


class Batcher:
  """Merges concurrent `run` calls of one servable.

  run(signature, inputs, outputs) -> outputs is `Servable.run_session`; `signature`
  is passed through as it comes (any hashable: requests with the same one, the
  same input names and outputs share a queue).
  """

  def __init__(self, run: Callable, options: BatchingOptions, on_batch: Callable | None = None):
    self._run, self.options, self._on_batch = run, options, on_batch
    self._queues: dict[tuple, _Queue] = {}
    self._cond = threading.Condition()
    self._stopped = False
    self._threads = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                     for i in range(options.num_batch_threads)]
    for thread in self._threads:
      thread.start()

  def run(self, signature, inputs: dict[str, np.ndarray],
          outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Runs one request's rows as part of a batch: {output: rows of this request}."""
    sizes = {k: v.shape[0] if v.ndim else None for k, v in inputs.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
      raise invalid("Batching Run() input tensors must have equal 0th-dimension size "
                    f"(got {', '.join(f'{k}: {v}' for k, v in sorted(sizes.items()))})")
    size = next(iter(sizes.values()))
    if size > self.options.max_batch_size:
      raise invalid(f"Task size {size} is larger than maximum input batch size "
                    f"{self.options.max_batch_size}")
    shapes = () if self.options.pad_variable_length_inputs else tuple(
        (k, inputs[k].shape[1:]) for k in sorted(inputs))
    key = (signature, tuple(sorted(inputs)), tuple(outputs), shapes)
    task = _Task(inputs, size)
    with self._cond:
      if self._stopped:
        raise ServingError(grpc.StatusCode.UNAVAILABLE, "the batcher is shutting down")
      queue = self._queues.setdefault(key, _Queue(key))
      if queue.batches and queue.sizes[-1] + size <= self.options.max_batch_size:
        queue.batches[-1].append(task)
        queue.sizes[-1] += size
      elif len(queue.batches) >= self.options.max_enqueued_batches:
        raise ServingError(grpc.StatusCode.UNAVAILABLE,
                           "The batch scheduling queue to which this task was submitted is "
                           f"full; currently {len(queue.batches)} batches enqueued and "
                           f"max_enqueued_batches is {self.options.max_enqueued_batches}")
      else:
        queue.batches.append([task])
        queue.sizes.append(size)
      self._cond.notify_all()
    task.done.wait()
    if task.error is not None:
      raise task.error
    return task.result

  def stop(self) -> None:
    with self._cond:
      self._stopped = True
      self._cond.notify_all()
    for thread in self._threads:
      thread.join(timeout=30)

  # --- workers -------------------------------------------------------------------

  def _next_batch(self):
    """Under the lock: (key, tasks) of a batch ready to run, or (None, seconds to wait)."""
    timeout = self.options.batch_timeout_micros / 1e6
    now = time.monotonic()
    best, wait = None, None
    for queue in self._queues.values():
      if not queue.batches:
        continue
      first = queue.batches[0][0].enqueued
      ready = (queue.sizes[0] >= self.options.max_batch_size or len(queue.batches) > 1
               or now - first >= timeout or self._stopped)
      if ready:
        if best is None or first < best.batches[0][0].enqueued:
          best = queue
      else:
        left = first + timeout - now
        wait = left if wait is None else min(wait, left)
    if best is None:
      return None, wait
    best.sizes.popleft()
    return best.key, best.batches.popleft()

  def _work(self) -> None:
    while True:
      with self._cond:
        while True:
          key, tasks = self._next_batch()
          if key is not None:
            break
          if self._stopped:
            return
          self._cond.wait(tasks)
      self._process(key, tasks)

  def _process(self, key, tasks: list[_Task]) -> None:
    try:
      self._run_batch(key, tasks)
    except ServingError as e:
      if len(tasks) > 1 and e.code in _INPUT_CODES:   # whose rows? each runs alone
        for task in tasks:
          self._process(key, [task])
        return
      for task in tasks:
        task.error = e
    except Exception as e:  # never leave a caller waiting
      for task in tasks:
        task.error = ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
    for task in tasks:
      task.done.set()

  def _run_batch(self, key, tasks: list[_Task]) -> None:
    """Runs tasks as one batch and gives each its rows; raises ServingError."""
    signature, _, outputs, _ = key
    inputs, total, padded = self._merge(tasks)
    if self._on_batch:
      self._on_batch(padded)
    result = self._run(signature, inputs, outputs)
    start = 0
    for name, value in result.items():
      if value.ndim == 0 or value.shape[0] != padded:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "Batched output tensor's 0th dimension does not equal the sum of the 0th "
            f"dimension sizes of the input tensors (output {name}: "
            f"{value.shape[0] if value.ndim else 'a scalar'}, batch {padded}); signature "
            f"{signature} cannot be batched")
    for task in tasks:
      task.result = {k: v[start:start + task.size] for k, v in result.items()}
      start += task.size

  def _merge(self, tasks: list[_Task]):
    total = sum(t.size for t in tasks)
    padded = next((b for b in self.options.allowed_batch_sizes if b >= total), total)
    merged = {}
    for name in tasks[0].inputs:
      parts = [t.inputs[name] for t in tasks]
      tail = max(p.shape[1:] for p in parts)
      if any(p.shape[1:] != tail for p in parts):
        if not self.options.pad_variable_length_inputs:
          raise ServingError(
              grpc.StatusCode.FAILED_PRECONDITION,
              f"Tensors with name '{name}' from different tasks have different shapes and "
              "padding is turned off. Set pad_variable_length_inputs to true, or ensure that "
              "all tensors with the same name have equal dimensions starting with the first "
              "dim.")
        tail = tuple(max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim))
        parts = [_pad_to(p, tail) for p in parts]
      value = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
      if padded > total:  # extra rows copy the last task's first row, as TF Serving pads
        filler = parts[-1][:1]
        value = np.concatenate([value, np.repeat(filler, padded - total, axis=0)], axis=0)
      merged[name] = value
    return merged, total, padded


def _pad_to(value: np.ndarray, tail: tuple) -> np.ndarray:
  """Pads dimensions 1.. of `value` up to `tail` with the tensor's first element."""
  if value.shape[1:] == tail:
    return value
  widths = [(0, 0)] + [(0, t - s) for s, t in zip(value.shape[1:], tail)]
  fill = value.flat[0] if value.size else (b"" if value.dtype == object else 0)
  if value.dtype == object:
    out = np.full((value.shape[0],) + tail, fill, dtype=object)
    out[tuple(slice(0, s) for s in value.shape)] = value
    return out
  return np.pad(value, widths, constant_values=fill)
