"""Recurrent layers (LSTM, GRU, Elman RNN): one layer, one direction, the whole sequence per call.

The work is split the way cuDNN splits it:

1. the input projection of every time step as ONE GEMM: ``gx = x @ w_ih.T + b``  (T, B, G*H);
2. per step, the recurrent GEMM ``gh = h_prev @ w_hh.T`` (kernels/small_gemm.py / cuBLAS) and
   ONE pointwise pass (a fused Numba-CUDA kernel on the GPU; here Numba CPU loops around NumPy's
   SIMD tanh) doing every gate nonlinearity, the cell update and the hidden output, saving what
   backward needs (the gate activations, written over the input projection, c and tanh(c));
3. backward mirrors it: per step one pointwise pass producing the gate gradients, then the
   recurrent GEMM ``dh_prev = dgates @ w_hh``; the weight gradients are GEMMs over all T*B rows
   at the end (``gw_ih = dgates^T @ x``, ``gw_hh = dgates^T @ h_prev``).

The CPU LSTM differs in how it runs this, not in what it computes: each whole pass is one Numba
call per group of batch rows, the groups on the free cores (``_on_row_groups``), and in float32
it calls no BLAS (OpenBLAS runs AVX2 kernels here, kernels/small_gemm.py's dot products AVX-512).
The forward (float32 only, with a rational tanh, ``_tanh32``; float64 keeps NumPy's tanh, step by
step) projects each step's input inside the chain; the backward chain also computes the input's
gradient step by step and copies the gate gradients, states and inputs with the T*B rows as
columns, so that the weight gradients are dot products along contiguous rows
(``_column_weight_grads``).

Gate order is PyTorch's: LSTM ``i, f, g, o``; GRU ``r, z, n`` with
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``; RNN ``tanh`` or ``relu``.

Time indexing: every per-step array is indexed by the step's position ``t`` in the input, whatever
the direction. Hidden (and cell) states live in one ``(T + 1, B, H)`` buffer: for the forward
direction ``h0`` sits at slot 0 and step t writes slot t + 1; for the reverse direction ``h0`` sits
at slot T and step t writes slot t. So the output and the "previous state" of every step are both
contiguous slices of that buffer, and the weight-gradient GEMMs need no copies.

On a GPU, steps 2 and 3's per-step launches are avoided where possible (``choose_path``):

=================  ===============================================  ============================
path               which layers (float32 LSTM unless said)           how
=================  ===============================================  ============================
persistent-regs    0 < H <= 64, any batch                           kernels/lstm_persistent_cuda
                                                                    .py: one launch a pass, w_hh
                                                                    in registers, batch split
                                                                    over blocks
persistent-grid    64 < H <= 512 while (H / units a block) x batch  kernels/lstm_grid_cuda.py: one
                   groups <= SMs (132 SMs: H = 128 to batch 495,    cooperative launch a pass,
                   H = 256 to 72, H = 512 to 10)                    hidden units over blocks, a
                                                                    grid barrier a step
graphed-steps      the rest on a real GPU (wider LSTMs, float64,    the step loop captured once
                   GRU, RNN), T >= 4, outside a user's capture      per shape as a CUDA graph and
                                                                    replayed (step_graphs.py)
per-step           the CPU, the simulator's other layers, short     2 launches a step
                   sequences, layers inside a user's capture
=================  ===============================================  ============================

All four write the same buffers in the same layout, so a pass may take another path than the
other pass of the same layer (the grid kernels fall back at run time where they cannot be built
or launched cooperatively).

The per-step pointwise functions share one signature on both devices,
``cell(t, s_in, s_out, *arrays)`` (``s_in``/``s_out``: the state slots read and written), so the
sequence loops below serve the CPU twin and the CUDA kernels alike (``lstm_cuda.CELLS``).
"""

import functools

import numba
import numpy as np

from gpudl import backend, capture_blas, cpu_matmul, cpu_threads

from . import workspace
from .small_gemm import _gemm_nt, _gemm_nt_blocked, gemm_nt

MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


# --------------------------------------------------------------------------- CPU twin: one step
# NumPy's SIMD tanh does the transcendental work (a scalar tanh in a Numba loop is ~50x slower
# per element: no vector maths library), Numba CPU loops do the rest of a step in one pass each.
# Measured at B=32, H=128, float32: 12 us per LSTM forward step and 9 us backward, against 31 and
# 30 us for the same maths as a chain of in-place NumPy ufuncs; at B=16, H=128 after the row-slice
# rewrites below: 6.0 us forward (of which NumPy's two tanh 2.5 us) and 2.0 us backward.
_jit = numba.njit(cache=True)


@_jit
def _lstm_pre_activations(a, gh):
    """a = (a + gh) scaled by 1/2 for the sigmoid gates i, f, o: one tanh pass then serves all
    four gates, as sigmoid(v) = 0.5 + 0.5 * tanh(v / 2)."""
    for b in range(a.shape[0]):
        _gate_inputs_row(a[b], gh[b])


@numba.njit(cache=True, inline="always")
def _gate_inputs_row(row, add):
    """``_lstm_pre_activations`` of one row: row = (row + add), halved for i, f and o."""
    half = row.dtype.type(0.5)
    H = row.shape[0] // 4
    for k in range(2 * H):
        row[k] = (row[k] + add[k]) * half
    for k in range(2 * H, 3 * H):
        row[k] += add[k]
    for k in range(3 * H, 4 * H):
        row[k] = (row[k] + add[k]) * half


@_jit
def _lstm_cell_update(a, c_prev, c_new):
    """Finish the sigmoids of i, f, o (a holds tanh(v / 2) there) and c_new = f * c + i * g.
    One loop per output array: a loop storing into c_new and into ``a`` at once ran scalar."""
    half = a.dtype.type(0.5)
    H = c_prev.shape[1]
    for b in range(a.shape[0]):
        i, f, g = a[b, :H], a[b, H:2 * H], a[b, 2 * H:3 * H]
        cp, cn = c_prev[b], c_new[b]
        for j in range(H):
            cn[j] = (half + half * f[j]) * cp[j] + (half + half * i[j]) * g[j]
        for k in range(2 * H):
            a[b, k] = half + half * a[b, k]
        for k in range(3 * H, 4 * H):
            a[b, k] = half + half * a[b, k]


