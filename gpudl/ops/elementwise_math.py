"""torch's wider elementwise maths on raw arrays: trigonometric and hyperbolic functions, logs
and exponentials in other bases, and the binary functions (atan2, hypot, copysign, fmod, ...).

Gradients follow torch's formulas, its conventions at the points where a derivative does not
exist included (each says which). Arrays are NumPy or CuPy: only functions both have are used.
"""

import math

import numpy as np

from .. import backend
from ..autograd import ArrayFunction
from .elementwise import Unary, _integer_division, _shape, _xp2, _zero, python_divmod
from ._util import quiet, sum_to, xp_of

_LN2, _LN10 = math.log(2.0), math.log(10.0)


def _sinc_derivative(xp, a, y):
    # (cos(pi a) - sinc(a)) / a, and 0 at a == 0 (torch's choice; the limit is 0 too)
    with quiet(xp):
        return xp.where(a == 0, 0, (xp.cos(np.pi * a) - y) / a)


def _sinc(xp, a):
    """sin(pi a) / (pi a), 1 at 0: NumPy's sinc, and torch's; CuPy's gives 1 at +-inf where
    they give nan (the first GPU run), so CuPy arrays take the formula."""
    if xp is np:
        return np.sinc(a)
    x = a.astype(np.float32) if a.dtype == np.float16 else a       # float16 in float32
    with quiet(xp):
        product = x * x.dtype.type(np.pi)
        return xp.where(x == 0, 1, xp.sin(product) / product).astype(a.dtype, copy=False)




# name -> (forward(xp, a), d y / d a as f(xp, a, y)); a is floating point (see Unary)
MATH_UNARY = {
    "tan": (lambda xp, a: xp.tan(a), lambda xp, a, y: 1 + y * y),
    "sinh": (lambda xp, a: xp.sinh(a), lambda xp, a, y: xp.cosh(a)),
    "cosh": (lambda xp, a: xp.cosh(a), lambda xp, a, y: xp.sinh(a)),
    "asin": (lambda xp, a: xp.arcsin(a), lambda xp, a, y: 1 / xp.sqrt(1 - a * a)),
    "acos": (lambda xp, a: xp.arccos(a), lambda xp, a, y: -1 / xp.sqrt(1 - a * a)),
    "atan": (lambda xp, a: xp.arctan(a), lambda xp, a, y: 1 / (1 + a * a)),
    "asinh": (lambda xp, a: xp.arcsinh(a), lambda xp, a, y: 1 / xp.sqrt(a * a + 1)),
    "acosh": (lambda xp, a: xp.arccosh(a), lambda xp, a, y: 1 / xp.sqrt(a * a - 1)),
    "atanh": (lambda xp, a: xp.arctanh(a), lambda xp, a, y: 1 / (1 - a * a)),
    "exp2": (lambda xp, a: xp.exp2(a), lambda xp, a, y: y * _LN2),
    "log2": (lambda xp, a: xp.log2(a), lambda xp, a, y: 1 / (a * _LN2)),
    "log10": (lambda xp, a: xp.log10(a), lambda xp, a, y: 1 / (a * _LN10)),
    "sinc": (_sinc, _sinc_derivative),
    "deg2rad": (lambda xp, a: a * (np.pi / 180), lambda xp, a, y: xp.full_like(a, np.pi / 180)),
    "rad2deg": (lambda xp, a: a * (180 / np.pi), lambda xp, a, y: xp.full_like(a, 180 / np.pi)),
    "trunc": (lambda xp, a: xp.trunc(a), _zero),
    "frac": (lambda xp, a: a - xp.trunc(a), lambda xp, a, y: xp.ones_like(a)),
}


class MathUnary(Unary):
    """One of the ``MATH_UNARY`` functions, by name (see ``Unary``)."""

    table = MATH_UNARY
    reads_output = frozenset({"tan", "exp2", "sinc"})

    @classmethod
    def forward(cls, ctx, a, name):
        with quiet(xp_of(a)):                  # log2(0), asin(2), ...: torch's inf and nan
            return super().forward(ctx, a, name)

    @classmethod
    def backward(cls, ctx, g):
        with quiet(xp_of(g)):
            return super().backward(ctx, g)


class Logit(ArrayFunction):
    """log(a / (1 - a)), ``a`` first clamped to [eps, 1 - eps] when eps is given. Gradient as
    torch's: 0 outside [eps, 1 - eps] with eps; nan outside [0, 1] without."""

    @staticmethod
    def forward(ctx, a, eps):
        xp = xp_of(a)
        ctx.save_for_backward(a)
        ctx.eps = eps
        x = a if eps is None else xp.clip(a, eps, 1 - eps)
        with quiet(xp):
            return xp.log(x / (1 - x)).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        with quiet(xp_of(a)):
            return Logit.grad(xp_of(a), a, g, ctx.eps), None

    @staticmethod
    def grad(xp, a, g, eps):
        """The gradient for ``a`` (arrays, or Tensors with xp a TensorMath)."""
        lo, hi, outside = (0, 1, np.nan) if eps is None else (eps, 1 - eps, 0)
        # a * (1 - a) >= 0 inside [lo, hi]: abs makes it +0 at a = -0 (+inf, as torch)
        return xp.where((a < lo) | (a > hi), outside, g / xp.abs(a * (1 - a)))


