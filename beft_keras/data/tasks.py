"""The GLUE and SuperGLUE tasks: their text features, labels, metrics,
data sources and training-set regimes (their training settings are in
`beft_keras.settings`)."""

import dataclasses

from beft_keras import arguments

LOW = "low"
MEDIUM = "medium"
HIGH = "high"
FULL = "full"
# Training-set regimes, smallest first; `FULL` is the whole training set.
REGIMES = (LOW, MEDIUM, HIGH, FULL)

TRAIN = "train"
DEV = "dev"
SPLITS = (TRAIN, DEV)


class DataError(ValueError):
    """An unknown task, split or regime, or a data file that cannot be read
    as examples of its task."""


def _names(name, value, expected, distinct=False):
    """`value` as a tuple of non-empty str (a list is taken), or a
    `DataError` saying it must be `expected`."""
    names = tuple(value) if isinstance(value, list) else value
    if (
        not isinstance(names, tuple)
        or not names
        or not all(isinstance(n, str) and n for n in names)
        or distinct and len(set(names)) != len(names)
    ):
        raise DataError(
            f"`{name}` must be {expected}. Received: {name}={value!r}"
        )
    return names


@dataclasses.dataclass(frozen=True, eq=False)
class TaskSpec:
    """Everything the pipeline needs to know about one task.

    Attributes:
        name: str. The task's name, e.g. `"rte"`; also the folder name of its
            GLUE-style TSV files.
        features: tuple of str. The text features, in the order they are fed
            to the model: `("sentence",)` or a pair such as
            `("sentence1", "sentence2")`. These are the TFDS feature names and
            the TSV column names.
        num_classes: int. The number of classes; 1 for a regression task
            (STS-B); 0 for a generation task (SQuAD), whose labels are
            answer texts.
        metrics: tuple of str. Names of `beft_keras.metrics` functions; the
            first is the task's main metric.
        tfds_name: str. The TFDS dataset, e.g. `"glue/sst2"`.
        dev_split: str. The TFDS split used as the dev set.
        regimes: dict. Maps each of `"low"`, `"medium"`, `"high"` to a
            training-set size and `"full"` to `None` (the whole training set).
        compares_pair: bool. Whether the label of a text pair grades how
            alike the two texts are in meaning (similarity, paraphrase,
            entailment, an answer's relevance to a question): what an
            embedding model's cosine measures, so such a pair is read
            siamese on one by default (`heads.default_pair_encoding`).
            `False` for one text, and for a pair whose label needs both
            texts read together (BoolQ's yes or no from the passage, WiC's
            sense of one word in two sentences).
        label_range: tuple or None. A regression task's lowest and highest
            score (STS-B: 0 to 5); `None` for a classification or
            generation task.
        prefix_features: tuple of str. Features read beside `features` and
            written before the first of them, as `"{prefix}: {text}"`:
            WiC's target `word`, without which the two sentences do not
            say whose sense to compare. Defaults to `()`.

    Raises:
        DataError: if `features` is not a non-empty tuple (or list) of
            distinct names, `metrics` not a non-empty tuple (or list) of
            names, `prefix_features` not distinct names apart from
            `features`, `num_classes` not an int of at least 0, or a
            regime's size neither a positive int nor `None`.

    Example:
    ```python
    spec = beft_keras.data.get_task("stsb")
    spec.is_regression  # True
    spec.main_metric  # "pearson"
    ```
    """

    name: str
    features: tuple
    num_classes: int
    metrics: tuple
    tfds_name: str
    dev_split: str
    regimes: dict
    compares_pair: bool = False
    label_range: tuple | None = None
    prefix_features: tuple = ()

    def __post_init__(self):
        # A custom spec's mistakes fail here, not deep in a reader (a list
        # of features would fail as `features + ("label",)`, a repeated one
        # would read one column twice as one feature).
        features = _names(
            "features", self.features, "a non-empty tuple of distinct "
            "feature names", distinct=True,
        )
        expected = "a tuple of distinct feature names, none of `features`"
        prefix_features = self.prefix_features and _names(
            "prefix_features", self.prefix_features, expected, distinct=True
        )
        if set(prefix_features) & set(features):
            raise DataError(
                f"`prefix_features` must be {expected}. Received: "
                f"prefix_features={self.prefix_features!r}"
            )
        # The first is the main metric every result is scored by.
        metrics = _names(
            "metrics", self.metrics, "a non-empty tuple of metric names, the "
            "main one first",
        )
        if not arguments.is_int(self.num_classes) or self.num_classes < 0:
            raise DataError(
                "`num_classes` must be an int: the number of classes, 1 for "
                "regression, 0 for generation. "
                f"Received: num_classes={self.num_classes!r}"
            )
        for regime, size in self.regimes.items():
            arguments.check_positive_int(
                f"regimes[{regime!r}]", size, allow_none=True, error=DataError
            )
        # The dataclass is frozen.
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "prefix_features", tuple(prefix_features))

    @property
    def columns(self):
        """Every text column read: the prefix features, then the
        features."""
        return self.prefix_features + self.features

    @property
    def is_regression(self):
        return self.num_classes == 1

    @property
    def is_generation(self):
        return self.num_classes == 0

    @property
    def main_metric(self):
        return self.metrics[0]


