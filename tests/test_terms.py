import collections

import keras
import keras_hub
import numpy as np
import pytest

import beft_keras
from beft_keras import terms as terms_lib
from tests.conftest import HIDDEN_DIM
from tests.conftest import INTERMEDIATE_DIM
from tests.conftest import NUM_LAYERS
from tests.conftest import TINY_CONFIG

TRANSFORMER_TERMS = terms_lib.TERMS[:-1]
# Size of each term's bias in one tiny transformer layer.
TERM_SIZES = {
    "query": HIDDEN_DIM,
    "key": HIDDEN_DIM,
    "value": HIDDEN_DIM,
    "attention_output": HIDDEN_DIM,
    "ffn_intermediate": INTERMEDIATE_DIM,
    "ffn_output": HIDDEN_DIM,
    "attention_norm": HIDDEN_DIM,
    "ffn_norm": HIDDEN_DIM,
}


def _by_term(biases):
    grouped = collections.defaultdict(list)
    for bias in biases:
        grouped[bias.term].append(bias)
    return grouped


def _assert_transformer_terms(biases, num_layers=NUM_LAYERS):
    grouped = _by_term(biases)
    for term in TRANSFORMER_TERMS:
        assert [b.layer_index for b in grouped[term]] == list(
            range(num_layers)
        ), term
        assert [b.size for b in grouped[term]] == [TERM_SIZES[term]] * (
            num_layers
        ), term
        for bias in grouped[term]:
            assert f"transformer_layer_{bias.layer_index}/" in bias.path
    for bias in grouped["other"]:
        assert bias.layer_index is None
    return grouped


def test_bert_backbone_from_local_preset(bert_preset):
    backbone = keras_hub.models.BertBackbone.from_preset(bert_preset)
    grouped = _assert_transformer_terms(beft_keras.bias_terms(backbone))
    assert [b.path for b in grouped["other"]] == [
        "embeddings_layer_norm/beta",
        "pooled_dense/bias",
    ]
    value = grouped["value"][1]
    assert value.path == "transformer_layer_1/self_attention_layer/value/bias"
    assert value.symbol == "b_v"
    assert value.shape == (2, 4)
    assert value.variable is backbone.get_layer(
        "transformer_layer_1"
    )._self_attention_layer._value_dense.bias
    norm = grouped["attention_norm"][0]
    assert norm.path == "transformer_layer_0/self_attention_layer_norm/beta"
    assert grouped["ffn_norm"][0].path.endswith("feedforward_layer_norm/beta")


def test_opt_backbone_from_local_preset(opt_preset):
    backbone = keras_hub.models.OPTBackbone.from_preset(opt_preset)
    grouped = _assert_transformer_terms(beft_keras.bias_terms(backbone))
    assert [b.path for b in grouped["other"]] == ["layer_norm/beta"]


@pytest.mark.parametrize(
    "backbone_class",
    [
        keras_hub.models.RobertaBackbone,
        keras_hub.models.DistilBertBackbone,
        keras_hub.models.GPT2Backbone,
    ],
)
def test_other_keras_hub_backbones(backbone_class):
    backbone = backbone_class(**TINY_CONFIG)
    _assert_transformer_terms(beft_keras.bias_terms(backbone))


def test_task_models_map_backbone_and_head(bert_preset, opt_preset):
    classifier = keras_hub.models.BertTextClassifier(
        backbone=keras_hub.models.BertBackbone.from_preset(bert_preset),
        num_classes=3,
        preprocessor=None,
    )
    grouped = _assert_transformer_terms(beft_keras.bias_terms(classifier))
    assert [b.path for b in grouped["other"]] == [
        "embeddings_layer_norm/beta",
        "pooled_dense/bias",
        "logits/bias",
    ]
    head = beft_keras.head_variables(classifier)
    assert [v.path for v in head] == ["logits/kernel", "logits/bias"]

    causal_lm = keras_hub.models.OPTCausalLM(
        backbone=keras_hub.models.OPTBackbone.from_preset(opt_preset),
        preprocessor=None,
    )
    _assert_transformer_terms(beft_keras.bias_terms(causal_lm))
    # The output projection is tied to the token embedding: no own head.
    assert beft_keras.head_variables(causal_lm) == []
    # A bare backbone has none either: its final layer norm is its own.
    assert beft_keras.head_variables(causal_lm.backbone) == []
    summary = beft_keras.BiasOnlyTrainable("value").apply(causal_lm.backbone)
    assert all("value/bias" in path for path in summary.paths)


def test_a_model_as_the_last_layer_is_no_head():
    inner = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)]
    )
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3), inner])
    assert beft_keras.head_variables(model) == []
    # A single layer last is the head.
    head = keras.layers.Dense(1, name="head")
    model.add(head)
    assert beft_keras.head_variables(model) == [head.kernel, head.bias]


