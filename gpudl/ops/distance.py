"""Distances: cdist (every row of one batch of points against every row of another) and
F.pairwise_distance (row by row), both p-norms as torch's."""

import numpy as np

from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..autograd import ArrayFunction
from ..tensor import Tensor
from ._util import quiet, sum_to, xp_of


class Cdist(ArrayFunction):
    """``out[..., i, j] = ||a[..., i, :] - b[..., j, :]||_p`` for p >= 0 (p = inf the largest
    difference, p = 0 the number of differing coordinates), the batch dims broadcast. Where
    two points coincide the gradient is 0, as in torch.

    With ``through_products`` (p = 2 only) the squared distances come from |a|^2 + |b|^2 -
    2 a.b (a matrix product, as torch's use_mm_for_euclid_dist: memory (P, R) instead of
    (P, R, M), at the price of cancellation where points are close); otherwise from the
    differences themselves."""

    @staticmethod
    def forward(ctx, a, b, p, through_products):
        xp = xp_of(a)
        ctx.conf = (a, b, p, through_products)
        if through_products:
            squared = ((a * a).sum(-1)[..., :, None] + (b * b).sum(-1)[..., None, :]
                       - 2 * (a @ xp.swapaxes(b, -1, -2)))
            out = xp.sqrt(xp.maximum(squared, 0))
            ctx.out = out
            return out
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
        ctx.diff, ctx.out = diff, out
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, p, through_products = ctx.conf
        xp = xp_of(g)
        need_a, need_b = ctx.needs_input_grad[:2]
        if through_products:            # d/da_i = sum_j w_ij (a_i - b_j), w = g / distance
            with quiet(xp):
                w = xp.where(ctx.out == 0, 0, g / ctx.out)
            ga = a * w.sum(-1)[..., None] - w @ b if need_a else None
            gb = b * w.sum(-2)[..., None] - xp.swapaxes(w, -1, -2) @ a if need_b else None
        else:
            weighted = g[..., None] * _local_gradient(ctx.diff, ctx.out[..., None], p, xp)
            ga = weighted.sum(-2) if need_a else None
            gb = -weighted.sum(-3) if need_b else None
        return (None if ga is None else sum_to(ga, a.shape),
                None if gb is None else sum_to(gb, b.shape), None, None)


def _local_gradient(diff, dist, p, xp):
    """d distance / d a for each coordinate difference (0 where the distance is 0)."""
    with quiet(xp):
        if p == 0:
            return xp.zeros_like(diff)
        if p == np.inf:
            return xp.sign(diff) * (abs(diff) == dist)
        if p == 1:
            return xp.sign(diff)
        if p == 2:
            return xp.where(dist == 0, 0, diff / dist)
        return xp.where((dist == 0) | (diff == 0), 0,
                        diff * abs(diff) ** (p - 2) / dist ** (p - 1))


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """||x1 - x2 + eps||_p over the last dim (x1 and x2 broadcast); ``eps`` keeps the norm's
    gradient finite where x1 == x2."""
    from ..linalg import vector_norm
    if not isinstance(x1, Tensor) or not isinstance(x2, Tensor):
        raise TypeError(f"pairwise_distance: x1 and x2 must be Tensors, got "
                        f"{type(x1).__name__} and {type(x2).__name__}")
    if x1.ndim == 0 and x2.ndim == 0:
        raise ValueError("pairwise_distance: x1 and x2 must have at least one dimension")
    return vector_norm(x1 - x2 + eps, p, -1, keepdim)


def pdist(input, p=2.0):
    """The p-norm distance between every pair of rows i < j of a (N, M) ``input``, as
    ``torch.pdist``: (N * (N - 1) / 2,) in row-major order of the pairs (cdist's values above
    the diagonal; p >= 0, inf allowed)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"pdist: input must be a Tensor, got {type(input).__name__}")
    if input.ndim != 2:
        raise ValueError(f"pdist: expected a 2-D (N, M) input, got shape {tuple(input.shape)}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0:
        raise ValueError(f"pdist: p must be a non-negative number, got {p!r}")
    if _autocast.active:
        (input,) = cast_inputs("pdist", input)
    n = input.shape[0]
    rows, cols = np.triu_indices(n, 1)
    pairs = Tensor._make(xp_of(input._data).asarray(rows * n + cols), False, None, 0,
                         input._device)
    return Cdist.apply(input, input, float(p), False).reshape(-1).index_select(0, pairs)
