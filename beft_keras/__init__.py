"""beft-keras: bias-efficient fine-tuning (BEFT) of language models in Keras."""

from beft_keras.added_biases import AddedBiasError
from beft_keras.added_biases import add_bias
from beft_keras.added_biases import add_biases
from beft_keras.data import DataError
from beft_keras.data import TaskSpec
from beft_keras.data import get_task
from beft_keras.data import load_split
from beft_keras.data import make_dataset
from beft_keras.delta import DeltaError
from beft_keras.delta import DeltaInfo
from beft_keras.delta import DeltaSwitcher
from beft_keras.delta import load_delta
from beft_keras.delta import save_delta
from beft_keras.metrics import compute_metrics
from beft_keras.metrics import predictions_from_logits
from beft_keras.probe import BeftProbe
from beft_keras.prompting import SQUAD_TEMPLATE
from beft_keras.prompting import SST2_TEMPLATE
from beft_keras.prompting import SST2_VERBALIZER
from beft_keras.prompting import TASK_PROMPTS
from beft_keras.prompting import PromptError
from beft_keras.prompting import PromptPreprocessor
from beft_keras.prompting import PromptTemplate
from beft_keras.prompting import TaskPrompt
from beft_keras.prompting import Verbalizer
from beft_keras.prompting import VerbalizerClassifier
from beft_keras.prompting import classification_inputs
from beft_keras.prompting import generate_answers
from beft_keras.prompting import generation_inputs
from beft_keras.report import BeftResults
from beft_keras.terms import PAPER_SYMBOLS
from beft_keras.terms import TERMS
from beft_keras.terms import BiasTerm
from beft_keras.terms import bias_terms
from beft_keras.terms import head_variables
from beft_keras.trainable import BiasOnlyTrainable
from beft_keras.trainable import TrainableSummary

__version__ = "0.1.0"
