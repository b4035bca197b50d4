"""Attention kernels in Numba-CUDA with the FlashAttention-2 structure.

Forward: one block per (64-query tile, batch row), ``Tiling.threads`` threads (4 warps; 8 where
smaller micro-tiles are needed to stay within 128 registers) laid out as a ``(TY, TX)`` grid. Each
thread owns an ``RM x CN`` micro-tile of the 64 x ``BN`` score tile (rows ``ty + TY * i``, columns
``tx + TX * j``) and the matching ``RM x E / TX`` slice of the output accumulator, all in registers
(local arrays indexed only inside fully unrolled constant-trip loops). Key tiles stream through
shared memory: Q and K in head-dim chunks of ``DC`` columns (Q is staged once when one chunk holds
it), V whole. Online softmax: each thread reduces its part of a row, the row's ``TX`` partial
maxima meet in shared memory (the simulator has no warp shuffles), and each thread keeps its own
partial row sum, reduced once at the end. Tiles above the causal diagonal are never visited; the
unmasked kernels never read a mask, the masked ones stage each mask tile through shared memory.

Backward, as FA2: ``delta = rowsum(dO * O)`` by a small kernel; dQ by one block per query tile (S
and dP from streamed Q/dO/K/V chunks, dS through shared memory, dQ += dS K); dK and dV by one block
per 64-key tile streaming query tiles (S^T and dP^T, then dV += P^T dO and dK += dS^T Q). Every
output element has one writer: no atomics. Probabilities are recomputed as ``exp(s - lse)``.

Shared arrays are flat with row strides chosen for the access pattern: an odd stride (``DC + 1``)
where the threads of a warp read down a column, ``BN + TX`` where a micro-tile is written from
registers; the P/dS tile reuses the space of the chunks it follows. Static shared memory is capped
at 48 KiB per block, which with the 128-register budget sets ``TILINGS``. Head dims are
compile-time constants (one kernel set per bucket of ``HEAD_DIMS``; E and Ev are zero-padded to the
bucket) and so is the mask kind; arithmetic is float32 whatever the input (float32 or float16),
every literal cast (no fp64 PTX). Masks arrive as additive float32 arrays of shape (Bm, Lm, Sm),
each dimension 1 or full. Conventions (fully masked rows, causal alignment) are those of
``kernels/attention.py``. Offline sm_90 figures per kernel: benchmarks/RESULTS.md."""

import math
from dataclasses import dataclass

import numpy as np
from numba import cuda, float32, uint64

from gpudl import backend

from .attention import as_mask3
from .budget import Budget
from .launch import launch

HEAD_DIMS = (16, 32, 64, 128)   # register-resident accumulators: above 128 the twin (on CuPy) runs
BLOCK = 64                      # queries per forward/dQ block, keys per dK/dV block
DELTA_THREADS = 128             # threads per block of the delta kernel: a warp per row
DELTA_ROWS = DELTA_THREADS // 32
GRID_Y = 65535          # CUDA's limit on a grid's y dimension
SHARED_LIMIT = 48 * 1024        # static shared memory per block

NEG_INF = float32(-math.inf)
POS_INF = float32(math.inf)
ZERO = float32(0)
ONE = float32(1)


@dataclass(frozen=True)
class Tiling:
    """Launch shape and tile sizes of one kernel for one head-dim bucket."""
    threads: int    # threads per block: a (threads // tx, tx) grid
    tx: int         # threads along the columns of a micro-tiled matrix
    bn: int         # columns of the score tile: keys (forward, dQ) or queries (dK/dV)
    dc: int         # head-dim columns staged per chunk of the score products


# (forward, dQ, dK/dV) per head dim: <= 48 KiB of shared memory and <= 128 registers (25% occupancy
# on an H100 SM), measured with ptxas for sm_90 (benchmarks/RESULTS.md).
TILINGS = {
    16: (Tiling(128, 8, 64, 16), Tiling(128, 8, 32, 16), Tiling(128, 8, 32, 16)),
    32: (Tiling(128, 8, 64, 32), Tiling(128, 8, 32, 16), Tiling(128, 8, 32, 16)),
    64: (Tiling(128, 8, 64, 16), Tiling(128, 8, 32, 16), Tiling(256, 16, 32, 16)),
    128: (Tiling(256, 16, 32, 32), Tiling(256, 16, 32, 16), Tiling(256, 16, 32, 16)),
}


