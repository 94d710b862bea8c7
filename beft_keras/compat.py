"""Every use of Keras and keras-hub internals, in one place.

Each function says why no public API serves. Keep this module small: when
Keras exposes one of these, switch to it here and nowhere else.
"""

import keras
from keras.src.layers.core.einsum_dense import _analyze_einsum_string
from keras.src.utils import io_utils


def print_msg(message):
    """Print as Keras' own callbacks do: through absl logging when the user
    turned interactive logging off (`keras.config.disable_interactive_logging`),
    to stdout otherwise. Keras has no public wrapper for it."""
    io_utils.print_msg(message)


def sub_layers(layer):
    """The sub-layers `layer` tracks, in the order it holds them.

    `Layer._layers` is the only ordered list of them in Keras 3: the public
    `_flatten_layers` visits children in reverse, and transformer layers
    must be numbered in model order.
    """
    return list(layer._layers)


def compile_arguments(model):
    """The arguments `model.compile` was last called with.

    Keras records them in `_compile_config` (there is no public getter),
    all but `auto_scale_loss`: under `mixed_float16` its default wraps the
    optimizer in a `LossScaleOptimizer`, so an optimizer left unwrapped
    there was compiled with `auto_scale_loss=False`. keras-hub's
    `CausalLM.compile` takes a `sampler` that Keras does not record; it is
    kept on the model, so it is added back here.
    """
    arguments = dict(model._compile_config.config)
    if model.dtype_policy.name == "mixed_float16" and not isinstance(
        model.optimizer, keras.optimizers.LossScaleOptimizer
    ):
        arguments["auto_scale_loss"] = False
    sampler = getattr(model, "sampler", None)
    if sampler is not None:
        arguments["sampler"] = sampler
    return arguments


def unlocked_state(layer):
    """A context in which a built layer may add weights, as Keras' own
    `enable_lora` does: a built layer's tracker is locked."""
    return _UnlockedState(layer)


class _UnlockedState:
    def __init__(self, layer):
        self.layer = layer

    def __enter__(self):
        self.layer._tracker.unlock()
        return self.layer

    def __exit__(self, *exc_info):
        self.layer._lock_state()
        return False


def einsum_bias_shape(equation, bias_axes, ndim, partial_output_shape):
    """The bias shape `EinsumDense.build` makes for `bias_axes`; Keras
    computes it in a private helper of that module."""
    _, shape, _, _, _ = _analyze_einsum_string(
        equation, bias_axes, (None,) * ndim, partial_output_shape
    )
    return tuple(shape)
