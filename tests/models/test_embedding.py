"""Sentence embeddings: XLM-RoBERTa's embedding export, mean pooling as
sentence-transformers does it, normalization, and TF Serving's loader."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, write_hf_checkpoint

TEXTS = ["Wie spät ist es?", "what time is it", "¿Qué hora es?", "a much longer sentence about "
         "the time of day and nothing else"]


def test_xlm_roberta_embedding_export(tmp_path, sp_file, vocab_size):
  import torch
  import transformers
  source = write_hf_checkpoint(tmp_path / "src", sp_file, vocab_size, masked_lm=False, seed=8)
  from servers import CheckServing, export_main
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  versions = {}
  args = ["--checkpoint", str(source), "--task", "embedding", "--output", str(tmp_path),
          "--sequence-length", "64", "--warmup-batch-sizes", "1"]
  done = subprocess.run([sys.executable, "scripts/export.py", *args, "--name", "plain"],
                        capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  versions["plain"] = done.stdout.strip().splitlines()[-1]
  checked = CheckServing(versions["plain"])     # scripts/check_serving.py, in the background
  # --normalize through main() in this process: the command line ran just above.
  code, stdout, stderr = export_main(*args, "--name", "unit", "--normalize")
  assert code == 0, stderr[-3000:]
  versions["unit"] = stdout.strip().splitlines()[-1]
  out = tf.saved_model.load(versions["plain"]).signatures["serving_default"](
      text=tf.constant(TEXTS))
  model = transformers.AutoModel.from_pretrained(str(source)).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
  encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
  with torch.no_grad():
    hidden = model(**encoded).last_hidden_state.numpy()
  mask = encoded["attention_mask"].numpy()[..., None].astype(np.float32)
  expected = (hidden * mask).sum(1) / mask.sum(1)
  np.testing.assert_allclose(out["mean_output"].numpy(), expected, rtol=1e-4, atol=1e-5)
  # The checkpoint's pooler (XLMRobertaModel has one): transformers' pooler_output.
  with torch.no_grad():
    pooler_output = model(**encoded).pooler_output.numpy()
  np.testing.assert_allclose(out["pooled_output"].numpy(), pooler_output, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(out["padding_mask"].numpy()[:, :mask.shape[1]], mask[..., 0])
  unit = tf.saved_model.load(versions["unit"]).signatures["serving_default"](
      text=tf.constant(TEXTS))
  np.testing.assert_allclose(np.linalg.norm(unit["mean_output"].numpy(), axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(unit["mean_output"].numpy(),
                             expected / np.linalg.norm(expected, axis=1, keepdims=True),
                             rtol=1e-4, atol=1e-5)
  from servers import assert_serving_flags
  assert_serving_flags(checked.passed(versions["plain"]), xla=True)


def test_pooler_is_loaded_saved_and_strict(tmp_path, sp_file, vocab_size):
  """An XLMRobertaModel's pooler is used (pooled_output = tanh(dense(<s>))) and kept
  by save_to_preset; without one, pooled_output is the <s> state; a pooler weight
  that does not fit is an error, not a silent skip."""
  import json
  import shutil
  import torch
  import transformers
  import tfhub_models
  from tfhub_models import checkpoints
  source = write_hf_checkpoint(tmp_path / "src", sp_file, vocab_size, masked_lm=False, seed=9)
  model = transformers.AutoModel.from_pretrained(str(source)).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
  encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
  with torch.no_grad():
    theirs = model(**encoded)
  encoder = tfhub_models.load(source, task="embedding")
  assert encoder.backbone.pooler is not None
  inputs = {"token_ids": encoded["input_ids"].numpy(),
            "padding_mask": encoded["attention_mask"].numpy()}
  ours = encoder.backbone(inputs)
  np.testing.assert_allclose(ours["pooled_output"].numpy(), theirs.pooler_output.numpy(),
                             rtol=1e-5, atol=1e-5)
  saved = encoder.save_to_preset(tmp_path / "saved")
  again = transformers.AutoModel.from_pretrained(str(saved)).eval()
  with torch.no_grad():
    np.testing.assert_allclose(again(**encoded).pooler_output.numpy(),
                               theirs.pooler_output.numpy(), rtol=1e-6, atol=1e-6)
  # Without a pooler: the <s> state.
  bare = transformers.XLMRobertaModel(model.config, add_pooling_layer=False).eval()
  bare.load_state_dict(model.state_dict(), strict=False)
  bare.save_pretrained(str(tmp_path / "bare"))
  for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(source / name, tmp_path / "bare" / name)
  plain = tfhub_models.load(tmp_path / "bare", task="embedding")
  assert plain.backbone.pooler is None
  np.testing.assert_allclose(plain.backbone(inputs)["pooled_output"].numpy(),
                             theirs.last_hidden_state.numpy()[:, 0], rtol=1e-5, atol=1e-5)
  # A mis-shaped pooler weight is named.
  from safetensors.numpy import load_file, save_file
  weights = load_file(str(source / "model.safetensors"))
  weights["pooler.dense.weight"] = weights["pooler.dense.weight"][:, :-1]
  broken = tmp_path / "broken"
  shutil.copytree(source, broken)
  save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(checkpoints.CheckpointError, match="pooler.dense.weight"):
    tfhub_models.load(broken, task="embedding")
  assert json.loads((saved / "config.json").read_text())["architectures"] == ["XLMRobertaModel"]
  # Exported without --task, a bare XLMRobertaModel is pointed at --task embedding.
  from servers import export_main
  code, _, stderr = export_main("--checkpoint", source, "--output", tmp_path / "out")
  assert code == 1 and "--task embedding" in stderr and not (tmp_path / "out").exists()
