"""Checks of arguments that several modules take, so that one mistake
reads the same wherever it is made."""

import numpy as np


def is_int(value):
    """Whether `value` is an int or a numpy integer, and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_positive_int(value):
    """Whether `value` is an int (see `is_int`) of at least 1."""
    return is_int(value) and value >= 1


def check_positive_int(name, value, allow_none=False, error=ValueError):
    """Raises `error` naming `name` unless `value` is a positive int (or
    `None`, where `allow_none`)."""
    if allow_none and value is None or is_positive_int(value):
        return
    raise error(
        f"`{name}` must be a positive int{' or None' if allow_none else ''}. "
        f"Received: {name}={value!r}"
    )


def check_bool(name, value):
    """Raises `TypeError` naming `name` unless `value` is a bool: a truthy
    non-bool such as `"no"` would turn a switch on unasked."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
