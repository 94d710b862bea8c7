"""The fine-tuning methods the benchmarks compare, and the random-uniform
bias-mask baseline the library does not have.

Each method makes some weights of a keras-hub classifier trainable and
compiles it as `beft_keras.pipeline.tune` does (AdamW, norm clipped at 1.0).
"""

import math

import keras
import numpy as np

from beft_keras import pipeline
from beft_keras import terms as terms_lib
from beft_keras.trainable import BiasOnlyTrainable

# Method name -> what trains (besides the task head, which always trains).
METHODS = {
    "b_v": ["value"],
    "b_q": ["query"],
    "b_k": ["key"],
    "all-bias": pipeline.ALL_BIAS,
    "random": "random",
    "head": pipeline.HEAD,
    "full": pipeline.FULL,
}
SINGLE_TERMS = {"b_q": "query", "b_k": "key", "b_v": "value"}
# Learning rates used throughout (see docs/benchmarks.md for why).
BIAS_LEARNING_RATE = 5e-3
FULL_LEARNING_RATE = 5e-5


def learning_rate_for(method):
    return FULL_LEARNING_RATE if method == "full" else BIAS_LEARNING_RATE


def set_up(classifier, spec, method, learning_rate=None, seed=0):
    """Make `method`'s weights of `classifier` trainable and compile it.

    Returns:
        `(trainable_params, total_params, callbacks)`: the callbacks to pass
        to `fit` (the random mask's, or none).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: one of {list(METHODS)}")
    learning_rate = learning_rate or learning_rate_for(method)
    total = sum(math.prod(v.shape) for v in classifier.weights)
    callbacks = []
    if method == "full":
        classifier.trainable = True
        for variable in classifier.weights:
            variable.trainable = True
        trainable = total
    elif method == "random":
        BiasOnlyTrainable("all").apply(classifier)
        value_params = sum(
            b.size
            for b in terms_lib.bias_terms(classifier)
            if b.term == terms_lib.VALUE
        )
        mask = RandomBiasMask(value_params, seed=seed)
        callbacks.append(mask)
        head = terms_lib.head_variables(classifier)
        trainable = value_params + sum(math.prod(v.shape) for v in head)
    else:
        what = METHODS[method]
        selection = (
            "all" if what == pipeline.ALL_BIAS
            else [] if what == pipeline.HEAD
            else what
        )
        trainable = BiasOnlyTrainable(selection).apply(
            classifier
        ).trainable_params
    pipeline.compile_classifier(classifier, spec, learning_rate)
    return trainable, total, callbacks


class RandomBiasMask(keras.callbacks.Callback):
    """Train a random subset of bias elements, as many as `num_params`.

    Fit the model with every bias and the head trainable; after every batch
    this callback puts each bias element outside a random uniform mask back
    to its value when training began, so the optimizer's update to it (the
    Adam step and AdamW's weight decay) is undone and only the masked
    elements, and the head, effectively train. The mask is drawn uniformly,
    without replacement, over every transformer bias element (all eight
    terms of every layer); biases outside the transformer layers (embedding
    norm, pooler) are held at their starting values entirely.

    Two ways it differs from a true gradient mask: gradient clipping sees
    the gradient of the whole bias vector, masked elements included, and the step time is that of all-bias training plus the
    reset. Neither changes which parameters learn.

    Args:
        num_params: int. Bias elements that train, e.g. the size of b_v.
        seed: int. Seed of the mask. Defaults to `0`.

    Example:
    ```python
    beft_keras.BiasOnlyTrainable("all").apply(classifier)
    classifier.compile(optimizer=keras.optimizers.AdamW(5e-3), loss=...)
    classifier.fit(train, callbacks=[RandomBiasMask(2304, seed=0)])
    ```
    """

    def __init__(self, num_params, seed=0):
        super().__init__()
        if int(num_params) < 1:
            raise ValueError(f"`num_params` must be >= 1, got {num_params}")
        self.num_params = int(num_params)
        self.seed = seed
        self.held = None

    def on_train_begin(self, logs=None):
        model = self.model
        head_ids = {id(v) for v in terms_lib.head_variables(model)}
        trainable_ids = {id(v) for v in model.trainable_variables}
        biases = [
            b
            for b in terms_lib.bias_terms(model)
            if id(b.variable) in trainable_ids and id(b.variable) not in head_ids
        ]
        candidates = [b for b in biases if b.term != terms_lib.OTHER]
        sizes = [b.size for b in candidates]
        if self.num_params > sum(sizes):
            raise ValueError(
                f"`num_params`={self.num_params} exceeds the "
                f"{sum(sizes)} trainable transformer bias elements."
            )
        rng = np.random.default_rng(self.seed)
        chosen = np.zeros(sum(sizes), bool)
        chosen[rng.choice(sum(sizes), self.num_params, replace=False)] = True
        masks = dict(
            zip(
                (id(b.variable) for b in candidates),
                np.split(chosen, np.cumsum(sizes)[:-1]),
            )
        )
        # (variable, starting value, elements that train)
        self.held = []
        for bias in biases:
            mask = masks.get(id(bias.variable), np.zeros(bias.size, bool))
            start = keras.ops.convert_to_numpy(bias.variable).copy()
            self.held.append(
                (bias.variable, start, mask.reshape(bias.variable.shape))
            )

    def on_train_batch_end(self, batch, logs=None):
        # JAX's fit keeps the weights outside the variables between steps;
        # pull them in, and the next step reads the reset values back.
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        for variable, start, mask in self.held:
            variable.assign(keras.ops.where(mask, variable.value, start))

    @property
    def masked_params(self):
        """Bias elements that train."""
        return int(sum(mask.sum() for _, _, mask in self.held or ()))
