"""Section 3: accuracy per method and task, the paper's Tables 1-2 on
MiniLM (`benchmarks.accuracy`)."""

import os

import numpy as np

from benchmarks import common
from benchmarks.accuracy import BATCHINGS
from benchmarks.accuracy import BUCKETED
from benchmarks.report import formatting
from benchmarks.report import plots

LABELS = {
    "b_v": "BEFT term b_v", "b_q": "b_q", "b_k": "b_k",
    "all-bias": "all biases (BitFit)", "random": "random-uniform mask",
    "head": "head only", "full": "full fine-tuning",
    "untuned": "untuned (no training)",
}
METHODS = tuple(LABELS)
TASKS = ("sst2", "rte", "cola", "stsb")
# The seeds `benchmarks.accuracy` runs by default.
SEEDS = (0, 1, 2)
# The authors' code on this MiniLM with its [CLS]-pooler head, at the
# paper's settings (PAPER.md; issue #16).
AUTHORS = {("rte", "b_v"): 0.552, ("rte", "all-bias"): 0.567,
           ("sst2", "b_v"): 0.714, ("sst2", "all-bias"): 0.790}
# `benchmarks.authors_code`'s --bias-terms for each method.
AUTHORS_TERMS = {"b_v": ["value"], "b_q": ["query"], "b_k": ["key"],
                 "all-bias": ["all"]}
# Accuracy of always predicting RTE's most frequent dev class (146 of 277).
# STS-B's untuned baseline is measured: the grid's `untuned` rows.
RTE_MAJORITY = 0.527


def load(results, quick):
    """{backend: merged accuracy payload} of the model's own head with
    length buckets, for the backends that ran."""
    found = {}
    for backend in common.BACKENDS:
        merged = common.load_accuracy(results, backend, quick)
        if merged is not None:
            found[backend] = merged
    return found


def load_authors(results, quick):
    """What `benchmarks.authors_code` wrote (the authors' own training code
    on this model); nothing for a quick report."""
    path = os.path.join(results, "authors_code.json")
    if quick or not os.path.exists(path):
        return {}
    return common.read_json(path)


def authors_rows(authors, task, method):
    """The authors' code's runs of a task and method, by seed."""
    terms = AUTHORS_TERMS.get(method)
    return {r["seed"]: r for r in authors.get("rows", [])
            if r["task"] == task and r["terms"] == terms}


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


def section(scores, docs_dir, suffix, results=None, quick=False):
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
        variants = {}
        fixed = None
        authors = {}
        if results is not None:
            authors = load_authors(results, quick)
            variants = {
                batching: (
                    common.load_accuracy(results, backend, quick,
                                         pooling="cls", batching=batching),
                    common.load_accuracy(results, backend, quick,
                                         pooling="cls", subset_draw="paper",
                                         batching=batching))
                for batching in BATCHINGS}
            fixed = common.load_accuracy(
                results, backend, quick,
                padding=f"fixed{payload['sequence_length']}")
        out += _targets(rows, variants, fixed, authors) + [""]
        for batching, (cls, paper) in variants.items():
            out += (_cls_table(cls, batching)
                    + _paper_subset_table(paper, authors, batching))
        out += _padding_table(rows, fixed)
    return out + [_paper(), ""]


def _settings(backend, payload, tasks):
    rows = payload["rows"]
    first = {t: select(rows, task=t)[0] for t in tasks}
    return (
        f"Backend {backend}; the library's defaults, as `beft tune --task T "
        "--terms X` runs them: the model's own head (per task below), length "
        f"buckets up to {payload.get('sequence_length', '-')}, the default "
        "learning rate and epochs of the task and head "
        "(`beft_keras.training_settings`), batch 16, AdamW. Every method "
        "starts from the same weights (pretrained body, seeded head) and "
        "sees the same batches; the probe that section 4 reads trains all "
        f"biases for {formatting.count(payload['probe_epochs'], 'epoch')}. "
        "Per task: " + "; ".join(
            f"{t}: head {first[t].get('head', '-')}, "
            f"{first[t]['train_examples']} / {first[t]['dev_examples']} "
            f"training / dev examples, {first[t]['main_metric']}, "
            + _schedules(select(rows, task=t))
            for t in tasks)
        + ". Cells: mean ± std over the seeds run (n in brackets; std is "
        "the sample std, none for one seed). Random-uniform mask: all "
        "biases and the head train, and after every batch each bias "
        "element outside a random mask as large as b_v is put back to its "
        "starting value. Untuned: the starting weights evaluated (for "
        "STS-B's siamese head, the pretrained model's own cosine "
        "similarity). Result files: "
        + ", ".join(f"`{s}`" for s in payload.get("shards", [])) + "."
    )


