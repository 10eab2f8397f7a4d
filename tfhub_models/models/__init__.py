"""The model families, and the one table the loader and the CLI key off.

Adding a family: a file here (config, presets, modules, tasks, `build`, and its
`FAMILY` row: everything the loader, the CLIs and the demo need of it), its
name map in `checkpoints/`, and one entry in `FAMILIES`.
"""

from __future__ import annotations

from tfhub_models.checkpoints import loader
from tfhub_models.models import bart, electra, xlm_roberta

FAMILIES = (xlm_roberta.FAMILY, electra.FAMILY, bart.FAMILY)

# Every preset name -> (its family's row, its config).
PRESETS = {name: (family, config) for family in FAMILIES
           for name, config in family.presets.items()}


def load(source, task: str | None = None, *, dtype="float32", sequence_length: int | None = None,
         load_weights: bool = True):
  """Loads any supported checkpoint directory, hub handle or preset name.

  task: None (the checkpoint's own), or one of its family's tasks: fill_mask,
  embedding, backbone (XLM-RoBERTa, ELECTRA); replaced_token_detection
  (ELECTRA); generate (BART).
  """
  return loader.load(source, FAMILIES, task=task, dtype=dtype, sequence_length=sequence_length,
                     load_weights=load_weights)


def family_of(preset: str) -> loader.Family:
  """The family row of a preset name; KeyError if unknown."""
  return PRESETS[preset][0]


__all__ = ["FAMILIES", "PRESETS", "family_of", "load"]
