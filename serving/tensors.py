"""TensorProto ↔ numpy, as TF Serving reads and writes them.

`to_proto` fills the typed value fields (`float_val`, `int_val`, `string_val`,
...), as TF Serving answers by default (not `tensor_content`), so clients that
read `response.outputs[k].float_val` work; it is also several times faster
than `tf.make_tensor_proto`.  `from_proto` checks a request tensor's declared
size before decoding it, so a few bytes cannot ask for gigabytes: a tensor
that carries fewer values than its shape holds (TensorFlow repeats the last
one) may expand to at most `BROADCAST_FACTOR` times the proto's own size plus
`BROADCAST_FIXED_BYTES`, and a repeated string is one object, not one a row.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.errors import invalid

# numpy dtype → (DataType, typed field)
_FIELDS = {
    np.dtype(np.float32): (types_pb2.DT_FLOAT, "float_val"),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, "double_val"),
    np.dtype(np.int32): (types_pb2.DT_INT32, "int_val"),
    np.dtype(np.int16): (types_pb2.DT_INT16, "int_val"),
    np.dtype(np.int8): (types_pb2.DT_INT8, "int_val"),
    np.dtype(np.uint8): (types_pb2.DT_UINT8, "int_val"),
    np.dtype(np.uint16): (types_pb2.DT_UINT16, "int_val"),
    np.dtype(np.int64): (types_pb2.DT_INT64, "int64_val"),
    np.dtype(np.uint32): (types_pb2.DT_UINT32, "uint32_val"),
    np.dtype(np.uint64): (types_pb2.DT_UINT64, "uint64_val"),
    np.dtype(np.bool_): (types_pb2.DT_BOOL, "bool_val"),
}


def to_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
  value = np.asarray(value)
  proto = tensor_pb2.TensorProto()
  proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d)
                               for d in value.shape)
  if value.dtype == object or value.dtype.kind in "SU":
    proto.dtype = types_pb2.DT_STRING
    proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8")
                            for v in value.ravel().tolist())
    return proto
  if value.dtype not in _FIELDS:  # rare dtypes: TensorFlow's own conversion
    return tf.make_tensor_proto(value)
  proto.dtype, field = _FIELDS[value.dtype]
  getattr(proto, field).extend(value.ravel().tolist())
  return proto


# DataType values a request tensor can carry: the enum's, but DT_INVALID, the
# handles (DT_RESOURCE, DT_VARIANT) and the reference types (*_REF), which are
# never values.
_VALUE_DTYPES = frozenset(v for v in types_pb2.DataType.values()
                          if v not in (types_pb2.DT_INVALID, types_pb2.DT_RESOURCE,
                                       types_pb2.DT_VARIANT) and v < 100)


BROADCAST_FACTOR = 64
BROADCAST_FIXED_BYTES = 1 << 20
# The TensorProto fields that carry values (all repeated), tensor_content aside.
_VALUE_FIELDS = tuple(f.name for f in tensor_pb2.TensorProto.DESCRIPTOR.fields
                      if f.is_repeated) + ("float8_val",)   # float8_val: one byte a value


def _size(dtype: int) -> int:
  if dtype == types_pb2.DT_STRING:
    return 2  # the least a string_val entry costs on the wire
  return tf.dtypes.as_dtype(dtype).size


def _values_sent(proto: tensor_pb2.TensorProto) -> int:
  """How many values a TensorProto carries (complex ones count their two parts)."""
  if proto.tensor_content and proto.dtype != types_pb2.DT_STRING:
    return len(proto.tensor_content) // max(tf.dtypes.as_dtype(proto.dtype).size, 1)
  return sum(len(getattr(proto, field)) for field in _VALUE_FIELDS)


def _strings(proto: tensor_pb2.TensorProto, dims: list, elements: int) -> np.ndarray:
  """A string tensor; the last value repeated (one object) when fewer are sent."""
  values = list(proto.string_val)
  if len(values) > elements:
    raise ValueError(f"{len(values)} values for {elements} elements")
  array = np.empty(elements, dtype=object)
  array[:len(values)] = values
  array[len(values):] = values[-1] if values else b""
  return array.reshape(dims)


def dtype_label(dtype: int) -> str:
  """A DataType's name, or the number an unknown one was sent as."""
  try:
    return types_pb2.DataType.Name(dtype)
  except ValueError:
    return f"unknown DataType {dtype}"


def from_proto(name: str, proto: tensor_pb2.TensorProto, max_bytes: int) -> np.ndarray:
  """A request input as an array of the proto's dtype and shape, decoded as
  TensorFlow decodes it (typed fields shorter than the shape repeat their last
  value); INVALID_ARGUMENT naming `name` when it cannot be one."""
  if proto.dtype not in _VALUE_DTYPES:
    raise invalid(f"input {name} has dtype {dtype_label(proto.dtype)} (enum value "
                  f"{proto.dtype}), which is not a tensor value type a request can carry")
  dims = [d.size for d in proto.tensor_shape.dim]
  if proto.tensor_shape.unknown_rank or any(d < 0 for d in dims):
    raise invalid(f"input {name} has no complete shape: {dims}")
  elements = int(np.prod(dims, dtype=np.float64)) if dims else 1
  if elements * _size(proto.dtype) > max_bytes:
    raise invalid(f"input {name} of shape {dims} would take more than {max_bytes} bytes "
                  "(the request size limit) once decoded")
  sent = _values_sent(proto)
  if elements > sent:   # the last value repeated: bounded by what was sent
    item = 8 if proto.dtype == types_pb2.DT_STRING else _size(proto.dtype)
    bound = BROADCAST_FACTOR * proto.ByteSize() + BROADCAST_FIXED_BYTES
    if elements * item > bound:
      raise invalid(f"input {name} declares shape {dims} ({elements} values) but carries "
                    f"{sent}: repeating the last to fill it would take {elements * item} "
                    f"bytes, more than a tensor of {proto.ByteSize()} bytes may expand to "
                    f"({bound}); send the values")
  try:
    if proto.dtype == types_pb2.DT_STRING and not proto.tensor_content:
      # No values: TensorFlow's default, the empty string (make_ndarray would give a str).
      return _strings(proto, dims, elements)
    array = tf.make_ndarray(proto)
  except Exception as e:  # any failure to decode is the proto's
    raise invalid(f"input {name} is not a valid {dtype_label(proto.dtype)} TensorProto of "
                  f"shape {dims}: {type(e).__name__}: {e}") from None
  if array.shape != tuple(dims):
    raise invalid(f"input {name}: its values make shape {list(array.shape)}, not the "
                  f"declared {dims}")
  return array
