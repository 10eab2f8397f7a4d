"""Token classification (NER): entities grouped as the transformers pipeline groups
them, with character offsets, from the Python API and from exports, served."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfhub_models
from conftest import ROOT, save_tokenizer
from serving import client as serving_client
from tfhub_models import export
from tfhub_models.export.signatures import TokenClassification

NER = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "B-ORG", 6: "I-ORG"}
STRATEGIES = ("none", "simple", "first", "average", "max")
LINES = [
    "Anna Schmidt wohnt in Berlin und arbeitet bei Siemens.",
    "  Pierre  visite Lyon, puis Paris ",
    "東京は日本の首都です。 Tokyo is big",
    "Москва — столица России; Владимир живёт там.",
    "ﬁne day, naïve café in São Paulo",
    "x <mask> y <unk> </s> [MASK] [UNK]",
    "",
    "Ünïcödé ☃ 🎉 text\u200b here\ttab\u3000wide",
    "(Anna) don't stop: O'Neil's e-mail!",
    "ÉLAN İstanbul ß ΣΑΣ Ἀθῆναι",
    "x\x00y control\x07 and \u00ad soft",
    "Dr. Müller-Lüdenscheidt aus Köln trifft Frau Øresund in Århus " * 3,   # past the cut
]
# Invalid UTF-8: the pipeline gets the text decoded with U+FFFD, as the export replaces it.
RAW = [line.encode("utf-8") for line in LINES] + [b"Anna \xff\xfe in Ber\xc3lin", b"\xe6\x9d"]
TEXTS = [raw.decode("utf-8", "replace") for raw in RAW]
SEQUENCE_LENGTH = 32


def _write(directory, family, sp_file, vocab_size, wordpiece_dir, wordpiece_vocab, labels=NER):
  import torch
  import transformers
  common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, id2label=labels,
                label2id={v: k for k, v in labels.items()})
  if family == "xlm_roberta":
    config = transformers.XLMRobertaConfig(vocab_size=vocab_size, max_position_embeddings=130,
                                           type_vocab_size=1, **common)
    model_class, tokenizer_source = transformers.XLMRobertaForTokenClassification, sp_file
  else:
    config = transformers.ElectraConfig(vocab_size=len(wordpiece_vocab), embedding_size=24,
                                        max_position_embeddings=64, **common)
    model_class, tokenizer_source = transformers.ElectraForTokenClassification, wordpiece_dir
  torch.manual_seed(11)
  model = model_class(config).eval()
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(torch.randn_like(parameter) * 0.05)
    # A confident, varied head: every label wins somewhere, runs of I- continue groups.
    model.classifier.weight.mul_(40.0)
    model.classifier.bias.copy_(torch.tensor([0.5, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0][:len(labels)]))
  model.save_pretrained(str(directory))
  save_tokenizer(directory, tokenizer_source)
  return directory


@pytest.fixture(scope="module")
def ner_dirs(tmp_path_factory, sp_file, vocab_size, wordpiece_dir, wordpiece_vocab):
  """family -> its tagger checkpoint, written on first use and shared by the module."""
  made = {}

  def get(family):
    if family not in made:
      made[family] = _write(tmp_path_factory.mktemp(f"ner_{family}"), family, sp_file,
                            vocab_size, wordpiece_dir, wordpiece_vocab)
    return made[family]
  return get


@pytest.fixture(scope="module", params=["xlm_roberta", "electra"])
def ner_dir(request, ner_dirs):
  return ner_dirs(request.param)


def _pipeline(directory):
  import transformers
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory),
                                                         model_max_length=SEQUENCE_LENGTH)
  return transformers.pipeline("token-classification", model=str(directory),
                               tokenizer=tokenizer, device="cpu")


def _theirs(pipe, strategy):
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # "Tokenizer does not support real words" (XLM-R)
    return [pipe(text, aggregation_strategy=strategy) if text else [] for text in TEXTS]


def _assert_same_entities(ours, theirs, strategy):
  key = "entity" if strategy == "none" else "entity_group"
  assert len(ours) == len(theirs)
  for text, mine, reference in zip(TEXTS, ours, theirs):
    assert [(e[key], e["word"], e["start"], e["end"]) for e in mine] == \
        [(e[key], e["word"], e["start"], e["end"]) for e in reference], (strategy, text)
    np.testing.assert_allclose([e["score"] for e in mine], [e["score"] for e in reference],
                               rtol=1e-4, atol=1e-4)


def test_tag_matches_the_pipeline_for_every_strategy(ner_dir):
  task = tfhub_models.load(ner_dir, sequence_length=SEQUENCE_LENGTH)
  pipe = _pipeline(ner_dir)
  counts = {}
  for strategy in STRATEGIES:
    theirs = _theirs(pipe, strategy)
    ours = task.tag(RAW, aggregation_strategy=strategy)
    _assert_same_entities(ours, theirs, strategy)
    counts[strategy] = sum(map(len, theirs))
    if strategy == "none":
      assert [[e["index"] for e in o] for o in ours] == [[e["index"] for e in t] for t in theirs]
  # The comparison is not vacuous: entities of several types, and groups of many tokens.
  assert counts["simple"] >= 20 and counts["none"] > counts["simple"], counts
  simple = task.tag(RAW)
  assert {e["entity_group"] for o in simple for e in o} >= {"PER", "LOC", "ORG"}
  assert any(len(e["word"]) > 3 for o in simple for e in o)
  # Past the cut (32 tokens): no entity of the long line's end is reported.
  long_line = TEXTS[LINES.index(LINES[-1])]
  assert max(e["end"] for e in simple[len(LINES) - 1]) < len(long_line) // 2


def test_export_answers_as_the_pipeline(ner_dir, tmp_path):
  """Each family through export.export, without XLA, with a word-level strategy."""
  strategy = "first" if "electra" in ner_dir.name else "max"
  task = tfhub_models.load(ner_dir, sequence_length=SEQUENCE_LENGTH)
  path = export.export(task, str(tmp_path), "ner", None, export.ExportOptions(
      jit_compile=False, warmup_batch_sizes=(1,), aggregation=strategy))
  from servers import CheckServing, assert_serving_flags
  checks = CheckServing(path)     # scripts/check_serving.py, in the background
  loaded = tf.saved_model.load(path)
  out = {k: v.numpy() for k, v in
         loaded.signatures["serving_default"](text=tf.constant(RAW)).items()}
  assert set(out) == {"entity_group", "score", "word", "start", "end", "num_entities"}
  answers = serving_client.entity_answers(out)
  ours = [[{"entity_group": e.entity_group, "score": e.score, "word": e.word, "start": e.start,
            "end": e.end} for e in row] for row in answers]
  _assert_same_entities(ours, _theirs(_pipeline(ner_dir), strategy), strategy)
  # Slots past a row's entities.
  most = out["entity_group"].shape[1]
  assert most >= out["num_entities"].max()
  empty = LINES.index("")
  assert out["num_entities"][empty] == 0 and (out["start"][empty] == -1).all()
  assert (out["word"][empty] == b"").all() and (out["score"][empty] == 0).all()
  # token_labels: every input token, specials and padding without labels or offsets.
  labels = {k: v.numpy() for k, v in
            loaded.signatures["token_labels"](text=tf.constant(RAW[:2])).items()}
  inputs, offsets = task.preprocessor.with_offsets(tf.constant(RAW[:2]))
  np.testing.assert_array_equal(labels["padding_mask"], inputs["padding_mask"].numpy())
  np.testing.assert_array_equal(labels["start"], offsets["start"].numpy())
  special = labels["start"] < 0
  assert (labels["labels"][special] == b"").all() and (labels["scores"][special] == 0).all()
  assert set(labels["labels"][~special].tolist()) <= {v.encode() for v in NER.values()}
  assert (labels["tokens"][labels["padding_mask"] == 0] == b"").all()
  assert_serving_flags(checks.passed(path), xla=False)


def test_served_export_tags_through_the_client_and_predict(tmp_path, ner_dirs):
  """XLM-R through the command line (the default: simple, with XLA), checked and served."""
  from servers import CheckServing, ServerProcess
  source = ner_dirs("xlm_roberta")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run([sys.executable, "scripts/export.py", "--checkpoint", str(source),
                         "--output", str(tmp_path / "models"), "--name", "ner",
                         "--sequence-length", str(SEQUENCE_LENGTH), "--warmup-batch-sizes", "1"],
                        capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  version = done.stdout.strip().splitlines()[-1]
  checks = CheckServing(version)     # scripts/check_serving.py, while the server starts
  theirs = _theirs(_pipeline(source), "simple")
  with ServerProcess(tmp_path / "server", "--model_name", "ner", "--model_base_path",
                     str(tmp_path / "models" / "ner"),
                     "--xla_cpu_compilation_enabled=true") as server:
    with serving_client.ServingClient(server.grpc, "ner") as client:
      answers = client.tag(TEXTS)
    ours = [[dataclasses.asdict(e) for e in row] for row in answers]
    _assert_same_entities(ours, theirs, "simple")
    first = TEXTS[0]
    table = subprocess.run([sys.executable, "scripts/predict.py", "--server", server.grpc,
                            "--model", "ner", first],
                           capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
  assert table.returncode == 0, table.stderr[-2000:]
  lines = table.stdout.splitlines()
  assert lines[0] == serving_client.highlight(first, answers[0])
  entity = answers[0][0]
  assert f"[{first[entity.start:entity.end]}]({entity.entity_group})" in lines[0]
  assert lines[1].split()[:2] == [entity.entity_group, f"{entity.score:.4f}"]
  stdout = checks.passed(version)
  assert "token_labels" in stdout
  from servers import assert_serving_flags
  assert_serving_flags(stdout, xla=True)


def test_label_schemes_that_are_not_bio_are_refused_for_grouping(
    tmp_path, sp_file, vocab_size, wordpiece_dir, wordpiece_vocab):
  labels = {0: "LABEL_0", 1: "PER", 2: "E-LOC"}
  source = _write(tmp_path / "src", "electra", sp_file, vocab_size, wordpiece_dir,
                  wordpiece_vocab, labels=labels)
  task = tfhub_models.load(source, sequence_length=SEQUENCE_LENGTH)
  for strategy in ("simple", "first", "average", "max"):
    with pytest.raises(ValueError, match=r"'LABEL_0', 'PER', 'E-LOC'.*--aggregation none"):
      TokenClassification(task, export.ExportOptions(aggregation=strategy))
  with pytest.raises(ValueError, match="unknown aggregation 'longest'"):
    TokenClassification(task, export.ExportOptions(aggregation="longest"))
  with pytest.raises(ValueError, match="one text"):
    TokenClassification(task, export.ExportOptions(pair=True))
  # Per-token labels need no scheme, and answer as the pipeline's "none".
  TokenClassification(task, export.ExportOptions(aggregation="none"))
  _assert_same_entities(task.tag(RAW, "none"), _theirs(_pipeline(source), "none"), "none")
