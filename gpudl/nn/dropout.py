"""Dropout layer: active in training mode, the identity in eval mode."""

import numbers

from ..ops.dropout import dropout
from .module import Module


class Dropout(Module):
    """Zero each element with probability ``p`` while training and scale the rest by
    1 / (1 - p); the identity after ``eval()``."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p <= 1:
            raise ValueError(f"Dropout: probability has to be between 0 and 1, but got {p!r}")
        self.p = p
        self.inplace = inplace

    def forward(self, input):
        return dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"
