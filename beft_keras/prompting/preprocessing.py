"""Token ids and masks of prompted examples: in `tf.data`
(`PromptPreprocessor`) or as numpy arrays, for classification and for
generation with the loss on the answers only."""

import string

import numpy as np
import tensorflow as tf

from beft_keras.prompting import packing
from beft_keras.prompting.packing import PromptError


class PromptPreprocessor:
    """Token ids and padding masks of prompts made from a task's texts, as
    a `VerbalizerClassifier` takes them.

    Called, like a keras-hub text classifier preprocessor, on a batch of
    strings or a tuple of batches, one per feature in `features` order. It
    runs TensorFlow ops, so it works inside `tf.data` on every backend;
    called eagerly it returns numpy arrays.
    Each example's features fill `template`; the prompt is tokenized,
    begins with the tokenizer's start token if it has one, loses tokens
    from its start (after the start token) if it is longer than
    `sequence_length`, since the verbaliser word follows its end, and is
    right-padded: the same inputs as `classification_inputs` makes of the
    formatted prompts.

    Args:
        tokenizer: a keras-hub tokenizer (`causal_lm.preprocessor.tokenizer`).
        template: `PromptTemplate` whose slots are among `features`.
        features: str or tuple of str. The names of the text features the
            preprocessor is called with, in order; a str is one feature.
        sequence_length: int. Length of the padded inputs. Defaults to
            `128`.

    Example:
    ```python
    causal_lm = keras_hub.models.OPTCausalLM.from_preset("opt_125m_en")
    preprocessor = beft_keras.PromptPreprocessor(
        causal_lm.preprocessor.tokenizer,
        beft_keras.SST2_TEMPLATE,
        features=("sentence",),
    )
    dataset = beft_keras.data.make_dataset(train, preprocessor, batch_size=8)
    ```
    """

    def __init__(self, tokenizer, template, features, sequence_length=128):
        # A str is one feature, as a str of `terms` is one term, not a
        # sequence of one-letter features.
        features = (features,) if isinstance(features, str) else features
        features = tuple(features)
        missing = [f for f in template.fields if f not in features]
        if missing:
            raise PromptError(
                f"Template {template.text!r} needs the features {missing}, "
                f"which are not among the task's features {list(features)}."
            )
        self.tokenizer = tokenizer
        self.template = template
        self.features = features
        self.sequence_length = sequence_length

    def __call__(self, x):
        segments = x if isinstance(x, tuple) else (x,)
        if len(segments) != len(self.features):
            raise PromptError(
                f"Expected one batch of texts per feature {self.features}. "
                f"Received: {len(segments)} batches"
            )
        segments = tuple(tf.convert_to_tensor(s) for s in segments)
        # One text, not a batch, would fail deep in the graph.
        for name, segment in zip(self.features, segments):
            if segment.shape.rank == 0:
                raise PromptError(
                    "Expected a batch of texts per feature, e.g. `[text]` "
                    f"for one text. Received: one text for {name!r}"
                )
        packing.check_length(
            self.sequence_length, packing.kept_start(self.tokenizer)
        )
        if tf.executing_eagerly():
            # Eagerly, keras-hub tokenizers return Python lists on the jax
            # and torch backends; in a graph they return TensorFlow tensors.
            outputs = tf.function(self._prompt_inputs)(segments)
            return {name: value.numpy() for name, value in outputs.items()}
        return self._prompt_inputs(segments)

    def _prompt_inputs(self, segments):
        named = dict(zip(self.features, segments))
        parts = []
        for literal, field, _, _ in string.Formatter().parse(
            self.template.text
        ):
            parts += [literal] if literal else []
            parts += [named[field]] if field else []
        tokens = self.tokenizer(tf.strings.join(parts))
        start = getattr(self.tokenizer, "start_token_id", None)
        room = self.sequence_length - (start is not None)
        tokens = tokens[:, -room:]
        if start is not None:
            column = tf.fill([tokens.nrows(), 1], tf.cast(start, tokens.dtype))
            tokens = tf.concat([column, tokens], axis=1)
        pad = getattr(self.tokenizer, "pad_token_id", None) or 0
        shape = [None, self.sequence_length]
        return {
            "token_ids": tokens.to_tensor(default_value=pad, shape=shape),
            "padding_mask": tf.sequence_mask(
                tokens.row_lengths(), self.sequence_length
            ),
        }


