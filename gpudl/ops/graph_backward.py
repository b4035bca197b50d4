"""Graph backwards (create_graph=True, see gpudl.higher_order) of the arithmetic, reduction
and matrix-product Functions: each op's derivative as in its ``backward``, written with Tensor
ops so that it is recorded and can be differentiated again; and the helpers the other
graph_backward modules share (``sum_to``, ``masked``, ``Adjoint``, ``scattered``).

Masks (where an op passes its gradient: relu, clamp, max) are constants of the forward values,
as in torch; everything the gradient depends on smoothly comes from ``Saved.input``/``output``.
"""

import numpy as np

from .. import backend
from ..autograd import Context, ArrayFunction
from ..higher_order import graph_backward
from ..sliced_gradient import dense
from ..tensor import Tensor
from ..tensor_math import where
from ..tensor_order import SharedByTies
from . import elementwise as E
from . import linalg as L
from . import reduce as R
from . import shape as S
from ._util import broadcast_axes, quiet, xp_of


def constant(array):
    """``array`` as a Tensor outside the graph."""
    return Tensor._make(array, False, None, 0, None)


def sum_to(g, shape):
    """The Tensor ``g`` summed back to ``shape`` (the inverse of broadcasting)."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    axes = broadcast_axes(g.shape, shape)
    return S.Reshape.apply(R.Sum.apply(g, axes, True) if axes else g, shape)


def masked(g, mask):
    """``g`` where the constant ``mask`` holds (booleans), or times its share of g (the shares
    ties give each input), and exactly 0 elsewhere: not ``g * mask``, whose 0 * inf would leak
    an infinite upstream gradient as NaN into an input not picked (torch's masked backwards)."""
    xp = xp_of(g._data)
    mask = xp.asarray(mask)
    if mask.dtype != np.bool_:
        g = scaled(g, mask)
        mask = mask != 0
    return where(constant(mask), g, 0.0)


def scaled(g, factor):
    """``g`` times the constant array ``factor``: a product rule (0 * inf is NaN), where torch's
    backward multiplies (nansum's not-NaN mask, amax's tie shares, a leaky slope)."""
    return g * constant(xp_of(g._data).asarray(factor).astype(g.dtype))


class Adjoint(ArrayFunction):
    """The gradient map of a linear op (``op.backward`` with the ``ctx`` its forward left) as a
    Function of the gradient: its own gradient is ``op``'s forward again, with the non-tensor
    arguments ``args`` (indexing's index, pooling's plan)."""

    @staticmethod
    def forward(ctx, g, op, op_ctx, args):
        ctx.op, ctx.args = op, args
        return dense(op.backward(op_ctx, g)[0])

    @staticmethod
    def backward(ctx, gg):
        return ctx.op.forward(Context(), gg, *ctx.args), None, None, None


@graph_backward(Adjoint)
def _adjoint(saved, gg):
    return saved.ctx.op.apply(gg, *saved.ctx.args), None, None, None


def scattered(g, shape, index):
    """Zeros of ``shape`` with ``g`` added at ``index`` (indexing's gradient), recorded."""
    ctx = Context()
    ctx.conf = (shape, g.dtype, index)
    return Adjoint.apply(g, S.GetItem, ctx, (index,))


# ----------------------------------------------------------------- arithmetic
@graph_backward(E.Add, E.Sub)
def _add(saved, g):
    (sa, sb), (na, nb) = saved.ctx.shapes, saved.needs_input_grad
    sign = -1 if saved.node.function is E.Sub else 1
    return (sum_to(g, sa) if na else None), (sum_to(g * sign, sb) if nb else None)


@graph_backward(E.Mul)
def _mul(saved, g):
    a, b = saved.ctx.saved_tensors
    (sa, sb), (na, nb) = saved.ctx.shapes, saved.needs_input_grad
    return (sum_to(g * saved.input(1, b), sa) if na else None,
            sum_to(g * saved.input(0, a), sb) if nb else None)


@graph_backward(E.Div)
def _div(saved, g):
    a, b = saved.ctx.saved_tensors
    (sa, sb), (na, nb) = saved.ctx.shapes, saved.needs_input_grad
    b = saved.input(1, b)
    return (sum_to(g / b, sa) if na else None,
            sum_to(-g * saved.input(0, a) / (b * b), sb) if nb else None)


@graph_backward(E.Pow)
def _pow(saved, g):
    a, b, y = saved.ctx.saved_tensors
    na, nb = saved.needs_input_grad
    base, exponent = saved.input(0, a), saved.input(1, b)
    ga = gb = None
    if na:      # b * a**(b-1), 0 where b == 0 (not 0 * inf)
        if isinstance(exponent, Tensor):
            slope = where(xp_of(b).asarray(b == 0), 0.0, exponent * base ** (exponent - 1))
        else:
            slope = exponent * base ** (exponent - 1) if exponent != 0 else base * 0
        ga = sum_to(g * slope, np.shape(a))
    if nb:      # a**b * log(a), 0 where a == 0 and b >= 0
        xp = xp_of(y)
        with quiet(xp):
            log_a = base.log() if isinstance(base, Tensor) else float(np.log(base))
            slope = where(xp.asarray((a == 0) & (b >= 0)), 0.0, saved.output(0, y) * log_a)
        gb = sum_to(g * slope, np.shape(b))
    return ga, gb


@graph_backward(E.Remainder)
def _remainder(saved, g):
    a, b = saved.ctx.saved_tensors
    na, nb = saved.needs_input_grad
    gb = None
    if nb:
        gb = sum_to(scaled(-g, E.python_divmod(a, b)[0]), np.shape(b))
    return (sum_to(g, np.shape(a)) if na else None), gb


@graph_backward(E.Maximum, E.Minimum)
def _extremum(saved, g):
    a, b = saved.ctx.saved_tensors
    na, nb = saved.needs_input_grad
    share_a = ((a > b) if saved.node.function.largest else (a < b)) + 0.5 * (a == b)
    return (sum_to(masked(g, share_a), np.shape(a)) if na else None,
            sum_to(masked(g, 1 - share_a), np.shape(b)) if nb else None)


@graph_backward(E.Neg)
def _neg(saved, g):
    return -g


@graph_backward(E.Abs)
def _abs(saved, g):
    (a,) = saved.ctx.saved_tensors
    return g * constant(E.abs_grad_sign(a))


@graph_backward(E.Exp)
def _exp(saved, g):
    return g * saved.output(0, saved.ctx.saved_tensors[0])


@graph_backward(E.Log)
def _log(saved, g):
    return g / saved.input(0, saved.ctx.saved_tensors[0])


@graph_backward(E.Sqrt)
def _sqrt(saved, g):
    return g / (2 * saved.output(0, saved.ctx.saved_tensors[0]))


@graph_backward(E.Tanh)
def _tanh(saved, g):
    y = saved.output(0, saved.ctx.saved_tensors[0])
    return g * (1 - y * y)


@graph_backward(E.Sigmoid)
def _sigmoid(saved, g):
    y = saved.output(0, saved.ctx.saved_tensors[0])
    return g * y * (1 - y)


@graph_backward(E.Relu)
def _relu(saved, g):
    (y,) = saved.ctx.saved_tensors
    return masked(g, (y > 0) | xp_of(y).isnan(y))    # NaN passes the gradient, as backward


@graph_backward(E.Clip)
def _clip(saved, g):
    a, lo, hi = saved.ctx.saved_tensors
    na, nlo, nhi = saved.needs_input_grad
    keep = np.True_
    if lo is not None:
        keep = keep & (a >= lo)
    if hi is not None:
        keep = keep & (a <= hi)
    glo = ghi = None
    if nlo:
        glo = sum_to(masked(g, (a < lo) if hi is None else (a < lo) & (lo < hi)), np.shape(lo))
    if nhi:
        ghi = sum_to(masked(g, (a > hi) if lo is None else (a > hi) | (hi < lo)), np.shape(hi))
    return (sum_to(masked(g, keep), a.shape) if na else None), glo, ghi


@graph_backward(E.Where)
def _where(saved, g):
    (cond,) = saved.ctx.saved_tensors
    (sa, sb), (_, na, nb) = saved.ctx.shapes, saved.needs_input_grad
    return (None, sum_to(masked(g, cond), sa) if na else None,
            sum_to(masked(g, ~cond), sb) if nb else None)


@graph_backward(E.NanAsZero)
def _nan_as_zero(saved, g):
    return scaled(g, saved.ctx.saved_tensors[0])


@graph_backward(E.Cast)
def _cast(saved, g):
    return g.astype(saved.ctx.dtype), None


@graph_backward(E.Clone)
def _clone(saved, g):
    return g


# ----------------------------------------------------------------- reductions
def _unreduced(g, shape, axes, keepdims):
    """The reduced gradient ``g`` broadcast back over the input's ``shape``."""
    if not keepdims and axes:
        g = S.Reshape.apply(g, tuple(1 if i in axes else n for i, n in enumerate(shape)))
    return S.Expand.apply(g, shape)


@graph_backward(R.Sum)
def _sum(saved, g):
    return _unreduced(g, *saved.ctx.conf), None, None


@graph_backward(R.Mean)
def _mean(saved, g):
    shape, axes, keepdims = saved.ctx.conf
    count = max(int(np.prod([shape[ax] for ax in axes])), 1)
    return _unreduced(g / count, shape, axes, keepdims), None, None


@graph_backward(R.Extreme)
def _extreme(saved, g, *unused):
    if saved.ctx.conf[0] is None:
        a, y = saved.ctx.saved_tensors
        hits = (a == y) | (xp_of(a).isnan(a) & xp_of(y).isnan(y))
        return masked(S.Reshape.apply(g, ()), hits / hits.sum()), None, None, None
    (idx,) = saved.ctx.saved_tensors        # along an axis: g goes to the index, kept dims
    axis, keepdims, shape = saved.ctx.conf
    xp = xp_of(idx)
    index = list(xp.ix_(*[xp.arange(n) for n in idx.shape]))
    index[axis] = idx
    return scattered(S.Reshape.apply(g, idx.shape), shape, tuple(index)), None, None, None


@graph_backward(SharedByTies)
def _shared_by_ties(saved, g):
    a, value = saved.ctx.conf
    ties = (a == value) | (xp_of(a).isnan(a) & xp_of(a).isnan(value))
    return masked(g, ties / ties.sum()), None


@graph_backward(R.Var, R.Std)
def _spread(saved, g):
    (centered,) = saved.ctx.saved_tensors
    axes, keepdims, denom = saved.ctx.conf
    if saved.node.function is R.Std:        # d std = d var / (2 std); 0 where std is 0
        y = saved.ctx.std
        g = where(y == 0, 0.0, g / (2 * saved.output(0, y)))
    # the variance ignores a shift of its input: x less its mean stands for x
    x = saved.input(0, centered)
    centered = x - x.mean(axes, keepdim=True)
    if not keepdims:
        g = S.Reshape.apply(g, tuple(1 if i in axes else n for i, n in enumerate(x.shape)))
    return g * (2 / denom if denom else float("nan")) * centered, None, None, None


@graph_backward(R.Amax)
def _amax(saved, g):
    a, y = saved.ctx.saved_tensors
    hits = a == y
    g = S.Reshape.apply(g, y.shape)
    return scaled(g, hits / hits.sum(axis=saved.ctx.axes, keepdims=True)), None, None, None


def _exclusive_cumprod(x, axis, reverse=False):
    """The product of the elements before (after, with ``reverse``) each one along ``axis``, in
    Tensor ops: no division, so zeros are exact."""
    if reverse:
        return _exclusive_cumprod(x.flip(axis), axis).flip(axis)
    one = x.new_ones(x[_along(axis, 0, 1)].shape)
    return S.Cat.apply(axis, one, R.CumProd.apply(x[_along(axis, 0, x.shape[axis] - 1)], axis))


def _along(axis, start, stop):
    return (slice(None),) * axis + (slice(start, stop),)


@graph_backward(R.Prod)
def _prod(saved, g):
    """The product of the other elements (as the plain backward: exact where some are 0)."""
    (a,) = saved.ctx.saved_tensors
    axis, keepdims = saved.ctx.conf
    x = saved.input(0, a)
    flat, along = (x.reshape(-1), 0) if axis is None else (x, axis)
    if flat.shape[along] == 0:
        return x.new_zeros(x.shape), None, None
    others = _exclusive_cumprod(flat, along) * _exclusive_cumprod(flat, along, reverse=True)
    if axis is None:
        return (S.Reshape.apply(g, ()) * others).reshape(x.shape), None, None
    if not keepdims:
        g = g.unsqueeze(axis)
    return g * others, None, None


@graph_backward(R.CumProd)
def _cumprod(saved, g):
    """sum over j >= k of g_j y_j, divided by a_k; where ``a`` holds a zero, without dividing:
    the product before k times, summed over j >= k, g_j times the product of a_(k+1..j)."""
    a, y = saved.ctx.saved_tensors
    axis, n = saved.ctx.axis, a.shape[saved.ctx.axis]
    x = saved.input(0, a)
    if n == 0:
        return x.new_zeros(x.shape), None
    if backend.host_value((a != 0).all(), "cumprod create_graph (zero check)"):
        later = R.CumSum.apply((g * saved.output(0, y)).flip(axis), axis).flip(axis)
        return later / x, None
    before, parts = _exclusive_cumprod(x, axis), []
    one = x.new_ones(x[_along(axis, 0, 1)].shape)
    for k in range(n):
        after = S.Cat.apply(axis, one, R.CumProd.apply(x[_along(axis, k + 1, n)], axis))
        parts.append((g[_along(axis, k, n)] * after).sum(axis, keepdim=True)
                     * before[_along(axis, k, k + 1)])
    return S.Cat.apply(axis, *parts), None


@graph_backward(R.Softmax)
def _softmax(saved, g):
    y, axis = saved.output(0, saved.ctx.saved_tensors[0]), saved.ctx.axis
    return y * (g - (g * y).sum(axis, keepdim=True)), None


@graph_backward(R.LogSoftmax)
def _log_softmax(saved, g):
    y, axis = saved.output(0, saved.ctx.saved_tensors[0]), saved.ctx.axis
    return g - y.exp() * g.sum(axis, keepdim=True), None


# ----------------------------------------------------------------- matrix products
@graph_backward(L.MatMul)
def _matmul(saved, g):
    a, b = saved.ctx.saved_tensors         # each kept only for the other's gradient
    na, nb = saved.needs_input_grad
    shape_a, shape_b = saved.ctx.shapes
    # 1-D operands are promoted to matrices for the products, then squeezed back
    a2_shape, b2_shape, product = L.matrix_shapes(shape_a, shape_b)
    g2 = S.Reshape.apply(g, product)
    ga = gb = None
    if na:
        b2 = S.Reshape.apply(saved.input(1, b), b2_shape)
        ga = S.Reshape.apply(sum_to(g2 @ b2.transpose(-1, -2), a2_shape), shape_a)
    if nb:
        a2 = S.Reshape.apply(saved.input(0, a), a2_shape)
        gb = S.Reshape.apply(sum_to(a2.transpose(-1, -2) @ g2, b2_shape), shape_b)
    return ga, gb


@graph_backward(L.Einsum)
def _einsum(saved, g):
    operands = saved.ctx.saved_tensors
    inputs, output = saved.ctx.equation.split("->")
    subs = inputs.split(",")
    grads = [None]
    for i, (sub, a) in enumerate(zip(subs, operands)):
        if not saved.needs_input_grad[i + 1]:
            grads.append(None)
            continue
        equation, kept, others = L.gradient_equation(subs, output, i)
        ga = L.Einsum.apply(equation, g, *(saved.input(j + 1, operands[j]) for j in others))
        # subscripts summed away in forward (only in this operand) come back by broadcasting
        ga = S.Reshape.apply(ga, tuple(n if c in kept else 1 for c, n in zip(sub, a.shape)))
        grads.append(S.Expand.apply(ga, a.shape))
    return tuple(grads)


@graph_backward(L.Linear)
def _linear(saved, g):
    x, w = saved.ctx.saved_tensors
    return _linear_grads(saved, g, x, w)


@graph_backward(L.LinearReLU)
def _linear_relu(saved, g):
    """ReLU's mask from the kept output (NaN passes the gradient, as backward), then
    Linear's."""
    x, w, y = saved.ctx.saved_tensors
    return _linear_grads(saved, masked(g, (y > 0) | xp_of(y).isnan(y)), x, w)


def _linear_grads(saved, g, x, w):
    """(gx, gw, gb) of y = x @ w.T + b, the arrays x and w its inputs 0 and 1."""
    nx, nw, nb = saved.needs_input_grad[:3]
    rows = int(np.prod(g.shape[:-1]))
    g2 = S.Reshape.apply(g, (rows, g.shape[-1]))
    gx = g @ saved.input(1, w) if nx else None
    gw = g2.T @ S.Reshape.apply(saved.input(0, x), (rows, x.shape[-1])) if nw else None
    gb = g2.sum(0) if nb else None
    return gx, gw, gb
