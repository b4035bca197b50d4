"""torch.linalg.ldl_factor, ldl_factor_ex and ldl_solve for real symmetric matrices.

The factorization is LAPACK's ``?sytf2`` (Bunch-Kaufman diagonal pivoting, lower triangle,
alpha = (1 + sqrt 17) / 8) written out: P A P^T = L D L^T with L unit lower triangular and D
block diagonal with 1x1 and 2x2 blocks. ``LD`` and ``pivots`` are LAPACK's (and so torch's)
compact format: L below the diagonal, D on it (a 2x2 block's off-diagonal entry just below),
zeros above; ``pivots`` int32, 1-based, positive for a 1x1 block (the row swapped with k), a
repeated negative -p for a 2x2 block (the row swapped with k + 1). ``ldl_solve`` is ``?sytrs``.
torch calls LAPACK's blocked ``?sytrf``, whose pivot decisions are those of the unblocked
algorithm (the updates are only grouped), so LD and pivots match torch's to rounding; a tie
between two candidate pivots decided by the last bit could differ.

The pivot search is sequential (one column at a time): it runs on the host in NumPy, in the
input's dtype; on cuda the matrices are copied there and the results back. Only the lower
triangle of A is read. No gradient (as torch: asking for one raises).
"""

import collections
import math

import numpy as np

from . import backend
from .autograd import ArrayFunction
from .linalg_decompositions import LinAlgError, matrices
from .tensor import Tensor

ALPHA = (1 + math.sqrt(17)) / 8          # Bunch-Kaufman's growth bound
LdlFactorResult = collections.namedtuple("LdlFactorResult", "LD pivots")
LdlFactorExResult = collections.namedtuple("LdlFactorExResult", "LD pivots info")


def _sytf2(a):
    """Factor the symmetric ``a`` (its lower triangle) in place: (pivots, info) as LAPACK."""
    n = a.shape[0]
    pivots, info, k = np.zeros(n, np.int32), 0, 0
    while k < n:
        step = 1
        absakk = abs(a[k, k])
        imax = k + 1 + int(np.argmax(np.abs(a[k + 1:, k]))) if k < n - 1 else k
        colmax = abs(a[imax, k]) if k < n - 1 else 0.0
        if max(absakk, colmax) == 0 or np.isnan(absakk):
            info = info or k + 1                     # a zero (or NaN) pivot: D is singular
            kp = k
        else:
            if absakk >= ALPHA * colmax:
                kp = k
            else:
                rowmax = np.abs(a[imax, k:imax]).max()
                if imax < n - 1:
                    rowmax = max(rowmax, np.abs(a[imax + 1:, imax]).max())
                if absakk >= ALPHA * colmax * (colmax / rowmax):
                    kp = k
                elif abs(a[imax, imax]) >= ALPHA * rowmax:
                    kp = imax
                else:
                    kp, step = imax, 2
            kk = k + step - 1
            if kp != kk:                             # swap rows and columns kk and kp
                a[kp + 1:, [kk, kp]] = a[kp + 1:, [kp, kk]]
                column = a[kk + 1:kp, kk].copy()
                a[kk + 1:kp, kk] = a[kp, kk + 1:kp]
                a[kp, kk + 1:kp] = column
                a[kk, kk], a[kp, kp] = a[kp, kp], a[kk, kk]
                if step == 2:
                    a[k + 1, k], a[kp, k] = a[kp, k], a[k + 1, k]
            _eliminate(a, k, step)
        pivots[k] = kp + 1 if step == 1 else -(kp + 1)
        if step == 2:
            pivots[k + 1] = -(kp + 1)
        k += step
    return pivots, info


