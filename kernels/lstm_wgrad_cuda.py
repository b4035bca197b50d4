"""A recurrent layer's weight and bias gradients in ONE Numba-CUDA launch, for short sequences.

After the backward pass (kernels/lstm.py) the gradients of w_ih, w_hh and the biases are sums
over all T*B rows of the gate gradients ``d`` (rows, G): ``g_w_ih = d^T x``,
``g_w_hh = d^T h_prev``, ``g_b = d^T 1``: two cuBLAS GEMMs and a CuPy reduction, three nodes
of a captured step for a few microseconds of work each when the layer is small (the sunspots
LSTM: 384 rows). Here block k computes row k of all three, the columns of ``[x | h_prev | 1]``
along a warp's lanes, up to 32 at a time, the rows split over the block's warps (up to WARPS; UNROLL rows a
step, each its own partial sum, so the loads of UNROLL rows are in flight together), the warps'
partial sums added in a fixed order: the same bits every run. A warp walks its rows once per
32 columns, one after the other: kernels/lstm.py takes this kernel for float32 layers whose walks
take at most ``STEPS_MAX`` steps of UNROLL rows (the sunspots layers: 12 and 18), beyond which
cuBLAS's tiles are likely faster, when all three gradients are wanted and the two GEMMs would
see the same gate gradients (not GRU's).
"""

import numpy as np
from numba import cuda, float32, uint64

from .budget import Budget
from .launch import launch

WARPS = 16              # row slices of a block at most (512 threads)
UNROLL = 4              # rows a warp has in flight per step
STEPS_MAX = 24          # larger layers keep the GEMMs (~4 us of loads at an L2 latency a
                        # step; not yet timed on a GPU)
SIGNATURE = "void(" + ", ".join(["float32[:, ::1]"] * 5 + ["float32[::1]"]) + ")"


@cuda.jit(device=True, inline="always")
def _column_sum(d, k, a, column, ones, first_row, rows, warps):
    """sum over rows r = first_row, first_row + warps, ... of d[r, k] * a[r, column] (of
    d[r, k] alone with ``ones``), over UNROLL partial sums: UNROLL rows' loads in flight."""
    s0 = s1 = s2 = s3 = float32(0)
    r = first_row
    if ones:
        while r + (UNROLL - 1) * warps < rows:
            s0 += d[uint64(r), k]
            s1 += d[uint64(r + warps), k]
            s2 += d[uint64(r + 2 * warps), k]
            s3 += d[uint64(r + 3 * warps), k]
            r += UNROLL * warps
        while r < rows:
            s0 += d[uint64(r), k]
            r += warps
    else:
        while r + (UNROLL - 1) * warps < rows:
            r0, r1 = uint64(r), uint64(r + warps)
            r2, r3 = uint64(r + 2 * warps), uint64(r + 3 * warps)
            s0 += d[r0, k] * a[r0, column]
            s1 += d[r1, k] * a[r1, column]
            s2 += d[r2, k] * a[r2, column]
            s3 += d[r3, k] * a[r3, column]
            r += UNROLL * warps
        while r < rows:
            s0 += d[uint64(r), k] * a[uint64(r), column]
            r += warps
    return (s0 + s1) + (s2 + s3)


@cuda.jit
def weight_grads_kernel(d, x, h_prev, g_w_ih, g_w_hh, g_b):
    k = uint64(cuda.blockIdx.x)
    lane, warp = cuda.threadIdx.x, cuda.threadIdx.y
    lanes, warps = cuda.blockDim.x, cuda.blockDim.y
    rows, I, H = d.shape[0], x.shape[1], h_prev.shape[1]
    partial = cuda.shared.array((WARPS, 32), float32)
    for first in range(0, I + H + 1, lanes):
        m = first + lane                   # column m of [x | h_prev | 1]
        if m < I:
            partial[warp, lane] = _column_sum(d, k, x, uint64(m), False, warp, rows, warps)
        elif m <= I + H:
            partial[warp, lane] = _column_sum(d, k, h_prev, uint64(m - I), m == I + H, warp,
                                              rows, warps)
        cuda.syncthreads()
        if warp == 0 and m <= I + H:
            total = float32(0)
            for w in range(warps):
                total += partial[w, lane]
            if m < I:
                g_w_ih[k, uint64(m)] = total
            elif m < I + H:
                g_w_hh[k, uint64(m - I)] = total
            else:
                g_b[k] = total
        cuda.syncthreads()


def _shape(rows, columns):
    """(lanes, warps) of a block for ``rows`` rows and ``columns`` columns: no idle lanes
    under 32 columns, two steps a warp at least."""
    return min(32, columns), min(WARPS, -(-rows // (2 * UNROLL)))


def steps(rows, columns):
    """Steps of UNROLL rows a warp takes, one after the other, for all ``columns``."""
    lanes, warps = _shape(rows, columns)
    return -(-columns // lanes) * -(-rows // (warps * UNROLL))


def takes(d, x, h_prev):
    """Whether this kernel serves gate gradients ``d`` (rows, G) of the input ``x`` (rows, I)
    and previous states ``h_prev`` (rows, H)."""
    rows, columns = d.shape[0], x.shape[1] + h_prev.shape[1] + 1
    return (d.dtype == x.dtype == h_prev.dtype == np.float32 and rows > 0
            and steps(rows, columns) <= STEPS_MAX)


def weight_grads(d, x, h_prev, xp):
    """(g_w_ih (G, I), g_w_hh (G, H), g_b (G,)) from C-contiguous float32 ``d`` (rows, G),
    ``x`` (rows, I) and ``h_prev`` (rows, H) of one layer, in one launch."""
    G = d.shape[1]
    g_w_ih, g_w_hh = xp.empty((G, x.shape[1]), d.dtype), xp.empty((G, h_prev.shape[1]), d.dtype)
    g_b = xp.empty(G, d.dtype)
    from .lstm_cuda import kernel_args
    block = _shape(d.shape[0], x.shape[1] + h_prev.shape[1] + 1)
    launch(weight_grads_kernel, SIGNATURE, G, block,
           *kernel_args((d, x, h_prev, g_w_ih, g_w_hh, g_b)))
    return g_w_ih, g_w_hh, g_b


# Latency-bound by design (a block per gate row, ~one per SM for the small layers it takes):
# the hot loop is UNROLL rows' loads and FMAs (44 instructions, 9% FFMA at sm_90: the rest is
# their index math).
SIGNATURES = [(weight_grads_kernel, [SIGNATURE],
               Budget(threads=32 * WARPS, min_occupancy=0.25, min_fma_share=0.08))]
