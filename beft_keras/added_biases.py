"""Zero-initialised biases for the projections of bias-free models (Llama,
Gemma, Mistral, ...), so that BEFT has a b_v to fine-tune."""

import keras

from beft_keras import compat
from beft_keras import distribution
from beft_keras import terms as terms_lib
from beft_keras import trainable as trainable_lib

# The terms held by a `Dense` or `EinsumDense` projection; the norm terms
# are scales without an offset in RMS-normalised models, not projections.
PROJECTION_TERMS = (
    terms_lib.QUERY,
    terms_lib.KEY,
    terms_lib.VALUE,
    terms_lib.ATTENTION_OUTPUT,
    terms_lib.FFN_INTERMEDIATE,
    terms_lib.FFN_OUTPUT,
)


class AddedBiasError(ValueError):
    """A bias that cannot be added: an unknown term, a term the model does
    not have, or a projection that already has a bias."""


def add_biases(model, terms=(terms_lib.VALUE,)):
    """Give the chosen projections of a bias-free model a zero bias.

    Each projection of the chosen terms (see `beft_keras.bias_terms`) gets a
    new bias variable, initialised to zero, which its layer adds to its
    output from then on: the model computes exactly what it computed before,
    and the new biases train like any other (`BiasOnlyTrainable("value")`).
    This is the paper's recipe for bias-free language models: a
    zero-initialised b_v.

    The biases are variables of their layers, with the paths a layer built
    with a bias has (`.../self_attention/value/bias`), so `save_weights`,
    `save_delta` and `load_delta` see them. Save a fine-tuned model as an
    adapter is saved: a delta (or its weights); to restore it, load the
    base, call `add_biases` with the same terms, then load the delta (or
    the weights). A whole-model file cannot carry the added biases of
    projections built inside another layer (every keras-hub backbone,
    `MultiHeadAttention`): its config rebuilds them without bias, so
    `keras.saving.load_model` and `from_preset` refuse a file written by
    `model.save` or `save_to_preset` ("expected 1 variables, but received
    2"), and `load_weights` refuses it on a model not prepared with
    `add_biases`. Nothing is dropped silently.

    If the model is compiled, it is recompiled, keeping its loss, metrics
    and optimizer settings, so that every backend trains the new biases;
    pass the model that is compiled (the causal LM, not its backbone), or
    add the biases before compiling.

    Args:
        model: a built `keras.Model` or layer: a keras-hub backbone or
            causal LM (`LlamaBackbone`, `GemmaBackbone`, `MistralBackbone`,
            ...), or any model whose attention layers have bias-free
            `Dense` or `EinsumDense` projections.
        terms: str or list of str. The terms to add a bias to, among
            `"query"`, `"key"`, `"value"`, `"attention_output"`,
            `"ffn_intermediate"` and `"ffn_output"`. Defaults to
            `("value",)`.

    Returns:
        A list of the new bias `keras.Variable`s, in the model's order.

    Raises:
        TypeError: if `terms` is not a str or a list of str.
        AddedBiasError: if a term is not a projection term, the model has no
            projection for it, or one of its projections has a bias already
            (as OPT's and GPT-2's do: tune those directly). Nothing is
            changed then.

    Example:
    ```python
    causal_lm = keras_hub.models.LlamaCausalLM.from_preset("llama2_7b_en")
    beft_keras.add_biases(causal_lm, "value")  # 131,072 zeros
    beft_keras.BiasOnlyTrainable("value").apply(causal_lm)
    causal_lm.compile(optimizer=keras.optimizers.AdamW(1e-3))
    causal_lm.fit(train_ds, epochs=5)
    # Half a MB: the value biases that trained.
    beft_keras.save_delta(causal_lm, "task.safetensors", base="llama2_7b_en")

    # Later, on a freshly loaded base, prepared the same way:
    causal_lm = keras_hub.models.LlamaCausalLM.from_preset("llama2_7b_en")
    beft_keras.add_biases(causal_lm, "value")
    beft_keras.load_delta(causal_lm, "task.safetensors")
    ```
    """
    terms = _validate_terms(terms)
    if not isinstance(model, keras.layers.Layer) or not model.built:
        raise AddedBiasError(
            "`model` must be a built Keras model or layer. "
            f"Received: model={model!r}"
        )
    layers = terms_lib.walk_layers(model)
    roles = terms_lib.layer_roles(layers)
    chosen = {}
    for layer in layers:
        term, _ = roles.get(id(layer), (None, None))
        if term in terms:
            chosen.setdefault(id(layer), layer)
    found = {roles[key][0] for key in chosen}
    missing = [term for term in terms if term not in found]
    if missing:
        present = [
            term
            for term in PROJECTION_TERMS
            if term in {term for term, _ in roles.values()}
        ]
        raise AddedBiasError(
            f"Model '{model.name}' has no {missing} projection to add a bias "
            f"to. Its projection terms are: {present}."
        )
    chosen = list(chosen.values())
    for layer in chosen:
        _check_projection(layer)
    added = [add_bias(layer) for layer in chosen]
    if isinstance(model, keras.Model):
        # Functions traced before (by TensorFlow) would not add the biases.
        model.train_function = None
        model.test_function = None
        model.predict_function = None
    trainable_lib.recompile(model)
    return added


