"""The `BeftProbe` callback: scores every bias term during a probe fit."""

import itertools
import warnings

import keras
import numpy as np

from beft_keras import arguments
from beft_keras import compat
from beft_keras import gradients
from beft_keras import scores as scores_lib
from beft_keras import terms as terms_lib
from beft_keras import trainable as trainable_lib
from beft_keras.results import BeftResults

DEFAULT_CANDIDATES = (terms_lib.QUERY, terms_lib.KEY, terms_lib.VALUE)
# Batches of `data` the Fisher score is measured on, unless told otherwise.
DEFAULT_MAX_BATCHES = 32
# The number of batches of a `data` that repeats forever.
_INFINITE = float("inf")


class BeftProbe(keras.callbacks.Callback):
    """Score the bias terms of a model while it fits all of its biases.

    The probe records every transformer bias when training begins and ends
    and scores each term three ways: BEFT's
    `1 - <b_pre, b_post> / max(|b_pre|^2, |b_post|^2)`, the magnitude of the
    change `mean(|b_post - b_pre|)`, and, when `data` is given, the
    empirical Fisher `mean(grad^2)` measured on `data` at the starting
    weights. Scores are averaged over layers, and `selected` is the
    candidate term with the highest BEFT score. A fit that trains no step
    (e.g. `epochs=0`) changes no bias, so there is nothing to select from:
    the probe then raises a `ValueError` when training ends.

    Fit the probe with every bias trainable (`BiasOnlyTrainable("all")`)
    and the model compiled. Terms whose measured gradient is zero up to
    rounding (the key bias in softmax attention) are reported as inert and
    left out of the selection: training them alone cannot change the
    model, and the optimizer's steps on rounding noise make any score of
    theirs meaningless. A tie at the top of the scores is warned of: on
    biases that start at zero, as an untrained Keras layer's do, every
    BEFT score is 1.

    Args:
        data: `tf.data.Dataset`, an iterable of `(x, y)` or
            `(x, y, sample_weight)` batches, or a tuple (not a list) of
            arrays `(x, y)`. Batches on which the Fisher baseline and the
            gradient check are measured, e.g. the training data. If `None`,
            the Fisher score and the inert-term check are skipped. Defaults
            to `None`.
        candidates: list of str. The terms to select among, at least two.
            Defaults to `("query", "key", "value")`, as in the paper; any
            terms of `beft_keras.TERMS` but `"other"` may be given.
        max_batches: positive int or None. At most this many batches of
            `data` are measured, before the first training step. `None`
            measures all of `data`. Defaults to `32`.
        batch_size: positive int. Batch size when `data` is a tuple of
            arrays. Defaults to `16`.
        verbose: int. 0 is silent; 1 shows a progress bar while measuring
            gradients and prints the scores when training ends. Defaults
            to `1`.

    Example:
    ```python
    classifier = keras_hub.models.BertTextClassifier.from_preset(
        "bert_base_en_uncased", num_classes=2
    )
    beft_keras.BiasOnlyTrainable("all").apply(classifier)
    classifier.compile(optimizer=keras.optimizers.AdamW(1e-3))
    probe = beft_keras.BeftProbe(data=train_ds)
    classifier.fit(train_ds, epochs=1, callbacks=[probe])
    probe.selected  # "value"
    probe.results.plot_heatmap("scores.png")
    probe.apply_selection()  # back to the start, train only b_v and head
    classifier.fit(train_ds, epochs=5)
    ```
    """

    def __init__(
        self,
        data=None,
        candidates=DEFAULT_CANDIDATES,
        max_batches=DEFAULT_MAX_BATCHES,
        batch_size=16,
        verbose=1,
    ):
        super().__init__()
        candidates = trainable_lib.term_tuple("candidates", candidates)
        valid = terms_lib.TERMS[:-1]
        invalid = [term for term in candidates if term not in valid]
        if invalid or len(candidates) < 2:
            raise ValueError(
                "`candidates` must name at least two different terms among "
                f"{list(valid)}. Received: candidates={list(candidates)}"
            )
        arguments.check_positive_int(
            "max_batches", max_batches, allow_none=True
        )
        arguments.check_positive_int("batch_size", batch_size)
        if isinstance(data, list) and not all(
            isinstance(batch, (tuple, list)) for batch in data
        ):
            raise ValueError(
                "`data` must be a `tf.data.Dataset`, an iterable of `(x, y)` "
                "or `(x, y, sample_weight)` batches, or a tuple of arrays "
                "`(x, y)`: give arrays as a tuple, not a list. Received: "
                f"data=a list of {[type(item).__name__ for item in data]}"
            )
        self.data = data
        self.candidates = candidates
        self.max_batches = max_batches
        self.batch_size = batch_size
        self.verbose = verbose
        self.results = None
        self._biases = None
        self._pre = None
        self._squared_gradients = None
        self._initial_weights = None
        self._pre_iterations = None

    @property
    def selected(self):
        """The selected term, e.g. `"value"`; `None` before training ends."""
        return None if self.results is None else self.results.selected

    def on_train_begin(self, logs=None):
        biases = [
            b
            for b in terms_lib.bias_terms(self.model)
            if b.term != terms_lib.OTHER
        ]
        present = {b.term for b in biases}
        if len([t for t in self.candidates if t in present]) < 2:
            raise ValueError(
                f"Model '{self.model.name}' has fewer than two of the "
                f"candidate terms {list(self.candidates)}: its transformer "
                f"bias terms are {sorted(present)}. Pass `candidates` the "
                "model has."
            )
        trainable_ids = {id(v) for v in self.model.trainable_variables}
        frozen = [b.path for b in biases if id(b.variable) not in trainable_ids]
        others = terms_lib.trainable_beyond_biases(self.model)
        if frozen or others:
            problem = (
                f"{len(frozen)} are not trainable, e.g. '{frozen[0]}'"
                if frozen else
                f"{len(others)} other variable(s) train too, e.g. "
                f"'{others[0].path}'"
            )
            raise ValueError(
                "BeftProbe scores the biases of a fit of all biases (and "
                f"the head) alone, but {problem}. Make exactly the biases "
                "trainable first: "
                "`beft_keras.BiasOnlyTrainable('all').apply(model)`."
            )
        self.results = None
        self._biases = biases
        self._pre = _values(biases)
        self._pre_iterations = _iterations(self.model)
        self._initial_weights = [
            (v, keras.ops.convert_to_numpy(v).copy())
            for v in self.model.trainable_variables
        ]
        self._squared_gradients = None
        if self.data is not None:
            self._squared_gradients = self._measure_squared_gradients()

    def on_train_end(self, logs=None):
        if _iterations(self.model) == self._pre_iterations:
            raise ValueError(
                f"The fit of model '{self.model.name}' trained no step (e.g. "
                "`epochs=0`), so BeftProbe has no bias change to select a "
                "term from. Fit at least one step."
            )
        # A term may hold two biases in one layer (a gated feed-forward's
        # gate and up projections, given biases by `add_biases`): the
        # layer's score is of the two as one vector, not of the last alone.
        cells = {}
        for i, bias in enumerate(self._biases):
            cells.setdefault((bias.term, bias.layer_index), []).append(i)
        cells = list(cells.values())
        pre = _joined(self._pre, cells)
        post = _joined(_values(self._biases), cells)
        layer_scores = {
            scores_lib.BEFT: [
                scores_lib.beft_score(a, b) for a, b in zip(pre, post)
            ],
            scores_lib.MAGNITUDE: [
                scores_lib.magnitude_score(a, b) for a, b in zip(pre, post)
            ],
        }
        if self._squared_gradients is not None:
            layer_scores[scores_lib.FISHER] = [
                scores_lib.fisher_score(g)
                for g in _joined(self._squared_gradients, cells, batched=True)
            ]
        self.results = BeftResults.from_biases(
            [self._biases[cell[0]] for cell in cells],
            layer_scores,
            self.candidates,
        )
        if self.verbose:
            compat.print_msg(self.results.summary())
        self._warn_if_tied()

    def _warn_if_tied(self):
        tied = self.results.tied_with_selected()
        if not tied:
            return
        selected = self.results.selected
        terms = (selected, *tied)
        zero = [
            b.path for b, pre in zip(self._biases, self._pre)
            if b.term in terms and not np.any(pre)
        ]
        warnings.warn(
            f"The BEFT scores of {list(terms)} tie at "
            f"{self.results.averages[scores_lib.BEFT][selected]:.6g}, so "
            f"'{selected}' is selected only as the first candidate."
            + (
                f" {len(zero)} of their biases, e.g. '{zero[0]}', were all "
                "zero when the probe began (Keras and keras-hub initialise "
                "biases to zero), and on a zero bias the score is 1 "
                "whatever the fit did: probe a pretrained model, or select "
                "by another score (`probe.results.selected_by("
                "'magnitude')`)."
                if zero else ""
            ),
            stacklevel=2,
        )

    def apply_selection(self, head=True):
        """Reset the weights the probe trained and train only the selection.

        Puts every variable that was trainable during the probe back to its
        value when the probe began (the pretrained biases, the initial
        head), then applies `BiasOnlyTrainable(self.selected, head=head)`,
        recompiling the model if it is compiled. It warns if the selected
        term was measured inert. State that no optimizer trains but the fit
        moved, such as batch-normalization statistics (which
        `BiasOnlyTrainable` warns of), is not reset.

        Args:
            head: bool. Whether the task head trains too. Defaults to `True`.

        Returns:
            The `TrainableSummary` of the new trainable set.
        """
        if self.results is None:
            raise ValueError(
                "`apply_selection()` needs a finished probe: call "
                "`model.fit(..., callbacks=[probe])` first."
            )
        for variable, value in self._initial_weights:
            variable.assign(value)
        summary = trainable_lib.BiasOnlyTrainable(
            self.selected, head=head, inert_terms=self.results.inert
        ).apply(self.model)
        if self.verbose:
            summary.print()
        return summary

    def _measure_squared_gradients(self):
        positions = {
            id(v): i for i, v in enumerate(self.model.trainable_variables)
        }
        indices = [positions[id(b.variable)] for b in self._biases]
        squared = [[] for _ in self._biases]
        batches, num_batches = _batches(self.model, self.data, self.batch_size)
        if num_batches == _INFINITE and self.max_batches is None:
            raise ValueError(
                "`data` repeats forever and `max_batches=None` measures all "
                "of it, so the gradients would never finish. Pass "
                "`max_batches`, or `data` without `repeat()`."
            )
        if num_batches == _INFINITE:
            num_batches = None
        if self.max_batches is not None:
            num_batches = min(num_batches or self.max_batches, self.max_batches)
        progbar = keras.utils.Progbar(
            num_batches, verbose=int(self.verbose > 0), unit_name="batch"
        )
        if self.verbose:
            compat.print_msg("BEFT probe: measuring gradients for Fisher")
        loss_gradients = gradients.loss_gradient_function(self.model)
        # Never draws a batch beyond `max_batches` from `data`.
        batches = itertools.islice(batches, self.max_batches)
        for step, batch in enumerate(batches):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
            grads = loss_gradients(x, y, sample_weight)
            for i, index in enumerate(indices):
                _check_finite_gradient(grads[index], self._biases[i].path, step)
                squared[i].append(np.square(grads[index]))
            progbar.update(step + 1, finalize=False)
        if not squared[0]:
            raise ValueError("`data` yielded no batch to measure gradients on.")
        # Ended here, not at the count: `data` may hold fewer batches than
        # `max_batches` (a generator), and the table must start a new line.
        progbar.update(len(squared[0]), finalize=True)
        return [np.stack(s) for s in squared]


