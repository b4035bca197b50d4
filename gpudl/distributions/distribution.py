"""The base of every family: shapes, argument validation, ``expand``, ``sample`` from
``rsample``, and the helpers the families share (parameters broadcast together, draws from
gpudl's generators, probabilities and logits)."""

import copy
import math

import numpy as np

from .. import backend, creation, dtypes, functions, random
from ..autograd import no_grad
from ..tensor import Tensor
from ..torch_names import finfo
from ..ops.sparse import DEFERRED_NOTE
from . import constraints


def sample_shape_of(sample_shape):
    return (int(sample_shape),) if isinstance(sample_shape, int) else tuple(sample_shape)


def broadcast_all(*values):
    """Tensors and numbers as tensors of one floating dtype (the tensors' widest, else the
    default), broadcast together."""
    tensors = [v for v in values if isinstance(v, Tensor)]
    for v in values:
        if not isinstance(v, Tensor) and (not isinstance(v, (int, float))
                                          or isinstance(v, bool)):
            raise TypeError(f"expected a Tensor or a number, got {type(v).__name__}")
    floating = [t.dtype for t in tensors if dtypes.is_floating(t.dtype)]
    dtype = floating[0] if floating else dtypes.DEFAULT_FLOAT
    for d in floating[1:]:
        dtype = dtypes.promote_types(dtype, d)
    device = tensors[0]._device if tensors else None
    as_tensors = [(v if v.dtype == dtype else v.astype(dtype)) if isinstance(v, Tensor)
                  else creation.tensor(float(v), dtype=dtype, device=device) for v in values]
    return functions.broadcast_tensors(*as_tensors)


def draw(like, shape, method, *params):
    """``generator.method(*params, size=shape)`` on ``like``'s device, as a tensor of its
    dtype without gradient (params: raw arrays or numbers)."""
    gen = random.generator(like._device)
    if not hasattr(gen, method):
        raise RuntimeError(f"sampling: the {like._device} generator has no {method}")
    out = getattr(gen, method)(*params, size=shape) if params else getattr(gen, method)(
        size=shape)
    return as_draws(like, out)


def as_draws(like, array):
    """Drawn ``array`` as a tensor on ``like``'s device, of its dtype, without gradient."""
    xp = backend.xp_for(like._device)
    return Tensor._make(xp.asarray(array).astype(like.dtype, copy=False), False, None, 0,
                        like._device)


def uniform_open(like, shape):
    """Uniform draws in (tiny, 1), as torch's rsamples take them (no log of 0)."""
    u = draw(like, shape, "random")
    tiny = finfo(like.dtype).tiny
    return u.clamp(tiny, 1 - finfo(like.dtype).eps)


def softplus(x):
    """log(1 + exp(x)) without overflow."""
    return x.clamp_min(0) + (-x.abs()).exp().log1p()


def probs_to_logits(probs, is_binary=False):
    eps = finfo(probs.dtype).eps
    clamped = probs.clamp(eps, 1 - eps)
    return clamped.log() - (-clamped).log1p() if is_binary else clamped.log()


def logits_to_probs(logits, is_binary=False):
    return logits.sigmoid() if is_binary else logits.softmax(-1)


def require(ok, make_error):
    """Raise ``make_error(late)`` unless every value of boolean tensor ``ok`` holds: at once on
    host data; on the cuda device at the next device read (backend.defer_check, ``late`` True),
    so that validating the distributions a training step makes costs it no sync."""
    if backend.on_device(ok._data):
        error = make_error(True)    # made now: the queued check keeps no tensor (or graph) alive
        backend.defer_check(ok._data.all(), bool, lambda _: error)
    elif not bool(ok.all()):
        raise make_error(False)


def _invalid_values(value, late):
    """The end of a validation error: the values, or (late) that a device-side check found them
    (the values may have changed since)."""
    return DEFERRED_NOTE if late else f":\n{value}"


class _DefinesRsample:
    """``has_rsample``, on a family and its instances: whether the family defines rsample."""

    def __get__(self, instance, owner):
        return owner.rsample is not Distribution.rsample


