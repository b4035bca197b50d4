"""``keras.ops`` on gpudl Tensors: Keras 3's NumPy-like and neural-network ops by their Keras
names, argument names and defaults (``axis``/``keepdims``, ``x1``/``x2``), each one gpudl op or a
few, so every result is differentiable through gpudl's autograd and runs on the CUDA path.

Inputs may be Tensors, NumPy arrays or Python numbers (converted as Keras converts them: Python
floats and float lists to float32, Python ints to int32, NumPy arrays keep their dtype). Where
Keras and NumPy differ from PyTorch, Keras wins: ``split`` takes a number of equal sections or
split points, ``take``/``cumsum``/``repeat`` flatten when ``axis`` is None, ``argmax`` gives int32,
``gelu`` is the tanh approximation by default (``keras.activations.gelu`` is the exact one).
"""

import builtins
import numbers

import numpy as np

from .. import creation, dtypes, functions
from ..linalg import vector_norm
from ..nn import functional as F
from ..tensor import Tensor
from . import activations
from . import backend as keras_backend

INT = "int32"           # Keras's dtype for Python ints and indices


# -- conversion ---------------------------------------------------------------------------------

def convert_to_tensor(x, dtype=None, sparse=None):
    """``x`` (Tensor, array, number, nested lists) as a Tensor; ``dtype`` casts it."""
    if sparse:
        raise NotImplementedError("convert_to_tensor: sparse tensors are not supported")
    if isinstance(x, Tensor):
        return x if dtype is None else cast(x, dtype)
    if dtype is None:
        array = np.asarray(x)
        if not isinstance(x, np.ndarray) and not isinstance(x, np.generic):
            if array.dtype.kind == "f":
                array = array.astype(keras_backend.default_float())
            elif array.dtype.kind in "iu":
                array = array.astype(INT)
        return creation.tensor(array)
    return creation.tensor(np.asarray(x), dtype=standardize(dtype))


def convert_to_numpy(x):
    """A NumPy array of ``x`` (copied from the GPU)."""
    return x.detach().numpy() if isinstance(x, Tensor) else np.asarray(x)


def standardize(dtype):
    """A gpudl dtype from a Keras dtype name ('float32', 'int32', 'bool', ...) or a dtype."""
    return dtypes.as_dtype(dtype, "dtype")


def cast(x, dtype):
    """``x`` as ``dtype`` (gradients flow between floating dtypes)."""
    return _t(x).astype(standardize(dtype))


def _t(x):
    return x if isinstance(x, Tensor) else convert_to_tensor(x)


def _pair(x1, x2):
    """Two operands as Tensors; a Python number beside a Tensor stays a number (weak type)."""
    if isinstance(x1, numbers.Number) and isinstance(x2, Tensor):
        return x1, x2
    if isinstance(x2, numbers.Number) and isinstance(x1, Tensor):
        return x1, x2
    return _t(x1), _t(x2)


def shape(x):
    """The shape as a tuple of ints."""
    return tuple(_t(x).shape)


def ndim(x):
    """The number of axes."""
    return _t(x).ndim


def size(x):
    """The number of elements."""
    return _t(x).numel()


def stop_gradient(variable):
    """``variable`` cut from the graph (no gradient flows back through it)."""
    return _t(variable).detach()


# -- arithmetic and comparisons ------------------------------------------------------------------

def add(x1, x2):
    """``x1 + x2`` with broadcasting."""
    x1, x2 = _pair(x1, x2)
    return x1 + x2


def subtract(x1, x2):
    """``x1 - x2`` with broadcasting."""
    x1, x2 = _pair(x1, x2)
    return x1 - x2


def multiply(x1, x2):
    """``x1 * x2`` with broadcasting."""
    x1, x2 = _pair(x1, x2)
    return x1 * x2


def divide(x1, x2):
    """True division; integer operands give float32 (Keras's rule)."""
    x1, x2 = (_floating(v) for v in _pair(x1, x2))
    return x1 / x2


true_divide = divide


def _floating(x):
    if isinstance(x, Tensor) and not dtypes.is_floating(x.dtype):
        return x.astype(keras_backend.default_float())
    return float(x) if isinstance(x, numbers.Number) else x


def negative(x):
    """``-x``."""
    return -_t(x)


