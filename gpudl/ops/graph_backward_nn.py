"""Graph backwards (create_graph=True, see gpudl.higher_order) of the neural-network Functions:
activations, dropout, losses, normalizations and vector norms, embedding, pooling, attention and
the convolutions (2-D, and 3-D through ops/conv_nd.py).

The convolution's gradients are themselves convolutions: conv2d's input gradient is
conv_transpose2d of the output gradient, and its weight gradient is ``ConvWeightGrad`` (a
Function added here); the three are bilinear forms of one trilinear form, so each one's
derivatives are the other two and any order can be taken.
"""

import numpy as np

from .. import backends, higher_order, kernels
from ..autograd import ArrayFunction
from ..functions import cat
from ..higher_order import graph_backward
from ..tensor import Tensor
from ..tensor_math import where
from . import activation as A
from . import attention as AT
from . import conv as C
from . import conv_nd as CN
from . import cross_entropy as CE
from . import distance as DI
from . import dropout as D
from . import linalg as L
from . import loss as LS
from . import normalization as N
from . import padding as P
from . import pool as PL
from . import reduce as R
from . import rnn as RNN
from . import shape as S
from . import sparse as SP
from ._util import quiet, xp_of
from .rnn_steps import unrolled_layer
from .graph_backward import Adjoint, constant, masked, scaled, scattered, sum_to


# ----------------------------------------------------------------- activations
@graph_backward(A.LeakyRelu)
def _leaky_relu(saved, g):
    (positive,) = saved.ctx.saved_tensors
    return scaled(g, xp_of(positive).where(positive, 1.0, saved.ctx.slope)), None


@graph_backward(A.Elu)
def _elu(saved, g):
    x, y = saved.ctx.saved_tensors     # below 0 the slope is alpha * exp(x) = y + alpha
    return where(x > 0, g, g * (saved.output(0, y) + saved.ctx.alpha)), None


@graph_backward(A.Silu)
def _silu(saved, g):
    x = saved.input(0, saved.ctx.saved_tensors[0])
    s = x.sigmoid()
    return g * s * (1 + x * (1 - s))


@graph_backward(A.Softplus)
def _softplus(saved, g):
    (z,) = saved.ctx.saved_tensors      # beta * x
    beta = saved.ctx.beta
    scaled = saved.input(0, z) if beta == 1 else saved.input(0, z / beta) * beta
    return where(z > saved.ctx.threshold, g, g * scaled.sigmoid()), None, None


@graph_backward(A.Gelu, unsupported=lambda ctx: "gelu(approximate='tanh')"
                if ctx.approximate != "none" else None)
def _gelu(saved, g):
    x = saved.input(0, saved.ctx.saved_tensors[0])
    cdf = 0.5 * (1 + (x * 0.5 ** 0.5).erf())
    return g * (cdf + x * (-0.5 * x * x).exp() * (0.5 / np.pi) ** 0.5), None


@graph_backward(A.Hardtanh)
def _hardtanh(saved, g):
    return masked(g, saved.ctx.saved_tensors[0]), None, None


@graph_backward(A.LogSigmoid)
def _log_sigmoid(saved, g):
    return g * (-saved.input(0, saved.ctx.saved_tensors[0])).sigmoid()


@graph_backward(D.Dropout)
def _dropout(saved, g):
    return g * constant(saved.ctx.saved_tensors[0]), None, None


# ----------------------------------------------------------------- losses
def _softplus_neg(x):
    """log(1 + exp(-x)) in Tensor ops, without overflow."""
    return (-x).relu() + (-x.abs()).exp().log1p()


def _huber(x, t, delta):
    d = (x - t).clamp(-delta, delta)
    return d, -d


def _smooth_l1(x, t, beta):
    d = x - t
    d = where(abs(d._data) < beta, d / beta, d.sign())
    return d, -d


def _bce(x, t, _):
    return ((x - t) / (x * (1 - x)).clamp(min=1e-12),
            (-x).log1p().clamp(min=-100) - x.log().clamp(min=-100))


def _bce_with_logits(x, t, pos_weight):
    if pos_weight is None:
        return (1 - t) - (-x).sigmoid(), -x
    pos_weight = constant(pos_weight)
    return ((1 - t) - (1 + (pos_weight - 1) * t) * (-x).sigmoid(),
            -x + (pos_weight - 1) * _softplus_neg(x))


