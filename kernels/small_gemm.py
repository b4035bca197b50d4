"""CPU GEMM ``out = a @ bt.T`` for the recurrent layers' per-step products (16 x 128 @ 128 x 512).

At these sizes OpenBLAS, held to its AVX2 kernels on this machine (``OPENBLAS_CORETYPE``), runs a
step's GEMM in ~24 us on one core (85 GFLOP/s) and ~14 us on two. This Numba loop, compiled for
the host (AVX-512 where the CPU has it), reads both operands along the contraction axis and keeps
a 4 x 4 block of dot products in registers: ~12-14 us on one core for either direction of an
LSTM step at batch 16, hidden 128. It is a dot-product form: both operands must be contiguous
along the contraction axis, so the LSTM's weight gradients (a sum over T*B rows) run on copies
with those rows as columns (kernels/lstm.py ``_column_weight_grads``): ~150 us for a (256, 512)
x (512, 128) product on one core, against ~270 us for OpenBLAS on the row-major operands. Short
contractions pay more for the 16 horizontal sums of each block: K = 64 runs at about OpenBLAS's
speed.

The same dot products serve two convolution weight gradients whose operands already run along
the contraction (kernels/conv.py, conv_winograd.py): ``gemm_nt_sum`` sums a batch of products in
one pass, matrix by matrix (a 1x1 conv's sum over images of gy[n] @ x[n].T: 4.8 ms against 8.0
ms for OpenBLAS's per-image GEMMs and their sum at (32,128,28,28) on one core), and
``gemm_nt_planes`` takes rows spaced along a wider buffer (Winograd's 16 dU planes, each a sum
over a step's tiles: 0.12 ms against 0.21 ms per 4 images at (32,16,32,32) x 32).

``gemm_nn`` is the other form, out = a @ b vectorised along b's and out's rows, for short
contractions (Winograd's 16 products over 16-64 channels, 1x1 and small-channel convolution
forwards, Linear layers of 64 features): 8 rows of out at a time, 4 rows of b per pass, the 32
weights read into scalars before the loop so that they stay in registers (as array loads inside
it, the loop did not vectorise: 11 GFLOP/s), and the first pass a loop of its own (a test inside
the loop stopped vectorisation too). 150-180 GFLOP/s on one core here, against 98-122 for
OpenBLAS's AVX2 kernels; OpenBLAS's own AVX-512 kernels reach ~200 (``outruns_blas``). Its rows
of b may lie anywhere in a buffer (``gemm_nn_rows``: a convolution's taps read in place).

Long contractions run in blocks of K_BLOCK (``_gemm_nt_blocked``, the LSTM's weight gradients over
all T*B rows), so a block's 8 rows stay in L1. Loop indices over a run-time range are unsigned:
with a signed one Numba tests every access for a negative index and the loop does not vectorise.

``fastmath`` is limited to re-association and contraction (the vectorised dot products need
both); NaN and infinity propagate as in BLAS.
"""

import functools

import numba
import numpy as np

_FAST = {"reassoc", "contract"}


@numba.njit(cache=True, fastmath=_FAST)
def _dot(x, y, k0, k1):
    s = x.dtype.type(0)
    for k in range(np.uint64(k0), np.uint64(k1)):
        s += x[k] * y[k]
    return s


