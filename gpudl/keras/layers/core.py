"""Keras's core layers: Dense, Activation, Dropout, Flatten, Reshape, Permute, RepeatVector,
Embedding, Lambda and the activation layers (LeakyReLU with Keras's slope 0.3)."""

import math
import numbers

from ... import creation, functions
from ...nn import functional as F
from .. import activations
from ..engine import Layer
from ..serialization import deserialize_function


def check_positive_int(where, **values):
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


class Dense(Layer):
    """``activation(inputs @ kernel + bias)`` over the last axis; kernel (in, units).

    Keras's defaults: glorot_uniform kernel, zero bias, no activation.
    """

    supports_masking = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("Dense", units=units)
        self.units, self.use_bias = int(units), use_bias
        self.activation = activations.get(activation)
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def build(self, input_shape):
        self.add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer)

    def call(self, inputs):
        out = inputs @ self.kernel
        if self.use_bias:
            out = out + self.bias
        return self.activation(out)


class Activation(Layer):
    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def call(self, inputs):
        return self.activation(inputs)


class ReLU(Layer):
    supports_masking = True

    def call(self, inputs):
        return activations.relu(inputs)


class LeakyReLU(Layer):
    """``max(x, negative_slope * x)`` with Keras's default slope 0.3 (PyTorch's is 0.01);
    ``alpha=`` (Keras 2's name) is accepted."""

    supports_masking = True

    def __init__(self, negative_slope=0.3, alpha=None, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = float(alpha if alpha is not None else negative_slope)

    def call(self, inputs):
        return F.leaky_relu(inputs, self.negative_slope)


class Softmax(Layer):
    supports_masking = True

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, inputs):
        return activations.softmax(inputs, self.axis)


class Dropout(Layer):
    """Zero a ``rate`` fraction of the inputs in training (scaled by 1 / (1 - rate)).

    ``noise_shape`` (one entry per input axis, None for the input's size) shares one draw along
    the axes of size 1, as Keras: ``(None, 1, features)`` drops the same features at every step.
    """

    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)

    def call(self, inputs, training=None):
        training = self.training if training is None else training
        if not self.rate or not training:
            return inputs
        if self.noise_shape is None:
            return F.dropout(inputs, self.rate, True)
        if len(self.noise_shape) != inputs.ndim or any(
                n not in (None, 1, size) for n, size in zip(self.noise_shape, inputs.shape)):
            raise ValueError(f"Dropout: noise_shape {self.noise_shape} does not fit inputs of "
                             f"shape {tuple(inputs.shape)} (each entry None, 1 or the size)")
        shape = [size if n is None else n for n, size in zip(self.noise_shape, inputs.shape)]
        ones = creation.ones(*shape, dtype=inputs.dtype, device=inputs.device)
        return inputs * F.dropout(ones, self.rate, True)


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), channels-last order (as Keras)."""

    def call(self, inputs):
        return inputs.reshape(inputs.shape[0], -1)


class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (one dim may be -1)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(target_shape)

    def call(self, inputs):
        size = math.prod(inputs.shape[1:])
        known = math.prod(d for d in self.target_shape if d != -1)
        if (-1 not in self.target_shape and known != size) or (known and size % known):
            raise ValueError(f"{self.name}: cannot reshape samples of shape "
                             f"{tuple(inputs.shape[1:])} ({size} values) to {self.target_shape}")
        return inputs.reshape((inputs.shape[0],) + self.target_shape)


class Permute(Layer):
    """Permute the non-batch dims: ``dims`` are 1-based, as in Keras (``Permute((2, 1))``)."""

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        self.dims = tuple(dims)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(f"Permute: dims must be a permutation of 1..{len(self.dims)}, got "
                             f"{self.dims}")

    def call(self, inputs):
        return inputs.permute(0, *self.dims)


class RepeatVector(Layer):
    """(N, F) -> (N, n, F)."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("RepeatVector", n=n)
        self.n = int(n)

    def call(self, inputs):
        return inputs[:, None, :].expand(inputs.shape[0], self.n, inputs.shape[1])


class Embedding(Layer):
    """Rows of ``embeddings`` (input_dim, output_dim) for integer inputs (floats are cast).

    Keras's default initializer is uniform in [-0.05, 0.05]. With ``mask_zero`` index 0 is padding:
    the mask reaches the recurrent layers of a Sequential or functional model (through layers
    that support masking), which then skip the padded steps.
    """

    accepts_integers = True

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", mask_zero=False,
                 input_length=None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("Embedding", input_dim=input_dim, output_dim=output_dim)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer, self.mask_zero = embeddings_initializer, mask_zero

    def build(self, input_shape):
        self.add_weight("embeddings", (self.input_dim, self.output_dim),
                        self.embeddings_initializer)

    def call(self, inputs):
        return F.embedding(inputs.long(), self.embeddings)

    def compute_mask(self, inputs, mask=None):
        """True where the input is not the padding index 0 (with ``mask_zero``)."""
        return inputs != 0 if self.mask_zero else None


class Rescaling(Layer):
    """``inputs * scale + offset`` (e.g. ``Rescaling(1 / 255)`` for uint8 images)."""

    supports_masking = True

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = float(scale), float(offset)

    def call(self, inputs):
        return inputs * self.scale + self.offset


class Lambda(Layer):
    """Wrap a function of Tensors as a layer."""

    def __init__(self, function, **kwargs):
        super().__init__(**kwargs)
        self.function = function

    def call(self, inputs):
        return self.function(inputs)

    @classmethod
    def from_config(cls, config):
        """A saved function is a registered name (``register_keras_serializable``)."""
        function = config["function"]
        if isinstance(function, str):
            found = deserialize_function(function)
            if found is None:
                raise ValueError(f"Lambda.from_config: unknown function {function!r}; pass it "
                                 "in custom_objects= or register it")
            config = dict(config, function=found)
        return cls(**config)


