"""MultiheadAttention, TransformerEncoderLayer and TransformerEncoder, as in PyTorch.

Parameter names, shapes and initialisation are torch's, so a torch ``state_dict`` loads as is.
"""

import copy
import math

import numpy as np

from ..dtypes import is_floating
from .. import creation, dtypes
from ..functions import cat
from ..ops.activation import gelu, relu
from ..amp.autocast_mode import state as _autocast
from ..backend import on_device
from ..ops.attention import (attention_weights, packed_self_attention,
                             scaled_dot_product_attention)
from ..ops.dropout import dropout as dropout_fn
from ..ops._util import is_int
from ..ops.linalg import LinearReLU
from ..ops.linear import linear
from ..ops.normalization import residual_layer_norm
from ..tensor import Tensor
from . import init
from .container import ModuleList
from .dropout import Dropout
from .linear import Linear
from .module import Module, Parameter
from .normalization import LayerNorm


class MultiheadAttention(Module):
    """Attention over ``num_heads`` heads of ``embed_dim // num_heads`` features each.

    Parameters as torch's: ``in_proj_weight (3E, E)`` and ``in_proj_bias (3E,)`` (or
    ``q_proj_weight``, ``k_proj_weight (E, kdim)``, ``v_proj_weight (E, vdim)`` when kdim/vdim
    differ from embed_dim), and ``out_proj`` (a Linear); ``bias_k``, ``bias_v (1, 1, E)`` with
    ``add_bias_kv`` (appended to the projected keys and values as one more source position);
    ``add_zero_attn`` appends a position of zeros after that. Masks attend to both.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` returns ``(output, weights or None)``. Shapes:
    query (L, N, E), key (S, N, kdim), value (S, N, vdim) ((N, L, E) ... with
    ``batch_first=True``; unbatched (L, E) too); key_padding_mask (N, S) and bool attn_mask
    (L, S) or (N * num_heads, L, S) mark with True the positions NOT attended, float ones are
    added. ``need_weights=False`` runs the fused attention kernel; ``need_weights=True`` computes
    the weights the plain way (fully masked rows give zero weights where torch gives NaN).
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None):
        super().__init__()
        _check_sizes(embed_dim, num_heads)
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.batch_first = batch_first
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        dtype = dtypes.as_dtype(dtype, "MultiheadAttention") or dtypes.DEFAULT_FLOAT

        def make(*shape):
            return Parameter(creation.empty(*shape, dtype=dtype, device=device))
        if self._qkv_same_embed_dim:
            self.in_proj_weight = make(3 * embed_dim, embed_dim)
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = make(embed_dim, embed_dim)
            self.k_proj_weight = make(embed_dim, self.kdim)
            self.v_proj_weight = make(embed_dim, self.vdim)
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = make(3 * embed_dim)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
        if add_bias_kv:
            self.bias_k, self.bias_v = make(1, 1, embed_dim), make(1, 1, embed_dim)
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = bool(add_zero_attn)
        self.reset_parameters()

    def reset_parameters(self):
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        unbatched = self._check_inputs(query, key, value)
        self_attention = query is key and key is value
        if unbatched:                                   # (L, E) -> (1, L, E)
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:                      # (L, N, E) -> (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        n, length, source = query.shape[0], query.shape[1], key.shape[1]
        mask = self._merge_masks(attn_mask, key_padding_mask, n, length, source, is_causal)
        p = self.dropout if self.training else 0.0
        if self._packed_call(self_attention, query, mask, need_weights, p, is_causal,
                             key_padding_mask):
            return self._packed(query, is_causal and mask is not None, unbatched), None
        q, k, v = self._project(query, key, value, self_attention)
        k, v, mask = self._extra_sources(k, v, mask)
        causal = is_causal and key_padding_mask is None and not need_weights \
            and k.shape[1] == source
        if causal:
            mask = None                                 # the kernel's own causal mask
        q, k, v = (self._split_heads(t) for t in (q, k, v))
        weights = None
        if need_weights:
            weights = attention_weights(q, k, mask)    # (N, H, L, S)
            if p:
                weights = dropout_fn(weights, p)        # torch returns them after dropout
            out = weights @ v
        else:
            out = scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                               is_causal=causal)
        out = out.transpose(1, 2).reshape(n, length, self.embed_dim)   # (N, L, E)
        out = self.out_proj(out)
        if unbatched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None:
            weights = weights.mean(1) if average_attn_weights else weights
            weights = weights.squeeze(0) if unbatched else weights
        return out, weights

    def _packed_call(self, self_attention, query, mask, need_weights, p, is_causal,
                     key_padding_mask):
        """Whether this call is PackedSelfAttention's: self-attention through the packed
        in_proj_weight on the cuda device, in float32/float64, with no mask (or one that
        ``is_causal`` lets the kernel's causal mask stand for), no extra key/value positions,
        no dropout and no weights returned (TransformerEncoderLayer's call)."""
        if not (self_attention and self._qkv_same_embed_dim and not need_weights and p == 0
                and self.bias_k is None and not self.add_zero_attn and not _autocast.active
                and query.dtype in (np.float32, np.float64) and on_device(query._data)
                and self.in_proj_weight.dtype == query.dtype):
            return False
        return mask is None or (is_causal and key_padding_mask is None)

    def _packed(self, query, causal, unbatched):
        """The packed path's output (N, L, E) -> as the call's layout (see forward)."""
        out = self.out_proj(packed_self_attention(query, self.in_proj_weight,
                                                  self.in_proj_bias, self.num_heads, causal))
        if unbatched:
            return out.squeeze(0)
        return out if self.batch_first else out.transpose(0, 1)

    def _check_inputs(self, query, key, value):
        """Validate shapes; True when the input is unbatched (L, E)."""
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor):
                raise TypeError(f"MultiheadAttention: {name} must be a Tensor, got "
                                f"{type(t).__name__}")
        shapes = f"(query {query.shape}, key {key.shape}, value {value.shape})"
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"MultiheadAttention: expected query, key and value all 3-D "
                             f"(batched) or all 2-D (unbatched) {shapes}")
        for name, t, size in (("query", query, self.embed_dim), ("key", key, self.kdim),
                              ("value", value, self.vdim)):
            if t.shape[-1] != size:
                raise ValueError(f"MultiheadAttention: {name} has {t.shape[-1]} features but "
                                 f"{size} were expected {shapes}")
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(f"MultiheadAttention: key and value must have the same length "
                             f"and batch {shapes}")
        batch_dim = 0 if self.batch_first else 1
        if query.ndim == 3 and query.shape[batch_dim] != key.shape[batch_dim]:
            raise ValueError(f"MultiheadAttention: query and key batch sizes differ "
                             f"(batch_first={self.batch_first}) {shapes}")
        return query.ndim == 2

    def _project(self, query, key, value, self_attention):
        """The input projections, (N, L, E) each; one GEMM for packed self-attention."""
        e, w, b = self.embed_dim, self.in_proj_weight, self.in_proj_bias
        bias = [None] * 3 if b is None else [b[:e], b[e:2 * e], b[2 * e:]]
        if not self._qkv_same_embed_dim:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        elif self_attention:
            return linear(query, w, b).chunk(3, dim=-1)
        else:
            weights = (w[:e], w[e:2 * e], w[2 * e:])
        return tuple(linear(x, wi, bi) for x, wi, bi in zip((query, key, value), weights, bias))

    def _extra_sources(self, k, v, mask):
        """Projected keys and values (N, S, E) with add_bias_kv's and add_zero_attn's source
        positions appended, and the merged mask widened to attend to them."""
        n, extra = k.shape[0], []
        if self.bias_k is not None:
            extra.append((self.bias_k.expand(n, 1, self.embed_dim),
                          self.bias_v.expand(n, 1, self.embed_dim)))
        if self.add_zero_attn:
            zeros = creation.zeros(n, 1, self.embed_dim, dtype=k.dtype, device=k.device)
            extra.append((zeros, zeros))
        if not extra:
            return k, v, mask
        k = cat([k] + [ek for ek, _ in extra], dim=1)
        v = cat([v] + [ev for _, ev in extra], dim=1)
        if mask is not None:                # True (attend) or 0.0 (added) for the new columns
            fill = True if mask.dtype == np.bool_ else 0.0
            mask = cat([mask, creation.full(mask.shape[:-1] + (len(extra),), fill,
                                            dtype=mask.dtype, device=mask.device)], dim=-1)
        return k, v, mask

    def _split_heads(self, x):
        n, length, _ = x.shape
        return x.reshape(n, length, self.num_heads, self.head_dim).transpose(1, 2)  # (N, H, L, D)

    def _merge_masks(self, attn_mask, key_padding_mask, n, length, source, is_causal):
        """One mask in SDPA's convention (bool True = attend, or float added), broadcastable
        to (N, H, L, S), from torch's MHA masks (bool True = do NOT attend)."""
        if is_causal and attn_mask is None:
            raise ValueError("MultiheadAttention: is_causal=True is a hint that attn_mask is "
                             "the causal mask; pass attn_mask as well")
        masks = []
        if attn_mask is not None:
            _check_mask("attn_mask", attn_mask, ((length, source),
                                                 (n * self.num_heads, length, source)))
            masks.append(attn_mask.reshape(-1, self.num_heads, length, source)
                         if attn_mask.ndim == 3 else attn_mask)
        if key_padding_mask is not None:
            _check_mask("key_padding_mask", key_padding_mask, ((n, source),))
            masks.append(key_padding_mask.reshape(n, 1, 1, source))
        if not masks:
            return None
        if all(m.dtype == np.bool_ for m in masks):
            keep = ~masks[0]._data
            for m in masks[1:]:
                keep = keep & ~m._data
            return Tensor._make(keep, False, None, 0, masks[0].device)
        dtype = next(m.dtype for m in masks if m.dtype != np.bool_)
        total = None
        for m in masks:
            if m.dtype == np.bool_:
                m = creation.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(
                    m, -math.inf)
            total = m if total is None else total + m
        return total


