"""Persistent LSTM kernels for hidden sizes too wide for one block: the grid shares the work.

kernels/lstm_persistent_cuda.py keeps a whole row of w_hh in one thread's registers, which caps
it at H = 64. Here a layer's time loop still runs in ONE launch per pass, but the hidden units are
split over blocks and the blocks meet once per step at a grid-wide barrier (a cooperative launch:
the driver refuses a grid that cannot be resident all at once, and the launcher only asks for one
block per SM):

- block (c, g) owns the hidden units ``c*S .. c*S+S-1`` (its "slice") for the batch rows of group
  g; thread (p, j, q) holds, in registers, segment p (L = ``SEGMENT`` values, zero-padded past H)
  of the row of w_hh for gate q of unit j forward, of its column backward. A step's dot products
  are P = ceil(H / L) partial sums per gate, added in shared memory;
- forward, per step: the block copies h_{t-1} of its rows into shared memory, every thread adds
  its segment's share of each gate, the gates are activated, the slice's cells are updated and
  h_t written to the (T + 1, B, H) slot buffer; then the grid barrier (h_t is read by every block
  next step; it goes to a fresh slot, so one barrier a step suffices);
- backward, in T + 1 phases (reverse order): phase s first turns the previous step's gate
  gradients (every block reads their whole rows) into dh for the block's own units (columns of
  w_hh), then turns dL/dh_t and the carried dL/dc of its units into step s's four gate
  gradients, written to ``dgates[t]``; then the grid barrier. The last phase only finishes dh
  (the gradient of h0), so every phase ends at a barrier.

State between steps lives in global memory (c and h slots forward; dh and dc backward), so a
launch may cover any range of steps: the simulator, which runs blocks one after another and whose
grid barrier is a block barrier, runs one step a launch (``steps_per_launch``); a GPU runs the
whole sequence in one launch. The buffers and their layout are the per-step path's
(kernels/lstm.py), as in lstm_persistent_cuda. Which sizes come here: ``plan``.
"""

import functools
import math
import warnings

import numpy as np
from numba import cuda, float32, int32, uint64

from gpudl import backend

from .budget import Budget
from .launch import launch
from .lstm_cuda import _sigmoid, kernel_args
from .lstm_persistent_cuda import HIDDEN_MAX as REGISTER_HIDDEN_MAX, _dot

HIDDEN_MAX = 512            # the widest layer taken (see plan: wider needs more blocks than SMs
                            # at any batch over 4)
SEGMENT = 64                # w_hh values a thread holds (registers: SEGMENT + ~40)
THREADS_MAX = 256           # per block: P * S * 4 (255 registers x 256 threads fit an SM)
SHARED_MAX = 48 * 1024      # bytes per block: the most a launch may take without an opt-in
SM_COUNT = 132              # H100/H200; the launcher reads the device's own
DTYPE = "float32"

if backend.SIMULATOR:       # the simulator's grid group (its barrier is a block barrier)
    def _this_grid():
        return cuda.cg.this_grid()

    def _grid_sync(grid):
        grid.sync()
else:                       # cuda.cg.this_grid().sync() lowered directly: its @overload cannot
    # be compiled offline (it asks the driver for the device), these intrinsics can. Either
    # marks the kernel cooperative, so Numba launches it with cuLaunchCooperativeKernel and
    # links libcudadevrt's cudaCGSynchronize.
    from numba.cuda.cg import _grid_group_sync as _grid_sync, _this_grid


