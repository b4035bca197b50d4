"""kernels.workspace: an array is handed out again only once nothing references it (no view, no
holder), within the byte limit; device modules get fresh arrays."""

import numpy as np
import pytest
from gpudl.kernels import workspace as W


@pytest.fixture(autouse=True)
def _empty_pool(monkeypatch):
    monkeypatch.setattr(W, "_kept", {})
    monkeypatch.setattr(W, "_bytes", [0])


def test_reused_only_when_nothing_references_it():
    a = W.empty(np, (3, 5), np.float32)
    assert a.shape == (3, 5) and a.dtype == np.float32 and a.flags.c_contiguous
    address = a.ctypes.data
    b = W.empty(np, (3, 5), np.float32)
    assert b.ctypes.data != address                 # a is still held
    view = a[1:]
    holder = {"saved": b}
    del a, b
    c = W.empty(np, (3, 5), np.float32)             # a lives on in the view, b in the dict
    assert c.ctypes.data not in (address, view.base.ctypes.data, holder["saved"].ctypes.data)
    del view
    assert W.empty(np, (3, 5), np.float32).ctypes.data == address
    assert W.kept_bytes() == 3 * 15 * 4


def test_shape_and_dtype_are_part_of_the_key():
    a = W.empty(np, (4, 2), np.float32)
    address = a.ctypes.data
    del a
    assert W.empty(np, (2, 4), np.float32).ctypes.data != address
    assert W.empty(np, (4, 2), np.float64).ctypes.data != address
    assert W.empty(np, [4, 2], "float32").ctypes.data == address


def test_byte_limit_drops_unused_arrays_first(monkeypatch):
    monkeypatch.setattr(W, "MAX_BYTES", 1000)
    held = W.empty(np, (100,), np.float32)          # 400 bytes, in use
    W.empty(np, (125,), np.float32)                 # 500 bytes, unused as soon as returned
    assert W.kept_bytes() == 900
    kept = W.empty(np, (137,), np.float32)          # 548 bytes: fit once the 500 are dropped
    assert W.kept_bytes() == 400 + 548
    assert ((125,), np.dtype(np.float32)) not in W._kept
    W.empty(np, (30,), np.float32)                  # nothing unused to drop: handed out, not kept
    assert W.kept_bytes() == 400 + 548
    assert held.shape == (100,) and kept.shape == (137,)


def test_clear_forgets_kept_arrays_without_touching_live_ones():
    a = W.empty(np, (6,), np.float64)
    a[:] = 7
    W.clear()
    assert W.kept_bytes() == 0
    b = W.empty(np, (6,), np.float64)
    assert b.ctypes.data != a.ctypes.data
    np.testing.assert_array_equal(a, 7)


def test_other_array_modules_allocate_fresh():
    class FakeModule:
        @staticmethod
        def empty(shape, dtype):
            return ("fresh", shape, dtype)

    assert W.empty(FakeModule, (2,), np.float32) == ("fresh", (2,), np.float32)
    assert W.kept_bytes() == 0
