"""The batcher in process, on a fake signature: merging, padding, limits, errors."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import numpy as np
import pytest

from servers import wait_until
from serving import protos
from serving.batching import Batcher, BatchingOptions
from serving.errors import ServingError


class FakeSignature:
  """Doubles its input; records the batches it ran."""

  def __init__(self, gate: threading.Event | None = None):
    self.batches = []
    self.gate = gate
    self.lock = threading.Lock()

  def __call__(self, signature_name, inputs, outputs):
    if self.gate is not None:
      self.gate.wait(30)
    with self.lock:
      self.batches.append({k: v.copy() for k, v in inputs.items()})
    x = inputs["x"]
    return {"y": x * 2, "rows": np.arange(x.shape[0])}


def run_concurrently(batcher, tasks, outputs=("rows", "y")):
  with futures.ThreadPoolExecutor(len(tasks)) as pool:
    calls = [pool.submit(batcher.run, "serving_default", {"x": t}, outputs) for t in tasks]
    return [c.result(timeout=60) for c in calls]


def test_concurrent_requests_are_merged_and_split_back():
  fake = FakeSignature()
  batcher = Batcher(fake, BatchingOptions(max_batch_size=32, batch_timeout_micros=200_000,
                                          num_batch_threads=1))
  tasks = [np.full([n, 3], i, np.float32) for i, n in enumerate([1, 2, 3, 1, 2, 1])]
  results = run_concurrently(batcher, tasks)
  batcher.stop()
  assert len(fake.batches) < len(tasks)  # merged
  assert sum(b["x"].shape[0] for b in fake.batches) == sum(t.shape[0] for t in tasks)
  for task, result in zip(tasks, results):
    np.testing.assert_array_equal(result["y"], task * 2)
    assert result["rows"].shape == (task.shape[0],)


def test_batches_are_padded_to_an_allowed_size_with_the_last_tasks_first_row():
  fake = FakeSignature()
  batcher = Batcher(fake, BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000,
                                          num_batch_threads=1, allowed_batch_sizes=(4, 8)))
  result = batcher.run("serving_default", {"x": np.array([[1.0], [2.0], [3.0]])}, ("y",))
  batcher.stop()
  assert [b["x"].shape[0] for b in fake.batches] == [4]
  np.testing.assert_array_equal(fake.batches[0]["x"][:, 0], [1, 2, 3, 1])
  np.testing.assert_array_equal(result["y"][:, 0], [2, 4, 6])  # the padding row is dropped


def test_a_task_larger_than_max_batch_size_is_invalid():
  batcher = Batcher(FakeSignature(), BatchingOptions(max_batch_size=4, num_batch_threads=1))
  with pytest.raises(ServingError) as error:
    batcher.run("serving_default", {"x": np.zeros([5, 1])}, ("y",))
  batcher.stop()
  assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert "Task size 5 is larger than maximum input batch size 4" in error.value.message


def test_a_full_queue_answers_unavailable_and_the_batcher_recovers():
  gate = threading.Event()
  fake = FakeSignature(gate)
  batcher = Batcher(fake, BatchingOptions(max_batch_size=1, max_enqueued_batches=1,
                                          num_batch_threads=1))
  pool = futures.ThreadPoolExecutor(2)
  running = pool.submit(batcher.run, "s", {"x": np.ones([1, 1])}, ("y",))  # on the worker
  wait_until(lambda: batcher._queues and not any(q.batches for q in batcher._queues.values()),
             10, "the worker to take the first task")
  waiting = pool.submit(batcher.run, "s", {"x": np.ones([1, 1])}, ("y",))  # fills the queue
  wait_until(lambda: any(q.batches for q in batcher._queues.values()), 10,
             "the second task to queue")
  with pytest.raises(ServingError) as error:
    batcher.run("s", {"x": np.ones([1, 1])}, ("y",))
  assert error.value.code == grpc.StatusCode.UNAVAILABLE
  assert "queue" in error.value.message and "max_enqueued_batches is 1" in error.value.message
  gate.set()
  assert running.result(30)["y"][0, 0] == 2 and waiting.result(30)["y"][0, 0] == 2
  assert batcher.run("s", {"x": np.ones([1, 1])}, ("y",))["y"][0, 0] == 2
  batcher.stop()
  pool.shutdown()


def test_variable_lengths_batch_apart_unless_padded():
  """Without pad_variable_length_inputs, requests of other shapes wait in their own
  batches (both answered; before, both failed with FAILED_PRECONDITION); with it,
  they are padded into one."""
  tasks = [np.array([[1, 2]], np.int32), np.array([[3, 4, 5]], np.int32)]
  options = dict(max_batch_size=8, batch_timeout_micros=300_000, num_batch_threads=1)
  fake = FakeSignature()
  batcher = Batcher(fake, BatchingOptions(**options))
  results = run_concurrently(batcher, tasks, ("y",))
  batcher.stop()
  assert sorted(b["x"].shape for b in fake.batches) == [(1, 2), (1, 3)]
  for task, result in zip(tasks, results):
    np.testing.assert_array_equal(result["y"], task * 2)

  fake = FakeSignature()
  batcher = Batcher(fake, BatchingOptions(pad_variable_length_inputs=True, **options))
  results = run_concurrently(batcher, tasks, ("y",))
  batcher.stop()
  assert len(fake.batches) == 1
  # Padded at the end of dimension 1 with the tensor's first element, as TF Serving does.
  np.testing.assert_array_equal(fake.batches[0]["x"], [[1, 2, 1], [3, 4, 5]])
  np.testing.assert_array_equal(results[0]["y"], [[2, 4, 2]])


def test_outputs_that_are_not_per_row_fail_every_task_of_the_batch():
  def not_per_row(signature_name, inputs, outputs):
    return {"total": np.array([inputs["x"].sum()])}

  batcher = Batcher(not_per_row, BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000,
                                                 num_batch_threads=1))
  with pytest.raises(ServingError) as error:
    run_concurrently(batcher, [np.ones([1]), np.ones([2])], ("total",))
  batcher.stop()
  assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
  assert "0th dimension" in error.value.message


def test_an_error_in_the_signature_reaches_every_caller_and_work_goes_on():
  calls = []

  def flaky(signature_name, inputs, outputs):
    calls.append(inputs["x"].shape[0])
    if len(calls) == 1:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "bad row")
    return {"y": inputs["x"]}

  batcher = Batcher(flaky, BatchingOptions(max_batch_size=8, batch_timeout_micros=100_000,
                                           num_batch_threads=1))
  with pytest.raises(ServingError, match="bad row"):
    batcher.run("s", {"x": np.ones([2])}, ("y",))
  assert batcher.run("s", {"x": np.ones([3])}, ("y",))["y"].shape == (3,)
  batcher.stop()


def test_inputs_of_one_task_must_share_the_batch_dimension():
  batcher = Batcher(FakeSignature(), BatchingOptions(num_batch_threads=1))
  with pytest.raises(ServingError, match="equal 0th-dimension size"):
    batcher.run("s", {"x": np.ones([2]), "z": np.ones([3])}, ("y",))
  batcher.stop()


def test_options_from_a_batching_parameters_file(tmp_path):
  path = tmp_path / "batching.config"
  path.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 500 }\n"
                  "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\n"
                  "pad_variable_length_inputs: true\n")
  options = BatchingOptions.from_proto(protos.parse_text(protos.BatchingParameters, path))
  assert (options.max_batch_size, options.batch_timeout_micros, options.allowed_batch_sizes,
          options.pad_variable_length_inputs) == (16, 500, (8, 16), True)
  # Unset fields take TF Serving's defaults.
  assert options.max_enqueued_batches == 10 and options.num_batch_threads >= 1
  defaults = BatchingOptions.from_proto(protos.BatchingParameters())
  assert defaults.max_batch_size == 1000 and defaults.batch_timeout_micros == 0

  for text, words in (("max_batch_size { value: 8 } allowed_batch_sizes: 4", "must match"),
                      ("max_batch_size { value: 8 } allowed_batch_sizes: 8 "
                       "allowed_batch_sizes: 8", "increasing"),
                      ("num_batch_threads { value: 0 }", "num_batch_threads")):
    path.write_text(text)
    with pytest.raises(ValueError, match=words):
      BatchingOptions.from_proto(protos.parse_text(protos.BatchingParameters, path))
  path.write_text("max_batch_size: 8")  # a wrapper message, not a number
  with pytest.raises(protos.ConfigError, match="batching.config"):
    protos.parse_text(protos.BatchingParameters, path)


def test_a_bad_request_merged_with_good_ones_fails_alone():
  """One client's bad row fails that client only, with an error about its own
  input; the requests merged with it are answered (each runs again alone)."""
  def checking(signature_name, inputs, outputs):
    x = inputs["x"]
    if (x < 0).any():
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"x must not be negative, got {x[x < 0].tolist()}")
    return {"y": x * 2}

  batcher = Batcher(checking, BatchingOptions(max_batch_size=16, batch_timeout_micros=300_000,
                                              num_batch_threads=1))
  tasks = [np.array([1.0, 2.0]), np.array([-7.0]), np.array([3.0]), np.array([4.0, -9.0])]
  with futures.ThreadPoolExecutor(len(tasks)) as pool:
    calls = [pool.submit(batcher.run, "serving_default", {"x": t}, ("y",)) for t in tasks]
    futures.wait(calls, timeout=60)
  batcher.stop()
  np.testing.assert_array_equal(calls[0].result()["y"], [2.0, 4.0])
  np.testing.assert_array_equal(calls[2].result()["y"], [6.0])
  for call, own in ((calls[1], "[-7.0]"), (calls[3], "[-9.0]")):
    error = call.exception()
    assert isinstance(error, ServingError) and error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message.endswith(own), error.message      # its own values, no one else's
