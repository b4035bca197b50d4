"""Under Numba's CUDA simulator: the cuda device keeps NumPy arrays and kernels launch on
backend.launch_stream(), the convention every kernel family follows."""

import numpy as np
import pytest

from gpudl import backend

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]

if backend.SIMULATOR:
    # Module level on purpose: the simulator swaps the ``cuda`` global of a kernel's module for
    # its own; a kernel defined in a function with a local import sees the real module.
    from numba import cuda

    @cuda.jit
    def _scale(x, factor):
        i = cuda.grid(1)
        if i < x.size:
            x[i] *= factor


def test_numpy_arrays_take_the_cuda_path_in_the_simulator():
    assert backend.DEFAULT_DEVICE == "cuda"
    assert backend.kernel_device(np.zeros(2)) == "cuda"


def test_a_kernel_launches_on_the_backend_stream():
    x = np.arange(10, dtype=np.float32)
    _scale[3, 4, backend.launch_stream()](x, np.float32(2))
    np.testing.assert_array_equal(x, np.arange(10, dtype=np.float32) * 2)
