"""ReLU's backward on a GPU is one fused CuPy kernel (kernels/activation.py), where CuPy's
``where(y <= 0, 0, g)`` took two. Without a GPU its operation string runs as host C++ (the
optimizers' fused-kernel emulator) and compiles as CUDA with NVRTC."""

import shutil

import numpy as np
import pytest
from optim.fused_emulator import HostKernel, cuda_source, nvrtc_ptx

from gpudl.kernels import activation

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_kernel_passes_the_gradient_where_the_output_is_positive_or_nan(rng,
                                                                                       dtype):
    y = np.maximum(rng.standard_normal(64), 0).astype(dtype)
    y[[3, 7]] = [np.nan, 0.0]
    g = rng.standard_normal(64).astype(dtype)
    g[[5, 9]] = [np.inf, np.nan]
    gx = np.empty_like(g)
    HostKernel(*activation._RELU_BACKWARD)(y, g, gx)
    want = np.where(y <= 0, dtype(0), g)            # the composed path: NaN y keeps g
    np.testing.assert_array_equal(gx, want)


def test_relu_backward_kernel_compiles_for_the_gpu():
    pytest.importorskip("cuda.bindings.nvrtc")
    in_params, out_params, operation, _ = activation._RELU_BACKWARD
    for ctype in ("float", "double"):
        nvrtc_ptx(cuda_source(in_params, out_params, operation, frozenset(("y", "g")), ctype))


def test_relu_backward_takes_the_kernel_for_device_arrays(rng, monkeypatch):
    from optim.fused_emulator import DeviceLike

    from gpudl import backend
    monkeypatch.setattr(backend, "is_device_array", lambda a: isinstance(a, DeviceLike))
    monkeypatch.setattr(activation, "_on_cpu_twin", lambda a: False)
    calls = []

    class Recording(HostKernel):
        def __call__(self, *args):
            gx = np.empty_like(args[0]).view(DeviceLike)      # CuPy allocates the output
            calls.append(self.name)
            super().__call__(*args, gx)
            return gx
    monkeypatch.setattr(backend, "elementwise_kernel", Recording)
    y = np.maximum(rng.standard_normal(10), 0).astype(np.float32).view(DeviceLike)
    g = rng.standard_normal(10).astype(np.float32).view(DeviceLike)
    np.testing.assert_array_equal(activation.relu_backward(y, g), np.where(y <= 0, 0, g))
    assert calls == ["gpudl_relu_backward"]
