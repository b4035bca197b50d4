"""Top-level functional forms: gd.cat, gd.stack, gd.where, gd.matmul, gd.exp, ..."""

import functools

from . import dtypes
from .ops import shape as S
from .ops._util import normalize_axis
from .tensor import Tensor, matmul, where  # noqa: F401  (re-exported)
from .linalg import einsum, vector_norm  # noqa: F401  (re-exported)


def _tensors(op, tensors):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected a sequence of Tensors, element {i} is "
                            f"{type(t).__name__}")
    dtype = tensors[0].dtype
    if any(t.dtype != dtype for t in tensors):
        common = functools.reduce(dtypes.promote_types, (t.dtype for t in tensors))
        tensors = [t.astype(common) for t in tensors]
    return tensors


def cat(tensors, dim=0, *, axis=None):
    """Join tensors along an existing dimension; all other sizes must match."""
    tensors = _tensors("cat", tensors)
    # torch's legacy rule: 1-D empty tensors are skipped whatever the others' shapes
    tensors = [t for t in tensors if t.shape != (0,)] or tensors[:1]
    dim = dim if axis is None else axis
    ref = tensors[0]
    if any(t.ndim == 0 for t in tensors):
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated; use stack")
    axis = normalize_axis(dim, ref.ndim, "cat")
    for i, t in enumerate(tensors):
        if t.ndim != ref.ndim or any(a != b for j, (a, b) in enumerate(zip(t.shape, ref.shape))
                                     if j != axis):
            raise ValueError(f"cat: tensor {i} has shape {t.shape} but tensor 0 has shape "
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
