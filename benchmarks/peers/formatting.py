"""A run's label and a number's text, shared by the runs' progress lines
and the report."""

import math

from benchmarks.peers import constants


def label(run):
    """`sst2 seed 0 3 ep lr 0.0004: beft-keras/jax default`; PEFT's run
    without the backend and variant (torch and `peft`, always)."""
    backend = "" if run["stack"] == constants.PEFT else "/" + run["backend"]
    variant = "" if run["variant"] == constants.PEFT else " " + run["variant"]
    return (f"{run['task']} seed {run['seed']} {run['epochs']} ep "
            f"lr {run['learning_rate']:g}: {run['stack']}{backend}{variant}")


def fmt(value, digits=3):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"
