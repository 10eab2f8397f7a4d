#!/usr/bin/env python
"""Checks that an export runs the way TF Serving runs it.

  python scripts/check_serving.py BASE/NAME/VERSION [--json]

In this process only `tensorflow` and `tensorflow_text` are imported (TF
Serving links the tensorflow-text ops), plus the plain protobuf messages of
`tensorflow_serving.apis` to read the warmup file; nothing of this project.
The SavedModel is loaded through the TF1 session loader, which is what TF
Serving's C++ loader corresponds to: only the signature graphs run, no Python
objects.  Every signature is run on the warmup requests.  The check fails if
an op in the graph is neither a core TensorFlow op nor a tensorflow-text op,
if an op needs Python (py_function), if a signature has no warmup request,
or if any request fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import op_def_pb2  # noqa: E402
from tensorflow.python.client import pywrap_tf_session  # noqa: E402

PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def registered_ops() -> set:
  """Names of every op registered in this process's TensorFlow runtime."""
  buffer = pywrap_tf_session.TF_GetAllOpList()
  try:
    ops = op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetBuffer(buffer))
  finally:
    pywrap_tf_session.TF_DeleteBuffer(buffer)
  return {op.name for op in ops.op}


tf.get_logger().setLevel("ERROR")
CORE_OPS = registered_ops()
import tensorflow_text  # noqa: E402,F401  (registers the tensorflow-text ops)

TEXT_OPS = registered_ops() - CORE_OPS


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


def read_warmup(path: str) -> list:
  from tensorflow_serving.apis import prediction_log_pb2
  if not os.path.exists(path):
    return []
  logs = []
  for record in tf.compat.v1.io.tf_record_iterator(path):
    logs.append(prediction_log_pb2.PredictionLog.FromString(record))
  return logs


def check(export_dir: str) -> dict:
  report = {"export": export_dir, "problems": [], "requests": []}
  problems = report["problems"]
  graph = tf.Graph()
  with tf.compat.v1.Session(graph=graph) as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
    ops, _, xla = graph_ops(meta)
    report["xla"] = xla
    report["tensorflow_text_ops"] = sorted(ops & TEXT_OPS)
    unknown = sorted(ops - CORE_OPS - TEXT_OPS)
    if unknown:
      problems.append(f"ops that are neither core TensorFlow nor tensorflow-text: {unknown}")
    python = sorted(ops & PYTHON_OPS)
    if python:
      problems.append(f"ops that need a Python interpreter (TF Serving has none): {python}")
    signatures = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}
    report["signatures"] = sorted(signatures)
    logs = read_warmup(os.path.join(export_dir, "assets.extra", "tf_serving_warmup_requests"))
    if not logs:
      problems.append("no warmup requests in assets.extra/tf_serving_warmup_requests")
    covered = set()
    for number, log in enumerate(logs):
      if log.WhichOneof("log_type") != "predict_log":
        problems.append(f"warmup record {number}: {log.WhichOneof('log_type')} is not checked")
        continue
      request = log.predict_log.request
      name = request.model_spec.signature_name or "serving_default"
      if name not in signatures:
        problems.append(f"warmup record {number}: no signature {name!r}")
        continue
      signature = signatures[name]
      covered.add(name)
      missing = set(signature.inputs) - set(request.inputs)
      if missing:
        problems.append(f"warmup record {number} ({name}): missing inputs {sorted(missing)}")
        continue
      feed = {signature.inputs[k].name: tf.make_ndarray(v) for k, v in request.inputs.items()}
      fetch = {k: v.name for k, v in signature.outputs.items()}
      try:
        outputs = session.run(fetch, feed_dict=feed)
      except Exception as e:  # report every failing request, not just the first
        problems.append(f"warmup record {number} ({name}) failed: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}")
        continue
      report["requests"].append(
          {"signature": name, "outputs": {k: list(v.shape) for k, v in outputs.items()}})
    for name in sorted(set(signatures) - covered):
      problems.append(f"signature {name!r} has no warmup request, so it was not run")
  return report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("export_dir", help="BASE/NAME/VERSION written by scripts/export.py")
  parser.add_argument("--json", action="store_true", help="print the report as JSON")
  args = parser.parse_args(argv)
  if not os.path.isfile(os.path.join(args.export_dir, "saved_model.pb")):
    print(f"error: {args.export_dir} is not a SavedModel directory (no saved_model.pb)",
          file=sys.stderr)
    return 2
  try:
    report = check(args.export_dir)
  except Exception as e:
    print(f"error: could not load {args.export_dir} through the session loader: "
          f"{type(e).__name__}: {e}", file=sys.stderr)
    return 1
  if args.json:
    print(json.dumps(report, indent=2))
  else:
    print(f"{args.export_dir}: signatures {', '.join(report['signatures'])}; "
          f"{len(report['requests'])} warmup requests ran; "
          f"tensorflow-text ops: {', '.join(report['tensorflow_text_ops']) or 'none'}; "
          f"XLA: {'yes (start TF Serving with --xla_cpu_compilation_enabled=true or --xla_gpu_compilation_enabled=true)' if report['xla'] else 'no'}")
    for problem in report["problems"]:
      print(f"FAIL: {problem}")
    print("OK" if not report["problems"] else "FAILED")
  return 0 if not report["problems"] else 1


if __name__ == "__main__":
  sys.exit(main())
