"""Accuracy of each fine-tuning method per task and seed (the paper's
Tables 1-2), with the BEFT probe of the same seed for the selection
benchmark.

For each seed and task (low regime, full dev set) the script loads the
classifier once, with the library's default head for the model or the one
`--pooling` names (a cross-encoder: a sentence pair read together, as the
paper's code reads it), keeps a copy of its starting weights (pretrained body,
seeded head), runs the BEFT probe (all biases, 1 epoch, Fisher on 32
batches), and then, starting every time from that copy, fine-tunes each
method with `beft_keras.pipeline.tune` at the library's default learning
rate and epochs for the task and head (`beft_keras.training_settings`):
b_v, b_q, b_k, all biases, a random-uniform bias mask with as many
elements as b_v, the head only, and every weight; `untuned` evaluates the
starting weights (for a siamese STS-B head: the pretrained model's own
cosine similarity). Each row records the task's metrics on the dev set,
the head, padding, rate, epochs, trainable share and the wall time of fit
plus evaluation. Rows are written to the JSON as they finish, and a rerun
skips rows already there, so a long run can be stopped and resumed.

    python -m benchmarks.accuracy --backends tensorflow --seeds 0 1 2
    python -m benchmarks.accuracy --backends tensorflow --pooling cls \\
        --tasks rte sst2 --methods b_v all-bias
    python -m benchmarks.accuracy --backends tensorflow --pooling cls \
        --tasks rte --seeds 0 --methods b_v all-bias --subset-draw paper
    python -m benchmarks.accuracy --quick --backends torch
"""

import os
import sys
import time
import warnings

from benchmarks import common

NAME = "accuracy"
TASKS = ("rte", "stsb", "sst2", "cola")
UNTUNED = "untuned"
METHOD_ORDER = ("b_v", "b_q", "b_k", "all-bias", "random", "head", "full",
                UNTUNED)
BUCKETED = "bucketed"
# `beft --batching`: which examples share a training batch.
BATCHINGS = (BUCKETED, "mixed")
DEFAULT_POOLING = "default"


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--epochs", type=int, default=None,
        help="Fine-tuning epochs; default: the library's for the task and "
        "head (1 with --quick).",
    )
    parser.add_argument("--probe-epochs", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(METHOD_ORDER),
                        choices=METHOD_ORDER)
    parser.add_argument(
        "--pooling", choices=("cls", "mean"), default=None,
        help="The encoder's head (see `beft --pooling`), reading a sentence "
        "pair together; default: the model's own head. Results go to "
        "accuracy_<backend>_<pooling>.json.",
    )
    parser.add_argument(
        "--fixed-padding", action="store_true",
        help="Pad every batch to --sequence-length instead of length "
        "buckets. Results go to accuracy_<backend>_fixed<length>.json.",
    )
    parser.add_argument(
        "--batching", choices=BATCHINGS, default=BUCKETED,
        help="Which examples share a training batch (see `beft "
        "--batching`). Results of 'mixed' go to "
        "accuracy_<backend>_..._mixed.json.",
    )
    parser.add_argument(
        "--subset-draw", choices=("seeded", "paper"), default="seeded",
        help="How the training subset is drawn: the library's seeded draw, "
        "or the BEFT authors' (`beft_keras.data.subsample`), for a run on "
        "their exact examples. Results of 'paper' go to "
        "accuracy_<backend>_..._paper.json.",
    )
    parser.add_argument(
        "--shard", default=None,
        help="Write accuracy_<backend>_..._<shard>.json, so that two "
        "workers can run side by side on different tasks; the report "
        "merges them.",
    )
    parser.add_argument(
        "--plan", nargs="+", default=None,
        help="TASK:SEED pairs in the order to run them (overrides "
        "--tasks/--seeds), e.g. rte:0 stsb:0 stsb:1.",
    )
    args = parser.parse_args(argv)
    if not args.worker:
        common.run_per_backend(
            "benchmarks.accuracy", common.worker_argv(argv), args.backends
        )
        return 0
    return worker(args)