def _layout(head, t):
    """(TY, RM, CN, OC): thread rows, and each thread's rows, score-tile columns and accumulator
    columns for a kernel of bucket ``head`` tiled by ``t``."""
    ty = t.threads // t.tx
    return ty, BLOCK // ty, t.bn // t.tx, head // t.tx


def _check_shared(name, head, floats):
    if floats * 4 > SHARED_LIMIT:
        raise ValueError(f"attention {name} e{head}: {floats * 4} B of shared memory > "
                         f"{SHARED_LIMIT} B; shrink its Tiling")


def _stager(rows, cols, ld):
    """stage(src, b, r0, c0, scale, dst, off, tid): ``dst[off + r * ld + c] = src[b, r0 + r, c0 +
    c] * scale`` for a rows x cols window by the whole block, zero beyond the array's extent.

    Each thread keeps one column and walks rows ``blockDim // cols`` apart (a warp reads whole
    rows: coalesced). The step is read at run time on purpose: with a constant trip count LLVM
    unrolls the loop completely and every load is in flight at once, each holding registers
    while the score and output tiles are live (244 instead of 128 registers in one kernel)."""

    @cuda.jit(device=True, inline="always")
    def stage(src, b, r0, c0, scale, dst, off, tid):
        r = tid // cols
        c = tid - r * cols
        row_step = cuda.blockDim.x // cols
        col_ok = c0 + c < src.shape[2]
        while r < rows:
            x = ZERO                                # computed, then stored once: loads overlap
            if col_ok and r0 + r < src.shape[1]:
                x = float32(src[uint64(b), uint64(r0 + r), uint64(c0 + c)]) * scale
            dst[uint64(off + r * ld + c)] = x
            r += row_step
    return stage


def _mma(rm, cn, kd, a_i, a_k, b_j, b_k):
    """mma(acc, a, a0, b, b0): ``acc[i * cn + j] += sum_k a[a0 + i * a_i + k * a_k] *
    b[b0 + j * b_j + k * b_k]``, an rm x cn register micro-tile over kd steps.

    The k loop is a counted ``while``: LLVM unrolls it 4 steps deep, which a ``range`` loop's
    iterator (a 64-bit count-down per step) costs ~8 extra instructions per step to match.
    Indices are cast to unsigned so Numba emits no negative-index wraparound code.
    """

    @cuda.jit(device=True, inline="always")
    def mma(acc, a, a0, b, b0):
        af = cuda.local.array(rm, float32)
        bf = cuda.local.array(cn, float32)
        k = 0
        while k < kd:
            for i in range(rm):
                af[i] = a[uint64(a0 + i * a_i + k * a_k)]
            for j in range(cn):
                bf[j] = b[uint64(b0 + j * b_j + k * b_k)]
            for i in range(rm):
                for j in range(cn):
                    acc[i * cn + j] += af[i] * bf[j]
            k += 1
    return mma


@cuda.jit(device=True, inline="always")
def _nanmax(a, b):
    """max that keeps NaN (a NaN score makes its row NaN, as in the twin)."""
    return b if (b > a or b != b) else a


