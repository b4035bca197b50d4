"""Top-level functional forms: gd.cat, gd.stack, gd.where, gd.matmul, gd.exp, ..."""

import builtins
import functools
import math

import numpy as np

from . import autograd, backend, dtypes, inplace
from .ops import shape as S
from .ops._util import normalize_axis
from .tensor import Tensor, matmul, where  # noqa: F401  (re-exported)
from .linalg import einsum, vector_norm  # noqa: F401  (re-exported)
from .amp.autocast_mode import cast_inputs, state as _autocast
from .creation import arange
from .ops.linalg import MatMul
from .tensor_math import check_batch_dims


def _tensors(op, tensors, promote=True):
    """``tensors`` as a list, checked; cast to their promoted dtype when ``promote``."""
    if isinstance(tensors, Tensor):           # list(t) would take its rows: refuse, as torch
        raise TypeError(f"{op}: expected a sequence of Tensors, got a Tensor; pass [tensor]")
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected a sequence of Tensors, element {i} is "
                            f"{type(t).__name__}")
    dtype = tensors[0].dtype
    if promote and any(t.dtype != dtype for t in tensors):
        common = functools.reduce(dtypes.promote_types, (t.dtype for t in tensors))
        tensors = [t.astype(common) for t in tensors]
    return tensors


def cat(tensors, dim=0, *, axis=None):
    """Join tensors along an existing dimension; all other sizes must match."""
    tensors = _tensors("cat", tensors)
    # torch's legacy rule: 1-D empty tensors are skipped whatever the others' shapes (S.Cat
    # skips them too, keeping them in the graph)
    first = next((i for i, t in enumerate(tensors) if t.shape != (0,)), 0)
    dim, ref = dim if axis is None else axis, tensors[first]
    if any(t.ndim == 0 for t in tensors):
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated; use stack")
    axis = normalize_axis(dim, ref.ndim, "cat")
    for i, t in enumerate(tensors):
        if t.shape == (0,):
            continue
        if t.ndim != ref.ndim or any(a != b for j, (a, b) in enumerate(zip(t.shape, ref.shape))
                                     if j != axis):
            raise ValueError(f"cat: tensor {i} has shape {t.shape} but tensor {first} has shape "
                             f"{ref.shape}; sizes must match except in dimension {dim}")
    return S.Cat.apply(axis, *tensors) if len(tensors) > 1 else tensors[0].clone()


def stack(tensors, dim=0, *, axis=None):
    """Join tensors of equal shape along a new dimension."""
    tensors = _tensors("stack", tensors)
    dim = dim if axis is None else axis
    ref = tensors[0]
    for i, t in enumerate(tensors):
        if t.shape != ref.shape:
            raise ValueError(f"stack: tensor {i} has shape {t.shape} but tensor 0 has shape "
                             f"{ref.shape}; all must be equal")
    return S.Stack.apply(normalize_axis(dim, ref.ndim + 1, "stack"), *tensors)


def _method(name):
    def call(input, *args, **kwargs):
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        return getattr(input, name)(*args, **kwargs)
    call.__name__ = name
    call.__doc__ = f"Functional form of Tensor.{name}."
    return call


for _name in ("exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "clip", "clamp", "sum",
              "mean", "max", "min", "var", "std", "argmax", "argmin", "softmax", "log_softmax",
              "reshape", "flatten", "squeeze", "unsqueeze", "transpose", "permute", "maximum",
              "square", "isnan", "chunk", "split", "masked_fill",
              # torch's names added with issue 15
              "minimum", "clamp_min", "clamp_max", "mm", "bmm", "outer", "addmm", "amax", "amin",
              "prod", "cumsum", "cumprod", "logsumexp", "norm", "diff", "isfinite", "sin", "cos",
              "log1p", "expm1", "rsqrt", "reciprocal", "erf", "sign", "floor", "ceil", "round",
              "gather", "scatter", "scatter_add", "index_select", "index_add", "masked_select",
              "narrow", "sort", "argsort", "topk", "flip", "roll", "tril", "triu", "floor_divide",
              "remainder"):
    globals()[_name] = _method(_name)
