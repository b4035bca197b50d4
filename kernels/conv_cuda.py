"""Numba-CUDA kernels for 2-D convolution: implicit GEMMs, 128-pixel CTA tiles, registers.

Two kernels carry every product, one group (and phase) per ``blockIdx.z``; neither builds an
im2col buffer in global memory (operands are gathered inside the tile loads):

==================  =================  ==========================  =============================
kernel              rows (M)           columns                     reduction
==================  =================  ==========================  =============================
``gemm``: forward   out channels K/g   output pixels N*Ho*Wo       C/g * kh * kw  (w, x patch)
``gemm``: grad_x    in channels C/g    input pixels of one phase   K/g * taps of the phase
``grad_weight``     out channels K/g   C/g * kh * kw               N*Ho*Wo, split over blocks
==================  =================  ==========================  =============================

grad_input (and so conv_transpose2d) is the forward kernel on the transposed, flipped weights: at
stride 1 it is a plain convolution of gy. At stride s the input pixels split into s_h*s_w phases
(h = a + s_h*u): phase (a, b) reads gy at (u + e_i, t + e_j) through only the taps i, j with
(a + p_h - i*d_h) divisible by s_h, so each phase is a stride-1 convolution with its own tap list,
and no tap ever tests a remainder. Every input pixel is written exactly once (no zero-fill, no
atomics: deterministic). The weight gradient splits its long reduction over ``blockIdx.z`` into
partial sums that one CuPy sum adds in a fixed order; it also sums the gy values it loads, per
output channel, into the bias gradient (no separate pass over gy).

Tiles: a block computes BM x BN = (128 or 64) x 128 outputs with BM*BN/64 threads (256 or 128), an
8x8 micro-tile each, accumulated in registers over BK = 8 reduction steps per shared tile,
unrolled (at most 16 rows, in the gemm or the weight gradient: 16 x 128 with 2x8 micro-tiles,
128 threads, so a 3-channel image's grad_input or a 6-channel LeNet layer multiplies no 64-row
zero padding). The few-rows weight gradient, and a few-rows gemm whose 128-pixel grid is small
and whose reduction spans more than 32 steps, take a narrow 16 x 32 tile (``_kernels(..., bn=32)``):
its shared tiles hold 32 reduction steps, each of its 4 warps multiplies 8 of them into its own
16 x 32 partial, and the partials add up in shared memory (in warp order) before the store, so a
block's serial loop is 4x shorter and the blocks 4x as many: the latency-bound grids of LeNet's
convolutions (a 128-pixel grid leaves most SMs one block walking R / 8 tiles). A thread's 8 rows
(and 8 columns) are two contiguous runs of four half a tile apart, so
its shared loads merge into 16-byte LDS and a warp's reads are conflict-free. The shared tiles are
double-buffered: the next tile's global loads are issued into registers before the current
tile's 512 FMAs and stored after them, one barrier per tile. Each thread gathers for one fixed
pixel (gemm: base offset and origin computed once; each tile's tap entries staged in a shared
ring one tile ahead) or one pixel advanced by carries (weight gradient: its block's taps staged
in shared memory once), so the loop does no division. Weights reach the gemm
kernel transposed to (R, M) and zero-padded to whole tiles, so their tile loads coalesce and need
no bounds check; taps of a tile are padded the same way. Index math is int32 (``idx``) unless an
array is too large for it; then a 64-bit build of the same kernels runs (offsets within one image
stay int32 in both). The gemm epilogue adds a per-row bias: conv2d's, and conv_transpose2d's
(through grad_input).

grad_input with at most 4 input channels a group (an RGB or grayscale stem, a depthwise layer)
runs a third kernel, ``conv_dgrad_few_kernel``: a direct convolution of gy per stride phase,
whose 16 x 64-pixel tiles hold every channel of a group and stage each gy channel's patch in
shared memory once (see the section "few-channel dgrad" below), where the gemm's 16-row tile
would multiply 13 zero rows for a 3-channel image.

Kernels are built per (accumulator, index type, BM, BN): float32 accumulation serves float32 and
float16 data (fp16 loads widen to fp32), float64 serves float64 data (gradient checks).
"""

import functools

import numpy as np
from numba import config, cuda, float32, float64, int32, int64, uint32, uint64

from gpudl import backend, dtypes

from .budget import Budget
from .launch import launch

BN = 128           # columns per CTA tile (pixels, or taps in the weight gradient)
BK = 8             # reduction steps per shared tile (mac_tile spells out 8 steps)
TM = TN = 8        # micro-tile per thread
TX = BN // TN      # 16 threads across the columns
PAD = 4            # spare words per shared row: the weight gradient stores down columns
                   # (and 4 keeps every row 16-byte aligned for the merged loads)
ROW_TILES = (64, 128)      # BM: 64 when the GEMM has <= 64 rows (out channels), else 128
FEW_ROWS = 16              # the gemm's BM for <= 16 rows, with 2 x 8 micro-tiles (few_rows)
FEW_COLS = 32              # the narrow few-rows build: 16 x 32 tiles whose 4 warps split
                           # each shared tile's 4 * BK = 32 steps (tile_depth)
FAR = 1 << 29      # an offset far outside any image: taps and pixels marked with it load zero
INT32_LIMIT = 1 << 31
IMAGE_LIMIT = INT32_LIMIT // 4 * 3     # tap tables (offsets within one image) are int32 always

# The weight gradient splits its N*Ho*Wo reduction until the grid has about TARGET_BLOCKS blocks
# (a few waves of an H100's 132 SMs), keeping at least MIN_SPLIT values per split (FEW_MIN_SPLIT
# in the few-rows build: 8 of its 32-step tiles, so LeNet's weight gradients run 8-tile loops in
# 196 and 125 blocks, not 128- and 115-tile loops in 49 and 14). conv_tc_cuda reads these too.
TARGET_BLOCKS = 512
MIN_SPLIT = 1024
FEW_MIN_SPLIT = 256


def micro_rows(bm):
    """Rows of a thread's micro-tile: 8, or 2 in the few-rows build."""
    return 2 if bm == FEW_ROWS else TM


def k_split(bn):
    """Thread groups that split each shared tile's reduction steps, BK apiece, in a tile of bn
    columns: 1 at BN; BN / bn in a narrow tile (the few-rows 16 x 32 tile is one warp's 2 x 8
    micro-tiles: 4 warps), so every build of a given bm keeps its thread count."""
    return BN // bn


def tile_depth(bn):
    """Reduction steps per shared tile (and per loop iteration): BK per thread group."""
    return BK * k_split(bn)


def threads_for(bm):
    return bm * BN // (micro_rows(bm) * TN)