class _Binary(ArrayFunction):
    """A differentiable binary op: ``compute(xp, a, b)`` forward, and ``grads(xp, a, b, y, g)``
    -> (d/da, d/db) times g, each reduced to its operand's shape; both operands are saved."""

    needs_output = False        # whether grads reads y (kept only then, as torch keeps it)

    @classmethod
    def forward(cls, ctx, a, b):
        xp = _xp2(a, b)
        dtype = (a if hasattr(a, "dtype") else b).dtype     # a number takes the array's dtype
        # a number as a filled 0-d array: no host-to-device copy (a CUDA graph refuses one)
        a, b = (x if hasattr(x, "dtype") else xp.full((), x, dtype=dtype) for x in (a, b))
        with quiet(xp):
            # in the operands' dtype: CuPy's where has no bfloat16 loop and widens to float32
            y = backend.cast(cls.compute(xp, a, b), dtype)
        ctx.save_for_backward(a, b, y if cls.needs_output else None)
        return y

    @classmethod
    def backward(cls, ctx, g):
        a, b, y = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        xp = xp_of(g)
        with quiet(xp):
            ga, gb = cls.grads(xp, a, b, y, g)
        return (sum_to(ga, _shape(a)) if na else None), (sum_to(gb, _shape(b)) if nb else None)


class Atan2(_Binary):
    """atan2(a, b), the angle of the point (b, a); at (0, 0) both gradients are 0, as torch."""

    compute = staticmethod(lambda xp, a, b: xp.arctan2(a, b))

    @staticmethod
    def grads(xp, a, b, y, g):
        squared = a * a + b * b
        scale = xp.where(squared == 0, 0, g / xp.where(squared == 0, 1, squared))
        return scale * b, -scale * a


class Hypot(_Binary):
    """sqrt(a**2 + b**2); the gradient at (0, 0) is nan (0 / 0), as torch's."""

    compute = staticmethod(lambda xp, a, b: xp.hypot(a, b))
    needs_output = True
    grads = staticmethod(lambda xp, a, b, y, g: (g * a / y, g * b / y))


class Copysign(_Binary):
    """|a| with the sign of b; d/da = y / a (0 where a == 0), d/db = 0, as torch."""

    compute = staticmethod(lambda xp, a, b: xp.copysign(a, b))
    needs_output = True

    @staticmethod
    def grads(xp, a, b, y, g):
        return g * xp.where(a == 0, 0, y / xp.where(a == 0, 1, a)), xp.zeros_like(g)


class Fmod(_Binary):
    """a - trunc(a / b) * b (the sign of a, C's fmod); d/da = 1, d/db = -trunc(a / b)."""

    compute = staticmethod(lambda xp, a, b: xp.fmod(a, b))

    @classmethod
    def forward(cls, ctx, a, b):
        _integer_division("fmod", a, b)          # bool refused, integer zero divisor refused
        return super().forward(ctx, a, b)
    grads = staticmethod(lambda xp, a, b, y, g: (g, -g * xp.trunc(a / b)))


class LogAddExp(_Binary):
    """log(exp(a) + exp(b)) without overflow; d/da = 1 / (1 + exp(b - a))."""

    compute = staticmethod(lambda xp, a, b: xp.logaddexp(a, b))
    grads = staticmethod(lambda xp, a, b, y, g: (g / (1 + xp.exp(b - a)),
                                                 g / (1 + xp.exp(a - b))))


class LogAddExp2(_Binary):
    """log2(2**a + 2**b); d/da = 1 / (1 + 2**(b - a))."""

    compute = staticmethod(lambda xp, a, b: xp.logaddexp2(a, b))
    grads = staticmethod(lambda xp, a, b, y, g: (g / (1 + xp.exp2(b - a)),
                                                 g / (1 + xp.exp2(a - b))))


def _xlogy(xp, a, b):
    """a * log(b), 0 where a == 0 (b not nan), as torch.xlogy."""
    return xp.where((a == 0) & ~xp.isnan(b), 0, a * xp.log(b))


class Xlogy(_Binary):
    """a * log(b), 0 where a == 0 unless b is nan. As torch's: d/da = log(b), but 0 where a == 0
    and b <= 0; d/db = a / b."""

    compute = staticmethod(_xlogy)

    @staticmethod
    def grads(xp, a, b, y, g):
        return g * xp.where((a == 0) & (b <= 0), 0, xp.log(b)), g * a / b