def power(x1, x2):
    """``x1 ** x2`` with broadcasting."""
    x1, x2 = _pair(x1, x2)
    if isinstance(x1, numbers.Number):
        return functions.full_like(x2, x1) ** x2
    return x1 ** x2


def maximum(x1, x2):
    """The elementwise larger of ``x1`` and ``x2``."""
    x1, x2 = _pair(x1, x2)
    return functions.maximum(*_both_tensors(x1, x2))


def minimum(x1, x2):
    """The elementwise smaller of ``x1`` and ``x2``."""
    x1, x2 = _pair(x1, x2)
    return functions.minimum(*_both_tensors(x1, x2))


def _both_tensors(x1, x2):
    if isinstance(x1, numbers.Number):
        x1 = functions.full_like(x2, x1)
    if isinstance(x2, numbers.Number):
        x2 = functions.full_like(x1, x2)
    return x1, x2


def _compare(name, method):
    def compare(x1, x2):
        x1, x2 = _pair(x1, x2)
        if isinstance(x1, numbers.Number):
            x1 = functions.full_like(x2, x1)
        return getattr(x1, method)(x2)
    compare.__name__ = name
    compare.__doc__ = f"Elementwise ``x1 {method} x2`` as booleans."
    return compare


equal = _compare("equal", "eq")
not_equal = _compare("not_equal", "ne")
greater = _compare("greater", "gt")
greater_equal = _compare("greater_equal", "ge")
less = _compare("less", "lt")
less_equal = _compare("less_equal", "le")


def logical_and(x1, x2):
    """Elementwise ``x1 and x2`` (as booleans)."""
    return _t(x1).bool().logical_and(_t(x2).bool())


def logical_or(x1, x2):
    """Elementwise ``x1 or x2`` (as booleans)."""
    return _t(x1).bool().logical_or(_t(x2).bool())


def logical_xor(x1, x2):
    """Elementwise ``x1 xor x2`` (as booleans)."""
    return _t(x1).bool().logical_xor(_t(x2).bool())


def logical_not(x):
    """Elementwise ``not x`` (as a boolean)."""
    return _t(x).bool().logical_not()


def where(condition, x1=None, x2=None):
    """``x1`` where ``condition`` else ``x2``; with neither, the indices where it holds (a tuple,
    one int Tensor per axis, as NumPy's)."""
    condition = _t(condition).bool()
    if x1 is None and x2 is None:
        return tuple(functions.nonzero(condition).unbind(1)) if condition.ndim else \
            (functions.nonzero(condition.reshape(1))[:, 0],)
    if x1 is None or x2 is None:
        raise ValueError("where: give both x1 and x2, or neither")
    x1, x2 = _both_tensors(*_pair(x1, x2))
    return functions.where(condition, x1, x2)


# -- elementwise math ---------------------------------------------------------------------------

def _unary(name, method, doc):
    def op(x):
        x = _t(x)
        if not dtypes.is_floating(x.dtype) and method not in ("abs", "sign", "square"):
            x = x.astype(keras_backend.default_float())
        return getattr(x, method)()
    op.__name__, op.__doc__ = name, doc
    return op


abs = _unary("abs", "abs", "``|x|``.")    # noqa: A001 (Keras's name)
absolute = abs
exp = _unary("exp", "exp", "``e ** x``.")
expm1 = _unary("expm1", "expm1", "``e ** x - 1``.")
log = _unary("log", "log", "The natural logarithm.")
log1p = _unary("log1p", "log1p", "``log(1 + x)``.")
sqrt = _unary("sqrt", "sqrt", "The square root.")
rsqrt = _unary("rsqrt", "rsqrt", "``1 / sqrt(x)``.")
square = _unary("square", "square", "``x * x``.")
sign = _unary("sign", "sign", "-1, 0 or 1.")
floor = _unary("floor", "floor", "Round down.")
ceil = _unary("ceil", "ceil", "Round up.")
sin = _unary("sin", "sin", "The sine.")
cos = _unary("cos", "cos", "The cosine.")
erf = _unary("erf", "erf", "The error function.")
reciprocal = _unary("reciprocal", "reciprocal", "``1 / x``.")
isnan = _unary("isnan", "isnan", "True where NaN.")
isfinite = _unary("isfinite", "isfinite", "True where finite.")
isinf = _unary("isinf", "isinf", "True where infinite.")


