"""Shape Functions: reshape, permute, expand, indexing, cat/stack. No arithmetic."""

import numpy as np

from .. import backend
from ..autograd import ArrayFunction
from ..sliced_gradient import SlicedGradient, stacked_pieces, view_index
from ._util import row_major, sum_to, xp_of


class Reshape(ArrayFunction):
    is_view = True

    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None


class Permute(ArrayFunction):
    is_view = True

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


class Expand(ArrayFunction):
    is_view = True

    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return xp_of(a).broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return sum_to(g, ctx.shape), None


def is_basic_index(index):
    """True when ``index`` uses only ints, slices, None and Ellipsis (a view in NumPy). A loop,
    not all() over a generator: every Tensor index asks, twice."""
    for p in index if isinstance(index, tuple) else (index,):
        if not (p is None or p is Ellipsis or isinstance(p, (int, slice))):
            return False
    return True


def _count_mask_reads(index):
    """The backward of a boolean-mask read: scattering through the mask reads its size again."""
    for part in index if isinstance(index, tuple) else (index,):
        if getattr(part, "dtype", None) == np.bool_ and part.ndim:
            backend.count_read(part, "boolean-mask indexing (backward)")


def check_advanced(shape, index, op):
    """The device side of an advanced index into an array of ``shape``: a boolean mask selects
    as many elements as it holds True values, which CuPy reads back from the device (counted,
    backend.count_read); an integer array is range-checked on the device and reported at the next
    read (ops/sparse.check_range), since CuPy wraps an out-of-range index where NumPy raises.
    Host arrays are left to NumPy, which raises at once."""
    if not backend.may_read_device():
        return
    parts = index if isinstance(index, tuple) else (index,)
    if not any(backend.on_device(p) for p in parts if hasattr(p, "dtype")):
        return
    from .sparse import DEFERRED_NOTE, check_range       # sparse imports Tensor, which imports us
    masks = [p for p in parts if getattr(p, "dtype", None) == np.bool_]
    consumed = sum(p.ndim for p in masks) + sum(
        p is not None and p is not Ellipsis and getattr(p, "dtype", None) != np.bool_
        for p in parts)
    dim = 0
    for part in parts:
        kind = getattr(getattr(part, "dtype", None), "kind", "")
        if part is Ellipsis:
            dim += len(shape) - consumed
        elif kind == "b":
            if part.ndim:
                backend.count_read(part, "boolean-mask indexing")
            dim += part.ndim
        elif part is not None:
            if kind and kind in "iu" and dim < len(shape):
                size, axis = shape[dim], dim
                check_range(part, size, lambda value, late, size=size, axis=axis: IndexError(
                    f"{op}: index {value} is out of bounds for dim {axis} with size {size}"
                    + (DEFERRED_NOTE if late else "")), low=-size)
            dim += 1


class RangeChecked(tuple):
    """An advanced index whose maker has range-checked it (gather's addressing: the checked
    index along one axis, 0..n-1 grids along the others): GetItem queues no second check."""


class GetItem(ArrayFunction):
    """a[index]; the backward scatters with accumulation so repeated indices add up. For a
    view (a basic index) it returns the piece as a SlicedGradient, which the autograd walk joins
    with the other pieces of ``a`` once (chunk, split, unbind: no full-size zeros per piece)."""

    is_view = True          # a view when index is basic (NumPy copies for advanced indices)

    @staticmethod
    def forward(ctx, a, index):
        basic = False
        if isinstance(index, RangeChecked):
            index = tuple(index)
        elif is_basic_index(index):
            basic = True
        else:
            check_advanced(a.shape, index, "indexing")
        ctx.conf = (a.shape, a.dtype, index)
        out = a[index]
        if isinstance(out, np.generic):     # NumPy's scalar for one element: a 0-d view instead,
            out = a[(index if isinstance(index, tuple) else (index,)) + (Ellipsis,)]  # as torch
        # an advanced index copies: row-major then, as torch's (x[1:, [0, 2]].view(-1) works)
        return out if basic else row_major(out)

    @staticmethod
    def backward(ctx, g):
        shape, dtype, index = ctx.conf
        view = view_index(index) if is_basic_index(index) else None
        if view is not None:
            return SlicedGradient(shape, dtype, ((view, g),)), None
        ga = xp_of(g).zeros(shape, dtype)
        if is_basic_index(index):       # a bool: a 0-d mask
            ga[index] = g
        else:
            _count_mask_reads(index)
            backend.scatter_add(ga, index, g)
        return ga, None



class Cat(ArrayFunction):
    """Concatenation along ``axis``; as torch's legacy rule, a 1-D empty array is skipped
    whatever the others' shapes (it still gets its empty gradient)."""

    @staticmethod
    def forward(ctx, axis, *arrays):
        joined = [a for a in arrays if a.shape != (0,)] or arrays[:1]
        ctx.conf = (axis, [a.shape[axis] if a.shape != (0,) else None for a in arrays])
        return row_major(xp_of(arrays[0]).concatenate(joined, axis=axis))

    @staticmethod
    def backward(ctx, g):
        axis, sizes = ctx.conf
        grads, start = [], 0
        for n in sizes:
            if n is None:
                grads.append(xp_of(g).zeros((0,), g.dtype))
                continue
            index = (slice(None),) * axis + (slice(start, start + n),)
            grads.append(g[index])
            start += n
        return (None, *grads)


