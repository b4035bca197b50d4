"""LU factors at work: ``lu_unpack`` (P, L, U from lu_factor's packed form) and ``lu_solve``
(solves with them), shared by gd.linalg and torch's older names. Built on differentiable
ops: gradients reach LU and B."""

import numpy as np

from .linalg_decompositions import matrices
from .ops import linalg_decomp as decomp, lu as lu_ops
from .tensor import Tensor


def _permutation(LU_pivots, m, device):
    """perm (..., m) int64 with A[perm] = L U (rows of A in the order of P A)."""
    if not isinstance(LU_pivots, Tensor) or LU_pivots.dtype.kind not in "iu":
        raise TypeError(f"lu: LU_pivots must be an integer Tensor, got "
                        f"{getattr(LU_pivots, 'dtype', type(LU_pivots).__name__)}")
    perm = lu_ops.permutation_of(LU_pivots._data, m)
    return Tensor._make(perm.astype("int64"), False, None, 0, device)


def lu_unpack(LU_data, LU_pivots, unpack_data=True, unpack_pivots=True):
    """torch.lu_unpack: (P, L, U) with A = P L U from ``lu_factor``'s (LU, pivots): P (m x m)
    the permutation, L (m x k) unit lower, U (k x n) upper, k = min(m, n). Parts not asked for
    come back empty."""
    LU_data = matrices("lu_unpack", False, LU_data=LU_data)
    if not isinstance(LU_pivots, Tensor):
        raise TypeError(f"lu_unpack: LU_pivots must be a Tensor, got {type(LU_pivots).__name__}")
    m, n = LU_data.shape[-2:]
    k = min(m, n)
    if tuple(LU_pivots.shape) != tuple(LU_data.shape[:-2]) + (k,):
        raise ValueError(f"lu_unpack: LU_pivots must have shape {tuple(LU_data.shape[:-2])} + "
                         f"({k},), got {tuple(LU_pivots.shape)}")
    empty = LU_data.new_zeros((0,))
    P = L = U = empty
    if unpack_data:
        from .creation import eye
        L = LU_data[..., :, :k].tril(-1) + eye(m, k, dtype=LU_data.dtype, device=LU_data.device)
        U = LU_data[..., :k, :].triu()
    if unpack_pivots:
        from .creation import eye
        perm = _permutation(LU_pivots, m, LU_data.device)
        P = eye(m, dtype=LU_data.dtype, device=LU_data.device)[perm].mT
    return P, L, U


def _rows(x, perm):
    """x[..., perm, :] per batch element."""
    perm = perm[..., :, None].expand(*x.shape[:-2], x.shape[-2], x.shape[-1])
    return x.gather(-2, perm)


def lu_solve(LU, pivots, B, *, left=True, adjoint=False):
    """torch.linalg.lu_solve: X with A X = B from A's ``lu_factor`` (LU, pivots); X A = B when
    ``left=False``, A^T in place of A with ``adjoint``. Batch dims broadcast."""
    LU, B = matrices("linalg.lu_solve", False, LU=LU, B=B)
    n = LU.shape[-1]
    if LU.shape[-2] != n:
        raise ValueError(f"linalg.lu_solve: LU must be batches of square matrices, got "
                         f"{LU.shape[-2]} by {n}")
    if (B.shape[-2] if left else B.shape[-1]) != n:
        raise ValueError(f"linalg.lu_solve: incompatible shapes of LU {tuple(LU.shape)} and B "
                         f"{tuple(B.shape)}")
    if not left:                           # X A = B  <=>  A^T X^T = B^T
        return lu_solve(LU, pivots, B.mT, adjoint=not adjoint).mT
    batch = np.broadcast_shapes(tuple(LU.shape[:-2]), tuple(B.shape[:-2]))
    B = B.expand(*batch, *B.shape[-2:])
    perm = _permutation(pivots, n, LU.device).expand(*batch, n)
    def solve(a, b, upper, unitriangular):
        return decomp.SolveTriangular.apply(a, b, upper, unitriangular, True)
    if not adjoint:                        # X = U^-1 L^-1 P^T B
        y = solve(LU, _rows(B, perm), False, True)
        return solve(LU, y, True, False)
    y = solve(LU.mT, B, False, False)      # X = P L^-T U^-T B
    y = solve(LU.mT, y, True, True)
    return _rows(y, perm.argsort(-1))
