"""Row kernels on the CPU for small arrays: softmax, log_softmax, layer_norm and class-index
cross entropy, forward and backward, each one Numba loop over the rows.

On a (2, 64) array NumPy's way (a max, a subtraction, an exp, a sum, a division, each a call
with its own temporary, plus an ``errstate`` block) costs 5-7 us where the maths is ~0.2 us;
one compiled pass over each row costs ~1 us, the call included. Larger arrays keep the NumPy
path (gpudl/ops), as float16/bfloat16 (computed in float32 by the caller) and CuPy arrays do:
NumPy's vectorised float32 ``exp`` (~1 ns a value) beats Numba's scalar one (~4 ns), and the
loops add a row's values one after the other (in float64), which LLVM does not vectorise. The
sizes where each op's NumPy path catches up (forward and backward, the 2-core machine of
session 17, float32 and float64 alike): softmax ~3,000 values, cross entropy ~8,000, layer norm
beyond 32,000 (no exp); the ``*_MAX_SIZE`` limits stay below them.

Rows are the last axis of a C-contiguous float32/float64 array. Sums over a row add in float64
and elementwise results are rounded once to the array's dtype, so a float32 result can differ
from the NumPy path's in its last bits (as torch's CPU results do); extreme values behave as
NumPy's: a row holding NaN or +inf, or all -inf, gives NaN, a division by zero inf or NaN
without an error (``error_model="numpy"``). One thread (the calling one): at these sizes a
hand-off would cost more than the work. Compiled on first use (``import gpudl`` loads no
Numba) and cached on disk.
"""

import numpy as np

SOFTMAX_MAX_SIZE = 2048             # values: larger arrays take the NumPy path (module doc)
CROSS_ENTROPY_MAX_SIZE = 4096
LAYER_NORM_MAX_SIZE = 32768
_FLOATS = (np.float32, np.float64)


def applies(max_size, *arrays):
    """Whether the row kernels take these arrays (None entries are ignored): NumPy arrays of
    one float32/float64 dtype, the first holding at most ``max_size`` values (an op's
    ``*_MAX_SIZE``) and at least one dimension. Non-contiguous ones are copied by the entries."""
    first = arrays[0]
    if type(first) is not np.ndarray or first.dtype not in _FLOATS or first.size > max_size \
            or first.ndim == 0:
        return False
    for a in arrays:
        if a is not None and (type(a) is not np.ndarray or a.dtype != first.dtype):
            return False
    return True


def _rows(a, size):
    """A non-empty ``a`` as C-contiguous rows of ``size`` values (a view when it is
    C-contiguous, else a copy)."""
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a.reshape(-1, size)


# ------------------------------------------------------------------ entries
def softmax(x, log):
    """softmax (``log``: log_softmax) of ``x`` along its last axis."""
    out = np.empty(x.shape, x.dtype)
    if x.size:
        size = x.shape[-1]
        _kernels()["softmax"](_rows(x, size), out.reshape(-1, size), log)
    return out


def softmax_backward(g, y, log):
    """The input's gradient from the output's ``y`` and its gradient ``g`` (same shape)."""
    gx = np.empty(y.shape, y.dtype)
    if y.size:
        size = y.shape[-1]
        _kernels()["softmax_backward"](_rows(g, size), _rows(y, size), gx.reshape(-1, size), log)
    return gx


def layer_norm(x, weight, bias, ndim, eps):
    """(y, xhat, invstd) of layer norm over the last ``ndim`` axes; ``invstd`` has one value
    per row, shaped (rows,)."""
    lead = x.shape[:x.ndim - ndim]
    y, xhat = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    invstd = np.empty(lead, x.dtype).reshape(-1)
    if x.size:
        size = x.size // invstd.size
        _kernels()["layer_norm"](_rows(x, size), _flat(weight, x), _flat(bias, x),
                                 weight is not None, bias is not None, eps,
                                 y.reshape(-1, size), xhat.reshape(-1, size), invstd)
    return y, xhat, invstd


