"""`RandomBiasMask`: the paper's random-uniform baseline."""

import re

import keras
import numpy as np
import pytest

import beft_keras
from tests.conftest import bert_inputs
from tests.conftest import tiny_classifier


def test_random_bias_mask_trains_only_its_elements(bert_preset):
    classifier = tiny_classifier(bert_preset)
    beft_keras.BiasOnlyTrainable("all").apply(classifier)
    classifier.compile(
        optimizer=keras.optimizers.AdamW(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    mask = beft_keras.RandomBiasMask(num_params=5, seed=0)
    x, y = bert_inputs(16)
    classifier.fit(x, y, batch_size=8, epochs=2, callbacks=[mask], verbose=0)
    assert mask.masked_params == 5
    changed = 0
    for variable, start, masked in mask.held:
        moved = keras.ops.convert_to_numpy(variable) != start
        # Nothing outside the mask moved.
        assert not np.any(moved & ~masked), variable.path
        changed += int(moved.sum())
    assert 0 < changed <= 5


@pytest.mark.parametrize("num_params", [0, 2.7, "5", True])
def test_random_bias_mask_needs_a_positive_int(num_params):
    with pytest.raises(ValueError, match=(
        rf"`num_params` must be a positive int\. "
        rf"Received: num_params={re.escape(repr(num_params))}"
    )):
        beft_keras.RandomBiasMask(num_params)


@pytest.mark.parametrize("seed", ["0", -1, 1.5, None])
def test_random_bias_mask_needs_a_non_negative_int_seed(seed):
    # numpy would refuse it only when the fit begins.
    with pytest.raises(ValueError, match=re.escape(
        f"`seed` must be a non-negative int. Received: seed={seed!r}"
    )):
        beft_keras.RandomBiasMask(4, seed=seed)
