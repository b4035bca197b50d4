"""Weight initialisation, in place and without recording a graph (PyTorch's torch.nn.init).

Random draws come from ``gpudl.random``, so ``gd.manual_seed`` makes every initialiser repeatable.
Each function returns the tensor it filled.
"""

import math
import warnings

from .. import backend, random
from ..dtypes import is_floating
from ..backend import get_array_module
from ..autograd import no_grad
from ..tensor import Tensor

_LINEAR_GAIN = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d", "sigmoid")


def _check(op, tensor):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{op}: expected a gpudl Tensor, got {type(tensor).__name__}")
    if not is_floating(tensor.dtype):
        raise TypeError(f"{op}: expected a floating point tensor, got {tensor.dtype}")


def _fill(tensor, values):
    with no_grad():
        tensor.copy_(values)
    return tensor


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for ``nonlinearity`` (torch's table): relu sqrt(2), tanh 5/3, ..."""
    if nonlinearity in _LINEAR_GAIN:
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out): dims 1 and 0 times the receptive field (the product of dims 2...)."""
    if tensor.ndim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         f"dimensions (got shape {tuple(tensor.shape)})")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _calculate_correct_fan(tensor, mode):
    mode = mode.lower() if isinstance(mode, str) else mode
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode!r} not supported, please use one of 'fan_in', 'fan_out'")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with U(a, b) (drawn from ``generator``, a gd.Generator, when given: as every
    initialiser here that draws)."""
    _check("uniform_", tensor)
    return _fill(tensor, random.uniform(tensor.shape, tensor.dtype, tensor.device, a, b,
                                        generator))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with N(mean, std**2)."""
    _check("normal_", tensor)
    return _fill(tensor, random.normal(tensor.shape, tensor.dtype, tensor.device, generator)
                 * std + mean)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Fill with N(mean, std**2) restricted to [a, b] (redrawing values outside it)."""
    _check("trunc_normal_", tensor)
    if not a < b:
        raise ValueError(f"trunc_normal_: need a < b, got a={a}, b={b}")
    values = random.normal(tensor.shape, tensor.dtype, tensor.device, generator) * std + mean
    xp = get_array_module(values)
    outside = (values < a) | (values > b)
    while backend.host_value(outside.any(), "trunc_normal_"):    # at initialisation, by design
        fresh = random.normal(tensor.shape, tensor.dtype, tensor.device, generator) * std + mean
        values = xp.where(outside, fresh, values)
        outside = (values < a) | (values > b)
    return _fill(tensor, values)


