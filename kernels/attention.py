"""Scaled dot-product attention on raw arrays: entries, and the blockwise CPU twin.

``attention_forward(q, k, v, mask, is_causal, scale)`` computes, per batch row ``b``,
``softmax(q[b] @ k[b].T * scale + mask[b]) @ v[b]`` and the log-sum-exp of each query row, which
is all that backward needs to recompute the probabilities (flash-attention style): nothing of
size L x S is ever stored. Arrays are ``q (B, L, E)``, ``k (B, S, E)``, ``v (B, S, Ev)``; the op
layer flattens batch and head dimensions into ``B``. ``mask`` is None, a boolean array (True =
attend) or an additive float array, broadcastable to ``(B, L, S)`` with its own 3 dimensions.
``is_causal`` means PyTorch's top-left aligned ``tril(ones(L, S))``: query i sees keys j <= i.

Fully masked query rows (no key allowed) give an output row of zeros, a log-sum-exp of -inf, and
zero gradients; never NaN. NaN in the inputs propagates as NaN.

The twin walks query blocks and, inside each, key chunks with an online softmax (running max and
sum), so its working set is a few ``TILE_ELEMENTS``-sized score tiles per thread whatever L and S
are; causal attention never visits key chunks that lie wholly above the diagonal. Batch chunks
(and in the forward, query blocks) run on a small thread pool. It is written against the array
module of its inputs, so it also runs on CuPy (the GPU path uses it for float64 and for head dims
the kernels do not cover). float16 inputs are computed in float32.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gpudl import backend, cpu_threads

BLOCK_Q = 64                # query rows per block: causal work shrinks to ~(1 + 64 / L) / 2
TILE_ELEMENTS = 1 << 15     # score-tile size: 128 KiB in float32, so tiles stay in L2 cache
MIN_BLOCK_K = 64            # fewer keys per chunk makes the per-chunk NumPy overhead dominate
CPU_THREADS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count() or 1)   # the GIL caps what more threads could add
BLAS_THREADED_GEMM = 1 << 18  # OpenBLAS threads a GEMM itself above 65536 * 4 multiply-adds
GEMM_HEAVY_DIM = 64          # head dims from here on: BLAS threads the GEMMs, big key blocks
SERIAL_WORK = 1 << 20        # multiply-adds (B L S E) below which a thread hand-off costs more

_pool = []                  # [(pid, ThreadPoolExecutor)]: the twin's threads, made on first use


def attention_forward(q, k, v, mask=None, is_causal=False, scale=None):
    """Attention output and per-row log-sum-exp.

    Args:
        q, k, v: ``(B, L, E)``, ``(B, S, E)``, ``(B, S, Ev)`` arrays of one float dtype.
        mask: None, bool (True = attend) or additive float, broadcastable to ``(B, L, S)``.
        is_causal: mask out keys j > i (top-left aligned), skipping fully masked key blocks.
        scale: multiplier of ``q @ k.T``; None means ``1 / sqrt(E)``.

    Returns:
        ``(out, lse)``: ``out (B, L, Ev)`` in q's dtype, ``lse (B, L)`` in float32 (float64 for
        float64 inputs), -inf on fully masked rows (whose output is zero).
    """
    scale = _default_scale(q, scale)
    cuda_kernels = _cuda_kernels(q, v)
    if cuda_kernels is not None:
        return cuda_kernels.attention_forward(q, k, v, mask, is_causal, scale)
    return _attention_fwd_cpu(q, k, v, mask, is_causal, scale)


def attention_backward(q, k, v, out, lse, gout, mask=None, is_causal=False, scale=None):
    """Gradients ``(gq, gk, gv)`` of attention, recomputing probabilities from ``lse``.

    Arguments are those of :func:`attention_forward`, its ``(out, lse)`` and the output gradient
    ``gout (B, L, Ev)``. Returns arrays shaped and typed like q, k and v.
    """
    scale = _default_scale(q, scale)
    cuda_kernels = _cuda_kernels(q, v)
    if cuda_kernels is not None:
        return cuda_kernels.attention_backward(q, k, v, out, lse, gout, mask, is_causal, scale)
    return _attention_bwd_cpu(q, k, v, out, lse, gout, mask, is_causal, scale)


def _cuda_kernels(q, v):
    """The kernel module that should run these arrays, else None (the twin). On the GPU:
    float16 on the tensor-core kernels (attention_tc_cuda: mma.sync f16, fp32 accumulation),
    float32 on the strict-fp32 SIMT kernels (attention_cuda), float64 and head dims above the
    kernels' buckets (128) on the twin; CPU arrays always on the twin."""
    if backend.kernel_device(q) != "cuda":
        return None
    from . import attention_cuda, attention_tc_cuda
    if attention_tc_cuda.supports(q, v):
        return attention_tc_cuda
    return attention_cuda if attention_cuda.supports(q, v) else None


