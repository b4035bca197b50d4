"""Graph backwards (create_graph=True, see gpudl.higher_order) of the matrix functions
(gpudl.ops.linalg_decomp, gpudl.ops.lu): torch's derivative formulas written with the
differentiable linalg Functions themselves (an inverse's gradient through ``Solve``, a
Cholesky factor's through ``SolveTriangular``, the matrix exponential's through
``MatrixExp``), so every order can be taken.

Where forward kept a factorization rather than the input (eigvalsh, svdvals), the input is
rebuilt from it (V diag(w) V^T, U diag(s) Vh: the same matrix up to rounding) and the
decomposition recorded again from that stand-in, through which the second derivative reaches
the input.
"""

from .. import backend, functions
from ..higher_order import graph_backward
from . import linalg_decomp as LD
from . import lapack
from . import lu as LU
from ._util import xp_of
from .graph_backward import constant, sum_to


def _eye(t, n=None):
    """The identity of ``t``'s last dimension (or ``n``), a constant of its dtype."""
    n = t.shape[-1] if n is None else n
    return constant(xp_of(t._data).eye(n, dtype=t.dtype))


def _solve(a, b):
    """solve(A, B), recorded; a singular A gives inf/nan as the plain backward's."""
    return LD.Solve.apply(a, b, "linalg.solve", False)[0]


def _solve_triangular(a, b, upper, unitriangular=False):
    return LD.SolveTriangular.apply(a, b, upper, unitriangular, True)


def _reached(g):
    """Whether ``g`` is a gradient that reached the output (not the walk's zeros for one none
    reached): SVD's formula divides by singular-value gaps only when U or Vh's gradient does."""
    return g.requires_grad or bool(backend.host_value(g._data.any(),
                                                      "svd create_graph (a zero check)"))


@graph_backward(LD.Det)
def _det(saved, g):
    a, d = saved.ctx.saved_tensors
    a_t = saved.input(0, a)
    if a.shape[-1] == 0:
        return a_t * 0
    if LD.near_singular(a, d):              # the cofactors from the SVD, right for any matrix
        return g.unsqueeze(-1).unsqueeze(-1) * _cofactors(a_t)
    scale = (g * saved.output(0, d)).unsqueeze(-1).unsqueeze(-1)
    return _solve(a_t.mT, scale * _eye(a_t))          # g det(A) A^-T


def _cofactors(a):
    """det(A) A^-T of each matrix, singular ones included: det(U) det(Vh) U diag(product of
    the other singular values) Vh, recorded (its derivative needs distinct singular values, as
    torch's)."""
    u, s, vh = LD.SVD.apply(a, False)
    sign = constant(lapack.det(u._data) * lapack.det(vh._data))
    n = s.shape[-1]
    before, after = [s[..., :1] * 0 + 1], [s[..., :1] * 0 + 1]
    for i in range(1, n):         # running products (prod() refuses zeros under create_graph)
        before.append(before[-1] * s[..., i - 1:i])
        after.append(after[-1] * s[..., n - i:n - i + 1])
    others = functions.cat(before, -1) * functions.cat(after[::-1], -1)
    return sign.unsqueeze(-1).unsqueeze(-1) * (u * others.unsqueeze(-2)) @ vh


@graph_backward(LD.Slogdet)
def _slogdet(saved, g_sign, g_logabs):
    (a,) = saved.ctx.saved_tensors
    a_t = saved.input(0, a)
    return _solve(a_t.mT, g_logabs.unsqueeze(-1).unsqueeze(-1) * _eye(a_t))


@graph_backward(LD.Inv)
def _inv(saved, g, g_info=None):
    (y,) = saved.ctx.saved_tensors
    y_t = saved.output(0, y).mT
    return -(y_t @ g @ y_t), None, None


@graph_backward(LD.Solve)
def _solve_graph(saved, g, g_info=None):
    a, x = saved.ctx.saved_tensors
    a_shape, b_shape = saved.ctx.shapes
    gb = _solve(saved.input(0, a).mT, g)
    ga = sum_to(-(gb @ saved.output(0, x).mT), a_shape) if saved.needs_input_grad[0] else None
    return ga, sum_to(gb, b_shape), None, None


