"""Peak memory and step time of b_v-only training of OPT, against full
fine-tuning with AdamW and against inference.

Each measurement runs in its own process (a process's allocator keeps what
it has freed, so measurements cannot share one): it builds an OPT causal LM
of the chosen shape with random weights, sets it up for the method, and
runs a few steps on one batch of random token ids (batch 8, length 128):
`train_on_batch` with the causal-LM loss for the training methods,
`predict_on_batch` for inference. The process reports the peak resident
memory of the steps alone (the high-water mark, reset once the model is
ready: the figure the target is judged on), its resident memory once the
model is ready, its peak over its whole life (`ru_maxrss`, random
initialisation included), and the median time of the steps after the first.

Methods: `inference`; `b_v`, value biases only; `b_v_remat`, the same with
every transformer layer built under `keras.RematScope` (gradient
checkpointing: backward keeps each layer's input and recomputes one
layer's activations at a time); `full`, every weight with AdamW.

The torch backend runs it: eager, it has no compilation whose own memory
and time would blur a step's, and it computes no gradient for a frozen
weight. The parent process runs the measurements one at a time, skips one
whose estimated need exceeds the memory available (full fine-tuning of
OPT-1.3B: weights, gradients and two AdamW moments alone are 16 bytes per
parameter), and kills a process whose resident memory passes `--cap-gib`.

    python -m benchmarks.decoder_memory                # 125m and 1.3b
    python -m benchmarks.decoder_memory --sizes 125m   # one shape
"""

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time

from benchmarks import common

NAME = "decoder_memory"
BACKEND = "torch"
METHODS = ("inference", "b_v", "b_v_remat", "full")
# The shapes of keras-hub's `opt_125m_en` and `opt_1.3b_en` presets.
SHAPES = {
    "125m": dict(num_layers=12, num_heads=12, hidden_dim=768,
                 intermediate_dim=3072),
    "1.3b": dict(num_layers=24, num_heads=32, hidden_dim=2048,
                 intermediate_dim=8192),
}
COMMON_CONFIG = dict(vocabulary_size=50272, max_sequence_length=2048,
                     dropout=0.1)
DEFAULT_STEPS = {"125m": 4, "1.3b": 3}
BATCH_SIZE = 8
SEQUENCE_LENGTH = 128
LEARNING_RATES = {"b_v": 1e-3, "b_v_remat": 1e-3, "full": 1e-5}
# Bytes per parameter a method holds besides activations: float32 weights,
# plus, when every weight trains, gradients and AdamW's two moments.
STATE_BYTES = {"inference": 4, "b_v": 4, "b_v_remat": 4, "full": 16}
# The target: b_v-only training peaks at most this much over
# inference.
TARGET_RATIO = 1.3
GIB = 2**30


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SHAPES),
                        choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        choices=METHODS)
    parser.add_argument("--steps", type=int, default=None,
                        help="Steps per measurement, the first untimed; "
                        "default 4 for 125m, 3 for 1.3b.")
    parser.add_argument("--cap-gib", type=float, default=18.0,
                        help="Kill a measurement whose RSS passes this.")
    parser.add_argument("--results", default=common.RESULTS)
    # Internal: one measurement, in its own process.
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "METHOD"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        size, method = args.worker
        steps = args.steps or DEFAULT_STEPS[size]
        print(json.dumps(measure(size, method, steps)), flush=True)
        return 0

    command = " ".join(["python -m benchmarks.decoder_memory", *sys.argv[1:]])
    environment = _environment(command)
    rows = []
    for size in args.sizes:
        for method in args.methods:
            steps = args.steps or DEFAULT_STEPS[size]
            row = {"size": size, "method": method, "steps": steps}
            row.update(_run_one(size, method, steps, args.cap_gib))
            print(f"[{NAME}] {size} {method}: {row}", flush=True)
            rows.append(row)
    _add_ratios(rows)
    payload = {
        **environment,
        "batch_size": BATCH_SIZE,
        "sequence_length": SEQUENCE_LENGTH,
        "config": {size: {**COMMON_CONFIG, **SHAPES[size]} for size in SHAPES},
        "results": rows,
    }
    common.write_json(os.path.join(args.results, NAME + ".json"), payload)
    with open(os.path.join(args.results, NAME + ".md"), "w") as f:
        f.write(markdown(payload))
    return 0


