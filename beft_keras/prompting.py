"""Prompted fine-tuning of causal LMs, MeZO style: classification as the
next-token scores of verbaliser words after a prompt, generation as the LM
loss on the answer tokens only."""

import dataclasses
import string

import keras
import numpy as np
import tensorflow as tf


class PromptError(ValueError):
    """A prompt, answer or verbaliser word that cannot be encoded."""


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """A prompt with named `{field}` slots, filled by `format`.

    Attributes:
        text: str. The prompt, e.g. `"{sentence} It was"`. The answer (a
            verbaliser word or a generated answer) follows it directly.

    Example:
    ```python
    template = beft_keras.PromptTemplate("{sentence} It was")
    template.format(sentence="A gripping film.")  # "A gripping film. It was"
    ```
    """

    text: str

    @property
    def fields(self):
        """The names of the template's slots, in order."""
        names = [f for _, f, _, _ in string.Formatter().parse(self.text) if f]
        return tuple(dict.fromkeys(names))

    def format(self, **fields):
        try:
            return self.text.format(**fields)
        except KeyError as error:
            raise PromptError(
                f"Template {self.text!r} needs the field {error.args[0]!r}. "
                f"Received fields: {sorted(fields)}"
            ) from None


@dataclasses.dataclass(frozen=True)
class Verbalizer:
    """One word per class, scored as the token that follows the prompt.

    Attributes:
        words: tuple of str or int. The word of each class, in class order,
            with the leading space a byte-pair tokenizer needs to read it as
            a word after the prompt (`" great"`), or token ids directly.

    Example:
    ```python
    verbalizer = beft_keras.Verbalizer((" terrible", " great"))
    verbalizer.token_ids(causal_lm.preprocessor.tokenizer)  # two ids
    ```
    """

    words: tuple

    def token_ids(self, tokenizer=None):
        """The token id of each word.

        Args:
            tokenizer: a keras-hub tokenizer, or `None` when `words` are
                token ids. Defaults to `None`.

        Returns:
            A list of int, one per class.

        Raises:
            PromptError: if a word is not exactly one token, or two classes
                share a token.
        """
        ids = []
        for word in self.words:
            if not isinstance(word, str):
                ids.append(int(word))
                continue
            if tokenizer is None:
                raise PromptError(
                    f"Verbaliser word {word!r} needs a tokenizer to become "
                    "a token id. Pass `tokenizer`, or give token ids."
                )
            tokens = _token_list(tokenizer(word))
            if len(tokens) != 1:
                raise PromptError(
                    f"Verbaliser word {word!r} is {len(tokens)} tokens "
                    f"{tokens} for this tokenizer; each word must be one "
                    "token (a leading space often makes it one)."
                )
            ids.append(tokens[0])
        if len(set(ids)) != len(ids):
            raise PromptError(
                f"Verbaliser words {list(self.words)} share a token: {ids}."
            )
        return ids


@dataclasses.dataclass(frozen=True)
class TaskPrompt:
    """How a classification task is put to a causal LM.

    Attributes:
        template: `PromptTemplate` whose slots are the task's text features.
        verbalizer: `Verbalizer`, one word per class in label order; `None`
            for a generation task, whose answers follow the prompt.
        learning_rate: float. The paper's bias-only rate for OPT.
        epochs: int. The paper's epochs for OPT.
    """

    template: PromptTemplate
    verbalizer: Verbalizer = None
    learning_rate: float = 1e-3
    epochs: int = 5


