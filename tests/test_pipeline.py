"""The pipeline's steps, and regression tests for bugs a review found."""

import json
import re

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import beft_keras
from beft_keras import cli
from beft_keras import data
from beft_keras import gradients
from beft_keras import outputs
from beft_keras import pipeline
from tests.conftest import snapshot
from tests.conftest import write_sst2_task


def _tiny_args(data_dir, model):
    return [
        "--task", "sst2", "--data-dir", str(data_dir), "--model", model,
        "--batch-size", "8", "--sequence-length", "12",
    ]


def _predict_accuracy(data_dir, tuned, model, tmp_path, capsys):
    capsys.readouterr()
    assert cli.main(
        ["predict", "--task", "sst2",
         "--input", str(data_dir / "sst2" / "dev.tsv"), "--delta", str(tuned),
         "--model", model, "--sequence-length", "12",
         "--output", str(tmp_path / "predictions.tsv")]
    ) == 0
    printed = capsys.readouterr().out
    return float(printed.split("accuracy: ")[1].split()[0])


def test_full_fine_tune_writes_weights_that_predict_loads(
    classifier_preset, tmp_path, capsys
):
    """Bug 1: `--terms full` wrote a biases-only delta whose fingerprint
    held the tuned kernels, which `predict` then refused."""
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "full"
    assert cli.main(
        ["tune", *_tiny_args(data_dir, classifier_preset), "--terms", "full",
         "--epochs", "2", "--learning-rate", "1e-3", "--output", str(output)]
    ) == 0
    tuned = output / "seed_0" / "model.weights.h5"
    assert tuned.exists() and not (output / "seed_0" / "delta.safetensors").exists()
    results = json.loads((output / "results.json").read_text())
    accuracy = _predict_accuracy(
        data_dir, tuned, classifier_preset, tmp_path, capsys
    )
    assert accuracy == pytest.approx(
        results["metrics"]["accuracy"]["mean"], abs=1e-4
    )
    # On a model it does not fit, Keras' reason, on a later line of its
    # message, stays in the one line of the error.
    other = keras_hub.models.BertTextClassifier.from_preset(
        classifier_preset, num_classes=3, preprocessor=None
    )
    before = snapshot(other)
    with pytest.raises(ValueError, match="do not fit this model") as error:
        outputs.load_tuned(other, str(tuned), data.get_task("sst2"))
    message = str(error.value)
    assert "\n" not in message and "Example error message" in message
    assert message.split("Example error message")[1].strip(" :.")
    after = snapshot(other)
    assert all(after[p].tobytes() == before[p].tobytes() for p in before)
    # Keras' file records no task: the run's results.json beside it does.
    model = keras_hub.models.BertTextClassifier.from_preset(
        classifier_preset, num_classes=2, preprocessor=None
    )
    before = snapshot(model)
    with pytest.raises(ValueError, match=re.escape(
        "were tuned for task 'sst2' (its run's results.json), not 'cola'. "
        "Load them for task 'sst2', or pass --allow-task-mismatch"
    )):
        outputs.load_tuned(model, str(tuned), data.get_task("cola"))
    after = snapshot(model)
    assert all(after[p].tobytes() == before[p].tobytes() for p in before)
    outputs.load_tuned(model, str(tuned), data.get_task("cola"),
                       allow_task_mismatch=True)
    assert any(
        snapshot(model)[p].tobytes() != before[p].tobytes() for p in before
    )


def test_recompile_keeps_the_causal_lm_sampler(causal_lm_preset):
    """Bug 2: the implicit recompilation rebuilt a causal LM with keras-hub's
    default top-k sampler instead of the one it was compiled with."""
    causal_lm = keras_hub.models.CausalLM.from_preset(causal_lm_preset)
    causal_lm.compile(sampler="greedy")
    beft_keras.BiasOnlyTrainable("value").apply(causal_lm)
    assert isinstance(causal_lm.sampler, keras_hub.samplers.GreedySampler)
    sampler = keras_hub.samplers.TopPSampler(p=0.5)
    causal_lm.compile(sampler=sampler)
    beft_keras.BiasOnlyTrainable("all").apply(causal_lm)
    assert causal_lm.sampler is sampler


