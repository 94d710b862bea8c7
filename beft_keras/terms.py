"""The bias-term map: which variable of a model is b_q, b_k, b_v, ... in
which transformer layer."""

import dataclasses

import keras
import keras_hub
import numpy as np

from beft_keras import compat

QUERY = "query"
KEY = "key"
VALUE = "value"
ATTENTION_OUTPUT = "attention_output"
FFN_INTERMEDIATE = "ffn_intermediate"
FFN_OUTPUT = "ffn_output"
ATTENTION_NORM = "attention_norm"
FFN_NORM = "ffn_norm"
OTHER = "other"

# Every term, in the order of the paper's figures; `OTHER` is the catch-all
# for biases outside transformer layers (embedding norms, pooler, head).
TERMS = (
    QUERY,
    KEY,
    VALUE,
    ATTENTION_OUTPUT,
    FFN_INTERMEDIATE,
    FFN_OUTPUT,
    ATTENTION_NORM,
    FFN_NORM,
    OTHER,
)
# The names the BEFT paper gives each term.
PAPER_SYMBOLS = {
    QUERY: "b_q",
    KEY: "b_k",
    VALUE: "b_v",
    ATTENTION_OUTPUT: "b_m1",
    FFN_INTERMEDIATE: "b_m2",
    FFN_OUTPUT: "b_m3",
    ATTENTION_NORM: "b_LN1",
    FFN_NORM: "b_LN2",
    OTHER: "b_other",
}

# Sub-layers of an attention layer, by attribute, one naming per dict. Keras
# `MultiHeadAttention`, keras-hub's `CachedMultiHeadAttention` and the
# keras-hub decoder attentions (Llama, Mistral, Qwen, ...) use the first;
# keras-hub's Gemma attention the second.
_ATTENTION_NAMINGS = (
    {
        "_query_dense": QUERY,
        "_key_dense": KEY,
        "_value_dense": VALUE,
        "_output_dense": ATTENTION_OUTPUT,
    },
    {
        "query_dense": QUERY,
        "key_dense": KEY,
        "value_dense": VALUE,
        "output_dense": ATTENTION_OUTPUT,
    },
)
# Sub-layers of a transformer block, by attribute: keras-hub's
# `TransformerEncoder` (BERT, RoBERTa, DistilBERT), `TransformerDecoder`
# (OPT, GPT-2), the decoder blocks of the newer keras-hub models, and
# Gemma's decoder block (`attention`, `gating_ffw`, ...).
_BLOCK_ATTENTIONS = ("_self_attention_layer", "attention")
# An encoder-decoder block's attention over the encoder (BART, T5 in
# keras-hub's `TransformerDecoder`): not the block's own attention, so its
# biases are "other" rather than a second layer's query, key and value.
_BLOCK_CROSS_ATTENTIONS = ("_cross_attention_layer",)
_BLOCK_ROLES = {
    "_self_attention_layer_norm": ATTENTION_NORM,
    "_self_attention_layernorm": ATTENTION_NORM,
    "_feedforward_intermediate_dense": FFN_INTERMEDIATE,
    "_feedforward_gate_dense": FFN_INTERMEDIATE,
    "gating_ffw": FFN_INTERMEDIATE,
    "gating_ffw_2": FFN_INTERMEDIATE,
    "_feedforward_output_dense": FFN_OUTPUT,
    "ffw_linear": FFN_OUTPUT,
    "_feedforward_layer_norm": FFN_NORM,
    "_feedforward_layernorm": FFN_NORM,
}


@dataclasses.dataclass(frozen=True, eq=False)
class BiasTerm:
    """One bias variable of a model and the BEFT term it belongs to.

    Attributes:
        term: str. One of `beft_keras.TERMS`, e.g. `"value"`.
        layer_index: int or None. The transformer layer (0-based) the bias
            sits in; `None` for biases outside transformer layers.
        variable: `keras.Variable`. The bias itself.
        layer: `keras.layers.Layer`. The layer that owns the bias.
    """

    term: str
    layer_index: int | None
    variable: keras.Variable
    layer: keras.layers.Layer

    @property
    def path(self):
        """The variable's path, unique within the model."""
        return self.variable.path

    @property
    def shape(self):
        return tuple(self.variable.shape)

    @property
    def size(self):
        """Number of scalar parameters."""
        return int(np.prod(self.variable.shape))

    @property
    def symbol(self):
        """The paper's name for the term, e.g. `"b_v"`."""
        return PAPER_SYMBOLS[self.term]


