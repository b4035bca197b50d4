"""Numba-CUDA kernels for 2-D max, average and adaptive average pooling, forward and backward.

Pooling is memory-bound: each kernel reads its input once and writes its output once. Forward
kernels run one thread per output element; average and adaptive average share one kernel that
reads each window's cell ranges and reciprocal divisors from small host-built tables. Backward
depends on whether windows overlap:

- non-overlapping windows (the usual 2x2 stride-2 pool): one thread per output window scatters
  its gradient into its own window, writing every cell of it (0 where the argmax is not), so no
  cell has two writers; the input gradient starts uninitialised when the windows tile the input
  exactly and zero-filled otherwise;
- overlapping windows (3x3 stride 2, uneven adaptive bins): one thread per input pixel gathers
  from the windows that cover it. Which windows those are comes from a small per-axis table
  precomputed on the host (``_cover``): the first covering window, how many do, and the pixel's
  offset in the first; further windows follow at a constant step. No atomics (deterministic),
  and no division in any loop (the first generation did ~10 64-bit divisions per input pixel).

Max pooling saves a compact argmax (the offset inside the window, uint8 for windows of up to 256
elements) and its backward routes each gradient to the cell whose offset matches. Average and
adaptive backward multiply by per-axis reciprocal divisors from the CPU twin's ``_divisors``.

Arrays arrive as C-contiguous planes ``(P, H, W)`` (P = N * C). Window geometry matches the CPU
twins in kernels/pool.py. Kernels are built per accumulator type: float32 for float32 and float16
data (loads widen to float32, so float16 maxima are compared and sums accumulated in float32),
float64 for float64 data (gradient checks on a GPU). Literals go through the accumulator type, so
float32 kernels hold no fp64 instruction. Scalars are int32; Numba widens index arithmetic to
64 bits (int32 // int32 is a 64-bit division there), so each thread splits its flat index by
multiplying with host-computed magic numbers (``_magic``) instead: backward divides nothing.
"""

import functools
import math

import numpy as np
from numba import cuda, float32, float64, uint64

from gpudl import backend

from .budget import Budget
from .launch import launch
from .pool import _bins, _divisors, _windows, index_dtype

# Threads per block for every kernel: a flat 1-D grid over outputs (or input pixels). Neighbouring
# threads handle neighbouring columns, so loads and stores coalesce along W; 256 keeps enough
# blocks resident to hide memory latency, which is all these kernels wait on.
THREADS = 256
# Memory-bound: at least 24 of 64 warps resident per SM to keep loads in flight. No kernel
# divides: windows split indices by magic-number multiplications (issue 12).
BUDGET = Budget(threads=THREADS, min_occupancy=0.375, max_div64=0)


