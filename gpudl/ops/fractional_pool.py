"""F.fractional_max_pool2d/3d (Graham's fractional max pooling): windows of ``kernel_size``
whose starts follow a pseudo-random sequence per (sample, channel) plane, one sample in [0, 1)
per spatial dim (``_random_samples``, drawn when not given).

The window starts are torch's (generate_intervals, computed in the input's dtype); the windows'
cells are gathered per plane and the first maximum of each is taken (gather: the gradient goes
back to that cell)."""

import numpy as np

from .. import creation
from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..tensor import Tensor
from ._util import xp_of
from .pool_nd import _batched, _check_input, _sizes


def _starts(samples, size, out, kernel, dtype):
    """(planes, out) window starts along a dim of ``size`` for each plane's sample in [0, 1),
    as torch's generate_intervals (float arithmetic in ``dtype``, truncated to ints)."""
    samples = samples.astype(dtype)
    starts = np.full(samples.shape + (out,), size - kernel, np.int64)
    if out > 1:
        alpha = dtype.type(size - kernel) / dtype.type(out - 1)
        steps = np.arange(out - 1, dtype=dtype)
        starts[..., :-1] = (((steps + samples[..., None]) * alpha).astype(np.int64)
                            - (samples * alpha).astype(np.int64)[..., None])
    return starts


def fractional_max_pool2d(input, kernel_size, output_size=None, output_ratio=None,
                          return_indices=False, _random_samples=None):
    """Fractional max pooling over (N, C, H, W) or (C, H, W) input, as
    ``F.fractional_max_pool2d``: ``output_size`` (an int or (h, w)) or ``output_ratio`` (a
    number or a pair in (0, 1): output = int(input size * ratio)); ``_random_samples``
    (N, C, 2) in [0, 1) fixes the windows (drawn from gpudl's generator when None; sample 0
    places the width's windows, sample 1 the height's, as torch).
    ``return_indices=True`` also returns each maximum's flat position in its H*W plane."""
    return _fractional_max_pool("fractional_max_pool2d", 2, (1, 0), input, kernel_size,
                                output_size, output_ratio, return_indices, _random_samples)


def fractional_max_pool3d(input, kernel_size, output_size=None, output_ratio=None,
                          return_indices=False, _random_samples=None):
    """Fractional max pooling over (N, C, T, H, W) or (C, T, H, W) input, as
    ``F.fractional_max_pool3d``: ``output_size`` (an int or (t, h, w)) or ``output_ratio`` (a
    number or a triple in (0, 1): output = int(input size * ratio)); ``_random_samples``
    (N, C, 3) in [0, 1) fixes the windows (samples 0, 1, 2 place those of T, H and W, as
    torch; drawn from gpudl's generator when None). ``return_indices=True`` also returns each
    maximum's flat position in its T*H*W volume.

    Example: ``F.fractional_max_pool3d(x, 2, output_ratio=0.5)``"""
    return _fractional_max_pool("fractional_max_pool3d", 3, (0, 1, 2), input, kernel_size,
                                output_size, output_ratio, return_indices, _random_samples)


def _output_sizes(op, dims, spatial, kernel, output_size, output_ratio):
    if output_size is None:
        if output_ratio is None:
            raise ValueError(f"{op}: requires specifying either an output_size or an "
                             f"output_ratio")
        ratios = tuple(output_ratio) if isinstance(output_ratio, (tuple, list)) \
            else (output_ratio,) * dims
        if len(ratios) != dims or not all(isinstance(r, (int, float)) and 0 < r <= 1
                                          for r in ratios):
            raise ValueError(f"{op}: output_ratio must be a number or {dims} numbers in "
                             f"(0, 1], got {output_ratio!r}")
        output_size = tuple(int(n * r) for n, r in zip(spatial, ratios))
    sizes = _sizes(op, "output_size", output_size, dims)
    for axis, n, o, k in zip("THW"[-dims:], spatial, sizes, kernel):
        if k < 1 or o < 1 or o + k - 1 > n:
            raise ValueError(f"{op}: kernel_size {kernel} and output_size {sizes} do not fit "
                             f"the input's {axis} size {n} (output + kernel - 1 must be at most "
                             f"the input size; both positive)")
    return sizes


