"""TF Serving's REST JSON and arrays, both ways: a request body to a JSON
document (numbers past what a tensor holds kept unconverted), the "instances"
(row) and "inputs" (columnar) formats to arrays of the signature's dtypes, and
outputs back to "predictions" or "outputs".

Strings travel as JSON strings (UTF-8) or `{"b64": "..."}`.  Output strings
are JSON strings, except for outputs whose name ends in `_bytes` and strings
that are not UTF-8, which are `{"b64": "..."}` (TF Serving writes such bytes
raw, which is not valid JSON).  Every refusal is INVALID_ARGUMENT naming the
input and the value.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2

from serving.errors import invalid, shown

_INT_RANGES = {types_pb2.DT_INT8: np.int8, types_pb2.DT_INT16: np.int16,
               types_pb2.DT_INT32: np.int32, types_pb2.DT_INT64: np.int64,
               types_pb2.DT_UINT8: np.uint8, types_pb2.DT_UINT16: np.uint16,
               types_pb2.DT_UINT32: np.uint32, types_pb2.DT_UINT64: np.uint64}
_FLOATS = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64,
           types_pb2.DT_HALF: np.float16}


# --- JSON → tensors -------------------------------------------------------------------

def _shape_and_flat(value, name: str):
  """A nested JSON list as (shape, flat values); ragged lists are an error."""
  if not isinstance(value, list):
    return (), [value]
  if not value:
    return (0,), []
  parts = [_shape_and_flat(v, name) for v in value]
  shape = parts[0][0]
  if any(p[0] != shape for p in parts):
    raise invalid(f"input {name}: the JSON list is ragged (its rows have different lengths "
                  "or depths); a tensor must be rectangular")
  return (len(value),) + shape, [x for p in parts for x in p[1]]


def _string(value, name: str) -> bytes:
  if isinstance(value, str):
    return value.encode("utf-8", "surrogatepass")
  if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
    try:
      return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
      raise invalid(f"input {name}: {{\"b64\": ...}} does not hold valid base64") from None
  raise invalid(f"input {name} is a string tensor: expected a JSON string or "
                f"{{\"b64\": \"...\"}}, got {_describe(value)}")


class Unrepresentable:
  """A JSON number no tensor dtype holds: an integer of more than
  `_MAX_INTEGER_DIGITS` digits, or a literal beyond a double.  `read_json` keeps
  it in the document so that `to_array` can name the input it was sent for."""

  __slots__ = ("text",)

  def __init__(self, text: str):
    self.text = text

  def __str__(self) -> str:
    digits = len(self.text.lstrip("-"))
    if self.text.lstrip("-").isdigit() and digits > 40:
      return f"an integer of {digits} digits"
    return f"the number {self.text[:40]}{'...' if len(self.text) > 40 else ''}"


def _describe(value) -> str:
  """A JSON value for an error message: short, however large it is."""
  if isinstance(value, Unrepresentable):
    return str(value)
  if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
    return f"an integer of {len(str(value).lstrip('-'))} digits"
  try:
    return json.dumps(value, default=str)[:80]
  except ValueError:  # a circular or otherwise unprintable value
    return type(value).__name__


def to_array(value, name: str, dtype: int) -> np.ndarray:
  """A JSON value as an array of the signature input's dtype."""
  shape, flat = _shape_and_flat(value, name)
  if dtype == types_pb2.DT_STRING:
    array = np.empty(len(flat), dtype=object)
    array[:] = [_string(v, name) for v in flat]
    return array.reshape(shape)
  unrepresentable = next((v for v in flat if isinstance(v, Unrepresentable)), None)
  if unrepresentable is not None:
    raise invalid(f"input {name}: {unrepresentable} is out of range for "
                  f"{types_pb2.DataType.Name(dtype)}")
  if any(isinstance(v, (dict, list, str)) or v is None for v in flat):
    bad = next(v for v in flat if isinstance(v, (dict, list, str)) or v is None)
    raise invalid(f"input {name} expects {types_pb2.DataType.Name(dtype)} numbers, got "
                  f"{_describe(bad)}")
  if dtype == types_pb2.DT_BOOL:
    if not all(isinstance(v, bool) for v in flat):
      raise invalid(f"input {name} expects true/false values")
    return np.array(flat, dtype=bool).reshape(shape)
  if dtype in _INT_RANGES:
    kind = _INT_RANGES[dtype]
    info = np.iinfo(kind)
    for v in flat:
      if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise invalid(f"input {name} expects {types_pb2.DataType.Name(dtype)} integers, got "
                      f"{_describe(v)}")
      if not info.min <= v <= info.max:
        raise invalid(f"input {name}: {_describe(v)} is out of range for "
                      f"{types_pb2.DataType.Name(dtype)}")
    return np.array(flat, dtype=kind).reshape(shape)
  if dtype in _FLOATS:
    if any(isinstance(v, bool) for v in flat):
      raise invalid(f"input {name} expects numbers, got a boolean")
    kind = _FLOATS[dtype]
    largest = float(np.finfo(kind).max)
    values = []
    for v in flat:
      try:
        f = float(v)
      except OverflowError:  # an integer beyond a double
        f = math.inf
      sent_infinity = isinstance(v, float) and math.isinf(v)  # the Infinity literal
      if not sent_infinity and (math.isinf(f) or abs(f) > largest):
        raise invalid(f"input {name}: {_describe(v)} is out of range for "
                      f"{types_pb2.DataType.Name(dtype)}")
      values.append(f)
    return np.array(values, dtype=kind).reshape(shape)
  raise invalid(f"input {name} has dtype {types_pb2.DataType.Name(dtype)}, which the JSON "
                "API does not carry")