def classification_inputs(prompts, labels, tokenizer=None, sequence_length=128):
    """Token ids of prompts, right-padded, for a `VerbalizerClassifier`.

    A prompt longer than `sequence_length` loses tokens from its start
    (after the start token): the verbaliser word follows its end.

    Args:
        prompts: list of str, formatted prompts (`PromptTemplate.format`);
            or, with `tokenizer=None`, lists of token ids, start token
            included.
        labels: list of int, the class of each prompt (its verbaliser
            word's index).
        tokenizer: a keras-hub tokenizer (`causal_lm.preprocessor.tokenizer`),
            whose start token, if it has one, begins every prompt; `None`
            for token ids. Defaults to `None`.
        sequence_length: int. Length of the padded inputs. Defaults to
            `128`.

    Returns:
        A tuple `(x, y)`: `x` a dict of `"token_ids"` and `"padding_mask"`
        arrays of shape `(len(prompts), sequence_length)`, `y` the labels
        as int32.

    Example:
    ```python
    prompts = [beft_keras.SST2_TEMPLATE.format(sentence=s) for s in sentences]
    x, y = beft_keras.classification_inputs(prompts, labels, tokenizer)
    classifier.fit(x, y, batch_size=8, epochs=5)
    ```
    """
    keep = packing.kept_start(tokenizer)
    packing.check_length(sequence_length, keep)
    sequences = [
        packing.truncate(prompt, sequence_length, keep)
        for prompt in packing.token_lists(prompts, tokenizer)
    ]
    token_ids, padding_mask = packing.pack(sequences, sequence_length, tokenizer)
    labels = np.asarray(labels, dtype="int32")
    if labels.shape != (len(sequences),):
        raise PromptError(
            f"`labels` must have one class per prompt: {len(sequences)}. "
            f"Received: labels of shape {labels.shape}"
        )
    return {"token_ids": token_ids, "padding_mask": padding_mask}, labels


def generation_inputs(prompts, answers, tokenizer=None, sequence_length=128):
    """Causal-LM training data that puts the loss on the answers only.

    Each example is the prompt followed by its answer (and the tokenizer's
    end token, so that the model learns to stop), shifted by one token as a
    keras-hub `CausalLMPreprocessor` shifts it; the sample weights are 1 at
    the positions that predict an answer token and 0 at the prompt and the
    padding. A prompt that does not fit loses tokens from its start.

    Args:
        prompts: list of str, formatted prompts; or, with `tokenizer=None`,
            lists of token ids, start token included.
        answers: list of str, the answer of each prompt, with its leading
            space (`" Denver Broncos"`); or lists of token ids, end token
            included if wanted.
        tokenizer: a keras-hub tokenizer, or `None` for token ids. Defaults
            to `None`.
        sequence_length: int. Length of the model's inputs. Defaults to
            `128`.

    Returns:
        A tuple `(x, y, sample_weight)` for `causal_lm.fit` (a causal LM
        with `preprocessor=None`, compiled with `weighted_metrics`).

    Example:
    ```python
    template = beft_keras.SQUAD_TEMPLATE
    prompts = [template.format(**example) for example in examples]
    answers = [" " + example["answer"] for example in examples]
    x, y, weights = beft_keras.generation_inputs(prompts, answers, tokenizer)
    causal_lm.fit(x, y, sample_weight=weights, batch_size=8)
    ```
    """
    prompts = packing.token_lists(prompts, tokenizer)
    answers = packing.token_lists(answers, tokenizer, start=False)
    if len(answers) != len(prompts):
        raise PromptError(
            f"`answers` must have one answer per prompt: {len(prompts)}. "
            f"Received: {len(answers)} answers"
        )
    end = getattr(tokenizer, "end_token_id", None)
    keep = packing.kept_start(tokenizer)
    packing.check_length(sequence_length, keep)
    sequences, weights = [], []
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        answer = answer + ([end] if end is not None else [])
        # One token more than the inputs: targets are shifted by one.
        room = sequence_length + 1 - len(answer)
        if room <= keep:
            raise PromptError(
                f"Example {i} does not fit: its answer is {len(answer)} "
                f"tokens, which leaves no room for its prompt at "
                f"sequence_length={sequence_length}. Raise `sequence_length`."
            )
        prompt = packing.truncate(prompt, room, keep)
        sequences.append(prompt + answer)
        weights.append([0] * len(prompt) + [1] * len(answer))
    token_ids, padding_mask = packing.pack(sequences, sequence_length + 1, tokenizer)
    weights, _ = packing.pack(weights, sequence_length + 1, None)
    x = {"token_ids": token_ids[:, :-1], "padding_mask": padding_mask[:, :-1]}
    return x, token_ids[:, 1:], weights[:, 1:].astype("float32")
