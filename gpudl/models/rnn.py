"""Recurrent models: a stacked-LSTM regressor (sequence -> values) and classifier."""

from .. import nn
from ..functions import cat
from .mlp import check_positive


def _last_hidden(h_n, bidirectional):
    """The top layer's final hidden state (N, H), both directions concatenated (N, 2H)."""
    if bidirectional:
        return cat([h_n[-2], h_n[-1]], dim=1)
    return h_n[-1]


class LSTMRegressor(nn.Module):
    """Stacked LSTM over a sequence, its last hidden state through a Linear layer.

    The usual one-step forecaster: feed a window of past values, predict the next ones.

    Args:
        input_size: features per time step.
        hidden_size, num_layers: the LSTM's width and depth.
        output_size: values predicted per sequence.
        dropout: dropout between LSTM layers (needs num_layers > 1).

    Shape: (N, T, input_size) -> (N, output_size).

    Example:
        >>> model = LSTMRegressor(1, 32, num_layers=2, output_size=1)
        >>> model(gd.randn(8, 20, 1)).shape
        (8, 1)
    """

    def __init__(self, input_size, hidden_size, num_layers=1, output_size=1, dropout=0.0):
        super().__init__()
        check_positive("LSTMRegressor", input_size=input_size, hidden_size=hidden_size,
                       num_layers=num_layers, output_size=output_size)
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True,
                            dropout=dropout)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x)
        return self.head(h_n[-1])                                  # (N, output_size)


class LSTMClassifier(nn.Module):
    """LSTM over a sequence of feature vectors or of token ids, then a Linear classifier.

    With ``vocab_size`` the input is integer tokens (N, T), embedded to ``input_size`` first;
    without it the input is float features (N, T, input_size). The class scores come from the
    final hidden state of the top layer (both directions when ``bidirectional``).

    Args:
        input_size: features per step (the embedding size when ``vocab_size`` is given).
        hidden_size, num_layers: the LSTM's width and depth.
        num_classes: number of output scores (logits; use CrossEntropyLoss).
        vocab_size: size of the token vocabulary, or None for float inputs.
        padding_idx: embedding row kept at zero (token id used for padding).
        bidirectional: run the sequence both ways.
        dropout: dropout between LSTM layers and before the classifier.

    Shape: (N, T) int64 or (N, T, input_size) -> (N, num_classes).
    """

    def __init__(self, input_size, hidden_size, num_classes, num_layers=1, vocab_size=None,
                 padding_idx=None, bidirectional=False, dropout=0.0):
        super().__init__()
        check_positive("LSTMClassifier", input_size=input_size, hidden_size=hidden_size,
                       num_classes=num_classes, num_layers=num_layers)
        self.embedding = None
        if vocab_size is not None:
            check_positive("LSTMClassifier", vocab_size=vocab_size)
            self.embedding = nn.Embedding(vocab_size, input_size, padding_idx=padding_idx)
        self.bidirectional = bidirectional
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0,
                            bidirectional=bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x):
        if self.embedding is not None:
            x = self.embedding(x)                                  # (N, T, input_size)
        _, (h_n, _) = self.lstm(x)
        return self.head(self.dropout(_last_hidden(h_n, self.bidirectional)))
