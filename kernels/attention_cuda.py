"""Flash-style attention kernels in Numba-CUDA: forward, and backward as two gathers.

Each thread owns one row (a query row in the forward and dQ kernels, a key row in the dK/dV
kernel) and keeps it, with its accumulators, in registers; the other side streams through shared
memory in tiles of ``BLOCK_K`` rows, loaded by the whole block. The forward keeps a running max
and sum per query row (online softmax) and saves the log-sum-exp; backward recomputes each
probability as ``exp(s - lse)``. No reduction crosses threads, so no shuffles (the simulator has
none) and no atomics: every output element has exactly one writer.

Head dims are compile-time constants: one kernel set per bucket of ``HEAD_DIMS``, with E and Ev
padded to the bucket by guarded loads (zeros). float32 and float16 inputs; arithmetic in float32
(every literal is cast: no fp64 PTX). Masks reach the kernels as additive float32 arrays of shape
(Bm, Lm, Sm), each dimension 1 or full; ``min(index, size - 1)`` does the broadcasting.
Conventions (fully masked rows, causal alignment) are those of ``kernels/attention.py``.
"""

import math

import numpy as np
from numba import cuda, float32

from gpudl import backend

from .attention import as_mask3

HEAD_DIMS = (16, 32, 64, 128)   # register-resident rows: above 128 the twin (on CuPy) runs
BLOCK_Q = 64                    # threads (query rows) per block: 2 warps, enough blocks per SM
BLOCK_KV = 64                   # threads (key rows) per block in the dK/dV kernel
BLOCK_K = 32                    # rows per shared tile: 2 tiles of 32 x 128 float32 = 32 KiB

NEG_INF = float32(-math.inf)
POS_INF = float32(math.inf)
ZERO = float32(0)
ONE = float32(1)


@cuda.jit(device=True, inline="always")
def _load_row(src, b, i, row, scale):
    """row[:] = src[b, i, :] * scale, zero beyond the array's extent."""
    for d in range(row.shape[0]):
        row[d] = ZERO
        if i < src.shape[1] and d < src.shape[2]:
            row[d] = float32(src[b, i, d]) * scale


@cuda.jit(device=True, inline="always")
def _load_tile(src, b, r0, tile, scale, tid, nthreads):
    """tile[:, :] = src[b, r0:r0 + rows, :] * scale by the whole block, zero-padded."""
    rows = tile.shape[0]
    cols = tile.shape[1]
    for idx in range(tid, rows * cols, nthreads):
        r = idx // cols
        c = idx - r * cols
        tile[r, c] = ZERO
        if r0 + r < src.shape[1] and c < src.shape[2]:
            tile[r, c] = float32(src[b, r0 + r, c]) * scale


@cuda.jit(device=True, inline="always")
def _dot_tile(row, tile, r):
    s = ZERO
    for d in range(row.shape[0]):
        s += row[d] * tile[r, d]
    return s


@cuda.jit(device=True, inline="always")
def _score(row, tile, r, mask, b, i, j, n_keys, is_causal):
    """row . tile[r] plus the mask at (b, i, j); -inf where key j is hidden from query i."""
    s = _dot_tile(row, tile, r)
    hidden = j >= n_keys or (is_causal != 0 and j > i)
    mv = mask[min(b, mask.shape[0] - 1), min(i, mask.shape[1] - 1), min(j, mask.shape[2] - 1)]
    if hidden or mv == NEG_INF:
        return NEG_INF
    return s + mv