def layer_norm_backward(g, xhat, invstd, weight, size, need_x, need_w, need_b):
    """(gx or None, gw or None, gb or None) of layer norm over the last axes, ``size`` values
    (a row); gw and gb come flat (size,), the caller shapes them."""
    gx = np.empty(xhat.shape, xhat.dtype) if need_x else None
    sums = np.zeros((2, size)) if need_w or need_b else None     # float64: sum g * xhat, sum g
    if xhat.size:
        g_rows = _rows(g, size)
        _kernels()["layer_norm_backward"](
            g_rows, xhat.reshape(-1, size), invstd, _flat(weight, xhat), weight is not None,
            g_rows if gx is None else gx.reshape(-1, size),
            _NO_SUMS if sums is None else sums, need_x, sums is not None)
    gw = sums[0].astype(xhat.dtype) if need_w else None
    gb = sums[1].astype(xhat.dtype) if need_b else None
    return gx, gw, gb


def cross_entropy(x, target, weight, ignore_index, smoothing, reduction):
    """Cross entropy of (N, C) logits ``x`` at class-index ``target`` (N,): (loss, logp, t, valid,
    wt, divisor) as gpudl/ops/cross_entropy.py's NumPy path has them: loss reduced as
    ``reduction`` says (a scalar of x's dtype for 'mean'/'sum'), t the target with ignored
    entries at 0, valid the non-ignored mask, wt each target's weight (0 where ignored), divisor
    the summed weight ('mean'; else 1)."""
    n = x.shape[0]
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    logp = np.empty(x.shape, x.dtype)
    loss, wt = np.empty(n, x.dtype), np.empty(n, x.dtype)
    t, valid = np.empty(n, np.int64), np.empty(n, np.bool_)
    total, weight_total, mean = _kernels()["cross_entropy"](
        x, target.astype(np.int64, copy=False), _flat(weight, x), weight is not None,
        ignore_index, smoothing, logp, loss, t, valid, wt)
    if reduction == "none":
        return loss, logp, t, valid, wt, 1
    if reduction == "sum":
        return x.dtype.type(total), logp, t, valid, wt, 1
    return x.dtype.type(mean), logp, t, valid, wt, x.dtype.type(weight_total)


def cross_entropy_backward(g, logp, t, valid, wt, weight, smoothing, divisor):
    """The logits' gradient: ``g`` the loss's gradient ((N,) for reduction 'none', else a
    scalar), ``divisor`` what the forward divided the loss by."""
    gx = np.empty(logp.shape, logp.dtype)
    per_row = np.ndim(g) == 1
    g = np.asarray(g, logp.dtype).reshape(-1)
    _kernels()["cross_entropy_backward"](logp, t, valid, wt, _flat(weight, logp),
                                         weight is not None, smoothing, g, per_row,
                                         float(divisor), gx)
    return gx


def _flat(a, like):
    """``a`` flattened, or (absent) a placeholder of ``like``'s dtype the kernel never reads."""
    if a is None:
        return _EMPTY[like.dtype.char]
    return (a if a.flags.c_contiguous else np.ascontiguousarray(a)).reshape(-1)


_EMPTY = {np.dtype(t).char: np.empty(0, t) for t in _FLOATS}
_NO_SUMS = np.empty((0, 0))


# ------------------------------------------------------------------ loops
def _softmax_loop(x, out, log):
    for i in range(x.shape[0]):
        row, dst = x[i], out[i]
        top = row[0]
        for j in range(1, row.size):
            if row[j] > top:
                top = row[j]
        total = 0.0
        for j in range(row.size):
            e = np.exp(row[j] - top)
            total += e
            if not log:
                dst[j] = e
        if log:
            log_total = np.log(total)
            for j in range(row.size):
                dst[j] = (row[j] - top) - log_total
        else:
            for j in range(row.size):
                dst[j] = dst[j] / total


def _softmax_backward_loop(g, y, gx, log):
    for i in range(y.shape[0]):
        g_row, y_row, dst = g[i], y[i], gx[i]
        total = 0.0             # softmax: sum g * y; log_softmax: sum g
        for j in range(y_row.size):
            total += g_row[j] if log else g_row[j] * y_row[j]
        for j in range(y_row.size):
            if log:
                dst[j] = g_row[j] - np.exp(y_row[j]) * total
            else:
                dst[j] = y_row[j] * (g_row[j] - total)


