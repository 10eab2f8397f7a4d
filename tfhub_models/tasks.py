"""The thin base of every task class (`Task`, as keras-hub's), the masked-LM
task every encoder family shares (`MaskedLM`), and the rules tasks share: size
checks, preset loading, mask finding and the fill-mask answers.

A task composes a backbone, a preprocessor (None: it takes preprocessed integer
inputs) and its head.  A family file declares its task classes (their `task`
name, `presets`, `extra_signatures`) and sets their `family` to its loader row
once that exists; loading and saving go through that row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow as tf

from tfhub_models import layers, training
from tfhub_models.checkpoints import loader
from tfhub_models.preprocessing import MaskedLMMasker, check_sequence_length


class Backbone(layers.Module):
  """The thin base of every backbone: its config (a config dataclass, or
  keras-hub's argument names over it), its dtype and `from_preset`.

  Declared by each backbone class: config_class, presets; family is set by the
  family's row."""

  config_class = None
  family: loader.Family | None = None
  presets: dict = {}

  def __init__(self, config, named: dict, *, dtype, name: str):
    super().__init__(name=name)
    self.config = dataclasses.replace(config or self.config_class(),
                                      **{k: v for k, v in named.items() if v is not None})
    self.dtype = layers.as_dtype(dtype)

  @classmethod
  def from_preset(cls, preset: str, load_weights: bool = True, *, dtype="float32"):
    """The backbone of a checkpoint directory, hf:// or kaggle:// handle, or preset name."""
    return load_preset(cls.family, "backbone", preset, load_weights, dtype=dtype)


class Task(layers.Module):
  """A backbone, a preprocessor and a head, loaded and saved as a family's
  checkpoints (one level: heads and blocks stay composed inside).

  Declared by each task class:
    task: its name (fill_mask, text_classification, embedding, generate, ...).
    family: the loader's Family row (set by the family file).
    presets: preset name -> config, the presets whose own task this is.
    extra_signatures: serving signatures exported beside the task's own.
    exact_vocabulary: the tokenizer has exactly the model's ids (False: at most).
  """

  task = ""
  family: loader.Family | None = None
  presets: dict = {}
  extra_signatures: tuple = ()
  exact_vocabulary = True

  def __init__(self, backbone, preprocessor, *, name: str):
    super().__init__(name=name)
    check_compatible(backbone, preprocessor, exact_vocabulary=self.exact_vocabulary)
    self.backbone = backbone
    self.preprocessor = preprocessor

  @classmethod
  def build(cls, backbone, preprocessor, **options):
    """The task over a backbone and preprocessor, with random head weights;
    options: the task's own (none here)."""
    del options   # a classifier's options, which tasks without classes ignore
    return cls(backbone, preprocessor)

  @property
  def tokenizer(self):
    """The preprocessor's tokenizer (None without a preprocessor)."""
    return None if self.preprocessor is None else self.preprocessor.tokenizer

  @classmethod
  def from_preset(cls, preset: str, load_weights: bool = True, preprocessor="auto",
                  **overrides):
    """Loads a checkpoint directory, hf:// or kaggle:// handle, or preset name.

    preprocessor: "auto" (the checkpoint's), None (preprocessed integer inputs)
    or one to use instead; overrides: dtype, sequence_length.
    """
    return load_preset(cls.family, cls.task, preset, load_weights, preprocessor, **overrides)

  def save_to_preset(self, preset_dir, overwrite: bool = False):
    """Writes a Hugging Face checkpoint directory (config.json, model.safetensors,
    the tokenizer's files) that transformers and `from_preset` load; atomic, and
    a non-empty preset_dir is refused unless overwrite.  Returns its path."""
    return save_preset(self.family, self, preset_dir, overwrite=overwrite)


class MaskedLM(Task, training.Trainable):
  """The fill-mask task: preprocessor, backbone and masked-LM head (tied to the
  token embedding).  Answers the most likely fillers of each mask token, and
  trains on raw strings masked on the fly (`masker`, keras-hub's rates;
  replace it to change them)."""

  task = "fill_mask"

  def __init__(self, backbone, preprocessor, head: layers.MaskedLMHead | None = None, *,
               name: str, head_name: str = "masked_lm_head"):
    super().__init__(backbone, preprocessor, name=name)
    self.masker = masker_for(backbone, preprocessor)
    self.head = head or layers.MaskedLMHead(
        backbone.config.hidden_dim, backbone.token_embedding,
        layer_norm_epsilon=backbone.config.layer_norm_epsilon, dtype=backbone.dtype.name,
        name=head_name)

  def __call__(self, inputs: dict, training: bool = False) -> tf.Tensor:
    """Logits at the mask positions.

    Args:
      inputs: {"token_ids", "padding_mask": int32 [B, L], "mask_positions": int32 [B, M]}.

    Returns:
      float32 [B, M, V].
    """
    outputs = self.backbone({"token_ids": inputs["token_ids"],
                             "padding_mask": inputs["padding_mask"]}, training=training)
    return self.head(outputs["sequence_output"], inputs["mask_positions"])

  def prepare(self, x, y=None, sample_weight=None, mode: str = "fit"):
    """Training inputs of one batch; see masked_lm_prepare."""
    return masked_lm_prepare(self, x, y, sample_weight, mode)

  def top_k(self, token_ids, padding_mask, top_k: int) -> dict:
    """Top-k fillers of every mask; see top_k_fillers."""
    return top_k_fillers(self, token_ids, padding_mask, top_k)

  def fill_mask(self, texts: Sequence[str], top_k: int = 5) -> list:
    """Fills every mask token of each text; see the module function fill_mask."""
    return fill_mask(self, texts, top_k)


def build(family: loader.Family, backbone, preprocessor, task: str, **options):
  """The task module of `family` named `task` over a backbone and preprocessor
  (None: a task on token ids), with the task's own options (a classifier's
  num_classes, labels, problem_type)."""
  if task == "backbone":
    return backbone
  if task not in family.task_classes:
    raise ValueError(f"unknown {family.name} task {task!r} ({', '.join(family.tasks)})")
  return family.task_classes[task].build(backbone, preprocessor, **options)


def check_compatible(backbone, preprocessor, *, exact_vocabulary: bool = True) -> None:
  """ValueError unless the preprocessor's ids and lengths fit the backbone (None: a
  task that takes preprocessed inputs)."""
  if preprocessor is None:
    return
  config = backbone.config
  ids = preprocessor.tokenizer.vocabulary_size
  if (ids != config.vocabulary_size) if exact_vocabulary else (ids > config.vocabulary_size):
    raise ValueError(f"the tokenizer has {ids} ids but the model's vocabulary_size is "
                     f"{config.vocabulary_size}")
  check_sequence_length(preprocessor.sequence_length, config.max_sequence_length)


def load_preset(family: loader.Family, task: str, preset, load_weights: bool,
                preprocessor="auto", *, options: dict | None = None, **overrides):
  """`from_preset` of every task and backbone class: the family's loader, one task.

  preprocessor: "auto" (the checkpoint's tokenizer), None (the task takes
  preprocessed integer inputs), or a preprocessor to use instead.
  options: the task's own (a classifier's num_classes, ...).
  overrides: dtype, sequence_length (the loader's options).
  """
  module = loader.load(preset, family, task=task, load_weights=load_weights, options=options,
                       needs_tokenizer=preprocessor is not None, **overrides)
  if isinstance(preprocessor, str) and preprocessor == "auto":
    return module
  if not isinstance(module, Task):
    raise ValueError(f"a {type(module).__name__} has no preprocessor to replace")
  # save_to_preset writes the checkpoint's tokenizer files, whatever preprocesses.
  if module.tokenizer is not None:
    training.keep_checkpoint_tokenizer(module, module.tokenizer)
  check_compatible(module.backbone, preprocessor, exact_vocabulary=module.exact_vocabulary)
  module.preprocessor = preprocessor
  if isinstance(module, MaskedLM):
    module.masker = masker_for(module.backbone, preprocessor)
  return module


def save_preset(family: loader.Family, task, directory, *, overwrite: bool = False):
  """`save_to_preset` of every task: a Hugging Face checkpoint directory that
  transformers' AutoModelFor* / AutoTokenizer and our from_preset load,
  written atomically (a hidden sibling, then a rename).  Returns its path."""
  from tfhub_models.checkpoints import save
  tokenizer = training.preset_tokenizer(task)
  if tokenizer is None:
    raise ValueError(training.no_tokenizer_message(task))
  return save.write(family.save(task, task.task, tokenizer), tokenizer, directory,
                    overwrite=overwrite)


def require_preprocessor(task, what: str) -> None:
  """ValueError when a task built with preprocessor=None is given raw text."""
  if task.preprocessor is None:
    raise ValueError(f"{type(task).__name__} has no preprocessor (built with preprocessor=None): "
                     f"{what} needs one; pass preprocessed integer inputs instead")


def masker_for(backbone, preprocessor) -> MaskedLMMasker | None:
  """The default dynamic masking of a masked-LM task (keras-hub's rates), or None
  without a preprocessor.  Specials (start, end, pad) are never chosen."""
  if preprocessor is None:
    return None
  return MaskedLMMasker(backbone.config.vocabulary_size, preprocessor.tokenizer.mask_token_id,
                        [preprocessor.start_id, preprocessor.end_id, *preprocessor.middle_ids,
                         preprocessor.tokenizer.pad_token_id])


MASKED_LM_INPUTS = ("token_ids", "padding_mask", "mask_positions")


def masked_lm_prepare(task, x, y, sample_weight, mode: str):
  """Training inputs of a masked LM (see training.Trainable.prepare).

  Raw strings [B] are packed and masked on the fly (`task.masker`), or for
  predict answered at their literal mask tokens; preprocessed inputs are
  {"token_ids", "padding_mask", "mask_positions"} with labels y int [B, M] and
  sample_weight [B, M] (default 1).

  Returns:
    (inputs, labels int32 [B, M], weights float32 [B, M]).
  """
  vocabulary = task.backbone.config.vocabulary_size
  if isinstance(x, dict):
    missing = [k for k in MASKED_LM_INPUTS if k not in x]
    if missing:
      raise training.TrainingError(f"preprocessed masked-LM inputs need {', '.join(missing)} "
                                   f"(got {', '.join(sorted(x))})")
    inputs = {k: tf.cast(v, tf.int32) for k, v in x.items()}
    if mode == "predict" or y is None:
      return inputs, None if y is None else tf.cast(y, tf.int32), sample_weight
    labels = tf.cast(y, tf.int32)
    weights = (tf.ones(tf.shape(labels), tf.float32) if sample_weight is None
               else tf.cast(sample_weight, tf.float32))
    checks = [tf.debugging.assert_equal(tf.shape(labels), tf.shape(inputs["mask_positions"]),
                                        message="y must have the shape of mask_positions [B, M]"),
              tf.debugging.assert_equal(tf.shape(weights), tf.shape(labels),
                                        message="sample_weight must have the shape of y [B, M]"),
              training.check_labels(labels, weights, vocabulary, "vocabulary")]
    with tf.control_dependencies(checks):
      return inputs, tf.identity(labels), tf.identity(weights)
  require_preprocessor(task, "raw text")
  if y is not None or sample_weight is not None:
    raise training.TrainingError("raw strings are masked on the fly: pass no y or sample_weight")
  packed = task.preprocessor(x)
  if mode == "predict":
    positions, _ = find_masks(packed["token_ids"], task.tokenizer.mask_token_id)
    return dict(packed, mask_positions=positions), None, None
  return task.masker(packed)


def find_masks(token_ids: tf.Tensor, mask_token_id: int):
  """Positions of the mask token in each row.

  Args:
    token_ids: int32 [B, L].

  Returns:
    (mask_positions int32 [B, M], num_masks int32 [B]); M = most masks in a row,
    rows with fewer are padded with position 0.
  """
  is_mask = tf.equal(token_ids, mask_token_id)
  where = tf.cast(tf.where(is_mask), tf.int32)                          # [n, 2]
  positions = tf.RaggedTensor.from_value_rowids(
      where[:, 1], where[:, 0], nrows=tf.shape(token_ids, out_type=tf.int32)[0])
  return positions.to_tensor(0), tf.cast(positions.row_lengths(), tf.int32)


def top_k_fillers(task, token_ids: tf.Tensor, padding_mask: tf.Tensor, top_k: int) -> dict:
  """Top-k fillers of every mask (eager or graph; not XLA: mask count is data).

  Returns:
    top_k_ids int32 [B, M, K] (-1 past a row's masks), top_k_scores float32
    [B, M, K] (probabilities, 0 past a row's masks), num_masks int32 [B].
  """
  mask_positions, num_masks = find_masks(token_ids, task.tokenizer.mask_token_id)
  logits = task({"token_ids": token_ids, "padding_mask": padding_mask,
                 "mask_positions": mask_positions})
  scores, ids = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=top_k)
  valid = tf.range(tf.shape(mask_positions)[1])[None, :] < num_masks[:, None]   # [B, M]
  return {
      "top_k_ids": tf.where(valid[..., None], ids, -1),
      "top_k_scores": tf.where(valid[..., None], scores, 0.0),
      "num_masks": num_masks,
  }


def fill_mask(task, texts: Sequence[str], top_k: int = 5) -> list:
  """Fills every mask token of each text (eager convenience API).

  Returns:
    One list per text, one list per mask, of {"token_id", "token", "score"}.
  """
  require_preprocessor(task, "fill_mask")
  inputs = task.preprocessor(tf.constant(list(texts), tf.string))
  out = top_k_fillers(task, inputs["token_ids"], inputs["padding_mask"],
                      min(top_k, task.backbone.config.vocabulary_size))
  tokens = task.tokenizer.id_to_text(tf.maximum(out["top_k_ids"], 0)).numpy()
  ids, scores = out["top_k_ids"].numpy(), out["top_k_scores"].numpy()
  answers = []
  for b, count in enumerate(out["num_masks"].numpy()):
    answers.append([[{"token_id": int(ids[b, m, k]), "token": tokens[b, m, k].decode("utf-8"),
                      "score": float(scores[b, m, k])} for k in range(ids.shape[2])]
                    for m in range(count)])
  return answers