def round(x, decimals=0):  # noqa: A001 (Keras's name)
    """Round half to even (NumPy's rule) to ``decimals`` places."""
    x = _t(x)
    if not decimals:
        return x.round()
    factor = 10.0 ** decimals
    return (x * factor).round() / factor


def clip(x, x_min, x_max):
    """``x`` limited to ``[x_min, x_max]``."""
    return _t(x).clip(x_min, x_max)


def nan_to_num(x, nan=0.0, posinf=None, neginf=None):
    """NaN, +inf and -inf replaced by ``nan``, ``posinf`` and ``neginf`` (None: the dtype's
    extremes)."""
    return _t(x).nan_to_num(nan, posinf, neginf)


# -- reductions ---------------------------------------------------------------------------------

def _axis(axis):
    return tuple(axis) if isinstance(axis, (list, tuple)) else axis


def _reduce(x, method, axis, keepdims):
    x = _t(x)
    if axis is None:
        out = getattr(x, method)()
        return out.reshape((1,) * x.ndim) if keepdims else out
    return getattr(x, method)(dim=_axis(axis), keepdim=keepdims)


def sum(x, axis=None, keepdims=False):  # noqa: A001 (Keras's name)
    """The sum over ``axis`` (an int, a tuple, or None for all)."""
    return _reduce(x, "sum", axis, keepdims)


def mean(x, axis=None, keepdims=False):
    """The mean over ``axis``; integers give float32."""
    return _reduce(_floating(_t(x)), "mean", axis, keepdims)


def prod(x, axis=None, keepdims=False, dtype=None):
    """The product over ``axis`` (an int, a tuple, or None for all)."""
    x = _t(x) if dtype is None else cast(x, dtype)
    if isinstance(axis, (list, tuple)):
        for a in sorted((a % x.ndim for a in axis), reverse=True):
            x = x.prod(dim=a, keepdim=keepdims)
        return x
    return _reduce(x, "prod", axis, keepdims)


def var(x, axis=None, keepdims=False):
    """The population variance (divided by n)."""
    x = _floating(_t(x))
    if axis is None:
        out = x.var(correction=0)
        return out.reshape((1,) * x.ndim) if keepdims else out
    return x.var(dim=_axis(axis), keepdim=keepdims, correction=0)


def std(x, axis=None, keepdims=False):
    """The population standard deviation (divided by n)."""
    return var(x, axis, keepdims).sqrt()


def moments(x, axes, keepdims=False, synchronized=False):
    """``(mean, variance)`` over ``axes``."""
    return mean(x, axes, keepdims), var(x, axes, keepdims)


def max(x, axis=None, keepdims=False, initial=None):  # noqa: A001 (Keras's name)
    """The maximum over ``axis``; ``initial`` joins the values compared."""
    out = _reduce(x, "amax", axis, keepdims) if axis is not None else _reduce(x, "max", None,
                                                                              keepdims)
    return out if initial is None else maximum(out, initial)


def min(x, axis=None, keepdims=False, initial=None):  # noqa: A001 (Keras's name)
    """The minimum over ``axis``; ``initial`` joins the values compared."""
    out = _reduce(x, "amin", axis, keepdims) if axis is not None else _reduce(x, "min", None,
                                                                              keepdims)
    return out if initial is None else minimum(out, initial)


amax, amin = max, min


def any(x, axis=None, keepdims=False):  # noqa: A001 (Keras's name)
    """True where any value over ``axis`` is nonzero."""
    return _reduce(_t(x).bool(), "any", axis, keepdims)


def all(x, axis=None, keepdims=False):  # noqa: A001 (Keras's name)
    """True where every value over ``axis`` is nonzero."""
    return _reduce(_t(x).bool(), "all", axis, keepdims)


def _arg(x, method, axis, keepdims):
    x = _t(x)
    if axis is None:
        out = getattr(x.reshape(-1), method)()
        out = out.reshape((1,) * x.ndim) if keepdims else out
    else:
        out = getattr(x, method)(dim=axis, keepdim=keepdims)
    return out.astype(INT)


def argmax(x, axis=None, keepdims=False):
    """The index of the largest value (over the flattened ``x`` when ``axis`` is None); int32."""
    return _arg(x, "argmax", axis, keepdims)


def argmin(x, axis=None, keepdims=False):
    """The index of the smallest value (flattened when ``axis`` is None); int32."""
    return _arg(x, "argmin", axis, keepdims)


