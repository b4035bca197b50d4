"""gpudl.models: ready-made networks (each an nn.Module, PyTorch-style, returning raw scores).

One file per family: mlp, cnn, rnn, seq2seq, autoencoder, gan, transformer.
"""

from .autoencoder import VAE, Autoencoder
from .cnn import BasicBlock, LeNet, SmallResNet
from .gan import DCGANDiscriminator, DCGANGenerator
from .mlp import MLP
from .rnn import LSTMClassifier, LSTMRegressor
from .seq2seq import AdditiveAttention, DotAttention, Seq2SeqAttention
from .transformer import TransformerClassifier, sinusoidal_positions

TransformerEncoder = TransformerClassifier   # the public name: a transformer encoder with a head

__all__ = ["MLP", "LeNet", "BasicBlock", "SmallResNet", "LSTMRegressor", "LSTMClassifier",
           "Seq2SeqAttention", "DotAttention", "AdditiveAttention", "Autoencoder", "VAE",
           "DCGANGenerator", "DCGANDiscriminator", "TransformerClassifier", "TransformerEncoder",
           "sinusoidal_positions"]
