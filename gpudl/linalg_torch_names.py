"""torch's top-level linear algebra names and their Tensor methods (``gd.det``, ``logdet``,
``inverse``, ``pinverse``, ``cholesky_solve``, ``svd`` with V, ``lu``, ``triangular_solve``,
``addmv``, ``addr``, ``dist``, ``renorm``, ...), over gd.linalg: the older signatures torch
keeps (``some=``, ``rcond=``, B first in the solves)."""

import collections

import numpy as np

from . import autograd, inplace, linalg
from .amp.autocast_mode import cast_inputs, state as _autocast
from .functions import outer, require_tensors, tensordot
from .linalg_decompositions import autocast_off, matrices
from .linalg_lu import lu_solve as _lu_solve, lu_unpack
from .ops import linalg_decomp as decomp
from .tensor import Tensor

SVDResult = collections.namedtuple("SVDResult", "U S V")
TriangularSolveResult = collections.namedtuple("TriangularSolveResult",
                                               "solution cloned_coefficient")

__all__ = ["det", "logdet", "slogdet", "inverse", "pinverse", "cholesky", "cholesky_solve",
           "cholesky_inverse", "qr", "svd", "lu", "lu_solve", "lu_unpack", "triangular_solve",
           "matrix_power", "matrix_exp", "chain_matmul", "inner", "vdot", "ger", "addmv", "addr",
           "dist", "renorm", "frobenius_norm", "nuclear_norm"]


def _cast(op, *tensors):
    return cast_inputs(op, *tensors) if _autocast.active else tensors


det, slogdet, matrix_power, matrix_exp = (linalg.det, linalg.slogdet, linalg.matrix_power,
                                          linalg.matrix_exp)


def logdet(input):
    """torch.logdet: log det(input): NaN where the determinant is negative, -inf where 0."""
    sign, logabsdet = linalg.slogdet(input)
    return logabsdet.masked_fill(sign < 0, float("nan"))


def inverse(input):
    """torch.inverse: linalg.inv."""
    return linalg.inv(input)


def pinverse(input, rcond=1e-15):
    """torch.pinverse: linalg.pinv with singular values below ``rcond`` * largest dropped."""
    return linalg.pinv(input, rtol=rcond)


def cholesky(input, upper=False):
    """torch.cholesky (deprecated in torch): linalg.cholesky."""
    return linalg.cholesky(input, upper=upper)


def cholesky_solve(B, L, upper=False):
    """torch.cholesky_solve: X with (L L^T) X = B from the Cholesky factor L (U^T U with
    ``upper``); batch dims broadcast."""
    B, L = matrices("cholesky_solve", False, "cholesky_solve", B=B, L=L)
    low = L.mT if upper else L
    if low.shape[-1] != low.shape[-2] or B.shape[-2] != low.shape[-1]:
        raise ValueError(f"cholesky_solve: expected L square and B with as many rows, got L "
                         f"{tuple(L.shape)} and B {tuple(B.shape)}")
    # torch differentiates (L L^T)^-1 B in the full matrix L: unstructured solves
    y = decomp.SolveTriangular.apply(low, B, False, False, False)
    return decomp.SolveTriangular.apply(low.mT, y, True, False, False)


def cholesky_inverse(L, upper=False):
    """torch.cholesky_inverse: (L L^T)^-1 from the Cholesky factor L (U^T U with ``upper``)."""
    L = matrices("cholesky_inverse", True, "cholesky_inverse", L=L)
    from .creation import eye
    identity = eye(L.shape[-1], dtype=L.dtype, device=L.device).expand(*L.shape)
    return cholesky_solve(identity, L, upper)


def qr(input, some=True):
    """torch.qr (deprecated in torch): (Q, R), reduced when ``some``, else complete."""
    return linalg.qr(input, "reduced" if some else "complete")


def svd(input, some=True, compute_uv=True):
    """torch.svd: (U, S, V) with input = U diag(S) V^T (V, not Vh); reduced when ``some``.
    Without ``compute_uv``, U and V are zeros of shape (m, m) and (n, n), as torch's."""
    if not compute_uv:
        s = linalg.svdvals(input)
        m, n = input.shape[-2:]
        return SVDResult(input.new_zeros((*input.shape[:-2], m, m)), s,
                         input.new_zeros((*input.shape[:-2], n, n)))
    u, s, vh = linalg.svd(input, full_matrices=not some)
    return SVDResult(u, s, vh.mT)


