"""Both devices in one process (the simulator stands in for the GPU): moves, mixing, Module.to."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend, nn

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]


def test_tensors_move_between_devices_with_gradients():
    w = gd.tensor([1.0, 2.0], device="cpu", requires_grad=True)
    on_gpu = w.cuda()
    assert on_gpu.device == gd.device("cuda:0") and str(on_gpu.device) == "cuda:0"
    assert w.to(gd.device("cuda")).is_cuda and on_gpu.cpu().device == "cpu"
    (on_gpu * 3).sum().backward()
    assert w.grad.device == "cpu"
    np.testing.assert_array_equal(w.grad.numpy(), [3, 3])


def test_ops_mixing_devices_raise_naming_both():
    a, b = gd.ones(2, device="cpu"), gd.ones(2, device="cuda")
    with pytest.raises(RuntimeError, match="same device, got cpu and cuda"):
        a + b
    with pytest.raises(RuntimeError, match="same device"):
        b @ gd.ones(2, 2, device="cpu")


def test_only_cuda_zero_is_accepted():
    with pytest.raises(ValueError, match="'cuda:1' is not available"):
        gd.zeros(2, device="cuda:1")
    assert gd.zeros(2, device="cuda:0").device == "cuda"


def test_module_to_moves_parameters_and_buffers_in_place():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).to("cpu")
    params, buffers = list(model.parameters()), list(model.buffers())
    assert model.to(gd.device("cuda")) is model
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert all(t.device == "cuda:0" for t in params + buffers)
    out = model(gd.ones(4, 3, device="cuda"))
    assert out.device == "cuda"
    assert model.cpu() is model and all(t.device == "cpu" for t in params + buffers)


def test_a_cuda_tensor_prints_its_device_as_torch_does():
    """torch prints device='cuda:0' (the device with its index), not device='cuda'."""
    assert repr(gd.ones(2, device="cuda")) == "tensor([1., 1.], device='cuda:0')"
    assert repr(gd.ones(2, device="cuda").half()) == \
        "tensor([1., 1.], device='cuda:0', dtype=gpudl.float16)"
    assert repr(gd.ones(2, device="cpu")) == "tensor([1., 1.])"


def test_integer_division_by_zero_on_the_device_is_reported_at_the_next_read():
    """As the index checks: a device-side check (no sync at the call), raised at the read."""
    quotient = gd.tensor([4, 5], device="cuda") // gd.tensor([1, 0], device="cuda")
    with pytest.raises(RuntimeError, match="floor_divide: integer division by zero"):
        quotient.numpy()
    np.testing.assert_array_equal((gd.tensor([4, 5], device="cuda") % 3).numpy(), [1, 2])
