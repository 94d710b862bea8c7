"""`beft tune|run --distribute data`: the command on 4 simulated devices
(in a fresh process, which simulates them before the backend starts), and
its delta predicted on one device."""

import json
import os
import subprocess
import sys

import keras
import pytest

from beft_keras import cli
from tests.conftest import write_sst2_task

_DISTRIBUTED = """
import sys
from beft_keras import distribution
distribution.simulate_devices(4)
from beft_keras import cli
sys.exit(cli.main({argv!r}))
"""


def _tiny_args(data_dir, model):
    return [
        "--task", "sst2", "--data-dir", str(data_dir), "--model", model,
        "--batch-size", "8", "--sequence-length", "12",
    ]


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras has no distribution API for torch; see the next test",
)
def test_distributed_command_and_single_device_predict(
    classifier_preset, tmp_path, capsys
):
    # `run` probes, then tunes its selection, both distributed: every step
    # `tune` takes. 14 dev examples: the last dev batch is padded to the 4
    # devices.
    data_dir = write_sst2_task(tmp_path / "glue", num_dev=14)
    output = tmp_path / "out"
    argv = ["run", *_tiny_args(data_dir, classifier_preset),
            "--epochs", "2", "--learning-rate", "1e-2",
            "--distribute", "data", "--output", str(output)]
    process = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED.format(argv=argv)],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())
    run = results["runs"][0]
    assert run["replicas"] == 4
    assert run["dev_examples"] == 14
    # The value biases of 2 layers (8 each) and the 2-class head.
    assert results["trainable_params"] == 2 * 8 + 18

    # The delta, trained on 4 devices, predicts on one device what the
    # distributed run scored.
    capsys.readouterr()
    assert cli.main(
        ["predict", "--task", "sst2", "--model", classifier_preset,
         "--input", str(data_dir / "sst2" / "dev.tsv"),
         "--delta", str(output / "seed_0" / "delta.safetensors"),
         "--sequence-length", "12",
         "--output", str(tmp_path / "predictions.tsv")]
    ) == 0
    printed = capsys.readouterr().out
    accuracy = float(printed.split("accuracy: ")[1].split()[0])
    assert accuracy == pytest.approx(
        results["metrics"]["accuracy"]["mean"], abs=1e-4
    )


def test_distribute_is_refused_where_keras_has_no_engine(
    classifier_preset, tmp_path, capsys
):
    backend = keras.backend.backend()
    kind = "data" if backend == "torch" else "model"
    if backend == "jax":
        pytest.skip("JAX has both engines; model parallel is tested in "
                    "test_distribution on a preset with a layout map")
    output = tmp_path / "out"
    code = cli.main(
        ["tune", "--task", "sst2", "--model", classifier_preset,
         "--distribute", kind, "--output", str(output)]
    )
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("beft: error: ")
    assert "KERAS_BACKEND=jax" in error[0]
    assert not output.exists()
