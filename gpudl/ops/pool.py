"""max_pool2d, avg_pool2d, adaptive_avg_pool2d: PyTorch's functional pooling, one Function each.

The Functions only call the kernel entries of ``kernels.pool``; this module checks the user's
arguments first, so a refused call raises before any work and changes nothing. Inputs are
(N, C, H, W) or unbatched (C, H, W); the kernels treat every leading dim as independent planes.
"""

import functools
import numbers

import numpy as np

from ..dtypes import is_floating
from ..autograd import ArrayFunction
from ..kernels import pool as K
from ._util import EmptyOutputError
from ..tensor import Tensor
from ._util import xp_of


class MaxPool2d(ArrayFunction):
    @staticmethod
    def forward(ctx, x, window, ceil_mode, return_indices):
        y, argmax = K.max_pool2d_forward(x, *window, ceil_mode)
        ctx.save_for_backward(argmax)          # one byte per output for windows up to 255 cells
        ctx.conf = (x.shape, window)
        if return_indices:
            return y, K.max_pool2d_indices(argmax, x.shape, *window)
        return y

    @staticmethod
    def backward(ctx, gy, *unused_index_grad):
        argmax, = ctx.saved_tensors
        shape, window = ctx.conf
        gx = K.max_pool2d_backward(gy, argmax, shape, *window) if ctx.needs_input_grad[0] else None
        return gx, None, None, None


class AvgPool2d(ArrayFunction):
    @staticmethod
    def forward(ctx, x, plan):
        """``plan``: ``K.avg_pool2d_plan`` of the call, kept per geometry (``_avg_plan``), one
        argument (each argument of ``apply`` costs a tiny pool ~0.1 us)."""
        ctx.conf = (x.shape, plan)
        return K.avg_pool2d_forward_planned(x, plan)

    @staticmethod
    def backward(ctx, gy):
        shape, plan = ctx.conf
        kernel_size, stride, padding, _, count_include_pad, divisor_override = plan[:6]
        gx = K.avg_pool2d_backward(gy, shape, kernel_size, stride, padding, count_include_pad,
                                   divisor_override)
        return gx, None


class AdaptiveAvgPool2d(ArrayFunction):
    @staticmethod
    def forward(ctx, x, output_size):
        ctx.shape = x.shape
        return K.adaptive_avg_pool2d_forward(x, output_size)

    @staticmethod
    def backward(ctx, gy):
        return K.adaptive_avg_pool2d_backward(gy, ctx.shape), None


# --------------------------------------------------------------------------- public functions
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling over (N, C, H, W) or (C, H, W) input, as ``torch.nn.functional``.

    Args:
        kernel_size, stride (default ``kernel_size``), padding, dilation: an int or an (h, w) pair.
            Padding is implicit -inf and at most half the kernel; a dilated window whose taps
            all fall in the padding (a 1-wide input, say) is refused: it has no maximum.
        ceil_mode: round the output size up (a last window must start inside the input or the
            left padding).
        return_indices: also return int64 indices of each max, flat into each H*W plane.

    Shape: (N, C, H, W) -> (N, C, Ho, Wo), Ho = floor((H + 2p - d*(k-1) - 1) / s) + 1.
    NaN inside a window gives NaN. Example: ``max_pool2d(x, 3, stride=2, padding=1)``.
    """
    window = _checked(input, "max_pool2d", kernel_size, stride, padding, dilation, ceil_mode)
    return MaxPool2d.apply(input, window, bool(ceil_mode), bool(return_indices))


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """2-D average pooling over (N, C, H, W) or (C, H, W) input, as ``torch.nn.functional``.

    Args:
        kernel_size, stride (default ``kernel_size``), padding: an int or an (h, w) pair; padding
            is implicit zeros, at most half the kernel.
        ceil_mode: round the output size up, as in ``max_pool2d``.
        count_include_pad: divide by the window's area within the padded input (default) rather
            than by the number of input cells it covers.
        divisor_override: a non-zero int dividing every window's sum instead.

    Shape: (N, C, H, W) -> (N, C, Ho, Wo), Ho = floor((H + 2p - k) / s) + 1.
    Example: ``avg_pool2d(x, 2)`` halves H and W.
    """
    op = "avg_pool2d"
    if divisor_override is not None:
        _checked(input, op, kernel_size, stride, padding, 1, ceil_mode)   # a bad window first
        if not _is_int(divisor_override):
            raise TypeError(f"{op}: divisor_override must be None or an int, got "
                            f"{type(divisor_override).__name__}")
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero, got 0")
        divisor_override = int(divisor_override)
    return AvgPool2d.apply(input, _avg_plan(input, kernel_size, stride, padding, bool(ceil_mode),
                                            bool(count_include_pad), divisor_override))


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed ``output_size`` whatever the input size, as in PyTorch.

    ``output_size`` is an int or an (h, w) pair; a None entry keeps that input size. Output cell
    i along a dim of size H averages the cells [floor(i*H/Ho), ceil((i+1)*H/Ho)), so bins overlap
    when Ho does not divide H. Shape: (N, C, H, W) -> (N, C, Ho, Wo).
    Example: ``adaptive_avg_pool2d(x, 1)`` is global average pooling.
    """
    op = "adaptive_avg_pool2d"
    _check_input(input, op)
    sizes = _pair(op, "output_size", output_size, allow_none=True)
    sizes = tuple(n if s is None else s for s, n in zip(sizes, input.shape[-2:]))
    if min(sizes) <= 0:
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r} "
                         f"(input shape {tuple(input.shape)})")
    return AdaptiveAvgPool2d.apply(input, sizes)


