"""CuPy-only branches checked offline against CuPy 14's own rules (what its source does), where
no GPU is at hand: each stand-in below does what CuPy does for the calls these branches make,
refusals included, so a branch that passes NumPy but would fail on CuPy fails here (skipped on a
GPU, where the public-op tests beside them run the real CuPy: tools/gpu_check.sh)."""

import sys
import types

import ml_dtypes
import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend

torch = pytest.importorskip("torch")


class Device(np.ndarray):
    """A NumPy array the library is made to take for a CuPy array."""


def _on_device(array):
    return np.array(array).view(Device)          # a copy, as a transfer makes


# ---------------------------------------------------------------- backend.scatter_add
# CuPy 14's cupyx.scatter_add: the values cast to the target's dtype, and a TypeError for a
# dtype without an atomicAdd overload (cupy/_core/_routines_indexing.pyx, _scatter_op_single)
_ATOMIC_ADD = tuple(np.dtype(t) for t in (np.int32, np.int64, np.uint32, np.uint64, np.float16,
                                          np.float32, np.float64))


def _cupy_scatter_add(target, index, values):
    if target.dtype not in _ATOMIC_ADD:
        raise TypeError("cupy.add.at only supports int32, int64, float16, float32, float64, "
                        "uint32, uint64 as data type")
    np.add.at(target, index, np.asarray(values).astype(target.dtype))


@pytest.fixture
def cupy_scatter(monkeypatch):
    if backend._cupy is not None:
        pytest.skip("stands in for CuPy: on a GPU the real one runs")
    fake = types.ModuleType("cupyx")
    fake.scatter_add = _cupy_scatter_add
    monkeypatch.setitem(sys.modules, "cupyx", fake)
    monkeypatch.setattr(backend, "is_device_array", lambda a: isinstance(a, Device))


# row indices into a (5, 3) target, with repeats (row 2 three times, row 3 never)
ROWS = np.array([0, 2, 4, 2, 1, 2])


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16, np.float32])
def test_scatter_add_of_floats_on_the_device(rng, cupy_scatter, dtype):
    rows = ROWS
    start = rng.standard_normal((5, 3)).astype(dtype)
    values = rng.standard_normal((rows.size, 3)).astype(dtype)
    target = _on_device(start)
    backend.scatter_add(target, rows, _on_device(values))
    want = start.astype(np.float64)
    np.add.at(want, rows, values.astype(np.float64))
    assert target.dtype == dtype
    # bfloat16 values (8 significant bits) add up exactly in float32: rounded once at the end
    exact = dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(target.astype(np.float64), want.astype(dtype).astype(np.float64),
                               rtol=0 if exact else 2e-3, atol=0 if exact else 2e-3)


def test_scatter_add_of_narrow_integers_and_bool_wraps_and_ors_as_numpy(rng, cupy_scatter):
    rows = ROWS
    start = rng.integers(-128, 128, (5, 3)).astype(np.int8)
    values = rng.integers(60, 128, (rows.size, 3)).astype(np.int8)     # sums past 127 wrap
    target = _on_device(start)
    backend.scatter_add(target, rows, _on_device(values))
    total = start.astype(np.int64)
    np.add.at(total, rows, values.astype(np.int64))
    np.testing.assert_array_equal(target, (total + 128) % 256 - 128)
    assert target.dtype == np.int8

    flags = _on_device(np.zeros((5, 3), bool))
    hits = rng.random((rows.size, 3)) < 0.5
    backend.scatter_add(flags, (rows,), _on_device(hits))
    want = np.zeros((5, 3), bool)
    for r, h in zip(rows, hits):
        want[r] |= h
    np.testing.assert_array_equal(flags, want)


def test_scatter_add_of_complex_adds_both_parts(rng, cupy_scatter):
    rows = ROWS
    start = (rng.standard_normal((5, 3)) + 1j * rng.standard_normal((5, 3))).astype(np.complex64)
    values = (rng.standard_normal((rows.size, 3))
              + 1j * rng.standard_normal((rows.size, 3))).astype(np.complex64)
    target = _on_device(start)
    backend.scatter_add(target, rows, _on_device(values))
    want = start.astype(np.complex128)
    np.add.at(want, rows, values.astype(np.complex128))
    np.testing.assert_allclose(target, want, rtol=1e-6, atol=1e-6)
    assert target.dtype == np.complex64


