"""Bias-delta checkpoints: a fine-tuned BEFT task saved as the few KB of
values it trained, loaded or switched on top of a shared base model."""

import dataclasses
import hashlib
import json
import os

import keras
import numpy as np
import safetensors.numpy

from beft_keras import arguments
from beft_keras import delta_file
from beft_keras import heads
from beft_keras import terms as terms_lib
# Used below, and importable from here: the public module of deltas.
from beft_keras.delta_file import FORMAT
from beft_keras.delta_file import FORMAT_VERSION
from beft_keras.delta_file import HEAD
from beft_keras.delta_file import DeltaError
from beft_keras.files import atomic_write


@dataclasses.dataclass(frozen=True)
class DeltaInfo:
    """What a delta file holds, as returned by `save_delta` and `load_delta`.

    Attributes:
        path: str. The delta file.
        num_bytes: int. The file's size.
        num_params: int. Scalar parameters stored in it.
        base: str or None. The base preset it was made for, as named to
            `save_delta`.
        base_fingerprint: str. SHA-256 (hex, its first 128 bits; all 256
            in a delta older than format version 4) of the frozen base
            weights.
        model_class: str or None. The registered name of the class of the
            model it was saved from, e.g. `"keras_hub>BertTextClassifier"`,
            when the delta holds the model's head (which that class reads);
            `None` otherwise, and for a delta older than format version 4.
        terms: tuple of str. The bias terms it holds, e.g. `("value",)`.
        paths: tuple of str. The paths of the variables it holds, biases
            and task head.
        task: str or None. The task it was fine-tuned on, as named to
            `save_delta`.
        head_shape: tuple or None. The output shape of the model's task
            head, e.g. `(None, 2)`, when the delta holds the head.
    """

    path: str
    num_bytes: int
    num_params: int
    base: str | None
    base_fingerprint: str
    terms: tuple
    paths: tuple
    task: str | None
    head_shape: tuple | None
    model_class: str | None


def save_delta(model, path, base=None, task=None):
    """Save the trained biases and task head of a model as a delta file.

    The delta holds every variable of `model.trainable_weights` that is a
    bias (see `beft_keras.bias_terms`) or belongs to the task head (see
    `beft_keras.head_variables`): after `BiasOnlyTrainable("value")`, the
    value biases and the classifier. Every other weight is the frozen base;
    the delta records a SHA-256 fingerprint of it, so that `load_delta`
    refuses a model with a different base. A delta without the head leaves
    the head out of the fingerprint too: biases alone load onto any model
    of the same backbone, under another head or none (a prompted
    classifier's onto its causal LM, a 2-class classifier's onto a 3-class
    one).

    The file is a safetensors file (no pickle) whose metadata also records
    the base name, the task, the bias terms, and, when the delta holds the
    head, the model's class and the output shape of its head, and the
    Keras, beft-keras and backend versions that wrote it. It is written to
    a temporary file beside `path` and renamed, so that a failure leaves
    any previous file intact.

    Args:
        model: a built `keras.Model` whose biases were fine-tuned.
        path: str or path-like. The file to write, e.g. `"sst2.safetensors"`.
        base: str or None. The base preset the model was loaded from (a
            name or a folder), recorded for error messages and readers.
            Defaults to `None`.
        task: str or None. The task the model was fine-tuned on, e.g.
            `"sst2"`, which `load_delta(..., task=...)` checks. Defaults to
            `None`, an unknown task.

    Returns:
        A `DeltaInfo`.

    Raises:
        ValueError: if the model is not built, if no trainable bias or
            head variable is found, if other variables are trainable (they
            would be lost), if the model has two variables at one path, or
            `base` or `task` is not a str or `None`.
        DeltaError: if a variable to save holds NaN or infinite values;
            nothing is written then.
        IsADirectoryError: if `path` names a directory.

    Example:
    ```python
    # A keras-hub classifier, of which only b_v and the head trained:
    beft_keras.BiasOnlyTrainable("value").apply(classifier)
    classifier.fit(x=features, y=labels, batch_size=16)
    info = beft_keras.save_delta(
        classifier,
        "sst2.safetensors",
        base="bert_base_en_uncased",
        task="sst2",
    )
    print(info.num_bytes)  # tens of KB, for a 110M-parameter model.
    ```
    """
    # Imported here: the package imports this module.
    from beft_keras import __version__

    path = os.fspath(path)
    delta_file.check_name_argument("base", base)
    delta_file.check_name_argument("task", task)
    roles = _delta_roles(model)
    weights = _weights_by_path(model)
    arrays = {p: keras.ops.convert_to_numpy(weights[p]) for p in roles}
    non_finite = delta_file.non_finite(arrays)
    if non_finite:
        raise DeltaError(
            f"Cannot save a delta of model '{model.name}': variable(s) "
            f"{non_finite} hold NaN or infinite values, as after a diverged "
            f"fine-tuning. Nothing was written to '{path}'."
        )
    names = {p: n for n, p in _paths_by_tensor_name(model).items()}
    values = {names[p]: array for p, array in arrays.items()}
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base": base,
        "base_fingerprint": _fingerprint(
            weights, exclude=_unfingerprinted(model, roles)
        ),
        "task": task,
        "head_shape": _head_shape(model) if HEAD in roles.values() else None,
        "model_class": (
            _model_class(model) if _records_class(model, roles) else None
        ),
        "terms": delta_file.terms(roles),
        "keras_version": keras.__version__,
        "beft_keras_version": __version__,
        "backend": keras.backend.backend(),
    }
    metadata = {
        delta_file.METADATA_KEY: json.dumps(description, separators=(",", ":"))
    }
    atomic_write(path, safetensors.numpy.save(values, metadata=metadata))
    return _info(path, values, description, list(roles))