class NextAfter(_Binary):
    """The next floating point value after a towards b; gradient 1 to a and 0 to b, as torch."""

    compute = staticmethod(lambda xp, a, b: xp.nextafter(a, b))
    grads = staticmethod(lambda xp, a, b, y, g: (g, xp.zeros_like(g)))


class Fmax(_Binary):
    """The larger of a and b, ignoring a nan (nan only where both are). As torch's: the gradient
    goes to a where a >= b or b is nan (ties included), else to b."""

    largest = True

    @classmethod
    def compute(cls, xp, a, b):
        return xp.fmax(a, b) if cls.largest else xp.fmin(a, b)

    @classmethod
    def grads(cls, xp, a, b, y, g):
        to_a = ((a >= b) if cls.largest else (a <= b)) | xp.isnan(b)
        return g * to_a, g * ~to_a


class Fmin(Fmax):
    """The smaller of a and b, ignoring a nan, as ``Fmax``."""

    largest = False


class TruncDivide(ArrayFunction):
    """a / b rounded toward zero (torch.div's rounding_mode='trunc'); integers divide exactly
    (a float quotient would lose int64's low digits). As in torch, the gradients are zero
    (not an error, unlike floor_divide)."""

    floor = False

    @classmethod
    def forward(cls, ctx, a, b):
        _integer_division("div", a, b)
        xp = _xp2(a, b)
        ctx.shapes = (_shape(a), _shape(b))
        with quiet(xp):
            if cls.floor:
                return python_divmod(a, b)[0]
            if getattr(a, "dtype", getattr(b, "dtype", None)).kind not in "iu":
                return xp.trunc(a / b)
            quotient = xp.floor_divide(a, b)
            return quotient + ((quotient * b != a) & ((a < 0) != (b < 0)))  # floor went below

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        zero = xp_of(g).zeros_like(g)
        sa, sb = ctx.shapes
        return (sum_to(zero, sa) if na else None), (sum_to(zero, sb) if nb else None)


class FloorDivideZeroGrad(TruncDivide):
    """a / b rounded toward minus infinity (rounding_mode='floor'), zero gradients."""

    floor = True


class Heaviside(ArrayFunction):
    """0 where a < 0 (and at nan), ``values`` where a == 0, 1 where a > 0; no gradient."""

    @staticmethod
    def forward(ctx, a, values):
        xp = xp_of(a)
        return xp.where(a == 0, values, a > 0).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("heaviside: the derivative is not implemented (as in torch)")


class Frexp(ArrayFunction):
    """(mantissa, exponent): a = mantissa * 2 ** exponent, |mantissa| in [0.5, 1), exponent
    int32 (0, inf and nan: themselves and 0); d mantissa / da = 2 ** -exponent."""

    @staticmethod
    def forward(ctx, a):
        xp = xp_of(a)
        mantissa, exponent = xp.frexp(a) if xp is np else _frexp_on_device(xp, a)
        exponent = exponent.astype(np.int32, copy=False)
        ctx.save_for_backward(exponent)
        return backend.cast(mantissa, a.dtype), exponent

    @staticmethod
    def backward(ctx, g, *unused):
        (exponent,) = ctx.saved_tensors
        return xp_of(g).ldexp(g, -exponent).astype(g.dtype, copy=False)


def _frexp_on_device(xp, a):
    """frexp of a CuPy array, subnormals included. The GPU flushes float32 subnormals to zero
    in float32 arithmetic and in the float32 -> float64 cast (both GPU runs gave a zero
    mantissa, the second after a widening cast), so float32 and bfloat16 (float32's exponent
    range) are read from their bits: a subnormal's magnitude is its 23 fraction bits times
    2**-149, an integer converted to float64 exactly. float16's subnormals are normal float32."""
    if a.dtype == np.float64:
        return xp.frexp(a)
    if a.dtype == np.float16:
        return xp.frexp(a.astype(np.float32))
    bits = a.view(np.uint32) if a.dtype == np.float32 else \
        a.view(np.uint16).astype(np.uint32) << 16                          # bfloat16
    fraction, magnitude = bits & 0x007FFFFF, bits & 0x7FFFFFFF
    subnormal = magnitude < 0x00800000
    wide = xp.where(subnormal, fraction.astype(np.float64) * 2.0 ** -149,
                    magnitude.view(np.float32).astype(np.float64))
    mantissa, exponent = xp.frexp(xp.where(bits >> 31 != 0, -wide, wide))
    # bfloat16's mantissa goes back through float32, the cast to bfloat16 CuPy can do
    return mantissa.astype(np.float32), exponent
