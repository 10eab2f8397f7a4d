"""The server under change and under TLS: hot swaps under load, half-copied and
corrupt versions, config-file reloads, and refusing plaintext.

Traffic goes to loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import datetime
import os
import shutil
import ssl
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from conftest import write_hf_checkpoint
from servers import ServerProcess, assert_same_fillers, wait_until
from serving import client as serving_client
from serving import protos
from serving.client import ServingClient
import tfhub_models
from tfhub_models import export

TEXTS = ["Hello <mask> world.", "<mask> is <mask>."]
AVAILABLE, END = 30, 50


@pytest.fixture(scope="module")
def exports(tmp_path_factory, sp_file, vocab_size):
  """Two versions with different weights, exported (no XLA) under a staging base."""
  staging = tmp_path_factory.mktemp("staging")
  work = tmp_path_factory.mktemp("hf")
  answers = {}
  for version in (1, 2):
    task = tfhub_models.load(write_hf_checkpoint(work / str(version), sp_file, vocab_size,
                                                seed=10 + version), sequence_length=32)
    export.export(task, staging, "xlmr", version, export.ExportOptions(
        top_k=3, jit_compile=False, warmup_batch_sizes=(1,)))
    answers[version] = task.fill_mask(TEXTS, top_k=3)
  return staging, answers


def copy_in(source, base, version):
  """Copies a version directory in the way exports arrive: hidden, then renamed."""
  hidden = base / f".incoming-{version}"
  shutil.copytree(source, hidden)
  os.rename(hidden, base / str(version))


class Traffic:
  """Clients sending fill-mask requests in a loop until stopped (or their bound)."""

  def __init__(self, target, clients=4, max_requests=5000, max_seconds=240):
    self.target, self.max_requests, self.max_seconds = target, max_requests, max_seconds
    self.stop = threading.Event()
    self.failures, self.answers = [], []  # answers: (thread, version, fillers)
    self.lock = threading.Lock()
    self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                    for i in range(clients)]
    for thread in self.threads:
      thread.start()

  def _run(self, index):
    channel = grpc.insecure_channel(self.target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "xlmr"
    request.inputs["text"].CopyFrom(serving_client._to_proto(
        np.array([t.encode() for t in TEXTS], dtype=object)))
    deadline = time.monotonic() + self.max_seconds
    for _ in range(self.max_requests):
      if self.stop.is_set() or time.monotonic() > deadline:
        break
      try:
        response = stub.Predict(request, timeout=30)
      except grpc.RpcError as e:
        with self.lock:
          self.failures.append(f"{e.code().name}: {e.details()}")
        continue
      out = {k: serving_client._from_proto(v) for k, v in response.outputs.items()}
      with self.lock:
        self.answers.append((index, response.model_spec.version.value,
                             serving_client.fill_mask_answers(out)))
    channel.close()

  def versions_seen(self):
    with self.lock:
      return {version for _, version, _ in self.answers}

  def finish(self):
    self.stop.set()
    for thread in self.threads:
      thread.join(timeout=60)


def status_of(target, model="xlmr"):
  """{version: (state, error)}; {} while the server does not know the model yet."""
  with ServingClient(target, model, timeout=30) as client:
    try:
      return {s.version: (s.state, s.status.error_message)
              for s in client.status().model_version_status}
    except grpc.RpcError as e:
      if e.code() != grpc.StatusCode.NOT_FOUND:
        raise
      return {}


def test_hot_swap_under_load_fails_no_request(exports, tmp_path):
  staging, answers = exports
  base = tmp_path / "models" / "xlmr"
  base.mkdir(parents=True)
  copy_in(staging / "xlmr" / "1", base, 1)
  server = ServerProcess(tmp_path / "server", "--model_name", "xlmr", "--model_base_path",
                         str(base), "--file_system_poll_wait_seconds", "1")
  traffic = Traffic(server.grpc)
  try:
    wait_until(lambda: len(traffic.answers) >= 20, 60, "traffic on version 1")
    copy_in(staging / "xlmr" / "2", base, 2)
    wait_until(lambda: status_of(server.grpc).get(1, (0,))[0] == END, 120,
               "version 2 in and version 1 unloaded")
    shutil.rmtree(base / "1")
    seen = len(traffic.answers)
    wait_until(lambda: len(traffic.answers) >= seen + 20, 60, "traffic on version 2")

    # A half-copied version 3 (no variables) is reported and skipped; 2 keeps serving.
    half = base / "3"
    shutil.copytree(staging / "xlmr" / "2", half, ignore=shutil.ignore_patterns("variables*"))
    wait_until(lambda: status_of(server.grpc).get(3, (0,))[0] == END, 60, "version 3 reported")
    state, error = status_of(server.grpc)[3]
    assert error, "a failed version carries its load error"
    seen = len(traffic.answers)
    wait_until(lambda: len(traffic.answers) >= seen + 20, 60, "traffic after the failed load")
    assert traffic.versions_seen() == {1, 2}

    # Once the copy completes (its files change), version 3 loads and takes over.
    shutil.copytree(staging / "xlmr" / "1" / "variables", half / "variables")
    shutil.copy(staging / "xlmr" / "1" / "saved_model.pb", half / "saved_model.pb")
    wait_until(lambda: status_of(server.grpc).get(3, (0,))[0] == AVAILABLE, 120,
               "the completed version 3")
    seen = len(traffic.answers)
    wait_until(lambda: len(traffic.answers) >= seen + 20, 60, "traffic on version 3")

    # The whole base path vanishing (an unmounted volume) changes nothing, as in TF Serving.
    shutil.rmtree(base)
    time.sleep(3)  # three polls
    seen = len(traffic.answers)
    wait_until(lambda: len(traffic.answers) >= seen + 20, 60, "traffic without a base path")
    assert status_of(server.grpc)[3][0] == AVAILABLE
  finally:
    traffic.finish()
    server.stop()
  assert traffic.failures == []
  by_thread = {}
  for thread, version, fillers in traffic.answers:
    by_thread.setdefault(thread, []).append(version)
    assert_same_fillers(fillers, answers[1 if version in (1, 3) else 2])
  for versions in by_thread.values():  # each client moves forward only: 1 → 2 → 3
    assert versions == sorted(versions)
  assert {1, 2, 3} <= traffic.versions_seen()


def test_config_file_changes_are_picked_up_and_bad_ones_ignored(exports, tmp_path):
  staging, answers = exports
  config = tmp_path / "models.config"

  def write(models):
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{staging}/xlmr" model_platform: "tensorflow" '
        f"model_version_policy {{ specific {{ versions: {version} }} }} }}\n"
        for name, version in models) + "}\n")

  write([("xlmr", 1)])
  server = ServerProcess(tmp_path / "server", "--model_config_file", str(config),
                         "--model_config_file_poll_wait_seconds", "1")
  try:
    with ServingClient(server.grpc, "xlmr") as client:
      assert_same_fillers(client.fill_mask(TEXTS), answers[1])
    write([("xlmr", 2), ("second", 1)])  # re-pin xlmr, add a model
    wait_until(lambda: status_of(server.grpc).get(2, (0,))[0] == AVAILABLE, 120,
               "the re-pinned version")
    wait_until(lambda: status_of(server.grpc, "second").get(1, (0,))[0] == AVAILABLE, 120,
               "the added model")
    with ServingClient(server.grpc, "second") as client:
      assert_same_fillers(client.fill_mask(TEXTS), answers[1])
    with ServingClient(server.grpc, "xlmr") as client:
      wait_until(lambda: status_of(server.grpc).get(1, (0,))[0] == END, 60, "version 1 dropped")
      assert_same_fillers(client.fill_mask(TEXTS), answers[2])
    config.write_text("model_config_list { config { this is not a config")
    time.sleep(3)  # three polls of a broken file
    with ServingClient(server.grpc, "xlmr") as client:
      assert_same_fillers(client.fill_mask(TEXTS), answers[2])
    assert server.process.poll() is None
    assert "ignoring" in server.output()
  finally:
    server.stop()


def certificate(common_name, issuer=None, ca=False):
  """(key PEM, certificate PEM, key) for 127.0.0.1 / localhost, self-signed or signed by
  `issuer` = (key, certificate) of a CA."""
  import ipaddress

  from cryptography import x509
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import NameOID

  key = ec.generate_private_key(ec.SECP256R1())
  name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
  issuer_key, issuer_certificate = issuer or (key, None)
  now = datetime.datetime.now(datetime.timezone.utc)
  certificate = (
      x509.CertificateBuilder().subject_name(name)
      .issuer_name(issuer_certificate.subject if issuer_certificate else name)
      .public_key(key.public_key()).serial_number(x509.random_serial_number())
      .not_valid_before(now - datetime.timedelta(minutes=5))
      .not_valid_after(now + datetime.timedelta(days=1))
      .add_extension(x509.SubjectAlternativeName([
          x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
          critical=False)
      .add_extension(x509.BasicConstraints(ca=ca or issuer is None, path_length=None),
                     critical=True)
      .sign(issuer_key, hashes.SHA256()))
  return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()),
          certificate.public_bytes(serialization.Encoding.PEM), (key, certificate))


def self_signed_certificate():
  key, cert, _ = certificate("localhost")
  return key, cert


def test_tls_serves_and_refuses_plaintext(exports, tmp_path):
  staging, answers = exports
  key, certificate = self_signed_certificate()
  ssl_config = tmp_path / "ssl.config"
  ssl_config.write_text(text_format.MessageToString(protos.SSLConfig(
      server_key=key.decode(), server_cert=certificate.decode())))
  server = ServerProcess(tmp_path / "server", "--model_name", "xlmr", "--model_base_path",
                         str(staging / "xlmr"), "--ssl_config_file", str(ssl_config), rest=True)
  try:
    with ServingClient(server.grpc, "xlmr", root_certificates=certificate) as client:
      assert_same_fillers(client.fill_mask(TEXTS), answers[2])
    with ServingClient(server.grpc, "xlmr", timeout=5, retries=0) as client:
      with pytest.raises(grpc.RpcError) as error:
        client.fill_mask(TEXTS)
      assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    context = ssl.create_default_context(cadata=certificate.decode())
    with urllib.request.urlopen(f"https://{server.rest}/v1/models/xlmr", context=context,
                                timeout=30) as response:
      assert response.status == 200
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
      urllib.request.urlopen(f"http://{server.rest}/v1/models/xlmr", timeout=10).read()
    assert server.process.poll() is None
  finally:
    server.stop()


def test_tls_with_client_verification_needs_a_client_certificate(exports, tmp_path):
  staging, answers = exports
  _, ca_pem, ca = certificate("test CA", ca=True)
  server_key, server_cert, _ = certificate("localhost", issuer=ca)
  client_key, client_cert, _ = certificate("client", issuer=ca)
  ssl_config = tmp_path / "ssl.config"
  ssl_config.write_text(text_format.MessageToString(protos.SSLConfig(
      server_key=server_key.decode(), server_cert=server_cert.decode(),
      custom_ca=ca_pem.decode(), client_verify=True)))
  server = ServerProcess(tmp_path / "server", "--model_name", "xlmr", "--model_base_path",
                         str(staging / "xlmr"), "--ssl_config_file", str(ssl_config))
  try:
    with ServingClient(server.grpc, "xlmr", root_certificates=ca_pem, private_key=client_key,
                       certificate_chain=client_cert) as client:
      assert_same_fillers(client.fill_mask(TEXTS), answers[2])
    with ServingClient(server.grpc, "xlmr", root_certificates=ca_pem, timeout=5,
                       retries=0) as client:
      with pytest.raises(grpc.RpcError) as error:
        client.fill_mask(TEXTS)
      assert error.value.code() == grpc.StatusCode.UNAVAILABLE
  finally:
    server.stop()
