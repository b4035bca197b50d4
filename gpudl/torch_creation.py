"""torch's remaining tensor factories: ``asarray`` (shares memory when it can), ``scalar_tensor``,
``empty_strided``, ``frombuffer``, the deprecated end-inclusive ``range``, ``fill``, and the
signal windows (``hann_window``, ``hamming_window``, ``blackman_window``, ``bartlett_window``,
``kaiser_window``) with torch's ``periodic`` flag."""

import math
import warnings

import numpy as np

from . import backend, creation, dtypes
from .functions import require_tensors
from .ops._util import is_int
from .tensor import Tensor


def asarray(obj, *, dtype=None, device=None, copy=None, requires_grad=False):
    """``obj`` (a Tensor, NumPy/CuPy array, buffer-backed array, number or nested sequence) as a
    tensor: the same memory when dtype and device allow and ``copy`` is not True (a Tensor of
    that dtype and device is returned itself), else a copy; ``copy=False`` refuses to copy
    (torch.asarray).

    Example: ``a = np.zeros(3); gd.asarray(a)[0] = 1`` writes ``a``."""
    if copy is True:
        out = creation.tensor(obj, dtype=dtype, device=device)
    else:
        out = creation.as_tensor(obj, dtype=dtype, device=device)
        source = obj._data if isinstance(obj, Tensor) else obj
        shared = out is obj or out._data is source or (
            isinstance(source, np.ndarray) and isinstance(out._data, np.ndarray)
            and np.shares_memory(out._data, source))
        if copy is False and not shared:
            raise ValueError(f"asarray: copy=False but {type(obj).__name__} cannot be viewed "
                             f"as a tensor of dtype {dtype} on device {device} without a copy")
    if requires_grad:
        if out is obj:
            out = out.detach()
        out.requires_grad_(True)
    return out


def scalar_tensor(s, *, dtype=None, device=None, requires_grad=False):
    """A 0-d tensor holding the number ``s``, of the default float dtype unless ``dtype``."""
    if isinstance(s, Tensor) or not isinstance(s, (int, float, bool, np.number, np.bool_)):
        raise TypeError(f"scalar_tensor(): argument 's' must be Number, not {type(s).__name__}")
    return creation.tensor(s, dtype=dtype or dtypes.DEFAULT_FLOAT, device=device,
                           requires_grad=requires_grad)


def empty_strided(size, stride, *, dtype=None, device=None, requires_grad=False):
    """An uninitialised tensor of ``size`` whose memory is laid out with ``stride`` (elements):
    what ``stride()`` then reports."""
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or not all(is_int(n) and n >= 0 for n in size + stride):
        raise RuntimeError(f"empty_strided: expected as many non-negative sizes as strides, got "
                           f"size {size} and stride {stride}")
    dtype = dtypes.as_dtype(dtype, "empty_strided") or dtypes.DEFAULT_FLOAT
    device = backend.check_device(device, "empty_strided")
    xp = backend.xp_for(device)
    count = 0 if 0 in size else 1 + sum((n - 1) * s for n, s in zip(size, stride))
    buffer = xp.zeros(count, dtype)
    data = xp.lib.stride_tricks.as_strided(
        buffer, shape=size, strides=tuple(s * buffer.itemsize for s in stride))
    out = Tensor._make(data, False, None, 0, device)
    return out.requires_grad_(True) if requires_grad else out


def frombuffer(buffer, *, dtype, count=-1, offset=0, requires_grad=False):
    """A 1-D cpu tensor viewing the memory of ``buffer`` (an object of the buffer protocol):
    ``count`` elements of ``dtype`` (all by default) from byte ``offset``; writes reach the
    buffer (torch.frombuffer)."""
    dtype = dtypes.as_dtype(dtype, "frombuffer")
    if dtype is None:
        raise TypeError("frombuffer: dtype is required")
    size = memoryview(buffer).nbytes
    if not 0 <= offset < size or (size - offset) % dtype.itemsize and count < 0:
        raise ValueError(f"frombuffer: buffer length ({size} bytes) after offset ({offset} "
                         f"bytes) must be a multiple of the element size ({dtype.itemsize})")
    if count != -1 and (count <= 0 or offset + count * dtype.itemsize > size):
        raise ValueError(f"frombuffer: requested buffer length ({count} * {dtype.itemsize} "
                         f"bytes) after offset ({offset} bytes) must not be greater than the "
                         f"actual buffer length ({size} bytes)")
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
    out = Tensor._make(array, False, None, 0, "cpu")
    return out.requires_grad_(True) if requires_grad else out


