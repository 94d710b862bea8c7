"""The parent process: plan the rows, prepare the data both stacks read,
run each row in its own process and measure it, and read what each run
wrote into its row of the results JSON."""

import contextlib
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import time

from benchmarks import common
from benchmarks.peers import constants
from benchmarks.peers import formatting

NAME = "peers"
# Keras' progress bar at the end of an epoch: "63/63 ━━━ 12s 190ms/step".
_ANSI = re.compile(r"\x1b\[[0-9;]*m|[\b]")
_EPOCH_LINE = re.compile(
    r"^\s*(\d+)/(\d+)\s+━*\s*(\d+)s\s+(\d+)(us|ms|s)/step"
)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def results_path(results, quick):
    return common.result_path(results, NAME, quick=quick)


def plan_settings(args):
    """(tasks, seeds, epochs per task, learning rate per task)."""
    if args.quick:
        tasks, seeds = args.tasks or ["sst2"], args.seeds or [0]
        epochs = {t: args.epochs or 1 for t in tasks}
    else:
        tasks = args.tasks or list(constants.TASKS)
        seeds = args.seeds or list(constants.SEEDS)
        epochs = {t: args.epochs or constants.PAPER_SETTINGS[t][1]
                  for t in tasks}
    rates = {t: args.learning_rate or constants.PAPER_SETTINGS[t][0]
             for t in tasks}
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
                if stack == constants.PEFT:
                    runs.append(dict(base, stack=constants.PEFT,
                                     backend="torch", variant=constants.PEFT))
                    continue
                default_epochs = args.epochs or library.epochs
                if args.quick:
                    default_epochs = epochs[task]
                variants = []
                if constants.DEFAULT in args.variants:
                    variants.append((constants.DEFAULT, default_epochs,
                                     library.learning_rate))
                if constants.MATCHED in args.variants and (
                    (default_epochs, library.learning_rate)
                    != (epochs[task], rates[task])
                    or constants.DEFAULT not in args.variants
                ):
                    variants.append(
                        (constants.MATCHED, epochs[task], rates[task]))
                if constants.CLS in args.variants and "--pooling" in options:
                    variants.append((constants.CLS, epochs[task], rates[task]))
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
            print(f"[peers] skip (done): {formatting.label(run)}", flush=True)
            continue
        row = execute(run, files, model, args)
        payload["rows"] = [
            r for r in payload["rows"] if row_key(r) != row_key(row)
        ] + [row]
        common.write_json(path, payload)
        print(f"[peers] {formatting.label(row)}: {row['status']}, "
              f"{row.get('process_wall_s', 0):.0f} s, "
              f"{row.get('main_metric')}="
              f"{formatting.fmt(row.get('main_metric_value'))}, peak RSS "
              f"{formatting.fmt(row.get('peak_rss_mib'), 0)} MiB",
              flush=True)
    print(f"[peers] wrote {path}", flush=True)
    return 0


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
        train = data_lib.subsample(train, constants.QUICK_TRAIN, seed)
        dev = data_lib.subsample(dev, constants.QUICK_DEV, seed)
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
            # The texts an encoder reads (a prefix feature written into
            # the first), in order.
            "features": {
                name: [str(t) for t in texts]
                for name, texts in zip(spec.features, examples.segments)
            },
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
            label = (repr(float(label)) if spec.is_regression
                     else str(int(label)))
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
    if run["stack"] == constants.PEFT:
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
                   "--regime", "low",
                   "--batch-size", str(constants.BATCH_SIZE),
                   "--sequence-length", str(constants.MAX_LENGTH)]
        if run["variant"] == constants.DEFAULT:
            if args.epochs is not None or args.quick:
                command += ["--epochs", str(run["epochs"])]
        else:
            command += ["--epochs", str(run["epochs"]),
                        "--learning-rate", repr(run["learning_rate"])]
        if run["variant"] == constants.CLS:
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
        batch_size=constants.BATCH_SIZE, max_length=constants.MAX_LENGTH,
        quick=args.quick,
        command=" ".join(f"{k}={v}" for k, v in env_overrides.items())
        + " " + " ".join(_shell_word(_relative(c)) for c in command),
        run_dir=_relative(run_dir), log=_relative(log),
        load_average_before=list(os.getloadavg()),
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        omp_num_threads=env.get("OMP_NUM_THREADS"),
        omp_wait_policy=env.get("OMP_WAIT_POLICY"),
    )
    print(f"[peers] {formatting.label(run)}: {row['command']}", flush=True)
    measured = measure_process(command, env, log, args.timeout)
    row.update(measured)
    row["load_average_after"] = list(os.getloadavg())
    try:
        if row["returncode"] != 0:
            raise RuntimeError(f"exit {row['returncode']}")
        if run["stack"] == constants.PEFT:
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
