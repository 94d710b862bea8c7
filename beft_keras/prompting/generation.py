"""Greedy answers of a causal LM to prompts."""

import keras
import numpy as np

from beft_keras.prompting import packing
from beft_keras.prompting.packing import PromptError


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
    # Its preprocessor would tokenize the token ids packed here.
    if getattr(causal_lm, "preprocessor", None) is not None:
        raise PromptError(
            "`causal_lm` must have no preprocessor: prompts are packed "
            "here. Build it with `preprocessor=None`. Received: a "
            f"{type(causal_lm.preprocessor).__name__}"
        )
    keep = packing.kept_start(tokenizer)
    packing.check_length(sequence_length, keep)
    packing.check_length(batch_size, 0, "batch_size")
    packing.check_length(max_answer_length, 0, "max_answer_length")
    room = sequence_length - max_answer_length
    # A prompt cut to its start token alone would be answered blind.
    if room <= keep:
        raise PromptError(
            "`max_answer_length` must leave room for a prompt in "
            f"`sequence_length`={sequence_length}. Received: "
            f"max_answer_length={max_answer_length}"
        )
    sequences = [
        packing.truncate(p, room, keep) for p in packing.token_lists(prompts, tokenizer)
    ]
    end = getattr(tokenizer, "end_token_id", None)
    answers = np.empty(len(sequences), dtype=object)
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        token_ids, padding_mask = packing.pack(chunk, sequence_length, tokenizer)
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
                tokens if tokenizer is None else packing.text_of(tokenizer, tokens)
            )
    return answers
