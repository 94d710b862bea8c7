"""beft-keras: bias-efficient fine-tuning (BEFT) of language models in Keras."""

from beft_keras.terms import PAPER_SYMBOLS
from beft_keras.terms import TERMS
from beft_keras.terms import BiasTerm
from beft_keras.terms import bias_terms
from beft_keras.terms import head_variables
from beft_keras.trainable import BiasOnlyTrainable
from beft_keras.trainable import TrainableSummary

__version__ = "0.1.0"