def _kl_div(x, t, log_target):
    if log_target:
        e = t.exp()
        return -e, e * (t - x + 1)
    zero = t._data == 0        # d/dt t log t = log t + 1, 0 at t == 0 as the plain backward
    return -t, where(zero, 0.0, where(zero, 1.0, t).log() + 1) - x


# rule -> (d loss / d x, d loss / d t) as Tensors f(x, t, param), as the rule's ``grad``
_POINTWISE_SLOPES = {
    LS._MSE: lambda x, t, _: (2 * (x - t), 2 * (t - x)),
    LS._L1: lambda x, t, _: ((x - t).sign(), (t - x).sign()),
    LS._Huber: _huber,
    LS._SmoothL1: _smooth_l1,
    LS._BCE: _bce,
    LS._BCEWithLogits: _bce_with_logits,
    LS._KLDiv: _kl_div,
}


def _pointwise_limits(ctx):
    rule = ctx.conf[0]
    if rule not in _POINTWISE_SLOPES:
        return f"{rule.__name__.strip('_').lower()} loss"
    return "a loss weight that requires grad" if ctx.needs_input_grad[2] else None


@graph_backward(LS.PointwiseLoss, unsupported=_pointwise_limits)
def _pointwise_loss(saved, g):
    x, t, weight = saved.ctx.saved_tensors
    rule, param, reduction, divisor = saved.ctx.conf
    need_x, need_t = saved.needs_input_grad[:2]
    g = LS.expand_grad(g, reduction, divisor)
    dx, dt = _POINTWISE_SLOPES[rule](saved.input(0, x), saved.input(1, t), param)
    scale = g if weight is None else g * constant(weight)
    return (sum_to(dx * scale, x.shape) if need_x else None,
            sum_to(dt * scale, t.shape) if need_t else None, None, None, None, None, None)


def _per_element(g, reduction, divisor):
    """The loss gradient per target, shaped (N, 1, d...) or a scalar, to broadcast over
    classes."""
    g = LS.expand_grad(g, reduction, divisor)
    return g.unsqueeze(1) if reduction == "none" else g


@graph_backward(CE.CrossEntropy)
def _cross_entropy(saved, g):
    logp, t, valid, wt, weight, divisor = saved.ctx.saved_tensors
    smoothing, reduction = saved.ctx.conf
    xp, n_classes = xp_of(logp), logp.shape[1]
    # log p differs from the logits by a constant per row: their softmax and its derivative
    # are the logits' (Saved.input)
    p = saved.input(0, logp).softmax(1)
    total_w = n_classes if weight is None else weight.sum()
    coef = (1 - smoothing) * wt + (smoothing / n_classes) * valid * total_w
    target_part = xp.zeros(logp.shape, logp.dtype)
    xp.put_along_axis(target_part, t, (1 - smoothing) * xp.expand_dims(wt, 1), axis=1)
    if smoothing:
        w = 1 if weight is None else weight.reshape(CE._class_shape(logp))
        target_part += (smoothing / n_classes) * xp.expand_dims(valid, 1) * w
    # all targets ignored ('mean' divides by 0): every row is masked out below, and a 0 divisor
    # would put 0 * inf = NaN into the second backward (torch's gives 0)
    divisor = xp.where(divisor == 0, 1, divisor)
    gx = (p * constant(xp.expand_dims(coef, 1).astype(logp.dtype)) - constant(target_part)) \
        * _per_element(g, reduction, divisor)
    return where(xp.expand_dims(valid, 1), gx, 0.0), None, None, None, None, None, None


@graph_backward(CE.CrossEntropyProbs, unsupported=lambda ctx: "cross_entropy's class weight "
                "that requires grad" if ctx.needs_input_grad[2] else None)