def _eliminate(a, k, step):
    """The rank-1 (1x1 pivot) or rank-2 (2x2 pivot) update of the trailing lower triangle."""
    n = a.shape[0]
    if step == 1:
        if k < n - 1:
            d11 = 1 / a[k, k]
            x = a[k + 1:, k].copy()
            a[k + 1:, k + 1:] -= np.tril(d11 * np.outer(x, x))
            a[k + 1:, k] *= d11
        return
    if k < n - 2:
        d21 = a[k + 1, k]
        d11, d22 = a[k + 1, k + 1] / d21, a[k, k] / d21
        t = 1 / (d11 * d22 - 1)
        d21 = t / d21
        wk = d21 * (d11 * a[k + 2:, k] - a[k + 2:, k + 1])
        wkp1 = d21 * (d22 * a[k + 2:, k + 1] - a[k + 2:, k])
        a[k + 2:, k + 2:] -= np.tril(np.outer(a[k + 2:, k], wk)
                                     + np.outer(a[k + 2:, k + 1], wkp1))
        a[k + 2:, k], a[k + 2:, k + 1] = wk, wkp1


class _NoDerivative(ArrayFunction):
    """The precomputed ``out`` as an op of ``a`` whose backward raises, as torch's."""

    @staticmethod
    def forward(ctx, a, out, op):
        ctx.op = op
        return out

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError(f"derivative for {ctx.op} is not implemented (as in torch)")


def ldl_factor_ex(A, *, hermitian=False, check_errors=False):
    """The LDL^T factorization of symmetric ``A`` (..., n, n) with Bunch-Kaufman pivoting
    (torch.linalg.ldl_factor_ex): ``(LD, pivots, info)`` in LAPACK's compact format (see the
    module docstring), ``info`` (...,) int32: 0, or k > 0 when D(k, k) is exactly zero (A is
    singular; the factorization is still complete). ``hermitian`` makes no difference for real
    matrices. Only the lower triangle of A is read.

    Example: ``LD, pivots, info = gd.linalg.ldl_factor_ex(A)``
    """
    A = matrices("linalg.ldl_factor_ex", True, A=A)
    host = backend.to_numpy(A._data, "linalg.ldl_factor_ex")
    batch, n = host.shape[:-2], host.shape[-1]
    count = int(np.prod(batch))                       # not -1: n may be 0
    factors = np.tril(host).reshape(count, n, n).copy()
    pivots = np.zeros((factors.shape[0], n), np.int32)
    info = np.zeros(factors.shape[0], np.int32)
    for i, matrix in enumerate(factors):
        pivots[i], info[i] = _sytf2(matrix)
    factors = np.tril(factors).reshape(host.shape)
    if check_errors and info.any():
        raise LinAlgError(f"linalg.ldl_factor_ex: the factorization could not be completed: "
                          f"D({int(info[info > 0][0])}) is exactly zero")
    device = A._device
    LD = _NoDerivative.apply(A, backend.to_device_array(factors, device),
                             "linalg_ldl_factor_ex")
    return LdlFactorExResult(
        LD, *(Tensor._make(backend.to_device_array(x, device), False, None, 0, device)
              for x in (pivots.reshape(*batch, n), info.reshape(batch))))


def ldl_factor(A, *, hermitian=False):
    """``ldl_factor_ex`` without ``info``: raises LinAlgError when D has a zero pivot
    (torch.linalg.ldl_factor). Returns ``(LD, pivots)``.

    Example: ``LD, pivots = gd.linalg.ldl_factor(A); X = gd.linalg.ldl_solve(LD, pivots, B)``
    """
    LD, pivots, info = ldl_factor_ex(A, hermitian=hermitian)
    if bool((info._data != 0).any()):
        k = int(backend.to_numpy(info._data)[backend.to_numpy(info._data) > 0][0])
        raise LinAlgError(f"linalg.ldl_factor: the factorization could not be completed "
                          f"because D({k}, {k}) is exactly zero (A is singular)")
    return LdlFactorResult(LD, pivots)


