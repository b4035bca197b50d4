"""F.affine_grid and F.grid_sample (2-D and 3-D), from differentiable tensor ops.

grid_sample maps each grid point's normalised coordinates (-1 the first pixel's edge or centre,
1 the last's) to input pixels with torch's rules (align_corners, padding_mode zeros / border /
reflection), then gathers the 2**dims neighbours (bilinear / trilinear), the 4x4 of bicubic or
the nearest one.
The input's gradient comes from the gather (added back where points share pixels), the grid's
from the interpolation weights; out-of-range neighbours are masked to zero, as torch.
"""

import numpy as np

from .. import backend
from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..dtypes import is_floating
from ..tensor import Tensor
from ..tensor_math import where

_MODES = ("bilinear", "nearest", "bicubic")
_PADDING_MODES = ("zeros", "border", "reflection")


def _constant(like, values):
    xp = backend.xp_for(like._device)
    return Tensor._make(xp.asarray(np.asarray(values, dtype=like.dtype)), False, None, 0,
                        like._device)


def _base_coordinates(steps, align_corners):
    """torch's normalised pixel positions along one dim: -1..1 at the centres of the first and
    last pixel (align_corners) or at their outer edges (shrunk by (steps-1)/steps); 0 for one
    step."""
    if steps <= 1:
        return np.zeros(max(steps, 0))
    line = np.linspace(-1.0, 1.0, steps)
    return line if align_corners else line * (steps - 1) / steps


def affine_grid(theta, size, align_corners=None):
    """Sampling grid of an affine map, as ``F.affine_grid``: theta (N, 2, 3) and size
    (N, C, H, W) give (N, H, W, 2) (x, y) points; theta (N, 3, 4) and size (N, C, D, H, W) give
    (N, D, H, W, 3). ``align_corners`` (default False) as in grid_sample."""
    op = "affine_grid"
    if not isinstance(theta, Tensor) or not is_floating(theta.dtype):
        raise TypeError(f"{op}: theta must be a floating-point Tensor, got "
                        f"{getattr(theta, 'dtype', type(theta).__name__)}")
    size = tuple(int(n) for n in size)
    if len(size) not in (4, 5):
        raise ValueError(f"{op}: size must be (N, C, H, W) or (N, C, D, H, W), got {size}")
    dims = len(size) - 2
    if tuple(theta.shape) != (size[0], dims, dims + 1):
        raise ValueError(f"{op}: expected theta of shape {(size[0], dims, dims + 1)} for size "
                         f"{size}, got {tuple(theta.shape)}")
    if min(size) <= 0:          # torch refuses an empty batch or channel dim too
        raise ValueError(f"{op}: every size must be positive, got size {size}")
    spatial = size[2:]                                # (D,) H, W; the grid lists x first
    lines = [_base_coordinates(n, bool(align_corners)) for n in reversed(spatial)]
    mesh = np.meshgrid(*lines[::-1], indexing="ij")   # each of shape spatial
    base = np.stack(list(mesh[::-1]) + [np.ones(spatial)], axis=-1).reshape(-1, dims + 1)
    grid = _constant(theta, base) @ theta.transpose(1, 2)         # (N, points, dims)
    return grid.reshape(size[0], *spatial, dims)


def _unnormalised(coordinate, size, align_corners):
    if align_corners:
        return (coordinate + 1) * ((size - 1) / 2)
    return ((coordinate + 1) * size - 1) / 2


def _reflected(coordinate, twice_low, twice_high):
    """torch's reflect_coordinates: folds ``coordinate`` into [low, high] by mirroring."""
    if twice_low == twice_high:
        return coordinate * 0
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    distance = (coordinate - low).abs()
    flips = (distance.detach() / span).floor()
    extra = distance - flips * span
    odd = (flips.remainder(2) == 1)
    return where(odd, span - extra, extra) + low


def _padded(pixel, size, padding_mode, align_corners):
    """torch's compute_coordinates: a pixel coordinate folded (reflection) and clamped (border,
    reflection) into the input; 'zeros' leaves it as it is."""
    if padding_mode == "reflection":
        pixel = (_reflected(pixel, 0, 2 * (size - 1)) if align_corners
                 else _reflected(pixel, -1, 2 * size - 1))
    if padding_mode in ("border", "reflection"):
        pixel = pixel.clamp(0, size - 1)
    return pixel


