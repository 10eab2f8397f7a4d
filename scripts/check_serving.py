#!/usr/bin/env python
"""Checks that an export runs the way TF Serving runs it.

  python scripts/check_serving.py BASE/NAME/VERSION [--json]

Two loaders, each in its own process, run every signature on the export's warmup
requests (assets.extra/tf_serving_warmup_requests):

- **TF Serving's**: a child process loads the export through TensorFlow's C API
  (`TF_LoadSessionFromSavedModel`, the C++ `LoadSavedModel` that TF Serving's
  SavedModelBundle calls, reached with ctypes: `serving/c_api.py`), its only op
  libraries TensorFlow's and tensorflow-text's (`TF_LoadLibrary`; tensorflow_text
  is never imported in Python there), and runs the requests first with XLA
  disabled, as `tensorflow_model_server` runs without
  --xla_cpu_compilation_enabled=true, then with XLA enabled.
- **Python's** TF1 session loader, in this process, whose outputs the C API's must
  equal.

Per signature it reports whether it runs under stock flags or which flag it
needs, named literally.  Needing the flag is not a failure.  The check fails (exit
1) if an op is neither core TensorFlow nor tensorflow-text, or needs Python, if a
signature has no warmup request, if a request fails with the flag it needs (or,
in an export without XLA, with XLA disabled), if the two loaders' outputs differ,
or if the export does not load; a crash of the C API child is reported, not
shared.  Exit 2: not a SavedModel directory.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session

from serving import contract

PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
XLA_FLAG, XLA_GPU_FLAG = contract.XLA_CPU_FLAG, contract.XLA_GPU_FLAG
XLA_DISABLED = contract.XLA_DISABLED
TPU_ALIAS = contract.TPU_FUNCTION_ALIAS
WARMUP = contract.WARMUP_PATH
CHILD_TIMEOUT_S = 1800
# Float outputs of the two loaders: the same graph and kernels, so equal but for
# the order of threaded float sums.
RTOL, ATOL = 1e-5, 1e-6


def registered_ops() -> set:
  """Names of every op registered in this process's TensorFlow runtime."""
  buffer = pywrap_tf_session.TF_GetAllOpList()
  try:
    ops = op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetBuffer(buffer))
  finally:
    pywrap_tf_session.TF_DeleteBuffer(buffer)
  return {op.name for op in ops.op}


@functools.cache
def op_sets() -> tuple[set, set]:
  """(core TensorFlow ops, tensorflow-text ops): the registry before and after
  tensorflow_text registers its ops (the first call must come before anything in
  this process imports tensorflow_text)."""
  core = registered_ops()
  import tensorflow_text  # registers the ops the exports use
  return core, registered_ops() - core


def graph_ops(meta_graph) -> tuple[set, set, bool]:
  """(op types, function names, uses XLA) of a MetaGraphDef."""
  functions = {f.signature.name for f in meta_graph.graph_def.library.function}
  ops, xla = set(), False
  nodes = list(meta_graph.graph_def.node)
  for function in meta_graph.graph_def.library.function:
    nodes.extend(function.node_def)
    if function.attr.get("_XlaMustCompile") and function.attr["_XlaMustCompile"].b:
      xla = True
  for node in nodes:
    ops.add(node.op)
    if "_XlaMustCompile" in node.attr and node.attr["_XlaMustCompile"].b:
      xla = True
  return ops - functions, functions, xla


def _types(node, args) -> list:
  """The dtypes of an op's input or output args, resolved through the node's attrs."""
  types = []
  for arg in args:
    if arg.type:
      types.append(arg.type)
    elif arg.type_attr and arg.type_attr in node.attr:
      types.append(node.attr[arg.type_attr].type)
    elif arg.type_list_attr and arg.type_list_attr in node.attr:
      types.extend(node.attr[arg.type_list_attr].list.type)
  return types


def walk(library, name: str):
  """(function, node) for every node of function `name` of a FunctionDefLibrary and of
  every function it calls (through call ops, function attrs, loop bodies, branches)."""
  functions = {f.signature.name: f for f in library.function}
  seen, pending = set(), [name]
  while pending:
    function = functions.get(pending.pop())
    if function is None or function.signature.name in seen:
      continue
    seen.add(function.signature.name)
    for node in function.node_def:
      for attr in node.attr.values():
        pending.extend(f.name for f in ([attr.func] if attr.HasField("func")
                                        else attr.list.func))
      if node.op in functions:
        pending.append(node.op)
      yield function, node


