"""Dropout: zero each element with probability p, scale the survivors by 1 / (1 - p)."""

import numbers

from ..dtypes import is_floating
from .. import inplace as _inplace, random
from ..autograd import Function
from ..tensor import Tensor
from ._util import xp_of


class Dropout(Function):
    """Multiplies by a saved mask that already holds the 1 / (1 - p) scale (one pass back)."""

    @staticmethod
    def forward(ctx, x, p, device):
        xp = xp_of(x)
        if p == 1:
            mask = xp.zeros(x.shape, x.dtype)
        else:
            mask = (random.uniform(x.shape, x.dtype, device) >= p).astype(x.dtype)
            mask *= 1 / (1 - p)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None, None


def dropout(input, p=0.5, training=True, inplace=False):
    """During training, zero each element with probability ``p`` and scale the rest by
    1 / (1 - p), so the expected value is unchanged; the identity when not training or p == 0.

    ``gd.manual_seed`` makes the mask repeatable.
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"dropout: input must be a Tensor, got {type(input).__name__}")
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"dropout: probability has to be between 0 and 1, but got {p!r}")
    if not training or p == 0:
        return input
    if not is_floating(input.dtype):
        raise TypeError(f"dropout: input must be a floating point tensor, got {input.dtype}")
    if inplace:         # the result written into input, recorded as torch does
        return _inplace.apply_flag(input, "dropout_",
                                   lambda t: Dropout.apply(t, float(p), t.device))
    return Dropout.apply(input, float(p), input.device)
