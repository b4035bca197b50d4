"""torch.linalg's inverses, determinants, solves and decompositions (``gd.linalg.inv``, ``det``,
``solve``, ``cholesky``, ``qr``, ``svd``, ``eigh``, ``lu_factor``, ``pinv``, ``lstsq``,
``matrix_exp``, ...): argument checks and the result's form over the Functions of
gpudl.ops.linalg_decomp. Every function takes batches of matrices (..., m, n)."""

import collections
import contextlib

import numpy as np

from . import backend, dtypes
from .amp.autocast_mode import cast_inputs, state as _autocast
from .ops import linalg_decomp as decomp, lu as lu_ops
from .ops.lapack import LinAlgError
from .tensor import Tensor

SlogdetResult = collections.namedtuple("SlogdetResult", "sign logabsdet")
QRResult = collections.namedtuple("QRResult", "Q R")
SVDResult = collections.namedtuple("SVDResult", "U S Vh")
EighResult = collections.namedtuple("EighResult", "eigenvalues eigenvectors")
InvExResult = collections.namedtuple("InvExResult", "inverse info")
SolveExResult = collections.namedtuple("SolveExResult", "result info")
CholeskyExResult = collections.namedtuple("CholeskyExResult", "L info")
LUFactorResult = collections.namedtuple("LUFactorResult", "LU pivots")
LUFactorExResult = collections.namedtuple("LUFactorExResult", "LU pivots info")
LUResult = collections.namedtuple("LUResult", "P L U")
LstsqResult = collections.namedtuple("LstsqResult", "solution residuals rank singular_values")

__all__ = ["LinAlgError", "inv", "inv_ex", "det", "slogdet", "solve", "solve_ex",
           "solve_triangular", "cholesky", "cholesky_ex", "qr", "svd", "svdvals", "eigh",
           "eigvalsh", "eig", "eigvals", "pinv", "lstsq", "matrix_exp", "lu_factor",
           "lu_factor_ex", "lu", "lu_solve", "householder_product"]


def matrices(op, square=False, autocast_name=None, vectors=(), **arguments):
    """Check that each argument is a float32/float64 Tensor of matrices (..., m, n) (those
    named in ``vectors`` may be 1-D), square when asked; cast by ``autocast_name``'s policy
    first when autocast is on. Returns them."""
    values = tuple(arguments.values())
    if _autocast.active and autocast_name:
        values = cast_inputs(autocast_name, *values)
    for name, a in zip(arguments, values):
        if not isinstance(a, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(a).__name__}")
        if a.dtype not in (dtypes.float32, dtypes.float64):
            raise TypeError(f"{op}: {name} must be float32 or float64 (low precision and integer "
                            f"dtypes are not supported), got {a.dtype}")
        if a.ndim < (1 if name in vectors else 2):
            raise ValueError(f"{op}: {name} must have at least 2 dimensions, got shape "
                             f"{tuple(a.shape)}")
        if square and a.shape[-1] != a.shape[-2]:
            raise ValueError(f"{op}: {name} must be batches of square matrices, but they are "
                             f"{a.shape[-2]} by {a.shape[-1]} matrices")
    if len({a.dtype for a in values}) > 1:
        raise TypeError(f"{op}: expected {' and '.join(arguments)} to have the same dtype, got "
                        f"{', '.join(str(a.dtype) for a in values)}")
    return values[0] if len(values) == 1 else values


def autocast_off(tensor):
    """A region without autocast on ``tensor``'s device, for compositions that cast their
    inputs once (as torch's autocast kernels: the ops inside run as they are)."""
    if not _autocast.active:
        return contextlib.nullcontext()
    from .amp import autocast
    return autocast(tensor._device, enabled=False)


def inv(A):
    """torch.linalg.inv: the inverse of each square matrix; LinAlgError when one is singular."""
    A = matrices("linalg.inv", True, "linalg_inv", A=A)
    return decomp.Inv.apply(A, "linalg.inv", True)