def _quotient(idx):
    """quotient(a, b) of non-negative grid figures (groups, phases, splits): a 32-bit unsigned
    division in an ``idx`` = int32 build; an int64 build keeps its signed one (outside loops,
    and ptxas gives it fewer registers that way)."""

    @cuda.jit(device=True, inline="always")
    def quotient(a, b):
        if idx == int32:
            return idx(uint32(a) // uint32(b))
        return idx(a // b)
    return quotient


def _gemm_block(idx, bm, bn):
    """block(phases, N): (z, phase, g, R, Hg, Wg, HWg, P, m0, p0) of this block of a gemm kernel
    (the SIMT one below, conv_tc_cuda's): grid z = phase * G + g (group g), R the phase's tap
    count and (Hg, Wg) its pixel grid (a row of ``phases`` is (R, a, b, Hg, Wg)), P its N * Hg *
    Wg pixels, and the block's first output row m0 and pixel p0 (tiles of bm x bn), in ``idx``
    integers."""
    quotient = _quotient(idx)
    U = uint32 if idx == int32 else uint64

    @cuda.jit(device=True, inline="always")
    def block(phases, N):
        G = quotient(cuda.gridDim.z, phases.shape[0])
        z = idx(cuda.blockIdx.z)
        phase = quotient(cuda.blockIdx.z, G)
        g = idx(z - phase * G)
        R = idx(phases[U(phase), 0])
        Hg, Wg = idx(phases[U(phase), 3]), idx(phases[U(phase), 4])
        HWg = idx(Hg * Wg)
        return (z, phase, g, R, Hg, Wg, HWg, idx(N * HWg), idx(cuda.blockIdx.y * bm),
                idx(cuda.blockIdx.x * bn))
    return block


@functools.lru_cache(maxsize=None)
def _kernels(acc, idx, bm, bn=BN):
    """(gemm, grad_weight) accumulating in ``acc``, indexing in ``idx``, with tiles of ``bm`` x
    ``bn`` (bn < BN: the narrow few-rows build, k_split(bn) warps a shared tile)."""
    threads = threads_for(bm)
    # float32 gemm: at most 128 registers a thread, so 25% occupancy on an H100 does not hang
    # on ptxas's choice (it chose 129 once); float64 builds (gradient checks) are left free, and
    # the simulator's cuda.jit takes no launch_bounds
    BOUNDS = ({"launch_bounds": (threads, 65536 // (threads * 128))}
              if acc == float32 and not config.ENABLE_CUDASIM else {})
    RM = micro_rows(bm)                # rows of a thread's micro-tile
    TY = bm // RM                     # thread rows of the micro-tile grid
    BNT = bn                          # columns of the tile
    TX = BNT // TN                    # thread columns of the micro-tile grid
    GROUP = TX * TY                   # threads of one reduction group (one full micro-tile grid)
    KS = k_split(bn)                  # groups; group kg multiplies steps kg*BK .. kg*BK + 7
    BKT = BK * KS                     # reduction steps per shared tile
    A_STEP = threads // bm            # gemm: k rows of an A tile one pass of threads fills
    A_LOADS = BKT // A_STEP
    B_STEP = threads // BNT
    B_LOADS = BKT // B_STEP
    W_STEP = threads // BKT           # weight gradient: columns one pass of threads fills
    WA_LOADS = bm // W_STEP
    WB_LOADS = BNT // W_STEP
    A_COLS, B_COLS = bm + PAD, BNT + PAD    # shared shapes must be compile-time constants
    # KS > 1: the groups' partial tiles meet in shared memory (a row padded by one word: a
    # group's stores spread over the banks); KS = 1 keeps a one-word array it never touches
    RED = (KS, bm, BNT + 1) if KS > 1 else (1,)
    OUT_ROWS = bm * BNT // threads    # KS > 1: rows of the column each thread sums and stores
    assert KS * GROUP == threads and 3 * BKT <= threads and W_STEP * BKT == threads
    # Array indices are unsigned: Numba wraps negative signed indices around (a 64-bit compare
    # and select per index). U casts a global offset; S types the small per-thread indices
    # (thread coordinates, buffer), whose sums with constants then fold into immediates.
    U = uint32 if idx == int32 else uint64
    S = uint32

    quotient = _quotient(idx)
    gemm_block = _gemm_block(idx, bm, BNT)

    @cuda.jit(device=True, inline="always")
    def divmod_(a, b):
        # non-negative operands: an unsigned division (a 32-bit one in the int32 build)
        q = idx(U(a) // U(b))
        return q, idx(a - q * b)

    @cuda.jit(device=True, inline="always")
    def row_of(ty, a):
        # micro-tile row a of thread row ty: two runs of four, half a tile apart. Each run is
        # contiguous, so its shared loads merge into one 16-byte LDS (a warp's 16 threads read
        # 64 consecutive words: no bank conflict). Two rows: one run, one 8-byte LDS.
        if RM == 2:
            return 2 * ty + a
        return 4 * ty + (a // 4) * (TY * 4) + a % 4

    @cuda.jit(device=True, inline="always")
    def col_of(tx, b):
        return 4 * tx + (b // 4) * (TX * 4) + b % 4

    @cuda.jit(device=True, inline="always")
    def mac_step(a_s, b_s, buf, k, out, a_frag, b_frag, tx, ty):
        # out[a, b] += a_s[buf, k, row_of(ty, a)] * b_s[buf, k, col_of(tx, b)]
        for a in range(RM):
            a_frag[a] = a_s[buf, k, row_of(ty, a)]
        for b in range(TN):
            b_frag[b] = b_s[buf, k, col_of(tx, b)]
        for a in range(RM):
            for b in range(TN):
                out[a, b] += a_frag[a] * b_frag[b]

    @cuda.jit(device=True, inline="always")
    def mac_tile(a_s, b_s, buf, k0, out, a_frag, b_frag, tx, ty):
        # the BK = 8 steps k0 .. k0 + 7 of a shared tile (k0 = 0, or the group's), spelled out:
        # NVVM does not unroll a 64-FMA body on its own, and unrolled steps address shared
        # memory at constant offsets from one base
        mac_step(a_s, b_s, buf, k0, out, a_frag, b_frag, tx, ty)
        mac_step(a_s, b_s, buf, S(k0 + 1), out, a_frag, b_frag, tx, ty)
        mac_step(a_s, b_s, buf, S(k0 + 2), out, a_frag, b_frag, tx, ty)
        mac_step(a_s, b_s, buf, S(k0 + 3), out, a_frag, b_frag, tx, ty)
        mac_step(a_s, b_s, buf, S(k0 + 4), out, a_frag, b_frag, tx, ty)
        mac_step(a_s, b_s, buf, S(k0 + 5), out, a_frag, b_frag, tx, ty)
        mac_step(a_s, b_s, buf, S(k0 + 6), out, a_frag, b_frag, tx, ty)
        mac_step(a_s, b_s, buf, S(k0 + 7), out, a_frag, b_frag, tx, ty)

    @cuda.jit(device=True, inline="always")
    def out_column(q, HWg, Wg, c0, Cout, HWout, Wout, origin_h, origin_w, ohs, ows):
        # the gemm's flat output offset of pixel q of the phase grid (Hg, Wg) in channel c0:
        # image n, phase pixel (u, t) at output (origin_h + ohs*u, origin_w + ows*t)
        n, rest = divmod_(q, HWg)
        u, t = divmod_(rest, Wg)
        return idx((n * Cout + c0) * HWout + (origin_h + ohs * u) * Wout + origin_w + ows * t)

    @cuda.jit(device=True, inline="always")
    def group_of(tid):
        # (lane within its reduction group, group); one group (KS = 1): (tid, 0) as constants
        if KS > 1:
            return S(tid % GROUP), S(tid // GROUP)
        return tid, S(0)

    @cuda.jit(device=True, inline="always")
    def park(red_s, kg, out, tx, ty):
        # KS > 1: this group's partial micro-tile into its slice of the shared sum
        for a in range(RM):
            for b in range(TN):
                red_s[kg, row_of(ty, a), col_of(tx, b)] = out[a, b]

    @cuda.jit(device=True, inline="always")
    def gathered(red_s, r, c):
        # KS > 1: the groups' partials of tile element (r, c), added in group order
        total = red_s[0, r, c]
        for kg in range(1, KS):
            total += red_s[kg, r, c]
        return total

    @cuda.jit(device=True, inline="always")
    def zero(out):
        for a in range(RM):
            for b in range(TN):
                out[a, b] = acc(0)

    @cuda.jit(device=True, inline="always")
    def gemm_load(x, wt, tap_s, slot, a_off, a_step, b_row, x_base, h0, w0, Hi, Wi, a_regs,
                  b_regs):
        # one tile into registers: weights (padded: no checks), then the predicated gathers of
        # x through the tile's tap entries, staged in shared memory
        for t in range(A_LOADS):
            a_regs[t] = wt[U(a_off + a_step * t)]
        for t in range(B_LOADS):
            k = b_row + B_STEP * t
            v = acc(0)
            # one unsigned compare per side: a negative row or column wraps far above Hi / Wi
            if (U(idx(h0 + tap_s[slot, 1, k])) < Hi) & (U(idx(w0 + tap_s[slot, 2, k])) < Wi):
                v = acc(x[U(x_base + tap_s[slot, 0, k])])
            b_regs[t] = v

    @cuda.jit(device=True, inline="always")
    def stage_taps(taps, tap_s, slot, tid, src):
        # the 3 x BKT tap entries of one tile into a slot of the shared ring: thread
        # tid < 3 * BKT copies entry tid // BKT, step tid % BKT, from flat offset src
        if tid < 3 * BKT:
            tap_s[slot, tid // BKT, tid % BKT] = taps[U(src)]

    @cuda.jit(device=True, inline="always")
    def gemm_store(a_s, b_s, buf, a_row, a_col, b_row, b_col, a_regs, b_regs):
        for t in range(A_LOADS):
            a_s[buf, a_row + A_STEP * t, a_col] = a_regs[t]
        for t in range(B_LOADS):
            b_s[buf, b_row + B_STEP * t, b_col] = b_regs[t]

    @cuda.jit(**BOUNDS)
    def conv_gemm_kernel(x, wt, taps, phases, bias, y, N, Hin, Win, CHWin, gstride_in, M, Cout,
                         Hout, Wout, sh, sw, ph, pw, ohs, ows, has_bias, Rw, Mp, Rt):
        # y[n, g*M + m, a + ohs*u, b + ows*t] = sum_r wt[z, r, m] * x[n, g-th channel block,
        #   u*sh - ph + (tap r's row), t*sw - pw + (tap r's column)]  (+ bias[g*M + m])
        # z = phase*G + g. A row of ``phases`` is (R, a, b, Hg, Wg): the phase's tap count, output
        # origin and pixel grid. x, y, wt (Z, Rw, Mp) and taps (phases, 3, Rt) arrive flat; tap r
        # of a phase is (flat x offset, row offset, column offset).
        tid = S(cuda.threadIdx.x)
        z, phase, g, R, Hg, Wg, HWg, P, m0, p0 = gemm_block(phases, N)
        if p0 >= P:
            return                      # a phase with fewer pixels than the largest one
        a_s = cuda.shared.array((2, BKT, A_COLS), acc)
        b_s = cuda.shared.array((2, BKT, B_COLS), acc)
        red_s = cuda.shared.array(RED, acc)
        out = cuda.local.array((RM, TN), acc)
        a_frag = cuda.local.array(RM, acc)
        b_frag = cuda.local.array(TN, acc)
        a_regs = cuda.local.array(A_LOADS, acc)
        b_regs = cuda.local.array(B_LOADS, acc)
        # tap entries of the next two tiles: a ring of two slots, written one tile ahead of
        # the gathers that read them (every thread would otherwise load all BKT entries itself)
        tap_s = cuda.shared.array((2, 3, BKT), int32)
        zero(out)
        a_col, a_row = S(tid % bm), S(tid // bm)
        b_col, b_row = S(tid % BNT), S(tid // BNT)
        lane, kg = group_of(tid)
        tx, ty = S(lane % TX), S(lane // TX)
        k0 = S(kg * BK)
        # this thread gathers pixel p for every B tile: its offsets, once
        p = idx(p0 + b_col)
        n, rest = divmod_(p, HWg)
        u, t = divmod_(rest, Wg)
        h0, w0 = idx(u * sh - ph), idx(t * sw - pw)
        x_base = idx(n * CHWin + g * gstride_in + h0 * Win + w0)
        if p >= P:
            h0 = idx(-FAR)
        a_off = idx((z * Rw + a_row) * Mp + m0 + a_col)      # its first weight, flat
        a_step, a_tile = idx(A_STEP * Mp), idx(BKT * Mp)
        # the tap entry this thread stages for tile 0 (threads past 3*BKT stage nothing)
        tap = idx(phase * 3 * Rt + (tid // BKT) * Rt + tid % BKT) if tid < 3 * BKT else idx(0)
        Hi, Wi = U(Hin), U(Win)
        tiles = idx((R + BKT - 1) // BKT)
        if tiles > 0:
            stage_taps(taps, tap_s, 0, tid, tap)
            cuda.syncthreads()
            gemm_load(x, wt, tap_s, 0, a_off, a_step, b_row, x_base, h0, w0, Hi, Wi, a_regs,
                      b_regs)
            if tiles > 1:
                stage_taps(taps, tap_s, 1, tid, idx(tap + BKT))
            gemm_store(a_s, b_s, S(0), a_row, a_col, b_row, b_col, a_regs, b_regs)
        cuda.syncthreads()
        for kt in range(tiles):
            if kt + 1 < tiles:          # next tile's loads are in flight during the FMAs
                a_off = idx(a_off + a_tile)
                gemm_load(x, wt, tap_s, S((kt + 1) & 1), a_off, a_step, b_row, x_base, h0, w0,
                          Hi, Wi, a_regs, b_regs)
            if kt + 2 < tiles:          # the slot tile kt's gathers read (before the barrier)
                stage_taps(taps, tap_s, S(kt & 1), tid, idx(tap + (kt + 2) * BKT))
            mac_tile(a_s, b_s, S(kt & 1), k0, out, a_frag, b_frag, tx, ty)
            if kt + 1 < tiles:
                gemm_store(a_s, b_s, S((kt + 1) & 1), a_row, a_col, b_row, b_col, a_regs, b_regs)
            cuda.syncthreads()
        # epilogue: bias per row, then each column's flat output offset (divisions once per
        # column, outside the loop)
        HWout = idx(Hout * Wout)
        origin_h, origin_w = idx(phases[U(phase), 1]), idx(phases[U(phase), 2])
        if KS > 1:
            # the groups' partial tiles add up in shared memory; then thread tid stores column
            # tid % BNT (a warp: consecutive pixels) of rows tid // BNT + (threads / BNT) * j
            park(red_s, kg, out, tx, ty)
            cuda.syncthreads()
            c = S(tid % BNT)
            q = idx(p0 + c)
            if q < P:
                col = out_column(q, HWg, Wg, g * M, Cout, HWout, Wout, origin_h, origin_w,
                                 ohs, ows)
                for j in range(OUT_ROWS):
                    r = S(tid // BNT + (threads // BNT) * j)
                    m = idx(m0 + r)
                    if m < M:
                        v = gathered(red_s, r, c)
                        if has_bias != 0:
                            v += acc(bias[U(g * M + m)])
                        y[U(col + m * HWout)] = v
            return
        for a in range(RM):
            m = idx(m0 + row_of(ty, a))
            a_frag[a] = acc(bias[U(g * M + m)]) if has_bias != 0 and m < M else acc(0)
        for b in range(TN):
            q = idx(p0 + col_of(tx, b))
            if q < P:
                col = out_column(q, HWg, Wg, g * M, Cout, HWout, Wout, origin_h, origin_w,
                                 ohs, ows)
                for a in range(RM):
                    m = idx(m0 + row_of(ty, a))
                    if m < M:
                        y[U(col + m * HWout)] = out[a, b] + a_frag[a]

    @cuda.jit
    def conv_grad_weight_kernel(x, gy, taps, partial, N, C, H, W, Ho, Wo, sh, sw, ph, pw,
                                split_len, with_bias, K, R):
        # partial[s, (g*Kg + m)*R + r] = sum over pixels q of split s of gy[q, g*Kg + m] *
        # patch(q)[r]; with_bias: partial[s, K*R + g*Kg + m] = sum over the same q of
        # gy[q, g*Kg + m] (one sum over the splits then gives both).
        # x and gy arrive flat; taps (3, Rt) as in the gemm kernel.
        tid = S(cuda.threadIdx.x)
        splits = partial.shape[0]
        z = idx(cuda.blockIdx.z)
        g = quotient(z, splits)
        s = U(z - g * splits)
        G = quotient(cuda.gridDim.z, splits)
        Kg, Cg = quotient(K, G), quotient(C, G)
        HWo = idx(Ho * Wo)
        q_begin = idx(s * split_len)
        q_end = idx(min(N * HWo, q_begin + split_len))
        m0 = idx(cuda.blockIdx.y * bm)
        r0 = idx(cuda.blockIdx.x * BNT)
        a_s = cuda.shared.array((2, BKT, A_COLS), acc)
        b_s = cuda.shared.array((2, BKT, B_COLS), acc)
        red_s = cuda.shared.array(RED, acc)
        out = cuda.local.array((RM, TN), acc)
        a_frag = cuda.local.array(RM, acc)
        b_frag = cuda.local.array(TN, acc)
        a_regs = cuda.local.array(WA_LOADS, acc)
        b_regs = cuda.local.array(WB_LOADS, acc)
        bias_sum = cuda.local.array(WA_LOADS, acc)
        tap_s = cuda.shared.array((3, BNT), int32)    # the block's BNT taps (registers are short)
        zero(out)
        # the reduction index is fastest across threads: neighbouring threads read neighbouring
        # pixels. Each thread holds one pixel q (advanced by BKT per tile) and fixed rows and
        # taps: pixel lk of a tile, rows (and taps) lrow + W_STEP * t. A warp spans BK pixels
        # by 32 / BK rows (lk's high part is the warp's), so its shared stores down a column
        # fall in distinct banks at both tile widths.
        lk = S(tid % BK + BK * (tid // (BK * W_STEP))) if KS > 1 else S(tid % BK)
        lrow = S((tid // BK) % W_STEP) if KS > 1 else S(tid // BK)
        lane, kg = group_of(tid)
        tx, ty = S(lane % TX), S(lane // TX)
        k0 = S(kg * BK)
        if tid < BNT:
            for e in range(3):
                tap_s[e, tid] = taps[e, U(r0 + tid)]
        cuda.syncthreads()
        for t in range(WA_LOADS):
            bias_sum[t] = acc(0)
        m_room = idx(Kg - m0 - lrow)                  # row t is valid while W_STEP*t < m_room
        gy_rows = idx((g * Kg + m0 + lrow) * HWo)
        gy_step = idx(W_STEP * HWo)
        x_group = idx(g * Cg * H * W)
        KHWo, CHW = idx(K * HWo), idx(C * H * W)
        # within-image coordinates are int32 in both builds; n and flat offsets are idx
        q = idx(q_begin + lk)
        n, rest = divmod_(q, HWo)
        oh, ow = divmod_(rest, Wo)
        oh, ow = int32(oh), int32(ow)
        # per tile the pixel moves BKT places: (n, oh, ow) += (dn, dh, dw) with carries, no
        # division
        dn, step_rest = divmod_(idx(BKT), HWo)
        dh, dw = divmod_(step_rest, Wo)
        dh, dw = int32(dh), int32(dw)
        Hs, Ws, Hx, Wx = int32(Ho), int32(Wo), uint32(H), uint32(W)
        sh_, sw_, ph_, pw_ = int32(sh), int32(sw), int32(ph), int32(pw)
        tiles = idx((q_end - q_begin + BKT - 1) // BKT)
        for kt in range(tiles + 1):
            if kt < tiles:                        # load tile kt into registers
                live = q < q_end
                gy_base = idx(n * KHWo + gy_rows + int32(oh * Ws + ow))
                for t in range(WA_LOADS):
                    v = acc(0)
                    if live and W_STEP * t < m_room:
                        v = acc(gy[U(gy_base + gy_step * t)])
                    a_regs[t] = v
                    bias_sum[t] += v
                h0, w0 = int32(oh * sh_ - ph_), int32(ow * sw_ - pw_)
                x_base = idx(n * CHW + x_group + int32(h0 * Wx + w0))
                if not live:
                    h0 = int32(-FAR)
                for t in range(WB_LOADS):
                    col = lrow + W_STEP * t
                    v = acc(0)
                    if ((uint32(int32(h0 + tap_s[1, col])) < Hx)
                            & (uint32(int32(w0 + tap_s[2, col])) < Wx)):
                        v = acc(x[U(x_base + tap_s[0, col])])
                    b_regs[t] = v
                q = idx(q + BKT)
                ow = int32(ow + dw)
                oh = int32(oh + dh)
                n = idx(n + dn)
                if ow >= Ws:
                    ow = int32(ow - Ws)
                    oh = int32(oh + 1)
                if oh >= Hs:
                    oh = int32(oh - Hs)
                    n = idx(n + 1)
            if kt > 0:                            # multiply tile kt - 1
                mac_tile(a_s, b_s, S((kt - 1) & 1), k0, out, a_frag, b_frag, tx, ty)
            if kt < tiles:                        # store tile kt into the other buffer
                buf = S(kt & 1)
                for t in range(WA_LOADS):
                    a_s[buf, lk, lrow + W_STEP * t] = a_regs[t]
                for t in range(WB_LOADS):
                    b_s[buf, lk, lrow + W_STEP * t] = b_regs[t]
            cuda.syncthreads()
        if KS > 1:
            # the groups' partial tiles add up in shared memory; thread tid stores tap
            # tid % BNT (a warp: consecutive taps) of rows tid // BNT + (threads / BNT) * j
            park(red_s, kg, out, tx, ty)
            cuda.syncthreads()
            c = S(tid % BNT)
            r = idx(r0 + c)
            for j in range(OUT_ROWS):
                row = S(tid // BNT + (threads // BNT) * j)
                m = idx(m0 + row)
                if m < Kg and r < R:
                    partial[s, U((g * Kg + m) * R + r)] = gathered(red_s, row, c)
        else:
            for a in range(RM):
                m = idx(m0 + row_of(ty, a))
                if m < Kg:
                    for b in range(TN):
                        r = idx(r0 + col_of(tx, b))
                        if r < R:
                            partial[s, U((g * Kg + m) * R + r)] = out[a, b]
        if with_bias != 0 and cuda.blockIdx.x == 0:
            # reduce the BKT threads that share rows through the (now idle) A tile
            for t in range(WA_LOADS):
                a_s[0, lk, lrow + W_STEP * t] = bias_sum[t]
            cuda.syncthreads()
            if tid < bm and m0 + tid < Kg:
                total = acc(0)
                for k in range(BKT):
                    total += a_s[0, k, tid]
                partial[s, U(K * R + g * Kg + m0 + tid)] = total

    return conv_gemm_kernel, conv_grad_weight_kernel


# --------------------------------------------------------------------------- few-channel dgrad
# grad_input with at most DIRECT_CHANNELS input channels a group (an RGB stem's, a grayscale
# image's, a depthwise layer's) as a direct convolution of gy. The gemm above would multiply a
# 16-row tile of which Cg rows are real (3 of 16 for the stem: 19% useful FMAs), meeting every
# gathered gy value with 16 FMAs, 13 of them on zero rows. Here a block owns one (image, group,
# phase) tile of DIRECT_ROWS x DIRECT_COLS phase pixels and all Cg of its channels. Per gy
# channel it stages the tile's gy patch (the tile plus the taps' halo: at most DIRECT_SPAN - 1
# rows and columns) in shared memory once; the phase's taps (stride-1 offsets, as in the gemm's
# phase decomposition) are a grid of patch rows di < span_i by column offsets dj (a list). A
# thread owns 4 consecutive rows of 2 columns 32 apart: for each column offset dj it reads a
# window of 4 + span_i - 1 patch rows per column once (a warp: 32 consecutive words of one row,
# conflict-free) and every row tap di multiplies window rows di .. di + 3 into its Cg channels,
# so a patch read serves up to span_i taps and each of them Cg channels. The row taps are
# unrolled to DIRECT_SPAN (window rows are registers: compile-time indices), each under a
# block-uniform branch (di < span_i); row taps with holes in their span (dilation not a multiple
# of the stride) keep the gemm (``_direct_table``).
DIRECT_CHANNELS = 4        # the most input channels a group for which grad_input runs direct
DIRECT_THREADS = 128
DIRECT_TV = 4              # consecutive tile rows a thread (4 warps: 16 rows)
DIRECT_TWC = 2             # tile columns a thread, 32 apart (a warp's lanes: 64 columns)
DIRECT_ROWS = DIRECT_TV * (DIRECT_THREADS // 32)
DIRECT_COLS = 32 * DIRECT_TWC
DIRECT_SPAN = 8            # the most gy rows (or columns) a phase's taps reach: halo + 1
DIRECT_PATCH_ROWS = DIRECT_ROWS + DIRECT_SPAN - 1
DIRECT_PITCH = DIRECT_COLS + DIRECT_SPAN - 1            # words a patch row (71)
DIRECT_SLOTS = -(-DIRECT_PATCH_ROWS * DIRECT_PITCH // DIRECT_THREADS)   # patch loads a thread
DIRECT_PLANE = DIRECT_SLOTS * DIRECT_THREADS           # words a gy channel's patch (+ spare)
DIRECT_TAPS = DIRECT_SPAN * DIRECT_SPAN                # (column tap, row tap) weight slots
DIRECT_HEAD = 10           # a plan row: (column taps, a, b, Hg, Wg, e_i min, e_j min,
                           # patch rows, patch columns, span_i), then DIRECT_SPAN column offsets
                           # dj and DIRECT_TAPS weight offsets (slot jt * SPAN + di; -1: none)
DIRECT_MIN_FILL = 1 / 8    # direct while (tile fill) >= Cg * DIRECT_MIN_FILL (see _takes_direct)


@functools.lru_cache(maxsize=None)
def _direct_kernel(acc, cg):
    """conv_dgrad_few_kernel for ``cg`` input channels a group, accumulating in ``acc`` (int32
    index math: the launcher takes it only under the int32 guard)."""
    BOUNDS = ({"launch_bounds": (DIRECT_THREADS, 65536 // (DIRECT_THREADS * 128))}
              if acc == float32 and not config.ENABLE_CUDASIM else {})
    TV, TWC, SPAN = DIRECT_TV, DIRECT_TWC, DIRECT_SPAN
    PITCH, PLANE, TAPS, SLOTS = DIRECT_PITCH, DIRECT_PLANE, DIRECT_TAPS, DIRECT_SLOTS
    HEAD, THREADS, WIN = DIRECT_HEAD, DIRECT_THREADS, DIRECT_TV + DIRECT_SPAN - 1
    U = uint32

    @cuda.jit(**BOUNDS)
    def conv_dgrad_few_kernel(gy, w, plan, bias, gx, K, Kg, Ho, Wo, C, H, W, KHW, sh, sw,
                              tiles_t, has_bias):
        # gx[n, g*cg + c, a + sh*u, b + sw*t] = sum over k < Kg and the phase's taps (di, dj) of
        #   w[g*Kg + k, c, tap] * gy[n, g*Kg + k, u + e_i min + di, t + e_j min + dj]
        #   (+ bias[g*cg + c]); block x = (row tile, column tile) of the phase grid, y = image n,
        #   z = phase*G + g
        tid = U(cuda.threadIdx.x)
        tx, ty = U(tid % 32), U(tid // 32)
        G = U(cuda.gridDim.z) // U(plan.shape[0])
        phase = U(cuda.blockIdx.z) // G
        g = int32(U(cuda.blockIdx.z) - phase * G)
        Hg, Wg = int32(plan[phase, 3]), int32(plan[phase, 4])
        tu = U(cuda.blockIdx.x) // U(tiles_t)
        u0 = int32(tu * DIRECT_ROWS)
        t0 = int32((U(cuda.blockIdx.x) - tu * U(tiles_t)) * DIRECT_COLS)
        if u0 >= Hg or t0 >= Wg:
            return                          # a phase with fewer pixels than the largest one
        n = int32(cuda.blockIdx.y)
        nj, span_i = int32(plan[phase, 0]), int32(plan[phase, 9])
        Kg_, Ho_, Wo_, KHW_ = int32(Kg), int32(Ho), int32(Wo), int32(KHW)
        patch = cuda.shared.array(PLANE, acc)
        w_s = cuda.shared.array((TAPS, 4), acc)
        dj_s = cuda.shared.array(SPAN, int32)
        if tid < SPAN:
            dj_s[tid] = plan[phase, HEAD + tid]
        # the weight slot this thread stages (tid < TAPS): w[g*Kg + k, c, i, j] for the tap of
        # column offset tid // SPAN and row offset tid % SPAN, or zero
        w_tap = int32(plan[phase, HEAD + SPAN + tid]) if tid < TAPS else int32(-1)
        # the patch words this thread loads, the same for every gy channel: e = tid +
        # THREADS*s, row e // PITCH, column e % PITCH; goff its offset in a gy plane (-1: zero)
        rows, cols = int32(plan[phase, 7]), int32(plan[phase, 8])
        gr0, gc0 = int32(u0 + plan[phase, 5]), int32(t0 + plan[phase, 6])
        goff = cuda.local.array(SLOTS, int32)
        for s in range(SLOTS):
            e = U(tid + THREADS * s)
            r, c = int32(e // PITCH), int32(e % PITCH)
            gr, gc = int32(gr0 + r), int32(gc0 + c)
            inside = (r < rows) & (c < cols) & (U(gr) < U(Ho_)) & (U(gc) < U(Wo_))
            goff[s] = int32(gr * Wo_ + gc) if inside else int32(-1)
        out = cuda.local.array((cg, TV, TWC), acc)
        win = cuda.local.array((TWC, WIN), acc)
        wv = cuda.local.array(cg, acc)
        for c in range(cg):
            for v in range(TV):
                for q in range(TWC):
                    out[c, v, q] = acc(0)
        HoWo = int32(Ho_ * Wo_)
        chan = int32((n * int32(K) + g * Kg_) * HoWo)      # gy channel g*Kg + k of image n
        w_row = int32(g * Kg_ * cg * KHW_ + w_tap)         # w[g*Kg + k, 0, this slot's tap]
        base = U(ty * (TV * PITCH) + tx)                   # this thread's first window word
        for k in range(Kg_):
            # stage gy channel g*Kg + k's patch and the phase's weights of it
            for s in range(SLOTS):
                v = acc(0)
                if goff[s] >= 0:
                    v = acc(gy[U(chan + goff[s])])
                patch[U(tid + THREADS * s)] = v
            if tid < TAPS:
                for c in range(cg):
                    v = acc(0)
                    if w_tap >= 0:
                        v = acc(w[U(w_row + c * KHW_)])
                    w_s[tid, c] = v
            chan = int32(chan + HoWo)
            w_row = int32(w_row + cg * KHW_)
            cuda.syncthreads()
            jt = U(0)
            while jt < U(nj):
                # column offset jt: window rows 0 .. TV - 2 now, row di + TV - 1 with row tap
                # di (each window row read once, only the rows the phase's span uses)
                o = U(dj_s[jt] + base)
                for q in range(TWC):
                    for r in range(TV - 1):
                        win[q, r] = patch[o + (r * PITCH + q * 32)]
                for di in range(SPAN):
                    if di < span_i:
                        for q in range(TWC):
                            win[q, di + TV - 1] = patch[o + ((di + TV - 1) * PITCH + q * 32)]
                        for c in range(cg):
                            wv[c] = w_s[jt * SPAN + di, c]
                        for v in range(TV):
                            for q in range(TWC):
                                for c in range(cg):
                                    out[c, v, q] += wv[c] * win[q, v + di]
                jt = U(jt + 1)
            cuda.syncthreads()
        a, b = int32(plan[phase, 1]), int32(plan[phase, 2])
        HW = int32(int32(H) * int32(W))
        for c in range(cg):
            wv[c] = acc(bias[U(g * cg + c)]) if has_bias != 0 else acc(0)
        img = int32((n * int32(C) + g * cg) * HW)
        for v in range(TV):
            u = int32(u0 + ty * TV + v)
            if u < Hg:
                row = int32(img + (a + int32(sh) * u) * int32(W) + b)
                for q in range(TWC):
                    t = int32(t0 + tx + 32 * q)
                    if t < Wg:
                        for c in range(cg):
                            gx[U(row + c * HW + int32(sw) * t)] = out[c, v, q] + wv[c]

    return conv_dgrad_few_kernel


_NAMES = {}     # dtype -> its name: NumPy's dtype.name is Python (6 calls, ~1.5 us a read)


def _name(dtype):
    name = _NAMES.get(dtype)
    if name is None:
        name = _NAMES[dtype] = dtype.name
    return name


def _accumulator(dtype):
    """(Numba accumulator type, its NumPy dtype name) for data of ``dtype``."""
    return (float64, "float64") if dtype == "float64" else (float32, "float32")


def _index(*sizes, image):
    """The Numba index type of the kernels for arrays of ``sizes`` elements: int32 while every
    flat offset a kernel forms fits (offsets reach at most an array's size plus one image or tile
    past it, so the guard keeps a quarter of the int32 range spare), else int64. Offsets within
    one ``image`` (the tap tables) are int32 in both builds."""
    if image >= IMAGE_LIMIT:
        raise ValueError(f"conv2d on cuda: one image holds {image} elements; the kernels index "
                         f"within an image in int32 and take fewer than {IMAGE_LIMIT}")
    return int32 if max(sizes) < INT32_LIMIT // 4 * 3 else int64


def _operand_size(z, r, m):
    """An upper bound on the padded weight operand's size (Z, Rp, Mp), for the index guard."""
    depth = tile_depth(FEW_COLS)
    return z * _blocks(r, depth) * depth * _blocks(m, ROW_TILES[-1]) * ROW_TILES[-1]


def _row_tile(rows, idx):
    """BM for a GEMM of ``rows`` rows. The 64-bit build (tensors past the int32 guard) always
    takes 128: its wider gather offsets leave the 128-thread tile short of registers."""
    return ROW_TILES[0] if rows <= ROW_TILES[0] and idx == int32 else ROW_TILES[1]


def _gemm_row_tile(rows, idx):
    """BM for a kernel over ``rows`` rows (forward, grad_input, grad_weight): FEW_ROWS for a
    few output (or, in grad_input, input) channels per group, where a 64-row tile would
    multiply mostly zero padding (a 3-channel image's grad_input: 3 of 64 rows; LeNet's
    6-channel weight gradient); else ``_row_tile``. (A grad_input of at most DIRECT_CHANNELS
    channels a group mostly runs conv_dgrad_few_kernel instead: ``_takes_direct``.)"""
    return FEW_ROWS if rows <= FEW_ROWS and idx == int32 else _row_tile(rows, idx)


def _gemm_col_tile(bm, columns, z, steps):
    """BN for a gemm of ``columns`` pixels a (group, phase), ``z`` of those, and a reduction
    of at most ``steps``, in tiles of ``bm`` rows: the few-rows gemm takes the narrow 16 x 32
    tile while its 128-pixel grid has fewer than TARGET_BLOCKS blocks and its reduction more
    than one narrow tile. Such a grid leaves most SMs one block, which walks its steps / 8
    tiles serially, each a global-load latency (LeNet's conv2 grad_input: 98 blocks, 50
    tiles each); the narrow tile splits each 32-step tile over its 4 warps, so the blocks are
    4x as many and their loops 4x shorter. A larger grid keeps BN = 128: it is issue-bound,
    and the narrow tile's extra A loads and 4x as many block prologues and epilogues would
    cost about 10% there (a stem's grad_input, before conv_dgrad_few_kernel); so does a
    reduction of 32 steps or fewer (LeNet's conv1 forward: 25), where the narrow tile has no
    loop left to shorten."""
    if (bm == FEW_ROWS and _blocks(columns, BN) * z < TARGET_BLOCKS
            and steps > tile_depth(FEW_COLS)):
        return FEW_COLS
    return BN


def _wgrad_cols(bm):
    """The weight gradient's BN: the narrow FEW_COLS in the few-rows build, always (its splits
    keep the grid near TARGET_BLOCKS, and 32-tap tiles waste fewer columns: LeNet's 25 taps
    fill 78% of one, 20% of a 128-tap tile), else BN."""
    return FEW_COLS if bm == FEW_ROWS else BN


def _blocks(n, size):
    return (n + size - 1) // size


def _launch_gemm(acc, acc_dtype, idx, bm, bn, grid, data, *args):
    """conv_gemm_kernel's build for (acc, idx, bm, bn), specialised for ``data``'s dtype."""
    launch(_kernels(acc, idx, bm, bn)[0], gemm_signature(_name(data.dtype), acc_dtype), grid,
           threads_for(bm), data, *args)


def _flat(xp, a, dtype=None):
    return xp.ascontiguousarray(a, dtype=dtype).reshape(-1)


def _tap_tables(tables):
    """Stack per-phase (3, R_phase) tap tables into (phases, 3, Rp), Rp a whole number of column
    tiles (so the weight gradient's taps need no bounds check either); the spare entries sit FAR
    above the image, so their loads give zero."""
    rp = max(1, _blocks(max(t.shape[1] for t in tables), BN)) * BN
    out = np.zeros((len(tables), 3, rp), np.int32)
    out[:, 1, :] = -FAR
    for phase, table in enumerate(tables):
        out[phase, :, :table.shape[1]] = table
    return out


def _weight_index(rows, size, bm, bk=BK):
    """Flat int32 indices into w (of ``size`` values; ``size`` itself: a zero) that lay each
    phase's weight operand out as (Z, Rp, Mp): ``rows`` (Z, R, M) of indices into w (negative:
    none), padded with zeros to whole tiles (Rp a multiple of ``bk``) so that tile loads need no
    bounds check, and transposed so that they coalesce."""
    if size > np.iinfo(np.int32).max:
        raise ValueError(f"conv2d on cuda: the weight holds {size} elements; the kernels take "
                         f"fewer than 2**31")
    rows = np.where(rows < 0, size, rows)
    z, r, m = rows.shape
    out = np.full((z, max(1, _blocks(r, bk)) * bk, _blocks(m, bm) * bm), size, np.int32)
    out[:, :r, :m] = rows
    return out, size


@cuda.jit
def gather_weights(w, src, out):
    """out[i] = w[src[i]], or zero where src[i] is past w: the gemm's weight operand laid out,
    padded and converted to the accumulator's type in one pass."""
    i = cuda.grid(1)
    if i < out.size:
        s = src[i]
        if s < w.size:
            out[i] = w[s]
        else:
            out[i] = 0


GATHER_THREADS = 256


@functools.lru_cache(maxsize=None)     # built per launch: string work, ~2 us uncached
def gather_signature(data, acc_name):
    return f"void({data}[::1], int32[::1], {acc_name}[::1])"


def _gemm_weights(xp, w, plan, acc_dtype):
    """The weight operand of the gemm kernel, gathered through ``plan``'s cached index."""
    src, _ = plan
    w = _flat(xp, w)
    out = xp.empty(src.shape, acc_dtype)
    if out.size:
        launch(gather_weights, gather_signature(_name(w.dtype), acc_dtype),
               _blocks(out.size, GATHER_THREADS), GATHER_THREADS, w, src.reshape(-1),
               out.reshape(-1))
    return out


@functools.lru_cache(maxsize=64)
def _forward_plan(xp, K, Cg, kh, kw, dh, dw, H, W, Ho, Wo, groups, bm, bk=BK):
    """(taps (1, 3, Rp), phase rows, weight index, pixels) of the forward GEMM. For reduction index
    r = (c, i, j) the taps hold the flat offset c*H*W + i*dh*W + j*dw and the row / column
    offsets i*dh, j*dw; the weight operand is wt[g, r, m] = w[g*Kg + m, r]."""
    c, i, j = np.indices((Cg, kh, kw)).reshape(3, -1)
    taps = _tap_tables([np.stack([c * H * W + i * dh * W + j * dw, i * dh, j * dw])])
    rows = np.arange(K * c.size).reshape(groups, K // groups, c.size).transpose(0, 2, 1)
    phases = np.array([[c.size, 0, 0, Ho, Wo]], np.int32)
    src, size = _weight_index(rows, K * c.size, bm, bk)
    return xp.asarray(taps), xp.asarray(phases), (xp.asarray(src), size), Ho * Wo


@functools.lru_cache(maxsize=64)
def _input_plan(xp, K, Cg, kh, kw, sh, sw, ph, pw, dh, dw, H, W, Ho, Wo, groups, bm,
                bk=BK):
    """The grad_input GEMM, one per phase (a, b) of the input pixels (h = a + sh*u,
    v = b + sw*t): (taps (phases, 3, Rp), phase rows (R, a, b, Hg, Wg), weight index). Tap i
    reaches phase a iff (a + ph - i*dh) % sh == 0, and then reads gy row u + e_i,
    e_i = (a + ph - i*dh) // sh; the weight operand is wt[phase*G + g, (k, i, j), c] =
    w[g*Kg + k, c, i, j] over the phase's taps."""
    Kg = K // groups
    tables, phases, picks = [], [], []
    for a in range(sh):
        for b in range(sw):
            ii = np.array([i for i in range(kh) if (a + ph - i * dh) % sh == 0], int)
            jj = np.array([j for j in range(kw) if (b + pw - j * dw) % sw == 0], int)
            k, i, j = (v.reshape(-1) for v in np.meshgrid(np.arange(Kg), ii, jj, indexing="ij"))
            e_i, e_j = (a + ph - i * dh) // sh, (b + pw - j * dw) // sw
            tables.append(np.stack([k * Ho * Wo + e_i * Wo + e_j, e_i, e_j]))
            phases.append((k.size, a, b, len(range(a, H, sh)), len(range(b, W, sw))))
            picks.append((k * Cg * kh * kw + i * kw + j))       # w[k, 0, i, j], flat
    rmax = max(p.size for p in picks)
    g = np.arange(groups)[:, None, None] * Kg * Cg * kh * kw
    c = np.arange(Cg)[None, None, :] * kh * kw
    rows = np.full((len(picks), groups, rmax, Cg), -1)
    for phase, pick in enumerate(picks):
        rows[phase, :, :pick.size] = g + pick[None, :, None] + c
    src, size = _weight_index(rows.reshape(-1, rmax, Cg), K * Cg * kh * kw, bm, bk)
    pixels = max(p[3] * p[4] for p in phases)
    return (xp.asarray(_tap_tables(tables)), xp.asarray(np.array(phases, np.int32)),
            (xp.asarray(src), size), pixels)


def forward(x, w, b, geo):
    """y = conv(x, w) + b, (N, K, Ho, Wo) in x's dtype."""
    xp = backend.get_array_module(x)
    y = xp.empty(geo.y_shape, x.dtype)
    if y.size == 0:
        return y
    G, Kg, Cg = geo.groups, geo.K // geo.groups, geo.C // geo.groups
    acc, acc_dtype = _accumulator(x.dtype)
    idx = _index(x.size, y.size, _operand_size(G, Cg * geo.kh * geo.kw, Kg),
                 image=geo.C * geo.H * geo.W)
    bm = _gemm_row_tile(Kg, idx)
    bn = _gemm_col_tile(bm, geo.N * geo.Ho * geo.Wo, G, Cg * geo.kh * geo.kw)
    taps, phases, plan, _ = _forward_plan(xp, geo.K, Cg, geo.kh, geo.kw, geo.dh, geo.dw, geo.H,
                                          geo.W, geo.Ho, geo.Wo, G, bm, tile_depth(bn))
    x = _flat(xp, x)
    bias = x[:1] if b is None else _flat(xp, b, x.dtype)      # x[:1]: never read
    grid = (_blocks(geo.N * geo.Ho * geo.Wo, bn), _blocks(Kg, bm), G)
    wt = _gemm_weights(xp, w, plan, acc_dtype)
    _launch_gemm(acc, acc_dtype, idx, bm, bn, grid, x, wt.reshape(-1), taps.reshape(-1),
                 phases, bias, y.reshape(-1), geo.N, geo.H, geo.W, geo.C * geo.H * geo.W,
                 Cg * geo.H * geo.W, Kg, geo.K, geo.Ho, geo.Wo, geo.sh, geo.sw, geo.ph, geo.pw,
                 1, 1, int(b is not None), wt.shape[1], wt.shape[2], taps.shape[2])
    return y


@functools.lru_cache(maxsize=64)
def _direct_table(kh, kw, sh, sw, ph, pw, dh, dw, H, W):
    """The few-channel grad_input's plan: an int32 row per phase (a, b) (DIRECT_HEAD figures,
    then DIRECT_SPAN column offsets dj and DIRECT_TAPS weight offsets i*kw + j, slot
    jt * DIRECT_SPAN + di, -1 where the tap grid has a hole), and the largest phase's pixel grid
    (Hg, Wg); None when a phase's taps span more than DIRECT_SPAN gy rows or columns (its halo
    would not fit the patch), or leave rows of their span without a tap (dilation not a
    multiple of the stride: the kernel would multiply those gy rows by zero weights, and an
    inf there would make a NaN the definition does not have). Tap (i, j) of phase (a, b) reads
    gy at (u + e_i, t + e_j), e_i = (a + ph - i*dh) / sh (whole), as in ``_input_plan``."""
    span = DIRECT_SPAN
    table = np.zeros((sh * sw, DIRECT_HEAD + span + DIRECT_TAPS), np.int32)
    for a in range(sh):
        ii = [i for i in range(kh) if (a + ph - i * dh) % sh == 0]
        ei = [(a + ph - i * dh) // sh for i in ii]
        for b in range(sw):
            jj = [j for j in range(kw) if (b + pw - j * dw) % sw == 0]
            ej = [(b + pw - j * dw) // sw for j in jj]
            emin_i, emin_j = min(ei, default=0), min(ej, default=0)
            span_i, span_j = max(ei, default=0) - emin_i + 1, max(ej, default=0) - emin_j + 1
            if span_i > span or span_j > span or (ii and len(ii) < span_i):
                return None
            row = table[a * sw + b]
            row[:DIRECT_HEAD] = (len(jj) if ii else 0, a, b, len(range(a, H, sh)),
                                 len(range(b, W, sw)), emin_i, emin_j,
                                 DIRECT_ROWS + span_i - 1, DIRECT_COLS + span_j - 1, span_i)
            row[DIRECT_HEAD + span:] = -1
            for jt, (j, e_j) in enumerate(zip(jj, ej)):
                row[DIRECT_HEAD + jt] = e_j - emin_j
                for i, e_i in zip(ii, ei):
                    row[DIRECT_HEAD + span + jt * span + e_i - emin_i] = i * kw + j
    return table, int(table[:, 3].max()), int(table[:, 4].max())


@functools.lru_cache(maxsize=64)
def _direct_plan(xp, kh, kw, sh, sw, ph, pw, dh, dw, H, W):
    table, Hg, Wg = _direct_table(kh, kw, sh, sw, ph, pw, dh, dw, H, W)
    return xp.asarray(table), Hg, Wg


def _direct_fill(Hg, Wg):
    """The share of the few-channel kernel's tile pixels that are real for a Hg x Wg phase."""
    tiles = _blocks(Hg, DIRECT_ROWS) * DIRECT_ROWS * _blocks(Wg, DIRECT_COLS) * DIRECT_COLS
    return Hg * Wg / tiles if tiles else 0.0


def _takes_direct(geo, idx):
    """Whether grad_input runs the few-channel direct kernel: at most DIRECT_CHANNELS input
    channels a group, the int32 build, taps spanning at most DIRECT_SPAN gy rows and columns a
    phase, grid limits, and tiles filled well enough: the gemm's 16-row tile does Cg / 16 useful
    work, the direct tile (its share of real pixels) without padding rows, so the direct kernel
    is taken while that share is at least Cg * DIRECT_MIN_FILL (twice the gemm's). The stem
    (3 channels, 112 x 112 phases of 16 x 64 tiles: 87.5% real) takes it."""
    Cg = geo.C // geo.groups
    if not (0 < Cg <= DIRECT_CHANNELS and idx == int32 and geo.N <= 65535
            and geo.groups * geo.sh * geo.sw <= 65535):
        return False
    plan = _direct_table(geo.kh, geo.kw, geo.sh, geo.sw, geo.ph, geo.pw, geo.dh, geo.dw,
                         geo.H, geo.W)
    return plan is not None and _direct_fill(plan[1], plan[2]) >= Cg * DIRECT_MIN_FILL


@functools.lru_cache(maxsize=None)
def direct_signature(data, acc_name):
    """The Numba signature conv_dgrad_few_kernel is launched with for ``data`` arrays."""
    return (f"void({data}[::1], {data}[::1], int32[:, ::1], {data}[::1], {data}[::1], "
            f"{', '.join(['int64'] * 12)})")


def _grad_input_direct(xp, gy, w, geo, b, gx, acc, acc_dtype):
    """grad_input by conv_dgrad_few_kernel (``_takes_direct``): one launch, no weight gather."""
    G, Kg, Cg = geo.groups, geo.K // geo.groups, geo.C // geo.groups
    plan, Hg, Wg = _direct_plan(xp, geo.kh, geo.kw, geo.sh, geo.sw, geo.ph, geo.pw, geo.dh,
                                geo.dw, geo.H, geo.W)
    tiles_t = _blocks(Wg, DIRECT_COLS)
    grid = (_blocks(Hg, DIRECT_ROWS) * tiles_t, geo.N, G * plan.shape[0])
    gy = _flat(xp, gy)
    bias = gy[:1] if b is None else _flat(xp, b, gy.dtype)    # gy[:1]: never read
    launch(_direct_kernel(acc, Cg), direct_signature(_name(gy.dtype), acc_dtype), grid,
           DIRECT_THREADS, gy, _flat(xp, w, gy.dtype), plan, bias, gx.reshape(-1), geo.K, Kg,
           geo.Ho, geo.Wo, geo.C, geo.H, geo.W, geo.kh * geo.kw, geo.sh, geo.sw, tiles_t,
           int(b is not None))
    return gx


def grad_input(gy, w, geo, b=None):
    """The adjoint of forward in x: gx (N, C, H, W) in gy's dtype, plus ``b`` (C,) per channel
    when given (conv_transpose2d's bias, added as the outputs are stored)."""
    xp = backend.get_array_module(gy)
    gx = xp.empty(geo.x_shape, gy.dtype)
    if gx.size == 0:
        return gx
    G, Kg, Cg = geo.groups, geo.K // geo.groups, geo.C // geo.groups
    if gy.size == 0 or Kg == 0:
        gx[...] = 0 if b is None else xp.asarray(b).reshape(-1, 1, 1)
        return gx
    acc, acc_dtype = _accumulator(gy.dtype)
    idx = _index(gy.size, gx.size, _operand_size(G * geo.sh * geo.sw, Kg * geo.kh * geo.kw, Cg),
                 image=geo.K * geo.Ho * geo.Wo)
    if _takes_direct(geo, idx):
        return _grad_input_direct(xp, gy, w, geo, b, gx, acc, acc_dtype)
    bm = _gemm_row_tile(Cg, idx)
    # the largest phase's pixels (h = a + sh * u: phase a = 0 has the most rows) and taps
    bn = _gemm_col_tile(bm, geo.N * _blocks(geo.H, geo.sh) * _blocks(geo.W, geo.sw),
                        G * geo.sh * geo.sw,
                        Kg * _blocks(geo.kh, geo.sh) * _blocks(geo.kw, geo.sw))
    taps, phases, plan, pixels = _input_plan(xp, geo.K, Cg, geo.kh, geo.kw, geo.sh, geo.sw,
                                             geo.ph, geo.pw, geo.dh, geo.dw, geo.H, geo.W, geo.Ho,
                                             geo.Wo, G, bm, tile_depth(bn))
    grid = (_blocks(geo.N * pixels, bn), _blocks(Cg, bm), G * len(phases))
    wt = _gemm_weights(xp, w, plan, acc_dtype)
    gy = _flat(xp, gy)
    bias = gy[:1] if b is None else _flat(xp, b, gy.dtype)    # gy[:1]: never read
    _launch_gemm(acc, acc_dtype, idx, bm, bn, grid, gy, wt.reshape(-1), taps.reshape(-1), phases,
                 bias, gx.reshape(-1), geo.N, geo.Ho, geo.Wo, geo.K * geo.Ho * geo.Wo,
                 Kg * geo.Ho * geo.Wo, Cg, geo.C, geo.H, geo.W, 1, 1, 0, 0, geo.sh, geo.sw,
                 int(b is not None), wt.shape[1], wt.shape[2], taps.shape[2])
    return gx


def _weight_splits(Q, R, Kg, G, bm):
    """(splits, split_len) of the weight gradient's Q-pixel reduction for tiles of bm rows by
    _wgrad_cols(bm) taps: until the grid has about TARGET_BLOCKS blocks, each split at least
    MIN_SPLIT pixels long (FEW_MIN_SPLIT in the few-rows build), and split_len whole shared
    tiles."""
    bn = _wgrad_cols(bm)
    tiles = _blocks(R, bn) * _blocks(Kg, bm) * G
    shortest = FEW_MIN_SPLIT if bm == FEW_ROWS else MIN_SPLIT
    splits = max(1, min(_blocks(Q, shortest), _blocks(TARGET_BLOCKS, tiles), 65535 // G))
    split_len = _blocks(_blocks(Q, splits), tile_depth(bn)) * tile_depth(bn)
    return _blocks(Q, split_len), split_len


def grad_weight(x, gy, geo, with_bias=False):
    """The adjoint of forward in w: gw (K, C/groups, kh, kw), in the accumulator's dtype; with
    ``with_bias``, (gw, gb) where gb (K,) sums gy over (N, Ho, Wo) in the same pass."""
    xp = backend.get_array_module(x)
    acc, acc_dtype = _accumulator(x.dtype)
    G, Kg, Cg = geo.groups, geo.K // geo.groups, geo.C // geo.groups
    R = Cg * geo.kh * geo.kw
    Q = geo.N * geo.Ho * geo.Wo
    if Q == 0 or geo.K == 0 or R == 0:
        gw = xp.zeros(geo.w_shape, acc_dtype)
        return (gw, grad_bias(gy)) if with_bias else gw
    idx = _index(x.size, gy.size, image=geo.C * geo.H * geo.W)
    bm = _gemm_row_tile(Kg, idx)
    splits, split_len = _weight_splits(Q, R, Kg, G, bm)
    weights = geo.K * R
    partial = xp.empty((splits, weights + (geo.K if with_bias else 0)), acc_dtype)
    taps = _forward_plan(xp, geo.K, Cg, geo.kh, geo.kw, geo.dh, geo.dw, geo.H, geo.W, geo.Ho,
                         geo.Wo, G, bm, tile_depth(_wgrad_cols(bm)))[0][0]
    grid = (_blocks(R, _wgrad_cols(bm)), _blocks(Kg, bm), G * splits)
    launch(_kernels(acc, idx, bm, _wgrad_cols(bm))[1],
           grad_weight_signature(_name(x.dtype), acc_dtype), grid, threads_for(bm),
           _flat(xp, x), _flat(xp, gy, x.dtype), taps, partial,
           geo.N, geo.C, geo.H, geo.W, geo.Ho, geo.Wo, geo.sh, geo.sw, geo.ph, geo.pw,
           split_len, int(with_bias), geo.K, R)
    total = partial[0] if splits == 1 else partial.sum(axis=0)
    gw = total[:weights].reshape(geo.w_shape)
    return (gw, total[weights:]) if with_bias else gw


def grad_bias(gy):
    """Sum of gy over (N, Ho, Wo): (K,) in the accumulator's dtype (one CuPy reduction; the
    weight gradient folds this into its own pass when both are wanted)."""
    xp = backend.get_array_module(gy)
    if gy.dtype == dtypes.bfloat16:             # through float32: CuPy has no bfloat16 sum
        gy = dtypes.bfloat16_to_float32(xp.ascontiguousarray(gy))
    return xp.asarray(gy).sum(axis=(0, 2, 3), dtype=_accumulator(gy.dtype)[1])


@functools.lru_cache(maxsize=None)
def gemm_signature(data, acc_name):
    """The Numba signature conv_gemm_kernel is launched with for ``data`` arrays."""
    return (f"void({data}[::1], {acc_name}[::1], int32[::1], int32[:, ::1], {data}[::1], "
            f"{data}[::1], {', '.join(['int64'] * 19)})")


@functools.lru_cache(maxsize=None)
def grad_weight_signature(data, acc_name):
    """The Numba signature conv_grad_weight_kernel is launched with for ``data`` arrays."""
    return (f"void({data}[::1], {data}[::1], int32[:, ::1], {acc_name}[:, ::1], "
            f"{', '.join(['int64'] * 14)})")


def _signatures():
    """Every kernel build with the signatures its launchers use: C-contiguous arrays, int64
    scalars. Budgets hold for the float32 builds (the gate assembles those)."""
    table = []
    builds = [(float32, "float32", ("float32", "float16")), (float64, "float64", ("float64",))]
    for acc, acc_name, datas in builds:
        for idx in (int32, int64):
            for bm in (ROW_TILES if idx == int32 else ROW_TILES[1:]):
                gemm, gwt = _kernels(acc, idx, bm)
                # the int32 build does no 64-bit division at all (int64: outside its loops)
                budget = Budget(threads=threads_for(bm), min_fma_share=0.5,
                                max_div64=0 if idx == int32 else None)
                table.append((gemm, [gemm_signature(d, acc_name) for d in datas], budget))
                table.append((gwt, [grad_weight_signature(d, acc_name) for d in datas], budget))
        # the few-rows builds, for at most 16 output rows (the gemm's rows are output or input
        # channels, the weight gradient's output channels). Their FMA share is lower by
        # construction, not by waste: a gathered value meets 16 FMAs (2 rows x 8 steps) where
        # the 64-row tile's meets 64, and the gathers cost the same; what they save is the
        # zero rows, 4x to 21x the useful work for 16 to 3 rows (41% of 1x beats 71% of 4x).
        # The narrow builds' 16 x 32 tiles of 32 steps (4 warps of 8) load 4 A values a thread
        # per tile where the 16 x 128 x 8 tile loads 1 (gemm 315 -> 340 instructions an
        # iteration, weight gradient 337 -> 372, the same 128 FMAs), and save the empty columns
        # and the serial loop: LeNet's conv1 weight gradient 25 of 32 taps a tile, not 25 of
        # 128 (3.7x fewer instructions per useful FMA), its loops 4x shorter. Floors: the
        # measured shares (wide gemm 41%, narrow gemm 37.6%, weight gradient 34.4%), so they
        # cannot regress.
        few = _kernels(acc, int32, FEW_ROWS)[0]
        narrow, narrow_wgrad = _kernels(acc, int32, FEW_ROWS, FEW_COLS)
        table.append((few, [gemm_signature(d, acc_name) for d in datas],
                      Budget(threads=threads_for(FEW_ROWS), min_fma_share=0.4, max_div64=0)))
        table.append((narrow, [gemm_signature(d, acc_name) for d in datas],
                      Budget(threads=threads_for(FEW_ROWS), min_fma_share=0.37, max_div64=0)))
        table.append((narrow_wgrad, [grad_weight_signature(d, acc_name) for d in datas],
                      Budget(threads=threads_for(FEW_ROWS), min_fma_share=0.34, max_div64=0)))
        # the few-channel grad_input (conv_dgrad_few_kernel), one build per channel count.
        # Its hot loop (one column tap: a window of patch rows, then DIRECT_SPAN row-tap blocks,
        # each under a uniform branch) is gated statically, every block counted; at run time
        # only span_i blocks run. sm_90 figures (session 20): Cg = 1..4 hot loops of 118, 182,
        # 246, 310 instructions at 54%, 70%, 78%, 83% FFMA; 80, 96, 96, 120 registers (37.5%,
        # 31%, 31%, 25% occupancy), no spills or stack. The stem's phases (3 or 4 row taps) run
        # about 65-70% FFMA in the tap loop (Cg = 3), ~54% with the staging of each gy channel.
        for cg in range(1, DIRECT_CHANNELS + 1):
            table.append((_direct_kernel(acc, cg), [direct_signature(d, acc_name) for d in datas],
                          Budget(threads=DIRECT_THREADS, min_fma_share=0.5, max_div64=0)))
        table.append((gather_weights, [gather_signature(d, acc_name) for d in datas],
                      Budget(threads=GATHER_THREADS, max_div64=0)))
    return table


SIGNATURES = _signatures()
