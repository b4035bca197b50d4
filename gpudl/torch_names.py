"""torch's top-level names that ported scripts use: masks, counts and dtype limits
(``gd.all``/``any``/``pow``/``t``, ``logical_*``, ``isinf``, ``count_nonzero``,
``finfo``/``iinfo``) and shape helpers (``movedim``, ``broadcast_to``, ``tile``, ``unflatten``,
``hstack``/``vstack``, ``dot``/``mv``, ``trace``, ``triu_indices``/``tril_indices``,
``is_floating_point``), built on gpudl's ops. Their own module: ``all``, ``any`` and ``pow``
would shadow Python's builtins in any module that uses those."""

import math

import ml_dtypes
import numpy as np

from . import backend, creation, dtypes
from .amp.autocast_mode import autocast, cast_inputs, state as _autocast
from .functions import _method, _tensors, cat, require_tensors
from .ops._util import normalize_axis
from .tensor import Tensor
from .tensor_math import product

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


# ----------------------------------------------------------------- shape helpers
def movedim(input, source, destination):
    """``input`` with dims ``source`` moved to ``destination`` (ints or sequences of ints),
    the other dims keeping their order (a permute view)."""
    require_tensors("movedim", input=input)
    source, destination = ((d,) if isinstance(d, int) else tuple(d)
                           for d in (source, destination))
    if len(source) != len(destination):
        raise ValueError(f"movedim: source and destination must have the same length, got "
                         f"{len(source)} and {len(destination)}")
    source = [normalize_axis(d, input.ndim, "movedim") for d in source]
    destination = [normalize_axis(d, input.ndim, "movedim") for d in destination]
    if len(set(source)) != len(source) or len(set(destination)) != len(destination):
        raise ValueError(f"movedim: repeated dims in source {source} or destination "
                         f"{destination}")
    rest = iter(d for d in range(input.ndim) if d not in source)
    placed = dict(zip(destination, source))
    return input.permute(*[placed[i] if i in placed else next(rest) for i in range(input.ndim)])


def broadcast_to(input, size):
    """``input`` expanded (a view) to ``size`` by broadcasting."""
    require_tensors("broadcast_to", input=input)
    return input.expand(*((size,) if isinstance(size, int) else size))


def tile(input, dims):
    """``input`` repeated ``dims[i]`` times along each dim; fewer ``dims`` than dims are
    padded with ones in front, more make new leading dims (torch.tile)."""
    require_tensors("tile", input=input)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(dims) < input.ndim:
        dims = (1,) * (input.ndim - len(dims)) + dims
    return input.reshape((1,) * (len(dims) - input.ndim) + tuple(input.shape)).repeat(*dims)


