"""compile / fit / evaluate / predict: the `Trainable` mixin (see the package's
docstring for what a task supplies)."""

from __future__ import annotations

import copy
import itertools
import math
import os
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfhub_models import optimizers
from tfhub_models.training.data import (Batches, guarded,
                                        validation_batches, stack_padded)
from tfhub_models.training.errors import LOSSES, TrainingError, sparse_cross_entropy
from tfhub_models.training.presets import no_tokenizer_message, preset_tokenizer
from tfhub_models.training.resume import read_partial, read_side_file, save_checkpoint

MODES = ("fit", "evaluate", "predict")


class _Compiled:
  """What compile() settles: a plain object, so tf.Module does not track the
  optimizer into the model's SavedModel or checkpoints."""

  def __init__(self, optimizer, loss: Callable, metrics: tuple, jit_compile: bool):
    self.optimizer = optimizer
    self.loss = loss
    self.metrics = metrics
    self.jit_compile = jit_compile
    self.functions = {}



class Trainable:
  """compile, fit, evaluate and predict (keras-hub's names and defaults).

  Hooks a task may override: `default_learning_rate`, `default_loss` (labels,
  logits -> per-position losses), `default_metrics`, `hits` (labels, logits ->
  1.0 where a prediction is right), `prepare` (required), and the validation
  ones below (`collects_predictions`, `predicted_classes`, `evaluation_metrics`,
  `training_examples`).
  """

  default_learning_rate = 5e-5
  default_loss = staticmethod(sparse_cross_entropy)
  default_metrics = ("accuracy",)

  def hits(self, labels, logits) -> tf.Tensor:
    """1.0 where the most likely id is the label's (the same shape as labels)."""
    return tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                            tf.cast(labels, tf.int32)), tf.float32)

  @property
  def optimizer(self):
    """The compiled optimizer (None before compile)."""
    compiled = self.__dict__.get("_training")
    return compiled.optimizer if compiled is not None else None

  def compile(self, optimizer="auto", loss="auto", metrics="auto", jit_compile: bool = True):
    """Sets up training.

    Args:
      optimizer: "auto" (Adam at the task's upstream rate), "adam", "adamw", or
        a `tfhub_models.optimizers.Adam` / `AdamW`.
      loss: "auto" / "sparse_categorical_crossentropy", or a function
        (labels, logits) -> per-position losses, weighted by the sample weights.
      metrics: "auto" or ["accuracy"] (weighted accuracy), or None.
      jit_compile: compile each step with XLA.
    """
    if callable(loss):
      loss_fn = loss
    elif loss == "auto":
      loss_fn = self.default_loss
    elif loss in LOSSES:
      loss_fn = LOSSES[loss]
    else:
      raise ValueError(f"unknown loss {loss!r}: use \"auto\", "
                       "\"sparse_categorical_crossentropy\" or a function (labels, logits)")
    if isinstance(metrics, str) and metrics == "auto":
      metrics = self.default_metrics
    metrics = tuple(metrics or ())
    unknown = [m for m in metrics if m != "accuracy"]
    if unknown:
      raise ValueError(f"unknown metrics {unknown}: only \"accuracy\" is supported")
    object.__setattr__(self, "_training", _Compiled(
        optimizers.get(optimizer, self.default_learning_rate), loss_fn, metrics,
        bool(jit_compile)))

  def _training_state(self) -> _Compiled:
    compiled = self.__dict__.get("_training")
    if compiled is None:
      self.compile()
      compiled = self.__dict__["_training"]
    return compiled

  # -- steps -----------------------------------------------------------------

  def _terms(self, inputs, labels, weights, training: bool):
    """(sum of weighted losses, sum of weights, weighted hits, real tokens): scalars."""
    return self._terms_of(self(inputs, training=training), inputs, labels, weights)

  def _terms_of(self, logits, inputs, labels, weights):
    compiled = self._training_state()
    weights = tf.cast(weights, tf.float32)
    losses = compiled.loss(labels, logits)
    hits = self.hits(labels, logits)
    tokens = tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32)) for k, v in inputs.items()
                       if k.endswith("padding_mask")])
    return (tf.reduce_sum(losses * weights), tf.reduce_sum(weights),
            tf.reduce_sum(hits * weights), tokens)

  def _train_function(self):
    compiled = self._training_state()
    variables = list(self.trainable_variables)
    strategy = tf.distribute.get_strategy()
    # A new trace after (un)freezing, and for another strategy.
    key = ("train", id(strategy)) + tuple(id(v) for v in variables)
    if key in compiled.functions:
      return compiled.functions[key]
    if not variables:
      raise TrainingError(f"{type(self).__name__} has no trainable variables (everything is "
                          "frozen)")
    wide = [v.name for v in variables if v.dtype != tf.float32]
    if wide:
      raise TrainingError(f"fit needs float32 weights (Adam's small updates round away in "
                          f"{variables[0].dtype.name}); load with dtype=\"float32\" "
                          f"({len(wide)} variables are not, e.g. {wide[0]})")
    if tf.distribute.has_strategy() and not all(
        strategy.extended.variable_created_in_scope(v) for v in variables):
      raise TrainingError("the model was built outside the strategy's scope: build it "
                          "(from_preset) "
                          "and call compile and fit inside `with strategy.scope():`")
    with strategy.scope():
      compiled.optimizer.build(variables)

    if not tf.distribute.has_strategy():
      def step(inputs, labels, weights):
        with tf.GradientTape() as tape:
          loss_sum, weight_sum, hits, tokens = self._terms(inputs, labels, weights, True)
          loss = tf.math.divide_no_nan(loss_sum, weight_sum)
        compiled.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss_sum, weight_sum, hits, tokens
      function = tf.function(step, jit_compile=compiled.jit_compile, autograph=False)
    else:
      def gradients(inputs, labels, weights, global_weight):
        with tf.GradientTape() as tape:
          loss_sum, weight_sum, hits, tokens = self._terms(inputs, labels, weights, True)
          loss = tf.math.divide_no_nan(loss_sum, global_weight)
        return tape.gradient(loss, variables), (loss_sum, weight_sum, hits, tokens)
      compiled_gradients = tf.function(gradients, jit_compile=compiled.jit_compile,
                                       autograph=False)

      def replica_step(inputs, labels, weights):
        context = tf.distribute.get_replica_context()
        global_weight = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                           tf.reduce_sum(tf.cast(weights, tf.float32)))
        grads, terms = compiled_gradients(inputs, labels, weights, global_weight)
        compiled.optimizer.apply(grads, variables)
        return terms

      def step(inputs, labels, weights):
        terms = strategy.run(replica_step, args=(inputs, labels, weights))
        return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None) for t in terms)
      function = tf.function(step, autograph=False)
    compiled.functions[key] = function
    return function

  def _eval_function(self):
    compiled = self._training_state()
    if "evaluate" not in compiled.functions:
      def evaluate(inputs, labels, weights):
        logits = self(inputs, training=False)
        predicted = (self.predicted_classes(logits) if self.collects_predictions
                     else tf.zeros([0], tf.int32))
        return (*self._terms_of(logits, inputs, labels, weights), predicted)
      compiled.functions["evaluate"] = tf.function(evaluate, jit_compile=compiled.jit_compile,
                                                   autograph=False)
    return compiled.functions["evaluate"]

  # -- what evaluation reports beyond loss and accuracy (tasks override) -------

  # Whether evaluation keeps each batch's predictions for evaluation_metrics.
  collects_predictions = False

  def predicted_classes(self, logits: tf.Tensor) -> tf.Tensor:
    """What evaluation keeps of a batch's logits: int32 classes (argmax)."""
    return tf.argmax(logits, axis=-1, output_type=tf.int32)

  def evaluation_metrics(self, predicted: np.ndarray, labels: np.ndarray,
                         weights: np.ndarray) -> dict:
    """Figures of a whole evaluation from its predicted classes, labels and
    weights (rows, or rows x tokens; weight 0 where nothing counts)."""
    del predicted, labels, weights
    return {}

  def training_examples(self, x, y):
    """The user's (x, y) as batches take them: a task may accept friendlier
    forms (label names, words with tags) and turn them into arrays here."""
    return x, y

  def _predict_function(self):
    compiled = self._training_state()
    if "predict" not in compiled.functions:
      compiled.functions["predict"] = tf.function(
          lambda inputs: self(inputs, training=False), jit_compile=compiled.jit_compile,
          autograph=False)
    return compiled.functions["predict"]

  def _prepared(self, dataset: tf.data.Dataset, mode: str) -> tf.data.Dataset:
    """Batch dicts -> (inputs, labels, weights), or inputs alone for predict."""
    def prepare(batch):
      inputs, labels, weights = self.prepare(batch["x"], batch.get("y"),
                                             batch.get("sample_weight"), mode)
      if mode == "predict":
        return inputs
      if labels is None:
        raise TrainingError(f"{type(self).__name__}.{mode} needs labels y for preprocessed "
                            "inputs")
      if weights is None:
        weights = tf.ones(tf.shape(labels), tf.float32)
      return inputs, labels, tf.cast(weights, tf.float32)
    # Not converted by AutoGraph, so a TrainingError raised while tracing
    # reaches the caller as itself.
    prepared = dataset.map(tf.autograph.experimental.do_not_convert(prepare)).prefetch(2)
    if mode == "fit" and tf.distribute.has_strategy():
      prepared = tf.distribute.get_strategy().experimental_distribute_dataset(prepared)
    return prepared

  def _check_data(self, batches: Batches | None) -> None:
    """Preprocesses in-memory data once, in large batches, so that a bad row (an
    empty or unmaskable text, a label outside the vocabulary) is named before
    the first step rather than when its batch comes up.  Datasets are checked
    as they are read."""
    if batches is None or batches.dataset is not None:
      return
    whole = copy.copy(batches)
    whole.batch_size = max(batches.batch_size, 1024)
    for _ in guarded(self._prepared(whole.epoch(None, 0), "evaluate")):
      pass

  def _epochs(self, batches: Batches, mode: str, order_seed, first_epoch: int, epochs: int,
              skip: int = 0, *, repeat: bool = False):
    """(epoch, iterator of prepared batches) for each epoch, all taken from one
    tf.data iterator where the number of batches per epoch is known (with
    repeat, the same batches every epoch: validation)."""
    if batches.steps is None:            # a Dataset of unknown length: one pipeline an epoch
      def each_epoch():
        for epoch in range(first_epoch, epochs):
          yield epoch, guarded(self._prepared(
              batches.epoch(None, epoch, skip if epoch == first_epoch else 0), mode))
      return each_epoch()
    # Built here, not when first iterated: bad input is named before the first step.
    if repeat:
      prepared = self._prepared(batches.epoch(order_seed, 0).repeat(), mode)
    else:
      prepared = self._prepared(batches.stream(order_seed, first_epoch, epochs, skip), mode)
    stream = guarded(prepared)

    def counted():
      for epoch in range(first_epoch, epochs):
        yield epoch, itertools.islice(stream, batches.steps - (skip if epoch == first_epoch
                                                               else 0))
    return counted()

  # -- public API ------------------------------------------------------------

  def fit(self, x=None, y=None, sample_weight=None, batch_size=None, epochs: int = 1,
          validation_data=None, shuffle: bool = True, seed: int | None = None,
          checkpoint_dir: str | None = None, verbose="auto", *, checkpoint_every: int = 100,
          keep_checkpoints: int = 3) -> dict:
    """Trains the task; returns the history {"loss": [...], "accuracy": [...],
    "val_loss": [...], "val_accuracy": [...]} (per epoch).

    Args:
      x: raw strings (list / string tensor), what the task's preprocessing takes
        as a dict (e.g. {"encoder_text", "decoder_text"}), preprocessed integer
        arrays (a dict), or a tf.data.Dataset of batches x / (x, y) / (x, y, w).
      y, sample_weight: labels and weights of preprocessed inputs.
      batch_size: rows per step (default 32; not with a Dataset).
      epochs: passes over the data.
      validation_data: x, (x, y) or (x, y, sample_weight), or a Dataset,
        evaluated after each epoch.
      shuffle: a new order each epoch (from `seed`); False takes batches in order.
      seed: the order's seed (None: drawn once and kept in the checkpoint).
      checkpoint_dir: saves model, optimizer and data position every
        `checkpoint_every` steps and at each epoch's end (the last
        `keep_checkpoints` kept); calling fit again with it resumes there.
      verbose: "auto" (a progress bar on a terminal, a line per epoch
        otherwise), 0, 1 (bar) or 2 (a line per epoch).
    """
    if int(epochs) < 1:
      raise TrainingError(f"epochs must be >= 1, got {epochs}")
    if checkpoint_dir is not None and int(checkpoint_every) < 1:
      raise TrainingError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if preset_tokenizer(self) is None:
      warnings.warn(no_tokenizer_message(self, "save_to_preset will refuse after fit"),
                    stacklevel=2)
    compiled = self._training_state()
    x, y = self.training_examples(x, y)
    batches = Batches(x, y, sample_weight, batch_size=batch_size)
    validation = (validation_batches(validation_data, batch_size, self.training_examples)
                  if validation_data is not None else None)
    for data in (batches, validation):
      self._check_data(data)
    train = self._train_function()
    optimizer = compiled.optimizer
    order_seed = None
    if (shuffle and batches.dataset is None and seed is None and tf.distribute.has_strategy()
        and tf.distribute.get_strategy().extended._in_multi_worker_mode()):
      raise TrainingError("with several workers, pass fit(seed=...): each worker must shuffle "
                          "the same way")
    if shuffle and batches.dataset is None:
      order_seed = int(seed) if seed is not None else int(np.random.default_rng().integers(2**31))
    position = tf.Variable([0, 0, -1 if order_seed is None else order_seed], dtype=tf.int64,
                           trainable=False)
    history = {"loss": [], "accuracy": []}
    manager = resumed = None
    if checkpoint_dir is not None:
      # Made now: the side files go there before the first checkpoint does, and a
      # path that cannot be a directory fails here rather than after the first steps.
      os.makedirs(checkpoint_dir, exist_ok=True)
      checkpoint = tf.train.Checkpoint(model=self, optimizer=optimizer, position=position)
      manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=keep_checkpoints)
      if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        resumed = read_side_file(checkpoint_dir, manager.latest_checkpoint)
        history = resumed["history"] if resumed else history
        saved_seed = int(position[2])
        order_seed = None if saved_seed < 0 else saved_seed
    mode = _verbosity(verbose)
    start_epoch, start_skip = int(position[0]), int(position[1])
    validation_epochs = None if validation is None else self._epochs(
        validation, "evaluate", None, start_epoch, int(epochs), repeat=True)
    for epoch, dataset in self._epochs(batches, "fit", order_seed, start_epoch, int(epochs),
                                       start_skip):
      skip = start_skip if epoch == start_epoch else 0
      bar = _progress(mode, batches.steps, skip, f"epoch {epoch + 1}/{epochs}")
      losses, weight_total, hits_total = read_partial(resumed, epoch, skip)
      step = skip
      started, tokens_seen = time.perf_counter(), 0.0
      for inputs, labels, weights in dataset:
        loss_sum, weight_sum, hits, tokens = (float(t) for t in train(inputs, labels, weights))
        loss = loss_sum / weight_sum if weight_sum else 0.0
        step += 1
        if not math.isfinite(loss):
          raise TrainingError(
              f"the loss is {loss} at step {step} of epoch {epoch + 1} (update "
              f"{int(optimizer.iterations) + 1}); training stopped, the weights are those "
              f"before that step" + (f" and {manager.latest_checkpoint} is the last good "
                                     "checkpoint" if manager and manager.latest_checkpoint else ""))
        losses.append(loss)
        weight_total += weight_sum
        hits_total += hits
        tokens_seen += tokens
        if bar is not None:
          elapsed = max(time.perf_counter() - started, 1e-9)
          bar.set_postfix(loss=f"{np.mean(losses):.4f}",
                          lr=f"{float(optimizer.current_learning_rate()):.3g}",
                          tokens_per_s=f"{tokens_seen / elapsed:.0f}")
          bar.update(1)
        if manager is not None and step % checkpoint_every == 0:
          position.assign([epoch, step, position[2]])
          save_checkpoint(manager, checkpoint_dir, history, epoch,
                          (losses, weight_total, hits_total))
      if not losses:
        raise TrainingError("the data set is empty")
      history["loss"].append(float(np.mean(losses)))
      if "accuracy" in compiled.metrics:
        history["accuracy"].append(hits_total / weight_total if weight_total else 0.0)
      if validation_epochs is not None:
        scores = self._evaluate_batches(next(validation_epochs)[1])
        for key, value in scores.items():
          history.setdefault(f"val_{key}", []).append(value)
      if bar is not None:   # the epoch's figures on its progress line
        bar.set_postfix({k: f"{v[-1]:.4f}" for k, v in history.items() if v})
        bar.close()
      if manager is not None:
        position.assign([epoch + 1, 0, position[2]])
        save_checkpoint(manager, checkpoint_dir, history, epoch + 1, ([], 0.0, 0.0))
      if mode == 2:
        print(f"epoch {epoch + 1}/{epochs}: " + ", ".join(
            f"{k} {v[-1]:.4f}" for k, v in history.items() if v), file=sys.stderr)
    if "accuracy" not in compiled.metrics:
      history.pop("accuracy", None)
    return history

  def _evaluate_batches(self, prepared) -> dict:
    """Scores of prepared (inputs, labels, weights) batches."""
    evaluate = self._eval_function()
    loss_total = weight_total = hits_total = 0.0
    kept = []
    for inputs, labels, weights in prepared:
      *terms, predicted = evaluate(inputs, labels, weights)
      loss_sum, weight_sum, hits, _ = (float(t) for t in terms)
      loss_total, weight_total, hits_total = (loss_total + loss_sum, weight_total + weight_sum,
                                              hits_total + hits)
      if self.collects_predictions:
        kept.append((predicted.numpy(), labels.numpy(), weights.numpy()))
    scores = {"loss": loss_total / weight_total if weight_total else 0.0}
    if "accuracy" in self._training_state().metrics:
      scores["accuracy"] = hits_total / weight_total if weight_total else 0.0
    if kept:
      predicted, labels, weights = (stack_padded(list(part)) for part in zip(*kept))
      scores.update(self.evaluation_metrics(predicted, labels, weights))
    return scores

  def evaluate(self, x=None, y=None, sample_weight=None, batch_size=None) -> dict:
    """{"loss": sum(weight · loss) / sum(weight) over all batches, "accuracy", and the
    task's figures (classifiers: f1_macro; taggers: entity precision, recall, f1)},
    dropout off."""
    x, y = self.training_examples(x, y)
    batches = Batches(x, y, sample_weight, batch_size=batch_size)
    return self._evaluate_batches(guarded(self._prepared(batches.epoch(None, 0), "evaluate")))

  def predict(self, x, batch_size=None) -> np.ndarray:
    """Logits of every batch, concatenated (padded with 0 to the longest along axis 1)."""
    batches = Batches(self.training_examples(x, None)[0], batch_size=batch_size)
    predict = self._predict_function()
    parts = [predict(inputs).numpy()
             for inputs in guarded(self._prepared(batches.epoch(None, 0), "predict"))]
    if not parts:
      raise TrainingError("the data set is empty")
    return stack_padded(parts)


def _verbosity(verbose) -> int:
  if verbose == "auto":
    return 1 if sys.stderr.isatty() else 2
  if verbose not in (0, 1, 2):
    raise ValueError(f"verbose must be \"auto\", 0, 1 or 2, got {verbose!r}")
  return int(verbose)


def _progress(mode: int, steps, done: int, description: str):
  if mode != 1:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=steps, initial=done, desc=description, unit="step", leave=True)
