"""Fused Winograd F(2x2, 3x3) convolution on cuda: transforms and products in one kernel.

conv_winograd_cuda runs the same arithmetic as three passes through global memory (input tiles
V, a batched cuBLAS GEMM, output tiles): V and M are each 16 values per 2x2 tile, 4x the data
they come from, written and read back, which made that path memory-bound and slower than the
direct sum on an H200 (session 18). Here one block computes a 32-channel x 32-tile block of
outputs for all 16 Winograd positions at once, and nothing but x, the transformed weights and y
touches global memory:

1. ``weight_tiles`` (a small kernel, once per call): U[xi, c, k] = (G g G^T)[xi] for every input
   channel c and output channel k, g = w[k, c] (or, for grad_input, w[c, k] rotated by 180
   degrees), zero-padded to whole blocks (Cp x Kp) so that the main loop's weight loads need no
   bounds test;
2. ``winograd_conv`` (the main kernel): per step of BC = 4 input channels, half the block's
   warps load the 4x4 input patch of one (channel, tile) each and transform it (B^T d B: 32
   additions) into shared memory, the other half copy the step's weight tiles (16 x 4 x 32)
   there; then each thread multiplies its position xi's 8 x 8 micro-tile of the (32 channels x
   32 tiles) product over the 4 channels (256 FMAs a step, 4 x 4 16-byte shared loads). The
   shared tiles are double-buffered: the next step's global loads issue into registers before
   the FMAs and are stored (transformed) after them, one barrier a step. At the end the 16
   positions of each (channel, tile) meet in shared memory (half the channels at a time: the 32
   KB of the tiles), where one thread per (channel, tile) applies A^T M A, adds the bias and
   stores the 2x2 outputs that fall inside the image.

The products are 16 per (c, k, tile) where the direct sum makes 36: 2.25x fewer FMAs, at the
same 8 x 8 micro-tile as conv_cuda's gemm. The transforms are the overhead: per step a thread
adds ~70 instructions (patch loads and additions) or ~35 (weight copies) to its 256 FMAs, and
the x patch of a tile is read once per 32 output channels (4 patch rows of 4 from L1).

grad_input is the same kernel on gy (stride 1: the adjoint is the convolution of gy with the
weights rotated and their channels swapped, padded by 2 - p); grad_weight stays conv_cuda's.

Where it runs (``applies``): float32 with TF32 off (strict), 3x3, stride 1, dilation 1, one
group, every output kept (``conv_winograd.computes``), at least MIN_CHANNELS input and output
channels (a block's 32 output channels and 4-channel steps), MIN_WORK multiply-adds (smaller
convolutions keep conv_cuda's single launch), and offsets within int32.

Non-finite values: as in every Winograd (cuDNN's too) a NaN or infinity in x reaches all four
outputs of each tile whose patch holds it, through the transforms' additions; outputs of other
tiles are exact (tests/sim/test_conv_winograd_fused_sim.py).
"""

import numpy as np
from numba import config, cuda, float32, int32, int64, uint32, uint64

from gpudl import backend

from . import conv_cuda, conv_winograd
from .budget import Budget
from .launch import launch

ENABLED = True     # the default strict-fp32 path for the convolutions it applies to
THREADS = 256
TK = 32            # output channels a block
TP = 32            # tiles a block (a warp's lanes)
BC = 4             # input channels a step
POSITIONS = 16     # Winograd positions xi = 4a + b of a 4x4 tile
PART = POSITIONS * BC * TK        # floats of one buffer's weight (or input) tiles: 2048
SHARED = 4 * PART                 # two buffers of each: 8192 floats, 32 KB
MIN_CHANNELS = 32
MIN_WORK = 1 << 24                # N*Ho*Wo*C*K
INDEX_LIMIT = conv_cuda.INT32_LIMIT // 4 * 3
WEIGHT_THREADS = 256
assert BC == 4 and TK == TP == 32 and THREADS == POSITIONS * 16 and SHARED >= POSITIONS * 16 * TP