def load_delta(
    model,
    path,
    allow_base_mismatch=False,
    task=None,
    allow_task_mismatch=False,
):
    """Load a delta file saved by `save_delta` into a model.

    Everything is checked before any weight changes: the file, every field
    of its metadata, that its values are finite, that it was made for
    `task`, that the model's task head has the delta's output shape, that
    the model has every variable of the delta with the same shape and
    dtype, that the model is of the class the delta was saved from when
    the delta holds its head or was saved from a siamese cosine head,
    which has no weights (another head on the same backbone, such as mean
    pooling instead of the `[CLS]` pooler, or a fresh cross-encoder instead
    of the cosine, reads the same values differently), and that the
    model's base weights (every weight outside the delta) have the
    fingerprint recorded in the delta. Only then are the values assigned,
    so a failed load leaves the model as it was.

    A model that carries another task's delta passes the base check when
    that delta's variables are all covered by this one (the same terms and
    head); to switch between deltas that cover different variables, use
    `beft_keras.DeltaSwitcher`.

    Args:
        model: a built `keras.Model` of the same architecture, loaded from
            the base the delta was made for.
        path: str or path-like. The delta file.
        allow_base_mismatch: bool. Whether to load onto a model whose base
            weights differ from the delta's base, e.g. an updated preset.
            Shapes and dtypes are still checked, and a model with fewer
            variables of a role than the delta holds is refused; a deeper
            model is not (the delta does not record its model's depth,
            as a delta of some layers only holds fewer), so its first
            layers get the delta's values. Defaults to `False`.
        task: str or None. The task the model is loaded for, e.g.
            `"sst2"`. A delta saved for another task is refused. Defaults
            to `None`, which accepts any task; so does a delta saved
            without one.
        allow_task_mismatch: bool. Whether to load a delta saved for
            another task than `task`. Defaults to `False`.

    Returns:
        A `DeltaInfo`.

    Raises:
        FileNotFoundError: if there is no file at `path`.
        TypeError: if an `allow_*` argument is not a bool.
        ValueError: if `task` is not a str or `None`, or the model has two
            variables at one path.
        DeltaError: if the file is not a valid delta or holds NaN or
            infinite values, was made for another task or base, or does
            not fit the model's head or variables.

    Example:
    ```python
    classifier = keras_hub.models.BertTextClassifier.from_preset(
        "bert_base_en_uncased", num_classes=2
    )
    beft_keras.load_delta(classifier, "sst2.safetensors", task="sst2")
    classifier.predict(["a gripping, beautiful film"])
    ```
    """
    path, description, values, variables = _read_checked(
        model, path, task, allow_task_mismatch, allow_base_mismatch
    )
    for variable_path, variable in variables.items():
        variable.assign(values[variable_path])
    return _info(path, values, description, list(variables))