def test_public_scatter_adds_in_dtypes_without_cupys_atomic_add(rng):
    """Public ops that scatter-add, in dtypes CuPy's scatter_add refuses, against torch (on the
    default device: CuPy's own scatter_add on a GPU)."""
    weight = rng.standard_normal((5, 3)).astype(np.float32)
    g = rng.standard_normal((ROWS.size, 3)).astype(np.float32)
    ours = gd.tensor(weight, dtype=gd.bfloat16, requires_grad=True)
    F.embedding(gd.tensor(ROWS), ours).backward(gd.tensor(g, dtype=gd.bfloat16))
    theirs = torch.tensor(weight, dtype=torch.bfloat16, requires_grad=True)
    torch.nn.functional.embedding(torch.tensor(ROWS), theirs).backward(
        torch.tensor(g, dtype=torch.bfloat16))
    np.testing.assert_allclose(ours.grad.float().numpy(), theirs.grad.float().numpy(),
                               rtol=1e-2, atol=1e-2)
    assert ours.grad.dtype == gd.bfloat16

    added = rng.integers(60, 128, ROWS.size).astype(np.int8)           # sums past 127 wrap
    got = gd.zeros(5, dtype=gd.int8).index_add(0, gd.tensor(ROWS), gd.tensor(added))
    want = torch.zeros(5, dtype=torch.int8).index_add(0, torch.tensor(ROWS), torch.tensor(added))
    np.testing.assert_array_equal(got.numpy(), want.numpy())

    blocks = rng.standard_normal((1, 2 * 4, 9)).astype(np.float32)    # fold: a scatter-add
    folded = F.fold(gd.tensor(blocks, dtype=gd.bfloat16), (4, 4), 2)
    want = torch.nn.functional.fold(torch.tensor(blocks, dtype=torch.bfloat16), (4, 4), 2)
    np.testing.assert_allclose(folded.float().numpy(), want.float().numpy(), rtol=1e-2,
                               atol=1e-2)


# ---------------------------------------------------------------- sorting bfloat16
# CuPy 14's sort, argsort and unique go through thrust, whose dtype table has no bfloat16:
# NotImplementedError (cupy/cuda/thrust.pyx, cupy/cuda/common._get_dtype_id)
def _refusing_bfloat16(function):
    def sort(a, *args, **kwargs):
        if a.dtype == ml_dtypes.bfloat16:
            raise NotImplementedError("Sorting arrays with dtype 'bfloat16' is not supported")
        return function(a, *args, **kwargs)
    return sort


class _CupySorts:
    """NumPy as the array module of Device arrays, but for sorts that refuse bfloat16 as
    CuPy's do."""
    argsort = staticmethod(_refusing_bfloat16(np.argsort))
    sort = staticmethod(_refusing_bfloat16(np.sort))
    unique = staticmethod(_refusing_bfloat16(np.unique))

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.fixture
def cupy_sorts(monkeypatch):
    if backend._cupy is not None or backend.SIM_DEVICE_ARRAYS:
        pytest.skip("stands in for CuPy on the cpu device: on a GPU the real one runs, under "
                    "the strict simulator the default-device test runs the device path")
    module, array_module = _CupySorts(), backend.get_array_module
    monkeypatch.setattr(backend, "is_device_array", lambda a: isinstance(a, Device))
    monkeypatch.setattr(backend, "get_array_module",
                        lambda a: module if isinstance(a, Device) else array_module(a))


def _bfloat16_pair(values, device_array):
    ours = gd.tensor(values, dtype=gd.bfloat16)
    if device_array:
        ours._data = ours._data.view(Device)
    return ours, torch.tensor(values, dtype=torch.bfloat16)


def _same(ours, theirs):
    np.testing.assert_array_equal(ours.float().numpy(), theirs.float().numpy())


def _check_bfloat16_orders(rng, device_array):
    values = np.round(rng.standard_normal((3, 8)) * 4) / 4       # ties
    values[1, 2] = np.nan
    ours, theirs = _bfloat16_pair(values, device_array)
    _same(ours.sort(dim=1, stable=True).values, theirs.sort(dim=1, stable=True).values)
    _same(ours.sort(dim=1, descending=True, stable=True).values,
          theirs.sort(dim=1, descending=True, stable=True).values)
    np.testing.assert_array_equal(ours.argsort(dim=1, stable=True).numpy(),
                                  theirs.argsort(dim=1, stable=True).numpy())
    _same(ours.topk(3, dim=1).values, theirs.topk(3, dim=1).values)
    _same(ours.median(dim=1).values, theirs.median(dim=1).values)
    ours, theirs = _bfloat16_pair(values[[0, 2]], device_array)      # without the NaN
    found, inverse = gd.unique(ours, return_inverse=True)
    want, want_inverse = torch.unique(theirs, return_inverse=True)
    _same(found, want)
    assert found.dtype == gd.bfloat16
    np.testing.assert_array_equal(inverse.numpy(), want_inverse.numpy())
    probes, torch_probes = _bfloat16_pair(np.round(rng.standard_normal((2, 5)) * 4) / 4,
                                          device_array)
    np.testing.assert_array_equal(
        gd.searchsorted(ours.sort(dim=1).values, probes).numpy(),
        torch.searchsorted(theirs.sort(dim=1).values, torch_probes).numpy())


def test_sorting_bfloat16_device_arrays(rng, cupy_sorts):
    _check_bfloat16_orders(rng, device_array=True)


def test_sorting_bfloat16_on_the_default_device(rng):
    """The same on the default device: CuPy's own sorts on a GPU."""
    _check_bfloat16_orders(rng, device_array=False)
