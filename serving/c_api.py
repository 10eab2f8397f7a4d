"""TensorFlow's C API, as `tensorflow_model_server` reaches the runtime: through ctypes.

  from serving import c_api
  c_api.load_tensorflow_text_ops()          # TF_LoadLibrary, as TF Serving links them
  c_api.set_xla_compilation(False)          # what TF Serving's main does without the XLA flags
  with c_api.Session(export_dir) as session:          # TF_LoadSessionFromSavedModel
    meta_graph = session.meta_graph                   # the MetaGraphDef it loaded
    [out] = session.run({"serving_default_text:0": np.array([b"a"], object)}, ["..:0"])

The library is the pinned wheel's `tensorflow/libtensorflow_cc.so.2` (its C API,
and `tensorflow::DisableXlaCompilation` / `EnableXlaCompilation`, the switches
TF Serving's `--xla_cpu_compilation_enabled` sets).  TensorFlow's Python package is
imported first: loading the library by hand and importing the package afterwards
crashes the process (MEASUREMENTS.md).  Strings cross as `TF_TString`s; every
other dtype as its bytes.  Errors raise `CApiError` with TensorFlow's code (the
gRPC codes) and message.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import threading

import numpy as np
import tensorflow as tf  # first: see the module docstring
from tensorflow.core.protobuf import meta_graph_pb2

from serving import contract

LIBRARY = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2")
TSTRING_BYTES = 24   # sizeof(TF_TString) on 64-bit platforms (tsl/platform/ctstring_internal.h)
XLA_FLAG = contract.XLA_CPU_FLAG
XLA_DISABLED = contract.XLA_DISABLED


class CApiError(RuntimeError):
  """A TF_Status that is not OK: `code` (TF_Code, the gRPC codes) and TensorFlow's message."""

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.code, self.message = code, message


class _Output(ctypes.Structure):
  _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


class _Buffer(ctypes.Structure):
  _fields_ = [("data", ctypes.c_void_p), ("length", ctypes.c_size_t),
              ("data_deallocator", ctypes.c_void_p)]


_P, _I, _S = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
_SIGNATURES = {  # name: (restype, argtypes), from tensorflow/c/c_api.h and friends
    "TF_NewStatus": (_P, []), "TF_DeleteStatus": (None, [_P]),
    "TF_GetCode": (_I, [_P]), "TF_Message": (ctypes.c_char_p, [_P]),
    "TF_NewSessionOptions": (_P, []), "TF_DeleteSessionOptions": (None, [_P]),
    "TF_NewGraph": (_P, []), "TF_DeleteGraph": (None, [_P]),
    "TF_NewBuffer": (ctypes.POINTER(_Buffer), []),
    "TF_DeleteBuffer": (None, [ctypes.POINTER(_Buffer)]),
    "TF_LoadSessionFromSavedModel": (_P, [_P, _P, ctypes.c_char_p,
                                          ctypes.POINTER(ctypes.c_char_p), _I, _P,
                                          ctypes.POINTER(_Buffer), _P]),
    "TF_GraphOperationByName": (_P, [_P, ctypes.c_char_p]),
    "TF_SessionRun": (None, [_P, _P, ctypes.POINTER(_Output), ctypes.POINTER(_P), _I,
                             ctypes.POINTER(_Output), ctypes.POINTER(_P), _I, _P, _I, _P, _P]),
    "TF_CloseSession": (None, [_P, _P]), "TF_DeleteSession": (None, [_P, _P]),
    "TF_AllocateTensor": (_P, [_I, ctypes.POINTER(ctypes.c_int64), _I, _S]),
    "TF_DeleteTensor": (None, [_P]), "TF_TensorData": (_P, [_P]),
    "TF_TensorByteSize": (_S, [_P]), "TF_NumDims": (_I, [_P]),
    "TF_Dim": (ctypes.c_int64, [_P, _I]), "TF_TensorType": (_I, [_P]),
    "TF_StringInit": (None, [_P]), "TF_StringCopy": (None, [_P, ctypes.c_char_p, _S]),
    "TF_StringGetDataPointer": (_P, [_P]), "TF_StringGetSize": (_S, [_P]),
    "TF_LoadLibrary": (_P, [ctypes.c_char_p, _P]),
    "_ZN10tensorflow21DisableXlaCompilationEv": (None, []),   # tensorflow::DisableXlaCompilation()
    "_ZN10tensorflow20EnableXlaCompilationEv": (None, []),    # tensorflow::EnableXlaCompilation()
}
_lib = None
_lock = threading.Lock()
_xla_enabled = True   # TensorFlow's default; TF Serving turns it off without the flags
_loaded_libraries: dict[str, int] = {}


