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

The twin cuts the (L, S) score matrix into tiles of about ``TILE_ELEMENTS`` scores (query blocks of
up to ``BLOCK_Q`` rows, key blocks of at least ``MIN_BLOCK_K``): per tile one GEMM for the scores
and one for P V (backward: one each for P^T dO, dO V^T, dS K and dS^T Q), with the softmax done in
place in the tile's buffer, reused from tile to tile; the forward runs an online softmax (running
max and sum) over the key blocks. So the working set is a few tiles per thread whatever L and S
are, and causal attention never visits key blocks that lie wholly above the diagonal. Large calls
run on ``CPU_THREADS`` threads (fewer when the machine is busy, see ``gpudl.cpu_threads``) that
take tiles as they finish, each running its GEMMs on one BLAS thread: forward tasks are query
blocks, backward tasks own batch rows (or key ranges of them) so that their key gradients need no
locks. Calls that fit one tile run on the calling thread, float32 ones (and float16) in
``attention_small`` (BLAS GEMMs around one compiled pass). The twin is written against the array
module of its inputs, so it also runs on CuPy (the GPU path uses it for float64 and for head dims
the kernels do not cover). float16 inputs are computed in float32.
"""

import functools
import math
import os
import threading

import numpy as np

from gpudl import backend, cpu_threads, dtypes

from . import attention_small

BLOCK_Q = 256               # most query rows per tile; half that with a causal mask
TILE_ELEMENTS = 1 << 16     # scores per tile: 256 KiB in float32, in L2 with its K and V blocks
MIN_BLOCK_K = 64            # fewer keys per tile make NumPy's per-call cost dominate
CPU_THREADS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count() or 1)   # the GIL caps what more threads could add
SERIAL_WORK = 1 << 21       # multiply-adds (B L S (E + Ev)) under which threads cost more

_FLOOR = 2.0 ** -40         # row sum of exp(s - shift) under which a row needs its own shift
_ONES = {}                  # dtype -> read-only vector of ones, see _ones


def attention_forward(q, k, v, mask=None, is_causal=False, scale=None, allow_tf32=False,
                      mem_efficient=False, keep_probs=False, out_shape=None):
    """Attention output and per-row log-sum-exp.

    Args:
        q, k, v: ``(B, L, E)``, ``(B, S, E)``, ``(B, S, Ev)`` arrays of one float dtype.
        mask: None, bool (True = attend) or additive float, broadcastable to ``(B, L, S)``.
        is_causal: mask out keys j > i (top-left aligned), skipping fully masked key blocks.
        scale: multiplier of ``q @ k.T``; None means ``1 / sqrt(E)``.
        keep_probs: also return the probabilities where the call computed them whole (float32
            CPU calls of one tile: at most ``TILE_ELEMENTS`` floats), else None; backward then
            skips recomputing them.
        allow_tf32, mem_efficient: ``gd.backends.cuda.matmul.allow_tf32`` and
            ``gd.backends.cuda.mem_efficient_sdp_enabled()`` (the ops layer passes them; the
            defaults keep float32 strict); only float32 on the GPU reads them (``cuda_variant``).
        out_shape: the shape to return ``out`` in, a reshaping of ``(B, L, Ev)`` (the op
            layer's batch dims); small float32 CPU calls and the cuda kernels write it in
            place, so that it owns its memory (autograd then skips its view checks; on cuda
            three overlap tests a call), others return a view.

    Returns:
        ``(out, lse)``: ``out (B, L, Ev)`` (or ``out_shape``) in q's dtype, ``lse (B, L)`` in
        float32 (float64 for float64 inputs), -inf on fully masked rows (whose output is zero);
        with ``keep_probs``, ``(out, lse, probs)``.
    """
    scale = _default_scale(q, scale)
    path = cuda_variant(q, v, allow_tf32, mem_efficient)
    if path == "simt":
        from . import attention_cuda
        result = attention_cuda.attention_forward(q, k, v, mask, is_causal, scale, out_shape)
    elif path is not None:
        from . import attention_tc_cuda
        result = attention_tc_cuda.attention_forward(q, k, v, mask, is_causal, scale, path,
                                                     out_shape)
    elif keep_probs and _small(backend.get_array_module(q), q, k, v, is_causal):
        return attention_small.forward(q, k, v, None if mask is None else as_mask3(mask),
                                       is_causal, scale, keep_probs=True, out_shape=out_shape)
    else:
        result = _attention_fwd_cpu(q, k, v, mask, is_causal, scale)
    if out_shape is not None and result[0].shape != tuple(out_shape):
        result = (result[0].reshape(out_shape), result[1])
    return (*result, None) if keep_probs else result


def attention_backward(q, k, v, out, lse, gout, mask=None, is_causal=False, scale=None,
                       probs=None, allow_tf32=False, mem_efficient=False, grads_out=None):
    """Gradients ``(gq, gk, gv)`` of attention, recomputing probabilities from ``lse`` (unless
    ``probs``, what ``attention_forward(..., keep_probs=True)`` returned, holds them).

    Arguments are those of :func:`attention_forward`, its ``(out, lse)`` and the output gradient
    ``gout (B, L, Ev)``. Returns arrays shaped and typed like q, k and v: ``grads_out`` when
    given, three C-contiguous arrays of those shapes and q's dtype (views of one buffer, say),
    which the cuda kernels write in place (fp32 outputs; the other paths copy into them).
    """
    scale = _default_scale(q, scale)
    if probs is not None:
        return _into(attention_small.backward(q, k, v, out, lse, gout,
                                              None if mask is None else as_mask3(mask),
                                              is_causal, scale, probs), grads_out)
    path = cuda_variant(q, v, allow_tf32, mem_efficient)
    if path == "simt":
        from . import attention_cuda
        return _into(attention_cuda.attention_backward(q, k, v, out, lse, gout, mask, is_causal,
                                                       scale, grads_out), grads_out)
    if path is not None:
        from . import attention_tc_cuda
        return _into(attention_tc_cuda.attention_backward(q, k, v, out, lse, gout, mask,
                                                          is_causal, scale, path, grads_out),
                     grads_out)
    return _into(_attention_bwd_cpu(q, k, v, out, lse, gout, mask, is_causal, scale), grads_out)


def _into(grads, grads_out):
    """``grads``, or ``grads_out`` holding them (copied where a path made arrays of its own)."""
    if grads_out is None:
        return grads
    for g, dst in zip(grads, grads_out):
        if g is not dst:
            dst[...] = g
    return tuple(grads_out)


def cuda_variant(q, v, allow_tf32=False, mem_efficient=False):
    """Which kernels run these arrays: a tensor-core kind of attention_tc_cuda ("f16", "bf16",
    "tf32", "tf32x3": ``attention_tc_cuda.variant``, PyTorch 2.13's precision rule), "simt"
    (attention_cuda's strict-fp32 SIMT kernels, 64-bit offsets: float32 that the rule keeps
    strict or whose head dims are past the TF32 buckets, and float16 / float32 sequences past
    ``attention_tc_cuda.max_rows``), or None: the twin (CPU arrays; on the GPU float64 and head
    dims past 128)."""
    if backend.kernel_device(q, bfloat16=True) != "cuda":
        return None
    from . import attention_cuda, attention_tc_cuda
    rows = max(q.shape[-2], v.shape[-2])
    kind = attention_tc_cuda.variant(q.dtype, q.shape[-1], v.shape[-1], allow_tf32,
                                     mem_efficient, rows)
    if kind is not None:
        return kind
    if q.dtype == dtypes.bfloat16:
        head, width = attention_tc_cuda.HEAD_DIMS[-1], max(q.shape[-1], v.shape[-1])
        if width > head:
            raise TypeError(f"attention: bfloat16 on the cuda device takes head dims up to "
                            f"{head}, got {q.shape[-1]} and {v.shape[-1]}; use float16 or float32")
        raise ValueError(f"attention: bfloat16 on the cuda device takes sequences up to "
                         f"{attention_tc_cuda.max_rows('bf16', width)} "
                         f"rows at head dim {width} (32-bit offsets), got {q.shape[-2]} (q) and "
                         f"{v.shape[-2]} (k, v); use float16 or float32")
    return "simt" if attention_cuda.supports(q, v) else None


def as_mask3(mask):
    """A mask of 1 to 3 dimensions as a (Bm, Lm, Sm) view (leading size-1 dimensions added)."""
    return mask.reshape((1,) * (3 - mask.ndim) + mask.shape)


def _default_scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _compute_dtype(dtype):
    return np.float64 if dtype == np.float64 else np.float32


def _plan(B, L, S, workers, is_causal):
    """(batch rows, query rows, keys) per tile.

    About ``TILE_ELEMENTS`` scores per tile: up to ``BLOCK_Q`` query rows and as many keys as fit
    (at least ``MIN_BLOCK_K``). Causal tiles take half the query rows: the tiles across the
    diagonal compute about ``rows / 2L`` of the work in vain, which outweighs the cost of more
    tiles. Tiles smaller than that (short heads, causal tiles) stack several heads (one batched
    GEMM instead of a NumPy call per head), as long as every worker still gets a tile.
    """
    return _plan_for(B, L, S, workers, BLOCK_Q // 2 if is_causal else BLOCK_Q, TILE_ELEMENTS,
                     MIN_BLOCK_K)


@functools.lru_cache(maxsize=256)
def _plan_for(B, L, S, workers, block_q, tile, min_block_k):
    bq = max(1, min(L, block_q))
    bk = max(1, min(S, max(min_block_k, tile // bq)))
    nb = max(1, min(-(-B // workers), tile // (bq * bk)))
    return nb, bq, bk


def _workers(xp, multiply_adds):
    """Threads for a call of this many multiply-adds: 1 below ``SERIAL_WORK`` and off NumPy."""
    if xp is not np or multiply_adds < SERIAL_WORK:
        return 1
    return max(1, min(CPU_THREADS, cpu_threads.count()))


def _key_end(q1, S, is_causal):
    """One past the last key that query rows below ``q1`` may see."""
    return min(S, q1) if is_causal else S


def _tile(mask, rows, q0, q1, k0, k1):
    """The part of a (Bm, Lm, Sm) mask over a tile; size-1 dimensions stay broadcast."""
    full = slice(None)
    return mask[rows if mask.shape[0] > 1 else full,
                slice(q0, q1) if mask.shape[1] > 1 else full,
                slice(k0, k1) if mask.shape[2] > 1 else full]


def _mask_scores(xp, s, blocked, additive, is_causal, rows, q0, k0):
    """Adds the float mask to a (nb, bq, bk) score tile in place, -inf where a key is hidden."""
    q1, k1 = q0 + s.shape[1], k0 + s.shape[2]
    if additive is not None:
        s += _tile(additive, rows, q0, q1, k0, k1)
    if blocked is not None:
        xp.copyto(s, -np.inf, where=_tile(blocked, rows, q0, q1, k0, k1))
    first_hidden = max(k0, q0 + 1)          # query q0 sees keys up to q0, the others more
    if is_causal and first_hidden < k1:     # the tile reaches above the diagonal: mask that part
        xp.copyto(s[..., first_hidden - k0:], -np.inf,
                  where=_above_diagonal(xp, first_hidden - q0, q1 - q0, k1 - first_hidden))


def _above_diagonal(xp, offset, rows, cols):
    """(rows, cols) bool, True where key ``offset + j`` lies after query ``i``: j + offset > i.
    NumPy's are shared by calls and threads (never written); CuPy's are made on the current
    device each time."""
    if xp is np:
        return _above_diagonal_host(offset, rows, cols)
    return xp.arange(offset, offset + cols)[None, :] > xp.arange(rows)[:, None]


@functools.lru_cache(maxsize=64)
def _above_diagonal_host(offset, rows, cols):
    return np.arange(offset, offset + cols)[None, :] > np.arange(rows)[:, None]


def _finite(xp, m):
    """Row maxima with 0 for rows that saw no key yet (-inf), so that exp(s - m) = 0 there."""
    if xp is np and m.min() != -np.inf:     # no hidden row: skip the copy (no sync on a GPU)
        return m
    return xp.where(m == -np.inf, 0, m)


def _prepare(q, k, v, mask, scale):
    """Compute-dtype copies (only when needed) and the mask split into blocked/additive parts."""
    ct = _compute_dtype(q.dtype)
    k = k if k.dtype == ct else k.astype(ct)
    v = v if v.dtype == ct else v.astype(ct)
    blocked = additive = None
    if mask is not None:
        mask = as_mask3(mask)
        if mask.dtype == np.bool_:
            blocked = ~mask
        else:
            additive = mask if mask.dtype == ct else mask.astype(ct)
    return ct, k, v, blocked, additive, ct(scale)


class _Scratch:
    """One thread's tile buffers, reused from tile to tile: ``get`` views the first elements of
    a flat buffer in the shape asked (contiguous, so BLAS and ufuncs write it in place). Views
    of one name share memory; the views themselves are kept, as most tiles ask the same shapes."""

    def __init__(self, xp, dtype):
        self.xp, self.dtype, self.flat, self.views = xp, dtype, {}, {}

    def get(self, name, shape):
        view = self.views.get((name, shape))
        if view is None:
            size = math.prod(shape)
            flat = self.flat.get(name)
            if flat is None or flat.size < size:
                flat = self.flat[name] = self.xp.empty(size, self.dtype)
                self.views = {key: v for key, v in self.views.items() if key[0] != name}
            view = self.views[name, shape] = flat[:size].reshape(shape)
        return view


class _Fresh:
    """A stand-in for ``_Scratch`` that lets each NumPy call allocate (one-tile calls)."""

    @staticmethod
    def get(name, shape):
        return None


def _one_tile(xp, B, L, S, E, Ev, is_causal):
    """Whether the call runs as one tile (on the calling thread)."""
    if B == 0 or L == 0 or S == 0:
        return False
    nb, bq, bk = _plan(B, L, S, _workers(xp, B * L * S * (E + Ev)), is_causal)
    return nb >= B and bq >= L and bk >= S


def _small(xp, q, k, v, is_causal):
    """Whether attention_small runs the call: one tile of NumPy arrays computed in float32."""
    if xp is not np:
        return False
    B, L, E = q.shape
    S, Ev = k.shape[1], v.shape[2]
    if B * L * S * (E + Ev) < SERIAL_WORK:          # one worker whatever the load: the answer
        return _small_serial(B, L, S, E, Ev, q.dtype, is_causal,    # is kept per shapes
                             BLOCK_Q, TILE_ELEMENTS, MIN_BLOCK_K)
    return _compute_dtype(q.dtype) is np.float32 and _one_tile(xp, B, L, S, E, Ev, is_causal)


@functools.lru_cache(maxsize=256)
def _small_serial(B, L, S, E, Ev, dtype, is_causal, *tiling):
    """_small's answer below SERIAL_WORK (``tiling``: the constants it reads, in the key for
    tests that change them)."""
    return (_compute_dtype(dtype) is np.float32
            and _one_tile(np, B, L, S, E, Ev, is_causal))


def _attention_fwd_cpu(q, k, v, mask, is_causal, scale):
    xp = backend.get_array_module(q)
    if _small(xp, q, k, v, is_causal):
        return attention_small.forward(q, k, v, None if mask is None else as_mask3(mask),
                                       is_causal, scale)
    B, L, E = q.shape
    S, Ev = k.shape[1], v.shape[2]
    ct, k, v, blocked, additive, scale = _prepare(q, k, v, mask, scale)
    if S == 0 or B == 0 or L == 0:                              # no key at all: fully masked
        return xp.zeros((B, L, Ev), q.dtype), xp.full((B, L), -np.inf, ct)
    workers = _workers(xp, B * L * S * (E + Ev))
    nb, bq, bk = _plan(B, L, S, workers, is_causal)
    if nb >= B and bq >= L and bk >= S:     # one tile: no tasks, no scratch, no copies into out
        qs = xp.multiply(q, scale, dtype=ct)
        o, lse = _forward_block(xp, qs, k, v, blocked, additive, is_causal, slice(None), 0,
                                bk, _Fresh)
        return o.astype(q.dtype, copy=False), lse
    out = xp.empty((B, L, Ev), q.dtype)
    lse = xp.empty((B, L), ct)
    tasks = [(slice(b0, b0 + nb), q0) for b0 in range(0, B, nb) for q0 in range(0, L, bq)]
    if is_causal:                           # the longest key ranges first: threads end together
        tasks.reverse()

    def task(scratch, rows, q0):
        q1 = min(L, q0 + bq)
        block = q[rows, q0:q1]
        qs = xp.multiply(block, scale, out=scratch.get("q", block.shape), dtype=ct)
        _, lse[rows, q0:q1] = _forward_block(xp, qs, k[rows], v[rows], blocked, additive,
                                             is_causal, rows, q0, bk, scratch,
                                             out=out[rows, q0:q1])

    _run(xp, ct, tasks, task, workers)
    return out, lse


def _forward_block(xp, qs, k, v, blocked, additive, is_causal, rows, q0, bk, scratch, out=None):
    """Output rows (written into ``out`` when given) and lse of one query block ``qs``
    (pre-scaled), with an online softmax over key blocks of ``bk``.

    The exponent's shift is one number per block, the largest score seen so far, not one per
    row: a whole-tile maximum and a scalar subtraction cost a fifth of row maxima and a
    broadcast subtraction, and row sums come from a GEMM with ones. A shift above a row's own
    maximum only scales that row's terms, which cancels in the division, unless every term of
    the row falls far down (a row of much lower scores than the rest, hidden keys, inf or NaN):
    rows whose sum ends under ``_FLOOR`` send the block to :func:`_forward_rows`.
    """
    if xp is not np:                        # the shift's value would cost a device sync
        return _forward_rows(xp, qs, k, v, blocked, additive, is_causal, rows, q0, bk, out)
    nb, bq, _ = qs.shape
    key_end = _key_end(q0 + bq, k.shape[1], is_causal)
    ones = _ones(qs.dtype, min(bk, key_end))
    masked = is_causal or blocked is not None or additive is not None
    shift = -np.inf
    total = acc = None                      # row sums of exp(s - shift), sums of exp(s - shift) v
    for k0 in range(0, key_end, bk):
        k1 = min(key_end, k0 + bk)
        kb, vb = (k, v) if k1 - k0 == k.shape[1] else (k[:, k0:k1], v[:, k0:k1])
        s = xp.matmul(qs, kb.swapaxes(1, 2), out=scratch.get("s", (nb, bq, k1 - k0)))
        if masked:
            _mask_scores(xp, s, blocked, additive, is_causal, rows, q0, k0)
        top = np.fmax.reduce(s, axis=None)                      # NaN only if all of s is
        if top > shift:
            if total is not None:           # rescale what was summed under the old shift
                alpha = np.exp(shift - top)
                total *= alpha
                acc *= alpha
            shift = top
        elif shift == -np.inf:              # nothing visible yet (or only NaN)
            if top == top:
                continue
            break
        s -= shift
        p = xp.exp(s, out=s)
        row_sums = xp.matmul(p, ones if k1 - k0 == ones.size else ones[:k1 - k0])
        pv = xp.matmul(p, vb, out=scratch.get("acc" if acc is None else "pv",
                                              (nb, bq, v.shape[2])))
        if total is None:
            total, acc = row_sums, pv
        else:
            total += row_sums
            acc += pv
    if total is None or not total.min() >= _FLOOR:       # NaN fails it too
        return _forward_rows(xp, qs, k, v, blocked, additive, is_causal, rows, q0, bk, out,
                             scratch)
    lse = xp.log(total)
    lse += shift
    return xp.divide(acc, total[..., None], out=out), lse


def _forward_rows(xp, qs, k, v, blocked, additive, is_causal, rows, q0, bk, out=None,
                  scratch=_Fresh):
    """:func:`_forward_block` with a shift per row, each row's own running maximum: exact for
    any scores (fully hidden rows give zeros and an lse of -inf), at the price of row
    reductions and broadcasts."""
    nb, bq, _ = qs.shape
    key_end = _key_end(q0 + bq, k.shape[1], is_causal)
    m = total = acc = None                  # running row max, row sum of exp, sum of p v
    for k0 in range(0, key_end, bk):
        k1 = min(key_end, k0 + bk)
        s = xp.matmul(qs, k[:, k0:k1].swapaxes(1, 2), out=scratch.get("s", (nb, bq, k1 - k0)))
        _mask_scores(xp, s, blocked, additive, is_causal, rows, q0, k0)
        m_new = s.max(axis=-1)                                  # (nb, bq)
        if m is not None:
            m_new = xp.maximum(m, m_new, out=m_new)
        shift = _finite(xp, m_new)
        s -= shift[..., None]
        p = xp.exp(s, out=s)
        pv = xp.matmul(p, v[:, k0:k1], out=scratch.get("acc" if m is None else "pv",
                                                       (nb, bq, v.shape[2])))
        if m is None:
            total, acc = p.sum(axis=-1), pv
        else:
            alpha = xp.exp(m - shift)                           # m = -inf: nothing to rescale
            total *= alpha
            total += p.sum(axis=-1)
            acc *= alpha[..., None]
            acc += pv
        m = m_new
    shift = _finite(xp, m)
    seen = total > 0
    total = xp.where(seen, total, 1)
    return (xp.divide(acc, total[..., None], out=out),
            xp.where(seen, shift + xp.log(total), -np.inf))


def _ones(dtype, n):
    """A read-only vector of ``n`` ones (row sums as a GEMM), shared by calls and threads."""
    have = _ONES.get(dtype)
    if have is None or have.size < n:
        have = np.ones(max(n, 1024), dtype)
        have.flags.writeable = False
        _ONES[dtype] = have
    return have[:n]


def _attention_bwd_cpu(q, k, v, out, lse, gout, mask, is_causal, scale):
    xp = backend.get_array_module(q)
    if _small(xp, q, k, v, is_causal):
        return attention_small.backward(q, k, v, out, lse, gout,
                                        None if mask is None else as_mask3(mask), is_causal, scale)
    B, L, E = q.shape
    S, Ev = k.shape[1], v.shape[2]
    ct, k, v, blocked, additive, scale = _prepare(q, k, v, mask, scale)
    gout = gout if gout.dtype == ct else gout.astype(ct)
    ones = _ones(ct, Ev) if xp is np else xp.ones(Ev, ct)     # D = rowsum(dO * O) = (dO * O) 1
    lse = lse if lse.dtype == ct else lse.astype(ct)
    if xp is not np or lse.size and lse.min() == -np.inf:
        lse = xp.where(lse == -np.inf, np.inf, lse)             # fully masked rows: P = 0
    workers = _workers(xp, B * L * S * (E + Ev))
    nb, bq, bk = _plan(B, L, S, workers, is_causal)
    if nb >= B and bq >= L and bk >= S and L and S:      # one tile: no tasks, no scratch
        qs = xp.multiply(q, scale, dtype=ct)
        p, ds = _probs_and_score_grads(xp, qs, gout, _row_terms(xp, gout, out, ones, _Fresh), k,
                                       v, lse, blocked, additive, is_causal, slice(None), 0, 0,
                                       _Fresh)
        gq = xp.matmul(ds, k)
        gq *= scale
        return (gq.astype(q.dtype, copy=False),
                xp.matmul(ds.swapaxes(1, 2), qs).astype(q.dtype, copy=False),
                xp.matmul(p.swapaxes(1, 2), gout).astype(q.dtype, copy=False))
    bounds = _key_ranges(-(-B // nb), workers, L, S, is_causal)
    splits = len(bounds) - 1
    # Without a causal mask every query block visits the same key blocks, the first one writes
    # their gradients and the others add to them; causal tiles vary, and keys past L are never
    # visited: zeros to add to.
    fill = _zeros if is_causal or L == 0 or S == 0 else _empty
    gk, gv = fill(xp, k.shape, ct), fill(xp, v.shape, ct)
    # A query gradient part is written first by its first key block, unless causal query blocks
    # see none of its keys (parts after the first).
    gqs = [(_zeros if is_causal and c or L == 0 or S == 0 else _empty)(xp, q.shape, ct)
           for c in range(splits)]
    tasks = [(slice(b0, b0 + nb), bounds[c], bounds[c + 1], gqs[c])
             for b0 in range(0, B, nb) for c in range(splits)]

    def task(scratch, rows, c0, c1, gq):
        blocks = [(k0, min(c1, k0 + bk)) for k0 in range(c0, c1, bk)]
        per_block = [(k[rows, k0:k1], v[rows, k0:k1], gk[rows, k0:k1], gv[rows, k0:k1])
                     for k0, k1 in blocks]
        for q0 in range(0, L, bq):
            q1 = min(L, q0 + bq)
            key_end = min(c1, _key_end(q1, S, is_causal))
            if key_end <= c0:
                continue
            block, go = q[rows, q0:q1], gout[rows, q0:q1]           # (nb, bq, E), (nb, bq, Ev)
            qb = xp.multiply(block, scale, out=scratch.get("q", block.shape), dtype=ct)
            delta_b = _row_terms(xp, go, out[rows, q0:q1], ones, scratch)
            lse_b, gq_b = lse[rows, q0:q1], gq[rows, q0:q1]
            keys_first = q0 == 0 and not is_causal
            for (k0, k1), (kb, vb, gk_b, gv_b) in zip(blocks, per_block):
                if k0 >= key_end:
                    break
                if k1 > key_end:                # causal: the block's keys past the diagonal
                    kb, vb, gk_b, gv_b = (a[:, :key_end - k0] for a in (kb, vb, gk_b, gv_b))
                p, ds = _probs_and_score_grads(xp, qb, go, delta_b, kb, vb, lse_b, blocked,
                                               additive, is_causal, rows, q0, k0, scratch)
                _gemm_into(xp, gv_b, p.swapaxes(1, 2), go, keys_first, scratch, "gv")
                _gemm_into(xp, gk_b, ds.swapaxes(1, 2), qb, keys_first, scratch, "gk")
                _gemm_into(xp, gq_b, ds, kb, k0 == c0 and not (is_causal and c0), scratch, "gq")

    _run(xp, ct, tasks, task, workers)
    gq = gqs[0]
    for part in gqs[1:]:
        gq += part
    gq *= scale
    return tuple(g.astype(q.dtype, copy=False) for g in (gq, gk, gv))


def _key_ranges(chunks, workers, L, S, is_causal):
    """Bounds of the key ranges each backward task of a batch chunk takes: all keys, unless the
    chunks do not share out evenly over the workers; then the keys are split too (each split
    sums its own query gradient, added up at the end), into ranges of equal work: causal key j
    is seen by L - j queries, so the causal ranges widen towards the end."""
    splits = 1 if chunks % workers == 0 else -(-workers // math.gcd(chunks, workers))
    seen = min(S, L) if is_causal else S    # causal keys from L on are seen by no query
    splits = max(1, min(splits, seen // MIN_BLOCK_K))
    if splits == 1:
        return [0, S]
    if is_causal:                           # work before x ~ x L - x^2 / 2 of seen L - seen^2 / 2
        total = seen * L - seen * seen / 2
        inner = [L - math.sqrt(L * L - 2 * total * i / splits) for i in range(1, splits)]
    else:
        inner = [S * i / splits for i in range(1, splits)]
    return [0] + [round(x) for x in inner] + [S]


def _row_terms(xp, go, out, ones, scratch):
    """D = rowsum(dO * O) as (nb, bq, 1), the row sum as a GEMV with ``ones``."""
    prod = xp.multiply(go, out, out=scratch.get("o", go.shape), dtype=go.dtype)
    return xp.matmul(prod, ones)[..., None]


def _probs_and_score_grads(xp, qs, go, delta, k, v, lse, blocked, additive, is_causal,
                           rows, q0, k0, scratch):
    """(P, dS) of one tile: P = exp(qs k^T + mask - lse), dS = P * (dO v^T - D)."""
    s = xp.matmul(qs, k.swapaxes(1, 2), out=scratch.get("s", qs.shape[:2] + k.shape[1:2]))
    if is_causal or blocked is not None or additive is not None:
        _mask_scores(xp, s, blocked, additive, is_causal, rows, q0, k0)
    s -= lse[..., None]
    p = xp.exp(s, out=s)                                        # (nb, bq, bk)
    dp = xp.matmul(go, v.swapaxes(1, 2), out=scratch.get("dp", s.shape))
    dp -= delta
    return p, xp.multiply(p, dp, out=dp)


def _empty(xp, shape, dtype):
    return xp.empty(shape, dtype)


def _zeros(xp, shape, dtype):
    """Zeros written into ``empty`` memory: large ``zeros`` get fresh pages from the OS, whose
    first-touch faults cost more than the fill (and serialise threads that touch them)."""
    out = xp.empty(shape, dtype)
    out.fill(0)
    return out


def _gemm_into(xp, target, a, b, first, scratch, name):
    """target = a @ b when ``first``, else target += a @ b (through a scratch buffer)."""
    if first:
        xp.matmul(a, b, out=target)
    else:
        target += xp.matmul(a, b, out=scratch.get(name, target.shape))


def _run(xp, dtype, tasks, task, workers):
    """task(scratch, *args) for every args of ``tasks``: on the calling thread, or on ``workers``
    threads (the calling one among them) that each take the next task when done with one, with
    BLAS on one thread meanwhile so that their GEMMs run side by side (cpu_threads), each thread
    with scratch buffers of its own."""
    if workers == 1 or len(tasks) == 1:
        scratch = _Scratch(xp, dtype) if len(tasks) > 1 else _Fresh
        for args in tasks:
            task(scratch, *args)
        return
    mine = threading.local()

    def run_one(args):
        if not hasattr(mine, "scratch"):
            mine.scratch = _Scratch(xp, dtype)
        task(mine.scratch, *args)
    cpu_threads.map_serial_blas(run_one, tasks, workers)
