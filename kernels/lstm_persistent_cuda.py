"""Persistent Numba-CUDA kernels for a whole LSTM layer: ONE launch per layer, direction and pass.

The per-step path (kernels/lstm_cuda.py) costs two launches per time step forward (a cuBLAS GEMM
``h_prev @ w_hh.T`` and the fused gate kernel) and two backward, so a short, narrow LSTM like the
sunspots model (hidden 32, T 32-128) is bound by launch latency, not arithmetic. Here the time loop
runs inside one kernel:

- the grid splits the batch: each block owns ``rows`` batch rows for the whole sequence, so blocks
  never talk to each other (no grid-wide barrier, no cooperative launch);
- ``w_hh`` sits in registers: each thread loads the H weights it multiplies (a row of w_hh
  forward, a column of one gate block backward) once, before the time loop. The kernels are built
  per hidden size (``kernels(H)``), so every loop over H unrolls and the weights never touch
  local memory; only the block's hidden states and gates go through (a little) shared memory;
- forward, per step: every thread computes one gate pre-activation of one row,
  ``x W_ih^T + b`` (from the one input GEMM done before, kernels/lstm.py; loaded a step ahead)
  plus ``h_{t-1} . w_hh[k]``, and its nonlinearity; after a barrier one thread per hidden unit
  updates the cell (kept in a register) and publishes h_t; a second barrier closes the step;
- backward, per step (reverse order): one thread per hidden unit turns dL/dh_t and the carried
  dL/dc into the four gate gradients; after a barrier every thread computes one quarter (one
  gate block) of ``dh_{t-1} = dgates_t . w_hh[:, j]``; the quarters are summed when read, so the
  step again needs two barriers. The weight gradients stay outside as GEMMs over all T*B rows.

Both kernels read and write the per-step path's buffers in its layout (gates activated in place
of the input projection, c and h in (T + 1, B, H) slot buffers, tanh(c) per step; see
kernels/lstm.py), so the two paths are interchangeable step for step.

Threads: a block is (H, 4, rows): x = hidden unit j, y = gate block q (gate k = q*H + j), z = the
block's batch row, so no thread divides to find its gate. Which layers take this path
(``rows_per_block``): float32 LSTMs with hidden size up to ``HIDDEN_MAX`` = 64 (the registers a
thread spends on weights; 124 registers at H = 64 backward), any batch; wider float32 LSTMs go to
kernels/lstm_grid_cuda.py where their grid fits, the rest to the (graphed) step loop
(kernels/lstm.py ``choose_path``). Each hidden size compiles its own pair of kernels at first use.
"""

import functools
import math

import numpy as np
from numba import cuda, float32, int32, uint64

from gpudl import backend

from .budget import Budget
from .launch import launch
from .lstm_cuda import _sigmoid, kernel_args

HIDDEN_MAX = 64             # each thread holds H weights in registers; 0 sends every LSTM to the
                            # per-step path (benchmarks compare both)
THREADS_MAX = 256           # threads per block: at ptxas's 255 registers a thread at most, 256
                            # threads fit an SM's 65,536 registers, so every H launches (at
                            # 1024, H = 64's 124 registers would refuse); also keeps blockDim.z
                            # = rows under CUDA's 64
TARGET_BLOCKS = 132         # SMs on an H100/H200: grow rows per block only once every SM has one
DTYPE = "float32"


def shared_floats(H, rows, backward):
    """Shared memory of one block in float32 elements, per batch row: the hidden state and the
    gates (forward, 5H), or the gate gradients and dh's four partial sums (backward, 8H). At
    most 2 KiB, as a block has at most THREADS_MAX = 4H * rows threads: far under the 48 KiB a
    launch may ask without an opt-in."""
    return rows * (8 if backward else 5) * H


