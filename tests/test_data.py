import csv
import os
import re
import warnings
import sys
import types

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from beft_keras import data
from beft_keras.data import DataError
from beft_keras.data import Examples
from beft_keras.data import readers

# The real GLUE TSV files; CI checks `shared/` out beside the repository.
GLUE_DIR = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "glue"
)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "it", "ran", "far"]
CLS_ID, SEP_ID = 2, 3
SEQUENCE_LENGTH = 24
BUCKETS = (8, 16, 64)
# `bucket_lengths(SEQUENCE_LENGTH, BUCKETS)`.
LENGTHS = (8, 16, 24)
BATCH_SIZE = 4
NUM_EXAMPLES = 30


# Tasks.


def test_tasks():
    glue = {"sst2", "cola", "rte", "mrpc", "stsb", "qnli", "qqp", "mnli"}
    assert set(data.TASKS) == glue | {"cb", "wic", "boolq", "squad"}
    for name, spec in data.TASKS.items():
        assert spec.name == name
        assert name in spec.tfds_name.split("/")
        assert tuple(spec.regimes) == data.REGIMES
        low, medium, high, full = spec.regimes.values()
        assert 0 < low < medium < high and full is None
        assert spec.features and spec.metrics
        assert spec.is_regression == (name == "stsb")
        assert spec.is_generation == (name == "squad")


def test_paper_settings():
    rte = data.get_task("rte")
    assert rte.features == ("sentence1", "sentence2")
    assert rte.regimes == dict(low=300, medium=900, high=1200, full=None)
    assert data.get_task("cola").main_metric == "mcc"
    assert data.get_task("mrpc").metrics == ("f1", "accuracy")
    assert data.get_task("stsb").num_classes == 1
    assert data.get_task("mnli").dev_split == "validation_matched"
    assert data.get_task("mnli").num_classes == 3
    assert data.get_task("cb").tfds_name == "super_glue/cb"
    assert data.get_task("boolq").features == ("question", "passage")


def test_get_task():
    spec = data.get_task("SST2")
    assert spec is data.TASKS["sst2"]
    assert data.get_task(spec) is spec
    with pytest.raises(DataError, match="Unknown task: 'sst'.*sst2, cola"):
        data.get_task("sst")


# TSV reader on the real GLUE files.


def test_read_real_sst2_dev():
    dev = data.load_split("sst2", "dev", data_dir=GLUE_DIR)
    assert len(dev) == 872
    assert list(dev.features) == ["sentence"]
    assert dev.features["sentence"][0].startswith("it 's a charming")
    assert dev.labels.dtype == np.int32
    assert set(dev.labels) == {0, 1}


def test_read_real_rte():
    dev = data.load_split("rte", "dev", data_dir=GLUE_DIR)
    assert len(dev) == 277
    assert list(dev.features) == ["sentence1", "sentence2"]
    assert set(dev.labels) == {0, 1}
    # Quotes are text, not CSV quoting.
    assert any('"' in text for text in dev.features["sentence1"])
    train = data.load_split("rte", "train", data_dir=GLUE_DIR)
    assert len(train) == 2490


def test_read_real_stsb_dev():
    dev = data.load_split("stsb", "dev", data_dir=GLUE_DIR)
    assert len(dev) == 1500
    assert dev.labels.dtype == np.float32
    assert 0.0 <= dev.labels.min() and dev.labels.max() <= 5.0
    assert np.any(dev.labels != np.round(dev.labels))


def test_training_subset_of_real_cola():
    train = data.load_split("cola", "train", data_dir=GLUE_DIR)
    low = data.training_subset("cola", train, "low", seed=0)
    assert len(low) == 1710
    assert data.training_subset("cola", train, "full", seed=0) is train
    paper = data.training_subset("cola", train, "low", seed=0, draw="paper")
    assert len(paper) == 1710
    assert set(paper.features["sentence"]) != set(low.features["sentence"])
    with pytest.raises(DataError, match="'tiny'.*low, medium, high, full"):
        data.training_subset("cola", train, "tiny", seed=0)


# TSV reader on malformed files.


def _write(directory, task, split, text):
    os.makedirs(directory / task, exist_ok=True)
    path = directory / task / f"{split}.tsv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_read_tsv_columns_by_name(tmp_path):
    # Extra columns are ignored and columns may come in any order; a quote
    # opens no quoted field, and a trailing blank line is no example.
    rows = [
        ["idx", "label", "sentence2", "sentence1"],
        ["0", "1", 'b "quoted', "a"],
        ["1", "0", "d", "c"],
    ]
    text = "".join("\t".join(row) + "\n" for row in rows) + "\n"
    _write(tmp_path, "rte", "train", text)
    train = data.load_split("rte", "train", data_dir=str(tmp_path))
    assert list(train.features) == ["sentence1", "sentence2"]
    np.testing.assert_array_equal(train.features["sentence1"], ["a", "c"])
    np.testing.assert_array_equal(
        train.features["sentence2"], ['b "quoted', "d"]
    )
    np.testing.assert_array_equal(train.labels, [1, 0])


def test_empty_texts_are_read_with_a_warning(tmp_path):
    rows = ["sentence1\tsentence2\tlabel", "a\tb\t0", " \tb\t1", "c\t\t0"]
    _write(tmp_path, "rte", "train", "\n".join(rows) + "\n")
    with pytest.warns(UserWarning) as record:
        train = data.load_split("rte", "train", data_dir=str(tmp_path))
    assert len(record) == 1
    assert str(record[0].message) == (
        f"2 example(s) of '{tmp_path / 'rte' / 'train.tsv'}' have an empty "
        "'sentence1' or 'sentence2' (line(s) 3, 4): the model reads them as "
        "its own tokens alone."
    )
    np.testing.assert_array_equal(train.features["sentence1"], ["a", " ", "c"])
    np.testing.assert_array_equal(train.labels, [0, 1, 0])
    # More than five are named by their first five lines.
    _write(tmp_path, "sst2", "dev", "sentence\tlabel\n" + "\t1\n" * 7)
    first_five = r"\(line\(s\) 2, 3, 4, 5, 6, \.\.\.\)"
    with pytest.warns(UserWarning, match="^7 .*" + first_five):
        data.load_split("sst2", "dev", data_dir=str(tmp_path))


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.load_split("rte", "dev", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="rte"):
        data.load_split("rte", "dev", data_dir=str(tmp_path))
    _write(tmp_path, "rte", "train", "sentence1\tsentence2\tlabel\na\tb\t0\n")
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        data.load_split("rte", "dev", data_dir=str(tmp_path))


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="'test'.*train, dev"):
        data.load_split("rte", "test", data_dir=str(tmp_path))