def string_ops(library, name: str) -> list[str]:
  """The string ops in function `name` and in every function it calls: nodes with a
  DT_STRING input, output or attribute (a string constant, an assert's message), and
  string arguments of the functions themselves."""
  from tensorflow.core.framework import types_pb2
  from tensorflow.python.framework import op_def_registry
  found, arguments_seen = [], set()
  functions = {f.signature.name for f in library.function}
  for function, node in walk(library, name):
    where = function.signature.name
    if where not in arguments_seen:
      arguments_seen.add(where)
      found.extend(f"{where}: argument {arg.name} (string argument)"
                   for arg in list(function.signature.input_arg) + list(
                       function.signature.output_arg) if arg.type == types_pb2.DT_STRING)
    if node.op in functions:
      continue
    strings = any(a.type == types_pb2.DT_STRING or a.tensor.dtype == types_pb2.DT_STRING
                  or types_pb2.DT_STRING in a.list.type for a in node.attr.values())
    op_def = op_def_registry.get(node.op)
    if op_def is not None:
      strings = strings or types_pb2.DT_STRING in (_types(node, op_def.input_arg)
                                                   + _types(node, op_def.output_arg))
    if strings:
      found.append(f"{where}: {node.name} ({node.op})")
  return found


def tpu_functions(meta_graph) -> dict:
  """{function name: its string ops} for the functions aliased tpu_func."""
  return {name: string_ops(meta_graph.graph_def.library, name)
          for name, alias in meta_graph.meta_info_def.function_aliases.items()
          if alias == TPU_ALIAS}


def contract_problems(signatures: dict) -> tuple:
  """(the task of serving/contract.py whose outputs serving_default's most
  resemble, or None when it shares none with any: not a tfhub-models export;
  problems): every signature of that task's contract, with its inputs
  (text_pair beside text when the export takes pairs) and outputs, dtypes
  included; nothing else but ELECTRA's "embedding"."""
  def names(tensors):
    return {k: tf.as_dtype(v.dtype).name for k, v in tensors.items()}

  default = signatures.get(contract.DEFAULT_SIGNATURE)
  if default is None:
    return None, []
  shared = {task: len(set(s[contract.DEFAULT_SIGNATURE][1]) & set(default.outputs))
            for task, s in contract.SIGNATURES.items()}
  task = max(shared, key=shared.get)
  if not shared[task]:
    return None, []
  problems = []
  promised = dict(contract.SIGNATURES[task])
  extra_name, extra = contract.EMBEDDING_SIGNATURE
  if extra_name in signatures:
    promised[extra_name] = extra
  for name in sorted(set(signatures) - set(promised)):
    problems.append(f"signature {name!r} is not in the {task} contract")
  for name, (inputs, outputs) in promised.items():
    if name not in signatures:
      problems.append(f"no signature {name!r} (the {task} contract has it)")
      continue
    got_inputs = names(signatures[name].inputs)
    if got_inputs.get("text_pair") == "string" and "text" in inputs:
      got_inputs.pop("text_pair")
    for what, got, want in (("inputs", got_inputs, inputs),
                            ("outputs", names(signatures[name].outputs), outputs)):
      if got != want:
        problems.append(f"{name} {what} {got} differ from the {task} contract's {want}")
  return task, problems


def warmup_requests(export_dir: str, signatures: dict, problems: list) -> list:
  """[(record number, signature name, {alias: array}, [output aliases])] of the
  warmup file's predict requests, reporting the ones that cannot run."""
  requests = []
  for number, log in contract.read_warmup(export_dir):
    kind = log.WhichOneof("log_type")
    if kind != "predict_log":
      problems.append(f"warmup record {number}: {kind} is not checked")
      continue
    request = log.predict_log.request
    name = request.model_spec.signature_name or "serving_default"
    if name not in signatures:
      problems.append(f"warmup record {number}: no signature {name!r}")
      continue
    missing = set(signatures[name].inputs) - set(request.inputs)
    if missing:
      problems.append(f"warmup record {number} ({name}): missing inputs {sorted(missing)}")
      continue
    requests.append((number, name, {k: tf.make_ndarray(v) for k, v in request.inputs.items()},
                     sorted(signatures[name].outputs)))
  return requests


def _first_line(error: Exception) -> str:
  text = str(getattr(error, "message", None) or error).strip()
  lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("\t", " "))]
  return lines[-1] if "Graph execution error" in text and lines else (lines or [""])[0]


# --- the C API child ---------------------------------------------------------------

def _encode(array: np.ndarray) -> str:
  return base64.b64encode(tf.make_tensor_proto(array).SerializeToString()).decode()


