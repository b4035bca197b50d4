"""Attention for small float32 CPU calls: the GEMMs in BLAS, everything between them in one
compiled call.

The blocked twin (attention.py) runs a call that fits one tile as about a dozen NumPy calls
around its GEMMs (scale, maximum, shift, exp, row sums, log, division, ...); on a small call
(a few heads of 64 positions) each costs about a microsecond, as much as the arithmetic. Here
the forward is ``S = Q K^T`` (BLAS), one Numba call that turns S into the probabilities P in
place (scale, mask, each row's own maximum, exp, sum, division) and writes the log-sum-exp, and
``P V`` (BLAS); the backward is ``dP = dO V^T`` (BLAS), one Numba call that turns dP into
``dS = scale P (dP - D)``, and the three gradient GEMMs, with P the forward's when the caller
kept it (it is small here: at most one tile), else recomputed from the log-sum-exp (one more
GEMM and Numba call). Numba's own loops would be slower GEMMs than BLAS's; they only replace the
elementwise NumPy calls. Same formulas as the twin (PyTorch's), sums in another order.

NumPy's SIMD ``exp`` is not reachable from Numba (no SVML here; a libm call per score costs
five times more), so ``_exp_shifted`` computes it with Cephes' float32 polynomial (relative error
under 1e-7, below NumPy's own) in loops that vectorise.

Arrays are float32 ``q (B, L, E)``, ``k (B, S, E)``, ``v (B, S, Ev)``; a mask is a (Bm, Lm, Sm)
array, bool (True = attend) or additive float32, size-1 dimensions broadcast. Fully masked rows
give zeros and an lse of -inf (and zero gradients); NaN propagates through its row.
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

NO_MASK, BOOL_MASK, FLOAT_MASK = 0, 1, 2
_NO_BOOL = np.ones((1, 1, 1), np.bool_)         # the mask arguments of an unmasked call
_NO_FLOAT = np.zeros((1, 1, 1), np.float32)

# Cephes' expf: exp(y) = 2^t exp(r), t = round(y / ln 2), r = y - t ln 2 (ln 2 in two parts).
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_LOW = np.float32(-87.3)        # below: exp underflows float32's normal range, the result is 0
_HIGH = np.float32(88.0)        # arguments above are taken as 88 (2^t must stay a float32)
_INF = np.float32(np.inf)
_P0, _P1 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3)
_P2, _P3 = np.float32(8.3334519073e-3), np.float32(4.1665795894e-2)
_P4, _P5 = np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)


def forward(q, k, v, mask, is_causal, scale, keep_probs=False, out_shape=None):
    """``(out, lse)`` of attention, as ``attention.attention_forward``: q, k, v NumPy arrays of
    one float dtype computed in float32 (out in q's dtype, lse float32), mask None or (Bm, Lm,
    Sm), ``scale`` a float. ``keep_probs``: ``(out, lse, P)``, P the (B, L, S) float32
    probabilities, for :func:`backward`. ``out_shape``: out's shape, a reshaping of
    (B, L, Ev), written in place (float32) so that out owns its memory."""
    q32, k32, v32 = _f32(q), _f32(k), _f32(v)
    p = np.matmul(q32, k32.swapaxes(1, 2))                      # (B, L, S)
    lse = np.empty(q.shape[:2], np.float32)
    if mask is None:
        _softmax_unmasked(p, scale, is_causal, lse)
    else:
        _softmax_rows(p, np.float32(scale), *_mask_arguments(mask), is_causal, lse)
    if out_shape is not None and q.dtype == np.float32:
        out = np.empty(out_shape, np.float32)
        np.matmul(p, v32, out=out.reshape(p.shape[:2] + v.shape[2:]))
    else:
        out = np.matmul(p, v32)
        out = out if out.dtype == q.dtype else out.astype(q.dtype)
        out = out if out_shape is None else out.reshape(out_shape)
    return (out, lse, p) if keep_probs else (out, lse)


def backward(q, k, v, out, lse, gout, mask, is_causal, scale, probs=None):
    """``(gq, gk, gv)`` of attention, as ``attention.attention_backward``, in the inputs'
    dtype (arguments as in :func:`forward`, plus its results and the output gradient); P is
    recomputed from ``lse`` unless ``probs`` (forward's, never written here) is given."""
    q32, k32, v32, out32 = (_f32(a) for a in (q, k, v, out))
    go32 = np.ascontiguousarray(_f32(gout))     # a stride-0 gradient (of a sum) slows matmul
    scale = np.float32(scale)
    p = probs
    if p is None:
        blocked, additive, kind = _mask_arguments(mask)
        p = np.matmul(q32, k32.swapaxes(1, 2))                  # S, then P
        _probs_again(p, _f32(lse), scale, blocked, additive, kind, is_causal)
    ds = np.matmul(go32, v32.swapaxes(1, 2))                    # dP, then dS
    _score_grads(p, ds, go32, out32, scale)
    grads = (np.matmul(ds, k32), np.matmul(ds.swapaxes(1, 2), q32),
             np.matmul(p.swapaxes(1, 2), go32))
    return tuple(g.astype(q.dtype, copy=False) for g in grads)


def _f32(a):
    return a if a.dtype == np.float32 else a.astype(np.float32)


def _mask_arguments(mask):
    """(blocked, additive, kind) for the compiled calls, from a (Bm, Lm, Sm) mask or None."""
    if mask is None:
        return _NO_BOOL, _NO_FLOAT, NO_MASK
    mask = np.ascontiguousarray(mask)
    if mask.dtype == np.bool_:
        return mask, _NO_FLOAT, BOOL_MASK
    return _NO_BOOL, mask.astype(np.float32, copy=False), FLOAT_MASK


@intrinsic
def _float32_of_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits`` (LLVM's bitcast, free in a register)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.int32), codegen


@njit(cache=True, fastmath={"contract"})
def _exp_rows(x, rows, scale, shifts):
    """x[r, j] = exp(x[r, j] * scale - shifts[r]) in place for the ``rows`` rows of a flat
    float32 buffer. Results under exp(-87.3) (and those of -inf) are 0, NaN stays NaN; arguments
    above 88 are taken as 88 (here they are scores minus their row's maximum or log-sum-exp: at
    most 0 or a rounding above it).

    2^t comes from its bit pattern, so the loop has no calls or branches and vectorises;
    ``contract`` lets the polynomial's multiply-adds fuse (fewer instructions, more accurate)."""
    n = x.size // rows
    for row in range(rows):
        o, shift = row * n, shifts[row]
        for j in range(n):
            y = x[o + j] * scale - shift
            c = y if y > _LOW else _LOW                 # NaN and -inf take _LOW here
            c = c if c < _HIGH else _HIGH
            t = np.int32(c * _LOG2E + np.float32(128.5)) - 128     # round(c / ln 2)
            tf = np.float32(t)
            r = c - tf * _LN2_HI - tf * _LN2_LO
            e = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
            e = (e * r * r + r + np.float32(1.0)) * _float32_of_bits(np.int32((t + 127) << 23))
            x[o + j] = e if y >= _LOW else (y if y != y else np.float32(0.0))


@njit(cache=True)
def _mask_scores(s, blocked, additive, kind, is_causal):
    """-inf where a key is hidden from a query (causal: keys after it; bool mask False), the
    additive mask added; s (B, L, S) of scaled scores, in place."""
    B, L, S = s.shape
    for b in range(B):
        for i in range(L):
            row = s[b, i]
            if is_causal:
                for j in range(min(S, i + 1), S):
                    row[j] = -_INF
            if kind == BOOL_MASK:
                mrow = blocked[b if blocked.shape[0] > 1 else 0, i if blocked.shape[1] > 1 else 0]
                if mrow.size > 1:
                    for j in range(S):
                        row[j] = row[j] if mrow[j] else -_INF
                elif not mrow[0]:
                    row[:] = -_INF
            elif kind == FLOAT_MASK:
                mrow = additive[b if additive.shape[0] > 1 else 0,
                                i if additive.shape[1] > 1 else 0]
                if mrow.size > 1:
                    for j in range(S):
                        row[j] += mrow[j]
                else:
                    add = mrow[0]
                    for j in range(S):
                        row[j] += add


@njit(cache=True)
def _scale_if_masked(s, scale, blocked, additive, kind, is_causal):
    """With a mask (or causal), scales s and applies the mask in place and returns 1, the
    scale left to apply; without, leaves s and returns ``scale`` (the exp pass applies it)."""
    if not is_causal and kind == NO_MASK:
        return scale
    flat = s.reshape(s.size)
    for j in range(flat.size):
        flat[j] *= scale
    _mask_scores(s, blocked, additive, kind, is_causal)
    return np.float32(1.0)


@njit(cache=True, fastmath={"reassoc"})
def _softmax_rows(s, scale, blocked, additive, kind, is_causal, lse):
    """s (B, L, S) of raw scores q.k becomes P in place; lse[b, i] = log sum_j exp(scaled s).

    Passes over rows or the whole buffer, without calls inside the row loops (a call per row
    costs as much as the row's arithmetic): the mask (scaling first), each row's maximum, exp of
    the shifted (and scaled) scores, row sums and the normalisation. The maximum runs on the
    int32 patterns, mapped so that they order as their floats: integer maxima vectorise, float
    ones do not. ``reassoc`` lets the row sums run in vector lanes (same order of error as
    BLAS); nothing else here has more than one operation to reorder."""
    B, L, S = s.shape
    R = B * L
    flat = s.reshape(R * S)
    keys = flat.view(np.int32)
    scale = _scale_if_masked(s, scale, blocked, additive, kind, is_causal)
    top = np.empty(R, np.int32)
    for r in range(R):
        o = r * S
        m = np.int32(-2139095041)                 # the key of -inf
        for j in range(S):
            x = keys[o + j]
            m = max(m, x ^ ((x >> 31) & np.int32(0x7FFFFFFF)))
        top[r] = m ^ ((m >> 31) & np.int32(0x7FFFFFFF))   # back to the float's pattern
    shifts = top.view(np.float32)
    for r in range(R):                          # the largest scaled score (scale > 0)
        shifts[r] = shifts[r] * scale if shifts[r] != -_INF else 0.0   # none visible: P = 0
    _exp_rows(flat, R, scale, shifts)
    lse_flat = lse.reshape(R)
    for r in range(R):
        o = r * S
        total = np.float32(0.0)
        for j in range(S):
            total += flat[o + j]
        if total == 0.0:                        # fully masked row: zeros, lse -inf
            lse_flat[r] = -_INF
            continue
        lse_flat[r] = shifts[r] + np.float32(math.log(total))
        inverse = np.float32(1.0) / total
        for j in range(S):
            flat[o + j] *= inverse


@njit(cache=True)
def _softmax_unmasked(s, scale, is_causal, lse):
    """_softmax_rows without a mask, in one call of four arguments (each argument of a compiled
    call costs ~0.05 us of a tiny forward)."""
    _softmax_rows(s, np.float32(scale), _NO_BOOL, _NO_FLOAT, NO_MASK, is_causal, lse)


@njit(cache=True)
def _probs_again(s, lse, scale, blocked, additive, kind, is_causal):
    """s (raw scores q.k) becomes P = exp(scaled s + mask - lse) in place, as forward made it."""
    B, L, S = s.shape
    R = B * L
    score_scale = _scale_if_masked(s, scale, blocked, additive, kind, is_causal)
    shifts = np.empty(R, np.float32)
    lse_flat = lse.reshape(R)
    for r in range(R):                          # fully masked rows: P = 0
        shifts[r] = lse_flat[r] if lse_flat[r] != -_INF else _INF
    _exp_rows(s.reshape(R * S), R, score_scale, shifts)


@njit(cache=True)
def _score_grads(p, dp, gout, out, scale):
    """dp (dO V^T) becomes dS = scale P (dP - D) in place, D_i = dO_i . O_i (the scale of
    dQ = dS K and dK = dS^T Q folded in)."""
    B, L, S = p.shape
    Ev = out.shape[2]
    flat, gflat = p.reshape(B * L * S), dp.reshape(B * L * S)
    for b in range(B):
        for i in range(L):
            d = np.float32(0.0)
            for e in range(Ev):
                d += gout[b, i, e] * out[b, i, e]
            o = (b * L + i) * S
            for j in range(S):
                gflat[o + j] = scale * (flat[o + j] * (gflat[o + j] - d))
