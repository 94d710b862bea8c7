"""The README's quick start, as written: a keras-hub task with its own
preprocessor, raw strings in a `tf.data.Dataset`, the probe, the
selection, and a delta."""

import keras
import keras_hub
import numpy as np
import tensorflow as tf

import beft_keras
from tests.conftest import snapshot
from tests.conftest import write_sst2_task


def test_readme_quick_start(classifier_preset, tmp_path):
    data_dir = write_sst2_task(tmp_path / "glue")
    train = beft_keras.load_split("sst2", "train", str(data_dir))
    train_ds = tf.data.Dataset.from_tensor_slices(
        (train.features["sentence"], train.labels)
    ).batch(8)

    keras.utils.set_random_seed(0)
    classifier = keras_hub.models.BertTextClassifier.from_preset(
        classifier_preset, num_classes=2
    )
    beft_keras.BiasOnlyTrainable("all").apply(classifier)
    classifier.compile(optimizer=keras.optimizers.AdamW(1e-2))
    probe = beft_keras.BeftProbe(data=train_ds, verbose=0)
    start = snapshot(classifier)
    classifier.fit(train_ds, epochs=1, callbacks=[probe], verbose=0)
    beft = probe.results.averages["beft"]
    assert probe.selected == max(("query", "key", "value"), key=beft.get)
    # Fisher was measured through the classifier's own preprocessor.
    assert probe.results.selected_by("fisher") in ("query", "value")

    probe.apply_selection()
    reset = snapshot(classifier)
    for path in start:
        np.testing.assert_array_equal(reset[path], start[path])
    classifier.fit(train_ds, epochs=2, verbose=0)
    after = snapshot(classifier)
    trained = {v.path for v in classifier.trainable_weights}
    selected = {
        b.path for b in beft_keras.bias_terms(classifier)
        if b.term == probe.selected
    }
    head = {v.path for v in beft_keras.head_variables(classifier)}
    assert trained == selected | head
    for path in start:
        changed = not np.array_equal(after[path], start[path])
        assert changed == (path in trained), path

    path = tmp_path / "sst2.safetensors"
    beft_keras.save_delta(classifier, path, base="tiny", task="sst2")
    fresh = keras_hub.models.BertTextClassifier.from_preset(
        classifier_preset, num_classes=2
    )
    beft_keras.load_delta(fresh, path, task="sst2")
    texts = tf.constant(["the film was good", "the film was awful"])
    np.testing.assert_allclose(
        fresh.predict(texts, verbose=0), classifier.predict(texts, verbose=0),
        atol=1e-6,
    )
