"""Bad input raises at the call, names what was expected and what came, and changes nothing."""

import numpy as np
import pytest

import gpudl as gd


@pytest.fixture
def x():
    return gd.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)


@pytest.mark.parametrize("call,error,pattern", [
    (lambda x: x + gd.ones(4), ValueError, r"add: shapes \(2, 3\) and \(4,\)"),
    (lambda x: x * gd.ones(2, 2), ValueError, r"mul: shapes \(2, 3\) and \(2, 2\)"),
    (lambda x: x @ gd.ones(2, 3), ValueError, r"matmul: shapes \(2, 3\) and \(2, 3\).*3 != 2"),
    (lambda x: gd.ones(2, 2, 3) @ gd.ones(3, 3, 4), ValueError, r"batch dimensions.*\(2, 2, 3\)"),
    (lambda x: x @ gd.tensor(2.0), ValueError, r"at least one dimension"),
    (lambda x: x.reshape(4, 2), ValueError, r"shape \(4, 2\) is invalid for input of shape \(2, 3\)"),
    (lambda x: x.reshape(-1, -1), ValueError, r"invalid"),
    (lambda x: x.sum(2), IndexError, r"dim 2 is out of range.*2 dimensions"),
    (lambda x: x.mean((0, 0)), ValueError, r"repeats"),
    (lambda x: x.permute(0, 0), ValueError, r"repeats an axis"),
    (lambda x: x.permute(1), ValueError, r"not a permutation"),
    (lambda x: x.expand(3, 3), ValueError, r"cannot expand shape \(2, 3\)"),
    (lambda x: x.transpose(0, 3), IndexError, r"out of range"),
    (lambda x: x.unsqueeze(4), IndexError, r"out of range"),
    (lambda x: x.clip(), ValueError, r"at least one of 'min' or 'max'"),
    (lambda x: x.split([1, 1], dim=1), ValueError, r"do not add up to size 3"),
    (lambda x: x[5], IndexError, r"out of bounds"),
    (lambda x: gd.cat([x, gd.ones(2, 4)]), ValueError, r"cat: tensor 1 has shape \(2, 4\)"),
    (lambda x: gd.cat([]), ValueError, r"non-empty"),
    (lambda x: gd.cat([x, np.ones((2, 3))]), TypeError, r"element 1 is ndarray"),
    (lambda x: gd.stack([x, gd.ones(3, 2)]), ValueError, r"stack: tensor 1 has shape \(3, 2\)"),
    (lambda x: gd.where(x, x, x), TypeError, r"condition must be a bool tensor"),
    (lambda x: gd.where(gd.ones(4).bool(), x, 0.0), ValueError, r"where: shapes \(4,\), \(2, 3\)"),
    (lambda x: x.max(dim=5), IndexError, r"out of range"),
    (lambda x: gd.zeros(0).max(), ValueError, r"empty tensor of shape \(0,\)"),
    (lambda x: gd.zeros(0, 2).argmax(), ValueError, r"empty"),
    (lambda x: x.astype("complex128"), TypeError, r"unsupported dtype"),
    (lambda x: x.to("tpu"), TypeError, r"unsupported dtype .tpu."),
    (lambda x: len(gd.tensor(1.0)), TypeError, r"0-d"),
    (lambda x: bool(x), RuntimeError, r"6 elements is ambiguous"),
])
def test_bad_input_is_refused_with_a_clear_message(x, call, error, pattern):
    before = x.numpy().copy()
    with pytest.raises(error, match=pattern):
        call(x)
    np.testing.assert_array_equal(x.numpy(), before)
    assert x.grad is None


def test_refused_op_records_nothing(x):
    y = x * 2
    with pytest.raises(ValueError):
        y + gd.ones(5)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0))


def test_cuda_request_on_a_cpu_process_is_a_runtime_error(x):
    if gd.cuda.is_available():
        pytest.skip("a cuda device is present")
    with pytest.raises(RuntimeError, match="'cuda' requested but this process runs on the cpu"):
        x.to("cuda")
    with pytest.raises(RuntimeError, match="cuda"):
        gd.zeros(2, device="cuda")


def test_nan_propagates(x):
    n = gd.tensor([1.0, float("nan"), -1.0])
    assert np.isnan((n * 2).exp().sum().item())
    assert np.isnan(n.softmax(0).numpy()).all()
    assert n.isnan().tolist() == [False, True, False]
