"""Checkpoint loading: Hugging Face directories, keras-hub presets, hub handles.

Strict: a weight that is missing, unexpected or of the wrong shape is an
error naming it.  Never unpickles: weights come from safetensors or h5 only.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
from typing import Callable

import numpy as np
import tensorflow as tf

from tfhub_models.models import xlm_roberta
from tfhub_models.tokenizers import XLMRobertaPreprocessor, XLMRobertaTokenizer


class CheckpointError(ValueError):
  """A checkpoint that cannot be loaded; the message says why."""


# ---------------------------------------------------------------------------
# Handles.

_HF_PATTERNS = ["config.json", "generation_config.json", "*.safetensors",
                "*.safetensors.index.json", "sentencepiece.bpe.model", "vocab.txt",
                "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json"]


_HUBS = {
    "hf://": ("huggingface_hub", "the Hugging Face Hub",
              lambda client, repo: client.snapshot_download(repo, allow_patterns=_HF_PATTERNS)),
    "kaggle://": ("kagglehub", "Kaggle", lambda client, handle: client.model_download(handle)),
}


def resolve(source: str | os.PathLike) -> pathlib.Path:
  """Turns a directory, `hf://org/name` or `kaggle://owner/model/fw/variation` into a directory.

  Preset names (`xlm_roberta_base_multi`) resolve to their public handle.
  """
  source = str(source)
  if source in xlm_roberta.PRESET_HANDLES:
    errors = []
    for handle in xlm_roberta.PRESET_HANDLES[source]:
      try:
        return resolve(handle)
      except CheckpointError as e:
        errors.append(str(e))
    raise CheckpointError(f"preset {source!r} has no weights on this machine and could not be "
                          "downloaded:\n  " + "\n  ".join(errors))
  for scheme, (module_name, hub, download) in _HUBS.items():
    if source.startswith(scheme):
      try:
        client = importlib.import_module(module_name)
      except ImportError:
        raise CheckpointError(f"{source}: {scheme} handles need {module_name} "
                              "(pip install 'tfhub-models[hub]')") from None
      try:
        return pathlib.Path(download(client, source[len(scheme):]))
      except Exception as e:  # network, auth, offline mode: all end here
        raise CheckpointError(f"{source}: could not download from {hub} "
                              f"({type(e).__name__}: {e})") from None
  path = pathlib.Path(source)
  if not path.exists():
    raise CheckpointError(f"checkpoint {source!r} does not exist")
  if not path.is_dir():
    raise CheckpointError(f"checkpoint {source!r} is not a directory")
  return path


def _read_json(path: pathlib.Path) -> dict:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise CheckpointError(f"{path.parent}: no {path.name}") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: not valid JSON ({e})") from None


# ---------------------------------------------------------------------------
# Weight files.

def read_safetensors(directory: pathlib.Path) -> dict:
  """All tensors of a Hugging Face checkpoint directory as numpy arrays."""
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  index = directory / "model.safetensors.index.json"
  if index.exists():
    files = sorted(set(_read_json(index).get("weight_map", {}).values()))
  elif (directory / "model.safetensors").exists():
    files = ["model.safetensors"]
  else:
    pickled = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
    if pickled:
      raise CheckpointError(
          f"{directory}: only pickled weights ({', '.join(sorted(pickled))}); they are never "
          "unpickled here. Convert them to safetensors first, e.g. in Python with transformers: "
          "AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)")
    raise CheckpointError(f"{directory}: no model.safetensors")
  weights = {}
  for name in files:
    try:
      weights.update(load_file(str(directory / name)))
    except FileNotFoundError:
      raise CheckpointError(f"{directory}: weight file {name} is missing") from None
    except (SafetensorError, OSError, ValueError) as e:
      raise CheckpointError(f"{directory / name}: not a readable safetensors file ({e})") from None
  return weights


def read_keras_h5(path: pathlib.Path) -> dict:
  """A Keras 3 `.weights.h5` file as {"layer/sublayer": [arrays in order]}.

  Paths use the layers' own names (the `name` attribute of each `vars` group).
  """
  import h5py

  try:
    handle = h5py.File(path, "r")
  except FileNotFoundError:
    raise CheckpointError(f"{path.parent}: no {path.name}") from None
  except OSError as e:
    raise CheckpointError(f"{path}: not a readable h5 file ({e})") from None
  out = {}

  def walk(group, prefix):
    for key in group:
      item = group[key]
      if not isinstance(item, h5py.Group) or key == "vars":
        continue
      named = item.get("vars")
      name = named.attrs.get("name", key) if named is not None else key
      if isinstance(name, bytes):
        name = name.decode()
      name = str(name).lstrip("_")
      path_ = f"{prefix}/{name}" if prefix else name
      if named is not None and len(named):
        out[path_] = [np.asarray(named[str(i)]) for i in range(len(named))]
      walk(item["layers"] if "layers" in item else item, path_)

  with handle:
    walk(handle["layers"] if "layers" in handle else handle, "")
  return out


def assign_strict(assignments: list, source: dict, *, ignored: Callable[[str], bool],
                  where: str, dtype: tf.DType) -> None:
  """Assigns `source` arrays to variables, all or nothing.

  Args:
    assignments: [(source key, variable, transform)] covering every variable.
    source: {key: np.ndarray}.
    ignored: keys that may be present and are not used (tied copies, pooler...).
    where: the checkpoint, for messages.
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
    value = transform(np.asarray(source[key]))
    if tuple(value.shape) != tuple(variable.shape):
      problems.append(f"{key}: shape {tuple(np.asarray(source[key]).shape)} does not fit "
                      f"{variable.name.rsplit(':', 1)[0]} of shape {tuple(variable.shape)}")
    values.append((variable, value))
  if problems:
    raise CheckpointError(f"{where}: " + "; ".join(problems))
  for variable, value in values:
    variable.assign(tf.cast(value.astype(np.float32), dtype))


