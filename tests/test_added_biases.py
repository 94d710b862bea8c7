import re

import keras
import keras_hub
import numpy as np
import pytest

import beft_keras
from beft_keras.added_biases import AddedBiasError
from beft_keras.added_biases import add_bias
from beft_keras.added_biases import add_biases
from tests.conftest import SEQUENCE_LENGTH
from tests.conftest import VOCABULARY_SIZE
from tests.conftest import snapshot
from tests.conftest import token_batch

# Tiny bias-free decoders, with grouped-query attention (one key/value head
# for two query heads) as the real ones have.
HEAD_DIM = 4
NUM_LAYERS = 2
DECODER_CONFIG = dict(
    vocabulary_size=VOCABULARY_SIZE,
    num_layers=NUM_LAYERS,
    num_query_heads=2,
    num_key_value_heads=1,
    hidden_dim=8,
    intermediate_dim=16,
)
BACKBONES = {
    "llama": (keras_hub.models.LlamaBackbone, {}),
    "gemma": (keras_hub.models.GemmaBackbone, {"head_dim": HEAD_DIM}),
    "mistral": (keras_hub.models.MistralBackbone, {}),
}


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """A local preset folder per bias-free backbone."""
    folders = {}
    for name, (backbone_class, extra) in BACKBONES.items():
        keras.utils.set_random_seed(3)
        backbone = backbone_class(**DECODER_CONFIG, **extra)
        folder = tmp_path_factory.mktemp(f"{name}_preset")
        backbone.save_to_preset(str(folder))
        folders[name] = str(folder)
    return folders


def _load(presets, name="llama"):
    backbone_class, _ = BACKBONES[name]
    return backbone_class.from_preset(presets[name])


def _inputs():
    token_ids, padding_mask, _ = token_batch(num_examples=4)
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def _logits(model):
    return keras.ops.convert_to_numpy(model(_inputs()))


def _value_paths(model):
    return {b.path for b in beft_keras.bias_terms(model) if b.term == "value"}


def _train_value_biases(presets):
    """A Llama causal LM whose added value biases trained a few steps, and
    a snapshot of its weights before training."""
    backbone = _load(presets)
    add_biases(backbone, "value")
    model = keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)
    beft_keras.BiasOnlyTrainable("value").apply(model)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    token_ids, padding_mask, _ = token_batch()
    before = snapshot(model)
    model.fit(
        {"token_ids": token_ids[:, :-1], "padding_mask": padding_mask[:, :-1]},
        token_ids[:, 1:],
        sample_weight=padding_mask[:, 1:],
        batch_size=8,
        epochs=2,
        verbose=0,
    )
    return model, before


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_added_value_biases_change_nothing(presets, name):
    backbone = _load(presets, name)
    before = _logits(backbone)
    added = add_biases(backbone)
    assert len(added) == NUM_LAYERS
    for bias in added:
        # One bias per key/value head and dimension, as a biased layer has.
        assert tuple(bias.shape) == (1, HEAD_DIM)
        assert bias.path.endswith("value/bias")
        assert not np.any(keras.ops.convert_to_numpy(bias))
    assert np.max(np.abs(_logits(backbone) - before)) == 0.0
    assert _value_paths(backbone) == {bias.path for bias in added}
    assert [b.layer_index for b in beft_keras.bias_terms(backbone)] == [0, 1]


def test_added_biases_are_used(presets):
    backbone = _load(presets)
    before = _logits(backbone)
    for bias in add_biases(backbone, ["value", "ffn_output"]):
        bias.assign(np.ones(bias.shape))
    assert np.max(np.abs(_logits(backbone) - before)) > 0.1


def test_value_only_training_changes_only_the_added_biases(presets):
    model, before = _train_value_biases(presets)
    after = snapshot(model)
    changed = {p for p in after if not np.array_equal(before[p], after[p])}
    assert changed == _value_paths(model)


def test_delta_restores_onto_a_prepared_base(presets, tmp_path):
    model, _ = _train_value_biases(presets)
    path = tmp_path / "task.safetensors"
    info = beft_keras.save_delta(model, path, base="tiny-llama")
    assert info.terms == ("value",)
    assert info.num_params == NUM_LAYERS * HEAD_DIM
    tuned = _logits(model)

    fresh = keras_hub.models.LlamaCausalLM(
        backbone=_load(presets), preprocessor=None
    )
    with pytest.raises(
        beft_keras.DeltaError,
        match=r"has no variable for its tensor\(s\) \['value/0', 'value/1'\]"
        r" .*it has 0 value\)",
    ):
        beft_keras.load_delta(fresh, path)
    add_biases(fresh.backbone, "value")
    beft_keras.load_delta(fresh, path)
    assert np.max(np.abs(_logits(fresh) - tuned)) == 0.0


