"""scripts/check_serving.py on what is not a good export: one clear line each, never a
crash taking the message with it; and the parts that decide what it reports."""

from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from servers import script_module


check_serving = script_module("check_serving")


def _toy(path, *, alias=None, strings_in_core=False):
  """A SavedModel y = x * v with one warmup request; `alias` names its core function."""
  module = tf.Module()
  module.v = tf.Variable(tf.ones([4]))

  def numbers(x):
    y = x * module.v
    if strings_in_core:  # a message and a string op inside the core
      tf.debugging.assert_less(tf.reduce_sum(y), 1e9, message="y must be small")
      y += tf.strings.to_number(tf.strings.as_string(y))
    return y

  module.core = tf.function(numbers)
  module.f = tf.function(lambda x: {"y": module.core(x)},
                         input_signature=[tf.TensorSpec([None, 4], tf.float32)])
  options = tf.saved_model.SaveOptions(function_aliases={alias: module.core} if alias else None)
  tf.saved_model.save(module, str(path), signatures={"serving_default": module.f},
                      options=options)
  (path / "assets.extra").mkdir()
  log = prediction_log_pb2.PredictionLog()
  log.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones([2, 4], np.float32)))
  with tf.io.TFRecordWriter(str(path / "assets.extra" / "tf_serving_warmup_requests")) as w:
    w.write(log.SerializeToString())
  return path


def _edit_saved_model(path, edit):
  saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
  edit(saved.meta_graphs[0])
  (path / "saved_model.pb").write_bytes(saved.SerializeToString())


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
  """check_serving's main() on each case, all in one child process."""
  from servers import CheckServing
  base = tmp_path_factory.mktemp("check_serving")
  cases = {"good": _toy(base / "good", alias="tpu_func"),
           "strings_in_tpu_func": _toy(base / "strings", alias="tpu_func", strings_in_core=True),
           "not_a_saved_model": base / "empty"}
  (base / "empty").mkdir()
  (base / "empty" / "variables").mkdir()

  cases["no_serve_tag"] = _toy(base / "no_serve_tag")

  def retag(meta):
    del meta.meta_info_def.tags[:]
    meta.meta_info_def.tags.append("train")
  _edit_saved_model(cases["no_serve_tag"], retag)

  cases["op_we_do_not_ship"] = _toy(base / "unknown_op")

  def rename(meta):
    for function in meta.graph_def.library.function:
      for node in function.node_def:
        if node.op == "Mul":
          node.op = "NotShippedOp"
  _edit_saved_model(cases["op_we_do_not_ship"], rename)

  cases["corrupt_variables"] = _toy(base / "corrupt")
  [data] = (cases["corrupt_variables"] / "variables").glob("variables.data-*")
  data.write_bytes(b"\x07" * data.stat().st_size)
  checks = CheckServing(*cases.values(), timeout=600)
  yield {name: checks.results()[str(path)] for name, path in cases.items()}
  checks.stop()


@pytest.mark.parametrize("case, code, words", [
    ("not_a_saved_model", 2, "is not a SavedModel directory"),
    ("no_serve_tag", 1, "Could not find meta graph def matching supplied tags: { serve }"),
    ("op_we_do_not_ship", 1, "uses the op 'NotShippedOp', which neither TensorFlow nor "
                             "tensorflow-text registers"),
    ("corrupt_variables", 1, "Checksum does not match"),
])
def test_bad_exports_get_one_clear_line(checked, case, code, words):
  returncode, stdout, stderr = checked[case]
  assert returncode == code, (stdout, stderr)
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], stderr
  if code == 1:  # reported from the C API child, as TF Serving's loader would fail
    assert "TF_LoadSessionFromSavedModel (TF Serving's loader) failed" in lines[0]


def test_a_good_toy_passes_through_both_loaders(checked):
  returncode, stdout, stderr = checked["good"]
  assert returncode == 0, stdout + stderr
  assert "loaded through the C API" in stdout
  assert "serving_default: runs under stock flags (XLA disabled), 1 warmup request" in stdout
  assert re.search(r"^TPU: \d+ functions? aliased tpu_func, without string ops$", stdout, re.M)


def test_string_ops_in_the_tpu_function_fail(checked):
  returncode, stdout, _ = checked["strings_in_tpu_func"]
  assert returncode == 1
  lines = [line for line in stdout.splitlines() if "tpu_func function" in line]
  assert lines, stdout
  for line in lines:   # one per concrete function of the core
    assert line.startswith("FAIL: ") and "AsString" in line and "StringToNumber" in line
    assert "Assert" in line   # its message is a string


def test_a_crash_of_the_c_api_child_is_reported(tmp_path):
  toy = _toy(tmp_path / "toy")
  child = check_serving.CApiChild(str(toy))
  os.kill(child.process.pid, signal.SIGSEGV)
  with pytest.raises(RuntimeError, match="the C API process was killed by SIGSEGV while"):
    child.result()


def test_differences_find_every_kind():
  same = {"f": np.array([1.0, 2.0], np.float32), "s": np.array([b"a"], object),
          "i": np.array([[1, 2]], np.int32)}
  assert check_serving.differences(same, {k: v.copy() for k, v in same.items()}) == []
  assert check_serving.differences(
      same, {**same, "f": same["f"] * (1 + 1e-7)}) == []          # rounding only
  changed = check_serving.differences(same, {"f": np.array([1.0, 2.5], np.float32),
                                             "s": np.array([b"b"], object),
                                             "i": np.array([[1, 2]], np.int64)})
  assert changed == ["f: differs by up to 0.5", "i: int32[1, 2] against int64[1, 2]",
                     "s: 1 of 1 values differ"]
  assert check_serving.differences(same, {"f": same["f"]}) == [
      "i is missing from one loader's outputs", "s is missing from one loader's outputs"]


def _signature(inputs: dict, outputs: dict):
  from tensorflow.core.protobuf import meta_graph_pb2
  signature = meta_graph_pb2.SignatureDef()
  for target, tensors in ((signature.inputs, inputs), (signature.outputs, outputs)):
    for name, dtype in tensors.items():
      target[name].name = f"{name}:0"
      target[name].dtype = tf.as_dtype(dtype).as_datatype_enum
  return signature


def test_the_contract_check_names_what_an_export_breaks():
  """The serving contract (serving/contract.py) as check_serving applies it: a
  signature renamed, an output gone, a dtype changed are each one problem."""
  from serving import contract
  good = {name: _signature(*io) for name, io in contract.SIGNATURES["fill_mask"].items()}
  assert check_serving.contract_problems(good) == ("fill_mask", [])
  paired = dict(good, serving_default=_signature({"text": "string", "text_pair": "string"},
                                                 good_outputs := contract.SIGNATURES[
                                                     "fill_mask"]["serving_default"][1]))
  assert check_serving.contract_problems(paired) == ("fill_mask", [])
  broken = dict(good)
  broken["tokenise"] = broken.pop("tokenize")
  broken["serving_default"] = _signature(
      {"text": "string"}, {**{k: v for k, v in good_outputs.items() if k != "num_masks"},
                           "top_k_ids": "int64"})
  task, problems = check_serving.contract_problems(broken)
  assert task == "fill_mask" and len(problems) == 3, problems
  assert any("'tokenise' is not in the fill_mask contract" in p for p in problems)
  assert any("no signature 'tokenize'" in p for p in problems)
  assert any("serving_default outputs" in p and "int64" in p for p in problems)
  # Not one of ours at all: nothing to hold it to.
  assert check_serving.contract_problems({"serving_default": _signature(
      {"x": "float32"}, {"y": "float32"})}) == (None, [])
