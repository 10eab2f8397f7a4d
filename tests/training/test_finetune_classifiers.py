"""Fine-tuning classifiers and taggers from the command line and from Python:
labelled files in, checked before the first step, metrics people report, and
presets that transformers and its pipelines read as we do."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_electra_checkpoint, write_hf_checkpoint
from servers import export_main, script_main
from tfhub_models import metrics

FILLER = ["the", "a", "cat", "dog", "sat", "on", "mat", "park", "we", "read", "book", "sun",
          "rain", "roof", "bird", "sing", "morning", "night", "hot", "today"]
POSITIVE, NEGATIVE = ["good", "great", "happy"], ["bad", "sad", "awful"]
NAMES, SURNAMES, CITIES = ["anna", "pierre", "maria"], ["smith", "weber"], ["berlin", "paris",
                                                                            "lyon"]


def sentiment_rows(count: int, seed: int) -> list:
  """Texts whose label is the sentiment word they hold (learnable by a tiny model)."""
  rng = random.Random(seed)
  rows = []
  for _ in range(count):
    label = rng.choice(["pos", "neg"])
    words = rng.sample(FILLER, rng.randint(2, 5))
    words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "pos"
                                                         else NEGATIVE))
    rows.append({"text": " ".join(words), "label": label})
  return rows


def tagged_rows(count: int, seed: int) -> list:
  """Sentences whose names (B-PER, surnames I-PER) and cities (B-LOC) are tagged."""
  rng = random.Random(seed)
  rows = []
  for _ in range(count):
    tokens, tags = [], []
    for _ in range(rng.randint(3, 7)):
      roll = rng.random()
      if roll < 0.2:
        tokens.append(rng.choice(NAMES))
        tags.append("B-PER")
        if rng.random() < 0.5:
          tokens.append(rng.choice(SURNAMES))
          tags.append("I-PER")
      elif roll < 0.35:
        tokens.append(rng.choice(CITIES))
        tags.append("B-LOC")
      else:
        tokens.append(rng.choice(FILLER))
        tags.append("O")
    rows.append({"tokens": tokens, "tags": tags})
  return rows


def write_csv(path, rows, columns=("text", "label")):
  import csv
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
  return path


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return path


COMMON = ["--epochs", 4, "--batch-size", 16, "--learning-rate", 3e-3, "--warmup-steps", 2,
          "--sequence-length", 32, "--verbose", 2, "--seed", 1]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, sp_file, vocab_size):
  """finetune.py --task text_classification from a masked LM (no head) on a CSV."""
  work = tmp_path_factory.mktemp("text_classification")
  source = write_hf_checkpoint(work / "mlm", sp_file, vocab_size, seed=21)
  train = write_csv(work / "train.csv", sentiment_rows(240, 1))
  validation = write_csv(work / "val.csv", sentiment_rows(60, 2))
  code, stdout, stderr = script_main(
      "finetune", "--checkpoint", source, "--task", "text_classification", "--train", train,
      "--validation", validation, "--labels", "neg,pos", "--output", work / "tuned", *COMMON)
  return {"code": code, "stdout": stdout, "stderr": stderr, "work": work,
          "output": work / "tuned", "validation": validation}


@pytest.fixture(scope="module")
def tag_run(tmp_path_factory, wordpiece_dir, wordpiece_vocab):
  """finetune.py --task token_classification from a bare ELECTRA model on JSON Lines."""
  work = tmp_path_factory.mktemp("token_classification")
  source = write_electra_checkpoint(work / "electra", wordpiece_dir, len(wordpiece_vocab),
                                    "model", seed=22)
  train = write_jsonl(work / "train.jsonl", tagged_rows(240, 3))
  validation = write_jsonl(work / "val.jsonl", tagged_rows(60, 4))
  code, stdout, stderr = script_main(
      "finetune", "--checkpoint", source, "--task", "token_classification", "--train", train,
      "--validation", validation, "--output", work / "tuned", *COMMON)
  return {"code": code, "stdout": stdout, "stderr": stderr, "work": work,
          "output": work / "tuned", "validation": validation}


def exported_answers(run, texts) -> dict:
  """scripts/export.py of the run's output (no XLA), answering `texts` (serving_default)."""
  code, stdout, stderr = export_main("--checkpoint", run["output"], "--output",
                                     run["work"] / "exports", "--sequence-length", 32,
                                     "--warmup-batch-sizes", 1, "--no-xla")
  assert code == 0, stderr[-2000:]
  return tf.saved_model.load(stdout.strip().splitlines()[-1]).signatures["serving_default"](
      text=tf.constant(texts))