class ElementwiseOperation(Layer):
    """What ``a + b``, ``a * 2.0``, ``1 - a`` ... on KerasTensors become: ``operation``
    ('add', 'subtract', 'multiply', 'divide') of two inputs, or of one input and ``constant``
    (on the left when ``reflected``); savable, unlike a Lambda."""

    def __init__(self, operation, constant=None, reflected=False, **kwargs):
        super().__init__(**kwargs)
        if operation not in _OPERATIONS:
            raise ValueError(f"ElementwiseOperation: operation must be one of "
                             f"{sorted(_OPERATIONS)}, got {operation!r}")
        self.operation, self.constant, self.reflected = operation, constant, reflected

    def call(self, inputs):
        fn = _OPERATIONS[self.operation]
        if isinstance(inputs, (list, tuple)):
            return fn(inputs[0], inputs[1])
        return fn(self.constant, inputs) if self.reflected else fn(inputs, self.constant)


_OPERATIONS = {"add": lambda a, b: a + b, "subtract": lambda a, b: a - b,
               "multiply": lambda a, b: a * b, "divide": lambda a, b: a / b}


class _Merge(Layer):
    """A layer over a list of same-shaped inputs."""

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(f"{self.name}: expected a list of at least 2 inputs")
        return self.merge(list(inputs))


class Concatenate(_Merge):
    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def merge(self, inputs):
        return functions.cat(inputs, dim=self.axis)


class Add(_Merge):
    def merge(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out


class Subtract(_Merge):
    def merge(self, inputs):
        if len(inputs) != 2:
            raise ValueError(f"{self.name}: Subtract takes exactly 2 inputs")
        return inputs[0] - inputs[1]


class Multiply(_Merge):
    def merge(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = out * x
        return out


class Average(Add):
    def merge(self, inputs):
        return super().merge(inputs) / len(inputs)


class _Fold(_Merge):
    """``pair`` applied left to right over the inputs."""

    pair = None

    def merge(self, inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = type(self).pair(out, x)
        return out


class Maximum(_Fold):
    pair = staticmethod(functions.maximum)


class Minimum(_Fold):
    pair = staticmethod(functions.minimum)


class Dot(_Merge):
    """Keras's batched dot product of two inputs: sums ``x1``'s axis ``axes[0]`` against
    ``x2``'s ``axes[1]`` (an int for both), per sample; with ``normalize`` each input is first
    L2-normalised along it (the cosine). Two (N, d) inputs give (N, 1)."""

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        self.axes = (axes, axes) if isinstance(axes, numbers.Integral) else tuple(axes)
        if len(self.axes) != 2 or not all(isinstance(a, numbers.Integral) for a in self.axes):
            raise ValueError(f"Dot: axes must be an int or two ints, got {axes!r}")
        self.normalize = normalize

    def merge(self, inputs):
        if len(inputs) != 2:
            raise ValueError(f"{self.name}: Dot takes exactly 2 inputs")
        x1, x2 = inputs
        a1, a2 = (a % x.ndim for a, x in zip(self.axes, (x1, x2)))
        if 0 in (a1, a2):
            raise ValueError(f"{self.name}: axes {self.axes} include the batch axis")
        if x1.shape[a1] != x2.shape[a2]:
            raise ValueError(f"{self.name}: axis {a1} of shape {tuple(x1.shape)} and axis {a2} "
                             f"of shape {tuple(x2.shape)} differ")
        if self.normalize:
            # Keras: x / sqrt(max(sum(x ** 2), 1e-12)), i.e. x / max(|x|, 1e-6)
            x1, x2 = F.normalize(x1, dim=a1, eps=1e-6), F.normalize(x2, dim=a2, eps=1e-6)
        rest1 = [x1.shape[d] for d in range(1, x1.ndim) if d != a1]
        rest2 = [x2.shape[d] for d in range(1, x2.ndim) if d != a2]
        left = x1.moveaxis(a1, -1).reshape(x1.shape[0], -1, x1.shape[a1])     # (N, p, k)
        right = x2.moveaxis(a2, 1).reshape(x2.shape[0], x2.shape[a2], -1)     # (N, k, q)
        out = (left @ right).reshape([x1.shape[0]] + rest1 + rest2)
        return out.reshape(x1.shape[0], 1) if out.ndim == 1 else out


class Identity(Layer):
    """Passes its input on unchanged."""

    supports_masking = True

    def call(self, inputs):
        return inputs


class Masking(Layer):
    """Marks the time steps whose features all equal ``mask_value`` as padding: they become
    zeros, and the mask (N, T) reaches the recurrent layers that follow (which skip them)."""

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = mask_value

    def call(self, inputs):
        return inputs * self.compute_mask(inputs).unsqueeze(-1).astype(inputs.dtype)

    def compute_mask(self, inputs, mask=None):
        return (inputs != self.mask_value).any(dim=-1)


def concatenate(inputs, axis=-1, **kwargs):
    return Concatenate(axis=axis, **kwargs)(inputs)


def add(inputs, **kwargs):
    return Add(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    return Multiply(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    return Subtract(**kwargs)(inputs)


def average(inputs, **kwargs):
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    return Minimum(**kwargs)(inputs)


def dot(inputs, axes=-1, normalize=False, **kwargs):
    return Dot(axes=axes, normalize=normalize, **kwargs)(inputs)
