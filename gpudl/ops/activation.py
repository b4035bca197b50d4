"""Activation functions (torch.nn.functional's signatures) as autograd Functions on raw arrays.

relu, sigmoid and tanh reuse ops.elementwise; the others are defined here. ``inplace=True``
writes the result into the input, recorded as torch records it (gpudl.inplace).
"""

import numbers
import warnings

from .. import creation
from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..dtypes import LOW_PRECISION, is_floating
from .. import inplace as _inplace
from ..autograd import ArrayFunction
from ..kernels import activation as K
from ..tensor import Tensor
from ..tensor_math import where
from . import elementwise as E
from . import reduce as R
from ._util import in_float32, masked_gradient, normalize_axis, xp_of


def _tensor_input(op, input):
    """``input`` when it is a Tensor of any dtype (one that ``dtype=`` then casts)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    return input


def _floating(op, input):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if not is_floating(input.dtype):
        raise TypeError(f"{op}: input must be a floating point tensor, got {input.dtype}")
    return input


class LeakyRelu(ArrayFunction):
    @staticmethod
    def forward(ctx, x, slope):
        positive = x > 0
        ctx.save_for_backward(positive)
        ctx.slope = slope
        where = xp_of(x).where
        return in_float32(lambda x: where(positive, x, x * slope), x)

    @staticmethod
    def backward(ctx, g):
        (positive,) = ctx.saved_tensors
        where, slope = xp_of(g).where, ctx.slope
        return in_float32(lambda g: where(positive, g, g * slope), g), None


class Elu(ArrayFunction):
    @staticmethod
    def forward(ctx, x, alpha):
        xp = xp_of(x)
        y = in_float32(lambda x: xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0))), x)
        ctx.save_for_backward(x, y)
        ctx.alpha = alpha
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        where, alpha = xp_of(g).where, ctx.alpha
        return in_float32(lambda g, y: where(x > 0, g, g * (y + alpha)), g, y), None


class Silu(ArrayFunction):
    """x sigmoid(x). float16/bfloat16 run in float32 both ways, rounded once (in_float32), as
    torch's kernels: rounding sigmoid(x) and then the product and the backward's four steps each
    left results up to ulps off."""

    @staticmethod
    def forward(ctx, x):
        if x.dtype in LOW_PRECISION:
            ctx.save_for_backward(x, None)
            return in_float32(lambda x: x * E.sigmoid_array(x), x)
        s = E.sigmoid_array(x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        if s is None:
            return in_float32(lambda g, x: _silu_grad(g, x, E.sigmoid_array(x)), g, x)
        return _silu_grad(g, x, s)


def _silu_grad(g, x, s):
    return g * s * (1 + x * (1 - s))


class Softplus(ArrayFunction):
    """log(1 + exp(beta x)) / beta, linear above ``threshold`` (as torch)."""

    @staticmethod
    def forward(ctx, x, beta, threshold):
        xp = xp_of(x)
        z = x * beta
        ctx.save_for_backward(z)
        ctx.threshold, ctx.beta = threshold, beta
        return xp.where(z > threshold, x, xp.logaddexp(0, z) / beta).astype(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        gx = xp_of(g).where(z > ctx.threshold, g, g * E.sigmoid_array(z))
        return gx.astype(g.dtype, copy=False), None, None


class Hardtanh(ArrayFunction):
    @staticmethod
    def forward(ctx, x, low, high):
        ctx.save_for_backward((x > low) & (x < high))
        return xp_of(x).clip(x, low, high).astype(x.dtype, copy=False)   # bfloat16 stays

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return masked_gradient(inside, g), None, None


class Gelu(ArrayFunction):
    @staticmethod
    def forward(ctx, x, approximate):
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        return K.gelu_forward(x, approximate)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return K.gelu_backward(x, g, ctx.approximate), None


def _in_place(op, input, compute):
    """``op(input, inplace=True)``: ``compute(input)`` written back into ``input``."""
    return _inplace.apply_flag(_floating(op, input), op + "_", compute)


def relu(input, inplace=False):
    """max(input, 0)."""
    if inplace:
        return _in_place("relu", input, relu)
    return E.Relu.apply(_floating("relu", input))


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """input where positive, else negative_slope * input."""
    if inplace:
        return _in_place("leaky_relu", input, lambda t: leaky_relu(t, negative_slope))
    return LeakyRelu.apply(_floating("leaky_relu", input), float(negative_slope))


def elu(input, alpha=1.0, inplace=False):
    """input where positive, else alpha * (exp(input) - 1)."""
    if inplace:
        return _in_place("elu", input, lambda t: elu(t, alpha))
    return Elu.apply(_floating("elu", input), float(alpha))


def silu(input, inplace=False):
    """input * sigmoid(input) (also called swish)."""
    if inplace:
        return _in_place("silu", input, silu)
    return Silu.apply(_floating("silu", input))


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta * input)) / beta; the identity where beta * input > threshold."""
    if _autocast.active:
        (input,) = cast_inputs("softplus", input)
    return Softplus.apply(_floating("softplus", input), float(beta), float(threshold))


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """clamp(input, min_val, max_val); no gradient outside (min_val, max_val)."""
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val {min_val} must not exceed max_val {max_val}")
    if inplace:
        return _in_place("hardtanh", input, lambda t: hardtanh(t, min_val, max_val))
    return Hardtanh.apply(_floating("hardtanh", input), float(min_val), float(max_val))


