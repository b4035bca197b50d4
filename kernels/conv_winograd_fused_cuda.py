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
Shared-memory offsets are a 64-bit base plus constants, so that loads and stores take them as
immediate offsets (32-bit sums, which may wrap, cost a register each: 40 of them spilled).

grad_input is the same kernel on gy (stride 1: the adjoint is the convolution of gy with the
weights rotated and their channels swapped, padded by 2 - p).

grad_weight: dU[xi, k, c] = sum over tiles of dM(k, t)[xi] V(c, t)[xi], dM = A gY A^T of each
2x2 block of gy, then gw = G^T dU G. ``winograd_wgrad`` is the forward's product loop with the
tiles as the reduction: a block owns 32 output x 32 input channels and one split of the tiles;
per step of 8 tiles each thread loads one tile's 2x2 gy block (cp.async, straight to shared
memory) and 4x4 x patch (registers) for one channel, transforms both into shared memory, and the
products run over the 8 tiles (512 FMAs a thread a step). Each block writes its partial sums;
``wgrad_finish`` adds the splits' in a fixed order (deterministic) and applies G^T . G, one
thread per (k, c). The bias gradient is conv_cuda's sum of gy.

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

from . import conv_cuda, conv_winograd, mma
from .budget import Budget
from .launch import launch
from .pool_cuda import _magic
from .winograd_transforms import (ag, at, bt, store4, store_ag_rows, store_bt_rows,
                                  store_output_tile as store_tile)

ENABLED = True     # the default strict-fp32 path for the convolutions it applies to
THREADS = 256
TK = 32            # output channels a block
TP = 32            # tiles a block (a warp's lanes)
BC = 4             # input channels a step (forward)
WSTEP = 8          # tiles a step (weight gradient)
POSITIONS = 16     # Winograd positions xi = 4a + b of a 4x4 tile
PART = POSITIONS * BC * TK        # floats of one buffer's weight (or input) tiles: 2048
SHARED = 4 * PART                 # two buffers of each: 8192 floats, 32 KB (and 4 KB more
                                  # in the weight gradient, its gy blocks in flight)
MIN_CHANNELS = 32
MIN_WORK = 1 << 24                # N*Ho*Wo*C*K
INDEX_LIMIT = conv_cuda.INT32_LIMIT // 4 * 3
WEIGHT_THREADS = 256
# the weight gradient: splits of its tile reduction until about TARGET_BLOCKS blocks (a few
# waves of 2 blocks on each of an H100's 132 SMs), each split MIN_SPAN tiles at least
TARGET_BLOCKS = 528
MIN_SPAN = 64
assert BC == 4 and TK == TP == 32 and THREADS == POSITIONS * 16 == WSTEP * 32
assert SHARED == 2 * POSITIONS * WSTEP * TK and SHARED >= POSITIONS * 16 * TP


