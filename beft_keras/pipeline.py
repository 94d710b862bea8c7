"""The whole BEFT method on a task: prepare, probe, select, fine-tune,
evaluate; and prediction with a tuned model."""

import contextlib
import dataclasses
import math
import numbers
import time

import keras
import numpy as np

from beft_keras import arguments
from beft_keras import data
from beft_keras import distribution as distribution_lib
from beft_keras import heads
from beft_keras import metrics as metrics_lib
from beft_keras import models
from beft_keras import outputs
from beft_keras import tuning
from beft_keras.divergence import StopOnNonFiniteLoss
from beft_keras.probe import BeftProbe
from beft_keras.prompting import TASK_PROMPTS
from beft_keras.prompting import generate_answers
from beft_keras.prompting import generation_inputs
from beft_keras.settings import training_settings

# The longest answer generated for a generation task, in tokens.
MAX_ANSWER_LENGTH = 32
# Dev and prediction batches: inference only, so larger than training's.
EVAL_BATCH_SIZE = 64


@dataclasses.dataclass
class TaskRun:
    """One task, seed and model, ready to train: the data as length-bucketed
    batches and a freshly loaded model.

    Attributes:
        spec: `TaskSpec`.
        model: str. The preset name or folder the classifier came from.
        seed: int.
        regime: str.
        train: `Examples`. The training subset.
        dev: `Examples`. The dev set.
        classifier: the model, without preprocessor: a keras-hub text
            classifier, a `VerbalizerClassifier`, or for a generation task
            the causal LM.
        settings: `TrainingSettings`. The default learning rate and epochs
            for this task and kind of model.
        new_batches: a function that makes a fresh `tf.data.Dataset` of
            the training batches, starting again from their first epoch.
        train_batches: `tf.data.Dataset`, shuffled every epoch.
        probe_batches: `tf.data.Dataset`. The same batches as the first
            epoch of `train_batches`, with their own epoch count, for the
            probe's Fisher measurement: reading them does not change the
            order `fit` sees.
        dev_batches: `tf.data.Dataset`; `None` for a generation task, whose
            dev prompts are answered by `generate_answers`.
        tokenizer: the causal LM's tokenizer, for a generation task.
        sequence_length: int. The longest padded batch.
        distribution: the distribution the model lives under (see
            `beft_keras.distribution`), or `None` for one device.
        subset_draw: str. How the training subset was drawn (see
            `prepare`).
        batching: str. Which examples share a training batch (see
            `prepare`).
    """

    spec: object
    model: str
    seed: int
    regime: str
    train: object
    dev: object
    classifier: object
    settings: object
    new_batches: object
    train_batches: object
    probe_batches: object
    dev_batches: object
    tokenizer: object = None
    sequence_length: int = 128
    distribution: object = None
    subset_draw: str = data.SEEDED
    batching: str = data.BUCKETED

    def scope(self):
        """The distribution's scope, in which the model is built, compiled
        and trained (nothing on one device)."""
        return _scope(self.distribution)

    def describe(self):
        """What a command's results record of the run it trained: the
        task, model, backend, seed and training data."""
        return {
            "task": self.spec.name,
            "model": self.model,
            "backend": keras.backend.backend(),
            "seed": self.seed,
            "regime": self.regime,
            "subset_draw": self.subset_draw,
            "batching": self.batching,
            "train_examples": len(self.train),
        }


