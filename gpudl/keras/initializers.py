"""Keras's weight initializers by name or object, with Keras's fan rule: the last dim is fan_out,
the one before it fan_in, and every earlier dim (a kernel's spatial size) multiplies both.

Each is a callable that fills a gpudl Tensor in place (gpudl's random generator, so
``gd.manual_seed`` makes it reproducible).
"""

import math

from ..autograd import no_grad
from ..nn import init as I
from .serialization import Configurable


def compute_fans(shape):
    """(fan_in, fan_out) as Keras computes them: Dense (in, out), Conv2D (kh, kw, in, out)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer(Configurable):
    def __call__(self, tensor):
        raise NotImplementedError


class Zeros(Initializer):
    def __call__(self, tensor):
        return I.zeros_(tensor)


class Ones(Initializer):
    def __call__(self, tensor):
        return I.ones_(tensor)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = float(value)

    def __call__(self, tensor):
        return I.constant_(tensor, self.value)


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval = minval, maxval

    def __call__(self, tensor):
        return I.uniform_(tensor, self.minval, self.maxval)


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev = mean, stddev

    def __call__(self, tensor):
        return I.normal_(tensor, self.mean, self.stddev)


class TruncatedNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev = mean, stddev

    def __call__(self, tensor):
        return I.trunc_normal_(tensor, self.mean, self.stddev, self.mean - 2 * self.stddev,
                               self.mean + 2 * self.stddev)


class VarianceScaling(Initializer):
    """Keras's VarianceScaling: variance ``scale / n`` with n = fan_in, fan_out or their mean;
    'truncated_normal' (std divided by 0.8796..., the truncated normal's shrinkage), 'untruncated_normal'
    or 'uniform' (limit sqrt(3 * scale / n))."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling: mode must be fan_in, fan_out or fan_avg, got "
                             f"{mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "normal", "uniform"):
            raise ValueError(f"VarianceScaling: unknown distribution {distribution!r}")
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def __call__(self, tensor):
        fan_in, fan_out = compute_fans(tuple(tensor.shape))
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return I.uniform_(tensor, -limit, limit)
        if self.distribution in ("untruncated_normal", "normal"):
            return I.normal_(tensor, 0.0, math.sqrt(variance))
        std = math.sqrt(variance) / 0.87962566103423978
        return I.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std)


class GlorotUniform(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "uniform")


class GlorotNormal(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "truncated_normal")


class HeUniform(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "uniform")


class HeNormal(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "truncated_normal")


class LecunUniform(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_in", "uniform")


class LecunNormal(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_in", "truncated_normal")


class Orthogonal(Initializer):
    def __init__(self, gain=1.0, seed=None):
        self.gain = gain

    def __call__(self, tensor):
        # Keras flattens all but the last dim; torch's orthogonal_ all but the first
        flat = tensor.reshape(-1, tensor.shape[-1]) if tensor.ndim > 2 else tensor
        I.orthogonal_(flat, self.gain)
        return tensor


class Identity(Initializer):
    """``gain`` times the identity matrix (2-D weights only; non-square: ones on the main
    diagonal)."""

    def __init__(self, gain=1.0):
        self.gain = float(gain)

    def __call__(self, tensor):
        if tensor.ndim != 2:
            raise ValueError(f"Identity initializer: the weight must be 2-D, got shape "
                             f"{tuple(tensor.shape)}")
        I.eye_(tensor)
        with no_grad():
            tensor.mul_(self.gain)
        return tensor


ALL = {"zeros": Zeros, "ones": Ones, "constant": Constant, "random_uniform": RandomUniform,
       "random_normal": RandomNormal, "truncated_normal": TruncatedNormal,
       "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
       "he_uniform": HeUniform, "he_normal": HeNormal, "lecun_uniform": LecunUniform,
       "lecun_normal": LecunNormal, "orthogonal": Orthogonal,
       "identity": Identity, "variance_scaling": VarianceScaling}

# Keras 3's lowercase names for the same classes (``initializers.glorot_uniform(seed=0)``)
zeros, ones, constant, identity, orthogonal = Zeros, Ones, Constant, Identity, Orthogonal
random_uniform, random_normal, truncated_normal = RandomUniform, RandomNormal, TruncatedNormal
glorot_uniform, glorot_normal, he_uniform, he_normal = GlorotUniform, GlorotNormal, HeUniform, \
    HeNormal
lecun_uniform, lecun_normal, variance_scaling = LecunUniform, LecunNormal, VarianceScaling
IdentityInitializer = Identity


def get(identifier):
    """An initializer from a Keras name ('glorot_uniform', 'he_normal', ...) or an object."""
    if isinstance(identifier, str):
        key = identifier.lower()
        key = {"uniform": "random_uniform", "normal": "random_normal",
               "xavier_uniform": "glorot_uniform"}.get(key, key)
        if key not in ALL:
            raise ValueError(f"unknown initializer {identifier!r}; expected one of {sorted(ALL)}")
        return ALL[key]()
    if callable(identifier):
        return identifier
    raise TypeError(f"an initializer must be a name or a callable, got "
                    f"{type(identifier).__name__}")
