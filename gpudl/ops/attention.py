"""Scaled dot-product attention: the fused Function, the plain path, and torch's functional form.

The fused path (``ScaledDotProductAttention``) is one graph node over ``kernels.attention``: it
stores no L x S matrix, only the output and one log-sum-exp per query row (small float32 CPU
calls, of one tile, also keep their probabilities, which saves their backward a GEMM and exps).
The plain path (``attention_weights``) builds softmax(q k^T * scale + mask) from Tensor ops; it
runs where the probabilities themselves are needed: dropout on them, a float mask that requires
grad, or MultiheadAttention's ``need_weights=True``.

Both give zeros for fully masked query rows (as PyTorch's math path does since 2.5), with zero
gradients, never NaN.
"""

import math
import numbers

import numpy as np

from .. import backends
from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..dtypes import is_floating
from ..autograd import ArrayFunction, is_grad_enabled
from ..kernels import attention as K
from ..tensor import Tensor
from ._util import sum_to, xp_of
from .dropout import dropout


def _flatten_batch(a, batch):
    """(..., n, d) broadcast to ``batch`` -> (B, n, d); a view unless broadcasting copies."""
    shape = a.shape
    if shape[:-2] == batch:                     # nothing to broadcast (broadcast_to costs ~5 us)
        return a if len(shape) == 3 else a.reshape((math.prod(batch),) + shape[-2:])
    return xp_of(a).broadcast_to(a, batch + a.shape[-2:]).reshape((math.prod(batch),)
                                                                  + a.shape[-2:])


def _unflatten_grad(g, batch, shape):
    """A (B, n, d) gradient back to the input's ``shape`` (summed over broadcast dims)."""
    if len(batch) != 1:
        g = g.reshape(batch + g.shape[1:])
    return sum_to(g, shape)


def _flatten_mask(mask, batch):
    """A mask broadcastable to ``batch + (L, S)`` -> (Bm, Lm, Sm) with Bm 1 or prod(batch)."""
    if mask is None:
        return None
    mask = mask.reshape((1,) * (len(batch) + 2 - mask.ndim) + mask.shape)
    if all(n == 1 for n in mask.shape[:-2]):
        return mask.reshape((1,) + mask.shape[-2:])
    return _flatten_batch(mask, batch)


class ScaledDotProductAttention(ArrayFunction):
    """softmax(q k^T * scale + mask) v as one node; saves q, k, v, out and the row lse."""

    @staticmethod
    def forward(ctx, query, key, value, mask, is_causal, scale, batch):
        """``batch``: the broadcast batch dims of query, key and value (checked by the caller)."""
        out, lse, probs = K.attention_forward(
            _flatten_batch(query, batch), _flatten_batch(key, batch),
            _flatten_batch(value, batch), _flatten_mask(mask, batch), is_causal, scale,
            keep_probs=True, out_shape=None if len(batch) == 1 else batch + query.shape[-2:-1]
            + value.shape[-1:], **backends.attention_precision())  # (..., L, Ev), (B, L), P
        # the arrays as given and returned: apply's version check then finds them by identity
        ctx.save_for_backward(query, key, value, out, lse, mask, probs)
        ctx.conf = (is_causal, scale, batch)
        return out

    @staticmethod
    def backward(ctx, gout):
        query, key, value, out, lse, mask, probs = ctx.saved_tensors
        is_causal, scale, batch = ctx.conf
        out = out if out.ndim == 3 else out.reshape((lse.shape[0],) + out.shape[-2:])
        gq, gk, gv = K.attention_backward(
            _flatten_batch(query, batch), _flatten_batch(key, batch),
            _flatten_batch(value, batch), out, lse, gout.reshape(out.shape),
            _flatten_mask(mask, batch), is_causal, scale, probs,
            **backends.attention_precision())
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        return (_unflatten_grad(gq, batch, query.shape) if need_q else None,
                _unflatten_grad(gk, batch, key.shape) if need_k else None,
                _unflatten_grad(gv, batch, value.shape) if need_v else None,
                None, None, None, None)