def _cubic_weights(t):
    """The four cubic-convolution weights (A = -0.75, torch's) of taps -1, 0, 1, 2 at fraction
    ``t``."""
    a = -0.75

    def near(x):            # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):             # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _taps(coordinate, size, mode, padding_mode, align_corners):
    """[(position, weight)] along one dim: the input positions a grid coordinate reads (whole
    numbers, detached; may lie outside the input) and their weights (None: weight 1)."""
    pixel = _unnormalised(coordinate, size, align_corners)
    if mode == "bicubic":         # torch pads each tap's position, not the coordinate
        left = pixel.detach().floor()
        weights = _cubic_weights(pixel - left)
        return [(_padded(left + (i - 1), size, padding_mode, align_corners), w)
                for i, w in enumerate(weights)]
    pixel = _padded(pixel, size, padding_mode, align_corners)
    if mode == "nearest":
        return [(pixel.detach().round(), None)]
    left = pixel.detach().floor()
    frac = pixel - left
    return [(left, 1 - frac), (left + 1, frac)]


def _gathered(flat, index, channels):
    """(N, C, P) values of (N, C, S) ``flat`` at (N, P) positions ``index``."""
    n, points = index.shape
    return flat.gather(-1, index.reshape(n, 1, points).expand(n, channels, points))


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """Sample ``input`` (N, C, H, W) at ``grid`` (N, Ho, Wo, 2) points, or (N, C, D, H, W) at
    (N, Do, Ho, Wo, 3), as ``F.grid_sample``: grid[..., 0] is x (the width), [..., 1] y and
    [..., 2] z, -1 and 1 the first and last pixel (their centres with ``align_corners``, else
    their outer edges; default False).

    mode: 'bilinear' (trilinear for 5-D), 'nearest' (round half to even) or 'bicubic' (4-D
    only; torch's cubic convolution, A = -0.75, over 4x4 taps); padding_mode:
    'zeros' (outside pixels read 0), 'border' (clamped) or 'reflection' (mirrored at the
    border). Returns (N, C, Ho, Wo) or (N, C, Do, Ho, Wo). Gradients reach input and grid
    (nearest: input only).
    """
    op = "grid_sample"
    for name, t in (("input", input), ("grid", grid)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if mode not in _MODES:
        raise ValueError(f"{op}: mode must be one of {_MODES}, got {mode!r}")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"{op}: padding_mode must be one of {_PADDING_MODES}, got "
                         f"{padding_mode!r}")
    if input.ndim not in (4, 5) or grid.ndim != input.ndim:
        raise ValueError(f"{op}: expected 4-D or 5-D input and a grid of the same rank, got "
                         f"shapes {tuple(input.shape)} and {tuple(grid.shape)}")
    dims = input.ndim - 2
    if grid.shape[0] != input.shape[0] or grid.shape[-1] != dims:
        raise ValueError(f"{op}: grid must be (N, *out, {dims}) with the input's N = "
                         f"{input.shape[0]}, got shape {tuple(grid.shape)}")
    if min(input.shape[2:]) <= 0:
        raise ValueError(f"{op}: input spatial sizes must be positive, got {tuple(input.shape)}")
    if mode == "bicubic" and dims != 2:
        raise ValueError(f"{op}: mode='bicubic' needs a 4-D input, got shape "
                         f"{tuple(input.shape)}")
    if _autocast.active:
        input, grid = cast_inputs("grid_sampler", input, grid)
    if input.dtype != grid.dtype:
        raise TypeError(f"{op}: input dtype {input.dtype} and grid dtype {grid.dtype} differ")
    n, channels = input.shape[:2]
    spatial = tuple(input.shape[2:])                  # (D,) H, W
    out = tuple(grid.shape[1:-1])
    # sizes spelled out (a -1 is ambiguous for an empty batch)
    flat = input.reshape(n, channels, int(np.prod(spatial)))
    points = grid.reshape(n, int(np.prod(out)), dims)
    # along x, y, z: the input size and the stride of its flat position
    sizes = spatial[::-1]
    strides = [int(np.prod(spatial[len(spatial) - k:])) for k in range(dims)]
    corners = [_taps(points[..., k], sizes[k], mode, padding_mode, bool(align_corners))
               for k in range(dims)]
    result = None
    for choice in np.ndindex(*(len(c) for c in corners)):
        index, weight, inside = 0, None, None
        for k, pick in enumerate(choice):
            position, w = corners[k][pick]
            valid = (position >= 0) & (position <= sizes[k] - 1)
            inside = valid if inside is None else inside & valid
            index = index + position.clamp(0, sizes[k] - 1).long() * strides[k]
            if w is not None:
                weight = w if weight is None else weight * w
        mask = inside.to(input.dtype)
        weight = mask if weight is None else weight * mask
        term = _gathered(flat, index, channels) * weight.unsqueeze(1)
        result = term if result is None else result + term
    return result.reshape(n, channels, *out)