class DeltaSwitcher:
    """Switch one model between task deltas without reloading its base.

    `apply(path)` loads a delta like `load_delta`, after recording the base
    values of the variables it touches; applying another delta first puts
    back the base values of the variables the new one does not cover, so
    that exactly one task is active. `restore()` puts the base back.

    Args:
        model: a built `keras.Model` carrying its base weights (no delta
            loaded outside this switcher).

    Example:
    ```python
    classifier = keras_hub.models.BertTextClassifier.from_preset(
        "bert_base_en_uncased", num_classes=2
    )
    switcher = beft_keras.DeltaSwitcher(classifier)
    switcher.apply("sst2.safetensors", task="sst2")
    sentiment = classifier.predict(sentences)
    switcher.apply("cola.safetensors", task="cola")
    acceptability = classifier.predict(sentences)
    switcher.restore()  # the base model again
    ```
    """

    def __init__(self, model):
        self.model = model
        # The delta file applied last, `None` when the base is active.
        self.active = None
        # path -> (variable, base value), for every variable ever touched.
        self._base = {}

    def apply(
        self,
        path,
        allow_base_mismatch=False,
        task=None,
        allow_task_mismatch=False,
    ):
        """Make a delta the active task, checked as `load_delta` checks it:
        its base is the switcher's recorded base, whatever delta is active.
        A refused delta leaves the active one in place.

        Args:
            path: str or path-like. The delta file.
            allow_base_mismatch: bool. As for `load_delta`. Defaults to
                `False`.
            task: str or None. As for `load_delta`. Defaults to `None`.
            allow_task_mismatch: bool. As for `load_delta`. Defaults to
                `False`.

        Returns:
            A `DeltaInfo`.

        Raises:
            ValueError: as for `load_delta`.
            DeltaError: as for `load_delta`.
        """
        path, description, values, variables = _read_checked(
            self.model, path, task, allow_task_mismatch, allow_base_mismatch,
            base_values={p: value for p, (_, value) in self._base.items()},
        )
        for variable_path, (variable, value) in self._base.items():
            if variable_path not in values:
                variable.assign(value)
        for variable_path, variable in variables.items():
            if variable_path not in self._base:
                # A copy: on torch the numpy array shares the variable's
                # memory, which `assign` overwrites in place.
                base = np.array(keras.ops.convert_to_numpy(variable))
                self._base[variable_path] = (variable, base)
            variable.assign(values[variable_path])
        self.active = path
        return _info(path, values, description, list(variables))

    def restore(self):
        """Put back the base value of every variable a delta changed."""
        for variable, value in self._base.values():
            variable.assign(value)
        self.active = None


def _roles(model):
    """Maps the path of each bias of a model to its bias term, and of each
    task-head variable to `HEAD` (the head's bias included), in the
    model's order."""
    head = {id(v) for v in terms_lib.head_variables(model)}
    try:
        biases = {id(b.variable): b.term for b in terms_lib.bias_terms(model)}
    except ValueError:
        # A model without biases (or unbuilt): only a head can be its role.
        biases = {}
    roles = {}
    for variable in model.weights:
        if id(variable) in head:
            roles[variable.path] = HEAD
        elif id(variable) in biases:
            roles[variable.path] = biases[id(variable)]
    return roles


def _paths_by_tensor_name(model):
    """Maps the version 3 tensor name of each bias and head variable of a
    model (`delta_file.tensor_name`) to the variable's path."""
    counts = {}
    names = {}
    for path, role in _roles(model).items():
        index = counts[role] = counts.get(role, -1) + 1
        names[delta_file.tensor_name(role, index)] = path
    return names


def _values_by_path(model, path, values):
    """A version 3 delta's values (tensor name -> array) keyed by the paths
    of the model's variables they belong to."""
    paths = _paths_by_tensor_name(model)
    missing = [name for name in sorted(values) if name not in paths]
    if missing:
        # `read` has checked that every name parses.
        roles = sorted({delta_file.parse_tensor_name(n)[0] for n in missing})
        counts = ", ".join(
            f"{sum(delta_file.parse_tensor_name(n)[0] == role for n in paths)}"
            f" {role}"
            for role in roles
        )
        raise DeltaError(
            f"Delta '{path}' does not fit model '{model.name}': the model "
            f"has no variable for its tensor(s) {missing} (a role and an "
            f"index among the model's variables of that role; it has "
            f"{counts}). Load it onto the architecture it was saved from; "
            "a model given biases with `beft_keras.add_biases` needs them "
            "added again."
        )
    return {paths[name]: value for name, value in values.items()}


