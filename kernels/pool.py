"""2-D pooling: max (saving a compact argmax), average, adaptive average; forward and backward.

Every entry takes arrays shaped ``(..., H, W)`` (usually NCHW; the leading dims are flattened into
independent planes) and returns arrays shaped ``(..., Ho, Wo)``. Sizes, strides, paddings and
dilations are ``(h, w)`` pairs already checked by the op layer (gpudl/ops/pool.py).

Window geometry is PyTorch's. Window ``o`` starts at ``o * stride - padding``; ``ceil_mode`` adds
a last, partial window when it starts inside the input or the left padding
(``pool_output_size``). Average pooling divides by ``divisor_override`` if given, else by the
window's area clipped to the padded input (``count_include_pad``) or by its in-bounds count.
Adaptive bin ``i`` of ``n`` over a size ``H`` spans ``[floor(i*H/n), ceil((i+1)*H/n))``.

Max pooling stores, per output, the argmax as the offset ``i * kw + j`` inside its window: one
byte when the window has at most 256 elements (int32 beyond), instead of PyTorch's int64 flat
index, which adds ~40% to the memory traffic of a 2x2 pool. ``max_pool2d_indices`` turns it into
PyTorch's index when ``return_indices=True`` asks for it. A NaN in a window wins (as in PyTorch:
the last NaN), so NaN propagates to the output and its gradient goes to the NaN.

The CPU twins are Numba CPU loops that fill an output row one kernel offset at a time in
branch-free loops that vectorise (see "CPU twins" below); max and argmax come out of one pass.
Large inputs go to gpudl's own threads (cpu_threads) in chunks of planes, never to an OpenMP pool;
smaller ones run on the calling thread, the forward twins folding all planes into one row. The
backward passes scatter into the input gradient, which is race-free because a plane belongs to
one thread. The CUDA kernels (pool_cuda.py) scatter per output window when windows do not overlap
and gather per input pixel when they do: deterministic, no atomics, no division in any loop.
"""

import functools
import math

import numpy as np
from numba import njit

from gpudl import backend, cpu_threads, dtypes


