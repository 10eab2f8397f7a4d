"""BART against transformers: forward, greedy and beam generation, samplers, export."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import CNN_STYLE, ROOT, write_bart_checkpoint
import tfhub_models
from tfhub_models import export, generation
from tfhub_models.models import bart

TEXTS = ["The capital of France is Paris, on the Seine.", "short",
         "a much longer input text with many words in it, to make the others padded", ""]


def reference_model(directory):
  import transformers
  return transformers.BartForConditionalGeneration.from_pretrained(str(directory)).eval()


@pytest.mark.parametrize("scale_embedding", [False, True])
def test_forward_matches_transformers(tmp_path, bpe_dir, scale_embedding):
  import torch
  directory = write_bart_checkpoint(tmp_path, bpe_dir, scale_embedding=scale_embedding,
                                    activation_function="gelu", seed=3)
  task = tfhub_models.load(directory)
  encoder = task.preprocessor(tf.constant(TEXTS))
  ids, mask = encoder["token_ids"].numpy(), encoder["padding_mask"].numpy()
  assert (mask == 0).any()
  decoder = np.array([[2, 0, 10, 20, 30, 40], [2, 0, 5, 6, 1, 1], [2, 0, 7, 1, 1, 1],
                      [2, 0, 1, 1, 1, 1]], np.int32)
  decoder_mask = (decoder != 1).astype(np.int32)
  with torch.no_grad():
    expected = reference_model(directory)(
        input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long(),
        decoder_input_ids=torch.tensor(decoder).long(),
        decoder_attention_mask=torch.tensor(decoder_mask).long()).logits.numpy()
  inputs = {"encoder_token_ids": ids, "encoder_padding_mask": mask,
            "decoder_token_ids": decoder, "decoder_padding_mask": decoder_mask}
  real = decoder_mask.astype(bool)
  # Graph, XLA and SavedModel runs equal this eager one: tests/test_conformance.py.
  got = task.backbone.logits(task.backbone(inputs)["decoder_sequence_output"]).numpy()
  np.testing.assert_allclose(got[real], expected[real], atol=1e-4)


def test_cached_decoding_equals_the_full_pass(hf_bart_checkpoint):
  task = tfhub_models.load(hf_bart_checkpoint)
  encoder = task.preprocessor(tf.constant(TEXTS[:2]))
  encoded = task.backbone.encode(encoder["token_ids"], encoder["padding_mask"])
  decoder = tf.constant([[2, 0, 10, 20, 30], [2, 0, 5, 6, 7]])
  full = task.backbone.logits(task.backbone.decode(decoder, tf.ones_like(decoder), encoded,
                                                   encoder["padding_mask"]))
  state = task.backbone.init_decoder_state(encoded, encoder["padding_mask"], 8)
  for step in range(5):
    logits, _, state = task.backbone.decode_step(decoder[:, step], tf.constant(step), state)
    np.testing.assert_allclose(logits.numpy(), full[:, step].numpy(), atol=1e-4)


def generate_with_transformers(directory, texts, task, **kwargs):
  import torch
  encoder = task.preprocessor(tf.constant(texts))
  with torch.no_grad():
    out = reference_model(directory).generate(
        input_ids=torch.tensor(encoder["token_ids"].numpy()).long(),
        attention_mask=torch.tensor(encoder["padding_mask"].numpy()).long(),
        do_sample=False, output_scores=True, return_dict_in_generate=True, **kwargs)
  return out.sequences.numpy(), getattr(out, "sequences_scores", None)


def generate_with_ours(task, texts, max_length):
  encoder = task.preprocessor(tf.constant(texts))
  ids, scores = task._function(max_length, None)(encoder["token_ids"], encoder["padding_mask"],
                                                 tf.zeros([len(texts)], tf.int64))
  return ids.numpy(), scores.numpy()


def assert_same_sequences(ours, theirs):
  assert (ours[:, : theirs.shape[1]] == theirs).all(), (ours.tolist(), theirs.tolist())
  assert (ours[:, theirs.shape[1]:] == 1).all()        # padding after the end


def test_greedy_matches_transformers(hf_bart_checkpoint):
  task = tfhub_models.load(hf_bart_checkpoint)
  task.compile(sampler="greedy")
  theirs, _ = generate_with_transformers(hf_bart_checkpoint, TEXTS, task, num_beams=1)
  ours, _ = generate_with_ours(task, TEXTS, CNN_STYLE["max_length"])
  assert_same_sequences(ours, theirs)
  assert (theirs[:, 1] == 0).all()                     # forced BOS happened
  task.compile(sampler=generation.Sampler(name="top_k", k=1))
  top1, _ = generate_with_ours(task, TEXTS, CNN_STYLE["max_length"])
  np.testing.assert_array_equal(top1, ours)


@pytest.mark.parametrize("length_penalty,early_stopping,returns", [
    (2.0, True, 1), (1.0, False, 1), (0.5, True, 2)])
def test_beam_search_matches_transformers(hf_bart_checkpoint, length_penalty, early_stopping,
                                          returns):
  task = tfhub_models.load(hf_bart_checkpoint)
  task.compile(sampler=generation.Sampler(name="beam", num_beams=4, length_penalty=length_penalty,
                                  early_stopping=early_stopping, num_return_sequences=returns))
  theirs, their_scores = generate_with_transformers(
      hf_bart_checkpoint, TEXTS, task, num_beams=4, length_penalty=length_penalty,
      early_stopping=early_stopping, num_return_sequences=returns)
  ours, our_scores = generate_with_ours(task, TEXTS, CNN_STYLE["max_length"])
  assert_same_sequences(ours, theirs)
  np.testing.assert_allclose(our_scores, their_scores.numpy(), atol=1e-4)


def test_generation_settings_come_from_the_checkpoint(hf_bart_checkpoint):
  task = tfhub_models.load(hf_bart_checkpoint)
  g = task.backbone.config.generation
  assert (g.num_beams, g.min_length, g.max_length, g.no_repeat_ngram_size) == (4, 6, 24, 3)
  assert g.sampler().name == "beam" and g.sampler().length_penalty == 2.0
  cnn = bart.PRESETS["bart_large_en_cnn"].generation
  assert (cnn.num_beams, cnn.length_penalty, cnn.min_length, cnn.max_length,
          cnn.no_repeat_ngram_size, cnn.forced_bos_token_id, cnn.forced_eos_token_id) == (
              4, 2.0, 56, 142, 3, 0, 2)


def test_processors_follow_their_definitions():
  ids = tf.constant([[2, 0, 5, 6, 7, 5, 6, 1]])
  logits = tf.zeros([1, 10])
  banned = generation.no_repeat_ngram(logits, ids, tf.constant(7), 3)
  assert np.isinf(banned.numpy()[0, 7]) and np.isfinite(np.delete(banned.numpy()[0], 7)).all()
  penalised = generation.repetition_penalty(tf.constant([[2.0, -2.0, 2.0]]),
                                            tf.constant([[0, 1]]), tf.constant(2), 2.0)
  assert penalised.numpy().tolist() == [[1.0, -4.0, 2.0]]
  config = generation.GenerationConfig(min_length=3, forced_bos_token_id=0,
                                       forced_eos_token_id=2)

  def processors(logits, ids, length, max_length):
    sampler = config.sampler()
    return generation.process_logits(
        logits, ids, length, generation.default_settings(config, sampler, 1, max_length),
        generation.Limits.of(config, sampler, max_length), config)

  first = processors(tf.zeros([1, 5]), ids, tf.constant(1), 10).numpy()[0]
  assert first[0] == 0 and np.isinf(first[1:]).all()
  early = processors(tf.zeros([1, 5]), ids, tf.constant(2), 10).numpy()[0]
  assert np.isinf(early[2]) and np.isfinite(early[[0, 1, 3, 4]]).all()
  last = processors(tf.zeros([1, 5]), ids, tf.constant(9), 10).numpy()[0]
  assert last[2] == 0 and np.isinf(np.delete(last, 2)).all()


@pytest.mark.parametrize("name", ["random", "top_k", "top_p"])
def test_samplers_draw_from_their_distributions(name):
  """Empirical frequencies over fixed stateless seeds against the definitions."""
  logits = tf.math.log(tf.constant([[0.4, 0.25, 0.15, 0.1, 0.06, 0.04]]))
  draws = 6000
  batch = tf.tile(logits, [draws, 1])
  if name == "random":
    sample = generation.random(batch, tf.constant([1, 2]), temperature=2.0)
    expected = tf.nn.softmax(logits[0] / 2.0).numpy()
  elif name == "top_k":
    sample = generation.top_k(batch, tf.constant([3, 4]), k=3)
    expected = np.array([0.4, 0.25, 0.15, 0, 0, 0]) / 0.8
  else:
    sample = generation.top_p(batch, tf.constant([5, 6]), p=0.7)
    expected = np.array([0.4, 0.25, 0.15, 0, 0, 0]) / 0.8   # smallest set reaching 0.7
  counts = np.bincount(sample.numpy(), minlength=6) / draws
  assert np.abs(counts - expected).max() < 0.025, (counts, expected)
  again = {"random": lambda: generation.random(batch, tf.constant([1, 2]), temperature=2.0),
           "top_k": lambda: generation.top_k(batch, tf.constant([3, 4]), k=3),
           "top_p": lambda: generation.top_p(batch, tf.constant([5, 6]), p=0.7)}[name]()
  np.testing.assert_array_equal(again.numpy(), sample.numpy())   # same seed, same draws


def test_generate_api_on_lists_tensors_and_datasets(hf_bart_checkpoint):
  task = tfhub_models.load(hf_bart_checkpoint)
  task.compile(sampler="greedy")
  as_list = task.generate(TEXTS, max_length=12)
  assert isinstance(as_list, list) and len(as_list) == 4
  as_tensor = task.generate(tf.constant(TEXTS), max_length=12)
  assert [t.decode() for t in as_tensor.numpy()] == as_list
  dataset = tf.data.Dataset.from_tensor_slices(TEXTS).batch(3)
  assert [t.decode() for t in task.generate(dataset, max_length=12).numpy()] == as_list
  unbounded = task.generate(TEXTS[:1], max_length=12, stop_token_ids=None)
  assert isinstance(unbounded[0], str)
  # keras-hub's dict forms: raw text, and preprocessed ids (what a task built with
  # preprocessor=None takes), which answer ids and their padding mask.
  assert task.generate({"encoder_text": TEXTS}, max_length=12) == as_list
  assert task.generate({"encoder_text": TEXTS[0]}, max_length=12) == as_list[0]
  encoded = task.preprocessor(tf.constant(TEXTS))
  out = task.generate({"encoder_token_ids": encoded["token_ids"],
                       "encoder_padding_mask": encoded["padding_mask"]}, max_length=12)
  ids, mask = out["decoder_token_ids"].numpy(), out["decoder_padding_mask"].numpy()
  assert [t.decode() for t in task.tokenizer.detokenize(ids).numpy()] == as_list
  for row, row_mask in zip(ids, mask):
    ends = [i for i in range(1, len(row)) if row[i] == 2]
    real = ends[0] + 1 if ends else len(row)
    assert row_mask.tolist() == [1] * real + [0] * (len(row) - real)
  bare = bart.BartSeq2SeqLM(task.backbone, None)
  bare.compile(sampler="greedy")
  again = bare.generate({"encoder_token_ids": encoded["token_ids"].numpy(),
                         "encoder_padding_mask": encoded["padding_mask"].numpy()}, max_length=12)
  np.testing.assert_array_equal(again["decoder_token_ids"].numpy(), ids)
  with pytest.raises(ValueError, match="no preprocessor"):
    bare.generate(TEXTS)
  with pytest.raises(ValueError, match="no decoder prompt"):
    task.generate({"encoder_text": TEXTS, "decoder_text": TEXTS})
  with pytest.raises(ValueError, match="encoder_token_ids"):
    task.generate({"token_ids": encoded["token_ids"]})


# ---------------------------------------------------------------------------
# Export.

@pytest.fixture(scope="module")
def bart_exported(hf_bart_checkpoint, tmp_path_factory):
  """The export, and scripts/check_serving.py on it started in the background while
  the tests that load it in this process run."""
  from servers import CheckServing
  task = tfhub_models.load(hf_bart_checkpoint, sequence_length=40)
  task.compile(sampler=task.backbone.config.generation.sampler())
  base = tmp_path_factory.mktemp("bart_models")
  path = export.export(task, base, "bart", options=export.ExportOptions(warmup_batch_sizes=(1,)))
  plain = export.export(task, base, "bart_no_xla", options=export.ExportOptions(
      warmup_batch_sizes=(1,), max_new_tokens=8, jit_compile=False))
  checks = CheckServing(path, plain)
  yield task, path, checks, plain
  checks.stop()


@pytest.fixture(scope="module")
def bart_export(bart_exported):
  return bart_exported[:2]


def test_exported_generation_matches_eager(bart_export, hf_bart_checkpoint):
  task, path = bart_export
  loaded = tf.saved_model.load(str(path))
  assert set(loaded.signatures) == {"serving_default", "generate_with_options", "generate_ids",
                                    "tokenize", "detokenize"}
  out = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
  theirs, _ = generate_with_transformers(hf_bart_checkpoint, TEXTS, task, num_beams=4,
                                         length_penalty=2.0, early_stopping=True)
  assert_same_sequences(out["generated_ids"].numpy(), theirs)
  assert [t.decode() for t in out["generated_text"].numpy()] == [
      t.decode() for t in task.tokenizer.detokenize(theirs).numpy()]
  encoder = task.preprocessor(tf.constant(TEXTS))
  ids = loaded.signatures["generate_ids"](encoder_token_ids=encoder["token_ids"][:, :11],
                                          encoder_padding_mask=encoder["padding_mask"][:, :11])
  assert ids["generated_ids"].shape[0] == 4
  with pytest.raises(tf.errors.InvalidArgumentError, match="vocabulary size"):
    loaded.signatures["generate_ids"](encoder_token_ids=encoder["token_ids"] + 100000,
                                      encoder_padding_mask=encoder["padding_mask"])
  text = loaded.signatures["detokenize"](token_ids=tf.constant(theirs, tf.int32))["text"]
  assert text.shape == (4,)


def test_exported_generation_bad_input(bart_export):
  _, path = bart_export
  serve = tf.saved_model.load(str(path)).signatures["serving_default"]
  empty = serve(text=tf.constant([], tf.string))
  assert empty["generated_ids"].shape[0] == 0
  out = serve(text=tf.constant([b"", b"\xff\xfe", ("word " * 500).encode()]))
  assert out["generated_ids"].shape == (3, CNN_STYLE["max_length"])
  assert (out["generated_ids"].numpy()[:, 0] == 2).all()


def test_check_serving_passes_on_the_bart_exports(bart_exported):
  from servers import assert_serving_flags
  _, path, checks, plain = bart_exported
  stdout = checks.passed(path)
  assert "SentencepieceTokenizeOp" in stdout and "XLA: yes" in stdout
  assert_serving_flags(stdout, xla=True)
  assert_serving_flags(checks.passed(plain), xla=False)


def test_cli_generation_flags(hf_bart_checkpoint, tmp_path):
  result = subprocess.run(
      [sys.executable, "scripts/export.py", "--checkpoint", str(hf_bart_checkpoint), "--output",
       str(tmp_path), "--sampler", "top_p", "--top-p", "0.8", "--temperature", "0.7",
       "--max-new-tokens", "6", "--max-input-length", "16", "--seed", "3", "--no-xla",
       "--warmup-batch-sizes", "1"],
      capture_output=True, text=True, cwd=ROOT, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr
  loaded = tf.saved_model.load(result.stdout.strip().splitlines()[-1])
  out = loaded.signatures["serving_default"](text=tf.constant(["hello", "world"]))
  assert out["generated_ids"].shape == (2, 7)
  again = loaded.signatures["serving_default"](text=tf.constant(["hello", "world"]))
  np.testing.assert_array_equal(out["generated_ids"].numpy(), again["generated_ids"].numpy())
  # The refusal, through main() in this process (the command line ran just above):
  # argparse's, before the checkpoint is read.
  from servers import export_main
  code, _, stderr = export_main("--checkpoint", hf_bart_checkpoint, "--output", tmp_path,
                                "--sampler", "top_p", "--top-p", "1.5", "--name", "bad")
  assert code == 2 and "argument --top-p: must be a number in (0, 1], got 1.5" in stderr


def test_contrastive_search(hf_bart_checkpoint):
  """alpha = 0 is greedy; alpha > 0 trades probability for less repetition."""
  task = tfhub_models.load(hf_bart_checkpoint)
  task.compile(sampler="greedy")
  greedy_ids, _ = generate_with_ours(task, TEXTS, 16)
  task.compile(sampler=generation.Sampler(name="contrastive", k=4, alpha=0.0))
  plain, _ = generate_with_ours(task, TEXTS, 16)
  np.testing.assert_array_equal(plain, greedy_ids)
  task.compile(sampler=generation.Sampler(name="contrastive", k=4, alpha=0.9))
  penalised, scores = generate_with_ours(task, TEXTS, 16)
  assert penalised.shape == greedy_ids.shape and np.isfinite(scores).all()
  assert (penalised != greedy_ids).any()
  again, _ = generate_with_ours(task, TEXTS, 16)
  np.testing.assert_array_equal(again, penalised)


def test_keras_hub_preset_matches_keras_hub(bpe_dir, tmp_path):
  import json
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  import keras_hub
  vocabulary = json.loads((bpe_dir / "vocab.json").read_text())
  merges = [line for line in (bpe_dir / "merges.txt").read_text().splitlines()
            if line and not line.startswith("#version")]
  tokenizer = keras_hub.models.BartTokenizer(vocabulary=vocabulary, merges=merges)
  backbone = keras_hub.models.BartBackbone(vocabulary_size=len(vocabulary), num_layers=2,
                                           num_heads=4, hidden_dim=32, intermediate_dim=48,
                                           max_sequence_length=64)
  rng = np.random.default_rng(0)
  for weight in backbone.weights:   # move layer norms and biases off 1 and 0
    weight.assign(weight + rng.normal(size=weight.shape) * 0.05)
  preprocessor = keras_hub.models.BartSeq2SeqLMPreprocessor(
      tokenizer, encoder_sequence_length=24, decoder_sequence_length=24)
  keras_hub.models.BartSeq2SeqLM(backbone=backbone, preprocessor=preprocessor).save_to_preset(
      str(tmp_path / "preset"))
  task = tfhub_models.load(tmp_path / "preset", sequence_length=24)
  encoder = task.preprocessor(tf.constant(TEXTS))
  decoder = tf.constant([[2, 0, 10, 20], [2, 0, 5, 1], [2, 0, 7, 1], [2, 0, 1, 1]])
  inputs = {"encoder_token_ids": encoder["token_ids"],
            "encoder_padding_mask": encoder["padding_mask"],
            "decoder_token_ids": decoder, "decoder_padding_mask": tf.cast(decoder != 1, tf.int32)}
  expected = backbone(inputs)
  got = task.backbone(inputs)
  real = encoder["padding_mask"].numpy().astype(bool)
  np.testing.assert_allclose(got["encoder_sequence_output"].numpy()[real],
                             np.asarray(expected["encoder_sequence_output"])[real], atol=1e-4)
  real = (decoder != 1).numpy()
  np.testing.assert_allclose(got["decoder_sequence_output"].numpy()[real],
                             np.asarray(expected["decoder_sequence_output"])[real], atol=1e-4)


@pytest.fixture(scope="module")
def early_ending_checkpoint(tmp_path_factory, bpe_dir):
  """EOS made likelier, so rows end at different steps: exercises finishing,
  the early-stop check and the length penalty across lengths."""
  return write_bart_checkpoint(tmp_path_factory.mktemp("bart_eos"), bpe_dir, seed=5,
                               eos_bias=2.0, generation=dict(CNN_STYLE, min_length=3))


@pytest.mark.parametrize("settings", [
    dict(name="greedy"),
    dict(name="beam", length_penalty=2.0, early_stopping=True),
    dict(name="beam", length_penalty=2.0, early_stopping="never"),
    dict(name="beam", length_penalty=0.5, early_stopping=False, num_return_sequences=3),
    dict(name="beam", length_penalty=-1.0, early_stopping="never"),
], ids=lambda s: "-".join(str(v) for v in s.values()))
def test_generation_with_early_endings_matches_transformers(early_ending_checkpoint, settings):
  task = tfhub_models.load(early_ending_checkpoint)
  task.compile(sampler=generation.Sampler(num_beams=4, **settings))
  kwargs = dict(num_beams=1) if settings["name"] == "greedy" else dict(
      num_beams=4, length_penalty=settings["length_penalty"],
      early_stopping=settings["early_stopping"],
      num_return_sequences=settings.get("num_return_sequences", 1))
  theirs, their_scores = generate_with_transformers(early_ending_checkpoint, TEXTS, task,
                                                    **kwargs)
  ours, our_scores = generate_with_ours(task, TEXTS, CNN_STYLE["max_length"])
  ends = [list(row).index(2, 1) if 2 in row[1:] else len(row) for row in theirs]
  if settings.get("early_stopping") != "never":         # "never" searches to max_length
    assert min(ends) < CNN_STYLE["max_length"] - 1     # some rows really end early
  assert_same_sequences(ours, theirs)
  if their_scores is not None:
    np.testing.assert_allclose(our_scores, their_scores.numpy(), atol=1e-4)


def test_several_end_ids_in_the_generation_config_match_transformers(tmp_path, bpe_dir):
  """generation_config.json may list several eos ids: any of them ends a row (and
  min_length holds them all back), as upstream."""
  import json
  directory = write_bart_checkpoint(tmp_path, bpe_dir, seed=5,
                                    generation=dict(min_length=3, max_length=16,
                                                    no_repeat_ngram_size=1))
  task = tfhub_models.load(directory)
  task.compile(sampler="greedy")
  before, _ = generate_with_transformers(directory, TEXTS, task, num_beams=1)
  # An ordinary id a row generates after min_length becomes an end id too.
  row, stop = next((r, int(t)) for r in range(len(before)) for t in before[r][4:]
                   if t > 4 and list(before[r]).index(t) >= 4)
  config = json.loads((directory / "generation_config.json").read_text())
  config["eos_token_id"] = [2, stop]
  (directory / "generation_config.json").write_text(json.dumps(config))
  task = tfhub_models.load(directory)
  assert task.backbone.config.generation.eos_token_ids == (2, stop)
  task.compile(sampler="greedy")
  theirs, _ = generate_with_transformers(directory, TEXTS, task, num_beams=1)
  ours, _ = generate_with_ours(task, TEXTS, 16)
  end = list(before[row]).index(stop)
  assert list(theirs[row][:end + 1]) == list(before[row][:end + 1])   # that row ends there
  assert (theirs[row][end + 1:] == 1).all()
  assert_same_sequences(ours, theirs)


def test_max_length_is_bounded_by_the_positions(hf_bart_checkpoint):
  task = tfhub_models.load(hf_bart_checkpoint)
  with pytest.raises(ValueError, match="must be in 2..64"):
    task.generate(["x"], max_length=90)
  with pytest.raises(ValueError, match="must be in 2..64"):
    export.ServingModule(task, export.ExportOptions(max_new_tokens=200))
