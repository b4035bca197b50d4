"""Weak scalars: NumPy scalars combine with tensors as Python numbers do, checked against torch;
matmul of different dtypes raises as in torch instead of computing in float64."""

import operator

import numpy as np
import pytest
import torch

import gpudl as gd

SCALARS = [np.sqrt(3), np.float64(2.5), np.float32(2.5), np.float16(2.5), np.int64(3),
           np.int32(3), np.uint8(3)]
DTYPES = ["float32", "float16", "float64", "int64", "int32"]
OPS = [operator.add, operator.sub, operator.mul, operator.truediv, operator.pow]


@pytest.mark.parametrize("op", OPS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scalar", SCALARS, ids=lambda s: f"{type(s).__name__}")
def test_numpy_scalar_result_dtype_and_values_match_torch(op, dtype, scalar):
    values = np.array([1, 2, 3], dtype=dtype)
    for flip in (False, True):
        t, r = gd.tensor(values), torch.from_numpy(values)
        got = op(scalar, t) if flip else op(t, scalar)
        want = op(scalar, r) if flip else op(r, scalar)
        assert got.dtype.name == str(want.dtype).removeprefix("torch."), (flip, got, want)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-3)


def test_division_by_np_sqrt_keeps_float32_through_backward(rng):
    x = gd.tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    y = x / np.sqrt(3) * np.float64(2)
    assert y.dtype == gd.float32
    y.sum().backward()
    assert x.grad.dtype == gd.float32
    np.testing.assert_allclose(x.grad.numpy(), np.full(4, 2 / np.sqrt(3)), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_zero_d_float64_array_does_not_promote_a_float_tensor(dtype):
    # torch itself returns float64 here (it lets NumPy handle a 0-d ndarray operand); gpudl
    # follows torch's rule for scalars, which the 0-d array stands for
    x = gd.ones(3, dtype=dtype)
    for value in (np.array(2.0), np.array(2.0, dtype=np.float32)):
        assert (x * value).dtype == dtype
        assert (value - x).dtype == dtype
        assert gd.where(x > 0, x, value).dtype == dtype


def test_int_tensor_with_numpy_float_scalar_gives_the_default_float():
    got = gd.tensor([1, 2]) * np.float64(0.5)
    want = torch.tensor([1, 2]) * np.float64(0.5)
    assert got.dtype == gd.float32 and want.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("a_dtype,b_dtype", [("int64", "float32"), ("float32", "int64"),
                                             ("float32", "float64"), ("int32", "int64")])
def test_matmul_of_different_dtypes_raises_as_torch(a_dtype, b_dtype):
    a, b = np.ones((2, 3), a_dtype), np.ones((3, 2), b_dtype)
    with pytest.raises(RuntimeError):
        torch.from_numpy(a) @ torch.from_numpy(b)
    with pytest.raises(RuntimeError, match=f"same dtype, got {a_dtype} and {b_dtype}"):
        gd.tensor(a) @ gd.tensor(b)
    with pytest.raises(RuntimeError, match="same dtype"):
        gd.matmul(gd.tensor(a), gd.tensor(b))


def test_matmul_with_a_float64_numpy_matrix_keeps_the_tensor_dtype(rng):
    # a float64 NumPy operand is converted to the tensor's float dtype, as before
    w = rng.standard_normal((3, 2))
    x = gd.tensor(rng.standard_normal((4, 3)).astype(np.float32))
    out = x @ w
    assert out.dtype == gd.float32
    np.testing.assert_allclose(out.numpy(), x.numpy() @ w, rtol=1e-5, atol=1e-6)
