"""Package-wide promises: no Keras in the shipped packages."""

from __future__ import annotations

import pathlib
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


def test_pins_move_together():
  pyproject = (pathlib.Path(ROOT) / "pyproject.toml").read_text()
  for package in ("tensorflow", "tensorflow-text", "tensorflow-serving-api"):
    assert f'"{package}==2.21.*"' in pyproject
