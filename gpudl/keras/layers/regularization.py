"""Keras's noise and regularization layers: AlphaDropout, GaussianNoise, GaussianDropout (active
in training only) and ActivityRegularization."""

import math
import numbers

from .. import random as keras_random
from ..engine import Layer

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _check_rate(where, rate):
    if not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
        raise ValueError(f"{where}: rate must be a number in [0, 1), got {rate!r}")
    return float(rate)


class _TrainingNoise(Layer):
    """A layer that changes its inputs in training only; ``seed`` makes the draws repeat."""

    supports_masking = True

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras_random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        training = self.training if training is None else training
        return self.noisy(inputs) if training else inputs


class AlphaDropout(_TrainingNoise):
    """Dropout that keeps SELU's mean and variance: dropped values become SELU's negative
    saturation, then ``a * x + b`` restores the moments (Keras's formula)."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = _check_rate("AlphaDropout", rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)

    def noisy(self, inputs):
        if not self.rate:
            return inputs
        shape = tuple(inputs.shape) if self.noise_shape is None else tuple(
            size if n is None else n for n, size in zip(self.noise_shape, inputs.shape))
        kept = (keras_random.uniform(shape, dtype=inputs.dtype, seed=self.seed_generator) >=
                self.rate).astype(inputs.dtype)
        alpha_p = -SELU_ALPHA * SELU_SCALE
        a = ((1 - self.rate) * (1 + self.rate * alpha_p ** 2)) ** -0.5
        b = -a * alpha_p * self.rate
        return a * (inputs * kept + alpha_p * (1 - kept)) + b


class GaussianNoise(_TrainingNoise):
    """Adds N(0, stddev**2) noise in training."""

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not isinstance(stddev, numbers.Real) or stddev < 0:
            raise ValueError(f"GaussianNoise: stddev must be a number >= 0, got {stddev!r}")
        self.stddev = float(stddev)

    def noisy(self, inputs):
        return inputs + keras_random.normal(tuple(inputs.shape), stddev=self.stddev,
                                            dtype=inputs.dtype, seed=self.seed_generator)


class GaussianDropout(_TrainingNoise):
    """Multiplies by N(1, rate / (1 - rate)) noise in training."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = _check_rate("GaussianDropout", rate)

    def noisy(self, inputs):
        if not self.rate:
            return inputs
        stddev = math.sqrt(self.rate / (1 - self.rate))
        return inputs * keras_random.normal(tuple(inputs.shape), mean=1.0, stddev=stddev,
                                            dtype=inputs.dtype, seed=self.seed_generator)


class ActivityRegularization(Layer):
    """Passes its input on and adds ``(l1 * sum(|x|) + l2 * sum(x ** 2)) / batch size`` to the
    training loss (Keras's activity regularizer)."""

    supports_masking = True

    def __init__(self, l1=0.0, l2=0.0, **kwargs):
        from ..regularizers import L1L2
        super().__init__(activity_regularizer=L1L2(l1=l1, l2=l2), **kwargs)
        self.l1, self.l2 = float(l1), float(l2)

    def call(self, inputs):
        return inputs