def pool_output_size(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """PyTorch's number of pooling windows along ``size`` (<= 0 when none fits: callers check)."""
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1            # the last window would start inside the right padding: drop it
    return out


def first_empty_window(size, kernel, stride, padding, dilation, out):
    """The first of ``out`` windows along ``size`` whose every tap lies in the padding (only a
    dilated window can skip over a small input), or None. Such a window has no maximum: torch
    gives -inf and an index outside the input."""
    if dilation == 1:
        return None             # k consecutive taps, starting at -p >= -k/2: one is inside
    for o in range(min(out, -(-padding // stride))):         # only windows starting left of 0
        start = o * stride - padding
        first = -(start // dilation) * dilation + start        # first tap at or right of 0
        if first >= size or first > start + dilation * (kernel - 1):
            return o
    return None


def index_dtype(kernel_size):
    """The argmax dtype for a window: uint8 while every offset fits in a byte, else int32."""
    return np.uint8 if kernel_size[0] * kernel_size[1] <= 256 else np.int32


def _planes(x):
    """(..., H, W) -> a C-contiguous (P, H, W) view or copy."""
    return np.ascontiguousarray(x).reshape((-1,) + x.shape[-2:])


_POOL_CUDA = []     # [kernels.pool_cuda] once imported (an import statement per call: ~1 us)


def _cuda():
    """kernels.pool_cuda, imported at the first cuda call (it needs numba.cuda)."""
    if not _POOL_CUDA:
        from . import pool_cuda
        _POOL_CUDA.append(pool_cuda)
    return _POOL_CUDA[0]


def _compute_dtype(dtype):
    """The CPU twins run float16/bfloat16 in float32 (Numba's CPU target has neither)."""
    return dtypes.compute_dtype(dtype)


# --------------------------------------------------------------------------- entries: max
def max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Max pooling: ``(y, argmax)``, ``argmax`` holding each window's offset (see module doc)."""
    if backend.kernel_device(x) == "cuda":
        return _cuda().max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)
    out, rows, cols, index = _max_plan(x.shape[-2:], kernel_size, stride, padding, dilation,
                                       ceil_mode)
    shape = x.shape[:-2] + out          # allocated in the final shape: results own their
    if _direct(x):                      # memory, which autograd's view checks skip at once
        y, argmax = np.empty(shape, x.dtype), np.empty(shape, index)
        _max_fwd_direct(_contiguous(x), y, argmax, rows, cols, kernel_size[1], *dilation)
        return y, argmax
    planes = _planes(x)
    planes = planes.astype(_compute_dtype(planes.dtype), copy=False)
    y = np.empty(shape, planes.dtype)
    argmax = np.empty(shape, index)
    P = planes.shape[0]
    _on_planes(_MAX_FWD, (planes, y.reshape((P,) + out), argmax.reshape((P,) + out)),
               (rows, cols, kernel_size[1], *dilation), planes.size)
    return y.astype(x.dtype, copy=False), argmax


def max_pool2d_backward(gy, argmax, input_shape, kernel_size, stride, padding, dilation):
    """Gradient of max pooling w.r.t. its input: each output's gradient goes to its argmax."""
    if backend.kernel_device(gy) == "cuda":
        return _cuda().max_pool2d_backward(gy, argmax, input_shape, kernel_size, stride, padding,
                                           dilation)
    rows, cols = _windows(input_shape, gy.shape[-2:], kernel_size, stride, padding, dilation)
    offsets = _argmax_offsets(tuple(kernel_size), tuple(dilation))
    if _direct(gy, math.prod(input_shape)):
        gx = np.zeros(input_shape, gy.dtype)
        _max_bwd_direct(_contiguous(gy), argmax, gx, rows[0], cols[0], *offsets)
        return gx
    g = _planes(gy)
    g = g.astype(_compute_dtype(g.dtype), copy=False)
    gx = np.zeros(input_shape, g.dtype)
    _on_planes(_MAX_BWD, (g, _planes(argmax), gx.reshape((g.shape[0],) + input_shape[-2:])),
               (rows[0], cols[0], *offsets), gx.size)
    return gx.astype(gy.dtype, copy=False)


def max_pool2d_indices(argmax, input_shape, kernel_size, stride, padding, dilation):
    """PyTorch's ``return_indices``: int64 flat indices ``h * W + w`` into each input plane."""
    xp = backend.get_array_module(argmax)
    W = input_shape[-1]
    Ho, Wo = argmax.shape[-2:]
    k = argmax.astype(np.int64)
    oh = xp.arange(Ho, dtype=np.int64)[:, None] * stride[0] - padding[0]     # (Ho, 1)
    ow = xp.arange(Wo, dtype=np.int64) * stride[1] - padding[1]              # (Wo,)
    h = oh + (k // kernel_size[1]) * dilation[0]
    w = ow + (k % kernel_size[1]) * dilation[1]
    return h * W + w


# --------------------------------------------------------------------------- entries: average
def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override):
    """Average pooling with PyTorch's divisor rules (see module doc)."""
    divisor = divisor_override or 0                     # 0: no override
    if backend.kernel_device(x) == "cuda":
        return _cuda().avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode,
                                          count_include_pad, divisor)
    plan = _avg_direct_plan(type(x), x.shape, x.dtype, kernel_size, stride, padding, ceil_mode,
                            bool(count_include_pad), divisor)
    if plan is not None:        # one cached plan, then the serial twin on x as it is
        y = np.empty(plan[0], x.dtype)
        _avg_fwd_direct(_contiguous(x), y, *plan[1])
        return y
    out, plan = _avg_plan(x.shape[-2:], kernel_size, stride, padding, ceil_mode,
                          bool(count_include_pad), divisor, x.dtype)
    return _mean_fwd(x, out, plan)


def avg_pool2d_plan(shape, dtype, kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override):
    """The arguments of ``avg_pool2d_forward`` after x, with what its direct path needs for an
    array of this shape and dtype worked out, for :func:`avg_pool2d_forward_planned`: a caller
    that keeps one per geometry skips the entry's planning (a third of a tiny pool's time)."""
    shape, dtype = tuple(shape), np.dtype(dtype)
    direct = _avg_direct_plan(np.ndarray, shape, dtype, kernel_size, stride, padding, ceil_mode,
                              bool(count_include_pad), divisor_override or 0)
    return (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
            direct and (shape, dtype, *direct))


def avg_pool2d_forward_planned(x, plan):
    """``avg_pool2d_forward(x, *plan[:6])`` for ``plan = avg_pool2d_plan(x.shape, x.dtype,
    ...)``."""
    direct = plan[6]        # (input shape, dtype, output shape, the twin's arguments) or None
    if (direct is not None and type(x) is np.ndarray and x.shape == direct[0]
            and x.dtype == direct[1] and backend.kernel_device(x) == "cpu"):
        y = np.empty(direct[2], x.dtype)
        _avg_fwd_direct(_contiguous(x), y, *direct[3])
        return y
    return avg_pool2d_forward(x, *plan[:6])


def avg_pool2d_backward(gy, input_shape, kernel_size, stride, padding, count_include_pad,
                        divisor_override):
    """Gradient of average pooling w.r.t. its input."""
    divisor = divisor_override or 0
    if backend.kernel_device(gy) == "cuda":
        return _cuda().avg_pool2d_backward(gy, input_shape, kernel_size, stride, padding,
                                           bool(count_include_pad), divisor)
    plan = _mean_plan(input_shape[-2:], gy.shape[-2:], (kernel_size, stride, padding),
                      bool(count_include_pad), divisor, gy.dtype)
    return _mean_bwd(gy, input_shape, plan)


# --------------------------------------------------------------------------- entries: adaptive
def adaptive_avg_pool2d_forward(x, output_size):
    """Adaptive average pooling to ``output_size = (Ho, Wo)`` (see module doc for the bins)."""
    out = tuple(output_size)
    if backend.kernel_device(x) == "cuda":
        return _cuda().adaptive_avg_pool2d_forward(x, out)
    return _mean_fwd(x, out, _mean_plan(x.shape[-2:], out, None, False, 0, x.dtype))


def adaptive_avg_pool2d_backward(gy, input_shape):
    """Gradient of adaptive average pooling w.r.t. its input."""
    if backend.kernel_device(gy) == "cuda":
        return _cuda().adaptive_avg_pool2d_backward(gy, input_shape)
    return _mean_bwd(gy, input_shape, _mean_plan(input_shape[-2:], gy.shape[-2:], None, False, 0,
                                                 gy.dtype))


# --------------------------------------------------------------------------- window tables
def _output_shape(shape, kernel_size, stride, padding, dilation, ceil_mode):
    return tuple(pool_output_size(shape[a - 2], kernel_size[a], stride[a], padding[a],
                                  dilation[a], ceil_mode) for a in (0, 1))


def _axis_windows(out, size, kernel, stride, padding, dilation):
    """The windows along one axis as an int64 (4, out) array of rows (start, first, end, span).

    Window o covers the cells ``start + i * dilation`` for i in [first, end), the offsets that
    fall inside the input; ``span`` is its length within the padded input (count_include_pad).
    """
    start = np.arange(out, dtype=np.int64) * stride - padding
    first = (np.maximum(-start, 0) + dilation - 1) // dilation
    end = np.maximum(np.minimum(kernel, (size - start + dilation - 1) // dilation), first)
    span = np.minimum(start + kernel, size + padding) - start
    return np.stack([start, first, end, span])


@functools.lru_cache(maxsize=256)
def _max_plan(hw, kernel_size, stride, padding, dilation, ceil_mode):
    """(output (Ho, Wo), rows, cols, argmax dtype) of a max pool over (..., *hw): built once
    per geometry, as a tiny pool spends more time planning than pooling."""
    out = _output_shape(hw, kernel_size, stride, padding, dilation, ceil_mode)
    return (out, *_windows(hw, out, kernel_size, stride, padding, dilation),
            index_dtype(kernel_size))


def _windows(shape, out, kernel_size, stride, padding, dilation):
    """(rows, cols): ``_axis_windows`` for H and for W, built once per geometry (a tiny pool
    spent most of its time building them)."""
    return _window_tables(tuple(shape[-2:]), tuple(out), tuple(kernel_size), tuple(stride),
                          tuple(padding), tuple(dilation))


@functools.lru_cache(maxsize=256)
def _window_tables(hw, out, kernel_size, stride, padding, dilation):
    return tuple(_axis_windows(out[a], hw[a], kernel_size[a], stride[a], padding[a],
                               dilation[a]) for a in (0, 1))


@functools.lru_cache(maxsize=256)
def _argmax_offsets(kernel_size, dilation):
    """(row offsets, column offsets): where argmax k sits from its window's start, as tables
    over k (the backward pass then divides nothing: a (32,32,64,64) 2x2 max pool's took 3.1 ms
    on one thread with ``k // kw`` and ``k % kw``, 64-bit divisions, and 1.2 ms with tables)."""
    k = np.arange(kernel_size[0] * kernel_size[1], dtype=np.int64)
    return (k // kernel_size[1]) * dilation[0], (k % kernel_size[1]) * dilation[1]


@functools.lru_cache(maxsize=256)
def _avg_plan(hw, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor, dtype):
    """(output (Ho, Wo), ``_mean_plan``) of an average pool over (..., *hw), once per geometry."""
    out = _output_shape(hw, kernel_size, stride, padding, (1, 1), ceil_mode)
    return out, _mean_plan(hw, out, (kernel_size, stride, padding), count_include_pad, divisor,
                           dtype)


@functools.lru_cache(maxsize=256)
def _avg_direct_plan(array_type, shape, dtype, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor):
    """(output shape, ``_avg_fwd_direct``'s arguments after x and y) of an average pool over an
    array of this type, shape and dtype that the direct path takes (see ``_direct``), else
    None: a tiny pool costs less than its planning did."""
    if not (array_type is np.ndarray and np.dtype(dtype).char in "fd"
            and math.prod(shape) < PARALLEL_MIN_ELEMENTS):
        return None
    out, plan = _avg_plan(shape[-2:], kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor, dtype)
    return shape[:-2] + out, (plan[5], *plan[:5])


def _mean_plan(hw, out, window, count_include_pad, divisor, dtype):
    """(rows, cols, widest window, row divisors, column divisors, whether every window spans
    the widest along W) of an average pool: ``window`` = (kernel_size, stride, padding), or None
    for adaptive bins; ``dtype`` the data's (divisors in its compute dtype). Cached."""
    window = None if window is None else tuple(tuple(v) for v in window)
    return _mean_plan_cached(tuple(hw), tuple(out), window, count_include_pad, divisor,
                             np.dtype(dtype))


@functools.lru_cache(maxsize=256)
def _mean_plan_cached(hw, out, window, count_include_pad, divisor, dtype):
    dtype = _compute_dtype(dtype)
    windows = _bins(hw, out) if window is None else _windows(hw, out, *window, (1, 1))
    widest = windows[1][2].max(initial=0)
    whole_rows = bool((windows[1][1] == 0).all() and (windows[1][2] == widest).all())
    return (*windows, widest, *_divisors(windows, count_include_pad, divisor, dtype),
            whole_rows)


def _bins(shape, out):
    """(rows, cols) tables of the adaptive bins [floor(o*n/out), ceil((o+1)*n/out))."""
    tables = []
    for n, m in zip(shape[-2:], out):
        o = np.arange(m, dtype=np.int64)
        start, stop = (o * n) // m, ((o + 1) * n + m - 1) // m
        tables.append(np.stack([start, np.zeros_like(o), stop - start, stop - start]))
    return tuple(tables)


def _divisors(windows, count_include_pad, divisor, dtype):
    """Per-axis factors whose product divides each window's sum (inf for an empty window,
    whose output PyTorch sets to 0)."""
    factors = []
    for axis, table in enumerate(windows):
        inside = table[2] - table[1]
        if divisor:
            factor = np.full(inside.shape, divisor if axis == 0 else 1)
        else:
            factor = table[3] if count_include_pad else inside
        factors.append(np.where(inside > 0, factor, np.inf).astype(dtype))
    return factors


def _mean_fwd(x, out, plan):
    shape = x.shape[:-2] + tuple(out)   # the final shape, as in max pooling
    if _direct(x):
        y = np.empty(shape, x.dtype)
        _avg_fwd_direct(_contiguous(x), y, plan[5], *plan[:5])
        return y
    planes = _planes(x)
    planes = planes.astype(_compute_dtype(planes.dtype), copy=False)
    y = np.empty(shape, planes.dtype)
    twins = _AVG_FWD_WHOLE_ROWS if plan[5] else _AVG_FWD
    _on_planes(twins, (planes, y.reshape((planes.shape[0],) + tuple(out))), plan[:5], planes.size)
    return y.astype(x.dtype, copy=False)


def _mean_bwd(gy, input_shape, plan):
    if _direct(gy, math.prod(input_shape)):
        gx = np.zeros(input_shape, gy.dtype)
        _avg_bwd_direct(_contiguous(gy), gx, *plan[:5])
        return gx
    g = _planes(gy)
    g = g.astype(_compute_dtype(g.dtype), copy=False)
    gx = np.zeros(input_shape, g.dtype)
    _on_planes(_AVG_BWD, (g, gx.reshape((g.shape[0],) + tuple(input_shape[-2:]))), plan[:5],
               gx.size)
    return gx.astype(gy.dtype, copy=False)


def _direct(a, work=None):
    """Whether the serial twin runs on ``a`` as it is: float32/float64 NumPy, under the
    threading threshold (``work`` input elements; a's own size by default). The entries then
    make no copies or views in Python: the twins' ``_direct`` wrappers view the arrays as
    planes themselves (a microsecond less per tiny call)."""
    return (type(a) is np.ndarray and a.dtype.char in "fd"
            and (a.size if work is None else work) < PARALLEL_MIN_ELEMENTS)


def _contiguous(a):
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


# --------------------------------------------------------------------------- CPU twins
# Each output row is built one kernel offset (i, j) at a time: the cells that offset reads for
# every output of the row are gathered into a contiguous buffer (padding filled in), then one
# branch-free loop over the row updates the max and argmax (or the sums). That loop vectorises,
# where a loop over each window's cells cannot (3x faster for a 2x2 max pool).

# Threads pay off only on large inputs: below this many input elements the twin runs on the
# calling thread. Above it, chunks of planes go to gpudl's own threads (cpu_threads), never to an
# OpenMP pool: planes never share an output or gradient pixel, so every chunking gives the same
# bits, and gpudl needs no OpenMP setting that would change PyTorch's (libgomp reads
# OMP_WAIT_POLICY once, when it loads).
PARALLEL_MIN_ELEMENTS = 1 << 21
CHUNK_ELEMENTS = 1 << 18     # input elements per chunk of planes at most (1 MiB of float32)


def _on_planes(twins, planes, args, work):
    """Run a twin on the arrays ``planes`` (sharing their leading, plane axis) and ``args``.

    Under PARALLEL_MIN_ELEMENTS of ``work`` (input elements), ``twins[0]`` in one call; else
    ``twins[1]`` in chunks of planes on the threads cpu_threads leaves free (the twins release
    the GIL), or in one call on a busy machine."""
    if work < PARALLEL_MIN_ELEMENTS:
        twins[0](*planes, *args)
        return
    twin, workers, P = twins[1], cpu_threads.count(), planes[0].shape[0]
    if workers == 1 or P <= 1:
        twin(*planes, *args)
        return
    step = cpu_threads.chunk_size(P, max(1, CHUNK_ELEMENTS * P // work), workers)

    def chunk(p0):
        twin(*(a[p0:p0 + step] for a in planes), *args)
    cpu_threads.map_threads(chunk, range(0, P, step), workers)    # no BLAS in the twins


# The twins release the GIL (they run on cpu_threads' threads) and use NumPy's error model, as
# Numba compiles a parallel loop's body: Python's checks each division for a zero divisor
# ((32,32,64,64) 2x2 average backward on one thread: 2.6 -> 2.1 ms). No divisor here is zero
# (window counts, inf for an empty window, a nonzero divisor_override): the same results.
_twin = njit(cache=True, nogil=True, error_model="numpy")


@njit(inline="always", cache=True)
def _gather_row(src, cols, j, dw, fill, out):
    """out[ow] = the cell that offset j of window ow reads in the input row src, or fill."""
    for ow in range(out.size):
        out[ow] = src[cols[0, ow] + j * dw] if cols[1, ow] <= j < cols[2, ow] else fill


@_twin
def _max_fwd_planes(x, y, argmax, rows, cols, kw, dh, dw):
    P, Ho, Wo = y.shape
    for p in range(P):
        cells = np.empty(Wo, x.dtype)
        for oh in range(Ho):
            best, arg = y[p, oh], argmax[p, oh]
            h0, i0, i1 = rows[0, oh], rows[1, oh], rows[2, oh]
            for ow in range(Wo):      # -inf, and the first cell inside the input, as PyTorch
                best[ow] = -np.inf
                j0 = cols[1, ow]
                arg[ow] = i0 * kw + j0 if i0 < i1 and j0 < cols[2, ow] else 0
            for i in range(i0, i1):
                for j in range(kw):
                    _gather_row(x[p, h0 + i * dh], cols, j, dw, -np.inf, cells)
                    k = i * kw + j
                    for ow in range(Wo):
                        v = cells[ow]
                        take = (v > best[ow]) | (v != v)    # NaN wins, as in PyTorch
                        best[ow] = v if take else best[ow]
                        arg[ow] = k if take else arg[ow]


@_twin
def _max_bwd_cpu(gy, argmax, gx, row_start, col_start, row_off, col_off):
    P, H, W = gx.shape
    Ho, Wo = gy.shape[1], gy.shape[2]
    for p in range(P):                  # scatter within one plane: no two threads share a pixel
        for oh in range(Ho):
            for ow in range(Wo):
                k = argmax[p, oh, ow]
                h = row_start[oh] + row_off[k]
                w = col_start[ow] + col_off[k]
                if 0 <= h < H and 0 <= w < W:   # false only for an all-padding window
                    gx[p, h, w] += gy[p, oh, ow]


@_twin
def _avg_fwd_planes(x, y, rows, cols, kw, row_div, col_div):
    P, Ho, Wo = y.shape
    for p in range(P):
        for oh in range(Ho):
            total = y[p, oh]
            total[:] = 0
            for i in range(rows[1, oh], rows[2, oh]):
                src = x[p, rows[0, oh] + i]
                for j in range(kw):
                    for ow in range(Wo):
                        if cols[1, ow] <= j < cols[2, ow]:
                            total[ow] += src[cols[0, ow] + j]
            for ow in range(Wo):
                total[ow] /= row_div[oh] * col_div[ow]


@_twin
def _avg_bwd_cpu(gy, gx, rows, cols, kw, row_div, col_div):
    P, Ho, Wo = gy.shape
    for p in range(P):                  # scatter within one plane: no two threads share a pixel
        g = np.empty(Wo, gy.dtype)
        for oh in range(Ho):
            for ow in range(Wo):
                g[ow] = gy[p, oh, ow] / (row_div[oh] * col_div[ow])
            for i in range(rows[1, oh], rows[2, oh]):
                dst = gx[p, rows[0, oh] + i]
                for j in range(kw):
                    for ow in range(Wo):
                        if cols[1, ow] <= j < cols[2, ow]:
                            dst[cols[0, ow] + j] += g[ow]


# The serial forward twins fold the planes into the row: for one output row index oh, the cells
# an offset (i, j) reads in EVERY plane are gathered into one buffer of P * Wo and updated in one
# loop, instead of P loops of Wo. Small images have short rows (Wo = 7 for a 3x3 s2 pool of a
# 16x16 image), where the per-row loop overhead dominated: 1.5x faster for (8,16,16) 3x3 s2 max
# (5.7 -> 3.7 us), 1.2-1.8x up to (512,32,32), identical results.
@_twin
def _max_fwd_folded(x, y, argmax, rows, cols, kw, dh, dw):
    P, Ho, Wo = y.shape
    best = np.empty(P * Wo, y.dtype)
    arg = np.empty(P * Wo, argmax.dtype)
    cells = np.empty(P * Wo, x.dtype)
    for oh in range(Ho):
        h0, i0, i1 = rows[0, oh], rows[1, oh], rows[2, oh]
        for ow in range(Wo):          # -inf, and the first cell inside the input, as PyTorch
            j0 = cols[1, ow]
            first = i0 * kw + j0 if i0 < i1 and j0 < cols[2, ow] else 0
            for p in range(P):
                best[p * Wo + ow] = -np.inf
                arg[p * Wo + ow] = first
        for i in range(i0, i1):
            for j in range(kw):
                for p in range(P):
                    _gather_row(x[p, h0 + i * dh], cols, j, dw, -np.inf,
                                cells[p * Wo:(p + 1) * Wo])
                k = i * kw + j
                for q in range(P * Wo):
                    v = cells[q]
                    take = (v > best[q]) | (v != v)     # NaN wins, as in PyTorch
                    best[q] = v if take else best[q]
                    arg[q] = k if take else arg[q]
        for p in range(P):
            for ow in range(Wo):
                y[p, oh, ow] = best[p * Wo + ow]
                argmax[p, oh, ow] = arg[p * Wo + ow]


@_twin
def _avg_fwd_folded(x, y, rows, cols, kw, row_div, col_div):
    P, Ho, Wo = y.shape
    total = np.empty(P * Wo, y.dtype)
    cells = np.empty(P * Wo, x.dtype)
    zero = x.dtype.type(0)
    for oh in range(Ho):
        total[:] = 0
        for i in range(rows[1, oh], rows[2, oh]):
            for j in range(kw):
                for p in range(P):
                    _gather_row(x[p, rows[0, oh] + i], cols, j, 1, zero,
                                cells[p * Wo:(p + 1) * Wo])
                for q in range(P * Wo):
                    total[q] += cells[q]
        for p in range(P):
            for ow in range(Wo):
                y[p, oh, ow] = total[p * Wo + ow] / (row_div[oh] * col_div[ow])


_ROW_PLANES = 8        # planes that _avg_fwd_whole_rows takes through one output row together


@_twin
def _avg_fwd_whole_rows(x, y, rows, cols, kw, row_div, col_div):
    """_avg_fwd_folded when every window spans all kw columns inside the input (no padding or
    clipping along W, the usual case): for each output row, the window's input rows are summed
    first, whole rows at a time (vectorised along W), then kw of those column sums per output
    (1.6x faster than summing each window for (8,16,16) 3x3 s2, 1.4x for (384,24,24) 2x2).
    _ROW_PLANES planes go through each output row together: one set-up per row for all of them
    (8 planes of 16x16: 1.57 -> 1.36 us), in blocks small enough to stay in the caches (all
    1024 planes of 64x64 at once: 9% slower than one at a time; 8: 6% faster)."""
    P, Ho, Wo = y.shape
    W = x.shape[2]
    column = np.empty((min(P, _ROW_PLANES), W), y.dtype)
    for p0 in range(0, P, _ROW_PLANES):
        p1 = min(P, p0 + _ROW_PLANES)
        for oh in range(Ho):
            top, n = rows[0, oh] + rows[1, oh], rows[2, oh] - rows[1, oh]
            for p in range(p0, p1):         # the first row copied, not added to zeros: faster
                for w in range(W):
                    column[p - p0, w] = x[p, top, w] if n > 0 else 0
            for i in range(1, n):
                for p in range(p0, p1):
                    for w in range(W):
                        column[p - p0, w] += x[p, top + i, w]
            divisor = row_div[oh]
            for p in range(p0, p1):
                for ow in range(Wo):
                    w0 = cols[0, ow]
                    total = column[p - p0, w0]
                    for j in range(1, kw):
                        total += column[p - p0, w0 + j]
                    y[p, oh, ow] = total / (divisor * col_div[ow])


@njit(cache=True)
def _as_planes(a):
    """(..., H, W) C-contiguous -> (P, H, W)."""
    P = 1
    for d in range(a.ndim - 2):
        P *= a.shape[d]
    return a.reshape((P, a.shape[-2], a.shape[-1]))


# The serial twins on arrays of any leading dims, for the entries' direct path (see _direct).
@njit(cache=True)
def _max_fwd_direct(x, y, argmax, rows, cols, kw, dh, dw):
    _max_fwd_folded(_as_planes(x), _as_planes(y), _as_planes(argmax),
                    rows, cols, kw, dh, dw)


@njit(cache=True)
def _avg_fwd_direct(x, y, whole_rows, rows, cols, kw, row_div, col_div):
    planes = _as_planes(x)
    if whole_rows:
        _avg_fwd_whole_rows(planes, _as_planes(y), rows, cols, kw, row_div, col_div)
    else:
        _avg_fwd_folded(planes, _as_planes(y), rows, cols, kw, row_div, col_div)


# (below, above PARALLEL_MIN_ELEMENTS) for _on_planes. On large inputs the forward twins go
# plane by plane: folding planes pays on short rows only ((32,32,64,64) 2x2 max: 2.6 ms plane by
# plane, 2.8-3.5 folded; 3x3 s2 average 4.9 vs 5.5-6.0; whole rows 1.3 when they apply).
_MAX_FWD = (_max_fwd_folded, _max_fwd_planes)
_MAX_BWD = (_max_bwd_cpu, _max_bwd_cpu)
_AVG_FWD = (_avg_fwd_folded, _avg_fwd_planes)
_AVG_FWD_WHOLE_ROWS = (_avg_fwd_whole_rows, _avg_fwd_whole_rows)
_AVG_BWD = (_avg_bwd_cpu, _avg_bwd_cpu)


@njit(cache=True)
def _max_bwd_direct(gy, argmax, gx, row_start, col_start, row_off, col_off):
    _max_bwd_cpu(_as_planes(gy), _as_planes(argmax), _as_planes(gx), row_start, col_start,
                 row_off, col_off)


@njit(cache=True)
def _avg_bwd_direct(gy, gx, rows, cols, kw, row_div, col_div):
    _avg_bwd_cpu(_as_planes(gy), _as_planes(gx), rows, cols, kw, row_div, col_div)
