"""End to end: `beft run` on a tiny local preset and a tiny TSV task."""

import json
import os

import keras
import numpy as np
import pytest

import beft_keras
from beft_keras import cli
from beft_keras import metrics
from beft_keras import pipeline
from tests.conftest import WORDS
from tests.conftest import write_pair_task
from tests.conftest import write_squad_task
from tests.conftest import write_sst2_task

def test_beft_run_end_to_end(classifier_preset, tmp_path, capsys):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "out"
    code = cli.main(
        ["run", *_tiny_args(data_dir, classifier_preset), "--seeds", "0", "1",
         "--epochs", "1", "--output", str(output)]
    )
    assert code == 0
    results = json.loads((output / "results.json").read_text())
    assert results["task"] == "sst2"
    assert results["backend"] == keras.backend.backend()
    assert results["seeds"] == [0, 1]
    accuracy = results["metrics"]["accuracy"]
    assert accuracy["mean"] == pytest.approx(np.mean(accuracy["per_seed"]))
    assert accuracy["std"] == pytest.approx(
        np.std(accuracy["per_seed"], ddof=1)
    )
    assert results["runs"][0]["train_examples"] == 48
    assert results["runs"][0]["subset_draw"] == "seeded"
    assert results["runs"][0]["batching"] == "bucketed"
    assert results["runs"][0]["dev_examples"] == 16
    for seed in (0, 1):
        seed_dir = output / f"seed_{seed}"
        with open(seed_dir / "heatmap.png", "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
        scores = json.loads((seed_dir / "scores.json").read_text())
        beft = scores["averages"]["beft"]
        best = max(("query", "key", "value"), key=lambda t: beft[t])
        assert results["selected"][seed] == best
        seed_result = json.loads((seed_dir / "results.json").read_text())
        assert seed_result == results["runs"][seed]
        assert seed_result["metrics"]["accuracy"] == accuracy["per_seed"][seed]
    assert "beft run: sst2" in capsys.readouterr().out
    # The delta of seed 0 predicts the dev set as the run scored it.
    assert _predict_dev(
        data_dir, output, classifier_preset, tmp_path / "predictions.tsv"
    ) == accuracy["per_seed"][0]


def test_beft_tune_draws_the_authors_subset_in_mixed_batches(
    classifier_preset, tmp_path, capsys
):
    data_dir = write_sst2_task(tmp_path / "glue", num_train=1040)
    output = tmp_path / "out"
    code = cli.main(
        ["tune", *_tiny_args(data_dir, classifier_preset), "--epochs", "1",
         "--subset-draw", "paper", "--batching", "mixed",
         "--output", str(output)]
    )
    assert code == 0
    run = json.loads((output / "results.json").read_text())["runs"][0]
    assert (run["subset_draw"], run["train_examples"]) == ("paper", 1000)
    assert run["batching"] == "mixed"
    assert cli.main(["tune", *_tiny_args(data_dir, classifier_preset),
                     "--subset-draw", "sorted"]) == 2
    assert "invalid choice: 'sorted'" in capsys.readouterr().err
    assert cli.main(["tune", *_tiny_args(data_dir, classifier_preset),
                     "--batching", "sorted"]) == 2
    assert "invalid choice: 'sorted'" in capsys.readouterr().err


def _tiny_args(data_dir, classifier_preset):
    return [
        "--task", "sst2", "--data-dir", str(data_dir),
        "--model", classifier_preset, "--batch-size", "8",
        "--sequence-length", "12",
    ]


def test_beft_probe(classifier_preset, tmp_path, capsys):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "probe"
    code = cli.main(
        ["probe", *_tiny_args(data_dir, classifier_preset),
         "--output", str(output)]
    )
    assert code == 0
    # The library's own warnings read as one line, as its errors do.
    assert (
        "beft: warning: The low regime of 'sst2' trains on 1000 examples, "
        "but the training set holds 48: all of them train.\n"
    ) in capsys.readouterr().err
    results = json.loads((output / "results.json").read_text())
    scores = json.loads((output / "seed_0" / "scores.json").read_text())
    assert results["selected"] == [scores["selected"]["beft"]]
    # Enough to run it again.
    (run,) = results["runs"]
    assert {k: run[k] for k in (
        "backend", "regime", "subset_draw", "batching", "train_examples",
        "probe_epochs", "learning_rate",
    )} == {
        "backend": keras.backend.backend(), "regime": "low",
        "subset_draw": "seeded", "batching": "bucketed",
        "train_examples": 48, "probe_epochs": 1, "learning_rate": 4e-4,
    }
    assert set(scores["rankings"]) == {"beft", "magnitude", "fisher"}
    assert (output / "seed_0" / "heatmap.png").exists()
    assert (output / "seed_0" / "scores.csv").exists()


@pytest.mark.parametrize(
    "terms, trainable",
    [
        # The head: hidden 8 x 2 classes + 2.
        (["head"], 18),
        # Two layers of 8 query and 8 value biases, plus the head.
        (["query", "value"], 2 * 2 * 8 + 18),
    ],
)
def test_beft_tune(terms, trainable, classifier_preset, tmp_path):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "tune"
    code = cli.main(
        ["tune", *_tiny_args(data_dir, classifier_preset), "--terms", *terms,
         "--epochs", "1", "--output", str(output)]
    )
    assert code == 0
    results = json.loads((output / "results.json").read_text())
    assert results["terms"] == terms
    assert results["trainable_params"] == trainable
    # One seed: a mean, and no spread.
    assert results["metrics"]["accuracy"]["std"] is None
    assert (output / "seed_0" / "delta.safetensors").exists()


def test_version_is_the_package_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"beft {beft_keras.__version__}\n"


@pytest.mark.parametrize("command", ["probe", "tune", "run"])
def test_help(command, capsys):
    assert cli.main([command, "--help"]) == 0
    printed = capsys.readouterr().out
    for option in ("--task", "--data-dir", "--model", "--regime", "--seeds",
                   "--learning-rate", "--batch-size", "--sequence-length",
                   "--output"):
        assert option in printed


@pytest.mark.parametrize(
    "problem, args, message",
    [
        ("unknown task", ["--task", "sst3"], "sst3"),
        ("missing folder", ["--task", "sst2"], "does-not-exist"),
        ("malformed TSV", ["--task", "sst2"], "Line 3 of"),
        ("missing preset", ["--task", "sst2"], "no_such_preset"),
        ("mixed terms", ["--task", "sst2", "--terms", "full", "value"],
         "Invalid terms ['full', 'value']"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    problem, args, message, classifier_preset, tmp_path, capsys
):
    data_dir = write_sst2_task(tmp_path / "glue")
    model = classifier_preset
    if problem == "missing folder":
        data_dir = tmp_path / "does-not-exist"
    if problem == "malformed TSV":
        path = data_dir / "sst2" / "train.tsv"
        lines = path.read_text().splitlines()
        lines[2] = "a sentence without its label"
        path.write_text("\n".join(lines) + "\n")
    if problem == "missing preset":
        model = "no_such_preset"
    command = "tune" if problem == "mixed terms" else "run"
    output = tmp_path / "out"
    code = cli.main(
        [command, *args, "--data-dir", str(data_dir), "--model", model,
         "--output", str(output)]
    )
    assert code == 2
    # The tiny training set is smaller than the low regime: a warning line
    # may come first.
    error = [
        line for line in capsys.readouterr().err.strip().splitlines()
        if not line.startswith("beft: warning: The low regime")
    ]
    assert len(error) == 1 and error[0].startswith("beft: error: ")
    assert message in error[0]
    assert not (output / "results.json").exists()


def test_beft_predict_with_a_tuned_delta(classifier_preset, tmp_path, capsys):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "tune"
    args = _tiny_args(data_dir, classifier_preset)
    assert cli.main(
        ["tune", *args, "--epochs", "2", "--output", str(output)]
    ) == 0
    tuned = json.loads((output / "results.json").read_text())
    capsys.readouterr()

    predictions = tmp_path / "predictions.tsv"
    accuracy = _predict_dev(data_dir, output, classifier_preset, predictions)
    # The same weights as at the end of `tune`: the same dev accuracy.
    assert accuracy == tuned["metrics"]["accuracy"]["mean"]
    assert f"accuracy: {accuracy:.4f}" in capsys.readouterr().out

    # Unlabelled texts are predicted too, each row written back exactly as
    # it was read (quotes and backslashes are text, other columns kept),
    # into a folder made for it.
    unlabelled = tmp_path / "texts.tsv"
    texts = [
        "id\tsentence",
        '7\tthe film was "good"',
        "9\tthe film was awful \\ dull",
    ]
    unlabelled.write_text("\n".join(texts) + "\n")
    written = tmp_path / "new" / "folder" / "predictions.tsv"
    assert _predict(
        "sst2", unlabelled, output / "seed_0" / "delta.safetensors",
        classifier_preset, written,
    ) == 0
    lines = written.read_text().splitlines()
    assert [line.rsplit("\t", 1)[0] for line in lines] == texts
    assert lines[0].endswith("\tprediction")
    assert {line.rsplit("\t", 1)[1] for line in lines[1:]} <= {"0", "1"}

    # Predicting its own output replaces the prediction column.
    again = tmp_path / "again.tsv"
    assert _predict(
        "sst2", written, output / "seed_0" / "delta.safetensors",
        classifier_preset, again,
    ) == 0
    assert again.read_text() == written.read_text()


def test_beft_predict_keeps_its_input(classifier_preset, tmp_path, capsys):
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "tune"
    assert cli.main(
        ["tune", *_tiny_args(data_dir, classifier_preset), "--epochs", "1",
         "--output", str(output)]
    ) == 0
    dev = data_dir / "sst2" / "dev.tsv"
    before = dev.read_text()
    capsys.readouterr()
    code = _predict(
        "sst2", dev, output / "seed_0" / "delta.safetensors",
        classifier_preset, data_dir / "sst2" / "." / "dev.tsv",
    )
    assert code == 2
    assert "is the input file: choose another --output" in \
        capsys.readouterr().err
    assert dev.read_text() == before


def _predict(task, path, delta, model, output):
    """`beft predict` of the TSV file `path`, at the tiny models' length."""
    return cli.main(
        ["predict", "--task", task, "--input", str(path),
         "--delta", str(delta), "--model", model,
         "--sequence-length", "12", "--output", str(output)]
    )


def _predict_dev(data_dir, output, model, predictions):
    """`beft predict` of the SST-2 dev file with the delta of seed 0 in
    `output`; the accuracy of the predictions written, checked row by row
    against the file."""
    dev = data_dir / "sst2" / "dev.tsv"
    code = _predict(
        "sst2", dev, output / "seed_0" / "delta.safetensors",
        model, predictions,
    )
    assert code == 0
    rows = [line.split("\t") for line in predictions.read_text().splitlines()]
    assert rows[0] == ["sentence", "label", "prediction"]
    # Every input row as it was, its prediction beside it.
    lines = [line.split("\t") for line in dev.read_text().splitlines()[1:]]
    assert [r[:2] for r in rows[1:]] == lines
    return np.mean([r[2] == line[1] for r, line in zip(rows[1:], lines)])


def test_regression_task(classifier_preset, tmp_path):
    """STS-B: sentence pairs, float labels, a one-output regression head."""
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "glue" / "stsb")
    for split in ("train", "dev"):
        lines = ["sentence1\tsentence2\tlabel"]
        for _ in range(24):
            a, b = rng.choice(WORDS, 3), rng.choice(WORDS, 3)
            score = 5.0 * len(set(a) & set(b)) / 3
            lines.append(f"{' '.join(a)}\t{' '.join(b)}\t{score:.2f}")
        (tmp_path / "glue" / "stsb" / f"{split}.tsv").write_text(
            "\n".join(lines) + "\n"
        )
    output = tmp_path / "out"
    code = cli.main(
        ["tune", "--task", "stsb", "--data-dir", str(tmp_path / "glue"),
         "--model", classifier_preset, "--epochs", "1", "--batch-size", "8",
         "--sequence-length", "12", "--output", str(output)]
    )
    assert code == 0
    results = json.loads((output / "results.json").read_text())
    assert list(results["metrics"]) == ["pearson", "spearman"]
    # value biases (2 x 8) and a one-output head (8 + 1).
    assert results["trainable_params"] == 16 + 9


def test_beft_run_and_predict_on_a_causal_lm(causal_lm_preset, tmp_path):
    """A decoder preset is prompted: SST-2 as the next-token scores of
    " terrible" and " great" after "<sentence> It was"."""
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "run"
    args = _tiny_args(data_dir, causal_lm_preset)
    assert cli.main(
        ["run", *args, "--epochs", "2", "--output", str(output)]
    ) == 0
    results = json.loads((output / "results.json").read_text())
    run = results["runs"][0]
    # Two layers of 8 biases; the LM head is the tied embedding, frozen.
    assert results["trainable_params"] == 2 * 8
    # OPT's settings in the paper, not the encoder's for SST-2.
    assert (run["learning_rate"], run["epochs"]) == (1e-3, 2)
    accuracy = _predict_dev(
        data_dir, output, causal_lm_preset, tmp_path / "predictions.tsv"
    )
    assert accuracy == results["metrics"]["accuracy"]["mean"]


def test_causal_lm_on_a_task_without_prompt(causal_lm_preset, tmp_path, capsys):
    # STS-B is a regression: no answer words to score.
    data_dir = write_pair_task(tmp_path / "glue", "stsb")
    code = cli.main(
        ["tune", "--task", "stsb", "--data-dir", str(data_dir),
         "--model", causal_lm_preset, "--output", str(tmp_path / "out")]
    )
    assert code == 2
    assert "Task 'stsb' has no prompt for a causal LM. Tasks with one: " \
        "sst2, rte, cb, boolq, wic, squad, cola, mrpc, qqp, qnli, mnli." \
        in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_generation_task_needs_a_causal_lm(classifier_preset, tmp_path, capsys):
    data_dir = write_squad_task(tmp_path / "data")
    code = cli.main(
        ["tune", "--task", "squad", "--data-dir", str(data_dir),
         "--model", classifier_preset, "--output", str(tmp_path / "out")]
    )
    assert code == 2
    assert "Task 'squad' needs a causal LM preset" in capsys.readouterr().err


def test_beft_run_and_predict_a_generation_task(causal_lm_preset, tmp_path):
    """SQuAD: the LM loss on the answer tokens, greedy answers scored by
    exact match and token F1; `beft predict` answers the same."""
    data_dir = write_squad_task(tmp_path / "data")
    output = tmp_path / "run"
    args = ["--task", "squad", "--data-dir", str(data_dir),
            "--model", causal_lm_preset, "--batch-size", "8",
            "--sequence-length", "12"]
    assert cli.main(
        ["run", *args, "--epochs", "1", "--output", str(output)]
    ) == 0
    results = json.loads((output / "results.json").read_text())
    assert results["trainable_params"] == 2 * 8
    assert list(results["metrics"]) == ["exact_match", "token_f1"]
    predictions = tmp_path / "answers.tsv"
    assert _predict(
        "squad", data_dir / "squad" / "dev.tsv",
        output / "seed_0" / "delta.safetensors", causal_lm_preset,
        predictions,
    ) == 0
    rows = predictions.read_text().splitlines()
    assert rows[0].split("\t") == [
        "title", "context", "question", "label", "prediction"
    ]
    assert len(rows) == 9
    # Greedy decoding with the tuned weights: the dev scores of the run.
    answers = [row.split("\t")[4] for row in rows[1:]]
    references = [
        tuple(json.loads(line.split("\t")[3]))
        for line in (data_dir / "squad" / "dev.tsv").read_text().splitlines()[1:]
    ]
    assert metrics.exact_match(references, answers) == pytest.approx(
        results["metrics"]["exact_match"]["mean"]
    )


def _seed_result(seed, terms, params, accuracy):
    return {
        "task": "wic", "model": "m", "seed": seed, "terms": terms,
        "trainable_params": params, "trainable_percent": params / 1000,
        "metrics": {"accuracy": accuracy}, "wall_time_s": 1.0,
    }


def test_summary_of_seeds_that_trained_different_terms():
    # `beft run` trains each seed's own selection.
    summary = pipeline.summarize("run", [
        _seed_result(0, ["value"], 66, 0.5),
        _seed_result(1, ["query"], 66, 0.75),
        _seed_result(2, ["query"], 66, 0.25),
    ])
    assert summary["terms"] is None
    assert summary["trainable_params"] == 66
    accuracy = summary["metrics"]["accuracy"]
    assert accuracy["mean"] == pytest.approx(0.5)
    assert accuracy["std"] == pytest.approx(0.25)  # sample std, n - 1
    assert cli._table(summary).splitlines()[1:] == [
        "  trained (seed 0): value: 66 params (0.0660%)",
        "  trained (seed 1): query: 66 params (0.0660%)",
        "  trained (seed 2): query: 66 params (0.0660%)",
        "  the seeds trained different terms: the mean below mixes them",
        "  accuracy: 0.5000 ± 0.2500 (sample std)",
        "  wall time: 3.0 s",
    ]
    same = pipeline.summarize("tune", [
        _seed_result(0, ["value"], 66, 0.5),
        _seed_result(1, ["value"], 66, 0.75),
    ])
    assert same["terms"] == ["value"]
    assert cli._table(same).splitlines()[1] == (
        "  trained: value: 66 params (0.0660%)"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["tune", "--task", "sst2", "--probe-epochs", "2"],
         "unrecognized arguments: --probe-epochs 2 (see `beft tune --help`)"),
        (["predict", "--task", "sst2", "--input", "a", "--delta", "b",
          "--overwrite"],
         "unrecognized arguments: --overwrite (see `beft predict --help`)"),
    ],
)
def test_an_unknown_option_points_to_its_commands_help(args, message, capsys):
    # `beft --help` lists the commands, not the options of any.
    assert cli.main(args) == 2
    assert capsys.readouterr().err == f"beft: error: {message}\n"


