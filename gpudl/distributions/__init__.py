"""torch.distributions for gpudl: the families with torch's API (batch_shape/event_shape,
sample/rsample, log_prob, entropy, mean/mode/variance/stddev, cdf/icdf where torch has them,
support/arg_constraints checked unless ``validate_args=False``, expand), Independent,
TransformedDistribution with its transforms, the constraints module, and kl_divergence with
register_kl.

Values and gradients are autograd-tracked tensor expressions of the parameters; draws come from
gpudl's generators (``gd.manual_seed``), so they differ from torch's draws for the same seed.
"""

from . import constraints, transforms
from .compound import (ExpRelaxedCategorical, LogisticNormal, LogitRelaxedBernoulli,
                       MixtureSameFamily, RelaxedBernoulli, RelaxedOneHotCategorical)
from .distribution import Distribution
from .families import (Bernoulli, Beta, Binomial, Categorical, Cauchy, Chi2, Dirichlet,
                       Exponential, Gamma, Geometric, Gumbel, HalfCauchy, HalfNormal,
                       Independent, Laplace, LogNormal, Multinomial, NegativeBinomial, Normal,
                       OneHotCategorical, Pareto, Poisson, StudentT, Uniform, VonMises, Weibull)
from .kl import kl_divergence, register_kl
from .multivariate import LowRankMultivariateNormal, MultivariateNormal
from .transforms import TransformedDistribution
