"""Collecting garbage at each epoch's start: when it runs, and that it
changes no result."""

import gc

import keras
import numpy as np

from beft_keras import garbage
from beft_keras import pipeline
from tests.conftest import write_sst2_task


def _fit(callbacks):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.arange(24, dtype="float32").reshape(8, 3) / 24
    model.fit(x, np.ones((8, 2), "float32"), batch_size=4, epochs=3,
              shuffle=False, callbacks=callbacks, verbose=0)
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_collects_once_per_epoch_and_changes_nothing(monkeypatch):
    calls = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or collect())
    collected = _fit([garbage.CollectGarbageEachEpoch()])
    assert len(calls) == 3
    for with_gc, without in zip(collected, _fit([])):
        np.testing.assert_array_equal(with_gc, without)


def test_pipeline_fits_collect_on_jax_only(classifier_preset, tmp_path,
                                           monkeypatch):
    epochs = []
    monkeypatch.setattr(garbage.CollectGarbageEachEpoch, "on_epoch_begin",
                        lambda self, epoch, logs=None: epochs.append(epoch))
    run = pipeline.prepare(
        "sst2", data_dir=str(write_sst2_task(tmp_path / "glue")),
        model=classifier_preset, batch_size=8, sequence_length=12,
    )
    pipeline.probe(run, epochs=1, probe_batches=1, verbose=0)
    pipeline.tune(run, "value", epochs=2, verbose=0)
    on_jax = keras.backend.backend() == "jax"
    assert epochs == ([0, 0, 1] if on_jax else [])


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
    plain = _run("plain", [5.0, 1.0, 9.5, 1.01])
    assert epoch_stalls.stalls(plain) == [3, 4]
    collect = _run("collect", [5.0, 0.2, 0.2, 0.2])
    assert epoch_stalls.stalls(collect) == []
    common.write_json(str(tmp_path / "epoch_stalls_jax.json"), {
        "backend": "jax", "task": "sst2", "epochs": 4,
        "started": "2026-11-25 10:00:00 UTC", "command": "python -m x",
        "machine": {"cpu_model": "cpu", "usable_cpus": 2},
        "runs": [plain, collect],
    })
    output = str(tmp_path / "epoch_stalls.md")
    epoch_stalls.render(str(tmp_path), output)
    text = open(output).read()
    assert ("| plain | 26.5 | 5.00 / 1.00 / 9.50 / 1.01 | 0.100 "
            "| 2 of 3 (3, 4) | accuracy 0.7500 |") in text
    assert "| collect | 15.6 | 5.00 / 0.20 / 0.20 / 0.20 | 0.100 | 0 of 3 |" in text
    assert "- plain: 26.5 s a run on average over 1 runs; 2 stalled" in text