def _mask_stager(rows, cols, ld, transposed):
    """stage(mask, b, q0, k0, dst, tid): the additive mask over queries q0.. and keys k0.. into
    ``dst[r * ld + c]``, rows x cols, by the whole block; rows are queries, or keys when
    ``transposed`` (the dK/dV layout). Indices clamp to the mask's size-1 (broadcast) dimensions
    and to its last row/column (padding rows and columns are masked by the kernels anyway).
    Consecutive threads read consecutive keys (coalesced); each thread walks with a run-time
    step, as in ``_stager``."""
    lane_dim = rows if transposed else cols     # the key dimension of dst

    @cuda.jit(device=True, inline="always")
    def stage(mask, b, q0, k0, dst, tid):
        bm = uint64(min(b, mask.shape[0] - 1))
        last_q = mask.shape[1] - 1
        last_k = mask.shape[2] - 1
        lane = tid % lane_dim
        walk = tid // lane_dim
        step = cuda.blockDim.x // lane_dim
        kk = uint64(min(k0 + lane, last_k))
        while walk < (cols if transposed else rows):
            qq = uint64(min(q0 + walk, last_q))
            at = lane * ld + walk if transposed else walk * ld + lane
            dst[uint64(at)] = mask[bm, qq, kk]
            walk += step
    return stage


def _fill(n):
    @cuda.jit(device=True, inline="always")
    def fill(a, value):
        for i in range(n):
            a[i] = value
    return fill


@cuda.jit(device=True, inline="always")
def block_place(tile, late_first):
    """(first row of this block's ``tile`` rows, batch row b) in a grid of (batch, tiles of
    rows) blocks (``grid``). Blocks start in the order of their linear index, x fastest: every
    batch row's first tile, then every second tile..., with ``late_first`` the last tiles first.
    Under a causal mask a query block's work grows with its place (a key block's shrinks), so
    the longest blocks start first and the last wave is short (longest processing time first);
    unmasked, the order changes nothing. All from special registers: nothing held live."""
    rank = cuda.blockIdx.y
    if late_first:
        rank = cuda.gridDim.y - 1 - rank
    return rank * tile, cuda.blockIdx.x


def grid(rows, tile, batch):
    """The grid ``block_place`` reads: (batch rows, tiles of rows). The batch along x takes up
    to 2**31 - 1 rows; the tiles along y at most 65,535 (the batch used to be there)."""
    tiles = (rows + tile - 1) // tile
    if tiles > GRID_Y:
        raise ValueError(f"attention on cuda: {rows} rows make {tiles} blocks of {tile}; the "
                         f"kernels take at most {GRID_Y} (sequences up to {GRID_Y * tile} rows)")
    return (batch, tiles)


def _placer(tx_count, late_first):
    """place(): (tid, ty, tx, first row of the block's 64, batch row b) of this thread in a
    block laid out as a (threads // tx_count, tx_count) grid; blocks of queries (``late_first``)
    or of keys (dK/dV), ordered by ``block_place``."""

    @cuda.jit(device=True, inline="always")
    def place():
        tid = cuda.threadIdx.x
        ty = tid // tx_count
        start, b = block_place(BLOCK, late_first)
        return tid, ty, tid - ty * tx_count, start, b
    return place


@cuda.jit(device=True, inline="always")
def _row_stats(lse, delta, b, row, n_rows):
    """(lse, delta) of query ``row``; lse +inf (P = 0) for padding and fully masked rows."""
    lse_row = POS_INF
    delta_row = ZERO
    if row < n_rows:
        delta_row = delta[b, row]
        if lse[b, row] != NEG_INF:
            lse_row = lse[b, row]
    return lse_row, delta_row


@cuda.jit(device=True, inline="always")
def _score(x, region, at, masked, key, query, n_keys, is_causal):
    """Score x plus its mask value staged at ``region[at]`` (``masked``), or -inf for a key
    past the keys or, causal, after the query."""
    if masked:
        x += region[uint64(at)]
    if key >= n_keys or (is_causal != 0 and key > query):
        x = NEG_INF
    return x


