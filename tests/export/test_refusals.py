"""The CLIs refuse what would break their own output, before working (issue 30).

Each refusal: an exit code that is not 0, one line naming the flag, the file, the
tensor or the config field, no traceback, and nothing written.  Flags are refused by
argparse (exit 2, `error: argument --x: ...`), before any checkpoint is read; bad
checkpoints and runs that go wrong exit 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, write_electra_checkpoint
from servers import script_main as run
import tfhub_models

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "birds sing in the morning",
         "the sun is hot today", "we read books at night", "rain falls on the roof"]


def error_line(stderr: str) -> str:
  """The one `error: ...` line of stderr (argparse's usage lines may come before it).
  (`run` is main() in this process: a traceback there is an exception failing the test.)"""
  assert "Traceback" not in stderr, stderr
  lines = [line for line in stderr.splitlines() if "error:" in line]
  assert len(lines) == 1, stderr
  return lines[0]


def copy(source, tmp_path):
  target = tmp_path / "ckpt"
  shutil.copytree(source, target)
  return target


def edit_config(directory, edit) -> None:
  config = json.loads((directory / "config.json").read_text())
  (directory / "config.json").write_text(json.dumps(edit(config)))


def edit_weights(directory, edit) -> None:
  from safetensors.numpy import load_file, save_file
  weights = load_file(str(directory / "model.safetensors"))
  edit(weights)
  save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})


# ---------------------------------------------------------------------------
# Flags.  The checkpoint does not exist: the flag is refused before it is looked for.

@pytest.mark.parametrize("flag,value", [
    ("--learning-rate", "inf"), ("--learning-rate", "nan"), ("--learning-rate", "0"),
    ("--weight-decay", "inf"), ("--weight-decay", "nan"), ("--weight-decay", "-0.1"),
    ("--clipnorm", "inf"), ("--checkpoint-every", "0"), ("--sequence-length", "0"),
    ("--epochs", "0"), ("--batch-size", "0"), ("--warmup-steps", "-1"),
])
def test_finetune_flags(flag, value, tmp_path):
  code, _, stderr = run("finetune", "--checkpoint", tmp_path / "missing", "--train",
                        tmp_path / "missing.txt", "--output", tmp_path / "out", f"{flag}={value}")
  assert code == 2
  assert f"argument {flag}: must be" in error_line(stderr) and value in error_line(stderr)
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag,value", [
    ("--temperature", "nan"), ("--temperature", "inf"), ("--temperature", "0"),
    ("--length-penalty", "nan"), ("--length-penalty", "-inf"), ("--top-p", "nan"),
    ("--top-p", "1.5"),
    ("--alpha", "nan"), ("--sequence-length", "0"), ("--max-input-length", "0"),
    ("--max-new-tokens", "0"), ("--num-beams", "0"), ("--num-return-sequences", "0"),
])
def test_export_flags(flag, value, tmp_path):
  code, _, stderr = run("export", "--checkpoint", tmp_path / "missing", "--output",
                        tmp_path / "out", f"{flag}={value}")   # "=": -inf is no option
  assert code == 2
  assert f"argument {flag}: must be" in error_line(stderr) and value in error_line(stderr)
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script,flag", [("finetune", "--learning-rate"),
                                         ("export", "--temperature")])
def test_flags_on_the_command_line(script, flag, tmp_path):
  """The real command line: exit 2 before TensorFlow is even imported."""
  args = ["--train", "t.txt"] if script == "finetune" else []
  done = subprocess.run([sys.executable, f"scripts/{script}.py", "--checkpoint", "x", *args,
                         "--output", str(tmp_path / "out"), flag, "inf"], capture_output=True,
                        text=True, cwd=ROOT, timeout=120,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert done.returncode == 2
  assert done.stderr.splitlines()[-1].endswith(f"error: argument {flag}: must be a finite "
                                               "number > 0, got inf"), done.stderr
  assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# Checkpoints: config.json and the weights, refused before the model is built.

def export_refuses(directory, tmp_path, *names) -> str:
  """scripts/export.py on `directory` fails (exit 1) with one line naming each of
  `names`, and writes nothing; returns the line."""
  code, stdout, stderr = run("export", "--checkpoint", directory, "--output", tmp_path / "out",
                             "--sequence-length", 16, "--no-xla")
  assert code == 1 and not stdout
  line = error_line(stderr)
  for name in names:
    assert str(name) in line, line
  assert not (tmp_path / "out").exists()
  return line


@pytest.mark.parametrize("field,value,says", [
    ("layer_norm_eps", 0.0, "must be a finite number > 0"),
    ("layer_norm_eps", -1e-5, "must be a finite number > 0"),
    ("layer_norm_eps", float("nan"), "must be a finite number > 0"),   # json writes NaN
    ("num_attention_heads", 0, "must be >= 1"),
    ("num_attention_heads", 5, "hidden_size 32 is not a positive multiple"),
])
def test_xlm_roberta_config_fields(field, value, says, hf_checkpoint, tmp_path):
  directory = copy(hf_checkpoint, tmp_path)
  edit_config(directory, lambda c: dict(c, **{field: value}))
  export_refuses(directory, tmp_path, directory / "config.json", field, says)


def test_electra_layer_norm_eps(wordpiece_dir, wordpiece_vocab, tmp_path):
  directory = write_electra_checkpoint(tmp_path / "ckpt", wordpiece_dir, len(wordpiece_vocab),
                                       "discriminator")
  edit_config(directory, lambda c: dict(c, layer_norm_eps=float("inf")))
  export_refuses(directory, tmp_path, directory / "config.json", "layer_norm_eps",
                 "must be a finite number > 0, got inf")


@pytest.mark.parametrize("fields,says", [
    ({"encoder_attention_heads": 0, "decoder_attention_heads": 0},
     "encoder_attention_heads must be >= 1, got 0"),
    ({"d_model": 30}, "d_model 30 is not a positive multiple of encoder_attention_heads 4"),
])
def test_bart_config_fields(fields, says, hf_bart_checkpoint, tmp_path):
  directory = copy(hf_bart_checkpoint, tmp_path)
  edit_config(directory, lambda c: dict(c, **fields))
  export_refuses(directory, tmp_path, directory / "config.json", says)


@pytest.mark.parametrize("content,kind", [([1, 2], "array"), ("hello", "string"), (3, "number")])
def test_config_that_is_not_an_object(content, kind, hf_checkpoint, tmp_path):
  directory = copy(hf_checkpoint, tmp_path)
  (directory / "config.json").write_text(json.dumps(content))
  export_refuses(directory, tmp_path, directory / "config.json",
                 f"must hold a JSON object, not a JSON {kind}")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_weight_that_is_not_finite(value, hf_checkpoint, tmp_path):
  directory = copy(hf_checkpoint, tmp_path)
  key = "roberta.encoder.layer.1.attention.self.query.weight"

  def damage(weights):
    weights[key][3, 7] = value
  edit_weights(directory, damage)
  export_refuses(directory, tmp_path, directory / "model.safetensors",
                 f"tensor {key} holds 1 NaN or infinite value")


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_weight_that_is_not_a_float(dtype, hf_checkpoint, tmp_path):
  directory = copy(hf_checkpoint, tmp_path)
  key = "roberta.encoder.layer.0.output.dense.bias"

  def damage(weights):
    weights[key] = np.ones(weights[key].shape, dtype)
  edit_weights(directory, damage)
  export_refuses(directory, tmp_path, directory,
                 f"encoder.layer.0.output.dense.bias: dtype {np.dtype(dtype)} where a float "
                 "weight belongs")


# ---------------------------------------------------------------------------
# Fine-tuning that goes wrong.

def test_finetune_stops_on_a_nan_loss_keeping_the_last_good_checkpoint(hf_checkpoint, tmp_path):
  """A learning rate that is finite but far too large: the first step's update
  overflows, the second step's loss is NaN.  The run stops there (exit 1); the
  checkpoint of the first step is kept (--checkpoint-dir did not exist: fit makes
  it); --output is not written."""
  (tmp_path / "train.txt").write_text("\n".join(TEXTS) + "\n")
  state = tmp_path / "state"
  code, stdout, stderr = run(
      "finetune", "--checkpoint", hf_checkpoint, "--train", tmp_path / "train.txt", "--output",
      tmp_path / "tuned", "--batch-size", 2, "--learning-rate", 1e30, "--optimizer", "adam",
      "--schedule", "constant", "--checkpoint-dir", state, "--checkpoint-every", 1,
      "--sequence-length", 16, "--verbose", 0, "--no-xla")
  assert code == 1 and not stdout
  line = error_line(stderr)
  assert "the loss is nan at step 2 of epoch 1" in line, line
  assert f"{state / 'ckpt-1'} is the last good checkpoint" in line, line
  assert tf.train.latest_checkpoint(str(state)).endswith("ckpt-1")
  assert not (tmp_path / "tuned").exists()


def test_save_refuses_weights_that_are_not_finite(hf_checkpoint, tmp_path):
  """What finetune.py writes last: a step that left a NaN weight is not saved."""
  task = tfhub_models.load(hf_checkpoint, sequence_length=16)
  bias = task.backbone.transformer_layers[1].feedforward.output.bias
  bias.assign(tf.tensor_scatter_nd_update(bias, [[2]], [np.nan]))
  with pytest.raises(ValueError, match=r"weight roberta\.encoder\.layer\.1\.output\.dense\.bias "
                                       r"holds NaN or infinite values; nothing written"):
    task.save_to_preset(str(tmp_path / "preset"))
  assert not (tmp_path / "preset").exists()


# ---------------------------------------------------------------------------
# Serving: detokenize refuses ids outside the vocabulary, as generate_ids does.

def test_detokenize_refuses_ids_outside_the_vocabulary(hf_bart_checkpoint, tmp_path):
  from tfhub_models.export import signatures
  task = tfhub_models.load(hf_bart_checkpoint, sequence_length=16)
  size = task.backbone.config.vocabulary_size
  part = signatures.Detokenize(task, signatures.ExportOptions())
  tf.saved_model.save(part, str(tmp_path / "detokenize"), signatures=part.signatures())
  detokenize = tf.saved_model.load(str(tmp_path / "detokenize")).signatures["detokenize"]
  ids = task.preprocessor(tf.constant(["birds sing"]))["token_ids"]
  text = detokenize(token_ids=ids)["text"].numpy()
  assert text[0].decode().strip() == "birds sing"
  assert detokenize(token_ids=tf.constant([[0, size - 1]], tf.int32))["text"].shape == (1,)
  for bad, says in ((size, f"token_ids must be < the vocabulary size {size}"),
                    (-1, "token_ids must be >= 0")):
    with pytest.raises(tf.errors.InvalidArgumentError, match=says):
      detokenize(token_ids=tf.constant([[0, bad]], tf.int32))