def history(run) -> dict:
  return json.loads(run["stderr"].strip().splitlines()[-1])["history"]


def test_text_classifier_learns_and_transformers_reads_it(text_run):
  import transformers
  assert text_run["code"] == 0, text_run["stderr"][-3000:]
  figures = history(text_run)
  assert figures["val_accuracy"][-1] >= 0.9 and figures["val_f1_macro"][-1] >= 0.9, figures
  assert "val_f1_macro" in text_run["stderr"].splitlines()[-2]     # the epoch line
  results = json.loads((text_run["output"] / "eval_results.json").read_text())
  best = int(np.argmax(figures["val_f1_macro"]))
  assert results["epoch"] == best + 1
  assert results["eval_f1_macro"] == figures["val_f1_macro"][best]
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      str(text_run["output"]))
  assert model.config.id2label == {0: "neg", 1: "pos"}               # the --labels order
  # The export answers as the transformers pipeline does on the same directory.
  texts = ["the cat is good today", "a sad dog sat", "great book", "awful rain on the roof"]
  out = exported_answers(text_run, texts)
  pipeline = transformers.pipeline("text-classification", model=str(text_run["output"]),
                                   device="cpu")
  expected = pipeline(texts)
  assert [label.decode() for label in out["label"].numpy()] == [e["label"] for e in expected]
  np.testing.assert_allclose(out["score"].numpy(), [e["score"] for e in expected], atol=1e-4)
  assert [e["label"] for e in expected] == ["pos", "neg", "pos", "neg"]


def test_tagger_learns_and_transformers_reads_it(tag_run):
  import transformers
  assert tag_run["code"] == 0, tag_run["stderr"][-3000:]
  assert "labels (sorted): B-LOC,B-PER,I-PER,O" in tag_run["stderr"]
  figures = history(tag_run)
  assert figures["val_f1"][-1] >= 0.8 and figures["val_accuracy"][-1] >= 0.9, figures
  assert {"val_precision", "val_recall"} <= set(figures)
  results = json.loads((tag_run["output"] / "eval_results.json").read_text())
  assert results["eval_f1"] == max(figures["val_f1"])
  model = transformers.AutoModelForTokenClassification.from_pretrained(str(tag_run["output"]))
  assert list(model.config.id2label.values()) == ["B-LOC", "B-PER", "I-PER", "O"]
  texts = ["anna smith visited berlin", "the cat sat in paris with maria"]
  out = exported_answers(tag_run, texts)
  pipeline = transformers.pipeline("token-classification", model=str(tag_run["output"]),
                                   aggregation_strategy="simple", device="cpu")
  for b, expected in enumerate(pipeline(texts)):
    count = int(out["num_entities"][b])
    assert [(g.decode(), int(s), int(e)) for g, s, e in zip(
        out["entity_group"][b, :count].numpy(), out["start"][b, :count].numpy(),
        out["end"][b, :count].numpy())] == [(e["entity_group"], e["start"], e["end"])
                                            for e in expected]
  # Trained on first sub-tokens: read word by word (aggregation "first"), it tags what
  # it learned.
  words = transformers.pipeline("token-classification", model=str(tag_run["output"]),
                                aggregation_strategy="first", device="cpu")
  found = [(e["entity_group"], e["word"]) for e in words(texts[0])]
  assert found[0][0] == "PER" and found[0][1].startswith("anna") and found[-1] == ("LOC",
                                                                                  "berlin")


