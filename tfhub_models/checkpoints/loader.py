"""Loading a checkpoint as a model, the same way for every family.

A `Family` describes one model family to the loader: how a checkpoint says it
is one (Hugging Face `model_type`, keras-hub `class_name`), and the functions
that read its files (`checkpoints/<family>.py`) and build its modules
(`models/<family>.py`).  `load` runs them in one order, each file read once:

  source -> Checkpoint (directory, hub handle or preset; weights only if wanted)
         -> family (detected) -> config -> tokenizer (checked against the config)
         -> sequence length (checked) -> task (asked for, or the checkpoint's own)
         -> modules -> weights
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple
from collections.abc import Callable

from tfhub_models.checkpoints.sources import Checkpoint, CheckpointError, open_checkpoint
from tfhub_models.preprocessing import check_sequence_length


@dataclasses.dataclass(frozen=True)
class Family:
  """One model family, as the loader sees it.

  Functions (checkpoint: Checkpoint):
    config(checkpoint) -> the family's config dataclass.
    tokenizer(checkpoint, config) -> its tokenizer, checked against the config.
    task(checkpoint, requested, load_weights) -> the task to build: `requested`
      checked, or the checkpoint's own when None.
    options(checkpoint, task, load_weights) -> extra keyword arguments of `build`
      (e.g. a pooler, a classifier's labels).
    build(config, tokenizer, task, *, dtype, sequence_length, **options) -> a module.
    assign(module, checkpoint, task, options) -> None: the weights, strictly.
    save(module, task, tokenizer) -> checkpoints.save.PresetFiles: the module as a
      Hugging Face checkpoint (`save_to_preset`), with its tokenizer's settings.
    demo_tokenizer() -> the tokenizer over the embedded demo vocabulary.
    tokenizer_from_file(path) -> the tokenizer of a user's vocabulary file.
  Tables:
    backbone_class, task_classes: the backbone class, and task name -> its
      class (their `family` becomes this row).
    presets: preset name -> config; preset_tasks: preset name -> its task (the
      family's first task when absent); handles: preset name -> hub handles.
  """
  name: str
  hf_model_types: tuple
  keras_hub_classes: tuple
  tasks: tuple
  config: Callable
  tokenizer: Callable
  task: Callable
  build: Callable
  assign: Callable
  options: Callable = lambda checkpoint, task, load_weights: {}
  save: Callable | None = None
  backbone_class: type | None = None
  demo_tokenizer: Callable | None = None
  tokenizer_from_file: Callable | None = None
  task_classes: dict = dataclasses.field(default_factory=dict)
  handles: dict = dataclasses.field(default_factory=dict)
  presets: dict = dataclasses.field(default_factory=dict)
  preset_tasks: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for task_class in (self.backbone_class, *self.task_classes.values()):
      if task_class is not None:
        task_class.family = self

  def preset_task(self, preset: str) -> str:
    """The task of a preset's checkpoint."""
    return self.preset_tasks.get(preset, self.tasks[0])


def detect(checkpoint: Checkpoint, families) -> Family:
  """The family a checkpoint belongs to, from its config.json."""
  if checkpoint.format == "keras_hub":
    class_name = checkpoint.config["class_name"]
    for family in families:
      if class_name in family.keras_hub_classes:
        return family
    supported = ", ".join(c for f in families for c in f.keras_hub_classes)
    raise CheckpointError(f"{checkpoint.directory}: keras-hub class {class_name!r} is not "
                          f"supported (supported: {supported})")
  model_type = checkpoint.config.get("model_type")
  if model_type is None:
    raise CheckpointError(f"{checkpoint.directory}/config.json: neither a Hugging Face config "
                          "(model_type) nor a keras-hub preset config (class_name)")
  for family in families:
    if model_type in family.hf_model_types:
      return family
  supported = ", ".join(f.hf_model_types[0] for f in families)
  raise CheckpointError(f"{checkpoint.directory}: model_type {model_type!r} is not supported "
                        f"(supported: {supported})")


class Described(NamedTuple):
  """What a checkpoint is, read from its config alone (no weights, no modules)."""
  family: Family
  task: str                  # its own task
  options: dict              # the family's options for that task (a head's labels, ...)


def describe(source, families) -> Described:
  """The family, own task and options of a checkpoint, without reading weights."""
  families = (families,) if isinstance(families, Family) else tuple(families)
  handles = {name: h for family in families for name, h in family.handles.items()}
  checkpoint = open_checkpoint(source, handles, load_weights=False)
  family = detect(checkpoint, families)
  task = family.task(checkpoint, None, False)
  return Described(family, task, family.options(checkpoint, task, False))


def _offline_preset(source, families, task: str | None, error: CheckpointError, *,
                    needs_tokenizer: bool, dtype, sequence_length, options):
  """The module of a preset name whose files are not on this machine, built from
  the preset's config alone (random weights, no tokenizer), or the reason it
  cannot be."""
  family = next(f for f in families if source in f.presets)
  if task is None or (needs_tokenizer and task != "backbone"):
    raise CheckpointError(
        f"{error}\nWithout its files, preset {source!r} is only its config: "
        f"from_preset({source!r}, load_weights=False, preprocessor=None) builds a task that "
        "takes token ids, and a backbone class's from_preset needs no tokenizer") from None
  config = family.presets[source]
  return family.build(config, None, task, dtype=dtype,
                      sequence_length=sequence_length or config.max_sequence_length,
                      **(options or {}))


def load(source, families, *, task: str | None = None, dtype="float32",
         sequence_length: int | None = None, load_weights: bool = True,
         options: dict | None = None, needs_tokenizer: bool = True):
  """Loads a checkpoint directory, hub handle or preset name as a module.

  Args:
    source: a directory, `hf://ORG/NAME`, `kaggle://...`, or a preset name.
    families: the Family to load as, or a sequence of them to detect among.
    task: a task name of the family (None: the checkpoint's own).
    dtype: the weights' dtype ("float32", "bfloat16", "float16").
    sequence_length: the longest input, specials included (None: the model's).
    load_weights: False builds the modules with random weights and reads (or
      downloads) no weight file.
    options: the task's keyword arguments (e.g. num_classes), over the ones the
      family reads from the checkpoint; `build` and `assign` both see them.
    needs_tokenizer: False when the task is wanted without a preprocessor: a
      preset name whose files cannot be had is then built from its config
      (with load_weights=False).
  """
  families = (families,) if isinstance(families, Family) else tuple(families)
  handles = {name: h for family in families for name, h in family.handles.items()}
  try:
    checkpoint = open_checkpoint(source, handles, load_weights=load_weights)
  except CheckpointError as e:
    if load_weights or not any(str(source) in f.presets for f in families):
      raise
    return _offline_preset(str(source), families, task, e, needs_tokenizer=needs_tokenizer,
                           dtype=dtype, sequence_length=sequence_length, options=options)
  family = detect(checkpoint, families)
  if task is not None and task not in family.tasks:
    raise CheckpointError(f"unknown task {task!r} for {family.name} ({', '.join(family.tasks)})")
  config = family.config(checkpoint)
  tokenizer = family.tokenizer(checkpoint, config)
  sequence_length = sequence_length or config.max_sequence_length
  try:
    check_sequence_length(sequence_length, config.max_sequence_length)
  except ValueError as e:
    raise CheckpointError(str(e)) from None
  # Checked before the task, which may read the weights to find the checkpoint's own.
  task = family.task(checkpoint, task, load_weights)
  options = {**family.options(checkpoint, task, load_weights), **(options or {})}
  try:
    module = family.build(config, tokenizer, task, dtype=dtype, sequence_length=sequence_length,
                          **options)
  except ValueError as e:
    raise CheckpointError(f"{checkpoint.directory}: {e}") from None
  if load_weights:
    family.assign(module, checkpoint, task, options)
    checkpoint.release_weights()
  return module
