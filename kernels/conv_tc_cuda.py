"""Tensor-core conv kernels: the implicit GEMMs of conv_cuda.py on ``mma.sync`` (kernels/mma.py).

Same products and plans (tap tables, per-phase grad_input, split weight gradient; the gemm over
channel chunks, below) as the SIMT kernels of conv_cuda.py, the strict-fp32 (and float64) path:

==========  ====================================  =========================================
kind        data                                  mma
==========  ====================================  =========================================
``tf32``    float32, when TF32 is allowed         m16n8k8 TF32 (operands rounded to TF32
                                                  before the gemm, by ``cvt.rna.tf32``)
``f16``     float16 (uint32 words of two)         m16n8k16 F16, fp32 accumulation
``bf16``    bfloat16 (uint32 words of two)        m16n8k16 BF16, fp32 accumulation
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
j + STAGES - 1 and runs the mma. Every operand travels in 16-byte pieces except the weight
gradient's (4-byte words): no register staging, no conversion, and no branch per element in
the hot loop (a copy outside the image or past the end is zero-filled: ``src_bytes`` 0). The
data are laid out once per call so that each copy is one place in memory (float32 data in one
pass of ``tf32_chunks``, rounding as it moves them; halves and the weights by CuPy copies):

- The gemm (forward, grad_input) gathers 16-byte chunks of consecutive channels of one pixel:
  data as (N, G, chunks, H, W, 4 words), 4 TF32-rounded float32 or 8 halves per chunk (a
  partial last chunk zero-padded), the reduction ordered (channel chunk, tap, channel) and the
  weights packed to match (``_gemm_plan``, ``_gemm_weights``): one copy, one tap-row read and
  one bounds test per 4 words. Below 8 TF32 / 16 half channels per group (first layers,
  depthwise convs) a second build copies single words (one value, or a channel pair of halves)
  rather than multiply mostly zero padding (``chunk_words``).
- The weight gradient reduces over pixels: TF32 words are the rounded values, half words pair
  a pixel of images 2n and 2n + 1 (``_image_pairs``; both meet the same tap at the same place).

TF32 rounding (``_tf32``) follows ``cvt.rna``; the tensor cores then read the values as rounded.
The gemm's tap entries (offset, row, column, 0), one per chunk, travel as 16-byte rows by
cp.async too, in a ring STAGES - 1 tiles ahead of the gathers that read them. Index math is
int32 (the int64 build of conv_cuda serves the rare tensors past the int32 guard; it has no
bfloat16 build, so bfloat16 goes to it widened to float32: ``_simt``).
``launch_bounds`` keep every build at 128 registers (16 warps per SM) without spills.

The weight gradient does not fold the bias (a CuPy sum gives it): its registers go to the
accumulators.
"""

import functools

import numpy as np
from numba import config, cuda, float32, int32, uint16, uint32

from gpudl import backend, dtypes

from . import conv_cuda, mma
from .budget import Budget
from .launch import launch

BN = 128            # columns per CTA tile (pixels; taps in the weight gradient)
KW = 16             # 32-bit words of reduction per shared tile row
KWP = KW + 4        # shared row pitch in words
CHUNK_WORDS = (4, 1)  # words per gemm copy: 16-byte chunks of channels, or single words
WM, WN = 64, 32     # warp tile
ROW_TILES = (64, 128)
PAD_K = 32          # the weight gradient's tap table padded to this many reduction values
KINDS = ("tf32", "f16", "bf16")
ALIGN = mma.LDMATRIX_ALIGN   # the shared tiles that ldmatrix reads

if config.ENABLE_CUDASIM:
    def as_float32(word):
        """The float32 whose bits are ``word``."""
        return np.uint32(word).view(np.float32)

    def tf32_bits(x):
        """The bits of ``x`` rounded to TF32 (``cvt.rna.tf32.f32``), as a uint32."""
        return np.float32(mma.to_tf32(x)).view(np.uint32)
else:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def as_float32(typingctx, word):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], ir.FloatType())
        return types.float32(types.uint32), codegen

    @intrinsic
    def tf32_bits(typingctx, x):
        """The bits of ``x`` rounded to TF32 (``cvt.rna.tf32.f32``), as a uint32 (the attention
        kernels round their float32 tiles with it)."""
        def codegen(context, builder, sig, args):
            asm = ir.InlineAsm(ir.FunctionType(ir.IntType(32), [ir.FloatType()]),
                               "cvt.rna.tf32.f32 $0, $1;", "=r,f")
            return builder.call(asm, args)
        return types.uint32(types.float32), codegen


