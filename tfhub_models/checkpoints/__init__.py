"""Checkpoints: where they come from (`sources`), strict assignment (`assign`),
one loader for every family (`loader`), and one name map per family
(`xlm_roberta`, `electra`, `bart`: Hugging Face and keras-hub formats).

Weights come from safetensors or Keras h5 files only; nothing is unpickled.
The family table and `tfhub_models.load` live in `tfhub_models.models`.
"""

from tfhub_models.checkpoints.assign import assign_strict
from tfhub_models.checkpoints.loader import Family, detect
from tfhub_models.checkpoints.sources import (Checkpoint, CheckpointError, open_checkpoint,
                                              read_keras_h5, read_safetensors, resolve)

__all__ = ["Checkpoint", "CheckpointError", "Family", "assign_strict", "detect",
           "open_checkpoint", "read_keras_h5", "read_safetensors", "resolve"]