def num_params(size):
    """Parameters of an OPT backbone of this shape, from its config."""
    shape = {**COMMON_CONFIG, **SHAPES[size]}
    d, ff = shape["hidden_dim"], shape["intermediate_dim"]
    embeddings = (shape["vocabulary_size"] + shape["max_sequence_length"]) * d
    attention = 4 * d * d + 4 * d
    feedforward = 2 * d * ff + ff + d
    norms = 2 * 2 * d
    return embeddings + shape["num_layers"] * (
        attention + feedforward + norms
    ) + 2 * d


def estimated_gib(size, method):
    """Model state plus a rough bound on activations: weights (and their
    training state), and for training, what backward keeps per layer."""
    shape = SHAPES[size]
    tokens = BATCH_SIZE * SEQUENCE_LENGTH
    logits = tokens * COMMON_CONFIG["vocabulary_size"] * 4
    state = num_params(size) * STATE_BYTES[method]
    if method == "inference":
        return (state + 2 * logits) / GIB
    per_layer = tokens * 4 * (
        12 * shape["hidden_dim"] + 3 * shape["intermediate_dim"]
    ) + 3 * 4 * BATCH_SIZE * shape["num_heads"] * SEQUENCE_LENGTH**2
    return (state + shape["num_layers"] * per_layer + 4 * logits) / GIB


def _run_one(size, method, steps, cap_gib):
    needed = estimated_gib(size, method)
    available = _available_gib()
    limit = min(cap_gib, available - 1.0)
    if needed > limit:
        return {
            "status": "does not fit",
            "estimated_gib": round(needed, 1),
            "state_gib": round(num_params(size) * STATE_BYTES[method] / GIB, 1),
            "available_gib": round(available, 1),
            "cap_gib": cap_gib,
        }
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.decoder_memory", "--worker", size,
         method, "--steps", str(steps)],
        cwd=common.ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )
    highest = 0.0
    while process.poll() is None:
        rss = _rss_gib(process.pid)
        highest = max(highest, rss)
        if rss > cap_gib:
            process.kill()
            process.wait()
            return {"status": f"killed above {cap_gib} GiB",
                    "estimated_gib": round(needed, 1)}
        time.sleep(0.5)
    output = process.stdout.read().strip().splitlines()
    if process.returncode != 0 or not output:
        return {"status": f"failed (exit {process.returncode})"}
    record = json.loads(output[-1])
    record.update(status="ok", estimated_gib=round(needed, 1))
    return record


def measure(size, method, steps):
    """One measurement, in this process."""
    import keras
    import keras_hub
    import numpy as np

    import beft_keras

    keras.utils.set_random_seed(0)
    # Gradient checkpointing of each transformer layer: backward keeps only
    # the layers' inputs and recomputes one layer's activations at a time.
    remat = keras.RematScope(
        mode="list_of_layers" if method == "b_v_remat" else None,
        layer_names=[
            f"transformer_layer_{i}" for i in range(SHAPES[size]["num_layers"])
        ],
    )
    with remat:
        backbone = keras_hub.models.OPTBackbone(
            **COMMON_CONFIG, **SHAPES[size]
        )
    model = keras_hub.models.OPTCausalLM(backbone=backbone, preprocessor=None)
    if method in ("b_v", "b_v_remat"):
        beft_keras.BiasOnlyTrainable("value").apply(model)
    if method != "inference":
        model.compile(
            optimizer=keras.optimizers.AdamW(LEARNING_RATES[method]),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[],
        )
    rng = np.random.default_rng(0)
    token_ids = rng.integers(
        3, COMMON_CONFIG["vocabulary_size"], (BATCH_SIZE, SEQUENCE_LENGTH + 1)
    ).astype("int32")
    x = {
        "token_ids": token_ids[:, :-1],
        "padding_mask": np.ones((BATCH_SIZE, SEQUENCE_LENGTH), "bool"),
    }
    y = token_ids[:, 1:]
    # Random initialisation leaves freed temporaries that glibc keeps
    # resident, by chance up to 3.4 GiB more for the 1.3b shape; returning
    # them makes `loaded` the model's own memory, the same for every method.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    loaded = common.current_rss_mib()
    # Read before the reset, which lowers `ru_maxrss` too.
    construction_peak = common.peak_rss_mib()
    _reset_peak()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        if method == "inference":
            model.predict_on_batch(x)
        else:
            model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return {
        "params": int(sum(np.prod(v.shape) for v in model.weights)),
        "trainable_params": int(
            sum(np.prod(v.shape) for v in model.trainable_weights)
        ) if method != "inference" else 0,
        "ru_maxrss_mib": max(construction_peak, _peak_mib()),
        "rss_loaded_mib": loaded,
        "steps_peak_mib": _peak_mib(),
        "first_step_s": times[0],
        "median_step_s": common.median(times[1:]),
        "step_times_s": times,
    }