@numba.njit(cache=True, nogil=True, fastmath=_FAST, inline="always")
def _gemm_nt_range(a, bt, out, k0, k1, accumulate):
    """out (+)= a[:, k0:k1] @ bt[:, k0:k1].T, 4 x 4 blocks of dot products in registers."""
    M = a.shape[0]
    N = bt.shape[0]
    M4, N4 = M - M % 4, N - N % 4
    zero = a.dtype.type(0)
    for i in range(0, M4, 4):
        a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
        o0, o1, o2, o3 = out[i], out[i + 1], out[i + 2], out[i + 3]
        for j in range(0, N4, 4):
            b0, b1, b2, b3 = bt[j], bt[j + 1], bt[j + 2], bt[j + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for k in range(np.uint64(k0), np.uint64(k1)):    # unsigned: no wraparound test
                x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                y0, y1, y2, y3 = b0[k], b1[k], b2[k], b3[k]
                s00 += x0 * y0
                s01 += x0 * y1
                s02 += x0 * y2
                s03 += x0 * y3
                s10 += x1 * y0
                s11 += x1 * y1
                s12 += x1 * y2
                s13 += x1 * y3
                s20 += x2 * y0
                s21 += x2 * y1
                s22 += x2 * y2
                s23 += x2 * y3
                s30 += x3 * y0
                s31 += x3 * y1
                s32 += x3 * y2
                s33 += x3 * y3
            if accumulate:
                o0[j], o0[j + 1], o0[j + 2], o0[j + 3] = (o0[j] + s00, o0[j + 1] + s01,
                                                          o0[j + 2] + s02, o0[j + 3] + s03)
                o1[j], o1[j + 1], o1[j + 2], o1[j + 3] = (o1[j] + s10, o1[j + 1] + s11,
                                                          o1[j + 2] + s12, o1[j + 3] + s13)
                o2[j], o2[j + 1], o2[j + 2], o2[j + 3] = (o2[j] + s20, o2[j + 1] + s21,
                                                          o2[j + 2] + s22, o2[j + 3] + s23)
                o3[j], o3[j + 1], o3[j + 2], o3[j + 3] = (o3[j] + s30, o3[j + 1] + s31,
                                                          o3[j + 2] + s32, o3[j + 3] + s33)
            else:
                o0[j], o0[j + 1], o0[j + 2], o0[j + 3] = s00, s01, s02, s03
                o1[j], o1[j + 1], o1[j + 2], o1[j + 3] = s10, s11, s12, s13
                o2[j], o2[j + 1], o2[j + 2], o2[j + 3] = s20, s21, s22, s23
                o3[j], o3[j + 1], o3[j + 2], o3[j + 3] = s30, s31, s32, s33
        for j in range(N4, N):                      # the columns left of the 4-wide blocks
            for r in range(i, i + 4):
                partial = _dot(a[r], bt[j], k0, k1)
                out[r, j] = out[r, j] + partial if accumulate else partial
    for i in range(M4, M):                          # the rows left of the 4-high blocks
        for j in range(N):
            partial = _dot(a[i], bt[j], k0, k1)
            out[i, j] = out[i, j] + partial if accumulate else partial


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _gemm_nt(a, bt, out):
    _gemm_nt_range(a, bt, out, 0, a.shape[1], False)


# Long contractions in blocks: the 8 rows a 4 x 4 block reads then stay in L1 (2 x 4 rows of
# 2 KiB), not 8 rows of the whole contraction streamed from L2 or L3 for every block.
K_BLOCK = 768


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _gemm_nt_blocked(a, bt, out):
    K = a.shape[1]
    for k0 in range(0, max(K, 1), K_BLOCK):
        _gemm_nt_range(a, bt, out, k0, min(K, k0 + K_BLOCK), k0 > 0)


def gemm_nt(a, bt, out):
    """``out[...] = a @ bt.T`` for C-contiguous 2-D NumPy arrays of one float dtype: a (M, K),
    bt (N, K), out (M, N). Returns out."""
    _gemm_nt(a, bt, out)
    return out


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _gemm_nt_rows(a, a_rows, bt, b_rows, length, out):
    """out[i, j] = sum over n < len(a_rows) of the dot product of a[a_rows[n, i]:] and
    bt[b_rows[n, j]:], both ``length`` long (a, bt flat and contiguous; the rows of each matrix
    anywhere in them: a convolution's taps are overlapping slices of an image). Matrix by matrix
    into out, so that each one's rows are read from the caches. The 4 x 4 block is
    _gemm_nt_range's, written out again: as a helper shared by both kernels (returning its 16
    sums, or storing them) it measured 20-30% slower in both."""
    M, N = out.shape
    M4, N4 = M - M % 4, N - N % 4
    zero = out.dtype.type(0)
    L = length
    out[...] = zero
    for n in range(a_rows.shape[0]):
        ra, rb = a_rows[n], b_rows[n]
        for r in range(0, M4, 4):
            a0, a1 = a[ra[r]:ra[r] + L], a[ra[r + 1]:ra[r + 1] + L]
            a2, a3 = a[ra[r + 2]:ra[r + 2] + L], a[ra[r + 3]:ra[r + 3] + L]
            for j in range(0, N4, 4):
                b0, b1 = bt[rb[j]:rb[j] + L], bt[rb[j + 1]:rb[j + 1] + L]
                b2, b3 = bt[rb[j + 2]:rb[j + 2] + L], bt[rb[j + 3]:rb[j + 3] + L]
                s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
                s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
                for k in range(L):
                    x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                    y0, y1, y2, y3 = b0[k], b1[k], b2[k], b3[k]
                    s00 += x0 * y0
                    s01 += x0 * y1
                    s02 += x0 * y2
                    s03 += x0 * y3
                    s10 += x1 * y0
                    s11 += x1 * y1
                    s12 += x1 * y2
                    s13 += x1 * y3
                    s20 += x2 * y0
                    s21 += x2 * y1
                    s22 += x2 * y2
                    s23 += x2 * y3
                    s30 += x3 * y0
                    s31 += x3 * y1
                    s32 += x3 * y2
                    s33 += x3 * y3
                o0, o1, o2, o3 = out[r], out[r + 1], out[r + 2], out[r + 3]
                o0[j] += s00
                o0[j + 1] += s01
                o0[j + 2] += s02
                o0[j + 3] += s03
                o1[j] += s10
                o1[j + 1] += s11
                o1[j + 2] += s12
                o1[j + 3] += s13
                o2[j] += s20
                o2[j + 1] += s21
                o2[j + 2] += s22
                o2[j + 3] += s23
                o3[j] += s30
                o3[j + 1] += s31
                o3[j + 2] += s32
                o3[j + 3] += s33
        for r in range(M):              # the entries left of the 4 x 4 blocks
            for j in range(N4 if r < M4 else 0, N):
                out[r, j] += _dot(a[ra[r]:ra[r] + L], bt[rb[j]:rb[j] + L], 0, L)


@numba.njit(cache=True, nogil=True)
def _gemm_nt_planes(a, a_rows, bt, b_rows, length, out):
    """out[p] = _gemm_nt_rows of plane p of the 2-D arrays a and bt, for every p."""
    for p in range(out.shape[0]):
        _gemm_nt_rows(a[p], a_rows, bt[p], b_rows, length, out[p])


@functools.lru_cache(maxsize=256)
def row_starts(count, stride, matrices=1, matrix_stride=0):
    """Offsets of the rows of ``matrices`` matrices of ``count`` rows each, one every ``stride``
    values, matrix n from n * matrix_stride: (matrices, count) int64, for gemm_nt_rows and
    gemm_nn_rows. Kept per arguments (made read-only): ~8 us to build, a chunk's work ~100."""
    rows = (np.arange(matrices)[:, None] * matrix_stride
            + np.arange(count)[None, :] * stride).astype(np.int64)
    rows.flags.writeable = False
    return rows


def gemm_nt_rows(a, a_rows, bt, b_rows, length, out):
    """``out[i, j] = sum over n of a[a_rows[n, i]:][:length] . bt[b_rows[n, j]:][:length]`` for
    flat contiguous NumPy arrays a, bt of one float dtype (rows anywhere in them, overlapping
    or not), a_rows (B, M) and b_rows (B, N) int64 offsets, out (M, N). Returns out."""
    _gemm_nt_rows(a, a_rows, bt, b_rows, length, out)
    return out


def gemm_nt_planes(a, bt, stride, length, out):
    """``out[p] = A_p @ B_p.T`` for every plane p of the C-contiguous 2-D arrays a and bt, whose
    matrices' rows are ``length`` values every ``stride`` along each plane (A_p's row i at
    a[p, i*stride:]): out (P, M, N). Returns out."""
    P, M, N = out.shape
    _gemm_nt_planes(a, row_starts(M, stride), bt, row_starts(N, stride), length, out)
    return out


def gemm_nt_sum(a, bt, out):
    """``out[...] = sum over n of a[n] @ bt[n].T`` for C-contiguous NumPy arrays of one float
    dtype: a (B, M, L), bt (B, N, L), out (M, N); one pass, no per-matrix products to add up.
    Returns out."""
    B, M, L = a.shape
    N = bt.shape[1]
    _gemm_nt_rows(a.reshape(-1), row_starts(M, L, B, M * L), bt.reshape(-1),
                  row_starts(N, L, B, N * L), L, out)
    return out


# --------------------------------------------------------------------------- out = a @ b
@numba.njit(cache=True, nogil=True, fastmath=_FAST, inline="always")
def _row(buf, i, stride, length):
    return buf[i * stride:i * stride + length]


@numba.njit(cache=True, nogil=True, fastmath=_FAST, inline="always")
def _four(w, x0, x1, x2, x3):
    return w[0] * x0 + w[1] * x1 + w[2] * x2 + w[3] * x3


@numba.njit(cache=True, nogil=True, fastmath=_FAST, inline="always")
def _axpy(alpha, x, y):
    for t in range(np.uint64(0), np.uint64(y.size)):
        y[t] += alpha * x[t]


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _gemm_nn_flat(a, b, b_rows, out, out_stride, length, bias):
    """Row i of out (``length`` values at out[i * out_stride:]) = bias[i] + the sum over c of
    a[i, c] times row c of b (at b[b_rows[c]:]); a (M, K), b and out flat. Eight rows of out
    at a time, four rows of b per pass over them: the 32 weights in registers, each output
    vector loaded and stored once per four multiply-adds."""
    M, K = a.shape
    M8, K4 = M - M % 8, K - K % 4
    L = length
    for i in range(0, M8, 8):
        o0, o1 = _row(out, i, out_stride, L), _row(out, i + 1, out_stride, L)
        o2, o3 = _row(out, i + 2, out_stride, L), _row(out, i + 3, out_stride, L)
        o4, o5 = _row(out, i + 4, out_stride, L), _row(out, i + 5, out_stride, L)
        o6, o7 = _row(out, i + 6, out_stride, L), _row(out, i + 7, out_stride, L)
        for c in range(0, K4, 4):
            b0, b1 = b[b_rows[c]:b_rows[c] + L], b[b_rows[c + 1]:b_rows[c + 1] + L]
            b2, b3 = b[b_rows[c + 2]:b_rows[c + 2] + L], b[b_rows[c + 3]:b_rows[c + 3] + L]
            w0 = (a[i, c], a[i, c + 1], a[i, c + 2], a[i, c + 3])
            w1 = (a[i + 1, c], a[i + 1, c + 1], a[i + 1, c + 2], a[i + 1, c + 3])
            w2 = (a[i + 2, c], a[i + 2, c + 1], a[i + 2, c + 2], a[i + 2, c + 3])
            w3 = (a[i + 3, c], a[i + 3, c + 1], a[i + 3, c + 2], a[i + 3, c + 3])
            w4 = (a[i + 4, c], a[i + 4, c + 1], a[i + 4, c + 2], a[i + 4, c + 3])
            w5 = (a[i + 5, c], a[i + 5, c + 1], a[i + 5, c + 2], a[i + 5, c + 3])
            w6 = (a[i + 6, c], a[i + 6, c + 1], a[i + 6, c + 2], a[i + 6, c + 3])
            w7 = (a[i + 7, c], a[i + 7, c + 1], a[i + 7, c + 2], a[i + 7, c + 3])
            if c == 0:          # two loops: a test inside one keeps it from vectorizing
                z0, z1, z2, z3 = bias[i], bias[i + 1], bias[i + 2], bias[i + 3]
                z4, z5, z6, z7 = bias[i + 4], bias[i + 5], bias[i + 6], bias[i + 7]
                for t in range(np.uint64(0), np.uint64(L)):
                    x0, x1, x2, x3 = b0[t], b1[t], b2[t], b3[t]
                    o0[t] = z0 + _four(w0, x0, x1, x2, x3)
                    o1[t] = z1 + _four(w1, x0, x1, x2, x3)
                    o2[t] = z2 + _four(w2, x0, x1, x2, x3)
                    o3[t] = z3 + _four(w3, x0, x1, x2, x3)
                    o4[t] = z4 + _four(w4, x0, x1, x2, x3)
                    o5[t] = z5 + _four(w5, x0, x1, x2, x3)
                    o6[t] = z6 + _four(w6, x0, x1, x2, x3)
                    o7[t] = z7 + _four(w7, x0, x1, x2, x3)
            else:
                for t in range(np.uint64(0), np.uint64(L)):
                    x0, x1, x2, x3 = b0[t], b1[t], b2[t], b3[t]
                    o0[t] += _four(w0, x0, x1, x2, x3)
                    o1[t] += _four(w1, x0, x1, x2, x3)
                    o2[t] += _four(w2, x0, x1, x2, x3)
                    o3[t] += _four(w3, x0, x1, x2, x3)
                    o4[t] += _four(w4, x0, x1, x2, x3)
                    o5[t] += _four(w5, x0, x1, x2, x3)
                    o6[t] += _four(w6, x0, x1, x2, x3)
                    o7[t] += _four(w7, x0, x1, x2, x3)
        for r in range(i, i + 8):                   # the contraction left of the 4-blocks
            if K4 == 0:
                _row(out, r, out_stride, L)[:] = bias[r]
            for c in range(K4, K):
                _axpy(a[r, c], b[b_rows[c]:b_rows[c] + L], _row(out, r, out_stride, L))
    for r in range(M8, M):                          # the rows left of the 8-blocks
        _row(out, r, out_stride, L)[:] = bias[r]
        for c in range(K):
            _axpy(a[r, c], b[b_rows[c]:b_rows[c] + L], _row(out, r, out_stride, L))


@numba.njit(cache=True, nogil=True)
def _gemm_nn_planes(a, b, b_rows, out, out_stride, length, bias):
    for p in range(a.shape[0]):
        _gemm_nn_flat(a[p], b[p], b_rows, out[p], out_stride, length, bias)


_WIDE_OPENBLAS = {"skylakex", "cooperlake", "sapphirerapids"}    # OpenBLAS's AVX-512 kernels


@functools.lru_cache(maxsize=1)
def outruns_blas():
    """Whether these loops, compiled by Numba for the host, use wider vectors than the BLAS NumPy
    uses: an AVX-512 CPU whose OpenBLAS runs older kernels (``OPENBLAS_CORETYPE=Haswell`` on this
    project's test machine: AVX2). Callers choose between them and BLAS on it. With OpenBLAS's
    own AVX-512 kernels on the same CPU, BLAS is the faster: 200 against 145 GFLOP/s on a
    (256, 64) @ (64, 192), 197 against 144 on a 1x1 convolution's (64, 64) @ (64, 784); and
    any other BLAS (MKL, BLIS, Accelerate) is taken to use the machine's full width."""
    from gpudl import cpu_threads

    blas = cpu_threads._blas_controller()
    if blas is None or getattr(blas, "internal_api", None) != "openblas":
        return False
    if str(getattr(blas, "architecture", "")).lower() in _WIDE_OPENBLAS:
        return False
    from llvmlite import binding

    return bool(binding.get_host_cpu_features().get("avx512f", False))


def gemm_nn_fits(m, k):
    """Whether gemm_nn runs an (m, k) @ (k, n) product at full speed: whole blocks of 8 rows
    (the rows past them take a slower loop, one row at a time)."""
    return m % 8 == 0 and k >= 4


def gemm_nn(a, b, out, bias=None):
    """``out[...] = a @ b (+ bias[:, None])`` for C-contiguous NumPy arrays of one float dtype:
    a (M, K), b (K, N), out (M, N), bias (M,); vectorized along N. Returns out."""
    N = b.shape[1]
    bias = np.zeros(a.shape[0], a.dtype) if bias is None else bias
    _gemm_nn_flat(a, b.reshape(-1), row_starts(b.shape[0], N)[0], out.reshape(-1), N, N, bias)
    return out


def gemm_nn_rows(a, b, b_rows, out, bias=None):
    """``out[i] = sum over c of a[i, c] * b[b_rows[c]:][:L] (+ bias[i])``: a (M, K), b flat and
    contiguous (b's rows anywhere in it, overlapping or not: a convolution's taps are shifted
    slices of an image), b_rows (K,) int64, out (M, L) C-contiguous. Returns out."""
    L = out.shape[1]
    bias = np.zeros(a.shape[0], a.dtype) if bias is None else bias
    _gemm_nn_flat(a, b, b_rows, out.reshape(-1), L, L, bias)
    return out