def _task(
    tfds_name,
    features,
    num_classes,
    metrics,
    sizes,
    dev_split="validation",
    name=None,
    compares_pair=False,
    label_range=None,
    prefix_features=(),
):
    return TaskSpec(
        name=name or tfds_name.split("/")[1],
        features=features,
        num_classes=num_classes,
        metrics=metrics,
        tfds_name=tfds_name,
        dev_split=dev_split,
        regimes=dict(zip(REGIMES, sizes + (None,))),
        compares_pair=compares_pair,
        label_range=label_range,
        prefix_features=prefix_features,
    )


_SENTENCE = ("sentence",)
_PAIR = ("sentence1", "sentence2")
_NLI = ("premise", "hypothesis")
# The paper has no low/medium/high regimes for the SuperGLUE tasks; these
# sizes are ours.
_SUPER_GLUE_SIZES = (250, 500, 1000)

# Sizes are (low, medium, high) training examples, the paper's.
# fmt: off
TASKS = {
    spec.name: spec
    for spec in (
        _task("glue/sst2", _SENTENCE, 2, ("accuracy",), (1000, 5000, 11000)),
        _task("glue/cola", _SENTENCE, 2, ("mcc", "accuracy"),
              (1710, 3420, 4275)),
        _task("glue/rte", _PAIR, 2, ("accuracy",), (300, 900, 1200),
              compares_pair=True),
        _task("glue/mrpc", _PAIR, 2, ("f1", "accuracy"), (367, 1191, 1835),
              compares_pair=True),
        _task("glue/stsb", _PAIR, 1, ("pearson", "spearman"),
              (287, 1150, 2300), compares_pair=True, label_range=(0.0, 5.0)),
        _task("glue/qnli", ("question", "sentence"), 2, ("accuracy",),
              (1000, 5000, 9000), compares_pair=True),
        _task("glue/qqp", ("question1", "question2"), 2, ("f1", "accuracy"),
              (1000, 5000, 9000), compares_pair=True),
        _task("glue/mnli", _NLI, 3, ("accuracy",), (1000, 5000, 9000),
              dev_split="validation_matched", compares_pair=True),
        _task("super_glue/cb", _NLI, 3, ("macro_f1", "accuracy"),
              _SUPER_GLUE_SIZES, compares_pair=True),
        # WiC's target word is written before the first sentence; the two
        # sentences' likeness is not the word's sense: not a compared pair.
        # Nor is BoolQ's question and passage, whose label is the answer.
        _task("super_glue/wic", _PAIR, 2, ("accuracy",), _SUPER_GLUE_SIZES,
              prefix_features=("word",)),
        _task("super_glue/boolq", ("question", "passage"), 2, ("accuracy",),
              _SUPER_GLUE_SIZES),
        # Generation, for causal LMs only: 1000 training examples as in
        # MeZO.
        _task("squad/v1.1", ("title", "context", "question"), 0,
              ("exact_match", "token_f1"), (1000, 5000, 10000), name="squad"),
    )
}
# fmt: on


def get_task(task):
    """The `TaskSpec` of a task.

    Args:
        task: str or `TaskSpec`. A task name such as `"rte"` (any case), or a
            spec, which is returned as is.

    Returns:
        A `TaskSpec`.

    Raises:
        DataError: if there is no task of that name.

    Example:
    ```python
    spec = beft_keras.data.get_task("rte")
    spec.features  # ("sentence1", "sentence2")
    spec.regimes["low"]  # 300
    ```
    """
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, str) and task.lower() in TASKS:
        return TASKS[task.lower()]
    raise DataError(
        f"Unknown task: {task!r}. Valid tasks are: {', '.join(TASKS)}."
    )
