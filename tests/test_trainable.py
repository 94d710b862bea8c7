import re

import keras
import keras_hub
import numpy as np
import pytest

import beft_keras
from beft_keras import tuning
from tests.conftest import HIDDEN_DIM
from tests.conftest import NUM_LAYERS
from tests.conftest import bert_inputs
from tests.conftest import minilm_preset_dir
from tests.conftest import snapshot
from tests.conftest import tiny_classifier
from tests.conftest import token_batch

NUM_CLASSES = 2
VALUE_PARAMS = NUM_LAYERS * HIDDEN_DIM
HEAD_PARAMS = HIDDEN_DIM * NUM_CLASSES + NUM_CLASSES


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def _fit(model, steps=3):
    features, labels = bert_inputs()
    model.fit(features, labels, batch_size=8, epochs=steps // 2 + 1, verbose=0)


def _changed(before, model):
    after = snapshot(model)
    return {path for path in before if not np.array_equal(before[path], after[path])}


def _value_paths(model):
    return {b.path for b in beft_keras.bias_terms(model) if b.term == "value"}


def _assert_all_trained(before, model):
    # Key biases get zero gradient in softmax attention (up to rounding).
    keys = {b.path for b in beft_keras.bias_terms(model) if b.term == "key"}
    assert set(before) - _changed(before, model) <= keys


def _assert_only_value_and_head_trained(before, model):
    head = {v.path for v in beft_keras.head_variables(model)}
    assert _changed(before, model) == _value_paths(model) | head


def test_value_only_on_a_backbone_preset(bert_preset):
    model = tiny_classifier(bert_preset)
    summary = beft_keras.BiasOnlyTrainable("value", head=False).apply(model)
    assert summary.bias_params == VALUE_PARAMS
    assert summary.head_params == 0
    assert summary.trainable_params == VALUE_PARAMS
    assert summary.total_params == sum(
        int(np.prod(v.shape)) for v in model.weights
    )
    assert set(summary.paths) == _value_paths(model)
    assert [v.path for v in model.trainable_weights] == list(summary.paths)
    before = snapshot(model)
    _compile(model)
    _fit(model)
    assert _changed(before, model) == _value_paths(model)


def test_apply_before_compile(bert_preset):
    model = tiny_classifier(bert_preset)
    summary = beft_keras.BiasOnlyTrainable("value").apply(model)
    assert summary.trainable_params == VALUE_PARAMS + HEAD_PARAMS
    assert summary.head_params == HEAD_PARAMS
    before = snapshot(model)
    _compile(model)
    _fit(model)
    _assert_only_value_and_head_trained(before, model)


def test_apply_after_compile(bert_preset):
    model = tiny_classifier(bert_preset)
    _compile(model)
    beft_keras.BiasOnlyTrainable("value").apply(model)
    before = snapshot(model)
    _fit(model)
    _assert_only_value_and_head_trained(before, model)


def test_apply_after_training_then_restore(bert_preset):
    """The case where backends diverge without a recompile: TensorFlow keeps
    training the frozen variables, JAX rejects the optimizer state."""
    model = tiny_classifier(bert_preset)
    _compile(model)
    before = snapshot(model)
    _fit(model)
    _assert_all_trained(before, model)

    bias_only = beft_keras.BiasOnlyTrainable("value")
    bias_only.apply(model)
    before = snapshot(model)
    _fit(model)
    _assert_only_value_and_head_trained(before, model)

    bias_only.restore()
    assert len(model.trainable_weights) == len(model.weights)
    before = snapshot(model)
    _fit(model)
    _assert_all_trained(before, model)


def test_layers_subset_and_all_terms(bert_preset):
    model = tiny_classifier(bert_preset)
    summary = beft_keras.BiasOnlyTrainable(
        ["query", "value"], layers=[1], head=False
    ).apply(model)
    assert set(summary.paths) == {
        "transformer_layer_1/self_attention_layer/query/bias",
        "transformer_layer_1/self_attention_layer/value/bias",
    }
    assert summary.bias_params == 2 * HIDDEN_DIM

    every = beft_keras.BiasOnlyTrainable("all", head=False)
    summary = every.apply(model)
    biases = beft_keras.bias_terms(model)
    assert set(summary.paths) == {b.path for b in biases}
    assert summary.bias_params == sum(b.size for b in biases)


def test_restore_brings_back_every_flag(bert_preset):
    model = tiny_classifier(bert_preset)
    model.get_layer("logits").trainable = False
    model.backbone.get_layer("token_embedding").embeddings.trainable = False
    layer_flags = [layer.trainable for layer in model._flatten_layers()]
    variable_flags = [v.trainable for v in model.weights]

    bias_only = beft_keras.BiasOnlyTrainable("key")
    summary = bias_only.apply(model)
    assert summary.trainable_params == VALUE_PARAMS + HEAD_PARAMS
    bias_only.restore()
    assert [layer.trainable for layer in model._flatten_layers()] == layer_flags
    assert [v.trainable for v in model.weights] == variable_flags


def test_frozen_model_still_trains_the_chosen_biases(bert_preset):
    model = tiny_classifier(bert_preset)
    model.trainable = False
    summary = beft_keras.BiasOnlyTrainable("value", head=False).apply(model)
    assert summary.trainable_params == VALUE_PARAMS


def test_plain_keras_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 4))
    x = keras.layers.Dense(8, name="embed")(inputs)
    x = keras.layers.MultiHeadAttention(2, 4, name="attention")(x, x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    for bias in beft_keras.bias_terms(model):
        bias.variable.assign(np.full(bias.shape, 0.3))
    summary = beft_keras.BiasOnlyTrainable("value").apply(model)
    # value bias (2 heads x 4) plus the head dense (8 x 2 + 2).
    assert summary.bias_params == 8
    assert summary.trainable_params == 8 + 18
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 4)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("int32")
    before = snapshot(model)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert _changed(before, model) == {
        "attention/value/bias",
        "head/kernel",
        "head/bias",
    }


