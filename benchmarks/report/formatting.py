"""Number and list formatting shared by the report's sections."""

import numpy as np


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def mib(value):
    return "-" if value is None else f"{value:.0f} MiB"


def first_metric(metrics):
    """The main metric of a run's metrics (the first one recorded)."""
    return next(iter(metrics.values())) if metrics else None


def mean_std(values):
    """Mean ± sample std (n); one value alone, without a std."""
    if not values:
        return "not run"
    if len(values) == 1:
        return f"{values[0]:.4f} (1)"
    return (f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} "
            f"({len(values)})")


def verdict(met, seeds, total):
    """A target's verdict: `"not run"` when `met` is None, else met or
    missed, provisional ("so far") on fewer than `total` seeds."""
    if met is None:
        return "not run"
    word = "met" if met else "**missed**"
    return word if seeds >= total else f"{word} so far ({seeds} of " \
        f"{total} seeds)"


def task_seeds(pairs):
    """`task:seed, ...` of (task, seed) pairs, sorted; "none" if empty."""
    return ", ".join(f"{t}:{s}" for t, s in sorted(pairs)) or "none"


def count(n, noun):
    """`1 epoch`, `2 epochs`."""
    return f"{n} {noun}{'s' * (n != 1)}"
