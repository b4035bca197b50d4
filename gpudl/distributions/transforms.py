"""torch.distributions.transforms (the elementwise ones, Compose, StickBreaking) and
TransformedDistribution: draws of a base distribution pushed through bijections, with
log_prob by the change of variables."""

import math

from .. import functions
from ..tensor import Tensor
from . import constraints
from .distribution import Distribution, softplus


class Transform:
    """A bijection y = T(x) with log |dy/dx| (``log_abs_det_jacobian``); ``inv`` its inverse."""

    domain = codomain = constraints.real
    event_dim = 0

    def __call__(self, x):
        return self._call(x)

    @property
    def inv(self):
        return _Inverse(self)

    def log_abs_det_jacobian(self, x, y):
        raise NotImplementedError

    def forward_shape(self, shape):
        """The shape of T(x) for x of ``shape``."""
        return tuple(shape)

    def __eq__(self, other):
        """The same kind of transform with equal parameters."""
        if type(self) is not type(other) or vars(self).keys() != vars(other).keys():
            return False
        return all(_same(a, vars(other)[name]) for name, a in vars(self).items())

    __hash__ = object.__hash__

    def __repr__(self):
        return type(self).__name__ + "()"


class _Inverse(Transform):
    def __init__(self, transform):
        self._transform = transform
        self.domain, self.codomain = transform.codomain, transform.domain
        self.event_dim = transform.event_dim

    inv = property(lambda self: self._transform)

    def _call(self, y):
        return self._transform._inverse(y)

    def _inverse(self, x):
        return self._transform(x)

    def log_abs_det_jacobian(self, x, y):
        return -self._transform.log_abs_det_jacobian(y, x)


class ExpTransform(Transform):
    """y = exp(x)."""

    codomain = constraints.positive

    def _call(self, x):
        return x.exp()

    def _inverse(self, y):
        return y.log()

    def log_abs_det_jacobian(self, x, y):
        return x


class AffineTransform(Transform):
    """y = loc + scale * x."""

    def __init__(self, loc, scale, event_dim=0):
        self.loc, self.scale, self.event_dim = loc, scale, event_dim

    def _call(self, x):
        return self.loc + self.scale * x

    def _inverse(self, y):
        return (y - self.loc) / self.scale

    def log_abs_det_jacobian(self, x, y):
        scale = self.scale
        result = (scale.abs().log() if hasattr(scale, "abs") else math.log(abs(scale))) + x * 0
        for _ in range(self.event_dim):
            result = result.sum(-1)
        return result


class SigmoidTransform(Transform):
    """y = sigmoid(x)."""

    codomain = constraints.unit_interval

    def _call(self, x):
        return x.sigmoid()

    def _inverse(self, y):
        return y.log() - (-y).log1p()

    def log_abs_det_jacobian(self, x, y):
        return -softplus(-x) - softplus(x)


class TanhTransform(Transform):
    """y = tanh(x)."""

    codomain = constraints.interval(-1.0, 1.0)

    def _call(self, x):
        return x.tanh()

    def _inverse(self, y):
        return 0.5 * ((1 + y).log() - (1 - y).log())

    def log_abs_det_jacobian(self, x, y):
        return 2.0 * (math.log(2.0) - x - softplus(-2.0 * x))


class PowerTransform(Transform):
    """y = x ** exponent (x positive)."""

    domain = codomain = constraints.positive

    def __init__(self, exponent):
        self.exponent = exponent

    def _call(self, x):
        return x.pow(self.exponent)

    def _inverse(self, y):
        return y.pow(1 / self.exponent)

    def log_abs_det_jacobian(self, x, y):
        return (self.exponent * y / x).abs().log()


class AbsTransform(Transform):
    """y = |x| (not a bijection: no inverse's Jacobian)."""

    codomain = constraints.nonnegative

    def _call(self, x):
        return x.abs()

    def _inverse(self, y):
        return y


class SoftmaxTransform(Transform):
    """y = softmax(x) over the last dimension (no Jacobian, as torch's)."""

    codomain, event_dim = constraints.simplex, 1

    def _call(self, x):
        return x.softmax(-1)

    def _inverse(self, y):
        return y.log()


class StickBreakingTransform(Transform):
    """R^(K-1) to the K-simplex by stick breaking (torch's)."""

    domain, codomain, event_dim = constraints.real_vector, constraints.simplex, 1

    def forward_shape(self, shape):
        return tuple(shape[:-1]) + (shape[-1] + 1,)

    def _call(self, x):
        offset = x.shape[-1] + 1 - _arange_like(x.shape[-1], x)
        z = (x - offset.log()).sigmoid()
        z_cumprod = (1 - z).cumprod(-1)
        ones = z[..., :1] * 0 + 1
        return functions.cat([z, ones], -1) * functions.cat([ones, z_cumprod], -1)

    def _inverse(self, y):
        y_crop = y[..., :-1]
        offset = y.shape[-1] - _arange_like(y_crop.shape[-1], y)
        sf = 1 - y_crop.cumsum(-1)
        eps = 1e-12 if y.dtype.itemsize == 8 else 1e-6
        sf = sf.clamp_min(eps)
        return y_crop.log() - sf.log() + offset.log()

    def log_abs_det_jacobian(self, x, y):
        offset = x.shape[-1] + 1 - _arange_like(x.shape[-1], x)
        x = x - offset.log()
        return (-x + (x.sigmoid()).log() + y[..., :-1].log()).sum(-1)