# The prompts of MeZO (Malladi et al., 2023), which the BEFT paper follows
# for OPT; slots are named after the tasks' features (`beft_keras.data`).
SST2_TEMPLATE = PromptTemplate("{sentence} It was")
SST2_VERBALIZER = Verbalizer((" terrible", " great"))
SQUAD_TEMPLATE = PromptTemplate(
    "Title: {title}\nContext: {context}\nQuestion: {question}\nAnswer:"
)
TASK_PROMPTS = {
    "sst2": TaskPrompt(SST2_TEMPLATE, SST2_VERBALIZER),
    # GLUE's RTE: label 0 is entailment.
    "rte": TaskPrompt(
        PromptTemplate(
            '{sentence1}\nDoes this mean that "{sentence2}" is true? '
            "Yes or No?\n"
        ),
        Verbalizer(("Yes", "No")),
    ),
    # Labels: entailment, contradiction, neutral.
    "cb": TaskPrompt(
        PromptTemplate(
            'Suppose {premise} Can we infer that "{hypothesis}"? '
            "Yes, No, or Maybe?\n"
        ),
        Verbalizer(("Yes", "No", "Maybe")),
        learning_rate=1e-2,
    ),
    "boolq": TaskPrompt(
        PromptTemplate("{passage} {question}?"), Verbalizer((" No", " Yes"))
    ),
    "squad": TaskPrompt(SQUAD_TEMPLATE),
}


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
        features: tuple of str. The names of the text features the
            preprocessor is called with, in order.
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
    keep = _kept_start(tokenizer)
    sequences = [
        _truncate(prompt, sequence_length, keep)
        for prompt in _token_lists(prompts, tokenizer)
    ]
    token_ids, padding_mask = _pack(sequences, sequence_length, tokenizer)
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
    prompts = _token_lists(prompts, tokenizer)
    answers = _token_lists(answers, tokenizer, start=False)
    if len(answers) != len(prompts):
        raise PromptError(
            f"`answers` must have one answer per prompt: {len(prompts)}. "
            f"Received: {len(answers)} answers"
        )
    end = getattr(tokenizer, "end_token_id", None)
    keep = _kept_start(tokenizer)
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
        prompt = _truncate(prompt, room, keep)
        sequences.append(prompt + answer)
        weights.append([0] * len(prompt) + [1] * len(answer))
    token_ids, padding_mask = _pack(sequences, sequence_length + 1, tokenizer)
    weights, _ = _pack(weights, sequence_length + 1, None)
    x = {"token_ids": token_ids[:, :-1], "padding_mask": padding_mask[:, :-1]}
    return x, token_ids[:, 1:], weights[:, 1:].astype("float32")


def generate_answers(
    causal_lm,
    prompts,
    tokenizer=None,
    sequence_length=128,
    max_answer_length=32,
    batch_size=16,
):
    """Greedy answers of a causal LM to prompts, as text (or token ids).

    Each prompt keeps room for `max_answer_length` tokens (losing tokens
    from its start if it must) and is answered with `causal_lm.generate`,
    which decodes with the sampler the model was compiled with (keras-hub's
    default is `"top_k"`; compile with `sampler="greedy"` to score
    answers). An answer ends at the tokenizer's end token.

    Args:
        causal_lm: a keras-hub `CausalLM` without preprocessor.
        prompts: list of str, formatted prompts; or, with `tokenizer=None`,
            lists of token ids, start token included.
        tokenizer: the causal LM's tokenizer, or `None` for token ids.
            Defaults to `None`.
        sequence_length: int. Prompt and answer together. Defaults to `128`.
        max_answer_length: int. The longest answer, in tokens. Defaults to
            `32`.
        batch_size: int. Prompts generated at once. Defaults to `16`.

    Returns:
        A numpy array of str, one answer per prompt (of token-id lists
        without a tokenizer).

    Example:
    ```python
    causal_lm = keras_hub.models.OPTCausalLM(backbone, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    prompts = [beft_keras.SQUAD_TEMPLATE.format(**e) for e in examples]
    beft_keras.generate_answers(causal_lm, prompts, tokenizer)
    ```
    """
    if not 0 < max_answer_length < sequence_length:
        raise PromptError(
            "`max_answer_length` must be positive and below "
            f"`sequence_length`={sequence_length}. Received: "
            f"max_answer_length={max_answer_length}"
        )
    keep = _kept_start(tokenizer)
    room = sequence_length - max_answer_length
    sequences = [
        _truncate(p, room, keep) for p in _token_lists(prompts, tokenizer)
    ]
    end = getattr(tokenizer, "end_token_id", None)
    answers = np.empty(len(sequences), dtype=object)
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        token_ids, padding_mask = _pack(chunk, sequence_length, tokenizer)
        outputs = causal_lm.generate(
            {"token_ids": token_ids, "padding_mask": padding_mask},
            stop_token_ids=None if end is None else [end],
        )
        generated = keras.ops.convert_to_numpy(outputs["token_ids"])
        mask = keras.ops.convert_to_numpy(outputs["padding_mask"])
        for i, prompt in enumerate(chunk):
            tokens = generated[i, len(prompt) :][mask[i, len(prompt) :]]
            tokens = [int(t) for t in tokens if t != end][:max_answer_length]
            answers[start + i] = (
                tokens if tokenizer is None else _text(tokenizer, tokens)
            )
    return answers


