"""TF Serving's REST API over a `ServingCore`: JSON bodies to arrays, core calls, and back.

  GET  /v1/models/NAME[/versions/N | /labels/L]            model status
  GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   signatures
  POST /v1/models/NAME[/versions/N | /labels/L]:predict    {"instances": [...]}
                                                           → {"predictions": [...]}
                                                           {"inputs": ...}      → {"outputs": ...}
  GET  <prometheus path>                                   metrics (with --monitoring_config_file)

Strings travel as JSON strings (UTF-8) or `{"b64": "..."}`.  Output strings
are JSON strings, except for outputs whose name ends in `_bytes` and strings
that are not UTF-8, which are `{"b64": "..."}` (TF Serving writes such bytes
raw, which is not valid JSON).  Errors answer `{"error": "..."}` with the HTTP
status TF Serving maps the gRPC code to, http.server's own refusals (bad request
lines, oversized headers, unknown methods) included; a body shorter than its
Content-Length is 400, one that stalls 408 (`serving.errors` states the rule).

Slow clients cannot hold the server: a request must arrive whole (request
line, headers, body) within the REST timeout of its first byte, whatever it
trickles (a `Deadlines` thread cuts off the read and the client gets 408), and
it is read before it takes one of the slots that run models.  The listen
backlog is `RestServer.request_queue_size` (1024; socketserver's default is 5,
so bursts of connections waited on SYN retransmits).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import http.server
import json
import logging
import math
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import zlib

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import model_pb2

from serving.core import ServingCore
from serving.errors import ServingError, http_status, invalid, shown
from serving.metrics import CONTENT_TYPE

log = logging.getLogger("serving.rest")

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>/metadata|:predict|:classify|:regress)?/?$")
_INT64_MAX = 2 ** 63 - 1

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


def _message_json(message) -> dict:
  return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                    always_print_fields_with_no_presence=True)


# --- HTTP ----------------------------------------------------------------------------

class RestHandler(http.server.BaseHTTPRequestHandler):
  """One REST request; `self.server.core` does the work."""

  protocol_version = "HTTP/1.1"
  server_version = "tfhub-models-serving"
  # Headers and body go out in two writes; with Nagle's algorithm on, a keep-alive
  # client's delayed ACK held every answer back by about 40 ms.
  disable_nagle_algorithm = True

  def log_message(self, format, *args):  # http.server's name
    log.debug("%s %s", self.address_string(), format % args)

  def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
    self.send_response(status)
    if self.close_connection:
      self.send_header("Connection", "close")
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(body)

  def send_error(self, code, message=None, explain=None):
    """http.server's own refusals (request lines and headers it cannot parse, or too
    long; unknown methods) answered as every other error: `{"error": ...}`, not an
    HTML page; the connection is closed, as http.server does."""
    if self._late():   # what http.server could not parse was cut off by the deadline
      code, message = 408, self._late_message()
    short = self.responses.get(code, ("error",))[0]
    self.log_error("code %d, message %s", code, message or short)
    self.close_connection = True
    if not getattr(self, "command", None):  # no request line parsed: a status line anyway
      self.command, self.request_version = "", "HTTP/1.1"
    self._send(code, json.dumps({"error": message or short}).encode("utf-8"))

  def parse_request(self) -> bool:
    # A request line without an HTTP version is HTTP/0.9 to http.server, which then
    # waits for headers that such a client never sends: refuse it at once.
    words = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n").split()
    if len(words) == 2:
      self.requestline = " ".join(words)
      self.command, self.path, self.request_version = words[0], words[1], "HTTP/1.1"
      self.send_error(400, f"Malformed request line {self.requestline[:100]!r}: no HTTP "
                           "version (HTTP/0.9 is not supported)")
      return False
    return super().parse_request()

  def _send_json(self, status: int, doc) -> None:
    self._send(status, json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8"))

  def _error(self, error: ServingError) -> None:
    self._send_json(http_status(error.code), {"error": error.message})

  def handle_one_request(self) -> None:
    """One request, which must arrive whole within the deadline of its first byte
    (an idle keep-alive connection waits under the per-read timeout)."""
    self._deadline = None
    try:
      if not self.rfile.peek(1):   # the client closed an idle connection
        self.close_connection = True
        return
    except (TimeoutError, ConnectionError):
      self.close_connection = True
      return
    self._deadline = self.server.deadlines.arm(self.connection, self.timeout)
    try:
      super().handle_one_request()
    finally:
      self.server.deadlines.disarm(self._deadline)

  def _late(self) -> bool:
    deadline = getattr(self, "_deadline", None)
    return deadline is not None and deadline.expired

  def _late_message(self) -> str:
    return (f"the request did not arrive whole within {self.timeout:g} s of its first byte "
            "(the REST timeout)")

  def _handle(self) -> None:
    """Reads the request (outside the slots that run models), then answers it in one."""
    try:
      body = self._read_body(self.server.max_body_bytes)
    except TimeoutError:  # a client that stalls mid-body: its fault, and the end of it
      self.close_connection = True
      self._send_json(408, {"error": f"the request body did not arrive: nothing read for "
                                     f"{self.timeout:g} s"})
      return
    except ConnectionError:  # the client went away: nobody to answer
      self.close_connection = True
      return
    except ServingError as e:
      if not self._late():
        self._error(e)
        return
      body = b""
    if self._late():
      self.close_connection = True
      self._send_json(408, {"error": self._late_message()})
      return
    self.server.deadlines.disarm(self._deadline)   # read whole: the run is not timed here
    with self.server.requests:
      self._handle_request(self.command, body)

  # Every method TF Serving's routing sees; all but GET and POST are a malformed
  # request there (HEAD answers that status and its headers, without the body).
  # Methods not listed get http.server's 501, as JSON (send_error).
  do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_TRACE = _handle

  def _handle_request(self, method: str, body: bytes) -> None:
    core: ServingCore = self.server.core
    path = self.path.split("?", 1)[0]
    try:
      if method == "GET" and self.server.metrics_path and path == self.server.metrics_path:
        self._send(200, core.metrics.render(), CONTENT_TYPE)
        return
      if not path.startswith("/v1/"):
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {shown(path)} (the API is "
                           "under /v1/models/)")
      match = _MODEL_PATH.match(path)
      verb = match and (match["verb"] or "")
      if not match or (method, verb.startswith(":")) not in (("GET", False), ("POST", True)):
        raise invalid(f"Malformed request: {shown(method)} {shown(path)}")
      spec = model_pb2.ModelSpec(name=urllib.parse.unquote(match["name"]))
      if match["version"] is not None:
        # int() of thousands of digits hits Python's digit limit: the length first.
        if len(match["version"]) > 19 or int(match["version"]) > _INT64_MAX:
          raise invalid(f"Failed to convert version: {shown(match['version'])} to numeric.")
        spec.version.value = int(match["version"])
      if match["label"] is not None:
        spec.version_label = urllib.parse.unquote(match["label"])
      if verb == "":
        self._send_json(200, _message_json(core.status(spec, "REST")))
      elif verb == "/metadata":
        self._send_json(200, _message_json(core.metadata(spec, entrypoint="REST")))
      elif verb == ":predict":
        self._send_json(200, _predict(core, spec, body))
      else:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                           f"{verb[1:]} is not supported: the exported signatures are predict "
                           "signatures; use :predict")
    except ServingError as e:
      self._error(e)
    except Exception as e:  # a bug must not take the server down; say what it was
      log.exception("REST %s %s failed", method, path)
      self._error(ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"))

  def _read_body(self, limit: int) -> bytes:
    """The request body (Content-Length or chunked, gzip undone), at most `limit` bytes."""
    too_large = ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"request body larger than the limit of {limit} bytes")
    if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
      body = self._read_chunked(limit, too_large)
    else:
      length = self.headers.get("Content-Length")
      if length is None:
        return b""
      if not re.fullmatch(r"[0-9]{1,18}", length.strip()):
        self.close_connection = True
        raise invalid(f"Content-Length must be a non-negative number, got {length!r}")
      length = int(length)
      if length > limit:
        self.close_connection = True
        remaining = length if length <= 4 * limit else 0
        while remaining > 0:  # read it away, so the client sees the answer, not a reset
          chunk = self.rfile.read(min(remaining, 1 << 20))
          if not chunk:
            break
          remaining -= len(chunk)
        raise too_large
      body = self.rfile.read(length)
      if len(body) < length:  # the client closed its side early
        self.close_connection = True
        raise invalid(f"the request body ended after {len(body)} of its Content-Length "
                      f"{length} bytes")
    if "gzip" in self.headers.get("Content-Encoding", "").lower():
      inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
      try:
        body = inflater.decompress(body, limit + 1)
      except zlib.error as e:
        raise invalid(f"the gzip request body does not decompress: {e}") from None
      if len(body) > limit:
        raise too_large
    return body

  def _read_chunked(self, limit: int, too_large: ServingError) -> bytes:
    parts, size = [], 0
    while True:
      line = self.rfile.readline(1024).split(b";", 1)[0].strip()
      if not re.fullmatch(rb"[0-9a-fA-F]{1,15}", line):
        self.close_connection = True
        raise invalid(f"malformed chunk size {line[:20]!r} in a chunked body")
      length = int(line, 16)
      if length == 0:
        while self.rfile.readline(1024).strip():  # trailers
          pass
        return b"".join(parts)
      size += length
      if size > limit:
        self.close_connection = True
        raise too_large
      parts.append(self.rfile.read(length))
      if len(parts[-1]) < length:
        self.close_connection = True
        raise invalid(f"the chunked request body ended inside a chunk of {length} bytes")
      self.rfile.readline(8)  # the CRLF after the chunk


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


def _predict(core: ServingCore, spec: model_pb2.ModelSpec, body: bytes) -> dict:
  """A :predict body through the core, as the answer's JSON document."""
  doc = read_json(body)
  if not isinstance(doc, dict):
    raise invalid("the request body must be a JSON object with 'instances' or 'inputs'")
  signature_name = doc.get("signature_name", "")
  if not isinstance(signature_name, str):
    raise invalid("'signature_name' must be a string")
  spec.signature_name = signature_name

  def read_inputs(signature):
    try:
      return parse_predict(doc, signature.inputs)
    except RecursionError:
      raise invalid("an input is nested too deeply to be a tensor") from None

  _, outputs = core.predict(spec, read_inputs, (), "REST")
  return format_predict(outputs, row="instances" in doc)