del _name


# --------------------------------------------------------------------- torch's wider namespace
# (session 10): Tensor methods with functional forms, and functions of several tensors.
for _name in ("take_along_dim", "lerp", "nonzero", "diag", "median", "kthvalue", "mode",
              "nan_to_num", "index_fill", "baddbmm", "addbmm"):
    globals()[_name] = _method(_name)
del _name


def is_tensor(obj):
    """Whether ``obj`` is a gpudl Tensor."""
    return isinstance(obj, Tensor)


def numel(input):
    """The number of elements of ``input``."""
    return _method("numel")(input)


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """``input.repeat_interleave(repeats, dim)``; with only a 1-D integer tensor of counts,
    ``repeat_interleave(counts)`` repeats each position i counts[i] times."""
    if repeats is None:
        if not isinstance(input, Tensor) or input.ndim > 1 or input.dtype.kind not in "iu":
            raise TypeError(f"repeat_interleave: with no repeats, input must be a 0-d/1-D "
                            f"integer tensor of counts, got {getattr(input, 'dtype', input)!r}")
        positions = arange(input.numel(), device=input.device)
        return positions.repeat_interleave(input.reshape(-1), output_size=output_size)
    return _method("repeat_interleave")(input, repeats, dim, output_size=output_size)


def broadcast_tensors(*tensors):
    """The tensors expanded to their common broadcast shape, each keeping its dtype."""
    tensors = _tensors("broadcast_tensors", tensors[0] if len(tensors) == 1 and isinstance(
        tensors[0], (list, tuple)) else tensors, promote=False) if tensors else []
    try:
        shape = np.broadcast_shapes(*(t.shape for t in tensors))
    except ValueError:
        raise ValueError(f"broadcast_tensors: shapes {[t.shape for t in tensors]} do not "
                         "broadcast") from None
    return tuple(t.expand(*shape) for t in tensors)


def meshgrid(*tensors, indexing="ij"):
    """Coordinate grids from 1-D tensors: with ``indexing='ij'`` output k varies along dim k
    (shape (n0, n1, ...)); with ``'xy'`` the first two dims are swapped (shape (n1, n0, ...))."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    if not tensors:
        raise ValueError("meshgrid: expected at least one tensor")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor) or t.ndim > 1:
            raise ValueError(f"meshgrid: tensor {i} must be a 0-d or 1-D Tensor, got "
                             f"{getattr(t, 'shape', type(t).__name__)}")
        if t.dtype != tensors[0].dtype:
            raise TypeError(f"meshgrid: tensors must share a dtype, got {tensors[0].dtype} and "
                            f"{t.dtype}")
    dims = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) > 1:
        dims[0], dims[1] = 1, 0            # tensor 0 varies along dim 1, tensor 1 along dim 0
    shape = [0] * len(tensors)
    for t, d in zip(tensors, dims):
        shape[d] = t.numel()
    grids = []
    for t, d in zip(tensors, dims):
        along = [1] * len(tensors)
        along[d] = t.numel()
        grids.append(t.reshape(along).expand(*shape))
    return tuple(grids)


def tensordot(a, b, dims=2):
    """Sum of products over the last ``dims`` dims of ``a`` and the first ``dims`` of ``b``,
    or over the dims named by ``dims = (dims_of_a, dims_of_b)``."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("tensordot: a and b must be Tensors")
    if _autocast.active:
        a, b = cast_inputs("tensordot", a, b)
    if a.dtype != b.dtype:
        raise RuntimeError(f"tensordot: expected both operands to have the same dtype, got "
                           f"{a.dtype} and {b.dtype}")
    if isinstance(dims, Tensor):
        dims = dims.tolist()
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        most = builtins.min(a.ndim, b.ndim)
        if not 0 <= dims <= most:
            raise ValueError(f"tensordot: dims must lie in [0, {most}], got {dims}")
        dims_a, dims_b = list(range(a.ndim - dims, a.ndim)), list(range(dims))
    else:
        try:
            dims_a, dims_b = ([d] if isinstance(d, (int, np.integer)) else list(d) for d in dims)
        except (TypeError, ValueError):
            raise TypeError(f"tensordot: dims must be an int or a pair of dim lists, got "
                            f"{dims!r}") from None
    dims_a = [normalize_axis(d, a.ndim, "tensordot") for d in dims_a]
    dims_b = [normalize_axis(d, b.ndim, "tensordot") for d in dims_b]
    if len(dims_a) != len(dims_b):
        raise ValueError(f"tensordot: dims name {len(dims_a)} dims of a and {len(dims_b)} of b")
    for da, db in zip(dims_a, dims_b):       # a contracted dim of size 1 broadcasts, as torch
        na, nb = a.shape[da], b.shape[db]
        if na != nb and 1 not in (na, nb):
            raise ValueError(f"tensordot: contracted sizes differ: dim {da} of a (shape "
                             f"{a.shape}) and dim {db} of b (shape {b.shape})")
        if na == 1 and nb != 1:
            a = a.expand(*(nb if d == da else n for d, n in enumerate(a.shape)))
        elif nb == 1 and na != 1:
            b = b.expand(*(na if d == db else n for d, n in enumerate(b.shape)))
    sizes_a = [a.shape[d] for d in dims_a]
    free_a = [d for d in range(a.ndim) if d not in dims_a]
    free_b = [d for d in range(b.ndim) if d not in dims_b]
    inner = math.prod(sizes_a)
    left = a.permute(*free_a, *dims_a).reshape(-1, inner)
    right = b.permute(*dims_b, *free_b).reshape(inner, -1)
    # on cuda torch's autocast runs tensordot's policy (promote) and none inside it; on the cpu
    # tensordot has none, and its matrix product takes matmul's
    product = MatMul.apply if _autocast.active and a._device == "cuda" else matmul
    return product(left, right).reshape(tuple(a.shape[d] for d in free_a)
                                       + tuple(b.shape[d] for d in free_b))


