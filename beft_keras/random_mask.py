"""`RandomBiasMask`: the paper's random-uniform baseline, a random subset
of bias elements as large as b_v."""

import keras
import numpy as np

from beft_keras import arguments
from beft_keras import terms as terms_lib


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
    mask = beft_keras.RandomBiasMask(2304, seed=0)
    classifier.fit(train, callbacks=[mask])
    ```
    """

    def __init__(self, num_params, seed=0):
        super().__init__()
        arguments.check_positive_int("num_params", num_params)
        # Checked here, not by numpy when the fit begins.
        if not (arguments.is_int(seed) and seed >= 0):
            raise ValueError(
                f"`seed` must be a non-negative int. Received: seed={seed!r}"
            )
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