# ---------------------------------------------------------------------------
# XLM-RoBERTa.

def _t(array):
  return array.T


def _same(array):
  return array


def _xlm_roberta_hf_assignments(task: xlm_roberta.XLMRobertaMaskedLM, with_head: bool) -> list:
  b = task.backbone
  out = [
      ("embeddings.word_embeddings.weight", b.token_embedding.embeddings, _same),
      ("embeddings.position_embeddings.weight", b.position_embedding.embeddings, _same),
      ("embeddings.token_type_embeddings.weight", b.type_embedding.embeddings, _same),
      ("embeddings.LayerNorm.weight", b.embeddings_layer_norm.gamma, _same),
      ("embeddings.LayerNorm.bias", b.embeddings_layer_norm.beta, _same),
  ]
  for i, layer in enumerate(b.transformer_layers):
    p = f"encoder.layer.{i}."
    attention = layer.self_attention
    for hf, dense in (("attention.self.query", attention.query),
                      ("attention.self.key", attention.key),
                      ("attention.self.value", attention.value),
                      ("attention.output.dense", attention.output),
                      ("intermediate.dense", layer.feedforward.intermediate),
                      ("output.dense", layer.feedforward.output)):
      out += [(p + hf + ".weight", dense.kernel, _t), (p + hf + ".bias", dense.bias, _same)]
    for hf, norm in (("attention.output.LayerNorm", layer.self_attention_layer_norm),
                     ("output.LayerNorm", layer.feedforward_layer_norm)):
      out += [(p + hf + ".weight", norm.gamma, _same), (p + hf + ".bias", norm.beta, _same)]
  if with_head:
    h = task.head
    out += [
        ("lm_head.dense.weight", h.dense.kernel, _t), ("lm_head.dense.bias", h.dense.bias, _same),
        ("lm_head.layer_norm.weight", h.layer_norm.gamma, _same),
        ("lm_head.layer_norm.bias", h.layer_norm.beta, _same),
        ("lm_head.bias", h.bias, _same),
    ]
  return out


def _hf_key(key: str) -> str:
  for prefix in ("roberta.", "xlm_roberta.", "model."):
    if key.startswith(prefix):
      key = key[len(prefix):]
      break
  # Checkpoints converted from TensorFlow 1 name layer norms gamma/beta.
  return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                    "LayerNorm.bias")


def _ignored_hf(key: str) -> bool:
  return (key.startswith("pooler.") or key.endswith("position_ids")
          or key in ("lm_head.decoder.weight", "lm_head.decoder.bias"))


def _xlm_roberta_tokenizer(path: pathlib.Path) -> XLMRobertaTokenizer:
  if not path.exists():
    raise CheckpointError(f"{path.parent}: no SentencePiece model {path.name} "
                          "(the in-graph tokenizer is built from it)")
  try:
    return XLMRobertaTokenizer(path.read_bytes())
  except Exception as e:
    raise CheckpointError(f"{path}: not a valid SentencePiece model ({e})") from None


