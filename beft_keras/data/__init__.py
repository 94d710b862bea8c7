"""GLUE and SuperGLUE data: tasks, TSV and TFDS readers, training regimes
and length-bucketed batches."""

from beft_keras.data.batching import BATCHINGS
from beft_keras.data.batching import BUCKETED
from beft_keras.data.batching import DEFAULT_BUCKETS
from beft_keras.data.batching import MIXED
from beft_keras.data.batching import batch_arrays
from beft_keras.data.batching import bucket_lengths
from beft_keras.data.batching import make_dataset
from beft_keras.data.batching import padding_efficiency
from beft_keras.data.batching import tokenize
from beft_keras.data.readers import DRAWS
from beft_keras.data.readers import PAPER
from beft_keras.data.readers import SEEDED
from beft_keras.data.readers import Examples
from beft_keras.data.readers import check_data_dir
from beft_keras.data.readers import load_split
from beft_keras.data.readers import read_rows
from beft_keras.data.readers import read_tsv
from beft_keras.data.readers import subsample
from beft_keras.data.readers import training_subset
from beft_keras.data.tasks import REGIMES
from beft_keras.data.tasks import SPLITS
from beft_keras.data.tasks import TASKS
from beft_keras.data.tasks import DataError
from beft_keras.data.tasks import TaskSpec
from beft_keras.data.tasks import get_task