@graph_backward(LD.SolveTriangular)
def _solve_triangular_graph(saved, g):
    a, x = saved.ctx.saved_tensors
    upper, unitriangular, structured, a_shape, b_shape = saved.ctx.conf
    gb = _solve_triangular(saved.input(0, a).mT, g, not upper, unitriangular)
    ga = None
    if saved.needs_input_grad[0]:
        ga = -(gb @ saved.output(0, x).mT)
        if structured:
            diagonal = (1 if upper else -1) if unitriangular else 0
            ga = ga.triu(diagonal) if upper else ga.tril(diagonal)
        ga = sum_to(ga, a_shape)
    return ga, sum_to(gb, b_shape), None, None, None


@graph_backward(LD.Cholesky)
def _cholesky(saved, g, g_info=None):
    (low,) = saved.ctx.saved_tensors
    upper = saved.ctx.upper
    low_t = saved.output(0, low.swapaxes(-1, -2) if upper else low)
    low_t, gl = (low_t.mT, g.mT) if upper else (low_t, g)
    phi = (low_t.mT @ gl).tril()
    phi = phi - 0.5 * _eye(low_t) * phi                  # the diagonal halved
    s = _solve_triangular(low_t.mT, phi, upper=True)
    ga = _solve_triangular(low_t.mT, s.mT, upper=True).mT     # L^-T phi L^-1
    return 0.5 * (ga + ga.mT), None, None, None


def _qr_limits(ctx):
    if ctx.mode == "r" or (ctx.mode == "complete"
                           and ctx.saved_tensors[0].shape[-2] > ctx.saved_tensors[0].shape[-1]):
        return "qr with mode='r', or mode='complete' with more rows than columns"
    return None


@graph_backward(LD.QR, unsupported=_qr_limits)
def _qr(saved, gq, gr):
    a, q, r = saved.ctx.saved_tensors
    m, n = a.shape[-2:]
    q_t, r_t = saved.output(0, q), saved.output(1, r)
    if m >= n:
        return _qr_tall(q_t, r_t, gq, gr), None
    # A = [X | Y] with X square: X = Q U, Y = Q V where R = [U | V]
    y, gv = saved.input(0, a)[..., m:], gr[..., m:]
    gx = _qr_tall(q_t, r_t[..., :m], gq + y @ gv.mT, gr[..., :m])
    return functions.cat([gx, q_t @ gv], -1), None


def _qr_tall(q, r, gq, gr):
    """gA = [gQ + Q copyltu(M)] R^-T, M = gR R^T - Q^T gQ, for A = Q R with m >= n."""
    m = (gr @ r.mT - q.mT @ gq).triu()
    m = m + m.mT - m * _eye(m)
    return _solve_triangular(r, (gq + q @ m).mT, upper=True).mT


@graph_backward(LD.SVD)
def _svd(saved, gu, gs, gvh):
    u, s, vh = saved.ctx.saved_tensors
    u, s, vh = saved.output(0, u), saved.output(1, s), saved.output(2, vh)
    return _svd_backward(u, s, vh, gu if _reached(gu) else None, gs,
                         gvh if _reached(gvh) else None), None


def _svd_backward(u, s, vh, gu, gs, gvh):
    """torch's svd_backward on Tensors (real; gu / gvh None when no gradient reached them)."""
    k = s.shape[-1]
    u, vh = u[..., :k], vh[..., :k, :]
    if gu is None and gvh is None:
        return (u * gs.unsqueeze(-2)) @ vh
    eye = _eye(s)
    gu = u * 0 if gu is None else gu[..., :k]
    gv = vh.mT * 0 if gvh is None else gvh[..., :k, :].mT
    v = vh.mT
    utgu, vtgv = u.mT @ gu, v.mT @ gv
    s2 = s * s
    e = s2.unsqueeze(-2) - s2.unsqueeze(-1) + eye           # e[i, j] = s_j^2 - s_i^2
    core = ((utgu - utgu.mT) / e) * s.unsqueeze(-2) + s.unsqueeze(-1) * ((vtgv - vtgv.mT) / e)
    core = core + gs.unsqueeze(-2) * eye
    ga = u @ core @ vh
    if u.shape[-2] > k:
        ga = ga + ((gu - u @ utgu) / s.unsqueeze(-2)) @ vh
    if v.shape[-2] > k:
        ga = ga + (u / s.unsqueeze(-2)) @ (gv - v @ vtgv).mT
    return ga


@graph_backward(LD.Svdvals)
def _svdvals(saved, gs):
    u, vh, s = saved.ctx.saved_tensors
    u_t, _, vh_t = LD.SVD.apply(saved.input(0, (u * s[..., None, :]) @ vh), False)
    return (u_t * gs.unsqueeze(-2)) @ vh_t


