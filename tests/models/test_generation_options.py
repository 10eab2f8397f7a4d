"""generate_with_options: each row generated with its own settings, as transformers'
generate with those arguments; sampling random unless a seed is given."""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import numpy as np
import pytest
import tensorflow as tf

from conftest import CNN_STYLE
from test_bart import TEXTS, generate_with_transformers
import tfhub_models
from tfhub_models import export, generation
from tfhub_models.export.signatures import GENERATION_OPTIONS

MAX_NEW = CNN_STYLE["max_length"] - 1        # the exports' --max-new-tokens (23)

# Four rows, four sets of settings: lengths, minimums, n-gram bans and penalties differ.
ROWS = [dict(max_new_tokens=5, min_new_tokens=0, no_repeat_ngram_size=0, repetition_penalty=1.0),
        dict(max_new_tokens=12, min_new_tokens=9, no_repeat_ngram_size=2, repetition_penalty=1.0),
        dict(max_new_tokens=MAX_NEW, min_new_tokens=0, no_repeat_ngram_size=3,
             repetition_penalty=1.6),
        dict(max_new_tokens=9, min_new_tokens=3, no_repeat_ngram_size=1, repetition_penalty=0.7)]


class Export(NamedTuple):
  task: object
  loaded: object          # tf.saved_model.load of it
  path: pathlib.Path
  defaults: dict          # generate_with_options' SignatureDef defaults


def recorded_defaults(path) -> dict:
  """The defaults the SignatureDef records (what clients read from the metadata)."""
  from tensorflow.core.protobuf import saved_model_pb2
  saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
  signature = saved.meta_graphs[0].signature_def["generate_with_options"]
  assert set(signature.defaults) == {name for name, _ in GENERATION_OPTIONS}
  return {k: tf.make_ndarray(v)[0] for k, v in signature.defaults.items()}


@pytest.fixture(scope="module")
def exported(hf_bart_checkpoint, tmp_path_factory) -> dict:
  """{kind: Export}: greedy and beam (the config's, CNN-style) with XLA; plain
  sampling without XLA, fresh per request and with --seed 5."""
  base = tmp_path_factory.mktemp("generation_options")
  out = {}
  for kind, sampler, options in [
      ("greedy", "greedy", dict(warmup_batch_sizes=(1, 2))),
      ("beam", None, dict(warmup_batch_sizes=(1,))),
      ("random", "random", dict(warmup_batch_sizes=(1,), jit_compile=False)),
      ("seeded", "random", dict(warmup_batch_sizes=(1,), jit_compile=False, seed=5))]:
    task = tfhub_models.load(hf_bart_checkpoint, sequence_length=40)
    task.compile(sampler=sampler or task.backbone.config.generation.sampler(),
                 jit_compile=options.get("jit_compile", True))
    path = pathlib.Path(export.export(task, base, kind,
                                      options=export.ExportOptions(**options)))
    out[kind] = Export(task, tf.saved_model.load(str(path)), path, recorded_defaults(path))
  return out


def with_options(exported: Export, texts, **settings) -> dict:
  """generate_with_options on texts; a setting is one value for all texts or a list,
  one left out is the export's recorded default."""
  inputs = {"text": tf.constant(texts)}
  for name, dtype in GENERATION_OPTIONS:
    value = settings.get(name, exported.defaults[name])
    inputs[name] = tf.constant(np.broadcast_to(value, [len(texts)]), dtype)
  out = exported.loaded.signatures["generate_with_options"](**inputs)
  return {k: v.numpy() for k, v in out.items()}


def per_row(rows, key):
  return [row[key] for row in rows]


def transformers_row(directory, task, text, row, **kwargs):
  """transformers' ids for `text` alone with the row's settings (min_length 0: the
  row's min_new_tokens replaces the config's minimum)."""
  theirs, scores = generate_with_transformers(directory, [text], task, min_length=0, **row,
                                              **kwargs)
  return theirs[0], None if scores is None else float(scores[0])


@pytest.mark.parametrize("kind", ["greedy", "beam"])
def test_rows_match_transformers_each_with_its_settings(exported, hf_bart_checkpoint, kind):
  task = exported[kind].task
  settings = {key: per_row(ROWS, key) for key in ROWS[0]}
  out = with_options(exported[kind], TEXTS, **settings)
  assert out["generated_ids"].shape == (4, MAX_NEW + 1)
  beams = dict(num_beams=1) if kind == "greedy" else dict(num_beams=4, length_penalty=2.0,
                                                          early_stopping=True)
  lengths = set()
  for b, (text, row) in enumerate(zip(TEXTS, ROWS)):
    theirs, score = transformers_row(hf_bart_checkpoint, task, text, row, **beams)
    ours = out["generated_ids"][b]
    assert ours[:len(theirs)].tolist() == theirs.tolist(), (b, ours.tolist(), theirs.tolist())
    assert (ours[len(theirs):] == 1).all()
    assert out["num_generated_tokens"][b] == len(theirs) - 1 <= row["max_new_tokens"]
    assert len(theirs) - 1 >= min(row["min_new_tokens"], row["max_new_tokens"])
    if score is not None:
      np.testing.assert_allclose(out["scores"][b], score, atol=1e-4)
    lengths.add(len(theirs))
    assert out["generated_text"][b].decode() == task.tokenizer.detokenize(
        tf.constant([theirs], tf.int32)).numpy()[0].decode()
  assert len(lengths) > 2          # the rows really were limited differently


