"""Property tests of the two translations every request passes through: a REST body
(JSON) to tensors, and a gRPC TensorProto to an array.  For any input, either the
tensor the input means, or a client error (INVALID_ARGUMENT) naming the input;
never another exception, which the server would answer as its own fault.
"""

from __future__ import annotations

import base64
import json
import math
from typing import NamedTuple

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving import json_tensors, tensors
from serving.errors import ServingError

EXAMPLES = settings(max_examples=2500, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class _Input(NamedTuple):  # what parse_predict reads of a signature input
  dtype: int


JSON_DTYPES = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64,
               types_pb2.DT_HALF: np.float16, types_pb2.DT_INT8: np.int8,
               types_pb2.DT_INT16: np.int16, types_pb2.DT_INT32: np.int32,
               types_pb2.DT_INT64: np.int64, types_pb2.DT_UINT8: np.uint8,
               types_pb2.DT_UINT16: np.uint16, types_pb2.DT_UINT32: np.uint32,
               types_pb2.DT_UINT64: np.uint64, types_pb2.DT_BOOL: np.bool_,
               types_pb2.DT_STRING: object}


def _client_error(error: ServingError, name: str | None) -> None:
  assert error.code == grpc.StatusCode.INVALID_ARGUMENT, (error.code, error.message)
  if name is not None:
    assert name in error.message, error.message


def _parse(body: bytes, dtypes: dict[str, int]) -> dict[str, np.ndarray]:
  return json_tensors.parse_predict(json_tensors.read_json(body),
                                    {k: _Input(v) for k, v in dtypes.items()})


def _same(got: np.ndarray, want: np.ndarray) -> None:
  assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.shape)
  if want.dtype == object:
    assert got.tolist() == want.tolist()
  else:
    np.testing.assert_array_equal(got, want)  # NaN equals NaN here


# --- JSON → tensors ---------------------------------------------------------------------

def _json_value(array: np.ndarray):
  """An array as a client writes it in JSON: nested lists; bytes as UTF-8 text when
  they are, else {"b64": ...}."""
  if array.dtype == object:
    def one(b):
      try:
        return b.decode("utf-8")
      except UnicodeDecodeError:
        return {"b64": base64.b64encode(b).decode()}
    return np.vectorize(one, otypes=[object])(array).tolist() if array.ndim else one(array.item())
  return array.tolist()


@st.composite
def _tensors(draw):
  dtype = draw(st.sampled_from(sorted(JSON_DTYPES)))
  shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4))
  if dtype == types_pb2.DT_STRING:
    elements = st.binary(max_size=12)
    flat = draw(st.lists(elements, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return dtype, array.reshape(shape)
  return dtype, draw(hnp.arrays(JSON_DTYPES[dtype], shape))


@EXAMPLES
@given(_tensors(), st.sampled_from(["columnar", "columnar_named", "row", "row_named"]))
def test_json_of_a_tensor_gives_that_tensor(tensor, layout):
  dtype, array = tensor
  value = _json_value(array)
  if layout.startswith("row"):
    assume(array.ndim >= 1)
    rows = value if layout == "row" else [{"x": v, "y": "s"} for v in value]
    doc = {"instances": rows}
  else:
    doc = {"inputs": value if layout == "columnar" else {"x": value, "y": ["s"] * 1}}
  dtypes = {"x": dtype} if layout in ("columnar", "row") else {"x": dtype,
                                                                "y": types_pb2.DT_STRING}
  got = _parse(json.dumps(doc).encode(), dtypes)
  _same(got["x"], array)


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.builds(lambda s: {"b64": s}, st.text(alphabet="A-Za-z0-9+/=*", max_size=8)))
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=24)


def _leaves(value):
  if isinstance(value, list):
    return [x for v in value for x in _leaves(v)]
  return [value]


@EXAMPLES
@given(_JSON, st.sampled_from(sorted(JSON_DTYPES)))
def test_any_json_is_a_tensor_or_an_error_naming_the_input(value, dtype):
  try:
    got = _parse(json.dumps({"inputs": {"x": value}}).encode(), {"x": dtype})
  except ServingError as e:
    _client_error(e, "x")
    event("refused")
    return
  event("decoded")
  array = got["x"]
  assert array.dtype == np.dtype(JSON_DTYPES[dtype])
  leaves = _leaves(value)
  assert array.size == len(leaves)
  for got_value, sent in zip(array.ravel().tolist(), leaves):
    if dtype == types_pb2.DT_STRING:
      want = (base64.b64decode(sent["b64"]) if isinstance(sent, dict)
              else sent.encode("utf-8", "surrogatepass"))
      assert got_value == want
    elif dtype == types_pb2.DT_BOOL:
      assert isinstance(sent, bool) and got_value == sent
    elif np.issubdtype(array.dtype, np.integer):
      assert not isinstance(sent, bool) and got_value == sent
    else:
      assert not isinstance(sent, bool)
      want = float(np.array(sent, dtype=array.dtype))
      assert got_value == want or (math.isnan(got_value) and math.isnan(want))