@pytest.mark.parametrize(
    "task, text, expected",
    [
        ("sst2", "", "is empty"),
        ("sst2", "sentence\tlabel\n", "header but no examples"),
        (
            "rte",
            "sentence1\tlabel\na\t1\n",
            r"\['sentence2'\].*Expected columns: \['sentence1', 'sentence2', "
            r"'label'\]; found: \['sentence1', 'label'\]",
        ),
        ("sst2", "sentence\tlabel\na\t1\nb\tc\t0\n", "Line 3 .* 3 .* has 2"),
        ("sst2", "sentence\tlabel\na\t1\nb\n", "Line 3 .* 1 "),
        ("sst2", "sentence\tlabel\na\t1\nb\t2\n", "'2' on line 3.*0 to 1"),
        ("mnli", "premise\thypothesis\tlabel\na\tb\t-1\n", "'-1' on line 2"),
        ("cola", "sentence\tlabel\na\t1.0\n", "'1.0' on line 2"),
        ("stsb", "sentence1\tsentence2\tlabel\na\tb\tfive\n", "'five' on"),
        ("stsb", "sentence1\tsentence2\tlabel\na\tb\tnan\n", "from 0 to 5"),
        ("stsb", "sentence1\tsentence2\tlabel\na\tb\tinf\n", "'inf' on line"),
        ("stsb", "sentence1\tsentence2\tlabel\na\tb\t-inf\n", "from 0 to 5"),
        # STS-B scores run from 0 to 5, which its siamese head spans.
        (
            "stsb",
            "sentence1\tsentence2\tlabel\na\tb\t5.0\na\tb\t5.5\n",
            "'5.5' on line 3 .* expects a score from 0 to 5",
        ),
        ("stsb", "sentence1\tsentence2\tlabel\na\tb\t-0.1\n", "'-0.1' on"),
        ("sst2", "\n\r\n\n", "is empty: it has no header line"),
        ("sst2", "sentence\tlabel\r\n\r\n", "header but no examples"),
        ("sst2", "sentence\tlabel\na\t\n", "Invalid label '' on line 2"),
        (
            "sst2",
            "sentence\tlabel\tsentence\na\t1\tb\n",
            r"names the column\(s\) \['sentence'\] more than once",
        ),
        (
            "sst2",
            "idx\tsentence\tidx\tlabel\tlabel\n0\ta\t0\t1\t1\n",
            r"names the column\(s\) \['idx', 'label'\] more than once",
        ),
        (
            "sst2",
            "sentence\tlabel\ra\t1\rb\t0\r",
            r"Line 1 .* holds a carriage return \(\\r\) inside the line",
        ),
        ("sst2", "sentence\tlabel\na\rb\t1\n", "Line 2 .* carriage return"),
    ],
)
def test_malformed_tsv(tmp_path, task, text, expected):
    path = _write(tmp_path, task, "train", text)
    with pytest.raises(DataError, match=expected) as error:
        data.load_split(task, "train", data_dir=str(tmp_path))
    assert path in str(error.value)


def _write_bytes(directory, task, split, data):
    os.makedirs(directory / task, exist_ok=True)
    path = directory / task / f"{split}.tsv"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_bom_line_endings_and_blank_lines(tmp_path, bom, newline):
    text = "caf\u00e9 \u2014 ok"
    lines = [b"sentence\tlabel", f"{text}\t1".encode(), b"", b"b\t0", b""]
    # The header first, then after a blank line.
    for start in (bom, bom + newline):
        _write_bytes(tmp_path, "sst2", "train", start + newline.join(lines))
        train = data.load_split("sst2", "train", data_dir=str(tmp_path))
        np.testing.assert_array_equal(train.features["sentence"], [text, "b"])
        np.testing.assert_array_equal(train.labels, [1, 0])


@pytest.mark.parametrize(
    "data_bytes, line, byte",
    [
        (b"sentence\tlabel\na\t1\nb\xff\t0\n", 3, "0xff at byte 2"),
        (b"sen\xe9tence\tlabel\na\t1\n", 1, "0xe9 at byte 4"),
        # Latin-1, on a last line without a line break.
        (b"sentence\tlabel\na\t1\ncaf\xe9\t0", 3, "0xe9 at byte 4"),
        # UTF-16, as some spreadsheets save "Unicode text".
        ("sentence\tlabel\n".encode("utf-16"), 1, "0xff at byte 1"),
    ],
)
def test_invalid_utf8_names_file_and_line(tmp_path, data_bytes, line, byte):
    path = _write_bytes(tmp_path, "sst2", "train", data_bytes)
    with pytest.raises(DataError) as error:
        data.load_split("sst2", "train", data_dir=str(tmp_path))
    assert str(error.value) == (
        f"Line {line} of '{path}' is not valid UTF-8 (byte {byte} of the "
        "line). Save the file as UTF-8."
    )


def test_long_fields(tmp_path, monkeypatch):
    limit = csv.field_size_limit()
    # Longer than the csv module's default limit of 131,072 characters.
    text = "word " * 40_000
    path = _write(tmp_path, "sst2", "train", f"sentence\tlabel\n{text}\t1\n")
    train = data.load_split("sst2", "train", data_dir=str(tmp_path))
    assert train.features["sentence"][0] == text
    assert readers.MAX_FIELD_SIZE == 16 * 1024 * 1024
    assert csv.field_size_limit() == limit

    monkeypatch.setattr(readers, "MAX_FIELD_SIZE", 1000)
    rows = f"sentence\tlabel\n{'a' * 1000}\t1\n{'b' * 1001}\t0\n"
    _write(tmp_path, "sst2", "train", rows)
    with pytest.raises(DataError) as error:
        data.load_split("sst2", "train", data_dir=str(tmp_path))
    assert str(error.value) == (
        f"Line 3 of '{path}' cannot be read as tab-separated fields: field "
        "larger than field limit (1000)."
    )
    assert csv.field_size_limit() == limit


def test_unlabelled_file(tmp_path):
    path = _write(tmp_path, "rte", "test", "sentence2\tsentence1\nb\ta\n")
    examples, has_labels = data.read_tsv("rte", path, labelled=False)
    assert not has_labels
    np.testing.assert_array_equal(examples.features["sentence1"], ["a"])
    np.testing.assert_array_equal(examples.labels, [0])
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['label'\]"):
        data.read_tsv("rte", path)
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        data.read_tsv("rte", str(tmp_path / "missing.tsv"))


