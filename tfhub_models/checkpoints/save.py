"""Writing a module back as a Hugging Face checkpoint directory.

A family's name map (`checkpoints/<family>.py`) gives its Hugging Face
assignments, (key, variable, transform), for loading; `state` runs them the
other way (each transform's inverse), so one list serves loading and saving.
`write` puts config.json, model.safetensors, the tokenizer's files,
tokenizer_config.json and generation_config.json in place atomically.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from tfhub_models import atomic
from tfhub_models.checkpoints import assign as a


@dataclasses.dataclass
class PresetFiles:
  """What a saved preset holds besides the tokenizer's own files."""
  config: dict                       # config.json (with "architectures")
  weights: dict                      # name -> float32 array, as transformers names them
  tokenizer_config: dict             # tokenizer_config.json
  generation_config: dict | None = None


def state(assignments: list, prefix: str = "", unprefixed: tuple = ()) -> dict:
  """{checkpoint key: array} of assignments [(key, variable, transform)].

  Keys get `prefix` (the model's attribute, e.g. "roberta.") unless they start
  with one of `unprefixed` (heads that sit beside the model upstream).  A
  variable listed twice (tied weights) is written once, under its first key.
  ValueError naming the key of a weight that is NaN or infinite anywhere: the
  loader would refuse the checkpoint.
  """
  out, seen = {}, set()
  for key, variable, transform in assignments:
    if id(variable) in seen:
      continue
    seen.add(id(variable))
    inverse = a.INVERSE.get(id(transform))
    if inverse is None:
      raise ValueError(f"{key}: its transform {transform.__name__} has no inverse")
    value = inverse(np.asarray(variable.numpy(), np.float32))
    name = key if key.startswith(unprefixed) else prefix + key
    if not np.isfinite(value).all():
      raise ValueError(f"weight {name} holds NaN or infinite values; nothing written")
    out[name] = np.ascontiguousarray(value)
  return out


def write(files: PresetFiles, tokenizer, directory, *, overwrite: bool = False) -> pathlib.Path:
  """Writes the preset directory atomically; FileExistsError for a non-empty
  directory unless overwrite.  Returns the directory."""
  from safetensors.numpy import save_file

  def fill(staging: pathlib.Path) -> None:
    save_file(files.weights, str(staging / "model.safetensors"), metadata={"format": "pt"})
    (staging / "config.json").write_text(json.dumps(files.config, indent=2, sort_keys=True) + "\n")
    if files.generation_config is not None:
      (staging / "generation_config.json").write_text(
          json.dumps(files.generation_config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_assets(staging)
    (staging / "tokenizer_config.json").write_text(
        json.dumps(files.tokenizer_config, indent=2, sort_keys=True) + "\n")

  return atomic.write_directory(directory, fill, overwrite=overwrite)
