"""gpudl.nn: Module, Parameter, layers and losses with PyTorch's names (one import per line)."""

from . import functional, init, utils
from .container import ModuleDict, ModuleList, Sequential
from .module import Module
from .parameter import Parameter
from .linear import Flatten, Identity, Linear, Unflatten
from .activation import (ELU, GELU, GLU, Hardtanh, LeakyReLU, LogSoftmax, Mish, ReLU, ReLU6,
                         Sigmoid, SiLU, Softmax, Softplus, Tanh)
from .dropout import Dropout
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, RNNBase, RNNCellBase
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss, L1Loss,
                   MSELoss, NLLLoss, SmoothL1Loss)
from .normalization import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm1d, InstanceNorm2d,
                            LayerNorm)
from .sparse import Embedding
from .attention import MultiheadAttention, TransformerEncoder, TransformerEncoderLayer
from .pool import AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d
from .conv import Conv1d, Conv2d, ConvTranspose2d, Unfold
from .distance import CosineSimilarity
from .resample import PixelShuffle, Upsample
from . import parallel  # noqa: E402  (DistributedDataParallel; imports no MPI or NCCL)
# ------------------------------------------------------------------ session 10: nn breadth
from .transformer import Transformer, TransformerDecoder, TransformerDecoderLayer
from .activation import (CELU, Hardshrink, Hardsigmoid, Hardswish, LogSigmoid, PReLU, RReLU,
                         SELU, Softmax2d, Softmin, Softshrink, Softsign, Tanhshrink, Threshold)
from .padding import (CircularPad1d, CircularPad2d, ConstantPad1d, ConstantPad2d,
                      ReflectionPad1d, ReflectionPad2d, ReplicationPad1d, ReplicationPad2d,
                      ZeroPad1d, ZeroPad2d)
from .container import ParameterDict, ParameterList
from .dropout import AlphaDropout, Dropout1d, Dropout2d, FeatureAlphaDropout
from .normalization import RMSNorm
from .distance import PairwiseDistance
from .loss import (CosineEmbeddingLoss, GaussianNLLLoss, HingeEmbeddingLoss, MarginRankingLoss,
                   MultiLabelSoftMarginLoss, MultiMarginLoss, PoissonNLLLoss, SoftMarginLoss,
                   TripletMarginLoss, TripletMarginWithDistanceLoss)
from .pool import AdaptiveAvgPool1d, AdaptiveMaxPool1d, AdaptiveMaxPool2d
from .resample import UpsamplingBilinear2d, UpsamplingNearest2d
from .linear import Bilinear
from .padding import CircularPad3d, ConstantPad3d, ReflectionPad3d, ReplicationPad3d, ZeroPad3d
from .dropout import Dropout3d
from .sparse import EmbeddingBag
# ------------------------------------------------------------------ session 11, nn-utils
from .parameter import Buffer, UninitializedBuffer, UninitializedParameter
from .lazy import (LazyBatchNorm1d, LazyBatchNorm2d, LazyConv1d, LazyConv2d,
                   LazyConvTranspose2d, LazyInstanceNorm1d, LazyInstanceNorm2d, LazyLinear)
from .lazy import (LazyBatchNorm3d, LazyConv3d, LazyConvTranspose1d,  # noqa: E402
                   LazyConvTranspose3d, LazyInstanceNorm3d)
from .loss import CTCLoss, MultiLabelMarginLoss, NLLLoss2d
from .adaptive import AdaptiveLogSoftmaxWithLoss
# ------------------------------------------------------------------ session 11: nn-vision
from .conv import Conv3d, ConvTranspose1d, ConvTranspose3d, Fold
from .normalization import BatchNorm3d, InstanceNorm3d, LocalResponseNorm, SyncBatchNorm
from .pool import (AdaptiveAvgPool3d, AdaptiveMaxPool3d, AvgPool3d, FractionalMaxPool2d,
                   FractionalMaxPool3d,
                   LPPool1d, LPPool2d, LPPool3d, MaxPool3d, MaxUnpool1d, MaxUnpool2d,
                   MaxUnpool3d)
from .resample import ChannelShuffle, PixelUnshuffle
from . import modules  # noqa: E402  (torch.nn.modules' paths, after every class above)
