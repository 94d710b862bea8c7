"""Tokenized batches padded to length buckets: each batch is as long as the
smallest bucket that fits its longest example, not the model's maximum."""

import itertools

import numpy as np
import tensorflow as tf

from beft_keras import arguments
from beft_keras.data.readers import Examples
from beft_keras.data.readers import check_seed
from beft_keras.data.tasks import DataError
from beft_keras.prompting.preprocessing import PromptPreprocessor

DEFAULT_BUCKETS = (16, 32, 64, 128)
# Which examples share a batch: those of one bucket (the least padding), or
# any (each batch a random draw of the whole set, as most trainers make).
BUCKETED = "bucketed"
MIXED = "mixed"
BATCHINGS = (BUCKETED, MIXED)
PADDING_MASK = "padding_mask"
# How many texts the preprocessor tokenizes at once.
_TOKENIZE_BATCH_SIZE = 1024


def bucket_lengths(sequence_length, buckets=DEFAULT_BUCKETS):
    """The lengths batches are padded to.

    Args:
        sequence_length: int. The maximum length; longer examples are
            truncated to it, and it is always a bucket.
        buckets: tuple of int. Candidate lengths; those not below
            `sequence_length` are dropped. Defaults to `(16, 32, 64, 128)`.

    Returns:
        A sorted tuple of int that ends with `sequence_length`.

    Example:
    ```python
    beft_keras.data.bucket_lengths(48)  # (16, 32, 48)
    ```
    """
    arguments.check_positive_int(
        "sequence_length", sequence_length, error=DataError
    )
    if not np.iterable(buckets) or not all(
        arguments.is_positive_int(bucket) for bucket in buckets
    ):
        raise DataError(
            f"`buckets` must be positive ints. Received: buckets={buckets!r}"
        )
    kept = {int(bucket) for bucket in buckets if bucket < sequence_length}
    return tuple(sorted(kept | {int(sequence_length)}))


def make_dataset(
    examples,
    preprocessor,
    batch_size,
    sequence_length=None,
    shuffle=False,
    seed=0,
    buckets=DEFAULT_BUCKETS,
    batching=BUCKETED,
):
    """A `tf.data.Dataset` of `(features, labels)` batches for `model.fit`.

    Every example is tokenized once, truncated to `sequence_length`, and put
    in the smallest bucket of `bucket_lengths(sequence_length, buckets)` that
    fits it. With `batching="bucketed"` batches are drawn within a bucket,
    so short and long examples never share one (the least padding); with
    `"mixed"` they are drawn from all examples, as most trainers draw them,
    and each is padded to the bucket of its longest example. Every feature
    of a batch is trimmed to its length. Each iteration over the dataset is
    one epoch that yields every example exactly once. With `shuffle=True`
    each epoch has its own random order of examples and of batches, drawn
    from `seed` and the epoch's number, so that two datasets made with the
    same seed yield the same epochs; without it the order is fixed:
    bucketed batches go from the shortest bucket to the longest, mixed ones
    follow `examples`, and within a batch examples keep their order. So
    with `shuffle=False` (the default), and only then, score
    `model.predict(dataset)` against the dataset's own labels, read in a
    pass of their own (as below): with `shuffle=True` each pass reshuffles,
    so the predictions and labels of two passes do not line up.

    The dataset works with `model.fit`, `evaluate` and `predict` on every
    Keras backend.

    Args:
        examples: `Examples`. The texts and labels.
        preprocessor: a keras-hub text classifier preprocessor, such as
            `keras_hub.models.BertTextClassifierPreprocessor`, which reads
            `examples.segments` (prefix features written into the first),
            or a `PromptPreprocessor`, which reads the features its prompt
            names. It is run at `sequence_length`; its own
            `sequence_length` is restored after.
        batch_size: int. The largest batch; the last batch of each bucket
            may be smaller.
        sequence_length: int or None. The maximum length: longer examples
            are truncated, and it is the last bucket. Defaults to `None`,
            the preprocessor's own `sequence_length` (which its model is
            built for).
        shuffle: bool. Whether to shuffle examples and batches every epoch.
            Defaults to `False`.
        seed: int. Seed of the shuffling, from 0 to 2**32 - 1. Defaults to
            `0`.
        buckets: tuple of int. The candidate batch lengths. Defaults to
            `(16, 32, 64, 128)`.
        batching: str. Which examples share a batch: `"bucketed"` (those
            of one bucket) or `"mixed"` (any). Bucketed batches pad least;
            mixed ones lifted all-MiniLM-L6-v2's CoLA MCC with keras-hub's
            CLS classifier and all biases training (docs/head_sweep.md).
            Defaults to `"bucketed"`.

    Returns:
        A `tf.data.Dataset` of `(features, labels)`: `features` is the
        preprocessor's dict (`token_ids`, `padding_mask`, ...), each of
        shape `(batch, length)`, and `labels` has shape `(batch,)`.

    Example:
    ```python
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        "bert_base_en_uncased"
    )
    train = beft_keras.data.load_split("rte", "train", data_dir="glue_data")
    dataset = beft_keras.data.make_dataset(
        train, preprocessor, batch_size=32, shuffle=True
    )
    model.fit(dataset, epochs=3)

    dev = beft_keras.data.load_split("rte", "dev", data_dir="glue_data")
    dev_dataset = beft_keras.data.make_dataset(dev, preprocessor, 32)
    logits = model.predict(dev_dataset)
    labels = np.concatenate([y for _, y in dev_dataset.as_numpy_iterator()])
    ```
    """
    # Bad arguments fail before tokenizing.
    arguments.check_positive_int("batch_size", batch_size, error=DataError)
    _plan(batching)
    arguments.check_bool("shuffle", shuffle)
    check_seed(seed)
    _check_examples(examples)
    features = tokenize(examples, preprocessor, sequence_length)
    return batch_arrays(
        features, examples.labels, batch_size, sequence_length, shuffle,
        seed, buckets, batching=batching,
    )