class Deadline:
  """One request's: `expired` once the Deadlines thread has cut its read off."""

  __slots__ = ("at", "connection", "expired", "cancelled")

  def __init__(self, at: float, connection):
    self.at, self.connection = at, connection
    self.expired = self.cancelled = False

  def __lt__(self, other: Deadline) -> bool:
    return self.at < other.at


class Deadlines:
  """One thread that ends the reads of requests that did not arrive in time: it
  shuts the connection's reading side, so the blocked read returns at once and
  the handler can still answer 408 (TLS included: the SSL object is kept)."""

  def __init__(self):
    self._heap: list[Deadline] = []
    self._cond = threading.Condition()
    self._thread = threading.Thread(target=self._watch, name="rest-deadlines", daemon=True)
    self._thread.start()

  def arm(self, connection, seconds: float) -> Deadline:
    deadline = Deadline(time.monotonic() + seconds, connection)
    with self._cond:
      heapq.heappush(self._heap, deadline)
      if self._heap[0] is deadline:
        self._cond.notify()
    return deadline

  @staticmethod
  def disarm(deadline: Deadline | None) -> None:
    if deadline is not None:
      deadline.cancelled = True   # dropped from the heap when its time comes

  def _watch(self) -> None:
    while True:
      with self._cond:
        while not self._heap or self._heap[0].at > time.monotonic():
          self._cond.wait(self._heap[0].at - time.monotonic() if self._heap else None)
        deadline = heapq.heappop(self._heap)
        if deadline.cancelled:
          continue
        deadline.expired = True
      try:   # the plain socket's shutdown: SSLSocket.shutdown would drop TLS first
        socket.socket.shutdown(deadline.connection, socket.SHUT_RD)
      except OSError:   # already closed
        pass


