"""Training-step cost of b_v-only, all-bias, head-only and full fine-tuning.

For each backend (its own subprocess) the script loads one classifier per
method, compiles each as the pipeline does, and times
`keras.Model.train_on_batch` (the compiled train function `fit` runs) on
batches of 16 SST-2 examples from the low-regime training set, padded two
ways: to length buckets (16, 32, 64, 128) and to a fixed 128. Every method
is first warmed up on every batch shape it will see (JAX and TensorFlow
compile once per shape); then, round after round, every method trains on the
same batch, in an order rotated each round, so that the shared machine's
load falls on all methods alike. Medians over rounds are reported.

Peak memory is measured in a separate process per backend and method (a
process's allocator keeps what it has freed, so methods cannot share one):
the rise of the resident set over the loaded, compiled model, from just
before the first training step to the highest point after several steps at
length 128 (the largest shape), compilation included, and the same rise at
steady state (the high-water mark reset after the warm-up steps).

    python -m benchmarks.step_cost             # all backends
    python -m benchmarks.step_cost --quick     # smoke test
"""

import os
import sys
import time


from benchmarks import common

NAME = "step_cost"
STEP_METHODS = ("b_v", "all-bias", "head", "full")
# None: the default buckets (16, 32, 64, 128); "fixed128" pads every batch
# to the sequence length (128 unless `--sequence-length` says otherwise).
PADDINGS = ("bucketed", "fixed128")


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--memory-method", default=None, help="internal")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        if args.memory_method:
            return memory_worker(args)
        return timing_worker(args)
    forwarded = common.worker_argv(argv)
    common.run_per_backend("benchmarks.step_cost", forwarded, args.backends)
    if not args.skip_memory:
        # Quick mode measures the two ends only, to stay under 3 minutes.
        memory_methods = ("b_v", "full") if args.quick else STEP_METHODS
        for backend in args.backends:
            for method in memory_methods:
                common.run_per_backend(
                    "benchmarks.step_cost",
                    forwarded + ["--memory-method", method],
                    [backend],
                )
    return 0


def load_batches(task, data_dir, model, padding, num_batches, seed=0,
                 batch_size=16, sequence_length=128):
    """The first `num_batches` training batches of a shuffled epoch (numpy)."""
    from beft_keras import data
    from beft_keras import models

    spec = data.get_task(task)
    train = data.training_subset(
        spec, data.load_split(spec, "train", data_dir), "low", seed
    )
    preprocessor, _ = models.load_classifier(model, spec, sequence_length)
    buckets = (
        data.DEFAULT_BUCKETS if padding == "bucketed" else (sequence_length,)
    )
    dataset = data.make_dataset(
        train, preprocessor, batch_size, sequence_length, shuffle=True,
        seed=seed, buckets=buckets,
    )
    batches = []
    for x, y in dataset.as_numpy_iterator():
        if len(y) == batch_size:  # full batches only: equal work per round
            batches.append((x, y))
        if len(batches) == num_batches:
            break
    return spec, batches