def test_opt_causal_lm_value_only(opt_preset):
    keras.utils.set_random_seed(0)
    model = keras_hub.models.OPTCausalLM(
        backbone=keras_hub.models.OPTBackbone.from_preset(opt_preset),
        preprocessor=None,
    )
    summary = beft_keras.BiasOnlyTrainable("value").apply(model)
    assert summary.trainable_params == VALUE_PARAMS
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    token_ids, padding_mask, _ = token_batch()
    features = {"token_ids": token_ids[:, :-1], "padding_mask": padding_mask[:, :-1]}
    before = snapshot(model)
    model.fit(
        features,
        token_ids[:, 1:],
        sample_weight=padding_mask[:, 1:],
        batch_size=8,
        epochs=2,
        verbose=0,
    )
    assert _changed(before, model) == _value_paths(model)


def test_value_only_with_gradient_checkpointing(opt_preset):
    """Layers built under `keras.RematScope` (the memory-saving recipe for
    large decoders) train their value biases to the same values on torch.
    Keras 3.15's jax and tensorflow remat cannot wrap a keras-hub
    transformer layer's call (it passes None and bool keywords), as the
    README says; this pins that limitation."""
    token_ids, padding_mask, _ = token_batch()
    features = {"token_ids": token_ids[:, :-1], "padding_mask": padding_mask[:, :-1]}

    def train(mode):
        names = [f"transformer_layer_{i}" for i in range(NUM_LAYERS)]
        with keras.RematScope(mode=mode, layer_names=names):
            model = keras_hub.models.OPTCausalLM(
                backbone=keras_hub.models.OPTBackbone.from_preset(opt_preset),
                preprocessor=None,
            )
        beft_keras.BiasOnlyTrainable("value", head=False).apply(model)
        model.compile(
            optimizer=keras.optimizers.SGD(1.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[],
        )
        before = snapshot(model)
        model.fit(
            features, token_ids[:, 1:], sample_weight=padding_mask[:, 1:],
            batch_size=16, epochs=1, verbose=0,
        )
        assert _changed(before, model) == _value_paths(model)
        return snapshot(model)

    plain = train(None)
    if keras.backend.backend() != "torch":
        with pytest.raises(
            (ValueError, RuntimeError), match="_error_repr|custom_gradient"
        ):
            train("list_of_layers")
        return
    checkpointed = train("list_of_layers")
    for path, value in plain.items():
        np.testing.assert_allclose(checkpointed[path], value, atol=1e-6)


def test_minilm_package_value_only():
    classifier = keras_hub.models.BertTextClassifier.from_preset(
        minilm_preset_dir(), num_classes=2
    )
    summary = beft_keras.BiasOnlyTrainable("value").apply(classifier)
    assert summary.bias_params == 2304
    assert summary.head_params == 384 * 2 + 2
    assert summary.total_params == 22_713_986
    assert summary.bias_percent == pytest.approx(0.0101, abs=1e-4)
    assert "2,304 (0.0101%)" in str(summary)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="Valid terms are .*'value'"):
        beft_keras.BiasOnlyTrainable("values")
    with pytest.raises(ValueError, match="non-negative"):
        beft_keras.BiasOnlyTrainable("value", layers=[-1])
    with pytest.raises(ValueError, match="before `apply"):
        beft_keras.BiasOnlyTrainable("value").restore()


