"""kernels.small_gemm.gemm_nt (the recurrent layers' per-step CPU GEMM) and its contraction-blocked
form (the LSTM's weight gradients) against a float64 NumPy product: every remainder of the 4 x 4
blocking and of the contraction blocks, both float dtypes, NaN/inf propagation."""

import numpy as np
import pytest
from gpudl.kernels import small_gemm
from gpudl.kernels.small_gemm import gemm_nt


def gemm_nt_blocked(a, bt, out):
    small_gemm._gemm_nt_blocked(a, bt, out)
    return out


GEMMS = pytest.mark.parametrize("gemm", [gemm_nt, gemm_nt_blocked])
KB = small_gemm.K_BLOCK


@GEMMS
@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("m, k, n", [(16, 128, 512), (16, 512, 128), (1, 1, 1), (3, 5, 2),
                                     (4, 4, 4), (5, 7, 9), (7, 33, 6), (17, 130, 514),
                                     (9, KB, 6), (6, 2 * KB + 37, 11), (4, KB + 1, 4)])
def test_matches_float64_product(gemm, m, k, n, dtype, tol):
    rng = np.random.default_rng()
    a = rng.standard_normal((m, k)).astype(dtype)
    bt = rng.standard_normal((n, k)).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    assert gemm(a, bt, out) is out
    expected = a.astype(np.float64) @ bt.astype(np.float64).T
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * np.sqrt(k))


@GEMMS
def test_empty_contraction_gives_zeros(gemm):
    out = np.full((5, 6), np.nan, np.float32)
    gemm(np.empty((5, 0), np.float32), np.empty((6, 0), np.float32), out)
    np.testing.assert_array_equal(out, 0)


@GEMMS
def test_nan_and_inf_propagate(gemm):
    """Only re-association is allowed to the compiler: a NaN or an infinity reaches exactly the
    outputs whose dot products it enters, in the blocked part and in the remainders."""
    rng = np.random.default_rng()
    a = rng.standard_normal((6, KB + 8)).astype(np.float32)      # two contraction blocks
    bt = rng.standard_normal((6, KB + 8)).astype(np.float32)
    a[1, KB + 3], a[5, 2], bt[4, KB] = np.nan, np.inf, np.inf
    out = np.empty((6, 6), np.float32)
    gemm(a, bt, out)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = a.astype(np.float64) @ bt.astype(np.float64).T
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(out[finite], expected[finite], rtol=2e-5, atol=1e-4)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("b, m, n, k", [(3, 16, 12, 100), (1, 1, 1, 1), (2, 5, 7, 9), (4, 9, 6, 33),
                                        (2, 3, 2, 0)])
def test_sum_over_matrices_matches_float64(b, m, n, k, dtype, tol):
    """gemm_nt_sum: sum over n of a[n] @ bt[n].T, every remainder of the blocking; out's old
    values are overwritten."""
    from gpudl.kernels.small_gemm import gemm_nt_sum
    rng = np.random.default_rng()
    a = rng.standard_normal((b, m, k)).astype(dtype)
    bt = rng.standard_normal((b, n, k)).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    assert gemm_nt_sum(a, bt, out) is out
    expected = np.einsum("bik,bjk->ij", a.astype(np.float64), bt.astype(np.float64))
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * np.sqrt(b * k + 1))


@pytest.mark.parametrize("m, n, length, stride", [(5, 6, 11, 13), (8, 4, 20, 20), (1, 3, 2, 7)])
def test_planes_of_strided_rows_match_float64(m, n, length, stride):
    """gemm_nt_planes: per plane, the matrices whose rows are ``length`` values every ``stride``
    of a wider 2-D buffer (the values past each row are never read: NaN there)."""
    from gpudl.kernels.small_gemm import gemm_nt_planes
    rng = np.random.default_rng()
    P = 3
    a = np.full((P, m * stride + 4), np.nan)
    bt = np.full((P, n * stride + 4), np.nan)
    am = rng.standard_normal((P, m, length))
    bm = rng.standard_normal((P, n, length))
    a[:, :m * stride].reshape(P, m, stride)[:, :, :length] = am
    bt[:, :n * stride].reshape(P, n, stride)[:, :, :length] = bm
    out = np.empty((P, m, n))
    assert gemm_nt_planes(a, bt, stride, length, out) is out
    np.testing.assert_allclose(out, am @ bm.transpose(0, 2, 1), rtol=1e-12, atol=1e-12)


