"""gpudl.cpu_matmul: numpy.matmul's results for every shape it takes (broadcast batches, 1-D
operands, empty dimensions), whole or split into row blocks on two threads, with BLAS on one
thread during every product."""

import numpy as np
import pytest
from gpudl import cpu_matmul, cpu_threads

SHAPES = [((5, 7), (7, 3)), ((7,), (7, 3)), ((5, 7), (7,)), ((7,), (7,)),
          ((4, 1, 33, 8), (3, 8, 5)), ((2, 40, 6), (6, 9)), ((0, 4), (4, 3)), ((3, 0), (0, 2)),
          ((70, 16), (16, 70)),
          ((256, 64), (64, 192)), ((64, 256), (256, 120)), ((24, 130), (130, 17))]


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
    a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 12))     # BLAS's shape
    for split_flops in (1 << 62, 0):         # whole, then in blocks of rows
        monkeypatch.setattr(cpu_matmul, "SPLIT_FLOPS", split_flops)
        np.testing.assert_allclose(cpu_matmul.matmul(a, b), real(a, b), rtol=1e-12)
    assert seen and set(seen) == {1}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sa, sb, layouts, kernel", [
    ((256, 64), (64, 192), "CC", "_nn"), ((256, 64), (64, 192), "FC", "_nn"),
    ((64, 256), (256, 120), "CF", "_nt"), ((24, 900), (900, 17), "CF", "_nt"),
    ((64, 256), (256, 120), "CC", "_blas"),         # b's columns not contiguous: no copy
    ((256, 64), (64, 192), "CF", "_blas"),
    ((60, 64), (64, 192), "CC", "_blas"),           # rows not in blocks of 8
    ((256, 64), (64, 12), "CC", "_blas")])          # narrow
