"""The frozen-feature probe benchmark: its features against hand-computed
numpy, its probe on data a line separates, and its files."""

import json
import os

import keras
import keras_hub
import numpy as np

from beft_keras import data
from benchmarks import frozen_probe
from tests.conftest import write_sst2_task


def test_layer_features_pool_each_layer_over_the_padding_mask(
    classifier_preset,
):
    backbone = keras_hub.models.Backbone.from_preset(classifier_preset)
    inputs = {
        "token_ids": np.array([[2, 5, 6, 3, 0, 0], [2, 7, 3, 0, 0, 0]]),
        "segment_ids": np.zeros((2, 6), "int32"),
        "padding_mask": np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]]),
    }
    features = frozen_probe.layer_features(backbone, inputs)
    last = keras.ops.convert_to_numpy(
        backbone.predict(inputs, verbose=0)["sequence_output"]
    )
    num_layers = len(backbone.transformer_layers)
    assert features["mean"].shape == (num_layers, 2, backbone.hidden_dim)
    np.testing.assert_allclose(
        features["mean"][-1],
        [last[0, :4].mean(0), last[1, :3].mean(0)], rtol=1e-5, atol=1e-6,
    )
    np.testing.assert_allclose(features["cls"][-1], last[:, 0],
                               rtol=1e-5, atol=1e-6)


def test_fit_probe_separates_a_linear_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype("float32")
    # A 3:1 class imbalance, as CoLA's.
    y = (x[:, 0] + 0.5 * x[:, 1] > -0.7).astype("int32")
    for balanced in (False, True):
        scores = frozen_probe.fit_probe(
            data.get_task("cola"), x[:150], y[:150], x[150:], y[150:],
            balanced, seed=0,
        )
        assert scores["mcc"] > 0.9
    scores = frozen_probe.fit_probe(
        data.get_task("stsb"), x[:150], 2.0 * x[:150, 2] + 1.0,
        x[150:], 2.0 * x[150:, 2] + 1.0, False, seed=0,
    )
    assert scores["pearson"] > 0.99


def test_quick_run_writes_results_and_docs(classifier_preset, tmp_path):
    data_dir = str(write_sst2_task(tmp_path / "glue"))
    results = str(tmp_path / "results")
    assert frozen_probe.main([
        "--quick", "--worker", "--task", "sst2", "--model", classifier_preset,
        "--data-dir", data_dir, "--results", results,
        "--sequence-length", "12",
    ]) == 0
    backend = keras.backend.backend()
    quick = os.path.join(results, f"frozen_probe_sst2_{backend}_quick.json")
    with open(quick) as f:
        payload = json.load(f)
    num_layers = len(
        keras_hub.models.Backbone.from_preset(classifier_preset)
        .transformer_layers
    )
    # Two poolings, every layer, with and without class weights.
    assert len(payload["cells"]) == 2 * num_layers * 2
    assert (payload["train_examples"], payload["dev_examples"]) == (48, 16)
    # The docs read full results only: rename the quick file as one.
    os.rename(quick, os.path.join(results, f"frozen_probe_sst2_{backend}.json"))
    output = str(tmp_path / "frozen_probe.md")
    frozen_probe.render(results, output)
    text = open(output).read()
    assert f"## sst2, {backend}" in text
    assert "| layer | mean | mean, balanced | cls | cls, balanced |" in text
    best = max(c["metrics"]["accuracy"] for c in payload["cells"])
    assert f"Best cell: {best:.4f}" in text