_NUMBER_LITERALS = st.builds(
    lambda sign, digits, fraction, exponent: sign + digits + fraction + exponent,
    st.sampled_from(["", "-"]),
    st.one_of(st.from_regex(r"\A(0|[1-9][0-9]{0,30})\Z"),
              st.integers(1, 6000).map(lambda n: "9" * n)),
    st.one_of(st.just(""), st.from_regex(r"\A\.[0-9]{1,20}\Z")),
    st.one_of(st.just(""), st.from_regex(r"\A[eE][-+]?[0-9]{1,4}\Z")))


def _number_means(literal: str, kind: np.dtype):
  """What a JSON number literal sent for a `kind` input is: its value, or None when
  that input cannot hold it (not an integer for an integer input, or beyond the
  dtype's range; beyond a double is beyond every dtype)."""
  integer = literal.lstrip("-").isdigit()
  if np.issubdtype(kind, np.integer):
    if integer:
      value = int(literal) if len(literal) < 1000 else None
    else:
      f = float(literal)
      value = int(f) if math.isfinite(f) and f.is_integer() else None
    info = np.iinfo(kind)
    return value if value is not None and info.min <= value <= info.max else None
  f = float(literal)
  return None if math.isinf(f) or abs(f) > float(np.finfo(kind).max) else f


@EXAMPLES
@given(_NUMBER_LITERALS, st.sampled_from(sorted(set(JSON_DTYPES) - {types_pb2.DT_STRING,
                                                                     types_pb2.DT_BOOL})))
def test_numbers_of_every_size_and_kind(literal, dtype):
  body = ('{"inputs": {"x": [' + literal + ']}}').encode()
  kind = np.dtype(JSON_DTYPES[dtype])
  want = _number_means(literal, kind)
  try:
    got = _parse(body, {"x": dtype})["x"]
  except ServingError as e:
    _client_error(e, "x")
    assert want is None, (literal, want, e.message)
    event("refused")
    return
  event("decoded")
  assert want is not None, (literal, got)
  assert got.shape == (1,) and got.dtype == kind
  assert got[0] == np.array(want, dtype=kind), (literal, got[0], want)


def test_numbers_beyond_pythons_digit_limit_name_their_input():
  body = b'{"inputs": {"token_ids": [[' + b"1" * 5000 + b"]]}}"
  with pytest.raises(ServingError) as error:
    _parse(body, {"token_ids": types_pb2.DT_INT32})
  _client_error(error.value, "token_ids")
  assert "5000 digits" in error.value.message


# --- TensorProto → numpy ----------------------------------------------------------------

_ROUND_TRIP = [tf.float32, tf.float64, tf.float16, tf.bfloat16, tf.int8, tf.int16, tf.int32,
               tf.int64, tf.uint8, tf.uint16, tf.uint32, tf.uint64, tf.bool, tf.complex64,
               tf.complex128, tf.string]


@st.composite
def _arrays(draw):
  dtype = draw(st.sampled_from(_ROUND_TRIP))
  shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
  if dtype == tf.string:
    flat = draw(st.lists(st.binary(max_size=10), min_size=int(np.prod(shape)),
                         max_size=int(np.prod(shape))))
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)
  if dtype == tf.bfloat16:
    bits = draw(hnp.arrays(np.uint16, shape))
    return bits.view(tf.bfloat16.as_numpy_dtype)
  return draw(hnp.arrays(dtype.as_numpy_dtype, shape))


@EXAMPLES
@given(_arrays(), st.sampled_from(["tensor_content", "typed fields"]))
def test_a_tensor_proto_gives_its_array(array, encoding):
  proto = (tf.make_tensor_proto(array) if encoding == "tensor_content" or array.dtype == object
           else tensors.to_proto(array))
  got = tensors.from_proto("x", proto, 1 << 20)
  if array.dtype == tf.bfloat16.as_numpy_dtype:
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got.view(np.uint16), array.view(np.uint16))
  else:
    _same(got, array)


_TYPED_FIELDS = {  # field → values of what it holds
    "float_val": st.floats(width=32), "double_val": st.floats(),
    "int_val": st.integers(-2 ** 31, 2 ** 31 - 1), "int64_val": st.integers(-2 ** 63, 2 ** 63 - 1),
    "bool_val": st.booleans(), "string_val": st.binary(max_size=6),
    "half_val": st.integers(0, 2 ** 16 - 1), "scomplex_val": st.floats(width=32),
    "dcomplex_val": st.floats(), "uint32_val": st.integers(0, 2 ** 32 - 1),
    "uint64_val": st.integers(0, 2 ** 64 - 1)}
