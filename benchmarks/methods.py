"""The fine-tuning methods the benchmarks compare, by their names in the
tables, and the learning rates the benchmarks train them at."""

from beft_keras import models
from beft_keras import tuning

# Method name -> what `beft_keras.tuning.make_trainable` trains (the task
# head always trains too).
METHODS = {
    "b_v": "value",
    "b_q": "query",
    "b_k": "key",
    "all-bias": tuning.ALL_BIAS,
    "random": tuning.RANDOM,
    "head": tuning.HEAD,
    "full": tuning.FULL,
}
SINGLE_TERMS = {"b_q": "query", "b_k": "key", "b_v": "value"}
# Learning rates used throughout (see docs/benchmarks.md for why).
BIAS_LEARNING_RATE = 5e-3
FULL_LEARNING_RATE = 5e-5


def learning_rate_for(method):
    return FULL_LEARNING_RATE if method == "full" else BIAS_LEARNING_RATE


def set_up(classifier, spec, method, seed=0):
    """Make `method`'s weights of `classifier` trainable and compile it as
    `beft_keras.pipeline.tune` does.

    Returns:
        The `beft_keras.tuning.TuningSetup`.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: one of {list(METHODS)}")
    setup = tuning.make_trainable(classifier, METHODS[method], seed=seed)
    models.compile_model(classifier, spec, learning_rate_for(method))
    return setup
