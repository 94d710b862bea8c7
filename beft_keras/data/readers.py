"""Reading a task's train and dev examples, from GLUE-style TSV files or from
TensorFlow Datasets, and taking the paper's training subsets."""

import contextlib
import csv
import dataclasses
import json
import math
import os
import warnings

import numpy as np

from beft_keras import arguments
from beft_keras.data.tasks import DEV
from beft_keras.data.tasks import SPLITS
from beft_keras.data.tasks import TRAIN
from beft_keras.data.tasks import DataError
from beft_keras.data.tasks import get_task

LABEL = "label"
# The longest field, in characters, that a TSV file may hold (16 Mi). The
# csv module's default, 131,072, is too short for a long document in one
# field; a field longer than this is more likely a broken file than a text.
MAX_FIELD_SIZE = 16 * 1024 * 1024
# How a training subset is drawn (see `subsample`): this library's seeded
# generator, or as the BEFT authors' code draws it.
SEEDED = "seeded"
PAPER = "paper"
DRAWS = (SEEDED, PAPER)


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
    """The examples of one split of a task.

    Attributes:
        features: dict. Maps each text feature of the task, in the task's
            order, to a 1-D numpy array of `str`; a list is converted.
        labels: numpy array. Class ids (`int32`) for a classification task,
            scores (`float32`) for a regression task, tuples of answer texts
            (`object`) for a generation task; one per text, and a list is
            converted.
        prefix_features: tuple of str. Features that an encoder reads
            written before the first of the others, `"{prefix}: {first}"`
            (`segments`): WiC's target word. A prompt names them apart.
            Defaults to `()`.

    Raises:
        DataError: if `features` is not a non-empty dict of 1-D columns of
            `str`, its columns and `labels` differ in length, or
            `prefix_features` are not distinct features that leave another.

    Example:
    ```python
    examples = beft_keras.data.Examples(
        {"sentence": np.array(["a fine film", "dull"], dtype=object)},
        np.array([1, 0], dtype="int32"),
    )
    len(examples)  # 2
    ```
    """

    features: dict
    labels: np.ndarray
    prefix_features: tuple = ()

    def __post_init__(self):
        if not isinstance(self.features, dict) or not self.features:
            raise DataError(
                "`features` must be a non-empty dict that maps each text "
                "feature to its texts. Received: "
                f"features of type {type(self.features).__name__}"
            )
        # Lists become arrays here rather than failing deep inside batching
        # or subsetting.
        features = {
            name: np.asarray(texts, dtype=object)
            for name, texts in self.features.items()
        }
        for name, texts in features.items():
            if texts.ndim != 1 or not all(isinstance(t, str) for t in texts):
                raise DataError(
                    "`features` must map each feature to a 1-D column of "
                    f"str. Received: features[{name!r}] of shape "
                    f"{texts.shape} holding {_type_names(texts)}"
                )
        sizes = {name: len(texts) for name, texts in features.items()}
        if len(set(sizes.values())) > 1:
            raise DataError(
                "Every feature of `features` must have as many texts. "
                f"Received texts per feature: {sizes}"
            )
        try:
            labels = np.asarray(self.labels)
        except ValueError:  # Ragged, such as answer tuples of two lengths.
            labels = None
        size = next(iter(sizes.values()))
        if labels is None or labels.ndim != 1 or len(labels) != size:
            shape = "ragged" if labels is None else labels.shape
            raise DataError(
                "`labels` must be 1-D (for a generation task, an object "
                "array of answer tuples), one label per text of `features`. "
                f"Received: labels of shape {shape} and texts per feature: "
                f"{sizes}"
            )
        prefix = self.prefix_features
        if (
            isinstance(prefix, str)
            or not isinstance(prefix, (tuple, list))
            or not all(isinstance(name, str) for name in prefix)
            or len(set(prefix)) != len(prefix)
            or not set(prefix) < set(features)
        ):
            raise DataError(
                "`prefix_features` must be a tuple of distinct features of "
                "`features`, not all of them. Received: prefix_features="
                f"{prefix!r} and features {list(features)}"
            )
        # The dataclass is frozen.
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "prefix_features", tuple(prefix))

    def __len__(self):
        return len(self.labels)

    @property
    def segments(self):
        """The texts an encoder reads: one 1-D array per feature that is
        not a prefix, in order, the prefix features written before the
        first (`"bank: We sat by the bank."`)."""
        names = [n for n in self.features if n not in self.prefix_features]
        segments = [self.features[name] for name in names]
        if self.prefix_features:
            parts = [self.features[n] for n in self.prefix_features]
            segments[0] = np.array(
                [": ".join(texts) for texts in zip(*parts, segments[0])],
                dtype=object,
            )
        return tuple(segments)

    def take(self, indices):
        """The examples at `indices`, in that order."""
        return Examples(
            {name: texts[indices] for name, texts in self.features.items()},
            self.labels[indices],
            self.prefix_features,
        )