def test_unconnected_variable_has_zero_gradient():
    """Bug 3: TensorFlow returned None (and crashed) for a trainable
    variable the loss does not depend on; every backend gives zeros."""
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="used")(inputs)
    model = keras.Model(inputs, outputs)
    unused = keras.layers.Dense(4, name="unused")
    unused.build((None, 5))
    model.unused = unused
    model.compile(loss="mse")
    x = np.ones((2, 3), "float32")
    y = np.zeros((2, 2), "float32")
    grads = gradients.loss_gradient_function(model)(x, y)
    paths = [v.path for v in model.trainable_variables]
    by_path = dict(zip(paths, grads))
    assert np.array_equal(by_path["unused/kernel"], np.zeros((5, 4)))
    assert np.array_equal(by_path["unused/bias"], np.zeros(4))
    # d/db mean((x W + b)^2) = 2 (x W + b) / 2 per output, averaged over
    # the batch: with W, b read from the model.
    kernel = keras.ops.convert_to_numpy(model.get_layer("used").kernel)
    bias = keras.ops.convert_to_numpy(model.get_layer("used").bias)
    expected = (2 * (x @ kernel + bias) / 2).mean(axis=0)
    np.testing.assert_allclose(by_path["used/bias"], expected, rtol=1e-6)


class EchoModel(keras.Model):
    """Logits that are the inputs: a perfect classifier of one-hot rows."""

    def call(self, x):
        return x


def test_evaluate_reads_a_shuffled_dataset_once():
    """Bug 4: labels and predictions came from two passes over the dataset,
    which a reshuffling dataset yields in different orders."""
    labels = np.arange(64) % 2
    x = np.eye(2, dtype="float32")[labels] * 10
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, labels.astype("int32")))
        .shuffle(64, seed=0, reshuffle_each_iteration=True)
        .batch(8)
    )
    model = EchoModel()
    model.compile(loss="sparse_categorical_crossentropy")
    spec = beft_keras.get_task("sst2")
    assert pipeline.evaluate(model, spec, dataset) == {"accuracy": 1.0}


def test_bias_free_causal_lm_gets_value_biases(llama_preset, tmp_path, capsys):
    """Bug 5: the commands failed on bias-free decoders; they now add a
    zero-initialised b_v (the paper's recipe) and train only it."""
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "run"
    assert cli.main(
        ["tune", *_tiny_args(data_dir, llama_preset), "--terms", "value",
         "--epochs", "2", "--output", str(output)]
    ) == 0
    results = json.loads((output / "results.json").read_text())
    # Two layers of a value projection of 2 heads x 4 dimensions; the LM
    # head (the embedding) stays frozen.
    assert results["trainable_params"] == 2 * 2 * 4
    accuracy = _predict_accuracy(
        data_dir, output / "seed_0" / "delta.safetensors", llama_preset,
        tmp_path, capsys,
    )
    assert accuracy == results["metrics"]["accuracy"]["mean"]


def _probe_biases(run, data):
    beft_keras.BiasOnlyTrainable("all").apply(run.classifier)
    beft_keras.models.compile_model(run.classifier, run.spec, 1e-2)
    probe = beft_keras.BeftProbe(data=data, max_batches=2, verbose=0)
    run.classifier.fit(
        run.train_batches, epochs=2, callbacks=[probe], shuffle=False,
        verbose=0,
    )
    return snapshot(run.classifier)


def test_probe_data_does_not_change_the_fit(classifier_preset, tmp_path):
    """Bug 6: measuring Fisher on the training batches consumed an epoch of
    their shuffle, so the probe fit saw other batches than without it."""
    data_dir = write_sst2_task(tmp_path / "glue")
    args = dict(data_dir=str(data_dir), model=classifier_preset,
                batch_size=8, sequence_length=12)
    without = _probe_biases(pipeline.prepare("sst2", **args), None)
    run = pipeline.prepare("sst2", **args)
    with_data = _probe_biases(run, run.probe_batches)
    assert without.keys() == with_data.keys()
    for path in without:
        np.testing.assert_array_equal(without[path], with_data[path])


def test_probe_measures_at_most_32_batches_by_default(bert_preset):
    from tests.conftest import bert_inputs

    features, labels = bert_inputs(8)
    backbone = keras_hub.models.BertBackbone.from_preset(bert_preset)
    classifier = keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None
    )
    drawn = []

    def batches():
        for i in range(40):
            drawn.append(i)
            yield features, labels

    beft_keras.BiasOnlyTrainable("all").apply(classifier)
    classifier.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    probe = beft_keras.BeftProbe(data=batches(), verbose=0)
    classifier.fit(features, labels, epochs=1, callbacks=[probe], verbose=0)
    assert len(drawn) == 32


