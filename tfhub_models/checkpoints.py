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

from tfhub_models.models import bart, electra, xlm_roberta
from tfhub_models.tokenizers import ByteLevelBPETokenizer, WordPieceTokenizer, XLMRobertaTokenizer

PRESET_HANDLES = {**xlm_roberta.PRESET_HANDLES, **electra.PRESET_HANDLES, **bart.PRESET_HANDLES}


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
  if source in PRESET_HANDLES and not pathlib.Path(source).exists():
    errors = []
    for handle in PRESET_HANDLES[source]:
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
    outside = [f for f in files if pathlib.Path(f).name != f]
    if outside:
      raise CheckpointError(f"{index}: weight files must lie in the checkpoint directory, "
                            f"not {outside[0]!r}")
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


def safetensors_keys(directory: pathlib.Path) -> list:
  """Tensor names of a checkpoint directory, read from the file headers only."""
  from safetensors import safe_open

  index = directory / "model.safetensors.index.json"
  if index.exists():
    return list(_read_json(index).get("weight_map", {}))
  if not (directory / "model.safetensors").exists():
    return list(read_safetensors(directory))  # raises the right error
  try:
    with safe_open(str(directory / "model.safetensors"), "np") as handle:
      return list(handle.keys())
  except Exception as e:
    raise CheckpointError(f"{directory / 'model.safetensors'}: not a readable safetensors file "
                          f"({e})") from None


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


def _bert_encoder_assignments(transformer_layers, prefix: str = "encoder.layer.") -> list:
  """Upstream BERT-family encoder layer names -> our TransformerEncoderLayer variables."""
  out = []
  for i, layer in enumerate(transformer_layers):
    p = f"{prefix}{i}."
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
  return out


def _dense(name: str, dense) -> list:
  return [(name + ".weight", dense.kernel, _t), (name + ".bias", dense.bias, _same)]


def _norm(name: str, norm) -> list:
  return [(name + ".weight", norm.gamma, _same), (name + ".bias", norm.beta, _same)]


def _xlm_roberta_hf_assignments(task: xlm_roberta.XLMRobertaMaskedLM, with_head: bool) -> list:
  b = task.backbone
  out = [
      ("embeddings.word_embeddings.weight", b.token_embedding.embeddings, _same),
      ("embeddings.position_embeddings.weight", b.position_embedding.embeddings, _same),
      ("embeddings.token_type_embeddings.weight", b.type_embedding.embeddings, _same),
      *_norm("embeddings.LayerNorm", b.embeddings_layer_norm),
      *_bert_encoder_assignments(b.transformer_layers),
  ]
  if with_head:
    h = task.head
    out += [*_dense("lm_head.dense", h.dense), *_norm("lm_head.layer_norm", h.layer_norm),
            ("lm_head.bias", h.bias, _same)]
  return out


def _hf_key(key: str) -> str:
  for prefix in ("roberta.", "xlm_roberta.", "electra.", "model."):
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
  if "lm_head.decoder.bias" in weights:  # upstream ties it to lm_head.bias
    if "lm_head.bias" not in weights:
      weights["lm_head.bias"] = weights["lm_head.decoder.bias"]
    elif not np.array_equal(weights["lm_head.bias"], weights["lm_head.decoder.bias"]):
      raise CheckpointError(f"{directory}: lm_head.decoder.bias differs from lm_head.bias")
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
      if path.split("/")[0] == "mlm_head":
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
# ELECTRA.

ELECTRA_TASKS = ("replaced_token_detection", "fill_mask", "embedding")
_ELECTRA_HEADS = {"replaced_token_detection": "discriminator_predictions.",
                  "fill_mask": "generator_"}