def _check_mask(name, mask, shapes):
    if not isinstance(mask, Tensor):
        raise TypeError(f"MultiheadAttention: {name} must be a Tensor, got {type(mask).__name__}")
    if mask.dtype != np.bool_ and not is_floating(mask.dtype):
        raise TypeError(f"MultiheadAttention: {name} must be bool or floating, got {mask.dtype}")
    if mask.shape not in shapes:
        raise ValueError(f"MultiheadAttention: {name} has shape {mask.shape} but one of "
                         f"{' or '.join(map(str, shapes))} was expected")


def _check_sizes(embed_dim, num_heads):
    for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
        if not is_int(value) or value <= 0:
            raise ValueError(f"MultiheadAttention: {name} must be a positive int, got {value!r}")
    if embed_dim % num_heads:
        raise ValueError(f"MultiheadAttention: embed_dim must be divisible by num_heads, got "
                         f"embed_dim={embed_dim} and num_heads={num_heads}")


class _TransformerLayer(Module):
    """What the encoder and decoder layers share: torch's submodules in torch's order (the
    attentions, ``linear1, dropout, linear2``, ``norm1..normB``, ``dropout1..dropoutB`` for B
    residual blocks, then ``activation``, a child when it is a Module) and the self-attention
    block."""

    def _build(self, attentions, blocks, d_model, nhead, dim_feedforward, dropout, activation,
               layer_norm_eps, batch_first, norm_first, bias, device, dtype):
        kw = dict(device=device, dtype=dtype)
        for name in attentions:
            setattr(self, name, MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                   batch_first=batch_first, **kw))
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = norm_first
        for i in range(1, blocks + 1):
            setattr(self, f"norm{i}", LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw))
        for i in range(1, blocks + 1):
            setattr(self, f"dropout{i}", Dropout(dropout))
        self.activation = _activation(activation, type(self).__name__)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)


