"""`pip install beft-keras[<backend>]` is enough: the library never imports
the packages of the backends it is not running on."""

import json
import os
import subprocess
import sys

import keras

from tests.conftest import write_sst2_task

# A finder first in line that refuses the other backends' packages, as if
# they were not installed.
_WITHOUT = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")

sys.meta_path.insert(0, NotInstalled())
from beft_keras import cli
sys.exit(cli.main({argv!r}))
"""


def test_one_backend_needs_no_other(classifier_preset, tmp_path):
    backend = keras.backend.backend()
    blocked = [name for name in ("jax", "torch") if name != backend]
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "out"
    argv = [
        "tune", "--task", "sst2", "--data-dir", str(data_dir),
        "--model", classifier_preset, "--batch-size", "8",
        "--sequence-length", "12", "--epochs", "1", "--output", str(output),
    ]
    process = subprocess.run(
        [sys.executable, "-c", _WITHOUT.format(blocked=blocked, argv=argv)],
        env=dict(os.environ, KERAS_BACKEND=backend),
        capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    results = json.loads((output / "results.json").read_text())
    assert results["backend"] == backend
    assert results["trainable_params"] == 2 * 8 + 18