def threads_for(bm):
    return (bm // WM) * (BN // WN) * 32


def min_blocks(bm):
    """Blocks per SM that ptxas must leave room for (``launch_bounds``): 16 warps, so 128
    registers a thread (two blocks of 256 threads, four of 128)."""
    return 2 if bm == 128 else 4


def _bounds(threads, blocks):
    # the simulator's cuda.jit takes no launch_bounds (and needs none)
    return {} if config.ENABLE_CUDASIM else {"launch_bounds": (threads, blocks)}


def stages(bm):
    """Shared-memory pipeline depth: three stages for BM 64 (47 KB), two for BM 128 (three would
    pass the 48 KB of static shared memory a block may declare)."""
    return 3 if bm == ROW_TILES[0] else 2


@functools.lru_cache(maxsize=None)
def _kernels(kind, bm, cw=CHUNK_WORDS[0]):
    """(gemm, grad_weight) tensor-core kernels of ``kind`` with BM = ``bm``, the gemm copying
    ``cw`` words (consecutive channels of one pixel) at a time."""
    threads = threads_for(bm)
    STAGES = stages(bm)
    WAIT = STAGES - 2                         # groups still in flight when a tile is read
    RING = 2 * STAGES - 2                     # gemm: tap ring slots (the gemm says why)
    CHUNKS = KW // cw                         # gemm: copies per pixel row of a tile
    A_SHARED, B_SHARED, TAP_ROWS = STAGES * bm, STAGES * BN, RING * CHUNKS
    WARPS_M = bm // WM
    A_STEP = threads // 4                     # gemm: weight rows between a thread's chunks
    A_CHUNKS = bm // A_STEP                   # gemm: 16-byte weight chunks per thread
    B_LANES = threads // BN                   # gemm: threads per pixel column (word rows split)
    NL = 32 // B_LANES                        # pixel columns per warp
    B_LOADS = CHUNKS // B_LANES
    W_STEP = threads // KW                    # weight gradient: rows one pass of threads fills
    WA_LOADS = bm // W_STEP
    WB_LOADS = BN // W_STEP
    U = uint32
    gemm_block = conv_cuda._gemm_block(int32, bm, BN)

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
        # this thread's chunks of its pixel (one tap, cw words of consecutive channels),
        # global to shared, zero outside the image
        for t in range(B_LOADS):
            c = kl + B_LANES * t
            e = slot * U(CHUNKS) + c
            if cw == 1:
                copy4(b_s, stage * U(BN) + n_b, c, x, int32(x_base + tap_s[e, 0]),
                      inside(tap_s, e, h0, w0, Hi, Wi))
            else:
                inside_ = inside(tap_s, e, h0, w0, Hi, Wi)
                mma.cp_async_16(b_s, stage * U(BN) + n_b, U(cw) * c, x,
                                U(int32(x_base + tap_s[e, 0])) if inside_ else U(0),
                                U(16) if inside_ else U(0))

    @cuda.jit(device=True, inline="always")
    def copy_taps(tap_s, j, tiles, tid, taps, tap_src):
        # the taps of tile j (one 16-byte row per chunk) into ring slot j % RING
        if j < tiles and tid < U(CHUNKS):
            mma.cp_async_16(tap_s, U(j & (RING - 1)) * U(CHUNKS) + tid, 0, taps,
                            U(tap_src + 4 * CHUNKS * j), 16)

    @cuda.jit(**_bounds(threads, min_blocks(bm)))
    def conv_tc_gemm_kernel(x, wt, taps, phases, bias, y, N, Hin, Win, CHWin, gstride_in, M,
                            Cout, Hout, Wout, sh, sw, ph, pw, ohs, ows, has_bias, Rw, Mp, Rt):
        # conv_cuda.conv_gemm_kernel's product (its comment gives the indexing) over 32-bit words:
        # x as (N, G, chunks, H, W, cw) words (TF32-rounded float32, or pairs of halves; _gemm);
        # wt (Z, Mp, Rw) the matching weight words; taps (phases, Rt, 4) one row (offset, row,
        # column, 0) per chunk of the reduction, R words in all; y float32 or half bits.
        tid = U(cuda.threadIdx.x)
        lane, warp = tid & U(31), tid >> U(5)
        z, phase, g, R, Hg, Wg, HWg, P, m0, p0 = gemm_block(phases, N)
        if p0 >= P:
            return                      # a phase with fewer pixels than the largest one
        a_s = cuda.shared.array((A_SHARED, KWP), uint32, alignment=ALIGN)
        b_s = cuda.shared.array((B_SHARED, KWP), uint32, alignment=ALIGN)
        tap_s = cuda.shared.array((TAP_ROWS, 4), int32, alignment=ALIGN)
        acc = cuda.local.array(64, float32)
        af = cuda.local.array(16, uint32)
        bf = cuda.local.array(8, uint32)
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
        x_base = int32(n * CHWin + g * gstride_in + (h0 * Win + w0) * cw)
        if p >= P:
            h0 = int32(-conv_cuda.FAR)
        a_src = int32((z * Mp + m0 + a_row) * Rw + a_word)
        a_stride = int32(A_STEP * Rw)
        tap_src = int32((phase * Rt + tid) * 4)
        Hi, Wi = U(Hin), U(Win)
        tiles = int32((R + KW - 1) // KW)
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
                copy_pixels(b_s, U(j), x, tap_s, U(j), kl, n_b, x_base, h0, w0, Hi, Wi)
            copy_taps(tap_s, j + STAGES - 1, tiles, tid, taps, tap_src)
            mma.cp_async_commit()
        rs, ws = U(0), U(STAGES - 1)            # the stages read and written this iteration
        for kt in range(tiles):
            mma.cp_async_wait(WAIT)             # this thread's copies of tile kt have landed
            cuda.syncthreads()                  # everyone's, and stage ws is read no more
            j = kt + STAGES - 1
            if j < tiles:
                copy_weights(a_s, ws, wt, int32(a_src + KW * j), a_stride, a_row, a_word)
                copy_pixels(b_s, ws, x, tap_s, U(j & (RING - 1)), kl, n_b, x_base, h0, w0, Hi,
                            Wi)
            copy_taps(tap_s, j + STAGES - 1, tiles, tid, taps, tap_src)
            mma.cp_async_commit()
            mma_tile(a_s, b_s, rs * U(bm) + la_row, la_col, rs * U(BN) + lb_row, lb_col, acc,
                     af, bf)
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
    def wgrad_copy(a_s, b_s, stage, x, gy, tap_s, q, q_end, n, oh, ow, m_room, gy_rows, gy_step,
                   KHWo, CHW, x_group, Wo, sh, sw, ph, pw, Hx, Wx, lrow, lk):
        # word q's gy rows and x patch, global to shared, zero outside the image or past the end
        live = q < q_end
        gy_base = int32(n * KHWo + gy_rows + oh * Wo + ow)
        for t in range(WA_LOADS):
            copy4(a_s, stage * U(bm) + lrow + W_STEP * t, lk, gy, int32(gy_base + gy_step * t),
                  live and m_room > int32(W_STEP * t))
        h0, w0 = int32(oh * sh - ph), int32(ow * sw - pw)
        x_base = int32(n * CHW + x_group + h0 * int32(Wx) + w0)
        if not live:
            h0 = int32(-conv_cuda.FAR)
        for t in range(WB_LOADS):
            col = lrow + W_STEP * t
            copy4(b_s, stage * U(BN) + col, lk, x, int32(x_base + tap_s[col, 0]),
                  inside(tap_s, col, h0, w0, Hx, Wx))

    @cuda.jit(device=True, inline="always")
    def advance(n, oh, ow, dn, dh, dw, Hs, Ws):
        # (n, oh, ow) moved KW words on, with carries: no division
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

    @cuda.jit(**_bounds(threads, min_blocks(bm)))
    def conv_tc_grad_weight_kernel(x, gy, taps, partial, N, C, H, W, Ho, Wo, sh, sw, ph, pw,
                                   split_len):
        # partial[s, g*Kg + m, r] = sum over pixels q of split s of gy[q, g*Kg + m] * patch(q)[r]
        # (conv_cuda.conv_grad_weight_kernel's product, without the bias) over 32-bit words:
        # x and gy TF32-rounded float32, or image pairs (pixel q of images 2n and 2n + 1 in one
        # word, _image_pairs; N counts the pairs). Word lk of a tile is pixel word q. The
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
        tap_s = cuda.shared.array((BN, 4), int32, alignment=ALIGN)
        acc = cuda.local.array(64, float32)
        af = cuda.local.array(16, uint32)
        bf = cuda.local.array(8, uint32)
        zero(acc)
        lk, lrow = tid % U(KW), tid // U(KW)
        if tid < BN:
            for e in range(3):
                tap_s[tid, e] = taps[U(r0 + tid), e]
        cuda.syncthreads()
        m_room = int32(Kg - m0 - lrow)
        gy_rows = int32((g * Kg + m0 + lrow) * HWo)
        gy_step = int32(W_STEP * HWo)
        x_group = int32(g * Cg * H * W)
        KHWo, CHW = int32(K * HWo), int32(C * H * W)
        q = int32(q_begin + lk)
        n, rest = divmod_(q, HWo)
        oh, ow = divmod_(rest, Wo)
        dn, step_rest = divmod_(int32(KW), HWo)
        dh, dw = divmod_(step_rest, Wo)
        Hs, Ws, Hx, Wx = int32(Ho), int32(Wo), U(H), U(W)
        sh_, sw_, ph_, pw_ = int32(sh), int32(sw), int32(ph), int32(pw)
        la_row, la_col, lb_row, lb_col, warp_row, warp_col = lane_rows(lane, warp)
        tiles = int32((q_end - q_begin + KW - 1) // KW)
        rs, ws = U(0), U(0)             # the stages read and written next
        for j in range(tiles + STAGES - 1):
            kt = j - (STAGES - 1)       # the tile multiplied in this iteration (< 0: prologue)
            if kt >= 0:
                mma.cp_async_wait(WAIT)
                cuda.syncthreads()
            if j < tiles:               # issue tile j into stage ws
                wgrad_copy(a_s, b_s, ws, x, gy, tap_s, q, q_end, n, oh, ow, m_room, gy_rows,
                           gy_step, KHWo, CHW, x_group, Ws, sh_, sw_, ph_, pw_, Hx, Wx, lrow, lk)
                n, oh, ow = advance(n, oh, ow, dn, dh, dw, Hs, Ws)
                q = int32(q + KW)
                ws = next_stage(ws)
            mma.cp_async_commit()
            if kt >= 0:
                mma_tile(a_s, b_s, rs * U(bm) + la_row, la_col, rs * U(BN) + lb_row, lb_col, acc,
                         af, bf)
                rs = next_stage(rs)
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


def _simt(function, data, *rest, rounded=True):
    """conv_cuda's ``function`` (the SIMT kernels: empty operands, tensors past the int32 index
    guard) on ``data`` and the arrays after it. conv_cuda has no bfloat16 build: bfloat16 is
    widened to float32 (exactly) and, when ``rounded``, the result rounded back."""
    if data.dtype != dtypes.bfloat16:
        return function(data, *rest)
    out = function(*(dtypes.bfloat16_to_float32(a) if getattr(a, "dtype", None) == data.dtype
                     else a for a in (data,) + rest))
    return dtypes.float32_to_bfloat16(backend.get_array_module(out), out) if rounded else out


def _row_tile(rows):
    return ROW_TILES[0] if rows <= ROW_TILES[0] else ROW_TILES[1]


def _padded(channels):
    """``channels`` rounded up to whole chunks (8 halves or 4 TF32 values: 8 bounds both)."""
    return -(-channels // 8) * 8


def _fits(*sizes, image):
    """Whether the int32 build serves these sizes (else conv_cuda's int64 build runs)."""
    return conv_cuda._index(*sizes, image=image) == int32


@functools.lru_cache(maxsize=64)
def _weight_gradient_taps(xp, K, Cg, kh, kw, dh, dw, H, W, Ho, Wo, groups, bm):
    """conv_cuda's forward tap table, padded to PAD_K, as (Rt, 4) rows (offset, row, column,
    0): the weight gradient's columns, one LDS.128 per gathered value."""
    taps = conv_cuda._forward_plan(xp, K, Cg, kh, kw, dh, dw, H, W, Ho, Wo, groups, bm,
                                   PAD_K)[0][0]
    rows = xp.zeros((taps.shape[1], 4), np.int32)
    rows[:, :3] = taps.T
    return rows


def _vectors(xp, a, per, word):
    """``a`` (5-D) grouped by ``per`` along axis 2, each group moved last and read as 32-bit
    ``word``s (the lower-indexed element first, in the low half of a word of halves): shape
    (n0, n1, ceil(n2 / per), n3, n4, per * itemsize / 4), zeros padding the last group."""
    if a.shape[2] % per:
        pad = per - a.shape[2] % per
        a = xp.concatenate([a, xp.zeros(a.shape[:2] + (pad,) + a.shape[3:], a.dtype)], axis=2)
    n0, n1, n2, n3, n4 = a.shape
    groups = a.reshape(n0, n1, n2 // per, per, n3, n4).transpose(0, 1, 2, 4, 5, 3)
    return xp.ascontiguousarray(groups).view(word)


def _chunk_taps(chunks, cw, Hs, Ws, e_i, e_j):
    """Tap rows (offset in words, row, column, 0) of the chunks (c, i, j) of a chunked image
    (Hs x Ws planes of cw-word pixels): c a channel chunk, (e_i, e_j) the row and column
    offsets of the phase's taps."""
    c, i, j = (v.reshape(-1) for v in np.meshgrid(np.arange(chunks), e_i, e_j, indexing="ij"))
    return np.stack([cw * (c * Hs * Ws + i * Ws + j), i, j, np.zeros_like(c)], axis=1)


@functools.lru_cache(maxsize=64)
def _gemm_plan(xp, transposed, per, cw, K, Cg, kh, kw, sh, sw, ph, pw, dh, dw, H, W, Ho, Wo,
               groups):
    """The gemm's plan over chunks of ``per`` channels: (taps (phases, Rt, 4), phases (R words,
    a, b, Hg, Wg) as conv_cuda's, the kernel taps (i, j) of each phase, pixels). The forward
    reduces over (input channel chunk, i, j, channel in chunk); grad_input (``transposed``) over
    (output channel chunk, i, j, channel) per phase of the input pixels, as
    conv_cuda._input_plan."""
    if not transposed:
        ii, jj = np.arange(kh), np.arange(kw)
        tables = [_chunk_taps(-(-Cg // per), cw, H, W, ii * dh, jj * dw)]
        phases, picks, pixels = [(cw * len(tables[0]), 0, 0, Ho, Wo)], [(ii, jj)], Ho * Wo
    else:
        tables, phases, picks = [], [], []
        for a in range(sh):
            for b in range(sw):
                ii = np.array([i for i in range(kh) if (a + ph - i * dh) % sh == 0], int)
                jj = np.array([j for j in range(kw) if (b + pw - j * dw) % sw == 0], int)
                tables.append(_chunk_taps(-(-(K // groups) // per), cw, Ho, Wo,
                                          (a + ph - ii * dh) // sh, (b + pw - jj * dw) // sw))
                phases.append((cw * len(tables[-1]), a, b, len(range(a, H, sh)),
                               len(range(b, W, sw))))
                picks.append((ii, jj))
        pixels = max(p[3] * p[4] for p in phases)
    taps = np.zeros((len(tables), max(1, conv_cuda._blocks(max(map(len, tables)), BN)) * BN, 4),
                    np.int32)
    taps[:, :, 1] = -conv_cuda.FAR
    for phase, table in enumerate(tables):
        taps[phase, :len(table)] = table
    return xp.asarray(taps), xp.asarray(np.array(phases, np.int32)), picks, pixels


def _layout(xp, a, tf32, cw):
    """(array to chunk, channels per chunk, word type) of a data or weight array: TF32-rounded
    float32 values (cw per chunk) or the bits of halves (2 cw per chunk, two per word)."""
    return (_tf32(xp, a), cw, np.float32) if tf32 else (_bits(xp, a), 2 * cw, np.uint32)


@cuda.jit
def tf32_chunks(x, out, channels, pixels, per):
    """``x`` (planes, channels, pixels), float32, TF32-rounded into ``out`` laid out as
    (planes, chunks, pixels, per), zeros past the last channel: what ``_vectors`` of ``_tf32``
    makes in six CuPy passes, in one. Block (pixel block, plane, chunk): no index division.
    Offsets are uint32 (the caller keeps both arrays under ``INDEX_LIMIT`` elements): Numba's
    signed 64-bit index math took 178 instructions per 4 elements moved, uint32 takes 103."""
    p = uint32(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x)
    if p < pixels:
        plane, chunk = cuda.blockIdx.y, cuda.blockIdx.z
        first = uint32(((plane * cuda.gridDim.z + chunk) * pixels + p) * per)
        for k in range(per):
            channel = uint32(chunk * per + k)
            value = float32(0)
            if channel < channels:
                value = as_float32(tf32_bits(x[uint32((plane * channels + channel) * pixels + p)]))
            out[uint32(first + k)] = value


TF32_CHUNKS_SIGNATURE = "void(float32[::1], float32[::1], int32, int32, int32)"
LAYOUT_THREADS = 256
GRID_YZ = 65535     # the most blocks along a grid's y or z
INDEX_LIMIT = 1 << 32   # tf32_chunks' offsets are uint32: larger arrays take the CuPy passes


def _tf32_chunks(xp, a, planes, channels, pixels, per):
    """float32 ``a`` (planes, channels, pixels) TF32-rounded and grouped by ``per`` channels,
    flat, as ``_vectors(xp, _tf32(xp, a).reshape(planes, 1, channels, pixels, 1), per,
    np.float32)`` lays it out; by the one-pass kernel where its grid fits."""
    chunks = -(-channels // per)
    size = planes * chunks * pixels * per                  # out's; a's is no larger
    if planes > GRID_YZ or chunks > GRID_YZ or size == 0 or size >= INDEX_LIMIT:
        shape = (planes, 1, channels, pixels, 1)
        return _vectors(xp, _tf32(xp, a).reshape(shape), per, np.float32).reshape(-1)
    out = xp.empty(size, np.float32)
    grid = (-(-pixels // LAYOUT_THREADS), planes, chunks)
    launch(tf32_chunks, TF32_CHUNKS_SIGNATURE, grid, LAYOUT_THREADS,
           xp.ascontiguousarray(a, np.float32).reshape(-1), out, np.int32(channels),
           np.int32(pixels), np.int32(per))
    return out


def chunk_words(channels, tf32):
    """The gemm's words per copy for a reduction over ``channels`` channels per group: 16-byte
    chunks from two chunks' worth on (the zero padding of a partial chunk then costs at most
    41% more work: 17 half channels padded to 24), single words below (a 1-3 channel first layer or a depthwise conv would
    otherwise multiply mostly zeros)."""
    return CHUNK_WORDS[0] if channels >= 2 * CHUNK_WORDS[0] * (1 if tf32 else 2) else \
        CHUNK_WORDS[1]


def _gemm_weights(xp, w, geo, transposed, picks, bm, tf32, cw):
    """The gemm's weight words (phases * G, Mp, Rw), flat, with Mp and Rw: row m holds w over
    the reduction's (channel chunk, i, j, channel) for the taps (i, j) of each phase."""
    G, Kg, Cg = geo.groups, geo.K // geo.groups, geo.C // geo.groups
    if tf32 and not transposed:                            # (G, Kg, Cg, kh, kw) as it lies
        per, word = cw, np.float32
        chunks = _tf32_chunks(xp, w, G * Kg, Cg, geo.kh * geo.kw, per).reshape(
            G, Kg, -(-Cg // per), geo.kh, geo.kw, per)
    else:
        flat, per, word = _layout(xp, w, tf32, cw)
        w5 = flat.reshape(G, Kg, Cg, geo.kh, geo.kw)
        chunks = _vectors(xp, w5.transpose(0, 2, 1, 3, 4) if transposed else w5, per, word)
    rows = chunks.shape[1]                                 # (G, M, chunks, kh, kw, cw)
    used = [len(ii) * len(jj) * chunks.shape[2] * cw for ii, jj in picks]
    mp = conv_cuda._blocks(rows, bm) * bm
    rw = max(1, conv_cuda._blocks(max(used), KW)) * KW
    wt = xp.zeros((len(picks), G, mp, rw), word)
    for phase, (ii, jj) in enumerate(picks):
        if used[phase]:
            pick = chunks[:, :, :, _progression(ii), _progression(jj)]
            wt[phase, :, :rows, :used[phase]] = pick.reshape(G, rows, -1)
    return wt.reshape(-1), mp, rw


def _progression(taps):
    """The slice selecting ``taps``, an increasing arithmetic progression (a phase's kernel
    rows or columns): basic indexing, where an index array would be a host-to-device copy,
    which a CUDA graph capture refuses."""
    step = int(taps[1] - taps[0]) if len(taps) > 1 else 1
    assert step > 0 and np.array_equal(taps, np.arange(taps[0], taps[-1] + 1, step)), taps
    return slice(int(taps[0]), int(taps[-1]) + 1, step)


def _gemm(data, w, geo, bm, transposed):
    """The gemm's operands for data (x, or gy when ``transposed``): (data words, weight words,
    taps, phases, Mp, Rw, pixels, image stride, group stride, words per copy), strides in
    words. Data travel as (N, G, chunks, H, W, cw) words: each pixel's channels in chunks of cw
    words, one cp.async per chunk and tap."""
    xp = backend.get_array_module(data)
    G = geo.groups
    tf32 = kind(data.dtype) == "tf32"
    cw = chunk_words((geo.K if transposed else geo.C) // G, tf32)
    per = cw if tf32 else 2 * cw                           # channels per chunk (_layout)
    taps, phases, picks, pixels = _gemm_plan(xp, transposed, per, cw, geo.K, geo.C // G, geo.kh,
                                             geo.kw, geo.sh, geo.sw, geo.ph, geo.pw, geo.dh,
                                             geo.dw, geo.H, geo.W, geo.Ho, geo.Wo, G)
    wt, mp, rw = _gemm_weights(xp, w, geo, transposed, picks, bm, tf32, cw)
    n, c, h, w_ = data.shape
    if tf32:
        words = _tf32_chunks(xp, data, n * G, c // G, h * w_, cw)
        group = -(-(c // G) // cw) * h * w_ * cw
    else:
        flat, _, word = _layout(xp, data, tf32, cw)
        chunks = _vectors(xp, flat.reshape(n, G, c // G, h, w_), per, word)
        words, group = chunks.reshape(-1), chunks.shape[2] * h * w_ * cw
    return words, wt, taps, phases, mp, rw, pixels, G * group, group, cw


def _launch_gemm(kind_, bm, cw, grid, x_words, wt, taps, phases, bias, y, *scalars):
    launch(_kernels(kind_, bm, cw)[0], gemm_signature(kind_), grid, threads_for(bm), x_words, wt,
           taps.reshape(-1), phases, bias, _bits(backend.get_array_module(y), y), *scalars)


def _bias(xp, b, size):
    """The epilogue's per-row bias as float32 (a dummy, never read, when there is none)."""
    if b is None:
        return xp.zeros(1, np.float32)
    b = xp.asarray(b).reshape(-1)
    b = dtypes.bfloat16_to_float32(b) if b.dtype == dtypes.bfloat16 else b
    return xp.ascontiguousarray(b, np.float32)[:size]


def forward(x, w, b, geo):
    """y = conv(x, w) + b on tensor cores, (N, K, Ho, Wo) in x's dtype."""
    G, Kg, Cg = geo.groups, geo.K // geo.groups, geo.C // geo.groups
    image = G * _padded(Cg) * geo.H * geo.W               # x as chunks, at most
    xp = backend.get_array_module(x)
    y = xp.empty(geo.y_shape, x.dtype)
    if not _fits(geo.N * image, y.size,
                 conv_cuda._operand_size(G, _padded(Cg) * geo.kh * geo.kw, Kg) * 4,
                 image=image):
        return _simt(conv_cuda.forward, x, w, b, geo)
    if y.size == 0:
        return y
    kind_, bm = kind(x.dtype), _row_tile(Kg)
    words, wt, taps, phases, Mp, Rw, _, image, group, cw = _gemm(x, w, geo, bm, False)
    grid = (conv_cuda._blocks(geo.N * geo.Ho * geo.Wo, BN), conv_cuda._blocks(Kg, bm), G)
    _launch_gemm(kind_, bm, cw, grid, words, wt, taps, phases, _bias(xp, b, geo.K), y, geo.N,
                 geo.H, geo.W, image, group, Kg, geo.K, geo.Ho, geo.Wo, geo.sh, geo.sw, geo.ph,
                 geo.pw, 1, 1, int(b is not None), Rw, Mp, taps.shape[1])
    return y


def grad_input(gy, w, geo, b=None):
    """The adjoint of forward in x on tensor cores: gx (N, C, H, W) in gy's dtype, plus ``b``
    (C,) per channel when given (conv_transpose2d's bias)."""
    G, Kg, Cg = geo.groups, geo.K // geo.groups, geo.C // geo.groups
    image = G * _padded(Kg) * geo.Ho * geo.Wo             # gy as chunks, at most
    xp = backend.get_array_module(gy)
    if (gy.size == 0 or Kg == 0 or not _fits(
            geo.N * image, int(np.prod(geo.x_shape)),
            conv_cuda._operand_size(G * geo.sh * geo.sw, _padded(Kg) * geo.kh * geo.kw, Cg) * 4,
            image=image)):
        return _simt(conv_cuda.grad_input, gy, w, geo, b)
    gx = xp.empty(geo.x_shape, gy.dtype)
    if gx.size == 0:
        return gx
    kind_, bm = kind(gy.dtype), _row_tile(Cg)
    words, wt, taps, phases, Mp, Rw, pixels, image, group, cw = _gemm(gy, w, geo, bm, True)
    grid = (conv_cuda._blocks(geo.N * pixels, BN), conv_cuda._blocks(Cg, bm),
            G * len(phases))
    _launch_gemm(kind_, bm, cw, grid, words, wt, taps, phases, _bias(xp, b, geo.C), gx, geo.N,
                 geo.Ho, geo.Wo, image, group, Cg, geo.C, geo.H, geo.W, 1, 1, 0, 0, geo.sh,
                 geo.sw, int(b is not None), Rw, Mp, taps.shape[1])
    return gx


def _image_pairs(xp, a):
    """Half data (N, C, H, W) as words (ceil(N/2), C, H, W): each pixel of images 2n and 2n + 1
    in one word (2n in the low half), a zero image after an odd N. The weight gradient reduces
    over pixels, and these two meet the same taps at the same place: one 4-byte copy, one bounds
    test for both."""
    n, c, h, w = a.shape
    return _vectors(xp, _bits(xp, a).reshape(1, 1, n, c, h * w), 2, np.uint32).reshape(-1)


def grad_weight(x, gy, geo, with_bias=False):
    """The adjoint of forward in w on tensor cores: gw (K, C/groups, kh, kw) in float32; with
    ``with_bias``, (gw, gb), gb from one CuPy sum over gy."""
    G, Kg, Cg = geo.groups, geo.K // geo.groups, geo.C // geo.groups
    R = Cg * geo.kh * geo.kw
    Q = geo.N * geo.Ho * geo.Wo
    xp = backend.get_array_module(x)
    if Q == 0 or geo.K == 0 or R == 0 or not _fits(x.size, gy.size,
                                                    image=geo.C * geo.H * geo.W):
        return _simt(conv_cuda.grad_weight, x, gy, geo, with_bias, rounded=False)
    kind_, bm = kind(x.dtype), _row_tile(Kg)
    if kind_ == "tf32":
        n = geo.N
        x_words = _tf32_chunks(xp, x, n, geo.C, geo.H * geo.W, 1)
        gy_words = _tf32_chunks(xp, gy, n, geo.K, geo.Ho * geo.Wo, 1)
    else:                       # pixel words of image pairs: half the images
        n, x_words, gy_words = (geo.N + 1) // 2, _image_pairs(xp, x), _image_pairs(xp, gy)
    words = n * geo.Ho * geo.Wo
    tiles = conv_cuda._blocks(R, BN) * conv_cuda._blocks(Kg, bm) * G
    splits = max(1, min(conv_cuda._blocks(words, conv_cuda.MIN_SPLIT),
                        conv_cuda._blocks(conv_cuda.TARGET_BLOCKS, tiles), 65535 // G))
    split_len = conv_cuda._blocks(conv_cuda._blocks(words, splits), KW) * KW
    splits = conv_cuda._blocks(words, split_len)
    partial = xp.empty((splits, geo.K, R), np.float32)
    taps = _weight_gradient_taps(xp, geo.K, Cg, geo.kh, geo.kw, geo.dh, geo.dw, geo.H, geo.W,
                                 geo.Ho, geo.Wo, G, bm)
    grid = (conv_cuda._blocks(R, BN), conv_cuda._blocks(Kg, bm), G * splits)
    launch(_kernels(kind_, bm)[1], grad_weight_signature(kind_), grid, threads_for(bm), x_words,
           gy_words, taps, partial, n, geo.C, geo.H, geo.W, geo.Ho, geo.Wo, geo.sh, geo.sw,
           geo.ph, geo.pw, split_len)
    gw = (partial[0] if splits == 1 else partial.sum(axis=0)).reshape(geo.w_shape)
    return (gw, conv_cuda.grad_bias(gy)) if with_bias else gw


def _data_name(kind_):
    return "float32" if kind_ == "tf32" else "uint16"


def gemm_signature(kind_):
    """The Numba signature conv_tc_gemm_kernel of ``kind_`` is launched with (half data as
    channel-pair words)."""
    words = "float32" if kind_ == "tf32" else "uint32"
    return (f"void({words}[::1], {words}[::1], int32[::1], int32[:, ::1], float32[::1], "
            f"{_data_name(kind_)}[::1], {', '.join(['int64'] * 19)})")


def grad_weight_signature(kind_):
    """The Numba signature conv_tc_grad_weight_kernel of ``kind_`` is launched with (half data
    as image-pair words)."""
    data = "float32" if kind_ == "tf32" else "uint32"
    return (f"void({data}[::1], {data}[::1], int32[:, ::1], float32[:, :, ::1], "
            f"{', '.join(['int64'] * 11)})")


# the hot-loop HMMA share each build reaches (sm_90 SASS, ptxas padding left out), rounded down,
# the same for every kind: BM -> (gemm with 16-byte chunks, gemm with single words, weight
# gradient). The gate holds the kernels to it, so it cannot regress.
HMMA_FLOOR = {64: (0.16, 0.11, 0.085), 128: (0.185, 0.14, 0.12)}


def _signatures():
    """Every tensor-core build with its launch signature; the gate holds each (half builds
    included: ``min_hmma_share`` marks them) to its budget."""
    table = []
    for kind_ in KINDS:
        for bm in ROW_TILES:
            builds = [(_kernels(kind_, bm, cw)[0], gemm_signature(kind_)) for cw in CHUNK_WORDS]
            builds.append((_kernels(kind_, bm)[1], grad_weight_signature(kind_)))
            for (kernel, signature), share in zip(builds, HMMA_FLOOR[bm]):
                table.append((kernel, [signature], Budget(
                    threads=threads_for(bm), min_hmma_share=share,
                    min_occupancy=min_blocks(bm) * threads_for(bm) / 32 / 64)))
    table.append((tf32_chunks, [TF32_CHUNKS_SIGNATURE], Budget(threads=LAYOUT_THREADS,
                                                              max_div64=0)))
    return table


SIGNATURES = _signatures()
