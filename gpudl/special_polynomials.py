"""torch.special's orthogonal polynomials on raw arrays, without autograd: Chebyshev's T, U, V,
W and their shifted forms on [0, 1], the physicists' and probabilists' Hermite polynomials, and
Laguerre's and Legendre's, each by its three-term recurrence, with the closed forms and special
cases of torch's ATen/native/Math.h (cos(n acos x) for Chebyshev's T above degree 6 inside
(-1, 1), the values at +-1 and 0, NaN for a Hermite degree above 512 in float64 or 128 in
float32), so that values, overflows and NaNs agree with torch.

``x`` and ``n`` are arrays of the result's floating dtype, already broadcast; the degree is
``n`` truncated to an integer as C's cast does (NaN, +-inf and |n| >= 2^63 give a negative
degree, whose polynomial is 0). The recurrence runs in the result's dtype, as torch's, over the
elements that need it, for max(n) - 1 steps at most (it stops early once every running element
is NaN): a degree of millions with |x| near 1 (Laguerre, Legendre: any x) costs that many NumPy
steps. A NaN x gives NaN (torch's U, V, W, their shifted forms, Laguerre and Legendre return an
uninitialised variable there: whatever the register held).
"""

import numpy as np

from .ops._util import xp_of

INT64_MIN = -2 ** 63
HERMITE_LIMIT = {np.dtype(np.float32): 128, np.dtype(np.float64): 512}
COMPACT_EVERY = 64          # recurrence steps between dropping finished and NaN elements


def degree(xp, n):
    """static_cast<int64_t>(n) on x86: truncation; NaN, inf and out-of-range give INT64_MIN."""
    if n.dtype.kind in "biu":
        return n.astype(np.int64)
    fits = xp.isfinite(n) & (xp.abs(n) < 2.0 ** 63)
    return xp.where(fits, xp.trunc(xp.where(fits, n, 0)), float(INT64_MIN)).astype(np.int64)


def _select(xp, cases, recurrence):
    """The value of the first (condition, value) in ``cases`` that holds, else the recurrence
    ``(x, n, first, step, k0, dk)``, run only where no case holds."""
    x, n, first, *stepping = recurrence
    decided = False
    for condition, _ in cases:
        decided = decided | condition
    out = _recurrence(xp, x, xp.where(decided, 0, n), first, *stepping)
    for condition, value in reversed(cases):
        out = xp.where(condition, value, out)
    return out


def _recurrence(xp, x, n, q, step, k0, dk=1):
    """q after n - 1 steps of (p, q) <- (q, step(k, x, p, q)) from p = 1, k = k0, k0 + dk, ...,
    for the elements with n >= 2 (the others keep ``q``)."""
    q = xp.array(xp.broadcast_to(q, n.shape), dtype=x.dtype, order="C")
    running = xp.nonzero((n >= 2).ravel())[0]
    if running.size == 0:
        return q
    flat = q.reshape(-1)                       # a view of q (C-ordered): written below
    xs, steps, qs = x.ravel()[running], n.ravel()[running] - 1, flat[running]
    ps = xp.ones_like(qs)
    i, stop = 0, int(steps.max())
    while i < stop:
        for _ in range(min(COMPACT_EVERY, stop - i)):
            live = i < steps
            r = step(k0 + i * dk, xs, ps, qs)
            ps, qs = xp.where(live, qs, ps), xp.where(live, r, qs)
            i += 1
        flat[running] = qs
        keep = (i < steps) & ~xp.isnan(qs)
        if not bool(keep.any()):
            break
        running, xs, steps, ps, qs = (a[keep] for a in (running, xs, steps, ps, qs))
    return q


def _parity_sign(xp, n, value):
    """value for an even n, -value for an odd one."""
    return xp.where(n % 2 == 0, value, -value)


