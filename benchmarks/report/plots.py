"""The report's figures: accuracy per method and task, and probe score
against fine-tuning gain. Each returns the PNG's name in `docs_dir`, or
None when there is nothing to plot."""

import os

import numpy as np

from benchmarks import selection as selection_script


def accuracy(payload, tasks, methods, docs_dir, backend, suffix):
    """Bars of mean ± std per method (in `methods`' order and colours),
    one panel per task."""
    plt = _pyplot()
    rows = payload["rows"]
    shown = [m for m in methods if any(r["method"] == m for r in rows)]
    if not tasks or not shown:
        return None
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.6),
                                squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, task in zip(axes[0], tasks):
        means, stds = [], []
        for m in shown:
            values = [r["score"] for r in rows
                      if r["task"] == task and r["method"] == m]
            means.append(np.mean(values) if values else np.nan)
            stds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
        ax.bar(range(len(shown)), means, yerr=stds, capsize=3,
               color=[colors(methods.index(m)) for m in shown])
        metric = next(r["main_metric"] for r in rows if r["task"] == task)
        n = len({r["seed"] for r in rows if r["task"] == task})
        ax.set_title(f"{task} ({metric}, {n} seed{'s' * (n > 1)})")
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels(shown, rotation=45, ha="right")
        finite = [v for v in means if np.isfinite(v)]
        if finite:
            lo = min(finite) - 0.05
            ax.set_ylim(max(lo, -1.0) if lo < 0 else lo, max(finite) + 0.05)
    figure.suptitle("MiniLM, low regime, the library's defaults "
                    f"({backend})")
    return _save(plt, figure, docs_dir,
                 f"benchmarks_accuracy_{backend}{suffix}.png")


def scores(selection, accuracy_payload, tasks, docs_dir, backend, suffix):
    """Probe score of b_q, b_k, b_v vs dev gain over head-only, one panel
    per score, one marker per task."""
    if not selection["cases"] or accuracy_payload is None:
        return None
    plt = _pyplot()
    head = {(r["task"], r["seed"]): r["score"]
            for r in accuracy_payload["rows"] if r["method"] == "head"}
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    markers = dict(zip(tasks, "osD^"))
    colors = {"query": "tab:blue", "key": "tab:orange", "value": "tab:green"}
    for ax, method in zip(axes, selection_script.SCORES):
        for case in selection["cases"]:
            averages = case["averages"].get(method)
            base = head.get((case["task"], case["seed"]))
            if not averages or base is None:
                continue
            for term, color in colors.items():
                # Log scale; a score of 0 (an inert term) sits at 1e-12.
                ax.scatter(max(averages[term], 1e-12),
                           case["dev_score"][term] - base,
                           color=color, marker=markers.get(case["task"], "o"))
        ax.set_xscale("log")
        ax.set_title(method)
        ax.set_xlabel("probe score (layer mean)")
        ax.axhline(0, color="grey", lw=0.5)
    axes[0].set_ylabel("dev metric − head-only")
    handles = [plt.Line2D([], [], color=c, marker="o", ls="",
                          label=selection_script.SYMBOL_OF[t])
               for t, c in colors.items()]
    handles += [plt.Line2D([], [], color="k", marker=m, ls="", label=t)
                for t, m in markers.items()]
    axes[-1].legend(handles=handles, fontsize=7, loc="best")
    figure.suptitle(f"Probe score vs fine-tuning gain ({backend})")
    return _save(plt, figure, docs_dir,
                 f"benchmarks_scores_{backend}{suffix}.png")


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, docs_dir, name):
    figure.tight_layout()
    figure.savefig(os.path.join(docs_dir, name), dpi=110)
    plt.close(figure)
    return name
