"""Graph backwards (create_graph=True, see gpudl.higher_order) of the table-driven elementwise
maths (gpudl.ops.elementwise's and elementwise_math's unary tables, the binary ops of
elementwise_math, gd.special's functions), of the strided views and scatters, and of
logcumsumexp and scatter_reduce.

The elementwise tables hold each derivative once, as a formula ``f(xp, a, ...)`` written against
an array module. ``TensorMath`` is such a module whose functions are gpudl's Tensor ops, so the
plain backward runs a formula on arrays and the graph backward runs the same formula on Tensors
(recorded, hence differentiable again). Masks in the formulas (``xp.where(a == 0, ...)``) are
then bool Tensors outside the graph: constants, as in torch.
"""

import numpy as np

from .. import backend, special
from ..higher_order import graph_backward
from ..tensor_scans import LogCumSumExp
from ..tensor_scatter import ScatterReduce, tie_shares
from . import elementwise as E
from . import elementwise_math as M
from . import shape as S
from .graph_backward import Adjoint, constant, sum_to
from .strided import DiagEmbed, IntoView, StridedView
from ._util import xp_of


class TensorMath:
    """The array-module functions the derivative tables call, as Tensor ops: gpudl's functions
    of the same names (gd.special's for the special functions), ``full_like`` a constant, and
    NumPy's ``errstate`` (for ``quiet``)."""

    errstate = staticmethod(np.errstate)

    def __getattr__(self, name):
        import gpudl
        if name in special.WithSpecial.names:
            return getattr(special, name)
        if name == "full_like":
            return lambda a, value: gpudl.full_like(a, value)
        return getattr(gpudl, name)


TENSOR_MATH = TensorMath()


# ----------------------------------------------------------------- elementwise tables
@graph_backward(E.Unary, M.MathUnary)
def _unary(saved, g):
    a, y = saved.ctx.saved_tensors
    y = None if y is None else saved.output(0, y)       # kept only when the formula reads it
    derivative = saved.node.function.table[saved.ctx.name][1]
    if derivative is E._zero:                            # zeros, not g * 0 (nan at inf g)
        return g.new_zeros(g.shape), None
    slope = derivative(TENSOR_MATH, saved.input(0, a), y)
    return g * slope, None


@graph_backward(M.Atan2, M.Hypot, M.Copysign, M.Fmod, M.LogAddExp, M.LogAddExp2, M.Xlogy,
                M.NextAfter, M.Fmax, M.Fmin)
