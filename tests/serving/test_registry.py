"""Version bookkeeping of the registry with a fake loader injected (no TensorFlow runs):
config reloads racing polls, failed versions, files completing during a load, warmup."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import registry
from serving.errors import ServingError

AVAILABLE, END = 30, 50


class FakeServable:
  """What the registry uses of a `Servable`: warmup and lifetime."""

  def __init__(self, name, version, path, warmup_error=None):
    self.name, self.version, self.path = name, version, path
    self.warmup_error = warmup_error
    self.closed, self.warmed_up = False, False

  def warmup(self):
    if self.warmup_error:
      raise self.warmup_error
    self.warmed_up = True
    return 1

  def acquire(self):
    pass

  def release(self):
    pass

  def close(self):
    self.closed = True


class FakeLoader:
  """The registry's loader: 'loads' in `delay` seconds, fails on a version directory that
  holds a `corrupt` file, calls `during_load(version)` while loading (files changing
  meanwhile), and keeps every servable it returned in `opened`."""

  def __init__(self):
    self.delay = 0.0
    self.during_load = None
    self.warmup_error = None
    self.opened = []

  def __call__(self, name, version, path):
    time.sleep(self.delay)
    broken = (path / "corrupt").exists()  # what the loader read
    if self.during_load:
      self.during_load(version)
    if broken:
      raise ValueError(f"corrupt {name}/{version}")
    servable = FakeServable(name, version, path, self.warmup_error)
    self.opened.append(servable)
    return servable


@pytest.fixture
def fake():
  return FakeLoader()


def version(base, name, number, corrupt=False):
  path = base / name / str(number)
  path.mkdir(parents=True, exist_ok=True)
  (path / "saved_model.pb").write_text("x")
  if corrupt:
    (path / "corrupt").write_text("x")
  return path


def config(*models):
  text = "model_config_list {" + "".join(
      f' config {{ name: "{name}" base_path: "{base}" {policy} }}' for name, base, policy in models
  ) + " }"
  return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def spec(name):
  return type("Spec", (), {"name": name, "version_label": "",
                           "HasField": lambda self, field: False})()


def test_a_config_reload_during_a_poll_leaks_no_loaded_model(fake, tmp_path):
  version(tmp_path, "a", 1)
  version(tmp_path, "b", 1)
  r = registry.Registry(fake, warmup=False)
  r.set_config(config(("a", tmp_path / "a", "")))
  fake.delay = 0.5
  poll = threading.Thread(target=r.poll)
  poll.start()
  time.sleep(0.1)  # the poll is loading a/1
  r.set_config(config(("b", tmp_path / "b", "")))  # waits for that poll, then drops a
  poll.join()
  r.poll()
  assert r.available() == {"b": [1]}
  assert [(s.name, s.closed) for s in fake.opened] == [("a", True), ("b", False)]


def test_a_failing_new_version_keeps_the_previous_one_serving(fake, tmp_path):
  version(tmp_path, "m", 1)
  r = registry.Registry(fake, warmup=False)
  r.set_config(config(("m", tmp_path / "m", "model_version_policy { specific { versions: 1 } }")))
  r.poll()
  r.set_config(config(("m", tmp_path / "m", "model_version_policy { specific { versions: 2 } }")))
  version(tmp_path, "m", 2, corrupt=True)
  for _ in range(3):
    r.poll()
    assert r.available() == {"m": [1]}
  states = {s.version: s.state for s in r.status(spec("m")).model_version_status}
  assert states == {2: END, 1: AVAILABLE}

  # latest: the only newer version is corrupt and the old one's files are gone.
  r.set_config(config(("m", tmp_path / "m", "")))
  shutil.rmtree(tmp_path / "m" / "1")
  for _ in range(2):
    r.poll()
    assert r.available() == {"m": [1]}  # still answering from memory
  (tmp_path / "m" / "2" / "corrupt").unlink()  # the version is fixed
  r.poll()
  assert r.available() == {"m": [2]}


def test_files_completed_during_a_failing_load_are_tried_again(fake, tmp_path):
  path = version(tmp_path, "m", 1, corrupt=True)

  def complete_the_copy(version):  # the copy finishes while the loader fails on it
    (path / "corrupt").unlink()
    (path / "variables.data").write_text("the rest of the copy")
    fake.during_load = None

  fake.during_load = complete_the_copy
  r = registry.Registry(fake, warmup=False)
  r.set_config(config(("m", tmp_path / "m", "")))
  r.poll()
  assert r.available() == {"m": []}
  r.poll()  # nothing changed since: the files differ from what the failed load saw
  assert r.available() == {"m": [1]}


def test_a_failed_version_is_not_reloaded_while_its_files_stay_the_same(fake, tmp_path):
  version(tmp_path, "m", 1, corrupt=True)
  attempts = []
  fake.during_load = lambda version: attempts.append(version)
  r = registry.Registry(fake, warmup=False)
  r.set_config(config(("m", tmp_path / "m", "")))
  for _ in range(3):
    r.poll()
  assert attempts == [1]
  error = r.status(spec("m")).model_version_status[0].status.error_message
  assert "corrupt m/1" in error


def test_version_directories_are_ascii_numbers_zero_included(fake, tmp_path):
  for name in ("0", "²", "v2", "1a"):
    (tmp_path / "m" / name).mkdir(parents=True)
  r = registry.Registry(fake, warmup=False)
  r.set_config(config(("m", tmp_path / "m", "model_version_policy { all {} }")))
  r.poll()
  assert r.available() == {"m": [0]}


def test_a_missing_base_path_is_reported_and_unloads_nothing(fake, tmp_path):
  version(tmp_path, "m", 1)
  r = registry.Registry(fake, warmup=False)
  r.set_config(config(("m", tmp_path / "m", ""), ("ghost", tmp_path / "ghost", "")))
  r.poll()
  shutil.rmtree(tmp_path / "m")
  r.poll()
  assert r.available() == {"m": [1], "ghost": []}
  assert "does not exist" in r.problem("ghost") and "does not exist" in r.problem("m")
  with pytest.raises(ServingError, match="does not exist"):
    r.status(spec("ghost"))


def test_the_loaders_servable_is_warmed_up_and_a_failing_warmup_fails_the_load(fake, tmp_path):
  version(tmp_path, "m", 1)
  r = registry.Registry(fake)
  r.set_config(config(("m", tmp_path / "m", "")))
  r.poll()
  assert r.available() == {"m": [1]} and fake.opened[0].warmed_up
  with r.acquire(spec("m")) as servable:
    assert servable is fake.opened[0]

  version(tmp_path, "m", 2)
  fake.warmup_error = ValueError("warmup request 1 names input texts")
  r.poll()
  assert r.available() == {"m": [1]}  # version 1 keeps serving
  assert fake.opened[1].closed  # the version that failed its warmup is freed
  status = {s.version: s for s in r.status(spec("m")).model_version_status}
  assert status[2].state == END and "texts" in status[2].status.error_message


def test_version_policies_pick_among_the_versions_on_disk(fake, tmp_path):
  for number in (1, 2, 3):
    version(tmp_path, "m", number)
  r = registry.Registry(fake, warmup=False)
  for policy, served in (("", [3]), ("model_version_policy { latest { num_versions: 2 } }", [2, 3]),
                         ("model_version_policy { all {} }", [1, 2, 3]),
                         ("model_version_policy { specific { versions: 1 versions: 9 } }", [1])):
    r.set_config(config(("m", tmp_path / "m", policy)))
    r.poll()
    assert r.available() == {"m": served}, policy


def test_version_names_are_read_as_tf_serving_reads_them(fake, tmp_path, caplog):
  """Leading zeros parse to the number and load from their own directory; a name
  beyond int64 is ignored (logged once) and never becomes "latest"; a failed
  version stops mattering once its directory is gone."""
  version(tmp_path, "m", 3)
  (tmp_path / "m" / "0007").mkdir()
  (tmp_path / "m" / "0007" / "saved_model.pb").write_text("x")
  huge = tmp_path / "m" / ("9" * 25)
  huge.mkdir()
  r = registry.Registry(fake, warmup=False)
  r.set_config(config(("m", tmp_path / "m", "")))
  with caplog.at_level("WARNING", logger="serving.registry"):
    r.poll()
    r.poll()
  assert r.available() == {"m": [7]}
  assert fake.opened[-1].path == tmp_path / "m" / "0007"
  assert caplog.text.count("not a version number") == 1 and "99999" in caplog.text
  # A newer version that fails keeps 7 serving; removed, it leaves no trace.
  version(tmp_path, "m", 8, corrupt=True)
  r.poll()
  assert r.available() == {"m": [7]}
  shutil.rmtree(tmp_path / "m" / "8")
  r.poll()
  assert r.available() == {"m": [7]} and "version 8" not in r.problem("m")
  statuses = r.status(spec("m")).model_version_status
  assert [s.version for s in statuses] == [7]


@pytest.mark.parametrize("name,expected", [
    ("0", 0), ("7", 7), ("0007", 7), (str(2 ** 63 - 1), 2 ** 63 - 1), (str(2 ** 63), None),
    ("9" * 5000, None), ("-1", None), ("+1", None), (" 1", None), ("1e3", None), ("²", None),
    ("٣", None), ("", None)])
def test_version_of(name, expected):
  from serving.config import version_of
  assert version_of(name) == expected
