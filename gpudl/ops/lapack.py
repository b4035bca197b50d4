"""The LAPACK calls behind gpudl.linalg, on raw arrays batched over leading dims: numpy.linalg
on the CPU (the triangular solve and the LU factorization, which it lacks, written here over the
whole batch at once: SciPy is not a dependency), cupy.linalg and cupyx.scipy.linalg on CUDA. No
autograd here.

A failed factorization (singular input to inv/solve, a matrix that is not positive-definite to
cholesky) is reported per matrix as LAPACK's ``info`` (torch's ``*_ex`` return it); the plain
calls raise ``LinAlgError`` with torch's wording. Only the failure path works out ``info``, on the
host, so a call that succeeds pays for one factorization.
"""

import contextlib

import numpy as np

from .. import backend


class LinAlgError(RuntimeError):
    """torch.linalg.LinAlgError: a matrix is singular or not positive-definite (a RuntimeError,
    as torch's)."""


def mT(a):
    return a.swapaxes(-1, -2)


def _raising(a, op):
    """CuPy reports a failed factorization only inside ``cupyx.errstate(linalg='raise')`` (by
    default it returns garbage), where it reads the factorization's info back from the device:
    a sync, counted as ``op``'s (the simulator's arrays count too, as on a GPU); NumPy always
    raises."""
    backend.count_read(a, f"{op} (the factorization's error check)")
    if backend.is_device_array(a):
        import cupyx
        return cupyx.errstate(linalg="raise")
    return contextlib.nullcontext()


def _per_matrix(function, a, *others):
    """``function`` on each matrix of the batch, stacked: for the CuPy calls that take one
    matrix only (cupyx.scipy.linalg's solve_triangular and lu_factor, cupy.linalg.qr before
    v13). ``others`` share ``a``'s batch dims."""
    xp = backend.get_array_module(a)
    batch = a.shape[:-2]
    if not batch:
        return function(a, *others)
    count = int(np.prod(batch))     # not -1: CuPy cannot infer it for empty matrices
    flat = [x.reshape((count,) + x.shape[len(batch):]) for x in (a,) + others]
    outs = [function(*mats) for mats in zip(*flat)]
    if isinstance(outs[0], tuple):
        return tuple(xp.stack(parts).reshape(batch + parts[0].shape) for parts in zip(*outs))
    return xp.stack(outs).reshape(batch + outs[0].shape)


def _xp(a):
    return backend.get_array_module(a)


def _host(a):
    return backend.to_numpy(a, "linalg error check")


def lu_info(a):
    """getrf's info per matrix (batch shape, int32): 0, or the 1-based index of the first zero
    pivot of the LU factorization."""
    lu = lu_factor(_host(a))[0]
    zero = np.diagonal(lu, axis1=-2, axis2=-1) == 0
    return np.where(zero.any(-1), zero.argmax(-1) + 1, 0).astype(np.int32)


def cholesky_info(a):
    """potrf's info per matrix: 0, or the order of the first leading minor that is not
    positive-definite (the smallest k whose leading k x k block fails, by bisection)."""
    a = _host(a)
    info = np.zeros(a.shape[:-2], np.int32)
    for index in np.ndindex(a.shape[:-2]):
        low, high = 0, a.shape[-1]          # the block of order low succeeds, high may fail
        if _cholesky_ok(a[index]):
            continue
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if _cholesky_ok(a[index][:mid, :mid]) else (low, mid)
        info[index] = high
    return info


def _cholesky_ok(m):
    try:
        np.linalg.cholesky(m)
        return True
    except np.linalg.LinAlgError:
        return False


def _failure(op, info, describe):
    """The LinAlgError torch raises for the first failed matrix of a batch."""
    index = np.argwhere(info != 0)[0] if info.ndim else ()
    where = f"(Batch element {int(np.ravel_multi_index(index, info.shape))}): " \
        if info.ndim else ""
    return LinAlgError(f"{op}: {where}{describe(int(info[tuple(index)]))}")


def singular(op, info):
    return _failure(op, info, lambda k: f"The diagonal element {k} is zero, the inversion could "
                                        "not be completed because the input matrix is singular.")


def solver_failed(op, info):
    return _failure(op, info, lambda k: "The solver failed because the input matrix is "
                                        "singular.")


def not_positive_definite(op, info):
    return _failure(op, info, lambda k: "The factorization could not be completed because the "
                                        f"input is not positive-definite (the leading minor of "
                                        f"order {k} is not positive-definite).")