def _make_task(config, tokenizer, dtype, sequence_length):
  if tokenizer.vocabulary_size != config.vocabulary_size:
    raise CheckpointError(
        f"the SentencePiece model gives {tokenizer.vocabulary_size} ids but the config's "
        f"vocabulary size is {config.vocabulary_size}")
  length = sequence_length or config.max_sequence_length
  if not 3 <= length <= config.max_sequence_length:
    raise CheckpointError(f"sequence length {length} is outside 3..{config.max_sequence_length}")
  return xlm_roberta.random_task(config, tokenizer, dtype=dtype, sequence_length=length)


def load_xlm_roberta_hf(directory: pathlib.Path, *, dtype="float32",
                        sequence_length: int | None = None, load_weights: bool = True,
                        task: str = "fill_mask") -> xlm_roberta.XLMRobertaMaskedLM:
  """Loads a Hugging Face XLM-RoBERTa directory (config.json, model.safetensors,
  sentencepiece.bpe.model)."""
  config = xlm_roberta.XLMRobertaConfig.from_hf(_read_json(directory / "config.json"))
  tokenizer = _xlm_roberta_tokenizer(directory / "sentencepiece.bpe.model")
  model = _make_task(config, tokenizer, dtype, sequence_length)
  if not load_weights:
    return model
  weights = {_hf_key(k): v for k, v in read_safetensors(directory).items()}
  with_head = any(k.startswith("lm_head.") for k in weights)
  if task == "fill_mask" and not with_head:
    raise CheckpointError(
        f"{directory}: no masked-LM head (lm_head.*) in the weights; fill-mask needs an "
        "XLMRobertaForMaskedLM checkpoint")
  if "lm_head.decoder.weight" in weights and not np.array_equal(
      weights["lm_head.decoder.weight"], weights.get("embeddings.word_embeddings.weight")):
    raise CheckpointError(f"{directory}: lm_head.decoder.weight differs from the word "
                          "embeddings; untied decoders are not supported")
  assign_strict(_xlm_roberta_hf_assignments(model, with_head), weights, ignored=_ignored_hf,
                where=str(directory), dtype=model.backbone.dtype)
  return model


def _kh_heads(array):
  """keras-hub EinsumDense kernels [D, N, H] / biases [N, H] -> [D, D] / [D]."""
  return array.reshape(array.shape[0], -1) if array.ndim == 3 else array.reshape(-1)


def _kh_out(array):
  """keras-hub attention output kernel [N, H, D] -> [D, D]."""
  return array.reshape(-1, array.shape[-1])