def test_the_export_defaults_are_serving_default(exported):
  """A request whose settings are the recorded defaults gets serving_default's answer;
  the defaults are the checkpoint's (CNN-style) settings."""
  for kind in ("greedy", "beam", "seeded"):
    defaults = exported[kind].defaults
    assert (defaults["max_new_tokens"], defaults["min_new_tokens"],
            defaults["no_repeat_ngram_size"]) == (MAX_NEW, CNN_STYLE["min_length"] - 1, 3)
    plain = exported[kind].loaded.signatures["serving_default"](text=tf.constant(TEXTS))
    options = with_options(exported[kind], TEXTS)
    np.testing.assert_array_equal(options["generated_ids"], plain["generated_ids"].numpy())
    np.testing.assert_allclose(options["scores"], plain["scores"].numpy(), atol=1e-5)
  assert exported["seeded"].defaults["seed"] == 5 and exported["random"].defaults["seed"] == 0


def test_a_seeded_row_does_not_depend_on_its_batch(exported):
  loaded = exported["random"]
  alone = with_options(loaded, [TEXTS[0]], seed=[7], temperature=[1.5], top_k=[0])
  batch = with_options(loaded, [TEXTS[2], TEXTS[0], TEXTS[1], TEXTS[0]], seed=[0, 7, 3, 8],
                       temperature=[0.5, 1.5, 1.0, 1.5], top_k=[3, 0, 5, 0])
  np.testing.assert_array_equal(batch["generated_ids"][1], alone["generated_ids"][0])
  again = with_options(loaded, [TEXTS[0]], seed=[7], temperature=[1.5], top_k=[0])
  np.testing.assert_array_equal(again["generated_ids"], alone["generated_ids"])
  # Another seed (row 3) is another sample of the same text and settings.
  assert (batch["generated_ids"][3] != alone["generated_ids"][0]).any()


def test_sampling_without_a_seed_is_random_per_request(exported):
  serve = exported["random"].loaded.signatures["serving_default"]
  outputs = {tuple(serve(text=tf.constant([TEXTS[0]]))["generated_ids"].numpy()[0])
             for _ in range(20)}
  assert len(outputs) > 1
  rows = with_options(exported["random"], [TEXTS[0]] * 20, seed=0)["generated_ids"]
  assert len({tuple(r) for r in rows}) > 1          # rows of one request differ too
  # --seed 5: serving_default is a function of the text.
  seeded = exported["seeded"].loaded
  first = seeded.signatures["serving_default"](text=tf.constant(TEXTS))["generated_ids"]
  for _ in range(3):
    np.testing.assert_array_equal(
        seeded.signatures["serving_default"](text=tf.constant(TEXTS))["generated_ids"], first)