@keras.saving.register_keras_serializable(package="beft_keras")
class VerbalizerClassifier(keras.Model):
    """Classify prompts by a causal LM's next-token scores of verbaliser words.

    The logit of class `c` is the language model's logit, at the last token
    of the prompt, of the token of verbaliser word `c`: the score the LM's
    own head gives that word as the next token. Trained with sparse
    categorical cross-entropy over these logits, as MeZO and the BEFT paper
    train OPT on classification tasks. The model holds nothing but the
    backbone (the LM head is the backbone's tied or reverse embedding), so
    `BiasOnlyTrainable("value")` trains the value biases alone and a delta
    saved from it loads onto the causal LM of the same backbone.

    Args:
        backbone: a keras-hub decoder backbone with a `token_embedding`
            that maps hidden states back to the vocabulary, as the causal
            LM's head does: `OPTBackbone`, `GPT2Backbone`, `QwenBackbone`,
            `LlamaBackbone`, ... (`causal_lm.backbone`).
        verbalizer_token_ids: list of int. The token of each class's word,
            e.g. from `Verbalizer.token_ids(tokenizer)`.

    Example:
    ```python
    causal_lm = keras_hub.models.OPTCausalLM.from_preset("opt_125m_en")
    tokenizer = causal_lm.preprocessor.tokenizer
    classifier = beft_keras.VerbalizerClassifier(
        causal_lm.backbone, beft_keras.SST2_VERBALIZER.token_ids(tokenizer)
    )
    prompts = [beft_keras.SST2_TEMPLATE.format(sentence=s) for s in sentences]
    x, y = beft_keras.classification_inputs(prompts, labels, tokenizer)
    beft_keras.BiasOnlyTrainable("value").apply(classifier)
    classifier.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["sparse_categorical_accuracy"],
    )
    classifier.fit(x, y, batch_size=8, epochs=5)
    ```
    """

    def __init__(self, backbone, verbalizer_token_ids, **kwargs):
        token_ids = [int(i) for i in verbalizer_token_ids]
        if len(set(token_ids)) < 2:
            raise PromptError(
                "`verbalizer_token_ids` must hold at least two different "
                f"tokens. Received: {token_ids}"
            )
        # Functional, as keras-hub tasks are: built as soon as it exists.
        inputs = backbone.input
        hidden = backbone(inputs)
        # Prompts are right-padded: the last real token predicts the word.
        lengths = keras.ops.sum(
            keras.ops.cast(inputs["padding_mask"], "int32"), axis=1
        )
        last = keras.ops.maximum(lengths - 1, 0)
        hidden = keras.ops.take_along_axis(
            hidden, last[:, None, None], axis=1
        )[:, 0]
        logits = backbone.token_embedding(hidden, reverse=True)
        logits = keras.ops.take(logits, token_ids, axis=-1)
        logits = keras.ops.cast(logits, "float32")
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.verbalizer_token_ids = token_ids

    def get_config(self):
        # Not the functional config: the constructor's arguments.
        return {
            "backbone": keras.layers.serialize(self.backbone),
            "verbalizer_token_ids": self.verbalizer_token_ids,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)


def _token_lists(texts, tokenizer, start=True):
    """Token ids of each text as a list of int; the tokenizer's start token
    first, if it has one and `start`."""
    if tokenizer is None:
        return [[int(t) for t in text] for text in texts]
    texts = list(texts)
    if not all(isinstance(text, str) for text in texts):
        raise PromptError(
            "With a tokenizer, prompts and answers must be strings; pass "
            "`tokenizer=None` for token ids."
        )
    start_id = getattr(tokenizer, "start_token_id", None) if start else None
    prefix = [] if start_id is None else [start_id]
    return [prefix + _token_list(tokens) for tokens in tokenizer(texts)]


def _text(tokenizer, tokens):
    if not tokens:
        return ""
    text = tokenizer.detokenize(np.asarray([tokens], dtype="int32"))
    text = np.asarray(text).reshape(-1)[0]
    return (text.decode("utf-8") if isinstance(text, bytes) else str(text)).strip()


def _token_list(tokens):
    return [int(t) for t in np.asarray(tokens)]


def _kept_start(tokenizer):
    """How many tokens at a prompt's start truncation keeps: its start
    token. Token ids are given with theirs; a tokenizer may have none."""
    if tokenizer is None:
        return 1
    return int(getattr(tokenizer, "start_token_id", None) is not None)


def _truncate(prompt, length, keep):
    """`prompt` cut to `length` tokens from its start, after its first
    `keep` tokens: the answer or verbaliser word follows its end."""
    if len(prompt) <= length:
        return prompt
    return prompt[:keep] + prompt[len(prompt) - length + keep :]


def _pack(sequences, length, tokenizer):
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    token_ids = np.full((len(sequences), length), pad, dtype="int32")
    padding_mask = np.zeros((len(sequences), length), dtype="bool")
    for i, sequence in enumerate(sequences):
        token_ids[i, : len(sequence)] = sequence
        padding_mask[i, : len(sequence)] = True
    return token_ids, padding_mask