def prepare(
    task,
    data_dir=None,
    model=None,
    regime="low",
    seed=0,
    batch_size=16,
    sequence_length=128,
    buckets=data.DEFAULT_BUCKETS,
    max_examples=None,
    pooling=None,
    pair_encoding=None,
    distribution=None,
    subset_draw=data.SEEDED,
    batching=data.BUCKETED,
):
    """Load a task's data and a model for it.

    Args:
        task: str. A task of `beft_keras.data.TASKS`, e.g. `"sst2"`.
        data_dir: str or None. A folder of GLUE-style TSV files
            (`<task>/{train,dev}.tsv`); `None` loads the task from TFDS.
        model: str or None. A keras-hub preset name or a local preset
            folder, of an encoder or of a causal LM (prompted, see
            `models.load_classifier`); `None` is the MiniLM package
            (`models.default_model()`).
        regime: str. Training-set size: `"low"`, `"medium"`, `"high"` or
            `"full"`.
        seed: int. Seeds the training subset, shuffling and initialisation.
        batch_size: int. Training batch size.
        sequence_length: int. The longest padded batch.
        buckets: tuple of int. Padding lengths: a batch is padded to the
            smallest that fits it (`(sequence_length,)` pads every batch to
            the cap).
        max_examples: tuple of two int, or None. At most this many training
            and dev examples (a smoke test's subsets). Defaults to `None`.
        pooling: str or None. An encoder's head: `"cls"` (the preset's
            own classifier) or `"mean"` (see `heads`); `None` is the
            preset's own pooling.
        pair_encoding: str or None. How an encoder reads a sentence pair:
            `"cross"` (together) or `"siamese"` (each sentence on its own);
            `None` is siamese for a pair graded by how alike its texts
            are on an embedding model (all-MiniLM-L6-v2), cross otherwise
            (see `heads.default_pair_encoding`).
        distribution: a data- or model-parallel distribution from
            `beft_keras.distribution` (`get_distribution`), or `None`. The
            model is built under it, and every training batch is a
            multiple of its data-parallel devices.
        subset_draw: str. How the training subset is drawn: `"seeded"` or
            `"paper"`, the BEFT authors' draw (see `data.subsample`).
            Defaults to `"seeded"`.
        batching: str. Which examples share a training batch:
            `"bucketed"` (those of one length bucket) or `"mixed"` (any;
            see `data.make_dataset`). Defaults to `"bucketed"`.

    Returns:
        A `TaskRun`.
    """
    spec = data.get_task(task)
    arguments.check_positive_int("batch_size", batch_size)
    arguments.check_positive_int("sequence_length", sequence_length)
    train = data.training_subset(
        spec, data.load_split(spec, "train", data_dir), regime, seed,
        subset_draw,
    )
    dev = data.load_split(spec, "dev", data_dir)
    if max_examples is not None:
        train = data.subsample(train, min(len(train), max_examples[0]), seed)
        dev = data.subsample(dev, min(len(dev), max_examples[1]), seed)
    model = model or models.default_model()
    keras.utils.set_random_seed(seed)
    with _scope(distribution):
        preprocessor, classifier = models.load_classifier(
            model, spec, sequence_length, pooling, pair_encoding
        )
    multiple = distribution_lib.batch_multiple(distribution)
    settings = training_settings(
        spec,
        models.model_kind(classifier),
        siamese=isinstance(classifier, heads.SiameseClassifier),
    )
    common = dict(
        spec=spec, model=model, seed=seed, regime=regime, train=train,
        dev=dev, classifier=classifier, settings=settings,
        sequence_length=sequence_length, distribution=distribution,
        subset_draw=subset_draw, batching=batching,
    )
    if spec.is_generation:
        x, y, weights = generation_inputs(
            _prompts(train, spec),
            [" " + answers[0] for answers in train.labels],
            preprocessor,
            sequence_length,
        )

        def batches():
            return _distributable(distribution, data.batch_arrays(
                x, y, batch_size, sequence_length, shuffle=True, seed=seed,
                buckets=buckets, sample_weight=weights,
                batch_multiple=multiple, batching=batching,
            ))

        return TaskRun(
            **common, new_batches=batches, train_batches=batches(),
            probe_batches=batches(), dev_batches=None, tokenizer=preprocessor,
        )
    # Tokenized once; each dataset counts its own epochs.
    features = data.tokenize(train, preprocessor, sequence_length)

    def batches():
        return _distributable(distribution, data.batch_arrays(
            features, train.labels, batch_size, sequence_length,
            shuffle=True, seed=seed, buckets=buckets, batch_multiple=multiple,
            batching=batching,
        ))

    dev_batches = _distributable(distribution, data.make_dataset(
        dev, preprocessor, EVAL_BATCH_SIZE, sequence_length, buckets=buckets
    ))
    return TaskRun(
        **common, new_batches=batches, train_batches=batches(),
        probe_batches=batches(), dev_batches=dev_batches,
    )