def kron(a, b):
    """The Kronecker product: block (i, j, ...) of the result is ``a[i, j, ...] * b``."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("kron: a and b must be Tensors")
    ndim = builtins.max(a.ndim, b.ndim)
    shape_a = (1,) * (ndim - a.ndim) + a.shape
    shape_b = (1,) * (ndim - b.ndim) + b.shape
    spread_a = a.reshape(tuple(x for n in shape_a for x in (n, 1)))
    spread_b = b.reshape(tuple(x for n in shape_b for x in (1, n)))
    return (spread_a * spread_b).reshape(tuple(m * n for m, n in zip(shape_a, shape_b)))


_CDIST_MODES = ("use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist",
                "donot_use_mm_for_euclid_dist")


def cdist(x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    """The ``p``-norm distances between the rows of x1 (..., P, M) and of x2 (..., R, M):
    shape (..., P, R), batch dims broadcast. For p = 2, ``compute_mode`` chooses, as torch's,
    between the differences themselves and matrix products (|x1|^2 + |x2|^2 - 2 x1.x2: less
    memory, less accuracy where points are close), by default the products when P or R
    exceeds 25."""
    from .ops.distance import Cdist
    if not isinstance(x1, Tensor) or not isinstance(x2, Tensor):
        raise TypeError("cdist: x1 and x2 must be Tensors")
    if _autocast.active:
        x1, x2 = cast_inputs("cdist", x1, x2)
    if x1.ndim < 2 or x2.ndim < 2 or x1.shape[-1] != x2.shape[-1]:
        raise ValueError(f"cdist: x1 and x2 must be at least 2-D with the same last dim, got "
                         f"shapes {x1.shape} and {x2.shape}")
    if not dtypes.is_floating(x1.dtype) or x1.dtype != x2.dtype:
        raise TypeError(f"cdist: x1 and x2 must share a floating point dtype, got {x1.dtype} "
                        f"and {x2.dtype}")
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not p >= 0:
        raise ValueError(f"cdist: p must be a non-negative number, got {p!r}")
    if compute_mode is None:
        compute_mode = _CDIST_MODES[0]
    if compute_mode not in _CDIST_MODES:
        raise ValueError(f"cdist: compute_mode must be one of {_CDIST_MODES}, got "
                         f"{compute_mode!r}")
    check_batch_dims("cdist", x1, x2)
    through_products = p == 2 and (compute_mode == _CDIST_MODES[1] or (
        compute_mode == _CDIST_MODES[0] and (x1.shape[-2] > 25 or x2.shape[-2] > 25)))
    return Cdist.apply(x1, x2, float(p), through_products)


def cross(input, other, dim=None):
    """The cross product of 3-vectors along ``dim`` (by default the first dim of size 3, as
    torch.cross; torch.linalg.cross takes -1), the two broadcast."""
    if not isinstance(input, Tensor) or not isinstance(other, Tensor) or input.ndim != other.ndim:
        raise ValueError(f"cross: input and other must be tensors with the same number of dims, "
                         f"got shapes {getattr(input, 'shape', input)!r} and "
                         f"{getattr(other, 'shape', other)!r}")
    if _autocast.active:
        input, other = cast_inputs("cross", input, other)
    if input.dtype != other.dtype:
        raise RuntimeError(f"cross: input and other must share a dtype, got {input.dtype} and "
                           f"{other.dtype}")
    if dim is not None:
        axis = normalize_axis(dim, input.ndim, "cross")
        if input.shape[axis] != 3 or other.shape[axis] != 3:
            raise ValueError(f"cross: dim {dim} must have size 3 in both, got shapes "
                             f"{input.shape} and {other.shape}")
    input, other = broadcast_tensors(input, other)
    if dim is None:
        dim = next((d for d, n in enumerate(input.shape) if n == 3), None)
        if dim is None:
            raise ValueError(f"cross: no dimension of size 3 in shape {input.shape}")
    axis = normalize_axis(dim, input.ndim, "cross")
    if input.shape[axis] != 3:
        raise ValueError(f"cross: dim {dim} must have size 3, got shape {input.shape}")
    a, b = input.unbind(axis), other.unbind(axis)
    return stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                  a[0] * b[1] - a[1] * b[0]], axis)


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """``(var, mean)`` over ``dim``, as ``input.var`` and ``input.mean``."""
    return (_method("var")(input, dim, unbiased, keepdim, correction=correction),
            input.mean(_all_if_none(dim, input), keepdim=keepdim))


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """``(std, mean)`` over ``dim``, as ``input.std`` and ``input.mean``."""
    return (_method("std")(input, dim, unbiased, keepdim, correction=correction),
            input.mean(_all_if_none(dim, input), keepdim=keepdim))


def _all_if_none(dim, input):
    """``dim`` for mean: the bool of torch's ``var(x, True)`` overload means all dims."""
    return None if isinstance(dim, bool) else dim


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Elementwise ``|input - other| <= atol + rtol * |other|`` (equal infinities are close;
    NaNs only with ``equal_nan``), as a bool tensor; the two must share a dtype."""
    if not isinstance(input, Tensor):
        raise TypeError(f"isclose: input must be a Tensor, got {type(input).__name__}")
    if not isinstance(other, Tensor):
        raise TypeError(f"isclose: other must be a Tensor, got {type(other).__name__}")
    if other.dtype != input.dtype:
        raise TypeError(f"isclose: input and other must share a dtype, got {input.dtype} and "
                        f"{other.dtype}")
    if rtol < 0 or atol < 0:
        raise ValueError(f"isclose: rtol and atol must be non-negative, got {rtol}, {atol}")
    a, b = input._data, other._data
    xp = backend.get_array_module(a)
    if input.dtype == dtypes.bool_:
        out = a == b
    else:
        out = xp.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)
    return Tensor._make(xp.asarray(out), False, None, 0, input._device)


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Whether every element pair is close (``isclose``): a Python bool."""
    return bool(isclose(input, other, rtol, atol, equal_nan).all())