def _make_kernels(head):
    """The (forward, dQ, dK/dV) kernels for head dims up to ``head``."""

    def fwd(q, k, v, mask, out, lse, scale, is_causal):
        ks = cuda.shared.array((BLOCK_K, head), float32)
        vs = cuda.shared.array((BLOCK_K, head), float32)
        qr = cuda.local.array(head, float32)
        acc = cuda.local.array(head, float32)
        sc = cuda.local.array(BLOCK_K, float32)
        tid = cuda.threadIdx.x
        n_tiles = (q.shape[1] + BLOCK_Q - 1) // BLOCK_Q
        b = cuda.blockIdx.x // n_tiles
        q0 = (cuda.blockIdx.x - b * n_tiles) * BLOCK_Q
        i = q0 + tid
        n_keys = k.shape[1]
        _load_row(q, b, i, qr, scale)
        for d in range(head):
            acc[d] = ZERO
        m = NEG_INF
        total = ZERO
        key_end = min(n_keys, q0 + BLOCK_Q) if is_causal != 0 else n_keys
        for k0 in range(0, key_end, BLOCK_K):
            _load_tile(k, b, k0, ks, ONE, tid, BLOCK_Q)
            _load_tile(v, b, k0, vs, ONE, tid, BLOCK_Q)
            cuda.syncthreads()
            m_tile = NEG_INF
            for j in range(BLOCK_K):
                s = _score(qr, ks, j, mask, b, i, k0 + j, n_keys, is_causal)
                sc[j] = s
                if s > m_tile or s != s:            # a max that keeps NaN
                    m_tile = s
            m_new = m if m >= m_tile else m_tile
            if m_new != NEG_INF:                    # else nothing visible yet: skip the tile
                alpha = math.exp(m - m_new)
                total *= alpha
                for d in range(head):
                    acc[d] *= alpha
                for j in range(BLOCK_K):
                    p = math.exp(sc[j] - m_new)
                    total += p
                    for d in range(head):
                        acc[d] += p * vs[j, d]
                m = m_new
            cuda.syncthreads()
        if i < q.shape[1]:
            inv = ONE / total if total > ZERO else ZERO
            for d in range(out.shape[2]):
                out[b, i, d] = acc[d] * inv
            lse[b, i] = m + math.log(total) if total > ZERO else NEG_INF

    def bwd_dq(q, k, v, mask, gout, lse, delta, gq, scale, is_causal):
        ks = cuda.shared.array((BLOCK_K, head), float32)
        vs = cuda.shared.array((BLOCK_K, head), float32)
        qr = cuda.local.array(head, float32)
        gor = cuda.local.array(head, float32)
        acc = cuda.local.array(head, float32)
        tid = cuda.threadIdx.x
        n_tiles = (q.shape[1] + BLOCK_Q - 1) // BLOCK_Q
        b = cuda.blockIdx.x // n_tiles
        q0 = (cuda.blockIdx.x - b * n_tiles) * BLOCK_Q
        i = q0 + tid
        n_keys = k.shape[1]
        _load_row(q, b, i, qr, scale)
        _load_row(gout, b, i, gor, ONE)
        for d in range(head):
            acc[d] = ZERO
        lse_i = POS_INF
        delta_i = ZERO
        if i < q.shape[1]:
            delta_i = delta[b, i]
            if lse[b, i] != NEG_INF:                # fully masked row: P = exp(s - inf) = 0
                lse_i = lse[b, i]
        key_end = min(n_keys, q0 + BLOCK_Q) if is_causal != 0 else n_keys
        for k0 in range(0, key_end, BLOCK_K):
            _load_tile(k, b, k0, ks, ONE, tid, BLOCK_Q)
            _load_tile(v, b, k0, vs, ONE, tid, BLOCK_Q)
            cuda.syncthreads()
            for j in range(BLOCK_K):
                p = math.exp(_score(qr, ks, j, mask, b, i, k0 + j, n_keys, is_causal) - lse_i)
                ds = p * (_dot_tile(gor, vs, j) - delta_i)
                for d in range(head):
                    acc[d] += ds * ks[j, d]
            cuda.syncthreads()
        if i < q.shape[1]:
            for d in range(gq.shape[2]):
                gq[b, i, d] = acc[d] * scale

    def bwd_dkdv(q, k, v, mask, gout, lse, delta, gk, gv, scale, is_causal):
        qs = cuda.shared.array((BLOCK_K, head), float32)
        gos = cuda.shared.array((BLOCK_K, head), float32)
        lse_s = cuda.shared.array(BLOCK_K, float32)
        delta_s = cuda.shared.array(BLOCK_K, float32)
        kr = cuda.local.array(head, float32)
        vr = cuda.local.array(head, float32)
        gkr = cuda.local.array(head, float32)
        gvr = cuda.local.array(head, float32)
        tid = cuda.threadIdx.x
        n_queries = q.shape[1]
        n_tiles = (k.shape[1] + BLOCK_KV - 1) // BLOCK_KV
        b = cuda.blockIdx.x // n_tiles
        k0 = (cuda.blockIdx.x - b * n_tiles) * BLOCK_KV
        j = k0 + tid
        _load_row(k, b, j, kr, ONE)
        _load_row(v, b, j, vr, ONE)
        for d in range(head):
            gkr[d] = ZERO
            gvr[d] = ZERO
        query_start = k0 if is_causal != 0 else 0   # causal: queries before k0 see no key here
        for i0 in range(query_start, n_queries, BLOCK_K):
            _load_tile(q, b, i0, qs, scale, tid, BLOCK_KV)
            _load_tile(gout, b, i0, gos, ONE, tid, BLOCK_KV)
            if tid < BLOCK_K:
                lse_s[tid] = POS_INF                # padding and fully masked rows: P = 0
                delta_s[tid] = ZERO
                if i0 + tid < n_queries:
                    delta_s[tid] = delta[b, i0 + tid]
                    if lse[b, i0 + tid] != NEG_INF:
                        lse_s[tid] = lse[b, i0 + tid]
            cuda.syncthreads()
            for r in range(BLOCK_K):
                s = _score(kr, qs, r, mask, b, i0 + r, j, k.shape[1], is_causal)
                p = math.exp(s - lse_s[r])
                ds = p * (_dot_tile(vr, gos, r) - delta_s[r])
                for d in range(head):
                    gvr[d] += p * gos[r, d]
                    gkr[d] += ds * qs[r, d]
            cuda.syncthreads()
        if j < k.shape[1]:
            for d in range(gk.shape[2]):
                gk[b, j, d] = gkr[d]
            for d in range(gv.shape[2]):
                gv[b, j, d] = gvr[d]

    kernels = []
    for name, func in (("fwd", fwd), ("bwd_dq", bwd_dq), ("bwd_dkdv", bwd_dkdv)):
        func.__name__ = func.__qualname__ = f"_attention_{name}_kernel_e{head}"
        kernels.append(cuda.jit(func))
    return tuple(kernels)