def _paired_products(head, dc, rows, cols, t):
    """(run, floats): ``run(s, dp, a1, a2, a0, a1_scale, b1, b2, b0, b1_scale, b, region, tid, ty,
    tx)`` adds ``a1 b1^T`` to the micro-tile ``s`` and ``a2 b2^T`` to ``dp`` (S and dP in dQ, S^T
    and dP^T in dK/dV): rows a0.. of a1/a2 and b0.. of b1/b2 stream through ``region`` in chunks
    of ``dc`` head-dim columns, which need ``floats`` words of it."""
    TX = t.tx
    TY = t.threads // TX
    LD = dc + 1
    A2_OFF, B1_OFF, B2_OFF = rows * LD, 2 * rows * LD, 2 * rows * LD + cols * LD
    stage_a = _stager(rows, dc, LD)
    stage_b = _stager(cols, dc, LD)
    product = _mma(rows // TY, cols // TX, dc, TY * LD, 1, TX * LD, 1)

    @cuda.jit(device=True, inline="always")
    def run(s, dp, a1, a2, a0, a1_scale, b1, b2, b0, b1_scale, b, region, tid, ty, tx):
        for c0 in range(0, head, dc):
            stage_a(a1, b, a0, c0, a1_scale, region, 0, tid)
            stage_a(a2, b, a0, c0, ONE, region, A2_OFF, tid)
            stage_b(b1, b, b0, c0, b1_scale, region, B1_OFF, tid)
            stage_b(b2, b, b0, c0, ONE, region, B2_OFF, tid)
            cuda.syncthreads()
            product(s, region, ty * LD, region, B1_OFF + tx * LD)
            product(dp, region, A2_OFF + ty * LD, region, B2_OFF + tx * LD)
            cuda.syncthreads()
    return run, B2_OFF + cols * LD


def _make_forward(head, masked, t):
    E, TX, BN, DC = head, t.tx, t.bn, t.dc
    TY, RM, CN, OC = _layout(head, t)
    S_SIZE, ACC_SIZE = RM * CN, RM * OC
    LD = DC + 1                             # staged Q/K chunk stride (odd: column reads)
    LP = BN + TX                            # P tile stride (written from micro-tiles)
    RESIDENT = DC == E                      # one chunk: Q is staged once, not per key tile
    K_OFF = 0 if RESIDENT else BLOCK * LD   # the K chunk follows the Q chunk when Q streams
    REGION = max(K_OFF + BN * LD, BLOCK * LP)
    Q_SIZE = BLOCK * LD if RESIDENT else 1
    V_SIZE, RED_SIZE = BN * E, BLOCK * TX
    _check_shared("fwd", head, Q_SIZE + REGION + V_SIZE + RED_SIZE)
    stage_q = _stager(BLOCK, DC, LD)
    stage_k = _stager(BN, DC, LD)
    stage_v = _stager(BN, E, E)
    stage_mask = _mask_stager(BLOCK, BN, LP, False)
    scores = _mma(RM, CN, DC, TY * LD, 1, TX * LD, 1)
    pv = _mma(RM, OC, BN, TY * LP, 1, TX, E)
    fill_s, fill_acc, fill_rows = _fill(RM * CN), _fill(RM * OC), _fill(RM)
    place = _placer(TX, True)

    def fwd(q, k, v, mask, out, lse, scale, is_causal):
        qs = cuda.shared.array(Q_SIZE, float32)        # Q when resident
        region = cuda.shared.array(REGION, float32)    # Q/K chunks, then P
        vs = cuda.shared.array(V_SIZE, float32)
        red = cuda.shared.array(RED_SIZE, float32)     # per-thread row partials
        s = cuda.local.array(S_SIZE, float32)
        acc = cuda.local.array(ACC_SIZE, float32)
        m = cuda.local.array(RM, float32)              # running row max
        l = cuda.local.array(RM, float32)              # this thread's part of the row sum
        tid, ty, tx, q0, b = place()
        n_keys = k.shape[1]
        fill_acc(acc, ZERO)
        fill_rows(m, NEG_INF)
        fill_rows(l, ZERO)
        if RESIDENT:
            stage_q(q, b, q0, 0, scale, qs, 0, tid)
        a_src = qs if RESIDENT else region
        key_end = min(n_keys, q0 + BLOCK) if is_causal != 0 else n_keys
        for k0 in range(0, key_end, BN):
            stage_v(v, b, k0, 0, ONE, vs, 0, tid)
            fill_s(s, ZERO)
            for c0 in range(0, E, DC):
                if not RESIDENT:
                    stage_q(q, b, q0, c0, scale, region, 0, tid)
                stage_k(k, b, k0, c0, ONE, region, K_OFF, tid)
                cuda.syncthreads()
                scores(s, a_src, ty * LD, region, K_OFF + tx * LD)
                cuda.syncthreads()                     # K read: the region can take P
            if masked:                                 # each thread reads the mask where it
                stage_mask(mask, b, q0, k0, region, tid)   # then writes its P: no race
                cuda.syncthreads()
            for i in range(RM):
                row = q0 + ty + TY * i
                mx = NEG_INF
                for j in range(CN):
                    col = k0 + tx + TX * j
                    x = _score(s[i * CN + j], region, (ty + TY * i) * LP + tx + TX * j, masked,
                               col, row, n_keys, is_causal)
                    s[i * CN + j] = x
                    mx = _nanmax(mx, x)
                red[uint64((ty + TY * i) * TX + tx)] = mx
            cuda.syncthreads()
            for i in range(RM):
                r = ty + TY * i
                mx = m[i]
                for u in range(TX):
                    mx = _nanmax(mx, red[uint64(r * TX + u)])
                m_use = ZERO if mx == NEG_INF else mx  # nothing visible yet: exp(-inf) = 0
                alpha = math.exp(m[i] - m_use)
                m[i] = mx
                part = ZERO
                for j in range(CN):
                    p = math.exp(s[i * CN + j] - m_use)
                    part += p
                    region[uint64(r * LP + tx + TX * j)] = p
                l[i] = l[i] * alpha + part
                for j in range(OC):
                    acc[i * OC + j] *= alpha
            cuda.syncthreads()
            pv(acc, region, ty * LP, vs, tx)
            cuda.syncthreads()                         # P and V read: the next tile may stage
        for i in range(RM):
            red[uint64((ty + TY * i) * TX + tx)] = l[i]
        cuda.syncthreads()
        for i in range(RM):
            r = ty + TY * i
            total = ZERO
            for u in range(TX):
                total += red[uint64(r * TX + u)]
            row = q0 + r
            if row < q.shape[1]:
                inv = ONE / total if total > ZERO else ZERO
                for j in range(OC):
                    if tx + TX * j < out.shape[2]:
                        out[b, row, tx + TX * j] = acc[i * OC + j] * inv
                if tx == 0:
                    lse[b, row] = m[i] + math.log(total) if total > ZERO else NEG_INF

    return fwd


def _make_bwd_dq(head, masked, t):
    E, TX, BN, DC = head, t.tx, t.bn, t.dc
    TY, RM, CN, OC = _layout(head, t)
    S_SIZE, ACC_SIZE = RM * CN, RM * OC
    LP = BN + TX
    LK = E + 1                              # full K tile: read along rows by dQ += dS K
    s_dp, chunk_floats = _paired_products(E, DC, BLOCK, BN, t)
    REGION = max(chunk_floats, BLOCK * LP)
    K_SIZE = BN * LK
    _check_shared("bwd_dq", head, REGION + K_SIZE)
    stage_k = _stager(BN, E, LK)
    stage_mask = _mask_stager(BLOCK, BN, LP, False)
    ds_k = _mma(RM, OC, BN, TY * LP, 1, TX, LK)
    fill_s, fill_acc = _fill(RM * CN), _fill(RM * OC)
    place = _placer(TX, True)

    def bwd_dq(q, k, v, mask, gout, lse, delta, gq, scale, is_causal):
        region = cuda.shared.array(REGION, float32)    # Q/dO/K/V chunks, then dS
        ks = cuda.shared.array(K_SIZE, float32)
        s = cuda.local.array(S_SIZE, float32)
        dp = cuda.local.array(S_SIZE, float32)
        acc = cuda.local.array(ACC_SIZE, float32)
        lse_r = cuda.local.array(RM, float32)
        delta_r = cuda.local.array(RM, float32)
        tid, ty, tx, q0, b = place()
        n_keys = k.shape[1]
        fill_acc(acc, ZERO)
        for i in range(RM):
            row = q0 + ty + TY * i
            lse_r[i], delta_r[i] = _row_stats(lse, delta, b, row, q.shape[1])
        key_end = min(n_keys, q0 + BLOCK) if is_causal != 0 else n_keys
        for k0 in range(0, key_end, BN):
            stage_k(k, b, k0, 0, ONE, ks, 0, tid)
            fill_s(s, ZERO)
            fill_s(dp, ZERO)
            s_dp(s, dp, q, gout, q0, scale, k, v, k0, ONE, b, region, tid, ty, tx)
            if masked:                                 # read back where each thread writes dS
                stage_mask(mask, b, q0, k0, region, tid)
                cuda.syncthreads()
            for i in range(RM):
                row = q0 + ty + TY * i
                for j in range(CN):
                    col = k0 + tx + TX * j
                    at = uint64((ty + TY * i) * LP + tx + TX * j)
                    x = _score(s[i * CN + j], region, at, masked, col, row, n_keys, is_causal)
                    p = math.exp(x - lse_r[i])
                    region[at] = p * (dp[i * CN + j] - delta_r[i])
            cuda.syncthreads()
            ds_k(acc, region, ty * LP, ks, tx)
            cuda.syncthreads()
        for i in range(RM):
            row = q0 + ty + TY * i
            if row < q.shape[1]:
                for j in range(OC):
                    if tx + TX * j < gq.shape[2]:
                        gq[b, row, tx + TX * j] = acc[i * OC + j] * scale

    return bwd_dq


def _make_bwd_dkdv(head, masked, t):
    E, TX, BQ, DC = head, t.tx, t.bn, t.dc
    TY, RM, CN, OC = _layout(head, t)
    S_SIZE, ACC_SIZE = RM * CN, RM * OC
    LP = BQ + TX
    DS_OFF = BLOCK * LP
    s_dp, chunk_floats = _paired_products(E, DC, BLOCK, BQ, t)
    REGION = max(chunk_floats, 2 * BLOCK * LP)
    TILE_SIZE = BQ * E
    _check_shared("bwd_dkdv", head, REGION + TILE_SIZE)
    stage_tile = _stager(BQ, E, E)
    stage_mask = _mask_stager(BLOCK, BQ, LP, True)
    update = _mma(RM, OC, BQ, TY * LP, 1, TX, E)
    fill_s, fill_acc = _fill(RM * CN), _fill(RM * OC)
    place = _placer(TX, False)

    def bwd_dkdv(q, k, v, mask, gout, lse, delta, gk, gv, scale, is_causal):
        region = cuda.shared.array(REGION, float32)    # K/V/Q/dO chunks, then P^T and dS^T
        tile = cuda.shared.array(TILE_SIZE, float32)     # the dO tile, then the Q tile
        s = cuda.local.array(S_SIZE, float32)
        dp = cuda.local.array(S_SIZE, float32)
        gk_acc = cuda.local.array(ACC_SIZE, float32)
        gv_acc = cuda.local.array(ACC_SIZE, float32)
        tid, ty, tx, k0, b = place()
        n_queries = q.shape[1]
        n_keys = k.shape[1]
        fill_acc(gk_acc, ZERO)
        fill_acc(gv_acc, ZERO)
        query_start = k0 if is_causal != 0 else 0      # causal: queries before k0 see no key here
        for i0 in range(query_start, n_queries, BQ):
            stage_tile(gout, b, i0, 0, ONE, tile, 0, tid)
            fill_s(s, ZERO)
            fill_s(dp, ZERO)
            s_dp(s, dp, k, v, k0, ONE, q, gout, i0, scale, b, region, tid, ty, tx)
            if masked:                                 # read back where each thread writes P^T
                stage_mask(mask, b, i0, k0, region, tid)
                cuda.syncthreads()
            for j in range(CN):
                col = i0 + tx + TX * j                 # a query
                lse_c, delta_c = _row_stats(lse, delta, b, col, n_queries)
                for i in range(RM):
                    row = k0 + ty + TY * i             # a key
                    at = (ty + TY * i) * LP + tx + TX * j
                    x = _score(s[i * CN + j], region, at, masked, row, col, n_keys, is_causal)
                    p = math.exp(x - lse_c)
                    region[uint64(at)] = p
                    region[uint64(DS_OFF + at)] = p * (dp[i * CN + j] - delta_c)
            cuda.syncthreads()
            update(gv_acc, region, ty * LP, tile, tx)
            cuda.syncthreads()
            stage_tile(q, b, i0, 0, scale, tile, 0, tid)
            cuda.syncthreads()
            update(gk_acc, region, DS_OFF + ty * LP, tile, tx)
            cuda.syncthreads()
        for i in range(RM):
            row = k0 + ty + TY * i
            if row < n_keys:
                for j in range(OC):
                    if tx + TX * j < gk.shape[2]:
                        gk[b, row, tx + TX * j] = gk_acc[i * OC + j]
                    if tx + TX * j < gv.shape[2]:
                        gv[b, row, tx + TX * j] = gv_acc[i * OC + j]

    return bwd_dkdv


def _delta(out, gout, delta):
    """delta[b, i] = sum_d out[b, i, d] * gout[b, i, d] in float32, read in the inputs' dtype (no
    copies). A warp per row: lanes read consecutive d (coalesced), then a shared-memory tree."""
    red = cuda.shared.array(DELTA_THREADS, float32)
    tid = cuda.threadIdx.x
    lane = tid % 32
    first, b = block_place(DELTA_ROWS, False)
    row = first + tid // 32
    b = uint64(b)
    total = ZERO
    if row < out.shape[1]:
        d = lane
        while d < out.shape[2]:
            at = (b, uint64(row), uint64(d))
            total += float32(out[at]) * float32(gout[at])
            d += 32
    red[tid] = total
    cuda.syncthreads()
    width = 16
    while width > 0:
        if lane < width:
            red[tid] += red[tid + width]
        cuda.syncthreads()
        width //= 2
    if lane == 0 and row < out.shape[1]:
        delta[b, uint64(row)] = red[tid]


def _build(head, masked):
    kernels = []
    for make, t, name in zip((_make_forward, _make_bwd_dq, _make_bwd_dkdv), TILINGS[head],
                             ("fwd", "bwd_dq", "bwd_dkdv")):
        func = make(head, masked, t)
        func.__name__ = func.__qualname__ = (
            f"_attention_{name}_kernel_e{head}_{'mask' if masked else 'nomask'}")
        kernels.append(cuda.jit(func))
    return tuple(kernels)


_KERNELS = {(head, masked): _build(head, masked)       # lazy: compiled at first launch
            for head in HEAD_DIMS for masked in (False, True)}
_delta_kernel = cuda.jit(_delta)


def supports(q, v):
    """Whether these kernels handle q and v (dtype and head dims); else the twin runs."""
    return q.dtype in (np.float32, np.float16) and max(q.shape[-1], v.shape[-1]) <= HEAD_DIMS[-1]


def _bucket(q, v):
    width = max(q.shape[-1], v.shape[-1])
    return next(h for h in HEAD_DIMS if h >= width)


def _additive_mask(xp, mask):
    """The mask as a contiguous (Bm, Lm, Sm) float32 array added to the scores, or a dummy one
    when there is none: left uninitialised (no fill kernel), as the unmasked builds never read
    it (each read of the mask sits under their compile-time ``masked``)."""
    if mask is None:
        return xp.empty((1, 1, 1), np.float32)
    mask = as_mask3(mask)
    if mask.dtype == np.bool_:
        return xp.where(mask, np.float32(0), np.float32(-np.inf)).astype(np.float32, copy=False)
    return xp.ascontiguousarray(mask, dtype=np.float32)


def _contiguous(xp, dtype, *arrays):
    return tuple(xp.ascontiguousarray(a, dtype=dtype) for a in arrays)


def _grid(n, B):
    return grid(n, BLOCK, B)


def attention_forward(q, k, v, mask, is_causal, scale, out_shape=None):
    """Launch the forward kernel: ``(out (B, L, Ev) in q's dtype, lse (B, L) float32)``; ``out``
    allocated in ``out_shape`` (a reshaping of (B, L, Ev)) when given."""
    xp = backend.get_array_module(q)
    q, k, v = _contiguous(xp, q.dtype, q, k, v)
    B, L, _ = q.shape
    out = xp.empty((B, L, v.shape[2]) if out_shape is None else out_shape, q.dtype)
    lse = xp.empty((B, L), np.float32)
    if B * L == 0:
        return out, lse
    head = _bucket(q, v)
    fwd = _KERNELS[(head, mask is not None)][0]
    launch(fwd, _signatures(q.dtype.name)[0], _grid(L, B), TILINGS[head][0].threads,
           q, k, v, _additive_mask(xp, mask), out.reshape((B, L, v.shape[2])), lse,
           np.float32(scale), np.int32(is_causal))
    return out, lse


def attention_backward(q, k, v, out, lse, gout, mask, is_causal, scale, grads_out=None):
    """Launch the delta, dQ and dK/dV kernels: ``(gq, gk, gv)`` shaped and typed like q, k, v
    (``grads_out``'s C-contiguous arrays, written in place, when given)."""
    xp = backend.get_array_module(q)
    q, k, v, gout, out = _contiguous(xp, q.dtype, q, k, v, gout, out)
    lse = xp.ascontiguousarray(lse, dtype=np.float32)
    B, L, _ = q.shape
    S = k.shape[1]
    gq, gk, gv = (grads_out if grads_out is not None else
                  (xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)))
    head = _bucket(q, v)
    _, dq_kernel, dkdv_kernel = _KERNELS[(head, mask is not None)]
    _, dq_tiling, dkdv_tiling = TILINGS[head]
    _, dq_sig, dkdv_sig, delta_sig = _signatures(q.dtype.name)
    mask = _additive_mask(xp, mask)
    conf = (np.float32(scale), np.int32(is_causal))
    delta = xp.empty((B, L), np.float32)
    if B * L:
        launch(_delta_kernel, delta_sig, grid(L, DELTA_ROWS, B), DELTA_THREADS,
               out, gout, delta)
        launch(dq_kernel, dq_sig, _grid(L, B), dq_tiling.threads,
               q, k, v, mask, gout, lse, delta, gq, *conf)
    if B * S:
        launch(dkdv_kernel, dkdv_sig, _grid(S, B), dkdv_tiling.threads,
               q, k, v, mask, gout, lse, delta, gk, gv, *conf)
    return gq, gk, gv