def _make_kernels(acc):
    """The pooling kernels with ``acc`` (a Numba float type) as the accumulator type."""

    @cuda.jit(device=True, inline="always")
    def split_cells(t, rows, cols, mp, sp, mc, sc):
        """A flat thread index -> (plane, row, column) in planes of rows x cols cells. Divides
        by multiplying with ``_magic`` numbers (mp, sp) for rows * cols and (mc, sc) for cols:
        no division subroutine."""
        plane = (t * mp) >> sp
        r = t - plane * (rows * cols)
        row = (r * mc) >> sc
        return plane, row, r - row * cols

    @cuda.jit(device=True, inline="always")
    def split(t, a, mp, sp, mc, sc):
        """split_cells over the planes of the (P, rows, cols) array a."""
        return split_cells(t, a.shape[1], a.shape[2], mp, sp, mc, sc)

    @cuda.jit(device=True, inline="always")
    def corner(t, H, W, Ho, Wo, mp, sp, mc, sc):
        """Flat index of the top-left input cell of output t's 2x2 window (stride 2, no
        padding: the window lies inside the plane, Ho = H // 2 and Wo = W // 2)."""
        p, oh, ow = split_cells(t, Ho, Wo, mp, sp, mc, sc)
        return uint64((p * H + 2 * oh) * W + 2 * ow)      # unsigned: no negative-index wrap

    @cuda.jit(device=True, inline="always")
    def better(best, arg, v, cell):
        """keep_max for one more cell of a window whose first cell is already taken."""
        if v > best or v != v:
            return v, cell
        return best, arg

    def window_walk(visit):
        """walk(state, a, p, h0, w0, kh, kw, dh, dw): ``state = visit(state, a, p, h, w,
        cell)`` for every cell of the dilated kh x kw window from (h0, w0) that lies inside
        plane p of ``a`` (cell = i * kw + j, its offset in the window); the last state."""

        @cuda.jit(device=True, inline="always")
        def walk(state, a, p, h0, w0, kh, kw, dh, dw):
            H, W = a.shape[1], a.shape[2]
            for i in range(kh):
                h = h0 + i * dh
                if 0 <= h < H:
                    for j in range(kw):
                        w = w0 + j * dw
                        if 0 <= w < W:
                            state = visit(state, a, p, h, w, i * kw + j)
            return state
        return walk

    @cuda.jit(device=True, inline="always")
    def keep_max(best_arg, x, p, h, w, cell):
        """(best, arg) after cell (h, w): its value when larger, or NaN (NaN wins, as in
        PyTorch), or the first cell; float16 compared in float32."""
        best, arg = best_arg
        v = acc(x[p, h, w])
        if arg < 0 or v > best or v != v:
            best = v
            arg = cell
        return best, arg

    @cuda.jit(device=True, inline="always")
    def route(grad_arg, gx, p, h, w, cell):
        """Write cell (h, w) of gx: the gradient where the cell is the argmax, else 0."""
        g, k = grad_arg
        gx[p, h, w] = g if cell == k else acc(0)
        return grad_arg

    max_of_window, route_window = window_walk(keep_max), window_walk(route)

    @cuda.jit
    def max_fwd(x, y, argmax, kh, kw, sh, sw, ph, pw, dh, dw, mp, sp, mc, sc):
        t = cuda.grid(1)
        if t < y.size:
            p, oh, ow = split(t, y, mp, sp, mc, sc)
            best, arg = max_of_window((acc(-math.inf), -1), x, p, oh * sh - ph, ow * sw - pw,
                                      kh, kw, dh, dw)
            y[p, oh, ow] = best                 # -inf for a window that holds only padding
            argmax[p, oh, ow] = max(arg, 0)

    @cuda.jit
    def max_fwd_2x2(x, y, argmax, H, W, Ho, Wo, mp, sp, mc, sc):
        """max_fwd for the common 2x2 stride-2 window, on flat arrays: four loads, no loop, no
        bounds test."""
        t = cuda.grid(1)
        if t < y.size:
            i, one, row = corner(t, H, W, Ho, Wo, mp, sp, mc, sc), uint64(1), uint64(W)
            best, arg = better(acc(x[i]), 0, acc(x[i + one]), 1)
            best, arg = better(best, arg, acc(x[i + row]), 2)
            best, arg = better(best, arg, acc(x[i + row + one]), 3)
            y[t] = best
            argmax[t] = arg

    @cuda.jit
    def mean_fwd(x, y, rows, cols, inv_rows, inv_cols, mp, sp, mc, sc):
        """Average and adaptive average: each output sums its window, cells [lo, hi) per axis
        from the host tables, and scales by the per-axis reciprocal divisors."""
        t = cuda.grid(1)
        if t < y.size:
            p, oh, ow = split(t, y, mp, sp, mc, sc)
            total = acc(0)
            w0, w1 = cols[0, ow], cols[1, ow]
            for h in range(rows[0, oh], rows[1, oh]):
                for w in range(w0, w1):
                    total += acc(x[p, h, w])
            y[p, oh, ow] = total * inv_rows[oh] * inv_cols[ow]

    @cuda.jit
    def mean_fwd_2x2(x, y, H, W, Ho, Wo, mp, sp, mc, sc):
        """mean_fwd for the 2x2 stride-2 window without padding or divisor override (the
        table kernel's sum order and its two factors of 1/2)."""
        t = cuda.grid(1)
        if t < y.size:
            i, one, row = corner(t, H, W, Ho, Wo, mp, sp, mc, sc), uint64(1), uint64(W)
            half = acc(0.5)
            total = acc(x[i]) + acc(x[i + one]) + acc(x[i + row]) + acc(x[i + row + one])
            y[t] = total * half * half

    @cuda.jit
    def max_bwd_scatter(gy, argmax, gx, kh, kw, sh, sw, ph, pw, dh, dw, mp, sp, mc, sc):
        """Non-overlapping windows: each output window writes all of its cells."""
        t = cuda.grid(1)
        if t < gy.size:
            p, oh, ow = split(t, gy, mp, sp, mc, sc)
            route_window((acc(gy[p, oh, ow]), argmax[p, oh, ow]), gx, p, oh * sh - ph,
                         ow * sw - pw, kh, kw, dh, dw)

    @cuda.jit
    def max_bwd_2x2(gy, argmax, gx, H, W, Ho, Wo, mp, sp, mc, sc):
        """max_bwd_scatter for the 2x2 stride-2 window, on flat arrays."""
        t = cuda.grid(1)
        if t < gy.size:
            i, one, row = corner(t, H, W, Ho, Wo, mp, sp, mc, sc), uint64(1), uint64(W)
            g, k = acc(gy[t]), argmax[t]
            zero = acc(0)
            gx[i] = g if k == 0 else zero
            gx[i + one] = g if k == 1 else zero
            gx[i + row] = g if k == 2 else zero
            gx[i + row + one] = g if k == 3 else zero

    @cuda.jit
    def mean_bwd_2x2(gy, gx, H, W, Ho, Wo, mp, sp, mc, sc):
        """mean_bwd_scatter for mean_fwd_2x2's windows."""
        t = cuda.grid(1)
        if t < gy.size:
            i, one, row = corner(t, H, W, Ho, Wo, mp, sp, mc, sc), uint64(1), uint64(W)
            half = acc(0.5)
            g = acc(gy[t]) * half * half
            gx[i] = g
            gx[i + one] = g
            gx[i + row] = g
            gx[i + row + one] = g

    @cuda.jit
    def mean_bwd_scatter(gy, gx, kh, kw, sh, sw, ph, pw, inv_rows, inv_cols, mp, sp, mc, sc):
        """Non-overlapping windows: each output window spreads its share over its cells."""
        t = cuda.grid(1)
        H, W = gx.shape[1], gx.shape[2]
        if t < gy.size:
            p, oh, ow = split(t, gy, mp, sp, mc, sc)
            g = acc(gy[p, oh, ow]) * inv_rows[oh] * inv_cols[ow]
            h0, w0 = oh * sh - ph, ow * sw - pw
            for h in range(max(h0, 0), min(h0 + kh, H)):
                for w in range(max(w0, 0), min(w0 + kw, W)):
                    gx[p, h, w] = g

    @cuda.jit
    def max_bwd_gather(gy, argmax, gx, rows, cols, kw, step_oh, step_i, step_ow, step_j,
                       mp, sp, mc, sc):
        """Overlapping windows: each input pixel sums the gradients routed to it."""
        t = cuda.grid(1)
        if t < gx.size:
            p, h, w = split(t, gx, mp, sp, mc, sc)
            total = acc(0)
            oh, i = rows[0, h], rows[2, h]
            for _ in range(rows[1, h]):
                ow, j = cols[0, w], cols[2, w]
                for _ in range(cols[1, w]):
                    if argmax[p, oh, ow] == i * kw + j:
                        total += acc(gy[p, oh, ow])
                    ow += step_ow
                    j -= step_j
                oh += step_oh
                i -= step_i
            gx[p, h, w] = total

    @cuda.jit
    def mean_bwd_gather(gy, gx, rows, cols, inv_rows, inv_cols, mp, sp, mc, sc):
        """Overlapping windows (or bins): each input pixel sums its windows' shares."""
        t = cuda.grid(1)
        if t < gx.size:
            p, h, w = split(t, gx, mp, sp, mc, sc)
            total = acc(0)
            o0, o1 = cols[0, w], cols[0, w] + cols[1, w]
            for oh in range(rows[0, h], rows[0, h] + rows[1, h]):
                part = acc(0)
                for ow in range(o0, o1):
                    part += acc(gy[p, oh, ow]) * inv_cols[ow]
                total += part * inv_rows[oh]
            gx[p, h, w] = total

    return {"max_fwd": max_fwd, "max_fwd_2x2": max_fwd_2x2, "mean_fwd": mean_fwd,
            "mean_fwd_2x2": mean_fwd_2x2, "max_bwd_scatter": max_bwd_scatter,
            "max_bwd_2x2": max_bwd_2x2, "max_bwd_gather": max_bwd_gather,
            "mean_bwd_scatter": mean_bwd_scatter, "mean_bwd_2x2": mean_bwd_2x2,
            "mean_bwd_gather": mean_bwd_gather}


