"""Keras's BatchNormalization and LayerNormalization (Keras's momentum and epsilon), and the
Normalization preprocessing layer."""

import numbers

import numpy as np

from ...autograd import no_grad
from ...creation import tensor
from ...tensor import Tensor
from ...nn import functional as F
from ..engine import Layer


class BatchNormalization(Layer):
    """Normalise over every axis but ``axis`` (the channels, last by default).

    Keras's semantics, not PyTorch's: ``momentum=0.99`` is the weight of the *old* moving value
    (``moving = moving * momentum + batch * (1 - momentum)``, PyTorch's 0.01), ``epsilon=1e-3``,
    and the moving variance follows the batch's biased variance (Keras 3). A layer with
    ``trainable = False`` runs in inference mode, as in Keras. Weights: gamma, beta (trainable),
    moving_mean, moving_variance.
    """

    supports_masking = True

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1], got {momentum!r}")
        self.axis, self.momentum, self.epsilon = axis, float(momentum), float(epsilon)
        self.center, self.scale = center, scale
        self.initializers = (gamma_initializer, beta_initializer, moving_mean_initializer,
                             moving_variance_initializer)

    def build(self, input_shape):
        size = input_shape[self.axis]
        gamma, beta, mean, variance = self.initializers
        if self.scale:
            self.add_weight("gamma", (size,), gamma)
        if self.center:
            self.add_weight("beta", (size,), beta)
        self.add_weight("moving_mean", (size,), mean, trainable=False)
        self.add_weight("moving_variance", (size,), variance, trainable=False)

    def call(self, inputs, training=None):
        training = (self.training and self.trainable) if training is None else training
        axis = self.axis % inputs.ndim
        reduce = tuple(i for i in range(inputs.ndim) if i != axis)
        shape = [1] * inputs.ndim
        shape[axis] = inputs.shape[axis]
        if training:
            mean = inputs.mean(dim=reduce)
            variance = inputs.var(dim=reduce, correction=0)
            with no_grad():
                for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                    moving.mul_(self.momentum).add_(batch.detach() * (1 - self.momentum))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        out = (inputs - mean.reshape(shape)) / (variance.reshape(shape) + self.epsilon).sqrt()
        if self.scale:
            out = out * self.gamma.reshape(shape)
        if self.center:
            out = out + self.beta.reshape(shape)
        return out


class LayerNormalization(Layer):
    """Normalise each sample over the last axis; Keras's ``epsilon=1e-3``; gamma, beta."""

    supports_masking = True

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, **kwargs):
        super().__init__(**kwargs)
        if axis not in (-1,):
            raise NotImplementedError(f"LayerNormalization: only axis=-1 is supported, got "
                                      f"{axis!r}")
        self.epsilon, self.center, self.scale = float(epsilon), center, scale

    def build(self, input_shape):
        if self.scale:
            self.add_weight("gamma", (input_shape[-1],), "ones")
        if self.center:
            self.add_weight("beta", (input_shape[-1],), "zeros")

    def call(self, inputs):
        return F.layer_norm(inputs, (inputs.shape[-1],), self.gamma if self.scale else None,
                            self.beta if self.center else None, eps=self.epsilon)


