"""The special functions of ``gd.special`` on raw arrays, without autograd.

On the cpu each is a vectorised float64 NumPy approximation written here (SciPy is not a
dependency), accurate to about 1e-13 relative away from the function's zeros:

- lgamma: a Taylor series about 2 in [0.5, 2.5) (so the zeros at 1 and 2 keep their relative
  accuracy), the recurrence up to Stirling's series at 10 above that, reflection below 0;
- digamma: the recurrence up to the asymptotic series at 10, reflection below 0;
- polygamma (n >= 1) and zeta: the Hurwitz zeta function by Euler-Maclaurin summation;
- erf/erfc/erfcx: a series with positive terms below 2 and a continued fraction above;
- erfinv/ndtri: an initial guess refined by Newton steps on erf (or on log erfc in the tails);
- i0/i1 and their scaled forms: the power series below 20, the asymptotic series above;
- gammainc/gammaincc: the series for P below a + 1, the continued fraction for Q above.

On cuda the same names come from ``cupyx.scipy.special``. Every function takes and returns
arrays of one floating dtype; the cpu computes in float64 and casts back.
"""

import math

import numpy as np

from . import backend
from .ops._util import xp_of

EULER = 0.5772156649015329
# B_2, B_4, ... B_24 (Bernoulli numbers): Stirling's, the digamma and Euler-Maclaurin series
BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510,
             43867 / 798, -174611 / 330, 854513 / 138, -236364091 / 2730)
ASYMPTOTIC_FROM = 10.0    # lgamma and digamma: recurrence up to here, asymptotic series above
ZETA_SHIFT = 9.0          # Euler-Maclaurin: direct terms while q + k < 9 + s, then the tail


def on_cpu(function):
    """``function`` run in float64 NumPy on a cpu array and cast back; on a CuPy array the
    ``cupyx.scipy.special`` function of the same name."""
    name = function.__name__

    def run(*arrays):
        xp = next(xp_of(a) for a in arrays if hasattr(a, "dtype"))
        dtype = next(a.dtype for a in arrays if hasattr(a, "dtype"))
        if backend.is_cupy(xp):
            from cupyx.scipy import special
            return getattr(special, CUPY_NAMES.get(name, name))(*arrays).astype(dtype,
                                                                                copy=False)
        shape = np.broadcast_shapes(*(np.shape(a) for a in arrays))
        with np.errstate(all="ignore"):   # at least 1-d: NumPy makes scalars of 0-d results
            out = function(*(np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in arrays))
        out = np.asarray(out).astype(dtype, copy=False).reshape(shape)
        # the simulator's cuda arrays: computed on the host, standing in for cupyx
        return backend.to_device_array(out, "cuda") if xp is not np else out
    run.__name__, run.__doc__ = name, function.__doc__
    return run


CUPY_NAMES = {"lgamma": "gammaln", "hurwitz_zeta": "zeta"}


def _sinpi_abs(x):
    """|sin(pi x)| with the argument reduced exactly first (accurate near the integers)."""
    return np.abs(np.sin(np.pi * (x - np.round(x))))


def _stirling(x):
    """lgamma for x >= 10."""
    inv, inv2 = 1 / x, 1 / (x * x)
    tail = 0.0
    for j in range(7, 0, -1):
        tail = tail * inv2 + BERNOULLI[j - 1] / (2 * j * (2 * j - 1))
    return (x - 0.5) * np.log(x) - x + 0.5 * math.log(2 * math.pi) + tail * inv


def _lgamma_near_2(z):
    """lgamma(2 + z) for |z| <= 0.5: (1 - gamma) z + sum_k (zeta(k) - 1) (-z)^k / k."""
    total = 0.0
    for k in range(len(_ZETA_MINUS_ONE) - 1, -1, -1):
        total = (total + _ZETA_MINUS_ONE[k] / (k + 2)) * -z
    return ((1 - EULER) - total) * z


