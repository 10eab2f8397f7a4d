"""The tokenizer whose files save_to_preset writes, for tasks built without a
preprocessor (kept out of tf.Module's walks)."""

from __future__ import annotations


class _Unsaved:
  """Holds a value out of sight of tf.Module's walks, checkpoints and SavedModels."""

  def __init__(self, value):
    self.value = value


def keep_checkpoint_tokenizer(task, tokenizer) -> None:
  """Remembers the tokenizer of the checkpoint a task was loaded from, for
  save_to_preset, when the task is built without a preprocessor."""
  task.__dict__["_checkpoint_tokenizer"] = _Unsaved(tokenizer)


def preset_tokenizer(task):
  """The tokenizer whose files save_to_preset writes: the preprocessor's, else
  that of the checkpoint a task built with preprocessor=None was loaded from;
  None for a task built from a bare config."""
  if getattr(task, "preprocessor", None) is not None:
    return task.preprocessor.tokenizer
  held = task.__dict__.get("_checkpoint_tokenizer")
  return held.value if held is not None else None


def no_tokenizer_message(task, consequence: str = "save_to_preset refuses") -> str:
  return (f"{type(task).__name__} has no tokenizer (built from a bare config, without a "
          f"preprocessor or a checkpoint), so {consequence}: a preset carries its tokenizer's "
          "files. Build it with from_preset(CHECKPOINT, preprocessor=None), or with a "
          "preprocessor")
