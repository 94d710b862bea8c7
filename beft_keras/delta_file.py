"""The delta file: its format, and reading and checking one.

A delta is a safetensors file whose metadata holds a JSON description of
the values it stores. `read` checks the file, every field of its
description and its values before any model sees them; `beft_keras.delta`
saves deltas and checks them against the model they are loaded on.
"""

import json
import os
import re

import keras
import numpy as np
import safetensors

from beft_keras import terms as terms_lib

FORMAT = "beft-keras-delta"
# Version 2 records the task and the head's output shape; version 1 deltas
# still load, as made for an unknown task. Both name each tensor by its
# variable's path and list the paths again in a `variables` field. Version
# 3 names each tensor by its role and its index among the model's
# variables of that role (`tensor_name`) and writes its JSON without
# spaces: 760 bytes less for MiniLM's b_v, whose paths are 51 characters.
# Version 4 fingerprints the base without the weights' paths, which Keras
# numbers anew in each session for layers not named by hand (`dense_3`),
# in the model's order and in 128 bits (`fingerprint_bits`), and, with a
# head, records the model's class, which tells apart two heads of one
# output shape (a keras-hub classifier on the `[CLS]` pooler and a
# mean-pooling one). Version 5 leaves the model's head out of the base
# fingerprint of a delta that does not hold it, so that biases alone load
# onto any model of their backbone, whatever head (or none) it carries.
FORMAT_VERSION = 5
# The role recorded for task-head variables, beside the bias terms.
HEAD = "head"
# The safetensors metadata entry that holds the delta's JSON description.
METADATA_KEY = "beft_keras"


# Defined here rather than in `beft_keras.delta`, which imports this
# module, so that reading and loading raise the one class.
class DeltaError(ValueError):
    """A file that is not a valid delta, or a delta that does not fit the
    model it is loaded on."""


def check_name_argument(name, value):
    """Refuse a `base` or `task` argument that the metadata cannot hold."""
    if not _is_optional_text(value):
        raise ValueError(
            f"`{name}` must be a non-empty str or None. Received: "
            f"{name}={value!r}"
        )


def tensor_name(role, index):
    """The name of a version 3 delta's tensor: the role of its variable, a
    bias term or `HEAD`, and the variable's index among the model's
    variables of that role, in `model.weights` order: `"value/0"` is the
    first layer's value bias."""
    return f"{role}/{index}"


def parse_tensor_name(name):
    """`(role, index)` of a version 3 tensor name, or `None` if `name` is
    not one (`tensor_name` writes no other form: no sign, no leading
    zero)."""
    match = re.fullmatch(r"([a-z_]+)/(0|[1-9][0-9]*)", name)
    if match is None or match[1] not in terms_lib.TERMS + (HEAD,):
        return None
    return match[1], int(match[2])


def terms(roles):
    """The bias terms among a delta's variable roles, in `TERMS` order."""
    return [t for t in terms_lib.TERMS if t in roles.values()]


def check_terms(path, saved_terms, roles):
    """Refuse a delta whose `terms` field does not list the bias terms of
    its variables' roles (path -> term or `HEAD`)."""
    if saved_terms != terms(roles):
        raise DeltaError(
            _not_a_delta(
                path,
                f"its metadata field 'terms', {saved_terms}, does not list "
                f"the bias terms of its variables, {terms(roles)}",
            )
        )


def non_finite(values):
    """The paths of the floating-point arrays in `values` (path -> array)
    that hold a NaN or an infinity."""
    return [
        path
        for path, value in values.items()
        if keras.backend.is_float_dtype(
            keras.backend.standardize_dtype(value.dtype)
        )
        and not np.all(np.isfinite(value))
    ]


def read(path):
    """The description and values of a delta file, validated."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No delta file at '{path}'.")
    try:
        with safetensors.safe_open(path, framework="numpy") as file:
            # Before any tensor is read: another safetensors file, such as
            # a model's, may be gigabytes, or of a dtype numpy lacks (FP8).
            description = _description(path, file.metadata() or {})
            values = {key: file.get_tensor(key) for key in file.keys()}
    except safetensors.SafetensorError as error:
        raise DeltaError(_not_a_delta(path, error)) from error
    if not values:
        raise DeltaError(_not_a_delta(path, "it holds no variables"))
    if description["format_version"] >= 3:
        _check_tensor_names(path, description, values)
    if "variables" in description and set(description["variables"]) != set(
        values
    ):
        raise DeltaError(
            _not_a_delta(
                path, "its metadata lists other variables than it holds"
            )
        )
    non_finite_paths = non_finite(values)
    if non_finite_paths:
        raise DeltaError(
            f"Delta '{path}' holds NaN or infinite values in tensor(s) "
            f"{sorted(non_finite_paths)}: it was saved from a diverged "
            "fine-tuning or has been altered. Nothing was loaded."
        )
    return description, values


def _check_tensor_names(path, description, values):
    """Refuse a version 3 delta with a tensor not named by `tensor_name`, or
    whose `terms` field does not list its tensors' bias terms."""
    parsed = {name: parse_tensor_name(name) for name in values}
    unnamed = sorted(name for name, role in parsed.items() if role is None)
    if unnamed:
        raise DeltaError(
            _not_a_delta(
                path,
                f"its tensor(s) {_short(unnamed)} are not named "
                f"'<role>/<index>' with a role of "
                f"{list(terms_lib.TERMS + (HEAD,))}",
            )
        )
    check_terms(
        path,
        description["terms"],
        {name: role for name, (role, _) in parsed.items()},
    )


