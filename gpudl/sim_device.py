"""The cuda device's arrays under Numba's CUDA simulator: NumPy arrays that refuse host data as
CuPy does.

On a GPU, CuPy takes no NumPy array into its ufuncs, functions, item assignment or ``fill``
(no implicit host-to-device copy): host data reaches the device only through a transfer
(``backend.to_device_array``, ``cupy.asarray``). The simulator keeps the cuda device's arrays
in host memory, so without a check a library path that mixes a NumPy array into a cuda tensor's
computation passes there and fails on a GPU. ``SimDeviceArray`` is the check: an ndarray
subclass (Numba's simulator and NumPy take it) whose ufuncs, NumPy functions, ``__setitem__``
and ``fill`` refuse a plain NumPy array with data (a 0-d one is a number), and whose results
are SimDeviceArrays again. ``sim_cuda_module`` is its array module (``backend.xp_for("cuda")``):
NumPy whose functions make SimDeviceArrays, as CuPy's make device arrays, and refuse host
arrays except in the transfers ``asarray``/``array``/``asanyarray``.

Imported by ``backend`` only under the simulator with the cuda device chosen
(``backend.SIM_DEVICE_ARRAYS``); the cpu path never sees it.
"""

import types

import ml_dtypes
import numpy as np


def host_data_error(value, what):
    return TypeError(
        f"{what}: a host NumPy array of shape {value.shape} reached a cuda array (CuPy refuses "
        "host data: Unsupported type numpy.ndarray); move it with backend.to_device_array(..., "
        "'cuda') or compute it on the device")


def _plain_args(values, what):
    """``values`` with SimDeviceArrays as plain views (lists and tuples looked into); a host
    array with data raises."""
    out = []
    for value in values:
        kind = type(value)
        if kind is np.ndarray:
            if value.ndim:
                raise host_data_error(value, what)
        elif kind is list or kind is tuple:
            value = kind(_plain_args(value, what))
        elif isinstance(value, SimDeviceArray):       # subclasses too (tests watch reads so)
            value = value.view(np.ndarray)
        out.append(value)
    return out


def _plain_index(key):
    """An index with its device arrays as plain views; its host arrays stay (CuPy's indexing
    copies NumPy index arrays to the device itself)."""
    if type(key) is tuple:
        return tuple(_plain_index(k) for k in key)
    return key.view(np.ndarray) if isinstance(key, SimDeviceArray) else key


def _on_device(value, cls):
    """A NumPy result as a device array of class ``cls``: arrays and scalars (CuPy returns 0-d
    arrays), in tuples and lists too."""
    kind = type(value)
    if kind is np.ndarray:
        return value.view(cls)
    if isinstance(value, np.generic):
        return np.asarray(value).view(cls)
    if kind is tuple or kind is list:
        return kind(_on_device(v, cls) for v in value)
    if isinstance(value, tuple):                # NumPy's named results (linalg.svd, ...)
        return kind(*(_on_device(v, cls) for v in value))
    return value


def _as_cupy_where(args):
    """``where``'s operands as CuPy 14 takes them: its where has no bfloat16 loop, so a bfloat16
    x or y goes through the float32 one (the result is float32, where NumPy keeps bfloat16)."""
    if len(args) != 3:
        return args
    return [args[0]] + [a.astype(np.float32) if getattr(a, "dtype", None) == _BFLOAT16 else a
                        for a in args[1:]]


_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
# CuPy 14's sorts (thrust) have no bfloat16: NotImplementedError (cupy/cuda/thrust.pyx); its
# scans do not compile for it (no += on its bfloat16 class: the first GPU run)
_SORTS = frozenset((np.sort, np.argsort, np.unique, np.lexsort))
_SCANS = frozenset((np.cumsum, np.cumprod, np.nancumsum, np.nancumprod))


def _as_cupy(function, args):
    """``args`` for ``function`` as CuPy 14 takes them (``_as_cupy_where``; its sorts and scans
    refuse bfloat16)."""
    if function is np.where:
        return _as_cupy_where(args)
    if args and getattr(args[0], "dtype", None) == _BFLOAT16:
        if function in _SORTS:
            raise NotImplementedError(f"{function.__name__}: sorting arrays with dtype "
                                      "'bfloat16' is not supported by CuPy 14 "
                                      "(backend.sortable widens them)")
        if function in _SCANS:
            raise NotImplementedError(f"{function.__name__} of bfloat16: CuPy 14's scan kernel "
                                      "does not compile for it (ops/_util.in_float32)")
    return args

# NumPy functions that move no data into a device array: their operands may be host arrays
_QUERIES = frozenset((np.shares_memory, np.may_share_memory, np.shape, np.ndim, np.size,
                      np.result_type, np.can_cast))


