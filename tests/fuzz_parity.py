"""Differential-testing helpers for tests/test_fuzz_torch_parity.py: the same tensors built in
gpudl and torch (dtypes, non-contiguous layouts) and a comparison of what both return or raise."""

import ml_dtypes
import numpy as np
import torch

import gpudl as gd
from gpudl import backend

DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64",
          "float16", "bfloat16", "float32", "float64")
FLOATS = ("float16", "bfloat16", "float32", "float64")
LAYOUTS = ("contiguous", "transposed", "stepped", "expanded", "permuted")
# rtol, atol of a result of each floating dtype (a few ulps: the two libraries round differently)
TOLERANCE = {"float16": (4e-3, 1e-3), "bfloat16": (3e-2, 1e-2), "float32": (2e-5, 1e-6),
             "float64": (1e-10, 1e-12)}
ERRORS = (TypeError, ValueError, RuntimeError, IndexError)


def random_values(rng, shape, dtype):
    """Fresh random values of ``dtype`` (small integers, so products and sums do not wrap)."""
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype in FLOATS:
        values = rng.standard_normal(shape) * 2
        return values.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    low = 0 if dtype == "uint8" else -4
    return rng.integers(low, 6, size=shape).astype(dtype)


def base_shape(shape, layout, rng):
    """The shape of the array whose ``layout`` view (see ``view``) has ``shape``, and the view's
    recipe."""
    shape = tuple(shape)
    if layout == "transposed" and len(shape) >= 2:
        return shape[:-2] + (shape[-1], shape[-2]), ("transpose",)
    if layout == "stepped" and shape:
        return tuple(2 * s + 1 for s in shape), ("step",)
    if layout == "expanded" and shape:
        ones = tuple(1 if rng.random() < 0.5 else s for s in shape)
        return ones, ("expand", shape)
    if layout == "permuted" and len(shape) >= 2:
        order = tuple(int(i) for i in rng.permutation(len(shape)))
        inverse = tuple(int(i) for i in np.argsort(order))
        return tuple(shape[i] for i in inverse), ("permute", order)
    return shape, ("none",)


def view(t, recipe):
    kind = recipe[0]
    if kind == "transpose":
        return t.transpose(-1, -2)
    if kind == "step":
        return t[tuple(slice(1, None, 2) for _ in range(t.dim()))]
    if kind == "expand":
        return t.expand(*recipe[1])
    if kind == "permute":
        return t.permute(*recipe[1])
    return t


def torch_dtype(name):
    return getattr(torch, name)


def pair(array, recipe=("none",), requires_grad=False):
    """The same values as a gpudl and a torch tensor, both viewed by ``recipe``."""
    name = "bfloat16" if array.dtype == ml_dtypes.bfloat16 else array.dtype.name
    wide = array.astype(np.float32) if name == "bfloat16" else array
    t = torch.from_numpy(np.array(wide)).to(torch_dtype(name))
    g = gd.tensor(np.array(array))
    if requires_grad:
        t.requires_grad_(True)
        g.requires_grad_(True)
    return g, t, view(g, recipe), view(t, recipe)


def make(rng, shape, dtype, layout="contiguous", requires_grad=False):
    """(gpudl view, torch view, gpudl base, torch base) of fresh values laid out by ``layout``."""
    shape_of_base, recipe = base_shape(shape, layout, rng)
    g, t, gv, tv = pair(random_values(rng, shape_of_base, dtype), recipe, requires_grad)
    return gv, tv, g, t


def to_numpy(t):
    if isinstance(t, torch.Tensor):
        t = t.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy()
    array = t.detach().numpy() if isinstance(t, gd.Tensor) else np.asarray(t)
    return array.astype(np.float32) if array.dtype == ml_dtypes.bfloat16 else array


def least_precise(*names):
    """The floating dtype of ``names`` with the loosest tolerance (None when there is none)."""
    floats = [n for n in names if n in TOLERANCE]
    return max(floats, key=lambda n: TOLERANCE[n][0], default=None)


def dtype_name(t):
    return str(t.dtype).removeprefix("torch.") if isinstance(t, torch.Tensor) else t.dtype.name


def assert_same(got, want, tolerance=1.0, where="", floor=None):
    """``got`` (gpudl) equals ``want`` (torch): type, dtype and shape exactly, values to a few ulps
    of the result's dtype (or of dtype ``floor`` when looser: the least precise input) times
    ``tolerance``, NaN and infinity at the same places."""
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, tolerance, f"{where}[{i}]", floor)
        return
    if want is None:
        assert got is None, (where, got)
        return
    if not isinstance(want, torch.Tensor):
        if hasattr(want, "_fields"):         # a named tuple such as torch.return_types.max
            return assert_same(tuple(got), tuple(want), tolerance, where, floor)
        assert not isinstance(got, gd.Tensor), (where, got, want)
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=where)
        return
    assert isinstance(got, gd.Tensor), (where, type(got), want)
    assert dtype_name(got) == dtype_name(want), (where, dtype_name(got), dtype_name(want))
    assert tuple(got.shape) == tuple(want.shape), (where, tuple(got.shape), tuple(want.shape))
    g, w = to_numpy(got), to_numpy(want)
    if dtype_name(want) in TOLERANCE:
        rtol, atol = TOLERANCE[dtype_name(want)]
        if floor in TOLERANCE:
            rtol, atol = max(rtol, TOLERANCE[floor][0]), max(atol, TOLERANCE[floor][1])
        np.testing.assert_allclose(g, w, rtol=rtol * tolerance, atol=atol * tolerance,
                                   equal_nan=True, err_msg=where)
    else:
        np.testing.assert_array_equal(g, w, err_msg=where)


def outcome(fn, lib, *args):
    """(result, None) or (None, the error) of ``fn(lib, *args)``; for gpudl on the cuda device the
    checks it deferred (backend.defer_check) are read at once, so their error is the call's."""
    try:
        result = fn(lib, *args)
        if lib is gd:
            backend.raise_deferred()
        return result, None
    except Exception as error:       # noqa: BLE001 (compared with torch's error below)
        if lib is gd:
            backend._deferred.clear()     # the call's error stands; none left for the next
        return None, error


def assert_same_behaviour(fn, gd_args, torch_args, tolerance=1.0, floor=None):
    """``fn(gd, *gd_args)`` does what ``fn(torch, *torch_args)`` does: the same result, or an
    error of one of torch's error types where torch raises one (where torch has no kernel for
    a dtype, NotImplementedError, gpudl may compute). Returns torch's error, or None."""
    want, torch_error = outcome(fn, torch, *torch_args)
    got, gd_error = outcome(fn, gd, *gd_args)
    if isinstance(torch_error, NotImplementedError):
        return torch_error
    if torch_error is not None:
        assert gd_error is not None, f"torch raised {torch_error!r}, gpudl returned {got!r}"
        assert isinstance(gd_error, ERRORS), (
            f"gpudl raised {gd_error!r} where torch raised {torch_error!r}")
        return torch_error
    if gd_error is not None:
        raise AssertionError(f"torch returned, gpudl raised {gd_error!r}") from gd_error
    assert_same(got, want, tolerance, floor=floor)
    return None
