"""Package-wide promises: no Keras in the shipped packages, one TensorFlow minor everywhere."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def test_no_keras_in_shipped_packages():
  sources = list((ROOT / "tfhub_models").rglob("*.py")) + list((ROOT / "serving").rglob("*.py"))
  assert sources
  for path in sources:
    text = path.read_text()
    imports = re.findall(r"^\s*(?:import|from)\s+(keras\w*|tf_keras)\b", text, re.MULTILINE)
    assert not imports and "tf.keras" not in text, f"{path.relative_to(ROOT)} uses Keras"
  # TensorFlow itself imports the keras package when it is installed; what our
  # packages add on top of tensorflow and tensorflow_text must be nothing.
  probe = ("import sys, tensorflow, tensorflow_text\n"
           "keras = lambda: {m for m in sys.modules if m.split('.')[0] in "
           "('keras', 'tf_keras', 'keras_hub')}\n"
           "before = keras()\n"
           "import tfhub_models, tfhub_models.export, tfhub_models.checkpoints\n"
           "import serving.server, serving.client\n"
           "print(sorted(keras() - before))")
  result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[]"


def _minor(version: str) -> str:
  return ".".join(version.split(".")[:2])


def test_pins_move_together():
  """tensorflow, tensorflow-text and tensorflow-serving-api pin one minor, and
  every TF Serving image of the k8s tree is that minor (a SavedModel using
  tensorflow-text ops needs a server linking the same tensorflow-text)."""
  import tomllib

  import yaml
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  pins = {}
  for requirement in project["dependencies"]:
    match = re.fullmatch(r"(tensorflow(?:-text|-serving-api)?)==(\d+\.\d+)\.\*", requirement)
    if match:
      pins[match[1]] = match[2]
  assert set(pins) == {"tensorflow", "tensorflow-text", "tensorflow-serving-api"}, pins
  assert len(set(pins.values())) == 1, f"the TensorFlow pins differ: {pins}"
  minor = pins["tensorflow"]
  tags = {}
  for path in (ROOT / "k8s").rglob("kustomization.yaml"):
    for image in yaml.safe_load(path.read_text()).get("images", []):
      if image["name"] == "tensorflow/serving" and "newName" not in image or (
          "tensorflow-serving" in image.get("newName", "")):
        tags[str(path.relative_to(ROOT))] = image["newTag"]
  assert "k8s/base/kustomization.yaml" in tags and "k8s/overlays/gpu/kustomization.yaml" in tags
  for path, tag in tags.items():
    assert _minor(tag) == minor, f"{path}: tensorflow/serving:{tag}, pins say {minor}"