def _functional_attention_model():
    inputs = keras.Input((5, 4))
    x = keras.layers.Dense(6, name="embed")(inputs)
    x = keras.layers.MultiHeadAttention(2, 3, name="attention_a")(x, x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.MultiHeadAttention(2, 3, name="attention_b")(x, x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def test_plain_functional_model():
    model = _functional_attention_model()
    biases = beft_keras.bias_terms(model)
    assert [(b.term, b.layer_index, b.path) for b in biases] == [
        ("other", None, "embed/bias"),
        ("query", 0, "attention_a/query/bias"),
        ("key", 0, "attention_a/key/bias"),
        ("value", 0, "attention_a/value/bias"),
        ("attention_output", 0, "attention_a/attention_output/bias"),
        ("other", None, "norm/beta"),
        ("query", 1, "attention_b/query/bias"),
        ("key", 1, "attention_b/key/bias"),
        ("value", 1, "attention_b/value/bias"),
        ("attention_output", 1, "attention_b/attention_output/bias"),
        ("other", None, "head/bias"),
    ]
    assert [b.size for b in biases[1:5]] == [6, 6, 6, 6]
    assert [v.path for v in beft_keras.head_variables(model)] == [
        "head/kernel",
        "head/bias",
    ]


class TinyBlock(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = keras.layers.MultiHeadAttention(2, 3)
        self.ffn = keras.layers.Dense(6, use_bias=False)

    def call(self, x):
        return self.ffn(self.attention(x, x))


class TinySubclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [TinyBlock(), TinyBlock()]
        self.head = keras.layers.Dense(3)

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_nested_sequential_and_subclassed_models():
    inner = keras.Sequential(
        [keras.layers.Dense(6), keras.layers.EinsumDense(
            "abc,cd->abd", (5, 6), bias_axes="d"
        )]
    )
    inputs = keras.Input((5, 4))
    x = inner(inputs)
    x = keras.layers.MultiHeadAttention(2, 3)(x, x)
    model = keras.Model(inputs, x)
    terms = [(b.term, b.layer_index) for b in beft_keras.bias_terms(model)]
    assert terms[:2] == [("other", None), ("other", None)]
    assert terms[2:] == [
        ("query", 0),
        ("key", 0),
        ("value", 0),
        ("attention_output", 0),
    ]

    subclassed = TinySubclassed()
    subclassed(np.zeros((1, 5, 6), "float32"))
    biases = beft_keras.bias_terms(subclassed)
    values = [b for b in biases if b.term == "value"]
    assert [b.layer_index for b in values] == [0, 1]
    assert values[1].variable is subclassed.blocks[1].attention.value_dense.bias
    assert biases[-1].term == "other"
    assert biases[-1].variable is subclassed.head.bias


class HeadFirst(keras.Model):
    """A subclassed model that makes its head before its encoder: its last
    layer is no head, so it names its backbone as keras-hub tasks do."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.classifier = keras.layers.Dense(3, name="classifier")
        self.backbone = keras.Sequential(
            [TinyBlock(), keras.layers.LayerNormalization()]
        )

    def call(self, x):
        return self.classifier(self.backbone(x))


def test_a_subclassed_model_names_its_backbone():
    model = HeadFirst()
    model(np.zeros((1, 5, 6), "float32"))
    assert beft_keras.head_variables(model) == [
        model.classifier.kernel, model.classifier.bias
    ]
    summary = beft_keras.BiasOnlyTrainable("value").apply(model)
    assert (summary.bias_params, summary.head_params) == (6, 6 * 3 + 3)


def test_model_without_biases_is_an_error():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, use_bias=False)]
    )
    with pytest.raises(ValueError, match="has no bias variables"):
        beft_keras.bias_terms(model)


def test_unbuilt_model_and_non_model_are_errors():
    with pytest.raises(ValueError, match="not built"):
        beft_keras.bias_terms(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(TypeError, match="must be a Keras model"):
        beft_keras.bias_terms("bert_base_en_uncased")


def test_cross_attention_is_no_layer_of_its_own():
    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=16,
    )
    biases = beft_keras.bias_terms(backbone)
    cross = [b for b in biases if "cross_attention" in b.path]
    assert cross and {(b.term, b.layer_index) for b in cross} == {
        ("other", None)
    }
    # The encoder's layer is 0, the decoder's 1: each read by its own
    # self-attention, with every term once.
    values = [b for b in biases if b.term == "value"]
    assert [b.layer_index for b in values] == [0, 1]
    assert all("self_attention" in b.path for b in values)
    for index in (0, 1):
        terms = [b.term for b in biases if b.layer_index == index]
        assert sorted(terms) == sorted(set(terms))
