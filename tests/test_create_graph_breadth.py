"""create_graph=True for the ops merged beside it (elementwise maths, gd.special, strided views
and scatters, logcumsumexp, scatter_reduce): the first gradient and the gradient of a scalar
of it against torch 2.13, float64, fresh random inputs (see test_create_graph), gradgradcheck
on a few, and the refusals where torch has no second derivative either."""

import numpy as np
import pytest
import torch

import gpudl as gd
from test_create_graph import check_second_order


def _squeeze(m, a):
    """a mapped into (-0.9, 0.9): the domain of asin, acos, atanh, erfinv."""
    return m.tanh(a) * 0.9


def _special(m):
    return m.special


# name -> (f(module, *inputs), input shapes, positive inputs); f runs on gpudl and on torch
CASES = {
    # MathUnary
    "tan": (lambda m, a: m.tan(a), [(6,)], False),
    "sinh_cosh": (lambda m, a: m.sinh(a) * m.cosh(a), [(6,)], False),
    "asin_acos": (lambda m, a: m.asin(_squeeze(m, a)) * m.acos(_squeeze(m, a)), [(6,)], False),
    "atan": (lambda m, a: m.atan(a) * a, [(6,)], False),
    "asinh": (lambda m, a: m.asinh(a) * a, [(6,)], False),
    "acosh": (lambda m, a: m.acosh(a + 1), [(6,)], True),
    "atanh": (lambda m, a: m.atanh(_squeeze(m, a)), [(6,)], False),
    "exp2": (lambda m, a: m.exp2(a), [(6,)], False),
    "log2_log10": (lambda m, a: m.log2(a) * m.log10(a), [(6,)], True),
    "sinc": (lambda m, a: m.sinc(a), [(6,)], False),
    "deg2rad_rad2deg": (lambda m, a: m.deg2rad(a) * m.rad2deg(a), [(6,)], False),
    "trunc_frac": (lambda m, a: (m.trunc(a * 3) + m.frac(a * 3)) * a, [(6,)], False),
    # old Unary (its table now serves both paths)
    "sin_rsqrt_erf": (lambda m, a: m.sin(a) * m.rsqrt(a) + m.erf(a) * m.expm1(a), [(6,)], True),
    # binary
    "atan2": (lambda m, a, b: m.atan2(a, b), [(3, 4), (4,)], False),
    "hypot": (lambda m, a, b: m.hypot(a, b), [(3, 4), (3, 1)], False),
    "copysign": (lambda m, a, b: m.copysign(a, b) * a * b, [(3, 4), (4,)], False),
    "fmod": (lambda m, a, b: m.fmod(a * 3, b) * a * b, [(3, 4), (4,)], True),
    "logaddexp": (lambda m, a, b: m.logaddexp(a, b), [(3, 4), (4,)], False),
    "logaddexp2": (lambda m, a, b: m.logaddexp2(a, b), [(3, 4), (4,)], False),
    "xlogy": (lambda m, a, b: m.xlogy(a, b), [(3, 4), (4,)], True),
    "xlogy_number": (lambda m, a: m.xlogy(2.0, a) * a, [(6,)], True),
    "in_place": (lambda m, a: (a * 1).tan_() * (a * 1).lgamma_() * a, [(6,)], True),
    "nextafter": (lambda m, a, b: m.nextafter(a, b) * a, [(5,), (5,)], False),
    "fmax_fmin": (lambda m, a, b: m.fmax(a, b) * m.fmin(a, b) * a, [(3, 4), (4,)], False),
    "div_trunc_floor": (lambda m, a, b: (m.div(a, b, rounding_mode="trunc")
                                         + m.div(a, b, rounding_mode="floor")) * a * b,
                        [(3, 4), (4,)], True),
    "frexp": (lambda m, a: m.frexp(a * 5)[0] * a, [(6,)], False),
    "logit": (lambda m, a: m.logit(m.sigmoid(a)) * a, [(6,)], False),
    "logit_eps": (lambda m, a: m.logit(m.sigmoid(a * 3), eps=0.2) * a, [(8,)], False),
    # gd.special
    "lgamma_digamma": (lambda m, a: m.lgamma(a) * m.digamma(a), [(6,)], True),
    "polygamma": (lambda m, a: m.polygamma(2, a), [(6,)], True),
    "mvlgamma": (lambda m, a: m.mvlgamma(a + 1, 3), [(6,)], True),
    "erfc_erfcx": (lambda m, a: m.erfc(a) * m.special.erfcx(a), [(6,)], False),
    "erfinv": (lambda m, a: m.erfinv(_squeeze(m, a)), [(6,)], False),
    "ndtr_log_ndtr": (lambda m, a: m.special.ndtr(a) * m.special.log_ndtr(a), [(6,)], False),
    "ndtri": (lambda m, a: m.special.ndtri(m.sigmoid(a)), [(6,)], False),
    "bessel_i0_i1": (lambda m, a: m.i0(a) * m.special.i1(a), [(6,)], False),
    "bessel_scaled": (lambda m, a: m.special.i0e(a) * m.special.i1e(a), [(6,)], False),
    "entr": (lambda m, a: m.special.entr(a), [(6,)], True),
    "xlog1py": (lambda m, a, b: m.special.xlog1py(a, b), [(3, 4), (4,)], True),
    "igamma_other": (lambda m, a, b: m.igamma(a.detach() + 1, b) * m.igammac(a.detach(), b),
                     [(3, 4), (4,)], True),
    # strided views and scatters
    "diagonal": (lambda m, a: m.diagonal(a, 1, 0, 2) ** 3, [(3, 2, 4)], False),
    "unfold_overlapping": (lambda m, a: a.unfold(1, 3, 1) ** 3, [(2, 6)], False),
    "unfold_strided": (lambda m, a: a.unfold(0, 2, 3) ** 3, [(8, 2)], False),
    "diag_embed": (lambda m, a: m.diag_embed(a, -1) ** 3, [(2, 3)], False),
    "select_scatter": (lambda m, a, b: m.select_scatter(a, b * b, 1, 0) ** 3,
                       [(3, 4), (3,)], False),
    "slice_scatter": (lambda m, a, b: m.slice_scatter(a, b * b, 0, 1, 3) ** 3,
                      [(4, 3), (2, 3)], False),
    "diagonal_scatter": (lambda m, a, b: m.diagonal_scatter(a, b * b, 1) ** 3,
                         [(3, 4), (3,)], False),
    "logcumsumexp": (lambda m, a: m.logcumsumexp(a, 1) * a, [(3, 5)], False),
}

