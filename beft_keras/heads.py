"""Task heads for encoders: the preset's own classifier (its `[CLS]`
pooler), or a head on the pooled embedding keras-hub's `TextEmbedder`
computes, the way a sentence-transformer was trained."""

import json
import os

import keras
import keras_hub

CLS = "cls"
MEAN = "mean"
POOLINGS = (CLS, MEAN)
# How a sentence pair is read: together (a cross-encoder), or each
# sentence on its own by the same embedder (siamese, as sentence-transformers
# trains and scores STS-B).
CROSS = "cross"
SIAMESE = "siamese"
PAIR_ENCODINGS = (CROSS, SIAMESE)
# The suffix of the second sentence's features in a siamese pair.
SECOND = "_2"
# STS-B's scores run from 0 to 5: the siamese cosine is scaled to them.
_SIMILARITY_SCALE = 5.0
# A siamese classifier's logits are a line in the cosine times this scale
# (sentence-transformers' CoSENT and ranking losses use 20): AdamW moves
# the line's weights by about the learning rate per step, so unscaled
# logits could not reach a sharp threshold in the paper's few hundred steps.
_LOGIT_SCALE = 20.0
# sentence-transformers' pooling flags -> keras-hub's `pooling_mode`.
_SENTENCE_TRANSFORMERS_POOLING = {
    "pooling_mode_mean_tokens": MEAN,
    "pooling_mode_cls_token": CLS,
}


def is_sentence_transformer(model):
    """Whether a preset folder is a sentence-transformers model (it has a
    pooling config): an embedding model."""
    return os.path.isfile(os.path.join(model, "1_Pooling", "config.json"))


def default_pair_encoding(model, spec):
    """Siamese for a pair graded by how alike its texts are (STS-B, RTE,
    MRPC, QQP, ...; `TaskSpec.compares_pair`) on an embedding model, which
    was trained to embed each text alone and compare by cosine; a
    cross-encoder otherwise (BoolQ and WiC too, whose labels a cosine of the
    two texts does not measure)."""
    if spec.compares_pair and is_sentence_transformer(model):
        return SIAMESE
    return CROSS


def preset_pooling(model):
    """The pooling a local preset folder was trained with: a
    sentence-transformers folder's `1_Pooling/config.json` says (mean for
    all-MiniLM-L6-v2 as Hugging Face holds it); any other folder has its
    own classifier, `"cls"`.

    Only a local folder is read. A keras-hub preset name or a `kaggle://`
    or `hf://` handle is `"cls"`, unread, even for a sentence-transformer:
    pass `pooling="mean"` for one.

    Args:
        model: str. A local preset folder; any other preset is `"cls"`.

    Returns:
        `"mean"` or `"cls"`.

    Raises:
        ValueError: if the folder's pooling config cannot be read.
    """
    # Not asked of keras-hub's `get_file`: its Keras-format presets
    # (`save_to_preset`) do not carry this file, and a file missing from a
    # cached preset is fetched from the network, so a preset that loads
    # offline would fail here.
    path = os.path.join(model, "1_Pooling", "config.json")
    if not is_sentence_transformer(model):
        return CLS
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read the pooling config '{path}': {error}")
    for flag, pooling in _SENTENCE_TRANSFORMERS_POOLING.items():
        if config.get(flag):
            return pooling
    return CLS


def _check_embedder(embedder):
    # A classifier or a backbone would build too, or fail deep in Keras: a
    # head on a classifier's logits, or on a dict of token outputs.
    if not isinstance(embedder, keras_hub.models.TextEmbedder):
        raise TypeError(
            "`embedder` must be a keras_hub.models.TextEmbedder, e.g. "
            "`keras_hub.models.TextEmbedder.from_preset(preset, "
            "normalize=False, preprocessor=None)`. Received: embedder of "
            f"type {type(embedder).__name__}"
        )