def _binary(saved, g):
    a, b, y = saved.ctx.saved_tensors
    na, nb = saved.needs_input_grad
    y = None if y is None else saved.output(0, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        ga, gb = saved.node.function.grads(TENSOR_MATH, saved.input(0, a), saved.input(1, b),
                                           y, g)
    return (sum_to(ga, np.shape(a)) if na else None), (sum_to(gb, np.shape(b)) if nb else None)


def _special_refused(ctx):
    """What a SpecialFunction call has no derivative for (igamma's a, zeta), as torch."""
    if ctx.name not in special.BINARY:
        return None
    grads = special.BINARY[ctx.name][1:]
    return next((getattr(f, "missing") for f, needed in zip(grads, ctx.needs_input_grad)
                 if needed and hasattr(f, "missing")), None)


@graph_backward(special.SpecialFunction, unsupported=_special_refused)
def _special(saved, g):
    a, b, y = saved.ctx.saved_tensors
    name, param = saved.ctx.name, saved.ctx.param
    na, nb = saved.needs_input_grad[:2]
    x, y = saved.input(0, a), saved.output(0, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        if b is None:
            return g * special.UNARY[name][1](TENSOR_MATH, x, y, param), None, None, None
        other = saved.input(1, b)
        _, grad_a, grad_b = special.BINARY[name]
        ga = sum_to(g * grad_a(TENSOR_MATH, x, other, y, param), np.shape(a)) if na else None
        gb = sum_to(g * grad_b(TENSOR_MATH, x, other, y, param), np.shape(b)) if nb else None
    return ga, gb, None, None


@graph_backward(M.Logit)
def _logit(saved, g):
    (a,) = saved.ctx.saved_tensors
    with np.errstate(divide="ignore", invalid="ignore"):
        return M.Logit.grad(TENSOR_MATH, saved.input(0, a), g, saved.ctx.eps), None


@graph_backward(M.TruncDivide, M.FloorDivideZeroGrad)
def _rounded_division(saved, g):
    # torch's ``grad * 0``: zero, but a function of g like every other gradient
    (sa, sb), (na, nb) = saved.ctx.shapes, saved.needs_input_grad
    return (sum_to(g * 0, sa) if na else None), (sum_to(g * 0, sb) if nb else None)


@graph_backward(M.Frexp)
def _frexp(saved, g, unused):
    (exponent,) = saved.ctx.saved_tensors
    xp = xp_of(exponent)
    return g * constant(xp.ldexp(xp.ones(exponent.shape, g.dtype), -exponent))


# ----------------------------------------------------------------- strided views, scatters
@graph_backward(StridedView)
def _strided_view(saved, g):
    _, take, overlapping = saved.ctx.conf
    return Adjoint.apply(g, StridedView, saved.ctx, (take, overlapping)), None, None


@graph_backward(DiagEmbed)
def _diag_embed(saved, g):
    return Adjoint.apply(g, DiagEmbed, saved.ctx, saved.ctx.conf), None, None, None


@graph_backward(IntoView)
def _into_view(saved, g):
    take, (na, nsrc) = saved.ctx.take, saved.needs_input_grad[:2]
    inside = StridedView.apply(g, take, False)
    ga = IntoView.apply(g, constant(xp_of(g._data).zeros(inside.shape, g.dtype)), take) \
        if na else None
    return ga, (inside if nsrc else None), None


@graph_backward(LogCumSumExp)
def _logcumsumexp(saved, g):
    # torch's formula: sum_{j >= i} g_j exp(a_i - out_j), a reversed logcumsumexp of log|g| - out
    # for each sign of g (the signs are constants)
    a, out, axis = saved.ctx.conf
    a, out = saved.input(0, a), saved.output(0, out)
    lowest = float(np.finfo(g.dtype).min)

    def part(sign):
        import gpudl
        log_g = gpudl.where(g * sign > 0, (g * sign).log(), lowest)
        flipped = (log_g - out).flip(axis)
        return (gpudl.logcumsumexp(flipped, axis).flip(axis) + a).exp()

    with np.errstate(divide="ignore", invalid="ignore"):
        return part(1) - part(-1), None


def _scatter_prod_zeros(ctx):
    a, src, _, reduce, include_self, _, _ = ctx.conf
    if reduce != "prod":
        return None
    zero = (src == 0).any() | ((a == 0).any() if include_self else False)
    if backend.host_value(zero, "scatter_reduce(reduce='prod') create_graph (a zero check)"):
        return "scatter_reduce(reduce='prod') with a zero factor"
    return None


@graph_backward(ScatterReduce, unsupported=_scatter_prod_zeros)
def _scatter_reduce(saved, g):
    # as ScatterReduce.backward; the masks and tie shares are constants (torch's formula)
    a, src, target, reduce, include_self, out, counts = saved.ctx.conf
    xp = xp_of(a)
    flat_g = S.Reshape.apply(g, (a.size,))
    hit = counts > 0
    if reduce in ("sum", "mean"):
        scale = 1 if reduce == "sum" else 1 / xp.maximum(counts + include_self, 1)
        g_self = flat_g * constant(xp.where(hit, scale if include_self else 0, 1).astype(g.dtype))
        g_src = (flat_g * constant(xp.asarray(scale, g.dtype)))[target]
    elif reduce == "prod":      # no zero factor (refused above): d out / d factor = out / factor
        flat_a = S.Reshape.apply(saved.input(0, a), (a.size,))
        values = S.Reshape.apply(saved.input(1, src), (src.size,))
        g_out = flat_g * S.Reshape.apply(saved.output(0, out), (a.size,))
        g_self = g_out / flat_a if include_self else flat_g * 0
        g_self = g_self * constant(hit.astype(g.dtype)) + flat_g * constant((~hit).astype(g.dtype))
        g_src = g_out[target] / values
    else:
        share, to_self, to_src = tie_shares(a.reshape(-1), src.reshape(-1), target,
                                            out.reshape(-1), include_self, hit, g.dtype)
        each = flat_g / constant(share)
        g_self, g_src = each * constant(to_self), each[target] * constant(to_src)
    return (S.Reshape.apply(g_self, a.shape), S.Reshape.apply(g_src, src.shape), None, None,
            None)

