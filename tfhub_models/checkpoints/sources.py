"""Where checkpoints come from and how their files are read: directories, hub
handles, safetensors and Keras h5 weights.  Never unpickles.

A `Checkpoint` reads each of its files at most once and hands the values on.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib

import numpy as np


class CheckpointError(ValueError):
  """A checkpoint that cannot be loaded; the message says why."""


# What a checkpoint directory may hold, Hugging Face and keras-hub formats alike;
# the weight files only when the weights are wanted.
_CONFIG_PATTERNS = ["config.json", "generation_config.json", "tokenizer.json",
                    "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model",
                    "vocab.txt", "vocab.json", "merges.txt", "metadata.json", "preprocessor.json",
                    "task.json", "assets/*"]
_WEIGHT_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.weights.h5"]


def _hf_download(client, repo: str, load_weights: bool):
  patterns = _CONFIG_PATTERNS + (_WEIGHT_PATTERNS if load_weights else [])
  return client.snapshot_download(repo, allow_patterns=patterns)


def _kaggle_download(client, handle: str, load_weights: bool):
  del load_weights  # Kaggle model versions download whole
  return client.model_download(handle)


_HUBS = {
    "hf://": ("huggingface_hub", "the Hugging Face Hub", _hf_download),
    "kaggle://": ("kagglehub", "Kaggle", _kaggle_download),
}


def resolve(source: str | os.PathLike, handles: dict | None = None, *,
            load_weights: bool = True) -> pathlib.Path:
  """Turns a directory, `hf://org/name`, `kaggle://owner/model/fw/variation` or a
  preset name (a key of `handles`: name -> handles to try) into a directory.

  Without `load_weights`, a hub download leaves the weight files out.
  """
  source = str(source)
  handles = handles or {}
  if source in handles and not pathlib.Path(source).exists():
    errors = []
    for handle in handles[source]:
      try:
        return resolve(handle, load_weights=load_weights)
      except CheckpointError as e:
        errors.append(str(e))
    what = "files" if load_weights else "config and tokenizer files"
    raise CheckpointError(f"preset {source!r}: its {what} are not on this machine and could not "
                          "be downloaded:\n  " + "\n  ".join(errors))
  for scheme, (module_name, hub, download) in _HUBS.items():
    if source.startswith(scheme):
      try:
        client = importlib.import_module(module_name)
      except ImportError:
        raise CheckpointError(f"{source}: {scheme} handles need {module_name} "
                              "(pip install 'tfhub-models[hub]')") from None
      try:
        return pathlib.Path(download(client, source[len(scheme):], load_weights))
      except Exception as e:  # network, auth, offline mode: all end here
        raise CheckpointError(f"{source}: could not download from {hub} "
                              f"({type(e).__name__}: {e})") from None
  path = pathlib.Path(source)
  if not path.exists():
    raise CheckpointError(f"checkpoint {source!r} does not exist")
  if not path.is_dir():
    raise CheckpointError(f"checkpoint {source!r} is not a directory")
  return path


def read_json(path: pathlib.Path) -> dict:
  """A checkpoint's JSON file, which must hold an object (every one of them does)."""
  try:
    value = json.loads(path.read_text(encoding="utf-8"))
  except FileNotFoundError:
    raise CheckpointError(f"{path.parent}: no {path.name}") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(value, dict):
    raise CheckpointError(f"{path}: must hold a JSON object, not a JSON "
                          f"{_JSON_TYPES.get(type(value), type(value).__name__)}")
  return value


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


def check_finite(arrays: dict, where) -> None:
  """CheckpointError naming the first float tensor of `arrays` ({key: array}, as
  read from the file `where`) with a NaN or infinite value."""
  for key, array in arrays.items():
    # A float64 sum of float32 or float16 values cannot overflow, so it is finite
    # exactly when every value is; and it needs no temporary array.
    if array.dtype.kind != "f" or np.isfinite(array.sum(dtype=np.float64)):
      continue
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:   # (a float64 tensor's sum may overflow with every value finite)
      raise CheckpointError(f"{where}: tensor {key} holds {bad} NaN or infinite value"
                            f"{'s' if bad > 1 else ''} (of {array.size})")