def _type_names(values):
    """The sorted names of the types in `values`, e.g. "float, str"."""
    return ", ".join(sorted({type(v).__name__ for v in values.flat}))


def load_split(task, split, data_dir=None):
    """Read the train or dev examples of a task.

    With `data_dir`, reads the GLUE-style TSV file
    `<data_dir>/<task>/<split>.tsv`: UTF-8 (a byte order mark is allowed),
    tab-separated, no quoting, `\n` or `\r\n` line endings, a header row
    that names the task's text features (TFDS names such as `sentence1`) and
    `label` (for SQuAD, a JSON list of answer texts); other columns are
    ignored and blank lines are skipped. Without it, loads the task's TFDS
    dataset (`split="dev"` is the TFDS validation split).

    Args:
        task: str or `TaskSpec`. The task, e.g. `"rte"`.
        split: str. `"train"` or `"dev"`.
        data_dir: str or None. A folder holding one sub-folder of TSV files
            per task. Defaults to `None`, which loads from TFDS.

    Returns:
        An `Examples`.

    Raises:
        FileNotFoundError: if `data_dir` or the TSV file does not exist.
        DataError: if the file is empty, is not UTF-8 (with or without a
            byte order mark), lacks a column or names one twice, has a line
            with the wrong number of fields, a field over `MAX_FIELD_SIZE`
            characters or a label that is not valid for the task, or if
            TFDS cannot load the dataset or it lacks a feature or holds a
            label not valid for the task. The message names the file, and
            the line at fault.

    Example:
    ```python
    dev = beft_keras.data.load_split("rte", "dev", data_dir="glue_data")
    len(dev), dev.features["sentence1"][0], dev.labels[0]
    ```
    """
    spec = get_task(task)
    if split not in SPLITS:
        raise DataError(
            f"Unknown split: {split!r}. Valid splits are: {', '.join(SPLITS)}."
        )
    if data_dir is None:
        return _load_tfds(spec, split)
    examples, _ = _read_tsv(spec, _tsv_path(spec, split, data_dir))
    return examples


def subsample(examples, size, seed, draw=SEEDED):
    """A seeded random subset of examples, drawn without replacement.

    Args:
        examples: `Examples`.
        size: int or None. How many examples to keep. `None`, or a size at
            least `len(examples)`, keeps them all.
        seed: int. Seed of the numpy random generator that draws the
            subset, from 0 to 2**32 - 1.
        draw: str. `"seeded"`, numpy's `default_rng(seed)`; or `"paper"`,
            as the BEFT authors' code draws its training subsets
            (`np.random.seed(seed)`, then the first `size` of
            `np.random.permutation`): on a file in the order they read,
            their exact examples. Defaults to `"seeded"`.

    Returns:
        An `Examples`, in the order of `examples`.

    Raises:
        DataError: if `size`, `seed` or `draw` is not valid.

    Example:
    ```python
    subset = beft_keras.data.subsample(train, 300, seed=0)
    ```
    """
    arguments.check_positive_int("size", size, allow_none=True,
                                 error=DataError)
    # Checked before any early return: a bad draw or seed is refused even
    # where every example is kept.
    if draw not in DRAWS:
        raise DataError(
            f"Unknown draw: {draw!r}. Valid draws are: {', '.join(DRAWS)}."
        )
    check_seed(seed)
    if size is None or size >= len(examples):
        return examples
    if draw == PAPER:
        order = np.random.RandomState(seed).permutation(len(examples))
        indices = np.sort(order[:size])
    else:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(len(examples), size, replace=False))
    return examples.take(indices)


