"""What each benchmark's settings shortened from the paper's, and which
benchmarks did not run."""

from benchmarks import common
from benchmarks.report import accuracy
from benchmarks.report import formatting


def section(step, e2e, scores):
    out = ["## What was shortened, and what did not run", ""]
    for backend in common.BACKENDS:
        out.append(_step_line(backend, step.get(backend)))
    for backend in common.BACKENDS:
        out.append(_e2e_line(backend, e2e.get(backend)))
    for backend in common.BACKENDS:
        out.append(_accuracy_line(backend, scores.get(backend)))
    return out + [""]


def _step_line(backend, payload):
    if payload is None:
        return f"- Step cost, {backend}: **not run**."
    rounds = ", ".join(f"{b['rounds']} measured rounds {p}"
                       for p, b in payload.get("paddings", {}).items())
    memory = payload.get("memory", {})
    lengths = sorted({r["length"] for r in memory.values()})
    return (f"- Step cost, {backend}: {rounds} (after warm-up); peak memory "
            + (f"at length {', '.join(map(str, lengths))} only, methods "
               f"{', '.join(sorted(memory))}" if memory else "**not run**")
            + ".")


def _e2e_line(backend, payload):
    if payload is None:
        return f"- End-to-end, {backend}: **not run**."
    return (f"- End-to-end, {backend}: {payload['probe_epochs']} probe "
            f"epoch + {payload['tune_epochs']} tune epochs instead of the "
            "paper's 16, one run per padding (no repeats), seed "
            f"{payload['seed']}.")


def _accuracy_line(backend, payload):
    if payload is None:
        return f"- Accuracy tables, {backend}: **not run**."
    complete, partial, missing = accuracy.coverage(payload["rows"])
    epochs = sorted({r["epochs"] for r in payload["rows"] if r["epochs"]})
    text = (f"- Accuracy tables, {backend}: the library's default epochs "
            f"for each task and head (epochs run: "
            f"{', '.join(map(str, epochs)) or '-'}); task:seed complete "
            f"(all {len(accuracy.METHODS)} methods): "
            f"{formatting.task_seeds(complete)}")
    if not partial and not missing:
        return text + " (every task and seed)."
    return (text + f"; partial: {formatting.task_seeds(partial)}; "
            f"**not run**: {formatting.task_seeds(missing)}.")
