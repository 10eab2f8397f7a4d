"""Export: signatures, XLA, warmup, atomic versions, the session-loader check."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT
import tfhub_models
from tfhub_models import export
from tfhub_models.tasks import find_masks

TEXTS = ["The capital of France is <mask>.", "<mask> zwei <mask>", "no mask", ""]
SEQUENCE_LENGTH = 40          # buckets 16, 32, 40


def run_script(*args, timeout=600):
  return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


@pytest.fixture(scope="module")
def task(hf_checkpoint):
  return tfhub_models.load(hf_checkpoint, sequence_length=SEQUENCE_LENGTH)


@pytest.fixture(scope="module")
def exported(task, tmp_path_factory):
  """The two exports, and scripts/check_serving.py on them started in the background
  while the tests that load them in this process run."""
  from servers import CheckServing
  base = tmp_path_factory.mktemp("models")
  options = dict(top_k=4, warmup_batch_sizes=(1, 2))
  xla = export.export(task, base, "xlmr", options=export.ExportOptions(**options))
  plain = export.export(task, base, "xlmr_no_xla",
                        options=export.ExportOptions(jit_compile=False, **options))
  checks = CheckServing(xla, plain, timeout=600)
  yield {"xla": xla, "no_xla": plain}, checks
  checks.stop()


@pytest.fixture(scope="module")
def exports(exported):
  return exported[0]


def eager_fill_mask(task, texts, k=4):
  inputs = task.preprocessor(tf.constant(texts))
  return task.top_k(inputs["token_ids"], inputs["padding_mask"], k)


@pytest.mark.parametrize("kind", ["xla", "no_xla"])
def test_reloaded_signatures_match_eager(task, exports, kind):
  loaded = tf.saved_model.load(str(exports[kind]))
  assert set(loaded.signatures) == {"serving_default", "logits", "tokenize"}
  out = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
  expected = eager_fill_mask(task, TEXTS)
  assert out["num_masks"].numpy().tolist() == [1, 2, 0, 0]
  assert out["top_k_ids"].shape == (4, 2, 4) and out["top_k_ids"].dtype == tf.int32
  np.testing.assert_array_equal(out["top_k_ids"].numpy(), expected["top_k_ids"].numpy())
  np.testing.assert_allclose(out["top_k_scores"].numpy(), expected["top_k_scores"].numpy(),
                             atol=1e-5)
  tokens = out["top_k_tokens"].numpy()
  first = task.tokenizer.id_to_text(out["top_k_ids"][0, 0]).numpy()
  assert tokens[0, 0].tolist() == first.tolist()
  assert tokens[0, 1].tolist() == [b""] * 4 and out["top_k_ids"][0, 1].numpy().tolist() == [-1] * 4

  tokenized = loaded.signatures["tokenize"](text=tf.constant(TEXTS))
  expected_inputs = task.preprocessor(tf.constant(TEXTS))
  np.testing.assert_array_equal(tokenized["token_ids"].numpy(),
                                expected_inputs["token_ids"].numpy())
  positions, _ = find_masks(expected_inputs["token_ids"], task.tokenizer.mask_token_id)
  logits = loaded.signatures["logits"](token_ids=expected_inputs["token_ids"],
                                       padding_mask=expected_inputs["padding_mask"],
                                       mask_positions=positions)["logits"]
  np.testing.assert_allclose(
      logits.numpy(), task(dict(expected_inputs, mask_positions=positions)).numpy(), atol=1e-5)


def test_session_loader_matches_eager(task, exports):
  """The TF1 session path (what TF Serving's C++ loader runs) gives the same answers."""
  expected = eager_fill_mask(task, TEXTS)
  with tf.compat.v1.Session(graph=tf.Graph()) as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(exports["xla"]))
    signature = meta.signature_def["serving_default"]
    out = session.run({k: v.name for k, v in signature.outputs.items()},
                      {signature.inputs["text"].name: np.array([t.encode() for t in TEXTS],
                                                                 dtype=object)})
  np.testing.assert_array_equal(out["top_k_ids"], expected["top_k_ids"].numpy())
  np.testing.assert_allclose(out["top_k_scores"], expected["top_k_scores"].numpy(), atol=1e-5)
  assert out["num_masks"].tolist() == [1, 2, 0, 0]


