"""The one place that knows how each backend computes a gradient."""

import functools

import keras
import numpy as np


def loss_gradients(model, x, y=None, sample_weight=None):
    """Gradients of the compiled loss with respect to the trainable
    variables, at the current weights, in inference mode (no dropout).

    Args:
        model: a compiled `keras.Model`.
        x, y, sample_weight: one batch, as `model.fit` takes it.

    Returns:
        A list of float64 numpy arrays, one per variable of
        `model.trainable_variables`, in that order.
    """
    if not model.compiled:
        raise ValueError(
            f"Model '{model.name}' must be compiled to measure gradients of "
            "its loss. Call `model.compile(...)` first."
        )
    backend = keras.backend.backend()
    if backend == "jax":
        grads = _jax_gradients(model, x, y, sample_weight)
    elif backend == "tensorflow":
        grads = _tensorflow_gradients(model, x, y, sample_weight)
    elif backend == "torch":
        grads = _torch_gradients(model, x, y, sample_weight)
    else:
        raise ValueError(
            "Gradients need the jax, tensorflow or torch backend. "
            f"Received: backend={backend}"
        )
    return [np.asarray(g, dtype="float64") for g in grads]


def _loss(model, x, y, sample_weight):
    y_pred = model(x, training=False)
    return model.compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
    )


def _tensorflow_gradients(model, x, y, sample_weight):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = _loss(model, x, y, sample_weight)
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def _torch_gradients(model, x, y, sample_weight):
    import torch

    loss = _loss(model, x, y, sample_weight)
    values = [v.value for v in model.trainable_variables]
    grads = torch.autograd.grad(loss, values, allow_unused=True)
    return [
        np.zeros(v.shape) if g is None else g.detach().cpu().numpy()
        for v, g in zip(values, grads)
    ]


def _jax_gradients(model, x, y, sample_weight):
    grads = _jax_gradient_function(model)(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.metrics_variables],
        x,
        y,
        sample_weight,
    )
    return [np.asarray(g) for g in grads]


@functools.lru_cache(maxsize=4)
def _jax_gradient_function(model):
    # Compiled once per model (and per input shape, by jit), as Keras'
    # own train step is; the weights are arguments, not constants.
    import jax

    def loss(trainable, non_trainable, metrics, x, y, sample_weight):
        value, _ = model.compute_loss_and_updates(
            trainable, non_trainable, metrics, x, y, sample_weight
        )
        return value

    return jax.jit(jax.grad(loss))