def _description(path, metadata):
    """The delta's JSON description, with every field checked; a version 1
    description gets `task` and `head_shape` `None`."""
    if METADATA_KEY not in metadata:
        raise DeltaError(_not_a_delta(path, "it has no beft-keras metadata"))
    try:
        description = json.loads(metadata[METADATA_KEY])
    except ValueError as error:
        raise DeltaError(
            _not_a_delta(
                path, f"its beft-keras metadata is not JSON ({error})"
            )
        ) from None
    if not (
        isinstance(description, dict) and description.get("format") == FORMAT
    ):
        raise DeltaError(
            _not_a_delta(path, f"its metadata does not describe a {FORMAT}")
        )
    version = description.get("format_version")
    if type(version) is not int or version not in _FIELDS:
        newer = type(version) is int and version > FORMAT_VERSION
        raise DeltaError(
            _not_a_delta(
                path,
                f"its format version {_short(version)} is not one this "
                f"beft-keras reads ({', '.join(map(str, _FIELDS))})"
                + ("; upgrade beft-keras to read it" if newer else ""),
            )
        )
    for key, (is_valid, expected) in _FIELDS[version].items():
        if key not in description:
            raise DeltaError(
                _not_a_delta(path, f"its metadata lacks the field '{key}'")
            )
        if not is_valid(description[key]):
            raise DeltaError(
                _not_a_delta(
                    path,
                    f"its metadata field '{key}' must be {expected}; found "
                    f"{_short(description[key])}",
                )
            )
    if "variables" in description:
        check_terms(path, description["terms"], description["variables"])
    if version == 1:
        description = dict(description, task=None, head_shape=None)
    return description


def _is_text(value):
    return isinstance(value, str) and bool(value)


def _is_optional_text(value):
    return value is None or _is_text(value)


def fingerprint_bits(version):
    """The bits of SHA-256 a delta of format `version` keeps as its base
    fingerprint: 128 tell two bases apart as surely, in half the bytes."""
    return 128 if version >= 4 else 256


def _is_fingerprint(version):
    digits = fingerprint_bits(version) // 4

    def is_valid(value):
        return isinstance(value, str) and bool(
            re.fullmatch(f"[0-9a-f]{{{digits}}}", value)
        )

    return is_valid, f"a SHA-256 digest's first {digits} hex digits"


def _is_terms(value):
    return isinstance(value, list) and all(
        isinstance(term, str) and term in terms_lib.TERMS for term in value
    )


def _is_roles(value):
    roles = terms_lib.TERMS + (HEAD,)
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(role, str) for role in value.values())
        and set(value.values()) <= set(roles)
    )


def _is_shape(value):
    return value is None or (
        isinstance(value, list)
        and bool(value)
        and all(_is_size(size) for size in value)
    )


def _is_size(value):
    # `type(...) is int`: JSON `true` is a Python bool, an int subclass.
    return value is None or (type(value) is int and value > 0)


# Every field of a delta's metadata besides `format` and `format_version`,
# by format version: how to check its value, and what the check expects.
_FIELDS_V1 = {
    "base": (_is_optional_text, "a non-empty string or null"),
    "base_fingerprint": _is_fingerprint(1),
    "terms": (_is_terms, f"a list of bias terms from {list(terms_lib.TERMS)}"),
    "variables": (
        _is_roles,
        f"an object mapping variable paths to a bias term or '{HEAD}'",
    ),
    "keras_version": (_is_text, "a non-empty string"),
    "beft_keras_version": (_is_text, "a non-empty string"),
    "backend": (_is_text, "a non-empty string"),
}
_FIELDS_V2 = {
    **_FIELDS_V1,
    "task": (_is_optional_text, "a non-empty string or null"),
    "head_shape": (_is_shape, "null or a list of positive integers and nulls"),
}
_FIELDS_V3 = {k: v for k, v in _FIELDS_V2.items() if k != "variables"}
_FIELDS = {
    1: _FIELDS_V1,
    2: _FIELDS_V2,
    3: _FIELDS_V3,
    4: {
        **_FIELDS_V3,
        "base_fingerprint": _is_fingerprint(4),
        "model_class": (_is_optional_text, "a non-empty string or null"),
    },
}
_FIELDS[5] = _FIELDS[4]


def _short(value):
    """`repr(value)`, cut to a length an error message can quote."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _not_a_delta(path, reason):
    return f"'{path}' is not a valid beft-keras delta file: {reason}."
