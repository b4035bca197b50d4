"""Under Numba's CUDA simulator with the cuda device chosen: the cuda device's arrays refuse host
data as CuPy does (gpudl/sim_device.py), so a library path that hands a NumPy array to a cuda
tensor's computation fails here as on a GPU, and the backend's transfer is accepted."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIM_DEVICE_ARRAYS,
                                 reason="needs NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda")]

if backend.SIM_DEVICE_ARRAYS:
    from numba import cuda
    from gpudl.sim_device import SimDeviceArray

    @cuda.jit
    def _add_one(x):
        i = cuda.grid(1)
        if i < x.size:
            x[i] += 1


@pytest.fixture
def rng():
    return np.random.default_rng()


def test_a_host_array_into_a_cuda_tensors_ops_is_refused(rng):
    t = gd.tensor(rng.standard_normal(4), device="cuda")
    host = rng.standard_normal(4)
    with pytest.raises(TypeError, match=r"add.__call__: a host NumPy array of shape \(4,\)"):
        t._data + host
    with pytest.raises(TypeError, match="concatenate"):
        np.concatenate([t._data, host])
    with pytest.raises(TypeError, match="__setitem__"):
        t._data[:] = host
    with pytest.raises(TypeError, match="a cuda tensor's array"):
        gd.Tensor._make(host, False, None, 0, "cuda")
    with pytest.raises(TypeError, match="zeros_like"):
        backend.xp_for("cuda").zeros_like(host)


def test_the_backends_transfer_is_accepted_and_results_stay_on_the_device(rng):
    host = rng.standard_normal((2, 3))
    moved = backend.to_device_array(host, "cuda")
    t = gd.tensor(rng.standard_normal((2, 3)), device="cuda", requires_grad=True)
    out = (t * gd.Tensor._make(moved, False, None, 0, "cuda")).exp().sum()
    out.backward()
    xp = backend.xp_for("cuda")
    for array in (moved, t._data, out._data, t.grad._data, xp.zeros(3), xp.asarray(host),
                  xp.random.default_rng(0).standard_normal(2), moved[0], moved.sum(), moved.T):
        assert type(array) is SimDeviceArray
    np.testing.assert_allclose(t.grad.numpy(), np.exp(t.detach().numpy() * host) * host)
    assert type(backend.to_device_array(moved, "cpu")) is np.ndarray
    assert gd.from_numpy(host).device == "cpu" and type(t.cpu()._data) is np.ndarray
    t._data[0] = moved[1]          # device data, numbers and 0-d arrays are accepted
    t._data[1] = np.float64(2.0)
    t._data.fill(np.array(3.0))
    np.testing.assert_array_equal(t.numpy(), np.full((2, 3), 3.0))


def test_kernels_take_device_arrays_and_write_them():
    x = backend.to_device_array(np.arange(10, dtype=np.float32), "cuda")
    _add_one[3, 4, backend.launch_stream()](x)
    assert type(x) is SimDeviceArray
    np.testing.assert_array_equal(x.view(np.ndarray), np.arange(1, 11, dtype=np.float32))


def test_device_arrays_own_their_memory_as_cupys(rng):
    """A transfer copies host data (CuPy's asarray does) and takes a device array as it is; a
    fresh result owns its memory (``base`` None, as CuPy's), a view's base is its array, so
    the library's ownership tests (autograd's overlap test, tests of in-place outputs) see
    what they see on a GPU."""
    host = rng.standard_normal((2, 3))
    moved = backend.to_device_array(host, "cuda")
    assert moved.base is None and not np.shares_memory(moved.view(np.ndarray), host)
    moved[0, 0] = host[0, 0] + 1.0
    assert moved.view(np.ndarray)[0, 0] != host[0, 0]
    assert backend.to_device_array(moved, "cuda") is moved
    assert backend.xp_for("cuda").asarray(moved) is moved
    assert (moved * 2).base is None and np.exp(moved).base is None
    assert moved[1:].base is moved and moved.T.base is moved
    assert gd.tensor(host, device="cuda")._data.base is None
    assert gd.from_numpy(host).to("cuda")._data.base is None


def test_a_product_shared_by_threads_stays_on_the_device(rng, monkeypatch):
    # a product past cpu_matmul.SPLIT_FLOPS runs as row blocks on two threads into one output
    # array: that array must be a device array too (a transformer step's QKV projection)
    from gpudl import cpu_threads
    monkeypatch.setattr(cpu_threads, "count", lambda: 2)
    a = gd.tensor(rng.standard_normal((2, 256, 128), dtype=np.float32), device="cuda")
    w = gd.tensor(rng.standard_normal((192, 128), dtype=np.float32), device="cuda")
    y = gd.nn.functional.linear(a, w)
    assert isinstance(y._data, SimDeviceArray)
    expected = a._data.view(np.ndarray).astype(np.float64) @ w._data.view(np.ndarray).T
    np.testing.assert_allclose(y._data.view(np.ndarray), expected, rtol=1e-4, atol=1e-4)


def test_an_int_for_every_dim_gives_a_0d_device_view_as_cupy(rng):
    # NumPy gave a host scalar: a gradient indexed so (item assignment's backward) left the
    # device, and x + 0 with z[-1] = z[0] * 3 failed at backward under the simulator only
    array = backend.to_device_array(rng.standard_normal((2, 3)), "cuda")
    element = array[1, 2]
    assert type(element) is SimDeviceArray and element.shape == ()
    element[...] = 7.0
    assert float(array[1, 2]) == 7.0                   # a view, as CuPy's
    x = gd.tensor(np.ones(3, np.float32), device="cuda", requires_grad=True)
    z = x + 0
    z[-1] = z[0] * 3
    z.backward(gd.ones(3, device="cuda"))
    np.testing.assert_array_equal(x.grad.cpu().numpy(), [4.0, 1.0, 0.0])   # torch's


def test_where_of_bfloat16_widens_as_cupys(rng):
    """CuPy 14's where has no bfloat16 loop: bfloat16 operands give a float32 result (through
    the module's where and NumPy's alike), so an op that must keep bfloat16 casts back here as
    it must on a GPU."""
    import ml_dtypes
    xp = backend.xp_for("cuda")
    a = xp.asarray(rng.standard_normal(5).astype(ml_dtypes.bfloat16))
    b = xp.asarray(rng.standard_normal(5).astype(np.float32))
    cond = a > 0
    for where in (xp.where, np.where):
        got = where(cond, a, a)
        assert isinstance(got, SimDeviceArray) and got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.ndarray), a.view(np.ndarray).astype(np.float32))
        assert where(cond, b, b).dtype == np.float32 and where(cond, a, 0.5).dtype == np.float32
    assert gd.where(gd.tensor(np.asarray(cond)), gd.tensor(np.asarray(a)),
                    gd.tensor(np.asarray(a))).dtype == gd.bfloat16        # the op casts back


def test_sorts_of_bfloat16_are_refused_as_cupys(rng):
    """CuPy 14's sorts (thrust) refuse bfloat16; gpudl's sorts widen it first."""
    import ml_dtypes
    xp = backend.xp_for("cuda")
    a = xp.asarray(rng.standard_normal(5).astype(ml_dtypes.bfloat16))
    for sort in (xp.argsort, np.argsort, xp.sort, xp.unique):
        with pytest.raises(NotImplementedError, match="bfloat16"):
            sort(a)
    values = gd.tensor(np.asarray(a.view(np.ndarray)))
    assert values.dtype == gd.bfloat16
    np.testing.assert_array_equal(values.sort().values.float().numpy(),
                                  np.sort(a.view(np.ndarray).astype(np.float32)))
