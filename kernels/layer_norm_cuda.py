"""Numba-CUDA layer normalisation of (N, D) rows: forward in one kernel, backward in two, where
composed CuPy operations took ten and eleven (torch: one and two).

- ``forward``: a block per row: the mean, then the biased variance of ``x - mean`` (two passes,
  as the composed version: no cancellation), ``invstd = 1 / sqrt(var + eps)``, and
  ``y = (x - mean) * invstd * weight + bias``; the row's (mean, invstd) are kept for backward.
- ``add_forward``: ``forward`` of ``r + (a + c)`` (a residual added to a GEMM's product and
  its bias, a transformer layer's post-norm), which it writes as the backward's rows: the two
  adds' kernels folded into the norm's.
- ``grad_input``: a block per row: with ``gh = g * weight`` and ``xhat`` recomputed from the
  kept statistics, ``gx = (gh - mean(gh) - xhat * mean(gh * xhat)) * invstd``.
- ``grad_params``: the weight's and bias's gradients, column sums over the rows of ``g * xhat``
  and ``g``: a block per 32 columns and span of rows, 8 lanes of rows added in a fixed order;
  spans past the first leave partial sums that one CuPy sum adds.

Accumulation in float32 for float32 rows (float64 for float64).
"""

import math

import numpy as np
from numba import cuda, float32, float64

from gpudl import backend

from .block_tree import make_tree
from .budget import Budget
from .launch import launch

THREADS = 128               # a block per row (a power of two: tree reductions)
COLUMNS, LANES = 32, 8      # grad_params: a warp's columns x lanes of rows per block
ROWS_PER_SPAN = 2048        # grad_params: rows one block adds (more: partial sums)
MAX_SPANS = 65535
BUDGET = Budget(threads=THREADS, min_occupancy=0.5, max_div64=0)
PARAMS_BUDGET = Budget(threads=COLUMNS * LANES, min_occupancy=0.5, max_div64=0)


def _make_kernels(acc):
    tree = make_tree(THREADS)

    @cuda.jit(device=True, inline="always")
    def normalize(x, n, tid, red, total, weight, bias, has_weight, has_bias, eps, y, stats):
        """Row n from its values' ``total`` (this thread's part): the mean, the variance of
        x - mean, y and the row's (mean, invstd)."""
        D = x.shape[1]
        mean = tree(red, total, tid, False) / acc(D)
        s = acc(0)
        for d in range(tid, D, THREADS):
            c = acc(x[n, d]) - mean
            s += c * c
        invstd = acc(1) / math.sqrt(tree(red, s, tid, False) / acc(D) + eps)
        for d in range(tid, D, THREADS):
            v = (acc(x[n, d]) - mean) * invstd
            if has_weight:
                v *= weight[d]
            if has_bias:
                v += bias[d]
            y[n, d] = v
        if tid == 0:
            stats[n, 0] = mean
            stats[n, 1] = invstd

    @cuda.jit
    def forward(x, weight, bias, has_weight, has_bias, eps, y, stats):
        n = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        red = cuda.shared.array(THREADS, acc)
        s = acc(0)
        for d in range(tid, x.shape[1], THREADS):
            s += acc(x[n, d])
        normalize(x, n, tid, red, s, weight, bias, has_weight, has_bias, eps, y, stats)

    @cuda.jit
    def add_forward(r, a, c, has_c, weight, bias, has_weight, has_bias, eps, x, y, stats):
        """``forward`` of the rows x = r + (a + c) (a residual r, a GEMM's product a and its
        bias c; rounded as the separate adds round), which it also writes (the backward's
        rows): each thread reads back only the columns it wrote."""
        n = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        red = cuda.shared.array(THREADS, acc)
        s = acc(0)
        for d in range(tid, x.shape[1], THREADS):
            v = a[n, d] + c[d] if has_c else a[n, d]
            v = r[n, d] + v
            x[n, d] = v
            s += acc(v)
        normalize(x, n, tid, red, s, weight, bias, has_weight, has_bias, eps, y, stats)

    @cuda.jit
    def grad_input(x, g, weight, has_weight, stats, gx):
        n = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        D = x.shape[1]
        red = cuda.shared.array(THREADS, acc)
        mean, invstd = stats[n, 0], stats[n, 1]
        a, b = acc(0), acc(0)
        for d in range(tid, D, THREADS):
            gh = acc(g[n, d]) * weight[d] if has_weight else acc(g[n, d])
            a += gh
            b += gh * ((acc(x[n, d]) - mean) * invstd)
        m1 = tree(red, a, tid, False) / acc(D)
        m2 = tree(red, b, tid, False) / acc(D)
        for d in range(tid, D, THREADS):
            gh = acc(g[n, d]) * weight[d] if has_weight else acc(g[n, d])
            xhat = (acc(x[n, d]) - mean) * invstd
            gx[n, d] = (gh - m1 - xhat * m2) * invstd

    @cuda.jit
    def grad_params(x, g, stats, rows_per_span, gw, gb):
        """gw[s, d], gb[s, d]: sums over span s's rows of g * xhat and of g, column d."""
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        d = cuda.blockIdx.x * COLUMNS + tx
        s = cuda.blockIdx.y
        D = x.shape[1]
        red_w = cuda.shared.array((LANES, COLUMNS), acc)
        red_b = cuda.shared.array((LANES, COLUMNS), acc)
        a, b = acc(0), acc(0)
        if d < D:
            n = s * rows_per_span + ty
            end = min(x.shape[0], (s + 1) * rows_per_span)
            while n < end:
                gv = acc(g[n, d])
                a += gv * ((acc(x[n, d]) - stats[n, 0]) * stats[n, 1])
                b += gv
                n += LANES
        red_w[ty, tx] = a
        red_b[ty, tx] = b
        cuda.syncthreads()
        if ty == 0 and d < D:
            for lane in range(1, LANES):
                a += red_w[lane, tx]
                b += red_b[lane, tx]
            gw[s, d] = a
            gb[s, d] = b

    return {"forward": forward, "add_forward": add_forward, "grad_input": grad_input,
            "grad_params": grad_params}