@_jit
def _lstm_hidden(a, tanh_c, h):
    """h = o * tanh(c), o the last gate block of a."""
    H = h.shape[1]
    for b in range(h.shape[0]):
        o, tc, hb = a[b, 3 * H:], tanh_c[b], h[b]
        for j in range(H):
            hb[j] = o[j] * tc[j]


def _lstm_step_fwd_cpu(t, s_in, s_out, gates, gh, c, tanh_c, h):
    a = gates[t]                                    # (B, 4H): x @ w_ih.T + b, then activations
    c_new, tc = c[s_out], tanh_c[t]                 # each view made once (~0.2 us apiece)
    _lstm_pre_activations(a, gh)
    np.tanh(a, out=a)
    _lstm_cell_update(a, c[s_in], c_new)
    np.tanh(c_new, out=tc)
    _lstm_hidden(a, tc, h[s_out])


@_jit
def _lstm_step_bwd(gy, dh, dc, a, c_prev, tc, d):
    """Gate gradients d (B, 4H) of one step; dc (B, H) becomes dL/dc_{t-1} in place. The rows'
    gate blocks are taken as 1-D slices first: indexed as a[b, H + j] the loop ran scalar
    (4.5 us per step at B=16, H=128; 1.4 us so)."""
    one = a.dtype.type(1)
    H = dh.shape[1]
    for b in range(dh.shape[0]):
        ai, af, ag, ao = a[b, :H], a[b, H:2 * H], a[b, 2 * H:3 * H], a[b, 3 * H:]
        di, df, dg, do = d[b, :H], d[b, H:2 * H], d[b, 2 * H:3 * H], d[b, 3 * H:]
        gyb, dhb, dcb, cpb, tcb = gy[b], dh[b], dc[b], c_prev[b], tc[b]
        for j in range(H):
            i, f, g, o, tanh_c = ai[j], af[j], ag[j], ao[j], tcb[j]
            dh_t = gyb[j] + dhb[j]
            dc_t = dcb[j] + dh_t * o * (one - tanh_c * tanh_c)
            di[j] = dc_t * g * (i - i * i)
            df[j] = dc_t * cpb[j] * (f - f * f)
            dg[j] = dc_t * i * (one - g * g)
            do[j] = dh_t * tanh_c * (o - o * o)
            dcb[j] = dc_t * f


def _lstm_step_bwd_cpu(t, s_in, s_out, gy, dh, dc, gates, c, tanh_c, dgates):
    _lstm_step_bwd(gy[t], dh, dc, gates[t], c[s_in], tanh_c[t], dgates[t])


