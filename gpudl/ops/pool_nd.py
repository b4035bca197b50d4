"""Pooling of any spatial rank without kernels of its own: max_pool3d, avg_pool3d,
adaptive_{avg,max}_pool3d, the ``*_with_indices`` forms, max_unpool1d/2d/3d and lp_pool1d/2d/3d.

- Max pooling gathers every window's cells through a table of flat positions (``index_select``,
  whose gradient adds back where windows overlap), picks each window's first maximum (torch's
  rule; NaN wins) and gathers it, so the gradient reaches that one cell.
- Average pooling is separable: a box's mean is a mean along each dim in turn, and torch's
  divisors (count_include_pad or not) are products of per-dim counts, so it runs one dim at a
  time, each output cell gathering its window's cells along that dim.
- max_unpool scatters the values back to their indices; lp_pool is torch's own formula on
  avg_pool.
"""

import numpy as np

from .. import dtypes
from ..amp.autocast_mode import autocast, cast_inputs, state as _autocast
from ..kernels.pool import pool_output_size
from ..tensor import Tensor
from ._util import EmptyOutputError, xp_of
from .padding import pad as _pad
from .pool import (_is_int, avg_pool1d, avg_pool2d, check_window_values,
                   check_windows_cover_input, max_pool1d, max_pool2d)
from .resample import weighted_taps
from .sparse import DEFERRED_NOTE, check_range


# --------------------------------------------------------------------------- argument checks
def _sizes(op, name, value, dims, allow_none=False):
    """An int or ``dims`` ints (a 1-sequence repeats) -> a tuple of ``dims`` ints."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims
    items = items * dims if len(items) == 1 else items
    if len(items) != dims or not all(_is_int(v) or (allow_none and v is None) for v in items):
        raise TypeError(f"{op}: {name} must be an int or a tuple of {dims} ints, got {value!r}")
    return tuple(v if v is None else int(v) for v in items)


def _check_input(op, input, dims):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (dims + 1, dims + 2) or 0 in input.shape[-dims - 1:]:
        raise ValueError(f"{op}: expected a {dims + 1}-D (unbatched) or {dims + 2}-D (batched) "
                         f"input with non-zero channel and spatial sizes, got shape "
                         f"{tuple(input.shape)}")
    if not dtypes.is_floating(input.dtype):
        raise TypeError(f"{op}: input must be a floating-point tensor, got {input.dtype}")


def _window(op, input, dims, kernel_size, stride, padding, dilation, ceil_mode):
    """Checked (kernel, stride, padding, dilation, out) tuples of a pooling call."""
    _check_input(op, input, dims)
    kernel = _sizes(op, "kernel_size", kernel_size, dims)
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and not stride)
    stride = kernel if no_stride else _sizes(op, "stride", stride, dims)
    padding, dilation = _sizes(op, "padding", padding, dims), _sizes(op, "dilation", dilation,
                                                                      dims)
    where = f"(input shape {tuple(input.shape)})"
    check_window_values(op, kernel, stride, padding, dilation, where)
    out = tuple(pool_output_size(n, k, s, p, d, bool(ceil_mode)) for n, k, s, p, d in zip(
        input.shape[-dims:], kernel, stride, padding, dilation))
    if min(out) < 1:
        raise EmptyOutputError(f"{op}: kernel_size {kernel} with dilation {dilation} does not "
                               f"fit the padded input {where}, padding {padding}: the output "
                               f"would be empty")
    check_windows_cover_input(op, input.shape[-dims:], kernel, stride, padding, dilation, out,
                              ("depth", "height", "width")[-dims:])
    return kernel, stride, padding, dilation, out


def _batched(input, dims, fn):
    """``fn`` on (N, C, *spatial) input; an unbatched one runs as a batch of one."""
    if input.ndim == dims + 2:
        return fn(input)
    out = fn(input.unsqueeze(0))
    return tuple(o.squeeze(0) for o in out) if isinstance(out, tuple) else out.squeeze(0)


def _low_precision_policy(op, input):
    """torch's autocast casts the 3-D pools to float32 on the cpu (and leaves them on cuda)."""
    if _autocast.active:
        (input,) = cast_inputs(op, input)
    return input


