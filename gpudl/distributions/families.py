"""torch.distributions' families with torch's formulas: values and gradients are tensor
expressions of the parameters; draws come from gpudl's generators (``gd.manual_seed``), so
they differ from torch's for the same seed. Gamma (and Chi2, Beta, Dirichlet, StudentT through
it) draw differentiably by implicit reparameterisation (``StandardGamma``)."""

import math

import numpy as np

from .. import backend, creation, functions, random, special_math
from ..autograd import ArrayFunction
from ..ops.sparse import DEFERRED_NOTE
from ..tensor import Tensor
from . import constraints
from .circular import von_mises_by_rejection
from .distribution import (HALF_LOG_TWO_PI, Distribution, ProbsOrLogits, as_draws,
                           broadcast_all, draw, require, sample_shape_of, softplus, uniform_open)

EULER = special_math.EULER


def _enumerated(values, dist, expand):
    """``values`` (one per row, each of the event's shape) shaped as torch's
    enumerate_support: (n, 1 per batch dim, *event), expanded over the batch if asked."""
    event = tuple(values.shape[1:])
    values = values.reshape(values.shape[0], *(1,) * len(dist.batch_shape), *event)
    return values.expand(-1, *dist.batch_shape, *event) if expand else values


def _check_value(dist, value):
    if dist._validate_args:
        dist._validate_sample(value)


