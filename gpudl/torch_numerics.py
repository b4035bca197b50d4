"""torch's counting and finite-difference functions: ``histogram`` (edges and counts, weights,
density), ``nonzero_static`` (a fixed number of indices), ``unravel_index`` and ``gradient``
(central differences with edge order 1 or 2, torch.gradient)."""

import numpy as np

from . import backend, dtypes
from .functions import require_tensors
from .ops._util import is_int, normalize_axis, quiet, xp_of
from .tensor import Tensor


def _linspace(xp, start, end, steps, dtype):
    """torch.linspace's values: from the start up to halfway, from the end after it (so both
    ends are exact), in ``dtype``."""
    start, end = dtype.type(start), dtype.type(end)
    step = (end - start) / dtype.type(max(steps - 1, 1))
    i = xp.arange(steps)
    half = steps // 2
    return xp.where(i < half, start + step * i.astype(dtype),
                    end - step * (steps - 1 - i).astype(dtype)).astype(dtype)


def _edges(op, x, bins, range):
    """The bin edges of ``histogram``: ``bins`` itself (a 1-D tensor), or ``bins`` equal bins
    over ``range`` (the data's range by default, [0, 1] without data; an empty one widened by
    0.5 each side)."""
    xp = xp_of(x)
    if isinstance(bins, Tensor):
        if bins.ndim != 1 or bins.numel() < 2:
            raise RuntimeError(f"{op}: bins must be a 1-D tensor of at least 2 edges, got "
                               f"shape {tuple(bins.shape)}")
        return bins._data.astype(x.dtype)
    if not is_int(bins) or bins <= 0:
        raise RuntimeError(f"{op}: bins must be a positive int or a 1-D tensor, got {bins!r}")
    if range is not None:
        low, high = (float(v) for v in range)
        if low > high:
            raise RuntimeError(f"{op}: min should not exceed max, got range {tuple(range)}")
    elif x.size:
        low, high = (float(backend.host_value(v, op)) for v in (x.min(), x.max()))
    else:
        low, high = 0.0, 1.0            # no data and no range: [0, 1], as torch and NumPy
    if not (np.isfinite(low) and np.isfinite(high)):
        raise RuntimeError(f"{op}: range of [{low}, {high}] is not finite")
    if low == high:
        low, high = low - 0.5, high + 0.5
    return _linspace(xp, low, high, int(bins) + 1, x.dtype)


def histogram(input, bins=100, *, range=None, weight=None, density=False):
    """The histogram of ``input``'s values (flattened): ``bins`` equal bins over ``range``
    (the values' min and max by default) or the edges of a 1-D tensor ``bins``; each bin holds
    [left, right) but the last also its right edge; values outside are left out. ``weight``
    (input's shape) adds its values instead of ones; ``density`` divides by the total and the
    bin widths. Returns ``(hist, bin_edges)`` in input's floating dtype (torch.histogram).

    Example: ``gd.histogram(gd.tensor([1., 2., 1.]), bins=2)`` gives ``hist`` ``[2., 1.]``."""
    require_tensors("histogram", input=input)
    if not dtypes.is_floating(input.dtype):
        raise RuntimeError(f"histogram: input must be a floating point tensor, got "
                           f"{input.dtype}")
    x = input._data.reshape(-1)
    xp = xp_of(x)
    edges = _edges("histogram", x, bins, range)
    values = xp.ones_like(x)
    if weight is not None:
        require_tensors("histogram", weight=weight)
        if tuple(weight.shape) != tuple(input.shape):
            raise RuntimeError(f"histogram: weight must have input's shape "
                               f"{tuple(input.shape)}, got {tuple(weight.shape)}")
        values = weight._data.reshape(-1).astype(x.dtype)
    n = edges.size - 1
    inside = (x >= edges[0]) & (x <= edges[-1])
    position = xp.minimum(xp.searchsorted(edges, x, side="right") - 1, n - 1)
    position = xp.where(inside, position, 0)
    hist = xp.zeros(n, x.dtype)
    backend.scatter_add(hist, position, xp.where(inside, values, 0))
    if density:
        with quiet(xp):
            hist = hist / (hist.sum() * xp.diff(edges))
    device = input._device
    return (Tensor._make(hist.astype(x.dtype), False, None, 0, device),
            Tensor._make(edges, False, None, 0, device))


def nonzero_static(input, *, size, fill_value=-1):
    """The (size, input.ndim) int64 indices of ``input``'s first ``size`` nonzero elements (row
    major), padded with ``fill_value`` rows when there are fewer (torch.nonzero_static): a
    shape known before the data is read."""
    require_tensors("nonzero_static", input=input)
    if not is_int(size) or size < 0:
        raise RuntimeError(f"nonzero_static: size must be a non-negative int, got {size!r}")
    data = input._data
    xp = xp_of(data)
    found = xp.argwhere(data)[:size] if data.ndim else xp.zeros((int(bool(data)), 0), np.int64)
    out = xp.full((size, data.ndim), fill_value, np.int64)
    out[:found.shape[0]] = found[:size]
    return Tensor._make(out, False, None, 0, input._device)


def unravel_index(indices, shape):
    """The coordinates of the flat ``indices`` (an int tensor) in a tensor of ``shape``: a
    tuple of int64 tensors, one per dim, each of indices' shape (torch.unravel_index).
    Indices outside the shape wrap around (floor modulo), as torch's do."""
    require_tensors("unravel_index", indices=indices)
    if dtypes.category(indices.dtype) != 1:
        raise TypeError(f"unravel_index: expected 'indices' to be integer dtype, but got "
                        f"{indices.dtype}")
    shape = (shape,) if is_int(shape) else tuple(shape)
    if any(not is_int(n) or n < 0 for n in shape):
        raise ValueError(f"unravel_index: 'shape' must be non-negative ints, got {shape}")
    flat = indices._data.astype(np.int64)
    out = []
    for n in reversed(shape):
        out.append(flat % n if n else flat)
        flat = flat // n if n else flat
    return tuple(Tensor._make(a, False, None, 0, indices._device) for a in reversed(out))