def _same(a, b):
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape
                and bool((a == b).all()))
    return a == b


def _arange_like(k, x):
    from .. import creation
    return creation.arange(1, k + 1, dtype=x.dtype, device=x._device)


class IndependentTransform(Transform):
    """``base_transform`` with its rightmost ``reinterpreted_batch_ndims`` dimensions taken as
    one event (the Jacobian's log summed over them)."""

    def __init__(self, base_transform, reinterpreted_batch_ndims):
        self.base_transform = base_transform
        self.reinterpreted_batch_ndims = reinterpreted_batch_ndims
        self.event_dim = base_transform.event_dim + reinterpreted_batch_ndims
        self.domain = constraints.independent(base_transform.domain, reinterpreted_batch_ndims)
        self.codomain = constraints.independent(base_transform.codomain,
                                                reinterpreted_batch_ndims)

    def forward_shape(self, shape):
        return self.base_transform.forward_shape(shape)

    def _call(self, x):
        return self.base_transform(x)

    def _inverse(self, y):
        return self.base_transform.inv(y)

    def log_abs_det_jacobian(self, x, y):
        result = self.base_transform.log_abs_det_jacobian(x, y)
        for _ in range(self.reinterpreted_batch_ndims):
            result = result.sum(-1)
        return result


class ReshapeTransform(Transform):
    """Events of ``in_shape`` reshaped to ``out_shape`` (the same number of elements)."""

    def __init__(self, in_shape, out_shape):
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise ValueError(f"in_shape {self.in_shape}, out_shape {self.out_shape} are of "
                             "different numbers of elements")
        self.event_dim = len(self.in_shape)
        self.domain = constraints.independent(constraints.real, len(self.in_shape))
        self.codomain = constraints.independent(constraints.real, len(self.out_shape))

    def forward_shape(self, shape):
        return tuple(shape[:len(shape) - len(self.in_shape)]) + self.out_shape

    def _call(self, x):
        batch = tuple(x.shape[:x.ndim - len(self.in_shape)])
        return x.reshape(*(batch + self.out_shape))

    def _inverse(self, y):
        batch = tuple(y.shape[:y.ndim - len(self.out_shape)])
        return y.reshape(*(batch + self.in_shape))

    def log_abs_det_jacobian(self, x, y):
        batch = tuple(x.shape[:x.ndim - len(self.in_shape)])
        return x.reshape(*batch, -1).sum(-1) * 0


class ComposeTransform(Transform):
    """The transforms applied in order."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.event_dim = max((p.event_dim for p in self.parts), default=0)
        if self.parts:
            self.domain, self.codomain = self.parts[0].domain, self.parts[-1].codomain

    def _call(self, x):
        for part in self.parts:
            x = part(x)
        return x

    def _inverse(self, y):
        for part in reversed(self.parts):
            y = part.inv(y)
        return y

    def forward_shape(self, shape):
        for part in self.parts:
            shape = part.forward_shape(shape)
        return tuple(shape)

    def log_abs_det_jacobian(self, x, y):
        total = 0
        for part in self.parts:
            step = part(x)
            term = part.log_abs_det_jacobian(x, step)
            for _ in range(self.event_dim - part.event_dim):
                term = term.sum(-1)
            total = total + term
            x = step
        return total


class TransformedDistribution(Distribution):
    """``base_distribution``'s draws through ``transforms`` (one or a list)."""

    arg_constraints = {}

    def __init__(self, base_distribution, transforms, validate_args=None):
        self.transforms = [transforms] if isinstance(transforms, Transform) else list(transforms)
        for t in self.transforms:
            if not isinstance(t, Transform):
                raise ValueError(f"transforms must be a Transform or a list of Transforms, "
                                 f"got {type(t).__name__}")
        self.base_dist = base_distribution
        shape = base_distribution.batch_shape + base_distribution.event_shape
        event_dim = max([len(base_distribution.event_shape)]
                        + [t.event_dim for t in self.transforms])
        for t in self.transforms:
            shape = t.forward_shape(shape)
        super().__init__(shape[:len(shape) - event_dim], shape[len(shape) - event_dim:],
                         validate_args)

    has_rsample = property(lambda self: self.base_dist.has_rsample)
    support = property(lambda self: self.transforms[-1].codomain if self.transforms
                       else self.base_dist.support)

    def sample(self, sample_shape=()):
        x = self.base_dist.sample(sample_shape)
        for t in self.transforms:
            x = t(x)
        return x

    def rsample(self, sample_shape=()):
        x = self.base_dist.rsample(sample_shape)
        for t in self.transforms:
            x = t(x)
        return x

    def log_prob(self, value):
        event_dim = len(self.event_shape)
        total, y = 0, value
        for t in reversed(self.transforms):
            x = t.inv(y)
            term = t.log_abs_det_jacobian(x, y)
            for _ in range(event_dim - t.event_dim):
                term = term.sum(-1)
            total = total - term
            y = x
        base = self.base_dist.log_prob(y)
        for _ in range(event_dim - len(self.base_dist.event_shape)):
            base = base.sum(-1)
        return total + base

    def cdf(self, value):
        for t in reversed(self.transforms):
            value = t.inv(value)
        return self.base_dist.cdf(value)
