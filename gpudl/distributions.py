"""torch.distributions' two most used families, for policy-gradient and VAE scripts:
``Categorical`` (probs or logits over the last dimension) and ``Normal`` (loc, scale), with
``sample``/``rsample``, ``log_prob``, ``entropy`` and ``kl_divergence`` between Normals.

Values and gradients are autograd-tracked tensor expressions of the parameters; draws come from
gpudl's generators (``gd.manual_seed``), so they differ from torch's draws for the same seed.
Argument validation is torch's default (``validate_args``): parameters and values outside their
support raise ValueError.
"""

import math

import numpy as np

from . import creation, functions, sampling
from .torch_names import finfo
from .tensor import Tensor


def _shape(sample_shape):
    return (int(sample_shape),) if isinstance(sample_shape, int) else tuple(sample_shape)


class Categorical:
    """Categories ``0 .. K-1`` with probabilities ``probs`` (normalised over the last
    dimension) or ``logits`` (unnormalised log-probabilities); one of the two."""

    def __init__(self, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("Categorical: either probs or logits must be given, not both")
        given = probs if logits is None else logits
        if not isinstance(given, Tensor) or given.ndim < 1:
            raise ValueError("Categorical: probs or logits must be a tensor of at least one "
                             f"dimension, got {type(given).__name__}")
        if probs is not None:
            if validate_args is not False and bool((probs < 0).any()):
                raise ValueError("Categorical: probs must be non-negative")
            self.probs = probs / probs.sum(-1, keepdim=True)
            eps = finfo(probs.dtype).eps
            self.logits = self.probs.clamp(eps, 1 - eps).log()
        else:
            self.logits = logits - logits.logsumexp(-1, keepdim=True)
            self.probs = self.logits.softmax(-1)
        self._num_events = given.shape[-1]
        self.batch_shape = tuple(given.shape[:-1])
        self.validate_args = validate_args is not False

    @property
    def param_shape(self):
        return self.batch_shape + (self._num_events,)

    def sample(self, sample_shape=()):
        """Category indices, int64 of shape ``sample_shape + batch_shape`` (no gradient)."""
        shape = _shape(sample_shape)
        count = math.prod(shape) if shape else 1
        flat = self.probs.detach().reshape(-1, self._num_events)
        drawn = sampling.multinomial(flat, count, True)                # (batch, count)
        return drawn.t().reshape(shape + self.batch_shape)

    def log_prob(self, value):
        if self.validate_args and (bool((value < 0).any())
                                   or bool((value >= self._num_events).any())):
            raise ValueError(f"Categorical.log_prob: value must lie in [0, "
                             f"{self._num_events - 1}]")
        value = value.long().unsqueeze(-1)
        shape = np.broadcast_shapes(tuple(value.shape), tuple(self.logits.shape))
        index = value.expand(*shape[:-1], 1)
        return self.logits.expand(*shape).gather(-1, index).squeeze(-1)

    def entropy(self):
        logits = self.logits.clamp_min(finfo(self.logits.dtype).min)
        return -(logits * self.probs).sum(-1)

    @property
    def mean(self):
        raise NotImplementedError("Categorical has no mean (torch returns NaN)")

    def __repr__(self):
        return f"Categorical(probs: {tuple(self.probs.shape)})"


class Normal:
    """The normal distribution of mean ``loc`` and standard deviation ``scale`` (tensors or
    numbers, broadcast together)."""

    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        tensors = [t for t in (loc, scale) if isinstance(t, Tensor)]
        like = tensors[0] if tensors else None
        loc, scale = (t if isinstance(t, Tensor) else
                      creation.tensor(float(t), dtype=like.dtype if like is not None else None)
                      for t in (loc, scale))
        if validate_args is not False and not bool((scale > 0).all()):
            raise ValueError("Normal: scale must be positive")
        self.loc, self.scale = functions.broadcast_tensors(loc, scale)
        self.batch_shape = tuple(self.loc.shape)
        self.validate_args = validate_args is not False

    mean = property(lambda self: self.loc)
    stddev = property(lambda self: self.scale)
    variance = property(lambda self: self.scale.pow(2))

    def rsample(self, sample_shape=()):
        """``loc + scale * eps`` with standard normal ``eps``: gradients reach loc and scale."""
        shape = _shape(sample_shape) + self.batch_shape
        eps = creation.randn(*shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + eps * self.scale

    def sample(self, sample_shape=()):
        return self.rsample(sample_shape).detach()

    def log_prob(self, value):
        var = self.scale.pow(2)
        return -((value - self.loc).pow(2)) / (2 * var) - self.scale.log() \
            - math.log(math.sqrt(2 * math.pi))

    def entropy(self):
        return 0.5 + 0.5 * math.log(2 * math.pi) + self.scale.log()

    def __repr__(self):
        return f"Normal(loc: {tuple(self.loc.shape)}, scale: {tuple(self.scale.shape)})"


def kl_divergence(p, q):
    """KL(p || q) for two Normals (elementwise over the batch), as torch's closed form."""
    if not (isinstance(p, Normal) and isinstance(q, Normal)):
        raise NotImplementedError(f"kl_divergence: only Normal against Normal, got "
                                  f"{type(p).__name__} and {type(q).__name__}")
    var_ratio = (p.scale / q.scale).pow(2)
    t1 = ((p.loc - q.loc) / q.scale).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())
