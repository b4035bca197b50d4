"""torch's elementwise maths at top level and as Tensor methods: the arithmetic functions with
their keyword arguments (``add(alpha=)``, ``div(rounding_mode=)``) and aliases, the
trigonometric, hyperbolic, log and exponential functions, and the floating point binary
functions (atan2, hypot, copysign, fmod, logaddexp, xlogy, float_power, fmax, ...).

Integer and bitwise functions, predicates and comparisons are in ``math_bits``; the in-place
``_`` variants of both in ``math_inplace``. Values, result dtypes, broadcasting, gradients and
errors are torch's; the maths is in ``gpudl.ops.elementwise_math``.
"""

from collections import namedtuple

import numpy as np

from . import dtypes
from .amp.autocast_mode import cast_inputs, state as _autocast
from .ops import elementwise as E
from .ops.activation import celu, hardshrink, prelu, rrelu, selu, threshold  # noqa: F401
from .ops import elementwise_math as M
from .tensor import Tensor
from .tensor_math import _autocast_one, _binary, _no_bool, _result_dtype, scaled


# ----------------------------------------------------------------- argument checks
def check_tensor(op, name, value):
    """TypeError (torch's wording) unless ``value`` is a Tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}(): argument '{name}' must be Tensor, not {type(value).__name__}")


def check_operand(op, name, value):
    """TypeError unless ``value`` is a Tensor or a real Python/NumPy number."""
    if not isinstance(value, (Tensor, int, float, np.number, np.bool_)):
        raise TypeError(f"{op}(): argument '{name}' must be Tensor or Number, not "
                        f"{type(value).__name__}")


def check_operands(op, input, other):
    """TypeError unless input and other are Tensors or numbers, at least one a Tensor."""
    check_operand(op, "input", input)
    check_operand(op, "other", other)
    if not isinstance(input, Tensor):
        check_tensor(op, "other", other)


def check_kinds(op, kinds, input, other=None):
    """TypeError unless the category of the result dtype (of input alone, or with other: a
    tensor or number) is in ``kinds`` ('b' bool, 'i' integer, 'f' floating), as torch refuses
    e.g. hypot of integers ("not implemented for 'Long'")."""
    dtype = input.dtype if other is None else _result_dtype(input, other)
    if "bif"[dtypes.category(dtype)] not in kinds:
        raise TypeError(f"{op}: not implemented for {dtype} (operands of dtype "
                        f"{getattr(input, 'dtype', type(input).__name__)} and "
                        f"{getattr(other, 'dtype', type(other).__name__)})")


# ----------------------------------------------------------------- arithmetic
def _scaled(op, other, alpha, like):
    """``alpha * other`` for add/sub/rsub (tensor_math.scaled), alpha checked first."""
    if alpha != 1:
        check_operand(op, "alpha", alpha)
    return scaled(op, other, alpha, like)


def add(input, other, *, alpha=1):
    """``input + alpha * other``, broadcast, in torch's promoted dtype."""
    check_operands("add", input, other)
    return input + _scaled("add", other, alpha, input)


def sub(input, other, *, alpha=1):
    """``input - alpha * other``, broadcast (bool operands refused, as torch)."""
    check_operands("sub", input, other)
    _no_bool("sub", input, other)
    return input - _scaled("sub", other, alpha, input)


def rsub(input, other, *, alpha=1):
    """``other - alpha * input``: sub with its operands swapped."""
    check_tensor("rsub", "input", input)
    check_operand("rsub", "other", other)
    _no_bool("rsub", input, other)
    return other - _scaled("rsub", input, alpha, input)


def mul(input, other):
    """``input * other``, broadcast."""
    check_operands("mul", input, other)
    return input * other


_ROUNDING_MODES = (None, "trunc", "floor")


def div(input, other, *, rounding_mode=None):
    """``input / other``: true division (integers give the default float) with
    ``rounding_mode=None``; rounded toward zero with ``'trunc'`` and toward minus infinity with
    ``'floor'``, in the promoted dtype (integers stay integers). The rounded forms have zero
    gradients, as in torch."""
    check_operands("div", input, other)
    if rounding_mode not in _ROUNDING_MODES:
        raise ValueError(f"div: expected rounding_mode to be one of None, 'trunc', or 'floor' "
                         f"but found {rounding_mode!r}")
    if rounding_mode is None:
        return input / other
    if rounding_mode == "trunc":
        return _binary(M.TruncDivide, "div", input, other)
    floating = dtypes.is_floating(_result_dtype(input, other))
    return _binary(M.FloorDivideZeroGrad if floating else E.FloorDivide, "div", input, other)


