"""Section 3: accuracy per method and task, the paper's Tables 1-2 on
MiniLM (`benchmarks.accuracy`)."""

import numpy as np

from benchmarks import common
from benchmarks.report import formatting
from benchmarks.report import plots

LABELS = {
    "b_v": "BEFT term b_v", "b_q": "b_q", "b_k": "b_k",
    "all-bias": "all biases (BitFit)", "random": "random-uniform mask",
    "head": "head only", "full": "full fine-tuning",
}
METHODS = tuple(LABELS)
TASKS = ("sst2", "rte", "cola", "stsb")
# The seeds `benchmarks.accuracy` runs by default.
SEEDS = (0, 1, 2)
UNRECORDED = "not recorded"


def load(results, quick):
    """{backend: merged accuracy payload} of the backends that ran."""
    found = {}
    for backend in common.BACKENDS:
        merged = common.load_accuracy(results, backend, quick)
        if merged is not None:
            found[backend] = merged
    return found


def select(rows, task=None, method=None):
    """The rows of one task and/or method."""
    return [r for r in rows if task in (None, r["task"])
            and method in (None, r["method"])]


def coverage(rows):
    """Task:seed pairs with every method, with some, and with none."""
    done = {(r["task"], r["seed"]) for r in rows}
    methods = {pair: {r["method"] for r in rows
                      if (r["task"], r["seed"]) == pair} for pair in done}
    complete = {p for p in done if methods[p] >= set(METHODS)}
    missing = {(t, s) for t in TASKS for s in SEEDS} - done
    return complete, done - complete, missing


def section(scores, docs_dir, suffix):
    out = ["## 3. Accuracy (Tables 1-2 of the paper, on MiniLM)", ""]
    if not scores:
        return out + ["**Not run.**", ""]
    for backend, payload in scores.items():
        rows = payload["rows"]
        tasks = [t for t in TASKS if select(rows, task=t)]
        out += [_settings(backend, payload, tasks), ""]
        out += _table(rows, tasks) + ["", _notes(rows), "",
                                      _wall_times(rows, tasks), ""]
        missing = coverage(rows)[2]
        if missing:
            out += [f"**Not run:** task:seed "
                    f"{formatting.task_seeds(missing)}.", ""]
        plot = plots.accuracy(payload, tasks, METHODS, docs_dir, backend,
                              suffix)
        if plot:
            out += [f"![accuracy per method and task]({plot})", ""]
    return out + [_paper(), ""]


def _settings(backend, payload, tasks):
    rows = payload["rows"]
    first = {t: select(rows, task=t)[0] for t in tasks}
    return (
        f"Backend {backend}. "
        f"{formatting.count(payload['epochs'], 'epoch')} per method "
        "(**shortened** from the paper's 16 (SST-2, CoLA), 30 (RTE) and 60 "
        "(STS-B)), length buckets up to "
        f"{payload.get('sequence_length', '-')}, learning rate "
        + _rates(payload["learning_rates"])
        + " (the paper's bias rates, e.g. 4e-4 for SST-2, underfit "
        "keras-hub's CLS pooler on this sentence-transformer; see "
        "PAPER.md). Every method starts from the same weights (pretrained "
        "body, seeded head); the probe that section 4 reads trains all "
        f"biases for {formatting.count(payload['probe_epochs'], 'epoch')} at "
        f"{payload['probe_learning_rate']:g}. Training / dev examples and "
        "metric: " + "; ".join(
            f"{t} {first[t]['train_examples']} / {first[t]['dev_examples']}, "
            f"{first[t]['main_metric']}" for t in tasks)
        + ". Seeds run: " + "; ".join(
            f"{t} {sorted({r['seed'] for r in select(rows, task=t)})}"
            for t in tasks)
        + ". Cells: mean ± std over the seeds run (n in brackets; std is "
        "the sample std, blank for one seed). Random-uniform mask: all "
        "biases and the head train, and after every batch each bias "
        "element outside a random mask of "
        + _values(r.get("masked_params")
                  for r in select(rows, method="random"))
        + " elements is put back to its starting value. Result files: "
        + ", ".join(f"`{s}`" for s in payload.get("shards", [])) + "."
    )