def batch_arrays(
    features,
    labels,
    batch_size,
    sequence_length=None,
    shuffle=False,
    seed=0,
    buckets=DEFAULT_BUCKETS,
    sample_weight=None,
    batch_multiple=1,
    batching=BUCKETED,
):
    """Length-bucketed batches of already tokenized examples, as
    `make_dataset` makes them.

    Args:
        features: dict of numpy arrays of shape `(num_examples,
            sequence_length)`, right-padded, with a `"padding_mask"`.
        labels: numpy array of shape `(num_examples,)`, or `(num_examples,
            sequence_length)` for per-token targets, which are trimmed with
            the features.
        batch_size, shuffle, seed, buckets, batching: as for
            `make_dataset`.
        sequence_length: int or None. The last bucket: at most the width
            of `features`, and at least its longest example. Defaults to
            `None`, the width of `features`.
        sample_weight: numpy array or None. Per-example or per-token
            weights, shaped and trimmed like `labels`.
        batch_multiple: int. Every batch's size is a multiple of it (data
            parallel on JAX shards a batch evenly over the devices): the
            remainder of a bucket's last batch moves up to the next longer
            bucket, and the epoch's last remainder (fewer than
            `batch_multiple` examples) is dropped, a different draw each
            shuffled epoch. `batch_size` must be a multiple of it.
            Defaults to `1`.

    Returns:
        A `tf.data.Dataset` of `(features, labels)` or `(features, labels,
        sample_weight)` batches.

    Example:
    ```python
    x, y, weights = beft_keras.generation_inputs(prompts, answers, tokenizer)
    dataset = beft_keras.data.batch_arrays(x, y, 8, sample_weight=weights)
    causal_lm.fit(dataset, epochs=5)
    ```
    """
    plan = _plan(batching)
    arguments.check_positive_int("batch_size", batch_size, error=DataError)
    arguments.check_bool("shuffle", shuffle)
    # Checked here, not when the first epoch's generator runs inside
    # tf.data.
    check_seed(seed)
    arguments.check_positive_int(
        "batch_multiple", batch_multiple, error=DataError
    )
    if batch_size % batch_multiple:
        raise DataError(
            f"`batch_size`={batch_size} must be a multiple of the "
            f"{batch_multiple} devices each batch is split over."
        )
    if PADDING_MASK not in features:
        raise DataError(
            f"`features` has no '{PADDING_MASK}' to measure lengths by. "
            f"Received features: {sorted(features)}."
        )
    features = {name: np.asarray(x) for name, x in features.items()}
    shape = features[PADDING_MASK].shape
    # Every feature is cut and trimmed with the mask.
    odd = {name: x.shape for name, x in features.items() if x.shape != shape}
    if len(shape) != 2 or odd:
        raise DataError(
            "`features` must be arrays of one shape, `(num_examples, "
            f"sequence_length)`. Received: '{PADDING_MASK}' of shape "
            f"{shape}" + (f" and {odd}" if odd else "")
        )
    num_examples, width = shape
    if sequence_length is None:
        sequence_length = width
    lengths = bucket_lengths(sequence_length, buckets)
    if sequence_length > width:
        # Its batches would be narrower than their bucket.
        raise DataError(
            f"`sequence_length` must be at most the width of `features`, "
            f"{width}. Received: sequence_length={sequence_length}"
        )
    labels = np.asarray(labels)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight)
    for name, target in (("labels", labels), ("sample_weight", sample_weight)):
        if target is None:
            continue
        if len(target) != num_examples:
            raise DataError(
                f"`{name}` must have one row per example of `features`, "
                f"{num_examples}. Received: len({name})={len(target)}"
            )
        # Strings or answer tuples would fail only in tf.data, at the
        # first batch.
        if target.dtype.kind not in "biuf":
            raise DataError(
                f"`{name}` must be numbers (class ids, scores or weights). "
                f"Received: {name} of dtype {target.dtype}"
            )
    # Every text of an example fits its bucket: a siamese pair has a mask
    # per sentence (`padding_mask`, `padding_mask_2`).
    example_lengths = np.max(
        [x.sum(1) for name, x in features.items()
         if name.startswith(PADDING_MASK)],
        axis=0,
    )
    if example_lengths.max(initial=0) > sequence_length:
        # It would fit no bucket.
        raise DataError(
            f"`sequence_length` must be at least the longest example of "
            f"`features`, {example_lengths.max()} tokens. "
            f"Received: sequence_length={sequence_length}"
        )
    example_buckets = np.searchsorted(lengths, example_lengths)
    targets = (labels,) if sample_weight is None else (labels, sample_weight)
    epochs = itertools.count()

    def batches():
        rng = np.random.default_rng([seed, next(epochs)]) if shuffle else None
        for indices, length in plan(
            example_buckets, lengths, batch_size, rng, batch_multiple
        ):
            batch = {name: x[indices, :length] for name, x in features.items()}
            yield (batch, *(t[indices, ..., :length] if t.ndim > 1
                            else t[indices] for t in targets))

    signature = (
        {
            name: tf.TensorSpec((None, None), x.dtype)
            for name, x in features.items()
        },
        *(tf.TensorSpec((None,) * t.ndim, t.dtype) for t in targets),
    )
    # Shuffling changes which examples share a batch, never how many
    # batches there are.
    num_batches = len(
        plan(example_buckets, lengths, batch_size, None, batch_multiple)
    )
    if num_batches == 0:
        # An empty dataset would train on nothing without a word.
        raise DataError(
            f"No batch can be made of {num_examples} example(s): fewer than "
            f"`batch_multiple`={batch_multiple}."
        )
    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=signature
    )
    # Every epoch has the same number of batches; telling tf.data lets
    # Keras show progress from the first epoch.
    dataset = dataset.apply(
        tf.data.experimental.assert_cardinality(num_batches)
    )
    return _prefetch(dataset)


