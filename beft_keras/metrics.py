"""The GLUE, SuperGLUE and SQuAD metrics, as pure numpy functions of the
true and predicted labels."""

import collections
import re
import string

import numpy as np
import scipy.stats

from beft_keras.data.tasks import get_task


class MetricError(ValueError):
    """Labels or predictions that a metric cannot score."""


def accuracy(y_true, y_pred):
    """The share of predictions equal to the true label."""
    y_true, y_pred = _check(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def mcc(y_true, y_pred):
    """Matthews correlation coefficient (CoLA's metric).

    For more than two classes this is Gorodkin's generalisation, as in
    scikit-learn. It is 0 where it is undefined, for example when every
    prediction is the same class.
    """
    # In float: the products of counts pass int64's range from about
    # 80,000 examples on.
    confusion = _confusion(*_check(y_true, y_pred)).astype("float64")
    total = confusion.sum()
    correct = np.trace(confusion)
    true_counts = confusion.sum(axis=1)
    pred_counts = confusion.sum(axis=0)
    numerator = correct * total - np.dot(true_counts, pred_counts)
    denominator = np.sqrt(
        (total**2 - np.dot(pred_counts, pred_counts))
        * (total**2 - np.dot(true_counts, true_counts))
    )
    return float(numerator / denominator) if denominator else 0.0


def f1(y_true, y_pred):
    """F1 score of the positive class 1 (MRPC's and QQP's metric); 0 when
    there is no positive among labels and predictions."""
    y_true, y_pred = _check(y_true, y_pred)
    return _class_f1(y_true, y_pred, 1)


def macro_f1(y_true, y_pred):
    """The mean F1 score over the classes that occur in the labels or the
    predictions (CB's metric)."""
    y_true, y_pred = _check(y_true, y_pred)
    classes = np.union1d(y_true, y_pred)
    return float(np.mean([_class_f1(y_true, y_pred, c) for c in classes]))


def pearson(y_true, y_pred):
    """Pearson correlation (STS-B's metric); 0 when either side is
    constant."""
    y_true, y_pred = _check(y_true, y_pred)
    if _is_constant(y_true) or _is_constant(y_pred):
        return 0.0
    return float(scipy.stats.pearsonr(y_true, y_pred).statistic)


def spearman(y_true, y_pred):
    """Spearman rank correlation; 0 when either side is constant."""
    y_true, y_pred = _check(y_true, y_pred)
    if _is_constant(y_true) or _is_constant(y_pred):
        return 0.0
    return float(scipy.stats.spearmanr(y_true, y_pred).statistic)


def exact_match(y_true, y_pred):
    """SQuAD's exact match: the share of answers equal, once normalised, to
    one of their example's reference answers.

    Args:
        y_true: sequence of lists or tuples of str, the reference answers
            of each example; a bare str is refused, not read as one answer.
        y_pred: sequence of str, one generated answer per example.

    Raises:
        MetricError: if an example's references are not a list or tuple,
            or the two sequences differ in length.
    """
    return _best_over_references(y_true, y_pred, _exact)


def token_f1(y_true, y_pred):
    """SQuAD's F1: the overlap of normalised answer tokens with the best
    reference answer, averaged over examples. Takes the arguments of
    `exact_match`."""
    return _best_over_references(y_true, y_pred, _token_f1)


METRICS = {
    "accuracy": accuracy,
    "mcc": mcc,
    "f1": f1,
    "macro_f1": macro_f1,
    "pearson": pearson,
    "spearman": spearman,
    "exact_match": exact_match,
    "token_f1": token_f1,
}


def compute_metrics(task, y_true, y_pred):
    """Score predictions with every metric of a task.

    Args:
        task: str or `TaskSpec`. The task, e.g. `"mrpc"`.
        y_true: 1-D array. The true labels: class ids, or scores for a
            regression task; for a generation task (SQuAD), a list or tuple
            of reference answers per example (see `exact_match`).
        y_pred: 1-D array. The predicted class ids, or scores for a
            regression task (see `predictions_from_logits`); for a
            generation task, one answer str per example.

    Returns:
        A dict from metric name to float, in the task's order: the first is
        the task's main metric.

    Example:
    ```python
    logits = model.predict(dev_dataset)
    y_pred = beft_keras.predictions_from_logits("mrpc", logits)
    beft_keras.compute_metrics("mrpc", y_true, y_pred)
    # {"f1": 0.84, "accuracy": 0.78}
    ```
    """
    spec = get_task(task)
    return {name: METRICS[name](y_true, y_pred) for name in spec.metrics}


def predictions_from_logits(task, logits):
    """A model's outputs as predictions: the class of the largest logit, or
    the score of a regression task.

    Args:
        task: str or `TaskSpec`. The task, e.g. `"stsb"`.
        logits: array of shape `(num_examples, num_classes)`; for a
            regression task `(num_examples, 1)` or `(num_examples,)`.

    Returns:
        A 1-D numpy array: `int32` class ids, or `float32` scores.

    Example:
    ```python
    beft_keras.predictions_from_logits("rte", [[0.2, 1.3], [2.0, -1.0]])
    # array([1, 0], dtype=int32)
    ```
    """
    spec = get_task(task)
    logits = np.asarray(logits)
    if spec.is_regression:
        if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1):
            return logits.reshape(-1).astype("float32")
        expected = "(num_examples, 1) or (num_examples,)"
    elif logits.ndim == 2 and logits.shape[1] == spec.num_classes:
        return np.argmax(logits, axis=1).astype("int32")
    else:
        expected = f"(num_examples, {spec.num_classes})"
    raise MetricError(
        f"Task '{spec.name}' has {spec.num_classes} output(s), so logits "
        f"must have shape {expected}. Received: shape {logits.shape}."
    )


