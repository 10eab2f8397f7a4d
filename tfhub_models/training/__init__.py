"""compile / fit / evaluate / predict for every task, without Keras.

A task trains through `Trainable`, mixed into its class.  The task supplies:

  prepare(x, y, sample_weight, mode) -> (inputs, labels, weights)
      One batch of what the user passed (raw strings, a dict of strings, or
      preprocessed integer arrays) as model inputs, labels [B, ...] and
      weights [B, ...] (float32; 0 = not counted).  Graph mode, not XLA:
      tokenizing and dynamic masking happen here.  mode is "fit", "evaluate"
      or "predict" (labels and weights may then be None).
  __call__(inputs, training) -> logits float32 [B, ..., C].
  default_learning_rate: what compile(optimizer="auto") uses (upstream's).

and this module does the rest, in one direction:

  user data -> batches (fixed order per epoch and seed) -> tf.data map(prepare)
            -> step (tf.GradientTape; XLA when jit_compile): forward(training=True),
               loss = sum(weight · cross-entropy) / sum(weight), gradients of
               task.trainable_variables, optimizer.apply
            -> history; checkpoints of model, optimizer and data position

An epoch's `loss` is the mean of its steps' losses, each computed before that
step's update; `accuracy` is the weighted share of argmax hits over the epoch.
Under a `tf.distribute` strategy scope the global batch is split across
replicas, each replica's loss is divided by the global weight sum, and the
optimizer sums the replicas' gradients, so the update equals one device's.
"""

from __future__ import annotations

from tfhub_models.training.data import DEFAULT_BATCH_SIZE, Batches, stack_padded
from tfhub_models.training.errors import (LOSSES, TrainingError, check_labels,
                                          sparse_cross_entropy)
from tfhub_models.training.loop import MODES, Trainable
from tfhub_models.training.presets import (keep_checkpoint_tokenizer, no_tokenizer_message,
                                           preset_tokenizer)

__all__ = ["Trainable", "TrainingError", "Batches", "check_labels", "sparse_cross_entropy",
           "LOSSES", "DEFAULT_BATCH_SIZE", "MODES", "stack_padded", "keep_checkpoint_tokenizer",
           "preset_tokenizer", "no_tokenizer_message"]