def attention_weights(query, key, attn_mask=None, is_causal=False, scale=None):
    """softmax(query @ key^T * scale + mask) as a Tensor (..., L, S), through Tensor ops.

    Fully masked rows give zero weights (and zero gradients). Inputs are validated by callers.
    """
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * scale                      # (..., L, S)
    xp = xp_of(scores._data)
    L, S = scores.shape[-2:]
    hidden = ~xp.tril(xp.ones((L, S), bool)) if is_causal else None
    if attn_mask is not None and attn_mask.dtype == np.bool_:
        hidden = ~attn_mask._data if hidden is None else hidden | ~attn_mask._data
    elif attn_mask is not None:
        scores = scores + attn_mask.astype(scores.dtype)
    if hidden is None and attn_mask is None:
        return scores.softmax(-1)
    if hidden is not None:
        scores = scores.masked_fill(hidden, -math.inf)
    dead = xp.all(scores._data == -np.inf, axis=-1, keepdims=True)          # fully masked rows
    return scores.masked_fill(dead, 0.0).softmax(-1).masked_fill(dead, 0.0)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """Attention as in ``torch.nn.functional.scaled_dot_product_attention``.

    Computes ``softmax(query @ key^T * scale + mask) @ value`` without storing the L x S matrix
    (flash-attention style kernels), unless ``dropout_p > 0`` or a float ``attn_mask`` requires
    grad: those take the plain path, which does (it needs the probabilities).

    Args:
        query: (..., L, E); key: (..., S, E); value: (..., S, Ev). Batch dims broadcast.
        attn_mask: bool (True = take part in attention) or float (added to the scores) Tensor,
            broadcastable to (..., L, S).
        dropout_p: dropout on the attention probabilities, applied whenever > 0 (as torch: pass
            0 outside training).
        is_causal: query i attends keys j <= i (top-left aligned); not with ``attn_mask``.
        scale: multiplier of ``query @ key^T``; default ``1 / sqrt(E)``.
        enable_gqa: key/value may have fewer heads (dim -3) than query, dividing it; each is
            repeated to match, as in grouped-query attention.

    Returns:
        (..., L, Ev). Fully masked query rows give zeros.

    Example:
        >>> q = gd.randn(2, 4, 10, 16); k = v = gd.randn(2, 4, 12, 16)
        >>> F.scaled_dot_product_attention(q, k, v, is_causal=True).shape
        (2, 4, 10, 16)
    """
    if _autocast.active:
        query, key, value, attn_mask = cast_inputs(
            "scaled_dot_product_attention", query, key, value, attn_mask)
    if (attn_mask is None and scale is None and enable_gqa is False
            and dropout_p.__class__ in (float, int) and dropout_p == 0 and query.__class__ is Tensor
            and key.__class__ is Tensor and value.__class__ is Tensor):
        batch, plan = _plain_call_plan(query, key, value, is_causal)
        if plan is not None:
            return _PlainAttention.apply(query, key, value, plan)
        return ScaledDotProductAttention.apply(query, key, value, None, bool(is_causal),
                                               1.0 / math.sqrt(query._data.shape[-1]), batch)
    _check_inputs(query, key, value, attn_mask, dropout_p, is_causal, scale)
    if enable_gqa:
        key, value = _repeat_heads(query, key), _repeat_heads(query, value)
    batch = _check_shapes(query, key, value, attn_mask)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    mask_grad = attn_mask is not None and attn_mask.requires_grad and is_grad_enabled()
    if dropout_p == 0 and not mask_grad:
        mask = None if attn_mask is None else attn_mask._data
        return ScaledDotProductAttention.apply(query, key, value, mask, bool(is_causal), scale,
                                               batch)
    weights = attention_weights(query, key, attn_mask, is_causal, scale)
    return dropout(weights, dropout_p) @ value


_PLAIN_CALLS = {}      # (shapes, dtypes, is_causal) -> (batch, plan) of checked calls


def _plain_call_plan(query, key, value, is_causal):
    """``(batch dims, _PlainAttention's plan or None)`` of a call with no mask, dropout, scale
    or GQA, its checks run once per shapes and dtypes (they cost as much as a tiny forward's
    arithmetic). The plan is None where the batch dims broadcast."""
    q, k, v = query._data, key._data, value._data
    signature = (q.shape, k.shape, v.shape, q.dtype, k.dtype, v.dtype, bool(is_causal))
    found = _PLAIN_CALLS.get(signature)
    if found is None:
        _check_inputs(query, key, value, None, 0.0, is_causal, None)
        batch = _check_shapes(query, key, value, None)
        plan = None
        if q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
            flat = tuple((math.prod(batch),) + a.shape[-2:] for a in (q, k, v))
            plan = (*flat, batch + (q.shape[-2], v.shape[-1]), bool(is_causal),
                    1.0 / math.sqrt(q.shape[-1]), batch)
        found = batch, plan
        if len(_PLAIN_CALLS) < 256:
            _PLAIN_CALLS[signature] = found
    return found


