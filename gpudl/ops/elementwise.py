"""Elementwise Functions: arithmetic with broadcasting, and the unary maths of the Tensor API.

Binary ops take raw arrays or Python scalars; their backward reduces the gradient back to each
input's shape with ``sum_to`` (broadcasting is implicit, as in NumPy).
"""

import numpy as np

from .. import backend
from ..autograd import ArrayFunction
from ..dtypes import LOW_PRECISION
from ..kernels import activation
from ._util import in_float32, masked_gradient, quiet, sum_to, xp_of


def _shape(a):
    if hasattr(a, "shape"):
        return a.shape
    return () if type(a) in _NUMBERS else np.shape(a)    # np.shape: a Python-level wrapper


_NUMBERS = (int, float, bool, complex)


class Add(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return a + b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (sum_to(g, sa) if na else None), (sum_to(g, sb) if nb else None)


class Sub(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (sum_to(g, sa) if na else None), (sum_to(-g, sb) if nb else None)


class Mul(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        na, nb = ctx.needs_input_grad
        # keep only what the gradients read, as torch: an edit of x after y = x * w, where only
        # w needs a gradient, is no error, and y = x * 3 can be walked twice
        ctx.save_for_backward(a if nb else None, b if na else None)
        ctx.shapes = (_shape(a), _shape(b))
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (sum_to(g * b, sa) if na else None), (sum_to(g * a, sb) if nb else None)


class Div(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        na, nb = ctx.needs_input_grad
        ctx.save_for_backward(a if nb else None, b)         # as Mul: only what is read
        ctx.shapes = (_shape(a), _shape(b))
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        ga = sum_to(g / b, sa) if na else None
        gb = sum_to(-g * a / (b * b), sb) if nb else None
        return ga, gb


class Pow(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        if type(b) is int and b < 0 and getattr(a, "dtype", np.dtype(float)).kind in "biu":
            raise RuntimeError("pow: integers to negative integer powers are not allowed "
                               f"(a {a.dtype} tensor ** {b}); use a float tensor")
        y = _integer_power(a, b) if _is_integer(a) and _is_integer(b) else a ** b
        if all(getattr(x, "dtype", None) == np.bool_ or type(x) is bool for x in (a, b)):
            y = y.astype(np.bool_)            # NumPy's bool ** bool is int8; torch's bool
        # y only for the exponent's gradient, as torch: an edit of y must not stop a's
        ctx.save_for_backward(a, b, y if ctx.needs_input_grad[1] else None)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        xp = xp_of(a if y is None else y)
        ga = sum_to(g * _power_derivative(xp, a, b), _shape(a)) if na else None
        gb = None
        if nb:
            # d(a**b)/db = a**b * log(a): 0 where a == 0 and b >= 0, nan where a < 0 (as torch)
            with quiet(xp):
                log_a = xp.log(a) if hasattr(a, "shape") else float(np.log(a))  # no H2D copy
                gb = xp.where((a == 0) & (b >= 0), 0, y * log_a)
            gb = sum_to(g * gb, _shape(b))
        return ga, gb


def _power_derivative(xp, a, b):
    """d(a**b)/da = b * a**(b-1), with 0 where b == 0 (the formula gives 0 * inf = nan at a == 0;
    torch and the maths say 0). A number ``b`` is branched on here: CuPy's ``where`` takes no
    Python bool for a condition."""
    if isinstance(b, (int, float, np.generic)):
        return xp.zeros_like(a) if b == 0 else b * a ** (b - 1)
    return xp.where(b == 0, 0, b * a ** (b - 1))


def _is_integer(x):
    """An integer array or a Python int or bool (True ** int8 tensor is an integer power)."""
    return getattr(x, "dtype", None) is not None and x.dtype.kind in "iu" or \
        type(x) in (int, bool)


def _integer_power(a, b):
    """a ** b for integers, with torch's answer where a tensor exponent is negative (NumPy
    refuses): 1 ** b = 1, (-1) ** b = +-1 by parity, any other base 0."""
    if type(b) is int:                        # a negative one is refused in forward
        return a ** b
    xp = _xp2(a, b)                           # no branch on the values: no device sync
    if type(a) in (int, bool):                # a number base: CuPy's where takes no bool
        negative_power = 1 if a == 1 else 1 - 2 * (b % 2) if a == -1 else 0
    else:
        negative_power = xp.where(a == 1, 1, xp.where(a == -1, 1 - 2 * (b % 2), 0))
    return xp.where(b < 0, negative_power, a ** xp.maximum(b, 0)).astype(
        xp.result_type(a, b))


def _xp2(a, b):
    """The array module of a binary op's operands (either may be a number or NumPy scalar)."""
    return xp_of(b if isinstance(a, (int, float, np.generic)) else a)


def _integer_division(op, a, b):
    """Refuse what torch refuses in floor division and remainder: bool operands, and an integer
    divisor of zero, as torch's CPU kernels do. A divisor on the GPU is checked there without a
    sync (``backend.defer_check``): the error comes at the next read of the device, where torch
    on CUDA returns undefined values silently."""
    if getattr(a, "dtype", None) == np.bool_ or getattr(b, "dtype", None) == np.bool_:
        raise TypeError(f"{op}: not implemented for bool tensors")
    dtype = a.dtype if hasattr(a, "dtype") else b.dtype     # the result's (see tensor_math)
    if dtype.kind not in "iu" or 0 in np.broadcast_shapes(np.shape(a), np.shape(b)):
        return                                # no quotient computed, none refused (as torch)
    if hasattr(b, "dtype") and backend.on_device(b):     # the simulator's arrays too
        backend.defer_check(xp_of(b).all(b != 0), bool,
                            lambda _: RuntimeError(f"{op}: integer division by zero"))
    elif not np.all(np.asarray(b) != 0):
        raise RuntimeError(f"{op}: integer division by zero")


# NumPy's npy_divmod, the steps of Python's float // and %: CuPy floors a / b instead, which
# differs where b is infinite (-0.5 // inf is -1, -0.5 % inf is inf, as in torch) or a is
# (inf // 2 is nan); the first GPU run found it
_PYTHON_DIVMOD = ("T a, T b", "T quotient, T rest", """
    T mod = fmod(a, b);
    if (b == 0) {
        quotient = a / b;
        rest = mod;
    } else {
        T div = (a - mod) / b;
        if (mod != 0) {
            if ((b < 0) != (mod < 0)) { mod += b; div -= 1; }
        } else {
            mod = copysign((T)0, b);
        }
        T floored = copysign((T)0, a / b);
        if (div != 0) {
            floored = floor(div);
            if (div - floored > (T)0.5) floored += 1;
        }
        quotient = floored;
        rest = mod;
    }""", "gpudl_python_divmod")


def python_divmod(a, b):
    """(a // b, a % b) rounded as Python, NumPy and torch round (toward minus infinity, the
    remainder with b's sign), for NumPy or CuPy arrays and numbers."""
    xp = _xp2(a, b)
    dtype = np.result_type(*(getattr(x, "dtype", x) for x in (a, b)))
    if not backend.is_cupy(xp) or dtype.kind != "f":
        with quiet(xp):
            return xp.floor_divide(a, b), xp.remainder(a, b)
    work = np.float64 if dtype == np.float64 else np.float32     # float16/bfloat16: in float32
    a, b = (x.astype(work, copy=False) if hasattr(x, "dtype") else x for x in (a, b))
    quotient, rest = backend.elementwise_kernel(*_PYTHON_DIVMOD)(a, b)
    return backend.cast(quotient, dtype), backend.cast(rest, dtype)


class FloorDivide(ArrayFunction):
    """a // b rounded toward minus infinity, as Python and torch.floor_divide; no gradient."""

    @staticmethod
    def forward(ctx, a, b):
        _integer_division("floor_divide", a, b)
        return python_divmod(a, b)[0]

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("floor_divide: the derivative is not implemented (as in torch); "
                           "use (a / b).floor() for a piecewise-constant gradient of zero")


class Remainder(ArrayFunction):
    """a % b with the sign of b, as Python and torch.remainder; d/da = 1, d/db = -floor(a / b)."""

    @staticmethod
    def forward(ctx, a, b):
        _integer_division("remainder", a, b)
        ctx.save_for_backward(a, b)
        return python_divmod(a, b)[1]

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        ga = sum_to(g, _shape(a)) if na else None
        gb = None
        if nb:
            gb = sum_to(-g * python_divmod(a, b)[0], _shape(b))
        return ga, gb


class Maximum(ArrayFunction):
    """Elementwise max of two arrays; ties split the gradient evenly (torch.maximum does)."""

    largest = True

    @classmethod
    def forward(cls, ctx, a, b):
        ctx.save_for_backward(a, b)
        xp = _xp2(a, b)
        return xp.maximum(a, b) if cls.largest else xp.minimum(a, b)

    @classmethod
    def backward(cls, ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        # torch's rule: each side gets g (half at a tie) unless the other side won, so a NaN
        # (no side won) passes g to both
        shared = xp_of(g).where(a == b, g * 0.5, g)
        a_lost, b_lost = (a < b, a > b) if cls.largest else (a > b, a < b)
        ga = sum_to(masked_gradient(~a_lost, shared), _shape(a)) if na else None
        gb = sum_to(masked_gradient(~b_lost, shared), _shape(b)) if nb else None
        return ga, gb


class Minimum(Maximum):
    """Elementwise min of two arrays, as ``Maximum`` (no negation: unsigned ints would wrap)."""

    largest = False


class Neg(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Abs(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return abs(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * abs_grad_sign(a)


def abs_grad_sign(a):
    """sign(a) with 0 at NaN: torch's abs gradient (its sgn(nan) is 0; NumPy's sign is nan)."""
    xp = xp_of(a)
    s = xp.sign(a)
    return xp.where(xp.isnan(a), xp.zeros((), s.dtype), s) if s.dtype.kind == "f" else s


class Exp(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        y = xp_of(a).exp(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


class Log(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return xp_of(a).log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g / a


class Sqrt(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        y = xp_of(a).sqrt(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g / (2 * y)


class Tanh(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        y = xp_of(a).tanh(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


def sigmoid_array(a):
    """Logistic function that never overflows: exp of a non-positive number only. float16 and
    bfloat16 run in float32 (in_float32's rule): exp(-|a|) rounded to float16 is subnormal from
    |a| > 9.7, and e / (1 + e) was then up to 8.6 ulp off."""
    if a.dtype in LOW_PRECISION:
        return in_float32(_sigmoid, a)
    return _sigmoid(a)


def _sigmoid(a):
    xp = xp_of(a)
    e = xp.exp(-abs(a))
    return xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)


class Sigmoid(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        y = sigmoid_array(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y * (1 - y)


class Relu(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        y = activation.relu_forward(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return activation.relu_backward(y, g)     # NaN inputs pass the gradient, as in torch


def _in_dtype(bound, dtype):
    """A clamp bound in ``dtype``: an array cast, a number as a NumPy scalar (no device array:
    a host-to-device copy would break a CUDA graph capture)."""
    if hasattr(bound, "shape") and not isinstance(bound, np.generic):
        return bound.astype(dtype, copy=False)
    return dtype.type(bound)


class Clip(ArrayFunction):
    """clamp(a, lo, hi) with scalar or array bounds (broadcast). As in torch, the gradient flows
    to ``a`` where lo <= a <= hi, to ``lo`` where a < lo < hi, to ``hi`` where a > hi or hi < lo."""

    @staticmethod
    def forward(ctx, a, lo, hi):
        ctx.save_for_backward(a, lo, hi)
        xp = xp_of(a)
        y = a
        if lo is not None:
            y = xp.maximum(y, _in_dtype(lo, a.dtype))
        if hi is not None:
            y = xp.minimum(y, _in_dtype(hi, a.dtype))
        return y if y is not a else a.copy()

    @staticmethod
    def backward(ctx, g):
        a, lo, hi = ctx.saved_tensors
        na, nlo, nhi = ctx.needs_input_grad
        keep = True
        if lo is not None:
            keep = keep & (a >= lo)
        if hi is not None:
            keep = keep & (a <= hi)
        ga = sum_to(masked_gradient(keep, g), _shape(a)) if na else None
        glo = ghi = None
        if nlo:
            below = (a < lo) if hi is None else (a < lo) & (lo < hi)
            glo = sum_to(masked_gradient(below, g), _shape(lo))
        if nhi:
            above = (a > hi) if lo is None else (a > hi) | (hi < lo)
            ghi = sum_to(masked_gradient(above, g), _shape(hi))
        return ga, glo, ghi


class Where(ArrayFunction):
    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        ctx.shapes = (_shape(a), _shape(b))
        out = xp_of(cond).where(cond, a, b)
        if a.dtype == b.dtype != out.dtype:    # CuPy's where has no bfloat16 loop: float32
            out = backend.cast(out, a.dtype)
        return out

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        sa, sb = ctx.shapes
        _, na, nb = ctx.needs_input_grad
        ga = sum_to(masked_gradient(cond, g), sa) if na else None
        gb = sum_to(masked_gradient(~cond, g), sb) if nb else None
        return None, ga, gb


class NanAsZero(ArrayFunction):
    """``a`` with each NaN as 0 (nansum's first step). The gradient is g times the not-NaN
    mask, as torch's nansum: an infinite g gives NaN at a NaN, not the 0 of a masked_fill."""

    @staticmethod
    def forward(ctx, a):
        xp = xp_of(a)
        keep = ~xp.isnan(a)
        ctx.save_for_backward(keep)
        return xp.where(keep, a, 0).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (keep,) = ctx.saved_tensors
        return g * keep


class Cast(ArrayFunction):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype), None


class Clone(ArrayFunction):
    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, g):
        return g


def _erf(xp, a):
    if backend.is_cupy(xp):
        from cupyx.scipy import special
        return special.erf(a)
    try:
        from scipy import special
        return special.erf(a)
    except ImportError:                       # scipy is optional: libm's erf, one call each
        import math
        return np.vectorize(math.erf, otypes=[a.dtype])(a)


def _zero(xp, a, y):
    """A zero derivative (sign, floor, ...): backward returns zeros, not g * 0, which is NaN
    at an infinite or NaN g (torch's zeros_like(grad))."""
    return xp.zeros_like(a)


# name -> (forward(xp, a), d y / d a as f(xp, a, y)); a is floating point.
UNARY = {
    "sin": (lambda xp, a: xp.sin(a), lambda xp, a, y: xp.cos(a)),
    "cos": (lambda xp, a: xp.cos(a), lambda xp, a, y: -xp.sin(a)),
    "log1p": (lambda xp, a: xp.log1p(a), lambda xp, a, y: 1 / (1 + a)),
    "expm1": (lambda xp, a: xp.expm1(a), lambda xp, a, y: y + 1),
    "rsqrt": (lambda xp, a: 1 / xp.sqrt(a), lambda xp, a, y: -0.5 * y * y * y),
    "reciprocal": (lambda xp, a: 1 / a, lambda xp, a, y: -y * y),
    "erf": (_erf, lambda xp, a, y: (2 / np.sqrt(np.pi)) * xp.exp(-a * a)),
    "sign": (lambda xp, a: (a > 0).astype(a.dtype) - (a < 0), _zero),   # sign(nan) = 0, as torch
    "floor": (lambda xp, a: xp.floor(a), _zero),
    "ceil": (lambda xp, a: xp.ceil(a), _zero),
    "round": (lambda xp, a: xp.round(a), _zero),
}


class Unary(ArrayFunction):
    """One of the ``table`` functions, by name: forward and derivative from the table."""

    table = UNARY
    # the derivatives that read y: only those keep it, as torch (an in-place edit of an output
    # nothing reads back must not stop backward)
    reads_output = frozenset({"expm1", "rsqrt", "reciprocal"})

    @classmethod
    def forward(cls, ctx, a, name):
        xp = xp_of(a)
        forward = cls.table[name][0]
        if a.dtype in LOW_PRECISION:     # float32 steps, one rounding (rsqrt was two)
            y = in_float32(lambda a: xp.asarray(forward(xp, a)), a)
        else:
            y = xp.asarray(forward(xp, a)).astype(a.dtype, copy=False)
        ctx.save_for_backward(a, y if name in cls.reads_output else None)
        ctx.name = name
        return y

    @classmethod
    def backward(cls, ctx, g):
        a, y = ctx.saved_tensors
        derivative = cls.table[ctx.name][1]
        if derivative is _zero:
            return xp_of(g).zeros_like(g), None
        if a.dtype in LOW_PRECISION:
            xp = xp_of(a)
            return in_float32(lambda g, a, *y: g * derivative(xp, a, y[0] if y else None),
                              g, a, *(() if y is None else (y,))), None
        return g * derivative(xp_of(a), a, y), None