_KERNELS = {np.float32: _make_kernels(float32), np.float64: _make_kernels(float64)}   # lazy


def _signature(name, dtype):
    d = np.dtype(dtype).name
    rows, vector = f"{d}[:, ::1]", f"{d}[::1]"
    args = {
        "forward": (rows, vector, vector, "boolean", "boolean", d, rows, rows),
        "add_forward": (rows, rows, vector, "boolean", vector, vector, "boolean", "boolean", d,
                        rows, rows, rows),
        "grad_input": (rows, rows, vector, "boolean", rows, rows),
        "grad_params": (rows, rows, rows, "int64", rows, rows),
    }[name]
    return f"void({', '.join(args)})"


def supports(x, ndim):
    """Whether these kernels take a layer norm over the last ``ndim`` axes of ``x``: float32 or
    float64, at least one row and one value a row."""
    return (x.dtype in (np.float32, np.float64) and x.size > 0
            and 0 < ndim <= x.ndim)


def _vector(xp, a, D, dtype):
    """``a`` (weight or bias) flat in the rows' dtype, or a one-element stand-in (unread)."""
    if a is None:
        return xp.zeros(1, dtype)
    return xp.ascontiguousarray(backend.cast(a, dtype)).reshape(D)


def forward(x, weight, bias, ndim, eps):
    """(y, saved): y of x's shape and what the backward needs."""
    xp = backend.get_array_module(x)
    dtype = x.dtype
    D = math.prod(x.shape[x.ndim - ndim:])
    rows = xp.ascontiguousarray(x).reshape(-1, D)
    y = xp.empty(rows.shape, dtype)
    stats = xp.empty((rows.shape[0], 2), dtype)
    w, b = _vector(xp, weight, D, dtype), _vector(xp, bias, D, dtype)
    launch(_KERNELS[dtype.type]["forward"], _signature("forward", dtype), rows.shape[0],
           THREADS, rows, w, b, weight is not None, bias is not None, dtype.type(eps), y, stats)
    return y.reshape(x.shape), (rows, w, weight is not None, stats)


def add_forward(r, a, c, weight, bias, eps):
    """``forward`` over the last axis of x = r + (a + c) (r and a of one shape, c (D,) or None)
    in one kernel: (y, saved), saved's rows being x, which the kernel writes."""
    xp = backend.get_array_module(a)
    dtype = a.dtype
    D = a.shape[-1]
    r_rows = xp.ascontiguousarray(r).reshape(-1, D)
    a_rows = xp.ascontiguousarray(a).reshape(-1, D)
    rows = xp.empty(a_rows.shape, dtype)
    y = xp.empty(a_rows.shape, dtype)
    stats = xp.empty((a_rows.shape[0], 2), dtype)
    # a missing vector's stand-in is never read: left uninitialised (no fill kernel)
    w, b, c_flat = (xp.empty(1, dtype) if v is None else
                    xp.ascontiguousarray(backend.cast(v, dtype)).reshape(D)
                    for v in (weight, bias, c))
    launch(_KERNELS[dtype.type]["add_forward"], _signature("add_forward", dtype),
           a_rows.shape[0], THREADS, r_rows, a_rows, c_flat, c is not None, w, b,
           weight is not None, bias is not None, dtype.type(eps), rows, y, stats)
    return y.reshape(a.shape), (rows, w, weight is not None, stats)


def backward(g, saved, needs):
    """(gx, gw, gb) for ``needs`` = which of (x, weight, bias) want a gradient; gw and gb flat
    (D,) in the rows' dtype."""
    rows, w, has_weight, stats = saved
    xp = backend.get_array_module(rows)
    dtype = rows.dtype
    N, D = rows.shape
    g = xp.ascontiguousarray(backend.cast(g, dtype)).reshape(N, D)
    kernels = _KERNELS[dtype.type]
    gx = gw = gb = None
    if needs[0]:
        gx = xp.empty((N, D), dtype)
        launch(kernels["grad_input"], _signature("grad_input", dtype), N, THREADS,
               rows, g, w, has_weight, stats, gx)
    if needs[1] or needs[2]:
        spans = min(MAX_SPANS, -(-N // ROWS_PER_SPAN))
        per_span = -(-N // spans)
        parts_w, parts_b = xp.empty((spans, D), dtype), xp.empty((spans, D), dtype)
        launch(kernels["grad_params"], _signature("grad_params", dtype),
               (-(-D // COLUMNS), spans), (COLUMNS, LANES), rows, g, stats, np.int64(per_span),
               parts_w, parts_b)
        gw = parts_w[0] if spans == 1 else parts_w.sum(axis=0)
        gb = parts_b[0] if spans == 1 else parts_b.sum(axis=0)
    return gx, gw, gb


SIGNATURES = [
    (_KERNELS[np.float64 if dtype == "float64" else np.float32][name], [_signature(name, dtype)],
     PARAMS_BUDGET if name == "grad_params" else BUDGET)
    for name in ("forward", "add_forward", "grad_input", "grad_params")
    for dtype in ("float32", "float64")
]