def _check_finite_gradient(gradient, path, step):
    """Raise a `ValueError` naming the bias and batch if `gradient` has a
    NaN or inf. It is measured before any training step, so the cause is
    `data` or the loss, not a diverged fit as in a bias (`check_finite`)."""
    if not np.all(np.isfinite(gradient)):
        bad = "NaN" if np.any(np.isnan(gradient)) else "inf"
        raise ValueError(
            f"The gradient of bias '{path}' on batch {step} of `data` holds "
            f"{bad} values at the starting weights, before any training, so "
            "its Fisher score is undefined. Check that batch for NaN or "
            "inf inputs or labels the loss cannot take."
        )


def _joined(values, cells, batched=False):
    """For each cell (a list of positions in `values`), its values
    flattened and concatenated; past the first axis where `batched`."""
    return [
        np.concatenate(
            [
                values[i].reshape((len(values[i]), -1) if batched else -1)
                for i in cell
            ],
            axis=-1,
        )
        for cell in cells
    ]


def _iterations(model):
    """The number of steps `model`'s optimizer has applied."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _values(biases):
    values = [
        keras.ops.convert_to_numpy(b.variable).astype("float64")
        for b in biases
    ]
    for bias, value in zip(biases, values):
        scores_lib.check_finite(value, bias.path)
    return values


def _batches(model, data, batch_size):
    """Numpy batches of `data`, through the model's keras-hub preprocessor
    when it has one, as `model.fit` would see them, and their number (None
    when unknown, `_INFINITE` for a dataset that repeats forever)."""
    import tensorflow as tf

    if isinstance(data, tuple):
        x, *rest = data
        if isinstance(x, list) and all(hasattr(a, "shape") for a in x):
            # A list of arrays is a model's several inputs, as `fit` reads
            # it; `tf.data` would stack them into one.
            x = tuple(x)
        data = tf.data.Dataset.from_tensor_slices((x, *rest)).batch(
            batch_size
        )
    if isinstance(data, tf.data.Dataset):
        # keras-hub tasks run their preprocessor here, as their `fit` does.
        preprocess = getattr(model, "preprocess_samples", None)
        if preprocess is not None:
            data = data.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        num_batches = int(data.cardinality())
        if num_batches == tf.data.INFINITE_CARDINALITY:
            return data.as_numpy_iterator(), _INFINITE
        return data.as_numpy_iterator(), num_batches if num_batches > 0 else None
    if getattr(model, "preprocessor", None) is not None:
        raise ValueError(
            f"Model '{model.name}' has a preprocessor: give `data` as a "
            "`tf.data.Dataset` or a tuple of arrays of raw inputs."
        )
    return iter(data), len(data) if hasattr(data, "__len__") else None