def test_logits_signature_matches_transformers(exports, hf_checkpoint, task):
  import torch
  from transformers import XLMRobertaForMaskedLM

  loaded = tf.saved_model.load(str(exports["xla"]))
  inputs = task.preprocessor(tf.constant(TEXTS[:2]))
  positions, _ = find_masks(inputs["token_ids"], task.tokenizer.mask_token_id)
  got = loaded.signatures["logits"](token_ids=inputs["token_ids"],
                                    padding_mask=inputs["padding_mask"],
                                    mask_positions=positions)["logits"].numpy()
  reference = XLMRobertaForMaskedLM.from_pretrained(str(hf_checkpoint)).eval()
  with torch.no_grad():
    full = reference(input_ids=torch.tensor(inputs["token_ids"].numpy(), dtype=torch.long),
                     attention_mask=torch.tensor(inputs["padding_mask"].numpy())).logits.numpy()
  expected = np.take_along_axis(full, positions.numpy()[..., None], axis=1)
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_bad_input_gets_defined_answers(exports, task):
  serve = tf.saved_model.load(str(exports["xla"])).signatures["serving_default"]
  empty = serve(text=tf.constant([], tf.string))
  assert empty["top_k_ids"].shape == (0, 0, 4) and empty["num_masks"].shape == (0,)
  long_text = "<mask> " + "word " * 200 + "<mask>"
  out = serve(text=tf.constant([long_text.encode(), b"\xff\xfe <mask> \xc3", b"", b"   "]))
  # The second mask lies past the cut at SEQUENCE_LENGTH, so it is not reported.
  assert out["num_masks"].numpy().tolist() == [1, 1, 0, 0]
  assert np.isfinite(out["top_k_scores"].numpy()).all()


@pytest.mark.parametrize("kind", ["xla", "no_xla"])
def test_logits_signature_rejects_bad_indices(exports, task, kind):
  """XLA clamps out-of-range indices silently; the signature checks them first."""
  logits = tf.saved_model.load(str(exports[kind])).signatures["logits"]
  ids = tf.constant([[0, 5, task.tokenizer.mask_token_id, 2]], tf.int32)
  ones = tf.ones_like(ids)
  good = logits(token_ids=ids, padding_mask=ones, mask_positions=tf.constant([[2]]))
  assert good["logits"].shape == (1, 1, task.backbone.config.vocabulary_size)
  bad = [
      (dict(token_ids=ids, padding_mask=ones, mask_positions=tf.constant([[4]])), "mask_positions"),
      (dict(token_ids=ids, padding_mask=ones, mask_positions=tf.constant([[-1]])),
       "mask_positions"),
      (dict(token_ids=ids + 10000, padding_mask=ones, mask_positions=tf.constant([[2]])),
       "vocabulary"),
      (dict(token_ids=ids, padding_mask=ones[:, :3], mask_positions=tf.constant([[2]])),
       "same shape"),
      (dict(token_ids=ids, padding_mask=ones, mask_positions=tf.constant([[2], [1]])), "one row"),
      (dict(token_ids=tf.zeros([1, 41], tf.int32), padding_mask=tf.ones([1, 41], tf.int32),
            mask_positions=tf.constant([[2]])), "at most 40"),
  ]
  for inputs, message in bad:
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      logits(**inputs)


def test_logits_signature_pads_to_buckets(exports, task):
  """An odd length, batch and mask count give the unpadded answer."""
  logits = tf.saved_model.load(str(exports["xla"])).signatures["logits"]
  inputs = task.preprocessor(tf.constant(["a <mask> b <mask> c <mask>", "x <mask>", "y"]))
  ids, mask = inputs["token_ids"][:, :11], inputs["padding_mask"][:, :11]
  positions = tf.constant([[2, 4, 6], [2, 0, 0], [0, 0, 0]])
  got = logits(token_ids=ids, padding_mask=mask, mask_positions=positions)["logits"]
  expected = task({"token_ids": ids, "padding_mask": mask, "mask_positions": positions})
  np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["xla", "no_xla"])