def _schedules(rows):
    """`lr 0.0004 x 16 epochs for b_v, all-bias; ...`, one group each."""
    groups = {}
    for r in rows:
        if r["method"] != "untuned":
            key = (r["learning_rate"], r["epochs"])
            groups.setdefault(key, []).append(r["method"])
    return "; ".join(
        f"lr {rate:g} x {formatting.count(epochs, 'epoch')} for "
        + ", ".join(dict.fromkeys(methods))
        for (rate, epochs), methods in groups.items())


def _mean(rows, task, method):
    """(mean score, seeds) of a task and method; (None, 0) if not run."""
    values = [r["score"] for r in select(rows, task, method)]
    return (float(np.mean(values)) if values else None), len(values)


def _targets(rows, variants, fixed, authors=None):
    """Issue #16's targets, each measured against these rows; the
    `--pooling cls` ones for each batching in `variants` ({batching:
    (cls rows, paper-draw rows)})."""
    out = ["Targets (issue #16; means over seeds; a verdict on fewer than "
           f"{len(SEEDS)} seeds is provisional):", "",
           "| target | measured | verdict |", "|---|---|---|"]

    def line(target, measured, met, seeds):
        out.append(f"| {target} | {measured} | "
                   f"{formatting.verdict(met, seeds, len(SEEDS))} |")

    def fmt(value):
        return formatting.fmt(value, 4)

    v, n = _mean(rows, "sst2", "b_v")
    a, na = _mean(rows, "sst2", "all-bias")
    f, nf = _mean(rows, "sst2", "full")
    line("SST-2 b_v >= 0.80", fmt(v), None if v is None else v >= 0.80, n)
    line("SST-2 b_v within 0.01 of all-bias", f"{fmt(v)} vs {fmt(a)}",
         None if None in (v, a) else a - v <= 0.01, min(n, na))
    line("SST-2 b_v within 0.02 of full", f"{fmt(v)} vs {fmt(f)}",
         None if None in (v, f) else f - v <= 0.02, min(n, nf))
    v, n = _mean(rows, "stsb", "b_v")
    line("STS-B b_v Pearson >= 0.85", fmt(v),
         None if v is None else v >= 0.85, n)
    untuned = {r["seed"]: r["score"] for r in select(rows, "stsb", "untuned")}
    pairs = [(r["score"], untuned[r["seed"]])
             for r in select(rows, "stsb", "b_v") if r["seed"] in untuned]
    line("STS-B b_v above the untuned cosine, every seed",
         ", ".join(f"{b:.4f} > {u:.4f}" for b, u in pairs) or "-",
         all(b > u for b, u in pairs) if pairs else None, len(pairs))
    v, n = _mean(rows, "rte", "b_v")
    line(f"RTE b_v above the majority class {RTE_MAJORITY}", fmt(v),
         None if v is None else v > RTE_MAJORITY, n)
    v, n = _mean(rows, "cola", "b_v")
    a, na = _mean(rows, "cola", "all-bias")
    line("CoLA b_v within 0.03 of all-bias, both > 0.15",
         f"{fmt(v)} vs {fmt(a)}",
         None if None in (v, a) else abs(a - v) <= 0.03 and min(v, a) > 0.15,
         min(n, na))
    for batching, (cls, paper) in variants.items():
        if batching != BUCKETED and not (cls or paper):
            continue  # An option nobody ran: no "not run" lines for it.
        _cls_lines(line, fmt, cls, paper, authors or {},
                  "" if batching == BUCKETED else f", {batching} batches")
    v, n = _mean(rows, "sst2", "b_v")
    w, nw = _mean(fixed["rows"] if fixed else [], "sst2", "b_v")
    line("SST-2 b_v, buckets within 0.01 of fixed padding",
         f"{fmt(v)} vs {fmt(w)}",
         None if None in (v, w) else abs(v - w) <= 0.01, min(n, nw))
    return out