def test_align_matches_transformers_word_ids(tag_run):
  """Each word's tag on its first sub-token, -100 elsewhere: what transformers'
  token-classification example builds from word_ids()."""
  import transformers
  from tfhub_models import ElectraTokenClassifier
  tagger = ElectraTokenClassifier.from_preset(str(tag_run["output"]))
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tag_run["output"]))
  rows = tagged_rows(20, 9) + [{"tokens": ["unbelievably", "annasmith", "berlin"],
                                "tags": ["O", "B-PER", "B-LOC"]}]
  words, tags = [r["tokens"] for r in rows], [r["tags"] for r in rows]
  for every in (False, True):
    inputs, labels = tagger.align(words, tags, label_all_tokens=every)
    for row, (w, t) in enumerate(zip(words, tags)):
      encoded = tokenizer(w, is_split_into_words=True)
      previous, want = None, []
      for word in encoded.word_ids():
        want.append(-100 if word is None or (word == previous and not every)
                    else tagger.labels.index(t[word]))
        previous = word
      assert inputs["token_ids"][row, :len(want)].tolist() == encoded["input_ids"]
      assert labels[row, :len(want)].tolist() == want, (w, every)
      assert (labels[row, len(want):] == -100).all()


def test_python_fit_takes_label_names_and_words(text_run, tag_run):
  from tfhub_models import ElectraTokenClassifier, XLMRobertaTextClassifier
  from tfhub_models.training import TrainingError
  classifier = XLMRobertaTextClassifier.from_preset(str(text_run["output"]))
  classifier.compile(jit_compile=False)
  rows = sentiment_rows(16, 5)
  texts, names = [r["text"] for r in rows], [r["label"] for r in rows]
  scores = classifier.evaluate(texts, names)
  assert set(scores) >= {"loss", "accuracy", "f1_macro"}
  assert scores["accuracy"] == pytest.approx(classifier.evaluate(
      texts, [classifier.labels.index(n) for n in names])["accuracy"])
  with pytest.raises(TrainingError, match=r"y:row 3: unknown label 'meh'"):
    classifier.fit(texts, names[:3] + ["meh"] + names[4:], epochs=1, verbose=0)
  tagger = ElectraTokenClassifier.from_preset(str(tag_run["output"]))
  tagger.compile(jit_compile=False)
  tagged = tagged_rows(16, 6)
  words, tags = [r["tokens"] for r in tagged], [r["tags"] for r in tagged]
  before = tagger.evaluate(words, tags)
  assert {"precision", "recall", "f1", "accuracy"} <= set(before)
  tagger.fit(words, tags, epochs=1, batch_size=8, verbose=0)
  with pytest.raises(TrainingError, match=r"y row 0: 1 tags for"):
    tagger.fit(words, [["O"]] + tags[1:], epochs=1, verbose=0)


@pytest.mark.parametrize("case", ["no column", "not an object", "tag count", "empty",
                                  "unknown label", "duplicate labels", "not IOB2",
                                  "output not empty"])
def test_bad_input_is_refused_before_training(case, text_run, tag_run, tmp_path):
  """Each refusal names the file, line and value (or the flag), before any step:
  no epoch line is printed and --output is not written."""
  source = text_run["output"] if case in ("no column", "unknown label", "duplicate labels",
                                          "output not empty", "empty") else tag_run["output"]
  task = "text_classification" if source == text_run["output"] else "token_classification"
  train = tmp_path / ("train.csv" if task == "text_classification" else "train.jsonl")
  extra, expected = [], None
  if case == "no column":
    write_csv(train, [{"sentence": "a good cat", "label": "pos"}], ("sentence", "label"))
    expected = r"train.csv:1: the header \(sentence, label\) has no column 'text' \(name it " \
               r"with --text-column\)"
  elif case == "not an object":
    train.write_text(json.dumps({"tokens": ["a"], "tags": ["O"]}) + "\n[1, 2]\n")
    expected = r"train.jsonl:2: each line must be a JSON object"
  elif case == "tag count":
    train.write_text(json.dumps({"tokens": ["anna", "ran"], "tags": ["B-PER"]}) + "\n")
    expected = r"train.jsonl:1: 1 tags for 2 tokens"
  elif case == "empty":
    train.write_text("text,label\n")
    expected = r"train.csv: no examples \(an empty file\)"
  elif case == "unknown label":
    write_csv(train, [{"text": "a good cat", "label": "pos"}, {"text": "a cat", "label": "meh"}])
    expected = r"train.csv:3: unknown label 'meh' \(the labels: neg, pos\)"
  elif case == "duplicate labels":
    write_csv(train, [{"text": "a good cat", "label": "pos"}])
    extra, expected = ["--labels", "neg,pos,neg", "--fresh-head"], r"--labels names neg more"
  elif case == "not IOB2":
    train.write_text(json.dumps({"tokens": ["anna", "ran"], "tags": ["PER", "O"]}) + "\n")
    extra = ["--validation", train, "--fresh-head"]
    expected = r"entity metrics .* IOB2 .* the labels are O, PER"
  else:
    write_csv(train, [{"text": "a good cat", "label": "pos"}])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    expected = r"--output .* is not empty; pass --overwrite"
  code, stdout, stderr = script_main("finetune", "--checkpoint", source, "--task", task,
                                     "--train", train, "--output", tmp_path / "out",
                                     "--verbose", 2, *extra)
  assert code != 0 and stdout == ""
  import re
  assert re.search(expected, stderr), stderr[-2000:]
  assert "epoch 1/" not in stderr and "Traceback" not in stderr
  assert not (tmp_path / "out").exists() or os_listing(tmp_path / "out") == ["notes.txt"]


