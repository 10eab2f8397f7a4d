"""save_to_preset: Hugging Face directories that transformers, our loader and the
export path all read back with the same outputs, written atomically."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, write_bart_checkpoint, write_electra_checkpoint, write_hf_checkpoint
from tfhub_models import BartSeq2SeqLM, ElectraMaskedLM, XLMRobertaMaskedLM, atomic

TEXTS = ["the cat sat on the <mask>.", "a <mask> ran in the park"]


def _perturb(task, seed: int) -> None:
  """Moves every variable, as a fine-tuning run would, so the saved weights are
  ours and not the checkpoint's."""
  rng = np.random.default_rng(seed)
  for variable in task.variables:
    variable.assign_add(rng.normal(0, 0.02, variable.shape).astype(np.float32))


@pytest.fixture(scope="module")
def xlmr_preset(tmp_path_factory, sp_file, vocab_size):
  source = write_hf_checkpoint(tmp_path_factory.mktemp("preset_src"), sp_file, vocab_size, seed=6)
  task = XLMRobertaMaskedLM.from_preset(str(source))
  _perturb(task, 0)
  saved = task.save_to_preset(tmp_path_factory.mktemp("presets") / "xlmr")
  return task, saved


def _masked_lm_logits(task, texts):
  """Our tokens and logits at every position of `texts` (positions = all)."""
  packed = task.preprocessor(tf.constant(texts))
  length = packed["token_ids"].shape[1]
  positions = tf.tile(tf.range(length)[None, :], [len(texts), 1])
  logits = task(dict(packed, mask_positions=positions))
  return packed["token_ids"].numpy(), packed["padding_mask"].numpy(), logits.numpy()


def _compare_with_transformers(task, directory, architecture):
  import torch
  import transformers
  model = getattr(transformers, architecture).from_pretrained(str(directory)).eval()
  assert type(model).__name__ == json.loads((directory / "config.json").read_text())[
      "architectures"][0]
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
  ids, mask, ours = _masked_lm_logits(task, TEXTS)
  theirs_ids = tokenizer(TEXTS, padding="max_length", max_length=ids.shape[1])["input_ids"]
  np.testing.assert_array_equal(np.asarray(theirs_ids), ids)
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(ids, dtype=torch.long),
                   attention_mask=torch.tensor(mask)).logits.numpy()
  real = mask.astype(bool)
  np.testing.assert_allclose(ours[real], theirs[real], rtol=1e-5, atol=1e-5)


def test_masked_lm_preset_loads_in_transformers_and_back(xlmr_preset):
  task, saved = xlmr_preset
  # tokenizer.json for transformers 5, the SentencePiece model for older readers.
  assert sorted(os.listdir(saved)) == ["config.json", "model.safetensors",
                                       "sentencepiece.bpe.model", "tokenizer.json",
                                       "tokenizer_config.json"]
  _compare_with_transformers(task, saved, "AutoModelForMaskedLM")
  again = XLMRobertaMaskedLM.from_preset(str(saved))
  for mine, loaded in zip(task.variables, again.variables):
    np.testing.assert_array_equal(mine.numpy(), loaded.numpy(), err_msg=mine.name)
  # Tied weights stay one tensor in the file, as transformers writes them.
  from safetensors.numpy import load_file
  keys = set(load_file(str(saved / "model.safetensors")))
  assert "lm_head.decoder.weight" not in keys
  assert "roberta.embeddings.word_embeddings.weight" in keys


def test_saved_preset_exports_and_passes_check_serving(xlmr_preset, tmp_path):
  _, saved = xlmr_preset
  from servers import assert_serving_flags, export_and_check
  _, stdout = export_and_check("--checkpoint", str(saved), "--output", str(tmp_path),
                               "--name", "tuned", "--sequence-length", "32",
                               "--warmup-batch-sizes", "1")
  assert_serving_flags(stdout, xla=True)


def test_electra_generator_preset(tmp_path, wordpiece_dir, wordpiece_vocab):
  source = write_electra_checkpoint(tmp_path / "src", wordpiece_dir, len(wordpiece_vocab),
                                    "generator", seed=2)
  task = ElectraMaskedLM.from_preset(str(source))
  _perturb(task, 1)
  saved = task.save_to_preset(tmp_path / "saved")
  _compare_with_transformers(task, saved, "AutoModelForMaskedLM")
  again = ElectraMaskedLM.from_preset(str(saved))
  for mine, loaded in zip(task.variables, again.variables):
    np.testing.assert_array_equal(mine.numpy(), loaded.numpy(), err_msg=mine.name)