def _wordpiece_tokenizer(directory: pathlib.Path) -> WordPieceTokenizer:
  path = directory / "vocab.txt"
  if not path.exists():
    raise CheckpointError(f"{directory}: no vocab.txt (the in-graph WordPiece tokenizer is "
                          "built from it)")
  try:
    # One token a line, split on "\n" only, as upstream (a token may hold other breaks).
    vocabulary = path.read_bytes().decode("utf-8").split("\n")
  except UnicodeDecodeError as e:
    raise CheckpointError(f"{path}: not UTF-8 text ({e})") from None
  if vocabulary and vocabulary[-1] == "":
    vocabulary.pop()
  vocabulary = [token.rstrip("\r") for token in vocabulary]
  # Upstream maps a repeated token to its last line; earlier copies keep their
  # ids but can never be produced, so they get unique placeholders.
  last = {token: i for i, token in enumerate(vocabulary)}
  vocabulary = [token if last[token] == i else f"[unreachable duplicate {i}]"
                for i, token in enumerate(vocabulary)]
  settings = {}
  if (directory / "tokenizer_config.json").exists():
    settings = _read_json(directory / "tokenizer_config.json")
  try:
    return WordPieceTokenizer(vocabulary, lowercase=bool(settings.get("do_lower_case", True)),
                              strip_accents=settings.get("strip_accents"),
                              split_cjk=bool(settings.get("tokenize_chinese_chars", True)))
  except (ValueError, RuntimeError) as e:
    raise CheckpointError(f"{path}: {e}") from None


def _electra_task_of(raw_config: dict, keys: set) -> str:
  architectures = raw_config.get("architectures") or []
  if "ElectraForPreTraining" in architectures or any(
      k.startswith("discriminator_predictions.") for k in keys):
    return "replaced_token_detection"
  if "ElectraForMaskedLM" in architectures or any(k.startswith("generator_") for k in keys):
    return "fill_mask"
  return "embedding"


def _electra_assignments(model, task: str) -> list:
  b = model.backbone
  out = [
      ("embeddings.word_embeddings.weight", b.token_embedding.embeddings, _same),
      ("embeddings.position_embeddings.weight", b.position_embedding.embeddings, _same),
      ("embeddings.token_type_embeddings.weight", b.segment_embedding.embeddings, _same),
      *_norm("embeddings.LayerNorm", b.embeddings_layer_norm),
      *_bert_encoder_assignments(b.transformer_layers),
  ]
  if b.embeddings_projection is not None:
    out += _dense("embeddings_project", b.embeddings_projection)
  if b.pooler is not None:
    out += _dense("pooler.dense", b.pooler)
  if task == "replaced_token_detection":
    out += [*_dense("discriminator_predictions.dense", model.head.dense),
            *_dense("discriminator_predictions.dense_prediction", model.head.prediction)]
  elif task == "fill_mask":
    out += [*_dense("generator_predictions.dense", model.head.dense),
            *_norm("generator_predictions.LayerNorm", model.head.layer_norm),
            ("generator_lm_head.bias", model.head.bias, _same)]
  return out


