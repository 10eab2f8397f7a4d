"""XLM-RoBERTa against transformers and keras-hub, and strict checkpoint loading."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_hf_checkpoint
import tfhub_models
from tfhub_models import checkpoints
from tfhub_models.models import xlm_roberta
from tfhub_models.tasks import find_masks

TEXTS = ["The capital of France is <mask>.", "<mask> <mask> der Hauptstadt <mask>",
         "no mask here", "短い <mask>"]


def reference_logits(directory, token_ids, padding_mask, mask_positions):
  import torch
  from transformers import XLMRobertaForMaskedLM
  model = XLMRobertaForMaskedLM.from_pretrained(str(directory)).eval()
  with torch.no_grad():
    logits = model(input_ids=torch.tensor(token_ids, dtype=torch.long),
                   attention_mask=torch.tensor(padding_mask, dtype=torch.long)).logits.numpy()
  return np.take_along_axis(logits, mask_positions[..., None], axis=1)        # [B, M, V]


CONFIGS = {
    "default": {},
    "deeper_relu_types": dict(num_hidden_layers=3, num_attention_heads=2, hidden_act="relu",
                              type_vocab_size=2, layer_norm_eps=1e-12),
    "wide": dict(hidden_size=48, num_attention_heads=6, intermediate_size=64,
                 max_position_embeddings=40),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_masked_lm_matches_transformers(name, tmp_path, sp_file, vocab_size):
  directory = write_hf_checkpoint(tmp_path, sp_file, vocab_size, seed=len(name),
                                  **CONFIGS[name])
  task = tfhub_models.load(directory)
  inputs = task.preprocessor(tf.constant(TEXTS))
  token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
  assert (padding_mask.numpy() == 0).any()          # the batch really is padded
  positions, num_masks = find_masks(token_ids, task.tokenizer.mask_token_id)
  assert num_masks.numpy().tolist() == [1, 3, 0, 1]
  expected = reference_logits(directory, token_ids.numpy(), padding_mask.numpy(),
                              positions.numpy())
  # Graph, XLA and SavedModel runs equal this eager one: tests/test_conformance.py.
  got = task({"token_ids": token_ids, "padding_mask": padding_mask,
              "mask_positions": positions}).numpy()
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=1e-4)
  for b, count in enumerate(num_masks.numpy()):
    np.testing.assert_array_equal(np.argsort(-got[b, :count], axis=-1)[..., :5],
                                  np.argsort(-expected[b, :count], axis=-1)[..., :5])


def test_literal_pad_in_text_matches_transformers(hf_checkpoint):
  """A `<pad>` written in the text is id 1 with attention, at position padding_idx
  upstream, and shifts the positions after it; so it does here."""
  task = tfhub_models.load(hf_checkpoint)
  inputs = task.preprocessor(tf.constant(["Paris <pad> is <mask> nice.", "<mask>"]))
  token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
  assert (token_ids.numpy()[0] == 1).sum() > (padding_mask.numpy()[0] == 0).sum()
  positions, _ = find_masks(token_ids, task.tokenizer.mask_token_id)
  expected = reference_logits(hf_checkpoint, token_ids.numpy(), padding_mask.numpy(),
                              positions.numpy())
  got = task({"token_ids": token_ids, "padding_mask": padding_mask, "mask_positions": positions})
  np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)


def test_fill_mask_api(hf_checkpoint):
  task = xlm_roberta.XLMRobertaMaskedLM.from_preset(str(hf_checkpoint))
  answers = task.fill_mask(TEXTS, top_k=3)
  assert [len(a) for a in answers] == [1, 3, 0, 1]
  scores = [f["score"] for f in answers[0][0]]
  assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_close_to_float32(hf_checkpoint, dtype):
  full = tfhub_models.load(hf_checkpoint)
  low = tfhub_models.load(hf_checkpoint, dtype=dtype)
  assert low.backbone.token_embedding.embeddings.dtype == tf.as_dtype(dtype)
  inputs = full.preprocessor(tf.constant(TEXTS))
  positions, _ = find_masks(inputs["token_ids"], full.tokenizer.mask_token_id)
  a = full(dict(inputs, mask_positions=positions)).numpy()
  b = low(dict(inputs, mask_positions=positions)).numpy()
  assert b.dtype == np.float32
  assert np.abs(a - b).max() < 0.15 * np.abs(a).max()


def test_presets_are_the_public_configs():
  base, large = xlm_roberta.PRESETS["xlm_roberta_base_multi"], xlm_roberta.PRESETS[
      "xlm_roberta_large_multi"]
  assert (base.vocabulary_size, base.num_layers, base.hidden_dim, base.num_heads,
          base.intermediate_dim, base.num_positions) == (250002, 12, 768, 12, 3072, 514)
  assert (large.num_layers, large.hidden_dim, large.num_heads, large.intermediate_dim) == (
      24, 1024, 16, 4096)


@pytest.fixture(scope="module")
def keras_hub_preset(tmp_path_factory, sp_file):
  """A keras-hub XLMRobertaMaskedLM preset with random weights, written by keras-hub."""
  import keras_hub
  directory = tmp_path_factory.mktemp("keras_hub_preset")
  tokenizer = keras_hub.models.XLMRobertaTokenizer(proto=str(sp_file))
  backbone = keras_hub.models.XLMRobertaBackbone(
      vocabulary_size=tokenizer.vocabulary_size(), num_layers=2, num_heads=4, hidden_dim=32,
      intermediate_dim=48, max_sequence_length=64)
  for weight in backbone.weights:  # move layer norms and biases off 1 and 0
    weight.assign(weight + np.random.default_rng(0).normal(size=weight.shape) * 0.05)
  preprocessor = keras_hub.models.XLMRobertaMaskedLMPreprocessor(tokenizer, sequence_length=32)
  model = keras_hub.models.XLMRobertaMaskedLM(backbone=backbone, preprocessor=preprocessor)
  for weight in model.weights:
    if "backbone" not in weight.path:
      weight.assign(weight + np.random.default_rng(1).normal(size=weight.shape) * 0.05)
  model.save_to_preset(str(directory))
  return directory, model


def test_keras_hub_preset_matches_keras_hub(keras_hub_preset):
  directory, model = keras_hub_preset
  task = tfhub_models.load(directory, sequence_length=32)
  inputs = task.preprocessor(tf.constant(TEXTS))
  token_ids, padding_mask = inputs["token_ids"].numpy(), inputs["padding_mask"].numpy()
  expected = np.asarray(model.backbone({"token_ids": token_ids, "padding_mask": padding_mask}))
  got = task.backbone({"token_ids": token_ids,
                       "padding_mask": padding_mask})["sequence_output"].numpy()
  real = padding_mask.astype(bool)
  np.testing.assert_allclose(got[real], expected[real], atol=1e-4)
  positions, _ = find_masks(inputs["token_ids"], task.tokenizer.mask_token_id)
  head = np.asarray(model({"token_ids": token_ids, "padding_mask": padding_mask,
                           "mask_positions": positions.numpy()}))
  got = task({"token_ids": token_ids, "padding_mask": padding_mask, "mask_positions": positions})
  np.testing.assert_allclose(got.numpy(), head, atol=1e-4)


# ---------------------------------------------------------------------------
# Loading errors.

def copy_checkpoint(source, tmp_path):
  target = tmp_path / "ckpt"
  shutil.copytree(source, target)
  return target


def rewrite_weights(directory, edit):
  from safetensors.numpy import load_file, save_file
  weights = load_file(str(directory / "model.safetensors"))
  edit(weights)
  save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})


def test_missing_weight_is_named(hf_checkpoint, tmp_path):
  directory = copy_checkpoint(hf_checkpoint, tmp_path)
  rewrite_weights(directory, lambda w: w.pop("roberta.encoder.layer.1.output.dense.bias"))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"missing weights: encoder\.layer\.1\.output\.dense\.bias"):
    tfhub_models.load(directory)


def test_unexpected_weight_is_named(hf_checkpoint, tmp_path):
  directory = copy_checkpoint(hf_checkpoint, tmp_path)
  rewrite_weights(directory, lambda w: w.update(extra_classifier=np.zeros([3], np.float32)))
  with pytest.raises(checkpoints.CheckpointError, match="unexpected weights: extra_classifier"):
    tfhub_models.load(directory)


def test_wrong_shape_is_named(hf_checkpoint, tmp_path):
  directory = copy_checkpoint(hf_checkpoint, tmp_path)
  rewrite_weights(directory, lambda w: w.update({
      "roberta.encoder.layer.0.intermediate.dense.weight": np.zeros([5, 32], np.float32)}))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"intermediate\.dense\.weight: shape \(5, 32\) does not fit"):
    tfhub_models.load(directory)


def test_assignment_is_all_or_nothing():
  """A problem with any weight raises before any variable is assigned."""
  first, second = tf.Variable(np.zeros([2], np.float32)), tf.Variable(np.zeros([3], np.float32))
  assignments = [("a", first, lambda x: x), ("b", second, lambda x: x)]
  with pytest.raises(checkpoints.CheckpointError, match=r"b: shape \(2,\) does not fit"):
    checkpoints.assign_strict(assignments, {"a": np.ones([2]), "b": np.ones([2])},
                              ignored=lambda k: False, where="test", dtype=tf.float32)
  assert first.numpy().tolist() == [0, 0]
  checkpoints.assign_strict(assignments, {"a": np.ones([2]), "b": np.ones([3])},
                            ignored=lambda k: False, where="test", dtype=tf.float32)
  assert first.numpy().tolist() == [1, 1] and second.numpy().tolist() == [1, 1, 1]


def test_decoder_bias_alone_is_the_head_bias(hf_checkpoint, tmp_path):
  directory = copy_checkpoint(hf_checkpoint, tmp_path)
  rewrite_weights(directory, lambda w: w.update({"lm_head.decoder.bias": w.pop("lm_head.bias")}))
  task = tfhub_models.load(directory)
  from safetensors.numpy import load_file
  bias = load_file(str(directory / "model.safetensors"))["lm_head.decoder.bias"]
  np.testing.assert_array_equal(task.head.bias.numpy(), bias)


def test_pickled_weights_are_refused(hf_checkpoint, tmp_path):
  directory = copy_checkpoint(hf_checkpoint, tmp_path)
  (directory / "model.safetensors").rename(directory / "pytorch_model.bin")
  with pytest.raises(checkpoints.CheckpointError, match="never unpickled.*safetensors"):
    tfhub_models.load(directory)


def test_backbone_only_checkpoint_cannot_fill_masks(tmp_path, sp_file, vocab_size):
  directory = write_hf_checkpoint(tmp_path, sp_file, vocab_size, masked_lm=False)
  with pytest.raises(checkpoints.CheckpointError, match="no masked-LM head"):
    tfhub_models.load(directory, task="fill_mask")
  assert isinstance(tfhub_models.load(directory), xlm_roberta.XLMRobertaBackbone)
  backbone = xlm_roberta.XLMRobertaBackbone.from_preset(str(directory))
  assert isinstance(backbone, xlm_roberta.XLMRobertaBackbone)
  assert backbone.config.hidden_dim == 32


def test_missing_tokenizer(hf_checkpoint, tmp_path):
  directory = copy_checkpoint(hf_checkpoint, tmp_path)
  (directory / "tokenizer.json").unlink()
  with pytest.raises(checkpoints.CheckpointError, match="no tokenizer files: neither "
                     "tokenizer.json .* nor sentencepiece.bpe.model"):
    tfhub_models.load(directory)


def test_unsupported_and_unknown_configs(hf_checkpoint, tmp_path):
  directory = copy_checkpoint(hf_checkpoint, tmp_path)
  config = json.loads((directory / "config.json").read_text())
  (directory / "config.json").write_text(json.dumps(dict(config, model_type="gpt2")))
  with pytest.raises(checkpoints.CheckpointError, match="model_type 'gpt2' is not supported"):
    tfhub_models.load(directory)
  (directory / "config.json").write_text("{not json")
  with pytest.raises(checkpoints.CheckpointError, match="not valid JSON"):
    tfhub_models.load(directory)
  with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
    tfhub_models.load(tmp_path / "nowhere")


def test_handles_fail_clearly_offline(monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(checkpoints.CheckpointError, match="hf://FacebookAI/xlm-roberta-base"):
    checkpoints.resolve("hf://FacebookAI/xlm-roberta-base")
  monkeypatch.setitem(__import__("sys").modules, "kagglehub", None)
  with pytest.raises(checkpoints.CheckpointError, match="kaggle:// handles need kagglehub"):
    checkpoints.resolve("kaggle://keras/xlm_roberta/keras/xlm_roberta_base_multi")
