"""Dropout layers: active in training mode, the identity in eval mode."""

import numbers

from ..ops import dropout as D
from ..ops.dropout import dropout
from .module import Module


class Dropout(Module):
    """Zero each element with probability ``p`` while training and scale the rest by
    1 / (1 - p); the identity after ``eval()``."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p <= 1:
            raise ValueError(f"{type(self).__name__}: probability has to be between 0 and 1, "
                             f"but got {p!r}")
        self.p = p
        self.inplace = inplace

    def forward(self, input):
        return dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout1d(Dropout):
    """Zero whole channels of a (N, C, L) or (C, L) input with probability ``p`` while
    training (the others scaled by 1 / (1 - p)); the identity after ``eval()``."""

    def forward(self, input):
        return D.dropout1d(input, self.p, self.training)


class Dropout2d(Dropout):
    """Zero whole channels of a (N, C, H, W) or (C, H, W) input with probability ``p`` while
    training (the others scaled by 1 / (1 - p)); the identity after ``eval()``."""

    def forward(self, input):
        return D.dropout2d(input, self.p, self.training)


class AlphaDropout(Dropout):
    """Dropout for SELU networks: keeps a zero-mean unit-variance input's mean and variance
    while training; the identity after ``eval()``."""

    def forward(self, input):
        return D.alpha_dropout(input, self.p, self.training)


class FeatureAlphaDropout(Dropout):
    """AlphaDropout of whole channels of an (N, C, *) input while training; the identity after
    ``eval()``."""

    def forward(self, input):
        return D.feature_alpha_dropout(input, self.p, self.training)


class Dropout3d(Dropout):
    """Zero whole channels of a (N, C, D, H, W) or (C, D, H, W) input with probability ``p``
    while training (the others scaled by 1 / (1 - p)); the identity after ``eval()``."""

    def forward(self, input):
        return D.dropout3d(input, self.p, self.training)
