"""The serving contract: what an export promises and what TF Serving, this
project's server, its client and its checks rely on, written once.

Importable without the server (tfhub_models.export uses it): the standard
library only, TensorFlow and the serving protos imported where a function needs
them.  Dtypes are names ("int32"), which `tf.as_dtype` and `np.dtype` both take.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

# --- signatures ---------------------------------------------------------------------------

DEFAULT_SIGNATURE = "serving_default"
GENERATE_WITH_OPTIONS = "generate_with_options"
TEXT = {"text": "string"}        # text_pair too, string [B], where the export takes pairs
_TOKENIZE = (TEXT, {"token_ids": "int32", "padding_mask": "int32"})
_EMBEDDING = (TEXT, {"sequence_output": "float32", "pooled_output": "float32",
                     "mean_output": "float32", "padding_mask": "int32"})
_GENERATED = {"generated_ids": "int32", "generated_text": "string", "scores": "float32"}

# Every signature of each task's export: {signature: (inputs, outputs)}, names to
# dtype names.  ELECTRA's exports add "embedding" (EMBEDDING_SIGNATURE).
SIGNATURES = {
    "fill_mask": {
        DEFAULT_SIGNATURE: (TEXT, {"top_k_ids": "int32", "top_k_tokens": "string",
                                   "top_k_scores": "float32", "num_masks": "int32"}),
        "logits": ({"token_ids": "int32", "padding_mask": "int32", "mask_positions": "int32"},
                   {"logits": "float32"}),
        "tokenize": _TOKENIZE,
    },
    "replaced_token_detection": {
        DEFAULT_SIGNATURE: (TEXT, {"token_ids": "int32", "tokens": "string",
                                   "padding_mask": "int32", "replaced_probability": "float32"}),
    },
    "text_classification": {
        DEFAULT_SIGNATURE: (TEXT, {"label": "string", "score": "float32",
                                   "top_k_labels": "string", "top_k_scores": "float32",
                                   "logits": "float32"}),
    },
    "token_classification": {
        DEFAULT_SIGNATURE: (TEXT, {"entity_group": "string", "score": "float32",
                                   "word": "string", "start": "int32", "end": "int32",
                                   "num_entities": "int32"}),
        "token_labels": (TEXT, {"tokens": "string", "labels": "string", "scores": "float32",
                                "start": "int32", "end": "int32", "padding_mask": "int32"}),
    },
    "embedding": {DEFAULT_SIGNATURE: _EMBEDDING},
    "generate": {
        DEFAULT_SIGNATURE: (TEXT, _GENERATED),
        GENERATE_WITH_OPTIONS: None,     # TEXT and GENERATION_OPTIONS; set below
        "generate_ids": ({"encoder_token_ids": "int32", "encoder_padding_mask": "int32"},
                         {"generated_ids": "int32"}),
        "tokenize": _TOKENIZE,
        "detokenize": ({"token_ids": "int32"}, {"text": "string"}),
    },
}
EMBEDDING_SIGNATURE = ("embedding", _EMBEDDING)

# generate_with_options' per-row inputs after `text`, each [B], in order.
GENERATION_OPTIONS = (("max_new_tokens", "int32"), ("min_new_tokens", "int32"),
                      ("temperature", "float32"), ("top_k", "int32"), ("top_p", "float32"),
                      ("repetition_penalty", "float32"), ("no_repeat_ngram_size", "int32"),
                      ("seed", "int64"))
SIGNATURES["generate"][GENERATE_WITH_OPTIONS] = (
    {**TEXT, **dict(GENERATION_OPTIONS)}, {**_GENERATED, "num_generated_tokens": "int32"})

# --- XLA ----------------------------------------------------------------------------------

XLA_CPU_FLAG = "--xla_cpu_compilation_enabled=true"
XLA_GPU_FLAG = "--xla_gpu_compilation_enabled=true"
XLA_DISABLED = "XLA compilation disabled"    # TensorFlow's message when XLA is off

# The function alias of the numeric cores, the name Cloud TPU's Inference
# Converter is told to convert (its conventional one): the functions that get
# the network's inputs as numbers and hold no string op (k8s/README.md, "TPU").
TPU_FUNCTION_ALIAS = "tpu_func"

# --- warmup -------------------------------------------------------------------------------

WARMUP_DIRECTORY = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = os.path.join(WARMUP_DIRECTORY, WARMUP_FILE)   # inside a version directory
MAX_WARMUP_RECORDS = 1000   # TF Serving's limit


def xla_disabled_help(what: str) -> str:
  """The fix TF Serving's own "XLA compilation disabled" leaves unsaid."""
  return (f"{XLA_DISABLED}: {what} is XLA-compiled; start the server with {XLA_CPU_FLAG} "
          f"(on GPU {XLA_GPU_FLAG}) or export it with --no-xla")


def read_warmup(version_directory) -> Iterator[tuple]:
  """(record number, PredictionLog) of a version's warmup file, in order (none
  without one); ValueError past TF Serving's MAX_WARMUP_RECORDS."""
  import tensorflow as tf
  from tensorflow_serving.apis import prediction_log_pb2
  path = os.path.join(os.fspath(version_directory), WARMUP_PATH)
  if not os.path.exists(path):
    return
  for number, record in enumerate(tf.compat.v1.io.tf_record_iterator(path)):
    if number == MAX_WARMUP_RECORDS:
      raise ValueError(f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) "
                       f"at {path}")
    yield number, prediction_log_pb2.PredictionLog.FromString(record)