def test_preset_pooling_reads_a_sentence_transformers_folder(tmp_path):
    assert beft_keras.preset_pooling(str(tmp_path)) == "cls"
    (tmp_path / "1_Pooling").mkdir()
    config = tmp_path / "1_Pooling" / "config.json"
    config.write_text(json.dumps(
        {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}
    ))
    assert beft_keras.preset_pooling(str(tmp_path)) == "mean"
    config.write_text("{not json")
    with pytest.raises(ValueError, match="Cannot read the pooling config"):
        beft_keras.preset_pooling(str(tmp_path))


def test_the_default_model_pools_by_mean():
    from tests.conftest import minilm_preset_dir

    assert beft_keras.preset_pooling(minilm_preset_dir()) == "mean"


def test_mean_pooling_head(classifier_preset, tmp_path, capsys):
    """`--pooling mean`: a dense head on keras-hub's mean-pooled embedding;
    only the value biases and that head train, and `predict` with the same
    pooling gives the run's accuracy."""
    data_dir = write_sst2_task(tmp_path / "glue")
    output = tmp_path / "mean"
    args = [*_tiny_args(data_dir, classifier_preset), "--pooling", "mean"]
    assert cli.main(
        ["tune", *args, "--epochs", "2", "--learning-rate", "1e-2",
         "--output", str(output)]
    ) == 0
    results = json.loads((output / "results.json").read_text())
    run = results["runs"][0]
    assert run["head"] == "mean"
    # Two layers of 8 value biases, and a dense head of 8 x 2 + 2.
    assert results["trainable_params"] == 2 * 8 + 18
    capsys.readouterr()

    def predict(pooling, name):
        return cli.main(
            ["predict", "--task", "sst2", *pooling,
             "--input", str(data_dir / "sst2" / "dev.tsv"),
             "--delta", str(output / "seed_0" / "delta.safetensors"),
             "--model", classifier_preset, "--sequence-length", "12",
             "--output", str(tmp_path / name)]
        )

    assert predict(["--pooling", "mean"], "predictions.tsv") == 0
    printed = capsys.readouterr().out
    accuracy = float(printed.split("accuracy: ")[1].split()[0])
    assert accuracy == pytest.approx(
        results["metrics"]["accuracy"]["mean"], abs=1e-4
    )
    # The preset's own head, the [CLS] classifier, has a head of the same
    # shape: the delta names the class it was tuned as.
    assert predict([], "cls.tsv") == 2
    error = capsys.readouterr().err
    assert "saved from a model of class 'beft_keras>PooledClassifier', not " \
        "'keras_hub>BertTextClassifier'" in error
    assert "the same --pooling and --pair-encoding" in error
    assert not (tmp_path / "cls.tsv").exists()


def test_pooled_classifier_matches_the_embedder(bert_preset):
    """The head reads keras-hub's own mean pooling: its logits are the
    dense layer applied to the embedder's output."""
    embedder = keras_hub.models.BertTextEmbedder(
        keras_hub.models.BertBackbone.from_preset(bert_preset),
        pooling_mode="mean", normalize=False,
    )
    classifier = beft_keras.PooledClassifier(embedder, num_classes=3)
    from tests.conftest import bert_inputs

    features, _ = bert_inputs(4)
    pooled = keras.ops.convert_to_numpy(embedder(features))
    dense = classifier.get_layer("logits")
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    bias = keras.ops.convert_to_numpy(dense.bias)
    logits = keras.ops.convert_to_numpy(classifier(features, training=False))
    np.testing.assert_allclose(logits, pooled @ kernel + bias, rtol=1e-5, atol=1e-6)
    assert [v.path for v in beft_keras.head_variables(classifier)] == [
        "logits/kernel", "logits/bias"
    ]