# float32 tanh without NumPy, so that a whole LSTM pass runs in one Numba call without the GIL:
# the odd rational approximation of Eigen's float tanh (inputs clamped to +-7.905, where it
# reaches 1 in float32); within 8 ulp of tanh (tests/kernels/test_lstm_rows.py), NumPy's SIMD
# tanh within about 2.
_TANH_CLAMP = np.float32(7.90531110763549805)
_TANH_P = tuple(np.float32(v) for v in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
_TANH_Q = tuple(np.float32(v) for v in (
    4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06))


# error_model="numpy": no ZeroDivisionError check in the division, which kept the loops scalar
_jit_tanh = numba.njit(cache=True, nogil=True, error_model="numpy")


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tanh32(v):
    x = v if not v > _TANH_CLAMP else _TANH_CLAMP          # NaN passes both clamps
    x = x if not x < -_TANH_CLAMP else -_TANH_CLAMP
    p0, p1, p2, p3, p4, p5, p6 = _TANH_P
    q0, q1, q2, q3 = _TANH_Q
    x2 = x * x
    p = ((((((p6 * x2 + p5) * x2 + p4) * x2 + p3) * x2 + p2) * x2 + p1) * x2 + p0) * x
    return p / (((q3 * x2 + q2) * x2 + q1) * x2 + q0)


@_jit_tanh
def _tanh_rows(a, out):
    """out = tanh(a) for 2-D float32 arrays, out not a (the vectorised loop's overlap check
    would send a = out to the scalar loop: ``_tanh_in_place``)."""
    for b in range(a.shape[0]):
        ab, ob = a[b], out[b]
        for k in range(ab.shape[0]):
            ob[k] = _tanh32(ab[k])


@_jit_tanh
def _tanh_in_place(a):
    """a = tanh(a), 2-D float32."""
    for b in range(a.shape[0]):
        ab = a[b]
        for k in range(ab.shape[0]):
            ab[k] = _tanh32(ab[k])


_jit_chain = numba.njit(cache=True, nogil=True)     # whole passes, on threads (_on_row_groups)


@_jit_chain
def _lstm_forward_rows(w_xh, gates, c, tanh_c, h, bias, x, reverse, r0, r1):
    """The whole forward pass of batch rows r0:r1, float32: per step ONE GEMM
    ``[x[t], h_prev] @ w_xh.T`` with ``w_xh = [w_ih, w_hh]`` (each output a single dot
    product over I + H: the 16 horizontal sums of a 4 x 4 block paid once, not once for the
    input and once for the state; 8.6 us against 4.9 + 6.9 us for 8 rows at I = 64, H = 128),
    then ``_lstm_step_fwd_cpu``'s step with the bias, and ``_tanh32`` for NumPy's tanh."""
    T, I = x.shape[0], x.shape[2]
    xh = np.empty((r1 - r0, w_xh.shape[1]), x.dtype)       # [x[t], h_prev] of these rows
    for n in range(T):
        t = T - 1 - n if reverse else n
        s_in, s_out = (t + 1, t) if reverse else (t, t + 1)
        a, c_new, tc = gates[t, r0:r1], c[s_out, r0:r1], tanh_c[t, r0:r1]
        xh[:, :I] = x[t, r0:r1]
        xh[:, I:] = h[s_in, r0:r1]
        _gemm_nt(xh, w_xh, a)
        for b in range(a.shape[0]):
            _gate_inputs_row(a[b], bias)
        _tanh_in_place(a)
        _lstm_cell_update(a, c[s_in, r0:r1], c_new)
        _tanh_rows(c_new, tc)
        _lstm_hidden(a, tc, h[s_out, r0:r1])


@_jit_chain
def _lstm_backward_rows(w_hh_cols, gy, dh, dc, gates, c, tanh_c, dgates, w_ih_cols, g_x,
                        h, x, d_cols, h_cols, x_cols, reverse, last_dh, r0, r1):
    """The whole backward pass of batch rows r0:r1: ``_backward_steps`` over
    ``_lstm_step_bwd_cpu`` in one call, and per step the input's gradient
    ``g_x[t] = dgates[t] @ w_ih`` (``w_ih_cols`` = w_ih.T; zero columns when not wanted).

    It also writes the weight gradients' operands with the T*B rows as columns (``d_cols``,
    ``h_cols``: the states each step read, ``x_cols``; each skipped when it has no columns),
    so that ``_column_weight_grads`` runs them as dot products along contiguous rows."""
    T, B = gates.shape[0], gates.shape[1]
    d_h, d_c = dh[r0:r1], dc[r0:r1]
    for n in range(T):
        t = n if reverse else T - 1 - n
        s_in = t + 1 if reverse else t
        d = dgates[t, r0:r1]
        _lstm_step_bwd(gy[t, r0:r1], d_h, d_c, gates[t, r0:r1], c[s_in, r0:r1],
                       tanh_c[t, r0:r1], d)
        if n != T - 1 or last_dh:
            _gemm_nt(d, w_hh_cols, d_h)
        _gemm_nt(d, w_ih_cols, g_x[t, r0:r1])
        for b0 in range(r0, r1, GROUP_ROWS):            # each block's rows: adjacent columns
            b1, c0 = min(b0 + GROUP_ROWS, r1), _column(b0, t, B, T)
            if d_cols.shape[1]:
                _put_columns(d[b0 - r0:b1 - r0], d_cols, c0)
            if h_cols.shape[1]:
                _put_columns(h[s_in, b0:b1], h_cols, c0)
            if x_cols.shape[1]:
                _put_columns(x[t, b0:b1], x_cols, c0)


@numba.njit(cache=True, nogil=True)
def _transpose_into(a, out):
    """out[...] = a.T for a 2-D a, in 16 x 16 tiles (without the GIL)."""
    M, N = a.shape
    for i0 in range(0, M, 16):
        for j0 in range(0, N, 16):
            for j in range(j0, min(j0 + 16, N)):
                row = out[j]
                for i in range(i0, min(i0 + 16, M)):
                    row[i] = a[i, j]


@numba.njit(cache=True, nogil=True, inline="always")
def _put_columns(rows, cols, c0):
    """cols[k, c0 + i] = rows[i, k] for the rows of one block (GROUP_ROWS of them, or the rows
    left over). k outermost: with the rows outermost each store strode a whole row of cols,
    15x slower (the rows of a (512, 512) float32 array fall into the same cache sets); a full
    block's four stores written out: a loop over a run-time count of rows was twice as slow."""
    if rows.shape[0] == 4:
        r0, r1, r2, r3 = rows[0], rows[1], rows[2], rows[3]
        for k in range(rows.shape[1]):
            out = cols[k]
            out[c0], out[c0 + 1], out[c0 + 2], out[c0 + 3] = r0[k], r1[k], r2[k], r3[k]
        return
    for k in range(rows.shape[1]):
        out = cols[k]
        for i in range(rows.shape[0]):
            out[c0 + i] = rows[i, k]


@numba.njit(cache=True, nogil=True, inline="always")
def _column(b, t, B, T):
    """Where batch row b of step t goes among the T*B columns: blocks of GROUP_ROWS rows, each
    block's steps together (block j's columns start at j * GROUP_ROWS * T; the rows left over
    form the last block). A row group (a multiple of GROUP_ROWS rows) so writes columns no other
    group writes, and shares no cache line with another thread's writes but at a block's edge;
    the order is the same for any grouping, and so are the sums over the columns."""
    block = b // GROUP_ROWS
    width = min(GROUP_ROWS, B - block * GROUP_ROWS)
    return block * GROUP_ROWS * T + t * width + (b - block * GROUP_ROWS)


@_jit
def _gru_pre_activations(a, gh, b_hn, hn):
    """a[:, :2H] = (a + gh) / 2 for the sigmoids of r, z; hn = W_hn h + b_hn."""
    half = a.dtype.type(0.5)
    H = hn.shape[1]
    for b in range(a.shape[0]):
        for k in range(2 * H):
            a[b, k] = (a[b, k] + gh[b, k]) * half
        for j in range(H):
            hn[b, j] = gh[b, 2 * H + j] + b_hn[j]


@_jit
def _gru_candidate(a, hn):
    """Finish the sigmoids of r, z; a[:, 2H:] = x_n + r * hn, the pre-activation of n."""
    half = a.dtype.type(0.5)
    H = hn.shape[1]
    for b in range(a.shape[0]):
        r_half, n, hb = a[b, :H], a[b, 2 * H:], hn[b]
        for j in range(H):
            n[j] += (half + half * r_half[j]) * hb[j]
        for k in range(2 * H):
            a[b, k] = half + half * a[b, k]


@_jit
def _gru_output(a, h_prev, h_new):
    H = h_prev.shape[1]
    for b in range(a.shape[0]):
        z, n, hp, hnew = a[b, H:2 * H], a[b, 2 * H:], h_prev[b], h_new[b]
        for j in range(H):
            hnew[j] = (hp[j] - n[j]) * z[j] + n[j]


def _gru_step_fwd_cpu(t, s_in, s_out, gates, gh, b_hn, hn, h):
    a, H = gates[t], h.shape[2]                     # (B, 3H): x @ w_ih.T + b, then activations
    _gru_pre_activations(a, gh, b_hn, hn[t])
    np.tanh(a[:, :2 * H], out=a[:, :2 * H])
    _gru_candidate(a, hn[t])
    np.tanh(a[:, 2 * H:], out=a[:, 2 * H:])
    _gru_output(a, h[s_in], h[s_out])


@_jit
def _gru_step_bwd(gy, dh, carry, a, hn, h_prev, d_in, d_rec):
    """Gate gradients of one step, for the input GEMM (d_in) and the recurrent one (d_rec, which
    differs in n: W_hn h + b_hn enters through r); carry becomes the direct path z * dL/dh_t.
    Over 1-D row slices, as the LSTM kernels (step 4.0 -> 3.7 us at B=16, H=128)."""
    one = a.dtype.type(1)
    H = dh.shape[1]
    for b in range(dh.shape[0]):
        ar, az, an = a[b, :H], a[b, H:2 * H], a[b, 2 * H:]
        in_r, in_z, in_n = d_in[b, :H], d_in[b, H:2 * H], d_in[b, 2 * H:]
        rec_r, rec_z, rec_n = d_rec[b, :H], d_rec[b, H:2 * H], d_rec[b, 2 * H:]
        gyb, dhb, cb, hnb, hpb = gy[b], dh[b], carry[b], hn[b], h_prev[b]
        for j in range(H):
            r, z, n = ar[j], az[j], an[j]
            dh_t = gyb[j] + dhb[j] + cb[j]
            cb[j] = dh_t * z
            dn = dh_t * (one - z) * (one - n * n)
            dr = dn * hnb[j] * (r - r * r)
            dz = (hpb[j] - n) * dh_t * (z - z * z)
            in_r[j] = rec_r[j] = dr
            in_z[j] = rec_z[j] = dz
            in_n[j] = dn
            rec_n[j] = dn * r


def _gru_step_bwd_cpu(t, s_in, s_out, gy, dh, carry, gates, hn, h, dgx, dgh):
    _gru_step_bwd(gy[t], dh, carry, gates[t], hn[t], h[s_in], dgx[t], dgh[t])


def _rnn_step_fwd_cpu(t, s_in, s_out, gx, gh, h, relu):
    out = h[s_out]
    np.add(gx[t], gh, out=out)
    if relu:
        np.maximum(out, 0, out=out)
    else:
        np.tanh(out, out=out)


def _rnn_step_bwd_cpu(t, s_in, s_out, gy, dh, h, dgates, relu):
    d, y = dgates[t], h[s_out]
    np.add(gy[t], dh, out=d)
    if relu:
        d *= y > 0
    else:
        d *= 1 - y * y


CELLS = {    # mode -> (forward step, backward step); the plain RNN takes a relu flag last
    "lstm": (_lstm_step_fwd_cpu, _lstm_step_bwd_cpu),
    "gru": (_gru_step_fwd_cpu, _gru_step_bwd_cpu),
    "rnn_tanh": (_rnn_step_fwd_cpu, _rnn_step_bwd_cpu),
    "rnn_relu": (_rnn_step_fwd_cpu, _rnn_step_bwd_cpu),
}


def _as_is(arrays):
    return arrays


def _matmul_for(a):
    """matmul for a's kind of array: CuPy's (cuBLAS; gpudl's own handle while a CUDA graph
    captures, which CuPy refuses), or cpu_matmul's (BLAS on one thread a call, see
    gpudl/cpu_matmul.py)."""
    if not backend.is_device_array(a):
        return cpu_matmul.matmul
    if backend.capture_guard is not None:
        return capture_blas.matmul
    return backend.get_array_module(a).matmul


def _blas_nt(a, bt, out):
    return _matmul_for(a)(a, bt.T, out=out)


def _implementation(device, x):
    """(step functions, argument wrapper, ``matmul_nt(a, bt, out)``: out = a @ bt.T for the
    recurrent GEMM of a step): the CPU twin here (kernels/small_gemm.py's GEMM, ~1.7x OpenBLAS's
    at these sizes), or the CUDA kernels with cuBLAS."""
    if (device or backend.kernel_device(x)) == "cuda":
        from . import lstm_cuda
        return lstm_cuda.CELLS, lstm_cuda.kernel_args, _blas_nt
    return CELLS, _as_is, gemm_nt


PATHS = ("persistent-regs", "persistent-grid", "graphed-steps", "per-step")
GRAPH_MIN_STEPS = 4     # shorter loops launch too little for a graph's copies to pay
FORCE_PATH = None       # one of PATHS for every layer it can serve (benchmarks compare them)


def choose_path(mode, dtype, B, H, T, device, capturing=False, sm_count=None, grid=True):
    """How one layer's sequence runs (a pure function of the shapes and where it runs):

    - ``"persistent-regs"``: float32 LSTM, 0 < H <= 64: one launch a pass, w_hh in registers,
      the batch split over blocks (kernels/lstm_persistent_cuda.py);
    - ``"persistent-grid"``: float32 LSTM, 64 < H <= 512, when the grid of hidden-unit slices x
      batch groups has at most one block per SM (``sm_count``): one cooperative launch a pass with
      a grid barrier a step (kernels/lstm_grid_cuda.py ``plan``; on 132 SMs: H = 128 up to
      batch 495, H = 256 up to 72, H = 512 up to 10);
    - ``"graphed-steps"``: anything else on a real GPU with T >= GRAPH_MIN_STEPS, outside a
      user's own capture: the per-step loop replayed as a CUDA graph (kernels/step_graphs.py);
    - ``"per-step"``: the rest: the CPU, the simulator's remaining layers, short sequences,
      and layers inside a capture (which records the steps into the user's graph).

    ``device`` is ``"cpu"``, ``"simulator"`` or ``"cuda"``; ``capturing``: a CUDA graph capture
    is under way on the current stream; ``grid``: the grid kernels work here (False once they
    failed to build or launch, ``lstm_grid_cuda.FAILED``)."""
    if device == "cpu":
        return "per-step"
    from . import lstm_grid_cuda, lstm_persistent_cuda
    candidates = []
    if mode == "lstm" and lstm_persistent_cuda.rows_per_block(dtype, B, H):
        candidates.append("persistent-regs")
    if mode == "lstm" and grid and lstm_grid_cuda.plan(dtype, B, H, sm_count):
        candidates.append("persistent-grid")
    if device == "cuda" and not capturing and T >= GRAPH_MIN_STEPS and B > 0:
        candidates.append("graphed-steps")
    candidates.append("per-step")
    if FORCE_PATH in candidates:
        return FORCE_PATH
    return candidates[0]


def _path(mode, device, x, H):
    """``choose_path`` for this layer where it runs."""
    if (device or backend.kernel_device(x)) != "cuda":
        return "per-step"
    if backend.SIMULATOR:
        return choose_path(mode, x.dtype, x.shape[1], H, x.shape[0], "simulator")
    from gpudl import cuda_graphs
    from . import lstm_grid_cuda
    return choose_path(mode, x.dtype, x.shape[1], H, x.shape[0], "cuda",
                       cuda_graphs.is_current_stream_capturing(),
                       lstm_grid_cuda.device_sm_count(), not lstm_grid_cuda.FAILED)


def writes_final_states(x, H):
    """Whether an LSTM layer over x (T, B, I) of hidden size H writes the final states into
    arrays of their own as its kernel ends (``rnn_forward``'s ``final_states``; else copies)."""
    return _path("lstm", None, x, H) == "persistent-regs"


def _persistent(path, backward, reverse, w_hh, args, again, **extras):
    """Run the pass's whole sequence in one launch when ``path`` is persistent and return None;
    else (or when the grid kernels turn out unavailable on this machine: ``again()`` chooses
    anew) return the path the step loop takes. ``extras``: keyword arguments of the
    register-persistent kernels' launchers (what they do beyond the step loop's arguments)."""
    if path == "persistent-regs":
        from . import lstm_persistent_cuda as module
    elif path == "persistent-grid":
        from . import lstm_grid_cuda as module
    else:
        return path
    try:
        module.SEQUENCES["lstm"][backward](reverse, w_hh, *args, **extras)
    except getattr(module, "Unavailable", ()):
        return again()
    return None


_GRAPHS = None          # the step_graphs.StepGraphs of this process, made at first use


def _graphs():
    global _GRAPHS
    if _GRAPHS is None:
        from .step_graphs import StepGraphs
        _GRAPHS = StepGraphs()
    return _GRAPHS


# --------------------------------------------------------------------------- the sequence loops
def _slots(T, reverse):
    """(s_in offset, s_out offset, time steps in processing order) for one direction."""
    if reverse:
        return 1, 0, range(T - 1, -1, -1)
    return 0, 1, range(T)


def rnn_forward(mode, x, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, device=None,
                for_backward=True, final_states=None):
    """Run one recurrent layer in one direction over a whole sequence.

    Args:
        mode: ``"lstm"``, ``"gru"``, ``"rnn_tanh"`` or ``"rnn_relu"``.
        x: (T, B, I) input; hx: (B, H) initial hidden state; cx: (B, H) initial cell state
            (LSTM only, else None); either None: zeros. w_ih: (G*H, I); w_hh: (G*H, H); b_ih, b_hh: (G*H,) or None,
            with G = 4 (LSTM), 3 (GRU) or 1 (RNN), gate blocks in PyTorch's order.
        reverse: process the steps from T-1 down to 0 (the ``_reverse`` direction).
        device: ``"cpu"`` forces the CPU twin; None picks from ``x`` (backend.kernel_device).
        for_backward: ``rnn_backward`` will run on ``saved`` (the CPU LSTM then also makes
            the transposed weights its backward reads, on its threads beside the chains).
        final_states: LSTM only: (h_n, c_n), two C-contiguous (B, H) arrays of their own to
            write the final states into and return (the register-persistent kernel writes
            them as it ends; other paths copy).

    Returns:
        ``(y, h_n, c_n, saved)``: y (T, B, H) with y[t] the state after step t, h_n and c_n (B, H)
        (c_n None unless LSTM), and ``saved``, the dict ``rnn_backward`` needs.
    """
    xp = backend.get_array_module(x)
    cells, kernel_args, matmul_nt = _implementation(device, x)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    dtype = x.dtype
    off_in, off_out, steps = _slots(T, reverse)
    # the CPU LSTM's float32 passes run whole in Numba (_lstm_forward_rows), the bias there
    whole_pass = cells is CELLS and mode == "lstm" and dtype == np.float32
    path = _path(mode, device, x, H)
    # the register-persistent kernel adds the biases and makes the zero state itself: kernels
    # fewer for a graphed step
    in_kernel = path == "persistent-regs"
    bias = None if in_kernel else _folded_bias(mode, b_ih, b_hh, H)
    if whole_pass:
        gates = workspace.empty(xp, (T, B, GATES[mode] * H), dtype)    # projected in the chain
    else:
        gates = _input_projection(x, w_ih, bias)                    # then activated in place
    gh = workspace.empty(xp, (B, GATES[mode] * H), dtype)
    h = workspace.empty(xp, (T + 1, B, H), dtype)
    zero_state = in_kernel and hx is None and cx is None
    if not zero_state:
        h[T * off_in] = hx if hx is not None else 0
    saved = {"mode": mode, "x": x, "h": h, "reverse": reverse, "device": device}
    if mode == "lstm":
        c, tanh_c = workspace.empty(xp, (T + 1, B, H), dtype), workspace.empty(xp, (T, B, H), dtype)
        if not zero_state:
            c[T * off_in] = cx if cx is not None else 0
        arrays = (gates, gh, c, tanh_c, h)
        saved.update(gates=gates, c=c, tanh_c=tanh_c)
    elif mode == "gru":
        hn = workspace.empty(xp, (T, B, H), dtype)
        b_hn = b_hh[2 * H:] if b_hh is not None else xp.zeros(H, dtype)
        arrays = (gates, gh, b_hn, hn, h)
        saved.update(gates=gates, hn=hn)
    else:
        arrays = (gates, gh, h, mode == "rnn_relu")
    extras = (dict(b_ih=b_ih, b_hh=b_hh, zero_state=zero_state, final_states=final_states)
              if in_kernel else {})
    path = _persistent(path, False, reverse, w_hh, kernel_args(arrays),
                       lambda: _path(mode, device, x, H), **extras)
    if path:
        def loop(buffers):
            _forward_steps(mode, cells[mode][0], kernel_args, matmul_nt, reverse, buffers)
        buffers = (xp.ascontiguousarray(w_hh), *arrays)
        if whole_pass:
            w_xh = np.concatenate((w_ih, w_hh), axis=1)         # (4H, I + H)
            # [w_ih, w_hh].T, whose rows the backward chains' GEMMs read, made beside the chains
            w_cols = np.empty(w_xh.shape[::-1] if for_backward else (0, 0), dtype)
            if for_backward:
                saved["w_cols"] = w_cols
            buffers = (w_xh, gates, c, tanh_c, h,
                       bias if bias is not None else np.zeros(GATES[mode] * H, dtype),
                       _contiguous(np, x), w_cols)

            def loop(buffers):
                w_xh, w_cols = buffers[0], buffers[-1]
                also = (lambda: _transpose_into(w_xh, w_cols),) if w_cols.size else ()
                _on_row_groups(_lstm_forward_rows, B, *buffers[:-1], reverse, also=also)
        _run_steps(path, (mode, reverse, "forward", T, B, H, str(dtype)), loop, buffers)
    y = h[off_out:T + off_out]
    h_n = h[(1 - off_in) * T]
    c_n = saved["c"][(1 - off_in) * T] if mode == "lstm" else None
    if final_states is not None:
        if not in_kernel:
            final_states[0][...] = h_n
            final_states[1][...] = c_n
        h_n, c_n = final_states
    return y, h_n, c_n, saved


def _input_projection(x, w_ih, bias):
    """x @ w_ih.T (+ bias, unless None), as one GEMM over all T*B rows."""
    T, B, I = x.shape
    xp = backend.get_array_module(x)
    gx = workspace.empty(xp, (T, B, w_ih.shape[0]), x.dtype)
    _matmul_for(x)(x.reshape(T * B, I), w_ih.T, out=gx.reshape(T * B, w_ih.shape[0]))
    if bias is not None:
        gx += bias
    return gx


def _folded_bias(mode, b_ih, b_hh, H):
    """b_ih + b_hh, added to the projection in one pass; GRU's b_hn stays out of it, as it sits
    inside r * (W_hn h + b_hn)."""
    if b_hh is not None and mode == "gru":
        b_hh = b_hh.copy()
        b_hh[2 * H:] = 0
    if b_ih is None or b_hh is None:
        return b_ih if b_hh is None else b_hh
    return b_ih + b_hh


def rnn_backward(saved, w_ih, w_hh, gy, g_hn=None, g_cn=None, needs=(True,) * 7):
    """Gradients of one ``rnn_forward`` call, from the gradients of its outputs.

    Args:
        saved: the dict ``rnn_forward`` returned; w_ih, w_hh: the weights it ran with.
        gy: (T, B, H) gradient of y; g_hn, g_cn: (B, H) gradients of h_n and c_n, or None (zero).
        needs: which of (x, hx, cx, w_ih, w_hh, b_ih, b_hh) need a gradient; others get None.

    Returns:
        ``(g_x, g_hx, g_cx, g_w_ih, g_w_hh, g_b_ih, g_b_hh)``.
    """
    mode, x, h = saved["mode"], saved["x"], saved["h"]
    xp = backend.get_array_module(x)
    cells, kernel_args, matmul_nt = _implementation(saved["device"], x)
    T, B, _ = x.shape
    H, G, dtype = h.shape[2], GATES[mode], x.dtype
    off_in, off_out, steps = _slots(T, saved["reverse"])
    path = _path(mode, saved["device"], x, H)
    dgates = workspace.empty(xp, (T, B, G * H), dtype)
    dgh = dgates                      # gradient reaching the w_hh GEMM: the same but for GRU's n
    extras = {}
    if path == "persistent-regs":
        # the kernel reads the output gradients given (None: zeros) and writes those of h0 and
        # c0 apart: no copies, no zeros
        gy, dh, carry = (_contiguous(xp, g) if g is not None else None for g in (gy, g_hn, g_cn))
        extras = dict(dh_out=xp.empty((B, H), dtype), dc_out=xp.empty((B, H), dtype))
        arrays = (gy, dh, carry, saved["gates"], saved["c"], saved["tanh_c"], dgates)
    else:
        gy = _contiguous(xp, gy) if gy is not None else xp.zeros((T, B, H), dtype)
        dh = xp.array(g_hn, dtype, order="C") if g_hn is not None else xp.zeros((B, H), dtype)
        if mode == "lstm":
            carry = (xp.array(g_cn, dtype, order="C") if g_cn is not None
                     else xp.zeros((B, H), dtype))
            arrays = (gy, dh, carry, saved["gates"], saved["c"], saved["tanh_c"], dgates)
        elif mode == "gru":
            carry, dgh = xp.zeros((B, H), dtype), workspace.empty(xp, (T, B, 3 * H), dtype)
            arrays = (gy, dh, carry, saved["gates"], saved["hn"], h, dgates, dgh)
        else:
            arrays = (gy, dh, h, dgates, mode == "rnn_relu")
    path = _persistent(path, True, saved["reverse"], w_hh, kernel_args(arrays),
                       lambda: _path(mode, saved["device"], x, H), **extras)
    if extras:
        dh, carry = extras["dh_out"], extras["dc_out"]
    g_x = None                          # the input's gradient where the step loop makes it
    if path:
        def loop(buffers):
            _backward_steps(mode, cells[mode][1], kernel_args, matmul_nt, saved["reverse"],
                            needs[1], buffers)
        key = (mode, saved["reverse"], "backward", needs[1], T, B, H, str(dtype))
        if cells is not CELLS or mode != "lstm":
            # w_hh's columns as the rows of the "nt" GEMM: a copy on the CPU (the Numba GEMM
            # reads contiguous rows), the transposed view for cuBLAS
            buffers = (np.ascontiguousarray(w_hh.T) if xp is np else w_hh.T, *arrays)
        else:
            # the input's gradient too, step by step in the chains' threads (w_ih's columns as
            # the GEMM's rows; none unless wanted), and the weight gradients' operands as columns
            I = x.shape[2]
            g_x = np.empty((T, B, I if needs[0] else 0), dtype)
            columns = _columns(x, H, needs)
            w_cols = saved.get("w_cols")                # [w_ih, w_hh].T, made by the forward
            if w_cols is None:
                w_cols = np.ascontiguousarray(np.concatenate((w_ih, w_hh), axis=1).T)
            buffers = (w_cols[I:], *arrays, w_cols[:g_x.shape[2]], g_x, h, x, *columns)
            key += (needs[0],)

            def loop(buffers):
                _on_row_groups(_lstm_backward_rows, B, *buffers, saved["reverse"], needs[1])
        _run_steps(path, key, loop, buffers)
    g_hx = (dh + carry if mode == "gru" else dh) if needs[1] else None
    g_cx = carry if mode == "lstm" and needs[2] else None
    if g_x is not None:
        return (g_x if needs[0] else None, g_hx, g_cx,
                *_column_weight_grads(*columns, needs, _gemm_threads()))
    return _weight_grads(x, h[off_in:T + off_in], dgates, dgh, w_ih, needs, g_hx, g_cx,
                         cells is not CELLS)


GROUP_ROWS = 4      # row groups: multiples of small_gemm's 4-row blocks (_put_columns unrolls 4)
GROUPS_PER_THREAD = 2   # more groups than threads: see _on_row_groups
GEMM_PARTS = 4          # the large GEMMs in this many parts, for the same reason
# On: the row groups' chains and the weight gradients' parts on gpudl's threads (Numba, no
# BLAS: kernels/small_gemm.py's AVX-512 dot products, 2x OpenBLAS's AVX2 GEMM here). Off: one
# thread.
THREADED_GROUPS = True


def _gemm_threads():
    """Threads for the CPU LSTM's passes and weight gradients (1 with THREADED_GROUPS off)."""
    return cpu_threads.count() if THREADED_GROUPS else 1


def _row_groups(B):
    """(threads, [(r0, r1), ...]): how the CPU LSTM's passes split a batch of B rows. One group
    on one thread without THREADED_GROUPS or a free core; else GROUPS_PER_THREAD groups a thread
    (as far as B allows), each a multiple of GROUP_ROWS rows but the last."""
    threads = _gemm_threads()
    groups = max(1, min(threads * GROUPS_PER_THREAD, B // GROUP_ROWS)) if threads > 1 else 1
    blocks = B // GROUP_ROWS
    starts = [GROUP_ROWS * (blocks * i // groups) for i in range(groups)]
    return min(threads, groups), list(zip(starts, starts[1:] + [B]))


def _on_row_groups(chain, B, *args, also=()):
    """``chain(*args, r0, r1)`` over the batch's rows 0:B, in the groups of ``_row_groups(B)``,
    and the calls ``also`` (each a job of its own, after the groups).

    The rows of a batch never meet in a recurrent pass (each row's gates, states and gradients
    depend on that row alone), so each group's whole pass runs on its own thread without a
    barrier a step. There are more groups than threads, each thread taking the next group when
    done: a thread whose core another process (or another library's spinning OpenMP workers)
    holds for a while then takes fewer groups, where with one group a thread the others would
    wait for it. Groups start at multiples of GROUP_ROWS, so every row goes through the same code
    of kernels/small_gemm.py as in one call (the rows left over go last either way): the results
    are the same bits whatever the thread count."""
    threads, groups = _row_groups(B)
    jobs = [functools.partial(chain, *args, r0, r1) for r0, r1 in groups] + list(also)
    cpu_threads.map_threads(lambda job: job(), jobs, threads)


def _row_parts(n, parts=GEMM_PARTS, align=16):
    """[(0, m1), (m1, m2), ...]: the rows of a GEMM's output in up to ``parts`` parts, each
    starting at a multiple of ``align`` rows (small_gemm's 4-row blocks give a row other bits
    than its rows left over do); the same parts whatever the thread count."""
    size = -(-n // (parts * align)) * align
    starts = list(range(0, n, size)) if n else [0]
    return list(zip(starts, starts[1:] + [n]))


def _run_steps(path, key, loop, arrays):
    """Run a per-step loop over ``arrays`` as it is or, on the graphed path, through the graph
    kept for ``key`` (kernels/step_graphs.py)."""
    if path == "graphed-steps":
        _graphs().run(key, loop, arrays)
    else:
        loop(arrays)


_STATE = {"lstm": -1, "gru": -1, "rnn_tanh": 2, "rnn_relu": 2}   # where h sits in the forward
_DGH = {"lstm": -1, "gru": -1, "rnn_tanh": 3, "rnn_relu": 3}     # and the gradient reaching
                                                                  # the w_hh GEMM backward


def _forward_steps(mode, step, kernel_args, matmul_nt, reverse, buffers):
    """The forward step loop over ``(w_hh, *arrays)`` of ``rnn_forward`` (gh = arrays[1])."""
    w_hh, arrays = buffers[0], buffers[1:]
    h, gh = arrays[_STATE[mode]], arrays[1]
    T = h.shape[0] - 1
    off_in, off_out, steps = _slots(T, reverse)
    args = kernel_args(arrays)
    for t in steps:
        matmul_nt(h[t + off_in], w_hh, gh)
        step(t, t + off_in, t + off_out, *args)


def _backward_steps(mode, step, kernel_args, matmul_nt, reverse, last_dh, buffers):
    """The backward step loop over ``(w_hh_cols, *arrays)`` of ``rnn_backward`` (dh = arrays[1],
    w_hh_cols = w_hh.T); ``last_dh``: also propagate to h0 after the first step."""
    w_hh_cols, arrays = buffers[0], buffers[1:]
    dh, dgh = arrays[1], arrays[_DGH[mode]]
    T = dgh.shape[0]
    off_in, off_out, steps = _slots(T, reverse)
    args = kernel_args(arrays)
    for t in reversed(steps):
        step(t, t + off_in, t + off_out, *args)
        if t != steps[0] or last_dh:
            matmul_nt(dgh[t], w_hh_cols, dh)


def _contiguous(xp, a):
    """a, or a copy of it in a kept buffer where it is not C-contiguous (the broadcast gradient
    of a ``.sum()``, say)."""
    if a.flags.c_contiguous:
        return a
    out = workspace.empty(xp, a.shape, a.dtype)
    out[...] = a
    return out


def _weight_grads(x, h_prev, dgates, dgh, w_ih, needs, g_hx, g_cx, on_cuda=False):
    """The GEMMs over all T*B rows at once: gradients of x, the weights and the biases; on the
    cuda kernels (``on_cuda``) a small layer's weight and bias gradients in one launch
    (kernels/lstm_wgrad_cuda.py) where all are wanted."""
    T, B, I = x.shape
    rows = T * B
    d_x = dgates.reshape(rows, dgates.shape[2])     # (T*B, G*H)
    d_h = dgh.reshape(rows, dgh.shape[2])
    matmul = _matmul_for(x)
    g_x = matmul(d_x, w_ih).reshape(T, B, I) if needs[0] else None
    if on_cuda and dgh is dgates and all(needs[3:7]):
        from . import lstm_wgrad_cuda
        x_rows, h_rows = x.reshape(rows, I), h_prev.reshape(rows, h_prev.shape[2])
        if lstm_wgrad_cuda.takes(d_x, x_rows, h_rows):
            g_w_ih, g_w_hh, g_b = lstm_wgrad_cuda.weight_grads(d_x, x_rows, h_rows,
                                                                backend.get_array_module(x))
            return g_x, g_hx, g_cx, g_w_ih, g_w_hh, g_b, g_b
    g_w_ih = matmul(d_x.T, x.reshape(rows, I)) if needs[3] else None
    g_w_hh = matmul(d_h.T, h_prev.reshape(rows, h_prev.shape[2])) if needs[4] else None
    g_b_ih = d_x.sum(axis=0) if needs[5] or (needs[6] and dgh is dgates) else None
    g_b_hh = None
    if needs[6]:                    # the same sums unless the GEMMs saw different gradients (GRU)
        g_b_hh = g_b_ih if dgh is dgates else d_h.sum(axis=0)
    return g_x, g_hx, g_cx, g_w_ih, g_w_hh, g_b_ih if needs[5] else None, g_b_hh


def _columns(x, H, needs):
    """(d_cols, h_cols, x_cols): the CPU LSTM's gate gradients (4H, T*B), previous states
    (H, T*B) and inputs (I, T*B) with the T*B rows as columns, each with no columns where no
    gradient needs it (``_lstm_backward_rows`` fills them)."""
    T, B, I = x.shape
    rows = T * B
    biases = needs[5] or needs[6]
    return tuple(workspace.empty(np, (n, rows if wanted else 0), x.dtype)
                 for n, wanted in ((4 * H, needs[3] or needs[4] or biases),
                                   (H, needs[4]), (I, needs[3])))


def _column_weight_grads(d_cols, h_cols, x_cols, needs, threads):
    """(g_w_ih, g_w_hh, g_b_ih, g_b_hh) of the CPU LSTM from ``_columns``: each weight gradient
    ``d_cols @ a_cols.T`` a dot product over the T*B rows for every entry (kernels/small_gemm.py,
    AVX-512 where the CPU has it: 2x OpenBLAS's AVX2 here), and the biases' sums along the rows
    of d_cols, in parts of d_cols's rows on up to ``threads`` threads."""
    G, dtype = d_cols.shape[0], d_cols.dtype
    g_w_ih = np.empty((G, x_cols.shape[0]), dtype) if needs[3] else None
    g_w_hh = np.empty((G, h_cols.shape[0]), dtype) if needs[4] else None
    g_b = np.empty(G, dtype) if needs[5] or needs[6] else None

    def part(rows):
        d = d_cols[rows[0]:rows[1]]
        for grad, a_cols in ((g_w_ih, x_cols), (g_w_hh, h_cols)):
            if grad is not None:
                _gemm_nt_blocked(d, a_cols, grad[rows[0]:rows[1]])
        if g_b is not None:
            d.sum(axis=1, out=g_b[rows[0]:rows[1]])
    cpu_threads.map_threads(part, _row_parts(G), threads)
    return g_w_ih, g_w_hh, g_b if needs[5] else None, g_b if needs[6] else None
