"""The targets at a glance: step-cost ratio, end-to-end speed-up and
accuracy, per backend."""

from benchmarks import common
from benchmarks.report import formatting

STEP_TARGET = 0.65
SPEEDUP_TARGET = 2.0
PADDINGS = ("bucketed", "fixed128")


def step_ratio(payload, padding):
    """Median step time of b_v over full fine-tuning's, or None."""
    block = payload.get("paddings", {}).get(padding)
    if not block or not block.get("ratio_to_full"):
        return None
    return block["ratio_to_full"]["b_v"]


def padding_accuracies(payload):
    """Dev metric of the first end-to-end run of each padding."""
    return [formatting.first_metric(payload["runs"][p][0]["metrics"])
            for p in PADDINGS]


def verdict(met):
    return "met" if met else "missed"


def section(step, e2e):
    out = [
        "## Targets at a glance",
        "",
        "| backend | step b_v/full, buckets | step b_v/full, fixed 128 "
        f"| target <= {STEP_TARGET} | end-to-end fixed/bucketed "
        f"| target >= {SPEEDUP_TARGET:g}x | accuracy bucketed / fixed "
        "| same accuracy (within 0.01) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend in common.BACKENDS:
        out.append(f"| {backend} | {_step_cells(step.get(backend))} | "
                   f"{_e2e_cells(e2e.get(backend))} |")
    return out + [
        "",
        "The paper's reference for the step target is its Table 2 (BERT-base, "
        "RTE): BEFT 132.9 s against full fine-tuning 206.1 s, a ratio of "
        "0.645 (paper figure, not measured here).",
        "",
    ]


def _step_cells(payload):
    ratios = [step_ratio(payload, p) if payload else None for p in PADDINGS]
    have = [r for r in ratios if r is not None]
    met = (verdict(all(r <= STEP_TARGET for r in have)) if have
           else "not run")
    return " | ".join([formatting.fmt(r, 4) for r in ratios] + [met])


def _e2e_cells(payload):
    if payload is None:
        return "not run | not run | - | -"
    speedup = payload["speedup_bucketed"]
    accs = padding_accuracies(payload)
    same = "yes" if abs(accs[0] - accs[1]) <= 0.01 else "**no**"
    return (f"{speedup:.2f}x | {verdict(speedup >= SPEEDUP_TARGET)} | "
            + " / ".join(formatting.fmt(a) for a in accs)
            + f" | {same} (one seed)")
