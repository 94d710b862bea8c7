"""The `beft` command: a thin layer over `beft_keras.pipeline`.

Every argument is checked before any data or model is loaded; every
failure ends in one line, `beft: error: ...`, and exit code 2.
"""

import argparse
import importlib.metadata
import json
import math
import os
import shutil
import sys
import warnings

# The backends Keras 3 can run BEFT on; checked before Keras is imported,
# which would otherwise fail with a traceback.
BACKENDS = ("tensorflow", "jax", "torch")
# The column `beft predict` writes (replaces, if the input has one).
PREDICTION = "prediction"

_DESCRIPTIONS = {
    "probe": (
        "Fit every bias of the model on the task while scoring each bias "
        "term (BEFT, magnitude, Fisher); write scores, rankings and heatmap."
    ),
    "tune": (
        "Fine-tune the chosen bias terms (or all-bias, head, random, full) "
        "and evaluate on the dev set; write results and the bias delta (the "
        "Keras weights file for full)."
    ),
    "run": (
        "The whole BEFT method: probe, select the best of b_q, b_k, b_v, "
        "fine-tune only it (and the head), evaluate on the dev set."
    ),
}


def _integer(low, high=None):
    """An argparse type: an integer in [low, high)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not an integer: {text!r}"
            ) from None
        if high is None and value < low:
            raise argparse.ArgumentTypeError(
                f"must be at least {low}: {value}"
            )
        if high is not None and not low <= value < high:
            raise argparse.ArgumentTypeError(
                f"must be in [{low}, {high_text}): {value}"
            )
        return value

    high_text = "2**32" if high == 2**32 else high
    return parse


_positive_int = _integer(1)
_seed = _integer(0, 2**32)


def _learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"must be a finite number above 0: {text}"
        )
    return value


class _Parser(argparse.ArgumentParser):
    """Bad arguments end like every other failure: one line, exit 2."""

    def error(self, message):
        self.exit(2, f"beft: error: {message} (see `{self.prog} --help`)\n")


def _parser():
    parser = _Parser(
        prog="beft",
        description="Bias-efficient fine-tuning (BEFT) of language models.",
    )
    # From the installed package's metadata: importing beft_keras would
    # start Keras before the backend is checked.
    parser.add_argument(
        "--version", action="version",
        version=f"beft {importlib.metadata.version('beft-keras')}",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    # Each command's parser, by name.
    parser.commands = commands.choices
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
                "or one of all-bias, head, random, full (default: value)",
            )
        if name in ("tune", "run"):
            command.add_argument(
                "--epochs",
                type=_positive_int,
                help="fine-tuning epochs, at least 1 (default: the task's "
                "for the model kind)",
            )
        command.add_argument(
            "--distribute", choices=["data", "model"],
            help="train on every local device: data parallel (JAX, "
            "TensorFlow), or model parallel from keras-hub's layout map of "
            "the preset (JAX; Llama, Gemma, Qwen) (default: one device)",
        )
        if name in ("probe", "run"):
            command.add_argument(
                "--probe-epochs", type=_positive_int, default=1,
                help="epochs of the probe fit of all biases (default: 1)",
            )
    predict = commands.add_parser(
        "predict",
        help="predict a TSV file with a base model plus a bias delta",
        description=(
            "Load the base model, apply what `beft tune` or `beft run` "
            "wrote (a bias delta, or the weights file of a full fine-tune), "
            "and predict the examples of a TSV file with the task's text "
            "columns; writes the file's rows with a prediction column, and "
            "scores them if the file has a label column."
        ),
    )
    predict.add_argument("--task", required=True, help="e.g. sst2")
    predict.add_argument("--input", required=True, help="TSV file to predict")
    predict.add_argument(
        "--delta", required=True,
        help="delta.safetensors (or model.weights.h5 of a full fine-tune) "
        "of a tuned run",
    )
    predict.add_argument(
        "--model",
        help="the base preset the delta was trained on "
        "(default: the all-MiniLM-L6-v2 package)",
    )
    predict.add_argument(
        "--batch-size", type=_positive_int, default=64,
        help="examples per prediction batch (default: 64)",
    )
    predict.add_argument(
        "--sequence-length", type=_positive_int, default=128,
        help="tokens an input is truncated to, at most the model's longest "
        "input (default: 128)",
    )
    _add_head_arguments(predict)
    predict.add_argument(
        "--allow-base-mismatch", action="store_true",
        help="load a delta made for another base model",
    )
    predict.add_argument(
        "--allow-task-mismatch", action="store_true",
        help="load a delta made for another task",
    )
    predict.add_argument(
        "--output", default="predictions.tsv",
        help="TSV file to write, replaced if it exists "
        "(default: predictions.tsv)",
    )
    return parser


def _add_head_arguments(command):
    command.add_argument(
        "--pooling", choices=["cls", "mean"],
        help="an encoder's head: cls (the preset's classifier) or mean "
        "(mean-pooled embedding) (default: the preset's own pooling, mean "
        "for a sentence-transformer such as all-MiniLM-L6-v2)",
    )
    command.add_argument(
        "--pair-encoding", choices=["cross", "siamese"],
        help="a sentence pair read together (cross) or each sentence on "
        "its own (siamese) (default: siamese on a sentence-transformer "
        "for a pair graded by likeness, such as stsb, rte, mrpc, qqp; "
        "cross otherwise, boolq and wic too)",
    )


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
        "(BERT, ...) or a causal LM (OPT, GPT-2, Qwen, Llama, ...), which "
        "is prompted, on every task but stsb (squad: causal LMs only) "
        "(default: the all-MiniLM-L6-v2 package)",
    )
    command.add_argument(
        "--regime", default="low", choices=["low", "medium", "high", "full"],
        help="training-set size (default: low)",
    )
    command.add_argument(
        "--subset-draw", default="seeded", choices=["seeded", "paper"],
        help="how the training subset is drawn: seeded, or as the BEFT "
        "authors' code draws it (default: seeded)",
    )
    command.add_argument(
        "--batching", default="bucketed", choices=["bucketed", "mixed"],
        help="which examples share a training batch: those of one length "
        "bucket (least padding), or any (mixed, as most trainers draw "
        "them) (default: bucketed)",
    )
    command.add_argument(
        "--seeds", type=_seed, nargs="+", default=[0], help="(default: 0)"
    )
    command.add_argument(
        "--learning-rate", type=_learning_rate,
        help="above 0 (default: the task's bias-only rate for the model "
        "kind; 1e-5 for full fine-tuning)",
    )
    command.add_argument(
        "--batch-size", type=_positive_int, default=16,
        help="examples per training batch (default: 16)",
    )
    command.add_argument(
        "--sequence-length", type=_positive_int, default=128,
        help="longest padded batch, at most the model's longest input; "
        "shorter batches are padded to their length bucket (default: 128)",
    )
    command.add_argument(
        "--output", default="runs/beft", help="output folder (default: runs/beft)"
    )
    _add_head_arguments(command)
    command.add_argument(
        "--overwrite", action="store_true",
        help="replace another run's results in --output (default: refuse)",
    )


def main(argv=None):
    parser = _parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            # Reported by the command's own parser, whose --help lists the
            # options it takes (the top parser's lists only the commands).
            parser.commands[args.command].error(
                f"unrecognized arguments: {' '.join(unknown)}"
            )
    except SystemExit as exit:
        # --help, or bad arguments (already reported): the exit code.
        return exit.code
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend not in BACKENDS:
        return _fail(
            f"KERAS_BACKEND={backend!r} is not a backend beft runs on: "
            f"use one of {', '.join(BACKENDS)}."
        )
    # TensorFlow's start-up log lines would bury the command's own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Imported only now: importing Keras fixes its backend.
    from beft_keras.divergence import TrainingError

    from beft_keras import outputs

    created = None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            created = _check(args)
            if args.command == "predict":
                return _predict(args)
            _run(args)
    except (ValueError, OSError, TrainingError) as error:
        outputs.remove_empty(created)
        message = str(error).splitlines()[0] if str(error) else repr(error)
        return _fail(message)
    except KeyboardInterrupt:
        outputs.remove_empty(created)
        # `predict` writes its one file at the end, atomically.
        kept = (
            "nothing was written" if args.command == "predict"
            else "the seeds that finished are kept"
        )
        print(f"beft: interrupted; {kept}.", file=sys.stderr)
        return 130
    return 0


def _show_warning(message, category, filename, lineno, file=None,
                  line=None):
    """The library's own warnings as one line, as its errors are; any
    other library's as Python shows them."""
    if os.path.abspath(filename).startswith(_PACKAGE + os.sep):
        print(f"beft: warning: {message}", file=file or sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_python_show_warning = warnings.showwarning


def _fail(message):
    print(f"beft: error: {message}", file=sys.stderr)
    return 2


def _check(args):
    """Everything that can be known wrong before loading data or a model.

    Returns:
        The output folder's outermost folder that the check created, or
        `None` (see `outputs.check_output_folder`).
    """
    from beft_keras import data
    from beft_keras import distribution
    from beft_keras import files
    from beft_keras import outputs
    from beft_keras import tuning

    data.get_task(args.task)
    if args.command == "predict":
        for path, what in ((args.input, "input"), (args.delta, "delta")):
            if not os.path.isfile(path):
                raise ValueError(f"No {what} file '{path}'.")
        # Checked now: `atomic_write` would find it only when the
        # predictions are written, after all the work.
        if files.names_a_folder(args.output):
            raise ValueError(f"Output '{args.output}' is a folder, not a file.")
        for path, what in ((args.input, "input"), (args.delta, "delta")):
            if os.path.realpath(args.output) == os.path.realpath(path):
                raise ValueError(
                    f"Output '{args.output}' is the {what} file: choose "
                    f"another --output, so that the {what} is kept."
                )
        # The output's folder is created if needed: the nearest one that
        # exists must take files.
        folder = os.path.dirname(os.path.abspath(args.output))
        while not os.path.exists(folder):
            folder = os.path.dirname(folder)
        if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
            raise ValueError(f"Output folder '{folder}' cannot be written.")
        return None
    if args.command == "tune":
        args.terms = list(tuning.parse_terms(args.terms))
    if args.data_dir is not None:
        data.check_data_dir(args.data_dir)
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds repeats a seed: {args.seeds}.")
    if args.distribute:
        distribution.check_supported(args.distribute)
    return outputs.check_output_folder(args.output, args.overwrite)


def _run(args):
    """Every seed in turn; each seed's results are written as soon as it
    is done, and the summary over the finished seeds after each."""
    from beft_keras import outputs
    from beft_keras import pipeline
    from beft_keras.files import atomic_write

    distribution = None
    if args.distribute:
        from beft_keras import distribution as distribution_lib
        from beft_keras import models

        distribution = distribution_lib.get_distribution(
            args.distribute, model=args.model or models.default_model()
        )
    # What --overwrite replaces, once the first new seed is complete.
    previous = outputs.previous_run_files(args.output)
    results = []
    for seed in args.seeds:
        folder = outputs.staging_folder(args.output, seed)
        # Left by a run that was killed.
        shutil.rmtree(folder, ignore_errors=True)
        try:
            result = _run_seed(args, seed, folder, distribution)
            outputs.write_result(folder, result)
        except BaseException:
            # Only complete seeds stay: no delta without its results.
            shutil.rmtree(folder, ignore_errors=True)
            raise
        outputs.commit_seed(args.output, seed, previous)
        previous = ()
        results.append(result)
        summary = pipeline.summarize(args.command, results)
        atomic_write(
            os.path.join(args.output, outputs.RESULTS_FILE),
            json.dumps(summary, indent=2) + "\n",
        )
    print(_table(summary))


def _run_seed(args, seed, folder, distribution=None):
    from beft_keras import outputs
    from beft_keras import pipeline
    from beft_keras import tuning

    loading = dict(
        data_dir=args.data_dir,
        model=args.model,
        regime=args.regime,
        subset_draw=args.subset_draw,
        batching=args.batching,
        seed=seed,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
        pooling=args.pooling,
        pair_encoding=args.pair_encoding,
        distribution=distribution,
    )
    if args.command == "run":
        return pipeline.run(
            args.task,
            **loading,
            epochs=args.epochs,
            probe_epochs=args.probe_epochs,
            learning_rate=args.learning_rate,
            output=folder,
        )
    task_run = pipeline.prepare(args.task, **loading)
    if args.command == "probe":
        beft_probe = pipeline.probe(
            task_run, args.probe_epochs, args.learning_rate
        )
        outputs.write_scores(task_run, beft_probe, folder)
        return {
            **task_run.describe(),
            "probe_epochs": args.probe_epochs,
            # What the probe fit ran at: the given rate or the task's.
            "learning_rate": (
                task_run.settings.learning_rate
                if args.learning_rate is None else args.learning_rate
            ),
            "selected": beft_probe.selected,
            "rankings": beft_probe.results.rankings,
            "averages": beft_probe.results.averages,
        }
    result = pipeline.tune(
        task_run, args.terms, args.epochs, args.learning_rate
    )
    outputs.save_tuned(task_run, folder, full=args.terms == [tuning.FULL])
    return result


def _predict(args):
    from beft_keras import data
    from beft_keras import pipeline
    from beft_keras.files import atomic_write

    _, predictions, metrics = pipeline.predict(
        args.task,
        args.input,
        args.delta,
        model=args.model,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
        allow_base_mismatch=args.allow_base_mismatch,
        allow_task_mismatch=args.allow_task_mismatch,
        pooling=args.pooling,
        pair_encoding=args.pair_encoding,
    )
    # The input's rows as they are, every column and every character, so
    # that each prediction sits beside the row it predicts.
    header, rows = data.read_rows(args.input)
    column = header.index(PREDICTION) if PREDICTION in header else len(header)
    lines = []
    for row, prediction in zip(
        [header, *rows], [PREDICTION, *predictions.tolist()]
    ):
        row[column:column + 1] = [_field(prediction)]
        lines.append("\t".join(row))
    atomic_write(args.output, "\n".join(lines) + "\n")
    print(f"beft predict: {len(predictions)} predictions in {args.output}")
    for name, value in (metrics or {}).items():
        print(f"  {name}: {value:.4f}")
    return 0


def _field(prediction):
    """A prediction as one TSV field: a generated answer's tabs and line
    breaks, which would split the row, become spaces."""
    if isinstance(prediction, str):
        return " ".join(prediction.split())
    return str(prediction)


def _table(summary):
    lines = [
        f"beft {summary['command']}: {summary['task']}, backend "
        f"{summary['backend']}, seeds {summary['seeds']}"
    ]
    if "selected" in summary:
        lines.append(f"  selected term(s): {', '.join(summary['selected'])}")
    if "metrics" in summary:
        runs = (
            [summary] if summary["terms"] is not None
            else summary["runs"]
        )
        for run in runs:
            seed = "" if run is summary else f" (seed {run['seed']})"
            lines.append(
                f"  trained{seed}: {', '.join(run['terms'])}: "
                f"{run['trainable_params']:,} params "
                f"({run['trainable_percent']:.4f}%)"
            )
        if summary["terms"] is None:
            lines.append(
                "  the seeds trained different terms: the mean below mixes "
                "them"
            )
        for name, value in summary["metrics"].items():
            spread = (
                "" if value["std"] is None
                else f" ± {value['std']:.4f} (sample std)"
            )
            lines.append(f"  {name}: {value['mean']:.4f}{spread}")
        lines.append(f"  wall time: {summary['wall_time_s']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
