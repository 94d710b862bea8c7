"""The `beft` command: a thin layer over `beft_keras.pipeline`."""

import argparse
import csv
import io
import json
import os
import sys

import keras
import numpy as np

from beft_keras import pipeline
from beft_keras.files import atomic_write

_DESCRIPTIONS = {
    "probe": (
        "Fit every bias of the model on the task while scoring each bias "
        "term (BEFT, magnitude, Fisher); write scores, rankings and heatmap."
    ),
    "tune": (
        "Fine-tune the chosen bias terms (or all-bias, head, full) and "
        "evaluate on the dev set; write results and the bias delta."
    ),
    "run": (
        "The whole BEFT method: probe, select the best of b_q, b_k, b_v, "
        "fine-tune only it (and the head), evaluate on the dev set."
    ),
}


def _parser():
    parser = argparse.ArgumentParser(
        prog="beft",
        description="Bias-efficient fine-tuning (BEFT) of language models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, description in _DESCRIPTIONS.items():
        command = commands.add_parser(
            name, help=description.split(";")[0], description=description
        )
        _add_common_arguments(command)
        if name == "tune":
            command.add_argument(
                "--terms",
                nargs="+",
                default=["value"],
                help="bias terms (query key value attention_output "
                "ffn_intermediate ffn_output attention_norm ffn_norm other) "
                "or one of all-bias, head, full (default: value)",
            )
        if name in ("tune", "run"):
            command.add_argument(
                "--epochs",
                type=int,
                help="fine-tuning epochs (default: the paper's for the task "
                "and model kind)",
            )
        if name in ("probe", "run"):
            command.add_argument(
                "--probe-epochs", type=int, default=1,
                help="epochs of the probe fit of all biases (default: 1)",
            )
    predict = commands.add_parser(
        "predict",
        help="predict a TSV file with a base model plus a bias delta",
        description=(
            "Load the base model, apply a bias delta written by `beft tune` "
            "or `beft run`, and predict the examples of a TSV file with the "
            "task's text columns; writes the file's rows with a prediction "
            "column, and scores them if the file has a label column."
        ),
    )
    predict.add_argument("--task", required=True, help="e.g. sst2")
    predict.add_argument("--input", required=True, help="TSV file to predict")
    predict.add_argument(
        "--delta", required=True, help="delta.safetensors of a tuned run"
    )
    predict.add_argument(
        "--model",
        help="the base preset the delta was trained on "
        "(default: the all-MiniLM-L6-v2 package)",
    )
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--sequence-length", type=int, default=128)
    predict.add_argument(
        "--output", default="predictions.tsv",
        help="TSV file to write (default: predictions.tsv)",
    )
    return parser


def _add_common_arguments(command):
    command.add_argument(
        "--task", required=True,
        help="e.g. sst2, rte, cola; squad with a causal LM",
    )
    command.add_argument(
        "--data-dir",
        help="folder of GLUE-style TSV files <task>/{train,dev}.tsv "
        "(default: load the task from TFDS)",
    )
    command.add_argument(
        "--model",
        help="keras-hub preset name or preset folder: an encoder "
        "(BERT, ...) or a causal LM (OPT, GPT-2, Qwen, ...), which is "
        "prompted, for sst2, rte, cb and boolq "
        "(default: the all-MiniLM-L6-v2 package)",
    )
    command.add_argument(
        "--regime", default="low", choices=["low", "medium", "high", "full"],
        help="training-set size (default: low)",
    )
    command.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="(default: 0)"
    )
    command.add_argument(
        "--learning-rate", type=float,
        help="(default: the paper's bias-only rate for the task and model "
        "kind; 1e-5 for full fine-tuning)",
    )
    command.add_argument("--batch-size", type=int, default=16)
    command.add_argument(
        "--sequence-length", type=int, default=128,
        help="longest padded batch; shorter batches are padded to their "
        "length bucket (default: 128)",
    )
    command.add_argument(
        "--output", default="runs/beft", help="output folder (default: runs/beft)"
    )


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.command == "predict":
            return _predict(args)
        results = [_run_seed(args, seed) for seed in args.seeds]
    except (ValueError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else repr(error)
        print(f"beft: error: {message}", file=sys.stderr)
        return 2
    summary = _summarize(args.command, results)
    atomic_write(
        os.path.join(args.output, "results.json"),
        json.dumps(summary, indent=2) + "\n",
    )
    print(_table(summary))
    return 0


def _run_seed(args, seed):
    output = os.path.join(args.output, f"seed_{seed}")
    if args.command == "run":
        return pipeline.run(
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
            output=output,
        )
    task_run = pipeline.prepare(
        args.task,
        data_dir=args.data_dir,
        model=args.model,
        regime=args.regime,
        seed=seed,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
    )
    if args.command == "probe":
        beft_probe = pipeline.probe(
            task_run, args.probe_epochs, args.learning_rate
        )
        pipeline.write_scores(task_run, beft_probe, output)
        return {
            "task": task_run.spec.name,
            "model": task_run.model,
            "seed": seed,
            "selected": beft_probe.selected,
            "rankings": beft_probe.results.rankings,
            "averages": beft_probe.results.averages,
        }
    result = pipeline.tune(
        task_run, args.terms, args.epochs, args.learning_rate
    )
    pipeline.write_outputs(task_run, output)
    return result


def _predict(args):
    examples, predictions, metrics = pipeline.predict(
        args.task,
        args.input,
        args.delta,
        model=args.model,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
    )
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"
    )
    names = list(examples.features)
    writer.writerow(names + ["prediction"])
    for i, prediction in enumerate(predictions.tolist()):
        writer.writerow([examples.features[n][i] for n in names] + [prediction])
    atomic_write(args.output, buffer.getvalue())
    print(f"beft predict: {len(predictions)} predictions in {args.output}")
    for name, value in (metrics or {}).items():
        print(f"  {name}: {value:.4f}")
    return 0


def _summarize(command, results):
    first = results[0]
    summary = {
        "command": command,
        "task": first["task"],
        "model": first["model"],
        "backend": keras.backend.backend(),
        "seeds": [r["seed"] for r in results],
    }
    if "selected" in first:
        summary["selected"] = [r["selected"] for r in results]
    if "metrics" in first:
        summary["terms"] = first["terms"]
        summary["trainable_params"] = first["trainable_params"]
        summary["trainable_percent"] = first["trainable_percent"]
        summary["metrics"] = {
            name: {
                "per_seed": [r["metrics"][name] for r in results],
                "mean": float(np.mean([r["metrics"][name] for r in results])),
                "std": float(np.std([r["metrics"][name] for r in results])),
            }
            for name in first["metrics"]
        }
        summary["wall_time_s"] = sum(r["wall_time_s"] for r in results)
    summary["runs"] = results
    return summary


def _table(summary):
    lines = [
        f"beft {summary['command']}: {summary['task']}, backend "
        f"{summary['backend']}, seeds {summary['seeds']}"
    ]
    if "selected" in summary:
        lines.append(f"  selected term(s): {', '.join(summary['selected'])}")
    if "metrics" in summary:
        lines.append(
            f"  trained: {', '.join(summary['terms'])}: "
            f"{summary['trainable_params']:,} params "
            f"({summary['trainable_percent']:.4f}%)"
        )
        for name, value in summary["metrics"].items():
            lines.append(
                f"  {name}: {value['mean']:.4f} ± {value['std']:.4f}"
            )
        lines.append(f"  wall time: {summary['wall_time_s']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
