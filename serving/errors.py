"""Errors answered with the gRPC status code TF Serving would use, and their HTTP status.

Every layer raises `ServingError`; the gRPC front end aborts with its code, the
REST front end answers `{"error": message}` with `http_status(code)`.

The rule: what a client sends never produces a 5xx, INTERNAL or UNKNOWN.  Bad
input (bytes, JSON, TensorProtos, paths, framing, a stalled or vanished client)
is a 4xx / INVALID_ARGUMENT-family answer naming what is wrong, raised where it
is found.  INTERNAL means a fault of ours: `core._Counted` (and the REST front
end for its own framing code) turns an unexpected exception into it and logs it
once, with its traceback.  A model's own failure on valid input keeps the code
TensorFlow gave it (`code_of`).

What a client sent is echoed only through `shown` (a name, label or number
cut to a few dozen characters, saying how much was left out), and no message
is longer than `MAX_MESSAGE_BYTES` in UTF-8: gRPC carries the message in a
header, percent-encoded (up to 3 times longer), and one past its metadata limit
(8 to 16 KB) turns the answer into RESOURCE_EXHAUSTED "Stream removed".
"""

from __future__ import annotations

import grpc

# TF Serving's mapping of gRPC codes to HTTP statuses (REST answers).
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401,
}
# TensorFlow's error codes (tf.errors.OpError.error_code) are gRPC's numbers.
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


MAX_MESSAGE_BYTES = 2000
SHOWN_CHARS = 64


def shown(value, limit: int = SHOWN_CHARS) -> str:
  """A client's value (a name, label, number) for an error message: as it is when
  short, else its first `limit` characters and how many more there were."""
  text = value if isinstance(value, str) else str(value)
  if len(text) <= limit:
    return text
  return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _bounded(message: str) -> str:
  """message cut to MAX_MESSAGE_BYTES of UTF-8, saying how much was left out."""
  if len(message.encode("utf-8", "replace")) <= MAX_MESSAGE_BYTES:
    return message
  kept = message.encode("utf-8", "replace")[:MAX_MESSAGE_BYTES - 60].decode("utf-8", "ignore")
  return f"{kept}... ({len(message) - len(kept)} more characters)"


class ServingError(Exception):
  """An error answered with the gRPC status code TF Serving would use; its message
  is cut to MAX_MESSAGE_BYTES."""

  def __init__(self, code: grpc.StatusCode, message: str):
    message = _bounded(message)
    super().__init__(message)
    self.code = code
    self.message = message


def not_found(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.NOT_FOUND, message)


def invalid(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def http_status(code: grpc.StatusCode) -> int:
  """The HTTP status TF Serving's REST API answers for a gRPC code."""
  return _HTTP_STATUS.get(code, 500)


def code_of(number: int) -> grpc.StatusCode:
  """The gRPC code of a TensorFlow error code (INTERNAL for an unknown one)."""
  return _BY_NUMBER.get(number, grpc.StatusCode.INTERNAL)