def inv_ex(A, *, check_errors=False):
    """torch.linalg.inv_ex: (inverse, info); info (int32, per matrix) is LAPACK's: 0, or the
    1-based index of the zero pivot of a singular matrix (whose inverse is then NaN)."""
    A = matrices("linalg.inv_ex", True, "linalg_inv_ex", A=A)
    inverse, info = decomp.Inv.apply(A, "linalg.inv_ex", False)
    if check_errors and bool((info != 0).any()):
        decomp.Inv.apply(A, "linalg.inv_ex", True)            # raises torch's LinAlgError
    return InvExResult(inverse, info)


def det(A):
    """torch.linalg.det: the determinant of each square matrix (gradient defined for singular
    matrices too)."""
    return decomp.Det.apply(matrices("linalg.det", True, A=A))


def slogdet(A):
    """torch.linalg.slogdet: (sign, log |det|); the sign is 0 and log |det| is -inf for a
    singular matrix."""
    return SlogdetResult(*decomp.Slogdet.apply(matrices("linalg.slogdet", True, A=A)))


def _solve(op, A, B, left, check_errors):
    A, B = matrices(op, False, "linalg_solve", ("B",), A=A, B=B)
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{op}: A must be batches of square matrices, but they are "
                         f"{A.shape[-2]} by {A.shape[-1]} matrices")
    vector = B.ndim == 1 or (B.ndim == A.ndim - 1 and B.shape == A.shape[:-1])
    rhs = B.unsqueeze(-1) if vector else B
    rhs = rhs if left else rhs.mT
    n = A.shape[-1]
    if rhs.shape[-2] != n:
        raise ValueError(f"{op}: incompatible shapes of A and B for the equation "
                         f"{'AX = B' if left else 'XA = B'} ({A.shape[-2]}x{n} and "
                         f"{tuple(B.shape)})")
    try:
        np.broadcast_shapes(A.shape[:-2], rhs.shape[:-2])
    except ValueError:
        raise ValueError(f"{op}: the batch dims of A {tuple(A.shape[:-2])} and B "
                         f"{tuple(rhs.shape[:-2])} do not broadcast") from None
    out = decomp.Solve.apply(A if left else A.mT, rhs, op, check_errors)
    x, info = (out, None) if check_errors else out
    x = x if left else x.mT
    x = x.squeeze(-1) if vector else x
    return x if check_errors else SolveExResult(x, info)


def solve(A, B, *, left=True):
    """torch.linalg.solve: X with A X = B (X A = B when ``left=False``). B is a batch of
    vectors when it has shape A.shape[:-1] (or is 1-D), else of matrices; batch dims
    broadcast. LinAlgError when A is singular."""
    return _solve("linalg.solve", A, B, left, True)


def solve_ex(A, B, *, left=True, check_errors=False):
    """torch.linalg.solve_ex: (result, info), info as in ``inv_ex``."""
    result = _solve("linalg.solve_ex", A, B, left, False)
    if check_errors and bool((result.info != 0).any()):
        _solve("linalg.solve_ex", A, B, left, True)           # raises torch's LinAlgError
    return result


def solve_triangular(A, B, *, upper, left=True, unitriangular=False):
    """torch.linalg.solve_triangular: X with A X = B (X A = B when ``left=False``), A upper or
    lower triangular (the other triangle is not read; with ``unitriangular`` neither is the
    diagonal, taken as ones). B holds matrices; batch dims broadcast."""
    A, B = matrices("linalg.solve_triangular", False, A=A, B=B)
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(f"linalg.solve_triangular: A must be batches of square matrices, but "
                         f"they are {A.shape[-2]} by {A.shape[-1]} matrices")
    if (B.shape[-2] if left else B.shape[-1]) != A.shape[-1]:
        raise ValueError(f"linalg.solve_triangular: incompatible shapes of A {tuple(A.shape)} "
                         f"and B {tuple(B.shape)} for {'AX = B' if left else 'XA = B'}")
    if left:
        return decomp.SolveTriangular.apply(A, B, bool(upper), bool(unitriangular), True)
    return decomp.SolveTriangular.apply(A.mT, B.mT, not upper, bool(unitriangular),
                                        True).mT