def test_xla_marks_in_graph(exports, kind):
  from tensorflow.core.protobuf import saved_model_pb2
  proto = saved_model_pb2.SavedModel.FromString(
      (exports[kind] / "saved_model.pb").read_bytes())
  functions = proto.meta_graphs[0].graph_def.library.function
  compiled = [f.signature.name for f in functions
              if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]
  compiled += [n.name for f in functions for n in f.node_def
               if "_XlaMustCompile" in n.attr and n.attr["_XlaMustCompile"].b]
  assert bool(compiled) == (kind == "xla")


def test_warmup_covers_every_bucket_and_signature(exports, task):
  from tensorflow_serving.apis import prediction_log_pb2
  path = exports["xla"] / "assets.extra" / "tf_serving_warmup_requests"
  logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
          for r in tf.data.TFRecordDataset(str(path))]
  by_signature = {}
  for log in logs:
    request = log.predict_log.request
    assert request.model_spec.name == "xlmr"
    by_signature.setdefault(request.model_spec.signature_name, []).append(request)
  assert set(by_signature) == {"serving_default", "logits", "tokenize"}
  lengths = set()
  for request in by_signature["serving_default"]:
    text = tf.make_ndarray(request.inputs["text"])
    lengths.add(task.preprocessor(tf.constant(text))["token_ids"].shape[1])
  assert lengths == set(task.preprocessor.bucket_lengths) == {16, 32, 40}
  # Batch sizes 1 and 2 per bucket, plus 2 and 4 masks per bucket.
  assert len(by_signature["serving_default"]) == 3 * 2 + 3 * 2
  mask_counts = {int(task.preprocessor(tf.constant(tf.make_ndarray(r.inputs["text"])))[
      "token_ids"].numpy().__eq__(task.tokenizer.mask_token_id).sum(axis=1).max())
      for r in by_signature["serving_default"]}
  assert mask_counts == {1, 2, 4}


@pytest.mark.parametrize("kind", ["xla", "no_xla"])
def test_check_serving_passes(exported, kind):
  exports, checks = exported
  stdout = checks.passed(exports[kind])
  assert "OK" in stdout and "SentencepieceOp" in stdout
  assert ("XLA: yes" in stdout) == (kind == "xla")
  from servers import assert_serving_flags
  assert_serving_flags(stdout, xla=kind == "xla")


def test_check_serving_fails_on_python_ops(tmp_path):
  module = tf.Module()
  module.f = tf.function(lambda x: tf.py_function(lambda v: v * 2, [x], tf.float32),
                         input_signature=[tf.TensorSpec([None], tf.float32)])
  tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.f})
  result = run_script("scripts/check_serving.py", tmp_path / "1")
  assert result.returncode == 1
  assert "need a Python interpreter" in result.stdout
  assert "no warmup requests" in result.stdout


def test_versions_are_numbered_and_never_overwritten(task, tmp_path):
  options = export.ExportOptions(warmup_batch_sizes=(1,), jit_compile=False)
  first = export.export(task, tmp_path, "m", options=options)
  second = export.export(task, tmp_path, "m", options=options)
  assert (first.name, second.name) == ("1", "2")
  with pytest.raises(FileExistsError, match="never overwritten"):
    export.export(task, tmp_path, "m", version=2, options=options)
  assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2"]
  # No options: ExportOptions()'s defaults (XLA, warmup for batches 1, 2, 4, 8).
  third = export.export(task, tmp_path, "m")
  assert third.name == "3" and (third / "assets.extra" / "tf_serving_warmup_requests").exists()


