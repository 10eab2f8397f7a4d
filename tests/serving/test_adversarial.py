"""The front ends tried as an attacker or a careless client would: raw-socket framing,
oversized and malformed input, stalled and vanished clients, malformed TensorProtos,
and exports killed with SIGKILL while the server serves their model.

Every case runs against one real server process on loopback (REST read timeout 2 s,
so a stall costs 2 s, not 30), and after each the server must still answer a good
request correctly and must not have logged a traceback: input from a client is a
4xx / INVALID_ARGUMENT answer, never a fault of ours (serving/errors.py).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from conftest import write_hf_checkpoint
from servers import ROOT, ServerProcess, assert_same_fillers, wait_until
from serving.client import ServingClient
import tfhub_models
from tfhub_models import export

TEXTS = ["Hello <mask> world.", "<mask> is <mask>."]
REST_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def adversary(tmp_path_factory, sp_file, vocab_size):
  """A fill-mask export (no XLA) served over gRPC and REST, and its in-process answers."""
  base = tmp_path_factory.mktemp("models")
  checkpoint = write_hf_checkpoint(tmp_path_factory.mktemp("hf"), sp_file, vocab_size, seed=3)
  task = tfhub_models.load(checkpoint, sequence_length=32)
  export.export(task, base, "xlmr", 1, export.ExportOptions(
      top_k=3, jit_compile=False, warmup_batch_sizes=(1,)))
  server = ServerProcess(tmp_path_factory.mktemp("server"), "--model_name", "xlmr",
                         "--model_base_path", str(base / "xlmr"),
                         "--file_system_poll_wait_seconds", "1",
                         "--rest_api_timeout_in_ms", str(REST_TIMEOUT_S * 1000), rest=True)
  state = {"server": server, "base": base, "checkpoint": checkpoint,
           "want": task.fill_mask(TEXTS, top_k=3)}
  yield state
  server.stop()


@pytest.fixture
def unharmed(adversary):
  """After the case: no traceback in the server's log, the process alive, and a good
  request over each front end answered as in process."""
  server = adversary["server"]
  logged = len(server.output())
  yield adversary
  assert server.process.poll() is None, server.output()[-3000:]
  with ServingClient(server.grpc, "xlmr", timeout=60) as client:
    assert_same_fillers(client.fill_mask(TEXTS), adversary["want"])
  status, answer = _http(server.rest, b"POST /v1/models/xlmr:predict HTTP/1.1\r\n"
                         b"Content-Type: application/json\r\n",
                         json.dumps({"instances": TEXTS}).encode())
  assert status == 200 and [a["num_masks"] for a in answer["predictions"]] == [1, 2]
  assert [[ids[0] for ids in a["top_k_ids"][:a["num_masks"]]] for a in answer["predictions"]] \
      == [[fillers[0]["token_id"] for fillers in text] for text in adversary["want"]]
  new = server.output()[logged:]
  assert "Traceback" not in new and "INTERNAL" not in new, new[-3000:]


# --- raw HTTP ---------------------------------------------------------------------------

def _connect(address: str) -> socket.socket:
  host, port = address.rsplit(":", 1)
  return socket.create_connection((host, int(port)), timeout=REST_TIMEOUT_S + 10)


def _read_answer(sock: socket.socket) -> tuple[int, dict, bytes]:
  """(status, headers, body) of one HTTP answer; the body by its Content-Length."""
  data = b""
  while b"\r\n\r\n" not in data:
    chunk = sock.recv(65536)
    if not chunk:
      raise ConnectionError(f"the server closed the connection after {data[:200]!r}")
    data += chunk
  head, body = data.split(b"\r\n\r\n", 1)
  lines = head.decode("iso-8859-1").split("\r\n")
  status = int(lines[0].split()[1])
  headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
  length = int(headers.get("content-length", 0))
  while len(body) < length:
    chunk = sock.recv(65536)
    if not chunk:
      break
    body += chunk
  return status, headers, body[:length]


def _http(address: str, head: bytes, body: bytes = b"") -> tuple[int, dict]:
  """Sends a request (its request line and headers in `head`; Content-Length added
  from `body`) and returns (status, JSON body)."""
  with _connect(address) as sock:
    sock.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    status, _, answer = _read_answer(sock)
  return status, json.loads(answer)


def _json_error(status: int, headers: dict, body: bytes) -> str:
  assert headers.get("content-type") == "application/json", (status, headers, body[:200])
  return json.loads(body)["error"]


def test_an_integer_of_thousands_of_digits_is_a_client_error(unharmed):
  rest = unharmed["server"].rest
  digits = b"7" * 5000
  status, answer = _http(rest, b"POST /v1/models/xlmr:predict HTTP/1.1\r\n",
                         b'{"instances": [' + digits + b"]}")
  assert status == 400 and "5000 digits" in answer["error"] and "text" in answer["error"]
  status, answer = _http(rest, b"POST /v1/models/xlmr:predict HTTP/1.1\r\n",
                         b'{"signature_name": "logits", "inputs": {"token_ids": [[' + digits
                         + b']], "padding_mask": [[1]], "mask_positions": [[0]]}}')
  assert status == 400 and "token_ids" in answer["error"] and "5000 digits" in answer["error"]
  # Within Python's limit but beyond every dtype, and a float literal beyond a double.
  status, answer = _http(rest, b"POST /v1/models/xlmr:predict HTTP/1.1\r\n",
                         b'{"signature_name": "logits", "inputs": {"token_ids": [[' + b"9" * 300
                         + b']], "padding_mask": [[1]], "mask_positions": [[0]]}}')
  assert status == 400 and "token_ids" in answer["error"] and "range" in answer["error"]
  status, answer = _http(rest, b"POST /v1/models/xlmr:predict HTTP/1.1\r\n",
                         b'{"instances": [1e999]}')
  assert status == 400 and "text" in answer["error"] and "1e999" in answer["error"], answer


def test_a_body_shorter_than_its_content_length_is_not_run(unharmed):
  with _connect(unharmed["server"].rest) as sock:
    body = json.dumps({"instances": TEXTS}).encode()
    sock.sendall(b"POST /v1/models/xlmr:predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
                 % (len(body) + 40) + body)
    sock.shutdown(socket.SHUT_WR)  # the client is done sending, 40 bytes short
    status, headers, answer = _read_answer(sock)
  assert status == 400, answer
  assert f"after {len(body)} of its Content-Length {len(body) + 40}" in _json_error(
      status, headers, answer)


def test_a_client_that_stalls_mid_body_gets_408(unharmed):
  with _connect(unharmed["server"].rest) as sock:
    sock.sendall(b"POST /v1/models/xlmr:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n"
                 b'{"instances": ')
    started = time.monotonic()
    status, headers, answer = _read_answer(sock)
    waited = time.monotonic() - started
    assert sock.recv(1) == b""  # and the connection is closed after it
  assert status == 408 and "did not arrive" in _json_error(status, headers, answer)
  assert waited < REST_TIMEOUT_S + 5, waited


def test_a_chunked_body_that_ends_inside_a_chunk_or_lies_about_sizes(unharmed):
  rest = unharmed["server"].rest
  for chunks, words in [(b"40\r\n" + b'{"instances": ["a"]}', "inside a chunk"),
                        (b"-5\r\n", "chunk size"), (b"+5\r\nabcde\r\n0\r\n\r\n", "chunk size")]:
    with _connect(rest) as sock:
      sock.sendall(b"POST /v1/models/xlmr:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                   b"\r\n" + chunks)
      sock.shutdown(socket.SHUT_WR)
      status, headers, answer = _read_answer(sock)
    assert status == 400 and words in _json_error(status, headers, answer), (chunks, answer)


@pytest.mark.parametrize("method", ["PATCH", "OPTIONS", "TRACE", "FROB"])
def test_every_method_gets_a_json_answer(unharmed, method):
  with _connect(unharmed["server"].rest) as sock:
    sock.sendall(f"{method} /v1/models/xlmr HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode())
    status, headers, answer = _read_answer(sock)
  error = _json_error(status, headers, answer)
  if method == "FROB":  # not an HTTP method we know: Not Implemented
    assert status == 501 and "FROB" in error
  else:  # TF Serving's routing: a method that is not GET or POST is a malformed request
    assert status == 400 and f"Malformed request: {method}" in error


def test_head_gets_the_status_and_headers_without_a_body(unharmed):
  with _connect(unharmed["server"].rest) as sock:
    sock.sendall(b"HEAD /v1/models/xlmr HTTP/1.1\r\n\r\n"
                 b"GET /v1/models/xlmr HTTP/1.1\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
      data += chunk
  head, after = data.split(b"\r\n\r\n", 1)
  assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head, head
  # No body followed the HEAD answer's headers: the next bytes are the GET's answer.
  assert after.startswith(b"HTTP/1.1 200"), after[:200]


@pytest.mark.parametrize("what,request_bytes,status", [
    ("oversized header", b"GET /v1/models/xlmr HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
     431),
    ("too many headers", b"GET /v1/models/xlmr HTTP/1.1\r\n"
     + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431),
    ("oversized request line", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
    ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 binary junk\r\n\r\n", 400),
    ("bad version", b"GET /v1/models/xlmr HTTP/7.x\r\n\r\n", 400),
    ("no HTTP version", b"GET /v1/models/xlmr\r\n", 400),
    ("no HTTP version, POST", b"POST /v1/models/xlmr:predict\r\n", 400),
])
def test_what_http_server_refuses_is_answered_in_json_at_once(unharmed, what, request_bytes,
                                                              status):
  with _connect(unharmed["server"].rest) as sock:
    started = time.monotonic()
    sock.sendall(request_bytes)
    got, headers, answer = _read_answer(sock)
    waited = time.monotonic() - started
  assert got == status, (what, got, answer[:300])
  assert _json_error(got, headers, answer)
  assert waited < REST_TIMEOUT_S, (what, waited)  # answered, not left to the idle timeout


# --- gRPC TensorProtos ------------------------------------------------------------------

@pytest.mark.parametrize("dtype,words", [
    (9999, ["text", "9999"]), (0, ["text", "DT_INVALID"]), (20, ["text", "DT_RESOURCE"]),
    (21, ["text", "DT_VARIANT"]), (107, ["text", "DT_STRING_REF"]), (-3, ["text", "-3"]),
])
def test_a_tensor_proto_of_an_unusable_dtype_is_invalid_argument(unharmed, dtype, words):
  channel = grpc.insecure_channel(unharmed["server"].grpc)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "xlmr"
  request.inputs["text"].dtype = dtype
  request.inputs["text"].tensor_shape.dim.add(size=1)
  request.inputs["text"].string_val.append(b"Hello <mask>.")
  with pytest.raises(grpc.RpcError) as error:
    stub.Predict(request, timeout=60)
  channel.close()
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
  for word in words:
    assert word in error.value.details(), (word, error.value.details())


def test_tensor_content_of_the_wrong_length_is_invalid_argument(unharmed):
  channel = grpc.insecure_channel(unharmed["server"].grpc)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "xlmr"
  request.model_spec.signature_name = "logits"
  for name in ("token_ids", "padding_mask", "mask_positions"):
    request.inputs[name].dtype = types_pb2.DT_INT32
    request.inputs[name].tensor_shape.dim.add(size=1)
    request.inputs[name].tensor_shape.dim.add(size=2)
    request.inputs[name].tensor_content = b"\x00" * 7  # 8 bytes expected
  with pytest.raises(grpc.RpcError) as error:
    stub.Predict(request, timeout=60)
  channel.close()
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
  assert "mask_positions" in error.value.details() or "token_ids" in error.value.details() \
      or "padding_mask" in error.value.details()


# --- exports killed with SIGKILL --------------------------------------------------------

def _staging(model_dir):
  return sorted(p for p in model_dir.iterdir() if p.name.startswith(".tmp-"))


def _export_command(checkpoint, base):
  command = [sys.executable, str(ROOT / "scripts" / "export.py"), "--checkpoint", str(checkpoint),
             "--output", str(base), "--name", "xlmr", "--no-xla", "--sequence-length", "32",
             "--warmup-batch-sizes", "1", "--top-k", "3"]
  return command


def _kill_when(checkpoint, base, model_dir, reached, what):
  """Starts an export and kills it with SIGKILL once `reached(staging dirs)` holds."""
  process = subprocess.Popen(_export_command(checkpoint, base), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    wait_until(lambda: reached(_staging(model_dir)) or process.poll() is not None, 300,
               f"the export to reach {what}", interval=0.01)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  assert process.returncode == -signal.SIGKILL, (what, process.stderr.read()[-2000:])


def test_exports_killed_at_several_points_leave_nothing_the_next_one_does_not_clean(unharmed):
  server, base = unharmed["server"], unharmed["base"]
  model_dir = base / "xlmr"
  points = {
      "its staging directory": lambda dirs: bool(dirs),
      "writing its variables": lambda dirs: any((d / "variables").is_dir() for d in dirs),
      "its saved_model.pb written": lambda dirs: any((d / "saved_model.pb").is_file()
                                                     for d in dirs),
  }
  left = set()
  for what, reached in points.items():
    before = set(_staging(model_dir))
    _kill_when(unharmed["checkpoint"], base, model_dir,
               lambda d, reached=reached, before=before: reached(set(d) - before), what)
    new = set(_staging(model_dir)) - before
    assert len(new) == 1, (what, new)  # the killed export left its own staging behind
    left |= new  # (and may have removed the earlier ones, as the next export must)
  left = sorted(p for p in left if p.exists())
  assert left
  assert sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) == ["1"]
  # The server saw no new version and keeps serving (the `unharmed` checks, after).
  with ServingClient(server.grpc, "xlmr", timeout=60) as client:
    assert [v.version for v in client.status().model_version_status] == [1]

  done = subprocess.run(_export_command(unharmed["checkpoint"], base), cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip().endswith("/xlmr/2"), done.stdout
  for path in left:
    assert f"removed {path}" in done.stderr, done.stderr[-3000:]
  assert _staging(model_dir) == []
  assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]
  assert (model_dir / "2" / "saved_model.pb").is_file()

  def serves_two():
    with ServingClient(server.grpc, "xlmr", timeout=60) as client:
      return [v.version for v in client.status().model_version_status
              if v.state == v.AVAILABLE] == [2]
  wait_until(serves_two, 120, "the server to serve version 2")


def test_a_live_exports_staging_is_never_removed(tmp_path):
  """Another export's staging directory, locked by a live process, survives a new export;
  the same directory once its process is gone (lock released) is removed."""
  from tfhub_models.export import versioned

  model_dir = tmp_path / "m"
  model_dir.mkdir()
  staging = model_dir / ".tmp-1-1-abc"
  staging.mkdir()
  (staging / "saved_model.pb").write_bytes(b"partial")
  holder = subprocess.Popen([sys.executable, "-c", (
      "import fcntl, os, sys, time\n"
      f"fd = os.open({str(staging)!r}, os.O_RDONLY)\n"
      "fcntl.flock(fd, fcntl.LOCK_EX)\n"
      "print('locked', flush=True)\n"
      "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    later = time.time() + 10
    assert versioned.remove_stale_staging(model_dir, later) == []
    assert staging.is_dir()
  finally:
    holder.kill()
    holder.wait()
  # Unlocked now, but changed just now: inside the grace period, kept.
  assert versioned.remove_stale_staging(model_dir, time.time()) == [] and staging.is_dir()
  assert versioned.remove_stale_staging(model_dir, time.time() + 10) == [staging]
  assert not staging.exists()


# --- second probe: echoed values, undecodable bytes, declared sizes, slow clients ----------

def test_a_version_of_thousands_of_digits_is_a_client_error(unharmed):
  digits = b"9" * 5000
  status, answer = _http(unharmed["server"].rest,
                         b"POST /v1/models/xlmr/versions/" + digits + b":predict HTTP/1.1\r\n",
                         json.dumps({"instances": TEXTS}).encode())
  assert status == 400 and "Failed to convert version" in answer["error"]
  assert len(answer["error"]) < 300 and "more characters" in answer["error"]


@pytest.mark.parametrize("field", ["name", "signature_name", "version_label", "output_filter"])
def test_long_names_are_not_echoed_whole(unharmed, field):
  """A name of 100 KB is answered NOT_FOUND / INVALID_ARGUMENT with a short message
  (echoed whole, it outgrew gRPC's metadata limit: RESOURCE_EXHAUSTED "Stream removed")."""
  channel = grpc.insecure_channel(unharmed["server"].grpc)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "xlmr"
  request.inputs["text"].CopyFrom(_strings([b"Hello <mask>."]))
  long = "\u00e9" * 100_000        # two bytes each in UTF-8, six once percent-encoded
  if field == "output_filter":
    request.output_filter.append(long)
  else:
    setattr(request.model_spec, field, long)
  with pytest.raises(grpc.RpcError) as error:
    stub.Predict(request, timeout=60)
  channel.close()
  expected = {"name": grpc.StatusCode.NOT_FOUND, "signature_name": grpc.StatusCode.NOT_FOUND,
              "version_label": grpc.StatusCode.NOT_FOUND,
              "output_filter": grpc.StatusCode.INVALID_ARGUMENT}[field]
  assert error.value.code() == expected, (error.value.code(), error.value.details()[:200])
  assert len(error.value.details()) < 1000 and "more characters" in error.value.details()


def _strings(values):
  from tensorflow.core.framework import tensor_pb2
  proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
  proto.tensor_shape.dim.add(size=len(values))
  proto.string_val.extend(values)
  return proto


@pytest.mark.parametrize("method", ["/tensorflow.serving.PredictionService/Predict",
                                    "/tensorflow.serving.PredictionService/GetModelMetadata",
                                    "/tensorflow.serving.ModelService/GetModelStatus"])
def test_bytes_that_are_not_the_request_message_are_invalid_argument(unharmed, method):
  channel = grpc.insecure_channel(unharmed["server"].grpc)
  call = channel.unary_unary(method, request_serializer=lambda b: b,
                             response_deserializer=lambda b: b)
  for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08" + b"\xff" * 11):
    with pytest.raises(grpc.RpcError) as error:
      call(garbage, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert "is not a valid" in error.value.details()
  channel.close()


def test_a_few_bytes_cannot_declare_millions_of_rows(unharmed):
  """A 21-byte string TensorProto declaring 50 million rows is refused before it is
  decoded (decoded, it took about a gigabyte of Python objects)."""
  server = unharmed["server"]
  before = server.rss_bytes()
  channel = grpc.insecure_channel(server.grpc)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "xlmr"
  request.inputs["text"].CopyFrom(_strings([b"Hello <mask>."]))
  request.inputs["text"].tensor_shape.dim[0].size = 50_000_000
  started = time.monotonic()
  with pytest.raises(grpc.RpcError) as error:
    stub.Predict(request, timeout=60)
  channel.close()
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "50000000" in error.value.details() and "carries 1" in error.value.details()
  assert time.monotonic() - started < 5
  assert server.rss_bytes() - before < 50 * 2 ** 20


def test_trickling_clients_cannot_starve_a_good_request(unharmed):
  """Twelve clients sending a byte at a time (each byte in time for the per-read
  timeout) hold no slot that runs models and are cut off at the REST timeout with
  408; a good request meanwhile is answered at once."""
  rest = unharmed["server"].rest
  request = (b"POST /v1/models/xlmr:predict HTTP/1.1\r\nContent-Length: 40\r\n\r\n"
             + b'{"instances": ["a <mask>."]}' + b" " * 12)
  tricklers = [_connect(rest) for _ in range(12)]
  answers = {}

  def trickle(index, sock):
    try:
      for byte in request:
        sock.sendall(bytes([byte]))
        time.sleep(0.25)          # well within the 2 s per-read timeout
    except OSError:               # cut off: what is wanted
      pass
    try:
      answers[index] = _read_answer(sock)
    except (OSError, ConnectionError) as e:
      answers[index] = e

  import threading
  threads = [threading.Thread(target=trickle, args=(i, s)) for i, s in enumerate(tricklers)]
  for thread in threads:
    thread.start()
  time.sleep(1.0)
  started = time.monotonic()
  status, answer = _http(rest, b"POST /v1/models/xlmr:predict HTTP/1.1\r\n",
                         json.dumps({"instances": TEXTS}).encode())
  assert status == 200 and time.monotonic() - started < 1.5, time.monotonic() - started
  for thread in threads:
    thread.join(timeout=REST_TIMEOUT_S + 30)
  for sock in tricklers:
    sock.close()
  for index in range(12):
    got = answers[index]
    assert not isinstance(got, Exception), got
    status, headers, body = got
    assert status == 408 and "did not arrive whole" in _json_error(status, headers, body)


def test_a_burst_of_connections_is_accepted_without_syn_retries(unharmed):
  """64 connections at once are all accepted promptly (a listen backlog of 5 made
  some wait 1 to 3 s for SYN retransmits)."""
  from concurrent import futures
  host, port = unharmed["server"].rest.rsplit(":", 1)

  def connect():
    started = time.monotonic()
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock, time.monotonic() - started

  with futures.ThreadPoolExecutor(64) as pool:
    made = list(pool.map(lambda _: connect(), range(64)))
  for sock, _ in made:
    sock.close()
  slowest = max(seconds for _, seconds in made)
  assert slowest < 0.9, slowest      # a SYN retransmit waits 1 s
