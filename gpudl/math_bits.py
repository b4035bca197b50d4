"""torch's integer and bitwise functions (gcd, lcm, bitwise_*, shifts), comparisons as
functions (eq, ..., greater, less_equal, not_equal) and elementwise predicates (signbit,
isposinf, isneginf, isreal) and tensor predicates (is_nonzero, is_same_size, is_signed), at top
level and as Tensor methods. None of them has a gradient; results are bool tensors or the
promoted integer dtype, as torch's."""

from . import backend, dtypes
from .creation import tensor
from .math_ops import check_kinds, check_operand, check_tensor
from .tensor import Tensor


def _no_gradient(name, kinds, numbers, compute):
    """The torch function ``name`` of two operands computed by ``compute(a, b)`` on raw arrays
    (through Tensor._compare: promoted dtypes, recorded by graph captures); ``kinds`` the dtype
    categories it takes; ``numbers``: whether either operand may be a Python number."""
    def call(input, other):
        check = check_operand if numbers else check_tensor
        check(name, "input", input)
        check(name, "other", other)
        if not isinstance(input, Tensor):          # a number first: a 0-d tensor beside other
            check_tensor(name, "other", other)
            input = tensor(input, device=other.device)
        check_kinds(name, kinds, input, other)
        return input._compare(other, compute)
    call.__name__ = name
    call.__doc__ = f"Elementwise {name}, broadcast, as torch.{name} (no gradient)."
    return call


def _xp(a):
    return backend.get_array_module(a)


def _shift(left):
    """<< or >> as torch's: a shift by a negative count or by the width of the type or more
    gives 0 (>>: -1 for a negative value), where C's (and NumPy's) is undefined."""
    def compute(a, b):
        xp, bits = _xp(a), a.dtype.itemsize * 8
        if isinstance(b, int):                  # a Python number keeps a's dtype
            if 0 <= b < bits:
                return a << b if left else a >> b
            return xp.zeros_like(a) if left else -(a < 0).astype(a.dtype)
        out_of_range = (b < 0) | (b >= bits)
        shifted = (xp.left_shift if left else xp.right_shift)(a, xp.clip(b, 0, bits - 1))
        overflow = 0 if left else -(a < 0).astype(shifted.dtype)
        return xp.where(out_of_range, overflow, shifted)
    return compute


gcd = _no_gradient("gcd", "i", False, lambda a, b: _xp(a).gcd(a, b))
lcm = _no_gradient("lcm", "i", False, lambda a, b: _xp(a).lcm(a, b))
bitwise_and = _no_gradient("bitwise_and", "bi", True, lambda a, b: a & b)
bitwise_or = _no_gradient("bitwise_or", "bi", True, lambda a, b: a | b)
bitwise_xor = _no_gradient("bitwise_xor", "bi", True, lambda a, b: a ^ b)
bitwise_left_shift = _no_gradient("bitwise_left_shift", "i", True, _shift(left=True))
bitwise_right_shift = _no_gradient("bitwise_right_shift", "i", True, _shift(left=False))


def bitwise_not(input):
    """``~input``: bitwise not of integers, logical not of bools."""
    check_tensor("bitwise_not", "input", input)
    return ~input


def _comparison(name, method):
    def call(input, other):
        check_tensor(name, "input", input)
        check_operand(name, "other", other)
        return getattr(input, method)(other)
    call.__name__ = name
    call.__doc__ = f"Elementwise ``input {method} other``, broadcast, as a bool tensor."
    return call


eq, ne, lt, le, gt, ge = (_comparison(op, op) for op in ("eq", "ne", "lt", "le", "gt", "ge"))
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne


# ----------------------------------------------------------------- predicates
def _predicate(name, floating, other_kinds):
    """A bool tensor: ``floating(xp, a)`` on a floating tensor; on an integer or bool one
    ``other_kinds`` (a fill value, or a function of xp and a)."""
    def call(input):
        check_tensor(name, "input", input)
        if dtypes.is_floating(input.dtype):
            return input._compare(None, lambda a, _: floating(_xp(a), a))
        if callable(other_kinds):
            return input._compare(None, lambda a, _: other_kinds(_xp(a), a))
        return input._compare(None, lambda a, _: _xp(a).full(a.shape, other_kinds))
    call.__name__ = name
    return call


signbit = _predicate("signbit", lambda xp, a: xp.signbit(a), lambda xp, a: a < 0)
signbit.__doc__ = "Whether the sign bit is set (-0.0 included), as a bool tensor."
isposinf = _predicate("isposinf", lambda xp, a: a == float("inf"), False)
isposinf.__doc__ = "Whether each value is +inf, as a bool tensor."
isneginf = _predicate("isneginf", lambda xp, a: a == float("-inf"), False)
isneginf.__doc__ = "Whether each value is -inf, as a bool tensor."
isreal = _predicate("isreal", lambda xp, a: xp.full(a.shape, True), True)
isreal.__doc__ = "True everywhere: gpudl's tensors are real (torch.isreal of a real tensor)."


def is_nonzero(input):
    """Whether the single value of a one-element tensor is nonzero (RuntimeError otherwise)."""
    check_tensor("is_nonzero", "input", input)
    if input.numel() != 1:
        raise RuntimeError(f"is_nonzero: Boolean value of Tensor with "
                           f"{'no values' if input.numel() == 0 else 'more than one value'} "
                           f"is ambiguous (shape {input.shape})")
    return bool(input.item())


def is_same_size(input, other):
    """Whether the two tensors have the same shape."""
    check_tensor("is_same_size", "input", input)
    check_tensor("is_same_size", "other", other)
    return input.shape == other.shape


def is_signed(input):
    """Whether ``input``'s dtype holds negative values (all but uint8 and bool)."""
    check_tensor("is_signed", "input", input)
    return input.dtype not in (dtypes.uint8, dtypes.bool_)


# ----------------------------------------------------------------- Tensor methods
for _name in ("gcd", "lcm", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
              "bitwise_left_shift", "bitwise_right_shift", "greater", "greater_equal", "less",
              "less_equal", "not_equal", "signbit", "isposinf", "isneginf", "isreal",
              "is_nonzero", "is_same_size", "is_signed"):
    setattr(Tensor, _name, globals()[_name])
del _name
Tensor.__lshift__, Tensor.__rshift__ = bitwise_left_shift, bitwise_right_shift
Tensor.__rlshift__ = lambda self, other: bitwise_left_shift(tensor(other, device=self.device),
                                                            self)
Tensor.__rrshift__ = lambda self, other: bitwise_right_shift(tensor(other, device=self.device),
                                                             self)