def require_tensors(op, **arguments):
    """Refuse (TypeError naming it) any keyword argument that is not a Tensor."""
    for name, value in arguments.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(value).__name__}")


def equal(input, other):
    """Whether the two have the same shape and the same elements (values compared after type
    promotion, NaN unequal to itself): a Python bool, so on the cuda device a read (a counted
    sync) when the shapes match."""
    require_tensors("equal", input=input, other=other)
    if input.shape != other.shape:
        return False
    xp = backend.get_array_module(input._data)
    return bool(backend.host_value(xp.asarray(xp.array_equal(input._data, other._data)),
                                   "equal"))


Tensor.isclose, Tensor.allclose, Tensor.cross, Tensor.kron = isclose, allclose, cross, kron
Tensor.equal = equal


def addcmul(input, tensor1, tensor2, *, value=1):
    """``input + value * tensor1 * tensor2``, broadcast (torch.addcmul)."""
    require_tensors("addcmul", input=input, tensor1=tensor1, tensor2=tensor2)
    if _autocast.active:
        input, tensor1, tensor2 = cast_inputs("addcmul", input, tensor1, tensor2)
    value, input, tensor1, tensor2 = _in_common_dtype(value, input, tensor1, tensor2)
    return _rounded_once(lambda i, a, b: i + value * a * b, input, tensor1, tensor2)