def test_terms_must_be_a_str_or_a_list_of_str():
    with pytest.raises(
        TypeError, match="`terms` must be a str or a list of str. "
        "Received: terms=None"
    ):
        beft_keras.BiasOnlyTrainable(None)


def test_inert_terms_take_one_term_as_a_str(bert_preset):
    bias_only = beft_keras.BiasOnlyTrainable("key", inert_terms="key")
    assert bias_only.inert_terms == frozenset({"key"})
    with pytest.warns(UserWarning, match="zero gradient for \\['key'\\]"):
        bias_only.apply(tiny_classifier(bert_preset))
    with pytest.raises(
        ValueError, match="Unknown bias terms \\['keys'\\].*"
        "Received: inert_terms=\\['keys'\\]"
    ):
        beft_keras.BiasOnlyTrainable("value", inert_terms="keys")
    with pytest.raises(TypeError, match="Received: inert_terms=3"):
        beft_keras.BiasOnlyTrainable("value", inert_terms=3)


def test_terms_and_head_that_cannot_mean_anything():
    with pytest.raises(ValueError, match=(
        r"^'all' is every bias already: give it alone, or list terms\. "
        r"Received: terms=\['all', 'value'\]$"
    )):
        beft_keras.BiasOnlyTrainable(["all", "value"])
    with pytest.raises(ValueError, match=(
        r"^No terms and `head=False`: nothing would train\."
    )):
        beft_keras.BiasOnlyTrainable([], head=False)
    with pytest.raises(TypeError, match=r"^`head` must be a bool\. "
                       r"Received: head='no'$"):
        beft_keras.BiasOnlyTrainable("value", head="no")
    assert beft_keras.BiasOnlyTrainable("value", head=np.bool_(False)).head is (
        False
    )


def test_layers_take_one_index_and_numpy_integers():
    assert beft_keras.BiasOnlyTrainable("value", layers=0).layers == (0,)
    layers = beft_keras.BiasOnlyTrainable(
        "value", layers=[np.int64(1), 0, 1]
    ).layers
    assert layers == (0, 1)
    assert all(type(i) is int for i in layers)
    for layers in (1.5, "0", [True], True, [0, 1.0], []):
        with pytest.raises(
            ValueError, match="non-empty list of them. Received: layers="
        ):
            beft_keras.BiasOnlyTrainable("value", layers=layers)


def test_invalid_for_the_model(bert_preset):
    model = tiny_classifier(bert_preset)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        beft_keras.BiasOnlyTrainable("value", layers=[2]).apply(model)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="has no \\['value'\\] biases"):
        beft_keras.BiasOnlyTrainable("value").apply(plain)
    bias_only = beft_keras.BiasOnlyTrainable("value")
    bias_only.apply(model)
    with pytest.raises(ValueError, match="call `restore"):
        bias_only.apply(plain)


def _batch_normalized_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(name="net", layers=[
        keras.Input((6, 3)),
        keras.layers.Conv1D(4, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(2, name="head"),
    ])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_frozen_batch_normalization_keeps_its_statistics():
    model = _batch_normalized_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 3)).astype("float32")
    y = rng.integers(0, 2, 8)
    bias_only = beft_keras.BiasOnlyTrainable([])  # the head alone
    bias_only.apply(model)
    before = snapshot(model)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    after = snapshot(model)
    changed = sorted(p for p in before if not np.array_equal(before[p], after[p]))
    # In inference mode: the moving mean and variance stay bitwise.
    assert changed == ["net/head/bias", "net/head/kernel"]
    bias_only.restore()
    assert model.get_layer("bn").trainable


def test_batch_normalization_that_trains_a_bias_is_warned_of():
    model = _batch_normalized_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 3)).astype("float32")
    y = rng.integers(0, 2, 8)
    with pytest.warns(UserWarning, match=(
        r"Batch normalization layer\(s\) \['bn'\] of model '.*' train a "
        r"bias \(beta\) or scale, so they run in training mode"
    )):
        summary = beft_keras.BiasOnlyTrainable("other").apply(model)
    assert sorted(summary.paths) == [
        "net/bn/beta", "net/conv/bias", "net/head/bias", "net/head/kernel"
    ]
    before = snapshot(model)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after = snapshot(model)
    changed = sorted(p for p in before if not np.array_equal(before[p], after[p]))
    assert changed == [
        "net/bn/beta", "net/bn/moving_mean", "net/bn/moving_variance",
        "net/conv/bias", "net/head/bias", "net/head/kernel",
    ]