def _check(y_true, y_pred):
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_pred.shape != y_true.shape or not y_true.size:
        raise MetricError(
            "`y_true` and `y_pred` must be non-empty 1-D arrays of the same "
            f"length. Received: shapes {y_true.shape} and {y_pred.shape}. "
            "For logits, use `predictions_from_logits` first."
        )
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        # NaN equals nothing, not even itself: it would be scored as a
        # wrong class, or make a correlation NaN.
        if values.dtype.kind in "fc" and not np.all(np.isfinite(values)):
            index = int(np.flatnonzero(~np.isfinite(values))[0])
            raise MetricError(
                f"`{name}` must be finite. Received: {name}[{index}]="
                f"{values[index]}"
            )
    return y_true, y_pred


def _confusion(y_true, y_pred):
    """Confusion matrix over the classes that occur: true x predicted."""
    classes, indices = np.unique(
        np.concatenate([y_true, y_pred]), return_inverse=True
    )
    true_indices, pred_indices = np.split(indices, 2)
    confusion = np.zeros((len(classes), len(classes)), dtype="int64")
    np.add.at(confusion, (true_indices, pred_indices), 1)
    return confusion


def _class_f1(y_true, y_pred, positive):
    true_positives = np.sum((y_true == positive) & (y_pred == positive))
    # 2 TP + FP + FN.
    denominator = np.sum(y_true == positive) + np.sum(y_pred == positive)
    return float(2 * true_positives / denominator) if denominator else 0.0


def _is_constant(values):
    return np.all(values == values[0])


def _best_over_references(y_true, y_pred, score):
    y_true, y_pred = list(y_true), list(y_pred)
    if not y_true or len(y_true) != len(y_pred):
        raise MetricError(
            "`y_true` and `y_pred` must be non-empty and of the same length. "
            f"Received: {len(y_true)} and {len(y_pred)} examples."
        )
    for i, refs in enumerate(y_true):
        # A str would be scored character by character.
        if not isinstance(refs, (list, tuple)):
            raise MetricError(
                f"`y_true[{i}]` must be a list or tuple of reference "
                f"answers, one str each. Received: y_true[{i}]={refs!r}"
            )
    return float(
        np.mean(
            [
                max((score(ref, pred) for ref in refs), default=0.0)
                for refs, pred in zip(y_true, y_pred)
            ]
        )
    )


def _normalize_answer(text):
    """Lower case, no punctuation, no articles, single spaces: the SQuAD
    evaluation script's normalisation."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _exact(reference, prediction):
    return float(_normalize_answer(reference) == _normalize_answer(prediction))


def _token_f1(reference, prediction):
    reference = _normalize_answer(reference).split()
    prediction = _normalize_answer(prediction).split()
    common = collections.Counter(reference) & collections.Counter(prediction)
    overlap = sum(common.values())
    if not overlap:
        return 0.0
    precision = overlap / len(prediction)
    recall = overlap / len(reference)
    return 2 * precision * recall / (precision + recall)