def _lgamma_positive(x):
    out = np.empty_like(x)
    low = x < 0.5
    near = (x >= 0.5) & (x < 1.5)
    around_2 = (x >= 1.5) & (x < 2.5)
    high = x >= 2.5
    out[low] = _lgamma_near_2(x[low]) - np.log(x[low]) - np.log1p(x[low])
    out[near] = _lgamma_near_2(x[near] - 1) - np.log1p(x[near] - 1)
    out[around_2] = _lgamma_near_2(x[around_2] - 2)
    shifted, product = x[high].copy(), np.ones_like(x[high])
    while (shifted < ASYMPTOTIC_FROM).any():
        below = shifted < ASYMPTOTIC_FROM
        product[below] *= shifted[below]
        shifted[below] += 1
    out[high] = _stirling(shifted) - np.log(product)
    return out


@on_cpu
def lgamma(x):
    """log |Gamma(x)|: +inf at 0 and the negative integers."""
    out = np.full_like(x, np.inf)
    positive, reflected = x > 0, (x <= 0) & (x != np.round(x))
    out[positive] = _lgamma_positive(x[positive])
    r = x[reflected]
    out[reflected] = math.log(math.pi) - np.log(_sinpi_abs(r)) - _lgamma_positive(1 - r)
    out[np.isinf(x)] = np.inf
    out[np.isnan(x)] = np.nan
    return out


def _digamma_positive(x):
    shifted, total = x.copy(), np.zeros_like(x)
    while (shifted < ASYMPTOTIC_FROM).any():
        below = shifted < ASYMPTOTIC_FROM
        total[below] -= 1 / shifted[below]
        shifted[below] += 1
    inv2, tail = 1 / (shifted * shifted), 0.0
    for j in range(7, 0, -1):
        tail = tail * inv2 + BERNOULLI[j - 1] / (2 * j)
    return total + np.log(shifted) - 0.5 / shifted - tail * inv2


@on_cpu
def digamma(x):
    """d/dx lgamma(x): -inf at 0 (+inf at -0) and NaN at the negative integers, as torch."""
    out = np.full_like(x, np.nan)
    positive, reflected = x > 0, (x < 0) & (x != np.round(x))
    out[positive] = _digamma_positive(x[positive])
    r = x[reflected]
    out[reflected] = _digamma_positive(1 - r) - np.pi / np.tan(np.pi * (r - np.round(r)))
    out[x == 0] = np.where(np.signbit(x[x == 0]), np.inf, -np.inf)    # torch: +inf at -0
    return out


@on_cpu
def hurwitz_zeta(s, q):
    """sum_k (q + k)^-s for s > 1 (torch.special.zeta): +inf at s == 1 and (for s > 1) at q
    a non-positive integer, NaN for s < 1 and for other q < 0 with a non-integer s."""
    s, q = np.broadcast_arrays(s, q)
    total = np.zeros(s.shape)
    shift = np.ceil(np.clip(np.nan_to_num(ZETA_SHIFT + s - q, nan=0), 0, None))
    for k in range(int(shift.max(initial=0))):
        term = k < shift
        total[term] += (q[term] + k) ** -s[term]
    a = q + shift                 # >= 9 + s: the tail's terms fall by (s + 2j) / (2 pi a) squared
    tail, rising = 0.0, s.copy()                      # s (s+1) ... (s+2j-2)
    power = a ** (-s - 1)
    for j in range(1, len(BERNOULLI) + 1):
        tail = tail + BERNOULLI[j - 1] / math.factorial(2 * j) * rising * power
        rising = rising * (s + 2 * j - 1) * (s + 2 * j)
        power = power / (a * a)
    out = total + a ** (1 - s) / (s - 1) + 0.5 * a ** -s + tail
    pole = (q <= 0) & (q == np.round(q))
    out = np.where(pole, np.inf, out)
    out = np.where((s < 1) | ((q < 0) & (s != np.round(s)) & ~pole), np.nan, out)   # as Cephes
    return np.where(s == 1, np.inf, out)


_ZETA_MINUS_ONE = hurwitz_zeta(np.arange(2.0, 34.0), np.full(32, 2.0))   # zeta(k) - 1


