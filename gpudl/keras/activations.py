"""Keras's activations by name ('relu', 'softmax', ...): functions of a Tensor (gpudl ops)."""

from ..ops import activation as A
from ..tensor_math import where
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


def celu(x, alpha=1.0):
    """``max(x, 0) + min(0, alpha * (exp(x / alpha) - 1))``."""
    return A.celu(x, alpha)


def glu(x, axis=-1):
    """The gated linear unit: the first half of ``axis`` times the sigmoid of the second."""
    return A.glu(x, axis)


def hard_silu(x):
    """``x * relu6(x + 3) / 6``."""
    return x * hard_sigmoid(x)


hard_swish = hard_silu


# the same functions as gpudl's (torch's names): clip(x, -1, 1), log(sigmoid(x)),
# x * tanh(softplus(x)), x / (1 + |x|), x - tanh(x)
hard_tanh, log_sigmoid, mish, softsign, tanh_shrink = (A.hardtanh, A.logsigmoid, A.mish,
                                                       A.softsign, A.tanhshrink)


def threshold(x, threshold, default_value):
    """``x`` where ``x > threshold``, else ``default_value``."""
    return A.threshold(x, threshold, default_value)


def soft_shrink(x, threshold=0.5):
    """``x - threshold`` above it, ``x + threshold`` below ``-threshold``, else 0."""
    return A.softshrink(x, threshold)


def hard_shrink(x, threshold=0.5):
    """``x`` where ``|x| > threshold``, else 0."""
    return A.hardshrink(x, threshold)


def squareplus(x, b=4):
    """``(x + sqrt(x ** 2 + b)) / 2``."""
    return (x + (x * x + b).sqrt()) / 2


def sparse_plus(x):
    """0 for ``x <= -1``, ``x`` for ``x >= 1``, ``(x + 1) ** 2 / 4`` between."""
    middle = (x + 1) * (x + 1) / 4
    return where(x >= 1, x, where(x > -1, middle, x * 0))


ALL = {f.__name__: f for f in (linear, relu, sigmoid, tanh, softmax, log_softmax, elu, selu,
                               gelu, silu, softplus, leaky_relu, relu6, hard_sigmoid,
                               exponential, celu, glu, hard_silu, soft_shrink, hard_shrink,
                               squareplus, sparse_plus, threshold)}
ALL.update(swish=silu, hard_swish=hard_silu, hard_tanh=hard_tanh, log_sigmoid=log_sigmoid,
           mish=mish, softsign=softsign, tanh_shrink=tanh_shrink)


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