class _PlainAttention(ScaledDotProductAttention):
    """ScaledDotProductAttention for a call with no mask whose q, k and v share their batch
    dims, its shapes planned once (``_plain_call_plan``): the same node and backward, with
    fewer arguments and no per-call flattening (a tiny forward's op layer took ~5 us of ~18)."""

    @staticmethod
    def forward(ctx, query, key, value, plan):
        q_shape, k_shape, v_shape, out_shape, is_causal, scale, batch = plan
        out, lse, probs = K.attention_forward(
            query.reshape(q_shape), key.reshape(k_shape), value.reshape(v_shape), None,
            is_causal, scale, keep_probs=True, out_shape=out_shape,
            **backends.attention_precision())
        ctx.save_for_backward(query, key, value, out, lse, None, probs)
        ctx.conf = (is_causal, scale, batch)
        return out

    @staticmethod
    def backward(ctx, gout):
        return ScaledDotProductAttention.backward(ctx, gout)[:3] + (None,)


def _check_inputs(query, key, value, attn_mask, dropout_p, is_causal, scale):
    op = "scaled_dot_product_attention"
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):       # all three first: the dtype message reads each
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    for name, t in (("query", query), ("key", key), ("value", value)):
        data = t._data                      # its attributes directly: this runs on every call
        if data.ndim < 2:
            raise ValueError(f"{op}: {name} must have at least 2 dimensions (..., length, "
                             f"features), got shape {t.shape}")
        if data.dtype != query._data.dtype or not is_floating(data.dtype):
            raise TypeError(f"{op}: query, key and value must share one floating dtype, got "
                            f"{query.dtype}, {key.dtype} and {value.dtype}")
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise TypeError(f"{op}: attn_mask must be a Tensor or None, got "
                            f"{type(attn_mask).__name__}")
        if attn_mask.dtype != np.bool_ and not is_floating(attn_mask.dtype):
            raise TypeError(f"{op}: attn_mask must be bool or floating, got {attn_mask.dtype}")
        if is_causal:
            raise ValueError(f"{op}: pass attn_mask or is_causal=True, not both (attn_mask "
                             f"shape {attn_mask.shape})")
    if (type(dropout_p) is not float and not isinstance(dropout_p, numbers.Real)
            or not 0 <= dropout_p <= 1):
        raise ValueError(f"{op}: dropout_p must be in [0, 1], got {dropout_p!r}")
    if scale is not None and not isinstance(scale, numbers.Real):
        raise TypeError(f"{op}: scale must be a number or None, got {type(scale).__name__}")


def _batch_shape(qs, ks, vs):
    """The broadcast batch dims of shapes q, k, v (``np.broadcast_shapes`` only if they differ)."""
    if qs[:-2] == ks[:-2] == vs[:-2]:
        return qs[:-2]
    return np.broadcast_shapes(qs[:-2], ks[:-2], vs[:-2])


def _check_shapes(query, key, value, attn_mask):
    """Checks the shapes against each other; returns the broadcast batch dims."""
    op = "scaled_dot_product_attention"

    qs, ks, vs = query._data.shape, key._data.shape, value._data.shape

    def shapes():
        return f"(query shape {qs}, key shape {ks}, value shape {vs})"

    if qs[-1] != ks[-1]:
        raise ValueError(f"{op}: query has {qs[-1]} features per head but key has "
                         f"{ks[-1]} {shapes()}")
    if ks[-2] != vs[-2]:
        raise ValueError(f"{op}: key has {ks[-2]} positions but value has "
                         f"{vs[-2]} {shapes()}")
    try:
        batch = _batch_shape(qs, ks, vs)
    except ValueError:
        raise ValueError(f"{op}: batch dimensions do not broadcast {shapes()}") from None
    if attn_mask is not None:
        target = batch + (qs[-2], ks[-2])
        try:
            fits = np.broadcast_shapes(attn_mask.shape, target) == target
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"{op}: attn_mask of shape {attn_mask.shape} does not broadcast to "
                             f"the scores' shape {target} {shapes()}")
    return batch


def _repeat_heads(query, kv):
    """(..., Hkv, S, d) -> (..., Hq, S, d): each head repeated Hq / Hkv times, consecutively."""
    if query.ndim < 3 or kv.ndim < 3 or query.shape[-3] % kv.shape[-3]:
        raise ValueError(f"scaled_dot_product_attention: enable_gqa needs key/value heads "
                         f"(dim -3) dividing query heads; got query shape {query.shape} and "
                         f"key/value shape {kv.shape}")
    groups = query.shape[-3] // kv.shape[-3]
    if groups == 1:
        return kv
    lead, (heads, n, d) = kv.shape[:-3], kv.shape[-3:]
    spread = kv.unsqueeze(-3).expand(*lead, heads, groups, n, d)      # (..., Hkv, G, S, d)
    return spread.reshape(*lead, heads * groups, n, d)