_KERNELS = {np.float32: _make_kernels(float32), np.float64: _make_kernels(float64)}  # lazy


# --------------------------------------------------------------------------- signatures
@functools.lru_cache(maxsize=None)      # built at every launch: 6 us of string work uncached
def _signature(name, dtype, index=None):
    """The one signature ``name`` runs with for ``dtype`` data (and ``index`` argmax dtype)."""
    dims = "::1" if name.endswith("_2x2") else ":, :, ::1"      # 2x2 kernels: flat arrays
    data = f"{np.dtype(dtype).name}[{dims}]"
    acc = "float64" if np.dtype(dtype) == np.float64 else "float32"
    arg = f"{np.dtype(index).name}[{dims}]" if index is not None else None
    table, inv = "int32[:, ::1]", f"{acc}[::1]"
    args = {
        "max_fwd": (data, data, arg) + ("int32",) * 8,
        "max_fwd_2x2": (data, data, arg) + ("int32",) * 4,
        "max_bwd_2x2": (data, arg, data) + ("int32",) * 4,
        "mean_fwd_2x2": (data, data) + ("int32",) * 4,
        "mean_bwd_2x2": (data, data) + ("int32",) * 4,
        "mean_fwd": (data, data, table, table, inv, inv),
        "max_bwd_scatter": (data, arg, data) + ("int32",) * 8,
        "max_bwd_gather": (data, arg, data, table, table) + ("int32",) * 5,
        "mean_bwd_scatter": (data, data) + ("int32",) * 6 + (inv, inv),
        "mean_bwd_gather": (data, data, table, table, inv, inv),
    }[name] + ("int64",) * 4                          # the index split's magic numbers
    return f"void({', '.join(args)})"