def _rates(rates):
    """`5e-05 for full; 0.005 for b_v, ...`, one group per rate."""
    groups = {}
    for method, rate in rates.items():
        groups.setdefault(rate, []).append(method)
    return "; ".join(f"{rate:g} for {', '.join(methods)}"
                     for rate, methods in groups.items())


def _values(values):
    values = sorted({v for v in values if v is not None})
    return ", ".join(f"{v:,}" for v in values) or "-"


def _table(rows, tasks):
    out = ["| method | " + " | ".join(tasks)
           + " | trainable | mean wall time per run |",
           "|---|" + "---|" * (len(tasks) + 2)]
    for method in METHODS:
        mine = select(rows, method=method)
        if not mine:
            continue
        percents = [r["trainable_percent"] for r in mine]
        share = (f"{min(percents):.4f}%"
                 if max(percents) - min(percents) < 5e-5 else
                 f"{min(percents):.4f}-{max(percents):.4f}%")
        wall = np.mean([r["wall_time_s"] for r in mine])
        out.append(
            f"| {LABELS[method]} | "
            + " | ".join(_cell(select(mine, task=t)) for t in tasks)
            + f" | {share} | {wall:.0f} s |"
        )
    return out


def _cell(rows):
    cell = formatting.mean_std([r["score"] for r in rows])
    # A row that records no data order may have seen its own.
    return cell + (" †" if any("data_order" not in r for r in rows) else "")


def _notes(rows):
    """What the rows record about their data order, and what it shows."""
    orders = {}
    for r in rows:
        orders.setdefault(r.get("data_order", UNRECORDED), set()).add(
            (r["task"], r["seed"]))
    text = ("Data order, as each row records it (`data_order`): "
            + "; ".join(f"{order}: {formatting.task_seeds(pairs)}"
                        for order, pairs in sorted(orders.items()))
            + ". † The cell includes rows that record no data order.")
    if len(orders) > 1 and set.intersection(*orders.values()):
        text += " A task:seed in more than one list has rows of each."
    same, differ = _bk_equals_head(rows)
    if same or differ:
        text += (
            " b_k-only and head-only score the same in task:seed "
            f"{formatting.task_seeds(same)}, and differently in "
            f"{formatting.task_seeds(differ)} (the key bias gets no gradient "
            "in softmax attention, so b_k-only training is head-only "
            "training when both see the same data; PAPER.md)."
        )
    return text + (
        " Trainable shares include the task head (the paper's 0.01% for "
        "BERT-base b_v excludes it); they vary slightly by task because "
        "STS-B's head has one output. Wall time is fit plus dev "
        "evaluation, averaged over all tasks run; each row records the "
        "1-minute load average at its start, here "
        + _load_range(rows) + ", so wall times compare between rows "
        "only roughly."
    )


def _bk_equals_head(rows):
    """Task:seed pairs where b_k's score equals head-only's, and not."""
    head = {(r["task"], r["seed"]): r["score"]
            for r in select(rows, method="head")}
    same, differ = set(), set()
    for r in select(rows, method="b_k"):
        pair = (r["task"], r["seed"])
        if pair in head:
            (same if r["score"] == head[pair] else differ).add(pair)
    return same, differ


def _load_range(rows):
    loads = [r["load_average"][0] for r in rows if "load_average" in r]
    return f"{min(loads):.1f} to {max(loads):.1f}" if loads else "-"


def _wall_times(rows, tasks):
    return "Per task, mean wall time per run: " + "; ".join(
        f"{t}: " + ", ".join(
            f"{m} {np.mean([r['wall_time_s'] for r in mine]):.0f} s"
            for m in METHODS
            for mine in [select(rows, task=t, method=m)] if mine)
        for t in tasks) + "."


def _paper():
    return (
        "Paper reference (BERT-base, RTE, Table 2; paper figures, not "
        "measured here): b_v 58.53 ± 1.88 (0.01%, 132.9 s), random uniform "
        "50.40 ± 2.94 (0.01%, 134.6 s), all biases 56.40 ± 2.88 (0.09%, "
        "144.9 s), full fine-tuning 57.46 ± 2.20 (100%, 206.1 s). PAPER.md "
        "records the authors' code on this MiniLM at their settings."
    )