def library() -> ctypes.CDLL:
  """libtensorflow_cc.so.2 with the functions used here typed (loaded once)."""
  global _lib
  with _lock:
    if _lib is None:
      lib = ctypes.CDLL(LIBRARY)
      for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
      _lib = lib
  return _lib


class _Status:
  """A TF_Status for one call; `check()` raises CApiError unless it is OK."""

  def __init__(self):
    self.lib = library()
    self.pointer = self.lib.TF_NewStatus()

  def check(self) -> None:
    code = self.lib.TF_GetCode(self.pointer)
    if code != 0:
      raise CApiError(code, (self.lib.TF_Message(self.pointer) or b"").decode("utf-8",
                                                                               "replace"))

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.lib.TF_DeleteStatus(self.pointer)


def set_xla_compilation(enabled: bool) -> bool:
  """Turns XLA compilation on or off for this process, as TF Serving's main does
  (off unless --xla_cpu_compilation_enabled=true or the GPU flag); returns the
  previous setting.  Off, a function marked for XLA fails with
  "XLA compilation disabled" when it runs."""
  global _xla_enabled
  lib = library()
  with _lock:
    previous = _xla_enabled
    if enabled:
      lib._ZN10tensorflow20EnableXlaCompilationEv()
    else:
      lib._ZN10tensorflow21DisableXlaCompilationEv()
    _xla_enabled = bool(enabled)
  return previous


def xla_compilation_enabled() -> bool:
  return _xla_enabled


def tensorflow_text_op_libraries() -> list[str]:
  """The op libraries of the installed tensorflow-text, found without importing it."""
  spec = importlib.util.find_spec("tensorflow_text")
  if spec is None or not spec.submodule_search_locations:
    raise CApiError(5, "tensorflow-text is not installed")
  root = list(spec.submodule_search_locations)[0]
  return sorted(glob.glob(os.path.join(root, "python", "ops", "*.so")))


def load_op_library(path: str) -> None:
  """TF_LoadLibrary: registers the ops and kernels of one shared library (once)."""
  with _lock:
    if path in _loaded_libraries:
      return
  with _Status() as status:
    handle = library().TF_LoadLibrary(path.encode(), status.pointer)
    status.check()
  with _lock:
    _loaded_libraries[path] = handle


def load_tensorflow_text_ops() -> list[str]:
  """Loads every tensorflow-text op library, as TF Serving links them; returns their paths."""
  paths = tensorflow_text_op_libraries()
  for path in paths:
    load_op_library(path)
  return paths


# --- tensors ---------------------------------------------------------------------------

def _to_tensor(lib, value: np.ndarray) -> int:
  """A new TF_Tensor holding `value` (strings as TF_TStrings); the caller deletes it."""
  value = np.asarray(value)
  string = value.dtype == object or value.dtype.kind in "SU"
  dtype = tf.string if string else tf.dtypes.as_dtype(value.dtype)
  dims = (ctypes.c_int64 * max(value.ndim, 1))(*value.shape)
  count = int(np.prod(value.shape, dtype=np.int64))
  size = count * TSTRING_BYTES if string else value.nbytes
  tensor = lib.TF_AllocateTensor(dtype.as_datatype_enum, dims, value.ndim, size)
  if not tensor:
    raise CApiError(8, f"could not allocate a {dtype.name} tensor of shape {list(value.shape)}")
  data = lib.TF_TensorData(tensor)
  if string:  # TF_AllocateTensor leaves the TF_TStrings uninitialized
    for i, item in enumerate(value.reshape(-1)):
      raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
      lib.TF_StringInit(data + i * TSTRING_BYTES)
      lib.TF_StringCopy(data + i * TSTRING_BYTES, raw, len(raw))
  elif size:
    ctypes.memmove(data, np.ascontiguousarray(value).ctypes.data, size)
  return tensor