def training_subset(task, examples, regime, seed, draw=SEEDED):
    """The training examples of one of the paper's data regimes.

    Args:
        task: str or `TaskSpec`. The task, e.g. `"rte"`.
        examples: `Examples`. The task's whole training set.
        regime: str. `"low"`, `"medium"`, `"high"` (a seeded random subset of
            the task's size for that regime) or `"full"` (every example).
        seed: int. Seed of the random subset.
        draw: str. How the subset is drawn, `"seeded"` or `"paper"` (see
            `subsample`). Defaults to `"seeded"`.

    Returns:
        An `Examples`.

    Raises:
        DataError: if the regime or the draw is unknown, or the seed is
            not valid.

    A training set smaller than the regime's size trains whole, with a
    warning.

    Example:
    ```python
    train = beft_keras.data.load_split("rte", "train", data_dir="glue_data")
    low = beft_keras.data.training_subset("rte", train, "low", seed=0)
    len(low)  # 300
    ```
    """
    spec = get_task(task)
    if regime not in spec.regimes:
        raise DataError(
            f"Unknown regime: {regime!r}. Valid regimes are: "
            f"{', '.join(spec.regimes)}."
        )
    size = spec.regimes[regime]
    if size is not None and len(examples) < size:
        # Then the whole set trains, and the regime's name overstates it.
        warnings.warn(
            f"The {regime} regime of '{spec.name}' trains on {size} "
            f"examples, but the training set holds {len(examples)}: all "
            "of them train.",
            stacklevel=2,
        )
    return subsample(examples, size, seed, draw)


def check_seed(seed):
    """Refuse a seed that numpy would not take, or `None`, which would draw
    a different subset or order on every call."""
    if not arguments.is_int(seed) or not 0 <= seed < 2**32:
        raise DataError(
            "`seed` must be an int from 0 to 2**32 - 1. "
            f"Received: seed={seed!r}"
        )


def check_data_dir(data_dir):
    """Refuse a `data_dir` that is not a folder.

    Raises:
        FileNotFoundError: if there is no folder at `data_dir`.
    """
    if os.path.isdir(data_dir):
        return
    if os.path.exists(data_dir):
        raise FileNotFoundError(
            f"Data folder '{data_dir}' is a file, not a folder."
        )
    raise FileNotFoundError(f"Data folder '{data_dir}' does not exist.")


def _tsv_path(spec, split, data_dir):
    check_data_dir(data_dir)
    task_dir = os.path.join(data_dir, spec.name)
    if not os.path.isdir(task_dir):
        raise FileNotFoundError(
            f"Folder '{task_dir}' does not exist: `data_dir` must hold one "
            f"folder per task, with {TRAIN}.tsv and {DEV}.tsv in it."
        )
    path = os.path.join(task_dir, f"{split}.tsv")
    if not os.path.isfile(path):
        # GLUE names MNLI's dev files dev_matched.tsv / dev_mismatched.tsv.
        hint = (
            f" The {DEV} split of '{spec.name}' is TFDS's "
            f"'{spec.dev_split}': save it as {DEV}.tsv."
            if split == DEV and spec.dev_split != "validation" else ""
        )
        raise FileNotFoundError(f"File '{path}' does not exist.{hint}")
    return path


def read_tsv(task, path, labelled=True):
    """Read examples of a task from one TSV file, such as texts to predict.

    Args:
        task: str or `TaskSpec`. The task whose text columns the file holds.
        path: str. A GLUE-style TSV file (see `load_split`).
        labelled: bool. Whether the file must have a `label` column. If
            `False` and it has none, or one of placeholders only (empty or
            `-1`, as test splits hold), the examples' labels are zeros, to
            be ignored.

    Returns:
        A tuple `(examples, has_labels)`.

    Raises:
        FileNotFoundError: if there is no file at `path`.
        DataError: if the file cannot be read as examples of the task (see
            `load_split`).
    """
    spec = get_task(task)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"File '{path}' does not exist.")
    return _read_tsv(spec, path, labelled)


def read_rows(path):
    """The header and rows of a TSV file, every field exactly as written.

    The file is read as `read_tsv` reads it (UTF-8, fields split at tabs
    only, quotes kept as text, blank lines skipped), so row `i` holds the
    file's example `i`: `beft predict` writes these rows back with its
    predictions.

    Args:
        path: str. A TSV file with a header line.

    Returns:
        A tuple `(header, rows)`: a list of column names and a list of
        rows, each a list of str.

    Raises:
        DataError: if the file has no header line or cannot be read.
    """
    with open(path, "rb") as file, _field_size_limit(MAX_FIELD_SIZE):
        rows = [row for _, row in _rows(path, _lines(path, file))]
    if not rows:
        raise DataError(f"File '{path}' is empty: it has no header line.")
    return rows[0], rows[1:]


