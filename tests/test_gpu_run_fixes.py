"""Wrong results the first GPU run found, pinned on the CPU: each test drives the code path the
GPU took (CuPy's functions stood in by NumPy's where the path only differs in the array module)
or the input class that exposed it."""

import numpy as np
import pytest

import gpudl as gd
from gpudl.ops import elementwise_math

torch = pytest.importorskip("torch")


class NotNumPy:
    """NumPy's functions under another module object: the CuPy branch of a function that
    branches on ``xp is np``."""

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sinc_on_the_device_branch_matches_torch_at_the_edges(rng, dtype):
    x = np.concatenate([[0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, 1e-30],
                        rng.standard_normal(20) * 3]).astype(dtype)
    ours = elementwise_math._sinc(NotNumPy(), x)
    theirs = torch.sinc(torch.from_numpy(x)).numpy()
    assert ours.dtype == theirs.dtype
    tolerance = 2e-3 if dtype == np.float16 else 1e-6
    np.testing.assert_allclose(ours.astype(np.float64), theirs.astype(np.float64),
                               rtol=tolerance, atol=tolerance, equal_nan=True)


def _adjugate_transposed(m):
    """det(m) m^-T of a 3 x 3 matrix from its minors: a polynomial, defined at singular m."""
    return np.array([[(-1) ** (i + j) * np.linalg.det(np.delete(np.delete(m, i, 0), j, 1))
                      for j in range(3)] for i in range(3)])


@pytest.mark.parametrize("seed", range(12))
def test_second_derivative_of_det_at_singular_matrices_matches_finite_differences(seed):
    """A singular matrix's determinant from an LU is rounding noise, seldom exactly 0 (on the
    GPU 1e-17; here most seeds): the backward must still take the cofactors, not A^-T. The
    reference is central differences of the exact gradient (torch 2.13 is off here: at seed
    11 its entries differ from the differences by up to 24)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, 2)) @ rng.standard_normal((2, 3))

    def gradient_norm(m):          # |d/dm (det(m) sum(m))|^2, exactly
        g = _adjugate_transposed(m) * m.sum() + np.linalg.det(m)
        return (g * g).sum()
    step, expected = 1e-6, np.zeros((3, 3))
    for i, j in np.ndindex(3, 3):
        e = np.zeros((3, 3))
        e[i, j] = step
        expected[i, j] = (gradient_norm(a + e) - gradient_norm(a - e)) / (2 * step)
    x = gd.tensor(a, requires_grad=True)
    (g,) = gd.autograd.grad(gd.linalg.det(x) * x.sum(), x, create_graph=True)
    (gg,) = gd.autograd.grad((g * g).sum(), x)
    np.testing.assert_allclose(gg.numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_polygamma_on_the_device_branch_is_the_hurwitz_zeta_formula(monkeypatch, rng, n):
    """cupyx's polygamma took no Python int n (its cupy.where got a bool): the device branch
    computes (-1)**(n+1) n! zeta(n + 1, x) with cupyx's zeta, here SciPy's (the same
    function), against torch.polygamma."""
    special = pytest.importorskip("scipy.special")
    import sys
    import types

    from gpudl import special_math
    monkeypatch.setitem(sys.modules, "cupyx", types.ModuleType("cupyx"))
    monkeypatch.setitem(sys.modules, "cupyx.scipy", types.SimpleNamespace(special=special))
    monkeypatch.setattr(special_math, "xp_of", lambda x: NotNumPy())
    x = rng.uniform(0.1, 6.0, 50)
    ours = special_math.polygamma(n, x)
    np.testing.assert_allclose(ours, torch.polygamma(n, torch.from_numpy(x)).numpy(),
                               rtol=1e-8)       # torch's CPU trigamma is good to ~1e-9
