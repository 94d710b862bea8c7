"""Heads on a keras-hub `TextEmbedder`: a dense layer on the pooled
embedding, and a sentence pair read by one embedder, one sentence at a
time."""

import json
import warnings

import keras
import keras_hub
import numpy as np
import pytest

import beft_keras
from beft_keras import cli
from beft_keras import gradients
from beft_keras import tuning
from tests.conftest import bert_inputs
from tests.conftest import snapshot
from tests.conftest import write_pair_task


def _embedder(bert_preset):
    return keras_hub.models.BertTextEmbedder(
        keras_hub.models.BertBackbone.from_preset(bert_preset),
        pooling_mode="mean", normalize=False,
    )


def _cosine(u, v):
    norms = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
    return (u * v).sum(1) / norms


def _pair(seed):
    first, _ = bert_inputs(4, seed=seed)
    second, _ = bert_inputs(4, seed=seed + 1)
    return first, second, {**first, **{k + "_2": v for k, v in second.items()}}


def test_similarity_is_the_scaled_cosine(bert_preset):
    embedder = _embedder(bert_preset)
    model = beft_keras.SiameseClassifier(embedder, num_classes=1)
    first, second, inputs = _pair(0)
    u = keras.ops.convert_to_numpy(embedder(first)).astype("float64")
    v = keras.ops.convert_to_numpy(embedder(second)).astype("float64")
    cosine = _cosine(u, v)
    output = keras.ops.convert_to_numpy(model(inputs, training=False))
    np.testing.assert_allclose(output[:, 0], 5.0 * cosine, rtol=1e-5)
    # No head: the embedder's biases are all that can train.
    assert beft_keras.head_variables(model) == []


def test_classification_is_a_line_in_the_cosine(bert_preset):
    embedder = _embedder(bert_preset)
    model = beft_keras.SiameseClassifier(embedder, num_classes=3)
    dense = model.get_layer("logits")
    # Small, not zero: classes start about equally likely, and the loss
    # already depends on the embedder.
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    assert np.all(kernel != 0) and np.all(np.abs(kernel) <= 0.04)
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(1, 3)).astype("float32")
    bias = rng.normal(size=(3,)).astype("float32")
    dense.set_weights([kernel, bias])
    first, second, inputs = _pair(2)
    u = keras.ops.convert_to_numpy(embedder(first)).astype("float64")
    v = keras.ops.convert_to_numpy(embedder(second)).astype("float64")
    cosine = _cosine(u, v)
    expected = 20.0 * (cosine[:, None] * kernel + bias)
    output = keras.ops.convert_to_numpy(model(inputs, training=False))
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-4)
    assert [w.path for w in beft_keras.head_variables(model)] == [
        dense.kernel.path, dense.bias.path
    ]


def test_a_fresh_classifier_passes_gradient_to_the_biases(bert_preset):
    """The probe's Fisher score is measured at the starting weights: a
    zero head would give every bias a zero gradient there."""
    model = beft_keras.SiameseClassifier(_embedder(bert_preset), 2)
    beft_keras.BiasOnlyTrainable("value").apply(model)
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    _, _, inputs = _pair(6)
    labels = np.array([0, 1, 1, 0])
    grads = gradients.loss_gradient_function(model)(inputs, labels)
    paths = [v.path for v in model.trainable_variables]
    values = [g for g, p in zip(grads, paths) if "value" in p]
    assert len(values) == 2 and all(np.any(g != 0) for g in values)


@pytest.mark.parametrize(
    "task, metric, trainable",
    # The value biases of two layers; a cosine has no head to train, a
    # classifier a line in it per class.
    [("stsb", "pearson", 2 * 8), ("rte", "accuracy", 2 * 8 + 2 * 2)],
)
def test_siamese_pairs_from_the_command(
    task, metric, trainable, classifier_preset, tmp_path, capsys
):
    data_dir = write_pair_task(tmp_path / "glue", task)
    output = tmp_path / "out"
    args = ["--task", task, "--model", classifier_preset,
            "--sequence-length", "12", "--pair-encoding", "siamese",
            "--pooling", "mean"]
    assert cli.main(
        ["tune", *args, "--data-dir", str(data_dir), "--epochs", "2",
         "--batch-size", "8",
         "--learning-rate", "1e-2", "--output", str(output)]
    ) == 0
    results = json.loads((output / "results.json").read_text())
    assert results["runs"][0]["head"] == "siamese mean"
    assert results["trainable_params"] == trainable
    capsys.readouterr()
    assert cli.main(
        ["predict", *args, "--input", str(data_dir / task / "dev.tsv"),
         "--delta", str(output / "seed_0" / "delta.safetensors"),
         "--output", str(tmp_path / "predictions.tsv")]
    ) == 0
    printed = capsys.readouterr().out
    score = float(printed.split(f"{metric}: ")[1].split()[0])
    assert score == pytest.approx(results["metrics"][metric]["mean"], abs=1e-4)


