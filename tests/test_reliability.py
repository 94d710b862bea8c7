"""The commands fail loudly and lose nothing: every argument is checked
before the work starts, a diverged fit is an error, and nothing half-done
is left behind."""

import json
import os
import subprocess
import sys

import pytest

from beft_keras import cli
from beft_keras import pipeline
from tests.conftest import snapshot
from tests.conftest import write_sst2_task


def _tiny_args(data_dir, model):
    return [
        "--task", "sst2", "--data-dir", str(data_dir), "--model", model,
        "--batch-size", "8", "--sequence-length", "12",
    ]


def _files(folder):
    """Every file under `folder`, by relative path, with its bytes."""
    return {
        os.path.relpath(os.path.join(path, name), folder):
            open(os.path.join(path, name), "rb").read()
        for path, _, names in os.walk(folder)
        for name in names
    }


def _error(capsys):
    # Every task here is tiny, so smaller than its low regime: that warning
    # line may come first.
    lines = [
        line for line in capsys.readouterr().err.strip().splitlines()
        if not line.startswith("beft: warning: The low regime")
    ]
    assert len(lines) == 1, lines
    assert lines[0].startswith("beft: error: ")
    return lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "--epochs: must be at least 1: 0"),
        (["--epochs", "-1"], "--epochs: must be at least 1: -1"),
        (["--learning-rate", "0"], "--learning-rate: must be a finite"),
        (["--learning-rate", "-1"], "--learning-rate: must be a finite"),
        (["--learning-rate", "inf"], "--learning-rate: must be a finite"),
        (["--learning-rate", "nan"], "--learning-rate: must be a finite"),
        (["--probe-epochs", "0"], "--probe-epochs: must be at least 1"),
        (["--batch-size", "0"], "--batch-size: must be at least 1"),
        (["--sequence-length", "0"], "--sequence-length: must be at least 1"),
        (["--seeds", "-3"], "--seeds: must be in [0, 2**32)"),
        (["--seeds", "1", "1"], "--seeds repeats a seed"),
        (["--regime", "tiny"], "invalid choice: 'tiny'"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(
    args, message, tmp_path, capsys
):
    output = tmp_path / "out"
    code = cli.main(
        ["run", "--task", "sst2", "--data-dir", str(tmp_path),
         "--output", str(output), *args]
    )
    assert code == 2
    assert message in _error(capsys)
    assert not output.exists()


def test_sequence_length_above_the_models_limit(
    classifier_preset, tmp_path, capsys
):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "out"
    args = _tiny_args(data_dir, classifier_preset)
    args[args.index("--sequence-length") + 1] = "1024"
    assert cli.main(["tune", *args, "--output", str(output)]) == 2
    assert "`sequence_length`=1024 exceeds the model's longest input, 12 " \
        "tokens (its position embeddings): pass a `sequence_length` " \
        "(--sequence-length) of at most 12." in _error(capsys)
    # The output folder it made, empty, is gone too.
    assert not output.exists()


@pytest.mark.parametrize("length, code", [("2", 2), ("3", 0)])
def test_sequence_length_that_leaves_no_room_for_text(
    length, code, classifier_preset, tmp_path, capsys
):
    """[CLS] and [SEP] take two positions of every SST-2 input."""
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "out"
    args = _tiny_args(data_dir, classifier_preset)
    args[args.index("--sequence-length") + 1] = length
    assert cli.main(
        ["tune", *args, "--epochs", "1", "--output", str(output)]
    ) == code
    if code:
        assert "`sequence_length`=2 leaves no room for text: the " \
            "preprocessor adds 2 or more tokens of its own" in _error(capsys)
        assert not output.exists()


@pytest.mark.parametrize(
    "model, message",
    [
        ("missing/folder", "Cannot load model 'missing/folder': there is no "
         "such folder (give a preset folder, or a keras-hub preset name"),
        # An empty folder: keras-hub's reason, whole, on one line.
        ("empty", "Cannot load model '{tmp_path}/empty': "),
    ],
)
def test_model_that_cannot_load(model, message, tmp_path, capsys):
    data_dir = write_sst2_task(tmp_path / "glue")
    os.makedirs(tmp_path / "empty")
    if model == "empty":
        model = str(tmp_path / "empty")
    output = tmp_path / "out"
    args = _tiny_args(data_dir, model)
    assert cli.main(["tune", *args, "--output", str(output)]) == 2
    assert message.format(tmp_path=tmp_path) in _error(capsys)
    assert not output.exists()


@pytest.mark.parametrize("command", ["probe", "tune", "run"])
def test_diverged_training_fails_and_writes_nothing(
    command, classifier_preset, tmp_path, capsys
):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "out"
    extra = [] if command == "probe" else ["--epochs", "2"]
    code = cli.main(
        [command, *_tiny_args(data_dir, classifier_preset), *extra,
         "--learning-rate", "1e30", "--output", str(output)]
    )
    assert code == 2
    error = _error(capsys)
    assert "Training diverged: the loss became" in error
    assert "epoch 1" in error and "learning rate 1e+30 is likely too high" in error
    # The output folder it made, empty, is gone too.
    assert not output.exists()


def test_output_that_is_a_file(classifier_preset, tmp_path, capsys):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "a-file"
    output.write_text("mine\n")
    code = cli.main(
        ["tune", *_tiny_args(data_dir, classifier_preset),
         "--output", str(output)]
    )
    assert code == 2
    assert f"Output '{output}' is a file, not a folder." in _error(capsys)
    assert output.read_text() == "mine\n"


@pytest.mark.parametrize(
    "name, message", [("missing", "does not exist"), ("a.tsv", "is a file")]
)
def test_data_dir_that_is_not_a_folder(name, message, tmp_path, capsys):
    (tmp_path / "a.tsv").write_text("sentence\tlabel\n")
    output = tmp_path / "out"
    code = cli.main(
        ["tune", "--task", "sst2", "--data-dir", str(tmp_path / name),
         "--output", str(output)]
    )
    assert code == 2
    assert f"Data folder '{tmp_path / name}' {message}" in _error(capsys)
    assert not output.exists()


def test_output_with_another_run_is_refused_unless_overwrite(
    classifier_preset, tmp_path, capsys
):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "out"
    args = [*_tiny_args(data_dir, classifier_preset), "--epochs", "1",
            "--output", str(output)]
    assert cli.main(["tune", *args, "--seeds", "0", "1"]) == 0
    (output / "notes.txt").write_text("the user's own file\n")
    before = (output / "results.json").read_text()
    capsys.readouterr()

    assert cli.main(["tune", *args]) == 2
    assert "holds another run's files (results.json, seed_0, seed_1)" \
        in _error(capsys)
    assert (output / "results.json").read_text() == before

    # A new run that fails before its first seed is complete leaves the
    # old one as it was.
    files = _files(output)
    dev = data_dir / "sst2" / "dev.tsv"
    good = dev.read_text()
    dev.write_text(good + "a bad row\t7\n")
    assert cli.main(["tune", *args, "--overwrite"]) == 2
    assert "Invalid label '7'" in _error(capsys)
    assert _files(output) == files
    dev.write_text(good)

    assert cli.main(["tune", *args, "--overwrite"]) == 0
    # The old run's seed 1 is gone, the user's own file is not.
    assert sorted(os.listdir(output)) == ["notes.txt", "results.json", "seed_0"]
    assert json.loads((output / "results.json").read_text())["seeds"] == [0]


def test_interrupted_run_is_one_line_and_cleans_up(
    classifier_preset, tmp_path, capsys, monkeypatch
):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "new" / "out"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "tune", interrupt)
    code = cli.main(
        ["tune", *_tiny_args(data_dir, classifier_preset), "--epochs", "1",
         "--output", str(output)]
    )
    assert code == 130
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "beft: interrupted; the seeds that finished are kept."
    assert all(l.startswith("beft: warning: The low regime") for l in lines[:-1])
    # Nothing of the run, not even the folders it made.
    assert os.listdir(tmp_path) == ["glue"]


