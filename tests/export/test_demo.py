"""The demo models: trained by scripts/train_demo.py with the full recipe, written
as Hugging Face checkpoints, exported by scripts/demo.py (the README's main
command, through scripts/export.py), served, and right.

Training runs once for this module (about two minutes); the accuracy checks go
through the served SavedModels over gRPC, on every arithmetic question and on
reverse examples drawn with a seed other than training's, and transformers,
loading the same checkpoints, must give the same answers.
"""

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from servers import ServerProcess
from serving.client import ServingClient
from tfhub_models import demo_tasks

SEED = 0
HELD_OUT_SEED = 12345   # reverse examples the model was not trained on


def _run(*args, timeout=900):
  done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                        timeout=timeout)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  return done.stdout


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """A demo cache holding models trained by `scripts/train_demo.py` (what
  `scripts/demo.py` would train on first use)."""
  cache = tmp_path_factory.mktemp("demo_cache")
  output = cache / demo_tasks.cache_key(SEED)
  stdout = _run("scripts/train_demo.py", "--output", str(output), "--seed", str(SEED))
  assert "trained in" in stdout
  return cache


@pytest.fixture(scope="module")
def served(cache, tmp_path_factory):
  """The README's main command on the cached models, then a server process on
  the exports it wrote.  Yields (demo.py's stdout, gRPC target)."""
  base = tmp_path_factory.mktemp("demo_models")
  stdout = _run("scripts/demo.py", "--cache", str(cache), "--output", str(base), timeout=600)
  with ServerProcess(base / "server", "--model_config_file", str(base / "models.config"),
                     "--xla_cpu_compilation_enabled=true") as server:
    yield stdout, server.grpc


def test_main_command_reuses_the_cache_and_answers(served):
  stdout, _ = served
  assert "using the demo models in" in stdout and "training" not in stdout, stdout
  lines = {line.split("->")[0].strip(): line.split("->")[1].strip()
           for line in stdout.splitlines() if "->" in line}
  assert lines["three plus four is <mask>."].split()[0] == "seven", stdout
  assert lines["zwei plus <mask> ist fünf."].split()[0] == "drei", stdout
  assert lines["red fox jumps"] == "jumps fox red", stdout


def test_served_arithmetic_knows_every_sum(served):
  _, target = served
  questions = demo_tasks.arithmetic_questions()
  assert len(questions) == 600
  with ServingClient(target, "arithmetic") as client:
    answers = [row for i in range(0, len(questions), 100)
               for row in client.fill_mask([q for q, _ in questions[i:i + 100]])]
  assert all(len(masks) == 1 for masks in answers)
  right = [masks[0][0].token == answer for masks, (_, answer) in zip(answers, questions)]
  wrong = [q for ok, (q, _) in zip(right, questions) if not ok]
  assert np.mean(right) >= 0.95, wrong[:20]


def test_served_bart_reverses_unseen_word_sequences(served):
  _, target = served
  inputs, targets = demo_tasks.reverse_examples(200, HELD_OUT_SEED)
  training_inputs, _ = demo_tasks.reverse_examples(100, SEED)
  assert inputs[:100] != training_inputs
  with ServingClient(target, "reverse") as client:
    outputs = [text for i in range(0, len(inputs), 50)
               for text in client.generate(inputs[i:i + 50])]
  right = [o == t for o, t in zip(outputs, targets)]
  wrong = [(i, o) for ok, i, o in zip(right, inputs, outputs) if not ok]
  assert np.mean(right) >= 0.95, wrong[:10]


def test_transformers_loads_the_checkpoints_and_agrees(cache, served):
  """The saved presets are Hugging Face directories: transformers' fill-mask
  pipeline and greedy generate answer as the served exports do."""
  import torch
  import transformers

  _, target = served
  directory = cache / demo_tasks.cache_key(SEED)
  questions = [q for q, _ in demo_tasks.arithmetic_questions()][::7]
  fill = transformers.pipeline("fill-mask", model=str(directory / "arithmetic"), top_k=1,
                               device="cpu")
  theirs = [row[0]["token_str"].strip() for row in fill(questions)]
  with ServingClient(target, "arithmetic") as client:
    ours = [masks[0][0].token for masks in client.fill_mask(questions)]
  assert np.mean([a == b for a, b in zip(ours, theirs)]) >= 0.99, list(zip(questions, ours, theirs))

  inputs, _ = demo_tasks.reverse_examples(40, HELD_OUT_SEED + 1)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory / "reverse"))
  model = transformers.BartForConditionalGeneration.from_pretrained(str(directory / "reverse"))
  with torch.no_grad():
    ids = model.generate(**tokenizer(inputs, return_tensors="pt", padding=True))
  theirs = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
  with ServingClient(target, "reverse") as client:
    ours = client.generate(inputs)
  assert ours == theirs


def test_train_demo_refuses_bad_output_and_scale(tmp_path):
  (tmp_path / "used").mkdir()
  (tmp_path / "used" / "keep.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="not an empty directory"):
    demo_tasks.train_demos(tmp_path / "used")
  assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
  with pytest.raises(ValueError, match="scale must be in"):
    demo_tasks.train_demos(tmp_path / "new", scale=0)
  assert not (tmp_path / "new").exists()


def test_task_text_is_as_specified():
  questions = demo_tasks.arithmetic_questions()
  assert ("three plus four is <mask>.", "seven") in questions
  assert ("zwei plus <mask> ist fünf.", "drei") in questions
  assert ("<mask> plus neun ist achtzehn.", "neun") in questions
  assert len({q for q, _ in questions}) == 600
  words = demo_tasks.demo_words()
  assert len(words) >= 50 and all(w == w.lower() and w.isalpha() for w in words)
  inputs, targets = demo_tasks.reverse_examples(500, 1)
  assert {len(t.split()) for t in inputs} == set(range(3, 9))
  assert all(t.split() == i.split()[::-1] and set(i.split()) <= set(words)
             for i, t in zip(inputs, targets))