def _kernels():
    """(weight_tiles, winograd_conv, winograd_wgrad, wgrad_finish), float32."""
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
        out = I((c * Kp + (k & ~(TK - 1))) * POSITIONS + (k & (TK - 1)))
        store4(ut, out, TK, g_rows(r00, r01, r02))
        store4(ut, out + 4 * TK, TK, g_rows(r10, r11, r12))
        store4(ut, out + 8 * TK, TK, g_rows(r20, r21, r22))
        store4(ut, out + 12 * TK, TK, g_rows(r30, r31, r32))

    @cuda.jit(device=True, inline="always")
    def patch_mask(h0, w0, H, W):
        # bit 4i + j set where the patch value at (h0 + i, w0 + j) lies inside (H, W): columns
        # lo .. hi - 1 of a row are inside, and the rows likewise; the column bits times a row
        # spread (bit 4i for each row inside) put them in every row inside, with no carries
        zero, four = I(0), I(4)
        lo, hi = max(zero, I(-w0)), max(zero, min(four, I(W - w0)))
        cols = ((I(1) << hi) - I(1)) & ~((I(1) << lo) - I(1))
        lo, hi = max(zero, I(-h0)), max(zero, min(four, I(H - h0)))
        rows = I(0x1111) & ((I(1) << (four * hi)) - I(1)) & ~((I(1) << (four * lo)) - I(1))
        return I(cols * rows)

    @cuda.jit(device=True, inline="always")
    def load_patch(x, pre, base, mask, W):
        # the 16 values of the 4x4 patch whose top left is x[base] into pre, zero where
        # ``mask`` has no bit. Indices are a 64-bit sum of a row offset and a constant, which
        # the loads take as an immediate offset.
        for i in range(4):
            row = int64(I(base + i * W))     # -1 where the patch starts at column -1
            for j in range(4):
                v = acc(0)
                if (mask >> (4 * i + j)) & 1 != 0:
                    v = x[L(row + j)]
                pre[4 * i + j] = v

    @cuda.jit(device=True, inline="always")
    def store_patch(sh, pre, first, step):
        # B^T d B of the patch in pre: position 4a + b at sh[first + (4a + b) * step]
        store_bt_rows(sh, first, step, bt(pre[0], pre[4], pre[8], pre[12]),
                      bt(pre[1], pre[5], pre[9], pre[13]), bt(pre[2], pre[6], pre[10], pre[14]),
                      bt(pre[3], pre[7], pre[11], pre[15]))

    @cuda.jit(device=True, inline="always")
    def load_step(x, ut, pre, patch, live, base, mask, W, ut_off):
        # a step's global values into registers: a patch thread the 16 values of its 4x4
        # patch (zero outside the image, past the tiles or past the channels), a weight
        # thread its 16 weight tiles (immediate offsets from one address)
        if patch:
            load_patch(x, pre, base, mask if live else I(0), W)
        else:
            first = L(ut_off)
            for q in range(POSITIONS):
                pre[q] = ut[first + L(q * TK)]

    @cuda.jit(device=True, inline="always")
    def store_step(sh, pre, patch, buf, wc, lane):
        # registers into buffer ``buf``: a patch thread's B^T d B at V[xi, wc, lane], a
        # weight thread's tiles at U[xi, wc, lane]
        if patch:
            store_patch(sh, pre, S(2 * PART + buf * PART + wc * TP + lane), S(BC * TP))
        else:
            first = L(S(buf * PART + wc * TK + lane))
            for q in range(POSITIONS):
                sh[first + L(q * BC * TK)] = pre[q]

    @cuda.jit(device=True, inline="always")
    def mac_step(sh, ub, vb, out, a_frag, b_frag):
        # out[a, b] += U[xi, c, 4tk + row a] * V[xi, c, 4tp + column b] for one channel c of
        # the step (ub, vb: its offsets). A micro-tile's 8 rows (columns) are two runs of four,
        # 16 apart: each run one 16-byte shared load
        for j in range(8):
            a_frag[j] = sh[L(ub) + L((j // 4) * 16 + j % 4)]
            b_frag[j] = sh[L(vb) + L((j // 4) * 16 + j % 4)]
        for a in range(8):
            for b in range(8):
                out[a, b] += a_frag[a] * b_frag[b]

    @cuda.jit(device=True, inline="always")
    def mac4(sh, ub, vb, out, a_frag, b_frag):
        # 4 reduction steps of rows at ub, ub + TK, ... and columns at vb, vb + TP, ...,
        # spelled out (NVVM does not unroll a 64-FMA body on its own)
        u, v = L(ub), L(vb)
        mac_step(sh, u, v, out, a_frag, b_frag)
        mac_step(sh, u + L(TK), v + L(TP), out, a_frag, b_frag)
        mac_step(sh, u + L(2 * TK), v + L(2 * TP), out, a_frag, b_frag)
        mac_step(sh, u + L(3 * TK), v + L(3 * TP), out, a_frag, b_frag)

    @cuda.jit(device=True, inline="always")
    def mac_buffer(sh, buf, xi, tk, tp, out, a_frag, b_frag):
        # the 4 channels of a forward step from buffer ``buf``
        mac4(sh, S(buf * PART + xi * BC * TK + 4 * tk),
             S(2 * PART + buf * PART + xi * BC * TP + 4 * tp), out, a_frag, b_frag)

    @cuda.jit(device=True, inline="always")
    def output_half(sh, out, half, xi, tk, tp, tid, lane, y, bias, k0, K, Ho, Wo, n, ty, tx,
                    tile_live, has_bias):
        # channels 16 half .. 16 half + 15 of the block: the micro-tiles' rows 4 half ..
        # 4 half + 3 into shared memory as M[xi, channel, tile], then thread (kk, lane) of the
        # block makes channels kk and kk + 8's outputs of tile ``lane``: y = A^T M A + bias
        first = S((xi * 16 + 4 * tk) * TP + 4 * tp)
        for a in range(4):
            for b in range(8):
                sh[L(first) + L(a * TP + (b // 4) * 16 + b % 4)] = out[4 * half + a, b]
        cuda.syncthreads()
        for rr in range(2):
            kk = S((tid >> 5) + 8 * rr)
            k = I(k0 + 16 * half + kk)
            at_ = S(kk * TP + lane)
            span = S(16 * TP)         # from one position to the next
            # A^T M, column by column: p<i><b> is row i, column b
            m = L(at_)
            p00, p10 = at(sh[m], sh[m + L(4 * span)], sh[m + L(8 * span)], sh[m + L(12 * span)])
            p01, p11 = at(sh[m + L(span)], sh[m + L(5 * span)], sh[m + L(9 * span)],
                          sh[m + L(13 * span)])
            p02, p12 = at(sh[m + L(2 * span)], sh[m + L(6 * span)], sh[m + L(10 * span)],
                          sh[m + L(14 * span)])
            p03, p13 = at(sh[m + L(3 * span)], sh[m + L(7 * span)], sh[m + L(11 * span)],
                          sh[m + L(15 * span)])
            if tile_live and k < K:
                oh, ow = I(2 * ty), I(2 * tx)
                store_tile(y, I(((n * K + k) * Ho + oh) * Wo + ow), Wo, ow + 1 < Wo, oh + 1 < Ho,
                           (p00, p01, p02, p03), (p10, p11, p12, p13),
                           acc(bias[S(k)]) if has_bias != 0 else acc(0))
        cuda.syncthreads()

    @cuda.jit(device=True, inline="always")
    def store_gradient_tile(sh, g, first, step):
        # A gY A^T of the 2x2 block gY = ((g[0], g[1]), (g[2], g[3])): position 4a + b at
        # sh[first + (4a + b) * step]
        store_ag_rows(sh, first, step, ag(g[0], g[2]), ag(g[1], g[3]))

    @cuda.jit(device=True, inline="always")
    def tile_of(t, tiles, tw, mt, st, mw, sw):
        # tile t -> (image, tile row, tile column): magic-number divisions (pool_cuda._magic),
        # unsigned
        n = I((L(S(t)) * L(mt)) >> L(st))
        r = I(t - n * tiles)
        ty = I((L(S(r)) * L(mw)) >> L(sw))
        return n, ty, I(r - ty * tw)

    @cuda.jit(device=True, inline="always")
    def load_wgrad_step(x, gy, gy_s, pre, tid, t, end, k, c, C, H, W, K, Ho, Wo, ph, pw,
                        tiles, tw, mt, st, mw, sw):
        # tile t's values: the 2x2 block of gy[n, k] at (2ty, 2tx) copied to gy_s[:, tid]
        # (cp.async: no registers held while they fly), the 4x4 patch of x[n, c] at
        # (2ty - ph, 2tx - pw) into pre; zero past the split's tiles ``end``, the channels
        # and the image
        n, ty, tx = tile_of(t, tiles, tw, mt, st, mw, sw)
        live = t < end
        oh, ow = I(2 * ty), I(2 * tx)
        right, below = ow + 1 < Wo, oh + 1 < Ho
        grad = live and k < K
        row = I(((n * K + k) * Ho + oh) * Wo + ow) if grad else I(0)
        mma.cp_async_4(gy_s, 0, tid, gy, row, 4 if grad else 0)
        mma.cp_async_4(gy_s, 1, tid, gy, I(row + 1) if grad and right else row,
                       4 if grad and right else 0)
        mma.cp_async_4(gy_s, 2, tid, gy, I(row + Wo) if grad and below else row,
                       4 if grad and below else 0)
        corner = grad and right and below
        mma.cp_async_4(gy_s, 3, tid, gy, I(row + Wo + 1) if corner else row,
                       4 if corner else 0)
        mma.cp_async_commit()
        h0, w0 = I(oh - ph), I(ow - pw)
        mask = patch_mask(h0, w0, H, W) if live and c < C else I(0)
        load_patch(x, pre, I((n * C + c) * H * W + h0 * W + w0), mask, W)

    @cuda.jit(device=True, inline="always")
    def store_wgrad_step(sh, gy_s, pre, tid, warp, lane):
        # A gY A^T at dM[xi, warp, lane] (gY this thread's copies, waited for), B^T d B of the
        # patch at V[xi, warp, lane] (8 tiles a step)
        mma.cp_async_wait_all()
        g = cuda.local.array(4, acc)
        for j in range(4):
            g[j] = gy_s[j, tid]
        store_gradient_tile(sh, g, S(warp * TK + lane), S(WSTEP * TK))
        store_patch(sh, pre, S(2 * PART + warp * TP + lane), S(WSTEP * TP))

    @cuda.jit(**BOUNDS)
    def winograd_wgrad(x, gy, part, C, H, W, K, Ho, Wo, ph, pw, tiles, tw, P, span, CB, Kp,
                       Cp, mt, st, mw, sw):
        # part[s, xi, k, c] = sum over the tiles t of split s = blockIdx.y (tiles s * span ..
        # of P) of dM(k, t)[xi] * V(c, t)[xi] for the block's 32 k (k0 ..) and 32 c (c0 ..):
        # dM = A gY A^T of gy[n, k]'s 2x2 block at (2ty, 2tx), V = B^T d B of x[n, c]'s 4x4
        # patch at (2ty - ph, 2tx - pw). A step takes WSTEP = 8 tiles: warp w loads tile w's
        # gy block of channel k0 + lane and x patch of channel c0 + lane (every thread both, no
        # role branches), then the products run over the 8 tiles as the forward's over its
        # channels. One buffer (8 tiles fill the 32 KB); the next step's loads fly during the
        # products (the patch into registers, the gy block by cp.async into 4 KB of its own:
        # 16 + 4 registers would not fit beside the 64 sums); two barriers a step.
        tid = S(cuda.threadIdx.x)
        block = S(cuda.blockIdx.x)
        kb = S(block // S(CB))
        k0, c0 = I(kb * TK), I((block - kb * S(CB)) * TP)
        t0 = I(cuda.blockIdx.y * span)
        end = I(min(P, t0 + span))
        sh = cuda.shared.array(SHARED, acc)
        out = cuda.local.array((8, 8), acc)
        a_frag = cuda.local.array(8, acc)
        b_frag = cuda.local.array(8, acc)
        pre = cuda.local.array(POSITIONS, acc)
        gy_s = cuda.shared.array((4, THREADS), acc)
        for a in range(8):
            for b in range(8):
                out[a, b] = acc(0)
        xi, tk, tp = S(tid >> 4), S((tid >> 2) & 3), S(tid & 3)
        lane, warp = S(tid & 31), S(tid >> 5)
        k, c = I(k0 + lane), I(c0 + lane)
        ub = S(xi * WSTEP * TK + 4 * tk)
        vb = S(2 * PART + xi * WSTEP * TP + 4 * tp)
        t = I(t0 + warp)
        load_wgrad_step(x, gy, gy_s, pre, tid, t, end, k, c, C, H, W, K, Ho, Wo, ph, pw, tiles,
                        tw, mt, st, mw, sw)
        store_wgrad_step(sh, gy_s, pre, tid, warp, lane)
        cuda.syncthreads()
        s = I(t0)
        while s < end:                  # s: the step's first tile
            more = s + WSTEP < end
            if more:                    # the next step's loads are in flight during the FMAs
                t = I(t + WSTEP)
                load_wgrad_step(x, gy, gy_s, pre, tid, t, end, k, c, C, H, W, K, Ho, Wo, ph, pw,
                                tiles, tw, mt, st, mw, sw)
            mac4(sh, ub, vb, out, a_frag, b_frag)
            mac4(sh, L(ub) + L(4 * TK), L(vb) + L(4 * TP), out, a_frag, b_frag)
            if more:
                cuda.syncthreads()
                store_wgrad_step(sh, gy_s, pre, tid, warp, lane)
            cuda.syncthreads()
            s = I(s + WSTEP)
        # the block's partial sums: row 4tk + (a // 4) * 16 + a % 4 (k), column likewise (c)
        plane = I(Kp * Cp)
        corner = I((cuda.blockIdx.y * POSITIONS + xi) * plane + (k0 + 4 * tk) * Cp + c0 + 4 * tp)
        for a in range(8):
            for b in range(8):
                part[L(corner) + L(((a // 4) * 16 + a % 4) * Cp + (b // 4) * 16 + b % 4)] = \
                    out[a, b]

    @cuda.jit(device=True, inline="always")
    def gt(d0, d1, d2, d3):
        # G^T d for one column (or row) of four: 3 values
        h = acc(0.5) * (d1 + d2)
        return d0 + h, acc(0.5) * (d1 - d2), h + d3

    @cuda.jit
    def wgrad_finish(part, gw, K, C, Kp, Cp, splits):
        # gw[k, c] = G^T (sum over the splits of part[s, :, k, c]) G, 3x3 from 4x4, one thread
        # per (k, c)
        q = I(cuda.blockIdx.x * WEIGHT_THREADS + cuda.threadIdx.x)
        if q >= K * C:
            return
        k = I(S(q) // S(C))
        c = I(q - k * C)
        d = cuda.local.array(POSITIONS, acc)
        for xi in range(POSITIONS):
            d[xi] = acc(0)
        plane = I(Kp * Cp)
        off = I(k * Cp + c)
        for s in range(splits):
            for xi in range(POSITIONS):
                d[xi] += part[L(off) + L((s * POSITIONS + xi) * plane)]
        # G^T D column by column: e<b> holds rows 0..2 of column b; times G row by row
        e0 = gt(d[0], d[4], d[8], d[12])
        e1 = gt(d[1], d[5], d[9], d[13])
        e2 = gt(d[2], d[6], d[10], d[14])
        e3 = gt(d[3], d[7], d[11], d[15])
        out = L(q) * L(9)
        r0 = gt(e0[0], e1[0], e2[0], e3[0])
        r1 = gt(e0[1], e1[1], e2[1], e3[1])
        r2 = gt(e0[2], e1[2], e2[2], e3[2])
        gw[out] = r0[0]
        gw[out + L(1)] = r0[1]
        gw[out + L(2)] = r0[2]
        gw[out + L(3)] = r1[0]
        gw[out + L(4)] = r1[1]
        gw[out + L(5)] = r1[2]
        gw[out + L(6)] = r2[0]
        gw[out + L(7)] = r2[1]
        gw[out + L(8)] = r2[2]

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
        mask = patch_mask(h0, w0, H, W) if tile_live else I(0)
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

    return weight_tiles, winograd_conv, winograd_wgrad, wgrad_finish


WEIGHT_TILES, WINOGRAD_CONV, WINOGRAD_WGRAD, WGRAD_FINISH = _kernels()
WEIGHT_SIGNATURE = f"void(float32[::1], float32[::1], {', '.join(['int32'] * 7)})"
CONV_SIGNATURE = f"void({', '.join(['float32[::1]'] * 4 + ['int32'] * 13)})"
WGRAD_SIGNATURE = f"void({', '.join(['float32[::1]'] * 3 + ['int32'] * 15 + ['int64'] * 4)})"
FINISH_SIGNATURE = f"void(float32[::1], float32[::1], {', '.join(['int32'] * 5)})"


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
    """ut (Cp, Kp / TK, 16, TK) flat: the weight tiles of Kout x Cin 3x3 taps of w (see
    weight_tiles), with the padded Kp and Cp."""
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


def _wgrad_splits(P, blocks, plane):
    """Splits of the weight gradient's P-tile reduction: about TARGET_BLOCKS blocks in all
    (``blocks`` of 32 x 32 channels a split), each split MIN_SPAN tiles or more, the partial
    sums (``plane`` floats a split) within the int32 guard."""
    splits = max(1, min(-(-TARGET_BLOCKS // blocks), P // MIN_SPAN,
                        INDEX_LIMIT // (POSITIONS * plane)))
    span = -(-P // (splits * WSTEP)) * WSTEP    # whole steps
    return -(-P // span), span


def grad_weight(x, gy, geo, with_bias=False):
    """The adjoint of forward in w: gw (K, C, 3, 3); with ``with_bias``, (gw, gb), gb (K,)
    conv_cuda's sum of gy. Partial sums of dU = dM V^T over splits of the tiles (one block per
    32 x 32 channels and split), then one thread per (k, c) adds them and makes G^T dU G."""
    xp = backend.get_array_module(x)
    x = xp.ascontiguousarray(x, dtype=np.float32)
    gy = xp.ascontiguousarray(gy, dtype=np.float32)
    Kp, Cp = _padded(geo.K, TK), _padded(geo.C, TP)
    th, tw = -(-geo.Ho // 2), -(-geo.Wo // 2)
    P = geo.N * th * tw
    splits, span = _wgrad_splits(P, (Kp // TK) * (Cp // TP), Kp * Cp)
    part = xp.empty(splits * POSITIONS * Kp * Cp, np.float32)
    magic = tuple(np.int64(v) for v in _magic(th * tw) + _magic(tw))
    launch(WINOGRAD_WGRAD, WGRAD_SIGNATURE, ((Kp // TK) * (Cp // TP), splits), THREADS,
           x.reshape(-1), gy.reshape(-1), part, geo.C, geo.H, geo.W, geo.K, geo.Ho, geo.Wo,
           geo.ph, geo.pw, th * tw, tw, P, span, Cp // TP, Kp, Cp, *magic)
    gw = xp.empty(geo.w_shape, np.float32)
    launch(WGRAD_FINISH, FINISH_SIGNATURE, -(-geo.K * geo.C // WEIGHT_THREADS), WEIGHT_THREADS,
           part, gw.reshape(-1), geo.K, geo.C, Kp, Cp, splits)
    return (gw, conv_cuda.grad_bias(gy)) if with_bias else gw


def _signature_table():
    """The main kernel: a hot loop of products at FMA share 50% or more, 25% occupancy, no
    division anywhere; the weight kernel: one thread per (c, k), no loop to speak of."""
    return [(WINOGRAD_CONV, [CONV_SIGNATURE],
             Budget(threads=THREADS, min_fma_share=0.5, max_div64=0)),
            (WINOGRAD_WGRAD, [WGRAD_SIGNATURE],
             Budget(threads=THREADS, min_fma_share=0.5, max_div64=0)),
            (WEIGHT_TILES, [WEIGHT_SIGNATURE], Budget(threads=WEIGHT_THREADS, max_div64=0)),
            (WGRAD_FINISH, [FINISH_SIGNATURE], Budget(threads=WEIGHT_THREADS, max_div64=0))]


SIGNATURES = _signature_table()
