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


def test_siamese_sts_b_has_its_own_settings():
    assert beft_keras.training_settings("stsb", siamese=True) == (
        beft_keras.TrainingSettings(1e-3, 15)
    )
    # Only where one was measured; the paper's otherwise.
    assert beft_keras.training_settings("mrpc", siamese=True) == (
        beft_keras.training_settings("mrpc")
    )
