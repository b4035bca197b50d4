"""Keras's Attention (Luong dot-product) and MultiHeadAttention layers."""

import math

from ... import creation, dtypes
from ...tensor_math import where
from ...nn import functional as F
from ..engine import Layer
from .core import check_positive_int


def _masked_softmax(scores, causal, keep=None, zero_hidden=False):
    """Softmax over the keys of ``scores`` with ``keep`` (broadcastable, True = attend) and
    the causal mask combined, as Keras: hidden scores are lowered by 1e9 (Attention) or set
    to -1e9 and their weights zeroed (MultiHeadAttention's Softmax), so a query whose keys
    are all hidden attends uniformly (Attention) or not at all (MHA), never NaN."""
    if causal:
        tq, tk = scores.shape[-2:]
        rows = creation.arange(tq).reshape(tq, 1)
        cols = creation.arange(tk).reshape(1, tk)
        causal_keep = cols <= rows
        keep = causal_keep if keep is None else keep & causal_keep
    if keep is None:
        return F.softmax(scores, dim=-1)
    big = 65504.0 if scores.dtype == dtypes.float16 else 1e9
    hidden = ~keep
    if zero_hidden:
        weights = F.softmax(scores.masked_fill(hidden, -big), dim=-1)
        return weights.masked_fill(hidden, 0.0)
    return F.softmax(where(hidden, scores - big, scores), dim=-1)


def _as_keep(mask):
    """A mask as booleans (Keras: True, or > 0.5 for a numeric mask, is kept)."""
    return mask if mask.dtype == dtypes.bool_ else mask > 0.5


class Attention(Layer):
    """``softmax(query @ key^T) @ value`` for inputs ``[query, value]`` or ``[query, value,
    key]`` (key defaults to value). ``use_scale`` learns a scalar multiplying the scores;
    ``score_mode='concat'`` is not supported. ``return_attention_scores=True`` in the call
    also returns the weights; ``use_causal_mask=True`` hides later keys."""

    def __init__(self, use_scale=False, score_mode="dot", dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if score_mode != "dot":
            raise NotImplementedError(f"Attention: only score_mode='dot' is supported, got "
                                      f"{score_mode!r}")
        self.use_scale, self.dropout = use_scale, float(dropout)

    def build(self, input_shape):
        if self.use_scale:
            self.add_weight("scale", (), "ones")

    def call(self, inputs, mask=None, return_attention_scores=False, use_causal_mask=False,
             training=None):
        """``mask=[query_mask, value_mask]`` ((N, Tq), (N, Tv), True = real; either may be
        None): padded values get no weight and padded queries give zeros, as Keras."""
        if not isinstance(inputs, (list, tuple)) or len(inputs) not in (2, 3):
            raise ValueError(f"{self.name}: inputs must be [query, value] or [query, value, key]")
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) == 3 else value
        query_mask, value_mask = (list(mask) + [None, None])[:2] if mask is not None else \
            (None, None)
        scores = self.scores(query, key)                       # (N, Tq, Tv)
        keep = None if value_mask is None else _as_keep(value_mask)[:, None, :]
        weights = _masked_softmax(scores, use_causal_mask, keep)
        training = self.training if training is None else training
        if self.dropout:
            weights = F.dropout(weights, self.dropout, training)
        out = weights @ value
        if query_mask is not None:
            out = out * query_mask[:, :, None].astype(out.dtype)
        return [out, weights] if return_attention_scores else out

    def scores(self, query, key):
        """Luong's ``query @ key^T`` (times the learned scale)."""
        scores = query @ key.transpose(-1, -2)
        return scores * self.scale if self.use_scale else scores


class AdditiveAttention(Attention):
    """Bahdanau-style attention: scores ``sum(scale * tanh(query_i + key_j))`` over the
    features (``scale`` a learned vector with ``use_scale``, Keras's default); then as
    Attention (``[query, value]`` or ``[query, value, key]``, masks, dropout)."""

    def __init__(self, use_scale=True, dropout=0.0, **kwargs):
        super().__init__(use_scale=False, dropout=dropout, **kwargs)
        self.use_additive_scale = use_scale

    def build(self, input_shape):
        if self.use_additive_scale:
            self.add_weight("scale", (input_shape[0][-1],), "glorot_uniform")

    def scores(self, query, key):
        features = (query[:, :, None, :] + key[:, None, :, :]).tanh()    # (N, Tq, Tv, dim)
        if self.use_additive_scale:
            features = features * self.scale
        return features.sum(dim=-1)


