"""Differentiable matrix functions (Functions on raw arrays, batched over leading dims):
inverse, determinants, solves, Cholesky, QR, SVD, symmetric eigendecomposition,
pseudo-inverse and the matrix exponential (LU: gpudl.ops.lu). Forward calls gpudl.ops.lapack;
backward follows torch's formulas (torch/csrc/autograd/FunctionsManual.cpp) for real matrices.
``g*`` names are gradients of the output of the same name; ``mT`` is the matrix transpose.
"""

import numpy as np

from .. import backend
from ..autograd import ArrayFunction
from . import lapack
from ._util import quiet, sum_to, xp_of
from .lapack import mT


def _eye_like(a, n=None):
    xp = xp_of(a)
    n = a.shape[-1] if n is None else n
    return xp.broadcast_to(xp.eye(n, dtype=a.dtype), a.shape[:-2] + (n, n))


def _tri(x, upper, strict=False):
    xp = xp_of(x)
    if upper:
        return xp.triu(x, 1 if strict else 0)
    return xp.tril(x, -1 if strict else 0)


def _solve_for_grad(a, b):
    """solve(A, B) for a gradient: a singular A gives inf/nan, as torch's, not an error."""
    return lapack.solve(a, b, check_errors=False)[0]


def _with_info(ctx, out, info, batch, check_errors):
    """``out``, or (out, info) for the ``*_ex`` calls (info: int32 zeros when all succeeded)."""
    if check_errors:
        return out
    xp = xp_of(out)
    info = xp.zeros(batch, np.int32) if info is None else xp.asarray(info, np.int32)
    ctx.mark_non_differentiable(info)
    return out, info


class Inv(ArrayFunction):
    @staticmethod
    def forward(ctx, a, op, check_errors):
        y, info = lapack.inv(a, op, check_errors)
        ctx.save_for_backward(y)
        return _with_info(ctx, y, info, a.shape[:-2], check_errors)

    @staticmethod
    def backward(ctx, g, g_info=None):
        (y,) = ctx.saved_tensors
        return -(mT(y) @ g @ mT(y)), None, None