def _add_ratios(rows):
    """Each training method's peaks over inference's, same size."""
    inference = {r["size"]: r for r in rows
                 if r["method"] == "inference" and r["status"] == "ok"}
    for row in rows:
        base = inference.get(row["size"])
        if base is None or row["status"] != "ok":
            continue
        row["ru_maxrss_vs_inference"] = round(
            row["ru_maxrss_mib"] / base["ru_maxrss_mib"], 2
        )
        row["steps_peak_vs_inference"] = round(
            row["steps_peak_mib"] / base["steps_peak_mib"], 2
        )


def markdown(payload, title="# OPT: b_v-only training vs full fine-tuning "
             "vs inference"):
    versions = payload["versions"]
    machine = payload["machine"]
    lines = [
        title,
        "",
        f"Random-weight OPT causal LMs of the shapes of `opt_125m_en` and "
        f"`opt_1.3b_en`, float32, batch {payload['batch_size']}, length "
        f"{payload['sequence_length']}, causal-LM loss, AdamW; one process "
        "per measurement. Peak RSS is `ru_maxrss` (model construction "
        "included, random initialisation too); steps peak is the "
        "high-water mark of the steps alone, the figure the 1.3x target is "
        "judged on; ratios are to inference of the same model. `b_v_remat` "
        "builds every transformer layer under `keras.RematScope` (gradient "
        "checkpointing). The first step is not in the median.",
        "",
        f"- Machine: {machine['cpu_model']}, {machine['usable_cpus']} usable "
        f"CPUs, {machine['memory_gib']} GiB, load average "
        f"{', '.join(f'{x:.1f}' for x in machine['load_average'])} "
        "(shared with other jobs: times are noisy)",
        f"- Backend: {payload['backend']}; keras {versions['keras']}, "
        f"keras-hub {versions['keras_hub']}, torch {versions['torch']}, "
        f"python {versions['python']}",
        f"- Command: `{payload['command']}` ({payload['started']})",
        "",
        "| model | method | trainable params | peak RSS (GiB) | "
        "x inference | steps peak (GiB) | x inference | loaded (GiB) | "
        "median step (s) | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["results"]:
        if row["status"] != "ok":
            lines.append(
                f"| {row['size']} | {row['method']} | | | | | | | | "
                f"{row['status']}: needs ~{row['estimated_gib']} GiB "
                f"({row.get('state_gib', '?')} GiB of weights, gradients "
                f"and moments alone), {row.get('available_gib', '?')} GiB "
                "available |"
            )
            continue
        lines.append(
            f"| {row['size']} | {row['method']} | "
            f"{row['trainable_params']:,} of {row['params']:,} | "
            f"{row['ru_maxrss_mib'] / 1024:.2f} | "
            f"{row.get('ru_maxrss_vs_inference', 1.0):.2f} | "
            f"{row['steps_peak_mib'] / 1024:.2f} | "
            f"{row.get('steps_peak_vs_inference', 1.0):.2f} | "
            f"{row['rss_loaded_mib'] / 1024:.2f} | "
            f"{_seconds(row['median_step_s'])} | ok |"
        )
    lines.append("")
    for row in payload["results"]:
        if row["method"] in ("b_v", "b_v_remat") and (
            "steps_peak_vs_inference" in row
        ):
            ratio = row["steps_peak_vs_inference"]
            verdict = "met" if ratio <= TARGET_RATIO else "not met"
            lines.append(
                f"- {row['size']}, {row['method']}: the steps' peak is "
                f"{ratio:.2f}x inference's (target <= {TARGET_RATIO}x: "
                f"{verdict})."
            )
    return "\n".join(lines) + "\n"


def _seconds(value):
    return "n/a" if value is None else f"{value:.2f}"


def _environment(command):
    """Machine and versions, without importing a backend here."""
    result = subprocess.run(
        [sys.executable, "-c",
         "import json; from benchmarks import common; "
         "print(json.dumps(common.environment()))"],
        cwd=common.ROOT, capture_output=True, text=True, check=True,
        env=dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    environment = json.loads(result.stdout.strip().splitlines()[-1])
    environment["command"] = command
    return environment


def _available_gib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) * 1024 / GIB
    raise OSError("/proc/meminfo has no MemAvailable")


def _rss_gib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) * 1024 / GIB
    except FileNotFoundError:
        pass
    return 0.0


def _reset_peak():
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    raise OSError("/proc/self/status has no VmHWM")


if __name__ == "__main__":
    sys.exit(main())