def constant_(tensor, val):
    """Fill with ``val``."""
    _check("constant_", tensor)
    return _fill(tensor, val)


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    _check("xavier_uniform_", tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot: N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    _check("xavier_normal_", tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def _kaiming_std(op, tensor, a, mode, nonlinearity):
    _check(op, tensor)
    if 0 in tensor.shape:
        warnings.warn(f"{op}: initializing a zero-element tensor is a no-op", stacklevel=3)
        return None
    fan = _calculate_correct_fan(tensor, mode)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He: U(-bound, bound) with bound = gain * sqrt(3 / fan); Linear and Conv use a=sqrt(5)."""
    std = _kaiming_std("kaiming_uniform_", tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def default_layer_init_(weight, bias=None):
    """PyTorch's default for Linear and Conv layers: weight kaiming_uniform_(a=sqrt(5)), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias uniform within the same bound."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = _calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        uniform_(bias, -bound, bound)
    return weight


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He: N(0, std**2) with std = gain / sqrt(fan)."""
    std = _kaiming_std("kaiming_normal_", tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    return normal_(tensor, 0.0, std, generator)


def orthogonal_(tensor, gain=1.0, generator=None):
    """A (semi-)orthogonal matrix from the QR decomposition of a Gaussian one, times ``gain``;
    dims after the first are flattened."""
    _check("orthogonal_", tensor)
    if tensor.ndim < 2:
        raise ValueError(f"orthogonal_: only tensors with 2 or more dimensions are supported, "
                         f"got shape {tuple(tensor.shape)}")
    if tensor._data.size == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor._data.size // rows
    flat = random.normal((max(rows, cols), min(rows, cols)), tensor.dtype, tensor.device,
                         generator)
    xp = get_array_module(flat)
    q, r = xp.linalg.qr(flat)               # q: (max, min) with orthonormal columns
    q = q * xp.sign(xp.diagonal(r))         # make the decomposition unique (as torch does)
    if rows < cols:
        q = q.T                              # (rows, cols) with orthonormal rows
    return _fill(tensor, (gain * q).reshape(tensor.shape))



def eye_(tensor):
    """The identity matrix (ones on the main diagonal of a 2-D, possibly rectangular, tensor):
    a layer that passes its inputs through."""
    _check("eye_", tensor)
    if tensor.ndim != 2:
        raise ValueError(f"eye_: only tensors with 2 dimensions are supported, got shape "
                         f"{tuple(tensor.shape)}")
    xp = get_array_module(tensor._data)
    return _fill(tensor, xp.eye(*tensor.shape, dtype=tensor._data.dtype))


def dirac_(tensor, groups=1):
    """A convolution weight (out, in, *kernel) of 3 to 5 dims that passes its input channels
    through: a 1 at the kernel's centre for output channel ``d`` of each group and input channel
    ``d``, zeros elsewhere."""
    _check("dirac_", tensor)
    if tensor.ndim not in (3, 4, 5):
        raise ValueError(f"dirac_: only tensors with 3, 4, or 5 dimensions are supported, got "
                         f"shape {tuple(tensor.shape)}")
    if groups < 1 or tensor.shape[0] % groups:
        raise ValueError(f"dirac_: dim 0 ({tensor.shape[0]}) must be divisible by groups "
                         f"({groups})")
    per_group = tensor.shape[0] // groups
    xp = get_array_module(tensor._data)
    values = xp.zeros(tensor.shape, dtype=tensor._data.dtype)
    centre = tuple(k // 2 for k in tensor.shape[2:])
    for g in range(groups):
        for d in range(min(per_group, tensor.shape[1])):
            values[(g * per_group + d, d) + centre] = 1
    return _fill(tensor, values)


# ------------------------------------------------------------------ nn-utils: sparse_, old names
def sparse_(tensor, sparsity, std=0.01, generator=None):
    """Fill a 2-D tensor with N(0, std**2) values, then zero ``ceil(sparsity * rows)`` randomly
    chosen entries in every column (Martens 2010), as torch."""
    _check("sparse_", tensor)
    if tensor.ndim != 2:
        raise ValueError(f"sparse_: only tensors with 2 dimensions are supported, got shape "
                         f"{tuple(tensor.shape)}")
    rows, cols = tensor.shape
    num_zeros = int(math.ceil(sparsity * rows))
    values = random.normal(tensor.shape, tensor.dtype, tensor.device, generator) * std
    xp = get_array_module(values)
    # a random permutation of the rows per column: the rank of each entry among uniform draws
    keys = random.uniform((rows, cols), tensor.dtype, tensor.device, source=generator)
    ranks = xp.argsort(xp.argsort(keys, axis=0), axis=0)
    return _fill(tensor, xp.where(ranks < num_zeros, 0, values).astype(values.dtype))


def _deprecated(method):
    """torch's old name of an initialiser (no trailing underscore): the same, with a
    FutureWarning naming the new one."""
    new_name = method.__name__
    old_name = new_name[:-1]

    def deprecated_init(*args, **kwargs):
        warnings.warn(f"`nn.init.{old_name}` is now deprecated in favor of "
                      f"`nn.init.{new_name}`.", FutureWarning, stacklevel=2)
        return method(*args, **kwargs)

    deprecated_init.__name__ = old_name
    deprecated_init.__doc__ = f"Deprecated alias of {new_name} (a FutureWarning, as torch)."
    return deprecated_init


uniform = _deprecated(uniform_)
normal = _deprecated(normal_)
constant = _deprecated(constant_)
xavier_uniform = _deprecated(xavier_uniform_)
xavier_normal = _deprecated(xavier_normal_)
kaiming_uniform = _deprecated(kaiming_uniform_)
kaiming_normal = _deprecated(kaiming_normal_)
orthogonal = _deprecated(orthogonal_)
sparse = _deprecated(sparse_)
dirac = _deprecated(dirac_)
eye = _deprecated(eye_)