class _EmbedderHead(keras.Model):
    """A functional model around a keras-hub `TextEmbedder`, saved by its
    constructor's arguments (`_config_names`) rather than its graph."""

    _config_names = ("num_classes",)

    @property
    def unread_weights(self):
        """The backbone's weights the embedder does not read: every
        `TextEmbedder` pooling reads `sequence_output`, so the `[CLS]`
        pooler of a backbone that also computes `pooled_output` (BERT's
        `pooled_dense`) is left aside (see `beft_keras.unread_weights`).
        """
        outputs = self.backbone.output
        if not isinstance(outputs, dict) or "sequence_output" not in outputs:
            return []
        read = keras.Model(
            self.backbone.input,
            outputs["sequence_output"],
            name=f"{self.backbone.name}_sequence_output",
        )
        read_ids = {id(variable) for variable in read.weights}
        return [v for v in self.backbone.weights if id(v) not in read_ids]

    def _freeze_unread(self):
        # No gradient reaches them: a plain `fit` would warn about each.
        for variable in self.unread_weights:
            variable.trainable = False

    def get_config(self):
        config = {name: getattr(self, name) for name in self._config_names}
        config["embedder"] = keras.layers.serialize(self.embedder)
        config["name"] = self.name
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["embedder"] = keras.layers.deserialize(config["embedder"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="beft_keras")
class PooledClassifier(_EmbedderHead):
    """A dense head on the pooled embedding of a keras-hub `TextEmbedder`.

    The embedder pools the backbone's token outputs as the preset was
    trained to (`pooling_mode="mean"`: the padding-masked mean, as
    sentence-transformers' all-MiniLM-L6-v2), without its L2 normalisation;
    dropout and a `Dense` layer give one logit per class (one output for a
    regression task). The backbone is the embedder's, so
    `BiasOnlyTrainable` and deltas treat the dense layer as the head; the
    backbone's `[CLS]` pooler, which the embedder does not read, stays
    frozen (`unread_weights`).

    Args:
        embedder: a keras-hub `TextEmbedder` without preprocessor, e.g.
            `BertTextEmbedder.from_preset(..., normalize=False)`.
        num_classes: int. Outputs of the head.
        dropout: float. Dropout before the head. Defaults to `0.1`.

    Example:
    ```python
    embedder = keras_hub.models.TextEmbedder.from_preset(
        "all_minilm_l6_v2_en", pooling_mode="mean", normalize=False,
        preprocessor=None,
    )
    classifier = beft_keras.PooledClassifier(embedder, num_classes=2)
    beft_keras.BiasOnlyTrainable("value").apply(classifier)
    ```
    """

    _config_names = ("num_classes", "dropout")

    def __init__(self, embedder, num_classes, dropout=0.1, **kwargs):
        _check_embedder(embedder)
        inputs = embedder.input
        pooled = embedder(inputs)
        hidden = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
        logits = keras.layers.Dense(num_classes, name="logits")(hidden)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.embedder = embedder
        self.backbone = embedder.backbone
        self.num_classes = num_classes
        self.dropout = dropout
        self._freeze_unread()


@keras.saving.register_keras_serializable(package="beft_keras")
class SiameseClassifier(_EmbedderHead):
    """A sentence pair read by one embedder, each sentence on its own.

    Both sentences are embedded by the same keras-hub `TextEmbedder`
    (shared weights, so one b_v serves both) and compared by the cosine of
    their embeddings, as a sentence-transformer was trained to. For a
    regression task the output is that cosine scaled to STS-B's 0-5
    (sentence-transformers' `CosineSimilarityLoss`, up to that scale); for
    a classification task a `Dense` layer on the cosine, its output times
    20, gives the logits: each class wins on a range of similarity, the
    threshold sentence-transformers' `BinaryClassificationEvaluator` fits
    for a pair of classes. Its kernel starts small (keras-hub's classifier
    initialiser, a truncated normal of deviation 0.02), so every class
    starts about equally likely while the loss already has a gradient
    with respect to the embedder's biases (the probe's Fisher score).

    The inputs are the embedder's, once per sentence: the second sentence's
    features carry the suffix `"_2"` (`token_ids_2`, `padding_mask_2`, ...),
    as `SiamesePreprocessor` makes them.

    Args:
        embedder: a keras-hub `TextEmbedder` without preprocessor.
        num_classes: int. 1 for the similarity score, else the classes.

    Example:
    ```python
    embedder = keras_hub.models.TextEmbedder.from_preset(
        "all_minilm_l6_v2_en", normalize=False, preprocessor=None
    )
    model = beft_keras.SiameseClassifier(embedder, num_classes=1)
    ```
    """

    def __init__(self, embedder, num_classes, **kwargs):
        _check_embedder(embedder)
        first = embedder.input
        second = {
            name + SECOND: keras.Input(
                shape=tensor.shape[1:], dtype=tensor.dtype,
                name=name + SECOND,
            )
            for name, tensor in first.items()
        }
        u = keras.ops.normalize(embedder(first), axis=-1)
        v = keras.ops.normalize(
            embedder({name: second[name + SECOND] for name in first}), axis=-1
        )
        cosine = keras.ops.sum(u * v, axis=-1, keepdims=True)
        if num_classes == 1:
            outputs = cosine * _SIMILARITY_SCALE
        else:
            outputs = keras.layers.Dense(
                num_classes,
                kernel_initializer=keras.initializers.TruncatedNormal(
                    stddev=0.02
                ),
                name="logits",
            )(cosine) * _LOGIT_SCALE
        super().__init__(inputs={**first, **second}, outputs=outputs, **kwargs)
        self.embedder = embedder
        self.backbone = embedder.backbone
        self.num_classes = num_classes
        self._freeze_unread()


class SiamesePreprocessor:
    """A keras-hub text classifier preprocessor applied to each sentence of
    a pair on its own, for a `SiameseClassifier`: the second sentence's
    features get the suffix `"_2"`.

    Args:
        preprocessor: a keras-hub `TextClassifierPreprocessor`.
    """

    def __init__(self, preprocessor):
        self.preprocessor = preprocessor

    @property
    def sequence_length(self):
        return self.preprocessor.sequence_length

    @sequence_length.setter
    def sequence_length(self, value):
        self.preprocessor.sequence_length = value

    def __call__(self, x):
        first, second = x
        features = dict(self.preprocessor(x=first))
        for name, value in self.preprocessor(x=second).items():
            features[name + SECOND] = value
        return features


def check_head_options(pooling, pair_encoding):
    """Raises `ValueError` unless `pooling` is one of `POOLINGS` and
    `pair_encoding` one of `PAIR_ENCODINGS` (either may be `None`)."""
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(
            f"Unknown pooling {pooling!r}: one of {list(POOLINGS)}."
        )
    if pair_encoding is not None and pair_encoding not in PAIR_ENCODINGS:
        raise ValueError(
            f"Unknown pair encoding {pair_encoding!r}: one of "
            f"{list(PAIR_ENCODINGS)}."
        )


def load_encoder_classifier(model, num_classes, pooling, pair_encoding=CROSS):
    """An encoder preset's model for a classification or regression task.

    Args:
        model: str. A keras-hub preset name or folder.
        num_classes: int.
        pooling: str. `"cls"` for the preset's own `TextClassifier`;
            `"mean"` for a `PooledClassifier` on its `TextEmbedder`.
        pair_encoding: str. `"cross"` reads a pair together; `"siamese"`
            embeds each sentence on its own (`SiameseClassifier`).

    Returns:
        The model, without preprocessor.
    """
    check_head_options(pooling, pair_encoding)
    if pair_encoding == SIAMESE:
        embedder = keras_hub.models.TextEmbedder.from_preset(
            model, pooling_mode=pooling, normalize=False, preprocessor=None
        )
        return SiameseClassifier(embedder, num_classes)
    if pooling == CLS:
        return keras_hub.models.TextClassifier.from_preset(
            model, num_classes=num_classes, preprocessor=None
        )
    embedder = keras_hub.models.TextEmbedder.from_preset(
        model, pooling_mode=pooling, normalize=False, preprocessor=None
    )
    return PooledClassifier(embedder, num_classes)