def cholesky(A, *, upper=False):
    """torch.linalg.cholesky: L (lower, A = L L^T) or U = L^T when ``upper``; reads A's lower
    triangle. LinAlgError when a matrix is not positive-definite."""
    A = matrices("linalg.cholesky", True, "linalg_cholesky", A=A)
    return decomp.Cholesky.apply(A, bool(upper), "linalg.cholesky", True)


def cholesky_ex(A, *, upper=False, check_errors=False):
    """torch.linalg.cholesky_ex: (L, info); info is 0 or the order of the leading minor that
    is not positive-definite."""
    A = matrices("linalg.cholesky_ex", True, "linalg_cholesky_ex", A=A)
    result = CholeskyExResult(*decomp.Cholesky.apply(A, bool(upper), "linalg.cholesky_ex",
                                                     False))
    if check_errors and bool((result.info != 0).any()):
        decomp.Cholesky.apply(A, bool(upper), "linalg.cholesky_ex", True)
    return result


def qr(A, mode="reduced"):
    """torch.linalg.qr: (Q, R) with A = Q R; ``mode`` 'reduced' (Q m x k), 'complete' (Q m x m)
    or 'r' (R only, Q empty). Differentiable for 'reduced', and 'complete' when m <= n."""
    if mode not in ("reduced", "complete", "r"):
        raise ValueError(f"linalg.qr: mode must be 'reduced', 'complete' or 'r', got {mode!r}")
    A = matrices("linalg.qr", False, "linalg_qr", A=A)
    if mode == "r":
        r = decomp.QR.apply(A, "r")
        return QRResult(A.new_zeros((0,)), r)
    return QRResult(*decomp.QR.apply(A, mode))


def svd(A, full_matrices=True, *, driver=None):
    """torch.linalg.svd: (U, S, Vh) with A = U diag(S) Vh, S descending. ``driver`` (cuSOLVER's
    choice in torch) is accepted and ignored."""
    A = matrices("linalg.svd", False, "linalg_svd", A=A)
    return SVDResult(*decomp.SVD.apply(A, bool(full_matrices)))


def svdvals(A, *, driver=None):
    """torch.linalg.svdvals: the singular values, descending."""
    return decomp.Svdvals.apply(matrices("linalg.svdvals", False, "linalg_svdvals", A=A))


def _uplo(op, UPLO):
    if UPLO not in ("L", "U"):
        raise ValueError(f"{op}: UPLO must be 'L' or 'U', got {UPLO!r}")
    return UPLO == "U"


def eigh(A, UPLO="L"):
    """torch.linalg.eigh: (eigenvalues ascending, eigenvectors as columns) of symmetric
    matrices, reading the ``UPLO`` triangle."""
    upper = _uplo("linalg.eigh", UPLO)
    A = matrices("linalg.eigh", True, "linalg_eigh", A=A)
    return EighResult(*decomp.Eigh.apply(A, upper))


def eigvalsh(A, UPLO="L"):
    """torch.linalg.eigvalsh: the eigenvalues (ascending) of symmetric matrices."""
    upper = _uplo("linalg.eigvalsh", UPLO)
    return decomp.EigvalsH.apply(matrices("linalg.eigvalsh", True, "linalg_eigvalsh", A=A),
                                 upper)


def eig(A):
    """torch.linalg.eig needs complex tensors, which gpudl does not have: refused."""
    raise NotImplementedError("linalg.eig: eigenvalues of a general matrix are complex and "
                              "gpudl has no complex dtypes; use linalg.eigh for symmetric "
                              "matrices")


def eigvals(A):
    """torch.linalg.eigvals needs complex tensors, which gpudl does not have: refused."""
    raise NotImplementedError("linalg.eigvals: eigenvalues of a general matrix are complex and "
                              "gpudl has no complex dtypes; use linalg.eigvalsh for symmetric "
                              "matrices")


