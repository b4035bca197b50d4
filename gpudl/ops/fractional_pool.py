"""F.fractional_max_pool2d (Graham's fractional max pooling): windows of ``kernel_size`` whose
starts follow a random pseudo-random sequence per (sample, channel) plane, one sample in [0, 1)
for each of width and height (``_random_samples``, drawn when not given).

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
    (N, C, 2) in [0, 1) fixes the windows (drawn from gpudl's generator when None).
    ``return_indices=True`` also returns each maximum's flat position in its H*W plane."""
    op = "fractional_max_pool2d"
    if _autocast.active:
        input, _random_samples = cast_inputs(op, input, _random_samples)
    _check_input(op, input, 2)
    kernel = _sizes(op, "kernel_size", kernel_size, 2)
    height, width = input.shape[-2:]
    if output_size is None:
        if output_ratio is None:
            raise ValueError(f"{op}: requires specifying either an output_size or an "
                             f"output_ratio")
        ratios = tuple(output_ratio) if isinstance(output_ratio, (tuple, list)) \
            else (output_ratio,) * 2
        if len(ratios) != 2 or not all(isinstance(r, (int, float)) and 0 < r <= 1
                                       for r in ratios):
            raise ValueError(f"{op}: output_ratio must be a number or a pair in (0, 1], got "
                             f"{output_ratio!r}")
        output_size = (int(height * ratios[0]), int(width * ratios[1]))
    sizes = _sizes(op, "output_size", output_size, 2)
    for name, n, o, k in (("height", height, sizes[0], kernel[0]),
                          ("width", width, sizes[1], kernel[1])):
        if k < 1 or o < 1 or o + k - 1 > n:
            raise ValueError(f"{op}: kernel_size {kernel} and output_size {sizes} do not fit "
                             f"the input {name} {n} (output + kernel - 1 must be at most the "
                             f"input size; both positive)")
    planes = (1 if input.ndim == 3 else input.shape[0], input.shape[-3])
    if _random_samples is None:
        _random_samples = creation.rand(*planes, 2, dtype=input.dtype, device=input._device)
    if not isinstance(_random_samples, Tensor) or tuple(_random_samples.shape) != planes + (2,):
        raise ValueError(f"{op}: _random_samples must be a Tensor of shape {planes + (2,)}, got "
                         f"{getattr(_random_samples, 'shape', type(_random_samples).__name__)}")
    samples = _random_samples.detach().numpy()
    dtype = np.dtype(np.float64 if input.dtype == np.float64 else np.float32)
    rows = _starts(samples[..., 1], height, sizes[0], kernel[0], dtype)    # (N, C, Ho)
    cols = _starts(samples[..., 0], width, sizes[1], kernel[1], dtype)     # (N, C, Wo)
    rows = rows[..., :, None] + np.arange(kernel[0])                       # (N, C, Ho, kh)
    cols = cols[..., :, None] + np.arange(kernel[1])                       # (N, C, Wo, kw)
    # cells[n, c, i, j, a, b]: flat position of window (i, j)'s cell (a, b)
    cells = (rows[:, :, :, None, :, None] * width + cols[:, :, None, :, None, :])
    cells = cells.reshape(*planes, sizes[0] * sizes[1], kernel[0] * kernel[1])

    def pool(x):
        xp = xp_of(x._data)
        table = Tensor._make(xp.asarray(cells), False, None, 0, x._device)
        # sizes spelled out (a -1 is ambiguous for an empty batch)
        windows = x.reshape(*planes, height * width).gather(
            -1, table.reshape(*planes, cells.shape[-2] * cells.shape[-1]))
        windows = windows.reshape(cells.shape)
        picks = windows.detach().argmax(-1, keepdim=True)
        values = windows.gather(-1, picks).reshape(*planes, *sizes)
        if not return_indices:
            return values
        return values, table.gather(-1, picks).reshape(*planes, *sizes)

    return _batched(input, 2, pool)


def fractional_max_pool2d_with_indices(input, kernel_size, output_size=None, output_ratio=None,
                                       return_indices=True, _random_samples=None):
    """``fractional_max_pool2d(..., return_indices=True)``: (values, indices)."""
    return fractional_max_pool2d(input, kernel_size, output_size, output_ratio, True,
                                 _random_samples)
