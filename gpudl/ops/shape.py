"""Shape Functions: reshape, permute, expand, indexing, cat/stack. No arithmetic."""

from .. import backend
from ..autograd import Function
from ._util import sum_to, xp_of


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None


class Permute(Function):
    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        inverse = [0] * len(ctx.axes)
        for i, ax in enumerate(ctx.axes):
            inverse[ax] = i
        return g.transpose(inverse), None


class Expand(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return xp_of(a).broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return sum_to(g, ctx.shape), None


def _is_basic(index):
    """True when ``index`` uses only ints, slices, None and Ellipsis (a view in NumPy)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


class GetItem(Function):
    """a[index]; the backward scatters with accumulation so repeated indices add up."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.conf = (a.shape, a.dtype, index)
        return a[index]

    @staticmethod
    def backward(ctx, g):
        shape, dtype, index = ctx.conf
        xp = xp_of(g)
        ga = xp.zeros(shape, dtype)
        if _is_basic(index):
            ga[index] = g
        else:
            backend.scatter_add(ga, index, g)
        return ga, None


class Cat(Function):
    @staticmethod
    def forward(ctx, axis, *arrays):
        ctx.conf = (axis, [a.shape[axis] for a in arrays])
        return xp_of(arrays[0]).concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        axis, sizes = ctx.conf
        grads, start = [], 0
        for n in sizes:
            index = (slice(None),) * axis + (slice(start, start + n),)
            grads.append(g[index])
            start += n
        return (None, *grads)


class Stack(Function):
    @staticmethod
    def forward(ctx, axis, *arrays):
        ctx.axis = axis
        return xp_of(arrays[0]).stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        parts = xp.split(g, g.shape[ctx.axis], axis=ctx.axis)
        return (None, *(p.squeeze(ctx.axis) for p in parts))
