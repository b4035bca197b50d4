"""Parameter: the Tensor subclass a Module registers as learnable."""

import numpy as np

from .. import dtypes
from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable parameter (requires grad by default).

    ``Parameter(t)`` shares ``t``'s array, as torch does; NumPy arrays and lists are converted.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = np.empty((0,), dtypes.DEFAULT_FLOAT)
        if isinstance(data, Tensor):        # the same memory, so the same version counter
            self._data, self._device = data._data, data._device
            self._version_counter = data._version_counter
        else:
            from ..creation import as_array
            self._data, self._device = as_array(data, None, None, "Parameter")
            self._version_counter = [0]
        self._view = None
        self._grad = None
        self.grad_fn = None
        self._out_index = 0
        self._requires_grad = False
        self.requires_grad_(requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