def remainder(input, other):
    """``input % other`` with the sign of other (Python's and torch's); either may be a
    number."""
    check_operands("remainder", input, other)
    return input % other


def true_divide(input, other):
    """``div`` without rounding: integers divide to the default float."""
    return div(input, other)


def neg(input):
    """``-input`` (bool refused, as torch)."""
    check_tensor("neg", "input", input)
    return -input


def positive(input):
    """``input`` itself (torch.positive); a bool tensor is refused, as torch refuses it."""
    check_tensor("positive", "input", input)
    if input.dtype == dtypes.bool_:
        raise TypeError("positive: the + operator on a bool tensor is not supported")
    return input


def absolute(input):
    """``|input|`` (torch.abs)."""
    check_tensor("absolute", "input", input)
    check_kinds("absolute", "if", input)
    return abs(input)


subtract, multiply, divide, negative = sub, mul, div, neg


# ----------------------------------------------------------------- unary maths
def _floating_unary(name):
    def call(input):
        check_tensor(name, "input", input)
        input = _autocast_one(name, input)
        return M.MathUnary.apply(input._floating(), name)
    call.__name__ = name
    call.__doc__ = (f"Elementwise {name}, as torch.{name}: integer and bool inputs give the "
                    "default float dtype.")
    return call


tan, sinh, cosh, asin, acos, atan, asinh, acosh, atanh, exp2, log2, log10, sinc, deg2rad, \
    rad2deg = (_floating_unary(name) for name in (
        "tan", "sinh", "cosh", "asin", "acos", "atan", "asinh", "acosh", "atanh", "exp2", "log2",
        "log10", "sinc", "deg2rad", "rad2deg"))
arcsin, arccos, arctan, arcsinh, arccosh, arctanh = asin, acos, atan, asinh, acosh, atanh


def trunc(input):
    """Round toward zero; integer tensors come back as copies (bool refused, as torch)."""
    check_tensor("trunc", "input", input)
    check_kinds("trunc", "if", input)
    return M.MathUnary.apply(input, "trunc") if dtypes.is_floating(input.dtype) else input.clone()


def frac(input):
    """``input - trunc(input)``: the fractional part, with input's sign (floating only)."""
    check_tensor("frac", "input", input)
    check_kinds("frac", "f", input)
    return M.MathUnary.apply(input, "frac")


fix = trunc


def sgn(input):
    """The sign (-1, 0 or 1; 0 for nan) of a real tensor: torch.sgn is torch.sign on reals."""
    check_tensor("sgn", "input", input)
    return input.sign()


def logit(input, eps=None):
    """``log(p / (1 - p))``, with ``p = input`` clamped to [eps, 1 - eps] when eps is given."""
    check_tensor("logit", "input", input)
    if eps is not None and not isinstance(eps, (int, float)):
        raise TypeError(f"logit(): argument 'eps' must be a float or None, got "
                        f"{type(eps).__name__}")
    # a negative eps is None, as torch's kernels (no clamp; gradient nan outside [0, 1])
    eps = None if eps is None or eps < 0 else float(eps)
    return M.Logit.apply(input._floating(), eps)


# ----------------------------------------------------------------- binary maths
def _binary_function(name, function, kinds="bif", floating=False, numbers=()):
    """The torch function ``name`` of two operands through Function ``function``: ``kinds``
    the dtype categories it takes, ``floating`` whether integers give the default float,
    ``numbers`` which of 'input' and 'other' may be Python numbers (the rest must be Tensors)."""
    def call(input, other):
        for arg, value in (("input", input), ("other", other)):
            (check_operand if arg in numbers else check_tensor)(name, arg, value)
        if not isinstance(input, Tensor):
            check_tensor(name, "other", other)        # two numbers: torch wants a tensor
        check_kinds(name, kinds, input, other)
        if _autocast.active:
            input, other = cast_inputs(name, input, other)
        return _binary(function, name, input, other, true_division=floating)
    call.__name__ = name
    call.__doc__ = f"{function.__doc__.splitlines()[0]} (torch.{name}), broadcast."
    return call