def polygamma(n, x):
    """The n-th derivative of digamma (n a non-negative int)."""
    if n == 0:
        return digamma(x)
    sign = 1.0 if n % 2 else -1.0
    if backend.is_cupy(xp_of(x)):
        # cupyx's polygamma takes no Python int n (its cupy.where gets a bool); its zeta
        # ufunc takes a number
        from cupyx.scipy import special
        return (sign * math.factorial(n) * special.zeta(n + 1.0, x)).astype(x.dtype, copy=False)
    return (sign * math.factorial(n) * hurwitz_zeta(np.full_like(x, n + 1.0), x)).astype(
        x.dtype, copy=False)


def multigammaln(a, p):
    """log of the multivariate gamma function of dimension p."""
    out = p * (p - 1) / 4 * math.log(math.pi)
    for j in range(p):
        out = out + lgamma(a - j / 2)
    return out


# ----------------------------------------------------------------------------- erf family
_TWO_OVER_ROOT_PI = 2 / math.sqrt(math.pi)
SERIES_BELOW = 1.0        # erf's positive-term series below, erfc's continued fraction above
CF_TERMS = 120            # continued fraction depth: converged to 1e-16 from x = 1


def _erf_series(x):
    """erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1 3 5 ... (2n+1)); |x| < 1."""
    term, total, x2 = x.copy(), x.copy(), x * x
    for n in range(1, 40):
        term = term * (2 * x2) / (2 * n + 1)
        total += term
    return _TWO_OVER_ROOT_PI * np.exp(-x2) * total


def _erfcx_fraction(x):
    """exp(x^2) erfc(x) for x >= 1: the even contraction of Laplace's continued fraction,
    evaluated from its tail."""
    x_given, x = x, np.minimum(x, 1e8)                # above 1e8: the first term alone
    x2 = x * x
    tail = np.zeros_like(x)
    for k in range(CF_TERMS, 0, -1):
        tail = (2 * k - 1) * (2 * k) / (2 * x2 + 4 * k + 1 - tail)
    return np.where(x_given > 1e8, _TWO_OVER_ROOT_PI / 2 / x_given,
                    _TWO_OVER_ROOT_PI * x / (2 * x2 + 1 - tail))


def _erfc_nonnegative(x):
    """erfc(x) for x >= 0 (NaN-free; +inf gives 0)."""
    out = np.empty_like(x)
    small = x < SERIES_BELOW
    out[small] = 1 - _erf_series(x[small])
    big = x[~small]
    out[~small] = np.exp(-big * big) * _erfcx_fraction(big)
    return out


@on_cpu
def erf(x):
    """The error function."""
    out = np.sign(x)
    small = np.abs(x) < SERIES_BELOW
    out[small] = _erf_series(x[small])
    big = ~small & ~np.isnan(x)
    out[big] = np.sign(x[big]) * (1 - _erfc_nonnegative(np.abs(x[big])))
    return out


@on_cpu
def erfc(x):
    """1 - erf(x), accurate where erf(x) is near 1."""
    tail = _erfc_nonnegative(np.abs(np.nan_to_num(x)))
    return np.where(np.isnan(x), np.nan, np.where(x >= 0, tail, 2 - tail))


@on_cpu
def erfcx(x):
    """exp(x^2) erfc(x), without the overflow of the product."""
    out = np.empty_like(x)
    big = x >= SERIES_BELOW
    out[big] = _erfcx_fraction(x[big])
    rest = ~big
    r = x[rest]
    out[rest] = np.exp(r * r) * np.where(r >= 0, 1 - _erf_series(np.abs(r)),
                                         2 - _erfc_nonnegative(np.abs(np.nan_to_num(r))))
    out[np.isnan(x)] = np.nan
    return out


