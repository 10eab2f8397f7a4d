"""The serving case's measurements: one request's latency in process and
through gRPC, and 32 clients' throughput without and with batching."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.harness import median_ms


def serving_results(*, layers: int, hidden: int, heads: int, repeats: int,
                    requests_per_client: int, quick: bool) -> dict:
  """gRPC overhead over an in-process call, and batching's throughput gain, for a
  random XLM-R of `layers` x `hidden` (and, unless quick, the tiny demo one)."""
  from tfhub_models import demo, export

  base_config = dataclasses.replace(demo.TINY, num_layers=layers, hidden_dim=hidden,
                                    num_heads=heads, intermediate_dim=4 * hidden)
  text = "The capital of France is <mask>."
  clients, per_client = 32, requests_per_client
  results = {"model": f"XLM-RoBERTa {layers}x{hidden}", "clients": clients,
             "requests_per_client": per_client, "latency_ms": {}}
  with tempfile.TemporaryDirectory() as scratch:
    models = {}
    for name, config, sizes in ((("tiny", demo.TINY, (1,)),) if not quick else ()) + (
        ("base", base_config, (1,) if quick else (1, 2, 4, 8, 16, 32)),):
      task = demo.random_model("xlm_roberta_base_multi", "fill_mask", config=config,
                               sequence_length=32 if quick else 64)
      models[name] = export.export(task, os.path.join(scratch, name), "xlmr",
                                   options=export.ExportOptions(top_k=5,
                                                                warmup_batch_sizes=sizes))
      del task
      # (1) Latency of one small request: in process, then through gRPC.
      results["latency_ms"][name] = _latency(models[name], text, repeats * 10,
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