def _chebyshev(xp, x, n, kind, shifted):
    """T, U, V or W (``kind``) at x, or at 2x - 1 when ``shifted``, as torch evaluates them."""
    y = x + x - 1.0 if shifted else x
    two_y = y + y
    nf = n.astype(x.dtype)
    theta = xp.arccos(y)
    inside = xp.abs(y) < 1.0
    # the ends of the interval: y = 1 (x = 1) and y = -1 (x = -1, or x = 0 when shifted)
    top, bottom = (x == 1.0, x == 0.0) if shifted else (x == 1.0, x == -1.0)
    odd_top = 2 * nf + 1
    if kind == "t":
        closed, from_degree, first = xp.cos(nf * theta), 6, y
        ends = [(top, 1.0), (bottom, _parity_sign(xp, n, 1.0))]
    elif kind == "u":
        sin = xp.sin(theta)
        closed = xp.where(sin != 0.0, xp.sin((nf + 1) * theta) / sin,
                          (nf + 1) * xp.cos((nf + 1) * theta) / y)
        from_degree, first = 6 if shifted else 8, two_y
        ends = [(top, nf + 1), (bottom, _parity_sign(xp, n, nf + 1))]
    elif kind == "v":
        closed = xp.where(xp.sin(theta / 2.0) != 1.0,
                          xp.cos((nf + 0.5) * theta) / xp.cos(theta / 2.0),
                          _parity_sign(xp, n, odd_top))
        from_degree, first = 6 if shifted else 8, two_y - 1.0
        ends = [(top, 1.0), (bottom, _parity_sign(xp, n, odd_top))]
    else:
        edge = _parity_sign(xp, n, 1.0) if shifted else xp.where(
            x > 0.0, odd_top, _parity_sign(xp, n, 1.0))
        closed = xp.where(xp.cos(theta / 2.0) != 1.0,
                          xp.sin((nf + 0.5) * theta) / xp.sin(theta / 2.0), edge)
        from_degree, first = 4 if shifted else 8, two_y + 1.0
        ends = [(top, odd_top), (bottom, _parity_sign(xp, n, 1.0))]
    loop = (y, n, first, lambda k, y, p, q: (y + y) * q - p, 2)
    return _select(xp, [(n < 0, 0.0), *ends, ((n > from_degree) & inside, closed),
                        (n == 0, 1.0)], loop)


def _hermite(xp, x, n, physicists):
    if physicists:
        first = x + x
        loop = (x, n, first, lambda k, x, p, q: (x + x) * q - k * p, 2, 2)
    else:
        first = x
        loop = (x, n, first, lambda k, x, p, q: x * q - k * p, 1)
    limit = HERMITE_LIMIT[np.dtype(x.dtype)]
    return _select(xp, [(n < 0, 0.0), (n == 0, 1.0), (n == 1, first), (n > limit, np.nan)],
                   loop)


def _laguerre(xp, x, n):
    first = 1.0 - x
    loop = (x, n, first, lambda k, x, p, q: (((k + k) + (1.0 - x)) * q - k * p) / (k + 1), 1)
    return _select(xp, [(n < 0, 0.0), (xp.abs(x) == 0.0, 1.0), (n == 0, 1.0)], loop)


def _legendre(xp, x, n):
    loop = (x, n, x, lambda k, x, p, q: ((k + k + 1) * x * q - k * p) / (k + 1), 1)
    ends = xp.where((x > 0.0) | (n % 2 == 0), 1.0, -1.0)
    return _select(xp, [(n < 0, 0.0), (xp.abs(x) == 1.0, ends), (n == 0, 1.0)], loop)


def evaluate(name, x, n):
    """The polynomial ``name`` (torch.special's name) at x, of degree n (arrays of one floating
    dtype, broadcast together)."""
    xp = xp_of(x)
    x, n = xp.broadcast_arrays(x, n)
    n = degree(xp, n)
    with np.errstate(all="ignore"):
        if name.endswith("chebyshev_polynomial_" + name[-1]):
            out = _chebyshev(xp, x, n, name[-1], name.startswith("shifted"))
        elif name.startswith("hermite"):
            out = _hermite(xp, x, n, name == "hermite_polynomial_h")
        elif name == "laguerre_polynomial_l":
            out = _laguerre(xp, x, n)
        else:
            out = _legendre(xp, x, n)
        return xp.asarray(out, dtype=x.dtype)


NAMES = ("chebyshev_polynomial_t", "chebyshev_polynomial_u", "chebyshev_polynomial_v",
         "chebyshev_polynomial_w", "shifted_chebyshev_polynomial_t",
         "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v",
         "shifted_chebyshev_polynomial_w", "hermite_polynomial_h", "hermite_polynomial_he",
         "laguerre_polynomial_l", "legendre_polynomial_p")
