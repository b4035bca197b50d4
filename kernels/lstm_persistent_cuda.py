"""Persistent Numba-CUDA kernels for a whole LSTM layer: ONE launch per layer, direction and pass.

The per-step path (kernels/lstm_cuda.py) costs two launches per time step forward (a cuBLAS GEMM
``h_prev @ w_hh.T`` and the fused gate kernel) and two backward, so a short, narrow LSTM like the
sunspots model (hidden 32, T 32-128) is bound by launch latency, not arithmetic. Here the time loop
runs inside one kernel:

- the grid splits the batch: each block owns ``rows`` batch rows for the whole sequence, so blocks
  never talk to each other (no grid-wide barrier, no cooperative launch);
- ``w_hh`` sits in shared memory (float32, dynamic shared memory under the 48 KiB a block gets
  without an opt-in), next to the block's hidden states and gates;
- forward, per step: every thread computes one gate pre-activation of one row,
  ``x W_ih^T + b`` (from the one input GEMM done before, kernels/lstm.py) plus
  ``h_{t-1} . w_hh[k]`` from shared memory, and its nonlinearity; after a barrier one thread per
  hidden unit updates the cell and publishes h_t; a second barrier closes the step;
- backward, per step (reverse order): one thread per hidden unit turns dL/dh_t and the carried
  dL/dc into the four gate gradients; after a barrier every thread computes one quarter (one
  gate block) of ``dh_{t-1} = dgates_t . w_hh[:, j]``; the quarters are summed when read, so the
  step again needs two barriers. The weight gradients stay outside as GEMMs over all T*B rows.

Both kernels read and write the per-step path's buffers in its layout (gates activated in place
of the input projection, c and h in (T + 1, B, H) slot buffers, tanh(c) per step; see
kernels/lstm.py), so the two paths are interchangeable step for step.

Threads: a block is (H, 4, rows): x = hidden unit j, y = gate block q (gate k = q*H + j), z = the
block's batch row, so no thread divides to find its gate. Which layers take this path
(``rows_per_block``): float32 LSTMs whose ``w_hh`` fits beside one row's state in 48 KiB, i.e.
hidden size up to 54; the rest (float64, larger H, GRU and RNN) keep the per-step path.
"""

import math

import numpy as np
from numba import cuda, float32, uint64

from gpudl import backend

from .budget import Budget
from .launch import launch
from .lstm_cuda import _sigmoid, kernel_args

SHARED_LIMIT = 48 * 1024    # dynamic shared memory a block may use without an opt-in attribute;
                            # 0 sends every LSTM to the per-step path (benchmarks compare both)
THREADS_MAX = 1024          # CUDA's limit per block
ROWS_MAX = 64               # CUDA's limit on blockDim.z (the rows of a block)
TARGET_BLOCKS = 132         # SMs on an H100/H200: grow rows per block only once every SM has one
DTYPE = "float32"


def shared_floats(H, rows, backward):
    """Shared memory of one block in float32 elements: w_hh (4H*H) plus, per row, the hidden
    state and the gates (forward, 5H) or the gate gradients and dh's four partial sums (8H)."""
    return 4 * H * H + rows * (8 if backward else 5) * H


