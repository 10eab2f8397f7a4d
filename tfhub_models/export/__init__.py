"""SavedModel export: the serving signatures of a task (`signatures`, composing
the parts of `parts`, `encoders` and `generate`), their warmup requests
(`warmup`) and the versioned, atomic write (`versioned`).  Signature, input and
output names are serving/contract.py's.

  export(task, BASE, NAME)   -> BASE/NAME/VERSION with every signature of the
                                task and assets.extra/tf_serving_warmup_requests;
                                its numeric cores carry the function alias
                                "tpu_func" (TPU_FUNCTION_ALIAS)
"""

from __future__ import annotations

import os
import pathlib

import tensorflow as tf

from tfhub_models.export.signatures import TPU_FUNCTION_ALIAS, ExportOptions, ServingModule
from tfhub_models.export.versioned import next_version, write_atomically
from tfhub_models.export.warmup import WARMUP_FILE, write_warmup


def export(task, base: str | os.PathLike, name: str, version: int | None = None,
           options: ExportOptions | None = None) -> pathlib.Path:
  """Writes the serving SavedModel of `task` to BASE/NAME/VERSION atomically
  (options: ExportOptions(), its defaults, when None)."""
  options = options or ExportOptions()
  module = ServingModule(task, options)

  def write(staging: pathlib.Path):
    tf.saved_model.save(module, str(staging), signatures=module.signatures(),
                        options=tf.saved_model.SaveOptions(
                            function_aliases=module.function_aliases()))
    write_warmup(staging, module.warmup(name, options.warmup_batch_sizes))

  return write_atomically(base, name, version, write)


__all__ = ["TPU_FUNCTION_ALIAS", "ExportOptions", "ServingModule", "WARMUP_FILE", "export",
           "next_version", "write_atomically", "write_warmup"]