def dev_curve(run):
    """A callback recording the dev metric after every epoch (the authors'
    code evaluates each epoch too, and its plots label the best)."""
    import keras

    from beft_keras import pipeline

    class _DevCurve(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.scores = []

        def on_epoch_end(self, epoch, logs=None):
            metrics = pipeline.evaluate_run(run)
            self.scores.append(metrics[run.spec.main_metric])

    return _DevCurve()


def plan(args):
    if args.quick and not args.plan:
        # Smoke test: one task (the first asked), one seed.
        return [(args.tasks[0] if args.tasks != list(TASKS) else "sst2",
                 args.seeds[0])]
    if args.plan:
        pairs = [p.split(":") for p in args.plan]
        return [(task, int(seed)) for task, seed in pairs]
    return [(task, seed) for seed in args.seeds for task in args.tasks]


def result_name(backend, pooling, padding, shard, subset_draw="seeded",
                batching=BUCKETED):
    """`accuracy_<backend>[_<pooling>][_fixed<n>][_paper][_mixed][_<shard>]`:
    one file per head, padding, subset draw and batching, so that their rows
    never mix."""
    parts = [NAME, backend]
    parts += [pooling] if pooling else []
    parts += [padding] if padding != BUCKETED else []
    parts += [subset_draw] if subset_draw != "seeded" else []
    parts += [batching] if batching != BUCKETED else []
    parts += [shard] if shard else []
    return "_".join(parts)


def worker(args):
    import keras

    from beft_keras import data
    from beft_keras import heads
    from beft_keras import models
    from beft_keras import pipeline
    from benchmarks import methods as methods_lib

    warnings.filterwarnings("ignore", message="A BeftProbe measured zero")
    env = common.environment()
    model = args.model or models.default_model()
    padding = (f"fixed{args.sequence_length}" if args.fixed_padding
               else BUCKETED)
    buckets = (data.DEFAULT_BUCKETS if padding == BUCKETED
               else (args.sequence_length,))
    name = result_name(env["backend"], args.pooling, padding, args.shard,
                       args.subset_draw, args.batching)
    path = common.result_path(args.results, name, None, args.quick)
    payload = common.read_json(path) if os.path.exists(path) else {
        **env, "rows": [], "probes": [],
    }
    payload.update(
        quick=args.quick, model=model, sequence_length=args.sequence_length,
        padding=padding, batching=args.batching,
        probe_epochs=args.probe_epochs,
        last_command=env["command"], machine=env["machine"],
    )
    # The head asked for: "default" (the model's own) or a --pooling.
    pooling = args.pooling or DEFAULT_POOLING
    done = {(r["task"], r["seed"], r["method"]) for r in payload["rows"]}
    probed = {(p["task"], p["seed"]) for p in payload["probes"]}
    for task, seed in plan(args):
        todo = [m for m in args.methods if (task, seed, m) not in done]
        if not todo and (task, seed) in probed:
            continue
        start = time.perf_counter()
        run = pipeline.prepare(
            task, args.data_dir, model, "low", seed,
            sequence_length=args.sequence_length, buckets=buckets,
            max_examples=(16, 32) if args.quick else None,
            pooling=args.pooling,
            pair_encoding=heads.CROSS if args.pooling else None,
            subset_draw=args.subset_draw, batching=args.batching,
        )
        # Every method starts from these weights: pretrained body, seeded
        # head.
        initial = [keras.ops.convert_to_numpy(v).copy()
                   for v in run.classifier.weights]
        prepare_s = time.perf_counter() - start
        epochs = args.epochs or (1 if args.quick else None)
        if (task, seed) not in probed:
            t0 = time.perf_counter()
            keras.utils.set_random_seed(seed)
            beft_probe = pipeline.probe(
                run, args.probe_epochs,
                probe_batches=1 if args.quick else 32, verbose=0,
            )
            results = beft_probe.results
            payload["probes"].append({
                "task": task, "seed": seed, "pooling": pooling,
                "padding": padding, "subset_draw": args.subset_draw,
                "batching": args.batching,
                "learning_rate": run.settings.learning_rate,
                "averages": results.averages,
                "rankings": results.rankings,
                "selected": {m: results.selected_by(m)
                             for m in results.methods},
                "inert": list(results.inert),
                "wall_time_s": time.perf_counter() - t0,
            })
            common.write_json(path, payload)
        for method in todo:
            for variable, value in zip(run.classifier.weights, initial):
                variable.assign(value)
            # The batches' shuffling follows an epoch counter that runs on
            # across `fit` calls; re-made, every method sees the same order.
            run.train_batches = run.new_batches()
            keras.utils.set_random_seed(seed)
            t0 = time.perf_counter()
            if method == UNTUNED:
                result = {
                    "metrics": pipeline.evaluate_run(run), "epochs": 0,
                    "learning_rate": None, "trainable_params": 0,
                    "trainable_percent": 0.0, "head":
                    models.head_name(run.classifier),
                }
            else:
                curve = dev_curve(run)
                result = pipeline.tune(
                    run, methods_lib.METHODS[method], epochs, verbose=0,
                    callbacks=[curve],
                )
                result["curve"] = curve.scores
            row = {
                "task": task, "seed": seed, "method": method,
                "pooling": pooling, "head": result["head"],
                "padding": padding, "subset_draw": args.subset_draw,
                "batching": args.batching, "main_metric": run.spec.main_metric,
                "metrics": result["metrics"],
                "score": result["metrics"][run.spec.main_metric],
                "trainable_params": result["trainable_params"],
                "trainable_percent": result["trainable_percent"],
                "learning_rate": result["learning_rate"],
                "epochs": result["epochs"],
                "curve": result.get("curve", []),
                "train_examples": len(run.train),
                "dev_examples": len(run.dev),
                "wall_time_s": time.perf_counter() - t0,
                "load_average": os.getloadavg(),
                "data_order": "same for every method",
            }
            payload["rows"].append(row)
            common.write_json(path, payload)
            print(f"[accuracy] {task} seed {seed} {method}: "
                  f"{run.spec.main_metric} {row['score']:.4f} "
                  f"({row['trainable_percent']:.4f}%, "
                  f"{row['wall_time_s']:.0f} s)", flush=True)
        del run
        print(f"[accuracy] {task} seed {seed} done "
              f"({prepare_s:.0f} s loading)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
