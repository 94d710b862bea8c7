"""Section 2: the whole method end to end, bucketed vs fixed padding
(`benchmarks.end_to_end`)."""

from benchmarks import common
from benchmarks.report import formatting
from benchmarks.report import targets


def section(e2e):
    out = ["## 2. End-to-end: the whole method, bucketed vs fixed padding",
           ""]
    if not e2e:
        return out + ["**Not run.**", ""]
    out += _intro(next(iter(e2e.values()))) + _runs(e2e) + _speedups(e2e)
    missing = [b for b in common.BACKENDS if b not in e2e]
    if missing:
        out += ["", f"Not run on: {', '.join(missing)}."]
    return out + ["", _accuracy(e2e), ""]


def _intro(payload):
    first = payload["runs"]["bucketed"][0]
    return [
        f"Task {payload['task']}, {payload['regime']} regime "
        f"({first['train_examples']} training examples, dev set of "
        f"{first['dev_examples']}), seed {payload['seed']}: `prepare` → "
        f"`probe` (Fisher on {payload['probe_batches']} batches, all biases "
        f"for {formatting.count(payload['probe_epochs'], 'epoch')}) → "
        "`apply_selection` → `tune` "
        f"(selected term + head, {payload['tune_epochs']} epochs, lr "
        f"{payload['learning_rate']:g}) → evaluate. **Shortened**: the "
        "paper's SST-2 schedule is 16 epochs; both paddings ran the same "
        "shortened schedule. Times are wall-clock seconds including model "
        "loading and tokenization.",
        "",
        "| backend | padding | total (wall) | total (CPU) | prepare | probe "
        "| tune + eval | train padding efficiency | selected | dev accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]


def _runs(e2e):
    out = []
    for backend, payload in e2e.items():
        for padding, runs in payload["runs"].items():
            for r in runs:
                metric = formatting.first_metric(r["metrics"])
                out.append(
                    f"| {backend} | {padding} | {r['total_s']:.1f} s "
                    f"| {r.get('total_cpu_s', float('nan')):.1f} s "
                    f"| {r['prepare_s']:.1f} s | {r['probe_s']:.1f} s "
                    f"| {r['tune_and_evaluate_s']:.1f} s "
                    f"| {r['train_padding_efficiency']:.2f} "
                    f"| {r['selected']} "
                    f"| {formatting.fmt(metric)} |"
                )
    return out


def _speedups(e2e):
    out = ["", "| backend | speed-up, wall (fixed / bucketed) "
           "| speed-up, CPU seconds | target (wall) |",
           "|---|---|---|---|"]
    for backend, payload in e2e.items():
        s = payload["speedup_bucketed"]
        c = payload.get("cpu_speedup_bucketed")
        out.append(f"| {backend} | {s:.2f}x | "
                   + (f"{c:.2f}x" if c else "-")
                   + f" | {targets.verdict(s >= targets.SPEEDUP_TARGET)} |")
    return out + [
        "",
        "CPU seconds are the process's own (all threads, "
        "`time.process_time`): they are less affected than wall time by "
        "other load on the machine, which can differ between the two "
        "paddings because they run one after the other (not interleaved: "
        "each is a whole run).",
    ]


def _accuracy(e2e):
    """Bucketed vs fixed dev accuracy, and what one seed can tell."""
    accs = {b: targets.padding_accuracies(p) for b, p in e2e.items()}
    differ = [b for b, a in accs.items() if abs(a[0] - a[1]) > 0.01]
    text = (
        "Accuracy: bucketed vs fixed differ only through which examples "
        "share a batch (buckets group examples by length) and float "
        "rounding, with one seed each: "
        + ", ".join(f"{b} {a[0]:.4f} vs {a[1]:.4f}" for b, a in accs.items())
        + "."
    )
    if differ:
        text += (
            " **Not the same accuracy** on " + ", ".join(differ) + ": with "
            "one seed and a schedule this short, the difference cannot be "
            "told apart from the run-to-run spread (the two runs see "
            "different batches in a different order), so the "
            "'same accuracy' half of the target is unverified, not met."
        )
    gaps = [a[1] - a[0] for a in accs.values()]
    if len(gaps) > 1 and all(gap > 0 for gap in gaps):
        text += (
            f" Bucketed is lower on every backend run, by {min(gaps):.3f} "
            f"to {max(gaps):.3f}. The backends draw the same training "
            "subset and the same batch order (numpy seeds), so these are "
            "not independent trials: only more seeds can tell a cost of "
            "length-homogeneous batches (every batch holds sentences of one "
            "length class) from this one draw's luck. Padding randomly "
            "composed batches to their own bucket would keep the batches' "
            "mix at a smaller saving; not measured here."
        )
    return text