def test_bart_preset_keeps_weights_generation_and_tokenizer(tmp_path, bpe_dir):
  import torch
  import transformers
  from conftest import CNN_STYLE
  source = write_bart_checkpoint(tmp_path / "src", bpe_dir, seed=5, generation=CNN_STYLE)
  task = BartSeq2SeqLM.from_preset(str(source))
  _perturb(task, 2)
  saved = task.save_to_preset(tmp_path / "saved")
  assert (saved / "generation_config.json").exists()
  model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(saved)).eval()
  assert model.generation_config.num_beams == 4 and model.generation_config.min_length == 6
  assert model.generation_config.no_repeat_ngram_size == 3
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(saved))
  texts = ["hello world", "the cat <mask> on the mat"]
  encoded = task.preprocessor(tf.constant(texts))
  ids = encoded["token_ids"].numpy()
  np.testing.assert_array_equal(
      np.asarray(tokenizer(texts, padding="max_length", max_length=ids.shape[1])["input_ids"]),
      ids)
  decoder = np.array([[2, 0, 100, 200, 300], [2, 0, 50, 1, 1]], np.int32)
  inputs = {"encoder_token_ids": ids, "encoder_padding_mask": encoded["padding_mask"].numpy(),
            "decoder_token_ids": decoder, "decoder_padding_mask": (decoder != 1).astype(np.int32)}
  ours = task(inputs).numpy()
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(ids, dtype=torch.long),
                   attention_mask=torch.tensor(inputs["encoder_padding_mask"]),
                   decoder_input_ids=torch.tensor(decoder, dtype=torch.long),
                   decoder_attention_mask=torch.tensor(inputs["decoder_padding_mask"])).logits
  real = inputs["decoder_padding_mask"].astype(bool)
  np.testing.assert_allclose(ours[real], theirs.numpy()[real], rtol=1e-5, atol=1e-5)
  again = BartSeq2SeqLM.from_preset(str(saved))
  assert again.backbone.config.generation == task.backbone.config.generation
  for mine, loaded in zip(task.variables, again.variables):
    np.testing.assert_array_equal(mine.numpy(), loaded.numpy(), err_msg=mine.name)


def test_save_refuses_a_full_directory_and_is_atomic(xlmr_preset, tmp_path, monkeypatch):
  task, _ = xlmr_preset
  target = tmp_path / "out"
  target.mkdir()
  (target / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="not empty"):
    task.save_to_preset(target)
  assert os.listdir(target) == ["notes.txt"]

  def broken(directory):
    (directory / "sentencepiece.bpe.model").write_bytes(b"half")
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(task.tokenizer, "save_assets", broken)
  with pytest.raises(OSError, match="No space"):
    task.save_to_preset(target, overwrite=True)
  assert os.listdir(target) == ["notes.txt"]               # the old directory, untouched
  assert sorted(os.listdir(tmp_path)) == ["out"]           # no hidden staging left behind
  monkeypatch.undo()
  task.save_to_preset(target, overwrite=True)
  assert "notes.txt" not in os.listdir(target) and (target / "model.safetensors").exists()
  assert sorted(os.listdir(tmp_path)) == ["out"]


_WRITER = """
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
def write(staging):
  (staging / "model.safetensors").write_bytes(b"half of it")
  print(staging, flush=True)
  time.sleep(600)
atomic.write_directory(sys.argv[2], write)
"""


def _start_writer(target):
  """A process writing `target` through atomic.write_directory, stopped halfway (it
  sleeps); returns it and its staging directory."""
  process = subprocess.Popen([sys.executable, "-c", _WRITER, str(ROOT / "tfhub_models" /
                                                                 "atomic.py"), str(target)],
                             stdout=subprocess.PIPE, text=True)
  return process, pathlib.Path(process.stdout.readline().strip())


def _age(path, seconds=60):
  """Makes `path` look last changed `seconds` ago."""
  status = os.stat(path)
  os.utime(path, (status.st_atime - seconds, status.st_mtime - seconds))


def test_a_save_killed_midway_is_cleaned_up_by_the_next(xlmr_preset, tmp_path, caplog):
  """kill -9 during a save leaves its staging directory; the next save into the same
  folder removes it (and says so), but never one that a live process is writing."""
  task, _ = xlmr_preset
  target = tmp_path / "out"
  killed, killed_staging = _start_writer(target)
  live, live_staging = _start_writer(target)
  try:
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    _age(killed_staging)  # both older than the grace period: only the lock tells them apart
    _age(live_staging)
    # An interrupted write_json (training's side files) leaves a hidden file, too.
    stale_file = tmp_path / ".out.json.tmp-killed"
    stale_file.write_text("{")
    _age(stale_file)
    with caplog.at_level("WARNING", logger="tfhub_models.atomic"):
      task.save_to_preset(target)
    assert not killed_staging.exists() and live_staging.is_dir()
    assert f"removed {killed_staging}" in caplog.text
    assert str(live_staging) not in caplog.text
    assert (target / "model.safetensors").stat().st_size > len(b"half of it")
    atomic.write_json(tmp_path / "out.json", {"step": 1})
    assert not stale_file.exists()
    assert json.loads((tmp_path / "out.json").read_text()) == {"step": 1}
  finally:
    live.kill()
    live.wait()
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      ["out", "out.json", live_staging.name])