def _cross_entropy_probs(saved, g):
    logp, t, wt, w = saved.ctx.saved_tensors
    smoothing, reduction, divisor = saved.ctx.conf
    need_x, need_t = saved.needs_input_grad[:2]
    x = saved.input(0, logp)            # as _cross_entropy: the softmax ignores the shift
    n_classes = logp.shape[1]
    # the target as given: forward kept it smoothed, t * (1 - e) + e / C
    target = saved.input(1, (t - smoothing / n_classes) / (1 - smoothing) if smoothing else t)
    smoothed = target * (1 - smoothing) + smoothing / n_classes if smoothing else target
    weighted = smoothed if w is None else smoothed * constant(w)
    g = _per_element(g, reduction, divisor)
    gx = (x.softmax(1) * weighted.sum(1, keepdim=True) - weighted) * g if need_x else None
    gt = None
    if need_t:
        gt = -R.LogSoftmax.apply(x, 1) * (1 - smoothing) * g
        gt = gt if w is None else gt * constant(w)
    return gx, gt, None, None, None


@graph_backward(CE.NLLLoss)
def _nll_loss(saved, g):
    t, valid, wt, divisor = saved.ctx.saved_tensors
    shape, dtype, reduction = saved.ctx.conf
    xp = xp_of(wt)
    picked = xp.zeros(shape, dtype)
    xp.put_along_axis(picked, t, -xp.expand_dims(wt, 1), axis=1)
    gx = constant(picked) * _per_element(g, reduction, divisor)
    return where(xp.expand_dims(valid, 1), gx, 0.0), None, None, None, None


# ----------------------------------------------------------------- distances
@graph_backward(DI.Cdist)
def _cdist(saved, g):
    a, b, p, _ = saved.ctx.conf
    need_a, need_b = saved.needs_input_grad[:2]
    x1, x2 = saved.input(0, a), saved.input(1, b)
    out = saved.ctx.out
    if p == 2:      # d/da_i = sum_j w_ij (a_i - b_j), w = g / distance (0 where it is 0)
        w = where(out == 0, 0.0, g / where(out == 0, 1.0, saved.output(0, out)))
        ga = x1 * w.sum(-1, keepdim=True) - w @ x2 if need_a else None
        gb = x2 * w.sum(-2).unsqueeze(-1) - w.transpose(-1, -2) @ x1 if need_b else None
    else:           # through the differences (P, R, M), as the plain backward
        diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)
        xp = xp_of(out)
        raw = saved.ctx.diff
        if p == 0:
            local = diff * 0
        elif p in (1, float("inf")):
            hits = True if p == 1 else abs(raw) == out[..., None]
            local = constant(xp.sign(raw) * hits)
        else:
            dist = saved.output(0, out).unsqueeze(-1)
            flat = (out[..., None] == 0) | (raw == 0)
            with quiet(xp):
                local = where(flat, 0.0, diff * diff.abs() ** (p - 2)
                              / where(flat, 1.0, dist) ** (p - 1))
        weighted = g.unsqueeze(-1) * local
        ga = weighted.sum(-2) if need_a else None
        gb = -weighted.sum(-3) if need_b else None
    return (None if ga is None else sum_to(ga, a.shape),
            None if gb is None else sum_to(gb, b.shape), None, None)


# ----------------------------------------------------------------- norms
def _normalized(x, axes, eps):
    """(xhat, invstd) of ``x`` over ``axes``, recomputed with Tensor ops."""
    centered = x - x.mean(axes, keepdim=True)
    invstd = ((centered * centered).mean(axes, keepdim=True) + eps) ** -0.5
    return centered * invstd, invstd


def _normalized_input_grad(g_xhat, xhat, invstd, axes):
    """The input gradient of xhat = (x - mean) * invstd over ``axes``, from xhat's."""
    return invstd * (g_xhat - g_xhat.mean(axes, keepdim=True)
                     - xhat * (g_xhat * xhat).mean(axes, keepdim=True))


def _centered_input(saved, xhat, invstd):
    """Input 0 of a normalization, given the value x - mean: normalizing ignores a shift of x,
    so the formulas and their derivatives are the same at x and at x - mean."""
    return saved.input(0, xhat / invstd)