class Stack(ArrayFunction):
    """Arrays of one shape along a new ``axis``. Its gradient may come as pieces, each one
    input's (``stack(h)[-1]``): they go to their inputs as they are, the others get a zero."""

    takes_sliced_gradients = True

    @staticmethod
    def forward(ctx, axis, *arrays):
        ctx.axis = axis
        return row_major(xp_of(arrays[0]).stack(arrays, axis=axis))

    @staticmethod
    def backward(ctx, g):
        if g.__class__ is SlicedGradient:
            grads = stacked_pieces(g, ctx.axis, g.shape[ctx.axis])
            if grads is not None:
                return (None, *grads)
            g = g.array()
        xp = xp_of(g)
        parts = xp.split(g, g.shape[ctx.axis], axis=ctx.axis)
        return (None, *(p.squeeze(ctx.axis) for p in parts))


class IndexPut(ArrayFunction):
    """``a`` with ``values`` written at ``index`` (a tuple of index arrays and slices), added when
    ``accumulate`` (repeated indices add up), else overwritten: scatter, scatter_add and
    index_add are this op with different index tuples."""

    @staticmethod
    def forward(ctx, a, index, values, accumulate):
        ctx.conf = (index, accumulate)
        out = a.copy()
        if accumulate:
            backend.scatter_add(out, index, values)
        else:
            out[index] = values
        return out

    @staticmethod
    def backward(ctx, g):
        index, accumulate = ctx.conf
        na, _, nv, _ = ctx.needs_input_grad
        ga = gv = None
        if na:
            ga = g
            if not accumulate:
                ga = g.copy()
                ga[index] = 0
        if nv:
            gv = g[index]
        return ga, None, gv, None


class SetItem(ArrayFunction):
    """``a[first][index] = values`` in place (``first``: a basic index, a view; see
    tensor_shape.ints_first), recorded as torch records item assignment: ``a`` gets the gradient
    outside the written elements, ``values`` the gradient of those (summed where it broadcast)."""

    @staticmethod
    def forward(ctx, a, first, index, values):
        ctx.conf = (first, index, np.shape(values))
        a[first][index] = values
        return a

    @staticmethod
    def backward(ctx, g):
        first, index, values_shape = ctx.conf
        na, _, _, nv = ctx.needs_input_grad
        ga = gv = None
        if na:
            ga = g.copy()
            ga[first][index] = 0
        if nv:
            gv = sum_to(g[first][index], values_shape)
        return ga, None, None, gv


class Flip(ArrayFunction):
    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return xp_of(a).flip(a, axis=axes).copy()

    @staticmethod
    def backward(ctx, g):
        return xp_of(g).flip(g, axis=ctx.axes), None


class Roll(ArrayFunction):
    @staticmethod
    def forward(ctx, a, shifts, axes):
        ctx.conf = (shifts, axes)
        return row_major(xp_of(a).roll(a, shifts, axis=axes))

    @staticmethod
    def backward(ctx, g):
        shifts, axes = ctx.conf
        back = -shifts if isinstance(shifts, int) else tuple(-s for s in shifts)
        return xp_of(g).roll(g, back, axis=axes), None, None


class Triangle(ArrayFunction):
    """The lower (``upper=False``) or upper triangle of the last two dims, from ``diagonal``."""

    @staticmethod
    def forward(ctx, a, diagonal, upper):
        ctx.conf = (diagonal, upper)
        xp = xp_of(a)
        return xp.triu(a, diagonal) if upper else xp.tril(a, diagonal)

    @staticmethod
    def backward(ctx, g):
        diagonal, upper = ctx.conf
        xp = xp_of(g)
        return (xp.triu(g, diagonal) if upper else xp.tril(g, diagonal)), None, None


def _diagonal_index(matrix_shape, offset, xp):
    """(rows, cols) of the ``offset``-th diagonal of a matrix of ``matrix_shape``."""
    rows, cols = matrix_shape
    length = max(0, min(rows + min(offset, 0), cols - max(offset, 0)))
    steps = xp.arange(length)
    return steps - min(offset, 0), steps + max(offset, 0)


class Diag(ArrayFunction):
    """torch.diag: a 1-D ``a`` placed on the ``offset``-th diagonal of a square matrix, or that
    diagonal of a 2-D ``a`` copied out; each direction's backward is the other."""

    @staticmethod
    def forward(ctx, a, offset):
        ctx.conf = (a.shape, offset)
        xp = xp_of(a)
        if a.ndim == 2:
            return a[_diagonal_index(a.shape, offset, xp)]
        n = a.shape[0] + abs(offset)
        out = xp.zeros((n, n), a.dtype)
        out[_diagonal_index((n, n), offset, xp)] = a
        return out

    @staticmethod
    def backward(ctx, g):
        shape, offset = ctx.conf
        xp = xp_of(g)
        if len(shape) == 1:
            return g[_diagonal_index(g.shape, offset, xp)], None
        ga = xp.zeros(shape, g.dtype)
        ga[_diagonal_index(shape, offset, xp)] = g
        return ga, None