def _decode(text: str) -> np.ndarray:
  from tensorflow.core.framework import tensor_pb2
  return tf.make_ndarray(tensor_pb2.TensorProto.FromString(base64.b64decode(text)))


def c_api_child(export_dir: str, output: str) -> int:
  """The child's work: load through the C API, run the warmup requests with XLA
  disabled, then enabled; write the report to `output` (JSON).  Progress goes to
  stderr, so that a crash says where it happened."""
  from serving import c_api

  def phase(text):
    print(f"phase: {text}", file=sys.stderr, flush=True)

  report = {"libraries": [], "runs": {}}
  phase("loading the tensorflow-text op libraries with TF_LoadLibrary")
  report["libraries"] = [os.path.basename(p) for p in c_api.load_tensorflow_text_ops()]
  c_api.set_xla_compilation(False)
  phase("loading the export with TF_LoadSessionFromSavedModel")
  try:
    session = c_api.Session(export_dir, tags=("serve",))
  except c_api.CApiError as e:
    report["load_error"] = _first_line(e)
    with open(output, "w") as f:
      json.dump(report, f)
    return 0
  signatures = {k: v for k, v in session.meta_graph.signature_def.items()
                if not k.startswith("__")}
  requests = warmup_requests(export_dir, signatures, [])
  for mode in ("disabled", "enabled"):
    c_api.set_xla_compilation(mode == "enabled")
    needs_flag, runs = set(), []
    for number, name, inputs, outputs in requests:
      if name in needs_flag:  # its first request already showed it needs the flag
        continue
      phase(f"XLA {mode}: warmup record {number} ({name})")
      signature = signatures[name]
      try:
        values = session.run({signature.inputs[k].name: v for k, v in inputs.items()},
                             [signature.outputs[k].name for k in outputs])
      except c_api.CApiError as e:
        message = _first_line(e)
        if XLA_DISABLED in e.message:
          needs_flag.add(name)
        runs.append({"record": number, "signature": name, "error": message,
                     "xla_disabled": XLA_DISABLED in e.message})
        continue
      runs.append({"record": number, "signature": name,
                   "outputs": {k: _encode(v) for k, v in zip(outputs, values)}})
    report["runs"][mode] = runs
  session.close()
  phase("done")
  with open(output, "w") as f:
    json.dump(report, f)
  return 0


class CApiChild:
  """`check_serving.py --c-api-child EXPORT REPORT` started now; `result()` waits."""

  def __init__(self, export_dir: str):
    self.directory = tempfile.TemporaryDirectory(prefix="check-serving-")
    self.output = os.path.join(self.directory.name, "report.json")
    self.stderr = open(os.path.join(self.directory.name, "stderr"), "w+")
    self.process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--c-api-child", export_dir, self.output],
        stdout=subprocess.DEVNULL, stderr=self.stderr,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")))

  def result(self) -> dict:
    """The child's report; raises RuntimeError naming what it was doing if it died."""
    try:
      code = self.process.wait(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()
      code = None
    self.stderr.seek(0)
    log = self.stderr.read()
    self.stderr.close()
    phases = [line[len("phase: "):] for line in log.splitlines() if line.startswith("phase: ")]
    where = phases[-1] if phases else "starting"
    try:
      if code is None:
        raise RuntimeError(f"the C API process did not finish in {CHILD_TIMEOUT_S} s "
                           f"(while {where})")
      if code != 0 or not os.path.exists(self.output):
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0
               else f"exited with code {code}")
        detail = [line for line in log.splitlines()
                  if line.strip() and not line.startswith("phase: ")]
        raise RuntimeError(f"the C API process {how} while {where}"
                           + (f": {detail[-1].strip()}" if detail else ""))
      with open(self.output) as f:
        return json.load(f)
    finally:
      self.directory.cleanup()


# --- comparing and reporting -----------------------------------------------------------

def differences(ours: dict, theirs: dict) -> list[str]:
  """Outputs of one request that differ between the loaders, described."""
  found = []
  for key in sorted(set(ours) | set(theirs)):
    if key not in ours or key not in theirs:
      found.append(f"{key} is missing from one loader's outputs")
      continue
    a, b = np.asarray(ours[key]), np.asarray(theirs[key])
    if a.shape != b.shape or a.dtype != b.dtype:
      found.append(f"{key}: {a.dtype}{list(a.shape)} against {b.dtype}{list(b.shape)}")
    elif a.dtype.kind == "f" or a.dtype == tf.bfloat16.as_numpy_dtype:
      a32, b32 = a.astype(np.float32), b.astype(np.float32)
      if not np.allclose(a32, b32, rtol=RTOL, atol=ATOL, equal_nan=True):
        found.append(f"{key}: differs by up to {np.nanmax(np.abs(a32 - b32)):.3g}")
    elif not np.array_equal(a, b):
      found.append(f"{key}: {int(np.sum(a != b))} of {a.size} values differ")
  return found


