"""`BiasOnlyTrainable`: make exactly the chosen bias terms trainable."""

import dataclasses
import math
import warnings
from collections.abc import Iterable

import keras

from beft_keras import arguments
from beft_keras import compat
from beft_keras import distribution
from beft_keras import terms as terms_lib

ALL = "all"


@dataclasses.dataclass(frozen=True)
class TrainableSummary:
    """What `BiasOnlyTrainable.apply` made trainable.

    Attributes:
        terms: tuple of str. The bias terms made trainable.
        layers: tuple of int or None. The transformer layers, `None` for all.
        bias_params: int. Trainable parameters of the chosen bias terms
            (the head's own bias among them when `"other"` or `"all"` is
            chosen).
        head_params: int. Trainable parameters of the task head not
            counted in `bias_params`.
        trainable_params: int. All trainable parameters.
        total_params: int. All parameters of the model.
        paths: tuple of str. The paths of the trainable variables.
    """

    terms: tuple
    layers: tuple | None
    bias_params: int
    head_params: int
    trainable_params: int
    total_params: int
    paths: tuple

    @property
    def percent(self):
        """Trainable parameters as a percentage of all parameters."""
        return 100.0 * self.trainable_params / self.total_params

    @property
    def bias_percent(self):
        """Trainable bias parameters (head excluded), in percent of all."""
        return 100.0 * self.bias_params / self.total_params

    def __str__(self):
        layers = "all" if self.layers is None else list(self.layers)
        rows = [
            ("Bias terms", ", ".join(self.terms) or "none"),
            ("Transformer layers", str(layers)),
            (
                "Trainable bias params",
                f"{self.bias_params:,} ({self.bias_percent:.4f}%)",
            ),
            ("Trainable head params", f"{self.head_params:,}"),
            (
                "Trainable params",
                f"{self.trainable_params:,} ({self.percent:.4f}%)",
            ),
            ("Total params", f"{self.total_params:,}"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def print(self):
        """Print the summary through Keras' printing."""
        compat.print_msg(str(self))


class BiasOnlyTrainable:
    """Make only the chosen bias terms, and the task head, trainable.

    `apply(model)` sets `Variable.trainable` on every weight of the model so
    that Keras' `model.trainable_variables` holds exactly the chosen biases
    (see `beft_keras.bias_terms` for the terms) and, by default, the task
    head. Weights the model's outputs do not depend on
    (`beft_keras.unread_weights`, such as the unused `[CLS]` pooler
    under a `PooledClassifier`) stay frozen, and so does a batch
    normalization layer none of whose variables train, in inference mode as
    Keras freezes one (its moving statistics kept). `restore()` puts every
    flag back as it was.

    It can be applied before or after `compile()`, and after a model has
    already trained: Keras fixes the trainable variables when it builds the
    train function (TensorFlow) and the optimizer state (JAX), so when the
    model is already compiled, `apply` and `restore` recompile it with the
    same loss and metrics. If its optimizer has already been built, they
    recompile with a fresh optimizer of the same configuration: moments and
    iteration count start again, as they should for a new set of variables.
    Nothing else is needed; every backend then trains the same variables.

    Args:
        terms: str or list of str. The bias terms to train, from
            `beft_keras.TERMS` (`"query"`, `"key"`, `"value"`,
            `"attention_output"`, `"ffn_intermediate"`, `"ffn_output"`,
            `"attention_norm"`, `"ffn_norm"`, `"other"`), or `"all"` for
            every bias (BitFit); an empty list, with `head=True`, trains
            the head alone. Defaults to `"value"`, the paper's choice.
        layers: int, list of int, or None. Transformer layers (0-based)
            whose biases train; biases outside transformer layers
            (`"other"`) are not restricted by it. Defaults to `None`, all
            layers.
        head: bool. Whether the task head trains too, kernel and bias (see
            `beft_keras.head_variables`). Defaults to `True`.
        inert_terms: str or list of str. Terms measured to get zero gradient
            (`BeftProbe(...).results.inert`): training only those cannot
            change the model's outputs, and `apply` warns. Defaults to `()`.
        verbose: bool. Whether `apply` prints its summary. Defaults to
            `False`.

    Example:
    ```python
    classifier = keras_hub.models.BertTextClassifier.from_preset(
        "bert_base_en_uncased", num_classes=2
    )
    bias_only = beft_keras.BiasOnlyTrainable("value")
    summary = bias_only.apply(classifier)
    print(summary)  # 9,216 value-bias params (0.0084%) plus the head's 1,538.
    classifier.compile(optimizer=keras.optimizers.AdamW(1e-3))
    classifier.fit(x=features, y=labels, batch_size=16)
    bias_only.restore()  # every variable trainable again
    ```
    """

    def __init__(
        self, terms="value", layers=None, head=True, inert_terms=(),
        verbose=False,
    ):
        arguments.check_bool("head", head)
        self.terms, self._every_term = _validate_terms(terms, head)
        self.layers = _validate_layers(layers)
        self.head = bool(head)
        self.inert_terms = _validate_inert_terms(inert_terms)
        self.verbose = verbose
        self._model = None
        self._saved_flags = None

    def apply(self, model):
        """Make only the chosen biases (and head) of `model` trainable.

        Args:
            model: a built `keras.Model`.

        Returns:
            A `TrainableSummary`.
        """
        if self._model is not None and self._model is not model:
            raise ValueError(
                f"This BiasOnlyTrainable is applied to model "
                f"'{self._model.name}'; call `restore()` before applying it "
                f"to model '{model.name}'."
            )
        # The head alone needs no bias: a bias-free model has a head too.
        biases = (
            terms_lib.bias_terms(model)
            if self.terms or self.layers is not None
            else []
        )
        present = {bias.term for bias in biases}
        missing = [term for term in self.terms if term not in present]
        if missing and not self._every_term:
            raise ValueError(
                f"Model '{model.name}' has no {missing} biases. "
                f"Its bias terms are: {sorted(present)}."
            )
        num_layers = 1 + max(
            (b.layer_index for b in biases if b.layer_index is not None),
            default=-1,
        )
        if self.layers is not None and max(self.layers) >= num_layers:
            raise ValueError(
                (
                    f"`layers` must be transformer layer indices in "
                    f"[0, {num_layers - 1}] for model '{model.name}'."
                    if num_layers else
                    f"Model '{model.name}' has no transformer layer (no "
                    "attention layer), so `layers` must be None."
                )
                + f" Received: layers={list(self.layers)}"
            )
        unread = {id(v) for v in terms_lib.unread_weights(model)}
        chosen = [
            bias
            for bias in biases
            if bias.term in self.terms
            and id(bias.variable) not in unread
            and (
                self.layers is None
                or bias.layer_index is None
                or bias.layer_index in self.layers
            )
        ]
        head = terms_lib.head_variables(model) if self.head else []
        head = [v for v in head if id(v) not in unread]
        if not (chosen or head):
            # Refused before any flag changes: a fit would train nothing.
            reasons = [
                f"no bias of {list(self.terms)} is there to train"
            ] if self.terms else []
            reasons.append(
                "it has no task head weights of its own (a causal LM's "
                "output layer is its token embedding; a cosine head has "
                "none)" if self.head else "`head=False`"
            )
            raise ValueError(
                f"Nothing of model '{model.name}' would train: "
                + " and ".join(reasons)
                + ". Name a bias term it has, such as 'value'."
            )
        trainable_ids = {id(b.variable) for b in chosen}
        trainable_ids.update(id(v) for v in head)

        saved_flags = _flags(model)
        # Only the top-level flag gates `model.trainable_variables`; the
        # variable flags decide the rest. Setting the layer flag cascades to
        # every variable, which is then overwritten below.
        if not model.trainable:
            model.trainable = True
        normalizations = _set_batch_normalization_modes(model, trainable_ids)
        for variable in model.weights:
            variable.trainable = id(variable) in trainable_ids
        if self._model is None:
            # Applied twice without `restore()`: keep the original flags.
            self._model, self._saved_flags = model, saved_flags
        recompile(model)

        inert = self.inert_terms
        if self.terms and not self._every_term and set(self.terms) <= inert:
            warnings.warn(
                f"A BeftProbe measured zero gradient for {list(self.terms)} "
                f"in model '{model.name}' (in softmax attention the key bias "
                "shifts every logit of a query equally): training only "
                "these biases leaves the model's outputs unchanged; only the "
                "head will learn.",
                stacklevel=2,
            )
        if normalizations:
            warnings.warn(
                f"Batch normalization layer(s) {normalizations} of model "
                f"'{model.name}' train a bias (beta) or scale, so they run "
                "in training mode and update their moving mean and variance "
                "too, which a bias delta does not hold. Leave their "
                "variables out (terms other than 'other') to keep them "
                "frozen, in inference mode.",
                stacklevel=2,
            )
        summary = _summarize(model, self.terms, self.layers, chosen, head)
        if self.verbose:
            summary.print()
        return summary

    def restore(self):
        """Restore every trainable flag changed by `apply`."""
        if self._model is None:
            raise ValueError(
                "`restore()` was called before `apply(model)`: "
                "there are no flags to restore."
            )
        layer_flags, variable_flags = self._saved_flags
        # Parents first: a layer's setter cascades to its sub-layers, whose
        # own flags are set after it; variable flags last.
        for layer, flag in layer_flags:
            layer.trainable = flag
        for variable, flag in variable_flags:
            variable.trainable = flag
        recompile(self._model)
        self._model, self._saved_flags = None, None


def term_tuple(name, value):
    """`value`, one term as a str or an iterable of them, as a tuple of str
    without repeats, in order. Raises a `TypeError` naming `name` for
    anything else."""
    terms = [value] if isinstance(value, str) else value
    if isinstance(terms, Iterable):
        terms = list(terms)
    if not (isinstance(terms, list) and all(isinstance(t, str) for t in terms)):
        raise TypeError(
            f"`{name}` must be a str or a list of str. "
            f"Received: {name}={value!r}"
        )
    return tuple(dict.fromkeys(terms))


def _validate_terms(terms, head):
    terms = term_tuple("terms", terms)
    if terms == (ALL,):
        return terms_lib.TERMS, True
    if ALL in terms:
        raise ValueError(
            f"'{ALL}' is every bias already: give it alone, or list terms. "
            f"Received: terms={list(terms)}"
        )
    invalid = [t for t in terms if t not in terms_lib.TERMS]
    if invalid:
        raise ValueError(
            f"Unknown bias terms {invalid}. Valid terms are "
            f"{list(terms_lib.TERMS)}, or '{ALL}' for every bias. "
            f"Received: terms={list(terms)}"
        )
    # No term at all trains the head alone.
    if not (terms or head):
        raise ValueError(
            "No terms and `head=False`: nothing would train. Name a bias "
            "term, or keep the head. Received: terms=[], head=False"
        )
    return terms, False


def _validate_inert_terms(inert_terms):
    inert_terms = term_tuple("inert_terms", inert_terms)
    invalid = [t for t in inert_terms if t not in terms_lib.TERMS]
    if invalid:
        raise ValueError(
            f"Unknown bias terms {invalid}. Valid terms are "
            f"{list(terms_lib.TERMS)}. "
            f"Received: inert_terms={list(inert_terms)}"
        )
    return frozenset(inert_terms)


def _validate_layers(layers):
    if layers is None:
        return None
    indices = [layers] if arguments.is_int(layers) else layers
    if isinstance(indices, Iterable):
        indices = list(indices)
    if not (
        isinstance(indices, list)
        and indices
        and all(arguments.is_int(i) and i >= 0 for i in indices)
    ):
        raise ValueError(
            "`layers` must be None, a non-negative transformer layer index, "
            f"or a non-empty list of them. Received: layers={layers!r}"
        )
    return tuple(sorted({int(i) for i in indices}))


def _set_batch_normalization_modes(model, trainable_ids):
    """Freeze each batch normalization layer none of whose variables train:
    Keras then runs it in inference mode, so its moving statistics stay as
    they are, as every other frozen weight does. Returns the names of those
    that train a variable, whose statistics will move."""
    training = []
    for layer in terms_lib.walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            trains = any(id(v) in trainable_ids for v in layer.weights)
            # The setter cascades to the layer's variables; `apply` sets
            # every variable's own flag after this.
            layer.trainable = trains
            if trains:
                training.append(layer.name)
    return training


def _flags(model):
    layers = terms_lib.walk_layers(model)
    return (
        [(layer, layer.trainable) for layer in layers],
        [(variable, variable.trainable) for variable in model.weights],
    )


def recompile(model):
    """Recompile a compiled model with every argument of its last
    `compile()` (a keras-hub causal LM's `sampler` too), so that Keras
    collects the new trainable variables on every backend."""
    if not getattr(model, "compiled", False):
        return
    config = compat.compile_arguments(model)
    optimizer = model.optimizer
    # Under the model's `tf.distribute` strategy, if any: an optimizer made
    # outside it cannot update mirrored variables.
    with distribution.model_scope(model):
        if optimizer is not None and optimizer.built:
            # The optimizer's state is laid out for the old trainable
            # variables (JAX refuses a different list); start a new one,
            # same settings.
            optimizer = optimizer.__class__.from_config(
                optimizer.get_config()
            )
        config["optimizer"] = optimizer
        model.compile(**config)


def _summarize(model, terms, layers, chosen, head):
    bias_ids = {id(b.variable) for b in chosen}
    return TrainableSummary(
        terms=tuple(terms),
        layers=layers,
        bias_params=sum(b.size for b in chosen),
        head_params=sum(_size(v) for v in head if id(v) not in bias_ids),
        trainable_params=sum(_size(v) for v in model.trainable_weights),
        total_params=sum(_size(v) for v in model.weights),
        paths=tuple(v.path for v in model.trainable_weights),
    )


def _size(variable):
    return math.prod(variable.shape)
