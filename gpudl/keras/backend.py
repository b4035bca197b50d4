"""``keras.backend``: the global settings Keras 3 keeps there (``epsilon``, ``floatx``,
``image_data_format``), ``clear_session`` and a few helpers.

``set_floatx`` sets the dtype of new layers' weights and of the floats ``keras.ops`` and
``keras.random`` create; gpudl's own default (``gd.tensor`` of Python floats) stays float32.
``set_epsilon`` changes the fuzz factor Keras's losses clip probabilities with.
"""

import numpy as np

from .. import dtypes
from ..tensor import Tensor
from .engine import KerasTensor, clear_session

_SETTINGS = {"epsilon": 1e-7, "floatx": "float32", "image_data_format": "channels_last"}
_FLOATS = ("bfloat16", "float16", "float32", "float64")


def backend():
    """The name of the backend: ``'gpudl'``."""
    return "gpudl"


def epsilon():
    """The fuzz factor of Keras's numeric expressions (1e-7 unless set)."""
    return _SETTINGS["epsilon"]


def set_epsilon(value):
    """Set the fuzz factor (a positive float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"set_epsilon: value must be a positive float, got {value!r}")
    _SETTINGS["epsilon"] = float(value)


def floatx():
    """The default float dtype's name ('float32' unless set)."""
    return _SETTINGS["floatx"]


def set_floatx(value):
    """Set the default float dtype: 'bfloat16', 'float16', 'float32' or 'float64'."""
    if value not in _FLOATS:
        raise ValueError(f"set_floatx: value must be one of {_FLOATS}, got {value!r}")
    _SETTINGS["floatx"] = value


def image_data_format():
    """'channels_last' (Keras's default; the layers take ``data_format=`` per layer)."""
    return _SETTINGS["image_data_format"]


def set_image_data_format(data_format):
    """Only 'channels_last' is kept globally; give ``data_format='channels_first'`` to the
    layers that should take PyTorch's layout."""
    if data_format != "channels_last":
        raise NotImplementedError(f"set_image_data_format: only 'channels_last' is supported "
                                  f"globally, got {data_format!r} (pass data_format= to layers)")
    _SETTINGS["image_data_format"] = data_format


def default_float():
    """The gpudl dtype of ``floatx()``."""
    return dtypes.as_dtype(floatx(), "floatx")


def standardize_dtype(dtype):
    """A dtype's Keras name: ``standardize_dtype(np.float32) == 'float32'``; None gives floatx."""
    if dtype is None:
        return floatx()
    if isinstance(dtype, str) and dtype in ("float", "int"):
        return {"float": floatx(), "int": "int64"}[dtype]
    return dtypes.as_dtype(dtype, "standardize_dtype").name

def is_keras_tensor(x):
    """True for the symbolic tensors of the functional API."""
    return isinstance(x, KerasTensor)


def is_float_dtype(dtype):
    """True for floating dtypes."""
    return standardize_dtype(dtype).startswith(("float", "bfloat"))


def is_int_dtype(dtype):
    """True for integer dtypes."""
    return standardize_dtype(dtype).startswith(("int", "uint"))


def int_shape(x):
    """The shape of a Tensor, array or KerasTensor as a tuple."""
    return tuple(x.shape)


def get_value(x):
    """A NumPy copy of a Tensor's value."""
    return x.detach().numpy().copy() if isinstance(x, Tensor) else np.asarray(x)


__all__ = ["backend", "epsilon", "set_epsilon", "floatx", "set_floatx", "image_data_format",
           "set_image_data_format", "standardize_dtype", "clear_session", "is_keras_tensor",
           "is_float_dtype", "is_int_dtype", "int_shape", "get_value"]