def signature_flags(report: dict, c_report: dict, python_outputs: dict, names) -> dict:
  """{signature: {"stock_flags", "needs", "requests", "errors"}} from the child's runs,
  adding a problem to `report` for whatever would not run on TF Serving."""
  problems = report["problems"]
  disabled = c_report["runs"].get("disabled", [])
  enabled = c_report["runs"].get("enabled", [])
  flags = {}
  for name in names:
    runs_off = [r for r in disabled if r["signature"] == name]
    runs_on = [r for r in enabled if r["signature"] == name]
    if not runs_on:
      continue
    needs = any(r.get("xla_disabled") for r in runs_off)
    flags[name] = {"stock_flags": not needs and all("error" not in r for r in runs_off),
                   "needs": XLA_FLAG if needs else None, "requests": len(runs_on)}
    if needs and not report["xla"]:
      problems.append(f"signature {name!r} fails with XLA disabled although the export has "
                      "no XLA function")
    for run in runs_off:
      if "error" in run and not run.get("xla_disabled"):
        problems.append(f"C API, XLA disabled: warmup record {run['record']} ({name}) "
                        f"failed: {run['error']}")
    for run in runs_on:
      if "error" in run:
        problems.append(f"C API{', with ' + XLA_FLAG if needs else ''}: warmup record "
                        f"{run['record']} ({name}) failed: {run['error']}")
    for run in runs_off + runs_on:
      if "outputs" in run and run["record"] in python_outputs:
        c_outputs = {k: _decode(v) for k, v in run["outputs"].items()}
        for difference in differences(c_outputs, python_outputs[run["record"]]):
          problems.append(f"warmup record {run['record']} ({name}): the C API and the Python "
                          f"loader differ: {difference}")
  return flags


def check(export_dir: str) -> dict:
  """The whole check: the C API child runs while this process runs the Python loader."""
  child = CApiChild(export_dir)
  try:
    core_ops, text_ops = op_sets()
    report = {"export": export_dir, "problems": [], "requests": [],
              "loaded_through": ["C API: TF_LoadSessionFromSavedModel (as tensorflow_model_server)",
                                 "Python: the TF1 session loader"]}
    python_error = None
    try:
      python_outputs = _python_run(export_dir, report, core_ops, text_ops)
    except Exception as e:  # the C API's account of a bad export comes first
      python_error, python_outputs = e, {}
    c_report = child.result()
  finally:
    if child.process.poll() is None:
      child.process.kill()
  if "load_error" in c_report:
    raise LoadError(f"TF_LoadSessionFromSavedModel (TF Serving's loader) failed: "
                    f"{_explain(c_report['load_error'])}")
  if python_error is not None:
    raise LoadError(f"the Python session loader failed where the C API loaded it: "
                    f"{type(python_error).__name__}: {_first_line(python_error)}")
  report["c_api"] = {"op_libraries": c_report["libraries"],
                     "runs_with_xla_disabled": len(c_report["runs"].get("disabled", [])),
                     "runs_with_xla_enabled": len(c_report["runs"].get("enabled", []))}
  report["signature_flags"] = signature_flags(report, c_report, python_outputs,
                                              report["signatures"])
  return report


class LoadError(RuntimeError):
  """The export does not load: one line for the user."""


def _explain(message: str) -> str:
  """TensorFlow's load error, said shortly where it means an op library we do not ship."""
  unregistered = re.search(r"Op type not registered '([^']+)'", message)
  if unregistered:
    return (f"the export uses the op {unregistered.group(1)!r}, which neither TensorFlow "
            "nor tensorflow-text registers: it needs an op library that TF Serving does "
            "not link")
  return message