class TransformerEncoderLayer(_TransformerLayer):
    """Self-attention then a feed-forward block, each with a residual and a LayerNorm, as torch's
    (submodules ``self_attn, linear1, dropout, linear2, norm1, norm2, dropout1, dropout2``).

    ``norm_first=False`` (post-norm): ``x = norm1(x + sa(x)); x = norm2(x + ff(x))``;
    ``norm_first=True``: ``x = x + sa(norm1(x)); x = x + ff(norm2(x))``. Self-attention runs the
    fused kernel (``need_weights=False``). ``activation`` is "relu", "gelu" or a callable.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        self._build(("self_attn",), 2, d_model, nhead, dim_feedforward, dropout, activation,
                    layer_norm_eps, batch_first, norm_first, bias, device, dtype)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if src_mask is None and src_key_padding_mask is None and not is_causal \
                and self._fused_post_norm(x):
            return self._fused_forward(x)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def _fused_post_norm(self, x):
        """Whether ``_fused_forward`` computes this call: post-norm, batch_first, no dropout
        in effect, self-attention on PackedSelfAttention's terms, LayerNorms over the last dim
        with the layer's dtype."""
        sa = self.self_attn
        if self.norm_first or type(sa) is not MultiheadAttention or not sa.batch_first \
                or x.ndim != 3 or not sa._packed_call(
                    True, x, None, False, sa.dropout if self.training else 0.0, False, None):
            return False
        # the submodules as built, unhooked, and the blocks not overridden: this path calls
        # neither them nor _sa_block / _ff_block
        parts = {sa.out_proj: Linear, self.linear1: Linear, self.linear2: Linear,
                 self.norm1: LayerNorm, self.norm2: LayerNorm, self.dropout: Dropout,
                 self.dropout1: Dropout, self.dropout2: Dropout, sa: MultiheadAttention}
        if any(type(m) is not kind or m.__dict__.get("_forward_hooks")
               for m, kind in parts.items()) \
                or type(self)._sa_block is not _TransformerLayer._sa_block \
                or type(self)._ff_block is not TransformerEncoderLayer._ff_block:
            return False
        if self.training and any(d.p for d in (self.dropout, self.dropout1, self.dropout2)):
            return False
        if any(m.weight.dtype != x.dtype for m in (sa.out_proj, self.linear1, self.linear2)):
            return False                    # linear's own check refuses it on the plain path
        return all(tuple(n.normalized_shape) == (x.shape[-1],)
                   and all(p is None or p.dtype == x.dtype for p in (n.weight, n.bias))
                   for n in (self.norm1, self.norm2))

    def _fused_forward(self, x):
        """``norm1(x + sa(x))`` then ``norm2(x + ff(x))`` with each block's last Linear
        bias-free and its bias, the residual add and the norm in one ResidualLayerNorm (four
        adds' kernels fewer per layer on cuda), and linear1's bias and a ReLU in one kernel
        (LinearReLU)."""
        sa = self.self_attn
        heads = packed_self_attention(x, sa.in_proj_weight, sa.in_proj_bias, sa.num_heads)
        x = self._residual_norm(x, linear(heads, sa.out_proj.weight), sa.out_proj.bias,
                                self.norm1)
        if self.activation is relu and self.linear1.bias is not None:
            hidden = LinearReLU.apply(x, self.linear1.weight, self.linear1.bias)
        else:
            hidden = self.activation(self.linear1(x))
        return self._residual_norm(x, linear(hidden, self.linear2.weight), self.linear2.bias,
                                   self.norm2)

    @staticmethod
    def _residual_norm(x, product, product_bias, norm):
        return residual_layer_norm(x, product, product_bias, norm.weight, norm.bias, norm.eps)


