"""Attention on tensor cores: the FlashAttention-2 kernels with ``mma.sync`` (kernels/mma.py).

One kernel body per pass serves four kinds (``Kind``): ``f16`` and ``bf16`` (m16n8k16 on half
words), ``tf32`` (m16n8k8 on float32 values rounded to TF32) and ``tf32x3`` (three TF32 mmas per
product on the big/small split of each float32 value: float32 accuracy), fp32 accumulation
throughout.

Every block has 4 warps; each warp owns 16 rows of the block's 64 (queries in the forward and dQ
passes, keys in the dK/dV pass) and computes on mma fragments in registers (layouts in
kernels/mma.py, lane ``l``: ``g = l >> 2``, ``t = l & 3``, rows ``g`` and ``g + 8``):

- forward: the warp's Q A-fragments are loaded once (ldmatrix) into registers (``tf32x3``:
  reloaded from the staged Q tile per key tile, see ``_make_forward``); per key tile of
  ``fwd_bn`` keys, S = Q K^T (K B-fragments by ldmatrix from shared), scale and mask on the S
  accumulators (without a mask, in the full tiles, the row max is taken on raw scores and the
  scale folds into the exp2's argument, one FFMA per score, as FA2; the scale in the kernels
  is never negative: the host negates K for a negative one), the online softmax in the log2
  domain (``exp2``, row max/sum over the 4 lanes of
  a row with ``quad_max``/``quad_sum``, each lane keeping its partial row sum until the end), P
  kept in registers as the A operand of P V (half kinds: packed to half pairs, which are
  exactly the A fragments; TF32 kinds: the k step takes its keys in the order 0, 2, 4, 6, 1, 3,
  5, 7, so that A is the lane's own C values and V's rows are read in the same order from shared
  memory), O in registers; LSE saved.
- dQ: per key tile, S = Q K^T and dP = dO V^T (Q, dO A-fragments and K, V B-fragments by
  ldmatrix), dS = P (dP - delta) with P = exp2(S - lse) recomputed, dQ += dS K.
- dK/dV: per query tile, S^T = K Q^T and dP^T = V dO^T, then dV += P^T dO and dK += dS^T Q.
Each output element has one writer: no atomics. A causal float32 forward whose blocks all fit
on the GPU at once splits each query block's key tiles over two blocks (grid z; ``_key_splits``)
and combines their normalised outputs by their lse (``_combine_splits``): its time is its
longest block's, and the last query block walks every key tile.
``delta = rowsum(dO * O)`` comes from
``attention_cuda``'s delta kernel (bfloat16: one array expression).

A TF32 A or B fragment element is one 32-bit word where a half fragment element is half of one,
and an 8x8-b16 ldmatrix matrix is 8 rows of 4 words either way, so the same ldmatrix addressing
gives the A and B fragments of every kind for Q K^T, dO V^T, K Q^T and V dO^T (a k step is 8
words: 16 halves or 8 TF32 values). Only the register-A products (P V, dS K, P^T dO, dS^T Q)
differ: half kinds take B by ``ldmatrix.trans``, which has no 32-bit form.

Warp-uniform control flow, block-uniform for the simulator's emulation: causal tiles are skipped
per block, masked elements get -inf values, never a branch around an mma. Tiles that need no
bounds or causal checks (all but the last partial key tile and the causal diagonal) run in the
one loop, the hot loop; the at most 64 / tile edge tiles run as unrolled straight-line copies
with the checks. exp2 is ``ex2.approx.ftz`` (one MUFU.EX2, as FA2).

Which kind runs (``variant``; kernels/attention.py dispatches, the ops layer passes the flags):
float16 and bfloat16 their own kinds (head dims <= 128), as PyTorch's flash backend takes both.
float32 mirrors PyTorch 2.13 on sm80/sm90, where flash and cuDNN attention take only
float16/bfloat16 (``check_dtypes_low_precision``), so float32 SDPA runs the memory-efficient
kernel when it can (``can_use_mem_efficient_attention``: float32 allowed on sm80+, head dims
multiples of 4 by ``check_head_dim_size_mem_efficient``) and the math path otherwise
(``select_sdp_backend``'s order), in
https://github.com/pytorch/pytorch/blob/main/aten/src/ATen/native/transformers/cuda/sdp_utils.cpp.
The memory-efficient kernel's float32 GEMMs on sm80+ are ``OpClassTensorOp`` with
``OpMultiplyAddFastF32``, i.e. 3xTF32, whatever ``allow_tf32`` says (``DefaultGemmType<ArchTag,
float>`` in
https://github.com/pytorch/pytorch/blob/main/aten/src/ATen/native/transformers/cuda/mem_eff_attention/gemm_kernel_utils.h,
the same in torch 2.13's installed headers, used by kernel_forward.h and kernel_backward.h); the
math path's matmuls follow ``matmul.allow_tf32`` like any float32 matmul. Hence: float32 with
``gd.backends.cuda.mem_efficient_sdp_enabled()`` and head dims multiples of 4 -> ``tf32x3``;
otherwise ``tf32`` when ``matmul.allow_tf32`` (set_float32_matmul_precision "high"/"medium"),
else the strict-fp32 SIMT kernels of ``attention_cuda``. The TF32 kinds stop at head dim 64
(float32 tiles are twice the size of half ones in 48 KiB of shared memory): above it float32
runs on the SIMT kernels, which are float32-accurate, as 3xTF32 is. float64 and head dims > 128
run on the twin.

Arrays travel as uint32 words (zero-copy views: float32 values, or pairs of halves; rows that are
not a multiple of 16 bytes get zero columns, a misaligned view is copied) and are staged into
shared memory by 16-byte cp.async copies (``_stager``); tiles live in 2-D uint32 shared arrays,
16-byte aligned (Numba's default is 4; ldmatrix needs 16-byte row addresses), whose rows are
padded by 16 bytes so the 8 row addresses of an ldmatrix hit different banks. Head dims 32, 64,
128 are compile-time buckets (smaller E/Ev are zero-padded). Shared memory stays under 48 KiB;
within it, masked builds stage their mask tiles the same way (``_mask_tile``: all but f16/bf16
e64 dQ and the TF32 e32 dQ and dK/dV, which read the mask per element), and unmasked builds
double-buffer the streamed tiles where a second pair fits (forward K/V: f16/bf16 e32, e64,
TF32 kinds e32; dQ K/V: f16/bf16 e32; dK/dV Q/dO: f16/bf16 e32, e64): a tile's copies are
issued while the tile before it computes. Offsets within a (batch*head) slice are 32-bit:
``variant`` sends longer sequences (``max_rows``) to attention_cuda's 64-bit kernels.
"""

import math
from dataclasses import dataclass

import numpy as np
from numba import config, cuda, float32, uint32, uint64

from gpudl import backend, dtypes

from . import attention_cuda, mma
from .conv_tc_cuda import _bounds, as_float32, tf32_bits
from .attention_cuda import (DELTA_ROWS, DELTA_THREADS, _additive_mask, _delta_kernel, _fill,
                             block_place, _signatures as _simt_signatures)
from .budget import Budget
from .launch import launch

HEAD_DIMS = (32, 64, 128)
BLOCK = 64                      # rows per block (queries: forward, dQ; keys: dK/dV)
WARPS = 4
THREADS = 32 * WARPS
SHARED_LIMIT = 48 * 1024
TILE_ALIGN = mma.LDMATRIX_ALIGN  # the shared tiles that ldmatrix reads

NEG_INF = float32(-math.inf)
POS_INF = float32(math.inf)
ZERO = float32(0)
LOG2E = float32(1.4426950408889634)
LN2 = float32(0.6931471805599453)



@dataclass(frozen=True)
class Kind:
    """How the kernels hold and multiply one input dtype.

    ``f16`` / ``bf16``: uint32 words of two halves, ``mma.m16n8k16`` of the kind; P and dS are
    packed to half pairs in registers (their C layout is the next mma's A layout), outputs are
    half pairs. ``tf32``: float32 data as uint32 words rounded to TF32 as they are staged, one
    ``mma.m16n8k8`` TF32 per product. ``tf32x3``: the staged words stay float32 and each product
    is three TF32 mmas of the big/small split (x = big + small, both TF32; the small x small
    term dropped), about float32 accuracy: the CUTLASS ``OpMultiplyAddFastF32`` scheme."""
    name: str
    half: bool


KINDS = {name: Kind(name, name in ("f16", "bf16")) for name in ("f16", "bf16", "tf32", "tf32x3")}
_HALF_OPS = {"f16": (mma.mma_f16_m16n8k16, mma.pack_f16x2),
             "bf16": (mma.mma_bf16_m16n8k16, mma.pack_bf16x2)}


if config.ENABLE_CUDASIM:
    _exp2 = math.exp2
else:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def _exp2(typingctx, x):
        """2^x by ex2.approx.ftz (MUFU.EX2 alone; libdevice's exp2f adds a denormal fix-up)."""
        def codegen(context, builder, sig, args):
            f32 = ir.FloatType()
            asm = ir.InlineAsm(ir.FunctionType(f32, [f32]), "ex2.approx.ftz.f32 $0, $1;", "=f,f")
            return builder.call(asm, args)
        return types.float32(types.float32), codegen


