"""Numba-CUDA kernels for one time step of an LSTM, GRU or RNN layer: the fused pointwise passes.

Each step of ``kernels.lstm.rnn_forward`` is a cuBLAS GEMM (``gh = h_prev @ w_hh.T``, through CuPy)
followed by ONE kernel here that applies every gate nonlinearity, updates the cell and writes the
hidden output, saving the activations backward needs; backward mirrors it with one kernel per step
that turns the output gradient into all gate gradients. One thread per (batch row, hidden unit)
handles all of that unit's gates, so the gates need no communication between threads. The grid
is 2-D (hidden units along x, batch rows along y), so no thread divides to find its unit.

The kernels take whole-sequence buffers plus the step index ``t`` and the state slots
``s_in``/``s_out`` (see kernels/lstm.py): the CuPy arrays are wrapped as Numba device arrays once
per sequence (``kernel_args``), not once per step. Literals are cast to float32 so float32 kernels
hold no fp64 instruction; float64 works too (gradient checks), with float64 arithmetic.
"""

import math

import numpy as np
from numba import cuda, float32

from gpudl import backend

from .budget import Budget
from .launch import launch

# Threads per block, one per (batch row, hidden unit). Each thread reads and writes G values
# strided by H, so neighbouring threads touch neighbouring addresses for every gate (coalesced);
# 256 keeps many blocks resident for the small grids of a single step (B*H is often ~4-32k).
THREADS = 256
MAX_GRID_Y = 65535      # CUDA's grid limit along y (blocks of batch rows)
# Pointwise and latency-bound: no loop, registers light enough for 48 resident warps; a 2-D
# grid, so nothing divides.
BUDGET = Budget(threads=THREADS, min_occupancy=0.75, max_div64=0)


# On the device math.tanh keeps its argument's type. The simulator runs the kernels as Python,
# where math.tanh returns a Python float, which NumPy 2 turns float32 next to a float32 constant
# (NEP 50): float64 layers got float32 gates there (~1e-8 off). np.tanh keeps the type, as the
# device does.
_tanh = np.tanh if backend.SIMULATOR else math.tanh


@cuda.jit(device=True, inline="always")
def _sigmoid(v):
    # 0.5 + 0.5 * tanh(v / 2): the CPU twin's formula, and no overflow for large |v|
    half = float32(0.5)
    return half + half * _tanh(half * v)


@cuda.jit
def _lstm_step_fwd_kernel(t, s_in, s_out, gates, gh, c, tanh_c, h):
    j, b = cuda.grid(2)
    B, H = h.shape[1], h.shape[2]
    if j < H and b < B:
        i = _sigmoid(gates[t, b, j] + gh[b, j])
        f = _sigmoid(gates[t, b, H + j] + gh[b, H + j])
        g = _tanh(gates[t, b, 2 * H + j] + gh[b, 2 * H + j])
        o = _sigmoid(gates[t, b, 3 * H + j] + gh[b, 3 * H + j])
        gates[t, b, j] = i
        gates[t, b, H + j] = f
        gates[t, b, 2 * H + j] = g
        gates[t, b, 3 * H + j] = o
        c_new = f * c[s_in, b, j] + i * g
        tc = _tanh(c_new)
        c[s_out, b, j] = c_new
        tanh_c[t, b, j] = tc
        h[s_out, b, j] = o * tc


@cuda.jit
def _lstm_step_bwd_kernel(t, s_in, s_out, gy, dh, dc, gates, c, tanh_c, dgates):
    j, b = cuda.grid(2)
    B, H = dh.shape[0], dh.shape[1]
    if j < H and b < B:
        one = float32(1)
        i, f = gates[t, b, j], gates[t, b, H + j]
        g, o = gates[t, b, 2 * H + j], gates[t, b, 3 * H + j]
        tc = tanh_c[t, b, j]
        dh_t = gy[t, b, j] + dh[b, j]
        dc_t = dc[b, j] + dh_t * o * (one - tc * tc)
        dgates[t, b, j] = dc_t * g * (i * (one - i))
        dgates[t, b, H + j] = dc_t * c[s_in, b, j] * (f * (one - f))
        dgates[t, b, 2 * H + j] = dc_t * i * (one - g * g)
        dgates[t, b, 3 * H + j] = dh_t * tc * (o * (one - o))
        dc[b, j] = dc_t * f


@cuda.jit
def _gru_step_fwd_kernel(t, s_in, s_out, gates, gh, b_hn, hn, h):
    j, b = cuda.grid(2)
    B, H = h.shape[1], h.shape[2]
    if j < H and b < B:
        r = _sigmoid(gates[t, b, j] + gh[b, j])
        z = _sigmoid(gates[t, b, H + j] + gh[b, H + j])
        hn_t = gh[b, 2 * H + j] + b_hn[j]
        n = _tanh(gates[t, b, 2 * H + j] + r * hn_t)
        gates[t, b, j] = r
        gates[t, b, H + j] = z
        gates[t, b, 2 * H + j] = n
        hn[t, b, j] = hn_t
        h[s_out, b, j] = (h[s_in, b, j] - n) * z + n