def probe(run, epochs=1, learning_rate=None, probe_batches=32, verbose=1):
    """Fit every bias of `run.classifier` while a `BeftProbe` scores them.

    Args:
        run: `TaskRun`.
        epochs: int. Epochs of the probe fit.
        learning_rate: float or None. `None` is the default bias-only rate
            of the task (`run.settings`).
        probe_batches: int. Batches on which the Fisher baseline is measured.
        verbose: int. Keras verbosity.

    Returns:
        The finished `BeftProbe`.

    Raises:
        TrainingError: if the loss becomes NaN or infinite.
    """
    arguments.check_positive_int("epochs", epochs)
    arguments.check_positive_int("probe_batches", probe_batches)
    learning_rate = _learning_rate(
        learning_rate, run.settings.learning_rate, run.spec
    )
    beft_probe = BeftProbe(
        data=run.probe_batches, max_batches=probe_batches, verbose=verbose
    )
    with run.scope():
        tuning.make_trainable(run.classifier, tuning.ALL_BIAS)
        _fit(run, epochs, learning_rate, [beft_probe], verbose)
    return beft_probe


def tune(run, terms, epochs=None, learning_rate=None, verbose=1,
         callbacks=None):
    """Fine-tune some of the classifier's weights and evaluate on dev.

    Args:
        run: `TaskRun`.
        terms: str or list of str. Bias terms (see `beft_keras.TERMS`), or
            one of `tuning.TUNE_MODES`: `"all-bias"` (BitFit), `"head"` (the
            head only), `"random"` (a random bias mask of b_v's size) or
            `"full"` (every weight).
        epochs: int or None. `None` is the task's default (`run.settings`).
        learning_rate: float or None. `None` is the task's default:
            bias-only for biases and head, the full rate for `"full"`.
        verbose: int. Keras verbosity.
        callbacks: list of `keras.callbacks.Callback`, or None. More
            callbacks for the fit, after the library's own.

    Returns:
        A dict: the terms, trainable counts, dev metrics and wall time.

    Raises:
        TrainingError: if the loss becomes NaN or infinite.
    """
    start = time.perf_counter()
    terms = tuning.parse_terms(terms)
    if epochs is None:
        epochs = _default("epochs", run.settings.epochs, run.spec)
    arguments.check_positive_int("epochs", epochs)
    default_rate = (
        run.settings.full_learning_rate
        if terms == (tuning.FULL,)
        else run.settings.learning_rate
    )
    learning_rate = _learning_rate(learning_rate, default_rate, run.spec)
    with run.scope():
        setup = tuning.make_trainable(run.classifier, terms, seed=run.seed)
        _fit(
            run, epochs, learning_rate,
            [*setup.callbacks, *(callbacks or [])], verbose,
        )
    return {
        **run.describe(),
        "dev_examples": len(run.dev),
        "terms": list(terms),
        "head": models.head_name(run.classifier),
        "replicas": distribution_lib.num_replicas(run.distribution),
        "trainable_params": setup.trainable_params,
        "trainable_percent": setup.percent,
        "learning_rate": learning_rate,
        "epochs": epochs,
        "metrics": evaluate_run(run),
        "wall_time_s": time.perf_counter() - start,
    }


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
    pooling=None,
    pair_encoding=None,
    distribution=None,
    subset_draw=data.SEEDED,
    batching=data.BUCKETED,
):
    """Run BEFT on one task and seed: fit all biases while a `BeftProbe`
    scores them, reset, fine-tune only the selected term (and the head), and
    evaluate on the dev set. Arguments as for `prepare`, `probe` and `tune`;
    `output` is a folder for the scores, heatmap and bias delta.

    Returns:
        The dict of `tune`, with the selection and rankings added.
    """
    start = time.perf_counter()
    task_run = prepare(
        task, data_dir, model, regime, seed, batch_size, sequence_length,
        pooling=pooling, pair_encoding=pair_encoding,
        distribution=distribution, subset_draw=subset_draw,
        batching=batching,
    )
    beft_probe = probe(
        task_run, probe_epochs, learning_rate, probe_batches, verbose
    )
    with task_run.scope():
        beft_probe.apply_selection()
    result = tune(task_run, beft_probe.selected, epochs, learning_rate, verbose)
    result["selected"] = beft_probe.selected
    result["rankings"] = beft_probe.results.rankings
    result["wall_time_s"] = time.perf_counter() - start
    if output:
        outputs.write_scores(task_run, beft_probe, output)
        outputs.save_tuned(task_run, output)
    return result


