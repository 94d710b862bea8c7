"""What the commands write into an output folder, and how the folder is
checked before any work starts: scores, tuned weights, per-seed results
and the summary over seeds."""

import contextlib
import json
import os
import secrets
import shutil
import warnings

import keras

from beft_keras import models
from beft_keras.delta import load_delta
from beft_keras.delta import save_delta
from beft_keras.files import atomic_write

RESULTS_FILE = "results.json"
DELTA_FILE = "delta.safetensors"
# A full fine-tune changes every weight: Keras' own weights file holds it.
WEIGHTS_FILE = "model.weights.h5"
SEED_FOLDER = "seed_{}"
# Everything a command writes at the top of its output folder.
_RUN_FILES = (RESULTS_FILE,)


def check_output_folder(output, overwrite=False):
    """Make sure `output` can take a new run, before any work is done.

    The folder is created if needed and must be writable. A folder that
    holds another run's results (`results.json`, `seed_*/`) is refused
    unless `overwrite`; even then those files stay until the new run's
    first seed is complete (`commit_seed` replaces them), so that a run
    that fails early leaves the old one as it was, and old and new files
    never mix.

    Returns:
        The outermost folder this call created, or `None`: what
        `remove_empty` may take away if the run fails.

    Raises:
        ValueError: if `output` is a file, cannot be written, or holds
            another run and `overwrite` is false.
    """
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"Output '{output}' is a file, not a folder.")
    created = None
    folder = os.path.abspath(output)
    while not os.path.exists(folder):
        created, folder = folder, os.path.dirname(folder)
    try:
        os.makedirs(output, exist_ok=True)
        # Only a real write proves the folder takes files (read-only mounts,
        # full disks, permissions).
        probe = os.path.join(output, f".beft-write-test-{secrets.token_hex(4)}")
        with open(probe, "wb") as file:
            file.write(b"0" * 4096)
            file.flush()
            os.fsync(file.fileno())
        os.remove(probe)
    except OSError as error:
        raise ValueError(
            f"Output folder '{output}' cannot be written: "
            f"{error.strerror or error}."
        ) from None
    previous = previous_run_files(output)
    if previous and not overwrite:
        raise ValueError(
            f"Output folder '{output}' holds another run's files "
            f"({', '.join(previous[:3])}{', ...' if len(previous) > 3 else ''}); "
            "choose another --output or pass --overwrite to replace them."
        )
    return created


def remove_empty(folder):
    """Remove `folder` (if not `None`) and the folders in it, unless they
    hold a file: what a failed run created and never filled."""
    if folder is None:
        return
    for path, _, _ in os.walk(folder, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def previous_run_files(output):
    """The names of a run's files in `output`, sorted."""
    if not os.path.isdir(output):
        return []
    return sorted(
        name
        for name in os.listdir(output)
        if name in _RUN_FILES
        or (name.startswith("seed_") and os.path.isdir(os.path.join(output, name)))
    )


def seed_folder(output, seed):
    return os.path.join(output, SEED_FOLDER.format(seed))


def staging_folder(output, seed):
    """Where a seed's files are written until the seed is complete: a
    hidden folder beside its final one (`commit_seed`)."""
    return os.path.join(output, f".{SEED_FOLDER.format(seed)}.partial")


def commit_seed(output, seed, previous=()):
    """Give a complete seed its final folder: remove the `previous` run's
    files (`previous_run_files`, what `--overwrite` replaces) first, then
    rename the seed's staging folder."""
    for name in previous:
        path = os.path.join(output, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    os.replace(staging_folder(output, seed), seed_folder(output, seed))


def write_scores(run, beft_probe, folder):
    """Write a probe's scores (JSON, CSV) and heatmap into `folder`."""
    beft_probe.results.to_json(os.path.join(folder, "scores.json"))
    beft_probe.results.to_csv(os.path.join(folder, "scores.csv"))
    beft_probe.results.plot_heatmap(
        os.path.join(folder, "heatmap.png"),
        title=f"BEFT probe, {run.spec.name}, {models.model_name(run.model)}",
    )


def save_tuned(run, folder, full=False):
    """Save what a fine-tune changed into `folder`: the bias delta, or for
    a full fine-tune every weight in Keras' own format.

    Returns:
        The path written.
    """
    if not full:
        path = os.path.join(folder, DELTA_FILE)
        save_delta(run.classifier, path, run.model, task=run.spec.name)
        return path
    path = os.path.join(folder, WEIGHTS_FILE)
    # Keras writes the file itself; a temporary name beside it (with the
    # suffix Keras requires), renamed when complete, keeps it atomic.
    temporary = os.path.join(
        folder, f".{secrets.token_hex(4)}.tmp.{WEIGHTS_FILE}"
    )
    os.makedirs(folder, exist_ok=True)
    try:
        run.classifier.save_weights(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
    return path


def load_tuned(
    model, path, spec, allow_base_mismatch=False, allow_task_mismatch=False
):
    """Load what `save_tuned` wrote onto a freshly loaded base `model`:
    a delta (checked against the base and the task, see `load_delta`) or
    a full fine-tune's weights file (Keras' format records no task: it is
    checked against the task of the run's `results.json` beside it, where
    there is one). All or nothing: on failure the model's weights are
    unchanged.

    Raises:
        ValueError: if the file does not fit the model or the task.
    """
    if not os.path.isfile(path):
        raise ValueError(f"No tuned weights at '{path}'.")
    if not path.endswith(".weights.h5"):
        load_delta(
            model, path,
            allow_base_mismatch=allow_base_mismatch,
            task=spec.name,
            allow_task_mismatch=allow_task_mismatch,
        )
        return
    if not allow_task_mismatch:
        _check_weights_task(path, spec)
    saved = [keras.ops.convert_to_numpy(v) for v in model.weights]
    try:
        with warnings.catch_warnings():
            # The file holds the tuning optimizer's state too, which a
            # model loaded for prediction does not need.
            warnings.filterwarnings(
                "ignore", "Skipping variable loading for optimizer"
            )
            model.load_weights(path)
    except Exception as error:
        for variable, value in zip(model.weights, saved):
            variable.assign(value)
        raise ValueError(
            f"Weights '{path}' do not fit this model: "
            f"{models.one_line(error)}"
        ) from error


def _check_weights_task(path, spec):
    record = os.path.join(os.path.dirname(path), RESULTS_FILE)
    try:
        with open(record, encoding="utf-8") as file:
            saved_task = json.load(file).get("task")
    except (OSError, ValueError, AttributeError):
        return  # Moved away from its run, or not a run's record.
    if isinstance(saved_task, str) and (
        saved_task.casefold() != spec.name.casefold()
    ):
        raise ValueError(
            f"Weights '{path}' were tuned for task '{saved_task}' (its "
            f"run's {RESULTS_FILE}), not '{spec.name}'. Load them for task "
            f"'{saved_task}', or pass --allow-task-mismatch to load them "
            "anyway."
        )


def write_result(folder, result):
    """One seed's result, written atomically as soon as it is done."""
    atomic_write(
        os.path.join(folder, RESULTS_FILE), json.dumps(result, indent=2) + "\n"
    )