# What the `label` column of an unlabelled split holds.
_PLACEHOLDER_LABELS = ("", "-1")


def _read_tsv(spec, path, labelled=True):
    """The examples of a TSV file, and whether it had labels."""
    with open(path, "rb") as file, _field_size_limit(MAX_FIELD_SIZE):
        rows = _rows(path, _lines(path, file))
        header = next(rows, (None, None))[1]
        if header is None:
            raise DataError(f"File '{path}' is empty: it has no header line.")
        has_labels = labelled or LABEL in header
        feature_columns, label_column = _columns(spec, path, header, has_labels)
        rows = list(rows)
        if not labelled and has_labels and all(
            row[label_column].strip() in _PLACEHOLDER_LABELS
            for _, row in rows if len(row) == len(header)
        ):
            # A test split's column of placeholders (GLUE's exports, TFDS's
            # -1): texts to predict, not labels.
            has_labels, label_column = False, None
        texts, labels, blank = [], [], []
        for line, row in rows:
            if len(row) != len(header):
                raise DataError(
                    f"Line {line} of '{path}' has {len(row)} tab-separated "
                    f"fields; the header has {len(header)}."
                )
            texts.append([row[column] for column in feature_columns])
            if not all(text.strip() for text in texts[-1]):
                blank.append(line)
            labels.append(
                _parse_label(spec, row[label_column], path, line)
                if has_labels
                else 0
            )
    if not labels:
        raise DataError(f"File '{path}' has a header but no examples.")
    if blank:
        # Legal (the model reads its own tokens alone), but in a labelled
        # file usually a column shifted or emptied by an export.
        first = ", ".join(map(str, blank[:5]))
        warnings.warn(
            f"{len(blank)} example(s) of '{path}' have an empty "
            f"{' or '.join(map(repr, spec.columns))} (line(s) {first}"
            f"{', ...' if len(blank) > 5 else ''}): the model reads them as "
            "its own tokens alone.",
            stacklevel=3,
        )
    return _examples(spec, list(zip(*texts)), labels), has_labels