def _prefetch(dataset):
    """One batch made ahead, with tf.data's autotuning off: Keras drops
    each epoch's iterator, and destroying one waits out the sleep of its
    autotuning thread, which left both cores idle for 6-40 s at the start
    of about half the epochs of a fit, on every backend
    (docs/epoch_stalls.md)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(1).with_options(options)


def padding_efficiency(dataset):
    """The share of a dataset's token positions that hold a real token.

    Args:
        dataset: a dataset of `(features, labels)` or `(features, labels,
            sample_weight)` batches whose features have a `padding_mask`,
            such as one from `make_dataset` or `batch_arrays`.

    Returns:
        A float in `(0, 1]`; 1 means no padding at all.

    Example:
    ```python
    dataset = beft_keras.data.make_dataset(dev, preprocessor, batch_size=32)
    beft_keras.data.padding_efficiency(dataset)  # e.g. 0.83
    ```
    """
    real = total = 0
    # `batch_arrays`' batches may carry sample weights too.
    for features, *_ in dataset.as_numpy_iterator():
        real += np.count_nonzero(features[PADDING_MASK])
        total += features[PADDING_MASK].size
    return real / total


def tokenize(examples, preprocessor, sequence_length=None):
    """Every example's features, as numpy arrays padded to
    `sequence_length`, for `batch_arrays`.

    Args:
        examples: `Examples`.
        preprocessor: a keras-hub text classifier preprocessor or a
            `PromptPreprocessor` (see `make_dataset`).
        sequence_length: int or None. Defaults to `None`, the
            preprocessor's own `sequence_length`.

    Returns:
        A dict of numpy arrays of shape `(len(examples), sequence_length)`.
    """
    _check_examples(examples)
    sequence_length = _sequence_length(preprocessor, sequence_length)
    segments = _segments(examples, preprocessor)
    texts = tf.data.Dataset.from_tensor_slices(segments).batch(
        _TOKENIZE_BATCH_SIZE
    )
    original_length = preprocessor.sequence_length

    def pack(*segments):
        # `x=` keeps a pair of segments from being read as `(x, y)`.
        return preprocessor(x=segments if len(segments) > 1 else segments[0])

    # First, one batch of empty texts: what the preprocessor adds of its
    # own ([CLS], [SEP], a prompt), all of the length when it fills it.
    empty = tf.data.Dataset.from_tensor_slices(
        tuple([""] for _ in segments)
    ).batch(1)
    preprocessor.sequence_length = sequence_length
    try:
        # One map, traced once, for both.
        packed = empty.concatenate(texts).map(pack).as_numpy_iterator()
        added = next(packed)
        if PADDING_MASK not in added:
            raise DataError(
                f"The preprocessor's output has no '{PADDING_MASK}' to "
                f"measure lengths by. Received features: {sorted(added)}."
            )
        added = int(np.sum(added[PADDING_MASK]))
        if added >= sequence_length:
            raise DataError(
                f"`sequence_length`={sequence_length} leaves no room for "
                f"text: the preprocessor adds {added} or more tokens of its "
                "own (such as [CLS] and [SEP], or a prompt). Use a longer "
                "sequence length."
            )
        chunks = list(packed)
    finally:
        preprocessor.sequence_length = original_length
    return {
        name: np.concatenate([chunk[name] for chunk in chunks])
        for name in chunks[0]
    }


def _segments(examples, preprocessor):
    """The texts `preprocessor` reads: a `PromptPreprocessor` those of the
    features it names, each placed by name (a prefix feature too); any
    other, an encoder's, `examples.segments`."""
    if not isinstance(preprocessor, PromptPreprocessor):
        return examples.segments
    missing = [n for n in preprocessor.features if n not in examples.features]
    if missing:
        raise DataError(
            f"The prompt reads the features {list(preprocessor.features)}; "
            f"the examples lack {missing}. Their features: "
            f"{list(examples.features)}."
        )
    return tuple(examples.features[name] for name in preprocessor.features)


