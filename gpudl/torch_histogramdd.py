"""torch.histogramdd: the D-dimensional histogram of N points (an (..., D) tensor), with equal
bins over per-dim ranges or given edges per dim, weights and density."""

import collections

import numpy as np

from . import backend, dtypes
from .functions import require_tensors
from .ops._util import is_int, quiet, xp_of
from .tensor import Tensor
from .torch_numerics import _linspace

HistogramddResult = collections.namedtuple("histogramdd", "hist bin_edges")
OP = "torch.histogramdd"


def _bins_per_dim(bins, dims):
    """``bins`` as a list of D ints or D 1-D tensors."""
    if is_int(bins) or isinstance(bins, Tensor):
        if isinstance(bins, Tensor):
            raise TypeError(f"{OP}: bins must be an int, a list of ints or a list of 1-D "
                            "tensors (one per dimension), got a Tensor")
        return [int(bins)] * dims
    if not isinstance(bins, (list, tuple)):
        raise TypeError(f"{OP}: bins must be an int, a list of ints or a list of tensors, got "
                        f"{type(bins).__name__}")
    if len(bins) != dims:
        raise RuntimeError(f"{OP}: the size of bins ({len(bins)}) must be equal to the "
                           f"innermost dimension of the input ({dims})")
    if not (all(is_int(b) for b in bins) or all(isinstance(b, Tensor) for b in bins)):
        raise TypeError(f"{OP}: bins must be all ints or all tensors, got "
                        f"{[type(b).__name__ for b in bins]}")
    return list(bins)


def _outer_edges(points, dim, range):
    """(leftmost, rightmost) of dimension ``dim``: range's, else the data's (0 and 1 when there
    is none), widened by 0.5 each side when equal, as torch."""
    if range is not None:
        low, high = float(range[2 * dim]), float(range[2 * dim + 1])
    elif points.shape[0]:
        column = points[:, dim]
        low, high = (float(backend.host_value(v, OP)) for v in (column.min(), column.max()))
    else:
        low, high = 0.0, 1.0
    if not (np.isfinite(low) and np.isfinite(high)):
        raise RuntimeError(f"{OP}: dimension {dim}'s range [{low}, {high}] is not finite")
    if low > high:
        raise RuntimeError(f"{OP}: min should not exceed max, but got min {low} max {high} for "
                           f"dimension {dim}")
    if low == high:
        low, high = low - 0.5, high + 0.5
    return low, high


def _edges(points, bins, range):
    dims = points.shape[1]
    xp = xp_of(points)
    if range is not None and len(range) != 2 * dims:
        raise RuntimeError(f"{OP}: for a {dims}-dimensional histogram range should have "
                           f"{2 * dims} elements, but got {len(range)}")
    edges = []
    for dim, b in enumerate(_bins_per_dim(bins, dims)):
        if isinstance(b, Tensor):
            if b.ndim != 1:
                raise RuntimeError(f"{OP}: bins tensor should have one dimension, but got "
                                   f"{b.ndim} dimensions in the bins tensor for dimension {dim}")
            if b.dtype != points.dtype:
                raise RuntimeError(f"{OP}: input tensor and bins tensors should have the same "
                                   f"dtype, but got input with dtype {points.dtype} and bins "
                                   f"for dimension {dim} with dtype {b.dtype}")
            if b.shape[0] < 1:
                raise RuntimeError(f"{OP}: bins tensor for dimension {dim} is empty")
            edges.append(b._data)
            continue
        if b <= 0:
            raise RuntimeError(f"{OP}: bins must be > 0, but got {b} for dimension {dim}")
        low, high = _outer_edges(points, dim, range)
        edges.append(_linspace(xp, low, high, b + 1, points.dtype))
    return edges


def histogramdd(input, bins=10, *, range=None, weight=None, density=False):
    """The histogram of the points in the rows of ``input`` (..., D) over a D-dimensional grid
    of bins (torch.histogramdd).

    Args:
        input: a floating (..., D) tensor: every row a point (D >= 1).
        bins: an int (equal bins in every dim), D ints, or D 1-D tensors of increasing edges.
        range: (min_0, max_0, ..., min_{D-1}, max_{D-1}) for int bins; the data's own min and
            max per dim by default (an empty span widened by 0.5 each side).
        weight: input.shape[:-1] values to add instead of ones.
        density: divide by the total and each cell's volume (a density over the grid).

    Each bin holds [left, right) but the last of a dim also its right edge; points outside
    (or NaN) in any dim are left out. Returns ``(hist, bin_edges)``: hist of shape
    (bins_0, ..., bins_{D-1}) in input's dtype and a tuple of D edge tensors. No gradient.

    Example: ``gd.histogramdd(gd.tensor([[0., 0.], [1., 1.]]), bins=2).hist`` is
    ``[[1., 0.], [0., 1.]]``.
    """
    require_tensors("histogramdd", input=input)
    if input.ndim < 2:
        raise RuntimeError(f"{OP}: input tensor should have at least 2 dimensions, got shape "
                           f"{tuple(input.shape)}")
    if not dtypes.is_floating(input.dtype):
        raise NotImplementedError(f"{OP}: not implemented for {input.dtype}; expected a "
                                  "floating point input")
    points = input._data.reshape(-1, input.shape[-1])                     # (N, D)
    xp = xp_of(points)
    values = xp.ones(points.shape[0], dtype=points.dtype)
    if weight is not None:
        require_tensors("histogramdd", weight=weight)
        if tuple(weight.shape) != tuple(input.shape[:-1]):
            raise RuntimeError(f"{OP}: if weight tensor is provided it should have the same "
                               f"shape as the input tensor excluding its innermost dimension, "
                               f"but got input with shape {list(input.shape)} and weight with "
                               f"shape {list(weight.shape)}")
        values = weight._data.reshape(-1).astype(points.dtype)
    edges = _edges(points, bins, range)
    counts = tuple(max(e.shape[0] - 1, 0) for e in edges)
    cell = xp.zeros(points.shape[0], dtype=np.int64)
    inside = xp.ones(points.shape[0], dtype=bool)
    for dim, e in enumerate(edges):
        column = points[:, dim]
        inside &= (column >= e[0]) & (column <= e[-1])
        position = xp.minimum(xp.searchsorted(e, column, side="right") - 1, counts[dim] - 1)
        cell = cell * counts[dim] + xp.clip(position, 0, None)
    hist = xp.zeros(int(np.prod(counts)), dtype=points.dtype)
    if hist.size:
        backend.scatter_add(hist, xp.where(inside, cell, 0), xp.where(inside, values, 0))
    hist = hist.reshape(counts)
    if density:
        with quiet(xp):
            hist = hist / hist.sum()
            for dim, e in enumerate(edges):
                shape = [1] * len(edges)
                shape[dim] = counts[dim]
                hist = hist / xp.diff(e).reshape(shape)
    device = input._device
    return HistogramddResult(
        Tensor._make(hist.astype(points.dtype, copy=False), False, None, 0, device),
        tuple(Tensor._make(e, False, None, 0, device) for e in edges))
