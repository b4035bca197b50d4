"""kl_divergence(p, q) by the most specific registered pair of families (register_kl), with
torch's closed forms for the pairs of the families here."""

import math

from .. import creation, functions
from ..tensor import Tensor
from .distribution import softplus
from .transforms import TransformedDistribution
from .families import (EULER, Bernoulli, Beta, Binomial, Categorical, Cauchy, Dirichlet,
                       Exponential, Gamma, Geometric, Gumbel, HalfNormal, Independent, Laplace,
                       LogNormal, Normal, OneHotCategorical, Pareto, Poisson, Uniform)

_KL = {}


def register_kl(type_p, type_q):
    """Decorator: ``fn(p, q)`` computes KL(p || q) for p a ``type_p`` and q a ``type_q``."""
    def decorate(fn):
        _KL[type_p, type_q] = fn
        return fn
    return decorate


def kl_divergence(p, q):
    """KL(p || q), elementwise over the batch, by the registered function of the most specific
    pair of classes (each side's method resolution order)."""
    for i, cls_p in enumerate(type(p).__mro__):
        for cls_q in type(q).__mro__:
            fn = _KL.get((cls_p, cls_q))
            if fn is not None:
                return fn(p, q)
    raise NotImplementedError(f"kl_divergence: no KL(p || q) is registered for p "
                              f"{type(p).__name__} and q {type(q).__name__}")


@register_kl(Normal, Normal)
def _normal_normal(p, q):
    var_ratio = (p.scale / q.scale).pow(2)
    t1 = ((p.loc - q.loc) / q.scale).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


@register_kl(LogNormal, LogNormal)
def _lognormal_lognormal(p, q):
    return _normal_normal(p.base_dist, q.base_dist)


@register_kl(HalfNormal, HalfNormal)
def _halfnormal_halfnormal(p, q):
    return _normal_normal(p.base_dist, q.base_dist)


@register_kl(Bernoulli, Bernoulli)
def _bernoulli_bernoulli(p, q):
    t1 = p.probs * (softplus(-q.logits) - softplus(-p.logits))
    t2 = (1 - p.probs) * (softplus(q.logits) - softplus(p.logits))
    return t1 + t2


@register_kl(Binomial, Binomial)
def _binomial_binomial(p, q):
    if not bool((p.total_count == q.total_count).all()):
        raise NotImplementedError("KL between Binomials where q.total_count > p.total_count "
                                  "is not implemented")
    kl = p.total_count * (p.probs * (p.logits - q.logits) + (-p.probs).log1p()
                          - (-q.probs).log1p())
    return kl


@register_kl(Categorical, Categorical)
def _categorical_categorical(p, q):
    t = p.probs * (p.logits - q.logits)
    t = t.masked_fill(q.probs == 0, math.inf).masked_fill(p.probs == 0, 0.0)
    return t.sum(-1)


@register_kl(OneHotCategorical, OneHotCategorical)
def _onehot_onehot(p, q):
    return _categorical_categorical(p._categorical, q._categorical)


@register_kl(Geometric, Geometric)
def _geometric_geometric(p, q):
    return -p.entropy() - (-q.probs).log1p() / p.probs - q.logits


@register_kl(Poisson, Poisson)
def _poisson_poisson(p, q):
    return p.rate * (p.rate.log() - q.rate.log()) - (p.rate - q.rate)


@register_kl(Exponential, Exponential)
def _exponential_exponential(p, q):
    ratio = q.rate / p.rate
    return ratio - 1 - ratio.log()


@register_kl(Gamma, Gamma)
def _gamma_gamma(p, q):
    t1 = q.concentration * (p.rate / q.rate).log()
    t2 = q.concentration.lgamma() - p.concentration.lgamma()
    t3 = (p.concentration - q.concentration) * p.concentration.digamma()
    t4 = (q.rate - p.rate) * (p.concentration / p.rate)
    return t1 + t2 + t3 + t4


@register_kl(Beta, Beta)
def _beta_beta(p, q):
    a1, b1, a2, b2 = p.concentration1, p.concentration0, q.concentration1, q.concentration0
    s1, s2 = a1 + b1, a2 + b2
    t1 = a2.lgamma() + b2.lgamma() + s1.lgamma()
    t2 = a1.lgamma() + b1.lgamma() + s2.lgamma()
    t3 = (a1 - a2) * a1.digamma()
    t4 = (b1 - b2) * b1.digamma()
    t5 = (s2 - s1) * s1.digamma()
    return t1 - t2 + t3 + t4 + t5