def _layer_norm_loop(x, weight, bias, has_weight, has_bias, eps, y, xhat, invstd):
    size = x.shape[1]
    for i in range(x.shape[0]):
        row = x[i]
        total = 0.0
        for j in range(size):
            total += row[j]
        mean = total / size
        squares = 0.0
        for j in range(size):
            d = row[j] - mean
            squares += d * d
        inv = 1.0 / np.sqrt(squares / size + eps)
        invstd[i] = inv
        for j in range(size):
            h = (row[j] - mean) * inv
            xhat[i, j] = h
            if has_weight:
                h *= weight[j]
            if has_bias:
                h += bias[j]
            y[i, j] = h


def _layer_norm_backward_loop(g, xhat, invstd, weight, has_weight, gx, sums, need_x, need_sums):
    size = xhat.shape[1]
    for i in range(xhat.shape[0]):
        g_row, h_row = g[i], xhat[i]
        mean_g = 0.0            # of d loss / d xhat, and of its product with xhat
        mean_gh = 0.0
        for j in range(size):
            gh = g_row[j] * weight[j] if has_weight else g_row[j]
            mean_g += gh
            mean_gh += gh * h_row[j]
            if need_sums:
                sums[0, j] += g_row[j] * h_row[j]
                sums[1, j] += g_row[j]
        if need_x:
            mean_g /= size
            mean_gh /= size
            for j in range(size):
                gh = g_row[j] * weight[j] if has_weight else g_row[j]
                gx[i, j] = (gh - mean_g - h_row[j] * mean_gh) * invstd[i]


def _cross_entropy_loop(x, target, weight, has_weight, ignore_index, smoothing, logp, loss, t,
                        valid, wt):
    """Fills logp, loss, t, valid, wt per row; returns the sum of loss, the sum of wt and their
    quotient (NaN when every target is ignored, as torch) in float64."""
    n_classes = x.shape[1]
    total = 0.0
    weight_total = 0.0
    for i in range(x.shape[0]):
        row, out = x[i], logp[i]
        top = row[0]
        for j in range(1, n_classes):
            if row[j] > top:
                top = row[j]
        exp_total = 0.0
        for j in range(n_classes):
            exp_total += np.exp(row[j] - top)
        log_total = np.log(exp_total)
        smooth = 0.0            # sum_c -w_c log p_c
        for j in range(n_classes):
            out[j] = (row[j] - top) - log_total
            smooth -= out[j] * weight[j] if has_weight else out[j]
        ok = target[i] != ignore_index
        c = target[i] if ok else 0
        w = (weight[c] if has_weight else 1.0) if ok else 0.0
        value = -w * out[c]
        if smoothing != 0.0:
            value = (1 - smoothing) * value + (smoothing / n_classes) * (smooth if ok else 0.0)
        t[i], valid[i], wt[i], loss[i] = c, ok, w, value
        total += loss[i]
        weight_total += wt[i]
    return total, weight_total, total / weight_total


def _cross_entropy_backward_loop(logp, t, valid, wt, weight, has_weight, smoothing, g, per_row,
                                 divisor, gx):
    n_classes = logp.shape[1]
    class_total = 0.0           # sum_c w_c
    for j in range(n_classes):
        class_total += weight[j] if has_weight else 1.0
    share = smoothing / n_classes
    for i in range(logp.shape[0]):
        out = gx[i]
        if not valid[i]:        # exactly 0, even when every target is ignored (as torch)
            for j in range(n_classes):
                out[j] = 0
            continue
        scale = (g[i] if per_row else g[0]) / divisor
        coef = (1 - smoothing) * wt[i] + share * class_total
        for j in range(n_classes):
            d = np.exp(logp[i, j]) * coef
            if smoothing != 0.0:
                d -= share * (weight[j] if has_weight else 1.0)
            if j == t[i]:
                d -= (1 - smoothing) * wt[i]
            out[j] = d * scale


_compiled = {}


def _kernels():
    """The loops, compiled on first use."""
    if not _compiled:
        import numba

        jit = numba.njit(cache=True, nogil=True, error_model="numpy")
        _compiled.update(softmax=jit(_softmax_loop),
                         softmax_backward=jit(_softmax_backward_loop),
                         layer_norm=jit(_layer_norm_loop),
                         layer_norm_backward=jit(_layer_norm_backward_loop),
                         cross_entropy=jit(_cross_entropy_loop),
                         cross_entropy_backward=jit(_cross_entropy_backward_loop))
    return _compiled
