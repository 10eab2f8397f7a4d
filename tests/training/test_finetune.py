"""scripts/finetune.py: text files in, a preset that our loader and export read out."""

import json
import os
import subprocess
import sys

import numpy as np

from conftest import ROOT, write_bart_checkpoint, write_hf_checkpoint
from tfhub_models import BartSeq2SeqLM, XLMRobertaMaskedLM

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
TEXTS = ["the cat sat on the mat", "a dog ran in the park", "birds sing in the morning",
         "the sun is hot today", "we read books at night", "rain falls on the roof"]


def finetune(*arguments):
  return subprocess.run([sys.executable, "scripts/finetune.py", *map(str, arguments)],
                        capture_output=True, text=True, cwd=ROOT, timeout=900, env=ENV)


def test_masked_lm_from_text_lines(tmp_path, sp_file, vocab_size):
  source = write_hf_checkpoint(tmp_path / "src", sp_file, vocab_size, seed=12)
  (tmp_path / "train.txt").write_text("\n".join(TEXTS) + "\n\n", encoding="utf-8")
  done = finetune("--checkpoint", source, "--train", tmp_path / "train.txt", "--validation",
                  tmp_path / "train.txt", "--output", tmp_path / "tuned", "--epochs", 2,
                  "--batch-size", 3, "--learning-rate", 1e-3, "--schedule", "cosine",
                  "--warmup-steps", 1, "--verbose", 0)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "tuned")
  report = json.loads(done.stderr.strip().splitlines()[-1])
  assert report["steps"] == 4 and len(report["history"]["val_loss"]) == 2
  before = XLMRobertaMaskedLM.from_preset(str(source))
  after = XLMRobertaMaskedLM.from_preset(str(tmp_path / "tuned"))
  changed = [np.abs(a.numpy() - b.numpy()).max() > 0
             for a, b in zip(before.variables, after.variables)]
  assert all(changed)
  # (An existing non-empty --output is refused: tests/test_presets.py.)


def test_seq2seq_from_json_lines_and_bad_lines(tmp_path, bpe_dir):
  source = write_bart_checkpoint(tmp_path / "src", bpe_dir, seed=13)
  rows = [{"source": t, "target": " ".join(t.split()[::-1])} for t in TEXTS]
  (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  done = finetune("--checkpoint", source, "--train", tmp_path / "train.jsonl", "--output",
                  tmp_path / "tuned", "--batch-size", 4, "--optimizer", "adam",
                  "--learning-rate", 1e-3, "--verbose", 0,
                  # Without XLA: each padded shape pair would be a compile of its own; the
                  # XLA path of this command runs in the test above, and XLA seq2seq steps
                  # are checked against torch in tests/test_training.py.
                  "--no-xla")
  assert done.returncode == 0, done.stderr[-3000:]
  tuned = BartSeq2SeqLM.from_preset(done.stdout.strip().splitlines()[-1])
  original = BartSeq2SeqLM.from_preset(str(source))
  assert np.abs(tuned.backbone.token_embedding.embeddings.numpy()
                - original.backbone.token_embedding.embeddings.numpy()).max() > 0
  (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n{\"source\": \"x\"}\n")
  # The refusal, through main() in this process (the command line ran just above).
  from servers import script_main
  code, _, stderr = script_main("finetune", "--checkpoint", source, "--train",
                                tmp_path / "bad.jsonl", "--output", tmp_path / "never",
                                "--verbose", 0)
  assert code == 1 and "bad.jsonl:2" in stderr and "target" in stderr
  assert not (tmp_path / "never").exists()
