"""Small helpers shared by the op modules."""

import contextlib
import math
import numbers

import numpy as np

from .. import backend, dtypes
from ..dtypes import LOW_PRECISION, float32
from ..kernels import reduce as reduce_kernels


class EmptyOutputError(ValueError, RuntimeError):
    """A window (conv kernel, pooling window) that leaves no output: a RuntimeError as in torch,
    and a ValueError (a bad argument)."""


def sum_to(g, shape):
    """Reduce a broadcast gradient ``g`` back to ``shape`` (the inverse of broadcasting)."""
    if g.shape == shape:
        return g
    axes = broadcast_axes(g.shape, shape)
    g = summed(g, axes, True) if axes else g
    return g.reshape(shape)


def masked_gradient(mask, g):
    """``g`` where ``mask`` holds, exactly 0 elsewhere: not ``g * mask``, whose 0 * inf and
    0 * nan would leak an infinite or NaN upstream gradient into the input a where, clamp or
    max did not pick (torch's masked backward gives 0 there)."""
    out = xp_of(g).where(mask, g, 0)
    return out if out.dtype == g.dtype else backend.cast(out, g.dtype)


def row_major(out):
    """``out`` in row-major order, as torch returns from cat, stack, softmax, cumsum, roll and
    pad (NumPy keeps a transposed input's order, and a later ``.view(-1)`` then raised)."""
    return out if out.flags.c_contiguous else xp_of(out).ascontiguousarray(out)


def broadcast_axes(broadcast_shape, shape):
    """The axes of ``broadcast_shape`` that broadcasting ``shape`` to it added or stretched."""
    lead = len(broadcast_shape) - len(shape)
    return tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and broadcast_shape[lead + i] != 1)


def summed(a, axes, keepdims):
    """``a.sum`` over ``axes``; float16/bfloat16 accumulate in float32 (as torch) and round
    back (NumPy would add bfloat16 in bfloat16). A sum of every value of a large float32/float64
    CPU array runs kernels/reduce.py's vectorized loop."""
    if over_all(axes, a.ndim) and reduce_kernels.applies(a):
        value = reduce_kernels.total(a)
        return np.full((1,) * a.ndim, value) if keepdims else value
    if a.dtype in LOW_PRECISION and not backend.is_device_array(a):
        return a.sum(axis=axes, keepdims=keepdims, dtype=float32).astype(a.dtype)
    return a.sum(axis=axes, keepdims=keepdims, dtype=integral_dtype(a))


def integral_dtype(a):
    """``a``'s dtype when integral or bool, else None: what to pass a NumPy/CuPy sum or cumsum
    as ``dtype=`` for the result to keep it (theirs widen int8 to int64, uint8 to uint64; the
    caller has already widened where torch does)."""
    return a.dtype if a.dtype.kind in "biu" else None


def mean_of(a, axes, keepdims):
    """``a.mean`` over ``axes``, in float32 for float16/bfloat16 (``in_float32``)."""
    if over_all(axes, a.ndim) and reduce_kernels.applies(a):
        value = a.dtype.type(reduce_kernels.total(a) / a.size)
        return np.full((1,) * a.ndim, value) if keepdims else value
    return in_float32(lambda x: array_mean(x, axes, keepdims), a)


_FLOAT32_64 = (np.dtype(np.float32), np.dtype(np.float64))


def array_mean(x, axes, keepdims=True):
    """``x.mean(axis=axes, keepdims=keepdims)`` (``axes``: None or a tuple of axes). On a
    float32/float64 NumPy array with elements, its sum divided by the count: NumPy's mean is a
    Python wrapper (~2 us a call) around that same sum, and its quotient, taken in float64 and
    cast back, is the one a float32 division rounds to (53 >= 2 * 24 + 2 bits: no double
    rounding). Anything else (CuPy, other dtypes, no elements) takes ``x.mean``."""
    if type(x) is not np.ndarray or x.dtype not in _FLOAT32_64 or not x.size:
        return x.mean(axis=axes, keepdims=keepdims)
    count = x.size if axes is None else math.prod([x.shape[a] for a in axes])
    return x.sum(axis=axes, keepdims=keepdims) / count


def over_all(axes, ndim):
    """Whether ``axes`` (None, or a tuple of distinct non-negative axes) names every axis."""
    return axes is None or (type(axes) is tuple and len(axes) == ndim)


def in_float32(function, *args):
    """``function(*args)``, computed in float32 when the first argument is a float16/bfloat16
    NumPy array (the CPU twins' rule: float32 arithmetic, the result rounded back to that
    dtype, as torch's CPU kernels do) or a bfloat16 CuPy array (CuPy 14 holds bfloat16 but its
    scans and cuBLAS products refuse it); anything else runs as it is (CuPy handles float16)."""
    dtype = args[0].dtype
    if dtype not in LOW_PRECISION or (backend.is_device_array(args[0])
                                      and dtype != dtypes.bfloat16):
        return function(*args)
    out = function(*(a.astype(float32) if getattr(a, "dtype", None) in LOW_PRECISION else a
                     for a in args))
    return backend.cast(out, dtype)


def widened(tensor):
    """A float16/bfloat16 Tensor as float32 (a graph node: gradients come back in its dtype);
    anything else (None, integer targets, float32) as it is."""
    return tensor.float() if getattr(tensor, "dtype", None) in LOW_PRECISION else tensor


def promoted_pair(input, target):
    """``(input, target)`` both in torch's promoted dtype when ``target`` is floating (the
    pointwise losses: mse_loss(float16, float32) is float32); an integer or bool target, or one
    of the input's dtype, leaves both as they are. The casts are graph nodes."""
    if not dtypes.is_floating(target.dtype) or target.dtype == input.dtype:
        return input, target
    dtype = dtypes.promote_types(input.dtype, target.dtype)
    return input.astype(dtype), target.astype(dtype)


def normalize_axes(axis, ndim, op):
    """An int, a tuple of ints or None -> a sorted tuple of non-negative axes (None: all axes)."""
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:      # the common case, checked as below
        return (axis % ndim,)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise TypeError(f"{op}: dim must be an int or a tuple of ints, got {axis!r}")
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise IndexError(
                f"{op}: dim {a} is out of range for a tensor with {ndim} dimensions "
                f"(expected in [{-max(ndim, 1)}, {max(ndim, 1) - 1}])")
        out.append(int(a) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {axis!r} repeats an axis")
    return tuple(sorted(out)) if ndim else ()


def normalize_axis(axis, ndim, op):
    """One int dim -> a non-negative axis (a tuple is refused: these ops take one dim)."""
    if type(axis) is int and -ndim <= axis < ndim:      # the common case, checked as below
        return axis % ndim
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{op}: dim must be an int, got {axis!r}")
    axes = normalize_axes(axis, ndim, op)     # checks the range ([-1, 0] for a 0-d tensor)
    return axes[0] if ndim else 0


def is_int(value):
    """A Python or NumPy integer, not a bool: the sizes and counts torch takes."""
    return type(value) is int or (isinstance(value, numbers.Integral)      # int first: the
                                  and not isinstance(value, bool))         # ABC check is slow


def xp_of(array):
    return backend.get_array_module(array)


def quiet(xp):
    """Division by zero gives inf/nan as in torch, without NumPy's warning."""
    return xp.errstate(divide="ignore", invalid="ignore") if hasattr(xp, "errstate") \
        else contextlib.nullcontext()