# ------------------------------------------------------------ packed self-attention (MHA)
# MultiheadAttention's self-attention with its packed in-projection, no mask (or is_causal), no
# dropout and no weights returned (TransformerEncoderLayer's call), as one node from x to the
# merged heads. The in-projection writes q, k and v already split into heads: one strided-
# batched GEMM of x (N L, E) by each head's (E, D) slice of in_proj_weight gives (3 H, N L, D),
# i.e. q, k and v each a C-contiguous (H N, L, D) stack the attention kernels read as it is
# (split from a (N, L, 3E) product, each took a copy forward and backward), and their gradients
# land the same way: the kernels write dq, dk and dv into one (3 H, N L, D) buffer, from which
# in_proj_weight's gradient is another batched GEMM and the bias's a sum (the split's backward
# took 3 copies of head-merged gradients and 3 writes into a (N, L, 3E) buffer). The heads
# merge back to (N, L, E) in one copy each way.

def _heads_product(a, b):
    """``a @ b`` with broadcast batches: on CuPy through capture_blas (a broadcast operand read
    with batch stride 0, eager or captured), else the ops layer's matmul."""
    from .. import backend, capture_blas
    if backend._cupy is not None and isinstance(a, backend._cupy.ndarray) \
            and a.dtype in capture_blas.DTYPES:
        return capture_blas.matmul(a, b)
    from .linalg import _matmul
    return _matmul(a, b)


class PackedSelfAttention(ArrayFunction):
    """(N, L, E) -> (N, L, E): softmax(q k^T / sqrt(D)) v per head of ``x``'s packed
    projection ``x @ w.T + b`` (w (3E, E), b (3E,) or None), heads merged back; gradients for
    x, w and b."""

    new_gradients = True        # GEMM products and a sum: .grad takes them as they are

    @staticmethod
    def forward(ctx, x, w, b, heads, is_causal):
        N, L, E = x.shape
        D = E // heads
        rows = x.reshape(N * L, E)
        proj = _heads_product(rows, w.reshape(3 * heads, D, E).transpose(0, 2, 1))
        if b is not None:                                       # (3H, N L, D)
            proj += b.reshape(3 * heads, 1, D)
        qkv = proj.reshape(3, heads * N, L, D)                  # batch index h N + n
        q, k, v = qkv[0], qkv[1], qkv[2]
        scale = 1.0 / math.sqrt(D)
        out, lse, probs = K.attention_forward(q, k, v, None, is_causal, scale, keep_probs=True,
                                              **backends.attention_precision())
        ctx.save_for_backward(rows, w, proj, out, lse, probs, b)     # b: for create_graph
        ctx.conf = (N, L, E, heads, is_causal, scale)
        return out.reshape(heads, N, L, D).transpose(1, 2, 0, 3).reshape(N, L, E)

    @staticmethod
    def backward(ctx, g):
        rows, w, proj, out, lse, probs, _ = ctx.saved_tensors
        N, L, E, heads, is_causal, scale = ctx.conf
        D = E // heads
        xp = xp_of(g)
        gout = g.reshape(N, L, heads, D).transpose(2, 0, 1, 3).reshape(heads * N, L, D)
        gproj = xp.empty((3 * heads, N * L, D), proj.dtype)
        qkv, gqkv = (a.reshape(3, heads * N, L, D) for a in (proj, gproj))
        K.attention_backward(qkv[0], qkv[1], qkv[2], out, lse, gout, None, is_causal, scale,
                             probs, grads_out=(gqkv[0], gqkv[1], gqkv[2]),
                             **backends.attention_precision())
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_x:          # (N L, 3E) @ (3E, E): the heads' gradients side by side, one copy
            from .linalg import _matmul
            gx = _matmul(gproj.transpose(1, 0, 2).reshape(N * L, 3 * E), w).reshape(N, L, E)
        if need_w:          # per head: (D, N L) @ (N L, E)
            gw = _heads_product(gproj.transpose(0, 2, 1), rows).reshape(3 * E, E)
        if need_b:
            gb = gproj.sum(axis=1).reshape(3 * E)
        return gx, gw, gb, None, None


def packed_self_attention(x, in_proj_weight, in_proj_bias, num_heads, is_causal=False):
    """MultiheadAttention's unmasked self-attention of ``x`` (N, L, E) with its packed
    in-projection, before out_proj: the heads merged back to (N, L, E) (see
    PackedSelfAttention). The caller checks shapes; float32/float64 only."""
    return PackedSelfAttention.apply(x, in_proj_weight, in_proj_bias, int(num_heads),
                                     bool(is_causal))
