"""torch.linalg's norms, ranks and products (``gd.linalg.norm``, ``matrix_norm``, ``cond``,
``matrix_rank``, ``matrix_power``, ``multi_dot``, ``vecdot``, ``cross``, ``diagonal``,
``tensorinv``, ``tensorsolve``, ``vander``): compositions of differentiable ops, so each
gradient is the chain rule through them."""

import math

import numpy as np

from . import backend, dtypes, functions
from .amp.autocast_mode import cast_inputs, state as _autocast
from .creation import eye, ones_like
from .linalg import vector_norm
from .linalg_decompositions import inv, matrices, solve, svdvals, tolerances
from .ops import linalg_decomp as decomp
from .ops._util import is_int, normalize_axes, normalize_axis
from .tensor import Tensor

__all__ = ["norm", "matrix_norm", "cond", "matrix_rank", "matrix_power", "multi_dot", "vecdot",
           "cross", "diagonal", "tensorinv", "tensorsolve", "vander"]

_MATRIX_ORDS = ("fro", "nuc", math.inf, -math.inf, 1, -1, 2, -2)


def _two_dims(op, A, dim):
    if not isinstance(dim, (tuple, list)) or len(dim) != 2:
        raise ValueError(f"{op}: dim must be a 2-tuple of ints, got {dim!r}")
    axes = normalize_axes(tuple(dim), A.ndim, op)       # sorted: keep the order given
    return tuple(int(d) % A.ndim for d in dim) if len(axes) == 2 else axes


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    """torch.linalg.matrix_norm over the two dims ``dim``: ord 'fro', 'nuc' (sum of singular
    values), inf / -inf (max / min row sum of |A|), 1 / -1 (max / min column sum), 2 / -2
    (largest / smallest singular value)."""
    if ord not in _MATRIX_ORDS or isinstance(ord, bool):
        raise ValueError(f"linalg.matrix_norm: ord must be one of {_MATRIX_ORDS}, got {ord!r}")
    if not isinstance(A, Tensor) or not dtypes.is_floating(A.dtype) or A.ndim < 2:
        raise TypeError(f"linalg.matrix_norm: A must be a floating point Tensor with at least 2 "
                        f"dims, got {getattr(A, 'dtype', type(A).__name__)} "
                        f"{tuple(getattr(A, 'shape', ()))}")
    if _autocast.active:
        (A,) = cast_inputs("linalg_matrix_norm", A)
    A = A if dtype is None else A.astype(dtype)
    row, col = _two_dims("linalg.matrix_norm", A, dim)
    if ord == "fro":
        return vector_norm(A, 2, (row, col), keepdim)
    if ord in ("nuc", 2, -2):
        if ord != "nuc" and A.shape[row] * A.shape[col] == 0:
            raise ValueError(f"linalg.matrix_norm: ord={ord} of an empty matrix is undefined")
        # not the public svdvals: no second autocast cast (bfloat16 is refused, as torch)
        s = decomp.Svdvals.apply(matrices("linalg.matrix_norm", False,
                                          A=A.movedim((row, col), (-2, -1))))
        out = s.sum(-1) if ord == "nuc" else (s.amax(-1) if ord == 2 else s.amin(-1))
        return _keep(out, (row, col), A.ndim) if keepdim else out
    summed, reduced = (row, col) if abs(ord) == 1 else (col, row)
    if A.shape[reduced] == 0:
        raise ValueError(f"linalg.matrix_norm: ord={ord} of a matrix with an empty dim "
                         f"{reduced} is undefined (shape {tuple(A.shape)})")
    sums = A.abs().sum(summed, keepdim=True)
    out = sums.amax(reduced, keepdim=True) if ord > 0 else sums.amin(reduced, keepdim=True)
    return out if keepdim else out.squeeze(max(row, col)).squeeze(min(row, col))


def _keep(out, dims, ndim):
    for d in sorted(dims):
        out = out.unsqueeze(d)
    return out


def norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):
    """torch.linalg.norm: a vector norm when ``dim`` is an int (or A is 1-D, or ord and dim are
    None: the 2-norm of all values), a matrix norm when ``dim`` is a 2-tuple or A is 2-D with
    an ``ord``."""
    if not isinstance(A, Tensor):
        raise TypeError(f"linalg.norm: A must be a Tensor, got {type(A).__name__}")
    if isinstance(dim, int) or (dim is not None and len(dim) == 1):
        return vector_norm(A, 2 if ord is None else ord, dim, keepdim, dtype=dtype)
    if dim is None and ord is not None and A.ndim not in (1, 2):
        raise ValueError(f"linalg.norm: with ord={ord!r} and no dim, A must be 1-D or 2-D, got "
                         f"{A.ndim}-D")
    if (dim is not None and len(dim) == 2) or (dim is None and ord is not None and A.ndim == 2):
        return matrix_norm(A, "fro" if ord is None else ord, (-2, -1) if dim is None else dim,
                           keepdim, dtype=dtype)
    if isinstance(ord, str):
        raise ValueError(f"linalg.norm: ord={ord!r} needs a matrix (a 2-tuple dim)")
    return vector_norm(A, 2 if ord is None else ord, dim, keepdim, dtype=dtype)