def bias_terms(model):
    """List every bias of a model with the BEFT term it belongs to.

    Biases are the `bias` of `Dense`, `EinsumDense` and convolution layers and
    the `beta` (offset) of normalization layers. Each is assigned a term:

    - keras-hub transformer blocks (BERT, RoBERTa, DistilBERT, OPT, GPT-2 and
      the other models built on `TransformerEncoder`/`TransformerDecoder`) are
      read by their sub-layers: query, key, value and output projections of
      the self-attention, the two feed-forward denses and the two layer
      norms. An encoder-decoder block's cross-attention (BART) is
      `"other"`.
    - Any other `keras.layers.MultiHeadAttention` (or a layer with the same
      `_query_dense`/`_key_dense`/`_value_dense`/`_output_dense` sub-layers,
      or Gemma's `query_dense`/`key_dense`/`value_dense`/`output_dense`)
      gives `"query"`, `"key"`, `"value"` and `"attention_output"`.
    - Every other bias, for example embedding layer norms, a pooler or a
      classification head, is `"other"`.

    Transformer layers are numbered from 0 in the order the model holds them;
    an attention layer that sits outside any transformer block counts as a
    layer of its own.

    Args:
        model: a built `keras.Model` or `keras.layers.Layer`: a keras-hub
            backbone, a keras-hub task such as `BertTextClassifier`, or any
            functional, sequential or subclassed Keras model.

    Returns:
        A list of `BiasTerm`, one per bias variable, in the model's order.

    Raises:
        ValueError: if the model is not built, or has no bias at all.

    Example:
    ```python
    backbone = keras_hub.models.BertBackbone.from_preset(
        "bert_base_en_uncased"
    )
    for bias in beft_keras.bias_terms(backbone):
        print(bias.symbol, bias.layer_index, bias.path, bias.size)
    ```
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "`model` must be a Keras model or layer. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built, so it has no bias variables "
            "yet. Build it first, e.g. by calling it on a batch of inputs."
        )
    layers = walk_layers(model)
    roles = layer_roles(layers)
    biases = []
    seen = set()
    for layer in layers:
        for variable in _own_biases(layer):
            if id(variable) in seen:
                continue
            seen.add(id(variable))
            term, layer_index = roles.get(id(layer), (OTHER, None))
            biases.append(BiasTerm(term, layer_index, variable, layer))
    if not biases:
        raise ValueError(
            f"Model '{model.name}' has no bias variables: none of its layers "
            "has a `bias` or a normalization `beta`, so there is nothing for "
            "BEFT to fine-tune. For a bias-free model, add biases first."
        )
    return biases


def head_variables(model):
    """The variables of a model's task head.

    For a keras-hub task (`BertTextClassifier`, `OPTCausalLM`, ...) the head
    is every variable outside `model.backbone`: the classifier dense of a
    text classifier, nothing for a causal LM whose output embedding is tied
    to the backbone. Any model that names its backbone the same way (a
    subclassed model of your own: `self.backbone = encoder`) gets the same
    rule. A bare keras-hub `Backbone` has no head. For any other model it
    is the last layer of `model.layers` that holds weights (in a
    subclassed model, the last that `__init__` assigned), if that is one
    layer, not a model of many, and holds no transformer biases itself.

    Args:
        model: a built `keras.Model`.

    Returns:
        A list of `keras.Variable`.
    """
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, keras.layers.Layer):
        in_backbone = {id(v) for v in backbone.weights}
        return [v for v in model.weights if id(v) not in in_backbone]
    if isinstance(model, keras_hub.models.Backbone):
        # Its last layer is its own, such as a final layer norm.
        return []
    for layer in reversed(getattr(model, "layers", [])):
        if layer.weights:
            roles = layer_roles(walk_layers(layer))
            if isinstance(layer, keras.Model) or any(
                term != OTHER for term, _ in roles.values()
            ):
                return []
            return list(layer.weights)
    return []


def trainable_beyond_biases(model):
    """The trainable variables of a model that are neither a bias nor of
    its task head (`head_variables`): what a bias-only fit or a bias delta
    does not account for.

    Args:
        model: a built `keras.Model`.

    Returns:
        A list of `keras.Variable`, empty after `BiasOnlyTrainable`.
    """
    try:
        biases = {id(b.variable) for b in bias_terms(model)}
    except ValueError:
        # A model without biases: only its head is accounted for.
        biases = set()
    accounted = biases | {id(v) for v in head_variables(model)}
    return [v for v in model.trainable_weights if id(v) not in accounted]


def unread_weights(model):
    """The weights a model holds that its outputs do not depend on.

    A layer declares them in an `unread_weights` attribute: a
    `PooledClassifier` or `SiameseClassifier` reads its backbone's token
    outputs, so the backbone's `[CLS]` pooler is computed and left aside.
    They get no gradient, so `BiasOnlyTrainable` and full fine-tuning
    leave them frozen (Keras would warn that they have no gradient, and
    count them as trained).

    Args:
        model: a built `keras.Model`.

    Returns:
        A list of `keras.Variable`, empty for most models.
    """
    unread = {}
    for layer in walk_layers(model):
        for variable in getattr(layer, "unread_weights", ()):
            unread[id(variable)] = variable
    return list(unread.values())


def walk_layers(layer):
    """All layers under `layer` (itself first), depth first, in the order
    the model holds them, each once: a model may hold a layer twice (a
    head keeps its embedder and the embedder's backbone)."""
    layers, seen = [], set()

    def visit(current):
        if id(current) in seen:
            return
        seen.add(id(current))
        layers.append(current)
        for child in compat.sub_layers(current):
            visit(child)

    visit(layer)
    return layers


def layer_roles(layers):
    """Maps `id(layer)` to `(term, layer_index)` for every layer whose biases
    belong to a transformer term."""
    roles = {}
    cross_attentions = set()
    next_index = 0
    for layer in layers:
        attention = _block_attention(layer)
        if attention is not None:
            roles[id(attention)] = (None, next_index)
            for attribute, term in _BLOCK_ROLES.items():
                sublayer = getattr(layer, attribute, None)
                if isinstance(sublayer, keras.layers.Layer):
                    roles[id(sublayer)] = (term, next_index)
            cross_attentions.update(
                id(getattr(layer, attribute))
                for attribute in _BLOCK_CROSS_ATTENTIONS
                if getattr(layer, attribute, None) is not None
            )
            next_index += 1
        naming = _attention_naming(layer)
        if naming is not None and id(layer) not in cross_attentions:
            if id(layer) in roles:
                layer_index = roles[id(layer)][1]
            else:
                layer_index = next_index
                next_index += 1
            for attribute, term in naming.items():
                roles[id(getattr(layer, attribute))] = (term, layer_index)
    return {key: role for key, role in roles.items() if role[0] is not None}


def _block_attention(layer):
    """The self-attention of a transformer block, or None."""
    for attribute in _BLOCK_ATTENTIONS:
        attention = getattr(layer, attribute, None)
        if _attention_naming(attention) is not None:
            return attention
    return None


def _attention_naming(layer):
    """The naming of an attention layer's projections, or None for a layer
    that is not an attention layer."""
    if not isinstance(layer, keras.layers.Layer):
        return None
    for naming in _ATTENTION_NAMINGS:
        if all(
            isinstance(getattr(layer, attribute, None), keras.layers.Layer)
            for attribute in naming
        ):
            return naming
    return None


def _own_biases(layer):
    """The bias variables a layer owns itself (not its sub-layers')."""
    own = {id(v) for v in layer._trainable_variables}
    own.update(id(v) for v in layer._non_trainable_variables)
    biases = []
    for attribute in ("bias", "beta"):
        variable = getattr(layer, attribute, None)
        if isinstance(variable, keras.Variable) and id(variable) in own:
            biases.append(variable)
    return biases