def _safetensors_files(directory: pathlib.Path, index: dict | None) -> list:
  if index is not None:
    files = sorted(set(index.get("weight_map", {}).values()))
    outside = [f for f in files if pathlib.Path(f).name != f]
    if outside:
      raise CheckpointError(f"{directory / 'model.safetensors.index.json'}: weight files must "
                            f"lie in the checkpoint directory, not {outside[0]!r}")
    return files
  if (directory / "model.safetensors").exists():
    return ["model.safetensors"]
  pickled = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
  if pickled:
    raise CheckpointError(
        f"{directory}: only pickled weights ({', '.join(sorted(pickled))}); they are never "
        "unpickled here. Convert them to safetensors first, e.g. in Python with transformers: "
        "AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)")
  raise CheckpointError(f"{directory}: no model.safetensors")


def read_safetensors(directory: pathlib.Path, index: dict | None = None) -> dict:
  """All tensors of a Hugging Face checkpoint directory as numpy arrays; a float
  tensor with a NaN or infinite value is a CheckpointError naming it and its file."""
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  weights = {}
  for name in _safetensors_files(directory, index):
    try:
      read = load_file(str(directory / name))
    except FileNotFoundError:
      raise CheckpointError(f"{directory}: weight file {name} is missing") from None
    except (SafetensorError, OSError, ValueError) as e:
      raise CheckpointError(f"{directory / name}: not a readable safetensors file ({e})") from None
    check_finite(read, directory / name)
    weights.update(read)
  return weights


def read_keras_h5(path: pathlib.Path) -> dict:
  """A Keras 3 `.weights.h5` file as {"layer/sublayer:i": array} (i: the variable's
  index in its layer).

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
      layer_path = f"{prefix}/{name}" if prefix else name
      if named is not None:
        for i in range(len(named)):
          out[f"{layer_path}:{i}"] = np.asarray(named[str(i)])
      walk(item["layers"] if "layers" in item else item, layer_path)

  with handle:
    walk(handle["layers"] if "layers" in handle else handle, "")
  check_finite(out, path)
  return out


class Checkpoint:
  """A checkpoint directory whose files are each read at most once.

  `format` is "hf" (a Hugging Face directory: `config.json` with `model_type`)
  or "keras_hub" (a keras-hub preset: `config.json` with `class_name`).
  """

  def __init__(self, directory: pathlib.Path):
    self.directory = pathlib.Path(directory)
    self._read = {}   # file name -> its contents, once read
    self.config = self.json("config.json")
    keras_hub = "class_name" in self.config and "config" in self.config
    self.format = "keras_hub" if keras_hub else "hf"

  def path(self, name: str) -> pathlib.Path:
    return self.directory / name

  def exists(self, name: str) -> bool:
    return self.path(name).exists()

  def _once(self, name: str, read):
    if name not in self._read:
      self._read[name] = read()
    return self._read[name]

  def json(self, name: str) -> dict:
    """A JSON file of the checkpoint; CheckpointError if missing or invalid."""
    return self._once(name, lambda: read_json(self.path(name)))

  def optional_json(self, name: str) -> dict:
    """As json(), {} when the file does not exist."""
    return self.json(name) if self.exists(name) else {}

  def _index(self) -> dict | None:
    index = "model.safetensors.index.json"
    return self.json(index) if self.exists(index) else None

  def weights(self) -> dict:
    """Every tensor of the safetensors files, {name: np.ndarray}."""
    return self._once("*.safetensors", lambda: read_safetensors(self.directory, self._index()))

  def keras_weights(self, name: str) -> dict:
    """A keras-hub `.weights.h5` file as {"layer/sublayer:i": array}."""
    return self._once(name, lambda: read_keras_h5(self.path(name)))

  def release_weights(self) -> None:
    """Forgets the weights read so far (once assigned, they are held by the variables)."""
    self._read = {k: v for k, v in self._read.items()
                  if not (k.endswith(".h5") or k == "*.safetensors")}


def open_checkpoint(source, handles: dict | None = None, *,
                    load_weights: bool = True) -> Checkpoint:
  """The `Checkpoint` of a directory, hub handle or preset name (see `resolve`)."""
  return Checkpoint(resolve(source, handles, load_weights=load_weights))
