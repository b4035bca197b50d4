"""``gd.testing.assert_close``: torch.testing.assert_close's check, with its default tolerances
per dtype and its report of the worst mismatch."""

import numbers

import numpy as np

from . import backend, dtypes
from .tensor import Tensor

# torch's defaults (rtol, atol) by dtype; exact for integers and bools
_TOLERANCES = {np.dtype(np.float16): (1e-3, 1e-5), np.dtype(dtypes.bfloat16): (1.6e-2, 1e-5),
               np.dtype(np.float32): (1.3e-6, 1e-5), np.dtype(np.float64): (1e-7, 1e-7)}


def assert_close(actual, expected, *, rtol=None, atol=None, equal_nan=False, check_device=True,
                 check_dtype=True, msg=None):
    """Raise AssertionError unless ``actual`` and ``expected`` (Tensors, arrays, numbers, or
    lists/tuples/dicts of them) have the same structure, shapes, dtypes and devices (the last
    two unless told not to check) and |actual - expected| <= atol + rtol * |expected|
    elementwise. Without rtol and atol, torch's defaults for the dtype apply."""
    if (rtol is None) != (atol is None):
        raise ValueError(f"assert_close: pass both rtol and atol, or neither (got rtol={rtol}, "
                         f"atol={atol})")
    _compare(actual, expected, "", rtol, atol, equal_nan, check_device, check_dtype, msg)


def _compare(actual, expected, where, *options):
    if isinstance(expected, dict) or isinstance(actual, dict):
        if not (isinstance(actual, dict) and isinstance(expected, dict)) \
                or actual.keys() != expected.keys():
            _fail(f"The mappings{where} have different keys or types", options[-1])
        for key in expected:
            _compare(actual[key], expected[key], f"{where}[{key!r}]", *options)
        return
    if isinstance(expected, (list, tuple)) or isinstance(actual, (list, tuple)):
        if not (isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple))) \
                or len(actual) != len(expected):
            _fail(f"The sequences{where} have different lengths or types", options[-1])
        for i, (a, e) in enumerate(zip(actual, expected)):
            _compare(a, e, f"{where}[{i}]", *options)
        return
    _compare_leaf(actual, expected, where, *options)


def _as_array(value, where):
    if isinstance(value, Tensor):
        return backend.to_numpy(value.detach()._data), value._device
    if isinstance(value, (np.ndarray, numbers.Number, np.generic)):
        return np.asarray(value), None
    if backend.is_device_array(value):
        return backend.to_numpy(value), "cuda"
    raise TypeError(f"assert_close: expected Tensors, arrays or numbers{where}, got "
                    f"{type(value).__name__}")


def _compare_leaf(actual, expected, where, rtol, atol, equal_nan, check_device, check_dtype,
                  msg):
    a, a_device = _as_array(actual, where)
    e, e_device = _as_array(expected, where)
    if a.shape != e.shape:
        _fail(f"The values{where} are not close: shapes {a.shape} and {e.shape} differ", msg)
    if check_device and a_device != e_device and None not in (a_device, e_device):
        _fail(f"The values{where} are on different devices: {a_device} and {e_device}", msg)
    if check_dtype and a.dtype != e.dtype and not (a.ndim == 0 and not isinstance(
            actual, (Tensor, np.ndarray)) and not isinstance(expected, (Tensor, np.ndarray))):
        _fail(f"The values{where} have different dtypes: {a.dtype} and {e.dtype}", msg)
    if rtol is None:
        rtol, atol = max((_TOLERANCES.get(d, (0.0, 0.0)) for d in (a.dtype, e.dtype)),
                         key=lambda pair: pair[0])
    a64 = a.astype(np.float64) if a.dtype.kind != "c" else a
    e64 = e.astype(np.float64) if e.dtype.kind != "c" else e
    close = np.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=equal_nan)
    if close.all():
        return
    bad = ~close
    difference = np.abs(a64 - e64)
    worst = np.unravel_index(np.nanargmax(np.where(bad, difference, -np.inf)), a.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(bad, difference / np.abs(e64), -np.inf)
    worst_relative = np.unravel_index(np.nanargmax(relative), a.shape)
    _fail(f"Tensor-likes{where} are not close!\n\n"
          f"Mismatched elements: {int(bad.sum())} / {a.size} "
          f"({100 * bad.sum() / max(a.size, 1):.1f}%)\n"
          f"Greatest absolute difference: {difference[worst]} at index {tuple(map(int, worst))}"
          f" (up to {atol} allowed)\n"
          f"Greatest relative difference: {relative[worst_relative]} at index "
          f"{tuple(map(int, worst_relative))} (up to {rtol} allowed)", msg)


def _fail(message, msg):
    raise AssertionError(message if msg is None else msg)