@dataclass(frozen=True)
class TcTiling:
    """Streamed tile rows per head-dim bucket: keys per forward / dQ step, queries per dK/dV
    step (multiples of 16; shared memory <= 48 KiB and registers set them)."""
    fwd_bn: int
    dq_bn: int
    dkdv_bm: int


# per (half kind?, head dim): float32 tiles take twice the shared memory of half ones, so TF32
# stops at head dim 64 (a 128 one would not fit its 64-query tile beside K and V in 48 KiB)
TILINGS = {(True, 32): TcTiling(64, 64, 64), (True, 64): TcTiling(64, 64, 32),
           (True, 128): TcTiling(32, 16, 16),
           (False, 32): TcTiling(64, 64, 64), (False, 64): TcTiling(32, 16, 16)}


def _words_per_row(head, kind):
    return head // 2 if kind.half else head


def _stride(words):
    return words + 4            # words per shared row: 16 bytes of padding (ldmatrix banks)


def _dims(head, rows, kind):
    """(words per row, padded shared stride, k steps over the head dim, n8 tiles of the score
    tile, n8 tiles of the output, k steps over the score tile) for ``rows`` streamed rows; a k
    step is 8 words either way (16 halves or 8 TF32 values)."""
    words = _words_per_row(head, kind)
    return (words, _stride(words), words // 8, rows // 8, head // 8,
            rows // 16 if kind.half else rows // 8)


def _check_shared(name, head, kind, rows, extra_bytes=0):
    used = rows * _stride(_words_per_row(head, kind)) * 4 + extra_bytes
    if used > SHARED_LIMIT:
        raise ValueError(f"attention_tc {name} {kind.name} e{head}: {used} B of shared memory > "
                         f"{SHARED_LIMIT} B; shrink its TcTiling")


CHUNK_WORDS = 4     # a cp.async copy: 16 bytes
# the staging offsets within one (batch*head) slice are uint32 (``_stager``): at most 2^32 words
OFFSET_LIMIT = 1 << 32


def max_rows(kind, width):
    """The longest sequence (queries or keys) whose slices the 32-bit offsets of ``kind``'s
    kernels reach for head dims up to ``width``: ``OFFSET_LIMIT`` words of the head-dim
    bucket's rows (an input's padded rows are at most that wide)."""
    return OFFSET_LIMIT // _words_per_row(_head_bucket(kind, width), KINDS[kind])


def _stager(rows, words, kind):
    """(stage, settle) for a rows x words tile of uint32 words in shared memory.

    ``stage(src, b, r0, dst, tid)`` issues ``dst[r, c] = src[b, r0 + r, c]`` as 16-byte cp.async
    copies (no registers, no wait), zero-filled beyond src's rows and words (``_words`` makes
    src's rows a multiple of 16 bytes, 16-byte aligned). Each thread owns one fixed 16-byte
    column of the tile and every ``THREADS / chunks`` th row from its first: its offsets are
    32-bit and computed once (within one batch row of src; ``variant`` refuses sequences past
    ``max_rows``), and consecutive threads copy consecutive chunks (coalesced).
    ``settle(dst, tid)``, after ``mma.cp_async_wait_all()``: for the ``tf32`` kind, the words this
    thread copied rounded to TF32 in place (its own copies are visible to it after its wait);
    nothing for the others. A block barrier must follow before anyone reads the tile."""
    chunks = words // CHUNK_WORDS
    assert chunks * CHUNK_WORDS == words and THREADS % chunks == 0
    pass_rows = THREADS // chunks
    steps = rows // pass_rows
    assert steps * pass_rows == rows
    round_tf32 = kind.name == "tf32"
    U = uint32

    @cuda.jit(device=True, inline="always")
    def stage(src, b, r0, dst, tid):
        # every expression cast back to uint32: Numba widens integer arithmetic to 64 bits
        r = U(U(tid) // U(chunks))
        c = U(U(U(tid) % U(chunks)) * U(CHUNK_WORDS))
        n, w = U(src.shape[1]), U(src.shape[2])
        base = b * src.shape[1] * src.shape[2]          # the batch row's first word
        col_bytes = U(16) if c < w else U(0)
        for step in range(steps):
            row = U(U(r0) + U(r + U(step * pass_rows)))
            nbytes = col_bytes if row < n else U(0)
            mma.cp_async_16(dst, U(r + U(step * pass_rows)), c, src,
                            base + (U(U(row * w) + c) if nbytes != U(0) else U(0)), nbytes)

    @cuda.jit(device=True, inline="always")
    def settle(dst, tid):
        if round_tf32:
            r = U(U(tid) // U(chunks))
            c = U(U(U(tid) % U(chunks)) * U(CHUNK_WORDS))
            for step in range(steps):
                for e in range(CHUNK_WORDS):
                    x = dst[U(r + U(step * pass_rows)), U(c + U(e))]
                    dst[U(r + U(step * pass_rows)), U(c + U(e))] = tf32_bits(as_float32(x))

    return stage, settle


def _mask_tile(masked, rows, cols, shared_bytes):
    """(staged, (tile rows, tile columns)): whether a masked build stages its mask tiles (rows
    x cols float32, rows padded by 16 bytes) beside tiles of ``shared_bytes``, i.e. whether
    they fit in SHARED_LIMIT together; the shape of its shared mask array (a 1 x 4 dummy when
    not staged)."""
    staged = masked and shared_bytes + rows * _stride(cols) * 4 <= SHARED_LIMIT
    return staged, ((rows, _stride(cols)) if staged else (1, CHUNK_WORDS))


def _mask_stager(rows, cols):
    """stage(mask, bm, r0, c0, dst, tid): ``dst[r, c] = mask[bm, min(r0 + r, Lm - 1), c0 + c]``
    for a rows x cols float32 tile, as 16-byte cp.async copies (``_stager``'s scheme: a fixed
    16-byte column per thread), zero-filled past the mask's columns (``_mask_log2`` pads them to
    16 bytes); rows past Lm repeat its last (a broadcast row mask: all of them). Offsets are
    64-bit: a mask slice (Lm x S) may pass 2^32 words where q, k and v do not."""
    chunks = cols // CHUNK_WORDS
    assert chunks * CHUNK_WORDS == cols and THREADS % chunks == 0
    pass_rows = THREADS // chunks
    steps = rows // pass_rows
    assert steps * pass_rows == rows
    U = uint32

    @cuda.jit(device=True, inline="always")
    def stage(mask, bm, r0, c0, dst, tid):
        r = U(U(tid) // U(chunks))
        c = U(U(U(tid) % U(chunks)) * U(CHUNK_WORDS))
        last, w = U(mask.shape[1] - 1), U(mask.shape[2])
        col = U(U(c0) + c)
        nbytes = U(16) if col < w else U(0)
        first = bm * uint64(mask.shape[1])              # the slice's first row
        for step in range(steps):
            row = min(U(U(r0) + U(r + U(step * pass_rows))), last)
            index = (first + uint64(row)) * uint64(w) + uint64(col) if nbytes != U(0) else \
                uint64(0)
            mma.cp_async_16(dst, U(r + U(step * pass_rows)), c, mask, index, nbytes)

    return stage


@cuda.jit(device=True, inline="always")
def _nothing_beside(beside, b, r0, p, tid):
    pass


def _pair_loader(stage, settle, stage_mask, staged, double, stage_beside=_nothing_beside):
    """(load, prefetch) for a streamed pair of tiles (K and V; Q and dO in dK/dV) in buffers
    xss, yss (NB x rows x words: ``double``, two buffers, else one), with ``_stager``'s stage and
    settle, and ``stage_beside(beside, b, r0, p, tid)``, which stores whatever else buffer p
    holds for rows r0.. (dK/dV: the queries' lse and delta rows) after the pair's copies are
    issued (nothing by default).

    ``load(x, y, b, r0, nxt, xss, yss, p, mask, bm, m_r0, m_c0, ms, tid, beside)`` makes buffer
    p hold rows r0.. of x and y. Single-buffered: a barrier (every thread is done with the
    tiles), the copies and, when ``staged``, the mask tile at (m_r0, m_c0) into ms, the rows
    beside, the wait, a barrier (every thread's copies landed). Double-buffered (no mask tile):
    the tile was staged by the one before it (or ``prefetch``); the wait, a barrier (every
    thread's copies landed and every thread is done with the other buffer), then the copies of
    rows nxt.. (nxt >= 0) and their rows beside into the other buffer, in flight while this
    tile computes.
    ``prefetch(x, y, b, r0, xss, yss, p, tid, beside)`` issues rows r0.. into buffer p (the
    first tile)."""
    assert not (double and staged)

    @cuda.jit(device=True, inline="always")
    def prefetch(x, y, b, r0, xss, yss, p, tid, beside):
        stage(x, b, r0, xss[p], tid)
        stage(y, b, r0, yss[p], tid)
        stage_beside(beside, b, r0, p, tid)

    @cuda.jit(device=True, inline="always")
    def load(x, y, b, r0, nxt, xss, yss, p, mask, bm, m_r0, m_c0, ms, tid, beside):
        xs, ys = xss[p], yss[p]
        if double:
            mma.cp_async_wait_all()
            settle(xs, tid)
            settle(ys, tid)
            cuda.syncthreads()
            if nxt >= 0:
                prefetch(x, y, b, nxt, xss, yss, 1 - p, tid, beside)
        else:
            cuda.syncthreads()
            stage(x, b, r0, xs, tid)
            stage(y, b, r0, ys, tid)
            if staged:
                stage_mask(mask, bm, m_r0, m_c0, ms, tid)
            stage_beside(beside, b, r0, p, tid)
            mma.cp_async_wait_all()
            settle(xs, tid)
            settle(ys, tid)
            cuda.syncthreads()

    return load, prefetch


@cuda.jit(device=True, inline="always")
def _per_tile(tid, lane, tile_start):
    """(tid, lane) plus a zero that the compiler cannot prove zero: the addresses of a tile's
    loads then count as loop-variant, so LLVM does not hoist one 64-bit address per load out of
    the tile loop and hold them all in registers (60 more registers in the forward kernel)."""
    zero = uint32(tile_start >> 48)
    return uint32(tid + zero), uint32(lane + zero)


@cuda.jit(device=True, inline="always")
def _a_frags(smem, row0, word0, lane):
    """A fragment (a0..a3) of rows row0..row0+15, halves 2*word0.. +16, from a row-major tile."""
    return mma.ldmatrix_x4(smem, row0 + (lane & 7) + ((lane >> 3) & 1) * 8,
                           word0 + (lane >> 4) * 4)


@cuda.jit(device=True, inline="always")
def _b_frags(smem, n0, word0, lane):
    """B fragments (b0, b1) of two n-tiles n0.. and n0+8.. for the k16 step at halves 2*word0..,
    from a tile whose rows are B's columns (K rows for Q K^T): ldmatrix without transpose."""
    return mma.ldmatrix_x4(smem, n0 + (lane & 7) + (lane >> 4) * 8,
                           word0 + ((lane >> 3) & 1) * 4)


@cuda.jit(device=True, inline="always")
def _bt_frags(smem, k0, word0, lane):
    """B fragments (b0, b1) of two n-tiles (halves 2*word0.. and 2*word0+8..) for the k16 step
    of rows k0..k0+15, from a tile whose rows are B's rows (V rows for P V): ldmatrix.trans."""
    return mma.ldmatrix_x4_trans(smem, k0 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                 word0 + (lane >> 4) * 4)


@cuda.jit(device=True, inline="always")
def _same(x):
    return x


@cuda.jit(device=True, inline="always")
def _split(x):
    """(big, small): x = big + small + O(2^-22 |x|), both exact in TF32."""
    big = mma.to_tf32(x)
    return big, mma.to_tf32(x - big)


@cuda.jit(device=True, inline="always")
def _mma_tf32x3(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
    """D = A B + C (m16n8k8, float32 A and B) to about float32 accuracy by three TF32 mmas of
    the big/small split: the small terms first, big x big last."""
    a0b, a0s = _split(a0)
    a1b, a1s = _split(a1)
    a2b, a2s = _split(a2)
    a3b, a3s = _split(a3)
    b0b, b0s = _split(b0)
    b1b, b1s = _split(b1)
    c0, c1, c2, c3 = mma.mma_tf32_m16n8k8(a0b, a1b, a2b, a3b, b0s, b1s, c0, c1, c2, c3)
    c0, c1, c2, c3 = mma.mma_tf32_m16n8k8(a0s, a1s, a2s, a3s, b0b, b1b, c0, c1, c2, c3)
    return mma.mma_tf32_m16n8k8(a0b, a1b, a2b, a3b, b0b, b1b, c0, c1, c2, c3)


def _float_mma(kind):
    """The TF32 kinds' mma on float32 fragments (tf32: operands already TF32-rounded)."""
    return mma.mma_tf32_m16n8k8 if kind.name == "tf32" else _mma_tf32x3


def _word_mma(kind):
    """mma(a0..a3, b0, b1, c0..c3) on uint32 A/B words as ldmatrix gives them."""
    if kind.half:
        return _HALF_OPS[kind.name][0]
    float_mma = _float_mma(kind)

    @cuda.jit(device=True, inline="always")
    def word_mma(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        return float_mma(as_float32(a0), as_float32(a1), as_float32(a2), as_float32(a3),
                         as_float32(b0), as_float32(b1), c0, c1, c2, c3)
    return word_mma


def _two_tiles(mma_op):
    """two(acc, j, a0..a3, b0..b3): C fragments j and j + 1 of ``acc`` += A times the B
    fragments (b0, b1) and (b2, b3) of two adjacent n-tiles (one ldmatrix_x4's worth)."""

    @cuda.jit(device=True, inline="always")
    def two(acc, j, a0, a1, a2, a3, b0, b1, b2, b3):
        acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3] = mma_op(
            a0, a1, a2, a3, b0, b1, acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3])
        acc[4 * j + 4], acc[4 * j + 5], acc[4 * j + 6], acc[4 * j + 7] = mma_op(
            a0, a1, a2, a3, b2, b3,
            acc[4 * j + 4], acc[4 * j + 5], acc[4 * j + 6], acc[4 * j + 7])
    return two


def _products(n_tiles, k_steps, mma_op):
    """run(acc, a, a_row0, b, lane): acc (4 * n_tiles floats) += A B^T over k_steps k steps, A
    rows a_row0.. of tile ``a`` and B^T's rows the first 8 * n_tiles rows of tile ``b``."""
    two_tiles = _two_tiles(mma_op)

    @cuda.jit(device=True, inline="always")
    def run(acc, a, a_row0, b, lane):
        for kk in range(k_steps):
            a0, a1, a2, a3 = _a_frags(a, a_row0, kk * 8, lane)
            for j in range(0, n_tiles, 2):
                b0, b1, b2, b3 = _b_frags(b, j * 8, kk * 8, lane)
                two_tiles(acc, j, a0, a1, a2, a3, b0, b1, b2, b3)
    return run


@cuda.jit(device=True, inline="always")
def _no_step(acc, x, y, z, row, lane):
    pass


def _spelled_out(step, n):
    """steps(acc, x, y, z, row, lane): ``step(i, acc, x, y, z, row, lane)`` for i = 0 .. n - 1
    as straight-line code (NVVM leaves a long loop body rolled)."""
    steps = _no_step
    for i in reversed(range(n)):
        def chain(i=i, rest=steps):
            @cuda.jit(device=True, inline="always")
            def first_then_rest(acc, x, y, z, row, lane):
                step(i, acc, x, y, z, row, lane)
                rest(acc, x, y, z, row, lane)
            return first_then_rest
        steps = chain()
    return steps


def _register_products(out_tiles, k_steps, kind):
    """run(acc, p, b, lane): acc (4 * out_tiles floats) += P B where P (16 rows, k_steps k
    steps) is a C fragment array in registers and B's rows are the rows of tile ``b``."""
    if not kind.half:
        return _register_products_tf32(out_tiles, k_steps, kind)
    mma_op, pack = _HALF_OPS[kind.name]
    two_tiles = _two_tiles(mma_op)

    @cuda.jit(device=True, inline="always")
    def run(acc, p, b, lane):
        # two C tiles packed to halves are one A fragment; B by ldmatrix.trans
        for kk in range(k_steps):
            a0 = pack(p[8 * kk], p[8 * kk + 1])
            a1 = pack(p[8 * kk + 2], p[8 * kk + 3])
            a2 = pack(p[8 * kk + 4], p[8 * kk + 5])
            a3 = pack(p[8 * kk + 6], p[8 * kk + 7])
            for j in range(0, out_tiles, 2):
                b0, b1, b2, b3 = _bt_frags(b, kk * 16, j * 4, lane)
                two_tiles(acc, j, a0, a1, a2, a3, b0, b1, b2, b3)
    return run


def _register_products_tf32(out_tiles, k_steps, kind):
    """The TF32 kinds' P B. A C tile holds P[g, 2t], P[g, 2t + 1], P[g + 8, 2t], P[g + 8, 2t +
    1]; the TF32 A layout wants columns t and t + 4. Rather than shuffle P between lanes, the k
    step runs its 8 keys in the order 0, 2, 4, 6, 1, 3, 5, 7 (the sum does not care): then A is
    (c0, c2, c1, c3) of the lane's own tile, and B's rows are taken in the same order, straight
    from shared memory (rows 2t and 2t + 1: a 32-bit element cannot use ldmatrix.trans). With a
    row pitch of 4 mod 32 words those 32 loads hit 32 banks."""
    float_mma = _float_mma(kind)
    round_a = mma.to_tf32 if kind.name == "tf32" else _same

    @cuda.jit(device=True, inline="always")
    def run(acc, p, b, lane):
        g = lane >> 2
        r = 2 * (lane & 3)
        for kk in range(k_steps):
            a0 = round_a(p[4 * kk])
            a1 = round_a(p[4 * kk + 2])
            a2 = round_a(p[4 * kk + 1])
            a3 = round_a(p[4 * kk + 3])
            for j in range(out_tiles):
                acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3] = float_mma(
                    a0, a1, a2, a3, as_float32(b[8 * kk + r, 8 * j + g]),
                    as_float32(b[8 * kk + r + 1, 8 * j + g]),
                    acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3])
    return run


def _writer(tiles, kind):
    """write(dst, b, row, acc, base, scale, t): row ``row`` of dst from elements ``base`` and
    ``base + 1`` of each of ``tiles`` C fragments (columns 8j + 2t, + 1), times ``scale``: half
    pairs into uint32 words, or float32 values."""
    if kind.half:
        pack = _HALF_OPS[kind.name][1]

        @cuda.jit(device=True, inline="always")
        def write(dst, b, row, acc, base, scale, t):
            if row < dst.shape[1]:
                for j in range(tiles):
                    word = 4 * j + t
                    if word < dst.shape[2]:
                        dst[uint64(b), uint64(row), uint64(word)] = pack(
                            acc[4 * j + base] * scale, acc[4 * j + base + 1] * scale)
        return write

    @cuda.jit(device=True, inline="always")
    def write_f32(dst, b, row, acc, base, scale, t):
        if row < dst.shape[1]:
            for j in range(tiles):
                col = 8 * j + 2 * t
                if col < dst.shape[2]:
                    dst[uint64(b), uint64(row), uint64(col)] = acc[4 * j + base] * scale
                if col + 1 < dst.shape[2]:
                    dst[uint64(b), uint64(row), uint64(col + 1)] = acc[4 * j + base + 1] * scale
    return write_f32


@cuda.jit(device=True, inline="always")
def _mask_value(ms, mr, mc, mask, bm, row, col, masked, staged):
    """The mask (log2 units: the host multiplied it by log2 e) at (row, col): from the staged
    tile ``ms`` at (mr, mc), or, in builds whose shared memory has no room for the tile
    (``_mask_tile``), from global memory clamped to the mask's extent; 0 without a mask."""
    if not masked:
        return ZERO
    if staged:
        return ms[mr, mc]
    return mask[bm, uint64(min(row, mask.shape[1] - 1)), uint64(min(col, mask.shape[2] - 1))]


@cuda.jit(device=True, inline="always")
def _masked_score(x, scale_log2, m, masked, checks, col, n_cols, hidden):
    """A score in log2 units: x * scale (log2 e) plus the mask value m (one FFMA); with
    ``checks`` (edge tiles only), -inf where ``hidden`` or col >= n_cols. scale_log2 >= 0 (the
    host flips K's sign for negative scales), so the -inf is set, never multiplied: 0 * -inf
    would be NaN."""
    if masked:
        x = cuda.fma(x, scale_log2, m)
    else:
        x *= scale_log2
    if checks:
        if col >= n_cols or hidden:
            x = NEG_INF
    return x


def _query_scores(masked, staged, checks):
    """score(s, j, e, k0, q0, row_a, row_b, t, ms, mask, bm, scale_log2, is_causal, n_keys):
    element ``e`` of C fragment ``j`` of a score tile whose rows are queries (forward, dQ; keys
    k0..): the raw score in the tiles without mask or checks (the caller folds the scale),
    else ``_masked_score`` of it with its mask value and, with ``checks``, its bounds and
    causal checks."""
    fold = not masked and not checks

    @cuda.jit(device=True, inline="always")
    def score(s, j, e, k0, q0, row_a, row_b, t, ms, mask, bm, scale_log2, is_causal, n_keys):
        x = s[4 * j + e]
        if not fold:
            row = row_a if e < 2 else row_b
            c = k0 + 8 * j + 2 * t + (e & 1)
            m = _mask_value(ms, row - q0, 8 * j + 2 * t + (e & 1), mask, bm, row, c, masked,
                            staged)
            x = _masked_score(x, scale_log2, m, masked, checks, c, n_keys,
                              is_causal != 0 and c > row)
        return x
    return score


@cuda.jit(device=True, inline="always")
def _shifted(x, scale_log2, shift, fold):
    """The exp2 argument: x * scale_log2 - shift by one FFMA when ``fold`` (x a raw score: the
    tiles without mask or checks), else x - shift (x from ``_masked_score``)."""
    return cuda.fma(x, scale_log2, -shift) if fold else x - shift


def _sweep(tile, edge_tile, step, prefetch=None):
    """sweep(ctx, edge_start, edge_end, start, end, tid, lane): ``edge_tile`` (bounds and causal
    checks) at edge_start, edge_start + step, ... below edge_end (at most BLOCK // step tiles,
    unrolled: straight-line code), then ``tile`` (no checks) over start, start + step, ... below
    end: the one loop, the hot loop. Tile order does not matter (online softmax, sums).

    Each call is ``tile(ctx, k0, next, buffer, tid, lane)``: ``next`` the start of the tile
    after it (-1 after the last) and ``buffer`` 0, 1, 0, ... when ``prefetch`` (double
    buffering: ``prefetch(ctx, k0, buffer, tid)`` stages the first tile before the sweep, each
    tile stages ``next`` into the other buffer), else always 0."""
    edges = BLOCK // step
    assert edges in (1, 2, 4)
    toggle = 0 if prefetch is None else 1

    @cuda.jit(device=True, inline="always")
    def edge(ctx, k0, edge_end, first_full, p, tid, lane):
        edge_tile(ctx, k0, k0 + step if k0 + step < edge_end else first_full, p, tid, lane)

    @cuda.jit(device=True, inline="always")
    def sweep(ctx, edge_start, edge_end, start, end, tid, lane):
        first_full = start if start < end else -1
        if toggle:
            first = edge_start if edge_start < edge_end else first_full
            if first >= 0:
                prefetch(ctx, first, 0, tid)
        p = 0
        if edge_start < edge_end:
            edge(ctx, edge_start, edge_end, first_full, p, tid, lane)
            p ^= toggle
        if edges > 1:
            if edge_start + step < edge_end:
                edge(ctx, edge_start + step, edge_end, first_full, p, tid, lane)
                p ^= toggle
        if edges > 2:
            if edge_start + 2 * step < edge_end:
                edge(ctx, edge_start + 2 * step, edge_end, first_full, p, tid, lane)
                p ^= toggle
            if edge_start + 3 * step < edge_end:
                edge(ctx, edge_start + 3 * step, edge_end, first_full, p, tid, lane)
                p ^= toggle
        for k0 in range(start, end, step):
            tz, lz = _per_tile(tid, lane, k0)
            tile(ctx, k0, k0 + step if k0 + step < end else -1, p, tz, lz)
            p ^= toggle
    return sweep


@cuda.jit(device=True, inline="always")
def _coords(mask, queries):
    """(tid, lane, warp, t, block start, b, mask batch row, row a, row b): this thread's place;
    rows a and b (= a + 8) are its two rows of the warp's 16: of queries (``queries``; the
    last query blocks start first), or of keys in dK/dV (``block_place``)."""
    tid = cuda.threadIdx.x
    lane = tid & 31
    warp = tid >> 5
    start, b = block_place(BLOCK, queries)
    row_a = start + warp * 16 + (lane >> 2)
    return tid, lane, warp, lane & 3, start, b, uint64(min(b, mask.shape[0] - 1)), row_a, row_a + 8


@cuda.jit(device=True, inline="always")
def _key_ranges(q0, n_keys, step, is_causal):
    """(edge start, edge end, 0, full end) of the key tiles a query block q0.. visits: tiles that
    end at or before n_keys and (causal) before q0 need no checks; the rest up to the causal
    limit are edge tiles."""
    full_end = (n_keys // step) * step
    key_end = n_keys
    if is_causal != 0:
        full_end = min(full_end, q0)
        key_end = min(n_keys, q0 + BLOCK)
    return full_end, key_end, 0, full_end


@cuda.jit(device=True, inline="always")
def _split_keys(edge_start, edge_end, start, end, step):
    """This block's share of its query block's key tiles: gridDim.z blocks split them (the
    causal forward's long query blocks, ``_key_splits``), block z taking the z-th of nearly
    equal runs of the full tiles [start, end), block 0 the edge tiles too: the longest share
    in the z that starts first (blocks start in linear order, z slowest). One split (z = 0 of
    1) keeps every tile."""
    splits, z = uint32(cuda.gridDim.z), uint32(cuda.blockIdx.z)
    tiles = uint32((end - start) // step)
    per = (tiles + splits - 1) // splits
    first = start + min(z * per, tiles) * step
    last = start + min((z + 1) * per, tiles) * step
    return edge_start, (edge_end if z == 0 else edge_start), first, last


def _make_forward(head, masked, kind):
    mma_op = _word_mma(kind)
    BN = TILINGS[(kind.half, head)].fwd_bn
    W, LDW, KS, NT, OT, PK = _dims(head, BN, kind)
    # tf32x3 reloads Q's A fragments from the staged Q tile per key tile (KS ldmatrix and the
    # big/small split of each) rather than holding them: held, LLVM hoists the split out of the
    # tile loop, and Q lives as 2 * 4 * KS registers (e64: 196 registers, 2 blocks per SM; 104
    # and 4 reloaded). The k steps of S = Q K^T are spelled out: as a loop no longer indexing qf,
    # NVVM leaves it rolled (e64: 89 registers but 28% more instructions per tile)
    hold_q = kind.name != "tf32x3"
    # only the builds ``_key_splits`` splits carry the split's code (the others' registers and
    # hot loops stay as they were: one f16 build spilled with it)
    split = not kind.half and not masked
    QF, SN, ON = 4 * KS if hold_q else 1, 4 * NT, 4 * OT    # fragment registers: Q, S, O
    _check_shared("fwd", head, kind, BLOCK + 2 * BN)
    (stage_q, settle_q), (stage_kv, settle_kv) = _stager(BLOCK, W, kind), _stager(BN, W, kind)
    staged, MS = _mask_tile(masked, BLOCK, BN, (BLOCK + 2 * BN) * LDW * 4)
    # double-buffered K/V where a second pair fits (unmasked builds: a mask tile would need
    # two buffers as well)
    double = not masked and (BLOCK + 4 * BN) * LDW * 4 <= SHARED_LIMIT
    NB = 2 if double else 1
    load_kv, prefetch_kv = _pair_loader(stage_kv, settle_kv, _mask_stager(BLOCK, BN), staged,
                                        double)
    fill_o, fill_s = _fill(4 * OT), _fill(4 * NT)
    pv = _register_products(OT, PK, kind)
    two_tiles = _two_tiles(mma_op)
    write = _writer(OT, kind)

    @cuda.jit(device=True, inline="always")
    def q_frags(qf, qs, warp, kk, lane):
        """The warp's Q A-fragment (a0..a3) of k step kk: held in qf, or by ldmatrix from qs."""
        if hold_q:
            return qf[4 * kk], qf[4 * kk + 1], qf[4 * kk + 2], qf[4 * kk + 3]
        return _a_frags(qs, warp * 16, kk * 8, lane)

    @cuda.jit(device=True, inline="always")
    def score_step(kk, s, qf, qs, ks, warp, lane):
        a0, a1, a2, a3 = q_frags(qf, qs, warp, kk, lane)
        for j in range(0, NT, 2):
            b0, b1, b2, b3 = _b_frags(ks, j * 8, kk * 8, lane)
            two_tiles(s, j, a0, a1, a2, a3, b0, b1, b2, b3)

    scores = _spelled_out(score_step, KS)

    def make_tile(checks):
        # no mask, no checks (the hot loop without a mask): the scale moves into the exp2's
        # argument, s * scale_log2 - max as one FFMA, and the row max is taken on raw scores
        fold = not masked and not checks
        score = _query_scores(masked, staged, checks)

        @cuda.jit(device=True, inline="always")
        def tile(ctx, k0, nxt, p, tz, lz):
            k, v, mask, qs, kss, vss, ms, qf, s, o, stats, b, bm, q0, warp, row_a, row_b, t, \
                scale_log2, is_causal, n_keys = ctx
            ks, vs = kss[p], vss[p]
            load_kv(k, v, b, k0, nxt, kss, vss, p, mask, bm, q0, k0, ms, tz, None)
            fill_s(s, ZERO)
            scores(s, qf, qs, ks, warp, lz)
            mx_a = mx_b = NEG_INF
            for j in range(NT):
                for e in range(4):
                    x = score(s, j, e, k0, q0, row_a, row_b, t, ms, mask, bm, scale_log2,
                              is_causal, n_keys)
                    if not fold:
                        s[4 * j + e] = x
                    if e < 2:
                        mx_a = max(mx_a, x)
                    else:
                        mx_b = max(mx_b, x)
            if fold:        # raw maxima: scale_log2 >= 0 keeps the order, and rounds alike
                mx_a *= scale_log2
                mx_b *= scale_log2
            m_a = max(stats[0], mma.quad_max(mx_a))
            m_b = max(stats[1], mma.quad_max(mx_b))
            use_a = ZERO if m_a == NEG_INF else m_a     # nothing visible: exp2(-inf) = 0
            use_b = ZERO if m_b == NEG_INF else m_b
            alpha_a = _exp2(stats[0] - use_a)
            alpha_b = _exp2(stats[1] - use_b)
            stats[0] = m_a
            stats[1] = m_b
            part_a = part_b = ZERO
            for j in range(NT):
                for e in range(4):
                    if e < 2:
                        p = _exp2(_shifted(s[4 * j + e], scale_log2, use_a, fold))
                        part_a += p
                    else:
                        p = _exp2(_shifted(s[4 * j + e], scale_log2, use_b, fold))
                        part_b += p
                    s[4 * j + e] = p
            stats[2] = stats[2] * alpha_a + part_a
            stats[3] = stats[3] * alpha_b + part_b
            for j in range(OT):
                o[4 * j] *= alpha_a
                o[4 * j + 1] *= alpha_a
                o[4 * j + 2] *= alpha_b
                o[4 * j + 3] *= alpha_b
            pv(o, s, vs, lz)
        return tile

    @cuda.jit(device=True, inline="always")
    def prefetch(ctx, k0, p, tid):
        k, v, _, _, kss, vss = ctx[:6]
        prefetch_kv(k, v, ctx[11], k0, kss, vss, p, tid, None)

    sweep = _sweep(make_tile(False), make_tile(True), BN, prefetch if double else None)

    def fwd(q, k, v, mask, out, lse, scale_log2, is_causal):
        qs = cuda.shared.array((BLOCK, LDW), uint32, alignment=TILE_ALIGN)
        ks = cuda.shared.array((NB, BN, LDW), uint32, alignment=TILE_ALIGN)
        vs = cuda.shared.array((NB, BN, LDW), uint32, alignment=TILE_ALIGN)
        ms = cuda.shared.array(MS, float32, alignment=TILE_ALIGN)
        qf = cuda.local.array(QF, uint32)           # this warp's Q A-fragments (hold_q)
        s = cuda.local.array(SN, float32)
        o = cuda.local.array(ON, float32)
        stats = cuda.local.array(4, float32)        # row max (log2 units) a, b; lane's row sums
        tid, lane, warp, t, q0, b, bm, row_a, row_b = _coords(mask, True)
        n_keys = k.shape[1]
        stage_q(q, b, q0, qs, tid)
        mma.cp_async_wait_all()
        settle_q(qs, tid)
        cuda.syncthreads()
        if hold_q:
            for kk in range(KS):
                qf[4 * kk], qf[4 * kk + 1], qf[4 * kk + 2], qf[4 * kk + 3] = _a_frags(
                    qs, warp * 16, kk * 8, lane)
        fill_o(o, ZERO)
        stats[0] = stats[1] = NEG_INF
        stats[2] = stats[3] = ZERO
        ctx = (k, v, mask, qs, ks, vs, ms, qf, s, o, stats, b, bm, q0, warp, row_a, row_b, t,
               scale_log2, is_causal, n_keys)
        edge_start, edge_end, start, end = _key_ranges(q0, n_keys, BN, is_causal)
        bo = b
        if split:
            edge_start, edge_end, start, end = _split_keys(edge_start, edge_end, start, end, BN)
            bo = b + cuda.blockIdx.z * cuda.gridDim.x      # split z's slice of out and lse
        sweep(ctx, edge_start, edge_end, start, end, tid, lane)
        m_a, m_b = stats[0], stats[1]
        l_a = mma.quad_sum(stats[2])
        l_b = mma.quad_sum(stats[3])
        write(out, bo, row_a, o, 0, float32(1) / l_a if l_a > ZERO else ZERO, t)
        write(out, bo, row_b, o, 2, float32(1) / l_b if l_b > ZERO else ZERO, t)
        if t == 0:
            if row_a < lse.shape[1]:
                lse[bo, row_a] = (m_a + math.log2(l_a)) * LN2 if l_a > ZERO else NEG_INF
            if row_b < lse.shape[1]:
                lse[bo, row_b] = (m_b + math.log2(l_b)) * LN2 if l_b > ZERO else NEG_INF

    return fwd


@cuda.jit(device=True, inline="always")
def _row_stats(lse, delta, b, row):
    """(lse in log2 units, delta) of a query row; lse +inf (P = 0) for padding rows and fully
    masked rows."""
    if row >= lse.shape[1]:
        return POS_INF, ZERO
    x = lse[b, row]
    return (POS_INF if x == NEG_INF else x * LOG2E), delta[b, row]


COMBINE_THREADS = (32, 8)        # (output columns, rows) a block of the split combination
COMBINE_SIGNATURE = "void(float32[:, :, ::1], float32[:, ::1], float32[:, :, ::1], float32[:, ::1])"


@cuda.jit
def _combine_splits(parts, lse_parts, out, lse):
    """out[b, i] = sum over the splits s of w_s parts[s B + b, i] / sum of w_s, w_s =
    exp(lse_s - max lse): each split's softmax-normalised output weighed by its share of the
    row's total; lse[b, i] = the log of the total (-inf, and zeros, for a row no split saw a
    key of). Thread (x, y) of a block: column x, rows y, y + 8, ... of its grid row."""
    B, L, E = out.shape
    splits = uint32(lse_parts.shape[0]) // uint32(B)
    e = cuda.blockIdx.x * COMBINE_THREADS[0] + cuda.threadIdx.x
    first = cuda.blockIdx.y * COMBINE_THREADS[1] + cuda.threadIdx.y
    if e >= E:
        return
    r = first
    while r < B * L:            # (a range with a step divides by it: a 64-bit division)
        b = uint32(r) // uint32(L)
        i = r - b * L
        m = NEG_INF
        for s in range(splits):
            m = max(m, lse_parts[s * B + b, i])
        total = acc = ZERO
        if m != NEG_INF:
            for s in range(splits):
                w = math.exp(lse_parts[s * B + b, i] - m)
                total += w
                acc += w * parts[s * B + b, i, e]
        out[b, i, e] = acc / total if total > ZERO else ZERO
        if e == 0:
            lse[b, i] = m + math.log(total) if total > ZERO else NEG_INF
        r += cuda.gridDim.y * COMBINE_THREADS[1]


def _make_bwd_dq(head, masked, kind):
    BN = TILINGS[(kind.half, head)].dq_bn
    W, LDW, KS, NT, OT, PK = _dims(head, BN, kind)
    SN, ON = 4 * NT, 4 * OT                 # fragment registers: scores, outputs
    _check_shared("bwd_dq", head, kind, 2 * BLOCK + 2 * BN)
    (stage_rows, settle_rows), (stage_kv, settle_kv) = (_stager(BLOCK, W, kind),
                                                       _stager(BN, W, kind))
    staged, MS = _mask_tile(masked, BLOCK, BN, (2 * BLOCK + 2 * BN) * LDW * 4)
    # double-buffered K/V where a second pair fits, as the forward (f16/bf16 e32)
    double = not masked and (2 * BLOCK + 4 * BN) * LDW * 4 <= SHARED_LIMIT
    NB = 2 if double else 1
    load_kv, prefetch_kv = _pair_loader(stage_kv, settle_kv, _mask_stager(BLOCK, BN), staged,
                                        double)
    fill_o, fill_s = _fill(4 * OT), _fill(4 * NT)
    scores = _products(NT, KS, _word_mma(kind))
    ds_k = _register_products(OT, PK, kind)
    write = _writer(OT, kind)

    def make_tile(checks):
        fold = not masked and not checks        # as in the forward
        score = _query_scores(masked, staged, checks)

        @cuda.jit(device=True, inline="always")
        def tile(ctx, k0, nxt, p, tz, lz):
            k, v, mask, qs, dos, kss, vss, ms, s, dp, acc, b, bm, q0, warp, row_a, row_b, t, \
                lse_a, lse_b, delta_a, delta_b, scale_log2, is_causal, n_keys = ctx
            ks, vs = kss[p], vss[p]
            load_kv(k, v, b, k0, nxt, kss, vss, p, mask, bm, q0, k0, ms, tz, None)
            fill_s(s, ZERO)
            fill_s(dp, ZERO)
            scores(s, qs, warp * 16, ks, lz)
            scores(dp, dos, warp * 16, vs, lz)
            for j in range(NT):
                for e in range(4):
                    x = score(s, j, e, k0, q0, row_a, row_b, t, ms, mask, bm, scale_log2,
                              is_causal, n_keys)
                    if e < 2:
                        s[4 * j + e] = _exp2(_shifted(x, scale_log2, lse_a, fold)) * (
                            dp[4 * j + e] - delta_a)
                    else:
                        s[4 * j + e] = _exp2(_shifted(x, scale_log2, lse_b, fold)) * (
                            dp[4 * j + e] - delta_b)
            ds_k(acc, s, ks, lz)
        return tile

    @cuda.jit(device=True, inline="always")
    def prefetch(ctx, k0, p, tid):
        k, v, _, _, _, kss, vss = ctx[:7]
        prefetch_kv(k, v, ctx[11], k0, kss, vss, p, tid, None)

    sweep = _sweep(make_tile(False), make_tile(True), BN, prefetch if double else None)

    def bwd_dq(q, k, v, mask, gout, lse, delta, gq, scale_log2, scale, is_causal):
        qs = cuda.shared.array((BLOCK, LDW), uint32, alignment=TILE_ALIGN)
        dos = cuda.shared.array((BLOCK, LDW), uint32, alignment=TILE_ALIGN)
        ks = cuda.shared.array((NB, BN, LDW), uint32, alignment=TILE_ALIGN)
        vs = cuda.shared.array((NB, BN, LDW), uint32, alignment=TILE_ALIGN)
        ms = cuda.shared.array(MS, float32, alignment=TILE_ALIGN)
        s = cuda.local.array(SN, float32)
        dp = cuda.local.array(SN, float32)
        acc = cuda.local.array(ON, float32)
        tid, lane, warp, t, q0, b, bm, row_a, row_b = _coords(mask, True)
        n_keys = k.shape[1]
        lse_a, delta_a = _row_stats(lse, delta, b, row_a)
        lse_b, delta_b = _row_stats(lse, delta, b, row_b)
        stage_rows(q, b, q0, qs, tid)
        stage_rows(gout, b, q0, dos, tid)
        mma.cp_async_wait_all()
        settle_rows(qs, tid)
        settle_rows(dos, tid)
        fill_o(acc, ZERO)
        ctx = (k, v, mask, qs, dos, ks, vs, ms, s, dp, acc, b, bm, q0, warp, row_a, row_b, t,
               lse_a, lse_b, delta_a, delta_b, scale_log2, is_causal, n_keys)
        edge_start, edge_end, start, end = _key_ranges(q0, n_keys, BN, is_causal)
        sweep(ctx, edge_start, edge_end, start, end, tid, lane)
        write(gq, b, row_a, acc, 0, scale, t)
        write(gq, b, row_b, acc, 2, scale, t)

    return bwd_dq


def _make_bwd_dkdv(head, masked, kind):
    BM = TILINGS[(kind.half, head)].dkdv_bm
    W, LDW, KS, NT, OT, PK = _dims(head, BM, kind)
    SN, ON = 4 * NT, 4 * OT                 # fragment registers: scores, outputs
    _check_shared("bwd_dkdv", head, kind, 2 * BLOCK + 2 * BM, 8 * BM)
    (stage_keys, settle_keys), (stage_rows, settle_rows) = (_stager(BLOCK, W, kind),
                                                           _stager(BM, W, kind))
    staged, MS = _mask_tile(masked, BM, BLOCK, (2 * BLOCK + 2 * BM) * LDW * 4 + 8 * BM)
    # double-buffered Q/dO (and row stats) where they fit: unmasked builds, as the forward
    double = not masked and (2 * BLOCK + 4 * BM) * LDW * 4 + 16 * BM <= SHARED_LIMIT
    NB = 2 if double else 1

    @cuda.jit(device=True, inline="always")
    def stage_row_stats(row_stats, b, i0, p, tid):
        lse, delta, lse_ss, delta_ss = row_stats
        if tid < BM:
            lse_ss[p, tid], delta_ss[p, tid] = _row_stats(lse, delta, b, i0 + tid)

    load_rows, prefetch_rows = _pair_loader(stage_rows, settle_rows, _mask_stager(BM, BLOCK),
                                            staged, double, stage_row_stats)
    fill_o, fill_s = _fill(4 * OT), _fill(4 * NT)
    scores = _products(NT, KS, _word_mma(kind))
    update = _register_products(OT, PK, kind)
    write = _writer(OT, kind)

    def make_tile(checks):
        # keys beyond k's rows need no check: their dK/dV rows are never written. Padding
        # queries have zero Q and dO rows and lse +inf: P = 0. Only causal needs a check.
        fold = not masked and not checks        # as in the forward

        @cuda.jit(device=True, inline="always")
        def tile(ctx, i0, nxt, p, tz, lz):
            q, gout, lse, delta, mask, ks, vs, qss, doss, ms, lse_ss, delta_ss, st, dpt, \
                gk_acc, gv_acc, b, bm, k0, warp, key_a, key_b, t, scale_log2, is_causal = ctx
            qs, dos, lse_s, delta_s = qss[p], doss[p], lse_ss[p], delta_ss[p]
            load_rows(q, gout, b, i0, nxt, qss, doss, p, mask, bm, i0, k0, ms, tz,
                      (lse, delta, lse_ss, delta_ss))
            fill_s(st, ZERO)
            fill_s(dpt, ZERO)
            scores(st, ks, warp * 16, qs, lz)
            scores(dpt, vs, warp * 16, dos, lz)
            for j in range(NT):
                for e in range(4):
                    r = 8 * j + 2 * t + (e & 1)         # the query, within the tile
                    query = i0 + r
                    key = key_a if e < 2 else key_b
                    x = st[4 * j + e]
                    if not fold:
                        m = _mask_value(ms, r, key - k0, mask, bm, query, key, masked, staged)
                        x = _masked_score(x, scale_log2, m, masked, checks, key, key + 1,
                                          is_causal != 0 and key > query)
                    p = _exp2(_shifted(x, scale_log2, lse_s[r], fold))
                    st[4 * j + e] = p
                    dpt[4 * j + e] = p * (dpt[4 * j + e] - delta_s[r])
            update(gv_acc, st, dos, lz)
            update(gk_acc, dpt, qs, lz)
        return tile

    @cuda.jit(device=True, inline="always")
    def prefetch(ctx, i0, p, tid):
        q, gout, lse, delta, _, _, _, qss, doss, _, lse_ss, delta_ss = ctx[:12]
        prefetch_rows(q, gout, ctx[16], i0, qss, doss, p, tid, (lse, delta, lse_ss, delta_ss))

    sweep = _sweep(make_tile(False), make_tile(True), BM, prefetch if double else None)

    def bwd_dkdv(q, k, v, mask, gout, lse, delta, gk, gv, scale_log2, scale, is_causal):
        ks = cuda.shared.array((BLOCK, LDW), uint32, alignment=TILE_ALIGN)
        vs = cuda.shared.array((BLOCK, LDW), uint32, alignment=TILE_ALIGN)
        qs = cuda.shared.array((NB, BM, LDW), uint32, alignment=TILE_ALIGN)
        dos = cuda.shared.array((NB, BM, LDW), uint32, alignment=TILE_ALIGN)
        ms = cuda.shared.array(MS, float32, alignment=TILE_ALIGN)
        lse_s = cuda.shared.array((NB, BM), float32)
        delta_s = cuda.shared.array((NB, BM), float32)
        st = cuda.local.array(SN, float32)          # S^T, then P^T
        dpt = cuda.local.array(SN, float32)         # dP^T, then dS^T
        gk_acc = cuda.local.array(ON, float32)
        gv_acc = cuda.local.array(ON, float32)
        tid, lane, warp, t, k0, b, bm, key_a, key_b = _coords(mask, False)
        n_queries = q.shape[1]
        stage_keys(k, b, k0, ks, tid)
        stage_keys(v, b, k0, vs, tid)
        mma.cp_async_wait_all()
        settle_keys(ks, tid)
        settle_keys(vs, tid)
        fill_o(gk_acc, ZERO)
        fill_o(gv_acc, ZERO)
        ctx = (q, gout, lse, delta, mask, ks, vs, qs, dos, ms, lse_s, delta_s, st, dpt, gk_acc,
               gv_acc, b, bm, k0, warp, key_a, key_b, t, scale_log2, is_causal)
        # causal: queries before k0 see no key here; those of k0..k0+63 some (edge tiles)
        edge_end = min(k0 + BLOCK, n_queries) if is_causal != 0 else k0
        start = k0 + BLOCK if is_causal != 0 else 0
        sweep(ctx, k0, edge_end, start, n_queries, tid, lane)
        write(gk, b, key_a, gk_acc, 0, scale, t)
        write(gk, b, key_b, gk_acc, 2, scale, t)
        write(gv, b, key_a, gv_acc, 0, float32(1), t)
        write(gv, b, key_b, gv_acc, 2, float32(1), t)

    return bwd_dkdv


# builds that ptxas fits in 128 registers (4 blocks of 128 threads per SM, 25% occupancy)
# without spilling when told to (launch_bounds), as (kind family, head dim, masked, pass: 0
# forward, 1 dQ, 2 dK/dV); measured offline (benchmarks/RESULTS.md). The others would spill.
BOUNDED = {("half", 32, False, 2), ("half", 32, True, 0), ("half", 64, False, 0),
           ("half", 128, False, 1), ("tf32", 32, False, 2)}


def _family(kind):
    return "half" if KINDS[kind].half else kind


def _build(head, masked, kind):
    kernels = []
    for make, name in ((_make_forward, "fwd"), (_make_bwd_dq, "bwd_dq"),
                       (_make_bwd_dkdv, "bwd_dkdv")):
        func = make(head, masked, KINDS[kind])
        func.__name__ = func.__qualname__ = (
            f"_attention_tc_{name}_kernel_{kind}_e{head}_{'mask' if masked else 'nomask'}")
        bounded = (_family(kind), head, masked, len(kernels)) in BOUNDED
        kernels.append(cuda.jit(func, **(_bounds(THREADS, 4) if bounded else {})))
    return tuple(kernels)


KIND_HEAD_DIMS = {"f16": HEAD_DIMS, "bf16": HEAD_DIMS, "tf32": (32, 64), "tf32x3": (32, 64)}
_KERNELS = {(head, masked, kind): _build(head, masked, kind)     # lazy: compiled at first launch
            for kind, heads in KIND_HEAD_DIMS.items() for head in heads
            for masked in (False, True)}
_HALF_KIND_OF_DTYPE = {"float16": "f16", "bfloat16": "bf16"}


def variant(dtype, head_q, head_v, allow_tf32=False, mem_efficient=False, rows=0):
    """The kind these kernels run for inputs of ``dtype`` with head dims ``head_q`` (q, k) and
    ``head_v`` (v), or None when they do not take them (float64, head dims past the kind's
    buckets, strict float32, or ``rows``, the longer of the query and key sequences, past
    ``max_rows``: the kernels' offsets within a slice are 32-bit, attention_cuda's 64-bit).
    ``allow_tf32`` is ``gd.backends.cuda.matmul.allow_tf32`` and ``mem_efficient``
    ``gd.backends.cuda.mem_efficient_sdp_enabled()`` (the ops layer passes both; the defaults
    keep float32 strict for direct callers).

    float16 / bfloat16: their own kinds, as PyTorch's flash backend takes both. float32 follows
    what PyTorch 2.13 runs on sm80+ (module docstring): its memory-efficient kernel when enabled
    and both head dims are multiples of 4, 3xTF32 whatever the TF32 flags: ``tf32x3``;
    otherwise its math path, whose batched GEMMs follow ``matmul.allow_tf32``: ``tf32`` when
    allowed, else None (the strict-fp32 SIMT kernels)."""
    name = np.dtype(dtype).name
    kind = _HALF_KIND_OF_DTYPE.get(name)
    if name == "float32":
        kind = "tf32x3" if mem_efficient and head_q % 4 == 0 and head_v % 4 == 0 else \
            "tf32" if allow_tf32 else None
    width = max(head_q, head_v)
    if kind is None or width > KIND_HEAD_DIMS[kind][-1]:
        return None
    if rows > max_rows(kind, width):
        return None
    return kind


def _head_bucket(kind, width):
    return next(h for h in KIND_HEAD_DIMS[kind] if h >= width)


def _bucket(q, v, kind):
    return _head_bucket(kind, max(q.shape[-1], v.shape[-1]))


def _words(xp, a, kind):
    """The kernel's view of a (B, n, d) input: uint32 words, each a float32 value or two halves,
    its rows zero-padded to a multiple of 16 bytes and its data 16-byte aligned (the kernels
    stage 16-byte cp.async chunks); a view where it can be, a padded copy for head dims that
    are not multiples of 8 halves / 4 floats (as FA2 pads them) or a misaligned view. Halves move
    as their uint16 bits: no copy kernel of the half dtype is needed (CuPy has few for
    bfloat16)."""
    if KINDS[kind].half:
        bits, per_chunk = a.view(np.uint16), 16 // 2
    else:
        bits, per_chunk = xp.ascontiguousarray(a, dtype=np.float32).view(np.uint32), 16 // 4
    bits = xp.ascontiguousarray(bits)
    pad = -bits.shape[2] % per_chunk
    if pad or backend.address(bits) % 16:
        padded = xp.zeros(bits.shape[:2] + (bits.shape[2] + pad,), bits.dtype)
        padded[:, :, :bits.shape[2]] = bits
        bits = padded
    return bits.view(np.uint32)


def _empty_out(xp, shape, kind):
    """(output buffer of ``shape``: float32, or uint16 half bits with an even last dimension;
    the array the kernel fills: the buffer, or its uint32 words)."""
    if not KINDS[kind].half:
        out = xp.empty(shape, np.float32)
        return out, out
    bits = xp.empty(shape[:2] + (shape[2] + shape[2] % 2,), np.uint16)
    return bits, bits.view(np.uint32)


def _result(xp, buffer, width, dtype):
    """The output of ``dtype`` and last dimension ``width`` from ``_empty_out``'s buffer."""
    if buffer.dtype == np.float32:
        return buffer
    return xp.ascontiguousarray(buffer[:, :, :width]).view(dtype)


def _grid(n, B):
    return attention_cuda.grid(n, BLOCK, B)


def _scales(scale):
    """(scale_log2 = |scale| log2 e, the kernels' multiplier of S, never negative: a negative
    scale runs on K negated (``_keys``); the scale; whether K is negated)."""
    return np.float32(abs(scale) * math.log2(math.e)), np.float32(scale), scale < 0


_SIGN_BITS = {True: np.uint32(0x80008000), False: np.uint32(0x80000000)}


def _keys(xp, k, kind, negate):
    """K's words (``_words``), negated (sign bits flipped: no arithmetic on halves) for a
    negative scale, so that the kernels' scale_log2 is >= 0: then the row max of scaled scores
    is the scaled max of raw ones, and a -inf (hidden) score is never multiplied by 0."""
    words = _words(xp, k, kind)
    return words ^ _SIGN_BITS[KINDS[kind].half] if negate else words


def _mask_log2(xp, mask, n_keys):
    """The additive mask as the kernels read it: float32 (Bm, Lm, S') in log2 units (they add
    it by the FFMA that scales the score), a key-broadcast mask (Sm = 1) widened to the n_keys
    keys and rows zero-padded to S' = a multiple of 16 bytes (its tiles are staged by 16-byte
    cp.async); attention_cuda's dummy without a mask."""
    if mask is None:
        return _additive_mask(xp, None)
    mask = _additive_mask(xp, mask)
    log2 = xp.zeros(mask.shape[:2] + (n_keys + -n_keys % CHUNK_WORDS,), np.float32)
    log2[:, :, :n_keys] = mask * np.float32(LOG2E)
    return log2


def _delta(xp, out, gout, kind):
    """delta = rowsum(dO * O) as (B, L) float32: attention_cuda's kernel, or for bfloat16
    (which Numba cannot type) one array expression on the widened values."""
    B, L, _ = out.shape
    if kind == "bf16":
        return (dtypes.bfloat16_to_float32(out) * dtypes.bfloat16_to_float32(gout)).sum(axis=2)
    dtype = "float16" if kind == "f16" else "float32"
    delta = xp.empty((B, L), np.float32)
    launch(_delta_kernel, _simt_signatures(dtype)[3],
           attention_cuda.grid(L, DELTA_ROWS, B), DELTA_THREADS,
           xp.ascontiguousarray(out, dtype=dtype), xp.ascontiguousarray(gout, dtype=dtype), delta)
    return delta


# The causal forward of float32 kinds splits the key tiles of each query block over two blocks
# (``_split_keys``) when all its blocks fit at once on the GPU: then the call lasts as long as
# its longest block, the last query block's walk over every key tile (session 20's H200 run:
# causal 0.370 ms against 0.376 unmasked, (4,8,1024,64)), and two blocks each walking half of
# it, combined by ``_combine_splits``, halve that. SPLIT_WAVE: the forward's blocks resident at
# once on an H100 or H200 (4 blocks of 128 threads on each of 132 SMs). Half kinds are left
# whole: their partial outputs would be rounded to 16 bits before the combination.
SPLIT_WAVE = 4 * 132
MIN_SPLIT_BLOCKS = 4             # query blocks of a sequence: shorter ones are not worth it


def _key_splits(B, L, is_causal, kind, masked=False):
    """Blocks over which each query block's key tiles are split (``_split_keys``): 2 for a
    causal unmasked float32 forward whose B x query blocks fit one wave (SPLIT_WAVE), else 1
    (PyTorch refuses a mask beside is_causal; the masked builds carry no split code)."""
    blocks = -(-L // BLOCK)
    if (is_causal and not masked and not KINDS[kind].half and blocks >= MIN_SPLIT_BLOCKS
            and B * blocks <= SPLIT_WAVE):
        return 2
    return 1


def attention_forward(q, k, v, mask, is_causal, scale, kind, out_shape=None):
    """Launch the forward kernel of ``kind`` (see ``variant``): ``(out (B, L, Ev) in q's dtype,
    lse (B, L) float32)``; ``out`` allocated in ``out_shape`` (a reshaping of (B, L, Ev)) when
    given, an array owning its memory (autograd's view checks skip it), except for half kinds
    with an odd Ev (a padded buffer then, and a view of it)."""
    xp = backend.get_array_module(q)
    B, L, _ = q.shape
    shape = (B, L, v.shape[2])
    half = KINDS[kind].half
    final = out_shape is not None and not (half and shape[2] % 2)
    if final:
        out = xp.empty(out_shape, q.dtype if half else np.float32)
        out_arg = out.reshape(shape).view(np.uint32) if half else out.reshape(shape)
    else:
        out, out_arg = _empty_out(xp, shape, kind)
    lse = xp.empty((B, L), np.float32)
    if B * L:
        fwd = _KERNELS[(_bucket(q, v, kind), mask is not None, kind)][0]
        scale_log2, _, negate = _scales(scale)
        splits = _key_splits(B, L, is_causal, kind, mask is not None)
        fills = (out_arg, lse)
        if splits > 1:       # each split's output and lse, combined below
            fills = (xp.empty((splits * B,) + shape[1:], np.float32),
                     xp.empty((splits * B, L), np.float32))
        launch(fwd, _signatures(kind)[0], _grid(L, B) + (splits,), THREADS,
               _words(xp, q, kind), _keys(xp, k, kind, negate), _words(xp, v, kind),
               _mask_log2(xp, mask, k.shape[1]), *fills, scale_log2, np.int32(is_causal))
        if splits > 1:
            rows = min(-(-B * L // COMBINE_THREADS[1]), attention_cuda.GRID_Y)
            launch(_combine_splits, COMBINE_SIGNATURE,
                   (-(-shape[2] // COMBINE_THREADS[0]), rows), COMBINE_THREADS, *fills,
                   out_arg.reshape(shape), lse)
    return (out if final else _result(xp, out, shape[2], q.dtype)), lse


def attention_backward(q, k, v, out, lse, gout, mask, is_causal, scale, kind, grads_out=None):
    """Launch the delta, dQ and dK/dV kernels of ``kind``: ``(gq, gk, gv)`` shaped and typed
    like q, k, v; float32 outputs (the TF32 kinds) into ``grads_out``'s C-contiguous arrays when
    given (the caller copies the half kinds' results into them)."""
    xp = backend.get_array_module(q)
    B, L, _ = q.shape
    S = k.shape[1]
    if grads_out is not None and not KINDS[kind].half:
        outs = tuple((g, g) for g in grads_out)
    else:
        outs = tuple(_empty_out(xp, a.shape, kind) for a in (q, k, v))
    (gq, gq_arg), (gk, gk_arg), (gv, gv_arg) = outs
    _, dq_kernel, dkdv_kernel = _KERNELS[(_bucket(q, v, kind), mask is not None, kind)]
    _, dq_sig, dkdv_sig = _signatures(kind)
    scale_log2, scale, negate = _scales(scale)
    words = (_words(xp, q, kind), _keys(xp, k, kind, negate), _words(xp, v, kind))
    if gout.dtype != q.dtype:
        gout = gout.astype(q.dtype)
    gout_words = _words(xp, gout, kind)
    lse = xp.ascontiguousarray(lse, dtype=np.float32)
    mask = _mask_log2(xp, mask, S)
    causal = np.int32(is_causal)
    if B * L:
        delta = _delta(xp, out, gout, kind)
        # dQ = scale dS K = |scale| dS K' with K' = -K when negated
        launch(dq_kernel, dq_sig, _grid(L, B), THREADS, *words, mask, gout_words, lse, delta,
               gq_arg, scale_log2, abs(scale), causal)
    else:
        delta = xp.empty((B, L), np.float32)
    if B * S:
        launch(dkdv_kernel, dkdv_sig, _grid(S, B), THREADS, *words, mask, gout_words, lse,
               delta, gk_arg, gv_arg, scale_log2, scale, causal)
    return tuple(_result(xp, g, ref.shape[2], q.dtype) for g, ref in ((gq, q), (gk, k), (gv, v)))


def _signatures(kind="f16"):
    w3 = "uint32[:, :, ::1]"
    f3, f2 = "float32[:, :, ::1]", "float32[:, ::1]"
    o3 = w3 if KINDS[kind].half else f3          # outputs: half pairs or float32 values
    fwd = f"void({w3}, {w3}, {w3}, {f3}, {o3}, {f2}, float32, int32)"
    dq = f"void({w3}, {w3}, {w3}, {f3}, {w3}, {f2}, {f2}, {o3}, float32, float32, int32)"
    dkdv = (f"void({w3}, {w3}, {w3}, {f3}, {w3}, {f2}, {f2}, {o3}, {o3}, float32, float32, "
            "int32)")
    return fwd, dq, dkdv


# (min hot-loop HMMA share, min occupancy) per (kind family, head dim) for (forward, dQ, dK/dV):
# floors just under the sm_90 figures measured offline with and without a mask (the lower of
# the two; bf16 measures as f16; BOUNDED builds must reach 25% whatever the table says), after
# i12-tc2 (benchmarks/RESULTS.md, "Tensor-core attention: folded scale, staged masks, double
# buffering"): masked builds stage their mask tiles by cp.async where they fit (masked tile loops
# 351-2,058 -> 312-1,953 instructions, f16 e64 forward 164 -> 136 registers), the scale folds
# into the exp2's FFMA, unmasked e32/e64 builds double-buffer their streamed tiles (one barrier
# per tile; the buffer select costs 12-44 instructions of it). i12-tcstage before that: tiles
# staged by 16-byte cp.async with 32-bit per-thread offsets.
# What is left: f16/bf16 e64 dQ and the TF32 e32 dQ and dK/dV still read the mask per element
# (no room for its tile in 48 KiB of static shared memory: dynamic shared memory would lift
# that), the fragments of S, dP, O or dK and dV living together in the larger builds (e128
# dK/dV: 222 registers, 3xTF32 forward 139-201), and 3xTF32's big/small split of every
# fragment. In the 3xTF32 dQ and dK/dV passes the gate's hot loop is the k-step loop of a
# product, which LLVM leaves rolled (3 mmas and the splits per step); in every other kernel it is
# the tile loop. attn-regs (session 17): the 3xTF32 forward reloads Q per key tile instead of
# holding its split (e64 196-216 -> 102-104 registers, e32 130-134 -> 91-108: 25% occupancy,
# for 5-10% more hot-loop instructions).
_BUDGETS = {
    ("half", 32): ((0.065, 0.25), (0.095, 0.3125), (0.095, 0.25)),
    ("half", 64): ((0.105, 0.1875), (0.125, 0.125), (0.135, 0.1875)),
    ("half", 128): ((0.125, 0.125), (0.145, 0.25), (0.165, 0.125)),
    ("tf32", 32): ((0.075, 0.25), (0.085, 0.1875), (0.095, 0.125)),
    ("tf32", 64): ((0.095, 0.25), (0.105, 0.25), (0.115, 0.25)),
    ("tf32x3", 32): ((0.095, 0.25), (0.125, 0.1875), (0.105, 0.125)),
    ("tf32x3", 64): ((0.1, 0.25), (0.065, 0.25), (0.065, 0.1875)),
}


def _budget(kind, head, masked, n):
    share, occupancy = _BUDGETS[(_family(kind), head)][n]
    if (_family(kind), head, masked, n) in BOUNDED:
        occupancy = max(occupancy, 0.25)
    return Budget(threads=THREADS, min_hmma_share=share, min_occupancy=occupancy)


SIGNATURES = [
    (kernel, [_signatures(kind)[n]], _budget(kind, head, masked, n))
    for (head, masked, kind), kernels in _KERNELS.items()
    for n, kernel in enumerate(kernels)
] + [(_combine_splits, [COMBINE_SIGNATURE],
      Budget(threads=COMBINE_THREADS[0] * COMBINE_THREADS[1], max_div64=0))]