# --------------------------------------------------------------------------- argument checks
def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _pair(op, name, value, allow_none=False):
    """An int or a 1- or 2-sequence of ints -> (h, w); TypeError naming ``name`` otherwise."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    items = items * 2 if len(items) == 1 else items
    if len(items) != 2 or not all(_is_int(v) or (allow_none and v is None) for v in items):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return tuple(v if v is None else int(v) for v in items)


def _check_input(input, op):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    _check_array(op, input._data.shape, input._data.dtype)


def _check_array(op, shape, dtype):
    if not is_floating(dtype):
        raise TypeError(f"{op}: input must be a floating-point tensor, got {dtype}")
    if len(shape) not in (3, 4) or 0 in shape[-3:]:
        raise ValueError(f"{op}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input with "
                         f"non-zero C, H and W (N may be 0), got shape {tuple(shape)}")


def _checked(input, op, kernel_size, stride, padding, dilation, ceil_mode):
    """The checked window (see _check_window) of a call on ``input``, after the input's own
    checks; a call seen before (same input shape and dtype, same plain-int arguments) is not
    checked again: the checks cost more than a tiny pool."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    data = input._data
    if _plain_ints(kernel_size, stride, padding, dilation):
        try:
            return _checked_call(op, data.shape, data.dtype, kernel_size, stride, padding,
                                 dilation, ceil_mode)
        except (TypeError, ValueError):
            pass                    # refused: raise again below, naming the whole input shape
    _check_array(op, data.shape, data.dtype)
    return _check_window(op, data.shape, kernel_size, stride, padding, dilation, ceil_mode)


def _plain_ints(*values):
    """Whether each value is an int, a tuple of ints, or None: arguments safe as a cache key
    (True == 1, 2.0 == 2 would share keys with ints that the checks treat differently)."""
    for value in values:
        if value is None or type(value) is int:
            continue
        if type(value) is not tuple:
            return False
        for v in value:
            if type(v) is not int:
                return False
    return True


@functools.lru_cache(maxsize=256)
def _checked_call(op, shape, dtype, kernel_size, stride, padding, dilation, ceil_mode):
    _check_array(op, shape, dtype)
    return _check_window(op, shape[-2:], kernel_size, stride, padding, dilation, ceil_mode)


def _avg_plan(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor):
    """``K.avg_pool2d_plan`` of a checked avg_pool2d call (``_checked``'s checks, no
    dilation), kept per input shape and dtype and plain-int arguments as ``_checked`` keeps
    its windows: one cache look-up per call for the checks and the kernel's plan."""
    if isinstance(input, Tensor) and _plain_ints(kernel_size, stride, padding):
        data = input._data
        try:
            return _avg_plan_cached(data.shape, data.dtype, kernel_size, stride, padding,
                                    ceil_mode, count_include_pad, divisor)
        except (TypeError, ValueError):
            pass                    # refused: raise again below, naming the whole input shape
    window = _checked(input, "avg_pool2d", kernel_size, stride, padding, 1, ceil_mode)[:3]
    data = input._data
    return K.avg_pool2d_plan(data.shape, data.dtype, *window, ceil_mode, count_include_pad,
                             divisor)


@functools.lru_cache(maxsize=256)
def _avg_plan_cached(shape, dtype, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor):
    window = _checked_call("avg_pool2d", shape, dtype, kernel_size, stride, padding, 1,
                           ceil_mode)[:3]
    return K.avg_pool2d_plan(shape, dtype, *window, ceil_mode, count_include_pad, divisor)


def check_window_values(op, kernel, stride, padding, dilation, where):
    """ValueError unless kernel, stride and dilation are positive and padding is non-negative
    and at most half the kernel (tuples of one rank); ``where`` ends the message."""
    for name, sizes, low in (("kernel_size", kernel, 1), ("stride", stride, 1),
                             ("dilation", dilation, 1), ("padding", padding, 0)):
        if min(sizes) < low:
            raise ValueError(f"{op}: {name} must be {'positive' if low else 'non-negative'}, "
                             f"got {sizes} {where}")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size {kernel} "
                         f"{where}")