def evaluate(model, spec, dataset, batch_multiple=1):
    """The task's metrics on `dataset`, read once: each batch's labels are
    scored against the predictions of that same batch, so batches may come
    in any order, shuffled too. A batch is padded to a multiple of
    `batch_multiple` (the data-parallel devices) by repeating its last
    example, whose extra predictions are dropped."""
    labels, logits = [], []
    for batch in dataset.as_numpy_iterator():
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        size = len(y)
        padding = -size % batch_multiple
        x = keras.tree.map_structure(
            lambda a: np.concatenate([a, np.repeat(a[-1:], padding, 0)]), x
        )
        labels.append(y)
        predicted = keras.ops.convert_to_numpy(model.predict_on_batch(x))
        logits.append(predicted[:size])
    predictions = metrics_lib.predictions_from_logits(
        spec, np.concatenate(logits)
    )
    return metrics_lib.compute_metrics(
        spec, np.concatenate(labels), predictions
    )


def evaluate_run(run):
    """The task's metrics on the whole dev set of `run`."""
    if run.spec.is_generation:
        answers = _answers(
            run.classifier, run.tokenizer, run.dev, run.spec,
            run.sequence_length,
        )
        return metrics_lib.compute_metrics(run.spec, run.dev.labels, answers)
    with run.scope():
        return evaluate(
            run.classifier, run.spec, run.dev_batches,
            distribution_lib.batch_multiple(run.distribution),
        )


def predict(
    task,
    path,
    tuned,
    model=None,
    batch_size=EVAL_BATCH_SIZE,
    sequence_length=128,
    allow_base_mismatch=False,
    allow_task_mismatch=False,
    pooling=None,
    pair_encoding=None,
):
    """Predict the examples of a TSV file with a base model and what
    `beft tune` or `beft run` wrote.

    Args:
        task: str. The task the model was tuned on, e.g. `"sst2"`.
        path: str. A TSV file with the task's text columns; a `label`
            column, if present, is used to score the predictions.
        tuned: str. A bias delta (`delta.safetensors`, see `save_delta`),
            or the Keras weights file of a full fine-tune
            (`model.weights.h5`).
        model: str or None. The base preset it was tuned from; `None` is
            the MiniLM package.
        batch_size: int.
        sequence_length: int.
        allow_base_mismatch: bool. Load a delta made for another base.
        allow_task_mismatch: bool. Load a delta made for another task.
        pooling, pair_encoding: str or None. The head it was tuned with
            (see `prepare`).

    Returns:
        A tuple `(examples, predictions, metrics)`: the predictions are
        class ids, scores, or for a generation task answer texts;
        `metrics` is `None` when the file has no labels.
    """
    spec = data.get_task(task)
    arguments.check_positive_int("batch_size", batch_size)
    arguments.check_positive_int("sequence_length", sequence_length)
    examples, has_labels = data.read_tsv(spec, path, labelled=False)
    model = model or models.default_model()
    preprocessor, classifier = models.load_classifier(
        model, spec, sequence_length, pooling, pair_encoding
    )
    outputs.load_tuned(
        classifier, tuned, spec,
        allow_base_mismatch=allow_base_mismatch,
        allow_task_mismatch=allow_task_mismatch,
    )
    if spec.is_generation:
        classifier.compile(sampler="greedy")
        predictions = _answers(
            classifier, preprocessor, examples, spec, sequence_length,
            batch_size,
        )
    else:
        # A single padding length keeps the batches in the file's order.
        batches = data.make_dataset(
            examples, preprocessor, batch_size, sequence_length,
            buckets=(sequence_length,),
        )
        logits = classifier.predict(batches, verbose=0)
        predictions = metrics_lib.predictions_from_logits(spec, logits)
    metrics = None
    if has_labels:
        metrics = metrics_lib.compute_metrics(
            spec, examples.labels, predictions
        )
    return examples, predictions, metrics