class Distribution:
    """torch.distributions.Distribution: ``batch_shape`` (independent draws) and
    ``event_shape`` (one draw's shape); parameters checked against ``arg_constraints`` and
    values against ``support`` unless ``validate_args=False``. On the cuda device these checks
    read nothing: a failed one raises at the next device read (``require``), where torch's
    validation reads the device at every check."""

    has_rsample = _DefinesRsample()
    has_enumerate_support = False
    arg_constraints = {}
    support = None
    _validate_default = True
    # parameters with event dimensions of their own (Categorical's probs: 1)
    _param_event_dims = {}

    @staticmethod
    def set_default_validate_args(value):
        """Switch argument validation on or off for distributions made afterwards."""
        if value not in (True, False):
            raise ValueError(f"set_default_validate_args: expected a bool, got {value!r}")
        Distribution._validate_default = value

    def __init__(self, batch_shape=(), event_shape=(), validate_args=None):
        self._batch_shape, self._event_shape = tuple(batch_shape), tuple(event_shape)
        self._validate_args = (self._validate_default if validate_args is None
                               else bool(validate_args))
        if not self._validate_args:
            return
        for name, constraint in self.arg_constraints.items():
            if name not in self.__dict__ or constraints.is_dependent(constraint):
                continue                          # probs given as logits, or the reverse
            value = self.__dict__[name]
            require(constraint.check(value), lambda late, name=name, value=value, c=constraint: (
                ValueError(f"Expected parameter {name} ({type(value).__name__} of shape "
                           f"{tuple(value.shape)}) of distribution {self!r} to satisfy the "
                           f"constraint {c!r}, but found invalid values"
                           + _invalid_values(value, late))))

    def _take_params(self, validate_args, **params):
        """Set the tensor or number parameters, broadcast together (the batch shape), and
        validate them."""
        tensors = broadcast_all(*params.values())
        for name, tensor in zip(params, tensors):
            self.__dict__[name] = tensor         # past ProbsOrLogits' read-only properties
        Distribution.__init__(self, tensors[0].shape, validate_args=validate_args)

    batch_shape = property(lambda self: self._batch_shape)
    event_shape = property(lambda self: self._event_shape)

    def _extended_shape(self, sample_shape=()):
        return sample_shape_of(sample_shape) + self._batch_shape + self._event_shape

    def _validate_sample(self, value):
        if not isinstance(value, Tensor):
            raise ValueError(f"The value argument to log_prob must be a Tensor, got "
                             f"{type(value).__name__}")
        event = len(self._event_shape)
        if event and tuple(value.shape[-event:]) != self._event_shape:
            raise ValueError(f"The right-most size of value must match event_shape: "
                             f"{tuple(value.shape)} vs {self._event_shape}.")
        try:
            np.broadcast_shapes(tuple(value.shape), self._batch_shape + self._event_shape)
        except ValueError:
            raise ValueError(f"Value is not broadcastable with batch_shape+event_shape: "
                             f"{tuple(value.shape)} vs "
                             f"{self._batch_shape + self._event_shape}.") from None
        support = self.support
        if support is None or constraints.is_dependent(support):
            return
        require(support.check(value), lambda late: ValueError(
            f"Expected value argument ({type(value).__name__} of shape {tuple(value.shape)}) to "
            f"be within the support ({support!r}) of the distribution {self!r}, but found "
            "invalid values" + _invalid_values(value, late)))

    def expand(self, batch_shape, _instance=None):
        """The same distribution with its parameters expanded to ``batch_shape``."""
        batch_shape = tuple(batch_shape)
        new = copy.copy(self)
        for name in list(self.__dict__):
            value = self.__dict__[name]
            if isinstance(value, Tensor) and (name in self.arg_constraints
                                              or name in self._param_event_dims):
                event = self._param_event_dims.get(name, 0)
                tail = tuple(value.shape[value.ndim - event:]) if event else ()
                new.__dict__[name] = value.expand(*(batch_shape + tail))
            elif isinstance(value, Distribution) and value.batch_shape == self._batch_shape:
                new.__dict__[name] = value.expand(batch_shape)     # a base distribution
        new._batch_shape = batch_shape
        return new

    def sample(self, sample_shape=()):
        """Draws without gradient, of shape ``sample_shape + batch_shape + event_shape``."""
        with no_grad():
            return self.rsample(sample_shape)

    def rsample(self, sample_shape=()):
        raise NotImplementedError(f"{type(self).__name__} has no rsample: its draws are not "
                                  "differentiable in its parameters")

    def sample_n(self, n):
        return self.sample((n,))

    def log_prob(self, value):
        raise NotImplementedError

    def cdf(self, value):
        raise NotImplementedError(f"{type(self).__name__} has no cdf")

    def icdf(self, value):
        raise NotImplementedError(f"{type(self).__name__} has no icdf")

    def entropy(self):
        raise NotImplementedError(f"{type(self).__name__} has no entropy")

    def perplexity(self):
        return self.entropy().exp()

    @property
    def mean(self):
        raise NotImplementedError(f"{type(self).__name__} has no mean")

    @property
    def mode(self):
        raise NotImplementedError(f"{type(self).__name__} has no mode")

    @property
    def variance(self):
        raise NotImplementedError(f"{type(self).__name__} has no variance")

    @property
    def stddev(self):
        return self.variance.sqrt()

    def __repr__(self):
        names = [n for n in self.arg_constraints if n in self.__dict__]
        shown = ", ".join(f"{n}: {tuple(self.__dict__[n].shape)}" for n in names)
        return f"{type(self).__name__}({shown})"


class ProbsOrLogits:
    """Mixin of the families given ``probs`` or ``logits`` (one of the two): the other comes
    when first read. ``_binary``: probabilities of one outcome (sigmoid), else over the last
    dimension (softmax)."""

    _binary = True

    def _take_probs_or_logits(self, probs, logits, name):
        if (probs is None) == (logits is None):
            raise ValueError(f"{name}: either `probs` or `logits` must be specified, but not "
                             "both.")
        given = probs if probs is not None else logits
        if not isinstance(given, (Tensor, int, float)) or isinstance(given, bool):
            raise TypeError(f"{name}: probs or logits must be a Tensor or a number, got "
                            f"{type(given).__name__}")
        return given

    @property
    def probs(self):
        if "probs" not in self.__dict__:
            self.__dict__["probs"] = logits_to_probs(self.__dict__["logits"], self._binary)
        return self.__dict__["probs"]

    @property
    def logits(self):
        if "logits" not in self.__dict__:
            self.__dict__["logits"] = probs_to_logits(self.__dict__["probs"], self._binary)
        return self.__dict__["logits"]

    @property
    def param_shape(self):
        return tuple(self.__dict__.get("probs", self.__dict__.get("logits")).shape)


HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)
