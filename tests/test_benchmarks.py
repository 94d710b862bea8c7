"""The benchmark scripts' --quick plumbing, in-process on the current backend,
on a tiny BERT preset and a tiny TSV task (no MiniLM, no timing checks)."""

import os

import keras

from benchmarks import accuracy
from benchmarks import common
from benchmarks import report
from benchmarks import step_cost
from tests.conftest import write_pair_task
from tests.conftest import write_sst2_task


def test_quick_modes_write_results_and_report(classifier_preset, tmp_path):
    data_dir = str(write_sst2_task(tmp_path / "glue"))
    results = str(tmp_path / "results")
    common_args = ["--quick", "--worker", "--model", classifier_preset,
                   "--data-dir", data_dir, "--results", results,
                   "--sequence-length", "12"]

    # Two methods, one padding, one round: the plumbing, not the timing.
    timing = step_cost.measure_steps(
        classifier_preset, data_dir, rounds=1, methods=("b_v", "full"),
        paddings=("fixed128",), warmup_per_shape=1, verbose=False,
        sequence_length=12,
    )
    assert set(timing["fixed128"]["ratio_to_full"]) == {"b_v", "full"}
    assert timing["fixed128"]["lengths"] == [12]

    assert accuracy.main(
        common_args + ["--methods", "b_v", "b_k", "b_q", "random", "untuned"]
    ) == 0
    assert accuracy.main(common_args + ["--methods", "b_v",
                                        "--fixed-padding"]) == 0
    assert accuracy.main(common_args + ["--methods", "b_v", "--pooling",
                                        "cls", "--subset-draw", "paper"]) == 0
    assert accuracy.main(common_args + [
        "--methods", "b_v", "--pooling", "cls", "--subset-draw", "paper",
        "--batching", "mixed"]) == 0
    output = str(tmp_path / "docs" / "benchmarks.md")
    assert report.main(["--quick", "--results", results,
                        "--output", output]) == 0

    backend = keras.backend.backend()
    rows = beft_keras_json(results, f"accuracy_{backend}_quick.json")["rows"]
    assert {r["method"] for r in rows} == {
        "b_v", "b_k", "b_q", "random", "untuned"}
    untuned = next(r for r in rows if r["method"] == "untuned")
    assert (untuned["trainable_params"], untuned["epochs"]) == (0, 0)
    # The dev curve's last epoch is the final model the row scores.
    b_v = next(r for r in rows if r["method"] == "b_v")
    assert b_v["curve"] == [b_v["score"]]
    fixed = beft_keras_json(results, f"accuracy_{backend}_fixed12_quick.json")
    assert [(r["method"], r["padding"]) for r in fixed["rows"]] == [
        ("b_v", "fixed12")]
    text = open(output).read()
    assert "| SST-2 b_v >= 0.80 |" in text
    assert "Length buckets against fixed padding to 12" in text
    assert "Quick (smoke-test) results" in text
    assert "## 4. Selection quality" in text
    assert os.path.exists(
        tmp_path / "docs" / f"benchmarks_accuracy_{backend}_quick.png")

    # `--subset-draw paper` rows go to their own file, are not merged into
    # the `--pooling cls` rows or the default ones, and get their own table.
    paper = beft_keras_json(results, f"accuracy_{backend}_cls_paper_quick.json")
    assert [(r["method"], r["pooling"], r["subset_draw"])
            for r in paper["rows"]] == [("b_v", "cls", "paper")]
    assert [p["subset_draw"] for p in paper["probes"]] == ["paper"]
    assert common.load_accuracy(results, backend, True, pooling="cls") is None
    merged = common.load_accuracy(results, backend, True, pooling="cls",
                                  subset_draw="paper")
    assert [r["subset_draw"] for r in merged["rows"]] == ["paper"]
    # `--batching mixed` rows: their own file, never merged with bucketed.
    mixed = beft_keras_json(
        results, f"accuracy_{backend}_cls_paper_mixed_quick.json")
    assert [(r["method"], r["batching"]) for r in mixed["rows"]] == [
        ("b_v", "mixed")]
    assert [r["batching"] for r in merged["rows"]] == ["bucketed"]
    assert [r["batching"] for r in common.load_accuracy(
        results, backend, True, pooling="cls", subset_draw="paper",
        batching="mixed")["rows"]] == ["mixed"]
    default = common.load_accuracy(results, backend, True)
    assert {r["subset_draw"] for r in default["rows"]} == {"seeded"}
    assert ("The same head, bucketed batches (the default), on the authors' "
            "exact training examples") in text
    assert "The same head, mixed batches (`--batching mixed`" in text
    score = paper["rows"][0]["score"]
    assert (f"| sst2 | b_v | 0 | {score:.4f} | {score:.4f} | not run | "
            "not run |") in text


def beft_keras_json(results, name):
    import json

    with open(os.path.join(results, name)) as f:
        return json.load(f)


def test_pooling_variant_reads_pairs_together(classifier_preset, tmp_path):
    """On a sentence-transformer a pair is siamese by default; the
    `--pooling` variants (the paper's heads) read it as a cross-encoder."""
    import shutil

    preset = str(tmp_path / "sentence_transformer")
    shutil.copytree(classifier_preset, preset)
    os.makedirs(os.path.join(preset, "1_Pooling"))
    with open(os.path.join(preset, "1_Pooling", "config.json"), "w") as f:
        f.write('{"pooling_mode_mean_tokens": true}')
    data_dir = str(write_pair_task(tmp_path / "glue", "rte"))
    results = str(tmp_path / "results")
    # The untuned model: the head is built and recorded, nothing is fit.
    args = ["--quick", "--worker", "--model", preset, "--data-dir", data_dir,
            "--results", results, "--sequence-length", "12", "--tasks", "rte",
            "--methods", "untuned"]
    assert accuracy.main(args) == 0
    assert accuracy.main(args + ["--pooling", "mean"]) == 0
    backend = keras.backend.backend()
    default = beft_keras_json(results, f"accuracy_{backend}_quick.json")
    mean = beft_keras_json(results, f"accuracy_{backend}_mean_quick.json")
    assert [r["head"] for r in default["rows"]] == ["siamese mean"]
    assert [r["head"] for r in mean["rows"]] == ["mean"]


