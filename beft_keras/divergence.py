"""Stopping a fit whose loss is no longer finite, as an error."""

import math

import keras


class TrainingError(ValueError):
    """A fit that cannot give a usable model: its loss became NaN or
    infinite."""


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Keras' `TerminateOnNaN`, raising a `TrainingError` that names the
    epoch, the batch and the likely cause, so that a diverged fit is never
    scored, saved or reported as a result.

    Args:
        learning_rate: float or None. The fit's learning rate, named in the
            error as the likely cause. Defaults to `None`.

    Example:
    ```python
    model.fit(train, epochs=3, callbacks=[StopOnNonFiniteLoss(1e-3)])
    ```
    """

    def __init__(self, learning_rate=None):
        super().__init__(raise_error=True)
        self.learning_rate = learning_rate
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        cause = (
            "the learning rate is likely too high"
            if self.learning_rate is None
            else f"the learning rate {self.learning_rate:g} is likely too high"
        )
        raise TrainingError(
            f"Training diverged: the loss became {float(loss)} at epoch "
            f"{self._epoch + 1}, batch {batch + 1}; {cause}."
        )