@cuda.jit
def _gru_step_bwd_kernel(t, s_in, s_out, gy, dh, carry, gates, hn, h, dgx, dgh):
    j, b = cuda.grid(2)
    B, H = dh.shape[0], dh.shape[1]
    if j < H and b < B:
        one = float32(1)
        r, z, n = gates[t, b, j], gates[t, b, H + j], gates[t, b, 2 * H + j]
        dh_t = gy[t, b, j] + dh[b, j] + carry[b, j]
        carry[b, j] = dh_t * z
        dn = dh_t * (one - z) * (one - n * n)
        dr = dn * hn[t, b, j] * (r * (one - r))
        dz = (h[s_in, b, j] - n) * dh_t * (z * (one - z))
        dgx[t, b, j] = dr
        dgx[t, b, H + j] = dz
        dgx[t, b, 2 * H + j] = dn
        dgh[t, b, j] = dr
        dgh[t, b, H + j] = dz
        dgh[t, b, 2 * H + j] = dn * r


@cuda.jit
def _rnn_step_fwd_kernel(t, s_in, s_out, gx, gh, h, relu):
    j, b = cuda.grid(2)
    B, H = h.shape[1], h.shape[2]
    if j < H and b < B:
        v = gx[t, b, j] + gh[b, j]
        if relu:
            zero = float32(0)
            v = zero if v < zero else v  # noqa: FURB136 - max() would turn NaN into 0
        else:
            v = _tanh(v)
        h[s_out, b, j] = v


@cuda.jit
def _rnn_step_bwd_kernel(t, s_in, s_out, gy, dh, h, dgates, relu):
    j, b = cuda.grid(2)
    B, H = dh.shape[0], dh.shape[1]
    if j < H and b < B:
        one = float32(1)
        y = h[s_out, b, j]
        d = gy[t, b, j] + dh[b, j]
        if relu:
            d *= one if y > float32(0) else float32(0)
        else:
            d *= one - y * y
        dgates[t, b, j] = d


# --------------------------------------------------------------------------- signature table
def _signature(dims, dtype, relu=False):
    """``void(int64, int64, int64, <dtype>[:, ::1], ...)``: the three step indices, then one
    C-contiguous array per entry of ``dims`` (its number of dimensions), then the relu flag."""
    layout = {1: "[::1]", 2: "[:, ::1]", 3: "[:, :, ::1]"}
    args = ["int64"] * 3 + [dtype + layout[d] for d in dims] + (["boolean"] if relu else [])
    return f"void({', '.join(args)})"


_DIMS = {
    _lstm_step_fwd_kernel: ((3, 2, 3, 3, 3), False),   # gates, gh, c, tanh_c, h
    _lstm_step_bwd_kernel: ((3, 2, 2, 3, 3, 3, 3), False),  # gy, dh, dc, gates, c, tanh_c, dgates
    _gru_step_fwd_kernel: ((3, 2, 1, 3, 3), False),    # gates, gh, b_hn, hn, h
    _gru_step_bwd_kernel: ((3, 2, 2, 3, 3, 3, 3, 3), False),  # gy, dh, carry, gates, hn, h,
                                                            # dgx, dgh
    _rnn_step_fwd_kernel: ((3, 2, 3), True),           # gx, gh, h, relu
    _rnn_step_bwd_kernel: ((3, 2, 3, 3), True),        # gy, dh, h, dgates, relu
}


# --------------------------------------------------------------------------- launchers
def _block(H):
    """(threads along H, batch rows) per block: 256 threads, a warp-multiple covering H (up to
    256) along hidden units and the rest along batch rows, so small H still fills blocks."""
    width = min(THREADS, max(32, 1 << (H - 1).bit_length()))
    return width, THREADS // width


def _launcher(kernel, state):
    """A step function with the CPU twin's signature: ``step(t, s_in, s_out, *arrays)``.

    ``state`` is the position of the array whose shape is (..., B, H), which sizes the grid.
    The launch is specialised for the signature the arrays' dtype selects (kernels/launch.py).
    """
    dims, relu = _DIMS[kernel]
    signatures = {}

    def step(t, s_in, s_out, *arrays):
        B, H = arrays[state].shape[-2], arrays[state].shape[-1]
        dtype = str(arrays[state].dtype)
        signature = signatures.get(dtype)
        if signature is None:
            signature = signatures[dtype] = _signature(dims, dtype, relu)
        width, rows = _block(H)
        blocks = ((H + width - 1) // width, (B + rows - 1) // rows)
        if blocks[1] > MAX_GRID_Y:
            raise ValueError(f"{step.__name__}: batch size {B} needs {blocks[1]} blocks of "
                             f"{rows} rows, more than CUDA's {MAX_GRID_Y} along y; split the "
                             "batch")
        launch(kernel, signature, blocks, (width, rows), t, s_in, s_out, *arrays)
    step.__name__ = kernel.py_func.__name__.replace("_kernel", "")
    return step


_RNN = (_launcher(_rnn_step_fwd_kernel, 2), _launcher(_rnn_step_bwd_kernel, 1))
CELLS = {    # as kernels.lstm.CELLS: mode -> (forward step, backward step)
    "lstm": (_launcher(_lstm_step_fwd_kernel, 4), _launcher(_lstm_step_bwd_kernel, 1)),
    "gru": (_launcher(_gru_step_fwd_kernel, 4), _launcher(_gru_step_bwd_kernel, 1)),
    "rnn_tanh": _RNN,
    "rnn_relu": _RNN,
}


def kernel_args(arrays):
    """Wrap each CuPy array as a Numba device array once per sequence (zero-copy, no sync: the
    kernels launch on CuPy's current stream). NumPy arrays (the simulator) and flags pass as is."""
    return tuple(cuda.as_cuda_array(a, sync=False) if backend.is_device_array(a) else a
                 for a in arrays)


# --------------------------------------------------------------------------- the gate's table
SIGNATURES = [(kernel, [_signature(dims, dtype, relu) for dtype in ("float32", "float64")],
               BUDGET) for kernel, (dims, relu) in _DIMS.items()]
