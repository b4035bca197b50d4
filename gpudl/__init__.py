"""gpudl: tensors on NumPy or CuPy, reverse-mode autograd, and Numba-CUDA kernels you can read.

``import gpudl as gd``; the public API is documented in the README and rendered by pdoc (docs/api). The device (cpu or cuda) is chosen once at
import from ``GPUDL_DEVICE`` (see gpudl.backend).
"""

import warnings as _warnings

# NumPy's floating-point warnings (log(0), 1/0, exp overflow) from inside gpudl's ops: torch gives
# the same inf and nan silently. A filter on gpudl's own modules costs nothing per op (an
# np.errstate around each would cost ~1.7 us); the user's own NumPy code keeps its warnings.
_warnings.filterwarnings("ignore", r"(divide by zero|invalid value|overflow|underflow) "
                         "encountered", RuntimeWarning, r"gpudl(\.|$)")

from . import amp, backends, cuda, dtypes, host_memory  # noqa: E402 (after the filter)
from .amp import autocast, get_autocast_dtype, is_autocast_enabled
from .autograd import (enable_grad, inference_mode, is_anomaly_enabled,
                       is_grad_enabled, no_grad, set_grad_enabled)
from .backend import device
from .tensor_repr import set_printoptions
from .custom_function import Function
from .backends import get_float32_matmul_precision, set_float32_matmul_precision
from .creation import (arange, empty, empty_like, eye, from_dlpack, full, full_like, linspace,
                       ones, ones_like, rand, rand_like, randint, randint_like, randn, randn_like,
                       randperm, tensor, zeros, zeros_like)
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
from .compile_api import compile  # noqa: A004  (torch.compile: the model as it is)
from .tensor_shape import Size
from math import e, inf, nan, pi  # noqa: E402  (torch.e, torch.inf, torch.nan, torch.pi)
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
# session 11, math-ops: torch's elementwise maths (their in-place variants: math_inplace)
from . import math_inplace  # noqa: F401  (attaches the Tensor methods)
from .math_ops import (absolute, acos, acosh, add, arccos, arccosh, arcsin, arcsinh, arctan,
                       arctan2, arctanh, asin, asinh, atan, atan2, atanh, celu, clone, copysign,
                       cosh, deg2rad, detach, div, divide, exp2, fix, float_power, fmax, fmin,
                       fmod, frac, frexp, hardshrink, heaviside, hypot, ldexp, log2, log10,
                       logaddexp, logaddexp2, logit, mul, multiply, neg, negative, nextafter,
                       positive, prelu, rad2deg, remainder, rrelu, rsub, selu, sgn, sinc, sinh, sub,
                       subtract, tan, threshold, true_divide, trunc, xlogy)
from .math_bits import (bitwise_and, bitwise_left_shift, bitwise_not, bitwise_or,
                        bitwise_right_shift, bitwise_xor, eq, gcd, ge, greater, greater_equal, gt,
                        is_nonzero, is_same_size, is_signed, isneginf, isposinf, isreal, lcm, le,
                        less, less_equal, lt, ne, not_equal, signbit)
# session 11, nn-vision: torch's top-level names of the nn functions (gd.conv2d, gd.max_pool2d,
# ...), loaded at first use: their modules import the pooling kernels, so Numba, which
# `import gpudl` on a cpu machine must not
_TORCH_NN_NAMES = frozenset((
    "adaptive_avg_pool1d", "adaptive_max_pool1d", "avg_pool1d", "batch_norm", "channel_shuffle",
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "convolution", "dropout", "embedding", "group_norm", "instance_norm", "layer_norm",
    "max_pool1d", "max_pool1d_with_indices", "max_pool2d", "max_pool3d", "pdist", "pixel_shuffle",
    "pixel_unshuffle",
    # session 26: the losses and distances under torch's top-level signatures
    "kl_div", "hinge_embedding_loss", "margin_ranking_loss", "triplet_margin_loss",
    "poisson_nll_loss", "cosine_embedding_loss", "binary_cross_entropy_with_logits",
    "cosine_similarity", "pairwise_distance", "rms_norm", "bilinear",
))

host_memory.keep_freed_memory()     # before the first step's temporaries (see its module doc)

float = float32      # torch's aliases  # noqa: A001
double = float64
half = float16
long = int64
int = int32          # noqa: A001
short = int16
bool = bool_         # noqa: A001

__version__ = "0.1.0"

_SUBMODULES = ("nn", "optim", "data", "metrics", "train", "keras", "models", "testing", "kernels",
               "distributed", "utils", "linalg", "distributions")
