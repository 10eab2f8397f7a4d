"""The keras-hub loading API as its users call it: presets listings, from_preset on
backbones and tasks, load_weights (positional, and then no weight file is read or
downloaded), keras-hub-format presets behind hf:// handles, keras-hub argument names."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

import tfhub_models
from tfhub_models import BartSeq2SeqLM, ElectraBackbone, ElectraDiscriminator, ElectraMaskedLM
from tfhub_models import XLMRobertaBackbone, XLMRobertaMaskedLM
from tfhub_models.checkpoints import CheckpointError


def test_presets_are_listed_per_class():
  assert set(XLMRobertaMaskedLM.presets) == {"xlm_roberta_base_multi", "xlm_roberta_large_multi"}
  assert set(XLMRobertaBackbone.presets.keys()) == set(XLMRobertaMaskedLM.presets)
  assert all("discriminator" in name for name in ElectraDiscriminator.presets)
  assert all("generator" in name for name in ElectraMaskedLM.presets)
  assert len(ElectraBackbone.presets) == 6
  assert "bart_large_en_cnn" in BartSeq2SeqLM.presets
  assert XLMRobertaMaskedLM.presets["xlm_roberta_base_multi"].hidden_dim == 768


def without_weights(source: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  target = tmp_path / "no_weights"
  shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors", "*.h5"))
  return target


def test_load_weights_false_reads_no_weight_file(hf_checkpoint, tmp_path):
  directory = without_weights(hf_checkpoint, tmp_path)
  model = XLMRobertaMaskedLM.from_preset(str(directory), False)   # positional, as upstream
  assert isinstance(model, XLMRobertaMaskedLM)
  assert model.backbone.config.hidden_dim == 32
  assert tfhub_models.load(directory, load_weights=False).task == "fill_mask"  # architectures
  with pytest.raises(CheckpointError, match="no model.safetensors"):
    XLMRobertaMaskedLM.from_preset(str(directory))
  backbone = XLMRobertaBackbone.from_preset(str(directory), load_weights=False)
  assert isinstance(backbone, XLMRobertaBackbone)


def test_backbones_load_from_task_checkpoints(hf_checkpoint, hf_bart_checkpoint):
  task = XLMRobertaMaskedLM.from_preset(str(hf_checkpoint))
  backbone = XLMRobertaBackbone.from_preset(str(hf_checkpoint))
  inputs = task.preprocessor(tf.constant(["a <mask> b"]))
  np.testing.assert_array_equal(backbone(inputs)["sequence_output"].numpy(),
                                task.backbone(inputs)["sequence_output"].numpy())
  bart = tfhub_models.BartBackbone.from_preset(str(hf_bart_checkpoint))
  assert isinstance(bart, tfhub_models.BartBackbone)
  with pytest.raises(CheckpointError, match="unknown task 'fill_mask' for BART"):
    tfhub_models.load(hf_bart_checkpoint, "fill_mask")


class FakeHub:
  """huggingface_hub.snapshot_download over a local directory: the files its
  allow_patterns select (by the hub client's own filter) are copied, and counted."""

  def __init__(self, repos: dict, cache: pathlib.Path):
    self.repos, self.cache, self.fetched = repos, cache, []

  def snapshot_download(self, repo_id, allow_patterns=None, **kwargs):
    from huggingface_hub.utils import filter_repo_objects
    source = self.repos[repo_id]
    files = [str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()]
    target = self.cache / repo_id.replace("/", "--")
    for name in filter_repo_objects(files, allow_patterns=allow_patterns):
      (target / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy(source / name, target / name)
      self.fetched.append(name)
    return str(target)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
  import huggingface_hub
  hub = FakeHub({}, tmp_path / "cache")
  monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
  return hub


def test_hf_handles_download_weights_only_when_asked(fake_hub, hf_checkpoint):
  fake_hub.repos["org/xlmr"] = hf_checkpoint
  model = XLMRobertaMaskedLM.from_preset("hf://org/xlmr", load_weights=False)
  assert isinstance(model, XLMRobertaMaskedLM)
  assert fake_hub.fetched and not any(n.endswith(".safetensors") for n in fake_hub.fetched)
  fake_hub.fetched.clear()
  loaded = XLMRobertaMaskedLM.from_preset("hf://org/xlmr")
  assert "model.safetensors" in fake_hub.fetched
  reference = XLMRobertaMaskedLM.from_preset(str(hf_checkpoint))
  np.testing.assert_array_equal(loaded.head.bias.numpy(), reference.head.bias.numpy())


def test_keras_hub_presets_load_from_hf_handles(fake_hub, tmp_path, sp_file):
  """keras-hub presets hosted on the Hugging Face Hub (config.json with class_name,
  model.weights.h5, task.weights.h5, assets/) are fetched whole and load."""
  import keras_hub
  directory = tmp_path / "preset"
  tokenizer = keras_hub.models.XLMRobertaTokenizer(proto=str(sp_file))
  backbone = keras_hub.models.XLMRobertaBackbone(
      vocabulary_size=tokenizer.vocabulary_size(), num_layers=1, num_heads=2, hidden_dim=16,
      intermediate_dim=24, max_sequence_length=32)
  preprocessor = keras_hub.models.XLMRobertaMaskedLMPreprocessor(tokenizer, sequence_length=16)
  keras_model = keras_hub.models.XLMRobertaMaskedLM(backbone=backbone, preprocessor=preprocessor)
  keras_model.save_to_preset(str(directory))
  fake_hub.repos["keras/xlmr"] = directory
  model = tfhub_models.load("hf://keras/xlmr", sequence_length=16)
  assert {"model.weights.h5", "task.weights.h5",
          "assets/tokenizer/vocabulary.spm"} <= set(fake_hub.fetched)
  inputs = model.preprocessor(tf.constant(["a b c"]))
  expected = np.asarray(backbone({"token_ids": inputs["token_ids"].numpy(),
                                  "padding_mask": inputs["padding_mask"].numpy()}))
  real = inputs["padding_mask"].numpy().astype(bool)
  np.testing.assert_allclose(model.backbone(inputs)["sequence_output"].numpy()[real],
                             expected[real], atol=1e-4)


def test_electra_backbone_takes_both_vocabulary_names():
  sizes = dict(num_layers=1, num_heads=2, hidden_dim=8, embedding_dim=4, intermediate_dim=16,
               max_sequence_length=12)
  assert ElectraBackbone(vocab_size=50, **sizes).config.vocabulary_size == 50       # keras-hub's
  assert ElectraBackbone(vocabulary_size=50, **sizes).config.vocabulary_size == 50
  with pytest.raises(ValueError, match="vocab_size 50 and vocabulary_size 60 differ"):
    ElectraBackbone(vocab_size=50, vocabulary_size=60, **sizes)


def test_sequence_lengths_are_checked_before_the_weights_are_read(hf_checkpoint, tmp_path):
  for task in (None, "backbone"):
    with pytest.raises(CheckpointError, match=r"sequence length 2 is outside 3\.\.128"):
      tfhub_models.load(hf_checkpoint, task, sequence_length=2)
    with pytest.raises(CheckpointError, match=r"sequence length 1000 is outside 3\.\.128"):
      tfhub_models.load(hf_checkpoint, task, sequence_length=1000)
  broken = tmp_path / "broken"
  shutil.copytree(hf_checkpoint, broken)
  (broken / "model.safetensors").write_bytes(b"not safetensors")
  with pytest.raises(CheckpointError, match="sequence length 2 is outside"):
    tfhub_models.load(broken, sequence_length=2)


def test_a_pair_needs_room_for_its_special_tokens(hf_checkpoint):
  from tfhub_models.preprocessing import XLMRobertaPreprocessor
  tokenizer = tfhub_models.load(hf_checkpoint).tokenizer
  preprocessor = XLMRobertaPreprocessor(tokenizer, 3)
  assert preprocessor(tf.constant(["a b c"]))["token_ids"].shape == (1, 3)
  with pytest.raises(ValueError, match="sequence_length 3 leaves no room for a pair's 4"):
    preprocessor(tf.constant(["a"]), tf.constant(["b"]))


@pytest.fixture
def offline(monkeypatch):
  """Hub clients that fail as they do without a network."""
  import huggingface_hub
  import kagglehub

  def no_network(*args, **kwargs):
    raise ConnectionError("no network here")
  monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
  monkeypatch.setattr(kagglehub, "model_download", no_network)


def test_offline_preset_builds_from_its_config(offline):
  """Offline, a preset name with load_weights=False is its config: a backbone, or a
  task on token ids (preprocessor=None), with the public model's parameter count;
  a task that needs the tokenizer says plainly why it cannot be built."""
  import transformers
  with pytest.raises(CheckpointError, match=r"(?s)not on this machine.*preprocessor=None"):
    XLMRobertaMaskedLM.from_preset("xlm_roberta_base_multi", load_weights=False)
  with pytest.raises(CheckpointError, match="not on this machine"):
    XLMRobertaMaskedLM.from_preset("xlm_roberta_base_multi")     # the weights: no way round
  backbone = ElectraBackbone.from_preset("electra_small_discriminator_uncased_en",
                                         load_weights=False)
  config = transformers.ElectraConfig(vocab_size=30522, embedding_size=128, hidden_size=256,
                                      num_hidden_layers=12, num_attention_heads=4,
                                      intermediate_size=1024)
  assert backbone.count_params() == transformers.ElectraModel(config).num_parameters()
  task = ElectraMaskedLM.from_preset("electra_small_generator_uncased_en", load_weights=False,
                                     preprocessor=None)
  assert task.preprocessor is None and task.backbone.config.hidden_dim == 256
  bart = BartSeq2SeqLM.from_preset("bart_base_en", load_weights=False, preprocessor=None)
  assert bart.backbone.config.generation.num_beams == 4


def test_summary_and_count_params(hf_checkpoint):
  """keras-hub's count_params and summary: each weight once (the tied LM head's
  table too), per-module rows, totals that follow freezing."""
  import transformers
  task = XLMRobertaMaskedLM.from_preset(str(hf_checkpoint))
  theirs = transformers.XLMRobertaForMaskedLM.from_pretrained(str(hf_checkpoint))
  assert task.count_params() == sum(p.numel() for p in theirs.parameters())
  lines = []
  task.summary(print_fn=lines.append)
  text = "\n".join(lines)
  assert f"Total params: {task.count_params():,}" in text
  assert "token_embedding (Embedding)" in text and "embeddings[" in text
  assert text.count("token_embedding (Embedding)") == 1          # the tied table once
  task.backbone.trainable = False
  lines.clear()
  task.summary(print_fn=lines.append, max_depth=1)
  # The head's own weights; its tied table is the frozen backbone's.
  head = sum(v.shape.num_elements() for v in task.head.variables
             if v is not task.backbone.token_embedding.embeddings)
  assert f"Trainable params: {head:,}" in "\n".join(lines)
  assert "transformer_layers/0" not in "\n".join(lines)          # below max_depth