def test_siamese_needs_a_pair(classifier_preset, tmp_path, capsys):
    from tests.conftest import write_sst2_task

    data_dir = write_sst2_task(tmp_path / "glue")
    code = cli.main(
        ["tune", "--task", "sst2", "--data-dir", str(data_dir),
         "--model", classifier_preset, "--pair-encoding", "siamese",
         "--output", str(tmp_path / "out")]
    )
    assert code == 2
    assert "A siamese head reads sentence pairs; task 'sst2' has one text" \
        in capsys.readouterr().err


@pytest.mark.parametrize(
    "head", [["--pooling", "mean"], ["--pair-encoding", "cross"]]
)
@pytest.mark.parametrize("task", ["sst2", "squad"])
def test_a_causal_lm_refuses_an_encoders_head(
    head, task, causal_lm_preset, tmp_path, capsys
):
    """A decoder is prompted: the head asked for was dropped unsaid."""
    from tests.conftest import write_squad_task
    from tests.conftest import write_sst2_task

    write = write_squad_task if task == "squad" else write_sst2_task
    data_dir = write(tmp_path / "glue")
    output = tmp_path / "out"
    code = cli.main(
        ["tune", "--task", task, "--data-dir", str(data_dir),
         "--model", causal_lm_preset, "--sequence-length", "12", *head,
         "--output", str(output)]
    )
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"beft: error: '{causal_lm_preset}' is a causal LM, which is "
        "prompted: `pooling` and `pair_encoding` (--pooling, "
        "--pair-encoding) choose an encoder's head; leave them unset."
    )
    assert not output.exists()


@pytest.mark.parametrize(
    "head, message",
    [
        (dict(pooling="max"), "Unknown pooling 'max': one of ['cls', 'mean']."),
        (dict(pair_encoding="both"),
         "Unknown pair encoding 'both': one of ['cross', 'siamese']."),
    ],
)
def test_an_unknown_head_is_named_not_read_as_a_failed_load(
    head, message, classifier_preset
):
    from beft_keras import models

    with pytest.raises(ValueError) as error:
        models.load_classifier(
            classifier_preset, beft_keras.get_task("rte"), 12, **head
        )
    assert str(error.value) == message


def test_default_pair_encoding(tmp_path):
    stsb, rte = beft_keras.get_task("stsb"), beft_keras.get_task("rte")
    from beft_keras import heads

    assert heads.default_pair_encoding(str(tmp_path), stsb) == "cross"
    assert heads.default_pair_encoding(str(tmp_path), rte) == "cross"
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        '{"pooling_mode_mean_tokens": true}'
    )
    for task in ("stsb", "rte", "mrpc", "qqp", "qnli", "mnli", "cb"):
        spec = beft_keras.get_task(task)
        assert heads.default_pair_encoding(str(tmp_path), spec) == "siamese"
    # A cosine of the two texts measures neither BoolQ's answer nor WiC's
    # word sense; one text has no pair.
    for task in ("boolq", "wic", "sst2", "cola"):
        spec = beft_keras.get_task(task)
        assert heads.default_pair_encoding(str(tmp_path), spec) == "cross"


def test_heads_number_the_backbone_layers_once(bert_preset):
    """The heads hold the backbone twice (as `backbone` and inside the
    embedder): each bias is listed once, under its own layer index."""
    embedder = _embedder(bert_preset)
    for model in (
        beft_keras.PooledClassifier(embedder, num_classes=2),
        beft_keras.SiameseClassifier(embedder, num_classes=1),
    ):
        biases = [b for b in beft_keras.bias_terms(model) if b.term == "value"]
        assert [b.layer_index for b in biases] == [0, 1]
        paths = [b.path for b in beft_keras.bias_terms(model)]
        assert len(paths) == len(set(paths))


@pytest.mark.parametrize("head", ["pooled", "siamese"])
def test_heads_round_trip_through_their_config(head, bert_preset):
    embedder = _embedder(bert_preset)
    if head == "pooled":
        model = beft_keras.PooledClassifier(embedder, 3, dropout=0.2)
        inputs, _ = bert_inputs(4)
    else:
        model = beft_keras.SiameseClassifier(embedder, 2)
        model.get_layer("logits").set_weights(
            [np.array([[1.0, -1.0]], "float32"),
             np.array([0.5, 0.0], "float32")]
        )
        _, _, inputs = _pair(4)
    clone = type(model).from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(inputs, training=False)),
        keras.ops.convert_to_numpy(model(inputs, training=False)),
        rtol=1e-6, atol=1e-6,
    )
    if head == "pooled":
        assert clone.dropout == 0.2 and clone.num_classes == 3