def test_small_gemm_kernels_where_they_pay(sa, sb, layouts, kernel, dtype, mode, rng,
                                           monkeypatch):
    """Where the loops outrun BLAS (an AVX-512 CPU, OpenBLAS on AVX2 kernels, as here), 2-D
    products of the shapes and layouts they run faster go to them, whole and split into row
    blocks, into a given out or not; elsewhere every product is BLAS's."""
    from gpudl.kernels import small_gemm
    monkeypatch.setattr(small_gemm, "outruns_blas", lambda: True)
    a = np.asarray(rng.standard_normal(sa), dtype, order=layouts[0])
    b = np.asarray(rng.standard_normal(sb), dtype, order=layouts[1])
    assert cpu_matmul._kernel_for(a, b) is getattr(cpu_matmul, kernel)
    want = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(cpu_matmul.matmul(a, b), want, rtol=tol, atol=tol * 10)
    out = np.full(want.shape, np.nan, dtype)
    assert cpu_matmul.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * 10)
    monkeypatch.setattr(small_gemm, "outruns_blas", lambda: False)
    assert cpu_matmul._kernel_for(a, b) is cpu_matmul._blas
    np.testing.assert_allclose(cpu_matmul.matmul(a, b), want, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("arch, internal, avx512, outruns", [
    ("Haswell", "openblas", True, True), ("Zen", "openblas", True, True),
    ("SkylakeX", "openblas", True, False), ("Cooperlake", "openblas", True, False),
    ("Haswell", "openblas", False, False), ("Haswell", "mkl", True, False)])
def test_loops_only_where_blas_runs_narrower_vectors(arch, internal, avx512, outruns,
                                                      monkeypatch):
    from llvmlite import binding
    from gpudl.kernels import small_gemm
    fake = type("Blas", (), {"internal_api": internal, "architecture": arch})()
    monkeypatch.setattr(cpu_threads, "_blas_controller", lambda: fake)
    monkeypatch.setattr(binding, "get_host_cpu_features", lambda: {"avx512f": avx512})
    assert small_gemm.outruns_blas.__wrapped__() is outruns


@pytest.mark.parametrize("given_out", [False, True])
def test_stack_times_matrix_runs_as_one_product(given_out, mode, rng, monkeypatch):
    """(batch, seq, K) @ (K, N), a C-contiguous stack: one product of all its rows, numpy's
    result either way; a strided stack keeps numpy.matmul's own loop."""
    seen = []
    real = cpu_matmul._kernel_for
    monkeypatch.setattr(cpu_matmul, "_kernel_for", lambda a, b: seen.append(a.shape) or real(a, b))
    a = rng.standard_normal((4, 6, 16, 24)).astype(np.float32)     # above SERIAL_GEMM
    b = rng.standard_normal((24, 16)).astype(np.float32)
    want = a.astype(np.float64) @ b
    out = np.full(want.shape, np.nan, np.float32) if given_out else None
    got = cpu_matmul.matmul(a, b, out)
    assert got.shape == want.shape and (out is None or got is out)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert seen[0] == (4 * 6 * 16, 24)
    strided = a[:, :, ::2]
    np.testing.assert_allclose(cpu_matmul.matmul(strided, b), strided.astype(np.float64) @ b,
                               rtol=1e-5, atol=1e-5)


def test_numpys_blas_is_the_one_held(monkeypatch):
    """With SciPy's BLAS loaded beside NumPy's (Numba loads it when it compiles), the BLAS that
    serial_blas holds to one thread is NumPy's, whatever order threadpoolctl lists them in."""
    pytest.importorskip("scipy.linalg")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    found = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
    monkeypatch.setattr(threadpoolctl.ThreadpoolController, "select",
                        lambda self, **kw: type("S", (), {"lib_controllers": found[::-1]})())
    chosen = cpu_threads._blas_controller()
    numpy_blas = [c for c in found if "numpy" in (c.filepath or "")]
    if not numpy_blas:
        pytest.skip("NumPy's BLAS is not in NumPy's folders here")
    assert chosen.filepath == numpy_blas[0].filepath


@pytest.mark.parametrize("sa, sb", [((2, 0, 5), (5, 3)), ((2, 3, 0), (0, 4)), ((0, 3, 2), (2, 0))])
def test_empty_stacks(sa, sb, rng):
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    want = np.matmul(a, b)
    np.testing.assert_array_equal(cpu_matmul.matmul(a, b), want)
    out = np.full(want.shape, np.nan)
    assert cpu_matmul.matmul(a, b, out) is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("before", [1, 2])
def test_serial_blas_holds_one_thread_and_restores_the_count(before, monkeypatch):
    """Inside serial_blas (nested too) BLAS runs on one thread and afterwards on as many as
    before; already at one thread, the block makes no call into threadpoolctl at all."""
    cpu_threads.count()
    blas = cpu_threads._state["blas"]
    if blas is None:
        pytest.skip("threadpoolctl finds no BLAS to set")
    previous = cpu_threads._state["blas_set"] or blas.get_num_threads()
    cpu_threads._set_blas(before)
    calls, real = [], blas.set_num_threads
    monkeypatch.setattr(blas, "set_num_threads", lambda n: calls.append(n) or real(n))
    try:
        with cpu_threads.serial_blas() as serial:
            assert serial and blas.get_num_threads() == 1
            with cpu_threads.serial_blas():
                assert blas.get_num_threads() == 1
            assert blas.get_num_threads() == 1
        assert blas.get_num_threads() == before
        assert calls == ([] if before == 1 else [1, before])
    finally:
        monkeypatch.undo()
        cpu_threads._set_blas(previous)


@pytest.mark.parametrize("shapes, serial", [
    (((8, 8), (8, 8)), True), (((3, 16, 16), (16, 16)), True), (((64,), (64, 100)), True),
    (((48, 48), (48, 48)), False), (((128,), (128, 100)), False), (((2, 64, 64), (64, 64)), False)])
def test_products_blas_runs_serially_skip_setting_its_threads(shapes, serial, rng, monkeypatch):
    """Products each of whose BLAS calls OpenBLAS runs on one thread anyway leave BLAS's
    thread count alone (no serial_blas block); larger ones still hold it; numpy's result."""
    entered = []
    real = cpu_threads.serial_blas
    monkeypatch.setattr(cpu_threads, "serial_blas", lambda: entered.append(1) or real())
    a, b = (rng.standard_normal(s) for s in shapes)
    np.testing.assert_allclose(cpu_matmul.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    assert (not entered) == serial