atan2 = _binary_function("atan2", M.Atan2, floating=True)
hypot = _binary_function("hypot", M.Hypot, kinds="f")
copysign = _binary_function("copysign", M.Copysign, floating=True, numbers=("other",))
logaddexp = _binary_function("logaddexp", M.LogAddExp, kinds="f")
logaddexp2 = _binary_function("logaddexp2", M.LogAddExp2, kinds="f")
xlogy = _binary_function("xlogy", M.Xlogy, floating=True, numbers=("input", "other"))
nextafter = _binary_function("nextafter", M.NextAfter, kinds="f")
fmax = _binary_function("fmax", M.Fmax)
fmin = _binary_function("fmin", M.Fmin)
fmod = _binary_function("fmod", M.Fmod, kinds="if", numbers=("other",))
arctan2 = atan2


def float_power(input, exponent):
    """``input ** exponent`` computed in float64, whatever the operands' dtypes."""
    check_operand("float_power", "input", input)
    check_operand("float_power", "exponent", exponent)
    if not isinstance(input, Tensor):
        check_tensor("float_power", "exponent", exponent)
    widen = (lambda x: x.double() if isinstance(x, Tensor) else float(x))
    return widen(input) ** widen(exponent)


def ldexp(input, other):
    """``input * 2 ** other``; the result is floating (integers give the default float)."""
    check_tensor("ldexp", "input", input)
    check_tensor("ldexp", "other", other)
    dtype = _result_dtype(input, other)
    dtype = dtype if dtypes.is_floating(dtype) else dtypes.DEFAULT_FLOAT
    return input.astype(dtype) * exp2(other).astype(dtype)     # 2 ** other in other's float


def heaviside(input, values):
    """0 where input < 0, ``values`` where input == 0, 1 where input > 0 (nan gives 0, as
    torch); input and values must share a dtype. No gradient."""
    check_tensor("heaviside", "input", input)
    check_tensor("heaviside", "values", values)
    if input.dtype != values.dtype:
        raise TypeError(f"heaviside: input and values must share a dtype (torch does not "
                        f"implement mixed dtypes), got {input.dtype} and {values.dtype}")
    try:
        return M.Heaviside.apply(input, values)
    except ValueError:
        raise ValueError(f"heaviside: shapes {input.shape} and {values.shape} are not "
                         "broadcastable") from None


def frexp(input):
    """``(mantissa, exponent)`` with ``input = mantissa * 2 ** exponent``, |mantissa| in
    [0.5, 1) (0, inf and nan keep their value with exponent 0); exponent is int32. Floating
    input only; the mantissa's gradient is ``g / 2 ** exponent``, as torch's."""
    check_tensor("frexp", "input", input)
    if not dtypes.is_floating(input.dtype):
        raise TypeError(f"frexp: only supports floating-point dtypes, got {input.dtype}")
    return Frexp(*M.Frexp.apply(input))


Frexp = namedtuple("frexp", ["mantissa", "exponent"])


# ----------------------------------------------------------------- torch.* forms of methods
def clone(input, *, memory_format=None):
    """A copy of ``input`` (in the graph: the gradient flows back to input)."""
    check_tensor("clone", "input", input)
    return input.clone()


def detach(input):
    """``input`` detached from the graph (shares its memory)."""
    check_tensor("detach", "input", input)
    return input.detach()


# ----------------------------------------------------------------- Tensor methods
_METHODS = ("add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide",
            "negative", "positive", "absolute", "tan", "sinh", "cosh", "asin", "acos", "atan",
            "asinh", "acosh", "atanh", "arcsin", "arccos", "arctan", "arcsinh", "arccosh",
            "arctanh", "exp2", "log2", "log10", "sinc", "deg2rad", "rad2deg", "trunc", "fix",
            "frac", "sgn", "logit", "atan2", "arctan2", "hypot", "copysign", "logaddexp",
            "logaddexp2", "xlogy", "nextafter", "fmax", "fmin", "fmod", "float_power", "ldexp",
            "heaviside", "frexp")
Tensor.hardshrink, Tensor.prelu = hardshrink, prelu
for _name in _METHODS:
    setattr(Tensor, _name, globals()[_name])
del _name
