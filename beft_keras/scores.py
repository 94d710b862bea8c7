"""The importance scores of BEFT and its baselines, and the selection.

Pure numpy, in float64: each function takes bias values (or gradients) and
returns numbers, independent of Keras.
"""

import numpy as np

BEFT = "beft"
MAGNITUDE = "magnitude"
FISHER = "fisher"
METHODS = (BEFT, MAGNITUDE, FISHER)

# A term whose gradient RMS is below this fraction of the largest term's
# cannot change the model: in softmax attention, b_k shifts every logit of
# a query equally, so its gradient is zero up to float32 rounding (about
# 1e-7 of the terms it cancels out of, times the number of tokens).
INERT_GRADIENT_RATIO = 1e-5


def beft_score(pre, post):
    """The BEFT importance of one bias: `1 - <pre, post> / max(|pre|^2,
    |post|^2)`.

    It grows with both the change of angle and the change of length: 0 when
    unchanged, 0.5 when the length doubles or halves in the same direction,
    1 for an orthogonal change of the same length (or a change from or to
    zero), up to 2 for a sign flip. A bias that is zero before and after
    scores 0.

    Args:
        pre: array. The bias before the probe fit.
        post: array. The bias after it, of the same shape.

    Returns:
        A float.

    Raises:
        ValueError: if the shapes differ or a value is NaN or infinite.
    """
    pre, post = _as_vectors(pre, post)
    denominator = max(pre @ pre, post @ post)
    if denominator == 0.0:
        return 0.0
    return float(1.0 - (pre @ post) / denominator)


def magnitude_score(pre, post):
    """The magnitude baseline: the mean absolute change, `mean(|post - pre|)`."""
    pre, post = _as_vectors(pre, post)
    return float(np.mean(np.abs(post - pre)))


def fisher_score(squared_gradients):
    """The empirical Fisher baseline: the mean squared gradient.

    Args:
        squared_gradients: array of shape `(num_batches, *bias_shape)`: the
            squared gradient of the loss for each batch.

    Returns:
        A float: the mean over batches and elements.
    """
    squared_gradients = np.asarray(squared_gradients, dtype="float64")
    if squared_gradients.size == 0:
        raise ValueError("`squared_gradients` is empty: no batch was measured.")
    return float(np.mean(squared_gradients))


def rank(averages):
    """Terms ordered from the most to the least important.

    Args:
        averages: dict. Maps each term to its score; ties keep the order of
            the dict.

    Returns:
        A list of terms.
    """
    return sorted(averages, key=lambda term: -averages[term])


def select(averages, candidates, inert=()):
    """The candidate term with the highest score (the paper's argmax),
    leaving out inert terms.

    An inert term's score measures nothing about the task: with zero
    gradient up to rounding, an optimizer that normalises its steps (Adam)
    still moves it, by steps of the learning rate's size.

    Args:
        averages: dict. Maps each term to its score.
        candidates: list of str. The terms to choose among.
        inert: collection of str. Terms left out of the choice (see
            `inert_terms`), unless every scored candidate is one.

    Returns:
        The selected term.

    Raises:
        ValueError: if fewer than two candidates have a score.
    """
    scored = [term for term in candidates if term in averages]
    if len(scored) < 2:
        raise ValueError(
            "Selecting a bias term needs at least two candidate terms with a "
            f"score. Candidates: {list(candidates)}; scored terms: "
            f"{list(averages)}."
        )
    scored = [term for term in scored if term not in inert] or scored
    return rank({term: averages[term] for term in scored})[0]


def inert_terms(gradient_rms):
    """Terms whose gradient is zero up to rounding, so that training them
    alone cannot change the model.

    Args:
        gradient_rms: dict. Maps each term to the root mean square of its
            measured gradient.

    Returns:
        A list of terms, in the dict's order.
    """
    largest = max(gradient_rms.values(), default=0.0)
    if largest == 0.0:
        return list(gradient_rms)
    return [
        term
        for term, rms in gradient_rms.items()
        if rms < INERT_GRADIENT_RATIO * largest
    ]


def check_finite(value, name):
    """Raise a `ValueError` naming `name` if `value` has a NaN or inf."""
    value = np.asarray(value)
    if not np.all(np.isfinite(value)):
        bad = "NaN" if np.any(np.isnan(value)) else "inf"
        raise ValueError(
            f"Bias '{name}' holds {bad} values, so its scores are undefined. "
            "The probe fit diverged: lower the learning rate or clip "
            "gradients (e.g. `clipnorm=1.0`)."
        )


def _as_vectors(pre, post):
    pre = np.asarray(pre, dtype="float64").ravel()
    post = np.asarray(post, dtype="float64").ravel()
    if pre.shape != post.shape:
        raise ValueError(
            "`pre` and `post` must have the same number of elements. "
            f"Received: {pre.size} and {post.size}"
        )
    # A NaN would otherwise slip past `max` in `beft_score` as "unchanged".
    for name, value in (("pre", pre), ("post", post)):
        if not np.all(np.isfinite(value)):
            raise ValueError(
                f"`{name}` holds NaN or infinite values, so its score is "
                f"undefined. Received: {name}={value.tolist()!r}"
            )
    return pre, post