def _check_window(op, shape, kernel_size, stride, padding, dilation, ceil_mode):
    kernel = _pair(op, "kernel_size", kernel_size)
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and not stride)  # as torch
    stride = kernel if no_stride else _pair(op, "stride", stride)
    padding, dilation = _pair(op, "padding", padding), _pair(op, "dilation", dilation)
    check_window_values(op, kernel, stride, padding, dilation, f"(input shape {tuple(shape)})")
    outs = [K.pool_output_size(n, k, s, p, d, ceil_mode)
            for n, k, s, p, d in zip(shape[-2:], kernel, stride, padding, dilation)]
    for a, axis in enumerate(("height", "width")):
        # with ceil_mode a window may span past the padded input (torch keeps one starting in it)
        if outs[a] < 1:
            span = dilation[a] * (kernel[a] - 1) + 1
            dilated = f" with dilation {dilation}" if dilation != (1, 1) else ""
            raise EmptyOutputError(
                f"{op}: kernel_size {kernel}{dilated} spans {span} in {axis} but the padded "
                f"input has {shape[a - 2] + 2 * padding[a]} (input shape {tuple(shape)}, padding "
                f"{padding}): the output would be empty")
    check_windows_cover_input(op, shape[-2:], kernel, stride, padding, dilation, outs,
                              ("height", "width"))
    return kernel, stride, padding, dilation


def check_windows_cover_input(op, sizes, kernel, stride, padding, dilation, outs, axes):
    """ValueError when one of the ``outs`` windows along a dim would hold padding only: a
    dilated window can skip a small input (no maximum to take; torch returns -inf and an index
    outside the input, which its backward writes through)."""
    for a, axis in enumerate(axes):
        empty = K.first_empty_window(sizes[a], kernel[a], stride[a], padding[a], dilation[a],
                                     outs[a])
        if empty is not None:
            raise ValueError(
                f"{op}: window {empty} along {axis} covers padding only (kernel_size {kernel}, "
                f"dilation {dilation}, padding {padding}, input {axis} {sizes[a]}): its taps skip "
                f"every input cell; use less padding or dilation")


def _single(value):
    return value[0] if isinstance(value, (tuple, list)) and len(value) == 1 else value


def _check_1d(op, input):
    if getattr(input, "ndim", None) not in (2, 3):
        raise ValueError(f"{op}: expected (N, C, L) or (C, L) input, got shape "
                         f"{getattr(input, 'shape', None)}")


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """1-D max pooling over (N, C, L) or (C, L) input: max_pool2d on a height-1 image.
    Indices (``return_indices=True``) are positions along L."""
    _check_1d("max_pool1d", input)
    stride = kernel_size if stride is None or stride == [] else stride
    out = max_pool2d(input.unsqueeze(-2), (1, _single(kernel_size)), (1, _single(stride)),
                     (0, _single(padding)), (1, _single(dilation)), ceil_mode, return_indices)
    if return_indices:
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """1-D average pooling over (N, C, L) or (C, L) input: avg_pool2d on a height-1 image."""
    _check_1d("avg_pool1d", input)
    stride = kernel_size if stride is None or stride == [] else stride
    return avg_pool2d(input.unsqueeze(-2), (1, _single(kernel_size)), (1, _single(stride)),
                      (0, _single(padding)), ceil_mode, count_include_pad).squeeze(-2)


# --------------------------------------------------------------------------- adaptive, composite
# adaptive_avg_pool1d is the 2-D kernel on a height-1 image; adaptive max pooling gathers every
# window's cells (pool_nd.adaptive_max_pool), so it needs no kernel of its own.

def adaptive_avg_pool1d(input, output_size):
    """Average pooling of (N, C, L) or (C, L) input to length ``output_size``."""
    _check_1d("adaptive_avg_pool1d", input)
    return adaptive_avg_pool2d(input.unsqueeze(-2), (1, _single(output_size))).squeeze(-2)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Max pooling to a fixed ``output_size`` (int or (h, w); None keeps that input size) with
    PyTorch's windows (those of ``adaptive_avg_pool2d``). ``return_indices=True`` also returns
    each max's flat position in its (H, W) plane."""
    from .pool_nd import adaptive_max_pool
    return adaptive_max_pool("adaptive_max_pool2d", 2, input, output_size, return_indices)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """Max pooling of (N, C, L) or (C, L) input to length ``output_size``; with
    ``return_indices=True`` also each max's position along L."""
    _check_1d("adaptive_max_pool1d", input)
    out = adaptive_max_pool2d(input.unsqueeze(-2), (1, _single(output_size)), return_indices)
    if return_indices:
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)