@pytest.mark.parametrize("name", ["", "new/"])
def test_predict_refuses_an_output_that_names_a_folder_before_any_work(
    name, tmp_path, capsys, monkeypatch
):
    texts = tmp_path / "texts.tsv"
    texts.write_text("sentence\ngood\n")
    monkeypatch.setattr(pipeline, "predict", None)  # never reached
    assert cli.main(
        ["predict", "--task", "sst2", "--input", str(texts),
         "--delta", str(texts), "--output", name]
    ) == 2
    assert capsys.readouterr().err == (
        f"beft: error: Output '{name}' is a folder, not a file.\n"
    )


def test_an_interrupted_predict_says_nothing_was_written(
    tmp_path, capsys, monkeypatch
):
    texts = tmp_path / "texts.tsv"
    texts.write_text("sentence\ngood\n")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "predict", interrupt)
    assert cli.main(
        ["predict", "--task", "sst2", "--input", str(texts),
         "--delta", str(texts), "--output", str(tmp_path / "p.tsv")]
    ) == 130
    assert capsys.readouterr().err == "beft: interrupted; nothing was written.\n"
    assert sorted(os.listdir(tmp_path)) == ["texts.tsv"]


def test_predict_keeps_its_delta(tmp_path, capsys, monkeypatch):
    texts = tmp_path / "texts.tsv"
    texts.write_text("sentence\ngood\n")
    delta = tmp_path / "delta.safetensors"
    delta.write_bytes(b"tuned")
    monkeypatch.setattr(pipeline, "predict", None)  # never reached
    assert cli.main(
        ["predict", "--task", "sst2", "--input", str(texts),
         "--delta", str(delta), "--output", str(tmp_path / "." / delta.name)]
    ) == 2
    assert capsys.readouterr().err == (
        f"beft: error: Output '{tmp_path / '.' / delta.name}' is the delta "
        "file: choose another --output, so that the delta is kept.\n"
    )
    assert delta.read_bytes() == b"tuned"