@pytest.mark.parametrize("head", ["pooled", "siamese"])
@pytest.mark.parametrize("mode", ["all-bias", "full"])
def test_heads_leave_the_unread_pooler_frozen(head, mode, bert_preset):
    """The embedder reads the backbone's token outputs: its `[CLS]` pooler
    gets no gradient, so neither all-bias nor full fine-tuning trains or
    counts it, and a fit leaves it unchanged without Keras' warning."""
    embedder = _embedder(bert_preset)
    if head == "pooled":
        model = beft_keras.PooledClassifier(embedder, num_classes=2)
        inputs, labels = bert_inputs(8)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        model = beft_keras.SiameseClassifier(embedder, num_classes=1)
        _, _, inputs = _pair(6)
        labels = np.linspace(0.0, 5.0, 4).astype("float32")
        loss = "mse"
    pooler = model.backbone.get_layer("pooled_dense")
    pooler_paths = {pooler.kernel.path, pooler.bias.path}
    assert {v.path for v in beft_keras.unread_weights(model)} == pooler_paths
    # Frozen from construction, for a user's own `fit` too.
    assert not any(v.trainable for v in pooler.weights)

    setup = tuning.make_trainable(model, mode)
    trainable = {v.path for v in model.trainable_weights}
    if mode == "full":
        expected = {v.path for v in model.weights} - pooler_paths
    else:
        biases = {b.path for b in beft_keras.bias_terms(model)}
        head_paths = {v.path for v in beft_keras.head_variables(model)}
        expected = (biases | head_paths) - pooler_paths
    assert trainable == expected
    sizes = {v.path: int(np.prod(v.shape)) for v in model.weights}
    assert setup.trainable_params == sum(sizes[p] for p in expected)

    before = snapshot(model)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=loss)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(inputs, labels, batch_size=4, epochs=2, verbose=0)
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
    after = snapshot(model)
    for path in pooler_paths:
        np.testing.assert_array_equal(after[path], before[path])
    value = next(
        b.path for b in beft_keras.bias_terms(model) if b.term == "value"
    )
    assert not np.array_equal(after[value], before[value])


def test_the_preset_classifier_reads_its_pooler(bert_preset):
    """keras-hub's own classifier reads the `[CLS]` pooler: nothing of it
    is unread."""
    classifier = keras_hub.models.BertTextClassifier(
        keras_hub.models.BertBackbone.from_preset(bert_preset),
        num_classes=2, preprocessor=None,
    )
    assert beft_keras.unread_weights(classifier) == []
    tuning.make_trainable(classifier, "all-bias")
    pooler = classifier.backbone.get_layer("pooled_dense")
    assert pooler.bias.trainable and not pooler.kernel.trainable


@pytest.mark.parametrize("head", ["pooled", "siamese"])
def test_heads_refuse_what_is_not_an_embedder(head, bert_preset):
    """A text classifier built silently, a Dense on its logits; a backbone
    failed with a raw Keras error."""
    backbone = keras_hub.models.BertBackbone.from_preset(bert_preset)
    classifier = keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None
    )
    cls = {"pooled": beft_keras.PooledClassifier,
           "siamese": beft_keras.SiameseClassifier}[head]
    for model, name in ((classifier, "BertTextClassifier"),
                        (backbone, "BertBackbone")):
        with pytest.raises(TypeError) as error:
            cls(model, 2)
        assert str(error.value) == (
            "`embedder` must be a keras_hub.models.TextEmbedder, e.g. "
            "`keras_hub.models.TextEmbedder.from_preset(preset, "
            "normalize=False, preprocessor=None)`. Received: embedder of "
            f"type {name}"
        )


def test_a_siamese_similarity_delta_loads_only_onto_its_head(
    bert_preset, tmp_path
):
    """The cosine head has no weights, so the delta holds b_v alone: it
    names the class it was saved from, or a cross-encoder, whose fresh
    head never trained, would load it and predict noise."""
    model = beft_keras.SiameseClassifier(_embedder(bert_preset), 1)
    beft_keras.BiasOnlyTrainable("value").apply(model)
    info = beft_keras.save_delta(model, tmp_path / "stsb.safetensors")
    assert info.model_class == "beft_keras>SiameseClassifier"
    beft_keras.load_delta(
        beft_keras.SiameseClassifier(_embedder(bert_preset), 1), info.path
    )
    cross = keras_hub.models.BertTextClassifier(
        keras_hub.models.BertBackbone.from_preset(bert_preset),
        num_classes=1, preprocessor=None,
    )
    with pytest.raises(beft_keras.DeltaError, match=(
        "was saved from a model of class 'beft_keras>SiameseClassifier', "
        "not 'keras_hub>BertTextClassifier'"
    )):
        beft_keras.load_delta(cross, info.path)