def test_prepare_draws_the_subset_it_is_asked_for(classifier_preset, tmp_path):
    """SST-2's low regime keeps 1000 of these 1040 examples: the library's
    seeded draw, or the BEFT authors' (`subset_draw="paper"`)."""
    from beft_keras import data

    data_dir = str(write_sst2_task(tmp_path / "glue", num_train=1040))
    train = data.load_split("sst2", "train", data_dir)
    subsets = {}
    for draw in ("seeded", "paper"):
        run = pipeline.prepare("sst2", data_dir, classifier_preset, seed=1,
                               sequence_length=12, subset_draw=draw)
        expected = data.training_subset("sst2", train, "low", 1, draw=draw)
        assert len(run.train) == 1000
        np.testing.assert_array_equal(run.train.features["sentence"],
                                      expected.features["sentence"])
        subsets[draw] = run.train.features["sentence"]
    assert list(subsets["seeded"]) != list(subsets["paper"])


def test_prepare_batches_as_asked(classifier_preset, tmp_path):
    """The training sentences are 6 to 10 tokens long, in buckets 8 and 12:
    bucketed batches never mix the two, mixed ones (cut from all examples
    in one shuffled order) do; both hold every example once an epoch, and
    the dev batches are the same either way."""
    data_dir = str(write_sst2_task(tmp_path / "glue"))
    dev_shapes = []
    for batching in ("bucketed", "mixed"):
        run = pipeline.prepare("sst2", data_dir, classifier_preset, seed=1,
                               batch_size=8, sequence_length=12, buckets=(8,),
                               batching=batching)
        assert run.batching == batching
        epoch = [f["padding_mask"].sum(1)
                 for f, _ in run.train_batches.as_numpy_iterator()]
        assert sum(len(lengths) for lengths in epoch) == len(run.train) == 48
        mixes = [len(set(lengths > 8)) > 1 for lengths in epoch]
        assert any(mixes) == (batching == "mixed")
        if batching == "mixed":
            assert [len(lengths) for lengths in epoch] == [8] * 6
        dev_shapes.append([f["padding_mask"].shape for f, _ in
                           run.dev_batches.as_numpy_iterator()])
    assert dev_shapes[0] == dev_shapes[1]


def test_a_custom_task_trains_at_the_rate_and_epochs_it_is_given(
    classifier_preset, tmp_path
):
    """A `TaskSpec` of the caller's own has no paper settings: it loads,
    and its fits ask for the rate and epochs the table cannot give."""
    write_sst2_task(tmp_path / "glue")
    (tmp_path / "glue" / "sst2").rename(tmp_path / "glue" / "mood")
    spec = data.TaskSpec(
        name="mood", features=("sentence",), num_classes=2,
        metrics=("f1", "accuracy"), tfds_name="none/mood",
        dev_split="validation", regimes={"low": 16, "full": None},
    )
    run = pipeline.prepare(spec, str(tmp_path / "glue"), classifier_preset,
                           batch_size=8, sequence_length=12)
    assert (run.settings.learning_rate, run.settings.epochs) == (None, None)
    with pytest.raises(ValueError, match=(
        r"^Task 'mood' has no default `epochs` "
        r"\(`beft_keras.training_settings`\): pass one.$"
    )):
        pipeline.tune(run, "value", verbose=0)
    with pytest.raises(ValueError, match="no default `learning_rate`"):
        pipeline.tune(run, "value", epochs=1, verbose=0)
    with pytest.raises(ValueError, match="no default `learning_rate`"):
        pipeline.probe(run, verbose=0)
    # A numpy float is a rate too (2**-10: exact in float32).
    result = pipeline.tune(
        run, "value", epochs=1, learning_rate=np.float32(2**-10), verbose=0
    )
    assert (result["epochs"], result["learning_rate"]) == (1, 2**-10)
    assert list(result["metrics"]) == ["f1", "accuracy"]


@pytest.mark.parametrize("learning_rate", [True, "1e-3", np.nan])
def test_tune_refuses_a_learning_rate_that_is_no_number(
    learning_rate, classifier_preset, tmp_path
):
    data_dir = str(write_sst2_task(tmp_path / "glue", num_train=8, num_dev=8))
    run = pipeline.prepare("sst2", data_dir, classifier_preset,
                           batch_size=8, sequence_length=12)
    with pytest.raises(ValueError, match=(
        r"^`learning_rate` must be a finite number above 0. Received: "
        rf"learning_rate={learning_rate!r}$"
    )):
        pipeline.tune(run, "value", epochs=1, learning_rate=learning_rate,
                      verbose=0)
