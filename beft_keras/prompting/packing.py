"""Token lists of prompts and answers: tokenized, truncated from the
start, right-padded. Shared by the preprocessing and generation."""

import numpy as np

from beft_keras import arguments


class PromptError(ValueError):
    """A prompt, answer or verbaliser word that cannot be encoded."""


def token_lists(texts, tokenizer, start=True):
    """Token ids of each text as a list of int; the tokenizer's start token
    first, if it has one and `start`."""
    # A str is a sequence too: one prompt would be one prompt per letter.
    if isinstance(texts, str):
        raise PromptError(
            "Prompts and answers must be a list, not a single str. "
            f"Received: {texts!r}"
        )
    texts = list(texts)
    if tokenizer is None:
        strings = [text for text in texts if isinstance(text, str)]
        if strings:
            raise PromptError(
                "Without a tokenizer, prompts and answers must be lists of "
                f"token ids; pass `tokenizer` for text. Received: "
                f"{strings[0]!r}"
            )
        return [[int(t) for t in text] for text in texts]
    if not all(isinstance(text, str) for text in texts):
        raise PromptError(
            "With a tokenizer, prompts and answers must be strings; pass "
            "`tokenizer=None` for token ids."
        )
    start_id = getattr(tokenizer, "start_token_id", None) if start else None
    prefix = [] if start_id is None else [start_id]
    return [prefix + token_list(tokens) for tokens in tokenizer(texts)]


def text_of(tokenizer, tokens):
    if not tokens:
        return ""
    text = tokenizer.detokenize(np.asarray([tokens], dtype="int32"))
    text = np.asarray(text).reshape(-1)[0]
    return (text.decode("utf-8") if isinstance(text, bytes) else str(text)).strip()


def token_list(tokens):
    return [int(t) for t in np.asarray(tokens)]


def kept_start(tokenizer):
    """How many tokens at a prompt's start truncation keeps: its start
    token. Token ids are given with theirs; a tokenizer may have none."""
    if tokenizer is None:
        return 1
    return int(getattr(tokenizer, "start_token_id", None) is not None)


def check_length(value, minimum, name="sequence_length"):
    """Refuses a length that is not an int above `minimum`: a sequence
    length must leave a prompt a token after its start token."""
    if not arguments.is_int(value) or value <= minimum:
        raise PromptError(
            f"`{name}` must be an int above {minimum}. Received: "
            f"{name}={value!r}"
        )


def truncate(prompt, length, keep):
    """`prompt` cut to `length` tokens from its start, after its first
    `keep` tokens: the answer or verbaliser word follows its end."""
    if len(prompt) <= length:
        return prompt
    return prompt[:keep] + prompt[len(prompt) - length + keep :]


def pack(sequences, length, tokenizer):
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    token_ids = np.full((len(sequences), length), pad, dtype="int32")
    padding_mask = np.zeros((len(sequences), length), dtype="bool")
    for i, sequence in enumerate(sequences):
        token_ids[i, : len(sequence)] = sequence
        padding_mask[i, : len(sequence)] = True
    return token_ids, padding_mask