def relu6(input, inplace=False):
    """min(max(input, 0), 6)."""
    return hardtanh(input, 0.0, 6.0, inplace)


def gelu(input, approximate="none"):
    """x * Phi(x), Phi the standard normal CDF; ``approximate='tanh'`` uses the tanh formula."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(_floating("gelu", input), approximate)


def sigmoid(input):
    """1 / (1 + exp(-input)), computed without overflow."""
    return E.Sigmoid.apply(_floating("sigmoid", input))


def tanh(input):
    """Hyperbolic tangent."""
    return E.Tanh.apply(_floating("tanh", input))


def _softmax_dim(op, input, dim):
    if dim is None:
        dim = 0 if input.ndim in (0, 1, 3) else 1
        warnings.warn(f"{op}: implicit dimension choice is deprecated; pass dim= (using "
                      f"dim={dim})", stacklevel=3)
    return normalize_axis(dim, input.ndim, op)


def softmax(input, dim=None, dtype=None):
    """exp(input) / sum(exp(input)) along ``dim``; ``dtype`` casts the input first."""
    if _autocast.active:
        (input,) = cast_inputs("softmax", input)
    if dtype is not None:
        input = _tensor_input("softmax", input).astype(dtype)
    input = _floating("softmax", input)
    return R.Softmax.apply(input, _softmax_dim("softmax", input, dim))


def log_softmax(input, dim=None, dtype=None):
    """log(softmax(input, dim)), computed stably."""
    if _autocast.active:
        (input,) = cast_inputs("log_softmax", input)
    if dtype is not None:
        input = _tensor_input("log_softmax", input).astype(dtype)
    input = _floating("log_softmax", input)
    return R.LogSoftmax.apply(input, _softmax_dim("log_softmax", input, dim))


def mish(input, inplace=False):
    """input * tanh(softplus(input))."""
    if inplace:
        return _in_place("mish", input, mish)
    return input * softplus(_floating("mish", input)).tanh()


def glu(input, dim=-1):
    """a * sigmoid(b), with a and b the two halves of ``input`` along ``dim`` (even size)."""
    _floating("glu", input)
    if input.ndim == 0:
        raise ValueError("glu: input must have at least one dimension")
    axis = normalize_axis(dim, input.ndim, "glu")
    if input.shape[axis] % 2:
        raise ValueError(f"glu: halving dimension {dim} needs an even size, got "
                         f"{input.shape[axis]} (input shape {input.shape})")
    a, b = input.chunk(2, axis)
    return a * b.sigmoid()


# ------------------------------------------------------------------ composite activations
# Built from the ops above and Tensor ops, so autograd and both devices come for free.

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _number(op, name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    return float(value)


def prelu(input, weight):
    """input where positive, else weight * input; ``weight`` holds one slope, or one per
    channel (dim 1 of the input; a 1-D input is one channel)."""
    if _autocast.active:
        input, weight = cast_inputs("prelu", input, weight)
    _floating("prelu", input)
    if not isinstance(weight, Tensor):
        raise TypeError(f"prelu: weight must be a Tensor, got {type(weight).__name__}")
    if weight.ndim > 1:
        raise ValueError(f"prelu: weight must be 0-D or 1-D, got shape {weight.shape}")
    channels = input.shape[1] if input.ndim >= 2 else 1
    if weight.numel() not in (1, channels):
        raise ValueError(f"prelu: weight must hold 1 or {channels} (the input's channels) "
                         f"slopes, got {weight.numel()} (input shape {input.shape})")
    # one slope broadcasts as a 0-D tensor (a 0-D input stays 0-D); C slopes along dim 1
    weight = weight.reshape(() if weight.numel() == 1 else
                            (channels,) + (1,) * (input.ndim - 2))
    return where(input > 0, input, weight * input)


def selu(input, inplace=False):
    """scale * elu(input, alpha) with the self-normalising constants of Klambauer et al."""
    if inplace:
        return _in_place("selu", input, selu)
    return elu(input, _SELU_ALPHA) * _SELU_SCALE


def celu(input, alpha=1.0, inplace=False):
    """input where positive, else alpha * (exp(input / alpha) - 1)."""
    alpha = _number("celu", "alpha", alpha)
    if alpha == 0:
        raise ValueError("celu: alpha must not be 0")
    if inplace:
        return _in_place("celu", input, lambda t: celu(t, alpha))
    x = _floating("celu", input)
    if alpha > 0:
        return elu(x / alpha) * alpha
    # a negative alpha flips x / alpha's sign: the branch goes by x's own sign, as torch's;
    # clamped so that the branch not taken cannot overflow (its gradient would be 0 * inf)
    return where(x > 0, x, (x.clamp(max=0) / alpha).expm1() * alpha)


def hardsigmoid(input, inplace=False):
    """relu6(input + 3) / 6: 0 below -3, 1 above 3, linear between."""
    if inplace:
        return _in_place("hardsigmoid", input, hardsigmoid)
    return relu6(_floating("hardsigmoid", input) + 3) / 6


def hardswish(input, inplace=False):
    """input * relu6(input + 3) / 6."""
    if inplace:
        return _in_place("hardswish", input, hardswish)
    return input * hardsigmoid(input)


def softsign(input):
    """input / (1 + |input|)."""
    return input / (_floating("softsign", input).abs() + 1)


def softmin(input, dim=None, dtype=None):
    """softmax(-input, dim)."""
    return softmax(-_floating("softmin", input), dim, dtype)


class LogSigmoid(ArrayFunction):
    """min(x, 0) - log1p(exp(-|x|)) (no overflow); the gradient 1 - sigmoid(x) is smooth where
    a composite of min and |x| would have kinks at 0."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        xp = xp_of(x)
        return in_float32(lambda x: xp.minimum(x, 0) - xp.log1p(xp.exp(-abs(x))), x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return in_float32(lambda g, x: g * E.sigmoid_array(-x), g, x)


def logsigmoid(input):
    """log(sigmoid(input)), without overflow for large |input|."""
    return LogSigmoid.apply(_floating("logsigmoid", input))


def _lambd(op, lambd):
    lambd = _number(op, "lambd", lambd)
    if lambd < 0:
        raise ValueError(f"{op}: lambd must be greater or equal to 0, got {lambd}")
    return lambd


def hardshrink(input, lambd=0.5):
    """input where |input| > lambd, else 0 (a negative lambd keeps every value, as torch)."""
    lambd = _number("hardshrink", "lambd", lambd)
    return where(_floating("hardshrink", input).abs() <= lambd, 0.0, input)   # NaN stays


def softshrink(input, lambd=0.5):
    """input moved lambd towards 0, and 0 where |input| <= lambd."""
    lambd = _lambd("softshrink", lambd)
    return input - _floating("softshrink", input).clamp(-lambd, lambd)


def tanhshrink(input):
    """input - tanh(input)."""
    return input - tanh(input)


def threshold(input, threshold, value, inplace=False):
    """input where input > threshold, else value."""
    threshold = _number("threshold", "threshold", threshold)
    value = _number("threshold", "value", value)
    if inplace:
        return _in_place("threshold", input, lambda t: where(t <= threshold, value, t))
    return where(_floating("threshold", input) <= threshold, value, input)     # NaN stays


def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False, inplace=False):
    """Leaky ReLU with a random slope: while training, each negative element gets its own
    slope drawn from U(lower, upper); otherwise the slope is (lower + upper) / 2."""
    lower, upper = _number("rrelu", "lower", lower), _number("rrelu", "upper", upper)
    if lower > upper:
        raise ValueError(f"rrelu: lower bound {lower} must not exceed upper bound {upper}")
    _floating("rrelu", input)
    if inplace:
        return _in_place("rrelu", input, lambda t: rrelu(t, lower, upper, training))
    if not training:
        return leaky_relu(input, (lower + upper) / 2)
    slopes = creation.rand(*input.shape, dtype=input.dtype, device=input.device)
    slopes = slopes * (upper - lower) + lower
    return where(input >= 0, input, input * slopes)


# ------------------------------------------------------------------ in-place forms (F.relu_, ...)
def _in_place_form(function, name):
    """``name(input, ...)``, torch's F.<name>: ``function``'s result written into ``input``
    (returned), recorded in the graph as a Tensor's in-place op is (gpudl.inplace)."""
    def apply_(input, *args, **kwargs):
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        return _inplace.apply(_floating(name, input), name,
                              lambda t: function(t, *args, **kwargs))
    apply_.__name__ = apply_.__qualname__ = name
    apply_.__doc__ = f"In-place ``{function.__name__}``: writes the result into ``input``."
    return apply_


relu_ = _in_place_form(relu, "relu_")
elu_ = _in_place_form(elu, "elu_")
leaky_relu_ = _in_place_form(leaky_relu, "leaky_relu_")
hardtanh_ = _in_place_form(hardtanh, "hardtanh_")
celu_ = _in_place_form(celu, "celu_")
selu_ = _in_place_form(selu, "selu_")
rrelu_ = _in_place_form(rrelu, "rrelu_")
threshold_ = _in_place_form(threshold, "threshold_")