def _layer_norm_grads(saved, g, x, weight, weight_input, need):
    """(gx, gw, gb) of layer_norm at the Tensor ``x`` (its input, or that input less its mean)
    with the weight array ``weight`` (or None; input ``weight_input`` of the node), over
    ``saved.ctx.axes``; ``need``: which of the three."""
    axes = saved.ctx.axes
    need_x, need_w, need_b = need
    xhat, invstd = _normalized(x, axes, saved.ctx.eps)
    lead = tuple(range(g.ndim - len(axes)))
    g_xhat = g if weight is None else g * saved.input(weight_input, weight)
    return (_normalized_input_grad(g_xhat, xhat, invstd, axes) if need_x else None,
            (g * xhat).sum(lead) if need_w else None,
            g.sum(lead) if need_b else None)


def _norm_input_value(ctx):
    """(the value of a LayerNorm's input x, or x less its mean: normalizing ignores a shift of
    x), its weight array or None: from the fused cuda path's rows (kernels/layer_norm_cuda.py
    keeps x itself) or the other paths' (xhat, invstd)."""
    if ctx.rows is not None:
        return ctx.rows[0].reshape(ctx.shapes[0]), ctx.weight
    xhat, invstd, weight = ctx.saved_tensors
    return xhat / invstd, weight


@graph_backward(N.LayerNorm)
def _layer_norm(saved, g):
    """Recomputed with Tensor ops from x (or x - mean), on every path: the fused cuda path
    keeps x's rows and the weight, the others xhat and invstd."""
    value, weight = _norm_input_value(saved.ctx)
    return _layer_norm_grads(saved, g, saved.input(0, value), weight, 1,
                             saved.needs_input_grad[:3]) + (None, None)


class _Joined(ArrayFunction):
    """``x`` (an array already computed: r + (a + c)) as the sum of the Tensors r, a and c
    (c (D,), or None), whose values it does not read: only their places in the graph. Its
    gradient goes to r and a as it is, c's is its column sum."""

    @staticmethod
    def forward(ctx, r, a, c, x):
        ctx.c_shape = None if c is None else c.shape
        return x

    @staticmethod
    def backward(ctx, g):
        need_r, need_a, need_c = ctx.needs_input_grad[:3]
        gc = g.reshape(-1, g.shape[-1]).sum(axis=0).reshape(ctx.c_shape) if need_c else None
        return g if need_r else None, g if need_a else None, gc, None


@graph_backward(_Joined)
def _joined(saved, g):
    need_r, need_a, need_c = saved.needs_input_grad[:3]
    return (g if need_r else None, g if need_a else None,
            sum_to(g, saved.ctx.c_shape) if need_c else None, None)


def _place(saved, i, stand_in):
    """Input ``i`` of ``saved``'s node as a Tensor at its place in the graph (a leaf itself;
    a computed input holding ``stand_in``, an array of its shape whose values nothing reads),
    or None where it needs no gradient."""
    edge = saved.node.edges[i]
    if edge is None:
        return None
    return edge if isinstance(edge, Tensor) else saved.input(i, stand_in)


@graph_backward(N.ResidualLayerNorm)
def _residual_layer_norm(saved, g):
    """LayerNorm's at x = r + (a + c): the value forward kept of x (or x less its mean) as a
    _Joined of r, a and c (neither r nor a is kept), so x's gradient goes to r and a, its
    column sum to c."""
    value, weight = _norm_input_value(saved.ctx)
    need_r, need_a, need_c, need_w, need_b = saved.needs_input_grad[:5]
    c_shape = saved.output_shape(0)[-1:]
    c = _place(saved, 2, xp_of(value).empty(c_shape, value.dtype))
    x = _Joined.apply(_place(saved, 0, value), _place(saved, 1, value), c, value)
    gx, gw, gb = _layer_norm_grads(saved, g, x, weight, 3,
                                   (need_r or need_a or need_c, need_w, need_b))
    return (gx if need_r else None, gx if need_a else None,
            sum_to(gx, c_shape) if need_c else None, gw, gb, None)


@graph_backward(N.BatchNorm)
def _batch_norm(saved, g):
    xhat, invstd, weight = saved.ctx.saved_tensors
    training, axes, shape = saved.ctx.conf
    need_x, need_w, need_b = saved.needs_input_grad[:3]
    x = _centered_input(saved, xhat, invstd.reshape(shape))
    if training:
        xhat, invstd = _normalized(x, axes, saved.ctx.eps)
    else:                       # the running statistics: constants
        invstd = constant(invstd.reshape(shape))
        xhat = x * invstd
    g_xhat = g if weight is None else g * saved.input(1, weight).reshape(shape)
    gx = None
    if need_x:
        gx = _normalized_input_grad(g_xhat, xhat, invstd, axes) if training else g_xhat * invstd
    return (gx, (g * xhat).sum(axes) if need_w else None, g.sum(axes) if need_b else None,
            None, None, None, None, None)