def _inverse_erf(t, q):
    """The x >= 0 with erf(x) = t and erfc(x) = q, given both (t = 1 - q; whichever is not
    rounded is used: t below 0.5, q above it)."""
    # Winitzki's closed form to about 2e-3, then Newton's steps on erf(x) - t (body) or on
    # log erfc(x) - log q (tails, where q may be far below the spacing of numbers near 1)
    w = -np.log(q * (2 - q))
    a = 0.147
    c = 2 / (math.pi * a) - w / 2
    x = np.sqrt(np.sqrt(c * c + w / a) - c)
    body = t < 0.5
    log_q = np.log(np.where(body, 1.0, q))
    for _ in range(6):
        gauss = _TWO_OVER_ROOT_PI * np.exp(-x * x)
        step_body = (erf(x) - t) / gauss
        scaled = erfcx(x)                                   # log erfc = log erfcx - x^2
        step_tail = (np.log(scaled) - x * x - log_q) / -(_TWO_OVER_ROOT_PI / scaled)
        x = np.maximum(x - np.where(body, step_body, step_tail), 0.0)
    x = np.where(q == 0, np.inf, x)
    return np.where(t == 0, 0.0, x)


@on_cpu
def erfinv(y):
    """The inverse of erf on [-1, 1] (+-inf at +-1, NaN outside)."""
    t = np.abs(y)
    out = np.sign(y) * _inverse_erf(np.minimum(t, 1), np.maximum(1 - t, 0))
    return np.where(t > 1, np.nan, out)


@on_cpu
def ndtri(p):
    """The quantile of the standard normal distribution (p in [0, 1])."""
    lower = p < 0.5
    q = np.where(lower, 2 * p, 2 * (1 - p))                # erfc(|x|/sqrt 2) = q
    x = math.sqrt(2) * _inverse_erf(np.clip(1 - q, 0, 1), np.clip(q, 0, 1))
    return np.where((p < 0) | (p > 1), np.nan, np.where(lower, -x, x))


@on_cpu
def ndtr(x):
    """The standard normal cumulative distribution function."""
    return 0.5 * erfc(-x / math.sqrt(2))


@on_cpu
def log_ndtr(x):
    """log ndtr(x), finite far into the left tail."""
    z = -x / math.sqrt(2)
    left = z > 1
    out = np.empty_like(x)
    out[left] = np.log(0.5 * erfcx(z[left])) - z[left] * z[left]
    out[~left] = np.log1p(-0.5 * erfc(-z[~left]))
    return out


# ------------------------------------------------------------------------ Bessel I0 and I1
BESSEL_SERIES_BELOW = 20.0


def _bessel_series(x, order):
    """I_order(x) e^-|x| by the power series sum_k (x/2)^(2k+order) / (k! (k+order)!)."""
    q = x * x / 4
    term = (np.abs(x) / 2) ** order / math.factorial(order)
    total = term.copy()
    for k in range(1, 90):
        term = term * q / (k * (k + order))
        total += term
    return total * np.exp(-np.abs(x))


def _bessel_asymptotic(x, order):
    """I_order(x) e^-x (x >= 20) by Hankel's asymptotic series."""
    mu = 4.0 * order * order
    term, total = np.ones_like(x), np.ones_like(x)
    for k in range(1, 30):
        term = -term * (mu - (2 * k - 1) ** 2) / (k * 8 * x)
        total += term
    return total / math.sqrt(2 * math.pi) / np.sqrt(x)      # 2 pi x overflows from ~3e307


def _scaled_bessel(x, order):
    out = np.empty_like(x)
    small = ~(np.abs(x) >= BESSEL_SERIES_BELOW)            # NaN through the series
    out[small] = _bessel_series(x[small], order)
    out[~small] = _bessel_asymptotic(np.abs(x[~small]), order)
    return out if order == 0 else np.where(x < 0, -out, out)


@on_cpu
def i0e(x):
    """exp(-|x|) I0(x)."""
    return _scaled_bessel(x, 0)


@on_cpu
def i1e(x):
    """exp(-|x|) I1(x)."""
    return _scaled_bessel(x, 1)


@on_cpu
def i0(x):
    """The modified Bessel function of the first kind, order 0."""
    return _scaled_bessel(x, 0) * np.exp(np.abs(x))


@on_cpu
def i1(x):
    """The modified Bessel function of the first kind, order 1."""
    return _scaled_bessel(x, 1) * np.exp(np.abs(x))


