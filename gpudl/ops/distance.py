"""cdist: the p-norm distance between every row of one batch of points and every row of another."""

import numpy as np

from ..autograd import Function
from ._util import quiet, sum_to, xp_of


class Cdist(Function):
    """``out[..., i, j] = ||a[..., i, :] - b[..., j, :]||_p`` for p >= 0 (p = inf the largest
    difference, p = 0 the number of differing coordinates), the batch dims broadcast. Where
    two points coincide the gradient is 0, as in torch."""

    @staticmethod
    def forward(ctx, a, b, p):
        xp = xp_of(a)
        diff = a[..., :, None, :] - b[..., None, :, :]
        size = abs(diff)
        if p == 0:
            out = (size != 0).sum(-1).astype(a.dtype)
        elif p == np.inf:
            out = size.max(-1) if size.shape[-1] else xp.zeros(size.shape[:-1], a.dtype)
        elif p == 1:
            out = size.sum(-1)
        elif p == 2:
            out = xp.sqrt((diff * diff).sum(-1))
        else:
            out = (size ** p).sum(-1) ** (1.0 / p)
        ctx.conf = (diff, out, p, a.shape, b.shape)
        return out

    @staticmethod
    def backward(ctx, g):
        diff, out, p, a_shape, b_shape = ctx.conf
        xp = xp_of(g)
        dist = out[..., None]
        with quiet(xp):
            if p == 0:
                local = xp.zeros_like(diff)
            elif p == np.inf:
                local = xp.sign(diff) * (abs(diff) == dist)
            elif p == 1:
                local = xp.sign(diff)
            elif p == 2:
                local = xp.where(dist == 0, 0, diff / dist)
            else:
                local = xp.where((dist == 0) | (diff == 0), 0,
                                 diff * abs(diff) ** (p - 2) / dist ** (p - 1))
        weighted = g[..., None] * local
        ga = sum_to(weighted.sum(-2), a_shape) if ctx.needs_input_grad[0] else None
        gb = sum_to(-weighted.sum(-3), b_shape) if ctx.needs_input_grad[1] else None
        return ga, gb, None