def test_save_needs_the_tokenizer(xlmr_preset, tmp_path):
  """A task built from a bare config has no tokenizer files to save: fit says so
  before it trains, save_to_preset refuses and writes nothing."""
  task, _ = xlmr_preset
  bare = XLMRobertaMaskedLM(task.backbone, None)
  bare.compile(jit_compile=False)
  x = {"token_ids": np.array([[0, 5, 6, 2]]), "padding_mask": np.ones([1, 4], np.int32),
       "mask_positions": np.array([[1]])}
  with pytest.warns(UserWarning, match="no tokenizer .* save_to_preset will refuse after fit"):
    bare.fit(x, np.array([[7]]), epochs=1, batch_size=1, verbose=0)
  with pytest.raises(ValueError, match="has no tokenizer .*from_preset"):
    bare.save_to_preset(tmp_path / "bare")
  assert not (tmp_path / "bare").exists()


@pytest.mark.parametrize("family", ["xlm_roberta", "bart"])
def test_preprocessed_fine_tune_saves_the_checkpoints_tokenizer(family, tmp_path, sp_file,
                                                                 vocab_size, bpe_dir):
  """keras-hub's integer path: from_preset(ckpt, preprocessor=None), fit on ids,
  save_to_preset: the preset carries the checkpoint's tokenizer, transformers
  loads it with equal logits, and export.py exports it."""
  import transformers
  from servers import script_main
  if family == "xlm_roberta":
    source = write_hf_checkpoint(tmp_path / "src", sp_file, vocab_size, seed=8)
    task = XLMRobertaMaskedLM.from_preset(str(source), preprocessor=None)
    x = {"token_ids": np.array([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1]]),
         "padding_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]),
         "mask_positions": np.array([[1], [2]])}
    y = np.array([[11], [12]])
  else:
    source = write_bart_checkpoint(tmp_path / "src", bpe_dir, seed=8)
    task = BartSeq2SeqLM.from_preset(str(source), preprocessor=None)
    x = {"encoder_token_ids": np.array([[0, 50, 60, 2]]), "encoder_padding_mask": np.ones([1, 4]),
         "decoder_token_ids": np.array([[2, 0, 70]]), "decoder_padding_mask": np.ones([1, 3])}
    y = np.array([[0, 70, 2]])
  assert task.preprocessor is None and task.tokenizer is None
  before = [v.numpy().copy() for v in task.trainable_variables]
  task.compile(jit_compile=False)
  task.fit(x, y, epochs=2, batch_size=2, verbose=0)
  assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, task.trainable_variables))
  saved = task.save_to_preset(tmp_path / "saved")
  assert (saved / "tokenizer.json").exists()
  upstream = transformers.AutoTokenizer.from_pretrained(str(source))
  again = transformers.AutoTokenizer.from_pretrained(str(saved))
  assert again("the cat sat")["input_ids"] == upstream("the cat sat")["input_ids"]
  reloaded = type(task).from_preset(str(saved))
  for mine, loaded in zip(task.trainable_variables, reloaded.trainable_variables):
    np.testing.assert_array_equal(mine.numpy(), loaded.numpy(), err_msg=mine.name)
  if family == "xlm_roberta":   # BART's logits against transformers: test_bart_preset_keeps...
    _compare_with_transformers(reloaded, saved, "AutoModelForMaskedLM")
    code, out, err = script_main("export", "--checkpoint", saved, "--output", tmp_path / "out",
                                 "--sequence-length", "16", "--warmup-batch-sizes", "1",
                                 "--no-xla")
    assert code == 0 and (tmp_path / "out" / "saved" / "1" / "saved_model.pb").exists(), err


def test_export_refuses_a_task_without_preprocessor(xlmr_preset, tmp_path):
  from tfhub_models import export
  task, _ = xlmr_preset
  with pytest.raises(ValueError, match="without a preprocessor"):
    export.export(XLMRobertaMaskedLM(task.backbone, None), tmp_path, "bare")
  assert not (tmp_path / "bare" / "1").exists()


def test_writes_go_on_where_flock_is_missing(tmp_path, monkeypatch, caplog):
  """On a file system without flock (some network mounts) files, presets and exports'
  directories are still written, whole; only the cleanup is skipped, and said so."""
  import errno

  def no_flock(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")
  monkeypatch.setattr(atomic.fcntl, "flock", no_flock)
  with caplog.at_level("WARNING", logger="tfhub_models.atomic"):
    atomic.write_json(tmp_path / "state.json", {"step": 2})
    atomic.write_directory(tmp_path / "preset", lambda d: (d / "config.json").write_text("{}"))
  assert json.loads((tmp_path / "state.json").read_text()) == {"step": 2}
  assert (tmp_path / "preset" / "config.json").read_text() == "{}"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["preset", "state.json"]
  assert caplog.text.count("cannot lock") == 2
