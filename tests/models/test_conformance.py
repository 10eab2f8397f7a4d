"""Every case of tests/conformance.py: eager == tf.function == XLA == unknown batch
size == SavedModel round trip == checkpoint restore."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conformance import CASES, NOT_NUMERIC_MODULES

IDS = [case.name for case in CASES]


def run(case, module, inputs=None):
  inputs = {k: tf.constant(v) for k, v in (inputs or case.inputs()).items()}
  return tf.nest.map_structure(lambda t: t.numpy(), case.call(module, inputs))


def assert_same(got, want, atol):
  tf.nest.assert_same_structure(got, want)
  for g, w in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
    assert g.shape == w.shape and g.dtype == w.dtype
    if np.issubdtype(w.dtype, np.floating):
      np.testing.assert_allclose(g, w, atol=atol)
    else:
      np.testing.assert_array_equal(g, w)


def unknown_batch_specs(inputs: dict) -> dict:
  return {k: tf.TensorSpec([None, *v.shape[1:]], tf.as_dtype(v.dtype), name=k)
          for k, v in inputs.items()}


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def case_and_module(request):
  return request.param, request.param.make(0)


def test_eager_answers_are_deterministic(case_and_module):
  case, module = case_and_module
  assert_same(run(case, module), run(case, module), 0)


def test_tf_function_matches_eager(case_and_module):
  case, module = case_and_module
  inputs = {k: tf.constant(v) for k, v in case.inputs().items()}
  graph = tf.function(lambda i: case.call(module, i), autograph=False)(inputs)
  assert_same(tf.nest.map_structure(lambda t: t.numpy(), graph), run(case, module), case.atol)


def test_xla_matches_eager(case_and_module):
  case, module = case_and_module
  inputs = {k: tf.constant(v) for k, v in case.inputs().items()}
  compiled = tf.function(lambda i: case.call(module, i), jit_compile=True, autograph=False)
  assert_same(tf.nest.map_structure(lambda t: t.numpy(), compiled(inputs)), run(case, module),
              case.atol)


def test_unknown_batch_size_matches_eager(case_and_module):
  case, module = case_and_module
  inputs = case.inputs()
  function = tf.function(lambda i: case.call(module, i), autograph=False,
                         input_signature=[unknown_batch_specs(inputs)])
  got = function({k: tf.constant(v) for k, v in inputs.items()})
  assert_same(tf.nest.map_structure(lambda t: t.numpy(), got), run(case, module), case.atol)
  # One row alone, through the same concrete function, is that row of the batch.
  first = {k: v[:1] for k, v in inputs.items()}
  alone = tf.nest.map_structure(lambda t: t.numpy(),
                                function({k: tf.constant(v) for k, v in first.items()}))
  assert_same(alone, run(case, module, first), case.atol)


def test_saved_model_round_trip_matches_eager(case_and_module, tmp_path):
  case, module = case_and_module
  inputs = case.inputs()
  holder = tf.Module()
  holder.module = module
  holder.run = tf.function(lambda i: case.call(module, i), autograph=False,
                           input_signature=[unknown_batch_specs(inputs)])
  tf.saved_model.save(holder, str(tmp_path))
  loaded = tf.saved_model.load(str(tmp_path))
  got = loaded.run({k: tf.constant(v) for k, v in inputs.items()})
  assert_same(tf.nest.map_structure(lambda t: t.numpy(), got), run(case, module), case.atol)


def test_checkpoint_restore_gives_the_same_answers(case_and_module, tmp_path):
  case, module = case_and_module
  other = case.make(1)
  assert module.trainable_variables and len(other.variables) == len(module.variables)
  rng = np.random.default_rng(1)
  for variable in other.variables:   # layer norms start at 1 and 0 whatever the seed
    variable.assign(variable + rng.normal(size=variable.shape).astype(
        variable.dtype.as_numpy_dtype))
  before = [(a, b) for a, b in zip(tf.nest.flatten(run(case, other)),
                                   tf.nest.flatten(run(case, module)))
            if np.issubdtype(b.dtype, np.floating)]
  assert any(a.shape != b.shape or not np.allclose(a, b) for a, b in before)  # other weights
  path = tf.train.Checkpoint(module=module).write(str(tmp_path / "ckpt"))
  tf.train.Checkpoint(module=other).read(path).assert_existing_objects_matched()
  assert_same(run(case, other), run(case, module), case.atol)


def _package_module_classes() -> dict:
  """{name: class} of every tf.Module subclass defined in tfhub_models."""
  import importlib
  import inspect
  import pkgutil

  import tfhub_models
  found = {}
  for info in pkgutil.walk_packages(tfhub_models.__path__, "tfhub_models."):
    module = importlib.import_module(info.name)
    for name, value in vars(module).items():
      if (inspect.isclass(value) and issubclass(value, tf.Module)
          and value.__module__ == module.__name__):
        found[name] = value
  return found


def test_every_module_class_has_a_case():
  """A new tf.Module in tfhub_models/ gets a case (as the class itself or inside
  one), or a line in NOT_NUMERIC_MODULES saying where it is checked instead."""
  classes = _package_module_classes()
  assert {"Dense", "BartBackbone", "XLMRobertaEncoder", "Tokenize"} <= set(classes)
  covered = set()
  for case in CASES:
    module = case.make(0)
    covered |= {type(m).__name__ for m in (module, *module.submodules)}
  missing = sorted(set(classes) - covered - NOT_NUMERIC_MODULES)
  assert not missing, f"tf.Module classes with no conformance case: {missing}"
  stale = sorted(NOT_NUMERIC_MODULES - set(classes))
  assert not stale, f"NOT_NUMERIC_MODULES names classes that no longer exist: {stale}"