def _from_tensor(lib, tensor: int) -> np.ndarray:
  """A numpy copy of a TF_Tensor (strings: an object array of bytes)."""
  shape = tuple(lib.TF_Dim(tensor, i) for i in range(lib.TF_NumDims(tensor)))
  dtype = tf.dtypes.as_dtype(lib.TF_TensorType(tensor))
  data = lib.TF_TensorData(tensor)
  count = int(np.prod(shape, dtype=np.int64))
  if dtype == tf.string:
    out = np.empty(count, dtype=object)
    for i in range(count):
      element = data + i * TSTRING_BYTES
      out[i] = ctypes.string_at(lib.TF_StringGetDataPointer(element),
                                lib.TF_StringGetSize(element))
    return out.reshape(shape)
  numpy_dtype = np.dtype(dtype.as_numpy_dtype)
  size = lib.TF_TensorByteSize(tensor)
  if size != count * numpy_dtype.itemsize:
    raise CApiError(13, f"a {dtype.name} tensor of shape {list(shape)} has {size} bytes")
  buffer = ctypes.string_at(data, size) if size else b""
  return np.frombuffer(buffer, dtype=numpy_dtype).reshape(shape).copy()


# --- sessions --------------------------------------------------------------------------

class Session:
  """A SavedModel loaded by TF_LoadSessionFromSavedModel (the C++ LoadSavedModel that TF
  Serving's SavedModelBundle calls) into its own graph and session."""

  def __init__(self, export_dir: str | os.PathLike, tags=("serve",)):
    lib = self.lib = library()
    self.graph = lib.TF_NewGraph()
    options = lib.TF_NewSessionOptions()
    meta = lib.TF_NewBuffer()
    tag_array = (ctypes.c_char_p * len(tags))(*[t.encode() for t in tags])
    try:
      with _Status() as status:
        self.session = lib.TF_LoadSessionFromSavedModel(
            options, None, os.fspath(export_dir).encode(), tag_array, len(tags), self.graph,
            meta, status.pointer)
        status.check()
      self.meta_graph = meta_graph_pb2.MetaGraphDef.FromString(
          ctypes.string_at(meta.contents.data, meta.contents.length))
    except BaseException:
      lib.TF_DeleteGraph(self.graph)
      self.graph = None
      raise
    finally:
      lib.TF_DeleteBuffer(meta)
      lib.TF_DeleteSessionOptions(options)

  def _output(self, name: str) -> _Output:
    """A graph tensor "op:index" (":0" when the index is left out)."""
    op, _, index = name.partition(":")
    operation = self.lib.TF_GraphOperationByName(self.graph, op.encode())
    if not operation:
      raise CApiError(5, f"the graph has no operation {op!r} (tensor {name})")
    return _Output(operation, int(index or 0))

  def run(self, feeds: dict[str, np.ndarray], fetches: list[str]) -> list[np.ndarray]:
    """TF_SessionRun: the values of `fetches` (graph tensor names) given `feeds`."""
    lib = self.lib
    inputs = (_Output * len(feeds))(*[self._output(k) for k in feeds])
    outputs = (_Output * len(fetches))(*[self._output(k) for k in fetches])
    values = (ctypes.c_void_p * len(feeds))()
    results = (ctypes.c_void_p * len(fetches))()
    try:
      for i, value in enumerate(feeds.values()):
        values[i] = _to_tensor(lib, value)
      with _Status() as status:
        lib.TF_SessionRun(self.session, None, inputs, values, len(feeds), outputs, results,
                          len(fetches), None, 0, None, status.pointer)
        status.check()
      return [_from_tensor(lib, results[i]) for i in range(len(fetches))]
    finally:
      for array in (values, results):
        for pointer in array:
          if pointer:
            lib.TF_DeleteTensor(pointer)

  def close(self) -> None:
    if self.graph is None:
      return
    with _Status() as status:
      self.lib.TF_CloseSession(self.session, status.pointer)
      self.lib.TF_DeleteSession(self.session, status.pointer)
    self.lib.TF_DeleteGraph(self.graph)
    self.graph = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