def test_interrupted_run_keeps_the_finished_seeds(
    classifier_preset, tmp_path, capsys, monkeypatch
):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "out"
    tune = pipeline.tune

    def tune_until_seed_1(run, *args, **kwargs):
        if run.seed == 1:
            raise OSError(28, "No space left on device")
        return tune(run, *args, **kwargs)

    monkeypatch.setattr(pipeline, "tune", tune_until_seed_1)
    code = cli.main(
        ["tune", *_tiny_args(data_dir, classifier_preset), "--epochs", "1",
         "--seeds", "0", "1", "--output", str(output)]
    )
    assert code == 2
    assert "No space left on device" in _error(capsys)
    assert sorted(os.listdir(output)) == ["results.json", "seed_0"]
    summary = json.loads((output / "results.json").read_text())
    seed_0 = json.loads((output / "seed_0" / "results.json").read_text())
    assert summary["seeds"] == [0]
    assert summary["runs"] == [seed_0]
    # One seed has a mean and no spread.
    assert summary["metrics"]["accuracy"]["std"] is None
    assert (output / "seed_0" / "delta.safetensors").exists()


def test_one_seed_prints_no_spread(classifier_preset, tmp_path, capsys):
    data_dir = write_sst2_task(tmp_path / "glue")
    assert cli.main(
        ["tune", *_tiny_args(data_dir, classifier_preset), "--epochs", "1",
         "--output", str(tmp_path / "out")]
    ) == 0
    printed = capsys.readouterr().out
    assert "accuracy: " in printed and "±" not in printed