def _checked(call, a, info_of, error, op, check_errors):
    """(call(a), None) when LAPACK succeeds on every matrix. When one fails: raise ``error``
    (check_errors), else (results with NaNs for the failed matrices, the per-matrix info)."""
    xp = _xp(a)
    try:
        with _raising(a, op):
            return call(a), None
    except np.linalg.LinAlgError:
        info = info_of(a)
        if check_errors:
            raise error(op, info) from None
    failed = xp.asarray(info != 0)[..., None, None]
    out = call(xp.where(failed, xp.eye(a.shape[-1], dtype=a.dtype), a))   # identity: no error
    return xp.where(failed, xp.asarray(np.nan, a.dtype), out), info


def inv(a, op="linalg.inv", check_errors=True):
    return _checked(_xp(a).linalg.inv, a, lu_info, singular, op, check_errors)


def solve(a, b, op="linalg.solve", check_errors=True):
    """X with A X = B for matrices B (..., n, k), batch dims broadcast; info has A's batch
    shape."""
    xp = _xp(a)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    b = xp.broadcast_to(b, batch + b.shape[-2:])
    if a.size == 0 or b.size == 0:
        return xp.zeros(b.shape, b.dtype), None
    return _checked(lambda m: xp.linalg.solve(xp.broadcast_to(m, batch + m.shape[-2:]), b), a,
                    lu_info, solver_failed, op, check_errors)


def cholesky(a, op="linalg.cholesky", check_errors=True):
    """The lower factor L of A = L L^T (only A's lower triangle is read)."""
    if a.size == 0:
        return a.copy(), None
    return _checked(_xp(a).linalg.cholesky, a, cholesky_info, not_positive_definite, op,
                    check_errors)


