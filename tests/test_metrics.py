import warnings

import numpy as np
import pytest

from beft_keras import metrics
from beft_keras.data import TASKS
from beft_keras.data import get_task

# A binary confusion matrix: TP = 3, FN = 1, FP = 2, TN = 4.
BINARY_TRUE = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
BINARY_PRED = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
# Three classes; rows are true classes, columns predictions:
#   [[1, 1, 0],
#    [0, 2, 0],
#    [1, 0, 1]]
THREE_TRUE = [0, 0, 1, 1, 2, 2]
THREE_PRED = [0, 1, 1, 1, 2, 0]


def test_accuracy():
    assert metrics.accuracy(BINARY_TRUE, BINARY_PRED) == pytest.approx(0.7)
    assert metrics.accuracy(THREE_TRUE, THREE_PRED) == pytest.approx(4 / 6)


def test_binary_mcc_and_f1_by_hand():
    # MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    #     = (12 - 2) / sqrt(5 * 4 * 6 * 5) = 10 / sqrt(600)
    assert metrics.mcc(BINARY_TRUE, BINARY_PRED) == pytest.approx(
        10 / np.sqrt(600)
    )
    # F1 = 2 TP / (2 TP + FP + FN) = 6 / 9
    assert metrics.f1(BINARY_TRUE, BINARY_PRED) == pytest.approx(6 / 9)


def test_multiclass_mcc_by_hand():
    # Gorodkin: correct c = 4, total s = 6, true counts t = (2, 2, 2),
    # predicted counts p = (2, 3, 1):
    # (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))
    # = (24 - 12) / sqrt((36 - 14)(36 - 12)) = 12 / sqrt(528)
    assert metrics.mcc(THREE_TRUE, THREE_PRED) == pytest.approx(
        12 / np.sqrt(528)
    )


def test_mcc_limits():
    y_true = np.array([0, 1, 1, 0, 1])
    assert metrics.mcc(y_true, y_true) == pytest.approx(1.0)
    assert metrics.mcc(y_true, 1 - y_true) == pytest.approx(-1.0)
    # A constant predictor leaves MCC undefined (0 / 0): we return 0.
    assert metrics.mcc(y_true, np.ones(5, "int32")) == 0.0
    assert metrics.mcc(np.zeros(5), np.zeros(5)) == 0.0


def test_f1_without_positives_is_zero():
    assert metrics.f1([0, 0, 0], [0, 0, 0]) == 0.0
    assert metrics.f1([1, 0, 0], [0, 0, 0]) == 0.0


def test_macro_f1_by_hand():
    # Per class 2 TP / (true + predicted): 2/4, 4/5 and 2/3.
    expected = (2 / 4 + 4 / 5 + 2 / 3) / 3
    assert metrics.macro_f1(THREE_TRUE, THREE_PRED) == pytest.approx(expected)
    # Binary macro F1 averages the F1 of both classes: 6/9 and 8/11.
    assert metrics.macro_f1(BINARY_TRUE, BINARY_PRED) == pytest.approx(
        (6 / 9 + 8 / 11) / 2
    )


def test_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    y_true = rng.uniform(0, 5, 50)
    y_pred = y_true + rng.normal(0, 1, 50)
    assert metrics.pearson(y_true, y_pred) == pytest.approx(
        np.corrcoef(y_true, y_pred)[0, 1]
    )