class _LocationScale(Distribution):
    """A family of real values with parameters ``loc`` (real) and ``scale`` (positive)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real

    def __init__(self, loc, scale, validate_args=None):
        self._take_params(validate_args, loc=loc, scale=scale)


class Normal(_LocationScale):
    """The normal distribution of mean ``loc`` and standard deviation ``scale``."""

    mean = mode = property(lambda self: self.loc)
    stddev = property(lambda self: self.scale)
    variance = property(lambda self: self.scale.pow(2))

    def rsample(self, sample_shape=()):
        """``loc + scale * eps`` with standard normal ``eps``: gradients reach loc and scale."""
        eps = draw(self.loc, self._extended_shape(sample_shape), "standard_normal")
        return self.loc + eps * self.scale

    def log_prob(self, value):
        _check_value(self, value)
        return -((value - self.loc).pow(2)) / (2 * self.scale.pow(2)) - self.scale.log() \
            - HALF_LOG_TWO_PI

    def cdf(self, value):
        _check_value(self, value)
        return 0.5 * (1 + ((value - self.loc) / (self.scale * math.sqrt(2))).erf())

    def icdf(self, value):
        return self.loc + self.scale * (2 * value - 1).erfinv() * math.sqrt(2)

    def entropy(self):
        return 0.5 + HALF_LOG_TWO_PI + self.scale.log()


class StandardGamma(ArrayFunction):
    """Gamma(alpha, 1) draws, differentiable in alpha by implicit reparameterisation:
    dx/dalpha = -(dF/dalpha) / (dF/dx) for F(alpha, x) the regularised lower incomplete gamma
    function (torch's _standard_gamma_grad computes the same derivative). dF/dalpha is a
    central difference of F (step 1e-5 alpha: about 1e-9 relative)."""

    @staticmethod
    def forward(ctx, alpha, device):
        x = random.generator(device).standard_gamma(alpha).astype(alpha.dtype, copy=False)
        x = backend.get_array_module(x).maximum(x, np.finfo(alpha.dtype).tiny)   # log x below
        ctx.save_for_backward(alpha, x)
        return x

    @staticmethod
    def backward(ctx, g):
        alpha, x = ctx.saved_tensors
        a, xv = alpha.astype(np.float64), x.astype(np.float64)
        xp = backend.get_array_module(a)
        h = 1e-5 * a
        dF_da = (special_math.gammainc(a + h, xv) - special_math.gammainc(a - h, xv)) / (2 * h)
        log_density = (a - 1) * xp.log(xv) - xv - special_math.lgamma(a)
        return (g * (-dF_da / xp.exp(log_density))).astype(alpha.dtype), None


def standard_gamma(alpha, shape):
    """Gamma(alpha, 1) draws of ``shape`` (alpha broadcast to it), differentiable in alpha."""
    return StandardGamma.apply(alpha.expand(*shape).contiguous(), alpha._device)


class Gamma(Distribution):
    """The gamma distribution of shape ``concentration`` and inverse scale ``rate``."""

    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.nonnegative

    def __init__(self, concentration, rate, validate_args=None):
        self._take_params(validate_args, concentration=concentration, rate=rate)

    mean = property(lambda self: self.concentration / self.rate)
    mode = property(lambda self: ((self.concentration - 1) / self.rate).clamp_min(0))
    variance = property(lambda self: self.concentration / self.rate.pow(2))

    def rsample(self, sample_shape=()):
        return standard_gamma(self.concentration, self._extended_shape(sample_shape)) \
            / self.rate

    def log_prob(self, value):
        _check_value(self, value)
        from ..special import xlogy
        return (xlogy(self.concentration, self.rate) + xlogy(self.concentration - 1, value)
                - self.rate * value - self.concentration.lgamma())

    def cdf(self, value):
        _check_value(self, value)
        from ..special import gammainc
        return gammainc(self.concentration, self.rate * value)

    def entropy(self):
        c = self.concentration
        return c - self.rate.log() + c.lgamma() + (1 - c) * c.digamma()


class Chi2(Gamma):
    """The chi-squared distribution of ``df`` degrees of freedom: Gamma(df / 2, 1 / 2)."""

    arg_constraints = {"df": constraints.positive}

    def __init__(self, df, validate_args=None):
        self._take_params(validate_args, df=df)
        self.concentration, self.rate = broadcast_all(self.df * 0.5, 0.5)

    def expand(self, batch_shape, _instance=None):
        return Chi2(self.df.expand(*batch_shape), validate_args=False)


class Exponential(Distribution):
    """The exponential distribution of ``rate``."""

    arg_constraints = {"rate": constraints.positive}
    support = constraints.nonnegative

    def __init__(self, rate, validate_args=None):
        self._take_params(validate_args, rate=rate)

    mean = stddev = property(lambda self: self.rate.reciprocal())
    mode = property(lambda self: self.rate * 0)
    variance = property(lambda self: self.rate.pow(-2))

    def rsample(self, sample_shape=()):
        e = draw(self.rate, self._extended_shape(sample_shape), "standard_exponential")
        return e / self.rate

    def log_prob(self, value):
        _check_value(self, value)
        return self.rate.log() - self.rate * value

    def cdf(self, value):
        _check_value(self, value)
        return 1 - (-self.rate * value).exp()

    def icdf(self, value):
        return -(-value).log1p() / self.rate

    def entropy(self):
        return 1.0 - self.rate.log()


class Uniform(Distribution):
    """The uniform distribution on [low, high)."""

    arg_constraints = {"low": constraints.dependent, "high": constraints.dependent}

    def __init__(self, low, high, validate_args=None):
        self._take_params(validate_args, low=low, high=high)
        if self._validate_args:
            require(self.low < self.high, lambda late: ValueError(
                f"Uniform: expected low < high (parameter low of distribution {self!r} must "
                "satisfy the constraint LessThan(high))" + (DEFERRED_NOTE if late else "")))

    @property
    def support(self):
        return constraints.interval(self.low, self.high, half_open=True)

    mean = property(lambda self: (self.low + self.high) / 2)
    variance = property(lambda self: (self.high - self.low).pow(2) / 12)

    def rsample(self, sample_shape=()):
        u = draw(self.low, self._extended_shape(sample_shape), "random")
        return self.low + u * (self.high - self.low)

    def log_prob(self, value):
        _check_value(self, value)
        inside = ((self.low <= value) & (self.high > value)).astype(self.low.dtype)
        return inside.log() - (self.high - self.low).log()

    def cdf(self, value):
        _check_value(self, value)
        return ((value - self.low) / (self.high - self.low)).clamp(0, 1)

    def icdf(self, value):
        return self.low + value * (self.high - self.low)

    def entropy(self):
        return (self.high - self.low).log()

    def __repr__(self):
        return f"Uniform(low: {tuple(self.low.shape)}, high: {tuple(self.high.shape)})"


class Laplace(_LocationScale):
    """The Laplace distribution of location ``loc`` and scale ``scale``."""

    mean = mode = property(lambda self: self.loc)
    variance = property(lambda self: 2 * self.scale.pow(2))
    stddev = property(lambda self: math.sqrt(2) * self.scale)

    def rsample(self, sample_shape=()):
        u = uniform_open(self.loc, self._extended_shape(sample_shape)) * 2 - 1
        return self.loc - self.scale * u.sign() * (-u.abs()).log1p()

    def log_prob(self, value):
        _check_value(self, value)
        return -(2 * self.scale).log() - (value - self.loc).abs() / self.scale

    def cdf(self, value):
        _check_value(self, value)
        z = (value - self.loc) / self.scale
        return 0.5 - 0.5 * z.sign() * (-z.abs()).expm1()

    def icdf(self, value):
        term = value - 0.5
        return self.loc - self.scale * term.sign() * (-2 * term.abs()).log1p()

    def entropy(self):
        return 1 + (2 * self.scale).log()


class Gumbel(_LocationScale):
    """The Gumbel (maximum) distribution of location ``loc`` and scale ``scale``."""

    mean = property(lambda self: self.loc + self.scale * EULER)
    mode = property(lambda self: self.loc)
    variance = property(lambda self: math.pi ** 2 / 6 * self.scale.pow(2))

    def rsample(self, sample_shape=()):
        return self.icdf(uniform_open(self.loc, self._extended_shape(sample_shape)))

    def log_prob(self, value):
        _check_value(self, value)
        z = (value - self.loc) / self.scale
        return -(z + (-z).exp()) - self.scale.log()

    def cdf(self, value):
        _check_value(self, value)
        return (-(-(value - self.loc) / self.scale).exp()).exp()

    def icdf(self, value):
        return self.loc - self.scale * (-value.log()).log()

    def entropy(self):
        return self.scale.log() + 1 + EULER


class Cauchy(_LocationScale):
    """The Cauchy distribution of median ``loc`` and half width ``scale``."""

    mean = property(lambda self: self.loc * math.nan)
    mode = property(lambda self: self.loc)
    variance = property(lambda self: self.loc * 0 + math.inf)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)   # the ratio of two standard normals
        eps = draw(self.loc, shape, "standard_normal") / draw(self.loc, shape, "standard_normal")
        return self.loc + eps * self.scale

    def log_prob(self, value):
        _check_value(self, value)
        return -math.log(math.pi) - self.scale.log() \
            - ((value - self.loc) / self.scale).pow(2).log1p()

    def entropy(self):
        return math.log(4 * math.pi) + self.scale.log()


class _Folded(Distribution):
    """|X| for X of the location-scale family ``_base`` at loc 0 and the given ``scale``."""

    arg_constraints = {"scale": constraints.positive}
    support = constraints.nonnegative
    _base = None

    def __init__(self, scale, validate_args=None):
        self._take_params(validate_args, scale=scale)
        self.base_dist = self._base(0.0 * self.scale, self.scale, validate_args=False)

    mode = property(lambda self: self.scale * 0)

    def rsample(self, sample_shape=()):
        return self.base_dist.rsample(sample_shape).abs()

    def log_prob(self, value):
        _check_value(self, value)
        return self.base_dist.log_prob(value) + math.log(2)

    def entropy(self):
        return self.base_dist.entropy() - math.log(2)


class HalfNormal(_Folded):
    """|X| for X ~ Normal(0, scale)."""

    _base = Normal
    mean = property(lambda self: self.scale * math.sqrt(2 / math.pi))
    variance = property(lambda self: self.scale.pow(2) * (1 - 2 / math.pi))

    def cdf(self, value):
        _check_value(self, value)
        return 2 * self.base_dist.cdf(value) - 1

    def icdf(self, prob):
        return self.base_dist.icdf((prob + 1) / 2)


class HalfCauchy(_Folded):
    """|X| for X ~ Cauchy(0, scale)."""

    _base = Cauchy
    mean = variance = property(lambda self: self.scale * 0 + math.inf)


class LogNormal(Distribution):
    """exp(X) for X ~ Normal(loc, scale)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.positive

    def __init__(self, loc, scale, validate_args=None):
        self._take_params(validate_args, loc=loc, scale=scale)
        self.base_dist = Normal(self.loc, self.scale, validate_args=False)

    mean = property(lambda self: (self.loc + self.scale.pow(2) / 2).exp())
    mode = property(lambda self: (self.loc - self.scale.pow(2)).exp())
    variance = property(lambda self: self.scale.pow(2).expm1()
                        * (2 * self.loc + self.scale.pow(2)).exp())

    def rsample(self, sample_shape=()):
        return self.base_dist.rsample(sample_shape).exp()

    def log_prob(self, value):
        _check_value(self, value)
        log_value = value.log()
        return self.base_dist.log_prob(log_value) - log_value

    def cdf(self, value):
        _check_value(self, value)
        return self.base_dist.cdf(value.log())

    def icdf(self, value):
        return self.base_dist.icdf(value).exp()

    def entropy(self):
        return self.base_dist.entropy() + self.loc


class Pareto(Distribution):
    """The Pareto distribution of minimum ``scale`` and tail index ``alpha``."""

    arg_constraints = {"alpha": constraints.positive, "scale": constraints.positive}

    def __init__(self, scale, alpha, validate_args=None):
        self._take_params(validate_args, scale=scale, alpha=alpha)

    @property
    def support(self):
        return constraints.greater_than_eq(self.scale)

    # the finite branches see a harmless alpha where the moment is infinite, so their
    # gradient there is 0, not inf * 0
    @property
    def mean(self):
        finite = self.alpha > 1
        a = functions.where(finite, self.alpha, 2.0)
        return functions.where(finite, a * self.scale / (a - 1), math.inf)

    mode = property(lambda self: self.scale)

    @property
    def variance(self):
        finite = self.alpha > 2
        a = functions.where(finite, self.alpha, 3.0)
        return functions.where(finite, self.scale.pow(2) * a / ((a - 1).pow(2) * (a - 2)),
                               math.inf)

    def rsample(self, sample_shape=()):
        e = draw(self.scale, self._extended_shape(sample_shape), "standard_exponential")
        return self.scale * (e / self.alpha).exp()

    def log_prob(self, value):
        _check_value(self, value)
        return self.alpha.log() + self.alpha * self.scale.log() - (self.alpha + 1) * value.log()

    def cdf(self, value):
        _check_value(self, value)
        return 1 - (self.scale / value).pow(self.alpha)

    def icdf(self, value):
        return self.scale * (-value).log1p().mul(-1 / self.alpha).exp()

    def entropy(self):
        return (self.scale / self.alpha).log() + 1 / self.alpha + 1


class Weibull(Distribution):
    """The Weibull distribution of ``scale`` and shape ``concentration``."""

    arg_constraints = {"scale": constraints.positive, "concentration": constraints.positive}
    support = constraints.positive

    def __init__(self, scale, concentration, validate_args=None):
        self._take_params(validate_args, scale=scale, concentration=concentration)

    mean = property(lambda self: self.scale * (1 + self.concentration.reciprocal()).lgamma()
                    .exp())

    @property
    def mode(self):
        k = self.concentration
        return self.scale * ((k - 1) / k).pow(k.reciprocal())       # NaN below k = 1, as torch

    @property
    def variance(self):
        k = self.concentration
        return self.scale.pow(2) * ((1 + 2 / k).lgamma().exp()
                                    - (2 * (1 + 1 / k).lgamma()).exp())

    def rsample(self, sample_shape=()):
        e = draw(self.scale, self._extended_shape(sample_shape), "standard_exponential")
        return self.scale * e.pow(self.concentration.reciprocal())

    def log_prob(self, value):
        _check_value(self, value)
        k, z = self.concentration, value / self.scale
        return (k / self.scale).log() + (k - 1) * z.log() - z.pow(k)

    def cdf(self, value):
        _check_value(self, value)
        return 1 - (-(value / self.scale).pow(self.concentration)).exp()

    def icdf(self, value):
        return self.scale * (-(-value).log1p()).pow(self.concentration.reciprocal())

    def entropy(self):
        k = self.concentration
        return EULER * (1 - k.reciprocal()) + (self.scale / k).log() + 1


class StudentT(Distribution):
    """Student's t distribution of ``df`` degrees of freedom, location and scale."""

    arg_constraints = {"df": constraints.positive, "loc": constraints.real,
                       "scale": constraints.positive}
    support = constraints.real

    def __init__(self, df, loc=0.0, scale=1.0, validate_args=None):
        self._take_params(validate_args, df=df, loc=loc, scale=scale)

    mode = property(lambda self: self.loc)

    @property
    def mean(self):
        return functions.where(self.df > 1, self.loc, math.nan)

    @property
    def variance(self):
        df = self.df.clamp_min(2 + 1e-6)
        finite = self.scale.pow(2) * df / (df - 2)
        return functions.where(self.df > 2, finite,
                               functions.where(self.df > 1, math.inf, math.nan))

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        normal = draw(self.df, shape, "standard_normal")
        chi2 = standard_gamma(self.df * 0.5, shape) * 2
        return self.loc + self.scale * normal * (chi2 / self.df).rsqrt()

    def log_prob(self, value):
        _check_value(self, value)
        y = (value - self.loc) / self.scale
        z = (self.scale.log() + 0.5 * self.df.log() + 0.5 * math.log(math.pi)
             + (0.5 * self.df).lgamma() - (0.5 * (self.df + 1)).lgamma())
        return -0.5 * (self.df + 1) * (y.pow(2) / self.df).log1p() - z

    def entropy(self):
        df = self.df
        lbeta = (0.5 * df).lgamma() + math.lgamma(0.5) - (0.5 * (df + 1)).lgamma()
        return (self.scale.log() + 0.5 * (df + 1) * ((0.5 * (df + 1)).digamma()
                                                      - (0.5 * df).digamma())
                + 0.5 * df.log() + lbeta)


class Dirichlet(Distribution):
    """The Dirichlet distribution over the simplex of the last dimension of
    ``concentration``."""

    arg_constraints = {"concentration": constraints.independent(constraints.positive, 1)}
    support = constraints.simplex
    _param_event_dims = {"concentration": 1}

    def __init__(self, concentration, validate_args=None):
        if not isinstance(concentration, Tensor) or concentration.ndim < 1:
            raise ValueError("Dirichlet: concentration must be at least one-dimensional.")
        self.concentration = concentration
        super().__init__(concentration.shape[:-1], concentration.shape[-1:], validate_args)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        gammas = standard_gamma(self.concentration, shape)
        return gammas / gammas.sum(-1, keepdim=True)

    def log_prob(self, value):
        _check_value(self, value)
        from ..special import xlogy
        c = self.concentration
        return (xlogy(c - 1, value).sum(-1) + c.sum(-1).lgamma() - c.lgamma().sum(-1))

    mean = property(lambda self: self.concentration / self.concentration.sum(-1, keepdim=True))

    @property
    def mode(self):
        """(c - 1)_+ normalised; where every c < 1, the vertex of the largest c (torch's)."""
        c = self.concentration
        mode = (c - 1).clamp_min(0) / ((c - 1).clamp_min(0).sum(-1, keepdim=True))
        vertex = _one_hot(c.argmax(-1), c.shape[-1], c.dtype)
        return functions.where((c < 1).all(-1, keepdim=True), vertex, mode)

    @property
    def variance(self):
        c = self.concentration
        total = c.sum(-1, keepdim=True)
        return c * (total - c) / (total.pow(2) * (total + 1))

    def entropy(self):
        c = self.concentration
        k, total = c.shape[-1], c.sum(-1)
        return (c.lgamma().sum(-1) - total.lgamma() - (k - total) * total.digamma()
                - ((c - 1) * c.digamma()).sum(-1))


class Beta(Distribution):
    """The beta distribution of ``concentration1`` (alpha) and ``concentration0`` (beta)."""

    arg_constraints = {"concentration1": constraints.positive,
                       "concentration0": constraints.positive}
    support = constraints.unit_interval

    def __init__(self, concentration1, concentration0, validate_args=None):
        self._take_params(validate_args, concentration1=concentration1,
                          concentration0=concentration0)

    def _dirichlet(self):
        both = functions.stack([self.concentration1, self.concentration0], -1)
        return Dirichlet(both, validate_args=False)

    @property
    def mean(self):
        return self.concentration1 / (self.concentration1 + self.concentration0)

    @property
    def mode(self):
        return self._dirichlet().mode[..., 0]

    @property
    def variance(self):
        a, b = self.concentration1, self.concentration0
        total = a + b
        return a * b / (total.pow(2) * (total + 1))

    def rsample(self, sample_shape=()):
        return self._dirichlet().rsample(sample_shape)[..., 0]

    def log_prob(self, value):
        _check_value(self, value)
        return self._dirichlet().log_prob(functions.stack([value, 1 - value], -1))

    def entropy(self):
        return self._dirichlet().entropy()


# ------------------------------------------------------------------------- discrete families
class Bernoulli(ProbsOrLogits, Distribution):
    """1 with probability ``probs`` (or sigmoid(``logits``)), else 0."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.boolean
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        given = self._take_probs_or_logits(probs, logits, "Bernoulli")
        self._take_params(validate_args, **{"probs" if probs is not None else "logits": given})

    mean = property(lambda self: self.probs)
    mode = property(lambda self: (self.probs >= 0.5).astype(self.probs.dtype))
    variance = property(lambda self: self.probs * (1 - self.probs))

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        u = draw(self.probs, shape, "random")
        return (u < self.probs.detach()).astype(self.probs.dtype)

    def log_prob(self, value):
        _check_value(self, value)
        return value * self.logits - softplus(self.logits)

    def enumerate_support(self, expand=True):
        return _enumerated(creation.arange(2, dtype=self.probs.dtype,
                                           device=self.probs._device), self, expand)

    def entropy(self):
        return softplus(self.logits) - self.probs * self.logits


class Geometric(ProbsOrLogits, Distribution):
    """The number of failures before the first success of probability ``probs``."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, probs=None, logits=None, validate_args=None):
        given = self._take_probs_or_logits(probs, logits, "Geometric")
        self._take_params(validate_args, **{"probs" if probs is not None else "logits": given})
        if self._validate_args and probs is not None:
            require(given > 0, lambda late: ValueError(
                "Geometric: expected parameter probs to satisfy the constraint 0 < probs <= 1"
                + (DEFERRED_NOTE if late else "")))

    mean = property(lambda self: 1 / self.probs - 1)
    mode = property(lambda self: self.probs * 0)
    variance = property(lambda self: (1 / self.probs - 1) / self.probs)

    def sample(self, sample_shape=()):
        u = uniform_open(self.probs, self._extended_shape(sample_shape))
        return (u.log() / (-self.probs.detach()).log1p()).floor()

    def log_prob(self, value):
        _check_value(self, value)
        return value * (-self.probs).log1p() + self.probs.log()

    def entropy(self):
        return (softplus(self.logits) - self.probs * self.logits) / self.probs


class Poisson(Distribution):
    """The Poisson distribution of mean ``rate``."""

    arg_constraints = {"rate": constraints.nonnegative}
    support = constraints.nonnegative_integer

    def __init__(self, rate, validate_args=None):
        self._take_params(validate_args, rate=rate)

    mean = variance = property(lambda self: self.rate)
    mode = property(lambda self: self.rate.floor())

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        return draw(self.rate, shape, "poisson", self.rate.detach().expand(*shape)._data)

    def log_prob(self, value):
        _check_value(self, value)
        from ..special import xlogy
        return xlogy(value, self.rate) - self.rate - (value + 1).lgamma()


class Binomial(ProbsOrLogits, Distribution):
    """The number of successes in ``total_count`` trials of probability ``probs``."""

    arg_constraints = {"total_count": constraints.nonnegative_integer,
                       "probs": constraints.unit_interval, "logits": constraints.real}
    has_enumerate_support = True

    def __init__(self, total_count=1, probs=None, logits=None, validate_args=None):
        given = self._take_probs_or_logits(probs, logits, "Binomial")
        self._take_params(validate_args, total_count=total_count,
                          **{"probs" if probs is not None else "logits": given})

    @property
    def support(self):
        return constraints.integer_interval(0, self.total_count)

    mean = property(lambda self: self.total_count * self.probs)
    variance = property(lambda self: self.total_count * self.probs * (1 - self.probs))

    @property
    def mode(self):
        return ((self.total_count + 1) * self.probs).floor().clamp_max(self.total_count)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        n = self.total_count.detach().expand(*shape)._data.astype(np.int64)
        return draw(self.probs, shape, "binomial", n, self.probs.detach().expand(*shape)._data)

    def log_prob(self, value):
        _check_value(self, value)
        n = self.total_count
        log_choose = (n + 1).lgamma() - (value + 1).lgamma() - (n - value + 1).lgamma()
        return log_choose + value * self.logits - n * softplus(self.logits)

    def _homogeneous_count(self, what):
        counts = self.total_count.detach().numpy()
        if not (counts == counts.flat[0]).all():
            raise NotImplementedError(f"Inhomogeneous total count not supported by `{what}`.")
        return int(counts.flat[0])

    def enumerate_support(self, expand=True):
        n = self._homogeneous_count("enumerate_support")
        return _enumerated(creation.arange(n + 1, dtype=self.probs.dtype,
                                           device=self.probs._device), self, expand)

    def entropy(self):
        """By enumeration of the support (a homogeneous total_count), as torch's."""
        self._homogeneous_count("entropy")
        log_prob = self.log_prob(self.enumerate_support(False))
        return -(log_prob.exp() * log_prob).sum(0)


class NegativeBinomial(ProbsOrLogits, Distribution):
    """The number of successes (of probability ``probs``) before ``total_count`` failures."""

    arg_constraints = {"total_count": constraints.nonnegative,
                       "probs": constraints.half_open_interval(0.0, 1.0),
                       "logits": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, total_count, probs=None, logits=None, validate_args=None):
        given = self._take_probs_or_logits(probs, logits, "NegativeBinomial")
        self._take_params(validate_args, total_count=total_count,
                          **{"probs" if probs is not None else "logits": given})

    mean = property(lambda self: self.total_count * self.logits.exp())
    mode = property(lambda self: ((self.total_count - 1) * self.logits.exp()).floor()
                    .clamp_min(0))
    variance = property(lambda self: self.mean / (-self.logits).sigmoid())

    def sample(self, sample_shape=()):
        """A Poisson draw of a Gamma(total_count, odds) rate, as torch's."""
        shape = self._extended_shape(sample_shape)
        odds = self.logits.detach().exp()
        rate = standard_gamma(self.total_count.detach(), shape).detach() * odds
        return draw(rate, shape, "poisson", rate._data)

    def log_prob(self, value):
        _check_value(self, value)
        n = self.total_count
        unnormalised = -n * softplus(self.logits) - value * softplus(-self.logits)
        normaliser = -(n + value).lgamma() + (1 + value).lgamma() + n.lgamma()
        normaliser = functions.where(n + value == 0, 0.0, normaliser)
        return unnormalised - normaliser


class Categorical(ProbsOrLogits, Distribution):
    """Categories ``0 .. K-1`` with probabilities ``probs`` (normalised over the last
    dimension) or ``logits`` (unnormalised log-probabilities); one of the two."""

    arg_constraints = {"probs": constraints.simplex,
                       "logits": constraints.independent(constraints.real, 1)}
    has_enumerate_support = True
    _binary = False
    _param_event_dims = {"probs": 1, "logits": 1}

    def __init__(self, probs=None, logits=None, validate_args=None):
        given = self._take_probs_or_logits(probs, logits, "Categorical")
        if not isinstance(given, Tensor) or given.ndim < 1:
            raise ValueError("Categorical: probs or logits must be a tensor of at least one "
                             f"dimension, got {type(given).__name__}")
        if probs is not None:
            if validate_args is not False:
                require(~(probs < 0), lambda late: ValueError(
                    "Categorical: probs must be non-negative" + (DEFERRED_NOTE if late else "")))
            self.__dict__["probs"] = probs / probs.sum(-1, keepdim=True)
        else:
            self.__dict__["logits"] = logits - logits.logsumexp(-1, keepdim=True)
        self._num_events = given.shape[-1]
        super().__init__(given.shape[:-1], validate_args=validate_args)

    @property
    def support(self):
        return constraints.integer_interval(0, self._num_events - 1)

    mean = property(lambda self: self.probs.sum(-1) * math.nan)
    variance = property(lambda self: self.probs.sum(-1) * math.nan)
    mode = property(lambda self: self.probs.argmax(-1))

    def sample(self, sample_shape=()):
        """Category indices, int64 of shape ``sample_shape + batch_shape`` (no gradient)."""
        from .. import sampling
        shape = sample_shape_of(sample_shape)
        count = math.prod(shape) if shape else 1
        flat = self.probs.detach().reshape(-1, self._num_events)
        drawn = sampling.multinomial(flat, count, True)                # (batch, count)
        return drawn.t().reshape(shape + self._batch_shape)

    def log_prob(self, value):
        _check_value(self, value)
        value = value.long().unsqueeze(-1)
        shape = np.broadcast_shapes(tuple(value.shape), tuple(self.logits.shape))
        index = value.expand(*shape[:-1], 1)
        return self.logits.expand(*shape).gather(-1, index).squeeze(-1)

    def entropy(self):
        from ..torch_names import finfo
        logits = self.logits.clamp_min(finfo(self.logits.dtype).min)
        return -(logits * self.probs).sum(-1)

    def enumerate_support(self, expand=True):
        return _enumerated(creation.arange(self._num_events, device=self.probs._device),
                           self, expand)


def _one_hot(index, k, dtype):
    xp = backend.get_array_module(index._data)
    out = (index._data[..., None] == xp.arange(k)).astype(dtype)
    return Tensor._make(out, False, None, 0, index._device)


class OneHotCategorical(Distribution):
    """Categorical draws as one-hot vectors of the last dimension."""

    arg_constraints = Categorical.arg_constraints
    support = constraints.one_hot
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        self._categorical = Categorical(probs, logits, validate_args)
        super().__init__(self._categorical.batch_shape,
                         (self._categorical._num_events,), validate_args=False)
        self._validate_args = self._categorical._validate_args

    probs = property(lambda self: self._categorical.probs)
    logits = property(lambda self: self._categorical.logits)
    mean = property(lambda self: self.probs)
    variance = property(lambda self: self.probs * (1 - self.probs))
    mode = property(lambda self: _one_hot(self.probs.argmax(-1), self.event_shape[0],
                                          self.probs.dtype))

    def expand(self, batch_shape, _instance=None):
        new = Distribution.expand(self, batch_shape)
        new._categorical = self._categorical.expand(batch_shape)
        return new

    def sample(self, sample_shape=()):
        return _one_hot(self._categorical.sample(sample_shape), self.event_shape[0],
                        self.probs.dtype)

    def log_prob(self, value):
        _check_value(self, value)
        return self._categorical.log_prob(value.argmax(-1))

    def entropy(self):
        return self._categorical.entropy()

    def enumerate_support(self, expand=True):
        k = self.event_shape[0]
        return _enumerated(creation.eye(k, dtype=self.probs.dtype, device=self.probs._device),
                           self, expand)


class Multinomial(Distribution):
    """Counts of ``total_count`` categorical draws over the last dimension of ``probs``."""

    arg_constraints = Categorical.arg_constraints

    def __init__(self, total_count=1, probs=None, logits=None, validate_args=None):
        if not isinstance(total_count, int) or isinstance(total_count, bool):
            raise NotImplementedError("Multinomial: inhomogeneous total_count is not supported")
        self.total_count = total_count
        self._categorical = Categorical(probs, logits, validate_args)
        super().__init__(self._categorical.batch_shape, (self._categorical._num_events,),
                         validate_args=False)
        self._validate_args = self._categorical._validate_args

    @property
    def support(self):
        return constraints.multinomial(self.total_count)

    probs = property(lambda self: self._categorical.probs)
    logits = property(lambda self: self._categorical.logits)
    mean = property(lambda self: self.probs * self.total_count)
    variance = property(lambda self: self.total_count * self.probs * (1 - self.probs))

    def expand(self, batch_shape, _instance=None):
        new = Distribution.expand(self, batch_shape)
        new._categorical = self._categorical.expand(batch_shape)
        return new

    def sample(self, sample_shape=()):
        shape = sample_shape_of(sample_shape)
        drawn = self._categorical.sample((self.total_count,) + shape)   # (n, *shape, *batch)
        return _one_hot(drawn, self.event_shape[0], self.probs.dtype).sum(0)

    def log_prob(self, value):
        _check_value(self, value)
        logits = self.logits
        # 0 * log 0 = 0: a category of probability 0 never drawn costs nothing
        logits = functions.where((value == 0) & (logits == -math.inf), 0.0, logits)
        return ((value.sum(-1) + 1).lgamma() - (value + 1).lgamma().sum(-1)
                + (value * logits).sum(-1))


class Independent(Distribution):
    """``base_distribution`` with its last ``reinterpreted_batch_ndims`` batch dimensions
    taken as event dimensions (log_prob sums over them)."""

    arg_constraints = {}

    def __init__(self, base_distribution, reinterpreted_batch_ndims, validate_args=None):
        n = reinterpreted_batch_ndims
        if not isinstance(n, int) or n < 0 or n > len(base_distribution.batch_shape):
            raise ValueError(f"Expected reinterpreted_batch_ndims <= "
                             f"len(base_distribution.batch_shape), actual {n} vs "
                             f"{len(base_distribution.batch_shape)}")
        shape = base_distribution.batch_shape + base_distribution.event_shape
        event_dim = n + len(base_distribution.event_shape)
        self.base_dist, self.reinterpreted_batch_ndims = base_distribution, n
        super().__init__(shape[:len(shape) - event_dim], shape[len(shape) - event_dim:],
                         validate_args)

    has_rsample = property(lambda self: self.base_dist.has_rsample)

    @property
    def support(self):
        return constraints.independent(self.base_dist.support, self.reinterpreted_batch_ndims)

    mean = property(lambda self: self.base_dist.mean)
    mode = property(lambda self: self.base_dist.mode)
    variance = property(lambda self: self.base_dist.variance)

    def _sum_rightmost(self, value):
        for _ in range(self.reinterpreted_batch_ndims):
            value = value.sum(-1)
        return value

    def expand(self, batch_shape, _instance=None):
        batch_shape = tuple(batch_shape)
        base_batch = self.base_dist.batch_shape
        tail = base_batch[len(base_batch) - self.reinterpreted_batch_ndims:]
        return Independent(self.base_dist.expand(batch_shape + tail),
                           self.reinterpreted_batch_ndims, validate_args=False)

    def sample(self, sample_shape=()):
        return self.base_dist.sample(sample_shape)

    def rsample(self, sample_shape=()):
        return self.base_dist.rsample(sample_shape)

    def log_prob(self, value):
        return self._sum_rightmost(self.base_dist.log_prob(value))

    def entropy(self):
        return self._sum_rightmost(self.base_dist.entropy())

    def __repr__(self):
        return f"Independent({self.base_dist!r}, {self.reinterpreted_batch_ndims})"


class VonMises(Distribution):
    """The von Mises distribution on the circle, of mean direction ``loc`` and
    ``concentration``. Draws (no gradient) from the generator's vonmises (the cpu's, NumPy's),
    else by rejection in array operations (the cuda device's: CuPy has none)."""

    arg_constraints = {"loc": constraints.real, "concentration": constraints.positive}
    support = constraints.real

    def __init__(self, loc, concentration, validate_args=None):
        self._take_params(validate_args, loc=loc, concentration=concentration)

    mean = mode = property(lambda self: self.loc)

    @property
    def variance(self):
        from ..special import i0e, i1e
        return 1 - i1e(self.concentration) / i0e(self.concentration)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        loc = self.loc.detach().expand(*shape)._data
        concentration = self.concentration.detach().expand(*shape)._data
        gen = random.generator(self.loc._device)
        if hasattr(gen, "vonmises"):
            return draw(self.loc, shape, "vonmises", loc, concentration)
        xp = backend.xp_for(self.loc._device)
        return as_draws(self.loc, von_mises_by_rejection(gen, xp, loc, concentration))

    def log_prob(self, value):
        _check_value(self, value)
        from ..special import i0e
        k = self.concentration
        return k * ((value - self.loc).cos() - 1) - math.log(2 * math.pi) - i0e(k).log()