# TFDS reader.


def _fake_tfds(monkeypatch, load):
    module = types.ModuleType("tensorflow_datasets")
    module.load = load
    module.as_numpy = lambda dataset: dataset
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)


def test_load_from_tfds(monkeypatch):
    calls = []

    def load(name, split, batch_size):
        calls.append((name, split, batch_size))
        return {
            "premise": np.array([b"caf\xc3\xa9", b"b"], dtype=object),
            "hypothesis": np.array([b"c", b"d"], dtype=object),
            "label": np.array([2, 0], dtype="int64"),
            "idx": np.array([0, 1]),
        }

    _fake_tfds(monkeypatch, load)
    dev = data.load_split("mnli", "dev")
    assert calls == [("glue/mnli", "validation_matched", -1)]
    assert list(dev.features) == ["premise", "hypothesis"]
    np.testing.assert_array_equal(dev.features["premise"], ["café", "b"])
    np.testing.assert_array_equal(dev.labels, [2, 0])
    assert dev.labels.dtype == np.int32
    data.load_split("cb", "train")
    assert calls[-1] == ("super_glue/cb", "train", -1)


def test_squad_from_tfds_and_tsv(monkeypatch, tmp_path):
    def load(name, split, batch_size):
        return {
            "title": np.array([b"T1", b"T2"], dtype=object),
            "context": np.array([b"c1", b"c2"], dtype=object),
            "question": np.array([b"q1", b"q2"], dtype=object),
            # Ragged: a different number of reference answers per example.
            "answers": {"text": tf.ragged.constant([[b"a", b"an a"], [b"b"]])},
        }

    _fake_tfds(monkeypatch, load)
    dev = data.load_split("squad", "dev")
    assert list(dev.labels) == [("a", "an a"), ("b",)]
    np.testing.assert_array_equal(dev.features["question"], ["q1", "q2"])

    os.makedirs(tmp_path / "squad")
    rows = ["title\tcontext\tquestion\tlabel",
            't\tc\tq\t["Denver Broncos", "Broncos"]', 't\tc\tq\t["x"]']
    (tmp_path / "squad" / "train.tsv").write_text("\n".join(rows) + "\n")
    train = data.load_split("squad", "train", str(tmp_path))
    assert list(train.labels) == [("Denver Broncos", "Broncos"), ("x",)]
    rows[2] = "t\tc\tq\tx"
    (tmp_path / "squad" / "train.tsv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="Invalid label 'x' on line 3"):
        data.load_split("squad", "train", str(tmp_path))


def test_tfds_failure_suggests_data_dir(monkeypatch):
    def load(name, split, batch_size):
        raise ConnectionError("no internet")

    _fake_tfds(monkeypatch, load)
    with pytest.raises(DataError, match="TFDS could not load 'glue/rte'") as e:
        data.load_split("rte", "train")
    assert "no internet" in str(e.value) and "--data-dir" in str(e.value)


# Subsets.


def _examples(num_examples, seed=0):
    """Examples whose label is their index, of 1 to 30 random words."""
    rng = np.random.default_rng(seed)
    texts = [
        " ".join(rng.choice(WORDS, rng.integers(1, 31)))
        for _ in range(num_examples)
    ]
    return Examples(
        {"sentence": np.array(texts, dtype=object)},
        np.arange(num_examples, dtype="int32"),
    )


def test_subsample():
    examples = _examples(20)
    subset = data.subsample(examples, 8, seed=3)
    assert len(subset) == 8
    assert len(set(subset.labels)) == 8
    for index, text in zip(subset.labels, subset.features["sentence"]):
        assert text == examples.features["sentence"][index]
    again = data.subsample(examples, 8, seed=3)
    np.testing.assert_array_equal(subset.labels, again.labels)
    other = data.subsample(examples, 8, seed=4)
    assert set(subset.labels) != set(other.labels)
    assert data.subsample(examples, None, seed=0) is examples
    assert data.subsample(examples, 20, seed=0) is examples
    assert data.subsample(examples, 50, seed=0) is examples
    with pytest.raises(DataError, match="size=0"):
        data.subsample(examples, 0, seed=0)
    with pytest.raises(DataError, match="Unknown draw: 'sorted'"):
        data.subsample(examples, 8, seed=0, draw="sorted")


def test_paper_draw_is_the_authors_permutation():
    """The BEFT authors' code: `np.random.seed(seed)`, then the first
    `size` of `np.random.permutation(len(train))`."""
    examples = _examples(20)
    for seed in (0, 1):
        np.random.seed(seed)
        expected = np.random.permutation(20)[:8]
        subset = data.subsample(examples, 8, seed=seed, draw="paper")
        np.testing.assert_array_equal(subset.labels, np.sort(expected))
    assert data.subsample(examples, 20, seed=0, draw="paper") is examples


def test_examples_must_line_up():
    with pytest.raises(DataError, match=r"labels of shape \(3,\)"):
        Examples({"sentence": np.array(["a", "b"])}, np.zeros(3))


def test_examples_convert_lists():
    examples = Examples(
        {"sentence1": ["a", "b", "c"], "sentence2": np.array(["d", "e", "f"])},
        [0, 1, 2],
    )
    for texts in examples.features.values():
        assert isinstance(texts, np.ndarray) and texts.dtype == object
    assert isinstance(examples.labels, np.ndarray)
    np.testing.assert_array_equal(examples.labels, [0, 1, 2])
    # Labels are indices: each subset text is the one at its label.
    subset = data.subsample(examples, 2, seed=0)
    assert len(subset) == 2
    np.testing.assert_array_equal(
        subset.features["sentence1"], np.array(["a", "b", "c"])[subset.labels]
    )
    np.testing.assert_array_equal(
        subset.features["sentence2"], np.array(["d", "e", "f"])[subset.labels]
    )


@pytest.mark.parametrize(
    "features, labels, expected",
    [
        (["a", "b"], [0, 1], "non-empty dict.*features of type list"),
        ({}, [], "non-empty dict.*features of type dict"),
        ({"sentence": [1, 2]}, [0, 1], r"features\['sentence'\].*int$"),
        (
            {"sentence": [["a"], ["b"]]},
            [0, 1],
            r"1-D .*features\['sentence'\] of shape \(2, 1\)",
        ),
        (
            {"sentence1": ["a", "b"], "sentence2": ["c"]},
            [0, 1],
            r"as many texts.*\{'sentence1': 2, 'sentence2': 1\}",
        ),
        ({"sentence": ["a", "b"]}, [0], r"labels of shape \(1,\)"),
        ({"sentence": ["a", "b"]}, [[0], [1]], r"labels of shape \(2, 1\)"),
        ({"sentence": ["a", "b"]}, [("x",), ("y", "z")], "shape ragged"),
    ],
)
def test_examples_are_checked(features, labels, expected):
    with pytest.raises(DataError, match=expected):
        Examples(features, labels)


# Batching.


@pytest.fixture(scope="module")
def preprocessor():
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=SPECIAL_TOKENS + WORDS
    )
    return keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=512
    )


