"""Von Mises draws by rejection, in array operations on any device's generator: CuPy's
generator has no ``vonmises`` (NumPy's has, and the cpu uses it)."""

import math

import numpy as np

from .. import backend
from ..ops._util import quiet


def von_mises_by_rejection(gen, xp, loc, concentration):
    """Draws of the von Mises distribution (float64, in [-pi, pi)) of mean direction ``loc``
    and ``concentration`` (arrays of the draws' shape), by Best and Fisher's (1979) rejection
    from a wrapped Cauchy envelope: each round draws three uniforms per still-pending element
    and accepts at least about two thirds of them; a round reads back whether any is left."""
    kappa = concentration.astype(np.float64)
    with quiet(xp):
        tau = 1 + xp.sqrt(1 + 4 * kappa * kappa)
        rho = (tau - xp.sqrt(2 * tau)) / (2 * kappa)
        # the envelope's s = (1 + rho^2) / (2 rho); for a tiny kappa rho cancels, and
        # 1/kappa + kappa is its expansion there
        s = xp.where(kappa < 1e-5, 1 / kappa + kappa, (1 + rho * rho) / (2 * rho))
    angle = xp.zeros(kappa.shape)
    pending = xp.ones(kappa.shape, dtype=bool)
    while backend.host_value(pending.any(), "VonMises.sample"):
        u1, u2, u3 = gen.random((3,) + kappa.shape)
        z = xp.cos(math.pi * u1)
        f = xp.clip((1 + s * z) / (s + z), -1.0, 1.0)
        c = kappa * (s - f)
        with quiet(xp):                               # log(c / 0) = inf: accepted
            accept = pending & ((c * (2 - c) > u2) | (xp.log(c / u2) + 1 - c >= 0))
        angle = xp.where(accept, xp.copysign(xp.arccos(f), u3 - 0.5), angle)
        pending &= ~accept
    return xp.remainder(angle + loc + math.pi, 2 * math.pi) - math.pi