class SimDeviceArray(np.ndarray):
    """A NumPy array standing for a CuPy one (see the module's docstring)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        what = f"{ufunc.__name__}.{method}"
        out = kwargs.get("out")
        if kwargs:                              # out=, where=: device arrays too
            kwargs = dict(zip(kwargs, _plain_args(kwargs.values(), what)))
        if method == "at":      # its positions (inputs[1]) may be host arrays, as an index
            target, index, *values = inputs
            return ufunc.at(*_plain_args((target,), what), _plain_index(index),
                            *_plain_args(values, what))
        result = getattr(ufunc, method)(*_plain_args(inputs, what), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _on_device(result, type(self))

    def __array_function__(self, func, types_, args, kwargs):
        what = func.__name__
        if func in _QUERIES:
            args = [a.view(np.ndarray) if isinstance(a, SimDeviceArray) else a for a in args]
            return func(*args, **kwargs)
        out = kwargs.get("out")
        if kwargs:
            kwargs = dict(zip(kwargs, _plain_args(kwargs.values(), what)))
        args = _plain_args(args, what)
        result = func(*_as_cupy(func, args), **kwargs)
        if out is not None:
            return out
        return _on_device(result, type(self))

    @property
    def base(self):
        """CuPy's ``base``: None for an array owning its memory, so a result that NumPy made and
        ``_on_device`` viewed as a device array owns its memory as CuPy's would (the view's own
        base is that plain array); the array viewed otherwise."""
        viewed = np.ndarray.base.__get__(self)
        if (type(viewed) is np.ndarray and viewed.base is None and viewed.nbytes == self.nbytes
                and viewed.__array_interface__["data"][0] == self.__array_interface__["data"][0]):
            return None
        return viewed

    def __getitem__(self, key):
        result = np.ndarray.__getitem__(self, key)
        if isinstance(result, np.generic):   # an int for every dim: CuPy gives a 0-d device
            # array (a view), NumPy a host scalar; with an Ellipsis added NumPy gives the view
            result = np.ndarray.__getitem__(
                self, (*key, Ellipsis) if type(key) is tuple else (key, Ellipsis))
        return result

    def __setitem__(self, key, value):
        if type(value) is np.ndarray and value.ndim:
            raise host_data_error(value, "__setitem__")
        np.ndarray.__setitem__(self, key, value)

    def fill(self, value):
        if type(value) is np.ndarray and value.ndim:
            raise host_data_error(value, "fill")
        np.ndarray.fill(self, value)


# The transfers: CuPy's asarray/array copy host data to the device (a SimDeviceArray views no
# host memory).
_TRANSFERS = frozenset(("asarray", "array", "asanyarray"))


class _DeviceModule:
    """``module`` (numpy or one of its submodules) as the simulator's CuPy: its functions
    return SimDeviceArrays; its classes, ufuncs (which dispatch on their operands) and
    constants are NumPy's own. Attributes are looked up once and kept."""

    def __init__(self, module):
        self.__name__ = "gpudl.sim_device:" + getattr(module, "__name__", type(module).__name__)
        self._module = module

    def __getattr__(self, name):
        value = getattr(self._module, name)
        if isinstance(value, types.ModuleType):
            value = _DeviceModule(value)
        elif callable(value) and not isinstance(value, (type, np.ufunc)):
            value = _making_device_arrays(value, name, name in _TRANSFERS)
        setattr(self, name, value)
        return value

    def __repr__(self):
        return f"<the simulator's cuda array module over {self._module!r}>"


def _device_result(value):
    """_on_device, and a random Generator as one making device arrays (CuPy's)."""
    if isinstance(value, np.random.Generator):
        return _DeviceModule(value)
    return _on_device(value, SimDeviceArray)


def _making_device_arrays(function, name, transfer):
    if transfer:
        def make(array, *args, **kwargs):
            moved = function(array, *args, **kwargs)
            if isinstance(array, np.ndarray) and np.may_share_memory(moved, array):
                if isinstance(array, SimDeviceArray):
                    return array            # CuPy's asarray of a device array: the array itself
                moved = moved.copy()        # CuPy copies host data to the device
            return _on_device(moved, SimDeviceArray)
    else:
        def make(*args, **kwargs):
            if kwargs:
                kwargs = dict(zip(kwargs, _plain_args(kwargs.values(), name)))
            args = _plain_args(args, name)
            return _device_result(function(*_as_cupy(function, args), **kwargs))
    make.__name__ = name
    make.__doc__ = function.__doc__
    return make


sim_cuda_module = _DeviceModule(np)
