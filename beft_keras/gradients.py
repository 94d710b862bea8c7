"""The one place that knows how each backend computes a gradient."""

import keras
import numpy as np


def loss_gradient_function(model):
    """A function of one batch that returns the gradients of `model`'s
    compiled loss with respect to its trainable variables, at the current
    weights, in inference mode (no dropout).

    The function is made once per model and measurement (on JAX it is
    compiled once, as Keras' own train step is), and holds the model only
    as long as the caller keeps it.

    Args:
        model: a compiled `keras.Model`.

    Returns:
        A function `(x, y=None, sample_weight=None) -> list` of float64
        numpy arrays, one per variable of `model.trainable_variables`, in
        that order; zeros for a variable the loss does not depend on.
    """
    if not model.compiled:
        raise ValueError(
            f"Model '{model.name}' must be compiled to measure gradients of "
            "its loss. Call `model.compile(...)` first."
        )
    backend = keras.backend.backend()
    if backend == "jax":
        gradients = _jax_gradients(model)
    elif backend == "tensorflow":
        gradients = _tensorflow_gradients
    elif backend == "torch":
        gradients = _torch_gradients
    else:
        raise ValueError(
            "Gradients need the jax, tensorflow or torch backend. "
            f"Received: backend={backend}"
        )

    def loss_gradients(x, y=None, sample_weight=None):
        grads = gradients(model, x, y, sample_weight)
        return [np.asarray(g, dtype="float64") for g in grads]

    return loss_gradients


def _loss(model, x, y, sample_weight):
    y_pred = model(x, training=False)
    return model.compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
    )


def _tensorflow_gradients(model, x, y, sample_weight):
    import tensorflow as tf

    variables = model.trainable_variables
    if not tf.distribute.has_strategy():
        with tf.GradientTape() as tape:
            loss = _loss(model, x, y, sample_weight)
        # The TensorFlow variables themselves: an unconnected gradient
        # becomes zeros of their shape.
        sources = [v.value for v in variables]
    else:
        # Inside a `tf.distribute` strategy's scope (MirroredStrategy) the
        # variables are mirrored, and a tape cannot differentiate with
        # respect to them outside a replica context. It watches their
        # values instead, substituted through Keras' `StatelessScope`: the
        # gradient of the whole batch, as on one device.
        sources = [tf.convert_to_tensor(v.value) for v in variables]
        with tf.GradientTape() as tape:
            tape.watch(sources)
            with keras.StatelessScope(list(zip(variables, sources))):
                loss = _loss(model, x, y, sample_weight)
    grads = tape.gradient(
        loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    # Under a strategy's scope Keras divides every loss by the number of
    # replicas in sync (for its replicas' gradients to be summed); this is
    # the whole batch's gradient, so that is undone (1 without a strategy).
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return [g.numpy() * replicas for g in grads]


def _torch_gradients(model, x, y, sample_weight):
    import torch

    loss = _loss(model, x, y, sample_weight)
    values = [v.value for v in model.trainable_variables]
    grads = torch.autograd.grad(loss, values, allow_unused=True)
    # Keras' conversion, not `Tensor.numpy()`, which has no bfloat16.
    return [
        np.zeros(v.shape) if g is None else keras.ops.convert_to_numpy(g)
        for v, g in zip(values, grads)
    ]


def _jax_gradients(model):
    import jax

    # The weights are arguments, not constants, so one compilation (per
    # input shape) serves every batch.
    def loss(trainable, non_trainable, metrics, x, y, sample_weight):
        value, _ = model.compute_loss_and_updates(
            trainable, non_trainable, metrics, x, y, sample_weight
        )
        return value

    gradient = jax.jit(jax.grad(loss))

    def gradients(model, x, y, sample_weight):
        return gradient(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.metrics_variables],
            x,
            y,
            sample_weight,
        )

    return gradients