Tensor.histogram, Tensor.nonzero_static = histogram, nonzero_static


# ----------------------------------------------------------------- gradient
def _spacings(spacing, dims, input):
    """Per dim in ``dims``: a number (uniform step) or a NumPy float64 array of coordinates."""
    if isinstance(spacing, (int, float)) and not isinstance(spacing, bool):
        return [float(spacing)] * len(dims)
    spacing = list(spacing)
    if len(spacing) == 1 and len(dims) > 1 and not isinstance(spacing[0], Tensor):
        spacing = spacing * len(dims)
    if len(spacing) != len(dims):
        raise RuntimeError(f"torch.gradient expected spacing to be unspecified, a scalar or a "
                           f"list of length equal to the number of dims ({len(dims)}), got a "
                           f"list of length {len(spacing)}")
    out = []
    for value, d in zip(spacing, dims):
        if isinstance(value, Tensor):
            if value.ndim == 0:
                out.append(float(value.item()))
                continue
            if value.ndim != 1 or value.shape[0] != input.shape[d]:
                raise RuntimeError(f"torch.gradient expected each tensor to be on the same "
                                   f"device and of size {input.shape[d]} along dim {d}, got "
                                   f"shape {tuple(value.shape)}")
            out.append(backend.to_numpy(value._data).astype(np.float64))
        else:
            out.append(float(value))
    return out


def _along(coefficients, dim, ndim, like):
    """A 1-D NumPy array of coefficients as a tensor broadcasting along ``dim``."""
    shape = [1] * ndim
    shape[dim] = -1
    return Tensor._make(backend.xp_for(like._device).asarray(
        coefficients.reshape(shape).astype(like.dtype)), False, None, 0, like._device)


def _gradient_1d(f, h, dim, edge_order):
    """The derivative of ``f`` along ``dim`` from samples ``h`` apart (a number) or at the
    coordinates ``h`` (an array), second-order accurate inside, ``edge_order`` at the ends."""
    n = f.shape[dim]
    part = lambda start, length: f.narrow(dim, start, length)   # noqa: E731
    x = np.arange(n, dtype=np.float64) * h if not isinstance(h, np.ndarray) else h
    dx = np.diff(x)
    d1, d2 = dx[:-1], dx[1:]
    a, b, c = -d2 / (d1 * (d1 + d2)), (d2 - d1) / (d1 * d2), d1 / (d2 * (d1 + d2))
    ndim = f.ndim
    inner = (part(0, n - 2) * _along(a, dim, ndim, f) + part(1, n - 2) * _along(b, dim, ndim, f)
             + part(2, n - 2) * _along(c, dim, ndim, f))
    if edge_order == 1:
        first = (part(1, 1) - part(0, 1)) / float(dx[0])
        last = (part(n - 1, 1) - part(n - 2, 1)) / float(dx[-1])
    else:
        e1, e2 = float(dx[0]), float(dx[1])
        first = (part(0, 1) * (-(2 * e1 + e2) / (e1 * (e1 + e2)))
                 + part(1, 1) * ((e1 + e2) / (e1 * e2)) + part(2, 1) * (-e1 / (e2 * (e1 + e2))))
        e1, e2 = float(dx[-2]), float(dx[-1])
        last = (part(n - 3, 1) * (e2 / (e1 * (e1 + e2))) + part(n - 2, 1) * (-(e2 + e1) / (e1 * e2))
                + part(n - 1, 1) * ((2 * e2 + e1) / (e2 * (e1 + e2))))
    from .functions import cat
    return cat([first, inner, last], dim)


def gradient(input, *, spacing=1, dim=None, edge_order=1):
    """The derivative of ``input`` sampled on a grid, along each dim of ``dim`` (all by default),
    by central differences inside and one-sided ones of ``edge_order`` (1 or 2) at the ends:
    a tuple of tensors of input's shape (torch.gradient). ``spacing``: one step for every dim,
    a list of steps (one per dim), or a list of 1-D coordinate tensors. Differentiable.

    Example: ``gd.gradient(gd.tensor([1., 4., 9., 16.]))`` is ``(tensor([3., 4., 6., 7.]),)``."""
    require_tensors("gradient", input=input)
    if edge_order not in (1, 2):
        raise RuntimeError(f"torch.gradient only supports edge_order=1 and edge_order=2, got "
                           f"{edge_order!r}")
    dims = list(range(input.ndim)) if dim is None else [dim] if is_int(dim) else list(dim)
    dims = [normalize_axis(d, input.ndim, "gradient") for d in dims]
    if len(set(dims)) != len(dims):
        raise RuntimeError(f"gradient: dim {dim} has repeated dims")
    for d in dims:
        if input.shape[d] < edge_order + 1:
            raise RuntimeError(f"torch.gradient expected each dimension size to be at least "
                               f"edge_order+1, got size {input.shape[d]} along dim {d}")
    f = input if dtypes.is_floating(input.dtype) else input.astype(dtypes.DEFAULT_FLOAT)
    steps = _spacings(spacing, dims, input)
    return tuple(_gradient_1d(f, h, d, edge_order) for h, d in zip(steps, dims))