def _check_examples(examples):
    if not isinstance(examples, Examples):
        raise DataError(
            "`examples` must be a `beft_keras.data.Examples`: build one "
            "with `beft_keras.data.Examples(features, labels)`. "
            f"Received: examples of type {type(examples).__name__}"
        )
    if len(examples) == 0:
        raise DataError("`examples` is empty: there is nothing to batch.")


def _sequence_length(preprocessor, sequence_length):
    """`sequence_length`, or the preprocessor's own where it is `None`."""
    if sequence_length is None:
        sequence_length = getattr(preprocessor, "sequence_length", None)
        if sequence_length is None:
            raise DataError(
                "`sequence_length` is needed: the preprocessor has no "
                "`sequence_length` of its own. "
                "Received: sequence_length=None"
            )
    arguments.check_positive_int(
        "sequence_length", sequence_length, error=DataError
    )
    return sequence_length


def _bucketed_plan(example_buckets, lengths, batch_size, rng,
                   batch_multiple):
    """One epoch's batches, as `(example indices, length)`, each within one
    bucket; shuffled with `rng` unless it is `None`. The remainder that a
    bucket cannot fill a multiple of `batch_multiple` with moves up to the
    next longer bucket: a bucket smaller than the multiple would otherwise
    never train."""
    order = _order(len(example_buckets), rng)
    batches = []
    carried = order[:0]
    for bucket, length in enumerate(lengths):
        indices = np.concatenate(
            [carried, order[example_buckets[order] == bucket]]
        )
        if rng is not None and len(carried):
            indices = rng.permutation(indices)
        kept = len(indices) - len(indices) % batch_multiple
        batches += [
            (batch, length) for batch in _cut(indices[:kept], batch_size, 1)
        ]
        carried = indices[kept:]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _mixed_plan(example_buckets, lengths, batch_size, rng, batch_multiple):
    """One epoch's batches, as `(example indices, length)`, cut from all
    examples in one order (shuffled with `rng` unless it is `None`), each
    padded to the bucket of its longest example."""
    order = _order(len(example_buckets), rng)
    return [
        (batch, lengths[int(example_buckets[batch].max())])
        for batch in _cut(order, batch_size, batch_multiple)
    ]


_PLANS = {BUCKETED: _bucketed_plan, MIXED: _mixed_plan}


def _plan(batching):
    if batching not in _PLANS:
        raise DataError(
            f"`batching` must be one of {list(BATCHINGS)}. "
            f"Received: batching={batching!r}"
        )
    return _PLANS[batching]


def _order(num_examples, rng):
    order = np.arange(num_examples)
    return order if rng is None else rng.permutation(order)


def _cut(indices, batch_size, batch_multiple):
    """`indices` in batches of `batch_size`, each trimmed to a multiple of
    `batch_multiple`; a batch trimmed to nothing is dropped."""
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        batch = batch[: len(batch) - len(batch) % batch_multiple]
        if len(batch):
            yield batch