@register_kl(Dirichlet, Dirichlet)
def _dirichlet_dirichlet(p, q):
    sum_p, sum_q = p.concentration.sum(-1), q.concentration.sum(-1)
    t1 = sum_p.lgamma() - sum_q.lgamma()
    t2 = (p.concentration.lgamma() - q.concentration.lgamma()).sum(-1)
    t3 = p.concentration - q.concentration
    t4 = p.concentration.digamma() - sum_p.digamma().unsqueeze(-1)
    return t1 - t2 + (t3 * t4).sum(-1)


@register_kl(Laplace, Laplace)
def _laplace_laplace(p, q):
    scale_ratio = p.scale / q.scale
    loc_abs_diff = (p.loc - q.loc).abs()
    t1 = -scale_ratio.log()
    t2 = loc_abs_diff / q.scale
    t3 = scale_ratio * (-loc_abs_diff / p.scale).exp()
    return t1 + t2 + t3 - 1


@register_kl(Gumbel, Gumbel)
def _gumbel_gumbel(p, q):
    ct1 = p.scale / q.scale
    ct2 = q.loc / q.scale
    ct3 = p.loc / q.scale
    t1 = -ct1.log() - ct2 + ct3
    t2 = ct1 * EULER
    t3 = (ct2 + (1 + ct1).lgamma() - ct3).exp()
    return t1 + t2 + t3 - (1 + EULER)


@register_kl(Uniform, Uniform)
def _uniform_uniform(p, q):
    result = ((q.high - q.low) / (p.high - p.low)).log()
    outside = (q.low > p.low) | (q.high < p.high)
    return result.masked_fill(outside, math.inf)


@register_kl(Pareto, Pareto)
def _pareto_pareto(p, q):
    scale_ratio = p.scale / q.scale
    alpha_ratio = q.alpha / p.alpha
    t1 = q.alpha * scale_ratio.log()
    t2 = -alpha_ratio.log()
    result = t1 + t2 + alpha_ratio - 1
    return result.masked_fill(p.support.lower_bound < q.support.lower_bound, math.inf)


@register_kl(TransformedDistribution, TransformedDistribution)
def _transformed_transformed(p, q):
    if p.transforms != q.transforms or p.event_shape != q.event_shape:
        raise NotImplementedError("KL between TransformedDistributions needs the same "
                                  "transforms and event shapes")
    result = kl_divergence(p.base_dist, q.base_dist)
    for _ in range(len(p.event_shape) - len(p.base_dist.event_shape)):
        result = result.sum(-1)
    return result


@register_kl(Independent, Independent)
def _independent_independent(p, q):
    if p.reinterpreted_batch_ndims != q.reinterpreted_batch_ndims:
        raise NotImplementedError("KL between Independents of different "
                                  "reinterpreted_batch_ndims is not implemented")
    return p._sum_rightmost(kl_divergence(p.base_dist, q.base_dist))




# ------------------------------------------------------------------ pairs of different families
# KL(p || q) = E_p[-log q] - H(p): each q family's expected negative log density (its cross
# entropy) from p's moments, whose formulas below hold for every p registered with it.
def _expected_log(p):
    """E_p[log X] for the families of positive values (and Uniform on [low, high] > 0)."""
    from ..special import xlogy
    if isinstance(p, Beta):
        return p.concentration1.digamma() - (p.concentration1 + p.concentration0).digamma()
    if isinstance(p, Exponential):
        return -EULER - p.rate.log()
    if isinstance(p, Pareto):
        return p.scale.log() + p.alpha.reciprocal()
    if isinstance(p, Uniform):
        return (xlogy(p.high, p.high) - xlogy(p.low, p.low)) / (p.high - p.low) - 1
    return p.concentration.digamma() - p.rate.log()                      # Gamma


def _moment_generating(p, t):
    """E_p[exp(t X)] for t < 0."""
    if isinstance(p, Exponential):
        return p.rate / (p.rate - t)
    if isinstance(p, Gamma):
        return (p.rate / (p.rate - t)).pow(p.concentration)
    if isinstance(p, Normal):
        return (p.loc * t + p.scale.pow(2) * (t * t / 2)).exp()
    return ((t * p.high).exp() - (t * p.low).exp()) / (t * (p.high - p.low))   # Uniform


def _normal_cross_entropy(p, q):
    return (q.scale.log() + 0.5 * math.log(2 * math.pi)
            + (p.variance + (p.mean - q.loc).pow(2)) / (2 * q.scale.pow(2)))


def _gumbel_cross_entropy(p, q):
    t = -q.scale.reciprocal()
    return (q.scale.log() + (p.mean - q.loc) / q.scale
            + (q.loc / q.scale).exp() * _moment_generating(p, t))


def _exponential_cross_entropy(p, q):
    return q.rate * p.mean - q.rate.log()


