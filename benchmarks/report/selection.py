"""Section 4: does each score choose the term that trains best?
(`benchmarks.selection`, from the accuracy results)."""

from benchmarks import selection as selection_script
from benchmarks.report import accuracy
from benchmarks.report import formatting
from benchmarks.report import plots

SYMBOL = selection_script.SYMBOL_OF


def section(chosen, scores, docs_dir, suffix):
    out = ["## 4. Selection quality", ""]
    if not chosen:
        return out + ["**Not run** (needs the accuracy results).", ""]
    for backend, payload in chosen.items():
        out += [_intro(backend, payload, scores.get(backend)), "",
                "| task | seed | dev b_q / b_k / b_v | best | BEFT "
                "| magnitude | Fisher |",
                "|---|---|---|---|---|---|---|"]
        out += [_row(case) for case in payload["cases"]]
        if not payload["cases"]:
            out += ["", "**No complete case yet**: a case needs the probe "
                    "and the b_q, b_k (or head-only) and b_v rows of one task "
                    "and seed.", ""]
            continue
        out += ["", _agreement(payload["agreement"]), ""]
        plot = plots.scores(payload, scores.get(backend), accuracy.TASKS,
                            docs_dir, backend, suffix)
        if plot:
            out += [f"![probe score vs dev gain]({plot})", ""]
    return out


def _intro(backend, payload, trained):
    probe = (f" ({formatting.count(trained['probe_epochs'], 'epoch')} of "
             "all biases)"
             if trained else "")
    tie = (f" Terms within {payload['tie']:g} of the best count as best."
           if payload.get("tie") else "")
    return (
        f"Backend {backend}. For each task and seed: the term each score "
        f"chose from that seed's probe{probe} and the term among b_q, b_k, "
        "b_v whose fine-tuning scored best on dev in section 3 (b_k's "
        "score is head-only's where b_k did not run: the key bias gets no "
        "gradient, so the two train the same)." + tie
    )


def _row(case):
    d = case["dev_score"]
    return (
        f"| {case['task']} | {case['seed']} | "
        f"{d['query']:.4f} / {d['key']:.4f} / {d['value']:.4f} | "
        f"{', '.join(SYMBOL[t] for t in case['best'])} | "
        + " | ".join(
            f"{SYMBOL.get(case['chosen'][m], '-')} "
            f"{'✓' if case['agrees'].get(m) else '✗'}"
            for m in selection_script.SCORES)
        + " |"
    )


def _agreement(rates):
    return "Agreement rate: " + ", ".join(
        f"{m} {r['agree']}/{r['cases']}"
        + (f" ({100 * r['rate']:.0f}%)" if r["rate"] is not None else "")
        for m, r in rates.items()) + "."
