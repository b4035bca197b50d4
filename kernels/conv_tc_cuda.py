"""Tensor-core conv kernels: the implicit GEMMs of conv_cuda.py on ``mma.sync`` (kernels/mma.py).

Same products, same host plans (tap tables, per-phase grad_input, split weight gradient) as the
SIMT kernels of conv_cuda.py, which stay the strict-fp32 (and float64) path:

==========  ====================================  =========================================
kind        data                                  mma
==========  ====================================  =========================================
``tf32``    float32, when TF32 is allowed         m16n8k8 TF32 (operands rounded to TF32
                                                  on the host, as ``cvt.rna.tf32`` would)
``f16``     float16 (passed as its uint16 bits)   m16n8k16 F16, fp32 accumulation
``bf16``    bfloat16 (passed as its uint16 bits)  m16n8k16 BF16, fp32 accumulation
==========  ====================================  =========================================

Accumulation is float32 in every kind; half outputs are rounded once, to nearest even, as they
are stored (the weight gradient stays float32, as the SIMT path returns it).

Tiles: a block computes BM x BN = (64 or 128) x 128 outputs with 2*BM threads: warps of a
64 x 32 warp tile (4 x 4 mma tiles of 16 x 8, 64 float32 accumulators per thread). A shared tile
holds KW = 16 32-bit words of the reduction per row: 16 TF32 values, or 16 pairs of halves. Both
operands are stored K-contiguous ([row][word], rows = output channels for A, pixels or taps for
B), so ``ldmatrix.x4`` hands out A and B fragments of every kind (an 8x8 b16 matrix is 8 rows of
4 words: lane l receives word l & 3 of row l >> 2, which is a TF32 fragment element as much as a
pair of halves): per 8-word k-step a warp issues 4 + 2 ``ldmatrix.x4`` for 16 ``mma``. The row
pitch of KW + 4 words (80 B) keeps each ldmatrix row 16-byte aligned and its 8 rows on distinct
banks.

Pipeline: shared memory holds STAGES tiles of each operand (three for BM 64, two for BM 128: the
48 KB of static shared memory a block may declare), filled by ``cp.async`` (kernels/mma.py),
global to shared without registers: tile j is cp.async group j, issued STAGES - 1 tiles before it
is multiplied; an iteration waits for its own tile's group (``cp.async.wait_group STAGES - 2``),
passes the one barrier (which also frees the stage the next issue overwrites), issues tile
j + STAGES - 1 and runs the mma. The weights travel in 16-byte pieces (padded: never out of
bounds); TF32 data travels value by value (4 bytes) with the bounds test turned into the copy's
zero-fill (``src_bytes`` 0 for a tap outside the image or a pixel past the end), so the hot loop
has no branch per element and no conversion: the host rounds TF32 operands once per call. Half
data pairs two reduction values from different addresses in each word, below cp.async's 4-byte
minimum, so it is gathered into registers before the mma and stored after it (the loads are in
flight during the mma). The gemm's tap entries (offset, row, column, 0) travel as 16-byte rows by
cp.async too, in a ring STAGES - 1 tiles ahead of the gathers that read them. Index math is int32
(the int64 build of conv_cuda serves the rare tensors past the int32 guard, float16/float32
only). ``launch_bounds`` keep the 256-thread builds at 128 registers (two blocks per SM) without
spills.

Weights reach the gemm kernel as (Z, Mp, Rp) (K-contiguous, unlike the SIMT kernel's (Z, Rp, Mp)),
Rp padded to 32 reduction values; half weights are packed two per word on the host. The weight
gradient does not fold the bias (a CuPy sum gives it): its registers go to the accumulators.
"""

import functools

import numpy as np
from numba import config, cuda, float32, int32, uint16, uint32

from gpudl import backend

from . import conv_cuda, mma
from .budget import Budget
from .launch import launch

BN = 128            # columns per CTA tile (pixels; taps in the weight gradient)
KW = 16             # 32-bit words of reduction per shared tile row
KWP = KW + 4        # shared row pitch in words
WM, WN = 64, 32     # warp tile
ROW_TILES = (64, 128)
PAD_K = 32          # weights and taps padded to this many reduction values (one half tile)
KINDS = ("tf32", "f16", "bf16")
ALIGN = mma.LDMATRIX_ALIGN   # the shared tiles that ldmatrix reads

if config.ENABLE_CUDASIM:
    def as_float32(word):
        """The float32 whose bits are ``word``."""
        return np.uint32(word).view(np.float32)
else:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def as_float32(typingctx, word):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], ir.FloatType())
        return types.float32(types.uint32), codegen


