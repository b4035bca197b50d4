"""kernels.reduce.total (the sum of every value of a large CPU array) against float64 sums, and
through Tensor.sum / Tensor.mean against PyTorch: accuracy at a million values, NaN and inf,
keepdims, the dtypes it takes and those it leaves to NumPy."""

import numpy as np
import pytest
import gpudl as gd
from gpudl.kernels import reduce as R


@pytest.mark.parametrize("size", [R.MIN_SIZE, R.MIN_SIZE + 1, 10**6 + 3])
def test_float32_total_as_accurate_as_pairwise(size):
    rng = np.random.default_rng()
    a = (rng.standard_normal(size) + 0.3).astype(np.float32)      # a mean: errors add up
    assert R.applies(a)
    got = R.total(a)
    assert type(got) is np.float32
    exact = a.astype(np.float64).sum()
    # the float32 result can be no closer than half a unit in the last place of the sum
    bound = max(2 * abs(float(a.sum()) - exact), 1e-7 * np.abs(a.astype(np.float64)).sum())
    assert abs(float(got) - exact) <= bound


def test_float64_total_and_shapes():
    rng = np.random.default_rng()
    a = rng.standard_normal((3, 70, 41))
    got = R.total(a)
    assert type(got) is np.float64
    assert got == pytest.approx(a.sum(), rel=1e-13, abs=1e-12)


def test_nan_and_inf_reach_the_total():
    rng = np.random.default_rng()
    a = rng.standard_normal(20000).astype(np.float32)
    b = a.copy()
    a[12345] = np.inf
    assert R.total(a) == np.inf
    a[999] = -np.inf
    assert np.isnan(R.total(a))
    b[17] = np.nan
    assert np.isnan(R.total(b))


def test_what_applies():
    big = np.ones(R.MIN_SIZE, np.float32)
    assert R.applies(big) and R.applies(big.astype(np.float64))
    assert not R.applies(big[:-1])                              # small
    assert not R.applies(big.astype(np.float16))                # float16: NumPy in float32
    assert not R.applies(np.ones(2 * R.MIN_SIZE, np.int64))     # integers: NumPy
    assert not R.applies(np.ones((2, R.MIN_SIZE), np.float32)[:, ::2])     # strided


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("op", ["sum", "mean"])
def test_tensor_sum_and_mean_over_all_match_torch(op, keepdims):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng()
    a = rng.standard_normal((16, 8, 30, 30)).astype(np.float32)
    x = gd.tensor(a, requires_grad=True)
    ref = torch.tensor(a, requires_grad=True)
    dims = (0, 1, 2, 3)
    y = getattr(x, op)(dim=dims, keepdim=True) if keepdims else getattr(x, op)()
    r = getattr(ref, op)(dim=dims, keepdim=True) if keepdims else getattr(ref, op)()
    assert tuple(y.shape) == tuple(r.shape) and y.dtype == gd.float32
    exact = getattr(a.astype(np.float64), op)()
    scale = np.abs(a.astype(np.float64)).sum() / (a.size if op == "mean" else 1)
    for value in (y.numpy(), r.detach().numpy()):      # both as close to the float64 value
        assert abs(float(value.reshape(())) - exact) <= 1e-7 * scale
    (y * 3).sum().backward()
    (r * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), ref.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("shape", [(16, 64, 784), (3, 5, 1), (1, 2, 300), (2, 0, 7)])
def test_channel_totals_match_float64(shape, dtype, tol):
    rng = np.random.default_rng()
    a = (rng.standard_normal(shape) + 0.5).astype(dtype)
    got = R.channel_totals(a)
    assert got.dtype == dtype and got.shape == (shape[1],)
    exact = a.astype(np.float64).sum(axis=(0, 2))
    scale = np.abs(a.astype(np.float64)).sum(axis=(0, 2)) + 1
    np.testing.assert_array_less(np.abs(got - exact), tol * scale)