def test_failed_export_leaves_nothing_behind(task, tmp_path, monkeypatch):
  def broken(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(export, "write_warmup", broken)
  with pytest.raises(OSError, match="disk full"):
    export.export(task, tmp_path, "m", options=export.ExportOptions(jit_compile=False))
  assert list((tmp_path / "m").iterdir()) == []


def test_cli_exports_and_prints_the_path(hf_checkpoint, tmp_path):
  result = run_script("scripts/export.py", "--checkpoint", hf_checkpoint, "--output", tmp_path,
                      "--name", "cli", "--top-k", "2", "--sequence-length", "16", "--no-xla",
                      "--warmup-batch-sizes", "1")
  assert result.returncode == 0, result.stderr
  path = pathlib.Path(result.stdout.strip().splitlines()[-1])
  assert path == tmp_path / "cli" / "1" and (path / "saved_model.pb").exists()
  out = tf.saved_model.load(str(path)).signatures["serving_default"](text=tf.constant(["<mask>"]))
  assert out["top_k_ids"].shape == (1, 1, 2)


def run_export(args, in_process: bool):
  """scripts/export.py ARGS as a subprocess, or through its main() in this process:
  (exit code, stdout, stderr)."""
  if in_process:
    from servers import export_main
    return export_main(*args)
  result = run_script("scripts/export.py", *args)
  return result.returncode, result.stdout, result.stderr


# The first case goes through a subprocess, the others through main() in this process.
@pytest.mark.parametrize("args,message,in_process", [
    (["--checkpoint", "/nonexistent/ckpt"], "does not exist", False),
    (["--checkpoint", "{bad}"], "no config.json", True),
    (["--preset", "xlm_roberta_huge"], "unknown preset", True),
])
def test_cli_errors_are_one_line(args, message, in_process, tmp_path):
  if "{bad}" in args:
    (tmp_path / "bad").mkdir()
    args = [str(tmp_path / "bad") if a == "{bad}" else a for a in args]
  code, _, stderr = run_export([*args, "--output", tmp_path / "out", "--name", "x"], in_process)
  assert code == 1
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], stderr
  assert not (tmp_path / "out" / "x").exists() or not any((tmp_path / "out" / "x").iterdir())


def test_cli_random_weights_preset(tmp_path):
  result = run_script("scripts/export.py", "--preset", "xlm_roberta_base_multi",
                      "--random-weights", "--output", tmp_path, "--sequence-length", "16",
                      "--no-xla", "--warmup-batch-sizes", "1")
  assert result.returncode == 0, result.stderr
  loaded = tf.saved_model.load(result.stdout.strip().splitlines()[-1])
  out = loaded.signatures["serving_default"](text=tf.constant(["a <mask> b"]))
  assert out["num_masks"].numpy().tolist() == [1]


# The first case goes through a subprocess, the second through main() in this process
# (where a traceback would be an exception out of main(), failing the test).
@pytest.mark.parametrize("preset,content,in_process", [
    ("xlm_roberta_base_multi", b"\x00not a sentencepiece model", False),
    ("electra_small_discriminator_uncased_en", b"a\nb\n[PAD]\n[UNK]\n[CLS]\n[SEP]\n", True),
])
def test_cli_rejects_an_unusable_vocabulary(preset, content, in_process, tmp_path):
  vocabulary = tmp_path / "vocabulary"
  vocabulary.write_bytes(content)
  code, _, stderr = run_export(["--preset", preset, "--random-weights", "--vocabulary",
                                vocabulary, "--output", tmp_path / "out", "--sequence-length",
                                "16"], in_process)
  assert code == 1
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "not a usable vocabulary" in lines[0], stderr[-500:]
  assert "Traceback" not in stderr
  assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("saved_model.pb"))


def test_xlm_roberta_embedding_export_takes_pairs(hf_checkpoint, tmp_path):
  """The embedding export is keyed off the task, so XLM-RoBERTa's encoder has one
  too; a pair is packed `<s> a </s></s> b </s>`, as upstream."""
  encoder = tfhub_models.load(hf_checkpoint, "embedding", sequence_length=32)
  path = export.export(encoder, tmp_path, "embedding", options=export.ExportOptions(
      jit_compile=False, pair=True, warmup_batch_sizes=(1,)))
  loaded = tf.saved_model.load(str(path))
  assert set(loaded.signatures) == {"serving_default"}
  first, second = tf.constant(["Paris is nice", "a"]), tf.constant(["so is Rome", "b c"])
  out = loaded.signatures["serving_default"](text=first, text_pair=second)
  inputs = encoder.preprocessor(first, second)
  ids = inputs["token_ids"].numpy()[1]
  tokens = encoder.tokenizer
  assert ids[0] == tokens.bos_token_id and list(ids).count(tokens.eos_token_id) == 3
  expected = encoder.backbone(inputs)
  real = inputs["padding_mask"].numpy().astype(bool)
  np.testing.assert_allclose(out["sequence_output"].numpy()[real],
                             expected["sequence_output"].numpy()[real], atol=1e-5)
  np.testing.assert_allclose(out["pooled_output"].numpy(), expected["pooled_output"].numpy(),
                             atol=1e-5)