_KERNELS = {head: _make_kernels(head) for head in HEAD_DIMS}   # lazy: compiled at first launch


def supports(q, v):
    """Whether these kernels handle q and v (dtype and head dims); else the twin runs."""
    return q.dtype in (np.float32, np.float16) and max(q.shape[-1], v.shape[-1]) <= HEAD_DIMS[-1]


def _kernels_for(q, v):
    width = max(q.shape[-1], v.shape[-1])
    return _KERNELS[next(h for h in HEAD_DIMS if h >= width)]


def _additive_mask(xp, mask):
    """The mask as a contiguous (Bm, Lm, Sm) float32 array added to the scores."""
    if mask is None:
        return xp.zeros((1, 1, 1), np.float32)
    mask = as_mask3(mask)
    if mask.dtype == np.bool_:
        return xp.where(mask, np.float32(0), np.float32(-np.inf)).astype(np.float32)
    return xp.ascontiguousarray(mask, dtype=np.float32)


def _contiguous(xp, dtype, *arrays):
    return tuple(xp.ascontiguousarray(a, dtype=dtype) for a in arrays)


def attention_forward(q, k, v, mask, is_causal, scale):
    """Launch the forward kernel: ``(out (B, L, Ev) in q's dtype, lse (B, L) float32)``."""
    xp = backend.get_array_module(q)
    q, k, v = _contiguous(xp, q.dtype, q, k, v)
    B, L, _ = q.shape
    out = xp.empty((B, L, v.shape[2]), q.dtype)
    lse = xp.empty((B, L), np.float32)
    if B * L == 0:
        return out, lse
    fwd = _kernels_for(q, v)[0]
    grid = B * ((L + BLOCK_Q - 1) // BLOCK_Q)                 # (batch, query tile) flattened
    fwd[grid, BLOCK_Q, backend.launch_stream()](
        q, k, v, _additive_mask(xp, mask), out, lse, np.float32(scale), np.int32(is_causal))
    return out, lse


def attention_backward(q, k, v, out, lse, gout, mask, is_causal, scale):
    """Launch the dQ and dK/dV kernels: ``(gq, gk, gv)`` shaped and typed like q, k, v."""
    xp = backend.get_array_module(q)
    q, k, v, gout = _contiguous(xp, q.dtype, q, k, v, gout)
    lse = xp.ascontiguousarray(lse, dtype=np.float32)
    delta = (gout.astype(np.float32) * out.astype(np.float32)).sum(axis=-1)  # (B, L)
    B, L, _ = q.shape
    S = k.shape[1]
    gq, gk, gv = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)
    _, dq_kernel, dkdv_kernel = _kernels_for(q, v)
    stream = backend.launch_stream()
    mask = _additive_mask(xp, mask)
    conf = (np.float32(scale), np.int32(is_causal))
    if B * L:
        dq_kernel[B * ((L + BLOCK_Q - 1) // BLOCK_Q), BLOCK_Q, stream](
            q, k, v, mask, gout, lse, delta, gq, *conf)
    if B * S:
        dkdv_kernel[B * ((S + BLOCK_KV - 1) // BLOCK_KV), BLOCK_KV, stream](
            q, k, v, mask, gout, lse, delta, gk, gv, *conf)
    return gq, gk, gv


def _signatures(dtype):
    arr3 = f"{dtype}[:, :, ::1]"
    f3, f2 = "float32[:, :, ::1]", "float32[:, ::1]"
    fwd = f"void({arr3}, {arr3}, {arr3}, {f3}, {arr3}, {f2}, float32, int32)"
    dq = f"void({arr3}, {arr3}, {arr3}, {f3}, {arr3}, {f2}, {f2}, {arr3}, float32, int32)"
    dkdv = (f"void({arr3}, {arr3}, {arr3}, {f3}, {arr3}, {f2}, {f2}, {arr3}, {arr3}, "
            "float32, int32)")
    return fwd, dq, dkdv


SIGNATURES = [
    (kernel, [_signatures(dtype)[n] for dtype in ("float32", "float16")])
    for head in HEAD_DIMS
    for n, kernel in enumerate(_KERNELS[head])
]