class MultiHeadAttention(Layer):
    """Keras's MultiHeadAttention: ``num_heads`` heads of size ``key_dim`` (values
    ``value_dim``, default key_dim); query/key/value kernels (dim, heads, size) with biases
    (heads, size); output kernel (heads, value_dim, out) with bias (out,), out = the query's
    last dim unless ``output_shape``. Called as ``mha(query, value, key=None, ...)``.

    Inputs may have more than one axis between the batch and the features, ``(B, T1, ...,
    Tn, dim)``: ``attention_axes`` (Keras's: ints counted on the inputs, negative from the
    end, default all of ``1 .. n``) are those attended over; the other axes are batch-like
    (each position attends within its own slice; key and value must share them with the
    query). The softmax is joint over all the key's attention axes and the scores
    (``return_attention_scores``) are laid out as Keras's ``(B, <other axes>, heads, <query
    attention axes>, <key attention axes>)``; an ``attention_mask`` broadcasts to that shape
    (without the heads axis, which is inserted as Keras does)."""

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 output_shape=None, attention_axes=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("MultiHeadAttention", num_heads=num_heads, key_dim=key_dim)
        if isinstance(attention_axes, int) and not isinstance(attention_axes, bool):
            attention_axes = (attention_axes,)
        if attention_axes is not None and (
                not isinstance(attention_axes, (list, tuple)) or not attention_axes or
                not all(isinstance(a, int) and not isinstance(a, bool) for a in attention_axes)):
            raise ValueError(f"MultiHeadAttention: attention_axes must be None, an int or a "
                             f"non-empty list/tuple of ints, got {attention_axes!r}")
        self.attention_axes = None if attention_axes is None else tuple(attention_axes)
        self.num_heads, self.key_dim = int(num_heads), int(key_dim)
        self.value_dim = int(value_dim or key_dim)
        self.dropout, self.use_bias = float(dropout), use_bias
        self.out_dim = output_shape
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def __call__(self, query, value=None, key=None, **kwargs):
        if value is None:
            raise TypeError(f"{self.name}: call it as mha(query, value[, key])")
        return super().__call__(query, value, key, **kwargs)

    def build(self, input_shape):
        pass                                   # built in call, where all three shapes are known

    def _build_all(self, query, value, key):
        h = self.num_heads
        out = self.out_dim or query.shape[-1]
        for name, source, size in (("query", query, self.key_dim), ("key", key, self.key_dim),
                                   ("value", value, self.value_dim)):
            self.add_weight(f"{name}_kernel", (source.shape[-1], h, size),
                            self.kernel_initializer)
            if self.use_bias:
                self.add_weight(f"{name}_bias", (h, size), self.bias_initializer)
        self.add_weight("output_kernel", (h, self.value_dim, out), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("output_bias", (out,), self.bias_initializer)

    def _project(self, x, name, heads_first=True):
        kernel = getattr(self, f"{name}_kernel")                        # (dim, h, size)
        y = x @ kernel.reshape(kernel.shape[0], -1)                       # (N, T, h * size)
        if self.use_bias:
            y = y + getattr(self, f"{name}_bias").reshape(-1)
        y = y.reshape(tuple(x.shape[:-1]) + (self.num_heads, -1))      # (N, T.., h, size)
        return y.transpose(1, 2) if heads_first else y                   # (N, h, T, size)

    def _axes(self, rank):
        """The attention axes on the projected ``(B, T1.., h, size)`` of inputs of ``rank``
        (Keras's ``_build_attention``: negative axes count from the projection's last)."""
        projected = rank + 1
        if self.attention_axes is None:
            return tuple(range(1, projected - 2))
        axes = tuple(a if a >= 0 else projected - 1 + a for a in self.attention_axes)
        if any(not 1 <= a <= projected - 3 for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"{self.name}: attention_axes={self.attention_axes!r} must name "
                             f"distinct axes between the batch and the features of inputs of "
                             f"rank {rank}")
        return axes

    def _general_attention(self, query, value, key, attention_mask, training):
        """Keras's einsum attention for any rank and attention axes, as matrix products over
        the flattened batch-like and attention axes. Returns (output (B, T.., h * vdim)
        before the output projection, weights in Keras's layout)."""
        rank = query.ndim
        axes = self._axes(rank)
        last = rank                                       # the size axis of the projection
        batch = [i for i in range(rank + 1) if i not in axes and i != last]
        q = self._project(query, "query", False) / math.sqrt(self.key_dim)
        k = self._project(key, "key", False)
        v = self._project(value, "value", False)
        for name, x in (("key", k), ("value", v)):
            if [x.shape[i] for i in batch] != [q.shape[i] for i in batch]:
                raise ValueError(f"{self.name}: the {name}'s axes outside attention_axes "
                                 f"{tuple(x.shape[i] for i in batch)} must equal the "
                                 f"query's {tuple(q.shape[i] for i in batch)}")
        order = batch + list(axes) + [last]
        batch_shape = [q.shape[i] for i in batch]
        q_att, k_att = [q.shape[i] for i in axes], [k.shape[i] for i in axes]
        flat = math.prod(batch_shape)

        def flattened(x):
            return x.permute(*order).reshape(flat, -1, x.shape[last])
        scores = flattened(q) @ flattened(k).transpose(-1, -2)          # (b, Tq, Tk)
        keep = None
        if attention_mask is not None:
            keep = _as_keep(attention_mask)
            full = len(batch) + 2 * len(axes)
            while keep.ndim < full:                        # Keras: heads and others inserted
                keep = keep.unsqueeze(keep.ndim - 2 * len(axes))
            keep = keep.expand(*(batch_shape + q_att + k_att)).reshape(flat, scores.shape[1],
                                                                       scores.shape[2])
        weights = _masked_softmax(scores, False, keep, zero_hidden=True)
        layout = tuple(batch_shape + q_att + k_att)
        if self.dropout:
            weights_used = F.dropout(weights, self.dropout, training)
        else:
            weights_used = weights
        context = (weights_used @ flattened(v)).reshape(batch_shape + q_att + [v.shape[last]])
        inverse = [order.index(i) for i in range(rank + 1)]
        context = context.permute(*inverse)                             # (B, T.., h, vdim)
        return context.reshape(tuple(context.shape[:-2]) + (-1,)), weights.reshape(layout)

    takes_input_masks = ("query_mask", "value_mask", "key_mask")   # a functional model's masks

    def call(self, query, value, key=None, attention_mask=None, return_attention_scores=False,
             use_causal_mask=False, training=None, query_mask=None, value_mask=None,
             key_mask=None):
        """The masks of the inputs (Embedding(mask_zero=True), Masking: a functional model
        passes them) hide keys and queries as Keras's ``_compute_attention_mask``."""
        key = value if key is None else key
        for given, expand in ((query_mask, -1), (value_mask, -2), (key_mask, -2)):
            if given is not None:
                given = _as_keep(given).unsqueeze(expand)
                attention_mask = given if attention_mask is None else \
                    _as_keep(attention_mask) & given
        if "query_kernel" not in self._parameters:
            self._build_all(query, value, key)
        training = self.training if training is None else training
        if query.ndim != 3 or self.attention_axes is not None:
            if use_causal_mask:
                raise NotImplementedError(f"{self.name}: use_causal_mask is supported for "
                                          "inputs (batch, steps, features) with the default "
                                          "attention_axes")
            context, weights = self._general_attention(query, value, key, attention_mask,
                                                       training)
            kernel = self.output_kernel
            out = context @ kernel.reshape(-1, kernel.shape[-1])
            if self.use_bias:
                out = out + self.output_bias
            return [out, weights] if return_attention_scores else out
        q = self._project(query, "query") / math.sqrt(self.key_dim)
        k, v = self._project(key, "key"), self._project(value, "value")
        scores = q @ k.transpose(-1, -2)                                  # (N, h, Tq, Tk)
        keep = None if attention_mask is None else _as_keep(attention_mask)[:, None]
        weights = _masked_softmax(scores, use_causal_mask, keep, zero_hidden=True)
        if self.dropout:
            weights = F.dropout(weights, self.dropout, training)
        context = (weights @ v).transpose(1, 2)                           # (N, Tq, h, vdim)
        n, t = context.shape[:2]
        kernel = self.output_kernel
        out = context.reshape(n, t, -1) @ kernel.reshape(-1, kernel.shape[-1])
        if self.use_bias:
            out = out + self.output_bias
        return [out, weights] if return_attention_scores else out
