"""``gd.special``: torch.special's functions, differentiable, on both devices, and torch's
top-level and Tensor names for them (lgamma, digamma, polygamma, mvlgamma, erfinv, erfc, i0,
igamma, igammac, with their in-place forms).

The values come from ``gpudl.special_math`` (float64 NumPy approximations on the cpu,
cupyx.scipy.special on cuda); the gradients are torch's formulas: d lgamma = digamma,
d digamma = polygamma(1), d polygamma(n) = polygamma(n + 1), d erfinv = sqrt(pi)/2 exp(y^2), ...
Like torch, igamma/igammac have no gradient for ``a`` and zeta none at all: asking for one
raises. Integer inputs are computed in the default float dtype. The Bessel and Airy functions
and the orthogonal polynomials, which torch gives no gradient, come from gpudl.special_nondiff.
"""

import math

import numpy as np

from . import dtypes, functions, inplace, math_ops, special_math as S
from .amp.autocast_mode import cast_inputs, state as _autocast
from .autograd import ArrayFunction
from .ops._util import quiet, sum_to, xp_of
from .tensor import Tensor

_ROOT_PI = math.sqrt(math.pi)


def _no_gradient(op, argument):
    def refuse(*_):
        raise RuntimeError(f"{op}: the derivative for '{argument}' is not implemented (as in "
                           "torch)")
    refuse.missing = f"{op} (no derivative for '{argument}', as in torch)"
    return refuse


def _entr(xp, x, _):
    with quiet(xp):
        return xp.where(x > 0, -x * xp.log(x), xp.where(x == 0, 0.0, xp.where(x < 0, -xp.inf, x)))


def _bessel_i1_grad(xp, x, y, scaled):
    """d i1 = i0 - i1 / x; d i1e = i0e - i1e (sign(x) + 1 / x); both 1/2 at 0."""
    i0 = xp.i0e(x) if scaled else xp.i0(x)
    with quiet(xp):
        slope = i0 - y * ((xp.sign(x) if scaled else 0) + 1 / x)
    # near 0 the slope is 1/2 to within x (relative 2e-18 below 1e-18): there 1 / x overflowed
    # at subnormal x and i1 underflowed to 0 (0 * inf = nan, -inf at -1e-310)
    return xp.where(abs(x) < 1e-18, 0.5, slope)


class WithSpecial:
    """The array module ``xp`` with special_math's functions that the derivative formulas
    call (``xp.digamma``, ...): the tables' formulas are written against this namespace, so
    that gpudl.ops.graph_backward_math can run the same formulas on Tensors."""

    names = ("lgamma", "digamma", "polygamma", "i0", "i0e", "i1", "i1e")

    def __init__(self, xp):
        self.xp = xp

    def __getattr__(self, name):
        return getattr(S if name in self.names else self.xp, name)


