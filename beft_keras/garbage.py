"""Collecting Python's garbage between epochs, where a backend stalls
without it."""

import gc

import keras


class CollectGarbageEachEpoch(keras.callbacks.Callback):
    """Run `gc.collect()` at the start of every epoch.

    On the JAX backend (Keras 3.15, CPU), a fit of all-MiniLM-L6-v2 on
    length-bucketed batches stalls for up to 16 s in the first step of
    about half its epochs, with nothing compiling; collecting at each
    epoch's start (0.2-0.4 s) removed every stall measured and changes no
    result (`docs/epoch_stalls.md`). `beft_keras.pipeline` adds it to its
    fits on JAX; add it to your own `fit` there.

    Example:
    ```python
    model.fit(train, epochs=16, callbacks=[CollectGarbageEachEpoch()])
    ```
    """

    def on_epoch_begin(self, epoch, logs=None):
        gc.collect()


def backend_callbacks():
    """The callbacks a fit on the current Keras backend needs: a
    `CollectGarbageEachEpoch` on JAX, none elsewhere."""
    if keras.backend.backend() == "jax":
        return [CollectGarbageEachEpoch()]
    return []