def _python_run(export_dir: str, report: dict, core_ops: set, text_ops: set) -> dict:
  """The Python TF1 session loader's part: op checks, then every warmup request;
  returns {record number: {alias: array}}."""
  problems = report["problems"]
  outputs = {}
  graph = tf.Graph()
  with tf.compat.v1.Session(graph=graph) as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
    ops, _, xla = graph_ops(meta)
    report["xla"] = xla
    tpu = tpu_functions(meta)
    report["tpu_func"] = sorted(tpu)
    for name, found in tpu.items():
      if found:
        kinds = sorted({entry.rsplit("(", 1)[-1].rstrip(")") for entry in found})
        problems.append(f"the {TPU_ALIAS} function {name} has {len(found)} string ops, which "
                        f"a TPU cannot run ({', '.join(kinds)}): {', '.join(found[:3])}"
                        f"{' ...' if len(found) > 3 else ''}")
    report["tensorflow_text_ops"] = sorted(ops & text_ops)
    unknown = sorted(ops - core_ops - text_ops)
    if unknown:
      problems.append(f"ops that are neither core TensorFlow nor tensorflow-text: {unknown}")
    python = sorted(ops & PYTHON_OPS)
    if python:
      problems.append(f"ops that need a Python interpreter (TF Serving has none): {python}")
    signatures = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}
    report["signatures"] = sorted(signatures)
    report["task"], broken = contract_problems(signatures)
    problems.extend(broken)
    requests = warmup_requests(export_dir, signatures, problems)
    if not requests and not any("warmup record" in p for p in problems):
      problems.append(f"no warmup requests in {WARMUP}")
    for number, name, inputs, aliases in requests:
      signature = signatures[name]
      feed = {signature.inputs[k].name: v for k, v in inputs.items()}
      try:
        values = session.run({k: signature.outputs[k].name for k in aliases}, feed_dict=feed)
      except Exception as e:  # report every failing request, not just the first
        problems.append(f"warmup record {number} ({name}) failed in the Python loader: "
                        f"{type(e).__name__}: {_first_line(e)}")
        continue
      outputs[number] = values
      report["requests"].append(
          {"signature": name, "outputs": {k: list(v.shape) for k, v in values.items()}})
    for name in sorted(set(signatures) - {r[1] for r in requests}):
      problems.append(f"signature {name!r} has no warmup request, so it was not run")
  return outputs


def print_report(report: dict) -> None:
  xla = (f"yes (start TF Serving with {XLA_FLAG} or {XLA_GPU_FLAG})" if report["xla"]
         else "no")
  print(f"{report['export']}: signatures {', '.join(report['signatures'])}; "
        f"{len(report['requests'])} warmup requests ran; "
        f"tensorflow-text ops: {', '.join(report['tensorflow_text_ops']) or 'none'}; XLA: {xla}")
  print("loaded through the C API (TF_LoadSessionFromSavedModel, the C++ loader "
        "tensorflow_model_server uses; op libraries: TensorFlow's and tensorflow-text's), "
        "run with XLA disabled and then enabled; outputs compared with the Python loader's")
  print(f"contract: the {report['task']} signatures of serving/contract.py, names and dtypes"
        if report.get("task") else "contract: none (no tfhub-models task's outputs)")
  print(f"TPU: {len(report['tpu_func'])} function{'s' if len(report['tpu_func']) != 1 else ''} "
        f"aliased {TPU_ALIAS}, without string ops" if report["tpu_func"] else
        f"TPU: no function aliased {TPU_ALIAS} (Cloud TPU's Inference Converter needs one)")
  for name, flags in report["signature_flags"].items():
    requests = f"{flags['requests']} warmup request{'s' if flags['requests'] != 1 else ''}"
    if flags["stock_flags"]:
      print(f"  {name}: runs under stock flags (XLA disabled), {requests}")
    elif flags["needs"]:
      print(f"  {name}: needs {flags['needs']} (with XLA disabled it fails: "
            f"{XLA_DISABLED}); runs with it, {requests}")
    else:
      print(f"  {name}: does not run under stock flags")
  for problem in report["problems"]:
    print(f"FAIL: {problem}")
  print("OK" if not report["problems"] else "FAILED")


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["--c-api-child"]:   # the child this script starts (CApiChild)
    return c_api_child(*argv[1:3])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("export_dir", help="BASE/NAME/VERSION written by scripts/export.py")
  parser.add_argument("--json", action="store_true", help="print the report as JSON")
  args = parser.parse_args(argv)
  if not os.path.isfile(os.path.join(args.export_dir, "saved_model.pb")):
    print(f"error: {args.export_dir} is not a SavedModel directory (no saved_model.pb)",
          file=sys.stderr)
    return 2
  tf.get_logger().setLevel("ERROR")
  try:
    report = check(args.export_dir)
  except (LoadError, RuntimeError) as e:
    print(f"error: {args.export_dir}: {e}", file=sys.stderr)
    return 1
  if args.json:
    print(json.dumps(report, indent=2))
  else:
    print_report(report)
  return 0 if not report["problems"] else 1


if __name__ == "__main__":
  sys.exit(main())