@pytest.fixture(scope="module")
def examples():
    return _examples(NUM_EXAMPLES)


@pytest.fixture(scope="module")
def dataset(examples, preprocessor):
    """The examples, unshuffled, in `LENGTHS` buckets."""
    return data.make_dataset(
        examples, preprocessor, BATCH_SIZE, SEQUENCE_LENGTH, buckets=BUCKETS
    )


def _true_lengths(examples):
    """Each example's length with [CLS] and [SEP], before truncation."""
    return np.array(
        [len(text.split()) + 2 for text in examples.features["sentence"]]
    )


def _epoch(dataset):
    return list(dataset.as_numpy_iterator())


def test_bucket_lengths():
    assert data.bucket_lengths(128) == (16, 32, 64, 128)
    assert data.bucket_lengths(48) == (16, 32, 48)
    assert data.bucket_lengths(200) == (16, 32, 64, 128, 200)
    assert data.bucket_lengths(10) == (10,)
    assert data.bucket_lengths(SEQUENCE_LENGTH, BUCKETS) == LENGTHS
    assert data.bucket_lengths(20, (8, 4, 8)) == (4, 8, 20)
    assert data.bucket_lengths(20, ()) == (20,)
    with pytest.raises(DataError, match="sequence_length=0"):
        data.bucket_lengths(0)
    with pytest.raises(DataError, match=r"buckets=\(8, -4\)"):
        data.bucket_lengths(20, (8, -4))


def test_batches_are_bucketed_and_truncated(examples, preprocessor, dataset):
    true_lengths = _true_lengths(examples)
    assert true_lengths.max() > SEQUENCE_LENGTH
    batches = _epoch(dataset)
    assert len(batches) == int(dataset.cardinality())
    for features, labels in batches:
        assert len(labels) <= BATCH_SIZE
        length = features["token_ids"].shape[1]
        assert length in LENGTHS
        for name in ("token_ids", "segment_ids", "padding_mask"):
            assert features[name].shape == (len(labels), length)
        lengths = features["padding_mask"].sum(axis=1)
        expected = np.minimum(true_lengths[labels], SEQUENCE_LENGTH)
        np.testing.assert_array_equal(lengths, expected)
        # The smallest bucket that fits the batch's longest example.
        assert length == min(b for b in LENGTHS if b >= lengths.max())
        # Truncation keeps [CLS] first and [SEP] last.
        rows = np.arange(len(labels))
        np.testing.assert_array_equal(features["token_ids"][:, 0], CLS_ID)
        np.testing.assert_array_equal(
            features["token_ids"][rows, lengths - 1], SEP_ID
        )
    all_lengths = [b[0]["token_ids"].shape[1] for b in batches]
    assert set(all_lengths) == set(LENGTHS)
    # The preprocessor is left as it was.
    assert preprocessor.sequence_length == 512


def test_unshuffled_epochs_are_fixed(dataset):
    first = [labels for _, labels in _epoch(dataset)]
    second = [labels for _, labels in _epoch(dataset)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))
    np.testing.assert_array_equal(
        np.sort(np.concatenate(first)), np.arange(NUM_EXAMPLES)
    )
    # Within a bucket, examples keep their order.
    for labels in first:
        assert np.all(np.diff(labels) > 0)


def test_shuffled_epochs_are_seeded(examples, preprocessor):
    def epochs(seed):
        dataset = data.make_dataset(
            examples,
            preprocessor,
            BATCH_SIZE,
            SEQUENCE_LENGTH,
            shuffle=True,
            seed=seed,
            buckets=BUCKETS,
        )
        return [
            np.concatenate([labels for _, labels in _epoch(dataset)])
            for _ in range(2)
        ]

    first, second = epochs(seed=7)
    for epoch in (first, second):
        np.testing.assert_array_equal(np.sort(epoch), np.arange(NUM_EXAMPLES))
    assert not np.array_equal(first, second)
    again_first, again_second = epochs(seed=7)
    np.testing.assert_array_equal(first, again_first)
    np.testing.assert_array_equal(second, again_second)
    assert not np.array_equal(first, epochs(seed=8)[0])


def _bucket_of(lengths):
    """The smallest of `LENGTHS` that fits each length."""
    return np.array([min(b for b in LENGTHS if b >= n) for n in lengths])


def test_mixed_batches_follow_the_examples(examples, preprocessor):
    dataset = data.make_dataset(
        examples, preprocessor, BATCH_SIZE, SEQUENCE_LENGTH, buckets=BUCKETS,
        batching="mixed",
    )
    batches = _epoch(dataset)
    # ceil(30 / 4): cut in the examples' order, the last batch short.
    assert len(batches) == int(dataset.cardinality()) == 8
    np.testing.assert_array_equal(
        np.concatenate([labels for _, labels in batches]),
        np.arange(NUM_EXAMPLES),
    )
    lengths = np.minimum(_true_lengths(examples), SEQUENCE_LENGTH)
    for features, labels in batches:
        np.testing.assert_array_equal(
            features["padding_mask"].sum(1), lengths[labels]
        )
        # Padded to the bucket of its longest example, not of each one.
        assert features["token_ids"].shape[1] == _bucket_of(
            [lengths[labels].max()]
        )[0]
    # Unlike bucketed batches, some mix examples of different buckets.
    assert any(
        len(set(_bucket_of(lengths[labels]))) > 1 for _, labels in batches
    )