def parse_predict(body: dict, signature_inputs: dict) -> dict[str, np.ndarray]:
  """A predict body's inputs as {input: array} of the signature's dtypes.

  The answer takes the row format ('predictions') when the body has 'instances'.
  """
  if ("instances" in body) == ("inputs" in body):
    raise invalid("Missing 'inputs' or 'instances' key" if "inputs" not in body else
                  "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                  "keys exists")
  names = sorted(signature_inputs)
  if "instances" in body:
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
      raise invalid("'instances' must be a non-empty JSON list, one element per row")
    named = all(isinstance(i, dict) and "b64" not in i for i in instances)
    if named:
      keys = set(instances[0])
      if any(set(i) != keys for i in instances):
        raise invalid("every instance must name the same inputs")
      values = {k: [i[k] for i in instances] for k in keys}
    elif len(names) == 1:
      values = {names[0]: instances}
    else:
      raise invalid(f"the signature takes several inputs ({', '.join(names)}): each instance "
                    "must be a JSON object naming them")
  else:
    inputs = body["inputs"]
    if isinstance(inputs, dict) and "b64" not in inputs:
      values = inputs
    elif len(names) == 1:
      values = {names[0]: inputs}
    else:
      raise invalid(f"the signature takes several inputs ({', '.join(names)}): 'inputs' must "
                    "be a JSON object naming them")
  arrays = {}
  for key, value in values.items():
    if key not in signature_inputs:
      raise invalid(f"input(s) not in the signature: {shown(key)} (it takes "
                    f"{', '.join(names)})")
    arrays[key] = to_array(value, key, signature_inputs[key].dtype)
  return arrays


# --- tensors → JSON -------------------------------------------------------------------

def _json_strings(value: np.ndarray, as_b64: bool):
  def one(b: bytes):
    if not as_b64:
      try:
        return b.decode("utf-8")
      except UnicodeDecodeError:
        pass
    return {"b64": base64.b64encode(b).decode("ascii")}
  return np.vectorize(one, otypes=[object])(value).tolist() if value.size else value.tolist()


def to_json(value: np.ndarray, name: str):
  if value.dtype == object or value.dtype.kind == "S":
    return _json_strings(value, name.endswith("_bytes"))
  return value.tolist()


def format_predict(outputs: dict[str, np.ndarray], row: bool) -> dict:
  if not row:
    if len(outputs) == 1:
      (name, value), = outputs.items()
      return {"outputs": to_json(value, name)}
    return {"outputs": {k: to_json(v, k) for k, v in outputs.items()}}
  sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
  if len(set(sizes.values())) != 1 or None in sizes.values():
    raise invalid("the row ('instances') format needs every output to have the same 0th "
                  f"dimension, got {sizes}; use the columnar 'inputs' format")
  converted = {k: to_json(v, k) for k, v in outputs.items()}
  if len(converted) == 1:
    return {"predictions": next(iter(converted.values()))}
  batch = next(iter(sizes.values()))
  return {"predictions": [{k: converted[k][i] for k in converted} for i in range(batch)]}


def message_json(message) -> dict:
  return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                    always_print_fields_with_no_presence=True)


# JSON integers longer than this are not converted (Python's own limit is 4300
# digits, and no tensor dtype holds one of more than 20): they stay Unrepresentable.
_MAX_INTEGER_DIGITS = 400


def _json_integer(text: str):
  return Unrepresentable(text) if len(text) > _MAX_INTEGER_DIGITS else int(text)


def _json_float(text: str):
  value = float(text)
  # A literal too large for a double (Infinity, -Infinity and NaN are literals of their own).
  return Unrepresentable(text) if math.isinf(value) else value


def read_json(body: bytes):
  """A request body as a JSON document; INVALID_ARGUMENT saying why it is not one."""
  try:
    return json.loads(body.decode("utf-8"), parse_int=_json_integer,
                      parse_float=_json_float)
  except UnicodeDecodeError as e:
    raise invalid(f"the request body is not valid UTF-8 (byte {e.start})") from None
  except json.JSONDecodeError as e:
    raise invalid(f"JSON Parse error: {e.msg} at line {e.lineno} column {e.colno}") from None
  except RecursionError:
    raise invalid("JSON Parse error: the document is nested too deeply") from None
  except ValueError as e:  # the decoder's other refusals (numbers it cannot convert)
    raise invalid(f"JSON Parse error: {e}") from None
