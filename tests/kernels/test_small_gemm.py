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
