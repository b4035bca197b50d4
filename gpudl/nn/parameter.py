"""Parameter: the Tensor subclass a Module registers as learnable."""

import numpy as np

from .. import dtypes
from ..tensor import Tensor


_FRESH_LEAF = {"_view": None, "_grad": None, "grad_fn": None, "_out_index": 0,
               "_requires_grad": False}     # a leaf's autograd fields before requires_grad_


def _adopt(tensor, data, requires_grad, owner):
    """Make the new ``tensor`` a leaf holding ``data``'s array: the same memory (so the same
    version counter) for a Tensor; NumPy arrays and lists are converted; None is empty."""
    if data is None:
        data = np.empty((0,), dtypes.DEFAULT_FLOAT)
    if isinstance(data, Tensor):
        tensor._data, tensor._device = data._data, data._device
        tensor._version_counter = data._version_counter
    else:
        from ..creation import as_array
        tensor._data, tensor._device = as_array(data, None, None, owner)
        tensor._version_counter = [0]
    for slot, value in _FRESH_LEAF.items():
        setattr(tensor, slot, value)
    tensor.requires_grad_(requires_grad)


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable parameter (requires grad by default).

    ``Parameter(t)`` shares ``t``'s array, as torch does; NumPy arrays and lists are converted.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        _adopt(self, data, requires_grad, "Parameter")

    _deepcopy_keeps_grad = False      # torch's Parameter.__deepcopy__ drops .grad

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


# ------------------------------------------------------------------ nn-utils: Buffer, lazy tensors
class Buffer(Tensor):
    """A Tensor that, assigned to a Module attribute, registers itself as a buffer (torch 2.5+):
    ``self.stats = nn.Buffer(t, persistent=False)``. Shares ``data``'s array, as torch's detach;
    keeps its requires_grad."""

    __slots__ = ("persistent",)

    def __init__(self, data=None, *, persistent=True):
        _adopt(self, data, isinstance(data, Tensor) and data.requires_grad, "Buffer")
        self.persistent = persistent


class UninitializedTensorMixin:
    """A parameter or buffer whose shape is not known yet (a lazy module's, before its first
    call): it holds an empty array of its dtype and device until ``materialize(shape)`` turns it,
    in place, into a regular ``cls_to_become`` of that shape (uninitialised values)."""

    __slots__ = ()
    cls_to_become = None

    def materialize(self, shape, device=None, dtype=None):
        """Become a ``cls_to_become`` of ``shape`` (contents uninitialised), keeping this
        object's identity (optimizers holding it keep working)."""
        from ..creation import empty
        values = empty(*tuple(shape), dtype=dtype or self.dtype, device=device or self.device)
        self._data, self._device = values._data, values._device
        self.__class__ = self.cls_to_become

    def __repr__(self):
        return f"<{type(self).__name__}>"


class UninitializedParameter(UninitializedTensorMixin, Parameter):
    """A Parameter of a lazy module before its first call (see UninitializedTensorMixin)."""

    __slots__ = ()
    cls_to_become = Parameter

    def __init__(self, requires_grad=True, device=None, dtype=None):
        from ..creation import empty
        super().__init__(empty(0, dtype=dtype or dtypes.DEFAULT_FLOAT, device=device),
                         requires_grad)


class UninitializedBuffer(UninitializedTensorMixin, Tensor):
    """A buffer of a lazy module before its first call (see UninitializedTensorMixin)."""

    __slots__ = ()
    cls_to_become = Tensor

    def __init__(self, requires_grad=False, device=None, dtype=None):
        from ..creation import empty
        _adopt(self, empty(0, dtype=dtype or dtypes.DEFAULT_FLOAT, device=device),
               requires_grad, "UninitializedBuffer")
