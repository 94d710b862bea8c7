"""What every benchmark script shares: the machine and versions, JSON
results, one subprocess per Keras backend.

Every script is run from the repository root as a module, e.g.
`python -m benchmarks.step_cost --quick`. A script's parent process starts
one worker subprocess per backend with `KERAS_BACKEND` set (Keras picks its
backend once, at import), and each worker writes its own JSON file under
`benchmarks/results/`.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

BACKENDS = ("tensorflow", "jax", "torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
# The GLUE TSV folder, relative to the repository root.
DEFAULT_DATA_DIR = os.path.join("..", "shared", "data", "glue")


def base_parser(description):
    """The arguments every script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="Smoke test: tiny subsets, few steps; results go to *_quick.json.",
    )
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--model", default=None,
        help="Preset name or folder; default all-MiniLM-L6-v2 (pip package).",
    )
    parser.add_argument(
        "--results", default=RESULTS, help="Folder for the JSON results."
    )
    parser.add_argument(
        "--sequence-length", type=int, default=128,
        help="The longest batch; 'fixed128' padding pads to it.",
    )
    # Internal: set by the parent process in each backend's subprocess.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def result_path(results, name, backend=None, quick=False):
    parts = [name] + ([backend] if backend else []) + (["quick"] if quick else [])
    return os.path.join(results, "_".join(parts) + ".json")


def worker_argv(argv):
    """The parent's own arguments, for its workers: as given, without
    `--backends` (each worker gets its one backend) or `--worker`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out, skipping = [], False
    for arg in argv:
        if arg == "--backends":
            skipping = True
            continue
        if skipping and not arg.startswith("--"):
            continue
        skipping = False
        if arg != "--worker":
            out.append(arg)
    return out


def run_per_backend(module, argv, backends, timeout=None):
    """Run `python -m module argv --worker` once per backend, each in its own
    process with `KERAS_BACKEND` set; return {backend: exit code}."""
    codes = {}
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend)
        # Quieter TensorFlow; the CPU has no accelerator anyway.
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        command = [sys.executable, "-m", module, *argv, "--worker",
                   "--backends", backend]
        print(f"[{module}] {backend}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        try:
            codes[backend] = subprocess.run(
                command, cwd=ROOT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            codes[backend] = "timeout"
        print(
            f"[{module}] {backend}: exit {codes[backend]} after "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    return codes


def environment():
    """The machine, the load on it, and the versions of everything."""
    import keras
    import keras_hub
    import numpy as np

    versions = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "numpy": np.__version__,
    }
    for name in ("tensorflow", "jax", "torch"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {
        "backend": keras.backend.backend(),
        "versions": versions,
        "machine": machine(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def machine():
    cpu = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                memory_gib = int(line.split()[1]) / 2**20
                break
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "memory_gib": round(memory_gib, 1) if memory_gib else None,
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
    }


def load_accuracy(results, backend, quick=False, pooling="default",
                  padding="bucketed", subset_draw="seeded",
                  batching="bucketed"):
    """The accuracy results of a backend with one head, padding, subset
    draw and batching (the model's own head, length buckets, the library's
    draw and bucketed batches unless named): the rows and probes of
    `accuracy_<backend>*.json` (workers run side by side on different
    tasks, heads and paddings), or None."""
    import glob

    paths = [
        p for p in glob.glob(os.path.join(results, f"accuracy_{backend}*.json"))
        if p.endswith("_quick.json") == quick
    ]
    merged = None
    for path in sorted(paths):
        payload = read_json(path)
        variant = (pooling, padding, subset_draw, batching)
        rows = [r for r in payload["rows"] if _variant(r) == variant]
        probes = [p for p in payload["probes"] if _variant(p) == variant]
        if not rows and not probes:
            continue
        if merged is None:
            merged = dict(payload, rows=[], probes=[], shards=[])
        merged["rows"] += rows
        merged["probes"] += probes
        merged["shards"].append(os.path.basename(path))
    if merged is not None:
        # A task and seed run twice (a stopped worker) counts once: the
        # first record, in file order.
        merged["rows"] = list({
            (r["task"], r["seed"], r["method"]): r
            for r in reversed(merged["rows"])
        }.values())[::-1]
        merged["probes"] = list({
            (p["task"], p["seed"]): p for p in reversed(merged["probes"])
        }.values())[::-1]
    return merged


def add_render_argument(parser):
    """`--render`, for a script that writes docs from its JSON results."""
    parser.add_argument("--render", action="store_true",
                        help="Only write the docs from the JSON results.")


def run_then_render(module, argv, args, render):
    """A script's parent process: its workers, one per backend (none with
    `--render`), then `render()` (not for `--quick`); the exit code."""
    if not args.render:
        codes = run_per_backend(module, worker_argv(argv), args.backends)
        if any(code != 0 for code in codes.values()):
            return 1
    if not args.quick:
        render()
    return 0


def _variant(record):
    """The head, padding, subset draw and batching an accuracy row or probe
    was measured with."""
    return (record.get("pooling", "default"),
            record.get("padding", "bucketed"),
            record.get("subset_draw", "seeded"),
            record.get("batching", "bucketed"))


def write_json(path, payload):
    """Write `payload` as JSON, atomically (a reader never sees half)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(handle, "w") as f:
        json.dump(payload, f, indent=2, default=_jsonable)
        f.write("\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def median(values):
    import numpy as np

    return float(np.median(values)) if len(values) else None


def peak_rss_mib():
    """This process's peak resident memory so far, in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return None