def solve_triangular(a, b, upper, unitriangular=False):
    """X with A X = B, A triangular (its other triangle is not read); B (..., n, k), batch dims
    broadcast. A zero on the diagonal gives inf/nan, as LAPACK's trtrs (no error)."""
    xp = _xp(a)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = xp.broadcast_to(a, batch + a.shape[-2:])
    b = xp.broadcast_to(b, batch + b.shape[-2:])
    if a.size == 0 or b.size == 0:
        return xp.zeros(b.shape, b.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        if backend.is_device_array(a):
            # cupyx.scipy.linalg.solve_triangular takes one matrix: looped over the batch
            import cupyx.scipy.linalg
            return _per_matrix(lambda m, r: cupyx.scipy.linalg.solve_triangular(
                m, r, lower=not upper, unit_diagonal=unitriangular), a, b)
        return _substitute(a, b, upper, unitriangular)


def _substitute(a, b, upper, unitriangular):
    """Forward (lower) or back (upper) substitution, one row of X at a time for the whole batch;
    reads A's diagonal and the triangle named only."""
    n = a.shape[-1]
    x = _xp(a).empty(b.shape, np.result_type(a, b))   # a's module: the simulator's device too
    for i in (range(n - 1, -1, -1) if upper else range(n)):
        solved = slice(i + 1, n) if upper else slice(0, i)
        row = b[..., i, :] - (a[..., i:i + 1, solved] @ x[..., solved, :])[..., 0, :]
        x[..., i, :] = row if unitriangular else row / a[..., i, i, None]
    return x


def lu_factor(a):
    """(LU packed, pivots) of getrf with partial pivoting: pivots 0-based int32, A's batch
    shape + (min(m, n),). A singular matrix is factored too (a zero on U's diagonal)."""
    if backend.is_device_array(a):
        # cupyx.scipy.linalg.lu_factor takes one square matrix: looped over the batch
        import cupyx.scipy.linalg
        return _per_matrix(lambda m: cupyx.scipy.linalg.lu_factor(m, check_finite=False), a)
    m, n = a.shape[-2:]
    k = min(m, n)
    batch = a.shape[:-2]
    lu = np.array(a, dtype=np.result_type(a, np.float32)).reshape((int(np.prod(batch)), m, n))
    pivots = np.zeros((lu.shape[0], k), np.int32)
    if a.size:
        with np.errstate(invalid="ignore"):
            for start in range(0, k, _LU_BLOCK):
                _lu_panel(lu, pivots, start, min(start + _LU_BLOCK, k))
    lu, pivots = lu.reshape(batch + (m, n)), pivots.reshape(batch + (k,))
    if backend.on_device(a):      # the simulator's cuda arrays: factored on a host copy
        return backend.to_device_array(lu, "cuda"), backend.to_device_array(pivots, "cuda")
    return lu, pivots


_LU_BLOCK = 16      # columns factored one by one before a matrix-product update of the rest


def _lu_panel(lu, pivots, start, stop):
    """getrf's step on columns start:stop of every matrix of ``lu`` (batch, m, n), in place:
    each column's pivot is the first row of largest magnitude on or below the diagonal (row
    swaps span the whole matrix, as LAPACK applies them); a zero pivot leaves its column
    unscaled. The rows start:stop right of the panel become U's, the rest gets the Schur
    update by one matrix product."""
    every = np.arange(lu.shape[0])
    for j in range(start, stop):
        p = j + np.abs(lu[:, j:, j]).argmax(-1)
        pivots[:, j] = p
        lu[every, j], lu[every, p] = lu[every, p], lu[every, j]   # fancy indexing copies
        pivot = lu[:, j, j, None]
        lu[:, j + 1:, j] /= np.where(pivot == 0, 1, pivot)
        lu[:, j + 1:, j + 1:stop] -= lu[:, j + 1:, j, None] * lu[:, j, None, j + 1:stop]
    if stop < lu.shape[-1]:
        lu[:, start:stop, stop:] = _substitute(lu[:, start:stop, start:stop],
                                               lu[:, start:stop, stop:], False, True)
        lu[:, stop:, stop:] -= lu[:, stop:, start:stop] @ lu[:, start:stop, stop:]


def qr(a, mode):
    xp = _xp(a)
    if backend.is_device_array(a):
        # cupy.linalg.qr is batched from CuPy 13 only: looped over the batch on all versions
        return _per_matrix(lambda m: xp.linalg.qr(m, mode), a)
    return np.linalg.qr(a, mode)


def svd(a, full_matrices, compute_uv=True):
    xp = _xp(a)
    if a.size == 0:
        m, n = a.shape[-2:]
        s = xp.zeros(a.shape[:-2] + (min(m, n),), a.dtype)
        if not compute_uv:
            return s
        eye = lambda k: xp.broadcast_to(xp.eye(k, dtype=a.dtype), a.shape[:-2] + (k, k))  # noqa
        u = eye(m) if full_matrices else xp.zeros(a.shape[:-2] + (m, min(m, n)), a.dtype)
        vh = eye(n) if full_matrices else xp.zeros(a.shape[:-2] + (min(m, n), n), a.dtype)
        return xp.ascontiguousarray(u), s, xp.ascontiguousarray(vh)
    return xp.linalg.svd(a, full_matrices=full_matrices, compute_uv=compute_uv)


def eigh(a, upper=False, eigenvectors=True):
    xp = _xp(a)
    if a.size == 0:
        w = xp.zeros(a.shape[:-1], a.dtype)
        return (w, xp.zeros(a.shape, a.dtype)) if eigenvectors else w
    uplo = "U" if upper else "L"
    return xp.linalg.eigh(a, uplo) if eigenvectors else xp.linalg.eigvalsh(a, uplo)


def slogdet(a):
    xp = _xp(a)
    if a.shape[-1] == 0:
        return xp.ones(a.shape[:-2], a.dtype), xp.zeros(a.shape[:-2], a.dtype)
    sign, logabs = xp.linalg.slogdet(a)
    return sign.astype(a.dtype), logabs.astype(a.dtype)


def det(a):
    xp = _xp(a)
    if a.shape[-1] == 0:
        return xp.ones(a.shape[:-2], a.dtype)
    return xp.linalg.det(a).astype(a.dtype)


def expm(a):
    """exp(A) by scaling and squaring with the degree-13 Padé approximant (Higham 2005), the
    same code on both devices; each matrix is scaled by its own power of two."""
    xp = _xp(a)
    n = a.shape[-1]
    if n == 0 or a.size == 0:
        return a.copy()
    b = (64764752532480000., 32382376266240000., 7771770303897600., 1187353796428800.,
         129060195264000., 10559470521600., 670442572800., 33522128640., 1323241920.,
         40840800., 960960., 16380., 182., 1.)
    norm1 = abs(a).sum(-2).max(-1)                           # the 1-norm of each matrix
    with np.errstate(divide="ignore"):
        s = xp.maximum(0, xp.ceil(xp.log2(norm1 / 5.371920351148152))).astype(np.int64)
    scaled = a / (2.0 ** s)[..., None, None].astype(a.dtype)
    eye = xp.eye(n, dtype=a.dtype)
    a2 = scaled @ scaled
    a4 = a2 @ a2
    a6 = a4 @ a2
    u = scaled @ (a6 @ (b[13] * a6 + b[11] * a4 + b[9] * a2) + b[7] * a6 + b[5] * a4
                  + b[3] * a2 + b[1] * eye)
    v = a6 @ (b[12] * a6 + b[10] * a4 + b[8] * a2) + b[6] * a6 + b[4] * a4 + b[2] * a2 \
        + b[0] * eye
    r = xp.linalg.solve(v - u, v + u)
    squarings = int(backend.host_value(s.max(), "matrix_exp (the squarings)")) if s.size else 0
    for step in range(squarings):                            # square each matrix s times
        squared = r @ r
        r = xp.where((s > step)[..., None, None], squared, r)
    return r