class Normalization(Layer):
    """Keras's Normalization: ``(x - mean) / max(sqrt(variance), 1e-7)`` for each position of the
    kept ``axis`` (default: the last; ``None``: one mean and variance for everything), or its
    inverse with ``invert=True``. The statistics are given (``mean=``, ``variance=``, broadcast
    over the kept axes) or computed by ``adapt(data)`` over every other axis (the population
    variance); adapted ones are non-trainable weights: mean, variance, count (Keras's layout;
    count stays 0, as Keras leaves it)."""

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        if (mean is None) != (variance is None):
            raise ValueError("Normalization: give both mean and variance, or neither (and call "
                             "adapt(data))")
        self.axis = () if axis is None else (axis,) if isinstance(axis, int) else tuple(axis)
        self.invert = invert
        self.given = None if mean is None else tuple(
            np.asarray(v, np.float32) for v in (mean, variance))

    def _kept(self, ndim):
        if any(not -ndim <= a < ndim for a in self.axis):
            raise ValueError(f"Normalization: axis {self.axis} out of range for inputs of "
                             f"{ndim} dimensions")
        return tuple(sorted(a % ndim for a in self.axis))

    def build(self, input_shape):
        shape = tuple(input_shape[a] for a in self._kept(len(input_shape)))
        if self.given is None:
            self.add_weight("mean", shape, "zeros", trainable=False)
            self.add_weight("variance", shape, "ones", trainable=False)
            self.add_weight("count", (), "zeros", trainable=False)

    def adapt(self, data):
        """Set mean and variance from ``data``: an array or Tensor, or an iterable of batches."""
        if self.given is not None:
            raise ValueError("Normalization.adapt: the layer was given mean and variance")
        batches = [data] if isinstance(data, (np.ndarray, Tensor)) else list(data)
        array = np.concatenate([np.asarray(b.numpy() if isinstance(b, Tensor) else b,
                                           np.float32) for b in batches])      # as Keras
        kept = self._kept(array.ndim)
        reduce = tuple(d for d in range(array.ndim) if d not in kept)
        if not self.built:
            self.build((None,) + array.shape[1:])
            self.built = True
        with no_grad():
            self.mean.copy_(tensor(array.mean(axis=reduce), dtype=self.mean.dtype))
            self.variance.copy_(tensor(array.var(axis=reduce), dtype=self.variance.dtype))

    def call(self, inputs):
        kept = self._kept(inputs.ndim)
        shape = [inputs.shape[d] if d in kept else 1 for d in range(inputs.ndim)]
        if self.given is None:
            mean, variance = self.mean.reshape(shape), self.variance.reshape(shape)
        else:
            mean, variance = (tensor(np.broadcast_to(v, [s for s, d in zip(
                shape, range(inputs.ndim)) if d in kept]).reshape(shape), dtype=inputs.dtype,
                device=inputs.device) for v in self.given)
        scale = variance.sqrt().clip(1e-7, None)
        return mean + inputs * scale if self.invert else (inputs - mean) / scale


class GroupNormalization(Layer):
    """Normalise each sample over groups of channels (``axis``, the last by default): ``groups``
    groups, each over its channels and every spatial position (``groups=-1``: one group per
    channel, as Keras); Keras's ``epsilon=1e-3``; gamma, beta per channel."""

    supports_masking = True

    def __init__(self, groups=32, axis=-1, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or \
                (groups < 1 and groups != -1):
            raise ValueError(f"GroupNormalization: groups must be a positive int or -1, got "
                             f"{groups!r}")
        self.groups, self.axis, self.epsilon = int(groups), axis, float(epsilon)
        self.center, self.scale = center, scale
        self.initializers = gamma_initializer, beta_initializer

    def build(self, input_shape):
        channels = input_shape[self.axis]
        if self.groups == -1:                 # Keras: one group per channel
            self.groups = channels
        if channels % self.groups:
            raise ValueError(f"GroupNormalization: {channels} channels (axis {self.axis}) are "
                             f"not a multiple of groups={self.groups}")
        if self.scale:
            self.add_weight("gamma", (channels,), self.initializers[0])
        if self.center:
            self.add_weight("beta", (channels,), self.initializers[1])

    def call(self, inputs):
        x = inputs.moveaxis(self.axis % inputs.ndim, 1)             # channels first
        if x[0].numel() == self.groups:
            # one value per group (torch's group_norm refuses it): Keras's (x - mean) is 0
            out = x * 0.0
            shape = (1, -1) + (1,) * (x.ndim - 2)
            if self.scale:
                out = out * self.gamma.reshape(shape)
            if self.center:
                out = out + self.beta.reshape(shape)
            return out.moveaxis(1, self.axis % inputs.ndim)
        out = F.group_norm(x, self.groups, self.gamma if self.scale else None,
                           self.beta if self.center else None, eps=self.epsilon)
        return out.moveaxis(1, self.axis % inputs.ndim)


class UnitNormalization(Layer):
    """Each sample divided by its L2 norm over ``axis``: ``x / sqrt(max(sum(x ** 2),
    1e-12))``."""

    supports_masking = True

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis

    def call(self, inputs):
        squares = (inputs * inputs).sum(dim=self.axis, keepdim=True)
        return inputs * squares.clip(1e-12, None).rsqrt()


class RMSNormalization(Layer):
    """``x / sqrt(mean(x ** 2 over axis) + epsilon) * scale`` (Keras's ``epsilon=1e-6``; a
    learned ``scale`` over ``axis``, ones)."""

    def __init__(self, axis=-1, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.axis = sorted(axis) if isinstance(axis, (list, tuple)) else [axis]
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.add_weight("scale", tuple(input_shape[a] for a in self.axis), "ones")

    def call(self, inputs):
        axes = tuple(a % inputs.ndim for a in self.axis)
        shape = [inputs.shape[d] if d in axes else 1 for d in range(inputs.ndim)]
        rms = ((inputs * inputs).mean(dim=axes, keepdim=True) + self.epsilon).rsqrt()
        return inputs * rms * self.scale.reshape(shape)
