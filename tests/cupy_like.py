"""A stand-in for CuPy's refusal of host data, on the CPU: ``fake_cuda`` labels tensors made
with device="cuda" as cuda tensors (their arrays are ``DeviceArray``s, the CPU kernels run them)
and ``DeviceArray`` refuses a plain NumPy array among the operands of its ufuncs, NumPy
functions and item assignment, as CuPy refuses one (no implicit host-to-device copy). A library
path that hands host data to a cuda tensor's array without ``backend.to_device_array`` fails
here as it fails on a GPU. Only the ops a test drives need to work under it: it is a probe for
one path, not a device."""

import numpy as np
import pytest


def _is_host(value):
    return type(value) is np.ndarray and value.ndim > 0


def _refuse_host(values, what):
    for value in values:
        if isinstance(value, (list, tuple)):
            _refuse_host(value, what)
        elif _is_host(value):
            raise TypeError(f"{what}: a NumPy array of shape {value.shape} reached a cuda "
                            "array (CuPy refuses host data: Unsupported type numpy.ndarray)")


def _plain(value):
    if isinstance(value, DeviceArray):
        return value.view(np.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _device(value):
    if type(value) is np.ndarray:
        return value.view(DeviceArray)
    if isinstance(value, tuple):
        return tuple(_device(v) for v in value)
    return value


_HOST_QUERIES = (np.shares_memory, np.may_share_memory)     # no data moves: allowed


class DeviceArray(np.ndarray):
    """A NumPy array standing for a CuPy one (see the module's docstring)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_host(inputs + tuple(kwargs.get("out", ())), f"{ufunc.__name__}.{method}")
        if "out" in kwargs:
            kwargs["out"] = _plain(kwargs["out"])
        return _device(getattr(ufunc, method)(*_plain(inputs), **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        if func not in _HOST_QUERIES:
            _refuse_host(tuple(args) + tuple(kwargs.values()), func.__name__)
        return _device(func(*_plain(tuple(args)), **{k: _plain(v) for k, v in kwargs.items()}))

    def __setitem__(self, key, value):
        _refuse_host((value,), "__setitem__")
        super().__setitem__(key, _plain(value))


class _DeviceNumPy:
    """NumPy as the array module of ``DeviceArray``s (``backend.get_array_module``): what its
    functions make is a DeviceArray, as what CuPy's make is a device array. Its classes and
    submodules are NumPy's own."""

    def __getattr__(self, name):
        value = getattr(np, name)
        if isinstance(value, type) or not callable(value):
            return value
        return lambda *args, **kwargs: _device(value(*args, **kwargs))


@pytest.fixture
def fake_cuda(monkeypatch):
    """device="cuda" accepted on the CPU; arrays moved there by ``backend.to_device_array``
    become ``DeviceArray``s, arrays moved to the cpu plain ones, a tensor made without a device
    from a ``DeviceArray`` is a cuda tensor (as from a CuPy array), and the array module of a
    DeviceArray makes DeviceArrays (``_DeviceNumPy``)."""
    import importlib
    from gpudl import backend
    tensor = importlib.import_module("gpudl.tensor")      # the module (gpudl.tensor: a function)
    move, device_of = backend.to_device_array, tensor._device_of

    def to_device_array(array, device):
        moved = np.asarray(move(_plain(array), device))
        return moved.view(DeviceArray) if device == "cuda" else moved

    array_module = backend.get_array_module
    monkeypatch.setattr(backend, "get_array_module", lambda a: _DeviceNumPy() if isinstance(
        a, DeviceArray) else array_module(a))
    monkeypatch.setattr(backend, "cuda_available", lambda: True)
    monkeypatch.setattr(backend, "to_device_array", to_device_array)
    monkeypatch.setattr(tensor, "_device_of",
                        lambda a: "cuda" if isinstance(a, DeviceArray) else device_of(a))
    make = tensor.Tensor._make.__func__

    def _make(cls, data, *args):
        # a cuda tensor's array is a device array: the CPU kernels that stand in for the GPU's
        # return plain ones (host data handed to an op is still refused where it mixes)
        t = make(cls, data, *args)
        if t._device == "cuda" and type(t._data) is np.ndarray:
            t._data = t._data.view(DeviceArray)
        return t
    monkeypatch.setattr(tensor.Tensor, "_make", classmethod(_make))
    return DeviceArray