def add_bias(layer):
    """Give one bias-free `Dense` or `EinsumDense` layer a zero bias.

    The layer is changed in place, as if it had been built with a bias
    (`use_bias=True`, or `bias_axes` on every output axis its kernel
    produces), with the bias set to zero, so its outputs are unchanged.
    Its config records the bias, so a functional or sequential model that
    holds the layer directly keeps it through `model.save`. The bias is
    trainable unless the layer is frozen. A compiled model that holds the
    layer must be recompiled to train the bias; `add_biases` does that.

    Args:
        layer: a built `keras.layers.Dense` or `keras.layers.EinsumDense`
            without bias.

    Returns:
        The new bias `keras.Variable`.

    Raises:
        AddedBiasError: if the layer has a bias already.

    Example:
    ```python
    dense = keras.layers.Dense(4, use_bias=False)
    dense.build((None, 8))
    bias = beft_keras.add_bias(dense)  # zeros, shape (4,)
    ```
    """
    _check_projection(layer)
    if isinstance(layer, keras.layers.EinsumDense):
        shape = _einsum_bias_shape(layer)
    else:
        shape = (layer.kernel.shape[-1],)
    # On a distributed model, where its kernel is: mirrored with it
    # (TensorFlow), replicated on its device mesh (JAX).
    with distribution.placement_scope(layer.kernel), compat.unlocked_state(
        layer
    ):
        bias = layer.add_weight(
            name="bias",
            shape=shape,
            initializer="zeros",
            dtype=layer.variable_dtype,
        )
        layer.bias = bias
    # Recorded in the config, so a model rebuilt from it has the bias too.
    if isinstance(layer, keras.layers.EinsumDense):
        layer.bias_axes = _einsum_bias_axes(layer.equation)
    else:
        layer.use_bias = True
    return bias


def _validate_terms(terms):
    terms = trainable_lib.term_tuple("terms", terms)
    invalid = [term for term in terms if term not in PROJECTION_TERMS]
    if invalid or not terms:
        raise AddedBiasError(
            f"Biases can be added to the projection terms "
            f"{list(PROJECTION_TERMS)}. Received: terms={list(terms)}"
        )
    return terms


def _check_projection(layer):
    if not isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
        raise AddedBiasError(
            f"Biases can be added to `Dense` and `EinsumDense` layers only. "
            f"Received: layer '{layer.name}' of type {type(layer).__name__}"
        )
    if not layer.built:
        raise AddedBiasError(
            f"Layer '{layer.name}' is not built, so its bias shape is not "
            "known yet. Build the model first."
        )
    if layer.bias is not None:
        raise AddedBiasError(
            f"Layer '{layer.name}' has a bias already, '{layer.bias.path}': "
            "tune it directly with `beft_keras.BiasOnlyTrainable` instead "
            "of adding one."
        )


def _einsum_bias_axes(equation):
    """The output axes the kernel produces, e.g. `"vh"` for
    `"bkm,mvh->bkvh"`: those a bias built with the layer would span."""
    inputs, output = equation.split("->")
    input_axes = inputs.split(",")[0]
    return "".join(axis for axis in output if axis not in input_axes + ".")


def _einsum_bias_shape(layer):
    """The bias shape `EinsumDense.build` would make for the axes."""
    return compat.einsum_bias_shape(
        layer.equation,
        _einsum_bias_axes(layer.equation),
        layer.input_spec.ndim,
        layer.partial_output_shape,
    )