def test_temperature_top_k_and_top_p_per_row_draw_from_their_definitions():
  """Rows with different settings in one batch, each drawn from its own seed: the
  frequencies of each group against its definition, compiled with XLA."""
  logits = np.log(np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], np.float32))
  groups = [dict(temperature=2.0, top_k=0, top_p=1.0,
                 expected=tf.nn.softmax(logits / 2.0).numpy()),
            dict(temperature=1.0, top_k=3, top_p=1.0,
                 expected=np.array([0.4, 0.25, 0.15, 0, 0, 0]) / 0.8),
            dict(temperature=1.0, top_k=0, top_p=0.7,
                 expected=np.array([0.4, 0.25, 0.15, 0, 0, 0]) / 0.8),
            dict(temperature=0.5, top_k=4, top_p=0.9,   # all three: t, then k, then p
                 expected=None)]
  scaled = logits / 0.5
  kept = np.exp(scaled[:4] - scaled[:4].max())
  kept /= kept.sum()
  # Top-p 0.9 of the four: the smallest head whose mass reaches 0.9.
  head = np.searchsorted(np.cumsum(kept), 0.9) + 1
  groups[3]["expected"] = np.concatenate([kept[:head] / kept[:head].sum(),
                                          np.zeros(6 - head)])
  draws = 4000
  settings = {key: np.repeat([g[key] for g in groups], draws)
              for key in ("temperature", "top_k", "top_p")}
  rows = len(groups) * draws
  limits = generation.Limits(8, top_k=5, top_p=True)
  row_settings = generation.RowSettings(
      max_length=tf.fill([rows], 8), min_length=tf.zeros([rows], tf.int32),
      repetition_penalty=tf.ones([rows]), no_repeat_ngram_size=tf.zeros([rows], tf.int32),
      temperature=tf.constant(settings["temperature"], tf.float32),
      top_k=tf.constant(settings["top_k"], tf.int32),
      top_p=tf.constant(settings["top_p"], tf.float32),
      seed=tf.range(1, rows + 1, dtype=tf.int64))

  @tf.function(jit_compile=True)
  def draw(batch, row_settings):
    return generation.draw_rows(generation.warp(batch, row_settings, limits), row_settings.seed,
                                tf.constant(3))

  sample = draw(tf.tile(logits[None], [rows, 1]), row_settings).numpy()
  for g, group in enumerate(groups):
    counts = np.bincount(sample[g * draws:(g + 1) * draws], minlength=6) / draws
    assert np.abs(counts - group["expected"]).max() < 0.03, (g, counts, group["expected"])
  again = draw(tf.tile(logits[None], [rows, 1]), row_settings).numpy()
  np.testing.assert_array_equal(again, sample)      # the same seeds and step, the same draws


@pytest.mark.parametrize("name,value,words", [
    ("max_new_tokens", 0, f"max_new_tokens must be in 1..{MAX_NEW}"),
    ("max_new_tokens", MAX_NEW + 1, f"max_new_tokens must be in 1..{MAX_NEW}"),
    ("min_new_tokens", -1, f"min_new_tokens must be in 0..{MAX_NEW}"),
    ("temperature", 0.0, "temperature must be > 0"),
    ("temperature", float("nan"), "temperature must be > 0"),
    ("top_p", 0.0, "top_p must be in (0, 1]"),
    ("top_p", 1.5, "top_p must be in (0, 1]"),
    ("top_k", 51, "top_k must be in 0..50"),
    ("top_k", -1, "top_k must be in 0..50"),
    ("repetition_penalty", -1.0, "repetition_penalty must be > 0"),
    ("no_repeat_ngram_size", 5, "no_repeat_ngram_size must be in 0..4"),
    ("no_repeat_ngram_size", -2, "no_repeat_ngram_size must be in 0..4"),
])
def test_settings_out_of_range_are_refused_naming_the_input(exported, name, value, words):
  greedy = exported["greedy"]
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    with_options(greedy, TEXTS[:2], **{name: [greedy.defaults[name], value]})
  assert words in error.value.message


def test_settings_of_another_batch_size_are_refused(exported):
  greedy = exported["greedy"]
  signature = greedy.loaded.signatures["generate_with_options"]
  inputs = {name: tf.constant(np.full([2], greedy.defaults[name]), dtype)
            for name, dtype in GENERATION_OPTIONS}
  inputs["temperature"] = tf.constant([1.0, 1.0, 1.0])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="temperature must hold one value per text"):
    signature(text=tf.constant(TEXTS[:2]), **inputs)


def test_warmup_covers_generate_with_options_at_each_batch_size(exported):
  from tensorflow_serving.apis import prediction_log_pb2
  path = exported["greedy"].path
  records = tf.compat.v1.io.tf_record_iterator(
      str(path / "assets.extra" / "tf_serving_warmup_requests"))
  sizes = {}
  for record in records:
    request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
    sizes.setdefault(request.model_spec.signature_name, set()).add(
        request.inputs["text"].tensor_shape.dim[0].size if "text" in request.inputs else 1)
  assert sizes["generate_with_options"] == {1, 2} == sizes["serving_default"]


def test_in_process_generate_is_random_unless_seeded(hf_bart_checkpoint):
  task = tfhub_models.load(hf_bart_checkpoint)
  task.compile(sampler="random")
  one = task.generate(TEXTS[0], max_length=12)
  assert isinstance(one, str)
  unseeded = {task.generate(TEXTS[0], max_length=12) for _ in range(8)}
  assert len(unseeded) > 1
  seeded = task.generate([TEXTS[0], TEXTS[1]], max_length=12, seed=11)
  assert task.generate([TEXTS[0], TEXTS[1]], max_length=12, seed=11) == seeded
  assert task.generate([TEXTS[1]], max_length=12, seed=11) == seeded[1:]   # per row
  with pytest.raises(TypeError, match="seed"):
    task.generate(TEXTS[0], seed=1.5)
  with pytest.raises(TypeError, match="seed is an int"):
    task.generate(TEXTS[0], seed=(0, 11))
