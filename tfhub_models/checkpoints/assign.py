"""Strict assignment of checkpoint arrays to variables, and the name-map pieces
the families share (Hugging Face BERT-style layers, keras-hub layers).

An assignment is (source key, variable, transform).  `assign_strict` assigns a
whole list or nothing: a weight that is missing, unexpected, of the wrong
shape or not a float is an error that names it.  (Reading refuses NaN and
infinite values: `sources.check_finite`.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfhub_models.checkpoints.sources import CheckpointError


def transpose(array: np.ndarray) -> np.ndarray:
  """torch Linear weights [out, in] -> our kernels [in, out]."""
  return array.T


def same(array: np.ndarray) -> np.ndarray:
  return array


def flatten(array: np.ndarray) -> np.ndarray:
  """[1, V] -> [V] (BART's final_logits_bias)."""
  return array.reshape(-1)


def as_row(array: np.ndarray) -> np.ndarray:
  return array.reshape(1, -1)


# The inverse of each Hugging Face transform: variable value -> checkpoint array.
INVERSE = {id(same): same, id(transpose): transpose, id(flatten): as_row}


def heads_to_dense(array: np.ndarray) -> np.ndarray:
  """keras-hub EinsumDense kernels [D, N, H] / biases [N, H] -> [D, D] / [D]."""
  return array.reshape(array.shape[0], -1) if array.ndim == 3 else array.reshape(-1)


def heads_out_to_dense(array: np.ndarray) -> np.ndarray:
  """keras-hub attention output kernel [N, H, D] -> [D, D]."""
  return array.reshape(-1, array.shape[-1])


def assign_strict(assignments: list, source: dict, *, ignored: Callable[[str], bool],
                  where: str, dtype: tf.DType) -> None:
  """Assigns `source` arrays to variables, all or nothing.

  Args:
    assignments: [(source key, variable, transform)] covering every variable.
    source: {key: np.ndarray}.
    ignored: keys that may be present and are not used (tied copies, pooler...).
    where: the checkpoint, for messages.
    dtype: the variables' dtype.
  """
  missing = [key for key, _, _ in assignments if key not in source]
  used = {key for key, _, _ in assignments}
  unexpected = sorted(k for k in source if k not in used and not ignored(k))
  problems = []
  if missing:
    problems.append(f"missing weights: {', '.join(missing[:10])}"
                    + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
  if unexpected:
    problems.append(f"unexpected weights: {', '.join(unexpected[:10])}"
                    + (f" and {len(unexpected) - 10} more" if len(unexpected) > 10 else ""))
  values = []
  for key, variable, transform in assignments:
    if key not in source:
      continue
    stored = np.asarray(source[key]).dtype
    if stored.kind != "f" and variable.dtype.is_floating:   # ints, bools would cast silently
      problems.append(f"{key}: dtype {stored} where a float weight belongs")
      continue
    value = transform(np.asarray(source[key]))
    if tuple(value.shape) != tuple(variable.shape):
      problems.append(f"{key}: shape {tuple(np.asarray(source[key]).shape)} does not fit "
                      f"{variable.name.rsplit(':', 1)[0]} of shape {tuple(variable.shape)}")
    values.append((variable, value))
  if problems:
    raise CheckpointError(f"{where}: " + "; ".join(problems))
  for variable, value in values:
    variable.assign(tf.cast(value.astype(np.float32), dtype))


def require_tied(weights: dict, copy: str, original: str, where, *,
                 what: str = "decoders") -> None:
  """A tied copy in a checkpoint must equal the original (untied ones are not supported)."""
  if copy in weights and original in weights and not np.array_equal(weights[copy],
                                                                     weights[original]):
    raise CheckpointError(f"{where}: {copy} differs from {original}; untied {what} are not "
                          "supported")


def backbone_of(module):
  """The backbone of a task module, or the module itself when it is one."""
  return module.backbone if hasattr(module, "backbone") else module


# Our config names -> the Hugging Face BERT family's (XLM-RoBERTa, ELECTRA), for messages.
HF_BERT_NAMES = {"num_heads": "num_attention_heads", "hidden_dim": "hidden_size",
                 "layer_norm_epsilon": "layer_norm_eps"}


def bert_config_fields(checkpoint, keras_hub, hugging_face) -> dict:
  """A BERT-like family's config keyword arguments: keras_hub(the keras-hub
  config's "config") or hugging_face(config.json); a missing or bad field is a
  CheckpointError naming the file, and the sizes are checked (check_config)."""
  where = checkpoint.path("config.json")
  try:
    fields = (keras_hub(checkpoint.config["config"]) if checkpoint.format == "keras_hub"
              else hugging_face(checkpoint.config))
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{where}: missing or bad {e}") from None
  check_config(where, fields, {} if checkpoint.format == "keras_hub" else HF_BERT_NAMES)
  return fields


def check_config(where, fields: dict, names: dict) -> None:
  """CheckpointError naming the config field that would break every output:
  num_heads < 1, a hidden_dim that is not a positive multiple of it, a
  layer_norm_epsilon (when read) that is not finite and > 0.

  Args:
    where: the config file, for messages.
    fields: the family config's keyword arguments, by our names.
    names: our name -> the config file's name for it (the same when left out).
  """
  heads, hidden = fields["num_heads"], fields["hidden_dim"]
  heads_name, hidden_name = names.get("num_heads", "num_heads"), names.get("hidden_dim",
                                                                           "hidden_dim")
  if heads < 1:
    raise CheckpointError(f"{where}: {heads_name} must be >= 1, got {heads}")
  if hidden < 1 or hidden % heads:
    raise CheckpointError(f"{where}: {hidden_name} {hidden} is not a positive multiple of "
                          f"{heads_name} {heads}")
  epsilon = fields.get("layer_norm_epsilon")
  if epsilon is not None and not (math.isfinite(epsilon) and epsilon > 0):
    raise CheckpointError(f"{where}: {names.get('layer_norm_epsilon', 'layer_norm_epsilon')} "
                          f"must be a finite number > 0, got {epsilon}")


def keras_hub_sizes(config: dict) -> dict:
  """The sizes keras-hub's XLM-RoBERTa and BART backbone configs share, by our names."""
  return dict(vocabulary_size=int(config["vocabulary_size"]),
              num_layers=int(config["num_layers"]), num_heads=int(config["num_heads"]),
              hidden_dim=int(config["hidden_dim"]),
              intermediate_dim=int(config["intermediate_dim"]),
              dropout=float(config.get("dropout", 0.1)))


# ---------------------------------------------------------------------------
# Hugging Face (torch) names.

def hf_dense(name: str, dense) -> list:
  return [(name + ".weight", dense.kernel, transpose), (name + ".bias", dense.bias, same)]


def hf_norm(name: str, norm) -> list:
  return [(name + ".weight", norm.gamma, same), (name + ".bias", norm.beta, same)]


def hf_attention(prefix: str, attention) -> list:
  """BART-style q_proj / k_proj / v_proj / out_proj."""
  return [*hf_dense(prefix + ".q_proj", attention.query),
          *hf_dense(prefix + ".k_proj", attention.key),
          *hf_dense(prefix + ".v_proj", attention.value),
          *hf_dense(prefix + ".out_proj", attention.output)]


def hf_bert_config(config, architecture: str, model_type: str, **extra) -> dict:
  """The config.json fields every BERT-like family's transformers config shares,
  from one of our configs, and the family's `extra` ones."""
  c = config
  return {"architectures": [architecture], "model_type": model_type,
          "vocab_size": c.vocabulary_size, "hidden_size": c.hidden_dim,
          "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
          "intermediate_size": c.intermediate_dim, "hidden_act": c.hidden_activation,
          "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.dropout,
          "layer_norm_eps": c.layer_norm_epsilon, "pad_token_id": c.pad_token_id,
          "position_embedding_type": "absolute", "initializer_range": 0.02,
          "torch_dtype": "float32", **extra}


def hf_bert_encoder(backbone, type_embedding) -> list:
  """A BERT-like backbone's embeddings (its type or segment table `type_embedding`),
  encoder layers and pooler, if it has one, by their Hugging Face names."""
  b = backbone
  return [("embeddings.word_embeddings.weight", b.token_embedding.embeddings, same),
          ("embeddings.position_embeddings.weight", b.position_embedding.embeddings, same),
          ("embeddings.token_type_embeddings.weight", type_embedding.embeddings, same),
          *hf_norm("embeddings.LayerNorm", b.embeddings_layer_norm),
          *hf_bert_layers(b.transformer_layers),
          *([] if b.pooler is None else hf_dense("pooler.dense", b.pooler))]


def hf_bert_layers(transformer_layers, prefix: str = "encoder.layer.") -> list:
  """BERT-family encoder layers (`attention.self.query`, ...) -> TransformerEncoderLayer."""
  out = []
  for i, layer in enumerate(transformer_layers):
    p = f"{prefix}{i}."
    attention = layer.self_attention
    for name, dense in (("attention.self.query", attention.query),
                        ("attention.self.key", attention.key),
                        ("attention.self.value", attention.value),
                        ("attention.output.dense", attention.output),
                        ("intermediate.dense", layer.feedforward.intermediate),
                        ("output.dense", layer.feedforward.output)):
      out += hf_dense(p + name, dense)
    out += hf_norm(p + "attention.output.LayerNorm", layer.self_attention_layer_norm)
    out += hf_norm(p + "output.LayerNorm", layer.feedforward_layer_norm)
  return out


def hf_bert_weights(weights: dict,
                    prefixes=("roberta.", "xlm_roberta.", "electra.", "model.")) -> dict:
  """BERT-family weight names without the model prefix, TF1 gamma/beta as weight/bias."""
  out = {}
  for key, value in weights.items():
    for prefix in prefixes:
      if key.startswith(prefix):
        key = key[len(prefix):]
        break
    out[key.replace("LayerNorm.gamma", "LayerNorm.weight")
        .replace("LayerNorm.beta", "LayerNorm.bias")] = value
  return out


# ---------------------------------------------------------------------------
# keras-hub (Keras 3 .weights.h5) names, "layer/sublayer:i".

def kh_dense(name: str, dense) -> list:
  return [(f"{name}:0", dense.kernel, same), (f"{name}:1", dense.bias, same)]


def kh_norm(name: str, norm) -> list:
  return [(f"{name}:0", norm.gamma, same), (f"{name}:1", norm.beta, same)]


def kh_attention(prefix: str, attention) -> list:
  """A keras MultiHeadAttention (EinsumDense query/key/value/attention_output)."""
  dense = (("query", attention.query), ("key", attention.key), ("value", attention.value))
  return ([(f"{prefix}/{name}:0", d.kernel, heads_to_dense) for name, d in dense]
          + [(f"{prefix}/{name}:1", d.bias, heads_to_dense) for name, d in dense]
          + [(f"{prefix}/attention_output:0", attention.output.kernel, heads_out_to_dense),
             (f"{prefix}/attention_output:1", attention.output.bias, same)])


def kh_encoder_layers(transformer_layers, prefix: str, attention_name: str) -> list:
  """keras-hub TransformerEncoder layers `{prefix}{i}/...` -> TransformerEncoderLayer."""
  out = []
  for i, layer in enumerate(transformer_layers):
    p = f"{prefix}{i}/"
    out += [*kh_attention(p + attention_name, layer.self_attention),
            *kh_norm(p + "self_attention_layer_norm", layer.self_attention_layer_norm),
            *kh_dense(p + "feedforward_intermediate_dense", layer.feedforward.intermediate),
            *kh_dense(p + "feedforward_output_dense", layer.feedforward.output),
            *kh_norm(p + "feedforward_layer_norm", layer.feedforward_layer_norm)]
  return out


def shift_positions(offset: int):
  """keras-hub counts positions from 0; upstream's tables start `offset` rows later."""
  def transform(array: np.ndarray) -> np.ndarray:
    table = np.zeros((array.shape[0] + offset, array.shape[1]), array.dtype)
    table[offset:] = array
    return table
  return transform


# ---------------------------------------------------------------------------
# Sequence classification heads (`*ForSequenceClassification`: classifier.dense,
# classifier.out_proj), shared by XLM-RoBERTa and ELECTRA.

CLASSIFIER_PREFIX = "classifier."
CLASSIFIER_TASKS = ("text_classification", "token_classification")


def classifier_kind(keys, architectures) -> str | None:
  """text_classification, token_classification or None, from the weight names
  (classifier.out_proj.* / classifier.weight) or config.json's architectures."""
  if any(k.startswith("classifier.out_proj.") for k in keys) or any(
      a.endswith("ForSequenceClassification") for a in architectures):
    return "text_classification"
  if "classifier.weight" in keys or any(a.endswith("ForTokenClassification")
                                        for a in architectures):
    return "token_classification"
  return None


def hf_classifier(head) -> list:
  """A sequence classifier's dense + out_proj, or a token classifier's one layer."""
  if hasattr(head, "out_proj"):
    return [*hf_dense("classifier.dense", head.dense),
            *hf_dense("classifier.out_proj", head.out_proj)]
  return hf_dense("classifier", head.dense)


def hf_classifier_options(config: dict, weights: dict | None) -> dict:
  """num_classes, labels and problem_type of a classifier checkpoint's config.json,
  as upstream reads them: id2label (default LABEL_i), num_labels, and
  problem_type (default: regression for one label, else single-label)."""
  id2label = config.get("id2label") or {}
  num_classes = int(config.get("num_labels") or len(id2label) or 2)
  output = next((k for k in ("classifier.out_proj.weight", "classifier.weight")
                 if weights is not None and k in weights), None)
  if output is not None:
    rows = int(np.asarray(weights[output]).shape[0])
    if id2label and rows != len(id2label):
      raise CheckpointError(f"the classifier has {rows} outputs but config.json's id2label names "
                            f"{len(id2label)} labels")
    num_classes = rows
  labels = None
  if id2label:
    labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}")))
              for i in range(num_classes)]
  problem_type = config.get("problem_type") or (
      "regression" if num_classes == 1 else "single_label_classification")
  return {"num_classes": num_classes, "labels": labels, "problem_type": problem_type}


def hf_classifier_config(module) -> dict:
  """config.json fields of a classifier module."""
  return {"id2label": {str(i): name for i, name in enumerate(module.labels)},
          "label2id": {name: i for i, name in enumerate(module.labels)},
          "num_labels": module.num_classes, "problem_type": module.problem_type}


def assign_classifier_or_fresh(assignments: list, module, weights: dict, options: dict | None,
                               where) -> list:
  """The classifier's assignments, unless the head is new (num_classes asked for);
  a checkpoint without a classifier needs num_classes."""
  if (options or {}).get("fresh_head"):
    return assignments
  if not any(k.startswith(CLASSIFIER_PREFIX) for k in weights):
    raise CheckpointError(f"{where}: no classifier head (classifier.*) in the weights; pass "
                          "num_classes=N for a new head to fine-tune")
  return assignments + hf_classifier(module.head)