# --------------------------------------------------------------------------- max pooling
def _outer_cells(table, cells, extent):
    """Row-major flat positions one dim further: ``table`` (O, K) over the dims so far and
    ``cells`` (o, k) along the next dim, of length ``extent`` -> (O * o, K * k)."""
    return (table[:, None, :, None] * extent + cells[None, :, None, :]).reshape(
        table.shape[0] * cells.shape[0], -1)


def _max_over_windows(padded, tables, inner):
    """values, indices: the first maximum of each window of ``padded`` (N, C, *P) whose cells
    sit at the flat positions ``tables`` (O, K); ``inner``: the same cells' flat positions in
    the unpadded input (the returned indices)."""
    n, c = padded.shape[:2]
    flat = Tensor._make(xp_of(padded._data).asarray(tables.ravel()), False, None, 0,
                        padded._device)
    # (sizes spelled out: a -1 is ambiguous for an empty batch)
    cells = int(np.prod(padded.shape[2:]))
    windows = padded.reshape(n, c, cells).index_select(-1, flat).reshape(n, c, *tables.shape)
    picks = windows.detach().argmax(-1, keepdim=True)                  # (N, C, O, 1)
    values = windows.gather(-1, picks).squeeze(-1)
    table = Tensor._make(xp_of(padded._data).asarray(inner), False, None, 0, padded._device)
    indices = table.expand(n, c, *inner.shape).gather(-1, picks).squeeze(-1)
    return values, indices


def _max_pool(op, dims, input, kernel_size, stride, padding, dilation, ceil_mode,
              return_indices):
    input = _low_precision_policy(op, input)
    kernel, stride, padding, dilation, out = _window(op, input, dims, kernel_size, stride,
                                                     padding, dilation, ceil_mode)
    sizes = input.shape[-dims:]

    def pool(x):
        # cells a ceil_mode window reaches past the padded input are padded too (-inf)
        reach = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out, stride, dilation,
                                                                       kernel)]
        after = [max(r - n - p, p) for r, n, p in zip(reach, sizes, padding)]
        extents = [n + p + a for n, p, a in zip(sizes, padding, after)]
        widths = tuple(w for p, a in zip(reversed(padding), reversed(after)) for w in (p, a))
        padded = _pad(x, widths, value=float("-inf")) if any(widths) else x
        tables, inner = np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64)
        for n, k, s, p, d, o, e in zip(sizes, kernel, stride, padding, dilation, out, extents):
            cells = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d     # (o, k), padded
            tables = _outer_cells(tables, cells, e)
            inner = _outer_cells(inner, cells - p, n)
        values, indices = _max_over_windows(padded, tables, inner)
        values = values.reshape(*x.shape[:2], *out)
        return (values, indices.reshape(*x.shape[:2], *out)) if return_indices else values

    return _batched(input, dims, pool)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """3-D max pooling over (N, C, D, H, W) or (C, D, H, W) input, as ``F.max_pool3d``:
    max_pool2d's arguments with three entries each. ``return_indices=True`` also returns each
    maximum's flat int64 position in its D*H*W volume."""
    return _max_pool("max_pool3d", 3, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool1d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=True):
    """``max_pool1d(..., return_indices=True)``: (values, indices)."""
    return max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=True):
    """``max_pool2d(..., return_indices=True)``: (values, indices)."""
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def max_pool3d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=True):
    """``max_pool3d(..., return_indices=True)``: (values, indices)."""
    return max_pool3d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