def load_electra_hf(directory: pathlib.Path, *, dtype="float32",
                    sequence_length: int | None = None, load_weights: bool = True,
                    task: str | None = None):
  """Loads a Hugging Face ELECTRA directory (config.json, model.safetensors, vocab.txt):
  `ElectraModel`, `ElectraForPreTraining` or `ElectraForMaskedLM`.

  The task defaults to the checkpoint's own (replaced_token_detection for a
  discriminator, fill_mask for a generator, embedding for a bare model).
  """
  raw = _read_json(directory / "config.json")
  config = electra.ElectraConfig.from_hf(raw)
  tokenizer = _wordpiece_tokenizer(directory)
  if tokenizer.vocabulary_size != config.vocabulary_size:
    raise CheckpointError(f"{directory}: vocab.txt has {tokenizer.vocabulary_size} entries but "
                          f"the config's vocab_size is {config.vocabulary_size}")
  weights = ({_hf_key(k): v for k, v in read_safetensors(directory).items()}
             if load_weights else {})
  inferred = _electra_task_of(raw, set(weights))
  task = task or inferred
  if task not in ELECTRA_TASKS:
    raise CheckpointError(f"unknown task {task!r} for ELECTRA ({', '.join(ELECTRA_TASKS)})")
  head = _ELECTRA_HEADS.get(task)
  if load_weights and head and not any(k.startswith(head) for k in weights):
    raise CheckpointError(
        f"{directory}: task {task} needs the {head.rstrip('._')} head, which this checkpoint "
        f"({inferred}) does not have")
  length = sequence_length or config.max_sequence_length
  if not 3 <= length <= config.max_sequence_length:
    raise CheckpointError(f"sequence length {length} is outside 3..{config.max_sequence_length}")
  model = electra.build_task(task, config, tokenizer, dtype=dtype, sequence_length=length,
                             pooler=any(k.startswith("pooler.") for k in weights))
  if not load_weights:
    return model
  if "generator_lm_head.weight" in weights and not np.array_equal(
      weights["generator_lm_head.weight"], weights.get("embeddings.word_embeddings.weight")):
    raise CheckpointError(f"{directory}: generator_lm_head.weight differs from the word "
                          "embeddings; untied decoders are not supported")
  unused_heads = tuple(h for t, h in _ELECTRA_HEADS.items() if t != task)

  def ignored(key: str) -> bool:
    # Tied copies, buffers, and the head of another task than the one exported.
    return (key.endswith("position_ids") or key.endswith("token_type_ids")
            or key == "generator_lm_head.weight" or key.startswith(unused_heads))

  assign_strict(_electra_assignments(model, task), weights, ignored=ignored,
                where=str(directory), dtype=model.backbone.dtype)
  return model


# ---------------------------------------------------------------------------
# BART.

def _bpe_tokenizer(directory: pathlib.Path) -> ByteLevelBPETokenizer:
  return _bpe_tokenizer_from(directory / "vocab.json", directory / "merges.txt")


def _bpe_tokenizer_from(vocabulary_path: pathlib.Path,
                        path: pathlib.Path) -> ByteLevelBPETokenizer:
  directory = path.parent
  vocabulary = _read_json(vocabulary_path)
  if not path.exists():
    raise CheckpointError(f"{directory}: no merges.txt (the in-graph BPE is built from it)")
  lines = path.read_text(encoding="utf-8").splitlines()
  merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
  bad = [m for m in merges if len(m) != 2]
  if bad:
    raise CheckpointError(f"{path}: a merge is two tokens separated by a space, not {bad[0]}")
  # tokenizer.json, when present, says which added tokens strip the spaces
  # around them (upstream loads it in preference to vocab.json/merges.txt).
  lstrip, rstrip = [], []
  if (directory / "tokenizer.json").exists():
    for added in _read_json(directory / "tokenizer.json").get("added_tokens", []):
      if added.get("lstrip"):
        lstrip.append(added.get("content"))
      if added.get("rstrip"):
        rstrip.append(added.get("content"))
  try:
    return ByteLevelBPETokenizer(vocabulary, merges, lstrip=lstrip, rstrip=rstrip)
  except ValueError as e:
    raise CheckpointError(f"{directory}: {e}") from None


def _bart_assignments(backbone: bart.BartBackbone) -> list:
  out = [("shared.weight", backbone.token_embedding.embeddings, _same),
         ("encoder.embed_positions.weight", backbone.encoder_position_embedding.embeddings, _same),
         ("decoder.embed_positions.weight", backbone.decoder_position_embedding.embeddings, _same),
         *_norm("encoder.layernorm_embedding", backbone.encoder_embeddings_layer_norm),
         *_norm("decoder.layernorm_embedding", backbone.decoder_embeddings_layer_norm),
         ("final_logits_bias", backbone.final_logits_bias, lambda a: a.reshape(-1))]

  def attention(prefix, module):
    return [*_dense(prefix + ".q_proj", module.query), *_dense(prefix + ".k_proj", module.key),
            *_dense(prefix + ".v_proj", module.value), *_dense(prefix + ".out_proj", module.output)]

  for i, layer in enumerate(backbone.encoder_layers):
    p = f"encoder.layers.{i}."
    out += [*attention(p + "self_attn", layer.self_attention),
            *_norm(p + "self_attn_layer_norm", layer.self_attention_layer_norm),
            *_dense(p + "fc1", layer.feedforward.intermediate),
            *_dense(p + "fc2", layer.feedforward.output),
            *_norm(p + "final_layer_norm", layer.feedforward_layer_norm)]
  for i, layer in enumerate(backbone.decoder_layers):
    p = f"decoder.layers.{i}."
    out += [*attention(p + "self_attn", layer.self_attention),
            *_norm(p + "self_attn_layer_norm", layer.self_attention_layer_norm),
            *attention(p + "encoder_attn", layer.cross_attention),
            *_norm(p + "encoder_attn_layer_norm", layer.cross_attention_layer_norm),
            *_dense(p + "fc1", layer.feedforward.intermediate),
            *_dense(p + "fc2", layer.feedforward.output),
            *_norm(p + "final_layer_norm", layer.feedforward_layer_norm)]
  return out