def test_delta_of_another_task_is_refused(classifier_preset, tmp_path, capsys):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "tune"
    assert cli.main(
        ["tune", *_tiny_args(data_dir, classifier_preset), "--epochs", "1",
         "--output", str(output)]
    ) == 0
    capsys.readouterr()
    delta = output / "seed_0" / "delta.safetensors"
    texts = tmp_path / "texts.tsv"
    texts.write_text("sentence\nthe film was good\n")
    predictions = tmp_path / "predictions.tsv"
    args = ["predict", "--task", "cola", "--input", str(texts),
            "--delta", str(delta), "--model", classifier_preset,
            "--sequence-length", "12", "--output", str(predictions)]
    assert cli.main(args) == 2
    error = _error(capsys)
    assert "sst2" in error and "cola" in error
    assert not predictions.exists()
    assert cli.main([*args, "--allow-task-mismatch"]) == 0
    assert len(predictions.read_text().splitlines()) == 2


def test_predict_checks_its_files_first(classifier_preset, tmp_path, capsys):
    args = ["predict", "--task", "sst2", "--model", classifier_preset]
    assert cli.main(
        [*args, "--input", str(tmp_path / "none.tsv"), "--delta", "x"]
    ) == 2
    assert "No input file" in _error(capsys)
    texts = tmp_path / "texts.tsv"
    texts.write_text("sentence\ngood\n")
    assert cli.main(
        [*args, "--input", str(texts), "--delta", str(tmp_path / "d")]
    ) == 2
    assert "No delta file" in _error(capsys)
    assert cli.main(
        [*args, "--input", str(texts), "--delta", str(texts),
         "--output", str(tmp_path)]
    ) == 2
    assert "is a folder, not a file" in _error(capsys)


def test_bad_keras_backend_is_one_line():
    env = dict(os.environ, KERAS_BACKEND="tensorfow")
    process = subprocess.run(
        [sys.executable, "-m", "beft_keras", "tune", "--task", "sst2"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        "beft: error: KERAS_BACKEND='tensorfow' is not a backend beft runs "
        "on: use one of tensorflow, jax, torch."
    ]


def test_refused_delta_leaves_the_model_unchanged(
    classifier_preset, tmp_path
):
    """The library's side of `predict`: a delta of another task is
    refused before any weight is assigned."""
    data_dir = write_sst2_task(tmp_path / "glue")
    run = pipeline.prepare(
        "sst2", str(data_dir), classifier_preset, batch_size=8,
        sequence_length=12,
    )
    pipeline.tune(run, "value", epochs=1, verbose=0)
    delta = tmp_path / "delta.safetensors"
    from beft_keras import outputs

    outputs.save_tuned(run, str(tmp_path))
    fresh = pipeline.prepare(
        "sst2", str(data_dir), classifier_preset, batch_size=8,
        sequence_length=12,
    ).classifier
    before = snapshot(fresh)
    with pytest.raises(ValueError, match="sst2"):
        outputs.load_tuned(fresh, str(delta), pipeline.data.get_task("cola"))
    after = snapshot(fresh)
    for path in before:
        assert (before[path] == after[path]).all()


def test_a_seed_that_fails_while_writing_leaves_nothing(
    classifier_preset, tmp_path, capsys, monkeypatch
):
    """A full disk while writing a seed's results: its delta, already
    written, goes too, so that no seed folder is half-written."""
    from beft_keras import outputs

    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "out"

    def disk_full(folder, result):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_result", disk_full)
    code = cli.main(
        ["tune", *_tiny_args(data_dir, classifier_preset), "--epochs", "1",
         "--output", str(output)]
    )
    assert code == 2
    assert "No space left on device" in _error(capsys)
    # The output folder it made, empty, is gone too.
    assert not output.exists()
