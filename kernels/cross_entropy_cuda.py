"""Numba-CUDA cross entropy of (N, C) logits at class-index targets: forward and input gradient
in three kernels where CuPy's operations took about thirty.

gpudl's cross entropy on the device was log-softmax, a pick, weights, a mean and its backward
composed of CuPy operations: ~16 kernels forward and ~14 backward, each a launch an eager step
pays host time for and a node a captured CUDA graph replays (torch: 2 + 2). Here:

- ``rows``: one block per row n: the row's maximum m and log-sum-exp part ``log s``
  (``s = sum_c exp(x - m)``), shared-memory reductions in a fixed order; then its loss
  ``-wt * ((x[t] - m) - log s)`` with wt = weight[t] (1 without weights, 0 for an ignored
  target), and with label smoothing e: ``(1 - e) * that + e / C * (-valid * sum_c w_c logp_c)``;
- ``total``: one block sums the row losses and the row weights in a fixed order: the loss
  ('sum', or 'mean': divided by the weights' sum, NaN when all are ignored, as torch);
- ``grad``: per element ``g_n * (p * coef_n - (c == t) (1 - e) wt_n - e / C w_c)`` with p
  recomputed from the saved (m, log s), 0 on ignored rows; ``coef_n = (1 - e) wt_n + e / C W``
  (W, the weights' sum, is summed by ``rows`` too when smoothing: C without weights).

A target outside [0, C) other than ignore_index reads class 0 here; ``rows`` marks it and
``total`` finds the smallest such target (``smallest_bad``, NO_BAD_INDEX for none), which the op
queues for the next device read (ops/sparse.py's deferred range check, without a kernel of its
own); for 'none', which runs no ``total``, the op queues ops/sparse.check_range. Accumulation in
float32 for float32 logits (float64 for float64).
"""

import math

import numpy as np
from numba import cuda, float32, float64, int64

from gpudl import backend

from .block_tree import make_tree
from .budget import Budget
from .launch import launch

THREADS = 128           # per row block and for the totals; a power of two (tree reductions)
NO_BAD_INDEX = np.iinfo(np.int64).max       # ops/sparse.py's "no target out of range"
GRAD_THREADS = 256      # per block of the gradient: a row's classes along x, rows along y
MAX_GRID_Y = 65535
BUDGET = Budget(threads=THREADS, min_occupancy=0.5, max_div64=0)
GRAD_BUDGET = Budget(threads=GRAD_THREADS, min_occupancy=0.5, max_div64=0)


def _make_kernels(acc):
    """The three kernels with accumulator type ``acc``."""
    tree = make_tree(THREADS)

    @cuda.jit
    def rows(x, target, weight, weighted, ignore_index, smoothing, stats, loss, wt, bad):
        n = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        C = x.shape[1]
        red = cuda.shared.array(THREADS, acc)
        m = acc(-math.inf)
        for c in range(tid, C, THREADS):
            v = acc(x[n, c])
            if v > m or v != v:
                m = v
        m = tree(red, m, tid, True)
        s = acc(0)
        for c in range(tid, C, THREADS):
            s += math.exp(acc(x[n, c]) - m)
        log_s = math.log(tree(red, s, tid, False))
        t = target[n]
        valid = t != ignore_index
        in_range = 0 <= t < C
        if tid == 0:                                # the target out of range, for ``total``
            bad[n] = int64(t) if valid and not in_range else int64(NO_BAD_INDEX)
        t = t if valid and in_range else 0          # out of range: the queued check reports it
        smooth, weight_sum = acc(0), acc(C)
        if smoothing != 0:
            for c in range(tid, C, THREADS):
                w = acc(weight[c]) if weighted else acc(1)
                smooth += w * ((acc(x[n, c]) - m) - log_s)
            smooth = tree(red, smooth, tid, False)
            if weighted:
                weight_sum = acc(0)
                for c in range(tid, C, THREADS):
                    weight_sum += acc(weight[c])
                weight_sum = tree(red, weight_sum, tid, False)
        if tid == 0:
            w_t = (acc(weight[t]) if weighted else acc(1)) if valid else acc(0)
            value = -w_t * ((acc(x[n, t]) - m) - log_s)
            if smoothing != 0:
                value = (acc(1) - smoothing) * value + \
                    (smoothing / acc(C)) * (-smooth if valid else acc(0))
            stats[n, 0] = m
            stats[n, 1] = log_s
            stats[n, 2] = weight_sum
            loss[n] = value
            wt[n] = w_t

    @cuda.jit
    def total(loss, wt, bad, mean, out, divisor, smallest_bad):
        """out[0] = sum of loss (divided by the sum of wt when ``mean``), divisor[0] = the sum
        of wt, smallest_bad[0] = the smallest of ``bad``."""
        tid = cuda.threadIdx.x
        red = cuda.shared.array(THREADS, acc)
        red_bad = cuda.shared.array(THREADS, int64)
        a, b, low = acc(0), acc(0), int64(NO_BAD_INDEX)
        for i in range(tid, loss.shape[0], THREADS):
            a += loss[i]
            b += wt[i]
            low = min(low, bad[i])
        a = tree(red, a, tid, False)
        b = tree(red, b, tid, False)
        low = ~tree(red_bad, ~low, tid, True)       # min(v) = ~max(~v), no overflow
        if tid == 0:
            out[0] = a / b if mean else a
            divisor[0] = b
            smallest_bad[0] = low

    @cuda.jit
    def grad(x, target, weight, weighted, ignore_index, smoothing, stats, g, per_row, divisor,
             mean, gx):
        """gx = d loss / d x; g holds the upstream gradient (N values when ``per_row``, else
        one, divided by divisor[0] when ``mean``)."""
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        C = x.shape[1]
        if c >= C:
            return
        n = cuda.blockIdx.y
        while n < x.shape[0]:           # a while: range with a step divides for its trip count
            t = target[n]
            if t == ignore_index:
                gx[n, c] = 0
                n += cuda.gridDim.y
                continue
            t = t if 0 <= t < C else 0
            w_t = acc(weight[t]) if weighted else acc(1)
            gn = acc(g[n]) if per_row else acc(g[0])
            if mean:
                gn /= divisor[0]
            e = smoothing
            p = math.exp((acc(x[n, c]) - stats[n, 0]) - stats[n, 1])
            coef = (acc(1) - e) * w_t + (e / acc(C)) * stats[n, 2]
            value = p * coef
            if c == t:
                value -= (acc(1) - e) * w_t
            if e != 0:
                value -= (e / acc(C)) * (acc(weight[c]) if weighted else acc(1))
            gx[n, c] = value * gn
            n += cuda.gridDim.y

    return {"rows": rows, "total": total, "grad": grad}


