"""Machine, versions and commands: what each result file records about
the run that wrote it."""

import glob
import os

from benchmarks import common


def recorded(results, quick):
    """[(file name, payload)] of the result files that record their run
    (a `command`), `*_quick.json` or the others as asked, by name."""
    runs = []
    for path in sorted(glob.glob(os.path.join(results, "*.json"))):
        if path.endswith("_quick.json") != quick:
            continue
        payload = common.read_json(path)
        if "command" in payload:
            runs.append((os.path.basename(path), payload))
    return runs


def section(runs):
    out = ["## Machine and versions", ""]
    if not runs:
        return out + ["No benchmark has run yet.", ""]
    with_model = [(n, p) for n, p in runs if "model" in p]
    out += _facts("Machine", runs, _machine)
    out += _facts("Versions", runs, lambda p: ", ".join(
        f"{k} {v}" for k, v in p["versions"].items() if v is not None))
    out += _facts("Model", with_model, lambda p: f"`{p['model']}`")
    return out + [_load(runs), ""]


def commands_section(runs):
    out = [
        "## Commands",
        "",
        "From the repository root, with the project's virtual environment "
        "(each script starts one subprocess per backend with "
        "`KERAS_BACKEND` set; `--quick` is the smoke test below):",
        "",
        "```sh",
        "python -m benchmarks.step_cost            # 1. step cost + memory",
        "python -m benchmarks.end_to_end           # 2. whole method, bucketed vs fixed",
        "python -m benchmarks.accuracy             # 3. accuracy tables (resumable, --plan TASK:SEED ...)",
        "python -m benchmarks.selection            # 4. selection quality",
        "python -m benchmarks.decoder_memory       # 5. OPT memory (torch)",
        "python -m benchmarks.report               # this file and its plots",
        "```",
        "",
        "Smoke test (no timing assertions; results go to `*_quick.json`, "
        "the report of them to a file of your choice; "
        "`tests/test_benchmarks.py` runs the same plumbing in-process on a "
        "tiny BERT preset on every backend, and `.ci/run` leaves these "
        "real-model runs out for time):",
        "",
        "```sh",
        "B=torch; python -m benchmarks.step_cost --quick --backends $B && \\",
        "python -m benchmarks.end_to_end --quick --backends $B && \\",
        "python -m benchmarks.accuracy --quick --backends $B && \\",
        "python -m benchmarks.report --quick --output /tmp/benchmarks_quick.md",
        "```",
        "",
        f"The data is `{common.DEFAULT_DATA_DIR}/<task>/{{train,dev}}.tsv` "
        "(`--data-dir`).",
        "",
    ]
    if runs:
        out += _commands_table(runs)
    return out


def _commands_table(runs):
    """Each file's worker command, and the last one where a later command
    resumed the file."""
    out = [
        "The worker command each result file records (a second line where "
        "a later command resumed the file), `OMP_NUM_THREADS` as recorded, "
        "and the accuracy task:seed pairs the file holds:",
        "",
        "| file | started | command | `OMP_NUM_THREADS` | task:seed |",
        "|---|---|---|---|---|",
    ]
    for name, p in runs:
        commands = [p["command"]] + [
            c for c in [p.get("last_command")] if c and c != p["command"]]
        held = {(r["task"], r["seed"]) for r in p.get("rows", [])
                if "task" in r}
        out.append(
            f"| `{name}` | {p.get('started', '-')} | "
            + "<br>".join(f"`{c}`" for c in commands)
            + f" | {_threads(p)} | "
            + (", ".join(f"{t}:{s}" for t, s in sorted(held)) or "-") + " |"
        )
    return out + [""]


def _threads(payload):
    if "omp_num_threads" not in payload:
        return "not recorded"
    return payload["omp_num_threads"] or "unset"


def _machine(payload):
    m = payload["machine"]
    return (f"{m['cpu_model']}, `nproc` = {m['nproc']} ({m['usable_cpus']} "
            f"usable), RAM {m['memory_gib']} GiB; {m['platform']}")


def _facts(label, runs, describe):
    """One line if every run says the same, else one line per variant with
    the files that say it."""
    variants = {}
    for name, payload in runs:
        variants.setdefault(describe(payload), []).append(name)
    if len(variants) == 1:
        return [f"- {label}: {next(iter(variants))}."]
    return [f"- {label} ({', '.join(names)}): {text}."
            for text, names in variants.items()]


def _load(runs):
    """The 1-minute load average each run started under, and what a load
    above the CPU count means for the times."""
    loads = ", ".join(f"`{n}` {p['machine']['load_average'][0]:.1f}"
                      for n, p in runs)
    busy = [n for n, p in runs
            if p["machine"]["load_average"][0] > p["machine"]["usable_cpus"]]
    text = f"- 1-minute load average at the start of each run: {loads}."
    if busy:
        text += (
            f" In {len(busy)} of {len(runs)} runs it was above the usable "
            "CPUs, so other jobs shared the machine: absolute times are "
            "inflated and noisy; the ratios compare methods measured side "
            "by side (interleaved) under the same load."
        )
    return text