def cond(A, p=None):
    """torch.linalg.cond: the condition number in the ``p`` norm (None and 2: largest over
    smallest singular value; -2 the inverse; 'fro', 'nuc', inf, -inf, 1, -1:
    norm(A) * norm(A^-1), square A only)."""
    A = matrices("linalg.cond", False, "linalg_cond", A=A)
    if p is None or p in (2, -2):
        s = svdvals(A)
        return s.amax(-1) / s.amin(-1) if p != -2 else s.amin(-1) / s.amax(-1)
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(f"linalg.cond: with p={p!r}, A must be batches of square matrices, "
                         f"but they are {A.shape[-2]} by {A.shape[-1]} matrices")
    return matrix_norm(A, p) * matrix_norm(inv(A), p)


def matrix_rank(A, *, atol=None, rtol=None, hermitian=False, tol=None):
    """torch.linalg.matrix_rank: the number of singular values above max(atol, rtol *
    largest) (int64; ``tol`` is the old name of atol)."""
    A = matrices("linalg.matrix_rank", False, "linalg_matrix_rank", A=A)
    atol = tol if tol is not None else atol
    atol, rtol = tolerances("linalg.matrix_rank", A, atol, rtol)
    if hermitian:
        from .linalg_decompositions import eigvalsh
        s = eigvalsh(A.detach()).abs()
    else:
        s = svdvals(A.detach())
    if s.shape[-1] == 0:
        return s.sum(-1).long()
    xp = backend.get_array_module(s._data)
    cutoff = xp.maximum(xp.asarray(atol, s.dtype)[..., None],
                        xp.asarray(rtol, s.dtype)[..., None] * s._data.max(-1, keepdims=True))
    return Tensor._make((s._data > cutoff).sum(-1).astype(np.int64), False, None, 0, A._device)


def matrix_power(A, n):
    """torch.linalg.matrix_power: A to the integer power ``n`` by repeated squaring (the
    inverse first for n < 0; the identity for n = 0)."""
    if not is_int(n):
        raise TypeError(f"linalg.matrix_power: n must be an int, got {type(n).__name__}")
    if not isinstance(A, Tensor) or A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"linalg.matrix_power: A must be batches of square matrices, got "
                         f"{tuple(getattr(A, 'shape', ())) or type(A).__name__}")
    if n == 0:     # the identity, tied to A (a gradient of zeros, as torch's)
        identity = eye(A.shape[-1], dtype=A.dtype, device=A.device)
        return functions.where(identity.bool() & False, A, identity)
    if n < 0:
        A, n = inv(A), -n
    result, power = None, A
    while n:
        if n & 1:
            result = power if result is None else result @ power
        n >>= 1
        if n:
            power = power @ power
    return result