def test_rows_at_any_offsets_overlapping_match_float64():
    """gemm_nt_rows: rows given by offsets into flat arrays, overlapping (a convolution's taps
    are shifted slices of one image), summed over the matrices of the offset tables."""
    from gpudl.kernels.small_gemm import gemm_nt_rows
    rng = np.random.default_rng()
    length, B, M, N = 23, 3, 6, 9
    a = rng.standard_normal(200)
    bt = rng.standard_normal(300)
    a_rows = rng.integers(0, a.size - length, (B, M))
    b_rows = rng.integers(0, bt.size - length, (B, N))      # random starts: overlaps likely
    out = np.full((M, N), np.nan)
    assert gemm_nt_rows(a, a_rows, bt, b_rows, length, out) is out
    want = np.zeros((M, N))
    for n in range(B):
        A = np.stack([a[s:s + length] for s in a_rows[n]])
        Bm = np.stack([bt[s:s + length] for s in b_rows[n]])
        want += A @ Bm.T
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("m, k, n", [(8, 4, 16), (32, 16, 1360), (64, 64, 784), (1, 1, 1),
                                     (3, 5, 2), (9, 7, 33), (17, 13, 100), (16, 3, 5),
                                     (24, 9, 1), (5, 0, 7)])
def test_nn_matches_float64_product(m, k, n, dtype, tol):
    """gemm_nn: out = a @ b, every remainder of the 8-row and 4-deep blocking (k < 4 and k = 0
    included); out's old values (NaN) are overwritten."""
    from gpudl.kernels.small_gemm import gemm_nn
    rng = np.random.default_rng()
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    assert gemm_nn(a, b, out) is out
    expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * np.sqrt(k + 1))


def test_nn_nan_and_inf_propagate():
    """gemm_nn: a NaN or infinity reaches exactly the outputs whose sums it enters, in the
    blocked part and in the leftover rows and contraction."""
    rng = np.random.default_rng()
    a = rng.standard_normal((11, 6)).astype(np.float32)
    b = rng.standard_normal((6, 40)).astype(np.float32)
    a[2, 1], a[9, 5], b[4, 17], b[5, 3] = np.nan, np.inf, np.inf, np.nan
    out = np.empty((11, 40), np.float32)
    small_gemm.gemm_nn(a, b, out)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(out[finite], expected[finite], rtol=2e-5, atol=1e-4)


@pytest.mark.parametrize("m, k, length, b_stride, out_stride", [(16, 16, 30, 37, 41),
                                                                (9, 5, 7, 7, 9), (8, 4, 1, 3, 2)])
def test_nn_planes_of_strided_rows_match_float64(m, k, length, b_stride, out_stride):
    """_gemm_nn_planes (Winograd's 16 products a step): per plane, b's and out's rows ``length``
    values every stride along a wider buffer; the values between out's rows are left as they
    were (NaN)."""
    from gpudl.kernels.small_gemm import _gemm_nn_planes, row_starts
    rng = np.random.default_rng()
    P = 3
    a = rng.standard_normal((P, m, k))
    b = rng.standard_normal((P, k * b_stride + 5))
    out = np.full((P, m * out_stride + 3), np.nan)
    _gemm_nn_planes(a, b, row_starts(k, b_stride)[0], out, out_stride, length, np.zeros(m))
    for p in range(P):
        B = np.stack([b[p, c * b_stride:c * b_stride + length] for c in range(k)])
        got = np.stack([out[p, i * out_stride:i * out_stride + length] for i in range(m)])
        np.testing.assert_allclose(got, a[p] @ B, rtol=1e-12, atol=1e-12)
        untouched = np.ones(out.shape[1], bool)
        for i in range(m):
            untouched[i * out_stride:i * out_stride + length] = False
        assert np.isnan(out[p, untouched]).all()


@pytest.mark.parametrize("m, k", [(16, 8), (11, 6), (8, 2), (3, 0)])
def test_nn_bias_starts_each_row(m, k):
    """gemm_nn with a bias: out = a @ b + bias[:, None], in the blocked rows, the leftover rows
    and contractions shorter than a block."""
    from gpudl.kernels.small_gemm import gemm_nn
    rng = np.random.default_rng()
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, 50))
    bias = rng.standard_normal(m)
    out = np.full((m, 50), np.nan)
    gemm_nn(a, b, out, bias)
    np.testing.assert_allclose(out, a @ b + bias[:, None], rtol=1e-12, atol=1e-12)