class TransformerEncoder(Module):
    """``num_layers`` deep copies of ``encoder_layer`` applied in turn (``layers``), then
    ``norm`` if given. ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None)``.

    ``enable_nested_tensor`` and ``mask_check`` are taken and kept as torch's and change
    nothing: every position is computed (torch's nested-tensor inference path gives zeros at
    padded positions instead; the unpadded ones agree)."""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True,
                 mask_check=True):
        super().__init__()
        self.layers = _copies("TransformerEncoder", "encoder_layer", encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor, self.mask_check = enable_nested_tensor, mask_check

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        out = src
        for layer in self.layers:
            out = layer(out, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                        is_causal=bool(is_causal))
        return self.norm(out) if self.norm is not None else out


def _copies(owner, name, layer, num_layers):
    """A ModuleList of ``num_layers`` deep copies of ``layer`` (argument ``name`` of
    ``owner``)."""
    if not isinstance(layer, Module):
        raise TypeError(f"{owner}: {name} must be a Module, got {type(layer).__name__}")
    if not is_int(num_layers) or num_layers < 1:
        raise ValueError(f"{owner}: num_layers must be a positive int, got {num_layers!r}")
    return ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])


def _activation(activation, owner="TransformerEncoderLayer"):
    if activation in ("relu", "gelu"):
        return relu if activation == "relu" else gelu
    if callable(activation):
        return activation
    raise ValueError(f"{owner}: activation should be 'relu', 'gelu' or a "
                     f"callable, got {activation!r}")