def _average_ranks(values):
    """Ranks from 1, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        ranks[values == value] = ranks[values == value].mean()
    return ranks


def test_spearman_matches_rank_correlation():
    rng = np.random.default_rng(1)
    # Rounded to get ties, as STS-B's scores have.
    y_true = np.round(rng.uniform(0, 5, 60) * 2) / 2
    y_pred = y_true**2 + rng.normal(0, 2, 60)
    expected = np.corrcoef(_average_ranks(y_true), _average_ranks(y_pred))
    assert metrics.spearman(y_true, y_pred) == pytest.approx(expected[0, 1])
    # Rank correlation ignores monotone transforms.
    assert metrics.spearman(y_true, np.exp(y_true)) == pytest.approx(1.0)


def test_correlations_of_a_constant_are_zero_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.pearson([1.0, 2.0, 3.0], [2.5, 2.5, 2.5]) == 0.0
        assert metrics.spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0


@pytest.mark.parametrize(
    "y_true, y_pred",
    [([0, 1, 1], [0, 1]), ([], []), ([[0, 1]], [[0, 1]])],
)
def test_bad_shapes_raise(y_true, y_pred):
    with pytest.raises(metrics.MetricError, match="1-D"):
        metrics.accuracy(y_true, y_pred)


def test_every_task_metric_exists():
    for spec in TASKS.values():
        assert set(spec.metrics) <= set(metrics.METRICS), spec.name


def test_compute_metrics_in_task_order():
    result = metrics.compute_metrics("mrpc", BINARY_TRUE, BINARY_PRED)
    assert list(result) == ["f1", "accuracy"]
    assert result["f1"] == pytest.approx(6 / 9)
    assert result["accuracy"] == pytest.approx(0.7)
    result = metrics.compute_metrics("cola", BINARY_TRUE, BINARY_PRED)
    assert list(result) == ["mcc", "accuracy"]
    result = metrics.compute_metrics(get_task("cb"), THREE_TRUE, THREE_PRED)
    assert list(result) == ["macro_f1", "accuracy"]
    result = metrics.compute_metrics("stsb", [0.0, 2.5, 5.0], [1.0, 2.0, 4.0])
    assert list(result) == ["pearson", "spearman"]
    assert result["spearman"] == pytest.approx(1.0)
    assert all(isinstance(value, float) for value in result.values())


def test_compute_metrics_unknown_task():
    with pytest.raises(ValueError, match="Unknown task: 'glue'.*sst2"):
        metrics.compute_metrics("glue", [0], [0])


def test_compute_metrics_rejects_logits():
    with pytest.raises(metrics.MetricError, match="predictions_from_logits"):
        metrics.compute_metrics("rte", [0, 1], [[0.3, 0.7], [0.9, 0.1]])


def test_predictions_from_logits():
    logits = np.array([[0.2, 1.3, -1.0], [2.0, -1.0, 0.0]])
    predictions = metrics.predictions_from_logits("mnli", logits)
    np.testing.assert_array_equal(predictions, [1, 0])
    assert predictions.dtype == np.int32
    for scores in ([[4.5], [0.5]], [4.5, 0.5]):
        predictions = metrics.predictions_from_logits("stsb", scores)
        np.testing.assert_allclose(predictions, [4.5, 0.5])
        assert predictions.dtype == np.float32


@pytest.mark.parametrize(
    "task, shape, expected",
    [
        ("rte", (4, 3), r"\(num_examples, 2\)"),
        ("rte", (4,), r"\(num_examples, 2\)"),
        ("stsb", (4, 2), r"\(num_examples, 1\)"),
    ],
)
def test_predictions_from_logits_bad_shape(task, shape, expected):
    with pytest.raises(metrics.MetricError, match=expected) as error:
        metrics.predictions_from_logits(task, np.zeros(shape))
    assert str(shape) in str(error.value)


def test_squad_exact_match_and_token_f1_by_hand():
    references = [("Denver Broncos", "Broncos"), ("Saint Bernadette",),
                  ("1,000",)]
    # Case, punctuation and articles are normalised away; the best
    # reference counts.
    predictions = ["the Broncos.", "Bernadette of Lourdes", ""]
    assert metrics.exact_match(references, predictions) == pytest.approx(1 / 3)
    # F1: 1 (Broncos == Broncos); "bernadette" is 1 of 3 predicted and
    # 1 of 2 reference tokens, 2 * (1/3 * 1/2) / (1/3 + 1/2) = 0.4; 0.
    assert metrics.token_f1(references, predictions) == pytest.approx(
        (1 + 0.4 + 0) / 3
    )
    scores = metrics.compute_metrics("squad", references, predictions)
    assert list(scores) == ["exact_match", "token_f1"]
    with pytest.raises(metrics.MetricError, match="same length"):
        metrics.exact_match(references, predictions[:2])


def test_squad_refuses_a_bare_reference_str():
    """A str of references was scored character by character: exact match
    0.0 for an exact answer."""
    with pytest.raises(metrics.MetricError) as error:
        metrics.compute_metrics("squad", ["Denver Broncos"], ["Denver Broncos"])
    assert str(error.value) == (
        "`y_true[0]` must be a list or tuple of reference answers, one str "
        "each. Received: y_true[0]='Denver Broncos'"
    )
    with pytest.raises(metrics.MetricError, match=r"^`y_true\[1\]` must"):
        metrics.token_f1([("Broncos",), "Broncos"], ["Broncos", "Broncos"])
    # A list of answers is as good as a tuple.
    assert metrics.compute_metrics(
        "squad", [["Denver Broncos"], ("Broncos",)], ["Denver Broncos", "x"]
    ) == {"exact_match": 0.5, "token_f1": 0.5}


def test_mcc_of_a_large_set_matches_the_binary_formula():
    # 200,000 examples: the products of counts overflow int64.
    n = 100_000
    y_true = np.repeat([0, 1], n)
    y_pred = np.concatenate([np.repeat([1, 0], n // 2), np.ones(n, int)])
    # TP = n, TN = FP = n / 2, FN = 0.
    tp, tn, fp, fn = n, n // 2, n // 2, 0
    expected = (tp * tn - fp * fn) / np.sqrt(
        float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    )
    assert metrics.mcc(y_true, y_pred) == pytest.approx(expected)
    assert expected == pytest.approx(1 / np.sqrt(3))


@pytest.mark.parametrize("metric", ["accuracy", "mcc", "pearson", "spearman"])
@pytest.mark.parametrize("side", ["y_true", "y_pred"])
def test_non_finite_values_are_refused(metric, side):
    values = {"y_true": [0.0, 1.0, 1.0], "y_pred": [0.0, 1.0, 0.0]}
    values[side] = [0.0, np.nan, 1.0]
    with pytest.raises(
        metrics.MetricError, match=rf"`{side}` must be finite. "
        rf"Received: {side}\[1\]=nan"
    ):
        metrics.METRICS[metric](**values)
