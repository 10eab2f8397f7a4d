"""One SavedModel version in its own graph and session, as TF Serving's C++ loader runs it.

  servable = Servable("xlmr", 2, path)       # TF1 session loader, tag "serve"
  signature = servable.signature("")          # serving_default; NOT_FOUND if absent
  signature.check_inputs(inputs)              # names, dtypes, shapes: INVALID_ARGUMENT
  outputs = signature.output_names(())        # every output, sorted
  servable.run(signature, inputs, outputs)    # through the batcher when one is attached

A request looks its signature up once and passes the `Signature` down.  The
registry counts requests in flight (`acquire` / `release`); `close` waits for
them before it frees the session.
"""

from __future__ import annotations

import logging
import pathlib
import threading
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_text  # registers the ops the exports use
from tensorflow.core.framework import types_pb2

from serving import contract
from serving.errors import ServingError, code_of, invalid, not_found, shown
from serving.tensors import dtype_label

log = logging.getLogger("serving.servable")



def dtype_name(dtype: int) -> str:
  return types_pb2.DataType.Name(dtype)



class _Input(NamedTuple):
  dtype: int                  # DataType enum
  numpy_dtype: object         # what a non-string value must be (None: no numpy dtype)
  dims: list[int] | None      # -1 for an unknown size; None for an unknown rank


def _input(info) -> _Input:
  try:
    numpy_dtype = tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
  except TypeError:
    numpy_dtype = None
  dims = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
  return _Input(info.dtype, numpy_dtype, dims)


class Signature:
  """One signature of a loaded version: its SignatureDef, the graph tensors it names,
  and the checks of a request against it."""

  __slots__ = ("name", "proto", "inputs", "outputs", "input_specs", "feeds", "fetches")

  def __init__(self, name: str, proto):
    self.name, self.proto = name, proto
    self.inputs = dict(proto.inputs)    # alias -> TensorInfo
    self.outputs = dict(proto.outputs)  # alias -> TensorInfo
    self.input_specs = {alias: _input(info) for alias, info in self.inputs.items()}
    self.feeds = {alias: info.name for alias, info in self.inputs.items()}    # -> graph tensor
    self.fetches = {alias: info.name for alias, info in self.outputs.items()}

  def __str__(self) -> str:
    return self.name

  def check_names(self, names) -> None:
    """The input names a request sends against the signature's; INVALID_ARGUMENT."""
    specs = self.input_specs
    if specs.keys() != set(names):  # TF Serving's message, which names both sides
      extra = sorted(set(names) - set(specs))
      missing = sorted(set(specs) - set(names))
      raise invalid(
          f"input size does not match signature: {len(names)}!={len(specs)} "
          f"len({{{_names(names)}}}) != len({{{','.join(sorted(specs))}}})"
          f". Sent extra: {{{_names(extra)}}}. Missing but required: "
          f"{{{','.join(missing)}}}.")

  def check_declared(self, key: str, dtype: int, dims: list[int] | None) -> None:
    """One input's dtype (DataType enum) and shape against the signature, before its
    values are read; INVALID_ARGUMENT naming it."""
    spec = self.input_specs[key]
    if dtype != spec.dtype:
      raise invalid(f"input {key} has dtype {dtype_label(dtype)}, the signature expects "
                    f"{dtype_name(spec.dtype)}")
    expected = spec.dims
    if expected is None or dims is None:
      return
    if len(expected) != len(dims) or any(e not in (-1, v) for e, v in zip(expected, dims)):
      raise invalid(f"input {key} has shape {list(dims)}, the signature expects "
                    f"{['?' if e == -1 else e for e in expected]}")
    if expected and dims[0] == 0:
      raise invalid(f"input {key} is an empty batch (its 0th dimension is 0)")

  def check_inputs(self, inputs: dict[str, np.ndarray]) -> None:
    """Names, dtypes and shapes of `inputs` against the signature; raises INVALID_ARGUMENT."""
    self.check_names(inputs)
    for key, value in inputs.items():
      got_string = value.dtype == object or value.dtype.kind in "SU"
      dtype = (types_pb2.DT_STRING if got_string
               else tf.dtypes.as_dtype(value.dtype).as_datatype_enum)
      self.check_declared(key, dtype, list(value.shape))

  def output_names(self, output_filter) -> tuple[str, ...]:
    """The outputs a request asks for (all, sorted, when `output_filter` is empty)."""
    wanted = list(output_filter) or sorted(self.outputs)
    for i, alias in enumerate(wanted):
      if alias not in self.outputs:
        raise invalid(f"output tensor alias not found in signature: {shown(alias)} Outputs "
                      f"expected to be in the set {{{','.join(sorted(self.outputs))}}}.")
      if alias in wanted[:i]:
        raise invalid(f"duplicate output tensor alias: {shown(alias)}")
    return tuple(wanted)