class Det(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        d = lapack.det(a)
        ctx.save_for_backward(a, d)
        return d

    @staticmethod
    def backward(ctx, g):
        a, d = ctx.saved_tensors
        if a.shape[-1] == 0:
            return xp_of(a).zeros_like(a)
        if near_singular(a, d):                # the cofactors from the SVD, right for any matrix
            return g[..., None, None] * _cofactors(a)
        # d det / dA = det(A) A^-T, through a solve: every matrix is far from singular here
        return lapack.solve(mT(a), (g * d)[..., None, None] * _eye_like(a))[0]


def near_singular(a, d):
    """Whether some matrix of ``a`` (determinants ``d``) is singular to working precision:
    |det| within a few rounding errors of Hadamard's bound (the product of its column norms).
    An LU's determinant of a singular matrix is rounding noise, not 0 (cuSOLVER's was 1e-17 on
    the first GPU run, and A^-T from it garbage)."""
    xp = xp_of(d)
    bound = xp.prod(xp.sqrt((a * a).sum(axis=-2)), axis=-1)
    eps = np.finfo(a.dtype).eps * a.shape[-1]
    return bool(backend.host_value(xp.any(xp.abs(d) <= 16 * eps * bound),
                                   "det backward (a singularity check)"))


def _cofactors(a):
    """The cofactor matrix det(A) A^-T of each matrix, singular ones included, from the SVD:
    det(U) det(Vh) U diag(prod of the other singular values) Vh."""
    xp = xp_of(a)
    u, s, vh = lapack.svd(a, full_matrices=False)
    ones = xp.ones(s.shape[:-1] + (1,), s.dtype)
    before = xp.cumprod(xp.concatenate([ones, s[..., :-1]], -1), -1)
    after = xp.flip(xp.cumprod(xp.concatenate([ones, xp.flip(s[..., 1:], -1)], -1), -1), -1)
    sign = lapack.det(u) * lapack.det(vh)
    return sign[..., None, None] * (u * (before * after)[..., None, :]) @ vh


class Slogdet(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        sign, logabs = lapack.slogdet(a)
        ctx.save_for_backward(a)
        ctx.mark_non_differentiable(sign)
        return sign, logabs

    @staticmethod
    def backward(ctx, g_sign, g_logabs):
        (a,) = ctx.saved_tensors
        return _solve_for_grad(mT(a), g_logabs[..., None, None] * _eye_like(a))


class Solve(ArrayFunction):
    """X with A X = B; B holds matrices (the vector case is unsqueezed by the caller)."""

    @staticmethod
    def forward(ctx, a, b, op, check_errors):
        x, info = lapack.solve(a, b, op, check_errors)
        ctx.save_for_backward(a, x)
        ctx.shapes = (a.shape, b.shape)
        return _with_info(ctx, x, info, a.shape[:-2], check_errors)

    @staticmethod
    def backward(ctx, g, g_info=None):
        a, x = ctx.saved_tensors
        a_shape, b_shape = ctx.shapes
        gb = _solve_for_grad(mT(a), g)
        ga = sum_to(-(gb @ mT(x)), a_shape) if ctx.needs_input_grad[0] else None
        return ga, sum_to(gb, b_shape), None, None


class SolveTriangular(ArrayFunction):
    """X with A X = B, A triangular. A's gradient is kept to its triangle (``structured``, as
    torch.linalg.solve_triangular's), or is that of the full matrix (torch's cholesky_solve
    differentiates its factor so)."""

    @staticmethod
    def forward(ctx, a, b, upper, unitriangular, structured=True):
        x = lapack.solve_triangular(a, b, upper, unitriangular)
        ctx.save_for_backward(a, x)
        ctx.conf = (upper, unitriangular, structured, a.shape, b.shape)
        return x

    @staticmethod
    def backward(ctx, g):
        a, x = ctx.saved_tensors
        upper, unitriangular, structured, a_shape, b_shape = ctx.conf
        gb = lapack.solve_triangular(mT(a), g, not upper, unitriangular)
        ga = None
        if ctx.needs_input_grad[0]:
            ga = -(gb @ mT(x))
            ga = sum_to(_tri(ga, upper, strict=unitriangular) if structured else ga, a_shape)
        return ga, sum_to(gb, b_shape), None, None, None


class Cholesky(ArrayFunction):
    @staticmethod
    def forward(ctx, a, upper, op, check_errors):
        low, info = lapack.cholesky(a, op, check_errors)
        ctx.save_for_backward(low)
        ctx.upper = upper
        out = mT(low).copy() if upper else low
        return _with_info(ctx, out, info, a.shape[:-2], check_errors)

    @staticmethod
    def backward(ctx, g, g_info=None):
        (low,) = ctx.saved_tensors
        gl = mT(g) if ctx.upper else g
        xp = xp_of(low)
        phi = xp.tril(mT(low) @ gl)             # tril(L^T gL) with its diagonal halved
        phi = phi - 0.5 * xp.eye(low.shape[-1], dtype=low.dtype) * phi
        s = lapack.solve_triangular(mT(low), phi, upper=True)           # L^-T phi
        ga = mT(lapack.solve_triangular(mT(low), mT(s), upper=True))    # L^-T phi L^-1
        return 0.5 * (ga + mT(ga)), None, None, None


class QR(ArrayFunction):
    @staticmethod
    def forward(ctx, a, mode):
        if mode == "r":
            r = lapack.qr(a, "r")
            ctx.mode = mode
            return r
        q, r = lapack.qr(a, mode)
        ctx.save_for_backward(a, q, r)
        ctx.mode = mode
        return q, r

    @staticmethod
    def backward(ctx, gq, gr=None):
        if ctx.mode == "r":
            raise RuntimeError("The derivative of linalg.qr depends on Q, which is not computed "
                               "when mode='r'. Please use linalg.qr(A, mode='reduced') if you are "
                               "going to differentiate through linalg.qr.")
        m, n = ctx.saved_tensors[0].shape[-2:]
        if ctx.mode == "complete" and m > n:
            raise RuntimeError("The QR decomposition is not differentiable when mode='complete' "
                               "and nrows > ncols.")
        a, q, r = ctx.saved_tensors
        xp = xp_of(a)
        gq = xp.zeros_like(q) if gq is None else gq
        gr = xp.zeros_like(r) if gr is None else gr
        if m >= n:
            return _qr_tall_backward(q, r, gq, gr), None
        # A = [X | Y] with X square: X = Q U, Y = Q V where R = [U | V]
        y, gv = a[..., m:], gr[..., m:]
        gx = _qr_tall_backward(q, r[..., :m], gq + y @ mT(gv), gr[..., :m])
        return xp.concatenate([gx, q @ gv], -1), None


def _qr_tall_backward(q, r, gq, gr):
    """gA = [gQ + Q copyltu(M)] R^-T, M = gR R^T - Q^T gQ, for A = Q R with m >= n."""
    xp = xp_of(q)
    m = xp.triu(gr @ mT(r) - mT(q) @ gq)
    m = m + mT(m) - m * xp.eye(m.shape[-1], dtype=m.dtype)      # the diagonal once
    b = gq + q @ m
    return mT(lapack.solve_triangular(r, mT(b), upper=True))


class SVD(ArrayFunction):
    """U, S, Vh (reduced unless full_matrices); the gradient through U and Vh needs distinct
    singular values, and ignores the extra columns of U / rows of Vh that full_matrices adds
    (they are any orthonormal completion), as torch's."""

    @staticmethod
    def forward(ctx, a, full_matrices):
        u, s, vh = lapack.svd(a, full_matrices)
        ctx.save_for_backward(u, s, vh)
        ctx.set_materialize_grads(False)
        return u, s, vh

    @staticmethod
    def backward(ctx, gu, gs, gvh):
        u, s, vh = ctx.saved_tensors
        return svd_backward(u, s, vh, gu, gs, gvh), None


def svd_backward(u, s, vh, gu, gs, gvh):
    xp = xp_of(s)
    k = s.shape[-1]
    u, vh = u[..., :k], vh[..., :k, :]
    if gu is None and gvh is None:
        return (u * gs[..., None, :]) @ vh if gs is not None else xp.zeros(
            u.shape[:-1] + vh.shape[-1:], s.dtype)
    gu = xp.zeros_like(u) if gu is None else gu[..., :k]
    gv = xp.zeros_like(mT(vh)) if gvh is None else mT(gvh[..., :k, :])
    v = mT(vh)
    utgu, vtgv = mT(u) @ gu, mT(v) @ gv
    s2 = s * s
    e = s2[..., None, :] - s2[..., :, None]                  # e[i, j] = s_j^2 - s_i^2
    e = e + xp.eye(k, dtype=s.dtype)
    core = ((utgu - mT(utgu)) / e) * s[..., None, :] + s[..., :, None] * ((vtgv - mT(vtgv)) / e)
    if gs is not None:
        core = core + gs[..., None, :] * xp.eye(k, dtype=s.dtype)
    ga = u @ core @ vh
    with quiet(xp):
        inv_s = 1 / s
    if u.shape[-2] > k:
        ga = ga + ((gu - u @ utgu) * inv_s[..., None, :]) @ vh
    if v.shape[-2] > k:
        ga = ga + (u * inv_s[..., None, :]) @ mT(gv - v @ vtgv)
    return ga


class Eigh(ArrayFunction):
    @staticmethod
    def forward(ctx, a, upper):
        w, v = lapack.eigh(a, upper)
        ctx.save_for_backward(w, v)
        ctx.set_materialize_grads(False)
        return w, v

    @staticmethod
    def backward(ctx, gw, gv):
        w, v = ctx.saved_tensors
        xp = xp_of(w)
        n = w.shape[-1]
        inner = xp.zeros(v.shape, v.dtype)
        if gv is not None:
            e = w[..., None, :] - w[..., :, None] + xp.eye(n, dtype=w.dtype)  # w_j - w_i
            vtgv = mT(v) @ gv
            inner = (vtgv - mT(vtgv)) / 2 / e * (1 - xp.eye(n, dtype=w.dtype))
        if gw is not None:
            inner = inner + gw[..., None, :] * xp.eye(n, dtype=w.dtype)
        return v @ inner @ mT(v), None


class EigvalsH(ArrayFunction):
    @staticmethod
    def forward(ctx, a, upper):
        w, v = lapack.eigh(a, upper)
        ctx.save_for_backward(v, w)         # w and upper: for create_graph's graph backward
        ctx.upper = upper
        return w

    @staticmethod
    def backward(ctx, gw):
        v, _ = ctx.saved_tensors
        return (v * gw[..., None, :]) @ mT(v), None


class Svdvals(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        u, s, vh = lapack.svd(a, full_matrices=False)
        ctx.save_for_backward(u, vh, s)     # s: for create_graph's graph backward
        return s

    @staticmethod
    def backward(ctx, gs):
        u, vh, _ = ctx.saved_tensors
        return (u * gs[..., None, :]) @ vh


class Pinv(ArrayFunction):
    """The pseudo-inverse from the SVD (eigh when hermitian) with singular values at or below
    ``max(atol, rtol * largest)`` dropped; torch's pinv_backward."""

    @staticmethod
    def forward(ctx, a, atol, rtol, hermitian):
        xp = xp_of(a)
        if hermitian:
            w, v = lapack.eigh(a)
            s, u, vh = abs(w), v, mT(v * xp.where(w < 0, -1, 1).astype(w.dtype)[..., None, :])
        else:
            u, s, vh = lapack.svd(a, full_matrices=False)
        largest = s.max(-1, keepdims=True) if s.shape[-1] else xp.zeros(s.shape[:-1] + (1,))
        cutoff = xp.maximum(xp.asarray(atol, s.dtype)[..., None],
                            xp.asarray(rtol, s.dtype)[..., None] * largest)
        with quiet(xp):
            inv_s = xp.where(s > cutoff, 1 / s, 0).astype(a.dtype)
        p = mT(vh * inv_s[..., :, None]) @ mT(u)   # written as V diag(1/s) U^T
        ctx.save_for_backward(a, p)
        return p

    @staticmethod
    def backward(ctx, g):
        a, p = ctx.saved_tensors
        m, n = a.shape[-2:]
        pt, gt = mT(p), mT(g)
        if m <= n:
            k = gt @ p
            kpt = k @ pt
            ga = -mT(p @ k) + kpt - (a @ p) @ kpt + (pt @ p) @ (gt - k @ a)
        else:
            k = p @ gt
            ptk = pt @ k
            ga = -mT(k @ p) + (gt - a @ k) @ p @ pt + ptk - ptk @ p @ a
        return ga, None, None, None


class MatrixExp(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return lapack.expm(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        xp = xp_of(a)
        n = a.shape[-1]
        # the upper right block of exp([[A^T, G], [0, A^T]]) is the gradient (Mathias 1996)
        block = xp.zeros(a.shape[:-2] + (2 * n, 2 * n), a.dtype)
        block[..., :n, :n] = mT(a)
        block[..., n:, n:] = mT(a)
        block[..., :n, n:] = g
        return lapack.expm(block)[..., :n, n:]
