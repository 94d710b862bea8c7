"""benchmarks/peers/ without running a fine-tune: the Keras log parser,
the run plan, the report writer on a made-up results file; and the
library's promise never to import transformers or peft."""

import argparse
import json
import os
import subprocess
import sys

from benchmarks import common
from benchmarks import peers
from benchmarks.peers import constants
from benchmarks.peers import runs as peer_runs


def test_keras_epoch_times_reads_step_and_seconds_of_each_epoch(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text(
        "Epoch 1/2\n"
        "\r\x1b[1m1/3\x1b[0m \x1b[32m━\x1b[0m 1s 900ms/step - loss: 0.7"
        "\r\x1b[1m3/3\x1b[0m \x1b[32m━━━\x1b[0m 2s 100ms/step - loss: 0.6"
        "\r\x1b[1m3/3\x1b[0m \x1b[32m━━━\x1b[0m 3s 110ms/step - loss: 0.6\n"
        "Epoch 2/2\n"
        "\r1/1 ━━ 0s 50ms/step\r1/1 ━━ 0s 52ms/step\n"
        "beft tune: sst2\n"
    )
    epochs = peer_runs.keras_epoch_times(str(log))
    assert [e["steps"] for e in epochs] == [3, 1]
    assert epochs[0]["seconds"] == 3.0
    # The step time of the last batch's update, the seconds of the
    # epoch-end update.
    assert abs(epochs[0]["step_s"] - 0.100) < 1e-9
    assert abs(epochs[1]["step_s"] - 0.050) < 1e-9
    # The first epoch (tracing) is left out of the steady step time.
    assert abs(peer_runs.steady(epochs) - 0.050) < 1e-9
    # A step Keras rounds to whole seconds: the epoch's seconds per step.
    log.write_text("4/4 ━━ 0s 1s/step\r4/4 ━━ 6s 2s/step\n")
    assert peer_runs.keras_epoch_times(str(log)) == [
        {"steps": 4, "seconds": 6.0, "step_s": 1.5}]
    assert peer_runs.steady([]) is None


def _args(**overrides):
    values = dict(quick=False, tasks=None, seeds=None, epochs=None,
                  learning_rate=None, stacks=list(constants.STACKS),
                  variants=list(constants.VARIANTS))
    values.update(overrides)
    return argparse.Namespace(**values)


def test_plan_runs_matched_only_when_it_differs():
    options = {"--pooling", "--pair-encoding"}
    runs = peer_runs.plan_runs(_args(tasks=["sst2"], seeds=[0], epochs=3),
                               options)
    variants = [(r["backend"], r["variant"]) for r in runs]
    # The paper's SST-2 rate is the library's: `matched` would be `default`.
    assert variants == [("torch", "peft")] + [
        (b, v) for b in common.BACKENDS for v in ("default", "cls")]
    assert {r["epochs"] for r in runs} == {3}
    assert {r["learning_rate"] for r in runs} == {4e-4}

    runs = peer_runs.plan_runs(
        _args(tasks=["rte"], seeds=[1], epochs=2, learning_rate=5e-3,
              stacks=["jax"]),
        set(),  # no --pooling: no cls variant
    )
    assert [(r["variant"], r["learning_rate"]) for r in runs] == [
        ("default", 1e-3), ("matched", 5e-3)]
    assert runs[0]["pair"] is True


def _row(stack, backend, variant, wall, metric, step, seed=0, epochs=3,
         artifact_bytes=14040):
    return {
        "task": "sst2", "seed": seed, "epochs": epochs, "learning_rate": 4e-4,
        "stack": stack, "backend": backend, "variant": variant,
        "train_examples": 1000, "dev_examples": 872, "status": "ok",
        "head": "cls", "main_metric": "accuracy",
        "main_metric_value": metric, "trainable_params": 3074,
        "artifact_bytes": 13304 if stack == "peft" else artifact_bytes,
        **({"config_bytes": 912} if stack == "peft" else {}),
        "process_wall_s": wall, "cpu_s": wall * 1.5, "peak_rss_mib": 1000.0,
        "steady_step_s": step, "steps": 189,
        "phases": {"train_s": wall / 2, "import_s": 5.0},
        "load_average_before": [3.0, 3.0, 3.0],
        "command": "beft tune ...",
    }


def _report(tmp_path, rows):
    """docs/peers.md's text, written by `--report` from these rows."""
    environment = {
        "machine": {"cpu_model": "Test CPU", "nproc": 2, "usable_cpus": 2,
                    "memory_gib": 8.0, "platform": "Linux-test"},
        "versions": {"keras": "3", "peft": "0.21.2"},
        "started": "2026-01-01 00:00:00 UTC", "nice": 5,
        "argv": ["--tasks", "sst2", "--seeds", "0", "--epochs", "3"],
        "pooling_option": True,
    }
    payload = {"name": "peers", "invocations": [environment], "rows": rows}
    results = tmp_path / "results"
    common.write_json(str(results / "peers.json"), payload)
    output = tmp_path / "peers.md"
    assert peers.main(["--report", "--results", str(results),
                       "--output", str(output)]) == 0
    return output.read_text()


def test_report_reads_every_figure_from_the_json(tmp_path):
    text = _report(tmp_path, [
        _row("peft", "torch", "peft", 100.0, 0.80, 0.5),
        _row("beft-keras", "jax", "default", 50.0, 0.82, 0.25),
    ])
    assert "Test CPU" in text
    assert "min 3.00, median 3.00, max 3.00; 0 of 2 above 3" in text
    assert "--tasks sst2 --seeds 0 --epochs 3" in text
    # beft-keras / PEFT: wall 0.50, step 0.50, metric +0.02.
    assert "| jax | default | 3 / 3 | 0.50 | 0.50 |" in text
    assert "+0.0200" in text
    assert "| 13,304 (+ 912 config) |" in text and "| 14,040 |" in text
    assert "rte seed 0" in text  # missing rows are listed
    assert "fewer epochs than the paper's" in text
    # Over seeds: one seed prints no std; end to end 100 / 50 s, fit 50 / 25.
    assert ("| beft-keras | jax | default | cls | accuracy 0.8200 (1) | "
            "50.0 | 2.00x | 2.00x | 14,040 |") in text
    assert "| at least 3x faster end to end on one backend | - | not run |" \
        in text


def test_report_targets_over_seeds(tmp_path):
    """Issue #15's targets from the `cls` rows at 16 epochs, paired by
    seed: speed-up = PEFT's summed wall time over ours."""
    rows = []
    for seed, (peft_wall, peft_acc) in enumerate([(300.0, 0.70),
                                                  (200.0, 0.74)]):
        rows.append(_row("peft", "torch", "peft", peft_wall, peft_acc, 0.3,
                         seed=seed, epochs=16))
        for backend, wall, acc in [("tensorflow", peft_wall / 4, 0.73),
                                   ("jax", peft_wall / 2, 0.71),
                                   ("torch", peft_wall, 0.72)]:
            rows.append(_row("beft-keras", backend, "cls", wall, acc, 0.1,
                             seed=seed, epochs=16, artifact_bytes=13208))
    # Another variant's larger delta is not the cls variant's.
    rows.append(_row("beft-keras", "tensorflow", "default", 50.0, 0.8, 0.1,
                     epochs=16, artifact_bytes=14040))
    text = _report(tmp_path, rows)
    # PEFT 0.70 and 0.74: mean 0.72, sample std 0.0283.
    assert "| peft | torch | peft | cls | accuracy 0.7200 ± 0.0283 (2) |" \
        in text
    speeds = "tensorflow 4.00x, jax 2.00x, torch 1.00x"
    assert (f"| at least 3x faster end to end on one backend | {speeds} | "
            "met so far (2 of 3 seeds) |") in text
    assert (f"| at least 1.5x faster on each backend | {speeds} | "
            "**missed** so far (2 of 3 seeds) |") in text
    assert ("| jax: dev accuracy not lower than PEFT's (mean) | "
            "0.7100 vs 0.7200 | **missed** so far") in text
    assert ("| tensorflow: dev accuracy not lower than PEFT's (mean) | "
            "0.7300 vs 0.7200 | met so far") in text
    assert ("| the delta no larger than PEFT's adapter file | "
            "13,208 vs 13,304 bytes | met so far (2 of 3 seeds) |") in text


def test_library_never_imports_transformers_or_peft():
    code = (
        "import sys, beft_keras, beft_keras.cli, beft_keras.pipeline; "
        "print([m for m in ('transformers', 'peft') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        cwd=common.ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        check=True,
    ).stdout
    assert json.loads(out.strip().splitlines()[-1].replace("'", '"')) == []


def test_per_batch_padding_pads_each_batch_to_its_longest():
    from benchmarks.peers import step_profile

    lengths = [3, 9, 4, 5, 7]
    # One epoch, batches of 2 in the seeded order, each padded to its
    # longest; the last batch has one example.
    order = __import__("numpy").random.default_rng(0).permutation(5)
    batches = [order[i:i + 2] for i in range(0, 5, 2)]
    expected = sum(max(lengths[j] for j in b) * len(b) for b in batches)
    assert step_profile.per_batch_padding(lengths, 2, 1, 0) == (expected, 3)
    # Batches as large as the data: every example padded to 9.
    assert step_profile.per_batch_padding(lengths, 8, 3, 0) == (45.0, 1.0)


def _profile_row(stack, wall_16, positions, ops):
    return {
        "stack": stack, "backend": "torch" if stack == "peft" else stack,
        "load_average_before": 1.5,
        "steps_per_length": {"16": {"wall_ms": wall_16, "cpu_ms": 2 * wall_16}},
        "epoch_positions": positions, "epoch_steps": 63.0,
        "real_tokens": 13568,
        **({"profile": [{"op": op, "self_cpu_ms": ms, "calls": calls}
                        for op, ms, calls in ops]} if ops else {}),
    }


def _profile_payload():
    return {
        "environment": {
            "machine": {"cpu_model": "Test CPU", "nproc": 2,
                        "memory_gib": 8.0, "platform": "Linux-test"},
            "versions": {"keras": "3", "torch": "2"},
            "started": "2026-01-01 00:00:00 UTC",
        },
        "invocation": "python -m benchmarks.peers.step_profile",
        "task": "sst2", "seed": 0, "batch_size": 16, "learning_rate": 4e-4,
        "steps": 20, "epochs": 16, "profile_length": 32, "profile_steps": 10,
        "rows": [
            _profile_row("peft", 120.0, 36352.0,
                         [("aten::addmm", 80.0, 38), ("aten::mm", 70.0, 36),
                          ("aten::gelu", 5.0, 6)]),
            _profile_row("tensorflow", 80.0, 22720.0, None),
            _profile_row("torch", 150.0, 22720.0,
                         [("aten::bmm", 60.0, 45), ("aten::mm", 90.0, 29),
                          ("aten::add", 20.0, 67)]),
        ],
    }


def test_step_profile_report_reads_every_figure_from_the_json(tmp_path):
    from benchmarks.peers import step_profile

    payload = _profile_payload()
    output = tmp_path / "profile.md"
    step_profile.write_report(payload, str(output))
    text = output.read_text()
    assert "Test CPU" in text and "peft 1.50, tensorflow 1.50" in text
    assert "\n|---|---|---|---|---|---|---|---|---|\n" in text
    # Step at length 16: PEFT 120 ms over TensorFlow's 80 and torch's 150.
    assert ("| 16 | 120.0 | 240.0 | 80.0 | 160.0 | 1.50x | 150.0 | 300.0 | "
            "0.80x |") in text
    # Positions: 36,352 over 22,720 = 1.60x; 13,568 real of 22,720 = 0.60.
    assert ("| tensorflow | length buckets | 63 | 22,720 | 13,568 | 0.60 | "
            "1.60x |") in text
    # With no padding, 13,568 real tokens: 36,352 / 13,568 = 2.68x.
    assert "13,568 real tokens, 2.68x fewer positions than PEFT's" in text
    # Ops side by side; a stack without the op shows "-".
    assert "| `aten::addmm` | 80.0 | 38 | - | - |" in text
    assert "| `aten::bmm` | - | - | 60.0 | 45 |" in text
    # Totals: PEFT 155 ms, of which products 150 in 74 calls; torch 170,
    # products 150 in 74 calls, 20 else.
    assert "| PEFT | 155.0 | 150.0 | 74 | 5.0 |" in text
    assert "| beft-keras torch | 170.0 | 150.0 | 74 | 20.0 |" in text


def test_benchmarks_md_peers_section(tmp_path):
    """docs/benchmarks.md's section 6: each comparison's summary, newest
    first, its titles a level lower, then the same-shape tables."""
    from benchmarks.peers import step_profile
    from benchmarks.report import peers as peers_section

    results = tmp_path / "results"
    assert peers_section.section(str(results))[-2:] == ["**Not run.**", ""]
    environment = {"machine": {"cpu_model": "Test CPU", "nproc": 2}}
    for folder, wall in (("peers_rerun", 50.0), ("", 80.0)):
        rows = [_row("peft", "torch", "peft", 100.0, 0.70, 0.3, epochs=16),
                _row("beft-keras", "tensorflow", "cls", wall, 0.72, 0.1,
                     epochs=16, artifact_bytes=13208)]
        common.write_json(str(results / folder / "peers.json"),
                          {"invocations": [environment], "rows": rows})
    common.write_json(str(results / (step_profile.NAME + ".json")),
                      _profile_payload())
    text = "\n".join(peers_section.section(str(results)))
    newer = text.index("### Run after")
    older = text.index("### Run before")
    assert newer < older < text.index("### What bounds the speed-up")
    assert "#### sst2, 16 epochs" in text and "\n## Over seeds" not in text
    # PEFT 100 s over 50 s, then over 80 s.
    assert text.index("| 2.00x |") < older < text.index("| 1.25x |")
    assert "#### One step at the same shape" in text
    assert "2.68x fewer positions than PEFT's" in text