def measure_steps(model, data_dir, task="sst2", rounds=12, methods=STEP_METHODS,
                  paddings=PADDINGS, warmup_per_shape=2, verbose=True,
                  sequence_length=128):
    """Time `train_on_batch` for each method, interleaved; a dict per
    padding with per-method median step times and their ratio to full."""
    import warnings

    import keras

    from beft_keras import models
    from benchmarks import methods as methods_lib

    # BiasOnlyTrainable([]) (head only) warns about inert terms even when
    # no probe ran; the warning does not apply here.
    warnings.filterwarnings("ignore", message="A BeftProbe measured zero")
    out = {}
    for padding in paddings:
        spec, batches = load_batches(
            task, data_dir, model, padding, rounds,
            sequence_length=sequence_length,
        )
        classifiers = {}
        params = {}
        for method in methods:
            keras.utils.set_random_seed(0)
            _, classifier = models.load_classifier(
                model, spec, sequence_length
            )
            setup = methods_lib.set_up(classifier, spec, method)
            trainable, total = setup.trainable_params, setup.total_params
            classifiers[method], params[method] = classifier, (trainable, total)
        # One batch per shape, to compile each method for each shape.
        shapes = {}
        for x, y in batches:
            shapes.setdefault(x["token_ids"].shape, (x, y))
        start = time.perf_counter()
        for method in methods:
            for x, y in shapes.values():
                for _ in range(warmup_per_shape):
                    classifiers[method].train_on_batch(x, y)
        warmup_s = time.perf_counter() - start
        times = {method: [] for method in methods}
        for r, (x, y) in enumerate(batches):
            order = methods[r % len(methods):] + methods[:r % len(methods)]
            for method in order:
                t0 = time.perf_counter()
                classifiers[method].train_on_batch(x, y)
                times[method].append(time.perf_counter() - t0)
            if verbose:
                print(f"  {padding} round {r + 1}/{len(batches)} "
                      f"len {x['token_ids'].shape[1]}: "
                      + ", ".join(f"{m} {times[m][-1]:.3f}s" for m in methods),
                      flush=True)
        medians = {m: common.median(t) for m, t in times.items()}
        out[padding] = {
            "rounds": len(batches),
            "batch_size": int(batches[0][1].shape[0]),
            "lengths": [int(x["token_ids"].shape[1]) for x, _ in batches],
            "warmup_s": warmup_s,
            "jit_compile": {
                m: bool(getattr(c, "jit_compile", False))
                for m, c in classifiers.items()
            },
            "trainable_params": {m: p[0] for m, p in params.items()},
            "total_params": params[methods[0]][1],
            "step_times_s": times,
            "median_step_s": medians,
            "ratio_to_full": (
                {m: medians[m] / medians["full"] for m in methods}
                if "full" in medians else None
            ),
        }
        del classifiers
    return out


def timing_worker(args):
    from beft_keras import models

    env = common.environment()
    model = args.model or models.default_model()
    rounds = args.rounds or (2 if args.quick else 12)
    print(f"[step_cost] backend {env['backend']}, {rounds} rounds", flush=True)
    result = measure_steps(
        model, args.data_dir, args.task, rounds,
        warmup_per_shape=1 if args.quick else 2,
        sequence_length=args.sequence_length,
    )
    payload = {
        **env, "quick": args.quick, "model": model, "task": args.task,
        "regime": "low", "sequence_length": args.sequence_length,
        "paddings": result,
    }
    path = common.result_path(args.results, NAME, env["backend"], args.quick)
    # Keep memory results written by earlier runs of the memory workers.
    if os.path.exists(path):
        payload["memory"] = common.read_json(path).get("memory", {})
    common.write_json(path, payload)
    print(f"[step_cost] wrote {path}", flush=True)
    return 0


def memory_worker(args):
    """One method in a fresh process: RSS rise over the compiled model."""
    import keras

    from beft_keras import models
    from benchmarks import methods as methods_lib

    env = common.environment()
    model = args.model or models.default_model()
    method = args.memory_method
    steps = 2 if args.quick else 5
    spec, batches = load_batches(
        args.task, args.data_dir, model, "fixed128", steps + 1,
        sequence_length=args.sequence_length,
    )
    keras.utils.set_random_seed(0)
    _, classifier = models.load_classifier(
        model, spec, args.sequence_length
    )
    methods_lib.set_up(classifier, spec, method)
    baseline = common.current_rss_mib()
    _reset_peak()
    x, y = batches[0]
    classifier.train_on_batch(x, y)  # compiles on JAX and TensorFlow
    first_peak = _peak_mib()
    resettable = _reset_peak()
    after_warmup = common.current_rss_mib()
    for x, y in batches[1:]:
        classifier.train_on_batch(x, y)
    steady_peak = _peak_mib()
    record = {
        "length": args.sequence_length,
        "batch_size": int(y.shape[0]),
        "steps": steps,
        "rss_loaded_mib": baseline,
        "rss_after_warmup_mib": after_warmup,
        "peak_first_step_mib": first_peak,
        "peak_steady_mib": steady_peak if resettable else None,
        "rise_with_compile_mib": max(first_peak, steady_peak) - baseline,
        "rise_steady_mib": (steady_peak - baseline) if resettable else None,
        "high_water_mark_resettable": resettable,
    }
    path = common.result_path(args.results, NAME, env["backend"], args.quick)
    payload = common.read_json(path) if os.path.exists(path) else dict(env)
    payload.setdefault("memory", {})[method] = record
    common.write_json(path, payload)
    print(f"[step_cost] memory {method}: {record}", flush=True)
    return 0


def _reset_peak():
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return common.peak_rss_mib()


if __name__ == "__main__":
    sys.exit(main())