def multi_dot(tensors):
    """torch.linalg.multi_dot: the product of the 2-D tensors (the first may be 1-D, a row;
    the last 1-D, a column) in the order of fewest multiplications."""
    if not isinstance(tensors, (list, tuple)) or len(tensors) < 2:
        raise ValueError("linalg.multi_dot: expected at least 2 tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"linalg.multi_dot: tensor {i} is a {type(t).__name__}, not a Tensor")
    mats = list(cast_inputs("linalg_multi_dot", *tensors) if _autocast.active else tensors)
    first_vector, last_vector = mats[0].ndim == 1, mats[-1].ndim == 1
    mats[0] = mats[0].unsqueeze(0) if first_vector else mats[0]
    mats[-1] = mats[-1].unsqueeze(-1) if last_vector else mats[-1]
    for i, m in enumerate(mats):
        if not isinstance(m, Tensor) or m.ndim != 2:
            raise ValueError(f"linalg.multi_dot: tensor {i} must be 2-D (the first and last may "
                             f"be 1-D), got shape {tuple(getattr(m, 'shape', ()))}")
        if i and mats[i - 1].shape[1] != m.shape[0]:
            raise ValueError(f"linalg.multi_dot: tensors {i - 1} and {i} cannot be multiplied "
                             f"({tuple(mats[i - 1].shape)} and {tuple(m.shape)})")
    out = _chain(mats, _chain_order([m.shape[0] for m in mats] + [mats[-1].shape[1]]),
                 0, len(mats) - 1)
    if first_vector:
        out = out.squeeze(0)
    return out.squeeze(-1) if last_vector else out


def _chain_order(dims):
    """split[i][j]: where the cheapest product of matrices i..j splits (dynamic programming)."""
    n = len(dims) - 1
    cost = [[0] * n for _ in range(n)]
    split = [[0] * n for _ in range(n)]
    for length in range(1, n):
        for i in range(n - length):
            j = i + length
            cost[i][j] = math.inf
            for k in range(i, j):
                c = cost[i][k] + cost[k + 1][j] + dims[i] * dims[k + 1] * dims[j + 1]
                if c < cost[i][j]:
                    cost[i][j], split[i][j] = c, k
    return split


def _chain(mats, split, i, j):
    if i == j:
        return mats[i]
    k = split[i][j]
    return _chain(mats, split, i, k) @ _chain(mats, split, k + 1, j)


def vecdot(x, y, *, dim=-1):
    """torch.linalg.vecdot: sum(x * y) over ``dim``, the two broadcast."""
    functions.require_tensors("linalg.vecdot", x=x, y=y)
    if _autocast.active:
        x, y = cast_inputs("linalg_vecdot", x, y)
    try:                                # broadcast first: y may be a vector or 0-d, as torch's
        shape = tuple(np.broadcast_shapes(x.shape, y.shape))
    except ValueError:
        raise ValueError(f"linalg.vecdot: shapes {tuple(x.shape)} and {tuple(y.shape)} do not "
                         "broadcast") from None
    dim = normalize_axis(dim, len(shape), "linalg.vecdot")
    x, y = (t if t.shape == shape else t.expand(*shape) for t in (x, y))
    # one contraction (a matmul, which autocast lowers as torch's vecdot), not a product + sum
    return functions.einsum("...i,...i->...", x.movedim(dim, -1), y.movedim(dim, -1))


def cross(input, other, *, dim=-1):
    """torch.linalg.cross: the cross product of 3-vectors along ``dim`` (-1 by default), the
    two broadcast."""
    return functions.cross(input, other, dim)


def diagonal(A, *, offset=0, dim1=-2, dim2=-1):
    """torch.linalg.diagonal: the ``offset`` diagonal of the matrices over ``dim1``, ``dim2``,
    as the last dim (a differentiable copy)."""
    if not isinstance(A, Tensor) or A.ndim < 2:
        raise ValueError(f"linalg.diagonal: A must be a Tensor with at least 2 dims, got "
                         f"{tuple(getattr(A, 'shape', ())) or type(A).__name__}")
    d1, d2 = (normalize_axes(d, A.ndim, "linalg.diagonal")[0] for d in (dim1, dim2))
    if d1 == d2:
        raise ValueError(f"linalg.diagonal: dim1 and dim2 must differ, both are {dim1}")
    A = A.movedim((d1, d2), (-2, -1))
    m, n = A.shape[-2:]
    length = max(0, min(m + min(offset, 0), n - max(offset, 0)))
    rows = np.arange(length) - min(offset, 0)
    return A[..., rows, rows + offset]


def tensorinv(A, ind=2):
    """torch.linalg.tensorinv: the tensor X with tensordot(X, A, ind) the identity, for
    prod(A.shape[:ind]) == prod(A.shape[ind:]); X has shape A.shape[ind:] + A.shape[:ind]."""
    if not isinstance(A, Tensor):
        raise TypeError(f"linalg.tensorinv: A must be a Tensor, got {type(A).__name__}")
    if not is_int(ind) or ind <= 0:
        raise ValueError(f"linalg.tensorinv: ind must be a positive int, got {ind!r}")
    outer, inner = tuple(A.shape[:ind]), tuple(A.shape[ind:])
    if math.prod(outer) != math.prod(inner):
        raise ValueError(f"linalg.tensorinv: expected prod(A.shape[:ind]) == "
                         f"prod(A.shape[ind:]), got shape {tuple(A.shape)} with ind={ind}")
    return inv(A.reshape(math.prod(outer), -1)).reshape(*inner, *outer)


def tensorsolve(A, B, dims=None):
    """torch.linalg.tensorsolve: X with tensordot(A, X, X.ndim) = B; ``dims`` of A move to the
    end first. X has shape A.shape[B.ndim:]."""
    functions.require_tensors("linalg.tensorsolve", A=A, B=B)
    if dims is not None:            # moved to the end in the order given, as numpy's axes
        dims = tuple(normalize_axes(d, A.ndim, "linalg.tensorsolve")[0] for d in dims)
        A = A.movedim(dims, tuple(range(A.ndim - len(dims), A.ndim)))
    rest = tuple(A.shape[B.ndim:])
    if math.prod(A.shape[:B.ndim]) != B.numel() or math.prod(rest) != B.numel():
        raise ValueError(f"linalg.tensorsolve: expected A's leading {B.ndim} dims and the rest "
                         f"each to hold B's {B.numel()} values, got A {tuple(A.shape)} and B "
                         f"{tuple(B.shape)}")
    return solve(A.reshape(B.numel(), -1), B.reshape(-1)).reshape(*rest)


def vander(x, *, N=None):
    """torch.linalg.vander: the Vandermonde matrices (..., n, N) with columns x**0 ... x**(N-1)
    (N defaults to x's last dim)."""
    if not isinstance(x, Tensor) or (x.ndim == 0 and N is None):
        raise ValueError("linalg.vander: x must be a Tensor (0-d only with N given)")
    x = x.reshape(1) if x.ndim == 0 else x          # a 0-d x is one value, as torch
    N = x.shape[-1] if N is None else N
    if not is_int(N) or N <= 1:
        raise ValueError(f"linalg.vander: N must be an int greater than 1, got {N!r}")
    columns = [ones_like(x)]
    for _ in range(N - 1):
        columns.append(columns[-1] * x)               # products, not pow: exact gradient at 0
    return functions.stack(columns, -1)