def test_shuffled_mixed_epochs_hold_every_example_once(examples, preprocessor):
    def epochs(seed):
        dataset = data.make_dataset(
            examples, preprocessor, BATCH_SIZE, SEQUENCE_LENGTH,
            shuffle=True, seed=seed, buckets=BUCKETS, batching="mixed",
        )
        return [[labels for _, labels in _epoch(dataset)] for _ in range(2)]

    first, second = epochs(seed=7)
    for epoch in (first, second):
        assert [len(labels) for labels in epoch] == [4] * 7 + [2]
        np.testing.assert_array_equal(
            np.sort(np.concatenate(epoch)), np.arange(NUM_EXAMPLES)
        )
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    again = epochs(seed=7)
    for epoch, repeated in zip((first, second), again):
        np.testing.assert_array_equal(
            np.concatenate(epoch), np.concatenate(repeated)
        )


@pytest.mark.parametrize("batching", ["bucketed", "mixed"])
def test_batch_multiple_trims_only_remainders(batching):
    # Lengths 2..13 in buckets 4, 8, 16 hold 3, 4 and 5 examples.
    lengths = np.arange(2, 14)
    mask = np.arange(16)[None, :] < lengths[:, None]
    features = {"token_ids": mask.astype("int32"), "padding_mask": mask}
    dataset = data.batch_arrays(
        features, np.arange(12), batch_size=4, sequence_length=16,
        shuffle=True, buckets=(4, 8), batch_multiple=2, batching=batching,
    )
    sizes = {
        # Per bucket: 3 -> 2, its remainder moving up: 1 + 4 -> 4, 1 + 5
        # -> 4 + 2. (Dropped, a bucket smaller than the multiple would
        # never train.)
        "bucketed": [2, 4, 4, 2],
        # 12 examples in batches of 4.
        "mixed": [4, 4, 4],
    }[batching]
    for _ in range(2):
        batches = _epoch(dataset)
        assert len(batches) == int(dataset.cardinality()) == len(sizes)
        assert sorted(len(labels) for _, labels in batches) == sorted(sizes)
        seen = np.concatenate([labels for _, labels in batches])
        assert len(set(seen)) == len(seen) == sum(sizes)


def test_batching_must_be_known(preprocessor):
    with pytest.raises(DataError, match="batching='random'"):
        data.make_dataset(_examples(4), preprocessor, 2, batching="random")
    mask = np.ones((2, 4), dtype=bool)
    with pytest.raises(DataError, match=r"\['bucketed', 'mixed'\]"):
        data.batch_arrays({"padding_mask": mask}, np.zeros(2), 2,
                          batching="by_length")


def test_sentence_pairs(preprocessor):
    examples = Examples(
        {
            "sentence1": np.array(["the cat sat", "a dog"], dtype=object),
            "sentence2": np.array(["on the mat", "ran"], dtype=object),
        },
        np.array([0.5, 4.0], dtype="float32"),
    )
    dataset = data.make_dataset(examples, preprocessor, batch_size=8)
    ((features, labels),) = _epoch(dataset)
    assert features["token_ids"].shape == (2, 16)
    np.testing.assert_array_equal(features["padding_mask"].sum(1), [9, 6])
    np.testing.assert_array_equal(
        features["segment_ids"][1, :6], [0, 0, 0, 0, 1, 1]
    )
    np.testing.assert_allclose(labels, [0.5, 4.0])
    assert labels.dtype == np.float32


def test_padding_efficiency(examples, preprocessor, dataset):
    real = np.minimum(_true_lengths(examples), SEQUENCE_LENGTH).sum()
    total = sum(f["token_ids"].size for f, _ in _epoch(dataset))
    efficiency = data.padding_efficiency(dataset)
    assert efficiency == pytest.approx(real / total)
    unbucketed = data.make_dataset(
        examples, preprocessor, BATCH_SIZE, SEQUENCE_LENGTH, buckets=()
    )
    assert data.padding_efficiency(unbucketed) == pytest.approx(
        real / (NUM_EXAMPLES * SEQUENCE_LENGTH)
    )
    assert efficiency > data.padding_efficiency(unbucketed)


def test_make_dataset_checks_arguments(preprocessor):
    examples = _examples(4)
    with pytest.raises(DataError, match="batch_size=0"):
        data.make_dataset(examples, preprocessor, batch_size=0)
    with pytest.raises(DataError, match="empty"):
        data.make_dataset(_examples(0), preprocessor, batch_size=2)
    pair = (examples.features["sentence"], examples.labels)
    with pytest.raises(
        DataError, match=r"`examples` .*beft_keras\.data\.Examples.*tuple$"
    ):
        data.make_dataset(pair, preprocessor, batch_size=2)
    with pytest.raises(DataError, match="examples of type tuple"):
        data.tokenize(pair, preprocessor)
    # Neither a `sequence_length` nor a preprocessor's own to default to.
    lengthless = types.SimpleNamespace(sequence_length=None)
    for make in (data.make_dataset, data.tokenize):
        args = (2,) if make is data.make_dataset else ()
        with pytest.raises(DataError, match="sequence_length=None$"):
            make(examples, lengthless, *args)
        with pytest.raises(DataError, match="sequence_length=0$"):
            make(examples, preprocessor, *args, sequence_length=0)