_SUBMODULES += ("func",)    # session 11, nn-utils: torch.func.functional_call


def __getattr__(name):
    """``gd.nn``, ``gd.optim``, ... load on first use, keeping ``import gpudl`` fast."""
    if name in _SUBMODULES:
        import importlib
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name == "vmap":                      # torch.vmap (gpudl.func loads gpudl.nn)
        from .func import vmap
        globals()[name] = vmap
        return vmap
    if name in _TORCH_NN_NAMES:
        from . import torch_nn_names
        globals()[name] = value = getattr(torch_nn_names, name)
        return value
    raise AttributeError(f"module 'gpudl' has no attribute {name!r}")
# session 11, tensor-misc: torch's shape, indexing, reduction and scatter breadth
from .tensor_views import (argwhere, atleast_1d, atleast_2d, atleast_3d, block_diag,
                           cartesian_prod, column_stack, combinations, concat, concatenate,
                           diag_embed, diagflat, diagonal, dsplit, dstack, fliplr, flipud, hsplit,
                           msort, ravel, rot90, row_stack, select, split_with_sizes, swapaxes,
                           swapdims, take, tensor_split, unbind, vander, vsplit)
from .tensor_scans import (aminmax, bincount, corrcoef, cov, cummax, cummin,
                           cumulative_trapezoid, isin, logcumsumexp, nanmean, nanmedian,
                           nanquantile, nansum, quantile, trapezoid, trapz, unique_consecutive)
from .tensor_scatter import (diagonal_scatter, index_copy, index_put, index_reduce,
                             masked_scatter, put, scatter_reduce, select_scatter, slice_scatter)
from .global_state import (broadcast_shapes, can_cast, get_default_dtype, get_num_threads,
                           get_rng_state, initial_seed, promote_types, result_type, seed,
                           set_default_dtype, set_num_threads, set_rng_state)

# session 11, distributions: torch.special and its top-level names
_SUBMODULES += ("special",)
from .special import (digamma, erfc, erfinv, i0, igamma, igammac, lgamma,  # noqa: E402
                      mvlgamma, polygamma)
# branch linalg: torch's top-level linear algebra names (and their Tensor methods)
from .linalg_torch_names import (addmv, addr, chain_matmul, cholesky,  # noqa: E402
                                 cholesky_inverse, cholesky_solve, det, dist, frobenius_norm,
                                 ger, inner, inverse, logdet, lu, lu_solve, lu_unpack,
                                 matrix_exp, matrix_power, nuclear_norm, pinverse, qr, renorm,
                                 slogdet, svd, triangular_solve, vdot)
# session 26, breadth: torch's remaining everyday Tensor methods and top-level names
from .tensor_compat import as_strided, angle, layout, strided  # noqa: E402
from .torch_numerics import histogram, nonzero_static, unravel_index  # noqa: E402

from .torch_names import (adjoint, conj, conj_physical, imag, is_complex,  # noqa: E402
                          is_conj, is_inference, is_neg, real, resolve_conj, resolve_neg)
from .torch_names import *  # noqa: E402,F401,F403  (torch.relu_, exp_, ...: the _IN_PLACE names)
from .autograd import is_inference_mode_enabled  # noqa: E402
from .sampling import binomial, poisson  # noqa: E402
from .torch_creation import (asarray, bartlett_window, blackman_window,  # noqa: E402
                             empty_strided, fill, frombuffer, hamming_window, hann_window,
                             kaiser_window, range, scalar_tensor)
from .torch_numerics import gradient  # noqa: E402
# session 26, breadth2: torch.stft/istft (real layout), histogramdd
from .spectral import istft, stft  # noqa: E402
from .torch_histogramdd import histogramdd  # noqa: E402
from .torch_state import (are_deterministic_algorithms_enabled, get_default_device,  # noqa: E402
                          get_deterministic_debug_mode, get_num_interop_threads,
                          is_deterministic_algorithms_warn_only_enabled, is_warn_always_enabled,
                          set_default_device, set_deterministic_debug_mode, set_flush_denormal,
                          set_num_interop_threads, set_warn_always, typename,
                          use_deterministic_algorithms)

# session 26, outarg: torch's out= keyword on the functions torch gives it to (gpudl.out_arg)
from .out_arg import TOP_LEVEL as _OUT_NAMES, wrap_names as _wrap_names  # noqa: E402
_wrap_names(globals(), _OUT_NAMES)
del _OUT_NAMES, _wrap_names
