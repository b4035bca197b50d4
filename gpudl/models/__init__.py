"""gpudl.models: ready-made networks (each an nn.Module, PyTorch-style, returning raw scores).

One file per family: mlp, cnn, rnn, seq2seq, autoencoder, gan, transformer.
"""

from .mlp import MLP
from .rnn import LSTMClassifier, LSTMRegressor
from .seq2seq import AdditiveAttention, DotAttention, Seq2SeqAttention
from .autoencoder import VAE, Autoencoder
from .transformer import TransformerClassifier, sinusoidal_positions