def rows_per_block(dtype, B, H):
    """Batch rows per block for a float32 LSTM of hidden size H and batch B, or 0 when the layer
    keeps the per-step path (another dtype, or H over HIDDEN_MAX)."""
    if np.dtype(dtype) != np.dtype(DTYPE) or not 0 < H <= HIDDEN_MAX:
        return 0
    return max(1, min(-(-B // TARGET_BLOCKS), THREADS_MAX // (4 * H)))


# Budgets, for the sunspots shape (H = 32, one row per block: 128 threads) and for HIDDEN_MAX
# (256 threads), the two ends the gate compiles. The dot products unroll fully, so the hot loop
# is the whole time step. Latency-bound: occupancy matters little (a grid has about one block
# per batch row); local memory in the time loop does (the H weights must stay in registers), and
# the FFMA floor catches index code creeping back into the step.
def _budget(H, backward):
    return Budget(threads=4 * H, shared_bytes=4 * shared_floats(H, 1, backward),
                  min_occupancy=0.25, min_fma_share=0.15)


# --------------------------------------------------------------------------- kernels
# Indices are cast to uint64 where they index, so Numba emits no negative-index wraparound code.
@cuda.jit(device=True, inline="always")
def _dot(sh, at, w, n):
    """sum_m sh[at + m] * w[m] for m < n (a compile-time constant), over four partial sums: a
    chain of n/4 dependent FFMAs instead of n."""
    s0 = s1 = s2 = s3 = float32(0)
    for m in range(0, n - 3, 4):
        s0 += sh[at + uint64(m)] * w[m]
        s1 += sh[at + uint64(m + 1)] * w[m + 1]
        s2 += sh[at + uint64(m + 2)] * w[m + 2]
        s3 += sh[at + uint64(m + 3)] * w[m + 3]
    for m in range(n - n % 4, n):
        s0 += sh[at + uint64(m)] * w[m]
    return (s0 + s1) + (s2 + s3)


def _build(H):
    """The (forward, backward) kernels for hidden size H. H is a compile-time constant, so every
    loop over it unrolls and each thread's H weights of w_hh stay in registers."""
    G = 4 * H

    def forward_kernel(reverse, zero_state, final_states, biases, w_hh, b_ih, b_hh, gates, c,
                       tanh_c, h, h_n, c_n):
        j, q, r = cuda.threadIdx.x, cuda.threadIdx.y, cuda.threadIdx.z
        rows = cuda.blockDim.z
        T, B = gates.shape[0], gates.shape[1]
        k = uint64(q * H + j)              # this thread's gate
        b = cuda.blockIdx.x * rows + r     # this thread's batch row
        live = b < B                       # the last block's spare rows still meet the barriers
        ub, uj = uint64(b), uint64(j)
        sh = cuda.shared.array(0, float32)  # [h (rows, H) | gates (rows, 4H)]
        h_at = uint64(r * H)
        g_at = uint64(rows * H + r * G)
        w = cuda.local.array(H, float32)   # w_hh[k, :]
        for m in range(H):
            w[m] = w_hh[k, uint64(m)]
        bias = float32(0)                  # b_ih[k] + b_hh[k], of the ``biases`` passed
        if biases > 0:
            bias = b_ih[k]
        if biases > 1:
            bias += b_hh[k]
        first = uint64(T if reverse else 0)
        cell = float32(0)
        if q == 0:
            if zero_state:                 # the backward reads the first slots too
                if live:
                    c[first, ub, uj] = float32(0)
                    h[first, ub, uj] = float32(0)
            elif live:
                cell = c[first, ub, uj]
            sh[h_at + uj] = h[first, ub, uj] if live and not zero_state else float32(0)
        projection = float32(0)            # x W_ih^T + b of the coming step, loaded a step ahead
        if live and T > 0:
            projection = gates[uint64(T - 1 if reverse else 0), ub, k] + bias
        cuda.syncthreads()
        for step in range(T):
            t = uint64(T - 1 - step if reverse else step)
            # gate k of row b: the projection, the recurrent dot product, the nonlinearity
            acc = projection
            if live and step + 1 < T:      # issued before the dot product, which hides it
                projection = gates[t - uint64(1) if reverse else t + uint64(1), ub, k] + bias
            acc += _dot(sh, h_at, w, H)
            a = math.tanh(acc) if q == 2 else _sigmoid(acc)
            sh[g_at + k] = a
            if live:
                gates[t, ub, k] = a
            cuda.syncthreads()
            if q == 0:                     # the cell update of unit j
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
        if final_states and q == 0 and live:     # h_n and c_n, also into buffers of their own
            h_n[ub, uj] = sh[h_at + uj]
            c_n[ub, uj] = cell

    def backward_kernel(reverse, given_gy, given_dh, given_dc, w_hh, gy, dh_in, dc_in, gates, c,
                        tanh_c, dgates, dh, dc):
        j, q, r = cuda.threadIdx.x, cuda.threadIdx.y, cuda.threadIdx.z
        rows = cuda.blockDim.z
        T, B = gates.shape[0], gates.shape[1]
        k = uint64(q * H + j)
        b = cuda.blockIdx.x * rows + r
        live = b < B
        ub, uj = uint64(b), uint64(j)
        uH = uint64(H)
        one = float32(1)
        sh = cuda.shared.array(0, float32)  # [dgates (rows, 4H) | dh's quarters (rows, 4H)]
        d_at = uint64(r * G)
        p_at = uint64(rows * G + r * G)
        w = cuda.local.array(H, float32)   # w_hh[q*H:(q+1)*H, j]: gate block q's column j
        for m in range(H):
            w[m] = w_hh[uint64(q * H + m), uj]
        carry = float32(0)                 # dL/dc, carried backwards through the steps
        if q == 0 and live and given_dc:
            carry = dc_in[ub, uj]
        sh[p_at + k] = dh_in[ub, uj] if live and q == 0 and given_dh else float32(0)
        # the coming step's saved values and output gradient, loaded a step ahead
        y_grad = i = f = g = o = tc = c_prev = float32(0)
        if q == 0 and live and T > 0:
            t = uint64(0 if reverse else T - 1)
            s_in = t + uint64(1) if reverse else t
            y_grad = gy[t, ub, uj] if given_gy else float32(0)
            tc, c_prev = tanh_c[t, ub, uj], c[s_in, ub, uj]
            i, f = gates[t, ub, uj], gates[t, ub, uH + uj]
            g, o = gates[t, ub, uint64(2 * H) + uj], gates[t, ub, uint64(3 * H) + uj]
        cuda.syncthreads()
        for step in range(T):
            t = uint64(step if reverse else T - 1 - step)
            if q == 0:                     # the four gate gradients of unit j
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
                        if given_gy:
                            y_grad = gy[tn, ub, uj]
                        tc, c_prev = tanh_c[tn, ub, uj], c[s_in, ub, uj]
                        i, f = gates[tn, ub, uj], gates[tn, ub, uH + uj]
                        g, o = gates[tn, ub, uint64(2 * H) + uj], gates[tn, ub, uint64(3 * H) + uj]
            cuda.syncthreads()
            # gate block q's share of dh_{t-1}[j] = sum_k dgates_t[k] w_hh[k, j]
            sh[p_at + k] = _dot(sh, d_at + uint64(q * H), w, H)
            cuda.syncthreads()
        if q == 0 and live:
            dh[ub, uj] = sh[p_at + uj] + sh[p_at + uH + uj] + sh[p_at + uint64(2 * H) + uj] + \
                sh[p_at + uint64(3 * H) + uj]
            dc[ub, uj] = carry

    forward_kernel.__name__ = forward_kernel.__qualname__ = f"lstm_seq_fwd_h{H}"
    backward_kernel.__name__ = backward_kernel.__qualname__ = f"lstm_seq_bwd_h{H}"
    return cuda.jit(forward_kernel), cuda.jit(backward_kernel)


@functools.cache
def kernels(H):
    """(forward, backward) kernels for hidden size H, built once per H (each compiles at its
    first launch: one per hidden size a process uses)."""
    return _build(H)


# --------------------------------------------------------------------------- signature table
def _signature(scalars, dims):
    layout = {1: "[::1]", 2: "[:, ::1]", 3: "[:, :, ::1]"}
    return f"void({', '.join(scalars + tuple(DTYPE + layout[d] for d in dims))})"


# forward: reverse, zero_state, final_states, biases; w_hh, b_ih, b_hh, gates, c, tanh_c, h,
# h_n, c_n
# backward: reverse, given_gy, given_dh, given_dc; w_hh, gy, dh_in, dc_in, gates, c, tanh_c,
# dgates, dh, dc
_SIGNATURES = (_signature(("boolean",) * 3 + ("int32",), (2, 1, 1, 3, 3, 3, 3, 2, 2)),
               _signature(("boolean",) * 4, (2, 3, 2, 2, 3, 3, 3, 3, 2, 2)))


# --------------------------------------------------------------------------- launchers
def _launch(backward, flags, w_hh, gates, H, *arrays):
    """One launch of the ``backward`` or forward kernel: ``flags`` (reverse first) then w_hh
    (made contiguous) and ``arrays``, the kernel's own arguments."""
    B = gates.shape[1]
    rows = rows_per_block(gates.dtype, B, H)
    if rows == 0:
        raise ValueError(f"lstm_persistent_cuda: a {gates.dtype} LSTM of hidden size {H} does not "
                         f"take the persistent kernels (float32, hidden size <= {HIDDEN_MAX})")
    xp = backend.get_array_module(w_hh)
    w = kernel_args((xp.ascontiguousarray(w_hh),))[0]
    launch(kernels(H)[backward], _SIGNATURES[backward], -(-B // rows), (H, 4, rows),
           *flags, w, *arrays, shared=4 * shared_floats(H, rows, backward))


def forward(reverse, w_hh, gates, gh, c, tanh_c, h, b_ih=None, b_hh=None, zero_state=False,
            final_states=None):
    """The whole forward sequence of one layer and direction, with the per-step forward's
    arguments (``gh``, its GEMM's output, goes unused) and what the kernel does that the step
    loop leaves to its caller: adding the biases ``b_ih`` and ``b_hh`` (either None: none) to
    the input projection in ``gates`` (its bits as the projection's ``+ (b_ih + b_hh)``), with
    ``zero_state`` starting from zeros, written to h and c's first slots, instead of reading
    them there, and with ``final_states`` (two C-contiguous (B, H) arrays) writing h_n and c_n
    there too (slots of nn.LSTM's stacked h_n and c_n)."""
    biases = kernel_args([backend.get_array_module(b).ascontiguousarray(b)
                          for b in (b_ih, b_hh) if b is not None])
    unread = h.ravel()                   # in the place of a missing bias: a 1-D float32 array
    # without final_states, w_hh stands in, unread: the kernel only reads it (a slot of h would
    # be copied back over the kernel's writes in the simulator, after h)
    w_hh = backend.get_array_module(w_hh).ascontiguousarray(w_hh)
    finals = kernel_args(final_states if final_states is not None else (w_hh, w_hh))
    _launch(False, (bool(reverse), bool(zero_state), final_states is not None,
                    int32(len(biases))), w_hh, gates,
            h.shape[2], *biases, *(unread,) * (2 - len(biases)), gates, c, tanh_c, h, *finals)


def backward(reverse, w_hh, gy, dh, dc, gates, c, tanh_c, dgates, dh_out=None, dc_out=None):
    """The whole backward sequence, with the per-step backward's arguments: dgates for every
    step; the gradients of h0 and c0 go to ``dh_out`` and ``dc_out`` (by default into dh and
    dc, as the step loop leaves them). ``gy``, ``dh`` and ``dc``, the gradients reaching y, h_n
    and c_n, may each be None for none (zeros), with dh_out and dc_out given."""
    dh_out, dc_out = kernel_args((dh if dh_out is None else dh_out,
                                  dc if dc_out is None else dc_out))
    given = (gy is not None, dh is not None, dc is not None)
    _launch(True, (bool(reverse), *given), w_hh, gates, dh_out.shape[1],
            dgates if gy is None else gy, dh_out if dh is None else dh,    # unread when None
            dc_out if dc is None else dc, gates, c, tanh_c, dgates, dh_out, dc_out)


SEQUENCES = {"lstm": (forward, backward)}   # mode -> (forward, backward) over a whole sequence

# --------------------------------------------------------------------------- the gate's table
SIGNATURES = [(kernels(H)[backward], [_SIGNATURES[backward]], _budget(H, backward))
              for H in (32, HIDDEN_MAX) for backward in (False, True)]