def _kernels():
    """(weight_tiles, winograd_conv), float32."""
    I, S, L = int32, uint32, uint64
    acc = float32
    # 2 blocks an SM (25% occupancy): at most 128 registers a thread
    BOUNDS = {} if config.ENABLE_CUDASIM else {"launch_bounds": (THREADS, 2)}

    @cuda.jit(device=True, inline="always")
    def g_rows(g0, g1, g2):
        # G g for one column (or row) of three: 4 values
        h = acc(0.5) * (g0 + g2)
        return g0, h + acc(0.5) * g1, h - acc(0.5) * g1, g2

    @cuda.jit
    def weight_tiles(w, ut, Kout, Cin, Kp, Cp, s_out, s_in, flip):
        # ut[c, k // TK, xi, k % TK] = (G g G^T)[xi] for c < Cp, k < Kp; g = the 3x3 taps of w
        # at offset k*s_out + c*s_in (reversed when ``flip``), zero for c >= Cin or k >= Kout.
        # (A block's 16 x TK tiles of one channel are contiguous: its loads take immediate
        # offsets from one address.)
        q = I(cuda.blockIdx.x * WEIGHT_THREADS + cuda.threadIdx.x)
        if q >= Cp * Kp:
            return
        c = I(S(q) // S(Kp))
        k = I(q - c * Kp)
        g = cuda.local.array(9, acc)
        base = I(k * s_out + c * s_in)
        for t in range(9):
            g[t] = acc(0)
            if c < Cin and k < Kout:
                g[t] = w[S(base + (8 - t if flip != 0 else t))]
        # G g (rows of the 4x3 result, column by column), then times G^T row by row
        r00, r10, r20, r30 = g_rows(g[0], g[3], g[6])
        r01, r11, r21, r31 = g_rows(g[1], g[4], g[7])
        r02, r12, r22, r32 = g_rows(g[2], g[5], g[8])
        step = I(TK)
        out = I((c * Kp + (k & ~(TK - 1))) * POSITIONS + (k & (TK - 1)))
        rows = ((r00, r01, r02), (r10, r11, r12), (r20, r21, r22), (r30, r31, r32))
        for a in range(4):
            u0, u1, u2, u3 = g_rows(rows[a][0], rows[a][1], rows[a][2])
            ut[S(out + (4 * a) * step)] = u0
            ut[S(out + (4 * a + 1) * step)] = u1
            ut[S(out + (4 * a + 2) * step)] = u2
            ut[S(out + (4 * a + 3) * step)] = u3

    @cuda.jit(device=True, inline="always")
    def bt(d0, d1, d2, d3):
        # B^T d for one column (or row) of a patch
        return d0 - d2, d1 + d2, d2 - d1, d1 - d3

    @cuda.jit(device=True, inline="always")
    def store4(sh, first, step, e):
        # the four values of ``e`` into sh at first, first + step, first + 2 step, ...
        sh[first] = e[0]
        sh[S(first + step)] = e[1]
        sh[S(first + 2 * step)] = e[2]
        sh[S(first + 3 * step)] = e[3]

    @cuda.jit(device=True, inline="always")
    def load_step(x, ut, pre, patch, live, base, mask, W, ut_off):
        # a step's global values into registers: a patch thread the 16 values of its 4x4
        # patch (zero outside the image, past the tiles or past the channels), a weight
        # thread its 16 weight tiles. Indices are a 64-bit sum of a row offset and a constant,
        # which the loads take as an immediate offset.
        if patch:
            if live:
                for i in range(4):
                    row = int64(I(base + i * W))     # -1 where the patch starts at column -1
                    for j in range(4):
                        v = acc(0)
                        if (mask >> (4 * i + j)) & 1 != 0:
                            v = x[L(row + j)]
                        pre[4 * i + j] = v
            else:
                for q in range(POSITIONS):
                    pre[q] = acc(0)
        else:
            first = L(ut_off)
            for q in range(POSITIONS):
                pre[q] = ut[first + L(q * TK)]

    @cuda.jit(device=True, inline="always")
    def store_step(sh, pre, patch, buf, wc, lane):
        # registers into buffer ``buf``: a patch thread's B^T d B (positions 4a + b) at
        # V[xi, wc, lane], a weight thread's tiles at U[xi, wc, lane]
        if patch:
            # B^T d, column by column: c<j> holds rows 0..3 of column j
            c0 = bt(pre[0], pre[4], pre[8], pre[12])
            c1 = bt(pre[1], pre[5], pre[9], pre[13])
            c2 = bt(pre[2], pre[6], pre[10], pre[14])
            c3 = bt(pre[3], pre[7], pre[11], pre[15])
            first = S(2 * PART + buf * PART + wc * TP + lane)
            step = S(BC * TP)
            # times B: row a gives positions 4a .. 4a + 3
            store4(sh, first, step, bt(c0[0], c1[0], c2[0], c3[0]))
            store4(sh, S(first + 4 * step), step, bt(c0[1], c1[1], c2[1], c3[1]))
            store4(sh, S(first + 8 * step), step, bt(c0[2], c1[2], c2[2], c3[2]))
            store4(sh, S(first + 12 * step), step, bt(c0[3], c1[3], c2[3], c3[3]))
        else:
            first = S(buf * PART + wc * TK + lane)
            for q in range(POSITIONS):
                sh[S(first + q * BC * TK)] = pre[q]

    @cuda.jit(device=True, inline="always")
    def mac_step(sh, ub, vb, out, a_frag, b_frag):
        # out[a, b] += U[xi, c, 4tk + row a] * V[xi, c, 4tp + column b] for one channel c of
        # the step (ub, vb: its offsets). A micro-tile's 8 rows (columns) are two runs of four,
        # 16 apart: each run one 16-byte shared load
        for j in range(8):
            a_frag[j] = sh[S(ub + (j // 4) * 16 + j % 4)]
            b_frag[j] = sh[S(vb + (j // 4) * 16 + j % 4)]
        for a in range(8):
            for b in range(8):
                out[a, b] += a_frag[a] * b_frag[b]

    @cuda.jit(device=True, inline="always")
    def mac_buffer(sh, buf, xi, tk, tp, out, a_frag, b_frag):
        # the 4 channels of a step from buffer ``buf``, spelled out (NVVM does not unroll a
        # 64-FMA body on its own)
        ub = S(buf * PART + xi * BC * TK + 4 * tk)
        vb = S(2 * PART + buf * PART + xi * BC * TP + 4 * tp)
        mac_step(sh, ub, vb, out, a_frag, b_frag)
        mac_step(sh, S(ub + TK), S(vb + TP), out, a_frag, b_frag)
        mac_step(sh, S(ub + 2 * TK), S(vb + 2 * TP), out, a_frag, b_frag)
        mac_step(sh, S(ub + 3 * TK), S(vb + 3 * TP), out, a_frag, b_frag)

    @cuda.jit(device=True, inline="always")
    def at(m0, m1, m2, m3):
        # A^T m for one column (or row) of four
        return m0 + m1 + m2, m1 - m2 - m3

    @cuda.jit(device=True, inline="always")
    def output_half(sh, out, half, xi, tk, tp, tid, lane, y, bias, k0, K, Ho, Wo, n, ty, tx,
                    tile_live, has_bias):
        # channels 16 half .. 16 half + 15 of the block: the micro-tiles' rows 4 half ..
        # 4 half + 3 into shared memory as M[xi, channel, tile], then thread (kk, lane) of the
        # block makes channels kk and kk + 8's outputs of tile ``lane``: y = A^T M A + bias
        first = S((xi * 16 + 4 * tk) * TP + 4 * tp)
        for a in range(4):
            for b in range(8):
                sh[S(first + a * TP + (b // 4) * 16 + b % 4)] = out[4 * half + a, b]
        cuda.syncthreads()
        for rr in range(2):
            kk = S((tid >> 5) + 8 * rr)
            k = I(k0 + 16 * half + kk)
            at_ = S(kk * TP + lane)
            span = S(16 * TP)         # from one position to the next
            # A^T M, column by column: p<i><b> is row i, column b
            p00, p10 = at(sh[at_], sh[S(at_ + 4 * span)], sh[S(at_ + 8 * span)],
                          sh[S(at_ + 12 * span)])
            p01, p11 = at(sh[S(at_ + span)], sh[S(at_ + 5 * span)], sh[S(at_ + 9 * span)],
                          sh[S(at_ + 13 * span)])
            p02, p12 = at(sh[S(at_ + 2 * span)], sh[S(at_ + 6 * span)],
                          sh[S(at_ + 10 * span)], sh[S(at_ + 14 * span)])
            p03, p13 = at(sh[S(at_ + 3 * span)], sh[S(at_ + 7 * span)],
                          sh[S(at_ + 11 * span)], sh[S(at_ + 15 * span)])
            if tile_live and k < K:
                b = acc(bias[S(k)]) if has_bias != 0 else acc(0)
                y00, y01 = at(p00, p01, p02, p03)
                y10, y11 = at(p10, p11, p12, p13)
                oh, ow = I(2 * ty), I(2 * tx)
                row = I(((n * K + k) * Ho + oh) * Wo + ow)
                y[S(row)] = y00 + b
                if ow + 1 < Wo:
                    y[S(row + 1)] = y01 + b
                if oh + 1 < Ho:
                    y[S(row + Wo)] = y10 + b
                    if ow + 1 < Wo:
                        y[S(row + Wo + 1)] = y11 + b
        cuda.syncthreads()

    @cuda.jit(**BOUNDS)
    def winograd_conv(x, ut, bias, y, C, H, W, K, Ho, Wo, ph, pw, tw, tiles, P, KB, has_bias):
        # y[n, k, 2ty + i, 2tx + j] = (A^T [sum over c of U[:, c, k] . V(c, tile)] A)[i, j]
        # + bias[k] for the 32 output channels k0.. and 32 tiles p0.. of this block; tile
        # p = (n * th + ty) * tw + tx of P, V(c, tile) = B^T d B of x[n, c]'s 4x4 patch at
        # (2ty - ph, 2tx - pw). ut (Cp, KB, 16, TK) flat (weight_tiles), KB = Kp / TK.
        tid = S(cuda.threadIdx.x)
        block = S(cuda.blockIdx.x)
        pb = S(block // S(KB))
        kb = I(block - pb * S(KB))
        k0, p0 = I(kb * TK), I(pb * TP)
        sh = cuda.shared.array(SHARED, acc)
        out = cuda.local.array((8, 8), acc)
        a_frag = cuda.local.array(8, acc)
        b_frag = cuda.local.array(8, acc)
        pre = cuda.local.array(POSITIONS, acc)
        for a in range(8):
            for b in range(8):
                out[a, b] = acc(0)
        # products: position xi, micro-tile row tk and column tp (16 threads a position)
        xi, tk, tp = S(tid >> 4), S((tid >> 2) & 3), S(tid & 3)
        # loads: warps 0-3 patches of a step's channel wc, warps 4-7 its weight tiles; the
        # lane is the tile (patches) or the output channel (weights)
        lane, wc = S(tid & 31), S((tid >> 5) & 3)
        patch = tid < 4 * 32
        # the lane's tile: image n, tile row ty and column tx; which of its 16 patch values
        # lie inside the image (bit 4i + j for row i, column j)
        p = I(p0 + lane)
        tile_live = p < P
        n = I(S(p) // S(tiles))
        r = I(p - n * tiles)
        ty = I(S(r) // S(tw))
        tx = I(r - ty * tw)
        h0, w0 = I(2 * ty - ph), I(2 * tx - pw)
        mask = I(0)
        if tile_live:
            for i in range(4):
                for j in range(4):
                    if S(h0 + i) < S(H) and S(w0 + j) < S(W):
                        mask |= I(1 << (4 * i + j))
        HW = I(H * W)
        base = I((n * C + wc) * HW + h0 * W + w0)     # channel wc's patch, step 0
        ut_off = I(((wc * KB + kb) * POSITIONS) * TK + lane)   # channel wc's tiles, step 0
        c = I(wc)                                              # channel wc of the step
        load_step(x, ut, pre, patch, c < C, base, mask, W, ut_off)
        store_step(sh, pre, patch, S(0), wc, lane)
        cuda.syncthreads()
        s = I(0)
        while s < C:                    # s: the step's first channel
            if s + BC < C:              # the next step's loads are in flight during the FMAs
                base = I(base + BC * HW)
                ut_off = I(ut_off + BC * KB * POSITIONS * TK)
                c = I(c + BC)
                load_step(x, ut, pre, patch, c < C, base, mask, W, ut_off)
            buf = S((S(s) >> 2) & 1)        # (s / BC) & 1
            mac_buffer(sh, buf, xi, tk, tp, out, a_frag, b_frag)
            if s + BC < C:
                store_step(sh, pre, patch, S(buf ^ 1), wc, lane)
            cuda.syncthreads()
            s = I(s + BC)
        output_half(sh, out, 0, xi, tk, tp, tid, lane, y, bias, k0, K, Ho, Wo, n, ty, tx,
                    tile_live, has_bias)
        output_half(sh, out, 1, xi, tk, tp, tid, lane, y, bias, k0, K, Ho, Wo, n, ty, tx,
                    tile_live, has_bias)

    return weight_tiles, winograd_conv


WEIGHT_TILES, WINOGRAD_CONV = _kernels()
WEIGHT_SIGNATURE = f"void(float32[::1], float32[::1], {', '.join(['int32'] * 7)})"
CONV_SIGNATURE = f"void({', '.join(['float32[::1]'] * 4 + ['int32'] * 13)})"


# --------------------------------------------------------------------------- where it runs
def applies(geo, dtype, allow_tf32=False):
    """Whether ``geo`` runs here for ``dtype`` data (the module docstring says why)."""
    if not ENABLED or np.dtype(dtype) != np.float32 or allow_tf32 or \
            not conv_winograd.computes(geo):
        return False
    return (min(geo.C, geo.K) >= MIN_CHANNELS
            and geo.N * geo.Ho * geo.Wo * geo.C * geo.K >= MIN_WORK
            and max(geo.N * geo.C * geo.H * geo.W, geo.N * geo.K * geo.Ho * geo.Wo,
                    16 * _padded(geo.C, TK) * _padded(geo.K, TK)) < INDEX_LIMIT)


def _padded(n, block):
    return -(-n // block) * block


def _weight_tiles(w, Kout, Cin, s_out, s_in, flip):
    """ut (Cp, Kp / TK, 16, TK) flat: the weight tiles of Kout x Cin 3x3 taps of w (see weight_tiles)."""
    xp = backend.get_array_module(w)
    Kp, Cp = _padded(Kout, TK), _padded(Cin, BC)
    ut = xp.empty(Cp * Kp * POSITIONS, np.float32)
    launch(WEIGHT_TILES, WEIGHT_SIGNATURE, -(-Cp * Kp // WEIGHT_THREADS), WEIGHT_THREADS,
           w.reshape(-1), ut, Kout, Cin, Kp, Cp, s_out, s_in, int(flip))
    return ut, Kp, Cp


def _run(x, ut, Kp, Cp, b, N, C, H, W, K, Ho, Wo, ph, pw):
    """y (N, K, Ho, Wo) = the Winograd convolution of x (N, C, H, W) padded by (ph, pw)
    (negative: cropped) with weight tiles ``ut``, plus ``b`` (K,) when given."""
    xp = backend.get_array_module(x)
    y = xp.empty((N, K, Ho, Wo), np.float32)
    th, tw = -(-Ho // 2), -(-Wo // 2)
    P = N * th * tw
    KB = Kp // TK
    bias = y.reshape(-1)[:1] if b is None else xp.ascontiguousarray(b, dtype=np.float32)
    launch(WINOGRAD_CONV, CONV_SIGNATURE, KB * -(-P // TP), THREADS, x.reshape(-1), ut,
           bias, y.reshape(-1), C, H, W, K, Ho, Wo, ph, pw, tw, th * tw, P, KB,
           int(b is not None))
    return y


# --------------------------------------------------------------------------- entry points
def forward(x, w, b, geo):
    """y = conv(x, w) + b, (N, K, Ho, Wo) float32."""
    xp = backend.get_array_module(x)
    x = xp.ascontiguousarray(x, dtype=np.float32)
    w = xp.ascontiguousarray(w, dtype=np.float32)
    ut, Kp, Cp = _weight_tiles(w, geo.K, geo.C, geo.C * 9, 9, False)
    return _run(x, ut, Kp, Cp, b, geo.N, geo.C, geo.H, geo.W, geo.K, geo.Ho, geo.Wo, geo.ph,
                geo.pw)


def grad_input(gy, w, geo, b=None):
    """The adjoint of forward in x: the convolution of gy with w rotated by 180 degrees and its
    channels swapped, padded by 2 - p; plus ``b`` (C,) when given (conv_transpose2d's bias)."""
    xp = backend.get_array_module(gy)
    gy = xp.ascontiguousarray(gy, dtype=np.float32)
    w = xp.ascontiguousarray(w, dtype=np.float32)
    ut, Kp, Cp = _weight_tiles(w, geo.C, geo.K, 9, geo.C * 9, True)
    return _run(gy, ut, Kp, Cp, b, geo.N, geo.K, geo.Ho, geo.Wo, geo.C, geo.H, geo.W,
                2 - geo.ph, 2 - geo.pw)


grad_weight = conv_cuda.grad_weight


def _signature_table():
    """The main kernel: a hot loop of products at FMA share 50% or more, 25% occupancy, no
    division anywhere; the weight kernel: one thread per (c, k), no loop to speak of."""
    return [(WINOGRAD_CONV, [CONV_SIGNATURE],
             Budget(threads=THREADS, min_fma_share=0.5, max_div64=0)),
            (WEIGHT_TILES, [WEIGHT_SIGNATURE], Budget(threads=WEIGHT_THREADS, max_div64=0))]


SIGNATURES = _signature_table()
