"""Sentence embeddings: XLM-RoBERTa's embedding export, mean pooling as
sentence-transformers does it, normalization, and TF Serving's loader."""

import os
import subprocess
import sys

import numpy as np
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
  np.testing.assert_allclose(out["pooled_output"].numpy(), hidden[:, 0], rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(out["padding_mask"].numpy()[:, :mask.shape[1]], mask[..., 0])
  unit = tf.saved_model.load(versions["unit"]).signatures["serving_default"](
      text=tf.constant(TEXTS))
  np.testing.assert_allclose(np.linalg.norm(unit["mean_output"].numpy(), axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(unit["mean_output"].numpy(),
                             expected / np.linalg.norm(expected, axis=1, keepdims=True),
                             rtol=1e-4, atol=1e-5)
  from servers import assert_serving_flags
  assert_serving_flags(checked.passed(versions["plain"]), xla=True)