def addcdiv(input, tensor1, tensor2, *, value=1):
    """``input + value * tensor1 / tensor2``, broadcast (torch.addcdiv)."""
    require_tensors("addcdiv", input=input, tensor1=tensor1, tensor2=tensor2)
    if _autocast.active:
        input, tensor1, tensor2 = cast_inputs("addcdiv", input, tensor1, tensor2)
    if not dtypes.is_floating(dtypes.result_type(tensor1, tensor2)):
        raise RuntimeError("addcdiv: integer division with addcdiv is not supported (as in "
                           f"torch); got tensor1 {tensor1.dtype} and tensor2 {tensor2.dtype}: "
                           "convert them to a floating dtype")
    value, input, tensor1, tensor2 = _in_common_dtype(value, input, tensor1, tensor2)
    return _rounded_once(lambda i, a, b: i + value * a / b, input, tensor1, tensor2)


def _rounded_once(compute, *tensors):
    """``compute(*tensors)``, of one dtype; float16/bfloat16 in float32 with the result rounded
    once, as torch's fused kernels (three low-precision roundings cancelled up to 30 ulp away
    where input + value * tensor1 * tensor2 is near 0). The casts are graph nodes."""
    if tensors[0].dtype not in dtypes.LOW_PRECISION:
        return compute(*tensors)
    return compute(*(t.float() for t in tensors)).to(tensors[0].dtype)


def _in_common_dtype(value, *tensors):
    """(value, *tensors) in the tensors' common dtype, in which torch computes addcmul and
    addcdiv: a bool or narrow operand must not take ``value * tensor1`` to another dtype, and
    a floating value is truncated for an integral one, as torch casts it."""
    dtype = dtypes.result_type(*tensors)
    if dtypes.category(dtype) < 2 and dtypes.value_category(value) == 2:
        value = int(value)
    return (value, *(t if t.dtype == dtype else t.to(dtype) for t in tensors))


@autograd.recorded("inplace")
def _addcmul_(self, tensor1, tensor2, *, value=1):
    """addcmul in place."""
    return inplace.apply(self, "addcmul_", lambda t: addcmul(t, tensor1, tensor2, value=value),
                         (tensor1, tensor2))


@autograd.recorded("inplace")
def _addcdiv_(self, tensor1, tensor2, *, value=1):
    """addcdiv in place."""
    return inplace.apply(self, "addcdiv_", lambda t: addcdiv(t, tensor1, tensor2, value=value),
                         (tensor1, tensor2))


Tensor.addcmul, Tensor.addcdiv, Tensor.addcmul_, Tensor.addcdiv_ = (addcmul, addcdiv, _addcmul_,
                                                                    _addcdiv_)