_KERNELS = {np.float32: _make_kernels(float32), np.float64: _make_kernels(float64)}   # lazy


def _signature(name, dtype, target_dtype="int64"):
    d = np.dtype(dtype).name
    x, v, stats = f"{d}[:, ::1]", f"{d}[::1]", f"{d}[:, ::1]"
    t = f"{target_dtype}[::1]"
    args = {
        "rows": (x, t, v, "boolean", "int64", d, stats, v, v, "int64[::1]"),
        "total": (v, v, "int64[::1]", "boolean", v, v, "int64[::1]"),
        "grad": (x, t, v, "boolean", "int64", d, stats, v, "boolean", v, "boolean", x),
    }[name]
    return f"void({', '.join(args)})"


def supports(x, target):
    """Whether these kernels take the op: (N, C) float32/float64 logits with N, C > 0 and
    int32/int64 targets (N,)."""
    return (x.ndim == 2 and x.dtype in (np.float32, np.float64) and min(x.shape) > 0
            and target.dtype in (np.int32, np.int64) and target.shape == x.shape[:1])


def forward(x, target, weight, ignore_index, smoothing, reduction):
    """(loss, saved, smallest bad target): the loss ((N,) for 'none', else 0-d), what
    ``backward`` needs, and the smallest target outside [0, C) other than ignore_index as a 0-d
    int64 device array (NO_BAD_INDEX for none; None for 'none': no kernel finds it)."""
    xp = backend.get_array_module(x)
    kernels, dtype = _KERNELS[x.dtype.type], x.dtype
    x, target = xp.ascontiguousarray(x), xp.ascontiguousarray(target)
    N = x.shape[0]
    stats, loss, wt = xp.empty((N, 3), dtype), xp.empty(N, dtype), xp.empty(N, dtype)
    bad = xp.empty(N, np.int64)
    # without weights the kernels read none: wt stands in (no array to make)
    w = wt if weight is None else xp.ascontiguousarray(backend.cast(weight, dtype))
    smoothing = dtype.type(smoothing)
    launch(kernels["rows"], _signature("rows", dtype, target.dtype.name), N, THREADS,
           x, target, w, weight is not None, np.int64(ignore_index), smoothing, stats, loss, wt,
           bad)
    divisor = xp.empty(1, dtype)               # the weights' sum: 'mean' divides by it
    smallest_bad = None
    if reduction != "none":
        total, smallest_bad = xp.empty(1, dtype), xp.empty(1, np.int64)
        launch(kernels["total"], _signature("total", dtype), 1, THREADS, loss, wt, bad,
               reduction == "mean", total, divisor, smallest_bad)
        loss, smallest_bad = total.reshape(()), smallest_bad.reshape(())
    return loss, (x, target, w, weight is not None, stats, divisor, smoothing), smallest_bad


def backward(g, saved, ignore_index, reduction):
    """The gradient of ``forward``'s loss w.r.t. x, for the upstream gradient g (0-d, or (N,)
    for 'none')."""
    x, target, w, weighted, stats, divisor, smoothing = saved
    xp = backend.get_array_module(x)
    dtype = x.dtype
    g = xp.ascontiguousarray(backend.cast(g, dtype).reshape(-1))
    N, C = x.shape
    gx = xp.empty((N, C), dtype)
    launch(_KERNELS[dtype.type]["grad"], _signature("grad", dtype, target.dtype.name),
           ((C + GRAD_THREADS - 1) // GRAD_THREADS, min(N, MAX_GRID_Y)), GRAD_THREADS,
           x, target, w, weighted, np.int64(ignore_index), smoothing, stats, g,
           reduction == "none", divisor, reduction == "mean", gx)
    return gx


SIGNATURES = [
    (_KERNELS[np.float64 if dtype == "float64" else np.float32][name],
     [_signature(name, dtype, t) for t in ("int64", "int32")] if name != "total"
     else [_signature(name, dtype)], GRAD_BUDGET if name == "grad" else BUDGET)
    for name in ("rows", "total", "grad")
    for dtype in ("float32", "float64")
]
