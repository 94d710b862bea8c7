"""Prompts that put a task to a causal LM: templates with the task's
features as slots, and verbaliser words, one per class (MeZO's prompts)."""

import dataclasses
import string

from beft_keras.prompting.packing import PromptError
from beft_keras.prompting.packing import token_list


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """A prompt with named `{field}` slots, filled by `format`.

    Attributes:
        text: str. The prompt, e.g. `"{sentence} It was"`. The answer (a
            verbaliser word or a generated answer) follows it directly.
            Slots are bare feature names; a literal brace is `{{` or `}}`.

    Example:
    ```python
    template = beft_keras.PromptTemplate("{sentence} It was")
    template.format(sentence="A gripping film.")  # "A gripping film. It was"
    ```
    """

    text: str

    def __post_init__(self):
        if not isinstance(self.text, str):
            raise TypeError(
                "`text` must be a str with `{field}` slots. Received: text "
                f"of type {type(self.text).__name__}"
            )
        try:
            slots = [
                (field, spec, conversion)
                for _, field, spec, conversion in string.Formatter().parse(
                    self.text
                )
                if field is not None
            ]
        except ValueError as error:
            raise PromptError(
                f"Template {self.text!r} is not a format string ({error}); "
                "write a literal brace as `{{` or `}}`."
            ) from None
        for field, spec, conversion in slots:
            # `format` fills slots by name, and `PromptPreprocessor` with
            # the features' text as is: a positional slot (`{}`), an
            # attribute, a conversion or a format spec would be lost.
            if not field.isidentifier() or spec or conversion:
                slot = "{" + field + (f"!{conversion}" if conversion else "")
                slot += (f":{spec}" if spec else "") + "}"
                raise PromptError(
                    f"Template {self.text!r} has the slot {slot}; slots must "
                    "be bare feature names, as `{sentence}`."
                )

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

    def __post_init__(self):
        # A str is a sequence too: `Verbalizer(" great")` would be six
        # one-character classes.
        if isinstance(self.words, str):
            raise PromptError(
                "`words` must be a tuple with one word per class, e.g. "
                f"`({self.words!r}, ...)`, not a single str. "
                f"Received: words={self.words!r}"
            )

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
            tokens = token_list(tokenizer(word))
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
    """

    template: PromptTemplate
    verbalizer: Verbalizer = None


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
    ),
    "boolq": TaskPrompt(
        PromptTemplate("{passage} {question}?"), Verbalizer((" No", " Yes"))
    ),
    # Labels: another sense, the same sense.
    "wic": TaskPrompt(
        PromptTemplate(
            'Does the word "{word}" have the same meaning in these two '
            "sentences? Yes, No?\n{sentence1}\n{sentence2}\n"
        ),
        Verbalizer(("No", "Yes")),
    ),
    "squad": TaskPrompt(SQUAD_TEMPLATE),
    # GLUE's other classification tasks are not in MeZO: questions in the
    # style of its RTE and CB prompts, answered by the same words.
    # Labels: unacceptable, acceptable.
    "cola": TaskPrompt(
        PromptTemplate(
            "{sentence}\nIs this sentence grammatical? Yes or No?\n"
        ),
        Verbalizer(("No", "Yes")),
    ),
    # Labels: not equivalent, equivalent.
    "mrpc": TaskPrompt(
        PromptTemplate(
            '{sentence1}\nDoes this mean the same as "{sentence2}"? '
            "Yes or No?\n"
        ),
        Verbalizer(("No", "Yes")),
    ),
    # Labels: not duplicate, duplicate.
    "qqp": TaskPrompt(
        PromptTemplate(
            "{question1}\n{question2}\nDo these two questions ask the same "
            "thing? Yes or No?\n"
        ),
        Verbalizer(("No", "Yes")),
    ),
    # Labels: entailment (the sentence answers), not entailment.
    "qnli": TaskPrompt(
        PromptTemplate(
            '{sentence}\nDoes this answer the question "{question}"? '
            "Yes or No?\n"
        ),
        Verbalizer(("Yes", "No")),
    ),
    # Labels: entailment, neutral, contradiction (CB's words, another order).
    "mnli": TaskPrompt(
        PromptTemplate(
            'Suppose {premise} Can we infer that "{hypothesis}"? '
            "Yes, No, or Maybe?\n"
        ),
        Verbalizer(("Yes", "Maybe", "No")),
    ),
}
