"""Training settings: one table per kind of model."""

import pytest

import beft_keras


def test_encoder_settings_are_the_papers():
    assert beft_keras.training_settings("rte") == beft_keras.TrainingSettings(
        1e-3, 30, 1e-5
    )
    assert beft_keras.training_settings("sst2").epochs == 16
    assert beft_keras.training_settings("stsb").learning_rate == 1e-4


def test_causal_lm_settings_are_opts():
    assert beft_keras.training_settings("sst2", "causal_lm") == (
        beft_keras.TrainingSettings(1e-3, 5)
    )
    assert beft_keras.training_settings("cb", "causal_lm").learning_rate == 1e-2


def test_every_task_has_settings_for_both_kinds():
    for task in beft_keras.data.TASKS:
        for kind in ("encoder", "causal_lm"):
            settings = beft_keras.training_settings(task, kind)
            assert settings.learning_rate > 0 and settings.epochs >= 1


def test_unknown_kind_or_task():
    with pytest.raises(ValueError, match="Unknown model kind 'rnn'"):
        beft_keras.training_settings("rte", "rnn")
    with pytest.raises(beft_keras.DataError, match="Unknown task"):
        beft_keras.training_settings("nope")


def test_a_custom_task_has_no_encoder_defaults():
    spec = beft_keras.data.TaskSpec(
        name="mood", features=("sentence",), num_classes=2,
        metrics=("accuracy",), tfds_name="none/mood",
        dev_split="validation", regimes={"full": None},
    )
    assert beft_keras.training_settings(spec) == (
        beft_keras.TrainingSettings(None, None)
    )
    # OPT's settings are the paper's for every task.
    assert beft_keras.training_settings(spec, "causal_lm") == (
        beft_keras.TrainingSettings(1e-3, 5)
    )


def test_siamese_heads_have_their_own_settings():
    assert beft_keras.training_settings("stsb", siamese=True) == (
        beft_keras.TrainingSettings(1e-3, 15)
    )
    assert beft_keras.training_settings("rte", siamese=True) == (
        beft_keras.TrainingSettings(1e-3, 10)
    )
    # Only where one was measured; the paper's otherwise.
    assert beft_keras.training_settings("mrpc", siamese=True) == (
        beft_keras.training_settings("mrpc")
    )


def test_compile_model_is_the_papers_optimizer():
    """AdamW at the given rate, no weight decay (`transformers`' AdamW, which
    the paper's code uses; Keras' default decays) and the global gradient
    norm clipped at 1.0; a weight moves by the rate alone on its first
    step, as Adam's normalised update with no decay gives."""
    import keras
    import numpy as np

    from beft_keras import models

    # Weights of one and a skewed batch: every gradient is +-0.25, far
    # above Adam's epsilon, and a decay would move the kernel by 4e-5 more.
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, kernel_initializer="ones")]
    )
    models.compile_model(model, beft_keras.data.get_task("sst2"), 1e-2)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert (optimizer.weight_decay, optimizer.global_clipnorm) == (0.0, 1.0)
    before = [keras.ops.convert_to_numpy(v) for v in model.weights]
    model.train_on_batch(np.ones((4, 3), "float32"), np.array([0, 0, 0, 1]))
    after = [keras.ops.convert_to_numpy(v) for v in model.weights]
    # Adam's first step moves each weight by lr * g / (|g| + eps): the
    # rate, up to eps; a decay would add lr * wd * w.
    for b, a in zip(before, after):
        np.testing.assert_allclose(np.abs(a - b), 1e-2, rtol=1e-4)
