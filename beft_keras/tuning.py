"""What a fine-tune trains: chosen bias terms, every bias (BitFit), the
head alone, a random bias mask of b_v's size, or every weight."""

import dataclasses
import math

from beft_keras import terms as terms_lib
from beft_keras.random_mask import RandomBiasMask
from beft_keras.trainable import ALL
from beft_keras.trainable import BiasOnlyTrainable
from beft_keras.trainable import recompile
from beft_keras.trainable import term_tuple

ALL_BIAS = "all-bias"
HEAD = "head"
RANDOM = "random"
FULL = "full"
# What a fine-tune can train besides bias terms; each is given alone.
TUNE_MODES = (ALL_BIAS, HEAD, RANDOM, FULL)


@dataclasses.dataclass(frozen=True)
class TuningSetup:
    """What `make_trainable` set up.

    Attributes:
        terms: tuple of str. The bias terms, or the one mode.
        trainable_params: int. Parameters that learn.
        total_params: int. Parameters of the model.
        callbacks: list. Callbacks `fit` needs (the random mask's).
    """

    terms: tuple
    trainable_params: int
    total_params: int
    callbacks: list

    @property
    def is_full(self):
        return self.terms == (FULL,)

    @property
    def percent(self):
        return 100.0 * self.trainable_params / self.total_params


def parse_terms(terms):
    """`terms` as a tuple, checked: bias terms of `beft_keras.TERMS`, or
    one of `TUNE_MODES` alone.

    Raises:
        TypeError: if `terms` is not a str or a list of str.
        ValueError: for an unknown term, or a mode mixed with others.
    """
    terms = term_tuple("terms", terms)
    valid = set(terms_lib.TERMS) | set(TUNE_MODES)
    if not terms or any(t not in valid for t in terms) or (
        len(terms) > 1 and set(terms) & set(TUNE_MODES)
    ):
        raise ValueError(
            f"Invalid terms {list(terms)}: give bias terms from "
            f"{list(terms_lib.TERMS)}, or one of {list(TUNE_MODES)} alone."
        )
    return terms


def make_trainable(model, terms, seed=0):
    """Make what `terms` names trainable in `model`, with the task head.

    Args:
        model: a keras-hub task model (or any `keras.Model` with a head).
        terms: bias terms, or one of `TUNE_MODES` (see `parse_terms`).
        seed: int. Seed of the random mask. Defaults to `0`.

    Returns:
        A `TuningSetup`.
    """
    terms = parse_terms(terms)
    total = sum(math.prod(v.shape) for v in model.weights)
    callbacks = []
    if terms == (FULL,):
        unread = {id(v) for v in terms_lib.unread_weights(model)}
        model.trainable = True
        for variable in model.weights:
            variable.trainable = id(variable) not in unread
        # As `BiasOnlyTrainable` does: a compiled model would go on
        # training the variables it was compiled with.
        recompile(model)
        trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    elif terms == (RANDOM,):
        value_params = sum(
            b.size
            for b in terms_lib.bias_terms(model)
            if b.term == terms_lib.VALUE
        )
        if not value_params:
            # Refused before any flag changes.
            raise ValueError(
                f"Model '{model.name}' has no value bias (b_v), whose size "
                f"the '{RANDOM}' mask takes. Add one first "
                "(`beft_keras.add_biases(model, 'value')`), or name terms."
            )
        mask = RandomBiasMask(value_params, seed=seed)
        BiasOnlyTrainable(ALL).apply(model)
        callbacks.append(mask)
        head = terms_lib.head_variables(model)
        trainable = value_params + sum(math.prod(v.shape) for v in head)
    else:
        selection = {ALL_BIAS: ALL, HEAD: []}.get(terms[0], list(terms))
        trainable = BiasOnlyTrainable(selection).apply(model).trainable_params
    return TuningSetup(terms, trainable, total, callbacks)