def tolerances(op, A, atol, rtol, rcond=None):
    """torch's (atol, rtol) rule for pinv and matrix_rank: rtol defaults to eps * max(m, n)
    unless atol > 0 is given; ``rcond`` is the old name of rtol. Numbers or Tensors (raw
    arrays returned, broadcast against the batch)."""
    if rcond is not None:
        if rtol is not None:
            raise ValueError(f"{op}: give rtol or rcond, not both")
        rtol = rcond

    if rtol is None:
        eps = float(np.finfo(A.dtype).eps) * max(A.shape[-2:])
        if atol is None:
            rtol = eps
        elif isinstance(atol, Tensor):                      # per matrix of the batch
            rtol = backend.get_array_module(atol._data).where(atol._data > 0, 0.0, eps)
        else:
            rtol = 0.0 if atol > 0 else eps
    raw = [x._data if isinstance(x, Tensor) else x for x in (atol, rtol)]
    return (0.0 if atol is None else raw[0]), raw[1]


def pinv(A, rcond=None, hermitian=False, *, atol=None, rtol=None):
    """torch.linalg.pinv: the Moore-Penrose pseudo-inverse, singular values at or below
    max(atol, rtol * largest) taken as zero (``hermitian``: from eigh, reading the lower
    triangle). ``rcond`` (a number or a Tensor over the batch) is torch's older name of
    rtol."""
    A = matrices("linalg.pinv", hermitian, "pinverse", A=A)
    atol, rtol = tolerances("linalg.pinv", A, atol, rtol, rcond)
    return decomp.Pinv.apply(A, atol, rtol, bool(hermitian))


def lstsq(A, B, rcond=None, *, driver=None):
    """torch.linalg.lstsq: the least-squares solution of A X = B, as torch's CPU default
    driver 'gelsy' returns it (solution, residuals, rank, singular_values empty); with driver
    'gelsd' or 'gelss' singular_values too. residuals (squared, per column) when m > n and
    every A has full rank. The gradient goes through the pseudo-inverse, as torch's."""
    if driver not in (None, "gels", "gelsy", "gelsd", "gelss"):
        raise ValueError(f"linalg.lstsq: driver must be one of gels, gelsy, gelsd, gelss, got "
                         f"{driver!r}")
    A, B = matrices("linalg.lstsq", False, "linalg_lstsq", ("B",), A=A, B=B)
    vector = B.ndim == A.ndim - 1
    rhs = B.unsqueeze(-1) if vector else B
    if rhs.shape[-2] != A.shape[-2]:
        raise ValueError(f"linalg.lstsq: A {tuple(A.shape)} and B {tuple(B.shape)} must have "
                         "the same number of rows")
    m, n = A.shape[-2:]
    rcond = rcond if rcond is not None else float(np.finfo(A.dtype).eps) * max(m, n)
    with autocast_off(A):
        return _lstsq(A, rhs, vector, rcond, driver)


def _lstsq(A, rhs, vector, rcond, driver):
    m, n = A.shape[-2:]
    x = pinv(A, rtol=rcond) @ rhs
    s = svdvals(A.detach())
    rank = (s > rcond * s.amax(-1, keepdim=True)).sum(-1) if min(m, n) else \
        s.sum(-1).long()
    empty = A.new_zeros((0,))
    residuals = empty
    if m > n and driver not in (None, "gelsy") and bool((rank == n).all()):
        residuals = ((A @ x - rhs) ** 2).sum(-2)
        residuals = residuals.squeeze(-1) if vector else residuals
    x = x.squeeze(-1) if vector else x
    if driver == "gels":
        rank = empty.long()
    values = s if driver in ("gelsd", "gelss") else empty
    return LstsqResult(x, residuals, rank, values)


def matrix_exp(A):
    """torch.linalg.matrix_exp: exp(A) of each square matrix (Padé 13, scaling and
    squaring). On the cuda device it reads the largest number of squarings (a counted sync,
    as torch's), and its backward again."""
    return decomp.MatrixExp.apply(matrices("linalg.matrix_exp", True, A=A))


