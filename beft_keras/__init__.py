"""beft-keras: bias-efficient fine-tuning (BEFT) of language models in Keras.

The public names below are imported on first use (PEP 562), so that the
`beft` command can check `KERAS_BACKEND` before Keras is imported, which
fixes the backend.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "AddedBiasError": "beft_keras.added_biases",
    "add_bias": "beft_keras.added_biases",
    "add_biases": "beft_keras.added_biases",
    "DataError": "beft_keras.data",
    "TaskSpec": "beft_keras.data",
    "get_task": "beft_keras.data",
    "load_split": "beft_keras.data",
    "make_dataset": "beft_keras.data",
    "DeltaError": "beft_keras.delta",
    "DeltaInfo": "beft_keras.delta",
    "DeltaSwitcher": "beft_keras.delta",
    "load_delta": "beft_keras.delta",
    "save_delta": "beft_keras.delta",
    "StopOnNonFiniteLoss": "beft_keras.divergence",
    "TrainingError": "beft_keras.divergence",
    "POOLINGS": "beft_keras.heads",
    "PooledClassifier": "beft_keras.heads",
    "preset_pooling": "beft_keras.heads",
    "SiameseClassifier": "beft_keras.heads",
    "SiamesePreprocessor": "beft_keras.heads",
    "compute_metrics": "beft_keras.metrics",
    "predictions_from_logits": "beft_keras.metrics",
    "BeftProbe": "beft_keras.probe",
    "SQUAD_TEMPLATE": "beft_keras.prompting",
    "SST2_TEMPLATE": "beft_keras.prompting",
    "SST2_VERBALIZER": "beft_keras.prompting",
    "TASK_PROMPTS": "beft_keras.prompting",
    "PromptError": "beft_keras.prompting",
    "PromptPreprocessor": "beft_keras.prompting",
    "PromptTemplate": "beft_keras.prompting",
    "TaskPrompt": "beft_keras.prompting",
    "Verbalizer": "beft_keras.prompting",
    "VerbalizerClassifier": "beft_keras.prompting",
    "classification_inputs": "beft_keras.prompting",
    "generate_answers": "beft_keras.prompting",
    "generation_inputs": "beft_keras.prompting",
    "RandomBiasMask": "beft_keras.random_mask",
    "BeftResults": "beft_keras.results",
    "TrainingSettings": "beft_keras.settings",
    "training_settings": "beft_keras.settings",
    "PAPER_SYMBOLS": "beft_keras.terms",
    "TERMS": "beft_keras.terms",
    "BiasTerm": "beft_keras.terms",
    "bias_terms": "beft_keras.terms",
    "head_variables": "beft_keras.terms",
    "unread_weights": "beft_keras.terms",
    "BiasOnlyTrainable": "beft_keras.trainable",
    "TrainableSummary": "beft_keras.trainable",
}

# Sub-packages reached as attributes, e.g. `beft_keras.data.get_task`.
_SUBPACKAGES = ("data", "prompting")

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"beft_keras.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'beft_keras' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))
