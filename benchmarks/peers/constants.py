"""What the runs, the PEFT worker and the report share: the stacks and
beft-keras variants, the tasks and the paper's settings for each, the batch
and input sizes of every run, and the smoke run's sizes. A module of its
own: the package's `main` imports every part, which all read these."""

from benchmarks import common

PEFT = "peft"
STACKS = (PEFT,) + common.BACKENDS
DEFAULT, MATCHED, CLS = "default", "matched", "cls"
VARIANTS = (DEFAULT, MATCHED, CLS)
TASKS = ("sst2", "rte", "stsb")
# The paper's bias-only settings for BERT-base (its Table 6): PEFT trains
# at these, and so does every beft-keras variant but `default` (whose
# learning rate is the library's own).
PAPER_SETTINGS = {"sst2": (4e-4, 16), "rte": (1e-3, 30), "stsb": (1e-4, 60)}
SEEDS = (0, 1, 2)
BATCH_SIZE = 16
MAX_LENGTH = 128
QUICK_TRAIN, QUICK_DEV = 64, 256
