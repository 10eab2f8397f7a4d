"""ELECTRA against transformers: backbone, both heads, exports, TF Hub format."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ELECTRA_CLASSES, ROOT, write_electra_checkpoint
import tfhub_models
from tfhub_models import checkpoints, export, hub
from tfhub_models.models import electra
from tfhub_models.tasks import find_masks

FIRST = ["The capital of France is [MASK].", "der zug fährt [MASK] [MASK] uhr", "ok", ""]
SECOND = ["Paris has many museums.", "eins", "a much longer second segment than the first", ""]


@pytest.fixture(scope="module")
def electra_checkpoints(tmp_path_factory, wordpiece_dir, wordpiece_vocab):
  """Each kind with embedding_dim != hidden_dim, plus a discriminator with equal sizes."""
  size = len(wordpiece_vocab)
  out = {kind: write_electra_checkpoint(tmp_path_factory.mktemp(kind), wordpiece_dir, size, kind,
                                        seed=i)
         for i, kind in enumerate(ELECTRA_CLASSES)}
  out["square"] = write_electra_checkpoint(
      tmp_path_factory.mktemp("square"), wordpiece_dir, size, "discriminator", seed=9,
      embedding_size=32, hidden_act="relu", num_hidden_layers=3)
  return out


def reference(directory, kind, inputs):
  import torch
  import transformers
  cls = ELECTRA_CLASSES["discriminator" if kind == "square" else kind]
  model = getattr(transformers, cls).from_pretrained(str(directory)).eval()
  with torch.no_grad():
    return model(input_ids=torch.tensor(inputs["token_ids"].numpy(), dtype=torch.long),
                 token_type_ids=torch.tensor(inputs["segment_ids"].numpy(), dtype=torch.long),
                 attention_mask=torch.tensor(inputs["padding_mask"].numpy(), dtype=torch.long))


def test_task_is_inferred_from_the_checkpoint(electra_checkpoints):
  kinds = {"discriminator": electra.ElectraDiscriminator, "generator": electra.ElectraMaskedLM,
           "model": electra.ElectraEncoder, "square": electra.ElectraDiscriminator}
  for kind, cls in kinds.items():
    assert type(tfhub_models.load(electra_checkpoints[kind])) is cls
  with pytest.raises(checkpoints.CheckpointError, match="needs the generator head"):
    tfhub_models.load(electra_checkpoints["discriminator"], task="fill_mask")
  encoder = tfhub_models.load(electra_checkpoints["discriminator"], task="embedding")
  assert isinstance(encoder, electra.ElectraEncoder)


@pytest.mark.parametrize("kind", ["discriminator", "square", "model"])
@pytest.mark.parametrize("pair", [False, True])
def test_backbone_and_discriminator_match_transformers(electra_checkpoints, kind, pair):
  task = tfhub_models.load(electra_checkpoints[kind])
  inputs = task.preprocessor(tf.constant(FIRST), tf.constant(SECOND) if pair else None)
  assert (inputs["padding_mask"].numpy() == 0).any()
  assert (inputs["segment_ids"].numpy() == 1).any() == pair
  expected = reference(electra_checkpoints[kind], kind, inputs)
  real = inputs["padding_mask"].numpy().astype(bool)
  # Graph, XLA and SavedModel runs equal eager ones: tests/test_conformance.py.
  if kind == "model":
    want = expected.last_hidden_state.numpy()
    outputs = task.backbone(inputs)
    got = outputs["sequence_output"]
    np.testing.assert_allclose(outputs["pooled_output"].numpy(), want[:, 0],
                               atol=1e-4)                        # [CLS] state, no pooler
  else:
    want = expected.logits.numpy()
    got = task(inputs)
  np.testing.assert_allclose(got.numpy()[real], want[real], atol=1e-4)


def test_generator_matches_transformers(electra_checkpoints):
  task = tfhub_models.load(electra_checkpoints["generator"])
  inputs = task.preprocessor(tf.constant(FIRST))
  positions, counts = find_masks(inputs["token_ids"], task.tokenizer.mask_token_id)
  assert counts.numpy().tolist() == [1, 2, 0, 0]
  expected = reference(electra_checkpoints["generator"], "generator", inputs).logits.numpy()
  expected = np.take_along_axis(expected, positions.numpy()[..., None], axis=1)
  got = task({"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"],
              "mask_positions": positions})
  np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)
  answers = task.fill_mask(FIRST[:2], top_k=3)
  assert [len(a) for a in answers] == [1, 2]


def test_presets_are_the_public_configs():
  small = electra.PRESETS["electra_small_discriminator_uncased_en"]
  assert (small.embedding_dim, small.hidden_dim, small.num_heads, small.num_layers) == (
      128, 256, 4, 12)
  large_generator = electra.PRESETS["electra_large_generator_uncased_en"]
  assert (large_generator.embedding_dim, large_generator.hidden_dim,
          large_generator.num_layers) == (1024, 256, 24)
  assert all(c.vocabulary_size == 30522 for c in electra.PRESETS.values())
  assert len(electra.PRESETS) == 6


# ---------------------------------------------------------------------------
# Exports.

@pytest.fixture(scope="module")
def electra_built(electra_checkpoints, tmp_path_factory):
  """The three exports, and scripts/check_serving.py on them started in the background
  while the tests that load them in this process run."""
  from servers import CheckServing
  base = tmp_path_factory.mktemp("electra_models")
  small = dict(warmup_batch_sizes=(1,))
  out = {}
  discriminator = tfhub_models.load(electra_checkpoints["discriminator"], sequence_length=32)
  out["discriminator"] = export.export(discriminator, base, "discriminator",
                                       options=export.ExportOptions(pair=True, **small))
  out["discriminator_no_xla"] = export.export(
      discriminator, base, "discriminator_no_xla",
      options=export.ExportOptions(pair=True, jit_compile=False, **small))
  out["generator"] = export.export(
      tfhub_models.load(electra_checkpoints["generator"], sequence_length=32), base, "generator",
      options=export.ExportOptions(top_k=3, **small))
  out["model"] = export.export(
      tfhub_models.load(electra_checkpoints["model"], sequence_length=32), base, "model",
      options=export.ExportOptions(jit_compile=False, **small))
  checks = CheckServing(*out.values(), timeout=600)
  yield out, checks
  checks.stop()


@pytest.fixture(scope="module")
def electra_exports(electra_built):
  return electra_built[0]


def test_discriminator_export_matches_eager(electra_checkpoints, electra_exports):
  task = tfhub_models.load(electra_checkpoints["discriminator"], sequence_length=32)
  loaded = tf.saved_model.load(str(electra_exports["discriminator"]))
  assert set(loaded.signatures) == {"serving_default", "embedding"}
  out = loaded.signatures["serving_default"](text=tf.constant(FIRST),
                                             text_pair=tf.constant(SECOND))
  inputs = task.preprocessor(tf.constant(FIRST), tf.constant(SECOND))
  np.testing.assert_array_equal(out["token_ids"].numpy(), inputs["token_ids"].numpy())
  real = inputs["padding_mask"].numpy().astype(bool)
  probability = tf.sigmoid(task(inputs)).numpy()
  np.testing.assert_allclose(out["replaced_probability"].numpy()[real], probability[real],
                             atol=1e-5)
  assert (out["replaced_probability"].numpy()[~real] == 0).all()
  assert out["tokens"].numpy()[0, 0] == b"[CLS]" and out["tokens"].numpy()[0, -1] == b""
  embedded = loaded.signatures["embedding"](text=tf.constant(FIRST), text_pair=tf.constant(SECOND))
  outputs = task.backbone(inputs)
  np.testing.assert_allclose(embedded["sequence_output"].numpy()[real],
                             outputs["sequence_output"].numpy()[real], atol=1e-5)
  np.testing.assert_allclose(embedded["pooled_output"].numpy(),
                             outputs["pooled_output"].numpy(), atol=1e-5)
  with pytest.raises(tf.errors.InvalidArgumentError, match="text_pair must have the same shape"):
    loaded.signatures["serving_default"](text=tf.constant(["a", "b"]),
                                         text_pair=tf.constant(["c"]))
  long = " ".join(["word"] * 100)
  out = loaded.signatures["serving_default"](text=tf.constant([long, b"\xff"]),
                                             text_pair=tf.constant([long, ""]))
  assert out["token_ids"].shape == (2, 32)


def test_generator_export_fills_masks(electra_checkpoints, electra_exports):
  task = tfhub_models.load(electra_checkpoints["generator"], sequence_length=32)
  loaded = tf.saved_model.load(str(electra_exports["generator"]))
  assert set(loaded.signatures) == {"serving_default", "logits", "tokenize", "embedding"}
  out = loaded.signatures["serving_default"](text=tf.constant(FIRST))
  expected = task.fill_mask(FIRST, top_k=3)
  assert out["num_masks"].numpy().tolist() == [1, 2, 0, 0]
  for b, masks in enumerate(expected):
    for m, fillers in enumerate(masks):
      assert out["top_k_ids"].numpy()[b, m].tolist() == [f["token_id"] for f in fillers]
      assert [t.decode() for t in out["top_k_tokens"].numpy()[b, m]] == [
          f["token"] for f in fillers]


@pytest.mark.parametrize("kind", ["discriminator", "discriminator_no_xla", "generator",
                                  "model"])
def test_check_serving_passes_on_every_electra_export(electra_built, kind):
  from servers import assert_serving_flags
  exports, checks = electra_built
  stdout = checks.passed(exports[kind])
  assert "FastWordpieceTokenizeWithOffsets" in stdout
  assert_serving_flags(stdout, xla=kind in ("discriminator", "generator"))


# ---------------------------------------------------------------------------
# TF Hub format.

@pytest.mark.parametrize("source", ["electra", "xlm_roberta"])
def test_hub_encoder_fine_tunes(source, electra_checkpoints, hf_checkpoint, tmp_path):
  directory = electra_checkpoints["discriminator"] if source == "electra" else hf_checkpoint
  model = tfhub_models.load(directory, task="embedding", sequence_length=64)
  path = hub.export_hub(model, tmp_path, source)
  encoder = tf.saved_model.load(str(path / "encoder"))
  preprocessor = tf.saved_model.load(str(path / "preprocessor"))
  assert (path / "preprocessor" / "assets").is_dir() and any(
      (path / "preprocessor" / "assets").iterdir())
  assert len(encoder.variables) == len(model.backbone.variables)
  assert list(encoder.regularization_losses) == []

  first = preprocessor.tokenize(tf.constant(["the capital of france", "der zug"]))
  second = preprocessor.tokenize(tf.constant(["is paris", "fährt ab"]))
  packed = preprocessor.bert_pack_inputs([first, second], seq_length=16)
  assert packed["input_word_ids"].shape == (2, 16)
  default_length = min(128, model.backbone.config.max_sequence_length)   # the tiny ELECTRA has 64
  assert preprocessor(tf.constant(["one"]))["input_mask"].shape == (1, default_length)

  # The encoder's answer is the backbone's.
  outputs = encoder(packed, training=False)
  assert set(outputs) == {"sequence_output", "pooled_output", "default"}
  np.testing.assert_array_equal(outputs["default"].numpy(), outputs["pooled_output"].numpy())
  ids, types, mask = packed["input_word_ids"], packed["input_type_ids"], packed["input_mask"]
  expected = model.backbone({"token_ids": ids, "segment_ids": types,
                             "padding_mask": mask})["sequence_output"].numpy()
  real = mask.numpy().astype(bool)
  np.testing.assert_allclose(outputs["sequence_output"].numpy()[real], expected[real], atol=1e-5)
  np.testing.assert_allclose(outputs["pooled_output"].numpy(), expected[:, 0], atol=1e-5)
  with pytest.raises(tf.errors.InvalidArgumentError, match="room for the"):
    preprocessor.bert_pack_inputs([first, second], seq_length=2)
  with pytest.raises(tf.errors.InvalidArgumentError, match="at most the encoder"):
    preprocessor.bert_pack_inputs([first], seq_length=1000)

  # training=True turns dropout on; fine-tuning a few steps changes the variables and
  # lowers the loss.  (The steps run without dropout: the loaded graph's dropout
  # draws from unseeded random ops, so a loss measured after noisy steps is a coin
  # that now and then lands the wrong way.)
  with_dropout = encoder(packed, training=True)["pooled_output"].numpy()
  assert np.abs(with_dropout - outputs["pooled_output"].numpy()).max() > 1e-3
  head = tf.Variable(tf.random.stateless_normal([outputs["pooled_output"].shape[-1], 1], [1, 2],
                                                stddev=0.1))
  target = tf.constant([[1.0], [-1.0]])
  trainable = list(encoder.trainable_variables) + [head]
  before = [v.numpy().copy() for v in encoder.trainable_variables]

  def loss_of(training):
    pooled = encoder(packed, training=training)["pooled_output"]
    return tf.reduce_mean((pooled @ head - target) ** 2)

  initial = float(loss_of(False))
  for _ in range(10):
    with tf.GradientTape() as tape:
      loss = loss_of(False)
    for variable, gradient in zip(trainable, tape.gradient(loss, trainable)):
      variable.assign_sub(0.01 * tf.convert_to_tensor(gradient))
  changed = sum(np.abs(b - v.numpy()).max() > 0
                for b, v in zip(before, encoder.trainable_variables))
  assert changed >= 0.9 * len(before)
  assert float(loss_of(False)) < initial


# ---------------------------------------------------------------------------
# CLI.

def run_export(*args):
  return subprocess.run([sys.executable, "scripts/export.py", *map(str, args)],
                        capture_output=True, text=True, cwd=ROOT, timeout=600,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def test_cli_task_override_pair_and_hub(electra_checkpoints, tmp_path):
  result = run_export("--checkpoint", electra_checkpoints["discriminator"], "--output", tmp_path,
                      "--task", "embedding", "--pair", "--sequence-length", "16", "--no-xla",
                      "--warmup-batch-sizes", "1", "--name", "enc")
  assert result.returncode == 0, result.stderr
  loaded = tf.saved_model.load(result.stdout.strip().splitlines()[-1])
  out = loaded.signatures["serving_default"](text=tf.constant(["a"]), text_pair=tf.constant(["b"]))
  assert out["sequence_output"].shape[:2] == (1, 16)
  result = run_export("--checkpoint", electra_checkpoints["generator"], "--output", tmp_path,
                      "--format", "hub", "--name", "hubbed")
  assert result.returncode == 0, result.stderr
  path = pathlib.Path(result.stdout.strip().splitlines()[-1])
  assert (path / "encoder" / "saved_model.pb").exists()
  assert (path / "preprocessor" / "saved_model.pb").exists()
  # The refusal, through main() in this process (the command line's other paths ran above).
  from servers import export_main
  code, _, stderr = export_main("--checkpoint", electra_checkpoints["discriminator"],
                                "--output", tmp_path, "--task", "fill_mask", "--name", "nope")
  assert code == 1 and "needs the generator head" in stderr
  assert not (tmp_path / "nope").exists()


def test_cli_electra_preset_with_random_weights(tmp_path):
  """Through main() in this process: tests/test_export.py runs --preset --random-weights
  as a subprocess (an XLM-RoBERTa preset)."""
  from servers import export_main
  code, stdout, stderr = export_main("--preset", "electra_small_generator_uncased_en",
                                     "--random-weights", "--output", tmp_path,
                                     "--sequence-length", "16", "--no-xla",
                                     "--warmup-batch-sizes", "1")
  assert code == 0, stderr
  loaded = tf.saved_model.load(stdout.strip().splitlines()[-1])
  out = loaded.signatures["serving_default"](text=tf.constant(["the [MASK] is paris"]))
  assert out["num_masks"].numpy().tolist() == [1]


def test_backbone_takes_keras_hub_arguments():
  backbone = electra.ElectraBackbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
                                     embedding_dim=4, intermediate_dim=16, max_sequence_length=12,
                                     num_segments=2, dtype="bfloat16")
  assert backbone.config.embedding_dim == 4 and backbone.embeddings_projection is not None
  outputs = backbone({"token_ids": tf.constant([[2, 7, 3]]),
                      "segment_ids": tf.zeros([1, 3], tf.int32),
                      "padding_mask": tf.ones([1, 3], tf.int32)})
  assert outputs["sequence_output"].shape == (1, 3, 8)
  assert outputs["sequence_output"].dtype == tf.bfloat16


def test_loading_errors_are_clear(electra_checkpoints, wordpiece_dir, tmp_path):
  import shutil
  directory = tmp_path / "ckpt"
  shutil.copytree(electra_checkpoints["discriminator"], directory)
  for name in ("tokenizer.json", "tokenizer_config.json"):
    (directory / name).unlink()
  vocabulary = (wordpiece_dir / "vocab.txt").read_text()
  (directory / "vocab.txt").write_text(vocabulary + "extra\n")
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"vocab.txt: the tokenizer has \d+ entries but"):
    tfhub_models.load(directory)
  (directory / "vocab.txt").unlink()
  with pytest.raises(checkpoints.CheckpointError,
                     match="no tokenizer files: neither tokenizer.json .* nor vocab.txt"):
    tfhub_models.load(directory)
  (directory / "vocab.txt").write_text(vocabulary)
  from safetensors.numpy import load_file, save_file
  weights = load_file(str(directory / "model.safetensors"))
  weights.pop("electra.embeddings_project.weight")
  save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"missing weights: embeddings_project\.weight"):
    tfhub_models.load(directory)


def test_keras_hub_preset_matches_keras_hub(tmp_path, wordpiece_vocab):
  """A keras-hub ElectraBackbone preset (weights, config, tokenizer) loads and answers
  as keras-hub's own model; its tokenizer settings (lowercase, no accent stripping)
  are read from tokenizer.json."""
  import keras_hub
  rng = np.random.default_rng(0)
  kh = keras_hub.models.ElectraBackbone(
      vocab_size=len(wordpiece_vocab), num_layers=2, num_heads=4, hidden_dim=32,
      embedding_dim=24, intermediate_dim=37, max_sequence_length=64)
  for weight in kh.weights:  # move layer norms and biases off 1 and 0
    weight.assign(np.asarray(weight) + rng.normal(0.0, 0.1, tuple(weight.shape)))
  kh.save_to_preset(str(tmp_path))
  kh_tokenizer = keras_hub.models.ElectraTokenizer(vocabulary=wordpiece_vocab, lowercase=True)
  kh_tokenizer.save_to_preset(str(tmp_path))

  backbone = electra.ElectraBackbone.from_preset(str(tmp_path))
  assert backbone.pooler is not None and backbone.config.hidden_activation == "gelu_new"
  lengths = np.array([16, 11, 5])
  padding_mask = (np.arange(16)[None, :] < lengths[:, None]).astype(np.int32)
  token_ids = rng.integers(5, len(wordpiece_vocab), (3, 16)).astype(np.int32) * padding_mask
  segment_ids = (rng.integers(0, 2, (3, 16)) * padding_mask).astype(np.int32)
  inputs = {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
  expected = {k: np.asarray(v) for k, v in kh(inputs).items()}
  got = backbone({k: tf.constant(v) for k, v in inputs.items()})
  real = padding_mask.astype(bool)
  np.testing.assert_allclose(got["sequence_output"].numpy()[real],
                             expected["sequence_output"][real], atol=1e-5)
  np.testing.assert_allclose(got["pooled_output"].numpy(), expected["pooled_output"], atol=1e-5)

  encoder = tfhub_models.load(tmp_path, task="embedding", sequence_length=32)
  texts = ["The Capital of FRANCE", "der zug fährt um acht uhr"]
  want = [np.asarray(kh_tokenizer(t)).tolist() for t in texts]
  assert encoder.tokenizer.tokenize(tf.constant(texts)).to_list() == want
