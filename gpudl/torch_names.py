"""torch's top-level names for masks, counts and dtype limits that ported scripts use:
``gd.all``/``any``/``pow``/``t`` (Tensor methods' functional forms), ``logical_*``, ``isinf``,
``count_nonzero``, ``finfo``/``iinfo``. Their own module: ``all``, ``any`` and ``pow`` would
shadow Python's builtins in any module that uses those."""

import ml_dtypes
import numpy as np

from . import backend, dtypes
from .functions import _method, require_tensors
from .tensor import Tensor

for _name in ("all", "any", "pow", "t"):
    globals()[_name] = _method(_name)
del _name


def logical_not(input):
    """Elementwise ``input == 0``, as a bool tensor."""
    require_tensors("logical_not", input=input)
    return input._compare(None, lambda a, _: backend.get_array_module(a).logical_not(a))


def _logical(name):
    def call(input, other):
        require_tensors(name, input=input, other=other)
        return input._compare(other, getattr(backend.get_array_module(input._data), name))
    call.__name__ = name
    call.__doc__ = f"Elementwise {name[8:]} of the truth values (nonzero) of two tensors, " \
                   "broadcast, as a bool tensor."
    return call


logical_and, logical_or, logical_xor = (_logical(f"logical_{op}") for op in ("and", "or", "xor"))


def isinf(input):
    """Elementwise: whether the value is +inf or -inf (bool tensor)."""
    require_tensors("isinf", input=input)
    return input._compare(None, lambda a, _: backend.get_array_module(a).isinf(a))


def count_nonzero(input, dim=None):
    """The number of nonzero values over ``dim`` (an int or tuple; all by default), int64."""
    require_tensors("count_nonzero", input=input)
    return (input != 0).sum(dim)


class finfo:
    """The limits of a floating dtype (the default one when None), as Python numbers like
    torch.finfo's: ``bits``, ``eps``, ``max``, ``min``, ``tiny`` (= ``smallest_normal``) and
    ``resolution`` (10 ** -decimal digits)."""

    def __init__(self, type=None):
        dtype = dtypes.DEFAULT_FLOAT if type is None else type
        if not dtypes.is_floating(dtype):
            raise TypeError(f"finfo: expected a floating dtype, got {dtype}")
        info = ml_dtypes.finfo(dtype)
        self.dtype, self.bits = dtype, int(info.bits)
        self.eps, self.max, self.min, self.tiny = (float(v) for v in (info.eps, info.max,
                                                                      info.min, info.tiny))
        self.smallest_normal = self.tiny
        self.resolution = 10.0 ** -int(info.precision)

    def __repr__(self):
        return (f"finfo(resolution={self.resolution}, min={self.min}, max={self.max}, "
                f"eps={self.eps}, tiny={self.tiny}, dtype={self.dtype})")


def iinfo(type):
    """The limits of an integer dtype: ``min``, ``max``, ``bits``, as torch.iinfo."""
    if dtypes.category(type) != 1:
        raise TypeError(f"iinfo: expected an integer dtype, got {type}")
    return np.iinfo(type)


Tensor.logical_not, Tensor.logical_and, Tensor.logical_or, Tensor.logical_xor = (
    logical_not, logical_and, logical_or, logical_xor)
Tensor.isinf, Tensor.count_nonzero = isinf, count_nonzero
