"""F.interpolate and F.pixel_shuffle: resampling without kernels.

Interpolation is separable: along each spatial dim each output is a weighted sum of one input
cell (nearest), two (linear) or four (cubic), gathered (``weighted_taps``); the gradient adds
back through the gather. Source positions follow torch's upsampling rules (align_corners,
scale_factor given or recomputed); 'area' is adaptive average pooling, as in torch.
"""

import math

import numpy as np

from .. import backend
from ..amp.autocast_mode import autocast, cast_inputs, state as _autocast
from ..tensor import Tensor
from ._util import EmptyOutputError

# the modes that interpolate, with the spatial dims each takes (align_corners applies to them)
_INTERPOLATING = {"linear": 1, "bilinear": 2, "trilinear": 3, "bicubic": 2}
_CUBIC_A = -0.75                     # torch's (and OpenCV's) bicubic kernel parameter


def _taps(n_in, n_out, mode, align_corners, scale):
    """(cells, weights), each (n_out, taps): the input cells each output reads along one dim
    and their float64 weights (one tap for nearest; two for linear, four for cubic, all read
    even when one weighs 0, as torch's kernels do; cubic's clamped to the edge cells)."""
    dst = np.arange(n_out, dtype=np.float64)
    ratio = n_in / n_out if scale is None else 1.0 / scale
    if mode in ("nearest", "nearest-exact"):
        centre = 0.5 if mode == "nearest-exact" else 0.0     # pixel centres, or corners
        cells = np.minimum(np.floor((dst + centre) * ratio).astype(np.int64), n_in - 1)
        return cells[:, None], np.ones((n_out, 1))
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = (dst + 0.5) * ratio - 0.5
    if mode == "bicubic":               # source positions below 0 are kept: the taps clamp
        left = np.floor(src).astype(np.int64)
        cells = np.clip(left[:, None] + np.arange(-1, 3), 0, n_in - 1)
        return cells, _cubic_weights(src - left)
    src = np.maximum(src, 0.0)
    left = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    right = np.minimum(left + 1, n_in - 1)
    frac = src - left
    return np.stack([left, right], 1), np.stack([1 - frac, frac], 1)


def _cubic_weights(t):
    """(n, 4) weights of the cells at -1, 0, 1, 2 from the floor of positions at fraction
    ``t``: Keys' cubic convolution kernel with a = -0.75."""
    a = _CUBIC_A
    near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1              # noqa: E731  |x| <= 1
    far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a         # noqa: E731  1 < |x| < 2
    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], 1)