def _fractional_max_pool(op, dims, sample_of_dim, input, kernel_size, output_size,
                         output_ratio, return_indices, _random_samples):
    """The pooling over the last ``dims`` dims; ``sample_of_dim[d]``: which of a plane's random
    samples places the windows of spatial dim d."""
    if _autocast.active:
        input, _random_samples = cast_inputs(op, input, _random_samples)
    _check_input(op, input, dims)
    kernel = _sizes(op, "kernel_size", kernel_size, dims)
    spatial = tuple(input.shape[-dims:])
    sizes = _output_sizes(op, dims, spatial, kernel, output_size, output_ratio)
    planes = (1 if input.ndim == dims + 1 else input.shape[0], input.shape[-dims - 1])
    if _random_samples is None:
        _random_samples = creation.rand(*planes, dims, dtype=input.dtype, device=input._device)
    shape = tuple(getattr(_random_samples, "shape", ()))
    if not isinstance(_random_samples, Tensor) or len(shape) != 3 or shape[0] < planes[0] or \
            shape[1:] != (planes[1], dims):
        got = shape if isinstance(_random_samples, Tensor) else type(_random_samples).__name__
        raise ValueError(f"{op}: _random_samples must be a Tensor of shape (N, {planes[1]}, "
                         f"{dims}) with N at least the batch size {planes[0]} (as torch, the "
                         f"first rows are used), got {got}")
    samples = _random_samples.detach().numpy()[:planes[0]]
    dtype = np.dtype(np.float64 if input.dtype == np.float64 else np.float32)
    # cells[n, c, o_1, ..., o_D, k_1, ..., k_D]: flat position of a window's cell in its plane
    cells, stride = np.zeros((1,) * (2 + 2 * dims), np.int64), 1
    for d in reversed(range(dims)):
        starts = _starts(samples[..., sample_of_dim[d]], spatial[d], sizes[d], kernel[d], dtype)
        positions = starts[..., :, None] + np.arange(kernel[d])             # (N, C, O_d, k_d)
        shape = [*planes] + [1] * (2 * dims)
        shape[2 + d], shape[2 + dims + d] = sizes[d], kernel[d]
        cells = cells + positions.reshape(shape) * stride
        stride *= spatial[d]
    cells = cells.reshape(*planes, int(np.prod(sizes)), int(np.prod(kernel)))

    def pool(x):
        xp = xp_of(x._data)
        table = Tensor._make(xp.asarray(cells), False, None, 0, x._device)
        # sizes spelled out (a -1 is ambiguous for an empty batch)
        windows = x.reshape(*planes, stride).gather(
            -1, table.reshape(*planes, cells.shape[-2] * cells.shape[-1]))
        windows = windows.reshape(cells.shape)
        picks = windows.detach().argmax(-1, keepdim=True)
        values = windows.gather(-1, picks).reshape(*planes, *sizes)
        if not return_indices:
            return values
        return values, table.gather(-1, picks).reshape(*planes, *sizes)

    return _batched(input, dims, pool)


def fractional_max_pool2d_with_indices(input, kernel_size, output_size=None, output_ratio=None,
                                       return_indices=True, _random_samples=None):
    """``fractional_max_pool2d(..., return_indices=True)``: (values, indices)."""
    return fractional_max_pool2d(input, kernel_size, output_size, output_ratio, True,
                                 _random_samples)


def fractional_max_pool3d_with_indices(input, kernel_size, output_size=None, output_ratio=None,
                                       return_indices=True, _random_samples=None):
    """``fractional_max_pool3d(..., return_indices=True)``: (values, indices)."""
    return fractional_max_pool3d(input, kernel_size, output_size, output_ratio, True,
                                 _random_samples)
