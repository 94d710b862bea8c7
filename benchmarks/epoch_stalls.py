"""Epoch-start stalls of a fit, with and without tf.data's autotuning.

The library's b_v fine-tune of the default model on SST-2 (low regime,
seed 0, `beft_keras.pipeline.tune`), timed step by step: per epoch the
first step, the slowest, the median and the whole epoch (from the end of
the one before). Runs alternate between the pipeline as shipped
("fixed": its batches are prefetched one ahead with tf.data's autotuning
off) and with tf.data's autotuned prefetch put back ("autotune", the
pipeline before the fix), each in a fresh process. Nothing else should run
beside it.

    python -m benchmarks.epoch_stalls --backends tensorflow jax
    python -m benchmarks.epoch_stalls --quick      # smoke test

Writes `benchmarks/results/epoch_stalls_<backend>.json` and, from every
such file, `docs/epoch_stalls.md` (`--render`: the docs only).
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time

from benchmarks import common

NAME = "epoch_stalls"
MODES = ("autotune", "fixed")
# A first step this much slower than the epoch's median is a stall.
STALL_FACTOR = 10
DOCS = os.path.join(common.ROOT, "docs", "epoch_stalls.md")


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.set_defaults(backends=["jax"])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    # Internal: one timed fit in this process, printed as a JSON line.
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    common.add_render_argument(parser)
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(timed_fit(args)), flush=True)
        return 0
    if args.worker:
        return worker(args, argv)
    return common.run_then_render(
        "benchmarks.epoch_stalls", argv, args, lambda: render(args.results, DOCS)
    )


def timed_fit(args):
    """Fine-tune b_v with a step timer; the times and the dev metrics."""
    import keras

    import tensorflow as tf

    from beft_keras import pipeline
    from beft_keras.data import batching

    if args.mode == "autotune":
        # The pipeline's datasets end in this function.
        batching._prefetch = lambda dataset: dataset.prefetch(tf.data.AUTOTUNE)

    class StepTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.epochs, self.last_end = [], time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.last, self.steps = time.perf_counter(), []

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.steps.append(now - self.last)
            self.last = now

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.epochs.append({
                "first_step_s": self.steps[0],
                "slowest_step_s": max(self.steps),
                "median_step_s": common.median(self.steps),
                "epoch_s": now - self.last_end,
            })
            self.last_end = now

    run = pipeline.prepare(
        args.task, args.data_dir, args.model, seed=0,
        sequence_length=args.sequence_length,
        max_examples=(64, 32) if args.quick else None,
    )
    timer = StepTimer()
    result = pipeline.tune(run, "value", epochs=args.epochs, verbose=0,
                           callbacks=[timer])
    return {"mode": args.mode, "tune_s": result["wall_time_s"],
            "metrics": result["metrics"], "epochs": timer.epochs,
            "load_average": os.getloadavg()}


def worker(args, argv):
    env = common.environment()
    epochs = 2 if args.quick else args.epochs
    command = [sys.executable, "-m", "benchmarks.epoch_stalls",
               *common.worker_argv(argv), "--epochs", str(epochs)]
    runs = []
    for repeat in range(1 if args.quick else args.repeats):
        for mode in MODES:
            output = subprocess.run(
                command + ["--mode", mode], cwd=common.ROOT, check=True,
                stdout=subprocess.PIPE, text=True,
            ).stdout
            runs.append(json.loads(output.strip().splitlines()[-1]))
            print(f"[epoch_stalls] {mode}: tune {runs[-1]['tune_s']:.1f} s, "
                  f"first steps "
                  f"{[round(e['first_step_s'], 2) for e in runs[-1]['epochs']]}",
                  flush=True)
    payload = {**env, "quick": args.quick, "task": args.task,
               "epochs": epochs, "runs": runs}
    path = common.result_path(args.results, NAME, env["backend"], args.quick)
    common.write_json(path, payload)
    print(f"[epoch_stalls] wrote {path}", flush=True)
    return 0


def stalls(run):
    """Epochs after the first (which compiles) whose first step took over
    `STALL_FACTOR` times the epoch's median step."""
    return [
        i + 1 for i, epoch in enumerate(run["epochs"])
        if i and epoch["first_step_s"] > STALL_FACTOR * epoch["median_step_s"]
    ]


def render(results, output):
    """Write `output` (docs/epoch_stalls.md) from every full (not quick)
    result in `results`."""
    lines = [
        "# Epoch-start stalls, with and without tf.data's autotuning",
        "",
        "Generated by `python -m benchmarks.epoch_stalls` (its docstring "
        "says what runs). *fixed* is the library's pipeline as shipped "
        "(batches prefetched one ahead, tf.data's autotuning off); "
        "*autotune* puts back tf.data's autotuned prefetch. A stall is an "
        f"epoch after the first whose first step took over {STALL_FACTOR}x "
        "the epoch's median step.",
        "",
        "Why: Keras drops each epoch's tf.data iterator, and destroying an "
        "iterator with autotuning on waits for its autotuning thread to "
        "wake from a timed sleep (`tensorflow::data::model::Model::"
        "OptimizeLoop`, whose period grows through a run); the main thread "
        "blocks in `RootDataset::Iterator::~Iterator` meanwhile, both cores "
        "idle (read with gdb and /proc/stat during a stall).",
    ]
    paths = sorted(
        p for p in glob.glob(os.path.join(results, f"{NAME}_*.json"))
        if not p.endswith("_quick.json")
    )
    for path in paths:
        payload = common.read_json(path)
        machine = payload["machine"]
        epochs = payload["epochs"]
        lines += [
            "", f"## {payload['backend']}", "",
            f"{payload['task']}, b_v, {epochs} epochs; ran "
            f"{payload['started']} on {machine['cpu_model']} "
            f"({machine['usable_cpus']} CPUs): `{payload['command']}`.",
            "",
            "| mode | fine-tune + dev s | first step of each epoch, s "
            "| median step s | stalled epochs | dev metrics |",
            "|---|---|---|---|---|---|",
        ]
        for run in payload["runs"]:
            firsts = " / ".join(f"{e['first_step_s']:.2f}"
                                for e in run["epochs"])
            median = common.median([e["median_step_s"] for e in run["epochs"]])
            metrics = ", ".join(f"{k} {v:.4f}"
                                for k, v in run["metrics"].items())
            stalled = stalls(run)
            lines.append(
                f"| {run['mode']} | {run['tune_s']:.1f} | {firsts} "
                f"| {median:.3f} | {len(stalled)} of {epochs - 1}"
                f"{' (' + ', '.join(map(str, stalled)) + ')' if stalled else ''}"
                f" | {metrics} |"
            )
        lines.append("")
        for mode in MODES:
            runs = [r for r in payload["runs"] if r["mode"] == mode]
            if runs:
                mean = sum(r["tune_s"] for r in runs) / len(runs)
                lines.append(
                    f"- {mode}: {mean:.1f} s a run on average over {len(runs)}"
                    f" runs; {sum(len(stalls(r)) for r in runs)} stalled "
                    f"epochs of {len(runs) * (epochs - 1)}."
                )
    with open(output, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"[epoch_stalls] wrote {output}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