def lu_factor_ex(A, *, pivot=True, check_errors=False):
    """torch.linalg.lu_factor_ex: (LU, pivots, info); info is 0, or the 1-based index of the
    first zero on U's diagonal (a singular matrix is factored all the same)."""
    if not pivot:
        raise NotImplementedError("linalg.lu_factor: pivot=False is only available on CUDA "
                                  "in torch and not at all in gpudl")
    A = matrices("linalg.lu_factor", False, A=A)
    lu, pivots = lu_ops.LUFactor.apply(A)
    diagonal = lu.detach().numpy().diagonal(0, -2, -1)       # U's diagonal, on the host
    zero = np.concatenate([diagonal == 0, np.ones(diagonal.shape[:-1] + (1,), bool)], -1)
    first = zero.argmax(-1)         # the sentinel column: argmax is defined on an empty diagonal
    info = Tensor._make(np.where(first < diagonal.shape[-1], first + 1, 0).astype(np.int32), False,
                        None, 0, "cpu").to(A.device)
    if check_errors and bool((info != 0).any()):
        raise LinAlgError(f"linalg.lu_factor_ex: U has a zero on its diagonal (info "
                          f"{info.tolist()}): the input is singular")
    return LUFactorExResult(lu, pivots, info)


def lu_factor(A, *, pivot=True):
    """torch.linalg.lu_factor: (LU, pivots), P A = L U packed as LAPACK's getrf (pivots
    1-based, int32); a singular matrix is factored all the same, as torch's."""
    lu, pivots, _ = lu_factor_ex(A, pivot=pivot)
    return LUFactorResult(lu, pivots)


def lu(A, *, pivot=True):
    """torch.linalg.lu: (P, L, U) with A = P L U, L unit lower (m x k), U upper (k x n)."""
    from .linalg_lu import lu_unpack
    lu_data, pivots = lu_factor(A, pivot=pivot)
    return LUResult(*lu_unpack(lu_data, pivots))


def lu_solve(LU, pivots, B, *, left=True, adjoint=False):
    """torch.linalg.lu_solve: X with A X = B from A's ``lu_factor`` (X A = B when
    ``left=False``; A^T in place of A with ``adjoint``)."""
    from .linalg_lu import lu_solve as solve_with_lu
    return solve_with_lu(LU, pivots, B, left=left, adjoint=adjoint)


def householder_product(A, tau):
    """torch.linalg.householder_product: the first n columns of H_1 ... H_k, H_i = I - tau_i
    v_i v_i^T with v_i = (0, ..., 0, 1, A[i+1:, i]), from geqrf's packed reflectors."""
    A, tau = matrices("linalg.householder_product", False, "linalg_householder_product",
                      ("tau",), A=A, tau=tau)
    m, n = A.shape[-2:]
    if n > m or not isinstance(tau, Tensor) or tau.shape[-1] > n or \
            tuple(tau.shape[:-1]) != tuple(A.shape[:-2]):
        raise ValueError(f"linalg.householder_product: expected A (..., m, n) with m >= n and "
                         f"tau (..., k) with k <= n, got A {tuple(A.shape)} and tau "
                         f"{tuple(getattr(tau, 'shape', ()))}")
    with autocast_off(A):
        return _householder_product(A, tau)


def _householder_product(A, tau):
    from .creation import eye
    m, n = A.shape[-2:]
    identity = eye(m, dtype=A.dtype, device=A.device)
    below = A.tril(-1)
    q = identity[:, :n] + 0 * A          # tied to A: a gradient (of zeros) even when tau is empty
    for i in reversed(range(tau.shape[-1])):           # H_i (H_{i+1} ... H_k) applied to I
        v = below[..., :, i] + identity[:, i]                           # (..., m)
        q = q - tau[..., i, None, None] * v[..., :, None] * (v[..., None, :] @ q)
    return q
