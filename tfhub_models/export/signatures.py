"""The serving signatures, one part per capability, composed per task.

The only place that knows signature names.  A signature is tokenization in
plain graph mode, then a numeric core compiled with XLA (`jit_compile=True`,
unless exported without), then detokenization.  A `ServingModule` is the task
and the parts its task calls for (`PARTS`, keyed by the task's name):

  fill_mask                 FillMask (serving_default, logits) + Tokenize
  replaced_token_detection  ReplacedTokens (serving_default)
  text_classification       TextClassification (serving_default)
  token_classification      TokenClassification (serving_default, token_labels)
  embedding                 Embedding (serving_default)
  generate                  Generate (serving_default, generate_with_options, generate_ids)
                            + Tokenize + Detokenize
  + Embedding ("embedding") for a task whose `extra_signatures` has it (ELECTRA)
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfhub_models.export.encoders import (FillMask, ReplacedTokens, TextClassification,
                                          TokenClassification)
from tfhub_models.export.generate import GENERATION_OPTIONS, Detokenize, Generate
from tfhub_models.export.parts import (TPU_FUNCTION_ALIAS, Compiled, Embedding, ExportOptions,
                                       Tokenize, checked_ids, id_checks, text_warmup)
from tfhub_models.tasks import Task


# The parts of each task's export, by the task's name.
PARTS = {
    "fill_mask": lambda task, options: [FillMask(task, options), Tokenize(task, options)],
    "replaced_token_detection": lambda task, options: [ReplacedTokens(task, options)],
    "text_classification": lambda task, options: [TextClassification(task, options)],
    "token_classification": lambda task, options: [TokenClassification(task, options)],
    "embedding": lambda task, options: [
        Embedding(task, options, names=("serving_default", "embedding")
                  if "embedding" in task.extra_signatures else
                  ("serving_default",))],
    "generate": lambda task, options: [Generate(task, options), Tokenize(task, options),
                                       Detokenize(task, options)],
}


class ServingModule(tf.Module):
  """What an export saves: the task and its signature parts."""

  def __init__(self, task, options: ExportOptions | None = None):
    name = task.task if isinstance(task, Task) else None
    if name not in PARTS:
      raise TypeError(f"cannot export a {type(task).__name__} for serving (exports take a "
                      f"task module: {', '.join(PARTS)}; XLM-RoBERTa fill-mask exports need "
                      "the masked-LM head)")
    if task.preprocessor is None:
      raise ValueError(f"cannot export a {type(task).__name__} without a preprocessor (built "
                       "with preprocessor=None): serving signatures take raw text; load it "
                       "with preprocessor=\"auto\" or set task.preprocessor")
    super().__init__(name=f"{name}_serving")
    options = options or ExportOptions()
    self.task = task
    self.parts = PARTS[name](task, options)
    if "embedding" in task.extra_signatures and name != "embedding":
      # The generator's embedding takes one text, as its fill-mask signatures.
      self.parts.append(Embedding(task, options, pair=options.pair and name != "fill_mask"))

  def signatures(self) -> dict:
    """{signature name: tf.function with an input signature}.  Left to
    tf.saved_model.save to trace: the save context is part of tf.function's cache
    key, so a function traced before the save would be traced again in it."""
    out = {}
    for part in self.parts:
      for key, function in part.signatures().items():
        if key in out:
          raise ValueError(f"two parts export a signature named {key}")
        out[key] = function
    return out

  def warmup(self, model_name: str, batch_sizes: Sequence[int]) -> list:
    return [log for part in self.parts for log in part.warmup(model_name, batch_sizes)]

  def numeric_cores(self) -> list:
    """The `Compiled` cores the signatures call, in the order of the parts."""
    return [value for part in self.parts for value in vars(part).values()
            if isinstance(value, Compiled)]

  def function_aliases(self) -> dict:
    """SaveOptions.function_aliases: TPU_FUNCTION_ALIAS for every traced numeric core."""
    return {TPU_FUNCTION_ALIAS: _TracedFunctions([core._fn for core in self.numeric_cores()])}


class _TracedFunctions:
  """The concrete functions of some tf.functions, listed when iterated: the save
  traces the signatures before it reads SaveOptions.function_aliases, so the cores'
  concrete functions are the ones the saved signatures call."""

  def __init__(self, functions):
    self.functions = functions

  def __iter__(self):
    # The listing tf.saved_model.save itself uses for a tf.function alias.
    return iter([concrete for function in self.functions
                 for concrete in function._list_all_concrete_functions()])


__all__ = ["PARTS", "ServingModule", "ExportOptions", "Compiled", "TPU_FUNCTION_ALIAS",
           "GENERATION_OPTIONS", "Tokenize", "Embedding", "FillMask", "ReplacedTokens",
           "TextClassification", "TokenClassification", "Generate", "Detokenize",
           "checked_ids", "id_checks", "text_warmup"]