def test_save_weights_restores_onto_a_prepared_base(presets, tmp_path):
    model, _ = _train_value_biases(presets)
    path = str(tmp_path / "tuned.weights.h5")
    model.save_weights(path)
    tuned = _logits(model)

    fresh = keras_hub.models.LlamaCausalLM(
        backbone=_load(presets), preprocessor=None
    )
    with pytest.raises(ValueError, match="expected 1 variables"):
        fresh.load_weights(path)
    fresh = keras_hub.models.LlamaCausalLM(
        backbone=_load(presets), preprocessor=None
    )
    add_biases(fresh.backbone, "value")
    fresh.load_weights(path)
    assert np.max(np.abs(_logits(fresh) - tuned)) == 0.0


def test_whole_model_files_refuse_to_load_without_the_biases(presets, tmp_path):
    # A keras-hub backbone's config rebuilds its projections without bias:
    # the saved biases have nowhere to go, and Keras refuses the file rather
    # than dropping them.
    backbone = _load(presets)
    add_biases(backbone, "value")
    backbone.save(tmp_path / "tuned.keras")
    with pytest.raises(ValueError, match="expected 1 variables"):
        keras.saving.load_model(tmp_path / "tuned.keras")
    backbone.save_to_preset(str(tmp_path / "tuned"))
    with pytest.raises(ValueError, match="expected 1 variables"):
        keras_hub.models.LlamaBackbone.from_preset(str(tmp_path / "tuned"))


def test_a_functional_dense_keeps_its_bias_through_save(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, use_bias=False, name="dense")(inputs)
    model = keras.Model(inputs, outputs)
    bias = add_bias(model.get_layer("dense"))
    assert bias.path == "dense/bias" and tuple(bias.shape) == (3,)
    bias.assign([1.0, 2.0, 3.0])
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    x = np.ones((2, 4), "float32")
    assert np.array_equal(
        keras.ops.convert_to_numpy(restored(x)),
        keras.ops.convert_to_numpy(model(x)),
    )


def _attention_model():
    inputs = keras.Input((SEQUENCE_LENGTH, 4))
    attention = keras.layers.MultiHeadAttention(2, 3, use_bias=False)
    x = np.random.default_rng(0).normal(size=(4, SEQUENCE_LENGTH, 4))
    return keras.Model(inputs, attention(inputs, inputs)), x


def test_added_biases_reach_functions_traced_before():
    model, x = _attention_model()
    before = model.predict(x, verbose=0)  # traced, on TensorFlow
    (bias,) = add_biases(model, "value")
    assert tuple(bias.shape) == (2, 3)
    bias.assign(np.ones(bias.shape))
    assert np.max(np.abs(model.predict(x, verbose=0) - before)) > 0.1


def test_a_trained_model_trains_its_added_biases():
    model, x = _attention_model()
    y = np.ones_like(x)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, y, verbose=0)  # builds the optimizer for the old weights
    (bias,) = add_biases(model, "value")
    model.fit(x, y, verbose=0)
    assert np.any(keras.ops.convert_to_numpy(bias))


def test_errors_name_the_bad_value(presets, opt_preset):
    opt = keras_hub.models.OPTBackbone.from_preset(opt_preset)
    with pytest.raises(AddedBiasError, match="has a bias already.*value/bias"):
        add_biases(opt, "value")

    backbone = _load(presets)
    with pytest.raises(AddedBiasError, match="'value'.*Received.*'values'"):
        add_biases(backbone, "values")
    with pytest.raises(AddedBiasError, match="Received.*'attention_norm'"):
        add_biases(backbone, "attention_norm")
    # All or nothing: the query bias is not added when value refuses.
    add_biases(backbone, "value")
    with pytest.raises(AddedBiasError, match="has a bias already"):
        add_biases(backbone, ["query", "value"])
    assert {b.term for b in beft_keras.bias_terms(backbone)} == {"value"}

    mlp = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(AddedBiasError, match=r"no \['value'\] projection"):
        add_biases(mlp, "value")
    with pytest.raises(AddedBiasError, match="`Dense` and `EinsumDense`"):
        add_bias(keras.layers.LayerNormalization())


def test_terms_must_be_a_str_or_a_list_of_str():
    inputs = keras.Input((3, 4))
    outputs = keras.layers.MultiHeadAttention(2, 2, use_bias=False)(
        inputs, inputs
    )
    model = keras.Model(inputs, outputs)
    for terms in (None, 5):
        with pytest.raises(TypeError, match=re.escape(
            f"`terms` must be a str or a list of str. Received: terms={terms}"
        )):
            add_biases(model, terms)
    assert all(
        layer.bias is None for layer in model.layers[1]._layers
        if isinstance(layer, keras.layers.EinsumDense)
    )