# --------------------------------------------------------------------------- average pooling
def _average_windows(size, kernel, stride, padding, out, count_include_pad, divide):
    """(cells, weights), each (out, kernel), of torch's average pooling along one dim: cells in
    the input padded by ``padding`` before it (and zeros after, as far as windows reach);
    weights 1 / the divisor's factor along this dim (1 when ``divide`` is False)."""
    starts = np.arange(out) * stride - padding
    ends = np.minimum(starts + kernel, size + padding)
    if count_include_pad:
        counts = ends - starts
    else:
        counts = np.minimum(ends, size) - np.maximum(starts, 0)
    cells = starts[:, None] + padding + np.arange(kernel)[None, :]
    weights = np.broadcast_to((1.0 / counts if divide else np.ones(out))[:, None], cells.shape)
    return cells, weights


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """3-D average pooling over (N, C, D, H, W) or (C, D, H, W) input, as ``F.avg_pool3d``
    (avg_pool2d's arguments with three entries each)."""
    op = "avg_pool3d"
    input = _low_precision_policy(op, input)
    kernel, stride, padding, _, out = _window(op, input, 3, kernel_size, stride, padding, 1,
                                              ceil_mode)
    if any(n < k for n, k in zip(input.shape[-3:], kernel)):     # torch's rule, padding or not
        raise RuntimeError(f"{op}: kernel_size {kernel} is larger than the input's spatial size "
                         f"{tuple(input.shape[-3:])} (before padding {padding})")
    if divisor_override is not None:
        if not _is_int(divisor_override):
            raise TypeError(f"{op}: divisor_override must be None or an int, got "
                            f"{type(divisor_override).__name__}")
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero, got 0")
    windows = [_average_windows(n, k, s, p, o, bool(count_include_pad), divisor_override is None)
               for n, k, s, p, o in zip(input.shape[-3:], kernel, stride, padding, out)]
    # zeros around the input as far as the windows reach (ceil_mode's may pass the padding)
    after = [max(int(cells.max()) + 1 - n - p, 0) for (cells, _), n, p in zip(
        windows, input.shape[-3:], padding)]
    widths = tuple(w for p, a in zip(reversed(padding), reversed(after)) for w in (p, a))
    pooled = _pad(input, widths) if any(widths) else input
    with autocast(input._device, enabled=False):
        for axis, (cells, weights) in zip(range(input.ndim - 3, input.ndim), windows):
            pooled = weighted_taps(pooled, axis, cells, weights)
    return pooled if divisor_override is None else pooled / int(divisor_override)


def _bins(size, out):
    """(cells, inside, counts) of torch's adaptive windows along one dim: cell i covers
    [floor(i*size/out), ceil((i+1)*size/out)); windows are padded to the widest by repeating
    their last cell (``inside`` False there); ``counts`` (out,) their true widths."""
    starts = np.arange(out) * size // out
    ends = -(-(np.arange(1, out + 1) * size) // out)
    offsets = np.arange(int((ends - starts).max()))
    cells = np.minimum(starts[:, None] + offsets, ends[:, None] - 1)
    return cells, starts[:, None] + offsets < ends[:, None], ends - starts


def _adaptive_mean(x, axis, out):
    """Adaptive average along ``axis``: the padding slots of narrow windows read one zero
    appended to the axis (a repeated inf times weight 0 would give NaN)."""
    size = x.shape[axis]
    cells, inside, counts = _bins(size, out)
    if not inside.all():
        x = _pad(x, (0, 0) * (x.ndim - 1 - axis) + (0, 1))
        cells = np.where(inside, cells, size)
    return weighted_taps(x, axis, cells, np.broadcast_to(1.0 / counts[:, None], cells.shape))


def _output_sizes(op, input, dims, output_size):
    sizes = _sizes(op, "output_size", output_size, dims, allow_none=True)
    sizes = tuple(n if s is None else s for s, n in zip(sizes, input.shape[-dims:]))
    if min(sizes) <= 0:
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r} "
                         f"(input shape {tuple(input.shape)})")
    return sizes


def adaptive_avg_pool3d(input, output_size):
    """Average pooling of (N, C, D, H, W) or (C, D, H, W) input to ``output_size`` (an int or
    (d, h, w); None keeps that input size), with torch's bins (those of adaptive_avg_pool2d)."""
    op = "adaptive_avg_pool3d"
    input = _low_precision_policy(op, input)
    _check_input(op, input, 3)
    sizes = _output_sizes(op, input, 3, output_size)
    pooled = input
    with autocast(input._device, enabled=False):
        for axis, o in zip(range(input.ndim - 3, input.ndim), sizes):
            pooled = _adaptive_mean(pooled, axis, o)
    return pooled