def _all_signatures(name, dtype):
    indices = ((np.uint8,) if name.endswith("_2x2") else (np.uint8, np.int32)) \
        if name.startswith("max") else (None,)
    return [_signature(name, dtype, index) for index in indices]


def _magic(d):
    """(m, s) with (t * m) >> s == t // d for every 0 <= t < 2**31 (Granlund and Montgomery:
    s = 31 + ceil(log2 d), m = ceil(2**s / d) <= 2**32, so t * m < 2**63 fits int64)."""
    d = max(d, 1)
    s = 31 + (d - 1).bit_length()
    return ((1 << s) + d - 1) // d, s


MAX_FLAT = 2**31 - 1       # threads per launch: flat indices stay below 2**31 for _magic


def _run(name, dtype, planes, rest, shape, index=None):
    """Launch kernel ``name`` for ``dtype`` data with one thread per cell of ``shape`` = (rows,
    cols) in each plane of the (P, ...) arrays ``planes`` (then the arguments ``rest``),
    specialised (launch.py). More than MAX_FLAT threads launch in slices of whole planes. The
    2x2 kernels take the planes flat."""
    kernel = _KERNELS[np.float64 if dtype == np.float64 else np.float32][name]
    signature = _signature(name, dtype, index)
    per_plane = shape[0] * shape[1]
    if per_plane > MAX_FLAT:
        raise ValueError(f"pooling: a plane of {shape[0]} x {shape[1]} cells is more than one "
                         f"launch indexes ({MAX_FLAT})")
    magic = tuple(np.int64(v) for v in _magic(per_plane) + _magic(shape[1]))
    count = planes[0].shape[0]
    step = max(1, MAX_FLAT // max(per_plane, 1))
    for p0 in range(0, count, step):
        part = tuple(a[p0:p0 + step] for a in planes)
        n = part[0].shape[0] * per_plane
        if name.endswith("_2x2"):
            part = tuple(a.reshape(-1) for a in part)
        launch(kernel, signature, (n + THREADS - 1) // THREADS, THREADS, *part, *rest, *magic)


# --------------------------------------------------------------------------- window tables
def _cover(table, size, dilation):
    """For each input cell along one axis, the windows covering it, from an ``_axis_windows``
    table (start, first, end, span) of window o's cells ``start + i * dilation``, i in
    [first, end). Returns (an int32 (3, size) array of (first covering window, how many, the
    cell's offset i in the first), the most windows any cell has). Consecutive covering windows
    differ by a constant step (``_steps``)."""
    start, first, end = (np.asarray(r, np.int64) for r in table[:3])
    k = int(end.max(initial=0))
    o = np.repeat(np.arange(start.size), k)
    i = np.tile(np.arange(k), start.size)
    keep = (i >= first[o]) & (i < end[o])
    o, i = o[keep], i[keep]
    cell = start[o] + i * dilation
    order = np.lexsort((o, cell))
    o, i, cell = o[order], i[order], cell[order]
    count = np.bincount(cell, minlength=size)[:size]
    at = np.minimum(np.searchsorted(cell, np.arange(size)), max(cell.size - 1, 0))
    cover = np.zeros((3, size), np.int32)
    if cell.size:
        cover[0] = np.where(count > 0, o[at], 0)
        cover[2] = np.where(count > 0, i[at], 0)
    cover[1] = count
    return cover, int(count.max(initial=0)), bool((count == 1).all())


def _steps(stride, dilation):
    """(window step, offset step) between consecutive windows covering one cell: a = o*s + i*d
    has solutions o spaced d/g apart, with i falling by s/g (g = gcd(s, d))."""
    g = math.gcd(stride, dilation)
    return dilation // g, stride // g


@functools.lru_cache(maxsize=256)
def _geometry(in_hw, out_hw, kernel_size, stride, padding, dilation, adaptive=False):
    """Host tables for one geometry, cached: ((rows, cols) cover tables, overlapping, exact
    tiling, the (rows, cols) window tables)."""
    if adaptive:
        windows = _bins((None, None) + in_hw, out_hw)
        dilation = (1, 1)
    else:
        windows = _windows((None, None) + in_hw, out_hw, kernel_size, stride, padding, dilation)
    rows, most_h, exact_h = _cover(windows[0], in_hw[0], dilation[0])
    cols, most_w, exact_w = _cover(windows[1], in_hw[1], dilation[1])
    return (rows, cols), max(most_h, most_w) > 1, exact_h and exact_w, windows


_DEVICE_TABLES = {}     # key -> device copies of host tables (a few hundred bytes each)


def _device():
    """The current CUDA device's index (0 without CuPy): plans holding device tables are kept
    per device."""
    return backend._cupy.cuda.runtime.getDevice() if backend._cupy is not None else 0


def _on_device(key, build):
    """Device copies of the host tables ``build()`` returns, uploaded once per ``key`` and
    device."""
    key = key + (_device(),)
    tables = _DEVICE_TABLES.get(key)
    if tables is None:
        if len(_DEVICE_TABLES) >= 256:
            _DEVICE_TABLES.clear()
        tables = _DEVICE_TABLES[key] = tuple(
            backend.to_device_array(np.ascontiguousarray(a), "cuda", "pooling's window tables")
            for a in build())
    return tables


def _ranges(table):
    """An ``_axis_windows`` table as int32 (2, out) [lo, hi) cell ranges (dilation 1)."""
    return np.stack([table[0] + table[1], table[0] + table[2]]).astype(np.int32)


def _mean_tables(geo, adaptive, count_include_pad, divisor, dtype):
    """(device tables, overlapping, exact) of one average-pooling geometry, uploaded once: the
    windows' cell ranges per axis (forward), the cover tables (backward gather) and the per-axis
    reciprocal divisors."""
    covers, overlapping, exact, windows = _geometry(*geo, adaptive=adaptive)
    key = ("mean", geo, adaptive, count_include_pad, divisor, np.dtype(dtype).name)
    tables = _on_device(key, lambda: (_ranges(windows[0]), _ranges(windows[1])) + covers
                        + _reciprocals(windows, count_include_pad, divisor, dtype))
    return tables, overlapping, exact


def _mean_forward(x, out, geo, count_include_pad, divisor, adaptive):
    xp = backend.get_array_module(x)
    planes = _planes(xp, x)
    y = xp.empty((planes.shape[0],) + out, x.dtype)
    tables, _, _ = _mean_tables(geo, adaptive, count_include_pad, divisor, x.dtype)
    _run("mean_fwd", x.dtype, (planes, y), tables[:2] + tables[4:], out)
    return y.reshape(x.shape[:-2] + out)


def _reciprocals(windows, count_include_pad, divisor, dtype):
    acc = np.float64 if dtype == np.float64 else np.float32
    return tuple((1 / f).astype(acc) for f in _divisors(windows, count_include_pad, divisor,
                                                        np.float64))


def _planes(xp, a):
    """(..., H, W) -> a C-contiguous (P, H, W) array."""
    return xp.ascontiguousarray(a).reshape((-1,) + a.shape[-2:])


def _ints(*values):
    return tuple(np.int32(v) for v in values)


def _grad_input(xp, input_shape, dtype, zero):
    """The input gradient, in the input's shape (an array owning its memory), zero-filled when
    the kernel leaves cells unwritten."""
    shape = tuple(input_shape)
    return xp.zeros(shape, dtype) if zero else xp.empty(shape, dtype)


# --------------------------------------------------------------------------- launchers
def _halving(in_hw, out_hw, kernel_size, stride, padding, dilation):
    """Whether the pool is the plain 2x2 stride-2 one whose windows lie inside the input (the
    2x2 kernels' case): then their scalars (H, W, Ho, Wo), else None."""
    if (tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation)) != \
            ((2, 2), (2, 2), (0, 0), (1, 1)) or \
            tuple(out_hw) != (in_hw[0] // 2, in_hw[1] // 2):
        return None
    return _ints(*in_hw, *out_hw)


# --------------------------------------------------------------------------- call plans
# A small pool is host-bound on a GPU (a few us of kernel, ~0.2 ms a call: benchmarks/RESULTS.md),
# so everything a call works out from the shapes, dtypes and window alone (output shape, which
# kernel, its signature, grid, scalars, magic numbers, device tables) is a *plan*, built once per
# such key (lru caches keyed by plain tuples, dtypes and MAX_FLAT). A call then allocates its
# outputs in their final shapes (arrays owning their memory: autograd's view checks skip them),
# views them as the kernel takes them and launches once; past MAX_FLAT threads it goes through
# ``_run``, which slices whole planes.

def _one_launch(name, dtype, index, planes, cells, max_flat):
    """(kernel, signature, blocks) when one launch runs kernel ``name`` over ``planes`` planes of
    ``cells`` = (rows, cols) threads each, else None (no planes, or more than one launch: the
    caller goes through ``_run``, which slices, or refuses a plane past ``max_flat``)."""
    per_plane = cells[0] * cells[1]
    if planes == 0 or per_plane == 0 or per_plane > max_flat or \
            planes > max(1, max_flat // per_plane):
        return None
    kernel = _KERNELS[np.float64 if dtype == np.float64 else np.float32][name]
    return kernel, _signature(name, dtype, index), (planes * per_plane + THREADS - 1) // THREADS


def _plan(name, dtype, index, planes, cells, shapes, rest, max_flat):
    """A launch plan: (name, dtype, index, cells, the arrays' (P, ...) plane shapes, the flat or
    plane shapes the kernel takes, rest + the magic numbers, the one launch or None)."""
    plane_views = tuple((planes,) + tuple(s) for s in shapes)
    flat = name.endswith("_2x2")
    views = tuple((-1,) for _ in shapes) if flat else plane_views
    magic = tuple(np.int64(v) for v in _magic(cells[0] * cells[1]) + _magic(cells[1]))
    return (name, dtype, index, cells, plane_views, views, tuple(rest),
            tuple(rest) + magic, _one_launch(name, dtype, index, planes, cells, max_flat))


def _go(plan, arrays):
    """Launch ``plan``'s kernel over ``arrays`` (whole arrays in any shape of their size)."""
    name, dtype, index, cells, plane_views, views, rest, args, one = plan
    if one is not None:
        launch(one[0], one[1], one[2], THREADS,
               *[a.reshape(v) for a, v in zip(arrays, views)], *args)
    else:
        _run(name, dtype, tuple(a.reshape(v) for a, v in zip(arrays, plane_views)), rest,
             cells, index=index)


def _planes_of(shape):
    return math.prod(shape[:-2])


@functools.lru_cache(maxsize=256)
def _max_forward_plan(shape, dtype, kernel_size, stride, padding, dilation, ceil_mode,
                      max_flat):
    """(output shape, argmax dtype, launch plan) of a max pool over an array of ``shape``."""
    from .pool import _output_shape
    out = _output_shape(shape, kernel_size, stride, padding, dilation, ceil_mode)
    index = np.dtype(index_dtype(kernel_size))
    sizes = _halving(shape[-2:], out, kernel_size, stride, padding, dilation)
    name, rest = ("max_fwd_2x2", sizes) if sizes else \
        ("max_fwd", _ints(*kernel_size, *stride, *padding, *dilation))
    plan = _plan(name, dtype, index, _planes_of(shape), out, (shape[-2:], out, out), rest,
                 max_flat)
    return shape[:-2] + out, index, plan


def max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode):
    out_shape, index, plan = _max_forward_plan(
        x.shape, x.dtype, tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation),
        bool(ceil_mode), MAX_FLAT)
    xp = backend.get_array_module(x)
    y = xp.empty(out_shape, x.dtype)
    argmax = xp.empty(out_shape, index)
    _go(plan, (xp.ascontiguousarray(x), y, argmax))
    return y, argmax


@functools.lru_cache(maxsize=256)
def _max_backward_plan(input_shape, grad_shape, dtype, index, kernel_size, stride, padding,
                       dilation, max_flat, device):
    """(whether gx starts zeroed, launch plan) of max pooling's backward."""
    in_hw, out_hw = input_shape[-2:], grad_shape[-2:]
    geo = (in_hw, out_hw, kernel_size, stride, padding, dilation)
    (rows, cols), overlapping, exact, _ = _geometry(*geo)
    planes = _planes_of(input_shape)
    shapes = (out_hw, out_hw, in_hw)                    # gy, argmax, gx
    if overlapping:
        tables = _on_device(("max", geo), lambda: (rows, cols))
        steps = _steps(stride[0], dilation[0]) + _steps(stride[1], dilation[1])
        plan = _plan("max_bwd_gather", dtype, index, planes, in_hw, shapes,
                     tables + _ints(kernel_size[1], *steps), max_flat)
    elif sizes := _halving(in_hw, out_hw, kernel_size, stride, padding, dilation):
        plan = _plan("max_bwd_2x2", dtype, index, planes, out_hw, shapes, sizes, max_flat)
    else:
        plan = _plan("max_bwd_scatter", dtype, index, planes, out_hw, shapes,
                     _ints(*kernel_size, *stride, *padding, *dilation), max_flat)
    return not (exact or overlapping), plan


def max_pool2d_backward(gy, argmax, input_shape, kernel_size, stride, padding, dilation):
    zero, plan = _max_backward_plan(
        tuple(input_shape), gy.shape, gy.dtype, argmax.dtype, tuple(kernel_size), tuple(stride),
        tuple(padding), tuple(dilation), MAX_FLAT, _device())
    xp = backend.get_array_module(gy)
    gx = _grad_input(xp, input_shape, gy.dtype, zero)
    _go(plan, (xp.ascontiguousarray(gy), xp.ascontiguousarray(argmax), gx))
    return gx


@functools.lru_cache(maxsize=256)
def _mean_forward_plan(shape, dtype, out, geo, count_include_pad, divisor, adaptive, max_flat,
                       device):
    """(output shape, launch plan) of an average (or adaptive average) pool's forward."""
    planes, in_hw = _planes_of(shape), shape[-2:]
    sizes = not (divisor or adaptive) and _halving(in_hw, out, *geo[2:5], (1, 1))
    if sizes:
        plan = _plan("mean_fwd_2x2", dtype, None, planes, out, (in_hw, out), sizes, max_flat)
    else:
        tables, _, _ = _mean_tables(geo, adaptive, count_include_pad, divisor, dtype)
        plan = _plan("mean_fwd", dtype, None, planes, out, (in_hw, out),
                     tables[:2] + tables[4:], max_flat)
    return shape[:-2] + out, plan


def _mean_forward(x, out, geo, count_include_pad, divisor, adaptive):
    out_shape, plan = _mean_forward_plan(x.shape, x.dtype, out, geo, count_include_pad, divisor,
                                         adaptive, MAX_FLAT, _device())
    xp = backend.get_array_module(x)
    y = xp.empty(out_shape, x.dtype)
    _go(plan, (xp.ascontiguousarray(x), y))
    return y


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor):
    out_shape, plan = _avg_forward_plan(x.shape, x.dtype, tuple(kernel_size), tuple(stride),
                                        tuple(padding), bool(ceil_mode), bool(count_include_pad),
                                        int(divisor), MAX_FLAT, _device())
    xp = backend.get_array_module(x)
    y = xp.empty(out_shape, x.dtype)
    _go(plan, (xp.ascontiguousarray(x), y))
    return y


