"""Numba-CUDA kernels for 2-D convolution: implicit GEMMs with shared-memory tiles.

All three products are GEMMs whose operands are gathered on the fly inside the tile loads (no
im2col buffer in global memory), one group per ``blockIdx.z``:

=============  ====================  =====================  ==========================
kernel         rows (M)              columns                reduction
=============  ====================  =====================  ==========================
forward        out channels K/g      output pixels N*Ho*Wo  C/g * kh * kw  (w, x patch)
grad_input     in channels C/g       input pixels N*H*W     K/g * kh * kw  (w, gy)
grad_weight    out channels K/g      C/g * kh * kw          N*Ho*Wo, split over blocks
=============  ====================  =====================  ==========================

grad_input is a gather (each input pixel collects the output pixels whose windows hold it; for
stride > 1 the non-matching taps load zeros), so no atomics: results are deterministic. The weight
gradient splits its long reduction over ``blockIdx.z`` into float32 partial sums that one CuPy sum
adds in a fixed order. The bias gradient is a shared-memory tree reduction, one block per channel.

Every kernel is built twice by ``_kernels(acc)``: accumulating in float32 (float32 and float16
data: fp16 loads widened to fp32) and in float64 (float64 data, for gradient checks).
"""

import functools

import numpy as np
from numba import cuda, float32, float64

from gpudl import backend

# Output tile per block: BM rows x BN columns, reduced BK at a time. 256 threads form a 16x16
# grid and each accumulates TM x TN = 4x4 outputs in registers (rows ty + 16a, columns tx + 16b,
# so a warp's stores hit consecutive pixels). Shared memory per block: (BM + BN + 2) * BK * 4 B
# ~ 8 KiB in float32, leaving room for several resident blocks per SM.
BM = 64
BN = 64
BK = 16
TM = 4
TN = 4
THREADS = 256
TILE_SIDE = 16       # threads per side of the 16x16 thread grid (TILE_SIDE * TM == BM)
PAD = 1              # one spare column per shared tile: column-wise stores avoid bank conflicts
A_COLS = BM + PAD    # shared-array shapes must be compile-time constants
B_COLS = BN + PAD

# The weight gradient splits its N*Ho*Wo reduction until the grid has about TARGET_BLOCKS blocks
# (a few waves of an H100's 132 SMs), keeping at least MIN_SPLIT values per split.
TARGET_BLOCKS = 512
MIN_SPLIT = 1024


