"""Dropout: zero each element with probability p, scale the survivors by 1 / (1 - p)."""

import math
import numbers
import warnings

from ..dtypes import is_floating
from .. import backend, inplace as _inplace, random
from ..autograd import ArrayFunction
from ..tensor import Tensor
from ._util import xp_of


def _on_kernels(x):
    """Whether kernels/dropout_cuda.py takes dropout of ``x``: cuda, float16/32/64."""
    if backend.kernel_device(x, bfloat16=True) != "cuda":
        return False
    from ..kernels import dropout_cuda
    return dropout_cuda.supports(x)


class Dropout(ArrayFunction):
    """Multiplies by a saved mask that already holds the 1 / (1 - p) scale (one pass back). On
    cuda (float16/32/64) two kernels instead, drawing from device-side generator states, so a
    captured CUDA graph draws a new mask at each replay (kernels/dropout_cuda.py)."""

    @staticmethod
    def forward(ctx, x, p, device):
        xp = xp_of(x)
        ctx.kept = None
        if p == 1:
            mask = xp.zeros(x.shape, x.dtype)
        elif _on_kernels(x):
            from ..kernels import dropout_cuda
            y, ctx.kept = dropout_cuda.forward(x, p, random.dropout_states())
            ctx.p, ctx.dtype = p, x.dtype
            return y
        else:
            mask = (random.uniform(x.shape, x.dtype, device) >= p).astype(x.dtype)
            mask *= 1 / (1 - p)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        if ctx.kept is not None:
            from ..kernels import dropout_cuda
            return dropout_cuda.backward(g, ctx.kept, ctx.p, ctx.dtype), None, None
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


# ------------------------------------------------------------------ channel-wise and alpha dropout
# One keep/drop draw per channel (a mask of shape (N, C, 1, ...), broadcast by the multiply), or
# per element for alpha dropout; the products are Tensor ops, so autograd needs no Function.
# They draw from CuPy's generator on cuda, so a CUDA graph capture refuses them.

# -scale * alpha of SELU: where a dropped unit of a SELU network sits
_SELU_SATURATION = 1.7580993408473766


def _checked(op, input, p):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"{op}: probability has to be between 0 and 1, but got {p!r}")
    if not is_floating(input.dtype):
        raise TypeError(f"{op}: input must be a floating point tensor, got {input.dtype}")
    return float(p)


def _keep_mask(input, p, shape):
    """A 0/1 Tensor of ``shape`` (no grad), each 1 with probability 1 - p."""
    keep = random.uniform(shape, input.dtype, input.device) >= p
    return Tensor._make(keep.astype(input.dtype), False, None, 0, input.device)


def _feature_dropout(input, p, training, feature_dims):
    """Zero whole channels: the ``feature_dims`` leading dims get their own draw, the rest
    share it."""
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0.0
    shape = input.shape[:feature_dims] + (1,) * (input.ndim - feature_dims)
    return input * (_keep_mask(input, p, shape) * (1 / (1 - p)))


def _check_ndim(op, input, ndims):
    if input.ndim not in ndims:
        raise RuntimeError(f"{op}: expected a {ndims[0]}-D or {ndims[1]}-D input, got "
                           f"{input.ndim}-D (shape {input.shape})")


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of a (N, C, L) or (C, L) input with probability ``p`` while
    training, scaling the others by 1 / (1 - p)."""
    p = _checked("dropout1d", input, p)
    _check_ndim("dropout1d", input, (2, 3))
    return _feature_dropout(input, p, training, input.ndim - 1)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of a (N, C, H, W) or (C, H, W) input with probability ``p`` while
    training, scaling the others by 1 / (1 - p). A 3-D input is taken as (N, C, L) and gets
    1-D channel dropout, as torch does (with torch's warning)."""
    p = _checked("dropout2d", input, p)
    _check_ndim("dropout2d", input, (3, 4))
    if input.ndim == 3:
        warnings.warn("dropout2d: received a 3D input; taking it as (N, C, L) and zeroing "
                      "whole channels of it (1-D channel dropout), as torch does. Use "
                      "dropout1d for (N, C, L) inputs.", stacklevel=2)
    return _feature_dropout(input, p, training, 2)


def dropout3d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of a (N, C, D, H, W) or (C, D, H, W) input with probability ``p``
    while training, scaling the others by 1 / (1 - p)."""
    p = _checked("dropout3d", input, p)
    _check_ndim("dropout3d", input, (4, 5))
    return _feature_dropout(input, p, training, input.ndim - 3)


def alpha_dropout(input, p=0.5, training=False, inplace=False):
    """Dropout for SELU networks: dropped elements are set to SELU's saturation value and the
    result is scaled and shifted so that a zero-mean unit-variance input keeps its mean and
    variance (Klambauer et al., as torch)."""
    p = _checked("alpha_dropout", input, p)
    return _alpha_dropout(input, p, training, input.shape)


def feature_alpha_dropout(input, p=0.5, training=False, inplace=False):
    """alpha_dropout of whole channels: each (N, C) slice of an (N, C, *) input is kept or
    dropped together (torch's feature_alpha_dropout, for SELU networks of convolutions)."""
    p = _checked("feature_alpha_dropout", input, p)
    if input.ndim < 2:
        raise RuntimeError(f"feature_alpha_dropout: feature dropout requires at least 2 "
                           f"dimensions in the input, got shape {tuple(input.shape)}")
    return _alpha_dropout(input, p, training, input.shape[:2] + (1,) * (input.ndim - 2))


def _alpha_dropout(input, p, training, shape):
    """alpha dropout whose keep mask has ``shape`` (broadcast over the input)."""
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0.0
    keep = _keep_mask(input, p, shape)
    a = 1 / math.sqrt((_SELU_SATURATION ** 2 * p + 1) * (1 - p))
    # kept: a * x + a * alpha * p; dropped: a * alpha * (p - 1)
    return input * (keep * a) + (keep - 1) * (_SELU_SATURATION * a) + _SELU_SATURATION * a * p