def _names(names, most: int = 8) -> str:
  """Names a client sent, each cut (errors.shown), at most `most` of them."""
  names = sorted(names)
  listed = ",".join(shown(n) for n in names[:most])
  return listed + (f",... ({len(names) - most} more)" if len(names) > most else "")


class Servable:
  """One SavedModel version, loaded into its own graph and session."""

  def __init__(self, name: str, version: int, path: pathlib.Path):
    self.name, self.version, self.path = name, version, pathlib.Path(path)
    self.graph = tf.Graph()
    # No ConfigProto of our own: the context's (thread pools set with tf.config.threading).
    self.session = tf.compat.v1.Session(graph=self.graph)
    try:
      meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(self.path))
    except BaseException:
      self.session.close()
      raise
    self.signatures = {k: Signature(k, v) for k, v in meta.signature_def.items()
                       if not k.startswith("__")}
    self.uses_xla = any(f.attr["_XlaMustCompile"].b for f in meta.graph_def.library.function)
    self.batcher = None  # a Batcher over `run_session`, attached by the server's loader
    self._in_flight = 0
    self._idle = threading.Condition()
    self._closed = False

  # --- what a request runs --------------------------------------------------

  def signature(self, name: str) -> Signature:
    """The signature `name` ("" is serving_default); NOT_FOUND naming the ones there are."""
    name = name or "serving_default"
    signature = self.signatures.get(name)
    if signature is None:
      raise not_found(f"Serving signature name: \"{shown(name)}\" not found in signature def "
                      f"(model {self.name} version {self.version} has "
                      f"{', '.join(sorted(self.signatures))})")
    return signature

  def run(self, signature: Signature, inputs: dict[str, np.ndarray],
          outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Runs checked inputs: merged with other requests when a batcher is attached."""
    if self.batcher is not None:
      return self.batcher.run(signature, inputs, outputs)
    return self.run_session(signature, inputs, outputs)

  def run_session(self, signature: Signature, inputs: dict[str, np.ndarray],
                  outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """One session run of a signature: {output alias: array}."""
    feeds, fetches = signature.feeds, signature.fetches
    try:
      return self.session.run({k: fetches[k] for k in outputs},
                              feed_dict={feeds[k]: v for k, v in inputs.items()})
    except tf.errors.OpError as e:  # TensorFlow's codes are gRPC's
      message = e.message
      if contract.XLA_DISABLED in message:  # TF Serving's own words leave the fix unsaid
        message = contract.xla_disabled_help(f"model {self.name} version {self.version}")
      raise ServingError(code_of(e.error_code), message) from None

  def warmup(self) -> int:
    """Replays assets.extra/tf_serving_warmup_requests through `run`; returns the count.

    Warmup takes the path requests take (the batcher when one is attached); a
    failing warmup request fails the load.
    """
    count = 0
    for _, entry in contract.read_warmup(self.path):
      if entry.WhichOneof("log_type") != "predict_log":  # no such signatures here
        log.warning("%s: skipping warmup record of type %s (only predict_log is replayed)",
                    self.path / contract.WARMUP_PATH, entry.WhichOneof("log_type"))
        continue
      request = entry.predict_log.request
      signature = self.signature(request.model_spec.signature_name)
      inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
      signature.check_inputs(inputs)
      self.run(signature, inputs, signature.output_names(request.output_filter))
      count += 1
    return count

  # --- lifetime ----------------------------------------------------------------

  def acquire(self) -> None:
    with self._idle:
      self._in_flight += 1

  def release(self) -> None:
    with self._idle:
      self._in_flight -= 1
      if self._in_flight == 0:
        self._idle.notify_all()

  def close(self) -> None:
    """Waits for the requests in flight, then stops the batcher and frees the session."""
    with self._idle:
      while self._in_flight:
        self._idle.wait()
      if self._closed:
        return
      self._closed = True
    if self.batcher is not None:
      self.batcher.stop()
    self.session.close()