def rows_per_block(dtype, B, H):
    """Batch rows per block for a float32 LSTM of hidden size H and batch B, or 0 when the layer
    keeps the per-step path (another dtype, or w_hh with one row's state over SHARED_LIMIT)."""
    if np.dtype(dtype) != np.dtype(DTYPE) or H == 0:
        return 0
    rows = max(1, min(-(-B // TARGET_BLOCKS), THREADS_MAX // (4 * H), ROWS_MAX))
    while rows and 4 * shared_floats(H, rows, backward=True) > SHARED_LIMIT:
        rows -= 1
    return rows


# The budget of the sunspots shape (H = 32, one row per block: 128 threads); the gate compiles
# the kernel once, whatever H it later runs with. Latency-bound: occupancy matters little (a grid
# has about one block per batch row), spills and local memory in the time loop do. The dot
# product's loop issues two shared loads per FFMA, so its FFMA share tops out near a third; 20%
# catches index code creeping back in (Numba's negative-index wraparound took it to 4%).
SUNSPOTS_H = 32
BUDGET_FWD, BUDGET_BWD = (Budget(threads=4 * SUNSPOTS_H, min_occupancy=0.5, min_fma_share=0.2,
                                 shared_bytes=4 * shared_floats(SUNSPOTS_H, 1, backward))
                          for backward in (False, True))


# --------------------------------------------------------------------------- kernels
# Indices are cast to uint64 where they index, so Numba emits no negative-index wraparound code,
# and the dot products are while loops, which compile to a plain counted loop.
@cuda.jit
def _lstm_seq_fwd_kernel(reverse, w_hh, gates, c, tanh_c, h):
    j, q, r = cuda.threadIdx.x, cuda.threadIdx.y, cuda.threadIdx.z
    H, rows = cuda.blockDim.x, cuda.blockDim.z
    T, B = gates.shape[0], gates.shape[1]
    G = 4 * H
    k = uint64(q * H + j)                  # this thread's gate
    b = cuda.blockIdx.x * rows + r         # this thread's batch row
    live = b < B                           # the last block's spare rows still meet the barriers
    ub, uj = uint64(b), uint64(j)
    sh = cuda.shared.array(0, float32)     # [w_hh^T (H, 4H) | h (rows, H) | gates (rows, 4H)]
    h_at = uint64(G * H + r * H)
    g_at = uint64(G * H + rows * H + r * G)
    m = r
    while m < H:                           # w_hh^T: at each m, neighbouring k in neighbouring banks
        sh[uint64(m * G) + k] = w_hh[k, uint64(m)]
        m += rows
    first = uint64(T if reverse else 0)
    cell = float32(0)
    if q == 0:
        cell = c[first, ub, uj] if live else float32(0)
        sh[h_at + uj] = h[first, ub, uj] if live else float32(0)
    projection = float32(0)                # x W_ih^T + b of the coming step, loaded a step ahead
    if live and T > 0:
        projection = gates[uint64(T - 1 if reverse else 0), ub, k]
    cuda.syncthreads()
    for step in range(T):
        t = uint64(T - 1 - step if reverse else step)
        # gate k of row b: the recurrent dot product, the projection, the nonlinearity
        acc = projection
        if live and step + 1 < T:          # issued before the dot product, which hides it
            projection = gates[t - uint64(1) if reverse else t + uint64(1), ub, k]
        at, w_at, end = h_at, k, h_at + uint64(H)
        while at < end:
            acc += sh[at] * sh[w_at]
            at += uint64(1)
            w_at += uint64(G)
        a = math.tanh(acc) if q == 2 else _sigmoid(acc)
        sh[g_at + k] = a
        if live:
            gates[t, ub, k] = a
        cuda.syncthreads()
        if q == 0:                         # the cell update of unit j
            i, f = sh[g_at + uj], sh[g_at + uint64(H) + uj]
            g, o = sh[g_at + uint64(2 * H) + uj], sh[g_at + uint64(3 * H) + uj]
            cell = f * cell + i * g
            tc = math.tanh(cell)
            out = o * tc
            sh[h_at + uj] = out
            if live:
                s_out = t if reverse else t + uint64(1)
                c[s_out, ub, uj] = cell
                tanh_c[t, ub, uj] = tc
                h[s_out, ub, uj] = out
        cuda.syncthreads()


@cuda.jit
def _lstm_seq_bwd_kernel(reverse, w_hh, gy, dh, dc, gates, c, tanh_c, dgates):
    j, q, r = cuda.threadIdx.x, cuda.threadIdx.y, cuda.threadIdx.z
    H, rows = cuda.blockDim.x, cuda.blockDim.z
    T, B = gates.shape[0], gates.shape[1]
    G = 4 * H
    k = uint64(q * H + j)
    b = cuda.blockIdx.x * rows + r
    live = b < B
    ub, uj = uint64(b), uint64(j)
    uH = uint64(H)
    one = float32(1)
    sh = cuda.shared.array(0, float32)  # [w_hh (4H, H) | dgates (rows, 4H) | dh parts (rows, 4H)]
    d_at = uint64(G * H + r * G)
    p_at = uint64(G * H + rows * G + r * G)
    m = r                                  # w_hh as is: neighbouring j in neighbouring banks
    while m < H:
        sh[k * uH + uint64(m)] = w_hh[k, uint64(m)]
        m += rows
    carry = float32(0)                     # dL/dc, carried backwards through the steps
    if q == 0:
        carry = dc[ub, uj] if live else float32(0)
    sh[p_at + k] = dh[ub, uj] if live and q == 0 else float32(0)
    # the coming step's saved values and output gradient, loaded a step ahead
    y_grad = i = f = g = o = tc = c_prev = float32(0)
    if q == 0 and live and T > 0:
        t = uint64(0 if reverse else T - 1)
        s_in = t + uint64(1) if reverse else t
        y_grad, tc, c_prev = gy[t, ub, uj], tanh_c[t, ub, uj], c[s_in, ub, uj]
        i, f = gates[t, ub, uj], gates[t, ub, uH + uj]
        g, o = gates[t, ub, uint64(2 * H) + uj], gates[t, ub, uint64(3 * H) + uj]
    cuda.syncthreads()
    for step in range(T):
        t = uint64(step if reverse else T - 1 - step)
        if q == 0:                         # the four gate gradients of unit j
            grad_h = (sh[p_at + uj] + sh[p_at + uH + uj] + sh[p_at + uint64(2 * H) + uj]
                      + sh[p_at + uint64(3 * H) + uj] + y_grad)
            grad_c = carry + grad_h * o * (one - tc * tc)
            d_i = grad_c * g * (i * (one - i))
            d_f = grad_c * c_prev * (f * (one - f))
            d_g = grad_c * i * (one - g * g)
            d_o = grad_h * tc * (o * (one - o))
            carry = grad_c * f
            sh[d_at + uj] = d_i
            sh[d_at + uH + uj] = d_f
            sh[d_at + uint64(2 * H) + uj] = d_g
            sh[d_at + uint64(3 * H) + uj] = d_o
            if live:
                dgates[t, ub, uj] = d_i
                dgates[t, ub, uH + uj] = d_f
                dgates[t, ub, uint64(2 * H) + uj] = d_g
                dgates[t, ub, uint64(3 * H) + uj] = d_o
                if step + 1 < T:
                    tn = t + uint64(1) if reverse else t - uint64(1)
                    s_in = tn + uint64(1) if reverse else tn
                    y_grad, tc, c_prev = gy[tn, ub, uj], tanh_c[tn, ub, uj], c[s_in, ub, uj]
                    i, f = gates[tn, ub, uj], gates[tn, ub, uH + uj]
                    g, o = gates[tn, ub, uint64(2 * H) + uj], gates[tn, ub, uint64(3 * H) + uj]
        cuda.syncthreads()
        # gate block q's share of dh_{t-1}[j] = sum_k dgates_t[k] w_hh[k, j]
        acc = float32(0)
        at, w_at = d_at + uint64(q * H), uint64(q * H) * uH + uj
        end = at + uH
        while at < end:
            acc += sh[at] * sh[w_at]
            at += uint64(1)
            w_at += uH
        sh[p_at + k] = acc
        cuda.syncthreads()
    if q == 0 and live:
        dh[ub, uj] = sh[p_at + uj] + sh[p_at + uH + uj] + sh[p_at + uint64(2 * H) + uj] + \
            sh[p_at + uint64(3 * H) + uj]
        dc[ub, uj] = carry


# --------------------------------------------------------------------------- signature table
def _signature(dims):
    layout = {2: "[:, ::1]", 3: "[:, :, ::1]"}
    return f"void(boolean, {', '.join(DTYPE + layout[d] for d in dims)})"


_FWD_SIGNATURE = _signature((2, 3, 3, 3, 3))           # w_hh, gates, c, tanh_c, h
_BWD_SIGNATURE = _signature((2, 3, 2, 2, 3, 3, 3, 3))  # w_hh, gy, dh, dc, gates, c, tanh_c, dgates


# --------------------------------------------------------------------------- launchers
def _launch(kernel, signature, backward, reverse, w_hh, gates, H, *arrays):
    B = gates.shape[1]
    rows = rows_per_block(gates.dtype, B, H)
    if rows == 0:
        raise ValueError(f"{kernel.py_func.__name__}: a {gates.dtype} LSTM of hidden size {H} "
                         f"does not fit the persistent kernel (see rows_per_block)")
    xp = backend.get_array_module(w_hh)
    w = kernel_args((xp.ascontiguousarray(w_hh),))[0]
    launch(kernel, signature, -(-B // rows), (H, 4, rows), bool(reverse), w, *arrays,
           shared=4 * shared_floats(H, rows, backward))


def forward(reverse, w_hh, gates, gh, c, tanh_c, h):
    """The whole forward sequence of one layer and direction, with the per-step forward's
    arguments (``gh``, its GEMM's output, goes unused)."""
    _launch(_lstm_seq_fwd_kernel, _FWD_SIGNATURE, False, reverse, w_hh, gates, h.shape[2],
            gates, c, tanh_c, h)


def backward(reverse, w_hh, gy, dh, dc, gates, c, tanh_c, dgates):
    """The whole backward sequence, with the per-step backward's arguments: dgates for every
    step; dh and dc end as the gradients of h0 and c0."""
    _launch(_lstm_seq_bwd_kernel, _BWD_SIGNATURE, True, reverse, w_hh, gates, dh.shape[1],
            gy, dh, dc, gates, c, tanh_c, dgates)


SEQUENCES = {"lstm": (forward, backward)}   # mode -> (forward, backward) over a whole sequence

# --------------------------------------------------------------------------- the gate's table
SIGNATURES = [
    (_lstm_seq_fwd_kernel, [_FWD_SIGNATURE], BUDGET_FWD),
    (_lstm_seq_bwd_kernel, [_BWD_SIGNATURE], BUDGET_BWD),
]