def as_mask3(mask):
    """A mask of 1 to 3 dimensions as a (Bm, Lm, Sm) view (leading size-1 dimensions added)."""
    return mask.reshape((1,) * (3 - mask.ndim) + mask.shape)


def _default_scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _compute_dtype(dtype):
    return np.float64 if dtype == np.float64 else np.float32


def _plan(xp, B, L, S, E):
    """(batch rows, query rows, keys) per tile, and the number of threads.

    A tile holds about ``TILE_ELEMENTS`` scores. Head dims of ``GEMM_HEAVY_DIM`` or more make
    the GEMMs the work: one thread of ours walks the tiles and BLAS threads each GEMM itself
    (as many threads as ``cpu_threads`` allows), with as many keys per tile as fit, so the
    per-tile NumPy calls stay few (64 keys per tile at d = 128 spent more time in them than in
    the GEMMs). Smaller head dims make thin GEMMs: each stays under ``BLAS_THREADED_GEMM``
    multiply-adds, where OpenBLAS would split it over threads of its own, and parallelism comes
    from our threads instead (NumPy only: its loops and BLAS release the GIL), each with at least
    one chunk of batch rows (or, in the forward, of query blocks). Below ``SERIAL_WORK`` the
    whole call runs on the calling thread.
    """
    heavy = E >= GEMM_HEAVY_DIM
    threaded = xp is np and not heavy and B * L * S * E >= SERIAL_WORK
    workers = max(1, min(CPU_THREADS, cpu_threads.count())) if threaded else 1
    bq = max(1, min(L, BLOCK_Q))
    bk_min = max(1, min(S, MIN_BLOCK_K))
    nb = max(1, min(-(-B // workers), TILE_ELEMENTS // (bq * bk_min)))
    bk = max(bk_min, TILE_ELEMENTS // (nb * bq))
    if not heavy:
        bk = min(bk, BLAS_THREADED_GEMM // (bq * max(E, 1)))
    return nb, bq, max(1, min(S, bk)), workers


def _key_end(q1, S, is_causal):
    """One past the last key that query rows below ``q1`` may see."""
    return min(S, q1) if is_causal else S


def _tile(mask, rows, q0, q1, k0, k1):
    """The part of a (Bm, Lm, Sm) mask over a tile; size-1 dimensions stay broadcast."""
    full = slice(None)
    return mask[rows if mask.shape[0] > 1 else full,
                slice(q0, q1) if mask.shape[1] > 1 else full,
                slice(k0, k1) if mask.shape[2] > 1 else full]


def _scores(xp, qs, kb, blocked, additive, is_causal, rows, q0, k0):
    """Masked scores of a tile: ``qs @ kb.T`` (qs pre-scaled), -inf where a key is hidden."""
    s = xp.matmul(qs, kb.swapaxes(1, 2))                        # (nb, bq, bk)
    q1, k1 = q0 + qs.shape[1], k0 + kb.shape[1]
    if additive is not None:
        s += _tile(additive, rows, q0, q1, k0, k1)
    if blocked is not None:
        xp.copyto(s, -np.inf, where=_tile(blocked, rows, q0, q1, k0, k1))
    if is_causal and k1 - 1 > q0:                               # tile reaches above the diagonal
        above = (xp.arange(k0, k1)[None, :] > xp.arange(q0, q1)[:, None])   # (bq, bk)
        xp.copyto(s, -np.inf, where=above)
    return s


def _prepare(q, k, v, mask, scale):
    """Compute-dtype copies (only when needed) and the mask split into blocked/additive parts."""
    ct = _compute_dtype(q.dtype)
    k = k.astype(ct, copy=False)
    v = v.astype(ct, copy=False)
    blocked = additive = None
    if mask is not None:
        mask = as_mask3(mask)
        if mask.dtype == np.bool_:
            blocked = ~mask
        else:
            additive = mask.astype(ct, copy=False)
    return ct, k, v, blocked, additive, ct(scale)


def _attention_fwd_cpu(q, k, v, mask, is_causal, scale):
    xp = backend.get_array_module(q)
    B, L, _ = q.shape
    S, Ev = k.shape[1], v.shape[2]
    ct, k, v, blocked, additive, scale = _prepare(q, k, v, mask, scale)
    if S == 0:                                                  # no key at all: fully masked
        return xp.zeros((B, L, Ev), q.dtype), xp.full((B, L), -np.inf, ct)
    nb, bq, bk, workers = _plan(xp, B, L, S, max(q.shape[2], Ev))
    if nb >= B and bq >= L and bk >= S:     # one tile: no task list, no copies into out
        o, lse = _forward_rows(xp, q.astype(ct) * scale, k, v, blocked, additive, is_causal,
                               slice(None), 0, bk)
        return o.astype(q.dtype, copy=False), lse
    out = xp.empty((B, L, Ev), q.dtype)
    lse = xp.empty((B, L), ct)

    def chunk(rows, first, step):
        for q0 in range(first * bq, L, step * bq):
            q1 = min(L, q0 + bq)
            qs = q[rows, q0:q1].astype(ct) * scale                  # (nb, bq, E)
            o, lse[rows, q0:q1] = _forward_rows(xp, qs, k[rows], v[rows], blocked, additive,
                                                is_causal, rows, q0, bk)
            out[rows, q0:q1] = o

    _map_batch_chunks(chunk, B, nb, workers, split_queries=True)
    return out, lse


def _forward_rows(xp, qs, k, v, blocked, additive, is_causal, rows, q0, bk):
    """Output and lse of one query block, online softmax over key chunks of ``bk``."""
    m = total = acc = None                      # running row max, row sum of exp, sum of p v
    for k0 in range(0, _key_end(q0 + qs.shape[1], k.shape[1], is_causal), bk):
        vb = v[:, k0:k0 + bk]
        s = _scores(xp, qs, k[:, k0:k0 + bk], blocked, additive, is_causal, rows, q0, k0)
        m_new = s.max(axis=-1) if m is None else xp.maximum(m, s.max(axis=-1))   # (nb, bq)
        m_safe = xp.where(m_new == -np.inf, 0, m_new)           # nothing seen yet: exp(-inf)=0
        s -= m_safe[..., None]
        p = xp.exp(s, out=s)
        if m is None:
            total, acc = p.sum(axis=-1), xp.matmul(p, vb)
        else:
            alpha = xp.exp(m - m_safe)
            total = total * alpha + p.sum(axis=-1)
            acc *= alpha[..., None]
            acc += xp.matmul(p, vb)
        m = m_safe
    seen = total > 0
    total = xp.where(seen, total, 1)
    return acc / total[..., None], xp.where(seen, m + xp.log(total), -np.inf)


def _attention_bwd_cpu(q, k, v, out, lse, gout, mask, is_causal, scale):
    xp = backend.get_array_module(q)
    B, L, _ = q.shape
    S = k.shape[1]
    ct, k, v, blocked, additive, scale = _prepare(q, k, v, mask, scale)
    delta = (gout.astype(ct) * out.astype(ct)).sum(axis=-1)    # D = rowsum(dO * O), (B, L)
    lse = xp.where(lse == -np.inf, np.inf, lse).astype(ct)    # fully masked rows: P = 0
    gq = xp.zeros(q.shape, ct)
    gk = xp.zeros(k.shape, ct)
    gv = xp.zeros(v.shape, ct)
    nb, bq, bk, workers = _plan(xp, B, L, S, max(q.shape[2], v.shape[2]))

    def chunk(rows, first, step):
        for q0 in range(first * bq, L, step * bq):
            q1 = min(L, q0 + bq)
            qs = q[rows, q0:q1].astype(ct) * scale                  # (nb, bq, E)
            go = gout[rows, q0:q1].astype(ct, copy=False)          # (nb, bq, Ev)
            for k0 in range(0, _key_end(q1, S, is_causal), bk):
                keys = slice(k0, k0 + bk)
                s = _scores(xp, qs, k[rows, keys], blocked, additive, is_causal, rows, q0, k0)
                s -= lse[rows, q0:q1, None]
                p = xp.exp(s, out=s)                                # (nb, bq, bk)
                gv[rows, keys] += xp.matmul(p.swapaxes(1, 2), go)
                dp = xp.matmul(go, v[rows, keys].swapaxes(1, 2))   # (nb, bq, bk)
                dp -= delta[rows, q0:q1, None]
                ds = xp.multiply(p, dp, out=dp)
                gq[rows, q0:q1] += xp.matmul(ds, k[rows, keys])
                gk[rows, keys] += xp.matmul(ds.swapaxes(1, 2), qs)

    _map_batch_chunks(chunk, B, nb, workers)
    gq *= scale
    return tuple(g.astype(q.dtype, copy=False) for g in (gq, gk, gv))


def _map_batch_chunks(chunk, B, nb, workers, split_queries=False):
    """chunk(rows, first, step) over slices of ``nb`` batch rows, each doing query blocks
    first, first + step, ...; on ``workers`` threads when there is more than one task. With
    fewer chunks than workers, ``split_queries`` deals each chunk's query blocks out round-robin
    (forward only: backward accumulates key gradients across query blocks)."""
    chunks = [slice(b0, b0 + nb) for b0 in range(0, B, nb)]
    step = workers if split_queries and len(chunks) < workers else 1
    tasks = [(rows, first, step) for rows in chunks for first in range(step)]
    if workers == 1 or len(tasks) == 1:
        for task in tasks:
            chunk(*task)
        return
    pool = _thread_pool(workers)
    for done in [pool.submit(chunk, *task) for task in tasks]:
        done.result()


def _thread_pool(workers):
    """One pool per process (made again in a forked child, whose copy has no threads)."""
    if not _pool or _pool[0][0] != os.getpid():
        _pool[:] = [(os.getpid(), ThreadPoolExecutor(workers, "gpudl-attention"))]
    return _pool[0][1]
