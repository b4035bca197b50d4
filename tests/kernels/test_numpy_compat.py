"""kernels.numpy_compat: NumPy names numba-cuda still looks up (NumPy 2.5 removed row_stack, and
every Numba-CUDA compilation failed on the first GPU run without it)."""

import numpy as np

from gpudl.kernels import numpy_compat


def test_row_stack_is_put_back_where_numpy_removed_it(monkeypatch):
    monkeypatch.delattr(np, "row_stack", raising=False)
    numpy_compat.apply()
    rows = np.row_stack([np.arange(3), np.arange(3, 6)])
    np.testing.assert_array_equal(rows, [[0, 1, 2], [3, 4, 5]])


def test_an_existing_row_stack_is_left_alone(monkeypatch):
    mine = object()
    monkeypatch.setattr(np, "row_stack", mine, raising=False)
    numpy_compat.apply()
    assert np.row_stack is mine
