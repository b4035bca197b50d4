"""The in-place ``_`` variants of torch's elementwise maths that gpudl's Tensor lacked
(``sin_``, ``pow_``, ``atan2_``, ``eq_``, ``bitwise_and_``, ...), each the out-of-place method
written back through gpudl.inplace: recorded in the autograd graph (views and version counters
included), a leaf that requires grad refused, a result of a higher kind than the tensor's dtype
refused (an int tensor cannot take sin_), all as torch does."""

from . import autograd, dtypes, inplace
from .tensor import Tensor


def in_place(name):
    """The Tensor method ``<name>_``: ``self.<name>(*args, **kwargs)`` written into self."""
    def edit(self, *args, **kwargs):
        others = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        return inplace.apply(self, name + "_", lambda t: getattr(t, name)(*args, **kwargs),
                             others)
    edit.__name__, edit.__qualname__ = name + "_", f"Tensor.{name}_"
    edit.__doc__ = f"{name} in place."
    return autograd.recorded("inplace")(edit)


def comparison_in_place(name):
    """``eq_``, ``logical_and_`` and the like: the truth values (1 and 0) written into self. As
    in torch, self stays in the graph (with no gradient through it) when it was in one."""
    def edit(self, *other):
        return inplace.apply(self, name + "_", lambda t: inplace.Overwrite.apply(
            t, getattr(t, name)(*other)), other)
    edit.__name__, edit.__qualname__ = name + "_", f"Tensor.{name}_"
    edit.__doc__ = f"{name} in place: 1 where it holds, else 0, in self's dtype."
    return autograd.recorded("inplace")(edit)


_IN_PLACE = (
    "abs", "absolute", "negative", "sin", "cos", "tan", "sinh", "cosh", "asin", "acos", "atan",
    "asinh", "acosh", "atanh", "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh",
    "exp2", "log", "log2", "log10", "log1p", "expm1", "sqrt", "rsqrt", "floor", "ceil", "round",
    "trunc", "fix", "frac", "sign", "sgn", "reciprocal", "square", "erf", "sinc", "deg2rad",
    "rad2deg", "logit", "pow", "clamp_min", "clamp_max", "clip", "remainder", "floor_divide",
    "fmod", "hypot", "copysign", "xlogy", "heaviside", "nextafter", "atan2", "arctan2", "ldexp",
    "subtract", "multiply", "true_divide", "gcd", "lcm", "bitwise_not", "bitwise_and",
    "bitwise_or", "bitwise_xor", "bitwise_left_shift", "bitwise_right_shift")
for _name in _IN_PLACE:
    setattr(Tensor, _name + "_", in_place(_name))
for _name in ("eq", "ne", "lt", "le", "gt", "ge", "greater", "greater_equal", "less",
              "less_equal", "not_equal", "logical_and", "logical_or", "logical_xor"):
    setattr(Tensor, _name + "_", comparison_in_place(_name))
del _name

_float_power_ = in_place("float_power")
_true_division_ = Tensor.div_           # the in-place true division (gpudl.tensor)


def float_power_(self, exponent):
    """float_power in place: self must be float64 (the result's dtype), as torch requires."""
    if self.dtype != dtypes.float64:
        raise RuntimeError(f"float_power_: the base has dtype {self.dtype} but the operation's "
                           "result requires dtype float64")
    return _float_power_(self, exponent)


_rounded_div_ = in_place("div")


def div_(self, other, *, rounding_mode=None):
    """div in place; ``rounding_mode`` as in div ('trunc', 'floor' or None)."""
    if rounding_mode is None:
        return _true_division_(self, other)
    return _rounded_div_(self, other, rounding_mode=rounding_mode)


Tensor.float_power_, Tensor.div_ = float_power_, div_
Tensor.logical_not_ = comparison_in_place("logical_not")
Tensor.divide_ = div_