# name -> (value(xp, x, param), d value / dx as f(xp, x, y, param)); xp in the derivatives is a
# WithSpecial
UNARY = {
    "lgamma": (lambda xp, x, _: S.lgamma(x), lambda xp, x, y, _: xp.digamma(x)),
    "digamma": (lambda xp, x, _: S.digamma(x), lambda xp, x, y, _: xp.polygamma(1, x)),
    "polygamma": (lambda xp, x, n: S.polygamma(n, x), lambda xp, x, y, n: xp.polygamma(n + 1, x)),
    "mvlgamma": (lambda xp, x, p: S.multigammaln(x, p),
                 lambda xp, x, y, p: sum(xp.digamma(x - j / 2) for j in range(p))),
    "erfc": (lambda xp, x, _: S.erfc(x), lambda xp, x, y, _: -2 / _ROOT_PI * xp.exp(-x * x)),
    "erfcx": (lambda xp, x, _: S.erfcx(x), lambda xp, x, y, _: 2 * x * y - 2 / _ROOT_PI),
    "erfinv": (lambda xp, x, _: S.erfinv(x), lambda xp, x, y, _: _ROOT_PI / 2 * xp.exp(y * y)),
    "ndtr": (lambda xp, x, _: S.ndtr(x),
             lambda xp, x, y, _: xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)),
    "ndtri": (lambda xp, x, _: S.ndtri(x),
              lambda xp, x, y, _: math.sqrt(2 * math.pi) * xp.exp(0.5 * y * y)),
    "log_ndtr": (lambda xp, x, _: S.log_ndtr(x),
                 lambda xp, x, y, _: xp.exp(-0.5 * x * x - y) / math.sqrt(2 * math.pi)),
    "i0": (lambda xp, x, _: S.i0(x), lambda xp, x, y, _: xp.i1(x)),
    "i0e": (lambda xp, x, _: S.i0e(x), lambda xp, x, y, _: xp.i1e(x) - xp.sign(x) * y),
    "i1": (lambda xp, x, _: S.i1(x), lambda xp, x, y, _: _bessel_i1_grad(xp, x, y, False)),
    "i1e": (lambda xp, x, _: S.i1e(x), lambda xp, x, y, _: _bessel_i1_grad(xp, x, y, True)),
    "entr": (_entr, lambda xp, x, y, _: -(1 + xp.log(x))),
}


def _xlog1py(xp, x, y, _):
    with quiet(xp):
        return xp.where((x == 0) & ~xp.isnan(y), 0.0, x * xp.log1p(y))


def _xlog1py_grad_x(xp, x, y):
    """d/dx = log1p(y), but 0 where x == 0 and y <= -1, as torch's (like xlogy's)."""
    with quiet(xp):
        return xp.where((x == 0) & (y <= -1), 0.0, xp.log1p(y))


def _incomplete_gamma_grad_x(sign):
    def grad(xp, a, x, out, _):       # d P(a, x) / dx = x^(a-1) e^-x / Gamma(a)
        with quiet(xp):
            return sign * xp.exp((a - 1) * xp.log(x) - x - xp.lgamma(a))
    return grad


# name -> (value(xp, a, b, param), d/da, d/db as f(xp, a, b, y, param))
BINARY = {
    "xlog1py": (_xlog1py, lambda xp, x, y, out, _: _xlog1py_grad_x(xp, x, y),
                lambda xp, x, y, out, _: x / (1 + y)),
    "igamma": (lambda xp, a, x, _: S.gammainc(a, x), _no_gradient("igamma", "input"),
               _incomplete_gamma_grad_x(1.0)),
    "igammac": (lambda xp, a, x, _: S.gammaincc(a, x), _no_gradient("igammac", "input"),
                _incomplete_gamma_grad_x(-1.0)),
    "zeta": (lambda xp, s, q, _: S.hurwitz_zeta(s, q), _no_gradient("zeta", "self"),
             _no_gradient("zeta", "other")),
}


class SpecialFunction(ArrayFunction):
    """One of the ``UNARY`` (``b`` None) or ``BINARY`` functions by name, with an optional
    non-tensor parameter (polygamma's n, mvlgamma's p)."""

    @staticmethod
    def forward(ctx, a, b, name, param):
        xp = xp_of(a)
        ctx.name, ctx.param = name, param
        with quiet(xp):
            y = UNARY[name][0](xp, a, param) if b is None else BINARY[name][0](xp, a, b, param)
        ctx.save_for_backward(a, b, y)
        return xp.asarray(y).astype(_result_dtype(a, b), copy=False)

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved_tensors
        na, nb = ctx.needs_input_grad[:2]
        xp = WithSpecial(xp_of(g))
        with quiet(xp_of(g)):
            if b is None:
                return g * UNARY[ctx.name][1](xp, a, y, ctx.param), None, None, None
            _, grad_a, grad_b = BINARY[ctx.name]
            ga = sum_to(g * grad_a(xp, a, b, y, ctx.param), np.shape(a)) if na else None
            gb = sum_to(g * grad_b(xp, a, b, y, ctx.param), np.shape(b)) if nb else None
        return ga, gb, None, None