def lu(A, pivot=True, get_infos=False):
    """torch.lu (deprecated in torch): (LU, pivots) of linalg.lu_factor, and info with
    ``get_infos``."""
    out = linalg.lu_factor_ex(A, pivot=pivot)
    return tuple(out) if get_infos else (out.LU, out.pivots)


def lu_solve(b, LU_data, LU_pivots):
    """torch.lu_solve: X with A X = b from A's LU factors (the old argument order)."""
    b, LU_data = _cast("lu_solve", b, LU_data)
    return _lu_solve(LU_data, LU_pivots, b)


def triangular_solve(b, A, upper=True, transpose=False, unitriangular=False):
    """torch.triangular_solve (deprecated in torch): (X, a copy of A broadcast to the batch
    shape) with A X = b (A^T X = b with ``transpose``)."""
    b, A = matrices("triangular_solve", False, "triangular_solve", b=b, A=A)
    coefficient = A.mT if transpose else A
    x = linalg.solve_triangular(coefficient, b, upper=upper != transpose,
                                unitriangular=unitriangular)
    return TriangularSolveResult(x, A.expand(*x.shape[:-2], *A.shape[-2:]).clone())


def chain_matmul(*matrices_):
    """torch.chain_matmul (deprecated in torch): linalg.multi_dot of 2-D matrices."""
    matrices_ = _cast("chain_matmul", *matrices_)
    if len(matrices_) == 1:
        require_tensors("chain_matmul", matrices=matrices_[0])
        return matrices_[0].clone()
    return linalg.multi_dot(list(matrices_))


def inner(input, other):
    """torch.inner: the sum of products over the last dim of both (a product with a 0-d
    tensor); shape input.shape[:-1] + other.shape[:-1]."""
    require_tensors("inner", input=input, other=other)
    if input.ndim == 0 or other.ndim == 0:
        return input * other
    if input.shape[-1] != other.shape[-1]:
        raise ValueError(f"inner: the last dims must match, got shapes {tuple(input.shape)} "
                         f"and {tuple(other.shape)}")
    return tensordot(input, other, ([input.ndim - 1], [other.ndim - 1]))


def vdot(input, other):
    """torch.vdot: the dot product of two 1-D tensors of one size (real: no conjugate)."""
    require_tensors("vdot", input=input, other=other)
    input, other = _cast("vdot", input, other)
    if input.ndim != 1 or other.ndim != 1 or input.shape != other.shape:
        raise ValueError(f"vdot: expected two 1-D tensors of the same size, got shapes "
                         f"{tuple(input.shape)} and {tuple(other.shape)}")
    if input.dtype != other.dtype:
        raise TypeError(f"vdot: expected both vectors to have the same dtype, got "
                        f"{input.dtype} and {other.dtype}")
    with autocast_off(input):
        return (input * other).sum()


def ger(input, vec2):
    """torch.ger (deprecated in torch): outer."""
    return outer(input, vec2)


def _scaled_sum(input, product, beta, alpha):
    """beta * input + alpha * product; input is ignored (NaN too) when beta is 0, as torch."""
    product = product if alpha == 1 else alpha * product
    shape = np.broadcast_shapes(tuple(input.shape), tuple(product.shape))
    if beta == 0:
        return product.expand(*shape).clone()
    return (input if beta == 1 else beta * input) + product


def addmv(input, mat, vec, *, beta=1, alpha=1):
    """torch.addmv: beta * input + alpha * (mat @ vec)."""
    require_tensors("addmv", input=input, mat=mat, vec=vec)
    input, mat, vec = _cast("addmv", input, mat, vec)
    if mat.ndim != 2 or vec.ndim != 1 or mat.shape[1] != vec.shape[0]:
        raise ValueError(f"addmv: expected a matrix (n, m) and a vector (m,), got shapes "
                         f"{tuple(mat.shape)} and {tuple(vec.shape)}")
    return _scaled_sum(input, mat @ vec, beta, alpha)


