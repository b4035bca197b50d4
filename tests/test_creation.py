"""Factories, dtypes, seeding, conversions and DLPack exchange."""

import numpy as np
import pytest

import gpudl as gd
from oracle import torch


def test_tensor_infers_dtypes_like_torch():
    assert gd.tensor([1.0, 2.0]).dtype == gd.float32
    assert gd.tensor([1, 2]).dtype == gd.int64
    assert gd.tensor([True, False]).dtype == gd.bool_
    assert gd.tensor([[1, 2.5]]).dtype == gd.float32
    assert gd.tensor(np.zeros(2, np.float64)).dtype == gd.float64   # NumPy dtypes are kept
    assert gd.tensor(3.0).shape == ()
    assert gd.tensor([1, 2], dtype=gd.float64).dtype == np.float64
    assert gd.tensor([1, 2], dtype="float16").dtype == gd.float16
    assert gd.tensor([1, 2], dtype=torch.float32).dtype == gd.float32


@pytest.mark.parametrize("data", [[True, 2], [[True], [2]], [1, True], [False, 2.5], [[], []],
                                  [True, np.int64(3)]])
def test_tensor_of_mixed_python_data_takes_the_highest_kind_as_torch(data):
    """[True, 2] was a bool tensor [True, True] (the first element decided): torch says int64."""
    got, expected = gd.tensor(data), torch.tensor(data)
    assert str(got.dtype) == str(expected.dtype).replace("torch.", "")
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_tensor_copies_its_input():
    a = np.ones(3, np.float32)
    t = gd.tensor(a)
    a[0] = 5
    assert t.numpy()[0] == 1
    u = gd.tensor(t)
    t.data[1] = 7
    assert u.numpy()[1] == 1


def test_numpy_shares_memory_on_cpu_even_with_grad():
    t = gd.zeros(3, requires_grad=True, device="cpu")
    assert np.shares_memory(t.numpy(), t._data)


def test_factories():
    assert gd.zeros(2, 3).shape == (2, 3) and gd.zeros((2, 3)).numpy().sum() == 0
    assert gd.ones(4).numpy().sum() == 4
    assert gd.full((2, 2), 7).dtype == gd.int64
    assert gd.full((2, 2), 7.5).numpy()[0, 0] == 7.5
    assert gd.empty(0, 5).shape == (0, 5)
    np.testing.assert_array_equal(gd.arange(5).numpy(), np.arange(5))
    assert gd.arange(0, 1, 0.25).dtype == gd.float32
    np.testing.assert_allclose(gd.linspace(0, 1, 5).numpy(), np.linspace(0, 1, 5))
    np.testing.assert_array_equal(gd.eye(3).numpy(), np.eye(3))
    x = gd.randn(2, 3, dtype=gd.float64)
    assert gd.zeros_like(x).dtype == gd.float64 and gd.ones_like(x).shape == (2, 3)
    assert gd.full_like(x, 2.0).numpy().sum() == 12
    r = gd.randint(0, 10, (1000,))
    assert r.dtype == gd.int64 and 0 <= r.numpy().min() and r.numpy().max() < 10
    assert sorted(gd.randperm(6).tolist()) == list(range(6))


def test_factory_errors():
    with pytest.raises(ValueError, match=r"non-negative.*\(2, -1\)"):
        gd.zeros(2, -1)
    with pytest.raises(TypeError, match="ints"):
        gd.ones(2.5)
    with pytest.raises(TypeError, match="unsupported dtype"):
        gd.zeros(2, dtype="complex64")
    with pytest.raises(ValueError, match="ragged"):
        gd.tensor([[1, 2], [3]])
    with pytest.raises(TypeError, match="str"):
        gd.tensor("abc")
    with pytest.raises(ValueError, match="cpu' or 'cuda'"):
        gd.zeros(2, device="tpu")