def summarize(command, results):
    """One summary of a command's runs over seeds: per-seed metrics, their
    mean, and their sample standard deviation when there are two seeds or
    more. What trained (`terms`, `trainable_params`, `trainable_percent`)
    is given once when every seed trained the same, else `None`: `beft run`
    trains what each seed's probe selected, which can differ by seed (each
    run in `runs` has its own)."""
    first = results[0]
    summary = {
        "command": command,
        "task": first["task"],
        "model": first["model"],
        "backend": keras.backend.backend(),
        "seeds": [r["seed"] for r in results],
    }
    if "selected" in first:
        summary["selected"] = [r["selected"] for r in results]
    if "metrics" in first:
        for key in ("terms", "trainable_params", "trainable_percent"):
            same = all(r[key] == first[key] for r in results)
            summary[key] = first[key] if same else None
        summary["metrics"] = {}
        for name in first["metrics"]:
            values = [r["metrics"][name] for r in results]
            summary["metrics"][name] = {
                "per_seed": values,
                "mean": float(np.mean(values)),
                # A spread needs two values; one seed has none, not zero.
                "std": (
                    float(np.std(values, ddof=1)) if len(values) > 1 else None
                ),
            }
        summary["wall_time_s"] = sum(r["wall_time_s"] for r in results)
    summary["runs"] = results
    return summary


def _fit(run, epochs, learning_rate, callbacks, verbose):
    """Compile the classifier for the task and fit it on the run's batches."""
    models.compile_model(run.classifier, run.spec, learning_rate)
    # The batches shuffle themselves, per epoch, within length buckets. The
    # loss check comes first: a diverged fit fails before it is scored.
    run.classifier.fit(
        run.train_batches,
        epochs=epochs,
        callbacks=[StopOnNonFiniteLoss(learning_rate), *callbacks],
        shuffle=False,
        verbose=verbose,
    )


def _scope(distribution):
    return contextlib.nullcontext() if distribution is None else (
        distribution.scope()
    )


def _distributable(distribution, dataset):
    """`dataset` as the distribution's engine takes it (boolean padding
    masks as int32 under TensorFlow's MirroredStrategy)."""
    if distribution is None:
        return dataset
    return distribution_lib.boolean_inputs_as_int(dataset)


def _default(name, default, spec):
    """A setting left `None`: the task's default, which a custom task
    lacks."""
    if default is None:
        raise ValueError(
            f"Task '{spec.name}' has no default `{name}` "
            "(`beft_keras.training_settings`): pass one."
        )
    return default


def _learning_rate(learning_rate, default, spec):
    if learning_rate is None:
        return _default("learning_rate", default, spec)
    if not (
        isinstance(learning_rate, numbers.Real)
        and not isinstance(learning_rate, bool)
        and math.isfinite(learning_rate)
        and learning_rate > 0
    ):
        raise ValueError(
            "`learning_rate` must be a finite number above 0. "
            f"Received: learning_rate={learning_rate!r}"
        )
    return float(learning_rate)


def _prompts(examples, spec):
    """The task's prompt for every example."""
    template = TASK_PROMPTS[spec.name].template
    return [
        template.format(
            **{name: examples.features[name][i] for name in spec.columns}
        )
        for i in range(len(examples))
    ]


def _answers(
    causal_lm, tokenizer, examples, spec, sequence_length,
    batch_size=EVAL_BATCH_SIZE,
):
    """Generated answers to the task's prompts of `examples`."""
    return generate_answers(
        causal_lm,
        _prompts(examples, spec),
        tokenizer,
        sequence_length,
        max_answer_length=min(MAX_ANSWER_LENGTH, sequence_length // 2),
        batch_size=batch_size,
    )