@functools.lru_cache(maxsize=256)
def _avg_forward_plan(shape, dtype, kernel_size, stride, padding, ceil_mode, count_include_pad,
                      divisor, max_flat, device):
    """``_mean_forward_plan`` of an average pool, its output size worked out too."""
    from .pool import _output_shape
    out = _output_shape(shape, kernel_size, stride, padding, (1, 1), ceil_mode)
    geo = (shape[-2:], out, kernel_size, stride, padding, (1, 1))
    return _mean_forward_plan(shape, dtype, out, geo, count_include_pad, divisor, False,
                              max_flat, device)


@functools.lru_cache(maxsize=256)
def _mean_backward_plan(input_shape, grad_shape, dtype, geo, scatter_args, count_include_pad,
                        divisor, adaptive, max_flat, device):
    """(whether gx starts zeroed, launch plan) of an average (or adaptive) pool's backward."""
    planes, in_hw, out_hw = _planes_of(input_shape), input_shape[-2:], grad_shape[-2:]
    shapes = (out_hw, in_hw)                            # gy, gx
    sizes = not (divisor or adaptive) and _halving(*geo[:5], (1, 1))
    if sizes:
        return not _geometry(*geo)[2], _plan("mean_bwd_2x2", dtype, None, planes, out_hw,
                                             shapes, sizes, max_flat)
    tables, overlapping, exact = _mean_tables(geo, adaptive, count_include_pad, divisor, dtype)
    if overlapping:
        plan = _plan("mean_bwd_gather", dtype, None, planes, in_hw, shapes, tables[2:],
                     max_flat)
    else:
        plan = _plan("mean_bwd_scatter", dtype, None, planes, out_hw, shapes,
                     _ints(*scatter_args) + tables[4:], max_flat)
    return not (exact or overlapping), plan