_INDEX = np.array([[0, 1, 2, 0], [2, 2, 1, 0]])
for _reduce in ("sum", "mean", "prod", "amax", "amin"):
    for _include in (True, False):
        CASES[f"scatter_reduce_{_reduce}_{_include}"] = (
            lambda m, a, s, r=_reduce, inc=_include: m.scatter_reduce(
                a * a, 1, m.tensor(_INDEX), s * s * s, r, include_self=inc) * a,
            [(2, 3), (2, 4)], True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_order_matches_torch(name):
    f, shapes, positive = CASES[name]
    check_second_order(lambda *xs: f(gd, *xs), lambda *xs: f(torch, *xs), *shapes,
                       positive=positive, seed=sum(map(ord, name)))


def test_amax_ties_share_the_gradient_as_torch():
    # equal values in a slot share its gradient; the shares are constants at second order
    a = np.array([[1.0, 2.0, 2.0]])
    s = np.array([[2.0, 0.5, 2.0]])
    index = np.array([[1, 0, 1]])

    def f(m, x, y):
        return m.scatter_reduce(x, 1, m.tensor(index), y, "amax") ** 3

    xs = [gd.tensor(v.copy(), requires_grad=True) for v in (a, s)]
    ts = [torch.tensor(v.copy(), requires_grad=True) for v in (a, s)]
    results = []
    for m, (x, y) in ((gd, xs), (torch, ts)):
        g = m.autograd.grad(f(m, x, y).sum(), [x, y], create_graph=True)
        h = m.autograd.grad(sum((gi * gi).sum() for gi in g), [x, y])
        results.append([t.detach().numpy() for t in (*g, *h)])
    for o, t in zip(*results):
        np.testing.assert_allclose(o, t, rtol=1e-9)


@pytest.mark.parametrize("f, shapes", [
    (lambda a, b: gd.atan2(a, b) * gd.hypot(a, b), [(3,), (3,)]),
    (lambda a: gd.special.i1(a) * gd.lgamma(a + 2) * gd.tan(a * 0.5), [(4,)]),
    (lambda a: gd.logcumsumexp(a, 0) * a.unfold(0, 2, 1).sum(-1).sum(), [(4,)]),
])
def test_gradgradcheck(f, shapes):
    rng = np.random.default_rng(len(shapes) + shapes[0][0])
    xs = [gd.tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]
    assert gd.autograd.gradgradcheck(f, tuple(xs))


@pytest.mark.parametrize("build, name", [
    (lambda x: gd.heaviside(x, gd.tensor(0.5, dtype=gd.float64)) * x, "Heaviside"),
    (lambda x: gd.special.zeta(x + 2, 1.5), "zeta"),
    (lambda x: gd.igamma(x + 1, gd.tensor(2.0, dtype=gd.float64)), "igamma"),
    (lambda x: gd.distributions.Gamma(x.abs() + 1, 1.0).rsample(), "StandardGamma"),
    (lambda x: gd.zeros(3, dtype=gd.float64).scatter_reduce(
        0, gd.tensor([0, 1, 1]), x * gd.tensor([0.0, 1.0, 1.0], dtype=gd.float64), "prod"),
     "zero factor"),
])
def test_refused_by_name_with_nothing_changed(build, name):
    x = gd.tensor(np.random.default_rng(3).standard_normal(3) + 0.1, requires_grad=True)
    out = build(x).sum()
    with pytest.raises(NotImplementedError, match=name):
        gd.autograd.grad(out, [x], create_graph=True)
    assert x.grad is None


def test_ctc_loss_is_refused_by_name():
    rng = np.random.default_rng(4)
    log_probs = gd.tensor(rng.standard_normal((6, 2, 4)), requires_grad=True)
    loss = gd.nn.functional.ctc_loss(log_probs.log_softmax(-1), gd.tensor([[1, 2], [3, 1]]),
                                     gd.tensor([6, 5]), gd.tensor([2, 2]))
    with pytest.raises(NotImplementedError, match="CTCLossNode"):
        gd.autograd.grad(loss, [log_probs], create_graph=True)


def _multilabel_margin_composed(x, targets):
    """torch's multilabel_margin_loss written with torch ops (torch's kernel has no double
    backward): mean over samples of sum over target j, non-target i of relu(1 - x_j + x_i) / C."""
    total = 0
    for row, labels in zip(x, targets):
        listed = labels[:labels.index(-1)] if -1 in labels else labels
        others = [i for i in range(len(row)) if i not in listed]
        total = total + sum(torch.relu(1 - row[j] + row[i]) for j in listed for i in others)
    return total / (x.shape[0] * x.shape[1])


def test_multilabel_margin_loss_second_order():
    targets = [[3, 0, -1, 1], [1, 2, 3, -1]]
    check_second_order(
        lambda a: gd.nn.functional.multilabel_margin_loss(a * a, gd.tensor(targets)),
        lambda a: _multilabel_margin_composed(a * a, targets), (2, 4), seed=11)