def addr(input, vec1, vec2, *, beta=1, alpha=1):
    """torch.addr: beta * input + alpha * outer(vec1, vec2)."""
    require_tensors("addr", input=input, vec1=vec1, vec2=vec2)
    input, vec1, vec2 = _cast("addr", input, vec1, vec2)
    if vec1.ndim != 1 or vec2.ndim != 1:
        raise ValueError(f"addr: vec1 and vec2 must be 1-D, got shapes {tuple(vec1.shape)} and "
                         f"{tuple(vec2.shape)}")
    return _scaled_sum(input, outer(vec1, vec2), beta, alpha)


@autograd.recorded("inplace")
def _addmv_(self, mat, vec, *, beta=1, alpha=1):
    """addmv in place."""
    return inplace.apply(self, "addmv_", lambda t: addmv(t, mat, vec, beta=beta, alpha=alpha),
                         (mat, vec))


@autograd.recorded("inplace")
def _addr_(self, vec1, vec2, *, beta=1, alpha=1):
    """addr in place."""
    return inplace.apply(self, "addr_", lambda t: addr(t, vec1, vec2, beta=beta, alpha=alpha),
                         (vec1, vec2))


def dist(input, other, p=2):
    """torch.dist: the ``p``-norm of input - other (broadcast), over all values."""
    require_tensors("dist", input=input, other=other)
    input, other = _cast("dist", input, other)
    return linalg.vector_norm(input - other, p)


def renorm(input, p, dim, maxnorm):
    """torch.renorm: each slice along ``dim`` whose ``p``-norm exceeds ``maxnorm`` scaled down
    to norm ``maxnorm`` (by maxnorm / (norm + 1e-7), as torch)."""
    require_tensors("renorm", input=input)
    (input,) = _cast("renorm", input)
    if p <= 0 or maxnorm < 0:
        raise ValueError(f"renorm: expected p > 0 and maxnorm >= 0, got p={p}, maxnorm={maxnorm}")
    if input.ndim <= 1:
        raise ValueError(f"renorm: input needs at least 2 dimensions, got {input.ndim}")
    dim = dim % input.ndim
    norms = linalg.vector_norm(input, p, tuple(d for d in range(input.ndim) if d != dim), True)
    factor = (maxnorm / (norms + 1e-7)).masked_fill(norms <= maxnorm, 1.0)
    return input * factor


@autograd.recorded("inplace")
def _renorm_(self, p, dim, maxnorm):
    """renorm in place."""
    return inplace.apply(self, "renorm_", lambda t: renorm(t, p, dim, maxnorm))


def frobenius_norm(input, dim=(-2, -1), keepdim=False):
    """torch.frobenius_norm: the 2-norm over ``dim``."""
    require_tensors("frobenius_norm", input=input)
    (input,) = _cast("frobenius_norm", input)
    return linalg.vector_norm(input, 2, dim, keepdim)


def nuclear_norm(input, dim=None, keepdim=False):
    """torch.nuclear_norm: the sum of singular values over ``dim`` (the last two by default;
    ``nuclear_norm(input, keepdim)`` as torch's first form)."""
    require_tensors("nuclear_norm", input=input)
    (input,) = _cast("nuclear_norm", input)
    if isinstance(dim, bool):
        dim, keepdim = None, dim
    return linalg.matrix_norm(input, "nuc", (-2, -1) if dim is None else dim, keepdim)


for _name in ("det", "logdet", "slogdet", "inverse", "pinverse", "cholesky", "cholesky_solve",
              "cholesky_inverse", "qr", "svd", "lu", "lu_solve", "triangular_solve",
              "matrix_power", "matrix_exp", "inner", "vdot", "ger", "addmv", "addr", "dist",
              "renorm"):
    setattr(Tensor, _name, globals()[_name])
Tensor.addmv_, Tensor.addr_, Tensor.renorm_ = _addmv_, _addr_, _renorm_
if not hasattr(Tensor, "mH"):
    Tensor.mH = property(lambda self: self.mT, doc="torch's conjugate matrix transpose: for "
                                                   "gpudl's real tensors, mT.")
del _name