def _mean_backward(gy, input_shape, geo, scatter_args, count_include_pad, divisor, adaptive):
    zero, plan = _mean_backward_plan(tuple(input_shape), gy.shape, gy.dtype, geo, scatter_args,
                                     count_include_pad, divisor, adaptive, MAX_FLAT, _device())
    xp = backend.get_array_module(gy)
    gx = _grad_input(xp, input_shape, gy.dtype, zero)
    _go(plan, (xp.ascontiguousarray(gy), gx))
    return gx


def avg_pool2d_backward(gy, input_shape, kernel_size, stride, padding, count_include_pad,
                        divisor):
    geo = (tuple(input_shape[-2:]), tuple(gy.shape[-2:]), tuple(kernel_size), tuple(stride),
           tuple(padding), (1, 1))
    return _mean_backward(gy, input_shape, geo, (*kernel_size, *stride, *padding),
                          bool(count_include_pad), int(divisor), adaptive=False)


def adaptive_avg_pool2d_forward(x, out):
    geo = (tuple(x.shape[-2:]), tuple(out), None, None, None, None)
    return _mean_forward(x, tuple(out), geo, False, 0, True)


def adaptive_avg_pool2d_backward(gy, input_shape):
    (H, W), (Ho, Wo) = tuple(input_shape[-2:]), tuple(gy.shape[-2:])
    geo = ((H, W), (Ho, Wo), None, None, None, None)
    # bins that tile the input exactly (H % Ho == 0) are windows of size and stride H // Ho
    kh, kw = -(-H // max(Ho, 1)), -(-W // max(Wo, 1))
    return _mean_backward(gy, input_shape, geo, (kh, kw, kh, kw, 0, 0), False, 0, adaptive=True)


# --------------------------------------------------------------------------- signature table
SIGNATURES = [
    (_KERNELS[np.float64 if dtype == "float64" else np.float32][name],
     _all_signatures(name, dtype), BUDGET)
    for name in _KERNELS[np.float32]
    for dtype in ("float32", "float16", "float64")
]