def _delta_roles(model):
    """`_roles` of the variables a delta saves: the trainable ones."""
    others = terms_lib.trainable_beyond_biases(model)
    if others:
        raise ValueError(
            f"Model '{model.name}' trains {len(others)} variable(s) that are "
            f"neither biases nor its head, e.g. '{others[0].path}': a delta "
            "holds only biases and the head, so they would be lost. Save "
            "the whole model (`model.save_weights`), or fine-tune biases "
            "only (`beft_keras.BiasOnlyTrainable`)."
        )
    trainable = {v.path for v in model.trainable_weights}
    roles = {p: r for p, r in _roles(model).items() if p in trainable}
    if not model.weights:
        raise ValueError(
            f"Model '{model.name}' has no weights yet: it is not built. "
            "Build it (call it on a batch) and fine-tune it first."
        )
    if not roles:
        raise ValueError(
            f"Model '{model.name}' has no trainable bias or head variable, so "
            "a delta would be empty. Make the fine-tuned biases trainable, "
            "e.g. with `beft_keras.BiasOnlyTrainable('value').apply(model)`."
        )
    return roles


def _weights_by_path(model):
    weights = {}
    for variable in model.weights:
        if variable.path in weights:
            raise ValueError(
                f"Model '{model.name}' has two variables at path "
                f"'{variable.path}'. Deltas address variables by path: give "
                "their layers distinct names."
            )
        weights[variable.path] = variable
    return weights