class RestServer(http.server.ThreadingHTTPServer):
  """A thread per connection; at most `max_threads` requests run at once, and at most
  16 times as many connections are open (further ones wait to be accepted)."""
  daemon_threads = True
  request_queue_size = 1024   # the listen backlog

  def __init__(self, address, core: ServingCore, *, ssl_context=None, timeout: float = 30.0,
               max_threads: int = 16, max_body_bytes: int = 32 * 1024 * 1024,
               metrics_path: str | None = None):
    self.requests = threading.BoundedSemaphore(max(1, max_threads))
    self._slots = threading.BoundedSemaphore(16 * max(1, max_threads))
    self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    # A connection idle this long (reading a request) is closed.
    handler = type("Handler", (RestHandler,), {"timeout": timeout})
    super().__init__(address, handler)
    self.core = core
    self.deadlines = Deadlines()   # each request must arrive whole within `timeout`
    self.max_body_bytes = max_body_bytes
    self.metrics_path = metrics_path  # Prometheus metrics here, when set
    if ssl_context is not None:
      # The handshake runs on the handler's thread, at its first read.
      self.socket = ssl_context.wrap_socket(self.socket, server_side=True,
                                            do_handshake_on_connect=False)

  def process_request(self, request, client_address):
    self._slots.acquire()  # blocks the accept loop while every connection slot is taken
    try:
      super().process_request(request, client_address)
    except BaseException:
      self._slots.release()
      raise

  def process_request_thread(self, request, client_address):
    try:
      super().process_request_thread(request, client_address)
    finally:
      self._slots.release()

  def handle_error(self, request, client_address):
    error = sys.exc_info()[1]
    if isinstance(error, (ssl.SSLError, ConnectionError, TimeoutError)):
      # A plaintext client on the TLS port, or a peer that went away: no traceback.
      log.debug("REST connection from %s: %s", client_address[0], error)
      return
    super().handle_error(request, client_address)
