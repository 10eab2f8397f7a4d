"""Text classifiers: Hugging Face heads loaded exactly, pipeline-shaped answers,
fine-tuning with the training API, and save_to_preset back to transformers."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_hf_checkpoint, save_tokenizer
from tfhub_models import XLMRobertaTextClassifier, optimizers
from tfhub_models.checkpoints import CheckpointError

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
TEXTS = ["I love this film.", "Das Essen war schrecklich.", "c'est correct, sans plus",
         "the weather is fine today", "no", "¿Dónde está la biblioteca?"]


def _write_classifier(directory, sp_file, vocab_size, *, seed=0, **config):
  import torch
  import transformers
  settings = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=37, max_position_embeddings=130,
                  type_vocab_size=1, layer_norm_eps=1e-5, id2label=LABELS,
                  label2id={v: k for k, v in LABELS.items()})
  settings.update(config)
  torch.manual_seed(seed)
  model = transformers.XLMRobertaForSequenceClassification(
      transformers.XLMRobertaConfig(**settings)).eval()
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(torch.randn_like(parameter) * 0.05)
  model.save_pretrained(str(directory))
  save_tokenizer(directory, sp_file)
  return directory


@pytest.fixture(scope="module")
def xlmr_classifier_dir(tmp_path_factory, sp_file, vocab_size):
  return _write_classifier(tmp_path_factory.mktemp("xlmr_cls"), sp_file, vocab_size, seed=1)


def _pipeline(directory):
  import transformers
  return transformers.pipeline("text-classification", model=str(directory),
                               tokenizer=str(directory), device="cpu")


def _their_logits(directory, texts, pairs=None):
  import torch
  import transformers
  model = transformers.AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
  encoded = tokenizer(texts, pairs, padding=True, return_tensors="pt")
  with torch.no_grad():
    return model(**encoded).logits.numpy()


def _our_logits(task, texts, pairs=None):
  inputs = (task.preprocessor(tf.constant(texts)) if pairs is None
            else task.preprocessor(tf.constant(texts), tf.constant(pairs)))
  return task(inputs).numpy()


def test_classifier_matches_transformers_and_its_pipeline(xlmr_classifier_dir):
  import tfhub_models
  task = tfhub_models.load(xlmr_classifier_dir)
  assert isinstance(task, XLMRobertaTextClassifier) and task.labels == tuple(LABELS.values())
  np.testing.assert_allclose(_our_logits(task, TEXTS), _their_logits(xlmr_classifier_dir, TEXTS),
                             rtol=1e-4, atol=1e-4)
  pairs = ["yes", "nein", "peut-être", "maybe", "sí", "no sé"]
  np.testing.assert_allclose(_our_logits(task, TEXTS, pairs),
                             _their_logits(xlmr_classifier_dir, TEXTS, pairs),
                             rtol=1e-4, atol=1e-4)
  theirs = _pipeline(xlmr_classifier_dir)(TEXTS, top_k=None)
  ours = task.classify(TEXTS, top_k=None)
  for mine, reference in zip(ours, theirs):
    assert [a["label"] for a in mine] == [b["label"] for b in reference]
    np.testing.assert_allclose([a["score"] for a in mine], [b["score"] for b in reference],
                               rtol=1e-4, atol=1e-5)
  assert [a[0]["label"] for a in task.classify(TEXTS)] == [r[0]["label"] for r in theirs]


def test_backbone_needs_num_classes_and_head_mismatch_is_named(
    tmp_path, sp_file, vocab_size, xlmr_classifier_dir):
  backbone_dir = write_hf_checkpoint(tmp_path / "mlm", sp_file, vocab_size, seed=2)
  with pytest.raises(CheckpointError, match="num_classes"):
    XLMRobertaTextClassifier.from_preset(str(backbone_dir))
  fresh = XLMRobertaTextClassifier.from_preset(str(backbone_dir), num_classes=4)
  assert fresh.num_classes == 4 and fresh.labels == ("LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3")
  import json
  config = json.loads((xlmr_classifier_dir / "config.json").read_text())
  broken = tmp_path / "broken"
  broken.mkdir()
  for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
    (broken / name).symlink_to(xlmr_classifier_dir / name)
  config["id2label"] = {"0": "a", "1": "b"}
  config["label2id"] = {"a": 0, "b": 1}
  (broken / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match="3 outputs but config.json's id2label names 2"):
    XLMRobertaTextClassifier.from_preset(str(broken))


def test_fine_tuned_classifier_learns_and_saves_for_transformers(tmp_path, sp_file, vocab_size):
  backbone_dir = write_hf_checkpoint(tmp_path / "mlm", sp_file, vocab_size, seed=3,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  task = XLMRobertaTextClassifier.from_preset(str(backbone_dir), num_classes=2,
                                              labels=["animal", "food"])
  animals = ["the cat sleeps", "a dog barks", "the horse runs", "birds fly high",
             "a cow eats grass", "the fish swims"]
  foods = ["fresh bread and butter", "hot soup for dinner", "a sweet apple pie",
           "rice with beans", "cheese on toast", "pasta with tomato sauce"]
  texts, labels = animals + foods, [0] * 6 + [1] * 6
  task.compile(optimizer=optimizers.AdamW(3e-3, weight_decay=0.0))
  history = task.fit(texts, labels, batch_size=6, epochs=15, seed=0, verbose=0)
  assert history["accuracy"][-1] == 1.0, history
  assert task.evaluate(texts, labels)["accuracy"] == 1.0
  assert task.predict(texts).shape == (12, 2)
  saved = task.save_to_preset(tmp_path / "tuned")
  np.testing.assert_allclose(_our_logits(task, texts), _their_logits(saved, texts),
                             rtol=1e-4, atol=1e-4)
  import transformers
  config = transformers.AutoConfig.from_pretrained(str(saved))
  assert config.id2label == {0: "animal", 1: "food"}
  again = XLMRobertaTextClassifier.from_preset(str(saved))
  assert again.labels == ("animal", "food")
  np.testing.assert_allclose(_our_logits(again, texts), _our_logits(task, texts), rtol=1e-6)
  with pytest.raises(Exception, match="outside the classes"):
    task.fit(texts, [2] * 12, verbose=0)


@pytest.fixture(scope="module")
def electra_classifier_dir(tmp_path_factory, wordpiece_dir, wordpiece_vocab):
  import torch
  import transformers
  directory = tmp_path_factory.mktemp("electra_cls")
  labels = {0: "toxic", 1: "funny", 2: "long", 3: "question"}
  config = transformers.ElectraConfig(
      vocab_size=len(wordpiece_vocab), embedding_size=24, hidden_size=32, num_hidden_layers=2,
      num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
      id2label=labels, label2id={v: k for k, v in labels.items()},
      problem_type="multi_label_classification")
  torch.manual_seed(4)
  model = transformers.ElectraForSequenceClassification(config).eval()
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(torch.randn_like(parameter) * 0.05)
  model.save_pretrained(str(directory))
  save_tokenizer(directory, wordpiece_dir)
  return directory


def test_electra_multi_label_classifier_and_pairs(electra_classifier_dir, tmp_path):
  import tfhub_models
  from tfhub_models import ElectraTextClassifier
  task = tfhub_models.load(electra_classifier_dir)
  assert isinstance(task, ElectraTextClassifier)
  assert task.problem_type == "multi_label_classification"
  texts = ["the cat sat on the mat", "a dog ran in the park", "why is the sky blue"]
  pairs = ["the mat", "the park", "because"]
  np.testing.assert_allclose(_our_logits(task, texts), _their_logits(electra_classifier_dir, texts),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(_our_logits(task, texts, pairs),
                             _their_logits(electra_classifier_dir, texts, pairs),
                             rtol=1e-4, atol=1e-4)
  theirs = _pipeline(electra_classifier_dir)(texts, top_k=None)
  for mine, reference in zip(task.classify(texts, top_k=None), theirs):
    assert [a["label"] for a in mine] == [b["label"] for b in reference]
    np.testing.assert_allclose([a["score"] for a in mine], [b["score"] for b in reference],
                               rtol=1e-4, atol=1e-5)
  # Multi-label targets train with binary cross-entropy; the preset keeps the type.
  y = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]], np.float32)
  task.compile(optimizer=optimizers.AdamW(1e-3))
  history = task.fit((texts, pairs), y, batch_size=3, epochs=2, verbose=0)
  assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()
  saved = task.save_to_preset(tmp_path / "tuned")
  np.testing.assert_allclose(_our_logits(task, texts, pairs), _their_logits(saved, texts, pairs),
                             rtol=1e-4, atol=1e-4)
  assert ElectraTextClassifier.from_preset(str(saved)).problem_type == "multi_label_classification"


def test_classifier_export_answers_as_the_pipeline(xlmr_classifier_dir, tmp_path):
  import os
  import subprocess
  import sys
  from conftest import ROOT
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run([sys.executable, "scripts/export.py", "--checkpoint",
                         str(xlmr_classifier_dir), "--output", str(tmp_path), "--name", "sentiment",
                         "--pair", "--top-k", "10", "--sequence-length", "32",
                         "--warmup-batch-sizes", "1"],
                        capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  version = done.stdout.strip().splitlines()[-1]
  from servers import CheckServing, ServerProcess
  import tfhub_models
  from tfhub_models import export
  plain = export.export(tfhub_models.load(xlmr_classifier_dir, sequence_length=32),
                        tmp_path, "sentiment_no_xla", options=export.ExportOptions(
                            pair=True, jit_compile=False, warmup_batch_sizes=(1,)))
  checked = CheckServing(version, plain)   # scripts/check_serving.py, in the background
  signature = tf.saved_model.load(version).signatures["serving_default"]
  pairs = ["yes"] * len(TEXTS)
  out = signature(text=tf.constant(TEXTS), text_pair=tf.constant(pairs))
  assert out["top_k_labels"].shape == (len(TEXTS), 3)           # K capped at C
  theirs = _pipeline(xlmr_classifier_dir)([{"text": t, "text_pair": p}
                                           for t, p in zip(TEXTS, pairs)], top_k=None)
  for b, reference in enumerate(theirs):
    assert out["label"][b].numpy().decode() == reference[0]["label"]
    assert [x.decode() for x in out["top_k_labels"][b].numpy()] == [r["label"] for r in reference]
    np.testing.assert_allclose(out["top_k_scores"][b].numpy(), [r["score"] for r in reference],
                               rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out["logits"].numpy(),
                             _their_logits(xlmr_classifier_dir, TEXTS, pairs), rtol=1e-4,
                             atol=1e-4)
  # Served locally: the client's classify and predict.py's table.
  from serving.client import ServingClient
  with ServerProcess(tmp_path / "server", "--model_name", "sentiment", "--model_base_path",
                     str(tmp_path / "sentiment"), "--xla_cpu_compilation_enabled=true") as server:
    with ServingClient(server.grpc, "sentiment") as client:
      answers = client.classify(TEXTS, pairs)
    for mine, reference in zip(answers, theirs):
      assert [a.label for a in mine] == [r["label"] for r in reference]
      np.testing.assert_allclose([a.score for a in mine], [r["score"] for r in reference],
                                 rtol=1e-4, atol=1e-5)
    table = subprocess.run([sys.executable, "scripts/predict.py", "--server", server.grpc,
                            "--model", "sentiment", "--text-pair", "yes", TEXTS[0]],
                           capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
  assert table.returncode == 0, table.stderr[-2000:]
  assert table.stdout.splitlines()[0] == TEXTS[0]
  assert table.stdout.splitlines()[1].split()[:2] == ["1.", theirs[0][0]["label"]]
  from servers import assert_serving_flags
  assert_serving_flags(checked.passed(version), xla=True)
  assert_serving_flags(checked.passed(plain), xla=False)


NER = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


@pytest.mark.parametrize("family", ["xlm_roberta", "electra"])
def test_token_classifier_matches_transformers_trains_and_saves(
    family, tmp_path, sp_file, vocab_size, wordpiece_dir, wordpiece_vocab):
  import torch
  import transformers
  import tfhub_models
  if family == "xlm_roberta":
    config = transformers.XLMRobertaConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=130, type_vocab_size=1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, id2label=NER,
        label2id={v: k for k, v in NER.items()})
    model_class, tokenizer_source = transformers.XLMRobertaForTokenClassification, sp_file
    texts = ["Anna wohnt in Berlin.", "Pierre visite Lyon", "nobody here"]
  else:
    config = transformers.ElectraConfig(
        vocab_size=len(wordpiece_vocab), embedding_size=24, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, id2label=NER,
        label2id={v: k for k, v in NER.items()})
    model_class, tokenizer_source = transformers.ElectraForTokenClassification, wordpiece_dir
    texts = ["the cat sat on the mat", "a dog ran in the park", "birds sing"]
  torch.manual_seed(6)
  model = model_class(config).eval()
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(torch.randn_like(parameter) * 0.05)
  source = tmp_path / "src"
  model.save_pretrained(str(source))
  save_tokenizer(source, tokenizer_source)
  task = tfhub_models.load(source)
  assert task.task == "token_classification" and task.labels == tuple(NER.values())
  inputs = task.preprocessor(tf.constant(texts))
  ours = task(inputs).numpy()
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(inputs["token_ids"].numpy(), dtype=torch.long),
                   attention_mask=torch.tensor(inputs["padding_mask"].numpy())).logits.numpy()
  real = inputs["padding_mask"].numpy().astype(bool)
  np.testing.assert_allclose(ours[real], theirs[real], rtol=1e-4, atol=1e-4)
  answers = task.token_labels(texts)
  assert [len(a) for a in answers] == real.sum(1).tolist()
  assert answers[0][1][1] == NER[int(theirs[0, 1].argmax())]
  # Fine-tune on preprocessed tokens: label 3 (B-LOC) on the second token, O elsewhere,
  # -100 (ignored) on the specials, as transformers' data collators write them.
  labels = np.where(real, 0, -100)
  labels[:, 0] = -100
  labels[:, 1] = 3
  x = {k: v.numpy() for k, v in inputs.items()}
  task.compile(optimizer=optimizers.AdamW(1e-2, weight_decay=0.0))
  history = task.fit(x, labels, batch_size=3, epochs=20, verbose=0)
  assert history["accuracy"][-1] == 1.0, history
  saved = task.save_to_preset(tmp_path / "tuned")
  reloaded = transformers.AutoModelForTokenClassification.from_pretrained(str(saved)).eval()
  with torch.no_grad():
    again = reloaded(input_ids=torch.tensor(x["token_ids"], dtype=torch.long),
                     attention_mask=torch.tensor(x["padding_mask"])).logits.numpy()
  np.testing.assert_allclose(task(inputs).numpy()[real], again[real], rtol=1e-4, atol=1e-4)
  assert type(task).from_preset(str(saved)).labels == tuple(NER.values())
