"""Seeing the device reads that the counter cannot see.

``backend.count_read`` counts the reads that go through it (gd.cuda.sync_count()); a read made
around it (``bool()``, ``int()``, ``float()``, ``.item()``, ``.tolist()`` of a device array: on a
GPU each copies from it) is invisible to the counter, and so is a read CuPy makes inside a call
whose output size depends on the data (a boolean mask, bincount, nonzero, unique). ``Watched``
arrays record both: the ``watched`` fixture makes every array a Tensor is made with one, and
``Watched.reads`` (a list once armed) collects each such read made in gpudl outside backend.py
(a call gpudl counts itself first, as nonzero, is recorded too).
"""

import traceback

import numpy as np
import pytest

from gpudl import backend
from gpudl.tensor import Tensor

# the cuda device's arrays: the strict simulator's (gpudl/sim_device.py), else NumPy's
DEVICE_ARRAY = np.ndarray
if backend.SIM_DEVICE_ARRAYS:
    from gpudl.sim_device import SimDeviceArray as DEVICE_ARRAY


# NumPy functions whose CuPy twins read the device for their output's size
_SIZE_FROM_DATA = frozenset((np.bincount, np.nonzero, np.flatnonzero, np.argwhere, np.unique,
                             np.extract, np.compress))


def _has_mask(key):
    parts = key if isinstance(key, tuple) else (key,)
    return any(getattr(p, "dtype", None) == np.bool_ and getattr(p, "ndim", 0) for p in parts)


class Watched(DEVICE_ARRAY):
    """NumPy data standing for device memory that records every implicit read of itself,
    except those the read gate makes (backend.py counts them). Results of NumPy operations on it
    stay watched (``__array_wrap__``), so a read of anything computed from it is seen."""

    reads = None          # a list while armed

    def __array_wrap__(self, array, context=None, return_scalar=False):
        return np.asarray(array).view(Watched)

    def _read(self, kind):
        if Watched.reads is None:
            return
        frames = [f for f in traceback.extract_stack()[:-2] if "/gpudl/" in f.filename]
        if frames and not frames[-1].filename.endswith("backend.py"):
            Watched.reads.append(f"{kind} at {frames[-1].filename}:{frames[-1].lineno}")

    def __array_function__(self, func, types, args, kwargs):
        if func in _SIZE_FROM_DATA:
            self._read(f"{func.__name__} (CuPy reads its size)")
        result = super().__array_function__(func, types, args, kwargs)
        return result.view(Watched) if type(result) is DEVICE_ARRAY else result   # stay watched

    def __getitem__(self, key):
        if _has_mask(key):
            self._read("a boolean mask (CuPy reads its count)")
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        if _has_mask(key):
            self._read("a boolean mask assignment (CuPy reads its count)")
        super().__setitem__(key, value)

    def __bool__(self):
        self._read("bool")
        return bool(np.asarray(self))

    def __int__(self):
        self._read("int")
        return int(np.asarray(self))

    def __float__(self):
        self._read("float")
        return float(np.asarray(self))

    def __index__(self):
        self._read("index")
        return np.asarray(self).__index__()

    def item(self, *args):
        self._read("item")
        return np.asarray(self).item(*args)

    def tolist(self):
        self._read("tolist")
        return np.asarray(self).tolist()


@pytest.fixture
def device_reads(monkeypatch):
    """Every array is on the 'cuda device' for the counter and the range checks (on a GPU:
    every CuPy array, as without it)."""
    monkeypatch.setattr(backend, "_READS_DEVICE", True)


def watch(tensor):
    """``tensor`` with its array watched (for tensors made before the fixture, parameters);
    a CuPy array (on a GPU) is left as it is: only the counter sees its reads there."""
    if isinstance(tensor._data, DEVICE_ARRAY):
        tensor._data = tensor._data.view(Watched)
    return tensor


@pytest.fixture
def watched(monkeypatch):
    """Every array a Tensor is made with becomes Watched; Watched.reads collects reads once
    set to a list (disarmed after the test)."""
    make = Tensor._make.__func__

    def watched_make(cls, data, *args):
        if type(data) is DEVICE_ARRAY:
            data = data.view(Watched)
        return make(cls, data, *args)

    monkeypatch.setattr(Tensor, "_make", classmethod(watched_make))
    yield
    Watched.reads = None
