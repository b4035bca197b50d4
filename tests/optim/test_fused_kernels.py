"""The GPU path of every optimizer, without a GPU: its fused update kernels run as host C++ (the
same operation strings) against torch.optim, and compile as CUDA with NVRTC (float and double)."""

import re
import shutil

import pytest
from fused_emulator import DeviceLike, HostKernel, cuda_source, nvrtc_ptx
from optim_cases import CASES, SHAPES, assert_close, case_id, run_pair

from gpudl import backend

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler"),
    # the emulation wraps NumPy arrays; on a GPU, tests/optim/test_optimizers.py runs the real
    # fused kernels against torch.optim
    pytest.mark.skipif(backend._cupy is not None, reason="emulates a GPU: on one, "
                       "test_optimizers.py runs the real kernels")]


@pytest.fixture
def fake_gpu(monkeypatch):
    """Arrays wrapped as DeviceLike take the cuda branch; kernels run on the host."""
    monkeypatch.setattr(backend, "is_device_array", lambda a: isinstance(a, DeviceLike))
    monkeypatch.setattr(backend, "elementwise_kernel", HostKernel)
    monkeypatch.setattr(HostKernel, "recorded", set())
    monkeypatch.setattr(HostKernel, "calls", 0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fused_update_matches_torch(case, rng, fake_gpu):
    steps = 12
    ours, theirs, _ = run_pair(torch, case, rng, steps=steps, wrap=lambda a: a.view(DeviceLike))
    assert HostKernel.calls == steps * len(SHAPES)      # one fused kernel per parameter and step
    assert_close(ours, theirs)


def test_fused_kernels_compile_for_the_gpu(rng, fake_gpu):
    pytest.importorskip("cuda.bindings.nvrtc")
    for case in CASES:
        run_pair(torch, case, rng, steps=2, wrap=lambda a: a.view(DeviceLike))
    assert len(HostKernel.recorded) >= 15
    for in_params, out_params, operation, arrays in sorted(HostKernel.recorded, key=str):
        ptx = nvrtc_ptx(cuda_source(in_params, out_params, operation, arrays, "float"))
        # the loop index is 64-bit integer math; any f64 instruction would be a promoted literal
        assert not re.search(r"\.f64\b", ptx), f"fp64 in a float kernel:\n{operation}"
        nvrtc_ptx(cuda_source(in_params, out_params, operation, arrays, "double"))
