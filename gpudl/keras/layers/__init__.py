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

# Keras's aliases
MaxPool2D, MaxPool1D, AvgPool2D = MaxPooling2D, MaxPooling1D, AveragePooling2D
Convolution2D, Convolution1D = Conv2D, Conv1D
GlobalAvgPool2D = GlobalAveragePooling2D

__all__ = [name for name in dir() if not name.startswith("_")]
