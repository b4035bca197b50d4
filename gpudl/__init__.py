"""gpudl: tensors on NumPy or CuPy, reverse-mode autograd, and Numba-CUDA kernels you can read.

``import gpudl as gd``; the public contract is API.md. The device (cpu or cuda) is chosen once at
import from ``GPUDL_DEVICE`` (see gpudl.backend).
"""

from . import cuda, dtypes
from .autograd import Function, enable_grad, is_grad_enabled, no_grad
from .backend import default_device as device
from .creation import (arange, empty, empty_like, eye, from_dlpack, full, full_like, linspace,
                       ones, ones_like, rand, rand_like, randint, randn, randn_like, randperm,
                       tensor, zeros, zeros_like)
from .dtypes import bool_, float16, float32, float64, int8, int16, int32, int64, uint8
from .functions import (abs, argmax, argmin, cat, chunk, clamp, clip, exp, flatten, isnan, log,
                        log_softmax, masked_fill, matmul, max, maximum, mean, min, permute, relu,
                        reshape, sigmoid, softmax, split, sqrt, square, squeeze, stack, std, sum,
                        tanh, transpose, unsqueeze, var, where)
from .io import load, save
from .random import manual_seed
from .tensor import Tensor

float = float32      # torch's aliases  # noqa: A001
double = float64
half = float16
long = int64
bool = bool_         # noqa: A001

__version__ = "0.1.0"

_SUBMODULES = ("nn", "optim", "data", "metrics", "train", "keras", "models", "testing", "kernels",
               "distributed")


def __getattr__(name):
    """``gd.nn``, ``gd.optim``, ... load on first use, keeping ``import gpudl`` fast."""
    if name in _SUBMODULES:
        import importlib
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'gpudl' has no attribute {name!r}")