def test_nothing_to_train_is_refused_before_anything_changes(opt_preset):
    causal_lm = keras_hub.models.OPTCausalLM(
        backbone=keras_hub.models.OPTBackbone.from_preset(opt_preset),
        preprocessor=None,
    )
    flags = [v.trainable for v in causal_lm.weights]
    with pytest.raises(ValueError, match=(
        r"^Nothing of model '.*' would train: it has no task head weights "
        r"of its own \(a causal LM's output layer is its token embedding; "
        r"a cosine head has none\)\. Name a bias term it has"
    )):
        beft_keras.BiasOnlyTrainable([]).apply(causal_lm)
    assert [v.trainable for v in causal_lm.weights] == flags


def test_layers_of_a_model_without_transformer_layers():
    plain = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2)], name="mlp"
    )
    with pytest.raises(ValueError, match=re.escape(
        "Model 'mlp' has no transformer layer (no attention layer), "
        "so `layers` must be None. Received: layers=[0]"
    )):
        beft_keras.BiasOnlyTrainable("other", layers=0).apply(plain)


def _attention_model(use_bias=True):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 4))
    x = keras.layers.MultiHeadAttention(
        2, 4, use_bias=use_bias, name="attention"
    )(inputs, inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.5, variable.shape))
    return model


def test_tuning_terms_must_be_a_str_or_a_list_of_str():
    for terms in (5, None):
        with pytest.raises(TypeError, match=re.escape(
            f"`terms` must be a str or a list of str. Received: terms={terms}"
        )):
            tuning.parse_terms(terms)


def test_full_tuning_of_a_compiled_model_trains_every_weight():
    # A model compiled (and trained) for its head alone: `full` must reach
    # the train function, as `BiasOnlyTrainable` does.
    model = _attention_model()
    _compile(model)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 6, 4)).astype("float32")
    y = rng.integers(0, 2, 8)
    tuning.make_trainable(model, "head")
    model.fit(x, y, batch_size=8, verbose=0)
    before = snapshot(model)
    setup = tuning.make_trainable(model, "full")
    assert setup.trainable_params == setup.total_params
    model.fit(x, y, batch_size=8, verbose=0)
    # Every weight but the key bias (no gradient in softmax attention).
    assert set(before) - _changed(before, model) <= {"attention/key/bias"}


def test_random_tuning_without_a_value_bias_changes_no_flag():
    model = _attention_model(use_bias=False)
    with pytest.raises(ValueError, match=re.escape(
        "has no value bias (b_v), whose size the 'random' mask takes"
    )):
        tuning.make_trainable(model, "random")
    assert all(v.trainable for v in model.weights)


def test_the_head_alone_trains_on_a_bias_free_model():
    """`BiasOnlyTrainable([])` (the head alone) needs no bias: a
    bias-free model has a head too, and only it changes in a fit."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 4))
    x = keras.layers.MultiHeadAttention(2, 4, use_bias=False)(inputs, inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    head = keras.layers.Dense(2, use_bias=False, name="head")
    model = keras.Model(inputs, head(x))
    summary = beft_keras.BiasOnlyTrainable([]).apply(model)
    assert (summary.bias_params, summary.head_params) == (0, 8)
    assert summary.paths == ("head/kernel",)
    _compile(model)
    before = snapshot(model)
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 6, 4)).astype("float32"),
              rng.integers(0, 2, 8), batch_size=8, verbose=0)
    assert _changed(before, model) == {"head/kernel"}
    # Bias terms still need biases.
    with pytest.raises(ValueError, match="has no bias variables"):
        beft_keras.BiasOnlyTrainable("value").apply(model)


@pytest.mark.parametrize("auto_scale_loss", [True, False])
def test_recompiling_keeps_auto_scale_loss(auto_scale_loss):
    """Keras does not record `auto_scale_loss`: a model compiled without
    loss scaling under `mixed_float16` must not get a
    `LossScaleOptimizer` when its flags change, nor one lose it."""
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _attention_model()
    finally:
        keras.config.set_dtype_policy("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                  auto_scale_loss=auto_scale_loss)
    beft_keras.BiasOnlyTrainable("value").apply(model)
    assert isinstance(
        model.optimizer, keras.optimizers.LossScaleOptimizer
    ) == auto_scale_loss