def _cls_lines(line, fmt, cls, paper, authors, label):
    """The `--pooling cls` targets: against the authors' figures, and
    against their code at identical settings on their draw."""
    for (task, method), theirs in AUTHORS.items():
        mine, n = _mean(cls["rows"] if cls else [], task, method)
        line(f"--pooling cls{label}, {task} {method} >= the authors' "
             f"{theirs}", fmt(mine), None if mine is None else mine >= theirs,
             n)
    for (task, method), mine, theirs in _identical_settings(paper, authors):
        for epoch, key in (("last", "score"), ("best", "best")):
            ours = float(np.mean([m[key] for m in mine]))
            peer = float(np.mean([t[epoch] for t in theirs]))
            line(f"--pooling cls{label}, the authors' draw, {task} {method} "
                 f">= the authors' code at identical settings ({epoch} "
                 "epoch, seeds both ran)", f"{fmt(ours)} vs {fmt(peer)}",
                 ours >= peer, len(mine))


def _cls_table(cls, batching=BUCKETED):
    """`--pooling cls` against the authors' code at the same settings."""
    if not cls:
        return []
    rows = cls["rows"]
    out = ["With `--pooling cls` (keras-hub's `BertTextClassifier`: the CLS "
           "token through the pooler), the paper's settings, "
           + _batching_words(batching) + ", against the authors' code on "
           "this model (PAPER.md):", "",
           "| task | method | lr x epochs | this library, last epoch "
           "| best epoch | authors' code |",
           "|---|---|---|---|---|---|"]
    for (task, method), theirs in AUTHORS.items():
        mine = select(rows, task, method)
        if mine:
            best = formatting.mean_std([max(r["curve"]) for r in mine
                                        if r.get("curve")])
            out.append(f"| {task} | {method} | {_schedules(mine)[3:]} | "
                       f"{_cell(mine)} | {best} | {theirs} |")
    return out + ["", "The authors' code evaluates the dev set after "
                  "every epoch and its learning-curve plots label the "
                  "maximum (`BEFT_evaluator.py`, `plot_learning_curves`), "
                  "so its figures compare with the best-epoch column; the "
                  "library's results are the last epoch's.", ""]


def _identical_settings(paper, authors):
    """((task, method), library rows, authors' code rows) on the seeds
    both ran, per task and method of the `--subset-draw paper` rows."""
    rows = paper["rows"] if paper else []
    for task, method in dict.fromkeys((r["task"], r["method"])
                                      for r in rows):
        theirs = authors_rows(authors, task, method)
        mine = [dict(r, best=_best(r)) for r in select(rows, task, method)
                if r["seed"] in theirs]
        if mine:
            yield ((task, method), mine,
                   [theirs[r["seed"]] for r in mine])


def _best(row):
    return max(row["curve"]) if row.get("curve") else row["score"]


def _batching_words(batching):
    return ("bucketed batches (the default)" if batching == BUCKETED else
            f"{batching} batches (`--batching {batching}`: drawn from all "
            "examples, each padded to its longest example's bucket)")