def threads_for(bm):
    return (bm // WM) * (BN // WN) * 32


def min_blocks(kind, bm):
    """Blocks per SM that ptxas must leave room for (``launch_bounds``): two of 256 threads
    (128 registers each, 16 warps); of 128 threads, four for TF32 and three for the half kinds,
    whose second pixel per word needs ~160 registers (four would spill)."""
    return 2 if bm == 128 else 4 if kind == "tf32" else 3


def _bounds(threads, blocks):
    # the simulator's cuda.jit takes no launch_bounds (and needs none)
    return {} if config.ENABLE_CUDASIM else {"launch_bounds": (threads, blocks)}


def stages(bm):
    """Shared-memory pipeline depth: three stages for BM 64 (47 KB), two for BM 128 (three would
    pass the 48 KB of static shared memory a block may declare)."""
    return 3 if bm == ROW_TILES[0] else 2


@functools.lru_cache(maxsize=None)
def _kernels(kind, bm):
    """(gemm, grad_weight) tensor-core kernels of ``kind`` with BM = ``bm``."""
    threads = threads_for(bm)
    STAGES = stages(bm)
    WAIT = STAGES - 2                         # groups still in flight when a tile is read
    RING = 2 * STAGES - 2                     # gemm: tap ring slots (the gemm says why)
    A_SHARED, B_SHARED, TAP_ROWS = STAGES * bm, STAGES * BN, RING * KW * (1 if kind == "tf32" else 2)
    WARPS_M = bm // WM
    EPW = 1 if kind == "tf32" else 2          # reduction values per 32-bit word
    KE = KW * EPW                             # reduction values per shared tile
    ASYNC = kind == "tf32"                    # gathered operands by cp.async (4-byte values)
    A_STEP = threads // 4                     # gemm: weight rows between a thread's chunks
    A_CHUNKS = bm // A_STEP                   # gemm: 16-byte weight chunks per thread
    B_LANES = threads // BN                   # gemm: threads per pixel column (word rows split)
    NL = 32 // B_LANES                        # pixel columns per warp
    B_LOADS = KW // B_LANES
    W_STEP = threads // KW                    # weight gradient: rows one pass of threads fills
    WA_LOADS = bm // W_STEP
    WB_LOADS = BN // W_STEP
    B_VALUES, WA_VALUES, WB_VALUES = B_LOADS * EPW, WA_LOADS * EPW, WB_LOADS * EPW
    data = float32 if kind == "tf32" else uint16
    U = uint32

    if kind == "tf32":
        @cuda.jit(device=True, inline="always")
        def mma_op(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
            return mma.mma_tf32_m16n8k8(as_float32(a0), as_float32(a1), as_float32(a2),
                                        as_float32(a3), as_float32(b0), as_float32(b1),
                                        c0, c1, c2, c3)

        @cuda.jit(device=True, inline="always")
        def store_value(v):
            return v
    else:
        mma_op = mma.mma_f16_m16n8k16 if kind == "f16" else mma.mma_bf16_m16n8k16
        pack = mma.pack_f16x2 if kind == "f16" else mma.pack_bf16x2

        @cuda.jit(device=True, inline="always")
        def store_value(v):
            return uint16(pack(v, float32(0)) & U(0xFFFF))

    @cuda.jit(device=True, inline="always")
    def word_of(regs, t):
        # halves: two values' bits, the lower-indexed reduction value in the low 16 bits
        return U(regs[2 * t]) | (U(regs[2 * t + 1]) << U(16))

    @cuda.jit(device=True, inline="always")
    def divmod_(a, b):
        q = int32(U(a) // U(b))
        return q, int32(a - q * b)

    @cuda.jit(device=True, inline="always")
    def zero(acc):
        for e in range(64):
            acc[e] = float32(0)

    @cuda.jit(device=True, inline="always")
    def put4(frag, at, words):
        for e in range(4):
            frag[at + e] = words[e]

    @cuda.jit(device=True, inline="always")
    def next_stage(s):
        s = U(s + U(1))
        return U(0) if s == U(STAGES) else s

    @cuda.jit(device=True, inline="always")
    def copy4(dst, row, col, src, index, inside):
        # one 4-byte value by cp.async, zero-filled (and never read) when not ``inside``
        mma.cp_async_4(dst, row, col, src, U(index) if inside else U(0),
                       U(4) if inside else U(0))

    @cuda.jit(device=True, inline="always")
    def mma_tile(a_s, b_s, a_row, a_col, b_row, b_col, acc, af, bf):
        # acc[(i*4 + j)*4 + e] += the warp's 64 x 32 product over one shared tile. (a_row, a_col)
        # is this lane's ldmatrix row address for m-tile 0 (matrices: rows +0/+8, words +0/+4),
        # (b_row, b_col) for n-tiles 0 and 1 (matrices: rows +0/+8 by pair, words +0/+4).
        for ks in range(KW // 8):
            for i in range(4):
                put4(af, 4 * i, mma.ldmatrix_x4(a_s, a_row + 16 * i, a_col + 8 * ks))
            for jj in range(2):
                put4(bf, 4 * jj, mma.ldmatrix_x4(b_s, b_row + 16 * jj, b_col + 8 * ks))
            for i in range(4):
                for j in range(4):
                    e = (i * 4 + j) * 4
                    d = mma_op(af[4 * i], af[4 * i + 1], af[4 * i + 2], af[4 * i + 3],
                               bf[2 * j], bf[2 * j + 1], acc[e], acc[e + 1], acc[e + 2],
                               acc[e + 3])
                    acc[e] = d[0]
                    acc[e + 1] = d[1]
                    acc[e + 2] = d[2]
                    acc[e + 3] = d[3]

    @cuda.jit(device=True, inline="always")
    def lane_rows(lane, warp):
        # ldmatrix addresses: lane l points at row l & 7 of matrix l >> 3
        mat, r = lane >> 3, lane & 7
        warp_row, warp_col = (warp % WARPS_M) * WM, (warp // WARPS_M) * WN
        return (warp_row + r + 8 * (mat & 1), 4 * (mat >> 1),
                warp_col + r + 8 * (mat >> 1), 4 * (mat & 1), warp_row, warp_col)

    @cuda.jit(device=True, inline="always")
    def inside(tap_s, e, h0, w0, Hi, Wi):
        # tap e of this pixel lies in the image: one unsigned compare per side (a negative row or
        # column wraps far above Hi / Wi)
        return (U(int32(h0 + tap_s[e, 1])) < Hi) & (U(int32(w0 + tap_s[e, 2])) < Wi)

    @cuda.jit(device=True, inline="always")
    def copy_weights(a_s, stage, wt, a_src, a_stride, a_row, a_word):
        # this thread's 16-byte pieces of a weight tile (padded: never out of bounds)
        for t in range(A_CHUNKS):
            mma.cp_async_16(a_s, stage * U(bm) + a_row + A_STEP * t, a_word, wt,
                            U(a_src + a_stride * t), 16)

    @cuda.jit(device=True, inline="always")
    def copy_pixels(b_s, stage, x, tap_s, slot, kl, n_b, x_base, h0, w0, Hi, Wi):
        # tf32: this thread's values of its pixel, global to shared, zero outside the image
        for t in range(B_LOADS):
            e = slot * U(KE) + kl + B_LANES * t
            copy4(b_s, stage * U(BN) + n_b, kl + B_LANES * t, x, int32(x_base + tap_s[e, 0]),
                  inside(tap_s, e, h0, w0, Hi, Wi))

    @cuda.jit(device=True, inline="always")
    def load_pixels(x, tap_s, slot, kl, x_base, h0, w0, Hi, Wi, b_regs):
        # halves: two values per word, so no 4-byte copy: gathered into registers
        for t in range(B_LOADS):
            for h in range(EPW):
                e = slot * U(KE) + EPW * (kl + B_LANES * t) + h
                v = data(0)
                if inside(tap_s, e, h0, w0, Hi, Wi):
                    v = x[U(x_base + tap_s[e, 0])]
                b_regs[EPW * t + h] = v

    @cuda.jit(device=True, inline="always")
    def store_pixels(b_s, stage, n_b, kl, b_regs):
        for t in range(B_LOADS):
            b_s[stage * U(BN) + n_b, kl + B_LANES * t] = word_of(b_regs, t)

    @cuda.jit(device=True, inline="always")
    def copy_taps(tap_s, j, tiles, tid, taps, tap_src):
        # the taps of tile j (one 16-byte entry per thread below KE) into ring slot j % RING
        if j < tiles and tid < U(KE):
            mma.cp_async_16(tap_s, U(j & (RING - 1)) * U(KE) + tid, 0, taps,
                            U(tap_src + 4 * KE * j), 16)

    @cuda.jit(**_bounds(threads, min_blocks(kind, bm)))
    def conv_tc_gemm_kernel(x, wt, taps, phases, bias, y, N, Hin, Win, CHWin, gstride_in, M,
                            Cout, Hout, Wout, sh, sw, ph, pw, ohs, ows, has_bias, Rw, Mp, Rt):
        # conv_cuda.conv_gemm_kernel's product (its comment gives the indexing) with wt (Z, Mp,
        # Rw) in words: TF32-rounded float32 values or packed halves; taps (phases, Rt, 4) rows
        # (offset, row, column, 0); x and y float32 (x TF32-rounded) or half bits.
        tid = U(cuda.threadIdx.x)
        lane, warp = tid & U(31), tid >> U(5)
        G = cuda.gridDim.z // phases.shape[0]
        z = int32(cuda.blockIdx.z)
        phase = int32(z // G)
        g = int32(z - phase * G)
        R = int32(phases[U(phase), 0])
        Hg, Wg = int32(phases[U(phase), 3]), int32(phases[U(phase), 4])
        HWg = int32(Hg * Wg)
        P = int32(N * HWg)
        m0 = int32(cuda.blockIdx.y * bm)
        p0 = int32(cuda.blockIdx.x * BN)
        if p0 >= P:
            return                      # a phase with fewer pixels than the largest one
        a_s = cuda.shared.array((A_SHARED, KWP), uint32, alignment=ALIGN)
        b_s = cuda.shared.array((B_SHARED, KWP), uint32, alignment=ALIGN)
        tap_s = cuda.shared.array((TAP_ROWS, 4), int32, alignment=ALIGN)
        acc = cuda.local.array(64, float32)
        af = cuda.local.array(16, uint32)
        bf = cuda.local.array(8, uint32)
        b_regs = cuda.local.array(B_VALUES, data)
        zero(acc)
        # weights: 16-byte chunks, 4 per row; pixels: a warp fills NL pixels x B_LANES word
        # lanes, each thread one fixed pixel (offsets once, no division in the loop)
        a_row, a_word = tid >> U(2), (tid & U(3)) * U(4)
        n_b = tid % U(NL) + U(NL) * (tid // U(NL * B_LANES))
        kl = (tid // U(NL)) % U(B_LANES)
        p = int32(p0 + n_b)
        n, rest = divmod_(p, HWg)
        u, t = divmod_(rest, Wg)
        h0, w0 = int32(u * sh - ph), int32(t * sw - pw)
        x_base = int32(n * CHWin + g * gstride_in + h0 * Win + w0)
        if p >= P:
            h0 = int32(-conv_cuda.FAR)
        a_src = int32((z * Mp + m0 + a_row) * Rw + a_word)
        a_stride = int32(A_STEP * Rw)
        tap_src = int32((phase * Rt + tid) * 4)
        Hi, Wi = U(Hin), U(Win)
        tiles = int32((R + KE - 1) // KE)
        la_row, la_col, lb_row, lb_col, warp_row, warp_col = lane_rows(lane, warp)
        # The pipeline: tile j's operands are cp.async group j, issued STAGES - 1 tiles ahead
        # into stage j % STAGES and read after a wait and the barrier. The taps that a tile's
        # gathers read come STAGES - 1 tiles earlier still (group j brings tile j + STAGES - 1's
        # taps) through a ring: the prologue issues tiles 0 .. STAGES - 2 with no barrier between
        # them, so the taps of tiles 0 .. 2 STAGES - 3 need distinct slots (RING); later a slot
        # is refilled only after the barrier that follows its last read.
        for j in range(STAGES - 1):
            copy_taps(tap_s, j, tiles, tid, taps, tap_src)
        mma.cp_async_wait_all()
        cuda.syncthreads()
        for j in range(STAGES - 1):
            if j < tiles:
                copy_weights(a_s, U(j), wt, int32(a_src + KW * j), a_stride, a_row, a_word)
                if ASYNC:
                    copy_pixels(b_s, U(j), x, tap_s, U(j), kl, n_b, x_base, h0, w0, Hi, Wi)
                else:
                    load_pixels(x, tap_s, U(j), kl, x_base, h0, w0, Hi, Wi, b_regs)
                    store_pixels(b_s, U(j), n_b, kl, b_regs)
            copy_taps(tap_s, j + STAGES - 1, tiles, tid, taps, tap_src)
            mma.cp_async_commit()
        rs, ws = U(0), U(STAGES - 1)            # the stages read and written this iteration
        for kt in range(tiles):
            mma.cp_async_wait(WAIT)             # this thread's copies of tile kt have landed
            cuda.syncthreads()                  # everyone's, and stage ws is read no more
            j = kt + STAGES - 1
            if j < tiles:
                slot = U(j & (RING - 1))
                copy_weights(a_s, ws, wt, int32(a_src + KW * j), a_stride, a_row, a_word)
                if ASYNC:
                    copy_pixels(b_s, ws, x, tap_s, slot, kl, n_b, x_base, h0, w0, Hi, Wi)
                else:                           # in flight during the mma
                    load_pixels(x, tap_s, slot, kl, x_base, h0, w0, Hi, Wi, b_regs)
            copy_taps(tap_s, j + STAGES - 1, tiles, tid, taps, tap_src)
            mma.cp_async_commit()
            mma_tile(a_s, b_s, rs * U(bm) + la_row, la_col, rs * U(BN) + lb_row, lb_col, acc,
                     af, bf)
            if not ASYNC and j < tiles:
                store_pixels(b_s, ws, n_b, kl, b_regs)
            rs, ws = next_stage(rs), next_stage(ws)
        # epilogue: C fragment element e of tile (i, j) is row g (+8 for e >= 2), column 2t
        # (+1 for odd e); per column its flat output offset (divisions once per column)
        gq, tq = lane >> U(2), lane & U(3)
        bias_r = cuda.local.array(8, float32)
        for i in range(4):
            for h in range(2):
                m = int32(m0 + warp_row + 16 * i + 8 * h + gq)
                bias_r[2 * i + h] = bias[U(g * M + m)] if has_bias != 0 and m < M else float32(0)
        HWout = int32(Hout * Wout)
        origin_h, origin_w = int32(phases[U(phase), 1]), int32(phases[U(phase), 2])
        cols = cuda.local.array(8, int32)         # column 2j + c: its flat offset, -1 if none
        for jc in range(8):
            q = int32(p0 + warp_col + 8 * (jc >> 1) + 2 * tq + (jc & 1))
            n, rest = divmod_(q, HWg)
            u, t = divmod_(rest, Wg)
            cols[jc] = int32((n * Cout + g * M) * HWout + (origin_h + ohs * u) * Wout
                             + origin_w + ows * t) if q < P else int32(-1)
        for i in range(4):
            for h in range(2):
                m = int32(m0 + warp_row + 16 * i + 8 * h + gq)
                if m < M:
                    for j in range(4):
                        for c in range(2):
                            if cols[2 * j + c] >= 0:
                                v = acc[(i * 4 + j) * 4 + 2 * h + c] + bias_r[2 * i + h]
                                y[U(cols[2 * j + c] + m * HWout)] = store_value(v)

    @cuda.jit(device=True, inline="always")
    def wgrad_pixel(tap_s, col, h0, w0, Hx, Wx):
        return (U(int32(h0 + tap_s[1, col])) < Hx) & (U(int32(w0 + tap_s[2, col])) < Wx)

    @cuda.jit(device=True, inline="always")
    def wgrad_copy(a_s, b_s, stage, x, gy, tap_s, q, q_end, n, oh, ow, m_room, gy_rows, gy_step,
                   KHWo, CHW, x_group, Wo, sh, sw, ph, pw, Hx, Wx, lrow, lk):
        # tf32: pixel q's gy rows and x patch, global to shared, zero outside
        live = q < q_end
        gy_base = int32(n * KHWo + gy_rows + oh * Wo + ow)
        for t in range(WA_LOADS):
            copy4(a_s, stage * U(bm) + lrow + W_STEP * t, lk, gy, int32(gy_base + gy_step * t),
                  live and W_STEP * t < m_room)
        h0, w0 = int32(oh * sh - ph), int32(ow * sw - pw)
        x_base = int32(n * CHW + x_group + h0 * int32(Wx) + w0)
        if not live:
            h0 = int32(-conv_cuda.FAR)
        for t in range(WB_LOADS):
            col = lrow + W_STEP * t
            copy4(b_s, stage * U(BN) + col, lk, x, int32(x_base + tap_s[0, col]),
                  wgrad_pixel(tap_s, col, h0, w0, Hx, Wx))

    @cuda.jit(device=True, inline="always")
    def wgrad_load(x, gy, tap_s, h, q, q_end, n, oh, ow, m_room, gy_rows, gy_step, KHWo, CHW,
                   x_group, Wo, sh, sw, ph, pw, Hx, Wx, lrow, a_regs, b_regs):
        # halves: value h of this thread's words (pixel q's gy rows and x patch) into registers
        live = q < q_end
        gy_base = int32(n * KHWo + gy_rows + oh * Wo + ow)
        for t in range(WA_LOADS):
            v = data(0)
            if live and W_STEP * t < m_room:
                v = gy[U(gy_base + gy_step * t)]
            a_regs[EPW * t + h] = v
        h0, w0 = int32(oh * sh - ph), int32(ow * sw - pw)
        x_base = int32(n * CHW + x_group + h0 * int32(Wx) + w0)
        if not live:
            h0 = int32(-conv_cuda.FAR)
        for t in range(WB_LOADS):
            col = lrow + W_STEP * t
            v = data(0)
            if wgrad_pixel(tap_s, col, h0, w0, Hx, Wx):
                v = x[U(x_base + tap_s[0, col])]
            b_regs[EPW * t + h] = v

    @cuda.jit(device=True, inline="always")
    def wgrad_store(a_s, b_s, stage, lrow, lk, a_regs, b_regs):
        for t in range(WA_LOADS):
            a_s[stage * U(bm) + lrow + W_STEP * t, lk] = word_of(a_regs, t)
        for t in range(WB_LOADS):
            b_s[stage * U(BN) + lrow + W_STEP * t, lk] = word_of(b_regs, t)

    @cuda.jit(device=True, inline="always")
    def advance(n, oh, ow, dn, dh, dw, Hs, Ws):
        # (n, oh, ow) moved KE pixels on, with carries: no division
        ow = int32(ow + dw)
        oh = int32(oh + dh)
        n = int32(n + dn)
        if ow >= Ws:
            ow = int32(ow - Ws)
            oh = int32(oh + 1)
        if oh >= Hs:
            oh = int32(oh - Hs)
            n = int32(n + 1)
        return n, oh, ow

    @cuda.jit(**_bounds(threads, min_blocks(kind, bm)))
    def conv_tc_grad_weight_kernel(x, gy, taps, partial, N, C, H, W, Ho, Wo, sh, sw, ph, pw,
                                   split_len):
        # partial[s, g*Kg + m, r] = sum over pixels q of split s of gy[q, g*Kg + m] * patch(q)[r]
        # (conv_cuda.conv_grad_weight_kernel's product, without the bias). Word lk of a tile
        # holds pixel q (tf32), or pixels q and q + KW (halves: the pair of one word). The
        # pipeline is the gemm's (tile j: cp.async group j, stage j % STAGES), with the block's
        # taps staged once.
        tid = U(cuda.threadIdx.x)
        lane, warp = tid & U(31), tid >> U(5)
        splits = partial.shape[0]
        K, R = partial.shape[1], partial.shape[2]
        z = int32(cuda.blockIdx.z)
        g = int32(z // splits)
        s = U(z - g * splits)
        G = int32(cuda.gridDim.z // splits)
        Kg, Cg = int32(K // G), int32(C // G)
        HWo = int32(Ho * Wo)
        q_begin = int32(s * split_len)
        q_end = int32(min(N * HWo, q_begin + split_len))
        m0 = int32(cuda.blockIdx.y * bm)
        r0 = int32(cuda.blockIdx.x * BN)
        a_s = cuda.shared.array((A_SHARED, KWP), uint32, alignment=ALIGN)
        b_s = cuda.shared.array((B_SHARED, KWP), uint32, alignment=ALIGN)
        tap_s = cuda.shared.array((3, BN), int32)
        acc = cuda.local.array(64, float32)
        af = cuda.local.array(16, uint32)
        bf = cuda.local.array(8, uint32)
        a_regs = cuda.local.array(WA_VALUES, data)
        b_regs = cuda.local.array(WB_VALUES, data)
        zero(acc)
        lk, lrow = tid % U(KW), tid // U(KW)
        if tid < BN:
            for e in range(3):
                tap_s[e, tid] = taps[e, U(r0 + tid)]
        cuda.syncthreads()
        m_room = int32(Kg - m0 - lrow)
        gy_rows = int32((g * Kg + m0 + lrow) * HWo)
        gy_step = int32(W_STEP * HWo)
        x_group = int32(g * Cg * H * W)
        KHWo, CHW = int32(K * HWo), int32(C * H * W)
        q = int32(q_begin + lk)
        n, rest = divmod_(q, HWo)
        oh, ow = divmod_(rest, Wo)
        q2 = int32(q + KW)              # the second pixel of a half word
        n2, rest = divmod_(q2, HWo)
        oh2, ow2 = divmod_(rest, Wo)
        dn, step_rest = divmod_(int32(KE), HWo)
        dh, dw = divmod_(step_rest, Wo)
        Hs, Ws, Hx, Wx = int32(Ho), int32(Wo), U(H), U(W)
        sh_, sw_, ph_, pw_ = int32(sh), int32(sw), int32(ph), int32(pw)
        la_row, la_col, lb_row, lb_col, warp_row, warp_col = lane_rows(lane, warp)
        tiles = int32((q_end - q_begin + KE - 1) // KE)
        rs, ws = U(0), U(0)             # the stages read and written next
        for j in range(tiles + STAGES - 1):
            kt = j - (STAGES - 1)       # the tile multiplied in this iteration (< 0: prologue)
            if kt >= 0:
                mma.cp_async_wait(WAIT)
                cuda.syncthreads()
            if j < tiles:               # issue tile j into stage ws
                if ASYNC:
                    wgrad_copy(a_s, b_s, ws, x, gy, tap_s, q, q_end, n, oh, ow, m_room, gy_rows,
                               gy_step, KHWo, CHW, x_group, Ws, sh_, sw_, ph_, pw_, Hx, Wx,
                               lrow, lk)
                else:
                    wgrad_load(x, gy, tap_s, 0, q, q_end, n, oh, ow, m_room, gy_rows, gy_step,
                               KHWo, CHW, x_group, Ws, sh_, sw_, ph_, pw_, Hx, Wx, lrow, a_regs,
                               b_regs)
                    wgrad_load(x, gy, tap_s, 1, q2, q_end, n2, oh2, ow2, m_room, gy_rows,
                               gy_step, KHWo, CHW, x_group, Ws, sh_, sw_, ph_, pw_, Hx, Wx,
                               lrow, a_regs, b_regs)
                    n2, oh2, ow2 = advance(n2, oh2, ow2, dn, dh, dw, Hs, Ws)
                    q2 = int32(q2 + KE)
                n, oh, ow = advance(n, oh, ow, dn, dh, dw, Hs, Ws)
                q = int32(q + KE)
            mma.cp_async_commit()
            if kt >= 0:
                mma_tile(a_s, b_s, rs * U(bm) + la_row, la_col, rs * U(BN) + lb_row, lb_col, acc,
                         af, bf)
                rs = next_stage(rs)
            if not ASYNC and j < tiles:  # stored after the mma: the loads were in flight
                wgrad_store(a_s, b_s, ws, lrow, lk, a_regs, b_regs)
            if j < tiles:
                ws = next_stage(ws)
        gq, tq = lane >> U(2), lane & U(3)
        for i in range(4):
            for h in range(2):
                m = int32(m0 + warp_row + 16 * i + 8 * h + gq)
                if m < Kg:
                    for j in range(4):
                        for c in range(2):
                            r = int32(r0 + warp_col + 8 * j + 2 * tq + c)
                            if r < R:
                                partial[s, U(g * Kg + m), U(r)] = acc[(i * 4 + j) * 4 + 2 * h + c]

    return conv_tc_gemm_kernel, conv_tc_grad_weight_kernel


# --------------------------------------------------------------------------- launchers
def kind(dtype):
    """The tensor-core kind for data of ``dtype`` reaching this module (float32 only comes here
    when TF32 is allowed), None for dtypes it does not take (float64)."""
    return {"float32": "tf32", "float16": "f16", "bfloat16": "bf16"}.get(np.dtype(dtype).name)


def _bits(xp, a):
    """The kernels' view of a data array: float32 as it is, halves as their uint16 bits."""
    a = xp.ascontiguousarray(a).reshape(-1)
    return a if a.dtype == np.float32 else a.view(np.uint16)


def _tf32(xp, a):
    """float32 ``a`` rounded to TF32 as ``cvt.rna.tf32.f32`` does (to nearest, ties away from
    zero; infinities and NaNs kept), a new flat array. The kernels copy operands from global to
    shared memory without registers (cp.async), so they are rounded here, once per call, and the
    tensor cores (which ignore the low 13 bits) read them as rounded."""
    bits = xp.ascontiguousarray(a, np.float32).reshape(-1).view(np.uint32)
    special = (bits & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
    rounded = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    return xp.where(special, bits, rounded).view(np.float32)


def _operand(xp, a):
    """An input data array as the kernels read it: float32 rounded to TF32, halves as bits."""
    return _tf32(xp, a) if np.dtype(a.dtype) == np.float32 else _bits(xp, a)


def _row_tile(rows):
    return ROW_TILES[0] if rows <= ROW_TILES[0] else ROW_TILES[1]


def _fits(*sizes, image):
    """Whether the int32 build serves these sizes (else conv_cuda's int64 build runs)."""
    return conv_cuda._index(*sizes, image=image) == int32


@functools.lru_cache(maxsize=64)
def _plan(which, xp, *args):
    """conv_cuda's ``which`` plan (``_forward_plan`` / ``_input_plan``) with the reduction
    padded to PAD_K, the taps as 16-byte rows (phases, Rt, 4) = (offset, row, column, 0) (one
    cp.async each) and the weight index as the (Z, Mp, Rp) layout these kernels read."""
    taps, phases, (src, size), pixels = getattr(conv_cuda, which)(xp, *args, PAD_K)
    rows = xp.zeros((taps.shape[0], taps.shape[2], 4), np.int32)
    rows[:, :, :3] = taps.transpose(0, 2, 1)
    return rows, phases, (src.transpose(0, 2, 1).copy(), size), pixels


def _words(plan, kind_):
    """(Mp, Rw): the weight operand's padded rows and words per row."""
    _, mp, rp = plan[0].shape
    return mp, rp if kind_ == "tf32" else rp // 2


def _weights(xp, w, plan, kind_):
    """The gemm's weight operand, flat: (Z, Mp, Rp) float32 values rounded to TF32, or
    (Z, Mp, Rp / 2) words of packed halves."""
    src, size = plan
    padded = xp.empty(size + 1, w.dtype)
    padded[:size] = xp.asarray(w).reshape(-1)
    padded[size:] = 0
    out = padded[src]
    return _tf32(xp, out) if kind_ == "tf32" else out.view(np.uint32).reshape(-1)


def _launch_gemm(kind_, bm, grid, x_bits, wt, taps, phases, bias, y, *scalars):
    launch(_kernels(kind_, bm)[0], gemm_signature(kind_), grid, threads_for(bm), x_bits, wt,
           taps.reshape(-1), phases, bias, _bits(backend.get_array_module(y), y), *scalars)


def _bias(xp, b, size):
    """The epilogue's per-row bias as float32 (a dummy, never read, when there is none)."""
    return xp.zeros(1, np.float32) if b is None else \
        xp.ascontiguousarray(xp.asarray(b).reshape(-1), np.float32)[:size]


def forward(x, w, b, geo):
    """y = conv(x, w) + b on tensor cores, (N, K, Ho, Wo) in x's dtype."""
    G, Kg, Cg = geo.groups, geo.K // geo.groups, geo.C // geo.groups
    R = Cg * geo.kh * geo.kw
    xp = backend.get_array_module(x)
    y = xp.empty(geo.y_shape, x.dtype)
    if not _fits(x.size, y.size, conv_cuda._operand_size(G, R, Kg) * 4,
                 image=geo.C * geo.H * geo.W):
        return conv_cuda.forward(x, w, b, geo)
    if y.size == 0:
        return y
    kind_, bm = kind(x.dtype), _row_tile(Kg)
    taps, phases, plan, _ = _plan("_forward_plan", xp, geo.K, Cg, geo.kh, geo.kw, geo.dh,
                                  geo.dw, geo.H, geo.W, geo.Ho, geo.Wo, G, bm)
    wt = _weights(xp, w, plan, kind_)
    grid = (conv_cuda._blocks(geo.N * geo.Ho * geo.Wo, BN), conv_cuda._blocks(Kg, bm), G)
    Mp, Rw = _words(plan, kind_)
    _launch_gemm(kind_, bm, grid, _operand(xp, x), wt, taps, phases, _bias(xp, b, geo.K), y,
                 geo.N, geo.H, geo.W, geo.C * geo.H * geo.W, Cg * geo.H * geo.W, Kg, geo.K,
                 geo.Ho, geo.Wo, geo.sh, geo.sw, geo.ph, geo.pw, 1, 1, int(b is not None), Rw,
                 Mp, taps.shape[1])
    return y


def grad_input(gy, w, geo, b=None):
    """The adjoint of forward in x on tensor cores: gx (N, C, H, W) in gy's dtype, plus ``b``
    (C,) per channel when given (conv_transpose2d's bias)."""
    G, Kg, Cg = geo.groups, geo.K // geo.groups, geo.C // geo.groups
    xp = backend.get_array_module(gy)
    if (gy.size == 0 or Kg == 0 or not _fits(
            gy.size, int(np.prod(geo.x_shape)),
            conv_cuda._operand_size(G * geo.sh * geo.sw, Kg * geo.kh * geo.kw, Cg) * 4,
            image=geo.K * geo.Ho * geo.Wo)):
        return conv_cuda.grad_input(gy, w, geo, b)
    gx = xp.empty(geo.x_shape, gy.dtype)
    if gx.size == 0:
        return gx
    kind_, bm = kind(gy.dtype), _row_tile(Cg)
    taps, phases, plan, pixels = _plan(
        "_input_plan", xp, geo.K, Cg, geo.kh, geo.kw, geo.sh, geo.sw, geo.ph, geo.pw, geo.dh,
        geo.dw, geo.H, geo.W, geo.Ho, geo.Wo, G, bm)
    wt = _weights(xp, w, plan, kind_)
    grid = (conv_cuda._blocks(geo.N * pixels, BN), conv_cuda._blocks(Cg, bm),
            G * len(phases))
    Mp, Rw = _words(plan, kind_)
    _launch_gemm(kind_, bm, grid, _operand(xp, gy), wt, taps, phases, _bias(xp, b, geo.C), gx,
                 geo.N, geo.Ho, geo.Wo, geo.K * geo.Ho * geo.Wo, Kg * geo.Ho * geo.Wo, Cg,
                 geo.C, geo.H, geo.W, 1, 1, 0, 0, geo.sh, geo.sw, int(b is not None), Rw, Mp,
                 taps.shape[1])
    return gx


def grad_weight(x, gy, geo, with_bias=False):
    """The adjoint of forward in w on tensor cores: gw (K, C/groups, kh, kw) in float32; with
    ``with_bias``, (gw, gb), gb from one CuPy sum over gy."""
    G, Kg, Cg = geo.groups, geo.K // geo.groups, geo.C // geo.groups
    R = Cg * geo.kh * geo.kw
    Q = geo.N * geo.Ho * geo.Wo
    xp = backend.get_array_module(x)
    if Q == 0 or geo.K == 0 or R == 0 or not _fits(x.size, gy.size,
                                                    image=geo.C * geo.H * geo.W):
        return conv_cuda.grad_weight(x, gy, geo, with_bias)
    kind_, bm = kind(x.dtype), _row_tile(Kg)
    ke = KW * (1 if kind_ == "tf32" else 2)
    tiles = conv_cuda._blocks(R, BN) * conv_cuda._blocks(Kg, bm) * G
    splits = max(1, min(conv_cuda._blocks(Q, conv_cuda.MIN_SPLIT),
                        conv_cuda._blocks(conv_cuda.TARGET_BLOCKS, tiles), 65535 // G))
    split_len = conv_cuda._blocks(conv_cuda._blocks(Q, splits), ke) * ke
    splits = conv_cuda._blocks(Q, split_len)
    partial = xp.empty((splits, geo.K, R), np.float32)
    taps = conv_cuda._forward_plan(xp, geo.K, Cg, geo.kh, geo.kw, geo.dh, geo.dw, geo.H, geo.W,
                                   geo.Ho, geo.Wo, G, bm, PAD_K)[0][0]
    grid = (conv_cuda._blocks(R, BN), conv_cuda._blocks(Kg, bm), G * splits)
    launch(_kernels(kind_, bm)[1], grad_weight_signature(kind_), grid, threads_for(bm),
           _operand(xp, x), _operand(xp, gy), taps, partial, geo.N, geo.C, geo.H, geo.W, geo.Ho,
           geo.Wo, geo.sh, geo.sw, geo.ph, geo.pw, split_len)
    gw = (partial[0] if splits == 1 else partial.sum(axis=0)).reshape(geo.w_shape)
    return (gw, conv_cuda.grad_bias(gy)) if with_bias else gw


def _data_name(kind_):
    return "float32" if kind_ == "tf32" else "uint16"


def gemm_signature(kind_):
    """The Numba signature conv_tc_gemm_kernel of ``kind_`` is launched with."""
    data, weight = _data_name(kind_), "float32" if kind_ == "tf32" else "uint32"
    return (f"void({data}[::1], {weight}[::1], int32[::1], int32[:, ::1], float32[::1], "
            f"{data}[::1], {', '.join(['int64'] * 19)})")


def grad_weight_signature(kind_):
    """The Numba signature conv_tc_grad_weight_kernel of ``kind_`` is launched with."""
    data = _data_name(kind_)
    return (f"void({data}[::1], {data}[::1], int32[:, ::1], float32[:, :, ::1], "
            f"{', '.join(['int64'] * 11)})")


# the hot-loop HMMA share each build reaches (sm_90 SASS, ptxas padding left out), rounded down:
# (tf32?, BM) -> (gemm, grad_weight). The gate holds the kernels to it, so it cannot regress.
HMMA_FLOOR = {(True, 64): (0.11, 0.08), (True, 128): (0.15, 0.11),
              (False, 64): (0.065, 0.045), (False, 128): (0.095, 0.06)}


def _signatures():
    """Every tensor-core build with its launch signature; the gate holds each (half builds
    included: ``min_hmma_share`` marks them) to its budget."""
    table = []
    for kind_ in KINDS:
        for bm in ROW_TILES:
            gemm, gwt = _kernels(kind_, bm)
            for kernel, signature, share in zip((gemm, gwt), (gemm_signature(kind_),
                                                              grad_weight_signature(kind_)),
                                                 HMMA_FLOOR[kind_ == "tf32", bm]):
                table.append((kernel, [signature], Budget(
                    threads=threads_for(bm), min_hmma_share=share,
                    min_occupancy=min_blocks(kind_, bm) * threads_for(bm) / 32 / 64)))
    return table


SIGNATURES = _signatures()
