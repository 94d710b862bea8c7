"""Accuracy of each fine-tuning method per task and seed (the paper's
Tables 1-2), with the BEFT probe of the same seed for the selection
benchmark.

For each seed and task (low regime, full dev set) the script loads the
classifier once, keeps a copy of its starting weights (pretrained body,
seeded head), runs the BEFT probe (all biases, 1 epoch, Fisher on 32
batches), and then, starting every time from that copy, fine-tunes each
method: b_v, b_q, b_k, all biases, a random-uniform bias mask with as many
elements as b_v (`benchmarks.methods.RandomBiasMask`), the head only, and
every weight. Each row records the task's metrics on the dev set, the
trainable share and the wall time of fit plus evaluation. Rows are written
to the JSON as they finish, and a rerun skips rows already there, so a
long run can be stopped and resumed.

    python -m benchmarks.accuracy --backends torch --seeds 0 1 2
    python -m benchmarks.accuracy --quick --backends torch
"""

import os
import sys
import time
import warnings

from benchmarks import common

NAME = "accuracy"
TASKS = ("rte", "stsb", "sst2", "cola")
METHOD_ORDER = ("b_v", "b_q", "b_k", "all-bias", "random", "head", "full")
DEFAULT_EPOCHS = 3


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--probe-epochs", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(METHOD_ORDER))
    parser.add_argument(
        "--shard", default=None,
        help="Write accuracy_<backend>_<shard>.json, so that two workers "
        "can run side by side on different tasks; the report merges them.",
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


def plan(args):
    if args.quick and not args.plan:
        # Smoke test: one task (the first asked), one seed.
        return [(args.tasks[0] if args.tasks != list(TASKS) else "sst2",
                 args.seeds[0])]
    if args.plan:
        pairs = [p.split(":") for p in args.plan]
        return [(task, int(seed)) for task, seed in pairs]
    return [(task, seed) for seed in args.seeds for task in args.tasks]


def worker(args):
    import keras

    from beft_keras import models
    from beft_keras import pipeline
    from benchmarks import methods as methods_lib

    warnings.filterwarnings("ignore", message="A BeftProbe measured zero")
    env = common.environment()
    model = args.model or models.default_model()
    epochs = args.epochs or (1 if args.quick else DEFAULT_EPOCHS)
    name = NAME + (f"_{env['backend']}_{args.shard}" if args.shard else "")
    path = common.result_path(
        args.results, name, None if args.shard else env["backend"],
        args.quick,
    )
    payload = common.read_json(path) if os.path.exists(path) else {
        **env, "rows": [], "probes": [],
    }
    payload.update(
        quick=args.quick, model=model, epochs=epochs,
        sequence_length=args.sequence_length,
        probe_epochs=args.probe_epochs,
        learning_rates={m: methods_lib.learning_rate_for(m)
                        for m in METHOD_ORDER},
        probe_learning_rate=methods_lib.BIAS_LEARNING_RATE,
        last_command=env["command"], machine=env["machine"],
    )
    done = {(r["task"], r["seed"], r["method"]) for r in payload["rows"]}
    probed = {(p["task"], p["seed"]) for p in payload["probes"]}
    for task, seed in plan(args):
        todo = [m for m in args.methods if (task, seed, m) not in done]
        if not todo and (task, seed) in probed:
            continue
        start = time.perf_counter()
        run = pipeline.prepare(task, args.data_dir, model, "low", seed,
                               sequence_length=args.sequence_length,
                               max_examples=(16, 32) if args.quick else None)
        classifier = run.classifier
        initial = [keras.ops.convert_to_numpy(v).copy()
                   for v in classifier.weights]
        prepare_s = time.perf_counter() - start
        if (task, seed) not in probed:
            t0 = time.perf_counter()
            keras.utils.set_random_seed(seed)
            beft_probe = pipeline.probe(
                run, args.probe_epochs, methods_lib.BIAS_LEARNING_RATE,
                probe_batches=1 if args.quick else 32, verbose=0,
            )
            results = beft_probe.results
            payload["probes"].append({
                "task": task, "seed": seed,
                "averages": results.averages,
                "rankings": results.rankings,
                "selected": {m: results.selected_by(m)
                             for m in results.methods},
                "inert": list(results.inert),
                "wall_time_s": time.perf_counter() - t0,
            })
            common.write_json(path, payload)
        for method in todo:
            for variable, value in zip(classifier.weights, initial):
                variable.assign(value)
            # The batches' shuffling follows an epoch counter that runs on
            # across `fit` calls; re-made, every method sees the same order.
            run.train_batches = run.new_batches()
            keras.utils.set_random_seed(seed)
            t0 = time.perf_counter()
            setup = methods_lib.set_up(classifier, run.spec, method, seed=seed)
            trainable, total = setup.trainable_params, setup.total_params
            callbacks = setup.callbacks
            classifier.fit(run.train_batches, epochs=epochs, shuffle=False,
                           callbacks=callbacks, verbose=0)
            metrics = pipeline.evaluate(classifier, run.spec, run.dev_batches)
            row = {
                "task": task, "seed": seed, "method": method,
                "main_metric": run.spec.main_metric,
                "metrics": metrics,
                "score": metrics[run.spec.main_metric],
                "trainable_params": trainable,
                "trainable_percent": 100.0 * trainable / total,
                "learning_rate": methods_lib.learning_rate_for(method),
                "epochs": epochs,
                "train_examples": len(run.train),
                "dev_examples": len(run.dev),
                "wall_time_s": time.perf_counter() - t0,
                "load_average": os.getloadavg(),
            }
            row["data_order"] = "same for every method"
            if callbacks:
                row["masked_params"] = callbacks[0].masked_params
            payload["rows"].append(row)
            common.write_json(path, payload)
            print(f"[accuracy] {task} seed {seed} {method}: "
                  f"{run.spec.main_metric} {row['score']:.4f} "
                  f"({row['trainable_percent']:.4f}%, "
                  f"{row['wall_time_s']:.0f} s)", flush=True)
        del run, classifier
        print(f"[accuracy] {task} seed {seed} done "
              f"({prepare_s:.0f} s loading)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