def load_xlm_roberta_keras_hub(directory: pathlib.Path, *, dtype="float32",
                               sequence_length: int | None = None, load_weights: bool = True,
                               task: str = "fill_mask") -> xlm_roberta.XLMRobertaMaskedLM:
  """Loads a keras-hub XLM-RoBERTa preset (config.json, model.weights.h5,
  assets/tokenizer/vocabulary.spm, and task.weights.h5 for the masked-LM head)."""
  meta = _read_json(directory / "config.json")
  config = xlm_roberta.XLMRobertaConfig.from_keras_hub(meta["config"])
  tokenizer = _xlm_roberta_tokenizer(directory / "assets" / "tokenizer" / "vocabulary.spm")
  model = _make_task(config, tokenizer, dtype, sequence_length)
  if not load_weights:
    return model
  source = read_keras_h5(directory / "model.weights.h5")
  flat = {}
  for path, arrays in source.items():
    for i, array in enumerate(arrays):
      flat[f"{path}:{i}"] = array
  b = model.backbone
  offset = config.pad_token_id + 1

  def positions(array):  # keras-hub counts positions from 0; upstream from pad + 1
    table = np.zeros((array.shape[0] + offset, array.shape[1]), array.dtype)
    table[offset:] = array
    return table

  assignments = [
      ("embeddings/token_embedding:0", b.token_embedding.embeddings, _same),
      ("embeddings/position_embedding:0", b.position_embedding.embeddings, positions),
      ("embeddings_layer_norm:0", b.embeddings_layer_norm.gamma, _same),
      ("embeddings_layer_norm:1", b.embeddings_layer_norm.beta, _same),
  ]
  for i, layer in enumerate(b.transformer_layers):
    p = f"transformer_layer_{i}/"
    att = layer.self_attention
    for name, dense in (("query", att.query), ("key", att.key), ("value", att.value)):
      assignments += [(f"{p}self_attention_layer/{name}:0", dense.kernel, _kh_heads),
                      (f"{p}self_attention_layer/{name}:1", dense.bias, _kh_heads)]
    assignments += [
        (f"{p}self_attention_layer/attention_output:0", att.output.kernel, _kh_out),
        (f"{p}self_attention_layer/attention_output:1", att.output.bias, _same),
        (f"{p}self_attention_layer_norm:0", layer.self_attention_layer_norm.gamma, _same),
        (f"{p}self_attention_layer_norm:1", layer.self_attention_layer_norm.beta, _same),
        (f"{p}feedforward_intermediate_dense:0", layer.feedforward.intermediate.kernel, _same),
        (f"{p}feedforward_intermediate_dense:1", layer.feedforward.intermediate.bias, _same),
        (f"{p}feedforward_output_dense:0", layer.feedforward.output.kernel, _same),
        (f"{p}feedforward_output_dense:1", layer.feedforward.output.bias, _same),
        (f"{p}feedforward_layer_norm:0", layer.feedforward_layer_norm.gamma, _same),
        (f"{p}feedforward_layer_norm:1", layer.feedforward_layer_norm.beta, _same),
    ]
  assign_strict(assignments, flat, ignored=lambda k: False, where=str(directory / "model.weights.h5"),
                dtype=b.dtype)
  b.type_embedding.embeddings.assign(tf.zeros_like(b.type_embedding.embeddings))

  task_file = directory / "task.weights.h5"
  if task == "fill_mask":
    if not task_file.exists():
      raise CheckpointError(
          f"{directory}: no task.weights.h5; fill-mask needs the masked-LM head that keras-hub "
          "saves with an XLMRobertaMaskedLM preset")
    head_source = {}
    for path, arrays in read_keras_h5(task_file).items():
      if path.split("/")[0] in ("mlm_head", "masked_lm_head"):
        for i, array in enumerate(arrays):
          head_source[f"{path}:{i}"] = array
    h = model.head
    assign_strict([
        ("mlm_head/intermediate_dense:0", h.dense.kernel, _same),
        ("mlm_head/intermediate_dense:1", h.dense.bias, _same),
        ("mlm_head/intermediate_layer_norm:0", h.layer_norm.gamma, _same),
        ("mlm_head/intermediate_layer_norm:1", h.layer_norm.beta, _same),
        ("mlm_head:0", h.bias, _same),
    ], head_source, ignored=lambda k: False, where=str(task_file), dtype=b.dtype)
  return model


# ---------------------------------------------------------------------------
# Entry point.

def detect(directory: pathlib.Path) -> tuple[str, str]:
  """(format, family) of a checkpoint directory: ("hf" | "keras_hub", "xlm_roberta")."""
  meta = _read_json(directory / "config.json")
  if "class_name" in meta and "config" in meta:
    class_name = meta["class_name"]
    if class_name == "XLMRobertaBackbone":
      return "keras_hub", "xlm_roberta"
    raise CheckpointError(f"{directory}: keras-hub class {class_name!r} is not supported "
                          "(supported: XLMRobertaBackbone)")
  model_type = meta.get("model_type")
  if model_type in ("xlm-roberta", "xlm_roberta"):
    return "hf", "xlm_roberta"
  if model_type is None:
    raise CheckpointError(f"{directory}/config.json: neither a Hugging Face config (model_type) "
                          "nor a keras-hub preset config (class_name)")
  raise CheckpointError(f"{directory}: model_type {model_type!r} is not supported "
                        "(supported: xlm-roberta)")


def load(source: str | os.PathLike, *, dtype="float32", sequence_length: int | None = None,
         load_weights: bool = True, task: str = "fill_mask"):
  """Loads a checkpoint directory, handle or preset name.

  Returns the task module (`XLMRobertaMaskedLM` for task="fill_mask"), or its
  backbone alone for task="backbone" (no head weights needed).
  """
  directory = resolve(source)
  fmt, family = detect(directory)
  if task not in ("fill_mask", "backbone"):
    raise CheckpointError(f"unknown task {task!r} for {family} (fill_mask, backbone)")
  loader = {("hf", "xlm_roberta"): load_xlm_roberta_hf,
            ("keras_hub", "xlm_roberta"): load_xlm_roberta_keras_hub}[(fmt, family)]
  model = loader(directory, dtype=dtype, sequence_length=sequence_length,
                 load_weights=load_weights, task=task)
  return model.backbone if task == "backbone" else model


__all__ = ["CheckpointError", "resolve", "detect", "load", "read_safetensors", "read_keras_h5",
           "assign_strict", "load_xlm_roberta_hf", "load_xlm_roberta_keras_hub"]