@graph_backward(L.VectorNorm)
def _vector_norm(saved, g):
    a, y = saved.ctx.saved_tensors
    ord, axes = saved.ctx.conf
    xp = xp_of(a)
    g = g.reshape(y.shape)
    sign = constant(xp.sign(a))
    if ord in (float("inf"), float("-inf")):
        hits = abs(a) == y
        return scaled(g, hits / hits.sum(axis=axes, keepdims=True)) * sign, None, None, None
    if ord == 0:
        return g * 0 * sign, None, None, None
    if ord == 1:
        return g * sign, None, None, None
    x = saved.input(0, a)
    norm = saved.output(0, y.reshape(saved.output_shape(0))).reshape(y.shape)
    zero = y == 0
    safe = where(zero, 1.0, norm)
    slope = x / safe if ord == 2 else sign * x.abs() ** (ord - 1) / safe ** (ord - 1)
    return where(xp.broadcast_to(zero, a.shape), 0.0, g * slope), None, None, None


@graph_backward(P.Pad)
def _pad(saved, g):
    return P.Pad.apply(S.GetItem.apply(g, saved.ctx.inner), saved.ctx.shrink, 0), None, None


@graph_backward(SP.Embedding)
def _embedding(saved, g):
    (indices,) = saved.ctx.saved_tensors
    shape, padding_idx, scale_grad_by_freq = saved.ctx.conf
    rows_g = g.reshape(-1, shape[1])
    if scale_grad_by_freq:
        rows_g = rows_g / constant(SP.picks(indices.reshape(-1), shape[0], g.dtype))
    gw = scattered(rows_g, shape, (indices.reshape(-1),))
    if padding_idx is not None:
        rows = xp_of(indices).ones((shape[0], 1), bool)
        rows[padding_idx] = False
        gw = masked(gw, rows)
    return gw, None, None, None


# ----------------------------------------------------------------- pooling
@graph_backward(PL.MaxPool2d)
def _max_pool2d(saved, gy, *unused_index_grad):
    (argmax,) = saved.ctx.saved_tensors
    shape, window = saved.ctx.conf
    xp = xp_of(argmax)
    planes = int(np.prod(shape[:-2]))
    flat = PL.K.max_pool2d_indices(argmax, shape, *window).reshape(planes, -1)
    index = (xp.arange(planes)[:, None], flat)      # (plane, position in it) of each max
    gx = scattered(gy.reshape(planes, -1), (planes, shape[-2] * shape[-1]), index)
    return gx.reshape(shape), None, None, None


@graph_backward(PL.AvgPool2d)
def _avg_pool2d(saved, gy):
    return Adjoint.apply(gy, PL.AvgPool2d, saved.ctx, (saved.ctx.conf[1],)), None


@graph_backward(PL.AdaptiveAvgPool2d)
def _adaptive_avg_pool2d(saved, gy):
    return Adjoint.apply(gy, PL.AdaptiveAvgPool2d, saved.ctx, (tuple(gy.shape[-2:]),)), None


# ----------------------------------------------------------------- attention
@graph_backward(AT.ScaledDotProductAttention, AT._PlainAttention)
def _attention(saved, gout):
    """The probabilities recomputed with Tensor ops (AT.attention_weights), then out = P v's
    gradients: dv = P^T g, dS = P * (dP - sum(dP * P)) with dP = g v^T, dq = dS k * scale,
    dk = dS^T q * scale (summed back over broadcast batch dims)."""
    query, key, value, _, _, mask, _ = saved.ctx.saved_tensors
    is_causal, scale, _ = saved.ctx.conf
    q, k, v = (saved.input(i, a) for i, a in enumerate((query, key, value)))
    p = AT.attention_weights(q, k, None if mask is None else constant(mask), is_causal, scale)
    dp = gout @ v.transpose(-2, -1)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * scale
    need_q, need_k, need_v = saved.needs_input_grad[:3]
    return ((sum_to(ds @ k, query.shape) if need_q else None,
             sum_to(ds.transpose(-2, -1) @ q, key.shape) if need_k else None,
             sum_to(p.transpose(-2, -1) @ gout, value.shape) if need_v else None)
            + (None,) * (len(saved.node.edges) - 3))