@graph_backward(LD.Eigh)
def _eigh(saved, gw, gv):
    w, v = saved.ctx.saved_tensors
    return _eigh_backward(saved.output(0, w), saved.output(1, v), gw,
                          gv if _reached(gv) else None), None


def _eigh_backward(w, v, gw, gv):
    """A's gradient from eigenvalues ``w`` and eigenvectors ``v`` (gv None: none reached)."""
    eye = _eye(w)
    inner = gw.unsqueeze(-2) * eye
    if gv is not None:
        e = w.unsqueeze(-2) - w.unsqueeze(-1) + eye           # w_j - w_i
        vtgv = v.mT @ gv
        inner = inner + (vtgv - vtgv.mT) / 2 / e * (1 - eye)
    return v @ inner @ v.mT


@graph_backward(LD.EigvalsH)
def _eigvalsh(saved, gw):
    v, w = saved.ctx.saved_tensors
    w_t, v_t = LD.Eigh.apply(saved.input(0, (v * w[..., None, :]) @ v.swapaxes(-1, -2)),
                             saved.ctx.upper)
    return (v_t * gw.unsqueeze(-2)) @ v_t.mT, None


@graph_backward(LD.Pinv)
def _pinv(saved, g):
    a, p = saved.ctx.saved_tensors
    m, n = a.shape[-2:]
    a, p = saved.input(0, a), saved.output(0, p)
    pt, gt = p.mT, g.mT
    if m <= n:
        k = gt @ p
        kpt = k @ pt
        ga = -(p @ k).mT + kpt - (a @ p) @ kpt + (pt @ p) @ (gt - k @ a)
    else:
        k = p @ gt
        ptk = pt @ k
        ga = -(k @ p).mT + (gt - a @ k) @ p @ pt + ptk - ptk @ p @ a
    return ga, None, None, None


@graph_backward(LD.MatrixExp)
def _matrix_exp(saved, g):
    (a,) = saved.ctx.saved_tensors
    a_t = saved.input(0, a).mT
    n = a.shape[-1]
    # the upper right block of exp([[A^T, G], [0, A^T]]) (Mathias 1996), recorded
    zeros = a_t * 0
    block = functions.cat([functions.cat([a_t, g], -1), functions.cat([zeros, a_t], -1)], -2)
    return LD.MatrixExp.apply(block)[..., :n, n:]


@graph_backward(LU.LUFactor)
def _lu_factor(saved, glu, gpivots=None):
    lu, pivots = saved.ctx.saved_tensors
    m, n = lu.shape[-2:]
    k = min(m, n)
    lu_t = saved.output(0, lu)
    low = lu_t[..., :, :k].tril(-1) + constant(xp_of(lu).eye(m, k, dtype=lu.dtype))   # (m, k)
    up = lu_t[..., :k, :].triu()                                                  # (k, n)
    gl, gu = glu[..., :, :k].tril(-1), glu[..., :k, :].triu()
    if m == n:      # gA = P L^-T [tril(L^T gL, -1) + triu(gU U^T)] U^-T
        x = (low.mT @ gl).tril(-1) + (gu @ up.mT).triu()
        x = _solve_triangular(low.mT, x, upper=True, unitriangular=True)
        x = _solve_triangular(up, x.mT, upper=True).mT
    elif m < n:     # wide: U = [U1 | U2], U1 square
        x = (low.mT @ gl - gu @ up.mT).tril(-1)
        x = _solve_triangular(up[..., :k], x.mT, upper=True).mT
        x = functions.cat([x + gu[..., :k], gu[..., k:]], -1)
        x = _solve_triangular(low.mT, x, upper=True, unitriangular=True)
    else:           # tall: L = [L1; L2], L1 square
        x = (gu @ up.mT - low.mT @ gl).triu()
        x = _solve_triangular(low[..., :k, :].mT, x, upper=True, unitriangular=True)
        x = functions.cat([x + gl[..., :k, :], gl[..., k:, :]], -2)
        x = _solve_triangular(up, x.mT, upper=True).mT
    return _rows_permuted_back(x, pivots)


def _rows_permuted_back(x, pivots):
    """P^T x for the LU pivots (lu.permute_rows(..., inverse=True) on a Tensor), recorded."""
    xp = xp_of(pivots)
    perm = xp.argsort(LU.permutation_of(pivots, x.shape[-2]), -1)
    index = xp.broadcast_to(perm[..., None], x.shape)
    return x.gather(-2, constant(xp.ascontiguousarray(index)))
