import numpy as np
import pytest

from beft_keras import scores


@pytest.mark.parametrize(
    "pre, post, expected",
    [
        # Unchanged: 1 - |b|^2 / |b|^2.
        ([1.0, 2.0], [1.0, 2.0], 0.0),
        # Growth, same direction: 1 - (1*2) / max(1, 4) = 0.5.
        ([1.0, 0.0], [2.0, 0.0], 0.5),
        # Shrinkage, same direction: 1 - 2 / max(4, 1) = 0.5.
        ([2.0, 0.0], [1.0, 0.0], 0.5),
        # Sign flip: 1 - (-1) / 1 = 2.
        ([1.0, 0.0], [-1.0, 0.0], 2.0),
        # Orthogonal, same length: 1 - 0 / 1 = 1.
        ([1.0, 0.0], [0.0, 1.0], 1.0),
        # 45 degrees, length sqrt(2) -> 1: 1 - 1 / max(2, 1) = 0.5.
        ([1.0, 1.0], [1.0, 0.0], 0.5),
        # From zero or to zero: 1 - 0 / |b|^2 = 1.
        ([0.0, 0.0], [3.0, 4.0], 1.0),
        ([3.0, 4.0], [0.0, 0.0], 1.0),
        # Zero before and after: defined as 0.
        ([0.0, 0.0], [0.0, 0.0], 0.0),
        # 3 - 4: 1 - (3*1 + 4*2 - 1*2) / max(9+16+1, 1+4+4) = 1 - 9/26.
        ([3.0, 4.0, -1.0], [1.0, 2.0, 2.0], 1.0 - 9.0 / 26.0),
    ],
)
def test_beft_score(pre, post, expected):
    assert scores.beft_score(np.array(pre), np.array(post)) == pytest.approx(
        expected, abs=1e-15
    )


def test_beft_score_is_scale_free_and_works_on_matrices():
    rng = np.random.default_rng(0)
    pre = rng.normal(size=(3, 4)).astype("float32")
    post = pre + 0.1 * rng.normal(size=(3, 4)).astype("float32")
    a, b = pre.ravel().astype("float64"), post.ravel().astype("float64")
    expected = 1.0 - a @ b / max(a @ a, b @ b)
    assert scores.beft_score(pre, post) == pytest.approx(expected, rel=1e-12)
    assert scores.beft_score(10 * a, 10 * b) == pytest.approx(
        expected, rel=1e-9
    )


def test_beft_score_computes_in_float64():
    # In float32, 1 - <a, b>/|a|^2 for a 1e-5 relative change is lost to
    # rounding; in float64 it is 1e-5 as computed by hand.
    pre = np.ones(1000, dtype="float32")
    post = (pre * np.float32(1.0 + 1e-5)).astype("float32")
    ratio = float(post[0]) / float(pre[0])
    assert scores.beft_score(pre, post) == pytest.approx(
        1.0 - ratio / ratio**2, rel=1e-6
    )


def test_magnitude_score():
    # mean(|[0.5, -1, 0]|) = 0.5
    assert scores.magnitude_score([1.0, 2.0, 3.0], [1.5, 1.0, 3.0]) == 0.5
    assert scores.magnitude_score([0.0, 0.0], [0.0, 0.0]) == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same number of elements"):
        scores.beft_score([1.0, 2.0], [1.0])


def test_fisher_score():
    # Two batches of squared gradients of a 2-element bias:
    # mean(1, 4, 9, 16) = 7.5
    assert scores.fisher_score([[1.0, 4.0], [9.0, 16.0]]) == 7.5
    with pytest.raises(ValueError, match="empty"):
        scores.fisher_score(np.zeros((0, 2)))


def test_rank_and_select():
    averages = {"query": 0.2, "key": 0.0, "value": 0.7, "ffn_output": 0.9}
    assert scores.rank(averages) == ["ffn_output", "value", "query", "key"]
    assert scores.select(averages, ["query", "key", "value"]) == "value"
    # Ties keep the order of the candidates.
    assert scores.select({"query": 0.5, "value": 0.5}, ["query", "value"]) == (
        "query"
    )
    with pytest.raises(ValueError, match="at least two candidate terms"):
        scores.select({"value": 1.0}, ["query", "value"])


def test_select_leaves_out_inert_terms():
    averages = {"query": 0.2, "key": 0.9, "value": 0.7}
    candidates = ["query", "key", "value"]
    assert scores.select(averages, candidates, inert=["key"]) == "value"
    assert scores.select(averages, candidates, inert=["key", "value"]) == (
        "query"
    )
    # With every candidate inert there is nothing better to choose by.
    assert scores.select(averages, candidates, inert=candidates) == "key"
    # Two candidates are still needed, inert or not.
    with pytest.raises(ValueError, match="at least two candidate terms"):
        scores.select({"value": 1.0}, ["query", "value"], inert=["query"])


def test_inert_terms():
    rms = {"query": 3e-4, "key": 1e-11, "value": 2.5e-3}
    assert scores.inert_terms(rms) == ["key"]
    assert scores.inert_terms({"query": 0.0, "key": 0.0}) == ["query", "key"]


def test_check_finite():
    scores.check_finite(np.ones(3), "ok")
    with pytest.raises(ValueError, match="'layer/value/bias' holds NaN"):
        scores.check_finite(np.array([1.0, np.nan]), "layer/value/bias")
    with pytest.raises(ValueError, match="holds inf"):
        scores.check_finite(np.array([np.inf]), "b")


@pytest.mark.parametrize("score", [scores.beft_score, scores.magnitude_score])
def test_non_finite_biases_have_no_score(score):
    # max(0.0, nan) is 0.0: a NaN must not read as an unchanged zero bias.
    with pytest.raises(ValueError, match=r"`post` holds NaN or infinite"):
        score(np.zeros(3), [np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"`pre` holds NaN or infinite"):
        score([np.inf, 1.0], [1.0, 1.0])