@graph_backward(AT.PackedSelfAttention)
def _packed_self_attention(saved, g):
    """The projection and the probabilities recomputed with Tensor ops (as ``_attention``),
    the heads' gradients side by side as the projection's, then Linear's."""
    rows, w, _, _, _, _, b = saved.ctx.saved_tensors
    N, L, E, heads, is_causal, scale = saved.ctx.conf
    D = E // heads
    x = saved.input(0, rows.reshape(N, L, E))
    w = saved.input(1, w)
    proj = x @ w.T if b is None else x @ w.T + saved.input(2, b)

    def split(t):                                   # (N, L, E) -> (N, H, L, D)
        return t.reshape(N, L, heads, D).transpose(1, 2)
    q, k, v = (split(t) for t in proj.chunk(3, dim=-1))
    gout = split(g)
    p = AT.attention_weights(q, k, None, is_causal, scale)
    dp = gout @ v.transpose(-2, -1)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * scale
    gproj = cat([t.transpose(1, 2).reshape(N, L, E)
                 for t in (ds @ k, ds.transpose(-2, -1) @ q, p.transpose(-2, -1) @ gout)], -1)
    need_x, need_w, need_b = saved.needs_input_grad[:3]
    flat = gproj.reshape(N * L, 3 * E)
    return (gproj @ w if need_x else None,
            flat.T @ x.reshape(N * L, E) if need_w else None,
            flat.sum(0) if need_b else None, None, None)


# ----------------------------------------------------------------- recurrent layers
@graph_backward(RNN.RecurrentLayer)
def _recurrent_layer(saved, *grads):
    """The fused layer's gradients are kernels, not Tensor ops: the layer is recomputed step by
    step in Tensor ops from its inputs in the graph (ops.rnn_steps), and that recomputation's
    vector-Jacobian product taken by a nested create_graph walk (its graph kept: a third
    order goes through it too)."""
    mode, reverse = saved.ctx.layer
    inputs = [saved.input(i, value) for i, value in enumerate(saved.ctx.inputs)]
    outputs = unrolled_layer(mode, *inputs, reverse=reverse)[:len(grads)]
    wanted = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad
              and saved.needs_input_grad[i]]
    found = higher_order.gradients_of(outputs, grads, [inputs[i] for i in wanted], True)
    result = [None] * len(saved.node.edges)
    for i, g in zip(wanted, found):
        result[i] = g if g is not None else inputs[i].new_zeros(inputs[i].shape)
    return tuple(result)


@graph_backward(RNN.StackedStates)
def _stacked_states(saved, g):
    """The final states the layers wrote into one buffer: Stack's slices (buffer, slots: none)."""
    return (None, None, *(S.GetItem.apply(g, (k,)) for k in range(g.shape[0])))


# ----------------------------------------------------------------- convolutions
# 2-D convolutions run kernels/conv.py (Conv2d, ConvTranspose2d), the other spatial ranks
# ops/conv_nd.py (ConvNd, ConvTransposeNd); both take the same arguments.
def _conv_functions(x_shape):
    """(convolution, transposed convolution) Functions for inputs of ``x_shape``."""
    return (C.Conv2d, C.ConvTranspose2d) if len(x_shape) == 4 else (CN.ConvNd,
                                                                    CN.ConvTransposeNd)


def _conv_conf(ctx):
    """(stride, padding, dilation, groups) of a convolution or transposed convolution."""
    if hasattr(ctx, "geo"):
        return ctx.geo.stride, ctx.geo.padding, ctx.geo.dilation, ctx.geo.groups
    if len(ctx.conf) == 5:                      # conv_transpose2d's (.., output_padding, ..)
        stride, padding, _, groups, dilation = ctx.conf
        return stride, padding, dilation, groups
    return ctx.conf


