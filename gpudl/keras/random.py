"""``keras.random`` on gpudl's generators: Keras's argument names and defaults.

``seed`` is None (gpudl's global generator, reseeded by ``keras.utils.set_random_seed``), an int
(a fresh generator from that seed: the same int gives the same numbers), or a ``SeedGenerator``
(a generator that advances at each draw). The numbers are gpudl's, not Keras's: the same seed
gives the same numbers in gpudl, not the ones Keras's backends draw.
"""

import numbers

from .. import backend, creation
from ..random import Generator, manual_seed_value
from . import backend as keras_backend
from . import ops


class SeedGenerator:
    """A generator of random numbers that advances with every draw it serves (Keras's
    ``SeedGenerator(seed)``); ``seed`` None draws a seed from gpudl's global generator."""

    def __init__(self, seed=None, name=None, **kwargs):
        if seed is None:
            seed = int(creation.randint(0, 2**31 - 1, (1,)).item())
        self.seed = manual_seed_value(seed, "SeedGenerator: seed")
        self.generator = _seeded(self.seed)
        self.name = name


def _generator(seed, where):
    if seed is None:
        return None
    if isinstance(seed, SeedGenerator):
        return seed.generator
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{where}: seed must be None, an int or a SeedGenerator, got "
                        f"{type(seed).__name__}")
    return _seeded(int(seed))


def _seeded(seed):
    return Generator(backend.default_device()).manual_seed(seed)


def _shape(shape):
    return (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)


def _float(dtype):
    return ops.standardize(dtype or keras_backend.floatx())


def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    """Draws from N(mean, stddev**2) of ``shape``."""
    values = creation.randn(*_shape(shape), generator=_generator(seed, "normal"),
                            dtype=_float(dtype))
    return values * stddev + mean


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    """Draws from N(mean, stddev**2) kept within two standard deviations (others redrawn)."""
    generator = _generator(seed, "truncated_normal")
    values = creation.randn(*_shape(shape), generator=generator, dtype=_float(dtype))
    outside = values.abs() > 2
    while bool(outside.any().item()):
        fresh = creation.randn(*_shape(shape), generator=generator, dtype=_float(dtype))
        values = ops.where(outside, fresh, values)
        outside = values.abs() > 2
    return values * stddev + mean


def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    """Draws from U[minval, maxval) of ``shape``."""
    values = creation.rand(*_shape(shape), generator=_generator(seed, "uniform"),
                           dtype=_float(dtype))
    return values * (maxval - minval) + minval


def randint(shape, minval, maxval, dtype="int32", seed=None):
    """Integers in ``[minval, maxval)`` of ``shape``."""
    values = creation.randint(minval, maxval, _shape(shape),
                              generator=_generator(seed, "randint"))
    return values.astype(ops.standardize(dtype))


def dropout(inputs, rate, noise_shape=None, seed=None):
    """Zero a ``rate`` fraction of ``inputs`` and scale the rest by 1 / (1 - rate);
    ``noise_shape`` (None entries take the input's size) shares draws along axes of size 1."""
    if not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
        raise ValueError(f"dropout: rate must be a number in [0, 1), got {rate!r}")
    inputs = ops.convert_to_tensor(inputs)
    shape = tuple(inputs.shape) if noise_shape is None else tuple(
        size if n is None else n for n, size in zip(noise_shape, inputs.shape))
    keep = uniform(shape, dtype=inputs.dtype, seed=seed) >= rate
    return inputs * keep.astype(inputs.dtype) / (1 - rate)


def shuffle(x, axis=0, seed=None):
    """``x`` with its entries along ``axis`` in a random order."""
    x = ops.convert_to_tensor(x)
    order = creation.randperm(x.shape[axis], generator=_generator(seed, "shuffle"))
    return x.index_select(axis, order)


def categorical(logits, num_samples, dtype="int32", seed=None):
    """``num_samples`` class indices per row of ``logits`` (batch, classes), drawn from
    softmax(logits), with replacement."""
    logits = ops.convert_to_tensor(logits)
    if logits.ndim != 2:
        raise ValueError(f"categorical: logits must be (batch, classes), got shape "
                         f"{tuple(logits.shape)}")
    probabilities = ops.softmax(logits.detach(), axis=-1)
    draws = probabilities.multinomial(num_samples, replacement=True,
                                      generator=_generator(seed, "categorical"))
    return draws.astype(ops.standardize(dtype))



__all__ = ["SeedGenerator", "normal", "truncated_normal", "uniform", "randint", "dropout",
           "shuffle", "categorical"]