def _paper_subset_table(paper, authors=None, batching=BUCKETED):
    """`--pooling cls` on the authors' own training subset, seed by seed
    beside the authors' own code at the same settings."""
    if not paper:
        return []
    authors = authors or {}
    environment = authors.get("environment")
    ran = (f" Its last invocation: `{environment['command']}` (finished "
           f"{environment['finished']}; {environment['machine']['cpu_model']}"
           f", {environment['machine']['usable_cpus']} CPUs; "
           + ", ".join(f"{k} {v}" for k, v in environment["versions"].items())
           + ").") if environment else ""
    out = ["The same head, " + _batching_words(batching) + ", on the "
           "authors' exact training examples (`--subset-draw paper`: `np.random.seed(seed)` and the first "
           "examples of `np.random.permutation`, as `BEFT_evaluator.py` "
           "draws them; the same examples only where the TSV file is in "
           "the order their `datasets` copy is, which holds for RTE and "
           "CoLA, not SST-2), beside the authors' own training code run "
           "here on the same model, seeds and settings "
           "(`benchmarks/authors_code.py`: their `GLUEvaluator`, padding to "
           "128, transformers' AdamW, the pooler bias trained too; "
           "`authors_code.json`). Both evaluate the dev set after every "
           "epoch: last and best epoch." + ran, "",
           "| task | method | seed | library, last | library, best "
           "| authors' code, last | authors' code, best |",
           "|---|---|---|---|---|---|---|"]
    for row in sorted(paper["rows"],
                      key=lambda r: (r["task"], r["method"], r["seed"])):
        theirs = authors_rows(authors, row["task"], row["method"]).get(
            row["seed"])
        peer = (f"{theirs['last']:.4f} | {theirs['best']:.4f}" if theirs
                else "not run | not run")
        out.append(f"| {row['task']} | {row['method']} | {row['seed']} | "
                   f"{row['score']:.4f} | {_best(row):.4f} | {peer} |")
    for (task, method), mine, theirs in _identical_settings(paper, authors):
        cells = [formatting.mean_std([m[k] for m in mine])
                 for k in ("score", "best")]
        cells += [formatting.mean_std([t[k] for t in theirs])
                  for k in ("last", "best")]
        out.append(f"| {task} | {method} | mean, seeds both ran | "
                   + " | ".join(cells) + " |")
    return out + ["", "Each pair differs by its random draws (order, "
                  "dropout, the head's initialisation) as well as by its "
                  "stack; [stack_parity.md](stack_parity.md) shares the "
                  "draws and turns dropout off, to compare the stacks "
                  "alone (`benchmarks/stack_parity.py`).", ""]


def _padding_table(rows, fixed):
    """SST-2 b_v with length buckets against fixed padding."""
    if not fixed:
        return []
    out = ["Length buckets against fixed padding to "
           f"{fixed['sequence_length']} (SST-2, b_v, fit plus evaluation):",
           "",
           "| padding | dev accuracy | mean wall time |", "|---|---|---|"]
    for name, source in (("buckets", rows), ("fixed", fixed["rows"])):
        mine = select(source, "sst2", "b_v")
        wall = (f"{np.mean([r['wall_time_s'] for r in mine]):.0f} s"
                if mine else "-")
        out.append(f"| {name} | {_cell(mine)} | {wall} |")
    return out + [""]


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
    return formatting.mean_std([r["score"] for r in rows])


def _notes(rows):
    """What b_k against head-only shows, and how to read shares and times."""
    text = ""
    same, differ = _bk_equals_head(rows)
    if same or differ:
        text += (
            "b_k-only and head-only score the same in task:seed "
            f"{formatting.task_seeds(same)}, and differently in "
            f"{formatting.task_seeds(differ)} (in softmax attention the key "
            "bias shifts every logit of a query equally, so in exact "
            "arithmetic it gets no gradient and b_k-only training is "
            "head-only training; PAPER.md. In float32 its gradient is "
            "rounding error, which AdamW's normalised steps turn into "
            "tiny moves of b_k: where those flip a dev prediction, the "
            "two runs part by an example or two). "
        )
    return text + (
        "Trainable shares include the task head (the paper's 0.01% for "
        "BERT-base b_v excludes it); they vary slightly by task because "
        "STS-B's head has one output. Wall time is fit plus dev "
        "evaluation after every epoch (the curve), averaged over all tasks run; each row records the "
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