def test_selection_counts_head_only_as_b_k_where_b_k_did_not_run():
    from benchmarks import selection

    def row(seed, method, score):
        return {"task": "rte", "seed": seed, "method": method,
                "score": score}

    def probe(seed, chosen):
        return {"task": "rte", "seed": seed, "averages": {},
                "selected": {"beft": chosen, "magnitude": "key",
                             "fisher": "query"}}

    accuracy = {
        "rows": [row(0, "b_q", 0.5), row(0, "b_v", 0.6), row(0, "b_k", 0.7),
                 row(0, "head", 0.1),  # b_k ran on seed 0: it counts.
                 row(1, "head", 0.55), row(1, "b_q", 0.5), row(1, "b_v", 0.6),
                 row(2, "b_v", 0.6), row(2, "b_q", 0.5)],  # no b_k, no head
        "probes": [probe(0, "value"), probe(1, "value"), probe(2, "value")],
    }
    result = selection.selection_quality(accuracy)
    assert [(c["seed"], c["dev_score"], c["best"])
            for c in result["cases"]] == [
        (0, {"query": 0.5, "key": 0.7, "value": 0.6}, ["key"]),
        (1, {"query": 0.5, "key": 0.55, "value": 0.6}, ["value"]),
    ]
    assert result["agreement"] == {
        "beft": {"agree": 1, "cases": 2, "rate": 0.5},
        "magnitude": {"agree": 1, "cases": 2, "rate": 0.5},
        "fisher": {"agree": 0, "cases": 2, "rate": 0.0},
    }


def test_paper_draw_rows_sit_beside_the_authors_code():
    """The `--subset-draw paper` table and targets pair each seed with the
    authors' own code on that seed, and average only seeds both ran."""
    from benchmarks.report import accuracy as report_accuracy

    paper = {"rows": [
        {"task": "rte", "method": "b_v", "seed": s, "score": score,
         "curve": [0.5, score, best]}
        for s, score, best in ((0, 0.54, 0.56), (1, 0.52, 0.58),
                               (2, 0.50, 0.51))]}
    authors = {"rows": [
        {"task": "rte", "terms": ["value"], "seed": 0, "last": 0.55,
         "best": 0.57},
        {"task": "rte", "terms": ["value"], "seed": 1, "last": 0.49,
         "best": 0.53},
        # Another method's run: not paired with b_v.
        {"task": "rte", "terms": ["all"], "seed": 2, "last": 0.9,
         "best": 0.9},
    ]}
    table = report_accuracy._paper_subset_table(paper, authors)
    assert "| rte | b_v | 0 | 0.5400 | 0.5600 | 0.5500 | 0.5700 |" in table
    assert "| rte | b_v | 2 | 0.5000 | 0.5100 | not run | not run |" in table
    # Seeds 0 and 1: library (0.54, 0.52) and (0.56, 0.58); authors'
    # (0.55, 0.49) and (0.57, 0.53); sample std of two values |a-b|/sqrt(2).
    assert ("| rte | b_v | mean, seeds both ran | 0.5300 ± 0.0141 (2) | "
            "0.5700 ± 0.0141 (2) | 0.5200 ± 0.0424 (2) | "
            "0.5500 ± 0.0283 (2) |") in table
    # The same rows as mixed batches get their own lines; bucketed ones
    # that did not run still show, an unrun option (mixed) does not.
    for variants, label in (({"bucketed": (None, paper)}, ""),
                            ({"bucketed": (None, None),
                              "mixed": (None, paper)}, ", mixed batches")):
        targets = "\n".join(report_accuracy._targets([], variants, None,
                                                     authors))
        assert (f"| --pooling cls{label}, the authors' draw, rte b_v >= the "
                "authors' code at identical settings (last epoch, seeds "
                "both ran) | 0.5300 vs 0.5200 | met so far (2 of 3 seeds) "
                "|") in targets
        assert ("(best epoch, seeds both ran) | 0.5700 vs 0.5500 | "
                "met so far (2 of 3 seeds) |") in targets
        assert ("| --pooling cls, rte b_v >= the authors' 0.552 | - | "
                "not run |") in targets
    targets = "\n".join(report_accuracy._targets(
        [], {"bucketed": (None, paper), "mixed": (None, None)}, None, authors))
    assert "mixed batches" not in targets


def test_authors_code_reads_glue_tsv_and_skips_training_set_evaluation(
        tmp_path):
    from benchmarks import authors_code

    path = tmp_path / "train.tsv"
    path.write_text("\ufeffsentence1\tsentence2\tlabel\na\tb\t0\n\nc\td\t1\n",
                    encoding="utf-8")
    assert authors_code._read_tsv(str(path)) == {
        "sentence1": ["a", "c"], "sentence2": ["b", "d"], "label": ["0", "1"]}
    calls = []

    def evaluate(loader, kind):
        calls.append(kind)
        return {"Accuracy": 0.5}

    dev_only = authors_code._skip_training_set(evaluate)
    assert dev_only("train loader", "TRAIN") == {}
    assert dev_only("dev loader", "VALIDATION") == {"Accuracy": 0.5}
    assert calls == ["VALIDATION"]
