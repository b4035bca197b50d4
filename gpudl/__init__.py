"""gpudl: tensors on NumPy or CuPy, reverse-mode autograd, and Numba-CUDA kernels you can read.

``import gpudl as gd``; the public API is documented in the README and rendered by pdoc (docs/api). The device (cpu or cuda) is chosen once at
import from ``GPUDL_DEVICE`` (see gpudl.backend).
"""

from . import amp, backends, cuda, dtypes, host_memory
from .amp import autocast, get_autocast_dtype, is_autocast_enabled
from .autograd import (Function, enable_grad, inference_mode, is_grad_enabled, no_grad,
                       set_grad_enabled)
from .backend import device
from .backends import get_float32_matmul_precision, set_float32_matmul_precision
from .creation import (arange, empty, empty_like, eye, from_dlpack, full, full_like, linspace,
                       ones, ones_like, rand, rand_like, randint, randn, randn_like, randperm,
                       tensor, zeros, zeros_like)
from .creation import (BoolTensor, DoubleTensor, FloatTensor, IntTensor, LongTensor,
                       from_numpy)
from .dtypes import bfloat16, bool_, float16, float32, float64, int8, int16, int32, int64, uint8
from .functions import (abs, addmm, amax, amin, argmax, argmin, argsort, bmm, cat, ceil, chunk,
                        clamp, clamp_max, clamp_min, clip, cos, cumprod, cumsum, diff, einsum, erf,
                        exp, expm1, flatten, flip, floor, floor_divide, gather, index_add,
                        index_select, isfinite, isnan, log, log1p, log_softmax, logsumexp,
                        masked_fill, masked_select, matmul, max, maximum, mean, min, minimum, mm,
                        narrow, norm, outer, permute, prod, reciprocal, relu, remainder, reshape,
                        roll, round, rsqrt, scatter, scatter_add, sigmoid, sign, sin, softmax,
                        sort, split, sqrt, square, squeeze, stack, std, sum, tanh, topk, transpose,
                        tril, triu, unsqueeze, var, where)
from .io import load, save
from .random import manual_seed
from .tensor import Tensor
# session 10: torch's wider namespace
from .creation import as_tensor, logspace
from .functions import (addbmm, allclose, baddbmm, broadcast_tensors, cdist, cross, diag,
                        index_fill, is_tensor, isclose, kron, kthvalue, lerp, median, meshgrid,
                        mode, nan_to_num, nonzero, numel, repeat_interleave, std_mean,
                        take_along_dim, tensordot, var_mean)
from .random import Generator
from .sampling import bernoulli, multinomial, normal
from .tensor_order import bucketize, histc, searchsorted, unique
from .functions import addcdiv, addcmul, equal    # what ported tutorial scripts use
from .torch_names import (all, any, broadcast_to, count_nonzero, dot, finfo,  # noqa: A004
                          hstack, iinfo, is_floating_point, isinf, logical_and, logical_not,
                          logical_or, logical_xor, moveaxis, movedim, mv, pow, t, tile, trace,
                          tril_indices, triu_indices, unflatten, vstack)
# session 11, nn-vision: torch's top-level names of the nn functions
from .torch_nn_names import (adaptive_avg_pool1d, adaptive_max_pool1d, avg_pool1d,  # noqa: F401
                             batch_norm, channel_shuffle, conv1d, conv2d, conv3d,
                             conv_transpose1d, conv_transpose2d, conv_transpose3d, convolution,
                             dropout, embedding, group_norm, instance_norm, layer_norm,
                             max_pool1d, max_pool1d_with_indices, max_pool2d, max_pool3d, pdist,
                             pixel_shuffle, pixel_unshuffle)

host_memory.keep_freed_memory()     # before the first step's temporaries (see its module doc)

float = float32      # torch's aliases  # noqa: A001
double = float64
half = float16
long = int64
bool = bool_         # noqa: A001

__version__ = "0.1.0"

_SUBMODULES = ("nn", "optim", "data", "metrics", "train", "keras", "models", "testing", "kernels",
               "distributed", "utils", "linalg", "distributions")


def __getattr__(name):
    """``gd.nn``, ``gd.optim``, ... load on first use, keeping ``import gpudl`` fast."""
    if name in _SUBMODULES:
        import importlib
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'gpudl' has no attribute {name!r}")