def load_bart_hf(directory: pathlib.Path, *, dtype="float32", sequence_length: int | None = None,
                 load_weights: bool = True, task: str | None = None):
  """Loads a Hugging Face BART directory (config.json, model.safetensors, vocab.json,
  merges.txt, optional generation_config.json) as a `BartSeq2SeqLM`."""
  from tfhub_models.models import bart_generation

  if task not in (None, "generate"):
    raise CheckpointError(f"unknown task {task!r} for BART (generate)")
  raw = _read_json(directory / "config.json")
  generation = (_read_json(directory / "generation_config.json")
                if (directory / "generation_config.json").exists() else {})
  try:
    config = bart.BartConfig.from_hf(raw, generation)
  except (KeyError, ValueError) as e:
    raise CheckpointError(f"{directory}/config.json: {e}") from None
  tokenizer = _bpe_tokenizer(directory)
  if tokenizer.vocabulary_size > config.vocabulary_size:
    raise CheckpointError(f"{directory}: vocab.json has ids up to {tokenizer.vocabulary_size - 1} "
                          f"but the config's vocab_size is {config.vocabulary_size}")
  length = sequence_length or config.max_sequence_length
  if not 3 <= length <= config.max_sequence_length:
    raise CheckpointError(f"sequence length {length} is outside 3..{config.max_sequence_length}")
  model = bart_generation.BartSeq2SeqLM.build(config, tokenizer, dtype=dtype,
                                              sequence_length=length)
  if not load_weights:
    return model
  weights = {}
  for key, value in read_safetensors(directory).items():
    key = key[len("model."):] if key.startswith("model.") else key
    weights[key] = value
  for tied in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
    if tied in weights and "shared.weight" in weights and not np.array_equal(
        weights[tied], weights["shared.weight"]):
      raise CheckpointError(f"{directory}: {tied} differs from shared.weight; untied "
                            "embeddings are not supported")
    if tied in weights and "shared.weight" not in weights:
      weights["shared.weight"] = weights[tied]
  if "final_logits_bias" not in weights:  # upstream treats it as optional (zeros)
    weights["final_logits_bias"] = np.zeros([1, config.vocabulary_size], np.float32)

  def ignored(key: str) -> bool:
    return key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                   "lm_head.weight") or key.endswith("position_ids")

  assign_strict(_bart_assignments(model.backbone), weights, ignored=ignored,
                where=str(directory), dtype=model.backbone.dtype)
  return model