def logsumexp(x, axis=None, keepdims=False):
    """``log(sum(exp(x)))`` over ``axis``, computed stably."""
    x = _floating(_t(x))
    if axis is None:
        out = x.reshape(-1).logsumexp(dim=0)
        return out.reshape((1,) * x.ndim) if keepdims else out
    return x.logsumexp(dim=_axis(axis), keepdim=keepdims)


def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002 (Keras's name)
    """Vector norms (``ord`` a number, inf or -inf; None: 2) over one axis or all of ``x``;
    with ``axis=None`` or two axes and ``ord`` None or 'fro', the Frobenius norm."""
    x = _floating(_t(x))
    if ord == "fro" or (ord is None and (axis is None or isinstance(axis, (list, tuple)))):
        return vector_norm(x, 2, dim=_axis(axis), keepdim=keepdims)
    if isinstance(axis, (list, tuple)) or (axis is None and x.ndim > 1):
        raise NotImplementedError(f"norm: matrix norms other than 'fro' are not supported, "
                                  f"got ord={ord!r}")
    return vector_norm(x, 2 if ord is None else ord, dim=axis, keepdim=keepdims)


def cumsum(x, axis=None, dtype=None):
    """Running sums along ``axis`` (of the flattened ``x`` when None)."""
    x = _t(x) if dtype is None else cast(x, dtype)
    return x.reshape(-1).cumsum(0) if axis is None else x.cumsum(axis)


def cumprod(x, axis=None, dtype=None):
    """Running products along ``axis`` (of the flattened ``x`` when None)."""
    x = _t(x) if dtype is None else cast(x, dtype)
    return x.reshape(-1).cumprod(0) if axis is None else x.cumprod(axis)


def count_nonzero(x, axis=None):
    """The number of nonzero values over ``axis`` (int32)."""
    x = _t(x)
    return (x != 0).astype(INT).sum() if axis is None else \
        (x != 0).astype(INT).sum(dim=_axis(axis))


# -- linear algebra -----------------------------------------------------------------------------

def matmul(x1, x2):
    """The matrix product (batched over leading axes, as NumPy's)."""
    return functions.matmul(_t(x1), _t(x2))


def dot(x1, x2):
    """NumPy's dot: a product with scalars, matmul up to 2-D, else a sum over the last axis of
    ``x1`` and the second-to-last of ``x2``."""
    x1, x2 = _t(x1), _t(x2)
    if x1.ndim == 0 or x2.ndim == 0:
        return x1 * x2
    if x2.ndim == 1 or (x1.ndim <= 2 and x2.ndim <= 2):
        return functions.matmul(x1, x2)
    return functions.tensordot(x1, x2, dims=([x1.ndim - 1], [x2.ndim - 2]))


def einsum(subscripts, *operands):
    """Einstein summation over ``operands`` (``einsum("bij,bjk->bik", a, b)``)."""
    return functions.einsum(subscripts, *[_t(x) for x in operands])


def tensordot(x1, x2, axes=2):
    """The sum of products over ``axes`` (an int: the last of ``x1`` and first of ``x2``; or
    two lists)."""
    return functions.tensordot(_t(x1), _t(x2), dims=axes)


def outer(x1, x2):
    """The outer product of the flattened ``x1`` and ``x2``."""
    return functions.outer(_t(x1).reshape(-1), _t(x2).reshape(-1))


def trace(x, offset=0, axis1=0, axis2=1):
    """The sum of the main diagonal of a 2-D ``x``."""
    x = _t(x)
    if offset or (axis1, axis2) != (0, 1) or x.ndim != 2:
        raise NotImplementedError("trace: only the main diagonal of a 2-D x is supported")
    return x.trace()


# -- shapes -------------------------------------------------------------------------------------

def reshape(x, newshape):
    """``x`` with shape ``newshape`` (one entry may be -1)."""
    return _t(x).reshape(tuple(newshape) if isinstance(newshape, (list, tuple)) else newshape)


def transpose(x, axes=None):
    """The axes permuted by ``axes`` (reversed when None)."""
    x = _t(x)
    return x.permute(*(reversed(range(x.ndim)) if axes is None else axes))


def expand_dims(x, axis):
    """A new axis of size 1 at ``axis`` (or at each of a tuple of axes)."""
    x = _t(x)
    axes = axis if isinstance(axis, (list, tuple)) else (axis,)
    ndim_out = x.ndim + len(axes)
    for a in sorted(a % ndim_out for a in axes):
        x = x.unsqueeze(a)
    return x


def squeeze(x, axis=None):
    """Drop axes of size 1 (all, or those in ``axis``; one that is not 1 is an error)."""
    x = _t(x)
    if axis is None:
        return x.squeeze()
    axes = sorted((a % x.ndim for a in (axis if isinstance(axis, (list, tuple)) else (axis,))),
                  reverse=True)
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} has size {x.shape[a]}, not 1 (x shape "
                             f"{tuple(x.shape)})")
        x = x.squeeze(a)
    return x