def test_random_statistics_and_seeding():
    gd.manual_seed(123)
    a = gd.randn(20000)
    gd.manual_seed(123)
    b = gd.randn(20000)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert abs(a.numpy().mean()) < 0.03 and abs(a.numpy().std() - 1) < 0.03
    u = gd.rand(20000).numpy()
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert not np.array_equal(gd.randn(5).numpy(), gd.randn(5).numpy())
    with pytest.raises(TypeError, match="int"):
        gd.manual_seed(1.5)


def test_conversions():
    t = gd.tensor([[1.5, 2.0]])
    assert t.tolist() == [[1.5, 2.0]]
    assert gd.tensor([3.0]).item() == 3.0 and float(gd.tensor(2.5)) == 2.5
    with pytest.raises(ValueError, match=r"one-element.*\(1, 2\)"):
        t.item()
    assert t.double().dtype == gd.float64 and t.long().dtype == gd.int64
    assert t.to(gd.float16).dtype == gd.float16
    assert t.to(t.device) is t                  # already there: the same tensor, as in torch
    on_cpu = t.cpu()
    assert on_cpu.device == "cpu" and on_cpu.tolist() == [[1.5, 2.0]]
    assert on_cpu.to("cpu") is on_cpu and on_cpu.cpu() is on_cpu
    assert len(t) == 1 and [row.shape for row in t] == [(2,)]
    assert np.asarray(t).shape == (1, 2)
    assert "tensor(" in repr(t) and "requires_grad=True" in repr(gd.zeros(1, requires_grad=True))


def test_dlpack_round_trips_share_memory():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = gd.from_dlpack(a)
    assert np.shares_memory(t._data, a)
    th = torch.from_dlpack(t)
    th[0, 0] = 42
    assert a[0, 0] == 42
    back = gd.from_dlpack(torch.ones(2, 2))
    assert back.shape == (2, 2) and back.dtype == gd.float32
    with pytest.raises(RuntimeError, match="detach"):
        torch.from_dlpack(gd.zeros(2, requires_grad=True))
    with pytest.raises(TypeError, match="DLPack"):
        gd.from_dlpack([1, 2])


def test_cuda_array_interface_absent_on_cpu():
    if gd.device() == "cpu":
        assert not hasattr(gd.zeros(2), "__cuda_array_interface__")
        assert not gd.cuda.is_available() and gd.cuda.device_count() == 0
        gd.cuda.synchronize()


def test_arange_takes_tensor_bounds_and_torch_dtypes_and_refuses_a_wrong_direction():
    """gd.arange(gd.tensor(3)) was float32 (a 0-d int tensor did not count as an int); a torch
    dtype was not normalised; arange(-3) was empty where torch raises."""
    for args, kwargs in [((3,), {}), ((1, 7, 2), {}), ((0, 1, 0.25), {}), ((5,), {"dtype": "f64"}),
                         ((3, 0, -1), {})]:
        dtype = kwargs.get("dtype")
        got = gd.arange(*(gd.tensor(a) for a in args),
                        **({"dtype": torch.float64} if dtype else {}))
        expected = torch.arange(*(torch.tensor(a) for a in args),
                                **({"dtype": torch.float64} if dtype else {}))
        assert str(got.dtype) == str(expected.dtype).replace("torch.", "")
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    with pytest.raises(RuntimeError):
        torch.arange(-3)
    with pytest.raises(ValueError, match="wrong side"):
        gd.arange(-3)


@pytest.mark.parametrize("name", ["zeros", "ones", "empty", "rand", "randn"])
def test_size_as_a_keyword_as_torch(name):
    for size in ((2, 3), [4], ()):
        made = getattr(gd, name)(size=size, dtype=gd.float64)
        assert made.shape == tuple(getattr(torch, name)(size=size).shape)
        assert made.dtype == gd.float64
    with pytest.raises(TypeError, match=f"{name}: pass the size as ints or as size=, not both"):
        getattr(gd, name)(2, size=(3,))
    with pytest.raises(TypeError, match="unexpected keyword argument 'shape'"):
        getattr(gd, name)(shape=(3,))