def _gamma_cross_entropy(p, q):
    c = q.concentration
    return c.lgamma() - c * q.rate.log() - (c - 1) * _expected_log(p) + q.rate * p.mean


def _infinite_where(result, outside):
    return result.masked_fill(outside, math.inf)


# q family -> (the p families, q's cross entropy, whether q lives on the positive numbers)
_CROSS_ENTROPIES = (
    (Normal, (Beta, Exponential, Gamma, Gumbel, Laplace, Uniform, Pareto),
     _normal_cross_entropy, False),
    (Gumbel, (Exponential, Gamma, Normal, Uniform), _gumbel_cross_entropy, False),
    (Exponential, (Beta, Gamma, Pareto, Uniform), _exponential_cross_entropy, True),
    (Gamma, (Beta, Exponential, Pareto, Uniform), _gamma_cross_entropy, True),
)


def _through_cross_entropy(cross_entropy, positive):
    def kl(p, q):
        if isinstance(p, Pareto):
            # infinite without p's mean (alpha <= 1), or its variance against a Normal
            # (alpha <= 2): computed at a harmless alpha there, then set to inf (no gradient)
            needed = 2.0 if cross_entropy is _normal_cross_entropy else 1.0
            finite = p.alpha > needed
            safe = Pareto(p.scale, functions.where(finite, p.alpha, needed + 1),
                          validate_args=False)
            return _infinite_where(cross_entropy(safe, q) - safe.entropy(), ~finite)
        result = cross_entropy(p, q) - p.entropy()
        if positive and isinstance(p, Uniform):            # p's mass below 0: q has none
            result = _infinite_where(result, p.low < 0)
        return result
    return kl


for _q_type, _p_types, _cross_entropy, _positive in _CROSS_ENTROPIES:
    for _p_type in _p_types:
        register_kl(_p_type, _q_type)(_through_cross_entropy(_cross_entropy, _positive))


@register_kl(Bernoulli, Poisson)
def _bernoulli_poisson(p, q):
    return -p.entropy() - (p.probs * q.rate.log() - q.rate)


@register_kl(Beta, Uniform)
def _beta_uniform(p, q):
    return _infinite_where(-p.entropy() + (q.high - q.low).log(), (q.low > 0) | (q.high < 1))


@register_kl(Uniform, Beta)
def _uniform_beta(p, q):
    from ..special import xlogy
    a, b = q.concentration1, q.concentration0
    width = p.high - p.low
    log_1m = (xlogy(1 - p.low, 1 - p.low) - xlogy(1 - p.high, 1 - p.high)) / width - 1
    log_beta = a.lgamma() + b.lgamma() - (a + b).lgamma()
    result = -width.log() - (a - 1) * _expected_log(p) - (b - 1) * log_1m + log_beta
    return _infinite_where(result, (p.low < 0) | (p.high > 1))


@register_kl(Uniform, Pareto)
def _uniform_pareto(p, q):
    result = (-(p.high - p.low).log() - q.alpha.log() - q.alpha * q.scale.log()
              + (q.alpha + 1) * _expected_log(p))
    return _infinite_where(result, p.low < q.scale)


@register_kl(Normal, Laplace)
def _normal_laplace(p, q):
    from ..special import ndtr
    shift = p.loc - q.loc
    # E|X - q.loc| for X ~ Normal: the folded normal's mean
    folded = (p.scale * math.sqrt(2 / math.pi) * (-(shift / p.scale).pow(2) / 2).exp()
              + shift * (2 * ndtr(shift / p.scale) - 1))
    return -p.entropy() + (2 * q.scale).log() + folded / q.scale


@register_kl(Cauchy, Cauchy)
def _cauchy_cauchy(p, q):
    return (((p.scale + q.scale).pow(2) + (p.loc - q.loc).pow(2)).log()
            - (4 * p.scale * q.scale).log())


def _infinite(p, q):
    """Supports where p puts mass q has none: +inf over the batch."""
    like = next(v for v in vars(p).values() if isinstance(v, Tensor))
    return creation.full(p.batch_shape, math.inf, dtype=like.dtype, device=like._device)


for _p_type, _q_types in (
        (Beta, (Pareto,)), (Exponential, (Beta, Pareto, Uniform)),
        (Gamma, (Beta, Pareto, Uniform)), (Gumbel, (Beta, Exponential, Gamma, Pareto, Uniform)),
        (Laplace, (Beta, Exponential, Gamma, Pareto, Uniform)),
        (Normal, (Beta, Exponential, Gamma, Pareto, Uniform)), (Pareto, (Beta, Uniform)),
        (Poisson, (Bernoulli, Binomial))):
    for _q_type in _q_types:
        register_kl(_p_type, _q_type)(_infinite)
