import numpy as np
import pytest

from beft_keras import arguments
from beft_keras import data
from beft_keras.data import DataError


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(1)])
def test_positive_ints_pass(value):
    assert arguments.is_positive_int(value)
    arguments.check_positive_int("n", value)


@pytest.mark.parametrize(
    "value", [0, -2, True, False, 1.0, "1", None, np.float32(2)]
)
def test_anything_else_is_refused_by_name(value):
    assert not arguments.is_positive_int(value)
    with pytest.raises(ValueError) as error:
        arguments.check_positive_int("epochs", value)
    assert str(error.value) == (
        f"`epochs` must be a positive int. Received: epochs={value!r}"
    )


def test_none_only_where_allowed():
    arguments.check_positive_int("max_batches", None, allow_none=True)
    with pytest.raises(ValueError, match=r"positive int or None\. .*=0"):
        arguments.check_positive_int("max_batches", 0, allow_none=True)


def test_the_error_class_is_the_callers():
    with pytest.raises(DataError, match="batch_size=True"):
        arguments.check_positive_int("batch_size", True, error=DataError)


def test_data_refuses_a_bool_for_a_count():
    # A bool is an int to Python; as a batch size or a bucket it is a bug.
    with pytest.raises(DataError, match=r"buckets=\(True, 8\)"):
        data.bucket_lengths(20, (True, 8))
    with pytest.raises(DataError, match="sequence_length=True"):
        data.bucket_lengths(True)


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_bools_pass(value):
    arguments.check_bool("shuffle", value)


@pytest.mark.parametrize("value", ["no", 0, 1, None])
def test_a_switch_that_is_not_a_bool_is_refused(value):
    with pytest.raises(TypeError) as error:
        arguments.check_bool("shuffle", value)
    assert str(error.value) == (
        f"`shuffle` must be a bool. Received: shuffle={value!r}"
    )


def test_batches_refuse_a_shuffle_that_is_not_a_bool():
    # "no" is truthy: the batches would have been shuffled.
    mask = np.ones((4, 8), dtype=bool)
    with pytest.raises(TypeError, match="shuffle='no'"):
        data.batch_arrays({"padding_mask": mask}, np.zeros(4), 2,
                          shuffle="no")
    examples = data.Examples({"sentence": ["a", "b"]}, np.zeros(2))
    with pytest.raises(TypeError, match="shuffle='no'"):
        data.make_dataset(examples, preprocessor=None, batch_size=2,
                          shuffle="no")
