"""gpudl.optim: optimizers (SGD, Adam, AdamW, RMSprop, Adagrad, NAdam, RAdam, Adamax, Adadelta,
Rprop, ASGD, LBFGS, Adafactor, SparseAdam), learning-rate schedulers and weight averaging (swa_utils)."""

from . import lr_scheduler, swa_utils
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import Adagrad, RMSprop
from .sgd import SGD
from .adam_variants import Adamax, NAdam, RAdam
from .classic import ASGD, Adadelta, Rprop
from .lbfgs import LBFGS
from .adafactor import Adafactor  # session 11, nn-utils
from .sparse_adam import SparseAdam

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler",
           "NAdam", "RAdam", "Adamax", "Adadelta", "Rprop", "ASGD", "LBFGS",
           "Adafactor", "SparseAdam", "swa_utils"]