# ------------------------------------------------------------ regularised incomplete gamma
GAMMAINC_STEPS = 2000     # the most series terms or fraction levels (converged far sooner)


def _gammainc_prefactor(a, x):
    return np.exp(a * np.log(x) - x - _lgamma_positive(a))


def _lower_series(a, x):
    """P(a, x) = x^a e^-x / Gamma(a + 1) sum_n x^n / ((a+1)...(a+n)), for x < a + 1."""
    term = np.ones_like(x)
    total = term.copy()
    for n in range(1, GAMMAINC_STEPS):
        term = term * x / (a + n)
        total += term
        if (term <= total * 1e-17).all():
            break
    return _gammainc_prefactor(a, x) / a * total


def _upper_fraction(a, x):
    """Q(a, x) by Legendre's continued fraction (modified Lentz), for x >= a + 1."""
    tiny = 1e-300
    b = x + 1 - a
    c, d = np.full_like(x, 1 / tiny), 1 / b
    h = d.copy()
    for n in range(1, GAMMAINC_STEPS):
        an = -n * (n - a)
        b = b + 2
        d = an * d + b
        d = np.where(np.abs(d) < tiny, tiny, d)
        c = b + an / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        d = 1 / d
        delta = d * c
        h = h * delta
        if (np.abs(delta - 1) <= 1e-16).all():
            break
    return _gammainc_prefactor(a, x) * h


def _lgamma1p(a):
    """lgamma(1 + a) for 0 <= a <= 1.5, accurate where a is tiny (-EULER a there, which
    lgamma(1 + a) loses once 1 + a rounds to 1)."""
    return np.where(a <= 0.5, _lgamma_near_2(a) - np.log1p(a), _lgamma_near_2(a - 1))


def _upper_series(a, x):
    """Q(a, x) for x <= 1.1 and a small (DLMF 8.7.3), without 1 - P's cancellation:
    -expm1(a log x - lgamma(1 + a)) - x^a / Gamma(a) sum_{n>=1} (-x)^n / (n! (a + n))."""
    term, total = np.ones_like(x), np.zeros_like(x)
    for n in range(1, 40):                 # x^n / n! < 1e-30 by n = 40 for x <= 1.1
        term = term * -x / n
        total += term / (a + n)
    log_x = np.log(x)
    return -np.expm1(a * log_x - _lgamma1p(a)) - np.exp(a * log_x - _lgamma_positive(a)) * total


def _incomplete_gamma(a, x, upper):
    a, x = np.broadcast_arrays(a, x)
    out = np.full(a.shape, np.nan)
    valid = (a > 0) & (a < np.inf) & (x >= 0)
    series = valid & (x < a + 1)
    fraction = valid & (x >= a + 1)
    lower = _lower_series(a[series], x[series])
    out[series] = 1 - lower if upper else lower
    if upper:       # where P is near 1 (small a, x <= 1.1): Q directly (scipy's regions)
        direct = series & (x <= 1.1) & np.where(x <= 0.5, a <= -0.4 / np.log(x), a <= 1.1 * x)
        out[direct] = _upper_series(a[direct], x[direct])
    q = _upper_fraction(a[fraction], x[fraction])
    out[fraction] = q if upper else 1 - q
    out[valid & (x == np.inf)] = 0.0 if upper else 1.0
    # torch's limits: P(0, x > 0) = 1 (a = -0 too); P(inf, finite x >= 0) = 0
    out[(a == 0) & (x > 0)] = 0.0 if upper else 1.0
    out[(a == np.inf) & (x >= 0) & (x < np.inf)] = 1.0 if upper else 0.0
    return out


@on_cpu
def gammainc(a, x):
    """The regularised lower incomplete gamma function P(a, x) (a > 0, x >= 0; 1 at a = 0 for
    x > 0)."""
    return _incomplete_gamma(a, x, upper=False)


@on_cpu
def gammaincc(a, x):
    """The regularised upper incomplete gamma function Q(a, x) = 1 - P(a, x)."""
    return _incomplete_gamma(a, x, upper=True)
