"""``gpudl.keras.layers``: Keras's layer names, arguments, defaults and weight layouts, each a
gpudl Module (``from gpudl.keras.layers import Dense, Conv2D, LSTM``)."""

from ..engine import Input, InputLayer, Layer
from .core import (Activation, Add, Average, Concatenate, Dense, Dropout, Embedding, Flatten,
                   Lambda, LeakyReLU, Maximum, Multiply, Permute, ReLU, RepeatVector, Rescaling,
                   Reshape, Softmax, Subtract, add, average, concatenate, multiply, subtract)
from .convolutional import (AveragePooling1D, AveragePooling2D, Conv1D, Conv2D, Conv2DTranspose,
                            GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D,
                            GlobalMaxPooling2D, MaxPooling1D, MaxPooling2D, UpSampling2D,
                            ZeroPadding2D)
from .normalization import BatchNormalization, LayerNormalization, Normalization
from .recurrent import GRU, LSTM, Bidirectional, SimpleRNN, TimeDistributed
from .attention import Attention, MultiHeadAttention
# branch keras: Keras 3 layers scripts use often
from .activation_layers import ELU, PReLU
from .attention import AdditiveAttention
from .convolutional import (Conv1DTranspose, DepthwiseConv1D, DepthwiseConv2D,
                            GlobalAveragePooling3D, GlobalMaxPooling3D)
from .core import Dot, Identity, Masking, Minimum, dot, maximum, minimum
from .normalization import GroupNormalization, RMSNormalization, UnitNormalization
from .preprocessing import CategoryEncoding, RandomFlip
from .regularization import ActivityRegularization, AlphaDropout, GaussianDropout, GaussianNoise
from .reshaping import Cropping1D, Cropping2D, Cropping3D
from .rnn_cells import RNN, GRUCell, LSTMCell, SimpleRNNCell

# Keras's aliases
MaxPool2D, MaxPool1D, AvgPool2D = MaxPooling2D, MaxPooling1D, AveragePooling2D
Convolution2D, Convolution1D = Conv2D, Conv1D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalAvgPool1D, GlobalAvgPool3D = GlobalAveragePooling1D, GlobalAveragePooling3D
GlobalMaxPool1D, GlobalMaxPool2D = GlobalMaxPooling1D, GlobalMaxPooling2D
GlobalMaxPool3D, AvgPool1D = GlobalMaxPooling3D, AveragePooling1D
Convolution2DTranspose = Conv2DTranspose
# branch keras-2: 3-D convolution, pooling and resampling
from .convolutional3d import (AveragePooling3D, Conv3D, Conv3DTranspose, MaxPooling3D,
                              UpSampling3D, ZeroPadding3D)
Convolution3D, Convolution3DTranspose = Conv3D, Conv3DTranspose
MaxPool3D, AvgPool3D = MaxPooling3D, AveragePooling3D
from .image_preprocessing import (CenterCrop, RandomBrightness, RandomContrast, RandomCrop,
                                  RandomRotation, RandomTranslation, RandomZoom, Resizing)
from .rnn_cells import StackedRNNCells

__all__ = [name for name in dir() if not name.startswith("_")]
