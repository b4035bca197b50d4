"""A stand-in for CuPy's refusal of host data, on the CPU: ``fake_cuda`` labels tensors made
with device="cuda" as cuda tensors whose arrays are ``gpudl.sim_device.SimDeviceArray``s (the
strict simulator's device arrays; the CPU kernels run them), which refuse a plain NumPy array
among the operands of their ufuncs, NumPy functions and item assignment, as CuPy refuses one (no
implicit host-to-device copy). A library path that hands host data to a cuda tensor's array
without ``backend.to_device_array`` fails here as it fails on a GPU. Only the ops a test drives
need to work under it: it is a probe for one path, not a device. Under the strict simulator
(``backend.SIM_DEVICE_ARRAYS``) the cuda device is already this, and the fixture patches
nothing."""

import numpy as np
import pytest

from gpudl.sim_device import SimDeviceArray, sim_cuda_module


@pytest.fixture
def fake_cuda(monkeypatch):
    """device="cuda" accepted on the CPU; arrays moved there by ``backend.to_device_array``
    become ``SimDeviceArray``s, arrays moved to the cpu plain ones, a tensor made without a
    device from a SimDeviceArray is a cuda tensor (as from a CuPy array), and the array module of
    a SimDeviceArray makes SimDeviceArrays (``sim_cuda_module``)."""
    import importlib
    from gpudl import backend
    if backend.SIM_DEVICE_ARRAYS:
        return SimDeviceArray
    if backend._cupy is not None and not backend.SIMULATOR:
        return backend._cupy.ndarray     # a real GPU: the test runs the real device path
    tensor = importlib.import_module("gpudl.tensor")      # the module (gpudl.tensor: a function)
    move, device_of = backend.to_device_array, tensor._device_of

    def to_device_array(array, device):
        if device == "cuda":
            return sim_cuda_module.asarray(array)     # host data copied, as CuPy copies it
        return np.asarray(move(np.asarray(array), device))

    array_module = backend.get_array_module
    monkeypatch.setattr(backend, "get_array_module", lambda a: sim_cuda_module if isinstance(
        a, SimDeviceArray) else array_module(a))
    monkeypatch.setattr(backend, "cuda_available", lambda: True)
    monkeypatch.setattr(backend, "to_device_array", to_device_array)
    monkeypatch.setattr(tensor, "_device_of",
                        lambda a: "cuda" if isinstance(a, SimDeviceArray) else device_of(a))
    make = tensor.Tensor._make.__func__

    def _make(cls, data, *args):
        # a cuda tensor's array is a device array: the CPU kernels that stand in for the GPU's
        # return plain ones (host data handed to an op is still refused where it mixes)
        t = make(cls, data, *args)
        if t._device == "cuda" and type(t._data) is np.ndarray:
            t._data = t._data.view(SimDeviceArray)
        return t
    monkeypatch.setattr(tensor.Tensor, "_make", classmethod(_make))
    return SimDeviceArray