def os_listing(path) -> list:
  import os
  return sorted(os.listdir(path))


def test_entity_metrics_equal_conlleval():
  """On random IOB2-ish sequences (ill-formed ones included: I- after O, type
  switches), the entity counts are conlleval's (the Python port of conlleval.pl,
  which seqeval's default mode reproduces), and precision, recall and F1 follow
  from them as seqeval computes them (0 where a count is 0)."""
  import conlleval
  rng = random.Random(0)
  tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
  for _ in range(300):
    true = [[rng.choice(tags) for _ in range(rng.randint(1, 12))]
            for _ in range(rng.randint(1, 6))]
    guessed = [[t if rng.random() < 0.7 else rng.choice(tags) for t in row] for row in true]
    lines = [line for t_row, g_row in zip(true, guessed)
             for line in [f"w {t} {g}" for t, g in zip(t_row, g_row)] + [""]]
    stats = conlleval.evaluate(lines)["overall"]["chunks"]["stats"]
    correct, predicted, gold = metrics.entity_counts(true, guessed)
    assert (correct, predicted, gold) == (stats["correct"], stats["pred"], stats["gold"])
    ours = metrics.entity_metrics(true, guessed)
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    assert ours["precision"] == pytest.approx(precision)
    assert ours["recall"] == pytest.approx(recall)
    assert ours["f1"] == pytest.approx(2 * precision * recall / (precision + recall)
                                       if precision + recall else 0.0)
  # seqeval's README example: F1 0.5 (one of two entities found, one of two predicted right).
  assert metrics.entity_metrics(
      [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]],
      [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
  )["f1"] == pytest.approx(0.5)


def test_macro_f1_equals_scikit_learn():
  from sklearn.metrics import f1_score
  rng = np.random.default_rng(0)
  for _ in range(50):
    labels, predicted = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
    present = sorted(set(labels) | set(predicted))
    assert metrics.classification_metrics(predicted, labels, 4)["f1_macro"] == pytest.approx(
        f1_score(labels, predicted, average="macro", labels=present, zero_division=0))


def test_fit_makes_its_checkpoint_dir_and_keeps_the_last_good_one(text_run, tmp_path,
                                                                 monkeypatch):
  """checkpoint_dir and its parents are made before the first step; a checkpoint
  that cannot be written stops the run naming the last good one, which stays."""
  import os
  from tfhub_models import XLMRobertaTextClassifier, atomic
  from tfhub_models.training import TrainingError
  classifier = XLMRobertaTextClassifier.from_preset(str(text_run["output"]))
  classifier.compile(jit_compile=False)
  rows = sentiment_rows(8, 7)
  texts, names = [r["text"] for r in rows], [r["label"] for r in rows]
  runs = tmp_path / "runs" / "cls"                  # neither exists yet
  writes = []
  real_write = atomic.write_json

  def full_disk_after_two(path, value):
    writes.append(path)
    if len(writes) > 2:
      raise OSError(28, "No space left on device")
    real_write(path, value)

  monkeypatch.setattr(atomic, "write_json", full_disk_after_two)
  with pytest.raises(TrainingError, match=r"could not write checkpoint 3 .*No space left.*"
                                          r"ckpt-2 is the last good checkpoint"):
    classifier.fit(texts, names, batch_size=2, epochs=1, checkpoint_dir=str(runs),
                   checkpoint_every=1, verbose=0)
  assert {"ckpt-2.index", "history-2.json"} <= set(os.listdir(runs))
