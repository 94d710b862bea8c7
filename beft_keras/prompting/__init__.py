"""Prompted fine-tuning of causal LMs, MeZO style: classification as the
next-token scores of verbaliser words after a prompt, generation as the LM
loss on the answer tokens only."""

from beft_keras.prompting.classifier import VerbalizerClassifier
from beft_keras.prompting.generation import generate_answers
from beft_keras.prompting.packing import PromptError
from beft_keras.prompting.preprocessing import PromptPreprocessor
from beft_keras.prompting.preprocessing import classification_inputs
from beft_keras.prompting.preprocessing import generation_inputs
from beft_keras.prompting.templates import SQUAD_TEMPLATE
from beft_keras.prompting.templates import SST2_TEMPLATE
from beft_keras.prompting.templates import SST2_VERBALIZER
from beft_keras.prompting.templates import TASK_PROMPTS
from beft_keras.prompting.templates import PromptTemplate
from beft_keras.prompting.templates import TaskPrompt
from beft_keras.prompting.templates import Verbalizer
