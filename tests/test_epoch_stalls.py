"""Epoch-start stalls: the pipeline's datasets keep tf.data's autotuning
off, and the benchmark that measures the stalls counts and renders them."""

import numpy as np

from beft_keras import pipeline
from tests.conftest import write_sst2_task


def test_pipeline_datasets_have_autotuning_off(classifier_preset, tmp_path):
    run = pipeline.prepare(
        "sst2", data_dir=str(write_sst2_task(tmp_path / "glue")),
        model=classifier_preset, batch_size=8, sequence_length=12,
    )
    for dataset in (run.train_batches, run.probe_batches, run.dev_batches):
        assert dataset.options().autotune.enabled is False
    # Two epochs of the same fit see every example once each, as before.
    epochs = [
        sorted(int(y) for batch in run.train_batches
               for y in np.asarray(batch[1]))
        for _ in range(2)
    ]
    assert epochs[0] == epochs[1] == sorted(int(y) for y in run.train.labels)


def _run(mode, first_steps, median=0.1):
    return {"mode": mode, "tune_s": 10.0 + sum(first_steps),
            "metrics": {"accuracy": 0.75},
            "epochs": [{"first_step_s": s, "slowest_step_s": s,
                        "median_step_s": median, "epoch_s": 2.0}
                       for s in first_steps]}


def test_epoch_stalls_counts_slow_first_steps_after_the_first_epoch(
    tmp_path,
):
    from benchmarks import common
    from benchmarks import epoch_stalls

    # Epoch 1 compiles; 1.0 s is 10x the median (not over), 9.5 s is.
    autotune = _run("autotune", [5.0, 1.0, 9.5, 1.01])
    assert epoch_stalls.stalls(autotune) == [3, 4]
    fixed = _run("fixed", [5.0, 0.2, 0.2, 0.2])
    assert epoch_stalls.stalls(fixed) == []
    common.write_json(str(tmp_path / "epoch_stalls_jax.json"), {
        "backend": "jax", "task": "sst2", "epochs": 4,
        "started": "2026-11-25 10:00:00 UTC", "command": "python -m x",
        "machine": {"cpu_model": "cpu", "usable_cpus": 2},
        "runs": [autotune, fixed],
    })
    output = str(tmp_path / "epoch_stalls.md")
    epoch_stalls.render(str(tmp_path), output)
    text = open(output).read()
    assert ("| autotune | 26.5 | 5.00 / 1.00 / 9.50 / 1.01 | 0.100 "
            "| 2 of 3 (3, 4) | accuracy 0.7500 |") in text
    assert "| fixed | 15.6 | 5.00 / 0.20 / 0.20 / 0.20 | 0.100 | 0 of 3 |" in text
    assert "- autotune: 26.5 s a run on average over 1 runs; 2 stalled" in text