def load_bart_keras_hub(directory: pathlib.Path, *, dtype="float32",
                        sequence_length: int | None = None, load_weights: bool = True,
                        task: str | None = None):
  """Loads a keras-hub BART preset (config.json, model.weights.h5,
  assets/tokenizer/vocabulary.json and merges.txt) as a `BartSeq2SeqLM`.

  keras-hub has no final_logits_bias (zeros here) and no generation settings:
  its generate starts the decoder with `</s><s>`, so `<s>` is forced first.
  """
  from tfhub_models.models import bart_generation

  if task not in (None, "generate"):
    raise CheckpointError(f"unknown task {task!r} for BART (generate)")
  meta = _read_json(directory / "config.json")["config"]
  config = bart.BartConfig(
      vocabulary_size=int(meta["vocabulary_size"]), num_layers=int(meta["num_layers"]),
      num_heads=int(meta["num_heads"]), hidden_dim=int(meta["hidden_dim"]),
      intermediate_dim=int(meta["intermediate_dim"]), dropout=float(meta.get("dropout", 0.1)),
      max_sequence_length=int(meta.get("max_sequence_length", 1024)),
      generation=bart.GenerationConfig(forced_bos_token_id=0))
  assets = directory / "assets" / "tokenizer"
  vocabulary_path = assets / "vocabulary.json"
  if not vocabulary_path.exists():
    raise CheckpointError(f"{directory}: no assets/tokenizer/vocabulary.json")
  tokenizer = _bpe_tokenizer_from(vocabulary_path, assets / "merges.txt")
  length = sequence_length or config.max_sequence_length
  if not 3 <= length <= config.max_sequence_length:
    raise CheckpointError(f"sequence length {length} is outside 3..{config.max_sequence_length}")
  model = bart_generation.BartSeq2SeqLM.build(config, tokenizer, dtype=dtype,
                                              sequence_length=length)
  if not load_weights:
    return model
  flat = {f"{path}:{i}": array
          for path, arrays in read_keras_h5(directory / "model.weights.h5").items()
          for i, array in enumerate(arrays)}
  b = model.backbone

  def positions(array):  # keras-hub counts positions from 0; upstream from row 2
    table = np.zeros((array.shape[0] + bart.POSITION_OFFSET, array.shape[1]), array.dtype)
    table[bart.POSITION_OFFSET:] = array
    return table

  def attention(prefix, module):
    return [(f"{prefix}/{name}:0", dense.kernel, _kh_heads) for name, dense in
            (("query", module.query), ("key", module.key), ("value", module.value))] + [
        (f"{prefix}/{name}:1", dense.bias, _kh_heads) for name, dense in
        (("query", module.query), ("key", module.key), ("value", module.value))] + [
        (f"{prefix}/attention_output:0", module.output.kernel, _kh_out),
        (f"{prefix}/attention_output:1", module.output.bias, _same)]

  def kh_norm(name, norm):
    return [(f"{name}:0", norm.gamma, _same), (f"{name}:1", norm.beta, _same)]

  def kh_dense(name, dense):
    return [(f"{name}:0", dense.kernel, _same), (f"{name}:1", dense.bias, _same)]

  assignments = [
      ("token_embedding:0", b.token_embedding.embeddings, _same),
      ("encoder_position_embedding:0", b.encoder_position_embedding.embeddings, positions),
      ("decoder_position_embedding:0", b.decoder_position_embedding.embeddings, positions),
      *kh_norm("encoder_embeddings_layer_norm", b.encoder_embeddings_layer_norm),
      *kh_norm("decoder_embeddings_layer_norm", b.decoder_embeddings_layer_norm)]
  for i, layer in enumerate(b.encoder_layers):
    p = f"transformer_encoder_layer_{i}/"
    assignments += [*attention(p + "self_attention_layer", layer.self_attention),
                    *kh_norm(p + "self_attention_layer_norm", layer.self_attention_layer_norm),
                    *kh_dense(p + "feedforward_intermediate_dense", layer.feedforward.intermediate),
                    *kh_dense(p + "feedforward_output_dense", layer.feedforward.output),
                    *kh_norm(p + "feedforward_layer_norm", layer.feedforward_layer_norm)]
  for i, layer in enumerate(b.decoder_layers):
    p = f"transformer_decoder_layer_{i}/"
    assignments += [*attention(p + "self_attention", layer.self_attention),
                    *kh_norm(p + "self_attention_layer_norm", layer.self_attention_layer_norm),
                    *attention(p + "cross_attention", layer.cross_attention),
                    *kh_norm(p + "cross_attention_layer_norm", layer.cross_attention_layer_norm),
                    *kh_dense(p + "feedforward_intermediate_dense", layer.feedforward.intermediate),
                    *kh_dense(p + "feedforward_output_dense", layer.feedforward.output),
                    *kh_norm(p + "feedforward_layer_norm", layer.feedforward_layer_norm)]
  assign_strict(assignments, flat, ignored=lambda k: False,
                where=str(directory / "model.weights.h5"), dtype=b.dtype)
  return model