def _signatures(dtype):
    arr3 = f"{dtype}[:, :, ::1]"
    f3, f2 = "float32[:, :, ::1]", "float32[:, ::1]"
    fwd = f"void({arr3}, {arr3}, {arr3}, {f3}, {arr3}, {f2}, float32, int32)"
    dq = f"void({arr3}, {arr3}, {arr3}, {f3}, {arr3}, {f2}, {f2}, {arr3}, float32, int32)"
    dkdv = (f"void({arr3}, {arr3}, {arr3}, {f3}, {arr3}, {f2}, {f2}, {arr3}, {arr3}, "
            "float32, int32)")
    delta = f"void({arr3}, {arr3}, {f2})"
    return fwd, dq, dkdv, delta


def _budget(threads, fma_share=0.5):
    return Budget(threads=threads, min_fma_share=fma_share, max_div64=0)


SIGNATURES = [
    (kernel, [_signatures(dtype)[n] for dtype in ("float32", "float16")],
     _budget(TILINGS[head][n].threads))
    for head in HEAD_DIMS
    for masked in (False, True)
    for n, kernel in enumerate(_KERNELS[(head, masked)])
] + [(_delta_kernel, [_signatures(dtype)[3] for dtype in ("float32", "float16")],
      Budget(threads=DELTA_THREADS, max_div64=0))]