@pytest.mark.parametrize("kind", ["xla", "no_xla"])
def test_numeric_cores_are_aliased_tpu_func(exports, kind):
  """Both numeric cores (top-k and logits) carry the tpu_func alias; each is a function
  of the library that the signatures call, has the network's matrix products, and no
  string op; the signature functions around them do have string ops (the finder finds)."""
  from tensorflow.core.protobuf import saved_model_pb2
  from servers import script_module
  check = script_module("check_serving")
  saved = saved_model_pb2.SavedModel.FromString(
      (pathlib.Path(exports[kind]) / "saved_model.pb").read_bytes())
  meta = saved.meta_graphs[0]
  library = meta.graph_def.library
  aliased = sorted(n for n, a in meta.meta_info_def.function_aliases.items() if a == "tpu_func")
  assert len(aliased) == 2, dict(meta.meta_info_def.function_aliases)
  names = {f.signature.name for f in library.function}
  called = {f.name for function in library.function for node in function.node_def
            for f in [node.attr["f"].func] if "f" in node.attr}
  for name in aliased:
    assert name in names and name in called
    ops = {node.op for _, node in check.walk(library, name)}
    assert ops & {"MatMul", "BatchMatMulV2", "BatchMatMulV3"}, sorted(ops)
    assert check.string_ops(library, name) == []
  serving = meta.signature_def["serving_default"]
  assert serving.inputs["text"].dtype == tf.string.as_datatype_enum
  outer = [f.signature.name for f in library.function
           if any(node.attr["f"].func.name in aliased for node in f.node_def if "f" in node.attr)]
  assert outer and any(check.string_ops(library, name) for name in outer)


def test_server_gates_xla_as_tf_serving(exports, tmp_path):
  """Without --xla_cpu_compilation_enabled=true an XLA export fails its warmup and is
  END with the flag named (in the status and the log) while a --no-xla export beside it
  serves; with the flag both serve, with the same answers."""
  import grpc
  from servers import ServerProcess
  from serving.client import ServingClient
  config = tmp_path / "models.config"
  config.write_text("model_config_list {\n" + "".join(
      f'  config {{ name: "{name}" base_path: "{pathlib.Path(exports[name]).parent}" '
      'model_platform: "tensorflow" }\n' for name in ("xla", "no_xla")) + "}\n")
  texts = ["The capital of France is <mask>."]
  with ServerProcess(tmp_path / "off", "--model_config_file", str(config)) as server:
    with ServingClient(server.grpc, "no_xla") as client:
      plain = client.fill_mask(texts)
    with ServingClient(server.grpc, "xla") as client:
      [version] = client.status().model_version_status
      with pytest.raises(grpc.RpcError) as failed:
        client.fill_mask(texts)
    log = server.output()
  assert version.state == version.END
  assert "--xla_cpu_compilation_enabled=true" in version.status.error_message
  assert "XLA compilation disabled" in version.status.error_message
  assert failed.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)
  assert "failed to load" in log and "--xla_cpu_compilation_enabled=true" in log
  with ServerProcess(tmp_path / "on", "--model_config_file", str(config),
                     "--xla_cpu_compilation_enabled=true") as server:
    answers = {}
    for name in ("xla", "no_xla"):
      with ServingClient(server.grpc, name) as client:
        answers[name] = client.fill_mask(texts)
  assert [f.token for f in answers["xla"][0][0]] == [f.token for f in plain[0][0]]
  assert [f.token for f in answers["no_xla"][0][0]] == [f.token for f in plain[0][0]]
