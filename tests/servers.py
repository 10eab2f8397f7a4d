"""Helpers of the serving tests: server processes on loopback, waiting, comparing.

  with ServerProcess(directory, "--model_name", "m", "--model_base_path", base) as server:
    ServingClient(server.grpc, "m").fill_mask([...])
"""

from __future__ import annotations

import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
  """A TCP port free on loopback right now (for --rest_api_port, which has no 0)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class ServerProcess:
  """`python -m serving.server ARGS --port 0 --port_file ...` as a child process, waited
  for until it serves; stop() or `with` ends it.  `.grpc` and `.rest` are HOST:PORT."""

  def __init__(self, directory, *args: str, rest: bool = False, timeout: float = 600):
    self.directory = pathlib.Path(directory)
    self.directory.mkdir(parents=True, exist_ok=True)
    port_file = self.directory / "ports"
    port_file.unlink(missing_ok=True)
    self.log_path = self.directory / "server.log"
    command = [sys.executable, "-m", "serving.server", "--port", "0",
               "--port_file", str(port_file), *args]
    if rest:
      command += ["--rest_api_port", str(free_port())]
    self.log = open(self.log_path, "w")
    self.process = subprocess.Popen(
        command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                 PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                          os.environ.get("PYTHONPATH")]))))
    deadline = time.monotonic() + timeout
    while not port_file.exists():
      if self.process.poll() is not None or time.monotonic() > deadline:
        self.stop()
        raise RuntimeError(f"the server did not start:\n{self.output()[-4000:]}")
      time.sleep(0.2)
    grpc_port, rest_port = port_file.read_text().split()
    self.grpc = f"127.0.0.1:{grpc_port}"
    self.rest = f"127.0.0.1:{rest_port}" if rest else None

  def output(self) -> str:
    if not self.log.closed:
      self.log.flush()
    return self.log_path.read_text(errors="replace")

  def rss_bytes(self) -> int:
    """The server's resident memory (Linux)."""
    with open(f"/proc/{self.process.pid}/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line")

  def stop(self) -> None:
    if self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    if not self.log.closed:
      self.log.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.stop()