def adaptive_max_pool(op, dims, input, output_size, return_indices):
    """Max pooling of a ``dims``-D input to ``output_size`` with torch's adaptive windows: every
    window's cells gathered (windows padded to the widest by repeating their last cell, which
    does not change a maximum)."""
    _check_input(op, input, dims)
    sizes = _output_sizes(op, input, dims, output_size)
    spatial = input.shape[-dims:]
    tables = np.zeros((1, 1), np.int64)
    for n, o in zip(spatial, sizes):
        tables = _outer_cells(tables, _bins(n, o)[0], n)

    def pool(x):
        values, indices = _max_over_windows(x, tables, tables)
        shape = (*x.shape[:2], *sizes)
        return (values.reshape(shape), indices.reshape(shape)) if return_indices \
            else values.reshape(shape)

    return _batched(input, dims, pool)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    """Max pooling of (N, C, D, H, W) or (C, D, H, W) input to ``output_size`` (an int or
    (d, h, w); None keeps that size); ``return_indices=True`` also returns each maximum's flat
    position in its D*H*W volume."""
    op = "adaptive_max_pool3d"
    return adaptive_max_pool(op, 3, _low_precision_policy(op, input), output_size,
                             return_indices)


def adaptive_max_pool1d_with_indices(input, output_size, return_indices=True):
    """``adaptive_max_pool1d(..., return_indices=True)``: (values, indices)."""
    return adaptive_max_pool("adaptive_max_pool1d", 1, input, output_size, True)


def adaptive_max_pool2d_with_indices(input, output_size, return_indices=True):
    """``adaptive_max_pool2d(..., return_indices=True)``: (values, indices)."""
    return adaptive_max_pool("adaptive_max_pool2d", 2, input, output_size, True)


def adaptive_max_pool3d_with_indices(input, output_size, return_indices=True):
    """``adaptive_max_pool3d(..., return_indices=True)``: (values, indices)."""
    return adaptive_max_pool3d(input, output_size, True)