def parts(H):
    """(P, L): w_hh segments per gate row and their length (L <= SEGMENT; P * L >= H)."""
    P = -(-H // SEGMENT)
    return P, -(-H // P)


def shared_floats(H, S, rows, backward):
    """float32 elements of shared memory per block: per batch row the padded h_{t-1} (forward)
    or the step's four padded gate-gradient blocks (backward), the partial sums (4 S P), and
    the S x 4 activated gates (forward). Segments sit L + 1 apart, so the P segments a warp
    reads at once fall in different banks."""
    P, L = parts(H)
    padded = P * (L + 1)
    per_row = (4 * padded if backward else padded + 4 * S) + 4 * S * P
    return rows * per_row


def units_per_block(H):
    """S: hidden units a block owns (its threads: P * S * 4 <= THREADS_MAX)."""
    return max(1, THREADS_MAX // (4 * parts(H)[0]))


def rows_max(H):
    """The most batch rows a block's shared memory (SHARED_MAX) holds, either pass."""
    S = units_per_block(H)
    return SHARED_MAX // (4 * max(shared_floats(H, S, 1, True), shared_floats(H, S, 1, False)))


def plan(dtype, B, H, sm_count=None):
    """(slices, groups, S, rows): the grid (hidden-unit slices x batch groups), units per block
    and batch rows per block for a float32 LSTM of hidden size H and batch B; None when no grid
    of at most ``sm_count`` blocks (one per SM, so all are resident) takes it, or H is outside
    (REGISTER_HIDDEN_MAX, HIDDEN_MAX]."""
    if np.dtype(dtype) != np.dtype(DTYPE) or not REGISTER_HIDDEN_MAX < H <= HIDDEN_MAX or B < 1:
        return None
    S = units_per_block(H)
    slices = -(-H // S)
    sm_count = sm_count or SM_COUNT
    if slices > sm_count:
        return None
    rows = -(-B // min(B, sm_count // slices))  # the batch spread over every free SM
    if rows > rows_max(H):
        return None
    return slices, -(-B // rows), S, rows


def steps_per_launch(T):
    """Steps one launch covers: all on a GPU; one under the simulator, whose blocks run one
    after another (a grid barrier there only waits for the block's own threads)."""
    return 1 if backend.SIMULATOR else max(T, 1)


# --------------------------------------------------------------------------- kernels
def _build(H, S):
    """(forward, backward) for hidden size H and S units a block (compile-time constants: loops
    over the segment unroll, the weights stay in registers, and no index divides by a run-time
    value)."""
    P, L = parts(H)
    nthreads = P * S * 4
    HP = P * L                                  # a row padded to whole segments
    HS = P * (L + 1)                            # its stride in shared memory (see shared_floats)
    uH = uint64(H)

    @cuda.jit(device=True, inline="always")
    def place(rows):
        """(p, j, q, flat thread index, hidden unit, whether the unit exists, first batch row)
        of this thread."""
        p, j, q = cuda.threadIdx.x, cuda.threadIdx.y, cuda.threadIdx.z
        unit = cuda.blockIdx.x * S + j
        return p, j, q, p + P * (j + S * q), unit, unit < H, cuda.blockIdx.y * rows

    def forward_kernel(reverse, first, last, rows, w_hh, gates, c, tanh_c, h):
        p, j, q, tid, unit, own, b0 = place(rows)
        T, B = gates.shape[0], gates.shape[1]
        grid = _this_grid()
        sh = cuda.shared.array(0, float32)      # [h (rows, HP) | partial (rows, 4, S, P) |
        part_at = rows * HS                     #  gates (rows, 4, S)]
        act_at = part_at + rows * 4 * S * P
        w = cuda.local.array(L, float32)        # w_hh[q*H + unit, p*L : p*L + L]
        for m in range(L):
            col = p * L + m
            w[m] = w_hh[uint64(q * H + unit), uint64(col)] if own and col < H else float32(0)
        for step in range(first, last):
            t = uint64(T - 1 - step if reverse else step)
            s_in = t + uint64(1) if reverse else t
            s_out = t if reverse else t + uint64(1)
            i = tid                                 # h_{t-1} of the block's rows, padded (a
            while i < rows * HP:                    # while loop: a range with a run-time step
                r, m = i // HP, i % HP              # divides by it for its trip count)
                b = b0 + r
                sh[r * HS + (m // L) * (L + 1) + m % L] = \
                    h[s_in, uint64(b), uint64(m)] if b < B and m < H else float32(0)
                i += nthreads
            cuda.syncthreads()
            for r in range(rows):
                sh[part_at + ((r * 4 + q) * S + j) * P + p] = _dot(
                    sh, uint64(r * HS + p * (L + 1)), w, L)
            cuda.syncthreads()
            for r in range(p, rows, P):             # gate q of unit j, row r: activated
                b = b0 + r
                if own and b < B:
                    k = uint64(q * H + unit)
                    acc = gates[t, uint64(b), k]
                    at = part_at + ((r * 4 + q) * S + j) * P
                    for pp in range(P):
                        acc += sh[at + pp]
                    a = math.tanh(acc) if q == 2 else _sigmoid(acc)
                    sh[act_at + (r * 4 + q) * S + j] = a
                    gates[t, uint64(b), k] = a
            cuda.syncthreads()
            if q == 0:
                for r in range(p, rows, P):         # the cell update of unit j, row r
                    b = b0 + r
                    if own and b < B:
                        ub, uu = uint64(b), uint64(unit)
                        at = act_at + r * 4 * S + j
                        i, f, g, o = sh[at], sh[at + S], sh[at + 2 * S], sh[at + 3 * S]
                        cell = f * c[s_in, ub, uu] + i * g
                        tc = math.tanh(cell)
                        c[s_out, ub, uu] = cell
                        tanh_c[t, ub, uu] = tc
                        h[s_out, ub, uu] = o * tc
            cuda.threadfence()
            _grid_sync(grid)                        # h_t complete before any block reads it

    def backward_kernel(reverse, first, last, rows, w_hh, gy, dh, dc, gates, c, tanh_c, dgates):
        p, j, q, tid, unit, own, b0 = place(rows)
        T, B = gates.shape[0], gates.shape[1]
        one = float32(1)
        grid = _this_grid()
        sh = cuda.shared.array(0, float32)      # [dgates (rows, 4, HP) | partial (rows, 4, S, P)]
        part_at = rows * 4 * HS
        w = cuda.local.array(L, float32)        # w_hh[q*H + p*L : q*H + p*L + L, unit]
        for m in range(L):
            row = p * L + m
            w[m] = w_hh[uint64(q * H + row), uint64(unit)] if own and row < H else float32(0)
        # phase s (0 <= s <= T): dh_{t-1} of step s - 1 from its gate gradients (s > 0), then
        # step s's gate gradients (s < T), then the barrier; so the barrier ends each phase and
        # a launch may end after any of them
        for phase in range(first, last):
            if phase > 0:
                t = uint64(phase - 1 if reverse else T - phase)
                i = tid                             # its gate gradients, padded
                while i < rows * 4 * HP:
                    r, rest = i // (4 * HP), i % (4 * HP)
                    qq, m = rest // HP, rest % HP
                    b = b0 + r
                    sh[(r * 4 + qq) * HS + (m // L) * (L + 1) + m % L] = \
                        dgates[t, uint64(b), uint64(qq * H + m)] if b < B and m < H \
                        else float32(0)
                    i += nthreads
                cuda.syncthreads()
                for r in range(rows):               # gate block q, segment p of dh[unit]
                    sh[part_at + ((r * 4 + q) * S + j) * P + p] = _dot(
                        sh, uint64((r * 4 + q) * HS + p * (L + 1)), w, L)
                cuda.syncthreads()
                if q == 0:
                    for r in range(p, rows, P):
                        b = b0 + r
                        if own and b < B:
                            acc = float32(0)
                            for qq in range(4):
                                at = part_at + ((r * 4 + qq) * S + j) * P
                                for pp in range(P):
                                    acc += sh[at + pp]
                            dh[uint64(b), uint64(unit)] = acc
            if phase < T and q == 0:
                t = uint64(phase if reverse else T - 1 - phase)
                s_in = t + uint64(1) if reverse else t
                for r in range(p, rows, P):         # the four gate gradients of unit j, row r
                    b = b0 + r                      # (dh and dc of (b, unit): this thread's)
                    if own and b < B:
                        ub, uu = uint64(b), uint64(unit)
                        i, f = gates[t, ub, uu], gates[t, ub, uH + uu]
                        g, o = gates[t, ub, uint64(2 * H) + uu], gates[t, ub, uint64(3 * H) + uu]
                        tc = tanh_c[t, ub, uu]
                        grad_h = gy[t, ub, uu] + dh[ub, uu]
                        grad_c = dc[ub, uu] + grad_h * o * (one - tc * tc)
                        dgates[t, ub, uu] = grad_c * g * (i * (one - i))
                        dgates[t, ub, uH + uu] = grad_c * c[s_in, ub, uu] * (f * (one - f))
                        dgates[t, ub, uint64(2 * H) + uu] = grad_c * i * (one - g * g)
                        dgates[t, ub, uint64(3 * H) + uu] = grad_h * tc * (o * (one - o))
                        dc[ub, uu] = grad_c * f
            cuda.threadfence()
            _grid_sync(grid)                        # dgates[t] complete before anyone reads it

    forward_kernel.__name__ = forward_kernel.__qualname__ = f"lstm_grid_fwd_h{H}"
    backward_kernel.__name__ = backward_kernel.__qualname__ = f"lstm_grid_bwd_h{H}"
    return cuda.jit(forward_kernel), cuda.jit(backward_kernel)


def kernels(H):
    """(forward, backward) kernels for hidden size H, built once per H (and slicing)."""
    return _kernels(H, parts(H), units_per_block(H))


@functools.cache
def _kernels(H, parts, S):
    return _build(H, S)


# --------------------------------------------------------------------------- signature table
def _signature(dims):
    layout = {2: "[:, ::1]", 3: "[:, :, ::1]"}
    return f"void(boolean, int32, int32, int32, {', '.join(DTYPE + layout[d] for d in dims)})"


_SIGNATURES = (_signature((2, 3, 3, 3, 3)),           # forward: w_hh, gates, c, tanh_c, h
               _signature((2, 3, 2, 2, 3, 3, 3, 3)))  # backward: w_hh, gy, dh, dc, gates, c,
                                                      # tanh_c, dgates


# --------------------------------------------------------------------------- launchers
def device_sm_count():
    """SMs of the current device (SM_COUNT under the simulator and without CuPy)."""
    cupy = backend._cupy
    if cupy is None or backend.SIMULATOR:
        return SM_COUNT
    return _sm_count(cupy.cuda.runtime.getDevice())


@functools.cache
def _sm_count(device):      # asked at every layer call: the attribute query is not free
    return backend._cupy.cuda.Device(device).attributes["MultiProcessorCount"]


class Unavailable(RuntimeError):
    """The grid kernels could not be built or launched on this machine (libcudadevrt not
    found, a cooperative launch refused, ...): kernels/lstm.py takes another path, and every
    later layer too (``FAILED`` holds the reason)."""


FAILED = []     # why the grid kernels failed on this machine, if they did (GPU only)


def _launch(backward, reverse, w_hh, gates, H, *arrays):
    T, B = gates.shape[0], gates.shape[1]
    layout = plan(gates.dtype, B, H, device_sm_count())
    if layout is None:
        raise ValueError(f"lstm_grid_cuda: a {gates.dtype} LSTM of hidden size {H} and batch {B} "
                         f"does not take the grid kernels (float32, {REGISTER_HIDDEN_MAX} < "
                         f"hidden size <= {HIDDEN_MAX}, at most one block per SM)")
    slices, groups, S, rows = layout
    xp = backend.get_array_module(w_hh)
    w = kernel_args((xp.ascontiguousarray(w_hh),))[0]
    P, _ = parts(H)
    shared = 4 * shared_floats(H, S, rows, backward)     # S == units_per_block(H), kernels' own
    phases = T + 1 if backward else T        # backward ends with dh of h0 (see the kernel)
    chunk = steps_per_launch(phases)
    for first in range(0, phases, chunk):
        try:
            launch(kernels(H)[backward], _SIGNATURES[backward], (slices, groups), (P, S, 4),
                   bool(reverse), int32(first), int32(min(first + chunk, phases)), int32(rows),
                   w, *arrays, shared=shared)
        except Exception as exc:    # noqa: BLE001 - on a GPU: a link or launch failure, before
            if backend.SIMULATOR:   # anything ran (one launch there), so another path may redo it
                raise
            FAILED.append(f"{type(exc).__name__}: {exc}")
            warnings.warn(f"lstm_grid_cuda: the grid LSTM kernels do not run here ({FAILED[-1]});"
                          " wider LSTMs take the step loop instead", RuntimeWarning, stacklevel=2)
            raise Unavailable(FAILED[-1]) from exc


def forward(reverse, w_hh, gates, gh, c, tanh_c, h):
    """The whole forward sequence of one layer and direction, with the per-step forward's
    arguments (``gh`` goes unused)."""
    _launch(False, reverse, w_hh, gates, h.shape[2], gates, c, tanh_c, h)


def backward(reverse, w_hh, gy, dh, dc, gates, c, tanh_c, dgates):
    """The whole backward sequence, with the per-step backward's arguments; dh and dc end as
    the gradients of h0 and c0."""
    _launch(True, reverse, w_hh, gates, dh.shape[1], gy, dh, dc, gates, c, tanh_c, dgates)


SEQUENCES = {"lstm": (forward, backward)}


# --------------------------------------------------------------------------- the gate's table
# One block per SM by design (the grid must be resident at once), so 12.5% occupancy (8 warps)
# is the plan, not a defect; ptxas gives these kernels ~250 registers (no spills, no stack: the
# grid barrier's call keeps nothing in local memory). The hot loop is a row's segment dot
# product (FFMA share 42% at sm_90).
def _budget(H, backward):
    P, S = parts(H)[0], units_per_block(H)
    return Budget(threads=4 * P * S, shared_bytes=4 * shared_floats(H, S, rows_max(H), backward),
                  min_occupancy=0.125, min_fma_share=0.3)


SIGNATURES = [(kernels(H)[backward], [_SIGNATURES[backward]], _budget(H, backward))
              for H in (128, 256, HIDDEN_MAX) for backward in (False, True)]