def wait_until(condition, timeout: float, what: str, interval: float = 0.2):
  """Polls `condition()` until it returns a truthy value, or fails naming `what`."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = condition()
    if value:
      return value
    time.sleep(interval)
  raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def assert_same_fillers(got, want, atol=1e-5):
  """Client fillers equal in-process `fill_mask` answers; ranks may swap only on ties."""
  assert len(got) == len(want)
  for got_masks, want_masks in zip(got, want):
    assert len(got_masks) == len(want_masks)
    for g, w in zip(got_masks, want_masks):
      np.testing.assert_allclose([f.score for f in g], [x["score"] for x in w], atol=atol)
      for rank, (f, x) in enumerate(zip(g, w)):
        if f.token_id != x["token_id"]:  # only a tie may reorder
          tied = [y["score"] for y in w if y["token_id"] == f.token_id]
          assert tied and abs(tied[0] - x["score"]) <= atol, (rank, f, x)
        else:
          assert f.token == x["token"]


XLA_FLAG = "--xla_cpu_compilation_enabled=true"


def assert_serving_flags(stdout: str, xla: bool) -> None:
  """check_serving's account of an export that passed: loaded through the C API; with
  XLA, serving_default (and every signature with a numeric core) fails with XLA
  disabled, the flag named, and runs with it; without, every signature runs under
  stock flags, warmup requests included; its numeric cores are aliased tpu_func."""
  assert "loaded through the C API (TF_LoadSessionFromSavedModel" in stdout, stdout
  lines = {line.split(":")[0].strip(): line for line in stdout.splitlines()
           if line.startswith("  ")}
  assert "serving_default" in lines, stdout
  needs = {k for k, line in lines.items()
           if f"needs {XLA_FLAG} (with XLA disabled it fails: XLA compilation disabled); "
              "runs with it" in line}
  stock = {k for k, line in lines.items() if "runs under stock flags (XLA disabled)" in line}
  assert needs | stock == set(lines) and not needs & stock, stdout
  if xla:
    assert "serving_default" in needs, stdout
    assert stock <= {"tokenize", "detokenize"}, stdout   # only the string signatures
  else:
    assert not needs, stdout
  assert re.search(r"^TPU: \d+ functions? aliased tpu_func, without string ops$", stdout,
                   re.M), stdout


def export_and_check(*args: str, timeout: float = 900) -> tuple:
  """Runs `scripts/export.py ARGS`, then `scripts/check_serving.py` on what it wrote;
  asserts both succeed and returns (version path, check_serving's stdout)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run([sys.executable, "scripts/export.py", *args], capture_output=True,
                        text=True, cwd=ROOT, timeout=timeout, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  version = done.stdout.strip().splitlines()[-1]
  checked = subprocess.run([sys.executable, "scripts/check_serving.py", version],
                           capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)
  assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
  return version, checked.stdout


# scripts/check_serving.py's main() on each export named in argv, in this one fresh
# process: it imports only tensorflow and tensorflow_text, as when the script runs alone,
# and the TensorFlow import is paid once for all of them.
_CHECK_SEVERAL = """
import contextlib, io, json, sys
sys.path.insert(0, "scripts")
import check_serving
results = []
for export_dir in sys.argv[1:]:
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = check_serving.main([export_dir])
  results.append([code, out.getvalue(), err.getvalue()])
print("\\nRESULTS " + json.dumps(results))
"""


class CheckServing:
  """`scripts/check_serving.py VERSION` for each of `versions`, all in one child process
  started now and run in the background; `results()` waits for it."""

  def __init__(self, *versions, timeout: float = 900):
    import tempfile
    self.versions = [str(v) for v in versions]
    self.timeout = timeout
    self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    self.process = subprocess.Popen(
        [sys.executable, "-c", _CHECK_SEVERAL, *self.versions], cwd=ROOT, stdout=self.out,
        stderr=self.err, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    self._results = None
    import atexit
    atexit.register(self.stop)       # a test that failed before results(): not left running

  def results(self) -> dict:
    """{version: (returncode, stdout, stderr)}, as each separate run would have given."""
    if self._results is None:
      try:
        self.process.wait(timeout=self.timeout)
      finally:
        self.stop()
      self.out.seek(0)
      self.err.seek(0)
      stdout, stderr = self.out.read(), self.err.read()
      lines = [line for line in stdout.splitlines() if line.startswith("RESULTS ")]
      assert self.process.returncode == 0 and lines, stdout[-2000:] + stderr[-3000:]
      import json
      self._results = {v: tuple(r) for v, r in zip(self.versions, json.loads(lines[-1][8:]))}
    return self._results

  def passed(self, version) -> str:
    """Asserts check_serving passed on `version`; returns its stdout."""
    code, stdout, stderr = self.results()[str(version)]
    assert code == 0, stdout[-2000:] + stderr[-2000:]
    return stdout

  def stop(self) -> None:
    if self.process.poll() is None:
      self.process.kill()
      self.process.wait()


_SCRIPTS = {}


def script_module(script: str):
  """scripts/SCRIPT.py imported as a module (once per session), as the tests that call its
  parts directly need it; the scripts are not a package."""
  import importlib.util
  if script not in _SCRIPTS:
    spec = importlib.util.spec_from_file_location(f"{script}_script",
                                                  ROOT / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _SCRIPTS[script] = module
  return _SCRIPTS[script]


def script_main(script: str, *args) -> tuple:
  """scripts/SCRIPT.py's main(ARGS) in this process: (exit code, stdout, stderr).  For
  runs of a command-line path that a subprocess run elsewhere already goes through.
  An argparse refusal (SystemExit) gives its exit code, 2, as on the command line."""
  import contextlib
  import io
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      code = script_module(script).main([str(a) for a in args])
    except SystemExit as e:
      code = e.code
  return code, out.getvalue(), err.getvalue()


def export_main(*args) -> tuple:
  """scripts/export.py's main(ARGS) in this process (see script_main)."""
  return script_main("export", *args)