def _result_dtype(a, b):
    floating = [x.dtype for x in (a, b) if hasattr(x, "dtype")]
    return floating[0] if len(floating) == 1 else np.result_type(*floating)


def _floating(x, op, argument="input"):
    """``x`` as a floating tensor (integer tensors in the default float dtype)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {argument} must be a Tensor, got {type(x).__name__}")
    return x if dtypes.is_floating(x.dtype) else x.astype(dtypes.DEFAULT_FLOAT)


def _unary(name, x, param=None, op=None):
    x = _floating(x, op or name)
    if _autocast.active:
        x = cast_inputs(name, x)[0]
    return SpecialFunction.apply(x, None, name, param)


def _binary(name, a, b, op=None):
    """a and b (tensors or numbers, at least one a tensor) broadcast together."""
    op = op or name
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: one of the arguments must be a Tensor, got "
                        f"{type(a).__name__} and {type(b).__name__}")
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        # torch's promotion: a 0-d tensor beside one with dims counts only by its category
        wide = dtypes.result_type(a, b)
        wide = wide if dtypes.is_floating(wide) else dtypes.DEFAULT_FLOAT
        a, b = a.to(dtype=wide), b.to(dtype=wide)
    like = a if isinstance(a, Tensor) else b
    a, b = (_floating(t, op) if isinstance(t, Tensor) else _number(t, op, like) for t in (a, b))
    return SpecialFunction.apply(a, b, name, None)


def _number(value, op, like):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{op}: expected a Tensor or a number, got {type(value).__name__}")
    dtype = like.dtype if dtypes.is_floating(like.dtype) else dtypes.DEFAULT_FLOAT
    return Tensor._make(xp_of(like._data).asarray(float(value), dtype=dtype), False, None, 0,
                        like._device)


def _natural(value, op, argument):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise RuntimeError(f"{op}: {argument} must be a non-negative int, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------- the public functions
def gammaln(input):
    """log |Gamma(input)| (torch.special.gammaln, torch.lgamma); gradient digamma."""
    return _unary("lgamma", input, op="gammaln")


def digamma(input):
    """d/dx lgamma(x) (torch.special.digamma, psi): -inf at 0, NaN at the negative integers;
    gradient polygamma(1, x)."""
    return _unary("digamma", input)


def polygamma(n, input):
    """The n-th derivative of digamma (n a non-negative int); gradient polygamma(n + 1)."""
    n = _natural(n, "polygamma", "n")
    return _unary("digamma", input) if n == 0 else _unary("polygamma", input, n)


def multigammaln(input, p):
    """The log of the multivariate gamma function of dimension ``p`` (torch.mvlgamma):
    every element must exceed (p - 1) / 2."""
    p = _natural(p, "multigammaln", "p")
    if p < 1:
        raise RuntimeError(f"multigammaln: p has to be greater than or equal to 1, got {p}")
    x = _floating(input, "multigammaln")
    if not bool((x > (p - 1) / 2).all()):
        raise RuntimeError(f"multigammaln: all elements must be greater than (p-1)/2 = "
                           f"{(p - 1) / 2}")
    return _unary("mvlgamma", x, p, "multigammaln")


def xlog1py(input, other):
    """input * log1p(other), 0 where input is 0 (unless other is NaN)."""
    return _binary("xlog1py", input, other)


def _elementwise(name, doc):
    """The gd.special function of one tensor named ``name`` in ``UNARY``."""
    def function(input):
        return _unary(name, input)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    return function


# the functions of one tensor and no options, by name: their docstrings
ONE_TENSOR_DOCS = {
    "erfc": "1 - erf(input), accurate where erf is near 1.",
    "erfcx": "The scaled complementary error function exp(x^2) erfc(x).",
    "erfinv": "The inverse of erf on [-1, 1] (+-inf at +-1, NaN outside).",
    "i0": "The modified Bessel function of the first kind, order 0.",
    "i0e": "exp(-|x|) i0(x).",
    "i1": "The modified Bessel function of the first kind, order 1.",
    "i1e": "exp(-|x|) i1(x).",
    "ndtr": "The standard normal cumulative distribution function.",
    "ndtri": "The standard normal quantile function (the inverse of ndtr).",
    "log_ndtr": "log ndtr(x), finite far into the left tail.",
    "entr": "-x log x elementwise: 0 at 0, -inf below.",
}
(erfc, erfcx, erfinv, i0, i0e, i1, i1e, ndtr, ndtri, log_ndtr, entr) = (_elementwise(name, doc) for name, doc in ONE_TENSOR_DOCS.items())
# torch.special's names for gpudl's own ops
erf, expit, expm1, log1p = functions.erf, functions.sigmoid, functions.expm1, functions.log1p
logsumexp, softmax, log_softmax = functions.logsumexp, functions.softmax, functions.log_softmax
round = functions.round  # noqa: A001
exp2, logit, sinc, xlogy = math_ops.exp2, math_ops.logit, math_ops.sinc, math_ops.xlogy


def gammainc(input, other):
    """The regularised lower incomplete gamma function P(a=input, x=other) (torch.igamma);
    gradient for ``other`` only."""
    return _binary("igamma", input, other, "gammainc")


def gammaincc(input, other):
    """The regularised upper incomplete gamma function Q(a=input, x=other) (torch.igammac);
    gradient for ``other`` only."""
    return _binary("igammac", input, other, "gammaincc")


def zeta(input, other):
    """The Hurwitz zeta function sum_k (other + k) ** -input (no gradient, as torch)."""
    return _binary("zeta", input, other)


psi = digamma
# session 26: the functions torch gives no gradient (Bessel, Airy, orthogonal polynomials)
from .special_nondiff import (  # noqa: E402,F401
    airy_ai, bessel_j0, bessel_j1, bessel_y0, bessel_y1, chebyshev_polynomial_t,
    chebyshev_polynomial_u, chebyshev_polynomial_v, chebyshev_polynomial_w, hermite_polynomial_h,
    hermite_polynomial_he, laguerre_polynomial_l, legendre_polynomial_p, modified_bessel_i0,
    modified_bessel_i1, modified_bessel_k0, modified_bessel_k1, scaled_modified_bessel_k0,
    scaled_modified_bessel_k1, shifted_chebyshev_polynomial_t, shifted_chebyshev_polynomial_u,
    shifted_chebyshev_polynomial_v, shifted_chebyshev_polynomial_w, spherical_bessel_j0)
# torch's top-level and Tensor names
lgamma, mvlgamma, igamma, igammac = gammaln, multigammaln, gammainc, gammaincc

_TENSOR_METHODS = {"lgamma": lgamma, "digamma": digamma, "mvlgamma": mvlgamma,
                   "erfinv": erfinv, "erfc": erfc, "i0": i0, "igamma": igamma,
                   "igammac": igammac}


def _tensor_polygamma(self, n):
    """polygamma(n, self), as torch.Tensor.polygamma."""
    return polygamma(n, self)


def _in_place(name, function):
    def edit(self, *args, **kwargs):
        others = tuple(a for a in args if isinstance(a, Tensor))
        return inplace.apply(self, name + "_", lambda t: function(t, *args, **kwargs), others)
    edit.__name__ = edit.__qualname__ = name + "_"
    edit.__doc__ = f"In-place {name}, as torch.Tensor.{name}_."
    return edit


for _name, _function in {**_TENSOR_METHODS, "polygamma": _tensor_polygamma}.items():
    setattr(Tensor, _name, _function)
    setattr(Tensor, _name + "_", _in_place(_name, _function))
del _name, _function

from .out_arg import SPECIAL as _OUT_NAMES, wrap_names as _wrap_names  # noqa: E402
_wrap_names(globals(), _OUT_NAMES, "special.")      # torch's out= keyword (gpudl.out_arg)
