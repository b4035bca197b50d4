"""gpudl.cpu_matmul: numpy.matmul's results for every shape it takes (broadcast batches, 1-D
operands, empty dimensions), whole or split into row blocks on two threads, with BLAS on one
thread during every product."""

import numpy as np
import pytest
from gpudl import cpu_matmul, cpu_threads

SHAPES = [((5, 7), (7, 3)), ((7,), (7, 3)), ((5, 7), (7,)), ((7,), (7,)),
          ((4, 1, 33, 8), (3, 8, 5)), ((2, 40, 6), (6, 9)), ((0, 4), (4, 3)), ((3, 0), (0, 2)),
          ((70, 16), (16, 70))]


@pytest.fixture(params=["whole", "split"])
def mode(request, monkeypatch):
    if request.param == "split":
        monkeypatch.setattr(cpu_matmul, "SPLIT_FLOPS", 0)
        monkeypatch.setattr(cpu_matmul, "MIN_ROWS_PER_THREAD", 1)
        monkeypatch.setattr(cpu_threads, "count", lambda: 2)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sa, sb", SHAPES)
def test_matches_numpy_whole_and_in_row_blocks(sa, sb, dtype, mode, rng):
    a = rng.standard_normal(sa).astype(dtype)
    b = rng.standard_normal(sb).astype(dtype)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    got = cpu_matmul.matmul(a, b)
    assert got.shape == want.shape and got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    out = np.full(want.shape, np.nan, dtype)
    assert cpu_matmul.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, got)


def test_blas_on_one_thread_during_each_product(monkeypatch, rng):
    blas = cpu_threads._blas_controller()
    if blas is None:
        pytest.skip("threadpoolctl finds no BLAS to set")
    cpu_threads.count()
    seen, real = [], np.matmul

    def spy(*args, **kwargs):
        seen.append(blas.get_num_threads())
        return real(*args, **kwargs)
    monkeypatch.setattr(cpu_matmul.np, "matmul", spy)
    a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 300))
    for split_flops in (1 << 62, 0):         # whole, then in blocks of rows
        monkeypatch.setattr(cpu_matmul, "SPLIT_FLOPS", split_flops)
        np.testing.assert_allclose(cpu_matmul.matmul(a, b), real(a, b), rtol=1e-12)
    assert seen and set(seen) == {1}
