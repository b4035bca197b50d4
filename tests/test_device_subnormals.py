"""Subnormal floats on the default device, against torch on the CPU (which keeps them, as
torch's CUDA kernels do). The question a GPU run answers: whether CuPy's casts and elementwise
kernels on the device flush float32 subnormals to zero (session 20's frexp test found the
device's frexp of float32 does). On the cpu device this checks NumPy, and the test itself."""

import numpy as np
import pytest

import gpudl as gd

torch = pytest.importorskip("torch")

TINY32 = np.array([1e-40, -1e-40, 3e-42, 1.1754942e-38, 1e-45, 0.5, -2.0])


def _same_bits(ours, theirs):
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


def test_a_float64_to_float32_cast_keeps_subnormals():
    ours = gd.tensor(TINY32).to(gd.float32).numpy()
    theirs = torch.from_numpy(TINY32).to(torch.float32).numpy()
    assert (theirs[:3] != 0).all()              # the reference keeps them
    _same_bits(ours, theirs)


@pytest.mark.parametrize("op", ["mul", "div", "add", "sub"])
def test_float32_arithmetic_into_and_from_subnormals(op, rng):
    a32 = np.concatenate([TINY32, rng.standard_normal(9) * 1e-20]).astype(np.float32)
    b32 = np.concatenate([np.full(7, 0.5), rng.standard_normal(9) * 1e-20]).astype(np.float32)
    fn = {"mul": lambda x, y: x * y, "div": lambda x, y: x / y, "add": lambda x, y: x + y,
          "sub": lambda x, y: x - y}[op]
    ours = fn(gd.tensor(a32), gd.tensor(b32)).numpy()
    theirs = fn(torch.from_numpy(a32), torch.from_numpy(b32)).numpy()
    _same_bits(ours, theirs)


def test_a_sum_of_subnormals_is_not_zero():
    x = np.full(1000, 1e-42, np.float32)
    ours = gd.tensor(x).sum().numpy()
    theirs = torch.from_numpy(x).sum().numpy()
    assert theirs > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-3)
