"""The LU factorization as a differentiable Function (packed LU and getrf pivots, as
torch.linalg.lu_factor) and the row permutation its pivots stand for. Backward follows torch's
linalg_lu_backward for square, tall and wide matrices (real case)."""

import numpy as np

from .. import backend
from ..autograd import ArrayFunction
from . import lapack
from ._util import xp_of
from .lapack import mT


class LUFactor(ArrayFunction):
    """Packed LU (unit-lower L below the diagonal, U on and above) and 1-based int32 pivots,
    P A = L U, as torch.linalg.lu_factor; the gradient for square matrices (torch's)."""

    @staticmethod
    def forward(ctx, a):
        lu, pivots = lapack.lu_factor(a)
        xp = xp_of(a)
        pivots = xp.asarray(pivots).astype(np.int32) + 1
        ctx.save_for_backward(lu, pivots)
        ctx.mark_non_differentiable(pivots)
        return lu, pivots

    @staticmethod
    def backward(ctx, glu, gpivots=None):
        lu, pivots = ctx.saved_tensors
        m, n = lu.shape[-2:]
        k = min(m, n)
        xp = xp_of(lu)
        low = xp.tril(lu[..., :, :k], -1) + xp.eye(m, k, dtype=lu.dtype)      # (m, k)
        up = xp.triu(lu[..., :k, :])                                       # (k, n)
        gl, gu = xp.tril(glu[..., :, :k], -1), xp.triu(glu[..., :k, :])
        if m == n:      # gA = P L^-T [tril(L^T gL, -1) + triu(gU U^T)] U^-T
            inner = xp.tril(mT(low) @ gl, -1) + xp.triu(gu @ mT(up))
            x = lapack.solve_triangular(mT(low), inner, upper=True, unitriangular=True)
            x = mT(lapack.solve_triangular(up, mT(x), upper=True))
        elif m < n:     # wide: U = [U1 | U2], U1 square
            x = xp.tril(mT(low) @ gl - gu @ mT(up), -1)
            x = mT(lapack.solve_triangular(up[..., :k], mT(x), upper=True))     # x U1^-T
            x = xp.concatenate([x + gu[..., :k], gu[..., k:]], -1)
            x = lapack.solve_triangular(mT(low), x, upper=True, unitriangular=True)
        else:           # tall: L = [L1; L2], L1 square
            x = xp.triu(gu @ mT(up) - mT(low) @ gl)
            x = lapack.solve_triangular(mT(low[..., :k, :]), x, upper=True, unitriangular=True)
            x = xp.concatenate([x + gl[..., :k, :], gl[..., k:, :]], -2)
            x = mT(lapack.solve_triangular(up, mT(x), upper=True))              # x U^-T
        return permute_rows(x, pivots, inverse=True)


def permutation_of(pivots, m):
    """The row order of P A from 1-based getrf pivots: perm[..., i] is the row of A at row i.
    The swaps are sequential: worked out on the host (a device sync on CUDA)."""
    host = backend.to_numpy(pivots, "lu pivots") - 1
    if host.size == 0:
        return xp_of(pivots).asarray(np.broadcast_to(np.arange(m), host.shape[:-1] + (m,)))
    flat = host.reshape(-1, host.shape[-1])
    perm = np.tile(np.arange(m), (flat.shape[0], 1))
    rows = np.arange(flat.shape[0])
    for i in range(flat.shape[1]):
        j = flat[:, i]
        perm[rows, i], perm[rows, j] = perm[rows, j], perm[rows, i]
    return xp_of(pivots).asarray(perm.reshape(host.shape[:-1] + (m,)))


def permute_rows(x, pivots, inverse=False):
    """P x (rows of x in the order of P A), or P^T x with ``inverse``."""
    xp = xp_of(x)
    perm = permutation_of(pivots, x.shape[-2])
    if inverse:
        perm = xp.argsort(perm, -1)
    perm = xp.broadcast_to(perm, x.shape[:-2] + perm.shape[-1:])
    return xp.take_along_axis(x, perm[..., None], -2)
