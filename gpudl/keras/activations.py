"""Keras's activations by name ('relu', 'softmax', ...): functions of a Tensor (gpudl ops)."""

from ..ops import activation as A
from .serialization import get_registered_object


def linear(x):
    return x


def relu(x):
    return A.relu(x)


def sigmoid(x):
    return A.sigmoid(x)


def tanh(x):
    return A.tanh(x)


def softmax(x, axis=-1):
    """Softmax over the last axis (Keras's default; classes last)."""
    return A.softmax(x, dim=axis)


def log_softmax(x, axis=-1):
    return A.log_softmax(x, dim=axis)


def elu(x, alpha=1.0):
    return A.elu(x, alpha)


def selu(x):
    return 1.0507009873554805 * A.elu(x, 1.6732632423543772)


def gelu(x, approximate=False):
    return A.gelu(x, "tanh" if approximate else "none")


def silu(x):
    return A.silu(x)


swish = silu


def softplus(x):
    return A.softplus(x)


def leaky_relu(x, negative_slope=0.2):
    """Keras's function default slope is 0.2; the LeakyReLU layer's is 0.3."""
    return A.leaky_relu(x, negative_slope)


def relu6(x):
    return A.relu6(x)


def hard_sigmoid(x):
    """Keras 3's hard sigmoid: relu6(x + 3) / 6."""
    return A.relu6(x + 3.0) / 6.0


def exponential(x):
    return x.exp()


ALL = {f.__name__: f for f in (linear, relu, sigmoid, tanh, softmax, log_softmax, elu, selu,
                               gelu, silu, softplus, leaky_relu, relu6, hard_sigmoid,
                               exponential)}
ALL["swish"] = silu


def get(identifier):
    """An activation function from a name, None (linear) or a callable."""
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        custom = get_registered_object(identifier)
        if identifier not in ALL and custom is not None:
            return custom
        if identifier not in ALL:
            raise ValueError(f"unknown activation {identifier!r}; expected one of {sorted(ALL)}")
        return ALL[identifier]
    if callable(identifier):
        return identifier
    raise TypeError(f"an activation must be a name or a callable, got "
                    f"{type(identifier).__name__}")