def test_length_defaults_to_the_preprocessors(preprocessor):
    """A model of 32 positions fits on its preprocessor's batches."""
    short_preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        preprocessor.tokenizer, sequence_length=32
    )
    # 42, 12, 5 and 62 tokens with [CLS] and [SEP].
    texts = [" ".join(WORDS * 4), "the cat " * 5, "a dog ran", "it " * 60]
    examples = Examples({"sentence": texts}, [0, 1, 0, 1])
    features = data.tokenize(examples, short_preprocessor)
    assert features["token_ids"].shape == (4, 32)
    np.testing.assert_array_equal(
        features["padding_mask"].sum(1), [32, 12, 5, 32]
    )
    dataset = data.make_dataset(examples, short_preprocessor, 2)
    batches = _epoch(dataset)
    # Buckets 16 and 32: the longest examples truncated to 32, not 64.
    assert [f["token_ids"].shape for f, _ in batches] == [(2, 16), (2, 32)]
    assert [list(labels) for _, labels in batches] == [[1, 0], [0, 1]]
    for features, _ in batches:
        np.testing.assert_array_equal(
            features["padding_mask"].sum(1),
            [12, 5] if features["token_ids"].shape[1] == 16 else [32, 32],
        )
    assert short_preprocessor.sequence_length == 32
    # A given length still wins.
    explicit = data.make_dataset(examples, short_preprocessor, 4, 16)
    ((features, _),) = _epoch(explicit)
    np.testing.assert_array_equal(
        features["padding_mask"].sum(1), [16, 12, 5, 16]
    )

    # A model of 32 positions, as the preprocessor's.
    history = _small_model(positions=32).fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def _small_model(positions=None):
    """A small functional model on the same inputs as a BERT classifier,
    with a position embedding of `positions` if given."""
    inputs = {
        "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
        "segment_ids": keras.Input((None,), dtype="int32", name="segment_ids"),
        "padding_mask": keras.Input((None,), dtype="bool", name="padding_mask"),
    }
    embedded = keras.layers.Embedding(len(SPECIAL_TOKENS + WORDS), 4)(
        inputs["token_ids"]
    )
    if positions is not None:
        embedded = embedded + keras_hub.layers.PositionEmbedding(positions)(
            embedded
        )
    pooled = keras.layers.GlobalAveragePooling1D()(
        embedded, mask=inputs["padding_mask"]
    )
    model = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def test_fit_on_buckets(preprocessor):
    # Two full batches of different lengths: 8 and 16 (JAX compiles a
    # train step per shape).
    short = ["the cat", "a dog", "it ran", "the mat"]
    long = [" ".join(WORDS[: 7 + i]) for i in range(4)]
    examples = Examples(
        {"sentence": np.array(short + long, dtype=object)},
        np.array([0, 1] * 4, dtype="int32"),
    )
    dataset = data.make_dataset(
        examples,
        preprocessor,
        batch_size=4,
        sequence_length=16,
        shuffle=True,
        buckets=(8,),
    )
    assert [f["token_ids"].shape[1] for f, _ in _epoch(dataset)] in (
        [8, 16],
        [16, 8],
    )
    history = _small_model().fit(dataset, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.all(np.isfinite(history.history["loss"]))


def test_batch_arrays_trims_per_token_targets():
    # Lengths 3, 5, 9: buckets 4, 8, 12; targets and weights per token.
    lengths = np.array([3, 9, 5])
    mask = np.arange(12)[None, :] < lengths[:, None]
    token_ids = np.where(mask, np.arange(1, 13)[None, :], 0).astype("int32")
    features = {"token_ids": token_ids, "padding_mask": mask}
    weights = mask.astype("float32")
    dataset = data.batch_arrays(
        features, token_ids + 100, batch_size=2, sequence_length=12,
        buckets=(4, 8), sample_weight=weights,
    )
    batches = list(dataset.as_numpy_iterator())
    assert [b[0]["token_ids"].shape for b in batches] == [(1, 4), (1, 8), (1, 12)]
    for x, y, w in batches:
        assert y.shape == w.shape == x["token_ids"].shape
        np.testing.assert_array_equal(y, x["token_ids"] + 100)
        np.testing.assert_array_equal(w, x["padding_mask"])
    with pytest.raises(DataError, match="no 'padding_mask'"):
        data.batch_arrays({"token_ids": token_ids}, token_ids, 2)


def _masked(lengths, width):
    """Features of examples of `lengths` tokens, padded to `width`."""
    mask = np.arange(width)[None, :] < np.asarray(lengths)[:, None]
    return {"token_ids": mask.astype("int32"), "padding_mask": mask}


def test_batch_arrays_length_defaults_to_the_features_width():
    features = _masked([3, 150, 20], 200)
    dataset = data.batch_arrays(features, np.arange(3), batch_size=2)
    batches = _epoch(dataset)
    # Buckets 16, 32, 64, 128 and the width, 200; none is dropped.
    assert [f["token_ids"].shape for f, _ in batches] == [
        (1, 16), (1, 32), (1, 200)
    ]
    assert [int(labels[0]) for _, labels in batches] == [0, 2, 1]
    narrower = data.batch_arrays(
        _masked([3, 9], 12), np.arange(2), batch_size=2, buckets=(4,)
    )
    assert [f["token_ids"].shape for f, _ in _epoch(narrower)] == [
        (1, 4), (1, 12)
    ]
    with pytest.raises(DataError, match=r"width of `features`, 200\. "
                       r"Received: sequence_length=256$"):
        data.batch_arrays(features, np.arange(3), 2, sequence_length=256)
    with pytest.raises(DataError, match=r"longest example of `features`, 150 "
                       r"tokens\. Received: sequence_length=128$"):
        data.batch_arrays(features, np.arange(3), 2, sequence_length=128)


def test_batch_arrays_checks_target_lengths():
    features = _masked([3, 5, 9, 2], 12)
    labels = np.arange(4)
    with pytest.raises(DataError, match=r"`labels` .* 4\. "
                       r"Received: len\(labels\)=3$"):
        data.batch_arrays(features, labels[:3], 4)
    with pytest.raises(DataError, match=r"Received: len\(sample_weight\)=5$"):
        data.batch_arrays(features, labels, 4, sample_weight=np.ones(5))


def test_a_regime_larger_than_the_set_trains_it_whole_with_a_warning():
    examples = _examples(5)
    with pytest.warns(UserWarning, match=(
        r"^The medium regime of 'sst2' trains on 5000 examples, but the "
        r"training set holds 5: all of them train\.$"
    )):
        subset = data.training_subset("sst2", examples, "medium", seed=0)
    assert len(subset) == 5
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data.training_subset("sst2", examples, "full", seed=0)
    assert not [w for w in record if "regime" in str(w.message)]


@pytest.mark.parametrize("placeholder", ["-1", ""])
def test_a_test_splits_placeholder_labels_are_no_labels(tmp_path, placeholder):
    rows = ["premise\thypothesis\tlabel", f"a\tb\t{placeholder}",
            f"c\td\t{placeholder}"]
    path = _write(tmp_path, "mnli", "test", "\n".join(rows) + "\n")
    examples, has_labels = data.read_tsv("mnli", path, labelled=False)
    assert not has_labels
    np.testing.assert_array_equal(examples.labels, [0, 0])
    np.testing.assert_array_equal(examples.features["premise"], ["a", "c"])
    # Where labels are needed, a placeholder is a bad label; so is one
    # among real labels.
    with pytest.raises(DataError, match="line 2"):
        data.read_tsv("mnli", path)
    mixed = _write(
        tmp_path, "mnli", "mixed",
        "premise\thypothesis\tlabel\na\tb\t1\nc\td\t-1\n",
    )
    with pytest.raises(DataError, match="line 3"):
        data.read_tsv("mnli", mixed, labelled=False)


def test_mnli_missing_dev_file_names_the_split(tmp_path):
    _write(tmp_path, "mnli", "dev_matched", "premise\thypothesis\tlabel\n")
    with pytest.raises(FileNotFoundError, match=(
        r"dev\.tsv' does not exist\. The dev split of 'mnli' is TFDS's "
        r"'validation_matched': save it as dev\.tsv\.$"
    )):
        data.load_split("mnli", "dev", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"dev\.tsv' does not exist\.$"):
        _write(tmp_path, "rte", "train", "sentence1\tsentence2\tlabel\n")
        data.load_split("rte", "dev", data_dir=str(tmp_path))


# Bad inputs a user may pass: each refused where it is passed, naming it.


@pytest.mark.parametrize("seed", [None, -1, 2**32, 1.5, "0"])
def test_subsets_and_batches_check_the_seed(seed, preprocessor):
    """`None` drew another subset on every call; the others failed in
    numpy, or only when tf.data first ran the batches' generator."""
    examples = _examples(4)
    expected = (
        r"^`seed` must be an int from 0 to 2\*\*32 - 1\. "
        rf"Received: seed={re.escape(repr(seed))}$"
    )
    with pytest.raises(DataError, match=expected):
        data.subsample(examples, 2, seed=seed)
    with pytest.raises(DataError, match=expected):
        data.training_subset("sst2", examples, "full", seed=seed)
    with pytest.raises(DataError, match=expected):
        data.batch_arrays(_masked([2, 3], 4), np.arange(2), 2, shuffle=True,
                          seed=seed)
    with pytest.raises(DataError, match=expected):
        data.make_dataset(examples, preprocessor, 2, shuffle=True, seed=seed)


def test_a_bad_draw_is_refused_where_every_example_is_kept():
    examples = _examples(4)
    with pytest.raises(DataError, match="Unknown draw: 'sorted'"):
        data.subsample(examples, None, seed=0, draw="sorted")
    with pytest.raises(DataError, match="Unknown draw: 'sorted'"):
        data.training_subset("sst2", examples, "full", seed=0, draw="sorted")
    assert data.subsample(examples, None, seed=0, draw="paper") is examples


@pytest.mark.parametrize("buckets", [16, None])
def test_buckets_must_be_a_collection(buckets):
    with pytest.raises(DataError, match=(
        rf"^`buckets` must be positive ints\. Received: buckets={buckets}$"
    )):
        data.bucket_lengths(64, buckets)


def test_batch_arrays_checks_the_shapes_of_features():
    features = _masked([2, 3, 4], 8)
    features["token_ids"] = features["token_ids"][:2]
    with pytest.raises(DataError, match=(
        r"one shape, `\(num_examples, sequence_length\)`\. Received: "
        r"'padding_mask' of shape \(3, 8\) and \{'token_ids': \(2, 8\)\}$"
    )):
        data.batch_arrays(features, np.arange(3), 2)
    with pytest.raises(DataError, match=r"'padding_mask' of shape \(3,\)$"):
        data.batch_arrays({"padding_mask": np.ones(3, bool)}, np.arange(3), 2)


def test_batch_arrays_takes_lists_and_refuses_labels_that_are_not_numbers(
    preprocessor,
):
    features = _masked([2, 3], 4)
    ((_, labels),) = _epoch(data.batch_arrays(features, [1, 0], 2))
    np.testing.assert_array_equal(labels, [1, 0])
    with pytest.raises(DataError, match=(
        r"^`labels` must be numbers \(class ids, scores or weights\)\. "
        r"Received: labels of dtype object$"
    )):
        data.batch_arrays(features, np.array(["1", "0"], dtype=object), 2)
    with pytest.raises(DataError, match="sample_weight of dtype <U1$"):
        data.batch_arrays(features, [1, 0], 2, sample_weight=["a", "b"])
    # A generation task's answers, or class names, made no batch: tf.data
    # failed at the first one.
    for labels in (np.array([("x",), ("y", "z")], dtype=object), ["1", "0"]):
        examples = Examples({"sentence": ["the cat", "a dog"]}, labels)
        with pytest.raises(DataError, match="`labels` must be numbers"):
            data.make_dataset(examples, preprocessor, 2)


@pytest.mark.parametrize("batching", ["bucketed", "mixed"])
def test_batch_arrays_refuses_to_drop_every_example(batching):
    with pytest.raises(DataError, match=(
        r"^No batch can be made of 1 example\(s\): fewer than "
        r"`batch_multiple`=2\.$"
    )):
        data.batch_arrays(_masked([2], 8), np.arange(1), 2,
                          buckets=(4,), batch_multiple=2, batching=batching)
    # One example in each of the buckets 4 and 8: one batch of the two.
    dataset = data.batch_arrays(_masked([2, 6], 8), np.arange(2), 2,
                                buckets=(4,), batch_multiple=2,
                                batching=batching)
    (features, labels), = _epoch(dataset)
    assert features["padding_mask"].shape == (2, 8)


def test_padding_efficiency_of_weighted_batches():
    features = _masked([2, 6], 8)
    dataset = data.batch_arrays(features, np.arange(2), 2, buckets=(4,),
                                sample_weight=np.ones(2))
    # Batches of 4 and 8 positions, holding 2 and 6 tokens.
    assert data.padding_efficiency(dataset) == 8 / 12


def test_tokenize_refuses_empty_examples(preprocessor):
    with pytest.raises(DataError, match="`examples` is empty"):
        data.tokenize(_examples(0), preprocessor)


def _spec(**fields):
    return data.TaskSpec(**{
        **dict(name="mytask", features=("text",), num_classes=3,
               metrics=("accuracy",), tfds_name="my/task",
               dev_split="validation", regimes={"low": 1, "full": None}),
        **fields,
    })


def test_a_custom_task_spec(tmp_path):
    _write(tmp_path, "mytask", "train", "label\ttext\n2\ta\n0\tb\n")
    # A list of features is taken as a tuple.
    spec = _spec(features=["text"], metrics=["accuracy", "f1"])
    assert spec.features == ("text",)
    assert spec.metrics == ("accuracy", "f1")
    train = data.load_split(spec, "train", str(tmp_path))
    np.testing.assert_array_equal(train.features["text"], ["a", "b"])
    np.testing.assert_array_equal(train.labels, [2, 0])
    assert len(data.training_subset(spec, train, "low", seed=0)) == 1


@pytest.mark.parametrize("fields, expected", [
    # A str failed as `features + ("label",)`; a repeated feature read
    # one column as one feature, not two.
    (dict(features="text"), r"features='text'$"),
    (dict(features=()), r"features=\(\)$"),
    (dict(features=("a", "a")), r"distinct .* features=\('a', 'a'\)$"),
    (dict(features=("a", 1)), r"features=\('a', 1\)$"),
    (dict(num_classes=-1), r"num_classes=-1$"),
    (dict(num_classes=2.0), r"num_classes=2\.0$"),
    (dict(regimes={"low": 0}), r"regimes\['low'\]=0$"),
    # An empty tuple failed as an IndexError where the main metric is read.
    (dict(metrics=()), r"^`metrics` must be a non-empty .* metrics=\(\)$"),
    (dict(metrics="accuracy"), r"metrics='accuracy'$"),
])
def test_a_custom_task_spec_is_checked(fields, expected):
    with pytest.raises(DataError, match=expected):
        _spec(**fields)


@pytest.mark.parametrize("task, label, expected", [
    ("rte", 2, "2 in TFDS 'glue/rte' split 'train': task 'rte' expects "
     "an integer class id from 0 to 1"),
    # Was cast to 0.
    ("rte", 0.5, "0.5 in TFDS .* integer class id from 0 to 1"),
    ("stsb", 5.5, "5.5 in TFDS 'glue/stsb' .* a score from 0 to 5"),
    ("stsb", float("nan"), "nan in TFDS .* a score from 0 to 5"),
])
def test_tfds_labels_are_checked(monkeypatch, task, label, expected):
    def load(name, split, batch_size):
        return {
            "sentence1": np.array([b"a", b"b"], dtype=object),
            "sentence2": np.array([b"c", b"d"], dtype=object),
            "label": np.array([1, label]),
        }

    _fake_tfds(monkeypatch, load)
    with pytest.raises(DataError, match=f"^Invalid label {expected}\\.$"):
        data.load_split(task, "train")


def test_tfds_features_of_a_custom_spec_are_checked(monkeypatch):
    def load(name, split, batch_size):
        return {"sentence": np.array([b"a"], dtype=object),
                "label": np.array([1])}

    _fake_tfds(monkeypatch, load)
    with pytest.raises(DataError, match=(
        r"^TFDS dataset 'my/task' has no feature\(s\) \['text'\] of task "
        r"'mytask'\. Its features: \['label', 'sentence'\]\.$"
    )):
        data.load_split(_spec(), "dev")


def test_wic_writes_its_target_word_before_the_first_sentence(
    tmp_path, monkeypatch
):
    _write(tmp_path, "wic", "train",
           "idx\tword\tsentence2\tsentence1\tlabel\n"
           "0\tbank\tThe bank closed.\tWe sat by the bank.\t0\n")
    train = data.load_split("wic", "train", str(tmp_path))
    # Every column as read, for a prompt that names the word apart ...
    assert list(train.features) == ["word", "sentence1", "sentence2"]
    assert train.prefix_features == ("word",)
    np.testing.assert_array_equal(
        train.features["sentence1"], ["We sat by the bank."]
    )
    # ... and the two texts an encoder reads, the word before the first.
    first, second = train.segments
    np.testing.assert_array_equal(first, ["bank: We sat by the bank."])
    np.testing.assert_array_equal(second, ["The bank closed."])
    # A subset keeps the prefix.
    assert data.subsample(train, 1, 0).prefix_features == ("word",)
    assert train.take([0]).prefix_features == ("word",)
    # Without the word the pair does not say whose sense to compare.
    _write(tmp_path, "wic", "dev", "sentence1\tsentence2\tlabel\na\tb\t0\n")
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['word'\]"):
        data.load_split("wic", "dev", str(tmp_path))

    def load(name, split, batch_size):
        return {
            "word": np.array([b"run"], dtype=object),
            "sentence1": np.array([b"I run."], dtype=object),
            "sentence2": np.array([b"A run."], dtype=object),
            "label": np.array([1]),
        }

    _fake_tfds(monkeypatch, load)
    dev = data.load_split("wic", "dev")
    np.testing.assert_array_equal(dev.segments[0], ["run: I run."])


def test_an_encoder_reads_the_prefix_before_the_first_feature(preprocessor):
    """`tokenize` gives a keras-hub preprocessor `segments`: two texts,
    the prefix written into the first, as if the user had written them."""
    examples = data.Examples(
        {"k": ["good"], "a": ["the film"], "b": ["was bad"]}, [1],
        prefix_features=("k",),
    )
    expected = preprocessor(x=(tf.constant(["good: the film"]),
                               tf.constant(["was bad"])))
    features = data.tokenize(examples, preprocessor, 16)
    np.testing.assert_array_equal(
        features["token_ids"], keras.ops.convert_to_numpy(
            expected["token_ids"])[:, :16]
    )
    np.testing.assert_array_equal(
        features["segment_ids"], keras.ops.convert_to_numpy(
            expected["segment_ids"])[:, :16]
    )


@pytest.mark.parametrize("prefix", [("a", "b"), ("k", "k"), "k", ("z",),
                                    None, (["a"],)])
def test_examples_refuse_prefixes_that_are_not_some_of_their_features(
    prefix
):
    with pytest.raises(DataError, match=(
        r"^`prefix_features` must be a tuple of distinct features of "
        r"`features`, not all of them\. Received: prefix_features="
    )):
        data.Examples({"a": ["x"], "b": ["y"]}, [0], prefix_features=prefix)


def test_prefix_features_of_a_custom_spec(tmp_path):
    spec = _spec(features=("a", "b"), prefix_features=["k", "j"])
    assert spec.prefix_features == ("k", "j")
    assert spec.columns == ("k", "j", "a", "b")
    _write(tmp_path, "mytask", "train", "a\tb\tj\tk\tlabel\nx\ty\t2\t1\t0\n")
    train = data.load_split(spec, "train", str(tmp_path))
    np.testing.assert_array_equal(train.features["a"], ["x"])
    assert train.prefix_features == ("k", "j")
    first, second = train.segments
    np.testing.assert_array_equal(first, ["1: 2: x"])
    np.testing.assert_array_equal(second, ["y"])
    for prefix in (("a",), ("k", "k"), "k"):
        with pytest.raises(DataError, match=(
            r"^`prefix_features` must be a tuple of distinct feature names, "
            r"none of `features`\. Received: prefix_features="
            + re.escape(repr(prefix)) + "$"
        )):
            _spec(features=("a", "b"), prefix_features=prefix)