def weighted_taps(x, axis, cells, weights):
    """sum_t x[..., cells[o, t], ...] * weights[o, t] along ``axis``: (out, taps) input
    positions and weights of each output cell. Only an output's own taps meet its weights, so
    a NaN or inf reaches just the outputs that read it (a dense (out, in) matrix product would
    spread it: 0 * NaN is NaN); the gradient adds back through the gather."""
    xp = backend.xp_for(x._device)
    picked = x.index_select(axis, Tensor._make(xp.asarray(cells.ravel()), False, None, 0,
                                               x._device))
    picked = picked.reshape(*x.shape[:axis], *cells.shape, *x.shape[axis + 1:])
    scale = Tensor._make(xp.asarray(weights.reshape(weights.shape + (1,) * (x.ndim - axis - 1))
                                    .astype(x.dtype)), False, None, 0, x._device)
    return (picked * scale).sum(axis + 1)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of (N, C, *spatial) input, as ``torch.nn.functional.interpolate``.

    Args:
        size: output spatial size (an int or one per dim), or
        scale_factor: a multiplier (or one per dim); output size floor(in * scale_factor).
        mode: 'nearest', 'nearest-exact' (pixel centres), 'area' (adaptive average pooling),
            each for 1-3 spatial dims; 'linear' (1), 'bilinear' (2), 'trilinear' (3) or
            'bicubic' (2).
        align_corners: interpolating modes only: corner pixels' centres map onto each other.
        recompute_scale_factor: with scale_factor, place samples by in/out instead.
    Example: ``interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)``.
    """
    op = "interpolate"
    if not isinstance(input, Tensor) or input.ndim < 3:
        raise ValueError(f"{op}: expected a (N, C, *spatial) tensor, got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    spatial = input.ndim - 2
    if mode not in ("nearest", "nearest-exact", "area") + tuple(_INTERPOLATING):
        raise NotImplementedError(f"{op}: mode must be 'nearest', 'nearest-exact', 'area', "
                                  f"'linear', 'bilinear', 'trilinear' or 'bicubic', got {mode!r}")
    if mode in _INTERPOLATING and _INTERPOLATING[mode] != spatial:
        raise ValueError(f"{op}: mode {mode!r} needs {_INTERPOLATING[mode]} spatial dims, got "
                         f"input of shape {input.shape}")
    if mode not in _INTERPOLATING and align_corners is not None:
        raise ValueError(f"{op}: align_corners only applies to the modes linear, bilinear, "
                         f"trilinear and bicubic, got it with mode {mode!r}")
    if antialias:
        raise NotImplementedError(f"{op}: antialias=True is not supported")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: pass exactly one of size and scale_factor")
    if size is not None:
        sizes = _per_dim(op, "size", size, spatial)
        scales = [None] * spatial
    else:
        factors = _per_dim(op, "scale_factor", scale_factor, spatial)
        sizes = [math.floor(n * f) for n, f in zip(input.shape[2:], factors)]
        scales = [None if recompute_scale_factor else f for f in factors]
    if min(sizes) <= 0 or min(input.shape[2:]) <= 0:
        raise EmptyOutputError(f"{op}: input {input.shape} and output size {sizes} must be "
                               f"positive")
    if mode == "area":                  # torch's area mode is adaptive average pooling
        from ..nn import functional
        pool = (functional.adaptive_avg_pool1d, functional.adaptive_avg_pool2d,
                functional.adaptive_avg_pool3d)[spatial - 1]
        return pool(input, tuple(sizes))
    if _autocast.active:
        # torch's upsampling is float32 under cuda autocast and keeps its dtype under cpu
        # autocast; the matmuls it runs as here must not cast again
        name = "_upsample_nearest_exact" if mode == "nearest-exact" else "upsample_" + mode
        (input,) = cast_inputs(f"{name}{spatial}d", input)
        with autocast(input._device, enabled=False):
            return _resample(input, sizes, scales, mode, align_corners)
    return _resample(input, sizes, scales, mode, align_corners)


def _resample(input, sizes, scales, mode, align_corners):
    """``input`` resized to ``sizes``: one gather of taps per spatial dim."""
    out = input
    for k, (n_out, scale) in enumerate(zip(sizes, scales)):
        axis = 2 + k
        out = weighted_taps(out, axis, *_taps(input.shape[axis], n_out, mode,
                                              bool(align_corners), scale))
    return out


def _per_dim(op, name, value, spatial):
    values = list(value) if isinstance(value, (tuple, list)) else [value] * spatial
    if len(values) != spatial or any(isinstance(v, bool) or not isinstance(
            v, (int, float, np.integer, np.floating)) or v <= 0 for v in values):
        raise ValueError(f"{op}: {name} must be a positive number or one per spatial dim "
                         f"({spatial}), got {value!r}")
    return values


def pixel_shuffle(input, upscale_factor):
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r), r = upscale_factor: sub-pixel rearrangement."""
    r = upscale_factor
    if not isinstance(input, Tensor) or input.ndim < 3:
        raise ValueError(f"pixel_shuffle: expected a (*, C*r*r, H, W) tensor, got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0 or input.shape[-3] % (r * r):
        raise ValueError(f"pixel_shuffle: channels {input.shape[-3]} must be divisible by "
                         f"upscale_factor**2 for a positive int upscale_factor, got {r!r}")
    *lead, c, h, w = input.shape
    c //= r * r
    blocks = input.reshape(*lead, c, r, r, h, w)
    n = len(lead)
    order = tuple(range(n)) + (n, n + 3, n + 1, n + 4, n + 2)      # (*, C, H, r, W, r)
    return blocks.permute(*order).reshape(*lead, c, h * r, w * r)


# --------------------------------------------------------------------------- nn-vision
def pixel_unshuffle(input, downscale_factor):
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W), r = downscale_factor: pixel_shuffle's inverse."""
    r = downscale_factor
    if not isinstance(input, Tensor) or input.ndim < 3:
        raise ValueError(f"pixel_unshuffle: expected a (*, C, H*r, W*r) tensor, got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0 \
            or input.shape[-2] % r or input.shape[-1] % r:
        raise ValueError(f"pixel_unshuffle: height {input.shape[-2]} and width "
                         f"{input.shape[-1]} must be divisible by a positive int "
                         f"downscale_factor, got {r!r}")
    *lead, c, h, w = input.shape
    h, w = h // r, w // r
    blocks = input.reshape(*lead, c, h, r, w, r)
    n = len(lead)
    order = tuple(range(n)) + (n, n + 2, n + 4, n + 1, n + 3)      # (*, C, r, r, H, W)
    return blocks.permute(*order).reshape(*lead, c * r * r, h, w)


def channel_shuffle(input, groups):
    """(N, C, *) with its C channels, seen as (groups, C / groups), transposed to
    (C / groups, groups): ShuffleNet's channel shuffle."""
    if not isinstance(input, Tensor) or input.ndim < 3:
        raise ValueError(f"channel_shuffle: expected input with more than 2 dims, got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    channels = input.shape[1]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0 \
            or channels % groups:
        raise ValueError(f"channel_shuffle: groups must be a positive int dividing the "
                         f"{channels} channels, got {groups!r}")
    n, rest = input.shape[0], tuple(input.shape[2:])
    return input.reshape(n, groups, channels // groups, *rest).transpose(1, 2).reshape(
        n, channels, *rest)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Deprecated alias of :func:`interpolate` (torch's ``F.upsample``)."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    """Deprecated: ``interpolate(input, size, scale_factor, mode='nearest')``."""
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    """Deprecated: ``interpolate(input, size, scale_factor, mode='bilinear',
    align_corners=True)``."""
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)
