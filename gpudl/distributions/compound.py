"""Distributions made of others, as torch builds them: the relaxed (Concrete) Bernoulli and
one-hot categorical, LogisticNormal, and MixtureSameFamily."""

import math

from . import constraints
from .distribution import Distribution, ProbsOrLogits, broadcast_all, softplus, uniform_open
from .families import Categorical, Independent, Normal
from .transforms import (ExpTransform, SigmoidTransform, StickBreakingTransform,
                         TransformedDistribution)


class LogitRelaxedBernoulli(ProbsOrLogits, Distribution):
    """The logit of a RelaxedBernoulli draw: (logit(u) + logits) / temperature."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.real

    def __init__(self, temperature, probs=None, logits=None, validate_args=None):
        given = self._take_probs_or_logits(probs, logits, "LogitRelaxedBernoulli")
        self._take_params(validate_args, temperature=temperature,
                          **{"probs" if probs is not None else "logits": given})

    def rsample(self, sample_shape=()):
        u = uniform_open(self.logits, self._extended_shape(sample_shape))
        return (u.log() - (-u).log1p() + self.logits) / self.temperature

    def log_prob(self, value):
        diff = self.logits - value * self.temperature
        return self.temperature.log() + diff - 2 * softplus(diff)


class _Relaxed(TransformedDistribution):
    """A relaxed family: ``_base(temperature, probs, logits)`` through ``_transform``."""

    arg_constraints = {}
    _base = _transform = None

    def __init__(self, temperature, probs=None, logits=None, validate_args=None):
        base = self._base(temperature, probs, logits, validate_args)
        super().__init__(base, self._transform(), validate_args=validate_args)

    temperature = property(lambda self: self.base_dist.temperature)
    probs = property(lambda self: self.base_dist.probs)
    logits = property(lambda self: self.base_dist.logits)


class RelaxedBernoulli(_Relaxed):
    """The Concrete relaxation of Bernoulli at ``temperature``: values in (0, 1),
    differentiable draws."""

    _base, _transform = LogitRelaxedBernoulli, SigmoidTransform


class ExpRelaxedCategorical(Distribution):
    """The log of a RelaxedOneHotCategorical draw: log-softmax of (logits + Gumbel noise) /
    temperature."""

    arg_constraints = {"probs": constraints.simplex,
                       "logits": constraints.independent(constraints.real, 1)}
    support = constraints.real_vector

    def __init__(self, temperature, probs=None, logits=None, validate_args=None):
        self._categorical = Categorical(probs, logits, validate_args)
        (self.temperature,) = broadcast_all(temperature)
        super().__init__(self._categorical.batch_shape, (self._categorical._num_events,),
                         validate_args=False)

    probs = property(lambda self: self._categorical.probs)
    logits = property(lambda self: self._categorical.logits)

    def rsample(self, sample_shape=()):
        u = uniform_open(self.logits, self._extended_shape(sample_shape))
        scores = (self.logits - (-u.log()).log()) / self.temperature
        return scores - scores.logsumexp(-1, keepdim=True)

    def log_prob(self, value):
        k = self.event_shape[0]
        log_scale = math.lgamma(k) + (k - 1) * self.temperature.log()
        score = self.logits - value * self.temperature
        score = (score - score.logsumexp(-1, keepdim=True)).sum(-1)
        return score + log_scale


class RelaxedOneHotCategorical(_Relaxed):
    """The Concrete (Gumbel-softmax) relaxation of OneHotCategorical at ``temperature``:
    points of the simplex, differentiable draws."""

    _base, _transform = ExpRelaxedCategorical, ExpTransform


class LogisticNormal(TransformedDistribution):
    """A Normal(loc, scale) vector through the stick-breaking map: points of the simplex one
    longer than loc."""

    arg_constraints = {}

    def __init__(self, loc, scale, validate_args=None):
        base = Independent(Normal(loc, scale, validate_args=validate_args), 1)
        super().__init__(base, StickBreakingTransform(), validate_args=validate_args)

    loc = property(lambda self: self.base_dist.base_dist.loc)
    scale = property(lambda self: self.base_dist.base_dist.scale)


class MixtureSameFamily(Distribution):
    """A mixture of the components of ``component_distribution`` (its rightmost batch
    dimension) weighted by ``mixture_distribution`` (a Categorical)."""

    arg_constraints = {}

    def __init__(self, mixture_distribution, component_distribution, validate_args=None):
        if not isinstance(mixture_distribution, Categorical):
            raise ValueError("The Mixture distribution needs to be an instance of "
                             "torch.distributions.Categorical")
        if not isinstance(component_distribution, Distribution):
            raise ValueError("The Component distribution needs to be an instance of "
                             "torch.distributions.Distribution")
        mix_batch, comp_batch = mixture_distribution.batch_shape, \
            component_distribution.batch_shape
        if len(comp_batch) < 1 or mix_batch != comp_batch[:-1] and mix_batch != ():
            raise ValueError(f"`mixture_distribution.batch_shape` ({mix_batch}) is not "
                             f"compatible with `component_distribution.batch_shape`"
                             f"({comp_batch})")
        k = mixture_distribution._num_events
        if k != comp_batch[-1]:
            raise ValueError(f"`mixture_distribution component` ({k}) does not equal "
                             f"`component_distribution.batch_shape[-1]` ({comp_batch[-1]})")
        self._mixture, self._component = mixture_distribution, component_distribution
        self._event_ndims = len(component_distribution.event_shape)
        super().__init__(comp_batch[:-1], component_distribution.event_shape, validate_args)

    mixture_distribution = property(lambda self: self._mixture)
    component_distribution = property(lambda self: self._component)

    @property
    def support(self):
        return self._component.support

    def _weights(self):
        """The mixture probabilities, with one trailing 1 per event dimension."""
        probs = self._mixture.probs
        return probs.reshape(*probs.shape, *(1,) * self._event_ndims)

    @property
    def mean(self):
        return (self._weights() * self._component.mean).sum(-1 - self._event_ndims)

    @property
    def variance(self):
        axis = -1 - self._event_ndims
        weights = self._weights()
        within = (weights * self._component.variance).sum(axis)
        between = (weights * (self._component.mean - self.mean.unsqueeze(axis)).pow(2)).sum(axis)
        return within + between

    def _pad(self, value):
        return value.unsqueeze(-1 - self._event_ndims)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_prob_x = self._component.log_prob(self._pad(value))            # (..., k)
        log_mix = self._mixture.logits.log_softmax(-1)
        return (log_prob_x + log_mix).logsumexp(-1)

    def cdf(self, value):
        cdf_x = self._component.cdf(self._pad(value))
        return (cdf_x * self._mixture.probs).sum(-1)

    def sample(self, sample_shape=()):
        from ..autograd import no_grad
        with no_grad():
            index = self._mixture.sample(sample_shape)                  # (*sample, *batch)
            drawn = self._component.sample(sample_shape)                # (..., k, *event)
            index = index.reshape(*index.shape, 1, *(1,) * self._event_ndims)
            index = index.expand(*index.shape[:-1 - self._event_ndims], 1,
                                 *self.event_shape)
            return drawn.gather(-1 - self._event_ndims, index).squeeze(-1 - self._event_ndims)

    def expand(self, batch_shape, _instance=None):
        batch_shape = tuple(batch_shape)
        k = self._mixture._num_events
        return MixtureSameFamily(self._mixture.expand(batch_shape),
                                 self._component.expand(batch_shape + (k,)),
                                 validate_args=False)

    def __repr__(self):
        return f"MixtureSameFamily(\n  {self._mixture!r},\n  {self._component!r})"