def moveaxis(x, source, destination):
    """``x`` with axis ``source`` moved to ``destination``."""
    return _t(x).moveaxis(source, destination)


def swapaxes(x, axis1, axis2):
    """``x`` with ``axis1`` and ``axis2`` exchanged."""
    return _t(x).swapaxes(axis1, axis2)


def broadcast_to(x, shape):
    """``x`` broadcast to ``shape``."""
    return _t(x).broadcast_to(tuple(shape))


def concatenate(xs, axis=0):
    """The tensors of ``xs`` joined along ``axis``."""
    return functions.cat([_t(x) for x in xs], dim=axis)


def stack(x, axis=0):
    """The tensors of ``x`` stacked along a new ``axis``."""
    return functions.stack([_t(v) for v in x], dim=axis)


def hstack(xs):
    """The tensors joined along axis 1 (axis 0 for 1-D)."""
    return functions.hstack([_t(x) for x in xs])


def vstack(xs):
    """The tensors joined along axis 0 (1-D ones as rows)."""
    return functions.vstack([_t(x) for x in xs])


def split(x, indices_or_sections, axis=0):
    """NumPy's split: an int gives that many equal parts (the size must divide), a list gives
    the split points."""
    x = _t(x)
    length = x.shape[axis]
    if isinstance(indices_or_sections, numbers.Integral):
        sections = int(indices_or_sections)
        if sections < 1 or length % sections:
            raise ValueError(f"split: indices_or_sections={sections} does not divide axis "
                             f"{axis} of size {length} into equal parts")
        return list(x.split(length // sections, dim=axis))
    points = [0] + [int(p) for p in indices_or_sections] + [length]
    return [x.narrow(axis, start, builtins.max(end, start) - start)
            for start, end in zip(points[:-1], points[1:])]


def tile(x, repeats):
    """``x`` repeated ``repeats`` times along each axis (NumPy's tile)."""
    repeats = (repeats,) if isinstance(repeats, numbers.Integral) else tuple(repeats)
    return _t(x).tile(repeats)


def repeat(x, repeats, axis=None):
    """Each element repeated ``repeats`` times along ``axis`` (flattened first when None)."""
    x = _t(x)
    if axis is None:
        return x.reshape(-1).repeat_interleave(repeats, dim=0)
    return x.repeat_interleave(repeats, dim=axis)


def flip(x, axis=None):
    """``x`` reversed along ``axis`` (every axis when None)."""
    x = _t(x)
    axes = tuple(range(x.ndim)) if axis is None else \
        (tuple(axis) if isinstance(axis, (list, tuple)) else (axis,))
    return x.flip(axes)


def roll(x, shift, axis=None):
    """``x`` shifted by ``shift`` along ``axis`` (the flattened ``x`` when None), wrapping
    around."""
    x = _t(x)
    if axis is None:
        return x.reshape(-1).roll(shift, 0).reshape(x.shape)
    return x.roll(shift, axis)


def tril(x, k=0):
    """``x`` with the entries above diagonal ``k`` zeroed."""
    return _t(x).tril(k)


def triu(x, k=0):
    """``x`` with the entries below diagonal ``k`` zeroed."""
    return _t(x).triu(k)


# -- indexing and sorting -----------------------------------------------------------------------

def _indices(indices, length):
    index = _t(indices).long()
    return functions.where(index < 0, index + length, index)


def take(x, indices, axis=None):
    """Elements of ``x`` at ``indices`` along ``axis`` (of the flattened ``x`` when None);
    negative indices count from the end."""
    x = _t(x)
    if axis is None:
        x, axis = x.reshape(-1), 0
    axis = axis % x.ndim
    index = _indices(indices, x.shape[axis])
    out = x.index_select(axis, index.reshape(-1))
    return out.reshape(tuple(x.shape[:axis]) + tuple(index.shape) + tuple(x.shape[axis + 1:]))


def take_along_axis(x, indices, axis=None):
    """NumPy's take_along_axis (``indices`` broadcast against ``x`` on the other axes)."""
    x = _t(x)
    if axis is None:
        x, axis = x.reshape(-1), 0
    index = _indices(indices, x.shape[axis])
    shape = [builtins.max(a, b) for a, b in zip(x.shape, index.shape)]
    shape[axis] = x.shape[axis]
    x = x.broadcast_to(tuple(shape))
    shape[axis] = index.shape[axis]
    return x.gather(axis, index.broadcast_to(tuple(shape)))


def sort(x, axis=-1):
    """The values sorted ascending along ``axis``."""
    return _t(x).sort(dim=axis).values


def argsort(x, axis=-1):
    """The indices that sort ``x`` ascending along ``axis``."""
    return _t(x).argsort(dim=axis).astype(INT)


def top_k(x, k, sorted=True):  # noqa: A002 (Keras's name)
    """``(values, indices)`` of the ``k`` largest along the last axis, largest first."""
    values, indices = _t(x).topk(k, dim=-1, sorted=sorted)
    return values, indices.astype(INT)


def one_hot(x, num_classes, axis=-1, dtype=None, sparse=False):
    """One-hot float32 rows (``dtype``) for integer labels; a new ``axis`` holds the classes;
    labels outside ``[0, num_classes)`` give all-zero rows (Keras's rule)."""
    if sparse:
        raise NotImplementedError("one_hot: sparse=True is not supported")
    labels = _t(x).long()
    valid = (labels >= 0).logical_and(labels < num_classes)
    out = F.one_hot(functions.where(valid, labels, labels * 0), num_classes)
    out_dtype = _dtype(dtype)
    out = out.astype(out_dtype) * valid.unsqueeze(-1).astype(out_dtype)
    return out if axis in (-1, out.ndim - 1) else out.moveaxis(-1, axis)


# -- creation -----------------------------------------------------------------------------------

def _shape(value):
    return (value,) if isinstance(value, numbers.Integral) else tuple(value)


def _dtype(dtype, default=None):
    return standardize(dtype or default or keras_backend.default_float())


def zeros(shape, dtype=None):
    """Zeros of ``shape`` (floatx unless ``dtype``)."""
    return creation.zeros(*_shape(shape), dtype=_dtype(dtype))


def ones(shape, dtype=None):
    """Ones of ``shape`` (floatx unless ``dtype``)."""
    return creation.ones(*_shape(shape), dtype=_dtype(dtype))


def full(shape, fill_value, dtype=None):
    """``fill_value`` everywhere in ``shape`` (floatx unless ``dtype``)."""
    return creation.full(_shape(shape), fill_value, dtype=_dtype(dtype))


def zeros_like(x, dtype=None):
    """Zeros of ``x``'s shape and dtype (or ``dtype``)."""
    return full_like(x, 0, dtype)


def ones_like(x, dtype=None):
    """Ones of ``x``'s shape and dtype (or ``dtype``)."""
    return full_like(x, 1, dtype)


def full_like(x, fill_value, dtype=None):
    """``fill_value`` in ``x``'s shape and dtype (or ``dtype``)."""
    x = _t(x)
    return creation.full(tuple(x.shape), fill_value, dtype=_dtype(dtype, x.dtype),
                         device=x.device)


def arange(start, stop=None, step=1, dtype=None):
    """``[start, stop)`` by ``step``: int32 for ints (Keras's default), else float32."""
    values = (start, stop, step)
    is_int = builtins.all(isinstance(v, numbers.Integral) for v in values if v is not None)
    return creation.arange(start, stop, step, dtype=_dtype(dtype, INT if is_int else None))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    """``num`` evenly spaced values from ``start`` to ``stop`` (excluded when not
    ``endpoint``); float32; scalar ends only."""
    if axis != 0 or not isinstance(start, numbers.Number) or not isinstance(stop, numbers.Number):
        raise NotImplementedError("linspace: only scalar start and stop with axis=0 are supported")
    step = (stop - start) / builtins.max(num - 1 if endpoint else num, 1)
    end = stop if endpoint else stop - step
    out = creation.linspace(start, end, num, dtype=_dtype(dtype))
    return (out, step) if retstep else out


def eye(N, M=None, k=0, dtype=None):  # noqa: N803 (Keras's names)
    """Ones on diagonal ``k`` of an (N, M) matrix."""
    if k:
        M = N if M is None else M
        return creation.tensor(np.eye(N, M, k), dtype=_dtype(dtype))
    return creation.eye(N, M, dtype=_dtype(dtype))


def identity(n, dtype=None):
    """The (n, n) identity matrix."""
    return eye(n, dtype=dtype)


# -- neural-network ops --------------------------------------------------------------------------

def _activation(name):
    function = activations.ALL[name]

    def op(x):
        return function(_t(x))
    op.__name__, op.__doc__ = name, f"keras.activations.{name} of ``x``."
    return op


relu, relu6, sigmoid, tanh, softplus, silu, selu, hard_sigmoid = (
    _activation(name) for name in ("relu", "relu6", "sigmoid", "tanh", "softplus", "silu",
                                   "selu", "hard_sigmoid"))
swish = silu


def gelu(x, approximate=True):
    """GELU; the tanh approximation unless ``approximate=False`` (Keras's ops default)."""
    return activations.gelu(_t(x), approximate)


def elu(x, alpha=1.0):
    """``x`` if positive, else ``alpha * (exp(x) - 1)``."""
    return activations.elu(_t(x), alpha)


def leaky_relu(x, negative_slope=0.2):
    """``x`` if positive, else ``negative_slope * x`` (Keras's 0.2)."""
    return activations.leaky_relu(_t(x), negative_slope)


def log_sigmoid(x):
    """``log(sigmoid(x))``, computed stably."""
    return F.logsigmoid(_t(x))


def softsign(x):
    """``x / (1 + |x|)``."""
    return F.softsign(_t(x))


def softmax(x, axis=-1):
    """Softmax over ``axis``."""
    return activations.softmax(_floating(_t(x)), axis)


def log_softmax(x, axis=-1):
    """Log-softmax over ``axis``."""
    return activations.log_softmax(_floating(_t(x)), axis)


def normalize(x, axis=-1, order=2, epsilon=None):
    """``x`` divided by its ``order``-norm along ``axis`` (at least ``epsilon``, 1e-12 by
    default)."""
    x = _t(x)
    return x / vector_norm(x, order, dim=axis, keepdim=True).clip(epsilon or 1e-12, None)


# -- control flow (eager: Python loops over gpudl ops) ------------------------------------------

def cond(pred, true_fn, false_fn):
    """``true_fn()`` if ``pred`` else ``false_fn()`` (one host read of ``pred``)."""
    return true_fn() if bool(pred.item() if isinstance(pred, Tensor) else pred) else false_fn()


def while_loop(cond, body, loop_vars, maximum_iterations=None):  # noqa: A002 (Keras's name)
    """Apply ``body`` to ``loop_vars`` while ``cond(*loop_vars)`` holds (at most
    ``maximum_iterations`` times); the final loop variables, in ``loop_vars``' structure."""
    single = not isinstance(loop_vars, (list, tuple))
    values = (loop_vars,) if single else tuple(loop_vars)
    count = 0
    while (maximum_iterations is None or count < maximum_iterations) and _truth(cond(*values)):
        out = body(*values)
        values = (out,) if single else tuple(out)
        count += 1
    return values[0] if single else type(loop_vars)(values)


def _truth(value):
    return bool(value.item() if isinstance(value, Tensor) else value)


def fori_loop(lower, upper, body_fun, init_val):
    """``val = body_fun(i, val)`` for ``i`` in ``range(lower, upper)``; the final ``val``."""
    value = init_val
    for i in range(int(lower), int(upper)):
        value = body_fun(i, value)
    return value


def scan(f, init, xs=None, length=None, reverse=False, unroll=1):
    """``carry, y = f(carry, x)`` over the first axis of ``xs``; ``(carry, stacked ys)``."""
    steps = length if xs is None else _t(xs).shape[0]
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    carry, ys = init, [None] * steps
    for i in order:
        carry, ys[i] = f(carry, None if xs is None else _t(xs)[i])
    return carry, (None if ys and ys[0] is None else stack(ys))


def is_tensor(x):
    """True for a gpudl Tensor."""
    return isinstance(x, Tensor)


def dtype(x):
    """The dtype's Keras name ('float32', ...)."""
    return np.dtype(_t(x).dtype).name

