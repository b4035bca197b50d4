"""kernels.fast_launch: Numba's PTX launched through CuPy's launcher, with the parameters laid out
as Numba's calling convention lays them out. Offline: the layout against the PTX's parameter
list, the flattening of arrays and scalars, the fallback to Numba; on a GPU: the same results
as Numba's launcher. (The gate and ``--check`` compare the layout with every kernel's PTX.)"""

import sys
import types

import numpy as np
import pytest
from numba import cuda

from gpudl import backend
from gpudl.kernels import fast_launch, launch


def _kernel(x, y, flag, n, scale, big, ratio, cube):
    i = cuda.grid(1)
    if i < n and flag:
        y[i, 0] = x[i] * scale + cube[0, 0, i] + big + ratio


SIGNATURE = ("void(float32[::1], float32[:, ::1], boolean, int32, float32, int64, float64, "
             "float32[:, :, :])")


def test_the_layout_passes_exactly_the_ptxs_parameters():
    ptx, _ = cuda.compile_ptx(_kernel, SIGNATURE, cc=(9, 0))
    layout = fast_launch.layout(SIGNATURE)
    assert layout == (1, 2, np.bool_, np.int32, np.float32, np.int64, np.float64, 3)
    assert fast_launch.param_bytes(layout) == fast_launch.ptx_param_bytes(ptx)
    assert len(fast_launch.ptx_param_bytes(ptx)) == 7 + 9 + 5 + 11
    assert fast_launch.check_layout(ptx, SIGNATURE) is None
    other = SIGNATURE.replace("int32,", "int64,", 1)        # a scalar of another width
    assert "the PTX takes" in fast_launch.check_layout(ptx, other)


def test_arrays_flatten_to_numbas_array_struct(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)[:, ::2]      # strided
    flat = fast_launch.flatten((2, np.int32, np.float64), (x, 7, 0.5))
    pointer = x.__array_interface__["data"][0]
    assert [type(v) for v in flat] == [np.uint64] * 2 + [np.int64] * 2 + [np.uint64] + \
        [np.int64] * 4 + [np.int32, np.float64]
    assert [int(v) for v in flat[:9]] == [0, 0, 12, 4, pointer, 4, 3, 24, 8]
    assert flat[9] == 7 and flat[10] == 0.5


def test_a_kernel_cupy_cannot_load_goes_to_numba_for_good(monkeypatch):
    runtime = types.SimpleNamespace(getDevice=lambda: 0)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=runtime)))
    calls = []

    def refuse(kernel, signature):
        calls.append(signature)
        raise RuntimeError("needs linking")
    monkeypatch.setattr(fast_launch, "_load", refuse)
    monkeypatch.setattr(fast_launch, "FALLBACK", {})
    for _ in range(2):
        assert fast_launch.launch(_kernel, SIGNATURE, 1, 32, ()) is False
    assert calls == [SIGNATURE]
    assert "needs linking" in fast_launch.FALLBACK[(_kernel, SIGNATURE)]


def test_launch_takes_the_cupy_launcher_when_opted_in(monkeypatch):
    taken = []
    monkeypatch.setattr(launch, "FAST_LAUNCH", True)
    monkeypatch.setattr(backend, "SIMULATOR", False)
    monkeypatch.setattr(fast_launch, "launch", lambda *args: taken.append(args) or True)
    monkeypatch.setattr(launch, "specialised", lambda *args: pytest.fail("Numba launched it"))
    launch.launch(_kernel, SIGNATURE, 2, 64, "x", "y", shared=128)
    assert taken == [(_kernel, SIGNATURE, 2, 64, ("x", "y"), 128)]
    launch.launch(_kernel, SIGNATURE, 0, 64, "x", "y")           # an empty grid: no launch
    assert len(taken) == 1


@pytest.mark.skipif(backend._cupy is None or backend.SIMULATOR, reason="needs a GPU (CuPy)")
def test_on_a_gpu_the_cupy_launcher_computes_what_numbas_does(rng):
    import cupy
    n = 1000
    x = cupy.asarray(rng.standard_normal(n).astype(np.float32))
    cube = cupy.asarray(rng.standard_normal((2, 3, n)).astype(np.float32))[:1, ::2]
    outputs = []
    for use_cupy in (False, True):
        y = cupy.full((n, 2), np.nan, np.float32)
        args = (x, y, True, n, np.float32(1.5), 3, 0.25, cube)
        if use_cupy:
            assert fast_launch.launch(_kernel, SIGNATURE, 4, 256, args)
        else:
            launch.specialised(_kernel, SIGNATURE)[4, 256, backend.launch_stream(), 0](*args)
        outputs.append(cupy.asnumpy(y))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert np.isfinite(outputs[1][:, 0]).all()
