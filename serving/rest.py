"""TF Serving's REST API over a `ServingCore`: JSON bodies to arrays, core calls, and back.

  GET  /v1/models/NAME[/versions/N | /labels/L]            model status
  GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   signatures
  POST /v1/models/NAME[/versions/N | /labels/L]:predict    {"instances": [...]}
                                                           → {"predictions": [...]}
                                                           {"inputs": ...}      → {"outputs": ...}
  GET  <prometheus path>                                   metrics (with --monitoring_config_file)

JSON and arrays translate in `serving.json_tensors`.  Errors answer
`{"error": "..."}` with the HTTP status TF Serving maps the gRPC code to,
http.server's own refusals (bad request lines, oversized headers, unknown
methods) included; a body shorter than its Content-Length is 400, one that
stalls 408 (`serving.errors` states the rule).

Slow clients cannot hold the server: a request must arrive whole (request
line, headers, body) within the REST timeout of its first byte, whatever it
trickles (a `Deadlines` thread cuts off the read and the client gets 408), and
it is read before it takes one of the slots that run models.  The listen
backlog is `RestServer.request_queue_size` (1024; socketserver's default is 5,
so bursts of connections waited on SYN retransmits).
"""

from __future__ import annotations

import heapq
import http.server
import json
import logging
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import zlib

import grpc
from tensorflow_serving.apis import model_pb2

from serving.core import ServingCore
from serving.errors import ServingError, http_status, invalid, shown
from serving.json_tensors import format_predict, message_json, parse_predict, read_json
from serving.metrics import CONTENT_TYPE

log = logging.getLogger("serving.rest")

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>/metadata|:predict|:classify|:regress)?/?$")
_INT64_MAX = 2 ** 63 - 1

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
        self._send_json(200, message_json(core.status(spec, "REST")))
      elif verb == "/metadata":
        self._send_json(200, message_json(core.metadata(spec, entrypoint="REST")))
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
