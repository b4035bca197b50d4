"""MSE on a GPU is one CuPy kernel forward and one backward (ops/loss.py ``_MSE``), where the
rule's array expressions took four and up to five. Without a GPU the kernels' C runs on the host
(the optimizers' fused-kernel emulator) against torch's mse_loss, and compiles as CUDA with
NVRTC."""

import re
import shutil

import numpy as np
import pytest
from optim.fused_emulator import (DeviceLike, HostKernel, HostReductionKernel, cuda_source,
                                  nvrtc_ptx, reduction_source)

import gpudl as gd
from gpudl import backend
from gpudl.ops import loss as L

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
REDUCTIONS = ("mean", "sum", "none")


@pytest.fixture
def on_device(monkeypatch):
    """gpudl's MSE sees DeviceLike arrays as CuPy arrays and runs its kernels on the host; the
    names of the kernels called are recorded."""
    calls = []

    class Elementwise(HostKernel):
        def __call__(self, *args):
            outs = [np.empty(np.broadcast_shapes(*(a.shape for a in args[:2])), args[0].dtype)
                    .view(DeviceLike) for _ in self.spec[1].split(",")]    # CuPy allocates
            calls.append(self.name)
            super().__call__(*args, *outs)
            return outs[0] if len(outs) == 1 else tuple(outs)

    class Reduction(HostReductionKernel):
        def __call__(self, *args):
            calls.append(self.name)
            return super().__call__(*args).view(DeviceLike)
    monkeypatch.setattr(backend, "is_device_array", lambda a: isinstance(a, DeviceLike))
    monkeypatch.setattr(backend, "elementwise_kernel", Elementwise)
    monkeypatch.setattr(backend, "reduction_kernel", Reduction)
    return calls


def _device(array, requires_grad=False):
    """A gpudl tensor over a DeviceLike array."""
    t = gd.tensor(array, requires_grad=requires_grad, device="cpu")   # NumPy under DeviceLike
    t._data = t._data.copy(order="C").view(DeviceLike)
    return t


def _pair(rng, dtype, shape=(5, 7)):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_kernels_give_torchs_loss_and_gradients(rng, on_device, dtype, reduction):
    from oracle import torch
    x, t = _pair(rng, dtype)
    g_out = rng.standard_normal(() if reduction != "none" else x.shape).astype(dtype)
    ours_x, ours_t = (_device(a, True) for a in (x, t))
    theirs_x, theirs_t = (torch.tensor(a, requires_grad=True) for a in (x, t))
    loss = gd.nn.functional.mse_loss(ours_x, ours_t, reduction=reduction)
    want = torch.nn.functional.mse_loss(theirs_x, theirs_t, reduction=reduction)
    loss.backward(_device(g_out))
    want.backward(torch.tensor(g_out))
    backward = "gpudl_mse_loss_backward_both"
    assert on_device == ["gpudl_mse_loss" if reduction == "none" else "gpudl_mse_loss_reduced",
                         backward]
    assert loss.dtype == dtype and loss.shape == tuple(want.shape)
    # the sum's order differs from torch's; the gradients are torch's expression in its order
    np.testing.assert_allclose(loss.numpy(), want.detach().numpy(),
                               rtol=1e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_array_equal(ours_x.grad.numpy(), theirs_x.grad.numpy())
    np.testing.assert_array_equal(ours_t.grad.numpy(), theirs_t.grad.numpy())


@pytest.mark.parametrize("wanted", ["input", "target"])
def test_one_gradient_wanted(rng, on_device, wanted):
    from oracle import torch
    x, t = _pair(rng, np.float32)
    ours = [_device(a, name == wanted)
            for a, name in zip((x, t), ("input", "target"))]
    theirs = [torch.tensor(a, requires_grad=(name == wanted))
              for a, name in zip((x, t), ("input", "target"))]
    gd.nn.functional.mse_loss(*ours).backward()
    torch.nn.functional.mse_loss(*theirs).backward()
    assert on_device[1] == ("gpudl_mse_loss_backward" if wanted == "input"
                            else "gpudl_mse_loss_backward_both")
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            np.testing.assert_array_equal(a.grad.numpy(), b.grad.numpy())


def test_empty_inputs_and_other_losses_keep_the_array_expressions(rng, on_device):
    """The MSE of an empty input is NaN as before (torch's mean of nothing); other rules have
    no kernels of their own."""
    x = _device(np.zeros((0, 3), np.float32), True)
    loss = gd.nn.functional.mse_loss(x, _device(np.zeros((0, 3), np.float32)))
    assert np.isnan(loss.numpy())
    a, b = _pair(rng, np.float32)
    gd.nn.functional.l1_loss(_device(a), _device(b))
    assert on_device == []


def test_kernels_compile_for_the_gpu_without_fp64_in_float():
    pytest.importorskip("cuda.bindings.nvrtc")
    for spec in (L._MSE.DEVICE_VALUE, L._MSE.DEVICE_GRAD, L._MSE.DEVICE_GRADS):
        in_params, out_params, operation, _ = spec
        arrays = frozenset(("x", "t", "g"))
        ptx = nvrtc_ptx(cuda_source(in_params, out_params, operation, arrays, "float"))
        assert not re.search(r"\.f64\b", ptx), operation
        nvrtc_ptx(cuda_source(in_params, out_params, operation, arrays, "double"))
    for ctype in ("float", "double"):
        ptx = nvrtc_ptx(reduction_source(*L._MSE.DEVICE_REDUCED[:-1], frozenset(("x", "t")),
                                         ctype))
        assert ctype == "double" or not re.search(r"\.f64\b", ptx)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_on_the_gpu_the_kernels_give_torchs_numbers(rng, reduction):
    """On a GPU (tools/gpu_check.sh): the real CuPy kernels against torch on the CPU; the
    gradients' expression has no multiply-add to contract, so the bits are torch's."""
    if backend._cupy is None:
        pytest.skip("needs CuPy and a GPU; the emulation above runs everywhere else")
    from oracle import torch
    x, t = _pair(rng, np.float32, (33, 65))
    g_out = rng.standard_normal(() if reduction != "none" else x.shape).astype(np.float32)
    ours = [gd.tensor(a, device="cuda", requires_grad=True) for a in (x, t)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, t)]
    loss = gd.nn.functional.mse_loss(*ours, reduction=reduction)
    want = torch.nn.functional.mse_loss(*theirs, reduction=reduction)
    loss.backward(gd.tensor(g_out, device="cuda"))
    want.backward(torch.tensor(g_out))
    np.testing.assert_allclose(loss.cpu().numpy(), want.detach().numpy(), rtol=1e-6)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.grad.cpu().numpy(), b.grad.numpy())
