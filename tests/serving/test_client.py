"""The client's retry, deadline and argument rules, on fake stubs (no server)."""

from __future__ import annotations

import time

import grpc
import pytest

from serving.client import ServingClient


class FakeError(grpc.RpcError):
  def __init__(self, code):
    self._code = code

  def code(self):
    return self._code

  def details(self):
    return self._code.name


class Scripted:
  """A stub method answering from a script of errors and results."""

  def __init__(self, *script):
    self.script = list(script)
    self.timeouts = []

  def __call__(self, request, timeout):
    self.timeouts.append(timeout)
    step = self.script.pop(0)
    if isinstance(step, grpc.StatusCode):
      raise FakeError(step)
    return step


@pytest.fixture
def client():
  with ServingClient("127.0.0.1:1", "m", timeout=5.0, retries=3, backoff=0.01) as c:
    yield c


def test_unavailable_is_retried_with_back_off(client):
  method = Scripted(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, "answer")
  started = time.monotonic()
  assert client._call(method, None) == "answer"
  assert len(method.timeouts) == 3
  assert time.monotonic() - started >= 0.01 * 0.5 + 0.02 * 0.5  # two pauses, jittered
  assert all(t <= 5.0 for t in method.timeouts)  # one deadline for all attempts
  assert method.timeouts == sorted(method.timeouts, reverse=True)


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                  grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL])
def test_other_errors_are_not_retried(client, code):
  method = Scripted(code, "never reached")
  with pytest.raises(grpc.RpcError) as error:
    client._call(method, None)
  assert error.value.code() == code and len(method.timeouts) == 1


def test_retries_stop_at_the_limit(client):
  method = Scripted(*[grpc.StatusCode.UNAVAILABLE] * 5)
  with pytest.raises(grpc.RpcError) as error:
    client._call(method, None)
  assert error.value.code() == grpc.StatusCode.UNAVAILABLE and len(method.timeouts) == 4


def test_retries_stop_at_the_deadline():
  with ServingClient("127.0.0.1:1", "m", timeout=0.3, retries=50, backoff=0.1) as client:
    method = Scripted(*[grpc.StatusCode.UNAVAILABLE] * 51)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError):
      client._call(method, None)
  assert time.monotonic() - started < 1.0 and len(method.timeouts) < 10


def test_arguments_are_checked():
  with pytest.raises(ValueError, match="version or a label"):
    ServingClient("127.0.0.1:1", "m", version=1, label="stable")
  with pytest.raises(ValueError, match="timeout"):
    ServingClient("127.0.0.1:1", "m", timeout=0)
  with ServingClient("127.0.0.1:1", "m") as client:
    with pytest.raises(TypeError, match="list of texts"):
      client.fill_mask("one string")
    with pytest.raises(ValueError, match="text_pairs"):
      client.detect_replaced(["a", "b"], ["c"])


def test_an_unreachable_server_fails_within_the_deadline():
  with ServingClient("127.0.0.1:1", "m", timeout=1.0, retries=2, backoff=0.05) as client:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
      client.status()
  assert error.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
  assert time.monotonic() - started < 5.0