def _output_padding(x_shape, y_shape, w_shape, stride, padding, dilation):
    """The transposed convolution's output_padding that maps the convolution's output shape
    back to ``x_shape``."""
    return tuple(x_shape[2 + i] - ((y_shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                   + dilation[i] * (w_shape[2 + i] - 1) + 1)
                 for i in range(len(x_shape) - 2))


def _conv_input_grad(gy, w, x_shape, stride, padding, dilation, groups):
    """The convolution's input gradient: the transposed convolution of ``gy`` back to
    ``x_shape``."""
    extra = _output_padding(x_shape, gy.shape, w.shape, stride, padding, dilation)
    transposed = _conv_functions(x_shape)[1]
    return transposed.apply(gy, w, None, stride, padding, extra, groups, dilation)


def _geometry(x, gy, w_shape, conf):
    return CN.Geometry(x.shape[2:], w_shape[2:], *conf, out=gy.shape[2:])


class ConvWeightGrad(ArrayFunction):
    """The convolution's weight gradient from its input ``x`` and output gradient ``gy``
    (any spatial rank)."""

    @staticmethod
    def forward(ctx, x, gy, w_shape, conf):
        ctx.save_for_backward(x, gy)
        ctx.conf = conf
        if x.ndim != 4:
            return CN.grad_weight(x, gy, _geometry(x, gy, w_shape, conf), w_shape)
        w = xp_of(x).empty(w_shape, x.dtype)         # read for its shape and dtype only
        return kernels.conv.conv2d_backward(x, w, gy, *conf, needs=(False, True, False),
                                            allow_tf32=backends.conv_allows_tf32())[1]

    @staticmethod
    def backward(ctx, gw):
        x, gy = ctx.saved_tensors
        need_x, need_gy = ctx.needs_input_grad[:2]
        if x.ndim != 4:
            geo = _geometry(x, gy, gw.shape, ctx.conf)
            gx = CN.grad_input(gy, gw, geo, x.shape[1]) if need_x else None
            return gx, (CN.forward(x, gw, None, geo) if need_gy else None), None, None
        gx, _, _ = kernels.conv.conv2d_backward(x, gw, gy, *ctx.conf,
                                                needs=(True, False, False),
                                                allow_tf32=backends.conv_allows_tf32())
        ggy = kernels.conv.conv2d_forward(x, gw, None, *ctx.conf,
                                          allow_tf32=backends.conv_allows_tf32())
        return (gx if need_x else None), (ggy if need_gy else None), None, None


@graph_backward(ConvWeightGrad)
def _conv_weight_grad(saved, gw):
    x, gy = saved.ctx.saved_tensors
    need_x, need_gy = saved.needs_input_grad[:2]
    conf = saved.ctx.conf
    convolution = _conv_functions(x.shape)[0]
    return (_conv_input_grad(saved.input(1, gy), gw, x.shape, *conf) if need_x else None,
            convolution.apply(saved.input(0, x), gw, None, *conf) if need_gy else None,
            None, None)


def _bias_grad(gy):
    return gy.sum((0,) + tuple(range(2, gy.ndim)))


@graph_backward(C.Conv2d, CN.ConvNd)
def _conv(saved, gy):
    x, w = saved.ctx.saved_tensors
    nx, nw, nb = saved.needs_input_grad[:3]
    conf = _conv_conf(saved.ctx)
    gx = _conv_input_grad(gy, saved.input(1, w), x.shape, *conf) if nx else None
    gw = ConvWeightGrad.apply(saved.input(0, x), gy, w.shape, conf) if nw else None
    return (gx, gw, _bias_grad(gy) if nb else None, None, None, None, None)


@graph_backward(C.ConvTranspose2d, CN.ConvTransposeNd)
def _conv_transpose(saved, gy):
    # y = conv_transpose(x, w) is the convolution's input gradient: <gy, y> = <conv(gy, w), x>
    x, w = saved.ctx.saved_tensors
    nx, nw, nb = saved.needs_input_grad[:3]
    conf = _conv_conf(saved.ctx)
    convolution = _conv_functions(x.shape)[0]
    gx = convolution.apply(gy, saved.input(1, w), None, *conf) if nx else None
    gw = ConvWeightGrad.apply(gy, saved.input(0, x), w.shape, conf) if nw else None
    return (gx, gw, _bias_grad(gy) if nb else None, None, None, None, None, None)