def _sytrs(a, pivots, b):
    """Solve with one factored matrix ``a`` (compact LD) and its pivots: b (n, k) in place."""
    n = a.shape[0]
    k = 0
    while k < n:                                         # L D Y = P B
        p = pivots[k]
        if p > 0:
            b[[k, p - 1]] = b[[p - 1, k]]
            b[k + 1:] -= np.outer(a[k + 1:, k], b[k])
            b[k] /= a[k, k]
            k += 1
        else:
            b[[k + 1, -p - 1]] = b[[-p - 1, k + 1]]
            b[k + 2:] -= np.outer(a[k + 2:, k], b[k]) + np.outer(a[k + 2:, k + 1], b[k + 1])
            akm1k = a[k + 1, k]
            akm1, ak = a[k, k] / akm1k, a[k + 1, k + 1] / akm1k
            denom = akm1 * ak - 1
            bkm1, bk = b[k] / akm1k, b[k + 1] / akm1k
            b[k], b[k + 1] = (ak * bkm1 - bk) / denom, (akm1 * bk - bkm1) / denom
            k += 2
    k = n - 1
    while k >= 0:                                        # L^T P^T X = Y
        p = pivots[k]
        if p > 0:
            b[k] -= a[k + 1:, k] @ b[k + 1:]
            b[[k, p - 1]] = b[[p - 1, k]]
            k -= 1
        else:
            b[k] -= a[k + 1:, k] @ b[k + 1:]
            b[k - 1] -= a[k + 1:, k - 1] @ b[k + 1:]
            b[[k, -p - 1]] = b[[-p - 1, k]]
            k -= 2
    return b


def ldl_solve(LD, pivots, B, *, hermitian=False):
    """X with A X = B from A's ``ldl_factor`` (LD, pivots) (torch.linalg.ldl_solve): B is
    (..., n, k); batch dims broadcast. No gradient.

    Example: ``X = gd.linalg.ldl_solve(*gd.linalg.ldl_factor(A), B)``
    """
    LD, B = matrices("linalg.ldl_solve", False, LD=LD, B=B)
    n = LD.shape[-1]
    if LD.shape[-2] != n:
        raise ValueError(f"linalg.ldl_solve: LD must be batches of square matrices, got "
                         f"{LD.shape[-2]} by {n}")
    if not isinstance(pivots, Tensor) or pivots.dtype.kind not in "iu":
        raise TypeError(f"linalg.ldl_solve: pivots must be an integer Tensor, got "
                        f"{getattr(pivots, 'dtype', type(pivots).__name__)}")
    if tuple(pivots.shape) != tuple(LD.shape[:-1]):
        raise ValueError(f"linalg.ldl_solve: pivots must have shape {tuple(LD.shape[:-1])} "
                         f"(LD's batch and n), got {tuple(pivots.shape)}")
    if B.shape[-2] != n:
        raise RuntimeError(f"Incompatible matrix sizes for torch.linalg.ldl_solve: each A "
                           f"matrix is {n} by {n} but each b matrix is {B.shape[-2]} by "
                           f"{B.shape[-1]}")
    batch = np.broadcast_shapes(LD.shape[:-2], B.shape[:-2])
    count = int(np.prod(batch))                       # not -1: n may be 0
    a = np.broadcast_to(backend.to_numpy(LD._data), batch + (n, n)).reshape(count, n, n)
    p = np.broadcast_to(backend.to_numpy(pivots._data), batch + (n,)).reshape(count, n)
    b = np.broadcast_to(backend.to_numpy(B._data), batch + tuple(B.shape[-2:])).reshape(
        count, *B.shape[-2:]).copy()
    for i in range(b.shape[0]):
        _sytrs(a[i], p[i], b[i])
    out = b.reshape(batch + tuple(B.shape[-2:]))
    device = LD._device
    out = backend.to_device_array(out, device)
    return _NoDerivative.apply(LD, out, "linalg_ldl_solve") if LD.requires_grad or \
        B.requires_grad else Tensor._make(out, False, None, 0, device)