def _kernels(acc):
    """The four kernels, accumulating in ``acc`` (a Numba float type)."""

    @cuda.jit(device=True, inline="always")
    def mac_tile(a_tile, b_tile, out, tx, ty):
        # out[a, b] += sum_k a_tile[k, ty + 16a] * b_tile[k, tx + 16b]
        b_vals = cuda.local.array(TN, acc)
        for k in range(BK):
            for b in range(TN):
                b_vals[b] = b_tile[k, tx + TILE_SIDE * b]
            for a in range(TM):
                a_val = a_tile[k, ty + TILE_SIDE * a]
                for b in range(TN):
                    out[a, b] += a_val * b_vals[b]

    @cuda.jit(device=True, inline="always")
    def zero_tile(out):
        for a in range(TM):
            for b in range(TN):
                out[a, b] = acc(0)

    @cuda.jit
    def conv_fwd_kernel(x, w2, bias, taps, y, sh, sw, ph, pw, has_bias):
        # y[n, g*Kg + m, oh, ow] = sum_r w2[g*Kg + m, r] * patch(n, oh, ow)[r] + bias
        N, C, H, W = x.shape
        K, R = w2.shape
        Ho, Wo = y.shape[2], y.shape[3]
        g = cuda.blockIdx.z
        Kg, Cg = K // cuda.gridDim.z, C // cuda.gridDim.z
        P = N * Ho * Wo
        m0, p0 = cuda.blockIdx.y * BM, cuda.blockIdx.x * BN
        tid = cuda.threadIdx.x
        a_tile = cuda.shared.array((BK, A_COLS), acc)
        b_tile = cuda.shared.array((BK, B_COLS), acc)
        out = cuda.local.array((TM, TN), acc)
        zero_tile(out)
        # this thread loads pixel column lp of every B tile and weight row lm of every A tile
        lp, lm, lk = tid % BN, tid % BM, tid // BN
        p = p0 + lp
        n, rest = p // (Ho * Wo), p % (Ho * Wo)
        h0, w0 = (rest // Wo) * sh - ph, (rest % Wo) * sw - pw
        for k0 in range(0, R, BK):
            for k in range(lk, BK, THREADS // BN):
                r = k0 + k
                v = acc(0)
                if p < P and r < R:
                    h, v_w = h0 + taps[1, r], w0 + taps[2, r]
                    if 0 <= h < H and 0 <= v_w < W:
                        v = acc(x[n, g * Cg + taps[0, r], h, v_w])
                b_tile[k, lp] = v
                m = m0 + lm
                a_tile[k, lm] = acc(w2[g * Kg + m, r]) if m < Kg and r < R else acc(0)
            cuda.syncthreads()
            mac_tile(a_tile, b_tile, out, tid % TILE_SIDE, tid // TILE_SIDE)
            cuda.syncthreads()
        for a in range(TM):
            m = m0 + tid // TILE_SIDE + TILE_SIDE * a
            shift = acc(bias[g * Kg + m]) if has_bias != 0 and m < Kg else acc(0)
            for b in range(TN):
                q = p0 + tid % TILE_SIDE + TILE_SIDE * b
                if m < Kg and q < P:
                    rest = q % (Ho * Wo)
                    y[q // (Ho * Wo), g * Kg + m, rest // Wo, rest % Wo] = out[a, b] + shift

    @cuda.jit
    def conv_grad_input_kernel(gy, w2, taps, gx, khw, sh, sw, ph, pw):
        # gx[n, g*Cg + m, h, v] = sum over (k, i, j) of w[g*Kg + k, m, i, j] * gy[n, g*Kg + k,
        # oh, ow] for the output pixels whose tap (i, j) reads (h, v)
        N, K, Ho, Wo = gy.shape
        C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
        g = cuda.blockIdx.z
        Kg, Cg = K // cuda.gridDim.z, C // cuda.gridDim.z
        R = Kg * khw
        P = N * H * W
        m0, p0 = cuda.blockIdx.y * BM, cuda.blockIdx.x * BN
        tid = cuda.threadIdx.x
        a_tile = cuda.shared.array((BK, A_COLS), acc)
        b_tile = cuda.shared.array((BK, B_COLS), acc)
        out = cuda.local.array((TM, TN), acc)
        zero_tile(out)
        lp, lm, lk = tid % BN, tid % BM, tid // BN
        p = p0 + lp
        n, rest = p // (H * W), p % (H * W)
        hp, wp = rest // W + ph, rest % W + pw          # the pixel in padded coordinates
        for k0 in range(0, R, BK):
            for k in range(lk, BK, THREADS // BN):
                r = k0 + k
                kk = taps[0, r] if r < R else 0
                t = r - kk * khw                            # the tap i*kw + j
                v = acc(0)
                if p < P and r < R:
                    th, tw = hp - taps[1, r], wp - taps[2, r]
                    if th >= 0 and tw >= 0 and th % sh == 0 and tw % sw == 0:
                        oh, ow = th // sh, tw // sw
                        if oh < Ho and ow < Wo:
                            v = acc(gy[n, g * Kg + kk, oh, ow])
                b_tile[k, lp] = v
                m = m0 + lm
                a_tile[k, lm] = (acc(w2[g * Kg + kk, m * khw + t]) if m < Cg and r < R
                                 else acc(0))
            cuda.syncthreads()
            mac_tile(a_tile, b_tile, out, tid % TILE_SIDE, tid // TILE_SIDE)
            cuda.syncthreads()
        for a in range(TM):
            m = m0 + tid // TILE_SIDE + TILE_SIDE * a
            for b in range(TN):
                q = p0 + tid % TILE_SIDE + TILE_SIDE * b
                if m < Cg and q < P:
                    rest = q % (H * W)
                    gx[q // (H * W), g * Cg + m, rest // W, rest % W] = out[a, b]

    @cuda.jit
    def conv_grad_weight_kernel(x, gy, taps, partial, sh, sw, ph, pw, split_len):
        # partial[s, g*Kg + m, r] = sum over pixels q of split s of gy[q, g*Kg + m] * patch(q)[r]
        N, C, H, W = x.shape
        K, Ho, Wo = gy.shape[1], gy.shape[2], gy.shape[3]
        splits = partial.shape[0]
        g, s = cuda.blockIdx.z // splits, cuda.blockIdx.z % splits
        G = cuda.gridDim.z // splits
        Kg, Cg = K // G, C // G
        R = taps.shape[1]
        Q = N * Ho * Wo
        q_end = min(Q, (s + 1) * split_len)
        m0, p0 = cuda.blockIdx.y * BM, cuda.blockIdx.x * BN
        tid = cuda.threadIdx.x
        a_tile = cuda.shared.array((BK, A_COLS), acc)
        b_tile = cuda.shared.array((BK, B_COLS), acc)
        out = cuda.local.array((TM, TN), acc)
        zero_tile(out)
        # reduction index fastest across threads: neighbouring threads read neighbouring pixels
        lk, lrow = tid % BK, tid // BK
        for q0 in range(s * split_len, q_end, BK):
            q = q0 + lk
            n, rest = q // (Ho * Wo), q % (Ho * Wo)
            oh, ow = rest // Wo, rest % Wo
            for row in range(lrow, BM, THREADS // BK):       # BM == BN: one loop fills both
                m, r = m0 + row, p0 + row
                a_tile[lk, row] = (acc(gy[n, g * Kg + m, oh, ow]) if q < q_end and m < Kg
                                   else acc(0))
                v = acc(0)
                if q < q_end and r < R:
                    h, v_w = oh * sh - ph + taps[1, r], ow * sw - pw + taps[2, r]
                    if 0 <= h < H and 0 <= v_w < W:
                        v = acc(x[n, g * Cg + taps[0, r], h, v_w])
                b_tile[lk, row] = v
            cuda.syncthreads()
            mac_tile(a_tile, b_tile, out, tid % TILE_SIDE, tid // TILE_SIDE)
            cuda.syncthreads()
        for a in range(TM):
            m = m0 + tid // TILE_SIDE + TILE_SIDE * a
            for b in range(TN):
                r = p0 + tid % TILE_SIDE + TILE_SIDE * b
                if m < Kg and r < R:
                    partial[s, g * Kg + m, r] = out[a, b]

    @cuda.jit
    def conv_grad_bias_kernel(gy3, gb):
        # gb[k] = sum over n, pixel of gy3[n, k, pixel]: one block per channel, tree reduction
        k, tid = cuda.blockIdx.x, cuda.threadIdx.x
        N, HW = gy3.shape[0], gy3.shape[2]
        partial = cuda.shared.array(THREADS, acc)
        total = acc(0)
        for idx in range(tid, N * HW, THREADS):
            total += acc(gy3[idx // HW, k, idx % HW])
        partial[tid] = total
        cuda.syncthreads()
        step = THREADS // 2
        while step > 0:
            if tid < step:
                partial[tid] += partial[tid + step]
            cuda.syncthreads()
            step //= 2
        if tid == 0:
            gb[k] = partial[0]

    return conv_fwd_kernel, conv_grad_input_kernel, conv_grad_weight_kernel, conv_grad_bias_kernel


_F32 = _kernels(float32)
_F64 = _kernels(float64)


def _pick(dtype):
    """(kernels, accumulator dtype name) for data of ``dtype``."""
    return (_F64, "float64") if dtype == "float64" else (_F32, "float32")


def _blocks(n, size):
    return (n + size - 1) // size


def _taps(xp, channels, geo):
    """(3, channels*kh*kw) int32: for reduction index r = (c, i, j), the channel c and the
    offsets i*dh, j*dw, so kernels look up what 64-bit division would otherwise recompute."""
    return _tap_table(xp, channels, geo.kh, geo.kw, geo.dh, geo.dw)


@functools.lru_cache(maxsize=64)
def _tap_table(xp, channels, kh, kw, dh, dw):
    c, i, j = np.indices((channels, kh, kw)).reshape(3, -1)
    return xp.asarray(np.stack([c, i * dh, j * dw]).astype(np.int32))


def _strides_pads(geo):
    return (geo.sh, geo.sw, geo.ph, geo.pw)


def forward(x, w, b, geo):
    """y = conv(x, w) + b, (N, K, Ho, Wo) in x's dtype."""
    xp = backend.get_array_module(x)
    x = xp.ascontiguousarray(x)
    w2 = xp.ascontiguousarray(w, dtype=x.dtype).reshape(geo.K, -1)        # (K, Cg*kh*kw)
    y = xp.empty(geo.y_shape, x.dtype)
    bias = xp.zeros(1, x.dtype) if b is None else xp.ascontiguousarray(b, dtype=x.dtype)
    if y.size == 0:
        return y
    grid = (_blocks(geo.N * geo.Ho * geo.Wo, BN), _blocks(geo.K // geo.groups, BM), geo.groups)
    kernel = _pick(x.dtype)[0][0]
    taps = _taps(xp, geo.C // geo.groups, geo)
    kernel[grid, THREADS, backend.launch_stream()](x, w2, bias, taps, y, *_strides_pads(geo),
                                                   int(b is not None))
    return y


def grad_input(gy, w, geo):
    """The adjoint of forward in x: gx (N, C, H, W) in gy's dtype."""
    xp = backend.get_array_module(gy)
    gy = xp.ascontiguousarray(gy)
    w2 = xp.ascontiguousarray(w, dtype=gy.dtype).reshape(geo.K, -1)
    gx = xp.zeros(geo.x_shape, gy.dtype)
    if gx.size == 0 or gy.size == 0:
        return gx
    grid = (_blocks(geo.N * geo.H * geo.W, BN), _blocks(geo.C // geo.groups, BM), geo.groups)
    kernel = _pick(gy.dtype)[0][1]
    taps = _taps(xp, geo.K // geo.groups, geo)
    kernel[grid, THREADS, backend.launch_stream()](gy, w2, taps, gx, geo.kh * geo.kw,
                                                   *_strides_pads(geo))
    return gx


def grad_weight(x, gy, geo):
    """The adjoint of forward in w: gw (K, C/groups, kh, kw), in the accumulator's dtype."""
    xp = backend.get_array_module(x)
    x, gy = xp.ascontiguousarray(x), xp.ascontiguousarray(gy, dtype=x.dtype)
    kernels, acc_dtype = _pick(x.dtype)
    R = geo.C // geo.groups * geo.kh * geo.kw
    Q = geo.N * geo.Ho * geo.Wo
    if Q == 0 or geo.K == 0 or R == 0:
        return xp.zeros(geo.w_shape, acc_dtype)
    tiles = _blocks(R, BN) * _blocks(geo.K // geo.groups, BM) * geo.groups
    splits = max(1, min(_blocks(Q, MIN_SPLIT), _blocks(TARGET_BLOCKS, tiles),
                        65535 // geo.groups))
    split_len = _blocks(_blocks(Q, splits), BK) * BK
    splits = _blocks(Q, split_len)
    partial = xp.empty((splits, geo.K, R), acc_dtype)
    grid = (_blocks(R, BN), _blocks(geo.K // geo.groups, BM), geo.groups * splits)
    taps = _taps(xp, geo.C // geo.groups, geo)
    kernels[2][grid, THREADS, backend.launch_stream()](x, gy, taps, partial, *_strides_pads(geo),
                                                       split_len)
    return partial.sum(axis=0).reshape(geo.w_shape)


def grad_bias(gy):
    """Sum of gy over (N, Ho, Wo): (K,) in the accumulator's dtype."""
    xp = backend.get_array_module(gy)
    kernels, acc_dtype = _pick(gy.dtype)
    gy3 = xp.ascontiguousarray(gy).reshape(gy.shape[0], gy.shape[1], -1)    # (N, K, Ho*Wo)
    gb = xp.zeros(gy.shape[1], acc_dtype)
    if gy.size == 0:
        return gb
    kernels[3][gy.shape[1], THREADS, backend.launch_stream()](gy3, gb)
    return gb


def _signatures():
    """Every kernel with the signatures its launchers use: C-contiguous arrays, int64 scalars."""
    table = []
    ints4, taps = "int64, int64, int64, int64", "int32[:, ::1]"
    for kernels, data in ((_F32, "float32"), (_F32, "float16"), (_F64, "float64")):
        acc = "float64" if data == "float64" else "float32"
        a4, a2, a1 = f"{data}[:, :, :, ::1]", f"{data}[:, ::1]", f"{data}[::1]"
        fwd, gin, gwt, gbs = kernels
        table += [
            (fwd, [f"void({a4}, {a2}, {a1}, {taps}, {a4}, {ints4}, int64)"]),
            (gin, [f"void({a4}, {a2}, {taps}, {a4}, int64, {ints4})"]),
            (gwt, [f"void({a4}, {a4}, {taps}, {acc}[:, :, ::1], {ints4}, int64)"]),
            (gbs, [f"void({data}[:, :, ::1], {acc}[::1])"]),
        ]
    return table


SIGNATURES = _signatures()
