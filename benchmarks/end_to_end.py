"""End-to-end time of the whole BEFT method, length-bucketed padding vs a
fixed padding to 128, on SST-2 (low regime).

The method is `beft_keras.pipeline.run`'s sequence, timed from start to
finish: `prepare` (read, subsample, tokenize, load MiniLM), `probe` (the
Fisher gradients, then all biases fit with a `BeftProbe`),
`apply_selection`, `tune` of the selected term and head, and evaluation
on the full dev set. The only difference between the two runs is
`prepare(..., buckets=...)`: `(16, 32, 64, 128)` or `(128,)`. (`run()`
itself has no `buckets` argument, hence the spelled-out sequence.) The
two paddings alternate order over repeats, so that a change in the
shared machine's load falls on both.

    python -m benchmarks.end_to_end             # all backends
    python -m benchmarks.end_to_end --quick     # smoke test
"""

import os
import sys
import time
import warnings

from benchmarks import common

NAME = "end_to_end"
PADDINGS = ("bucketed", "fixed128")


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-epochs", type=int, default=1)
    parser.add_argument("--tune-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    common.run_per_backend(
        "benchmarks.end_to_end", common.worker_argv(argv), args.backends
    )
    return 0


def whole_method(task, data_dir, model, seed, padding, probe_epochs,
                 tune_epochs, learning_rate, quick=False, sequence_length=128):
    """Probe, select, tune, evaluate; a dict of times and results."""
    from beft_keras import data
    from beft_keras import pipeline

    buckets = (
        data.DEFAULT_BUCKETS if padding == "bucketed" else (sequence_length,)
    )
    times = {}
    start = time.perf_counter()
    # CPU seconds of this process (every thread): less sensitive than wall
    # time to other jobs on a shared machine.
    cpu_start = time.process_time()
    run = pipeline.prepare(task, data_dir, model, "low", seed, 16,
                           sequence_length, buckets=buckets,
                           max_examples=(32, 64) if quick else None)
    times["prepare_s"] = time.perf_counter() - start
    t0 = time.perf_counter()
    beft_probe = pipeline.probe(run, probe_epochs, learning_rate,
                                probe_batches=2 if quick else 32, verbose=0)
    beft_probe.apply_selection()
    times["probe_s"] = time.perf_counter() - t0
    result = pipeline.tune(run, beft_probe.selected, tune_epochs,
                           learning_rate, verbose=0)
    times["tune_and_evaluate_s"] = result.pop("wall_time_s")
    times["total_s"] = time.perf_counter() - start
    times["total_cpu_s"] = time.process_time() - cpu_start
    return {
        **times,
        "selected": beft_probe.selected,
        "rankings": beft_probe.results.rankings,
        "metrics": result["metrics"],
        "trainable_percent": result["trainable_percent"],
        "train_examples": result["train_examples"],
        "dev_examples": result["dev_examples"],
        "train_padding_efficiency": data.padding_efficiency(run.train_batches),
    }


def worker(args):
    from beft_keras import models
    from benchmarks import methods as methods_lib

    warnings.filterwarnings("ignore", message="A BeftProbe measured zero")
    env = common.environment()
    model = args.model or models.default_model()
    tune_epochs = 1 if args.quick else args.tune_epochs
    runs = {name: [] for name in PADDINGS}
    for repeat in range(args.repeats):
        order = list(PADDINGS) if repeat % 2 == 0 else list(PADDINGS)[::-1]
        for name in order:
            record = whole_method(
                args.task, args.data_dir, model, args.seed, name,
                args.probe_epochs, tune_epochs,
                methods_lib.BIAS_LEARNING_RATE, args.quick,
                args.sequence_length,
            )
            record["load_average"] = os.getloadavg()
            runs[name].append(record)
            print(f"[end_to_end] {name}: {record['total_s']:.1f} s "
                  f"({record['total_cpu_s']:.1f} CPU s), "
                  f"{record['selected']}, {record['metrics']}", flush=True)
    totals = {n: common.median([r["total_s"] for r in rs])
              for n, rs in runs.items()}
    cpu = {n: common.median([r["total_cpu_s"] for r in rs])
           for n, rs in runs.items()}
    payload = {
        **env, "quick": args.quick, "model": model, "task": args.task,
        "regime": "low", "seed": args.seed,
        "sequence_length": args.sequence_length,
        "probe_epochs": args.probe_epochs, "tune_epochs": tune_epochs,
        "learning_rate": methods_lib.BIAS_LEARNING_RATE,
        "probe_batches": 2 if args.quick else 32,
        "runs": runs,
        "median_total_s": totals,
        "speedup_bucketed": totals["fixed128"] / totals["bucketed"],
        "median_total_cpu_s": cpu,
        "cpu_speedup_bucketed": cpu["fixed128"] / cpu["bucketed"],
    }
    path = common.result_path(args.results, NAME, env["backend"], args.quick)
    common.write_json(path, payload)
    print(f"[end_to_end] wrote {path}: speed-up "
          f"{payload['speedup_bucketed']:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