def range(start=0, end=None, step=1, *, dtype=None, device=None,  # noqa: A001
          requires_grad=False):
    """Deprecated in torch: ``start, start + step, ...`` up to and including ``end``, of the
    default float dtype unless ``dtype``. Prefer ``arange`` (end excluded)."""
    warnings.warn("gpudl.range is deprecated, as torch.range is: its end is included, unlike "
                  "Python's range; use gpudl.arange", UserWarning, stacklevel=2)
    if end is None:
        start, end = 0, start
    if step == 0:
        raise RuntimeError("range: step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError(f"range: upper bound and larger bound inconsistent with step sign "
                           f"(start {start}, end {end}, step {step})")
    count = int(math.floor((end - start) / step)) + 1
    values = start + np.arange(count, dtype=np.float64) * step
    return creation.tensor(values, dtype=dtype or dtypes.DEFAULT_FLOAT, device=device,
                           requires_grad=requires_grad)


def fill(input, value):
    """A new tensor of ``input``'s shape, dtype and device holding ``value`` (a number or a
    one-element tensor) everywhere (torch.fill; no gradient flows to ``input``)."""
    require_tensors("fill", input=input)
    return creation.full_like(input, value.item() if isinstance(value, Tensor) else value)


# ----------------------------------------------------------------- windows
def _window(name, make):
    def window(window_length, periodic=True, *args, dtype=None, layout=None, device=None,
               requires_grad=False):
        if not is_int(window_length) or window_length < 0:
            raise RuntimeError(f"{name}: window_length must be a non-negative int, got "
                               f"{window_length!r}")
        dtype = dtypes.as_dtype(dtype, name) or dtypes.DEFAULT_FLOAT
        if not dtypes.is_floating(dtype):
            raise RuntimeError(f"{name}: expected a floating point dtype, got {dtype}")
        if window_length <= 1:
            values = np.ones(window_length)
        else:
            n = window_length + 1 if periodic else window_length
            values = make(n, *args)[:window_length]
        return creation.tensor(values, dtype=dtype, device=device, requires_grad=requires_grad)
    window.__name__ = name
    return window


def _cosine_sum(*coefficients):
    def make(n, *extra):
        k = 2 * math.pi * np.arange(n) / (n - 1)
        return sum((-1) ** i * a * np.cos(i * k) for i, a in enumerate(coefficients))
    return make


def _hamming(n, alpha=0.54, beta=0.46):
    return alpha - beta * np.cos(2 * math.pi * np.arange(n) / (n - 1))


hann_window = _window("hann_window", _cosine_sum(0.5, 0.5))
hamming_window = _window("hamming_window", _hamming)
blackman_window = _window("blackman_window", _cosine_sum(0.42, 0.5, 0.08))
bartlett_window = _window("bartlett_window", lambda n: 1 - np.abs(2 * np.arange(n) / (n - 1) - 1))
kaiser_window = _window("kaiser_window", lambda n, beta=12.0: np.i0(
    beta * np.sqrt(np.clip(1 - (2 * np.arange(n) / (n - 1) - 1) ** 2, 0, None))) / np.i0(beta))
for _window_fn, _what in ((hann_window, "Hann"), (hamming_window, "Hamming (alpha, beta)"),
                          (blackman_window, "Blackman"), (bartlett_window, "Bartlett"),
                          (kaiser_window, "Kaiser (beta=12.0)")):
    _window_fn.__doc__ = (f"The {_what} window of ``window_length`` points: ``periodic`` (the "
                          "default) drops the last point of a window one longer, for spectral "
                          "analysis; of the default float dtype unless ``dtype``.")
del _window_fn, _what