def unflatten(input, dim, sizes):
    """``input`` with dim ``dim`` split into ``sizes`` (one may be -1)."""
    require_tensors("unflatten", input=input)
    dim = normalize_axis(dim, input.ndim, "unflatten")
    shape, sizes = tuple(input.shape), tuple(sizes)
    if sizes.count(-1) == 1:          # inferred from dim's size alone (the tensor may be empty)
        known = math.prod(n for n in sizes if n != -1)
        if known == 0 or shape[dim] % known:
            raise RuntimeError(f"unflatten: sizes {sizes} cannot split dim {dim} of size "
                               f"{shape[dim]}")
        sizes = tuple(shape[dim] // known if n == -1 else n for n in sizes)
    return input.reshape(shape[:dim] + sizes + shape[dim + 1:])


def hstack(tensors):
    """Join along dim 1 (dim 0 for 1-D tensors)."""
    tensors = _tensors("hstack", tensors, promote=False)
    return cat(tensors, 0 if tensors and tensors[0].ndim == 1 else 1)


def vstack(tensors):
    """Join along dim 0, 1-D tensors taken as rows."""
    tensors = _tensors("vstack", tensors, promote=False)
    return cat([t.reshape(1, -1) if t.ndim < 2 else t for t in tensors], 0)


def _vector_product(op, dims, **operands):
    """matmul of two operands of ``dims`` dimensions, under ``op``'s own autocast policy."""
    require_tensors(op, **operands)
    (a_name, a), (b_name, b) = operands.items()
    if (a.ndim, b.ndim) != dims:
        raise RuntimeError(f"{op}: expected a {dims[0]}-D {a_name} and a {dims[1]}-D {b_name}, "
                           f"got {a.ndim}-D and {b.ndim}-D tensors")
    if _autocast.active:
        a, b = cast_inputs(op, a, b)
    return product(a, b)


def dot(input, other):
    """The inner product of two 1-D tensors."""
    return _vector_product("dot", (1, 1), input=input, other=other)


def mv(input, vec):
    """Matrix (n, m) times vector (m,)."""
    return _vector_product("mv", (2, 1), input=input, vec=vec)


def is_floating_point(input):
    """Whether ``input``'s dtype is a floating point type."""
    require_tensors("is_floating_point", input=input)
    return dtypes.is_floating(input.dtype)


def trace(input):
    """The sum of the main diagonal of a 2-D tensor."""
    require_tensors("trace", input=input)
    if input.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, got a {input.ndim}-D tensor")
    if _autocast.active:               # trace's own policy, not sum's (float32 on cuda)
        (input,) = cast_inputs("trace", input)
        with autocast(input._device, enabled=False):
            return input.diag().sum()
    return input.diag().sum()


def _triangle_indices(name, upper):
    def indices(row, col, offset=0, *, dtype=None, device=None):
        rows, cols = (np.triu_indices if upper else np.tril_indices)(row, offset, col)
        return creation.tensor(np.stack([rows, cols]), dtype=dtype or dtypes.int64,
                               device=device)
    indices.__name__ = name
    indices.__doc__ = (f"The (2, N) row and column indices of the {'upper' if upper else 'lower'}"
                       f" triangle of a row x col matrix, from diagonal ``offset`` (torch.{name}).")
    return indices


triu_indices, tril_indices = _triangle_indices("triu_indices", True), \
    _triangle_indices("tril_indices", False)
moveaxis = movedim
Tensor.trace = trace
Tensor.movedim = Tensor.moveaxis = movedim
Tensor.unflatten = unflatten


def _sizes_method(function):
    """The Tensor method of ``function(input, sizes)``: sizes one sequence or int, or several
    ints (x.tile(2, 2), x.broadcast_to(2, 3)), as torch's methods take them."""
    def method(self, *sizes):
        if not sizes:
            raise TypeError(f"{function.__name__}: missing the sizes argument")
        return function(self, sizes[0] if len(sizes) == 1 else sizes)
    method.__name__, method.__doc__ = function.__name__, function.__doc__
    return method


Tensor.broadcast_to, Tensor.tile = _sizes_method(broadcast_to), _sizes_method(tile)
Tensor.dot, Tensor.mv, Tensor.is_floating_point = dot, mv, is_floating_point


# ----------------------------------------------------------------- session 26: breadth
for _name in ("adjoint", "conj", "conj_physical", "resolve_conj", "resolve_neg", "is_complex",
              "is_conj", "is_neg", "is_inference"):
    globals()[_name] = _method(_name)


def real(input):
    """``input`` itself: a real tensor is its own real part (torch.real)."""
    require_tensors("real", input=input)
    return input.real


def imag(input):
    """Refused, as torch refuses it for real tensors (gpudl has no complex dtype)."""
    require_tensors("imag", input=input)
    return input.imag


# torch's top-level in-place functions whose Tensor method gpudl has (torch.relu_(x) is
# x.relu_()): ``from gpudl.torch_names import *`` takes exactly these
__all__ = [_name + "_" for _name in (
    "abs", "acos", "acosh", "addmv", "arccos", "arccosh", "arcsin", "arcsinh", "arctan",
    "arctanh", "asin", "asinh", "atan", "atanh", "ceil", "clamp", "clamp_max", "clamp_min",
    "clip", "cos", "cosh", "deg2rad", "detach", "erf", "erfc", "exp2", "exp", "expm1", "fill",
    "fix", "floor", "frac", "gcd", "i0", "index_put", "lcm", "ldexp", "log10", "log1p", "log2",
    "log", "logit", "nan_to_num", "neg", "negative", "rad2deg", "reciprocal", "relu",
    "resize_as", "round", "rsqrt", "sigmoid", "sin", "sinc", "sinh", "sqrt", "square", "tan",
    "tanh", "trunc", "xlogy", "zero")]
for _name in __all__:
    globals()[_name] = _method(_name)
del _name