# --------------------------------------------------------------------------- unpooling
def _max_unpool(op, dims, input, indices, kernel_size, stride, padding, output_size):
    if _autocast.active:        # torch's max_unpool1d is its max_unpool2d
        (input,) = cast_inputs("max_unpool2d" if dims == 1 else op, input)
    _check_input(op, input, dims)
    if not isinstance(indices, Tensor) or dtypes.category(indices.dtype) != 1:
        raise TypeError(f"{op}: indices must be an integer Tensor, got "
                        f"{getattr(indices, 'dtype', type(indices).__name__)}")
    if tuple(indices.shape) != tuple(input.shape):
        raise ValueError(f"{op}: indices of shape {tuple(indices.shape)} must have the input's "
                         f"shape {tuple(input.shape)}")
    kernel = _sizes(op, "kernel_size", kernel_size, dims)
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and not stride)
    stride = kernel if no_stride else _sizes(op, "stride", stride, dims)
    padding = _sizes(op, "padding", padding, dims)
    default = [(n - 1) * s - 2 * p + k for n, s, p, k in zip(input.shape[-dims:], stride,
                                                              padding, kernel)]
    if output_size is None:
        sizes = default
    else:
        sizes = [int(n) for n in output_size]
        sizes = sizes[-dims:] if len(sizes) == input.ndim else sizes
        if len(sizes) != dims:
            raise ValueError(f"{op}: output_size must have {dims} or {input.ndim} elements, "
                             f"got {output_size!r}")
        for n, d, s in zip(sizes, default, stride):
            if not d - s < n < d + s:
                raise ValueError(f"{op}: invalid output_size {output_size!r} (each size must "
                                 f"lie strictly between {[d - s for d, s in zip(default, stride)]}"
                                 f" and {[d + s for d, s in zip(default, stride)]})")
    volume = int(np.prod(sizes))

    def out_of_range(value, late):
        return ValueError(f"{op}: indices must lie in [0, {volume}) for the output size "
                          f"{tuple(sizes)}, got {value}" + (DEFERRED_NOTE if late else ""))
    check_range(indices._data, volume, out_of_range)       # on the cuda device: deferred

    def unpool(x, idx):
        n, c = x.shape[:2]
        flat = Tensor._make(xp_of(x._data).zeros((n, c, volume), x.dtype), False, None, 0,
                            x._device)
        cells = int(np.prod(x.shape[2:]))     # (not -1: ambiguous for an empty batch)
        flat = flat.scatter(-1, idx.reshape(n, c, cells).long(), x.reshape(n, c, cells))
        return flat.reshape(n, c, *sizes)

    if input.ndim == dims + 2:
        return unpool(input, indices)
    return unpool(input.unsqueeze(0), indices.unsqueeze(0)).squeeze(0)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The inverse of max_pool1d: each value of (N, C, L) input placed at its index along the
    output length (default (L - 1) * stride - 2 * padding + kernel_size), zeros elsewhere."""
    return _max_unpool("max_unpool1d", 1, input, indices, kernel_size, stride, padding,
                       output_size)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The inverse of max_pool2d: each value of (N, C, H, W) input placed at its flat index in
    the (Ho, Wo) output plane (Ho = (H - 1) * stride - 2 * padding + kernel_size by default),
    zeros elsewhere."""
    return _max_unpool("max_unpool2d", 2, input, indices, kernel_size, stride, padding,
                       output_size)


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The inverse of max_pool3d: each value of (N, C, D, H, W) input placed at its flat index
    in the output volume, zeros elsewhere."""
    return _max_unpool("max_unpool3d", 3, input, indices, kernel_size, stride, padding,
                       output_size)


# --------------------------------------------------------------------------- power-average
def _lp_pool(op, dims, input, norm_type, kernel_size, stride, ceil_mode):
    """torch's lp_pool: (sum over the window of x ** p) ** (1 / p) through avg_pool; p = inf
    the largest |x| of each window, p = -inf the smallest (max_pool)."""
    average = (avg_pool1d, avg_pool2d, avg_pool3d)[dims - 1]
    maximum = (max_pool1d, max_pool2d, max_pool3d)[dims - 1]
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) or norm_type == 0:
        raise ValueError(f"{op}: norm_type must be a non-zero number, got {norm_type!r}")
    if not isinstance(input, Tensor):           # input.pow raised AttributeError
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    kernel = _sizes(op, "kernel_size", kernel_size, dims)
    if norm_type == float("inf"):
        return maximum(input.abs(), kernel_size, stride, 0, 1, ceil_mode)
    if norm_type == float("-inf"):
        return -maximum(-input.abs(), kernel_size, stride, 0, 1, ceil_mode)
    stride = kernel_size if stride is None else stride
    out = average(input.pow(norm_type), kernel_size, stride, 0, ceil_mode)
    return (out.sign() * out.abs().relu()).mul(int(np.prod(kernel))).pow(1.0 / norm_type)


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average pooling over (N, C, L): (sum over each window of x ** p) ** (1 / p)
    (p = +-inf: the largest / smallest |x|)."""
    return _lp_pool("lp_pool1d", 1, input, norm_type, kernel_size, stride, ceil_mode)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average pooling over (N, C, H, W): (sum over each window of x ** p) ** (1 / p)
    (p = +-inf: the largest / smallest |x|)."""
    return _lp_pool("lp_pool2d", 2, input, norm_type, kernel_size, stride, ceil_mode)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """Power-average pooling over (N, C, D, H, W): (sum over each window of x ** p) ** (1/p)
    (p = +-inf: the largest / smallest |x|)."""
    return _lp_pool("lp_pool3d", 3, input, norm_type, kernel_size, stride, ceil_mode)