@contextlib.contextmanager
def _field_size_limit(limit):
    """Raise the csv module's field size limit while reading, then put the
    caller's back."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _lines(path, file):
    """The lines of a binary file, decoded as UTF-8 one by one so that an
    invalid byte is reported with its line."""
    for number, line in enumerate(file, start=1):
        try:
            # "utf-8-sig" drops a byte order mark, which would otherwise
            # become part of the first column's name.
            text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise DataError(
                f"Line {number} of '{path}' is not valid UTF-8 (byte "
                f"0x{line[error.start]:02x} at byte {error.start + 1} of the "
                "line). Save the file as UTF-8."
            ) from None
        # Lines are split at "\n" only: a carriage return anywhere but
        # before it is an old Mac line break or a stray control character.
        if "\r" in text.rstrip("\r\n"):
            raise DataError(
                f"Line {number} of '{path}' holds a carriage return (\\r) "
                "inside the line. Save the file with \\n or \\r\\n line "
                "endings and no carriage return in a text."
            )
        yield text


def _rows(path, lines):
    """`(line number, fields)` of each non-blank line."""
    # GLUE texts contain quotes, which are text, not CSV quoting.
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DataError(
                f"Line {reader.line_num} of '{path}' cannot be read as "
                f"tab-separated fields: {error}."
            ) from None
        # A blank line, such as a trailing one, holds no example.
        if row:
            yield reader.line_num, row


def _columns(spec, path, header, has_labels):
    """The indices of the task's feature columns and of its label column
    (`None` without labels) in `header`."""
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DataError(
            f"The header of '{path}' names the column(s) {duplicated} more "
            f"than once; found: {header}. Give every column its own name."
        )
    required = spec.columns + ((LABEL,) if has_labels else ())
    missing = [name for name in required if name not in header]
    if missing:
        raise DataError(
            f"File '{path}' lacks the column(s) {missing} of task "
            f"'{spec.name}'. Expected columns: {list(required)}; found: "
            f"{header}."
        )
    feature_columns = [header.index(name) for name in spec.columns]
    label_column = header.index(LABEL) if has_labels else None
    return feature_columns, label_column


def _parse_label(spec, text, path, line):
    """The label `text` as a number valid for the task, or for a generation
    task the tuple of its answers."""
    if spec.is_generation:
        return _parse_answers(spec, text, path, line)
    try:
        label = float(text) if spec.is_regression else int(text)
    except ValueError:
        label = None
    if label is not None and _is_valid_label(spec, label):
        return label
    raise DataError(
        f"Invalid label {text!r} on line {line} of '{path}': task "
        f"'{spec.name}' expects {_expected_label(spec)}."
    )


def _is_valid_label(spec, label):
    """Whether the number `label` is a class id or score of the task."""
    if spec.is_regression:
        low, high = spec.label_range or (-math.inf, math.inf)
        return math.isfinite(label) and low <= label <= high
    # In range first: `float` of a huge int overflows.
    return 0 <= label < spec.num_classes and float(label).is_integer()


def _expected_label(spec):
    if not spec.is_regression:
        return f"an integer class id from 0 to {spec.num_classes - 1}"
    if spec.label_range is None:
        return "a finite number"
    return "a score from {:g} to {:g}".format(*spec.label_range)


def _parse_answers(spec, text, path, line):
    """A JSON list of one or more answer texts."""
    try:
        answers = json.loads(text)
    except ValueError:
        answers = None
    if (
        isinstance(answers, list)
        and answers
        and all(isinstance(a, str) and a.strip() for a in answers)
    ):
        return tuple(answers)
    raise DataError(
        f"Invalid label {text!r} on line {line} of '{path}': task "
        f"'{spec.name}' expects its answers as a JSON list of non-empty "
        'strings, e.g. ["Denver Broncos", "the Broncos"].'
    )


def _load_tfds(spec, split):
    tfds_split = spec.dev_split if split == DEV else TRAIN
    try:
        import tensorflow_datasets as tfds

        data = tfds.as_numpy(
            tfds.load(spec.tfds_name, split=tfds_split, batch_size=-1)
        )
    except Exception as error:
        raise DataError(
            f"TFDS could not load '{spec.tfds_name}' split '{tfds_split}' "
            f"({type(error).__name__}: {error}). TFDS downloads the data on "
            f"first use, which needs internet access. Alternatively pass "
            f"`--data-dir` (`data_dir=`), a folder with GLUE-style TSV files "
            f"'{spec.name}/{TRAIN}.tsv' and '{spec.name}/{DEV}.tsv'."
        ) from error
    label_key = "answers" if spec.is_generation else LABEL
    missing = [
        name for name in spec.columns + (label_key,) if name not in data
    ]
    if missing:
        raise DataError(
            f"TFDS dataset '{spec.tfds_name}' has no feature(s) {missing} of "
            f"task '{spec.name}'. Its features: {sorted(data)}."
        )
    texts = [
        [text.decode("utf-8") for text in data[name]] for name in spec.columns
    ]
    if spec.is_generation:
        # SQuAD: a ragged list of answer texts per example.
        rows = data["answers"]["text"]
        rows = rows.to_list() if hasattr(rows, "to_list") else list(rows)
        labels = [tuple(a.decode("utf-8") for a in row) for row in rows]
    else:
        labels = np.asarray(data[LABEL])
        # Checked as a TSV file's are (a custom spec may not fit its
        # dataset): a class id out of range does not fail on every backend,
        # and the cast to int32 would truncate a fractional one.
        for label in np.unique(labels):
            if labels.dtype.kind not in "biuf" or not _is_valid_label(
                spec, label
            ):
                raise DataError(
                    f"Invalid label {label.item()!r} in TFDS "
                    f"'{spec.tfds_name}' split '{tfds_split}': task "
                    f"'{spec.name}' expects {_expected_label(spec)}."
                )
    return _examples(spec, texts, labels)


def _examples(spec, texts, labels):
    """`Examples` of the texts of `spec.columns`, with its prefix
    features."""
    features = {
        name: np.array(column, dtype=object)
        for name, column in zip(spec.columns, texts)
    }
    if spec.is_generation:
        # One tuple of answers per example; `np.asarray` would make a 2-D
        # array of equally long tuples.
        answers = np.empty(len(labels), dtype=object)
        for i, label in enumerate(labels):
            answers[i] = tuple(label) if label else ()
        return Examples(features, answers, spec.prefix_features)
    dtype = "float32" if spec.is_regression else "int32"
    return Examples(
        features, np.asarray(labels, dtype=dtype), spec.prefix_features
    )
