"""The `beft` command: a thin layer over `beft_keras.pipeline`."""

import argparse
import json
import os
import sys

import numpy as np


def _parser():
    parser = argparse.ArgumentParser(
        prog="beft",
        description="Bias-efficient fine-tuning (BEFT) of language models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="probe, select the bias term, fine-tune it and evaluate",
        description=(
            "The whole BEFT method on a GLUE task: fit all biases while "
            "scoring them, select the best of b_q, b_k, b_v, fine-tune only "
            "it (and the head), evaluate on the dev set. Writes "
            "results.json and, per seed, scores, heatmap and bias delta."
        ),
    )
    run.add_argument("--task", required=True, help="e.g. sst2, rte, cola")
    run.add_argument(
        "--data-dir",
        help="folder of GLUE-style TSV files <task>/{train,dev}.tsv "
        "(omitted: TFDS)",
    )
    run.add_argument(
        "--model",
        help="keras-hub preset name or preset folder "
        "(omitted: the all-MiniLM-L6-v2 package)",
    )
    run.add_argument(
        "--regime", default="low", choices=["low", "medium", "high", "full"]
    )
    run.add_argument("--seeds", type=int, nargs="+", default=[0])
    run.add_argument(
        "--epochs", type=int, help="final fine-tune epochs (omitted: paper's)"
    )
    run.add_argument("--probe-epochs", type=int, default=1)
    run.add_argument(
        "--learning-rate", type=float, help="omitted: the paper's bias-only rate"
    )
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--sequence-length", type=int, default=128)
    run.add_argument("--output", default="runs/beft", help="output folder")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    # TensorFlow's C++ start-up notices would bury the progress bars.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Import late: `beft --help` should not wait for TensorFlow and friends.
    from beft_keras import pipeline
    from beft_keras.files import atomic_write

    try:
        results = [
            pipeline.run(
                args.task,
                data_dir=args.data_dir,
                model=args.model,
                regime=args.regime,
                seed=seed,
                epochs=args.epochs,
                probe_epochs=args.probe_epochs,
                learning_rate=args.learning_rate,
                batch_size=args.batch_size,
                sequence_length=args.sequence_length,
                output=os.path.join(args.output, f"seed_{seed}"),
            )
            for seed in args.seeds
        ]
    except (ValueError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else repr(error)
        print(f"beft: error: {message}", file=sys.stderr)
        return 2
    summary = _summarize(results)
    atomic_write(
        os.path.join(args.output, "results.json"),
        json.dumps(summary, indent=2) + "\n",
    )
    print(_table(summary))
    return 0


def _summarize(results):
    first = results[0]
    metrics = {}
    for name in first["metrics"]:
        values = [r["metrics"][name] for r in results]
        metrics[name] = {
            "per_seed": values,
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
        }
    return {
        "task": first["task"],
        "model": first["model"],
        "backend": first["backend"],
        "regime": first["regime"],
        "seeds": [r["seed"] for r in results],
        "selected": [r["selected"] for r in results],
        "trainable_params": first["trainable_params"],
        "trainable_percent": first["trainable_percent"],
        "metrics": metrics,
        "wall_time_s": sum(r["wall_time_s"] for r in results),
        "runs": results,
    }


def _table(summary):
    lines = [
        f"BEFT on {summary['task']} ({summary['regime']} regime), "
        f"backend {summary['backend']}",
        f"  selected term(s): {', '.join(summary['selected'])}",
        f"  trainable: {summary['trainable_params']:,} params "
        f"({summary['trainable_percent']:.4f}%)",
    ]
    for name, value in summary["metrics"].items():
        lines.append(
            f"  {name}: {value['mean']:.4f} ± {value['std']:.4f} "
            f"over seeds {summary['seeds']}"
        )
    lines.append(f"  wall time: {summary['wall_time_s']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