# ---------------------------------------------------------------------------
# Entry point.

def detect(directory: pathlib.Path) -> tuple[str, str]:
  """(format, family) of a checkpoint directory: ("hf" | "keras_hub", "xlm_roberta" | "electra")."""
  meta = _read_json(directory / "config.json")
  if "class_name" in meta and "config" in meta:
    class_name = meta["class_name"]
    if class_name == "XLMRobertaBackbone":
      return "keras_hub", "xlm_roberta"
    if class_name == "BartBackbone":
      return "keras_hub", "bart"
    raise CheckpointError(f"{directory}: keras-hub class {class_name!r} is not supported "
                          "(supported: XLMRobertaBackbone, BartBackbone)")
  model_type = meta.get("model_type")
  if model_type in ("xlm-roberta", "xlm_roberta"):
    return "hf", "xlm_roberta"
  if model_type == "electra":
    return "hf", "electra"
  if model_type == "bart":
    return "hf", "bart"
  if model_type is None:
    raise CheckpointError(f"{directory}/config.json: neither a Hugging Face config (model_type) "
                          "nor a keras-hub preset config (class_name)")
  raise CheckpointError(f"{directory}: model_type {model_type!r} is not supported "
                        "(supported: xlm-roberta, electra, bart)")


def _load_xlm_roberta(directory, *, task, **kwargs):
  if task is None:
    raw = _read_json(directory / "config.json")
    has_head = ("XLMRobertaForMaskedLM" in (raw.get("architectures") or [])
                or (directory / "task.weights.h5").exists())
    if "class_name" not in raw and kwargs.get("load_weights", True):
      has_head = any(_hf_key(k).startswith("lm_head.") for k in safetensors_keys(directory))
    task = "fill_mask" if has_head else "backbone"
  if task not in ("fill_mask", "backbone", "embedding"):
    raise CheckpointError(f"unknown task {task!r} for XLM-RoBERTa (fill_mask, backbone, "
                          "embedding)")
  loader = (load_xlm_roberta_keras_hub if "class_name" in _read_json(directory / "config.json")
            else load_xlm_roberta_hf)
  model = loader(directory, task="fill_mask" if task == "fill_mask" else "backbone", **kwargs)
  if task == "embedding":
    return xlm_roberta.XLMRobertaEncoder(model.backbone, model.preprocessor)
  return model.backbone if task == "backbone" else model


def load(source: str | os.PathLike, *, dtype="float32", sequence_length: int | None = None,
         load_weights: bool = True, task: str | None = None):
  """Loads a checkpoint directory, handle or preset name as a task module.

  task: None (the checkpoint's own), "fill_mask", "embedding" (backbone and
  preprocessor, no head), "backbone" (XLM-RoBERTa: the backbone alone), or
  "replaced_token_detection" (ELECTRA).
  """
  directory = resolve(source)
  fmt, family = detect(directory)
  kwargs = dict(dtype=dtype, sequence_length=sequence_length, load_weights=load_weights, task=task)
  if family == "electra":
    return load_electra_hf(directory, **kwargs)
  if family == "bart":
    return (load_bart_keras_hub if fmt == "keras_hub" else load_bart_hf)(directory, **kwargs)
  return _load_xlm_roberta(directory, **kwargs)


__all__ = ["CheckpointError", "resolve", "detect", "load", "read_safetensors", "read_keras_h5",
           "assign_strict", "load_xlm_roberta_hf", "load_xlm_roberta_keras_hub", "load_electra_hf"]