def _fingerprint(weights, exclude, base_values=None, version=FORMAT_VERSION):
    """SHA-256 (hex, `delta_file.fingerprint_bits` of it) over the shape,
    dtype and little-endian bytes of every weight not in `exclude`, in the
    model's order; before format version 4, over each weight's path too, in
    path order. `base_values` (path -> array) stand in for the current
    values of the variables they name."""
    base_values = base_values or {}
    digest = hashlib.sha256()
    for path in weights if version >= 4 else sorted(weights):
        if path in exclude:
            continue
        variable = weights[path]
        if path in base_values:
            value = base_values[path]
        else:
            value = keras.ops.convert_to_numpy(variable)
        value = np.ascontiguousarray(value, value.dtype.newbyteorder("<"))
        header = [list(value.shape), variable.dtype]
        header = json.dumps(header if version >= 4 else [path, *header])
        # Length-prefixed, so that no two weight lists hash the same bytes.
        digest.update(len(header).to_bytes(8, "little"))
        digest.update(header.encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[: delta_file.fingerprint_bits(version) // 4]


def _unfingerprinted(model, delta_paths):
    """The paths the base fingerprint leaves out: the delta's own, and the
    model's head when the delta does not hold it (its biases then load
    onto the backbone under any head, or none)."""
    roles = _roles(model)
    if any(roles.get(path) == HEAD for path in delta_paths):
        return set(delta_paths)
    return set(delta_paths) | {p for p, r in roles.items() if r == HEAD}


def _records_class(model, roles):
    """Whether a delta names the class it was saved from: when it holds
    the head, or when the head is a siamese cosine, which has no weights
    but reads the biases as no fresh head of another class would (a
    cross-encoder's would be untrained). Biases alone, saved without the
    head of a model that has one, from a bare backbone, or from a causal
    LM (whose head is its tied embedding), load onto any model of the
    backbone."""
    return HEAD in roles.values() or isinstance(
        model, heads.SiameseClassifier
    )


def _model_class(model):
    """The registered name of `model`'s class, e.g.
    `"keras_hub>BertTextClassifier"` (`"Functional"` for a functional
    model)."""
    return keras.saving.get_registered_name(type(model))


def _head_shape(model):
    """The output shape of a model with one output, such as a classifier's
    `[None, num_classes]`, or `None` for any other model. The batch size is
    left out: a model built by calling it on data keeps that batch's."""
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1:
        return None
    return [None] + [
        None if size is None else int(size) for size in outputs[0].shape[1:]
    ]


def _read_checked(
    model,
    path,
    task=None,
    allow_task_mismatch=False,
    allow_base_mismatch=False,
    base_values=None,
):
    """Read a delta and check it against the task and the model, before
    anything is assigned.

    Returns:
        `(path, description, values, variables)`: the model's variables
        by the delta's paths.
    """
    path = os.fspath(path)
    delta_file.check_name_argument("task", task)
    arguments.check_bool("allow_task_mismatch", allow_task_mismatch)
    arguments.check_bool("allow_base_mismatch", allow_base_mismatch)
    # First: with two variables at one path, the tensors' roles and indices
    # would be counted wrong, and the error would not say why.
    weights = _weights_by_path(model)
    description, values = delta_file.read(path)
    if description["format_version"] >= 3:
        values = _values_by_path(model, path, values)
    if not allow_task_mismatch:
        _check_task(path, description["task"], task)
    _check_head(model, path, description["head_shape"])
    _check_variables(model, path, values, weights)
    _check_roles(model, path, description, values)
    _check_model_class(model, path, description.get("model_class"))
    if not allow_base_mismatch:
        _check_base(model, path, description, values, weights, base_values)
    # In the model's order, as saved; safetensors sorts its tensors.
    return path, description, values, {
        p: variable for p, variable in weights.items() if p in values
    }


def _check_task(path, saved_task, task):
    # A delta saved without a task cannot be said to be for another one;
    # task names ignore case, as `data.get_task` does.
    if task is None or saved_task is None or (
        saved_task.casefold() == task.casefold()
    ):
        return
    raise DeltaError(
        f"Delta '{path}' was made for task '{saved_task}', not '{task}'. "
        f"Load it for task '{saved_task}', or pass "
        "`allow_task_mismatch=True` (`beft predict --allow-task-mismatch`) to "
        "load it anyway."
    )


def _check_model_class(model, path, saved_class):
    # Recorded from format version 4 on, with a head or a siamese cosine.
    if saved_class is None or saved_class == _model_class(model):
        return
    raise DeltaError(
        f"Delta '{path}' was saved from a model of class '{saved_class}', "
        f"not '{_model_class(model)}' as model '{model.name}' is: another "
        "head reads the same biases differently. Load it onto a model "
        "built as it was tuned (with `beft`, the same --pooling and "
        "--pair-encoding)."
    )


def _check_head(model, path, saved_shape):
    model_shape = _head_shape(model)
    if saved_shape is None or model_shape is None:
        return
    # Past the batch size, which a delta may hold from before it was left
    # out.
    if saved_shape[1:] != model_shape[1:]:
        raise DeltaError(
            f"Delta '{path}' does not fit model '{model.name}': its task "
            f"head has output shape {tuple(saved_shape)}, the model's "
            f"{tuple(model_shape)}. Build the model with the delta's head "
            f"(for a classifier, `num_classes={saved_shape[-1]}`)."
        )


def _check_variables(model, path, values, weights):
    missing = [p for p in sorted(values) if p not in weights]
    if missing:
        raise DeltaError(
            f"Delta '{path}' does not fit model '{model.name}': the model has "
            f"no variable {missing}."
        )
    for variable_path in sorted(values):
        variable, value = weights[variable_path], values[variable_path]
        if tuple(variable.shape) != value.shape:
            raise DeltaError(
                f"Delta '{path}' does not fit model '{model.name}': variable "
                f"'{variable_path}' has shape {value.shape} in the delta and "
                f"{tuple(variable.shape)} in the model."
            )
        dtype = keras.backend.standardize_dtype(value.dtype)
        if variable.dtype != dtype:
            raise DeltaError(
                f"Delta '{path}' does not fit model '{model.name}': variable "
                f"'{variable_path}' has dtype {dtype} in the delta and "
                f"{variable.dtype} in the model."
            )


def _check_roles(model, path, description, values):
    """Each variable of the delta is a bias or the task head in `model`,
    and the delta's `terms` are those biases' terms."""
    roles = _roles(model)
    others = [p for p in sorted(values) if p not in roles]
    if others:
        raise DeltaError(
            f"Delta '{path}' does not fit model '{model.name}': its "
            f"variable(s) {others} are neither biases nor the task head of "
            "the model."
        )
    delta_file.check_terms(
        path, description["terms"], {p: roles[p] for p in values}
    )


def _check_base(model, path, description, values, weights, base_values):
    expected = description["base_fingerprint"]
    version = description["format_version"]
    found = _fingerprint(
        weights,
        exclude=_unfingerprinted(model, values) if version >= 5 else values,
        base_values=base_values, version=version,
    )
    if found != expected:
        base = description["base"]
        base = "an unnamed base" if base is None else f"base '{base}'"
        raise DeltaError(
            f"Delta '{path}' was made for another base: {base} with "
            f"weights fingerprint {expected[:12]}, but model "
            f"'{model.name}' has fingerprint {found[:12]}. Load it onto "
            "the base it was made for, or pass "
            "`allow_base_mismatch=True` (`beft predict "
            "--allow-base-mismatch`)."
        )


def _info(path, values, description, paths):
    head_shape = description["head_shape"]
    return DeltaInfo(
        path=path,
        num_bytes=os.path.getsize(path),
        num_params=sum(value.size for value in values.values()),
        base=description["base"],
        base_fingerprint=description["base_fingerprint"],
        terms=tuple(description["terms"]),
        paths=tuple(paths),
        task=description["task"],
        head_shape=None if head_shape is None else tuple(head_shape),
        model_class=description.get("model_class"),
    )
