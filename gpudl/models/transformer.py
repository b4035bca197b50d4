"""A Transformer-encoder sequence classifier with learned or sinusoidal positions."""

import math

import numpy as np

from .. import nn
from ..creation import arange, tensor
from .mlp import check_positive


def sinusoidal_positions(max_len, d_model):
    """The fixed encodings of Vaswani et al.: sin/cos of position / 10000^(2i/d), (max_len, d)."""
    position = np.arange(max_len)[:, None]                           # (max_len, 1)
    frequency = np.exp(-math.log(10000.0) * np.arange(0, d_model, 2) / d_model)
    table = np.zeros((max_len, d_model), np.float32)
    table[:, 0::2] = np.sin(position * frequency)
    table[:, 1::2] = np.cos(position * frequency[:d_model // 2])
    return table


class TransformerClassifier(nn.Module):
    """Token embedding + positions -> ``nn.TransformerEncoder`` -> mean over positions -> Linear.

    Args:
        vocab_size: number of token ids.
        d_model, nhead, num_layers: the encoder's width, heads and depth.
        num_classes: number of output scores (logits; use CrossEntropyLoss).
        max_len: longest sequence accepted.
        dim_feedforward: hidden size of each feed-forward block (default 4 * d_model).
        dropout: dropout inside the encoder layers and before the classifier.
        positions: 'learned' (an Embedding of positions) or 'sinusoidal' (fixed).
        pad_idx: token id of padding: padded positions are ignored by attention and pooling.

    Shape: (N, T) int64 with T <= max_len -> (N, num_classes).
    """

    def __init__(self, vocab_size, d_model, nhead, num_layers, num_classes, max_len,
                 dim_feedforward=None, dropout=0.1, positions="learned", pad_idx=None):
        super().__init__()
        check_positive("TransformerClassifier", vocab_size=vocab_size, d_model=d_model,
                       nhead=nhead, num_layers=num_layers, num_classes=num_classes,
                       max_len=max_len)
        if positions not in ("learned", "sinusoidal"):
            raise ValueError(f"TransformerClassifier: positions must be 'learned' or "
                             f"'sinusoidal', got {positions!r}")
        self.max_len, self.pad_idx = max_len, pad_idx
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_idx)
        if positions == "learned":
            self.position = nn.Embedding(max_len, d_model)
        else:
            self.position = None
            self.register_buffer("position_table",
                                 tensor(sinusoidal_positions(max_len, d_model)), persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward or 4 * d_model,
                                           dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, num_classes)

    def _positions(self, length, device):
        if self.position is not None:
            return self.position(arange(length, device=device))     # (T, d_model)
        return self.position_table[:length]

    def forward(self, tokens):
        if tokens.ndim != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(f"TransformerClassifier: expected tokens of shape (N, T) with "
                             f"T <= max_len={self.max_len}, got {tokens.shape}")
        x = self.embedding(tokens) + self._positions(tokens.shape[1], tokens.device)
        padding = None if self.pad_idx is None else (tokens == self.pad_idx)   # (N, T)
        h = self.encoder(x, src_key_padding_mask=padding)            # (N, T, d_model)
        if padding is None:
            pooled = h.mean(dim=1)
        else:
            keep = (~padding).float().unsqueeze(-1)                  # (N, T, 1)
            pooled = (h * keep).sum(dim=1) / keep.sum(dim=1).clip(min=1.0)
        return self.head(self.dropout(pooled))
