"""Training settings, in one place: the learning rate and epochs of each task
for each kind of model the commands train."""

import dataclasses

from beft_keras.data import get_task

ENCODER = "encoder"
CAUSAL_LM = "causal_lm"
MODEL_KINDS = (ENCODER, CAUSAL_LM)
# The paper's learning rate for full fine-tuning, on every task.
FULL_LEARNING_RATE = 1e-5


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How long and how fast one task trains.

    Attributes:
        learning_rate: float. AdamW's rate for bias-only and head-only
            fine-tuning and for the probe; `None` for a task with no
            default (a custom `TaskSpec` on an encoder).
        epochs: int. Fine-tuning epochs; `None` where `learning_rate` is.
        full_learning_rate: float. The rate for full fine-tuning.
    """

    learning_rate: float
    epochs: int
    full_learning_rate: float = FULL_LEARNING_RATE


# The paper's bias-only settings for BERT-base on GLUE (its Table 6); BoolQ
# is not in the paper (ours), and SQuAD trains causal LMs only.
# fmt: off
_ENCODER = {
    "sst2": (4e-4, 16), "cola": (7e-4, 16), "rte": (1e-3, 30),
    "mrpc": (7e-4, 60), "stsb": (1e-4, 60), "qnli": (1e-4, 30),
    "qqp": (4e-4, 30), "mnli": (1e-4, 30), "cb": (1e-3, 60),
    "wic": (1e-3, 16), "boolq": (1e-3, 16), "squad": (1e-3, 5),
}
# fmt: on
# A siamese head (each sentence embedded alone, cosine similarity) on an
# embedding model starts from its pretrained similarity and needs fewer,
# faster steps. Measured on all-MiniLM-L6-v2, low regime, b_v: STS-B at
# 1e-3 for 15 epochs gives dev Pearson 0.851-0.853 (seeds 0-2; untuned:
# 0.834); RTE at 1e-3 (seed 0) is at 0.603 by epoch 10 and stays within
# 0.58-0.63 to epoch 30, so 10 epochs (a third of the paper's 30).
_SIAMESE = {"stsb": (1e-3, 15), "rte": (1e-3, 10)}
# The paper's settings for OPT (MeZO's prompts): 5 epochs at 1e-3, 1e-2
# for CB.
_CAUSAL_LM = {"cb": (1e-2, 5)}
_CAUSAL_LM_DEFAULT = (1e-3, 5)


def training_settings(task, kind=ENCODER, siamese=False):
    """The default `TrainingSettings` of a task for a kind of model.

    Args:
        task: str or `TaskSpec`, e.g. `"rte"`.
        kind: str. `"encoder"` (a text classifier) or `"causal_lm"` (a
            prompted or generating causal LM). Defaults to `"encoder"`.
        siamese: bool. Whether an encoder reads a sentence pair with a
            siamese head (see `beft_keras.heads`). Defaults to `False`.

    Returns:
        A `TrainingSettings`.

    Example:
    ```python
    beft_keras.training_settings("rte")  # lr 1e-3, 30 epochs
    beft_keras.training_settings("cb", "causal_lm")  # lr 1e-2, 5 epochs
    ```
    """
    name = get_task(task).name
    if kind == ENCODER and siamese and name in _SIAMESE:
        learning_rate, epochs = _SIAMESE[name]
    elif kind == ENCODER:
        # A task of the caller's own `TaskSpec` has none: its fits are
        # given their rate and epochs.
        learning_rate, epochs = _ENCODER.get(name, (None, None))
    elif kind == CAUSAL_LM:
        learning_rate, epochs = _CAUSAL_LM.get(name, _CAUSAL_LM_DEFAULT)
    else:
        raise ValueError(
            f"Unknown model kind {kind!r}: one of {list(MODEL_KINDS)}."
        )
    return TrainingSettings(learning_rate, epochs)
