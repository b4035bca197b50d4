"""gpudl.nn: Module, Parameter, layers and losses with PyTorch's names (one import per line)."""

from . import functional, init, utils
from .container import ModuleDict, ModuleList, Sequential
from .module import Module
from .parameter import Parameter
from .linear import Flatten, Identity, Linear, Unflatten
from .activation import (ELU, GELU, Hardtanh, LeakyReLU, LogSoftmax, ReLU, ReLU6, Sigmoid, SiLU,
                         Softmax, Softplus, Tanh)
from .dropout import Dropout
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, RNNBase, RNNCellBase
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss, L1Loss,
                   MSELoss, NLLLoss, SmoothL1Loss)
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from .sparse import Embedding
from .attention import MultiheadAttention, TransformerEncoder, TransformerEncoderLayer
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .conv import Conv2d, ConvTranspose2d
from . import parallel  # noqa: E402  (DistributedDataParallel; imports no MPI or NCCL)