# The field TensorFlow reads for each dtype, where one field holds one value.
_FIELD_OF = {types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
             types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val",
             types_pb2.DT_INT8: "int_val", types_pb2.DT_UINT8: "int_val",
             types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val",
             types_pb2.DT_BOOL: "bool_val", types_pb2.DT_UINT32: "uint32_val",
             types_pb2.DT_UINT64: "uint64_val"}
MAX_BYTES = 4096


@st.composite
def _protos(draw):
  proto = tensor_pb2.TensorProto()
  proto.dtype = draw(st.one_of(st.sampled_from(sorted(_FIELD_OF) + [types_pb2.DT_STRING]),
                               st.sampled_from(sorted(types_pb2.DataType.values())),
                               st.integers(-2 ** 31, 2 ** 31 - 1)))
  dims = draw(st.lists(st.one_of(st.integers(-2, 6), st.just(2 ** 40)), max_size=4))
  proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d)
                                for d in dims)
  proto.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
  if draw(st.booleans()):
    proto.tensor_content = draw(st.binary(max_size=80))
  for field in draw(st.sets(st.sampled_from(sorted(_TYPED_FIELDS)), max_size=3)):
    getattr(proto, field).extend(draw(st.lists(_TYPED_FIELDS[field], max_size=10)))
  return proto


@EXAMPLES
@given(_protos())
def test_any_tensor_proto_is_its_array_or_an_error_naming_the_input(proto):
  try:
    got = tensors.from_proto("x", proto, MAX_BYTES)
  except ServingError as e:
    _client_error(e, "x")
    event("refused")
    return
  event("decoded")
  dims = [d.size for d in proto.tensor_shape.dim]
  dtype = tf.dtypes.as_dtype(proto.dtype)
  assert not proto.tensor_shape.unknown_rank and got.shape == tuple(dims)
  assert got.dtype == np.dtype(dtype.as_numpy_dtype)
  assert got.nbytes <= MAX_BYTES or dtype == tf.string
  if dtype == tf.string:  # the values given, then the last repeated; none is b""
    values = list(proto.string_val) or [b""]
    assert got.ravel().tolist() == (values + [values[-1]] * got.size)[:got.size]
    return
  if proto.tensor_content:
    assert got.tobytes() == proto.tensor_content
  elif proto.dtype in _FIELD_OF and got.size:
    # TensorFlow's decoding: the values given, then the last one repeated; none is zeros.
    values = list(getattr(proto, _FIELD_OF[proto.dtype]))
    flat = got.ravel()
    if not values:
      assert not flat.any()
    else:
      want = np.array(values[:flat.size] + [values[-1]] * (flat.size - len(values)))
      np.testing.assert_array_equal(flat, want.astype(flat.dtype))


def _memory(array: np.ndarray) -> int:
  """What a decoded array holds: its buffer, and each distinct object it points to."""
  if array.dtype != object:
    return array.nbytes
  import sys
  return array.nbytes + sum(sys.getsizeof(o) for o in {id(o): o for o in array.ravel()}.values())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([types_pb2.DT_STRING, types_pb2.DT_INT32, types_pb2.DT_FLOAT,
                        types_pb2.DT_INT64]),
       st.lists(st.integers(1, 10 ** 5), min_size=1, max_size=3),
       st.integers(0, 40))
def test_decoded_size_is_bounded_by_the_request_size(dtype, dims, values):
  """Whatever shape a TensorProto declares, decoding it takes at most
  BROADCAST_FACTOR times its own size plus a fixed BROADCAST_FIXED_BYTES beyond the
  values it carries (the last value repeated is one object, not one per row), or
  it is refused as the client's error."""
  proto = tensor_pb2.TensorProto(dtype=dtype)
  proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims)
  if dtype == types_pb2.DT_STRING:
    proto.string_val.extend(b"word %d" % i for i in range(values))
  else:
    getattr(proto, _FIELD_OF[dtype]).extend(range(values))
  sent = sum(len(v) + 40 for v in proto.string_val) + 8 * values   # the values' own cost
  try:
    got = tensors.from_proto("x", proto, 256 * 2 ** 20)   # the server's request limit
  except ServingError as e:
    _client_error(e, "x")
    event("refused")
    return
  event("decoded")
  bound = tensors.BROADCAST_FACTOR * proto.ByteSize() + tensors.BROADCAST_FIXED_BYTES + sent
  assert _memory(got) <= bound, (_memory(got), bound, dims, values)
