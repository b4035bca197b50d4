"""Views that no NumPy/CuPy indexing expresses: a diagonal and sliding windows, built from the
input's strides (as torch's as_strided does), and the scatter of values into such a view.

Both NumPy's ``diagonal`` (read-only) and a copy would break what a view promises: edits through
it reach the base, and the autograd of in-place ops re-applies the view to a gradient of the
base's shape (gpudl.inplace.CopySlices). ``as_strided`` gives a writable view on both devices;
``.view()`` on it keeps a ``base`` on CuPy too, where the autograd looks for shared memory.
"""

from .. import backend
from ..autograd import ArrayFunction
from ._util import xp_of


def _strided(a, shape, strides):
    xp = xp_of(a)
    if backend.is_device_array(a):
        return xp.lib.stride_tricks.as_strided(a, shape, strides).view()
    return xp.lib.stride_tricks.as_strided(a, shape, strides, writeable=a.flags.writeable)


def diagonal_length(rows, cols, offset):
    """The number of elements of the ``offset``-th diagonal of a rows x cols matrix."""
    return max(0, min(rows + min(offset, 0), cols - max(offset, 0)))


def diagonal_view(a, offset, dim1, dim2):
    """The ``offset``-th diagonal of the (dim1, dim2) matrices of ``a`` as a view, those dims
    removed and the diagonal last (torch.diagonal)."""
    length = diagonal_length(a.shape[dim1], a.shape[dim2], offset)
    start = [slice(None)] * a.ndim
    if length:
        start[dim1], start[dim2] = slice(max(-offset, 0), None), slice(max(offset, 0), None)
    corner = a[tuple(start)]
    rest = [d for d in range(a.ndim) if d not in (dim1, dim2)]
    return _strided(corner, tuple(a.shape[d] for d in rest) + (length,),
                    tuple(corner.strides[d] for d in rest)
                    + (corner.strides[dim1] + corner.strides[dim2],))


def windows_view(a, axis, size, step):
    """Every window of ``size`` elements ``step`` apart along ``axis`` as a view: ``axis`` holds
    the windows, a new last dim the elements of each (torch.Tensor.unfold)."""
    count = (a.shape[axis] - size) // step + 1
    shape = a.shape[:axis] + (count,) + a.shape[axis + 1:] + (size,)
    strides = list(a.strides)
    strides[axis] *= step
    return _strided(a, shape, tuple(strides) + (a.strides[axis],))


class StridedView(ArrayFunction):
    """``take(a)``, a view of ``a`` built from its strides (diagonal_view, windows_view): the
    backward sends each view element's gradient to the element of ``a`` it reads, adding up
    where elements are read more than once (overlapping windows)."""

    is_view = True

    @staticmethod
    def forward(ctx, a, take, overlapping):
        ctx.conf = (a.shape, take, overlapping)
        return take(a)

    @staticmethod
    def backward(ctx, g):
        shape, take, overlapping = ctx.conf
        xp = xp_of(g)
        ga = xp.zeros(shape, g.dtype)
        if not overlapping:
            take(ga)[...] = g
            return ga, None, None
        positions = take(xp.arange(ga.size).reshape(shape))     # the flat element each reads
        backend.scatter_add(ga.reshape(-1), positions.reshape(-1), g.reshape(-1))
        return ga, None, None


class DiagEmbed(ArrayFunction):
    """The last dim of ``a`` on the ``offset``-th diagonal of new (dim1, dim2) matrices."""

    @staticmethod
    def forward(ctx, a, offset, dim1, dim2):
        ctx.conf = (offset, dim1, dim2)
        n = a.shape[-1] + abs(offset) if a.ndim else abs(offset) + 1
        rest = iter(a.shape[:-1])
        shape = tuple(n if d in (dim1, dim2) else next(rest) for d in range(a.ndim + 1))
        out = xp_of(a).zeros(shape, a.dtype)
        diagonal_view(out, offset, dim1, dim2)[...] = a
        return out

    @staticmethod
    def backward(ctx, g):
        return diagonal_view(g, *ctx.conf).copy(), None, None, None


class IntoView(ArrayFunction):
    """A copy of ``a`` with ``src`` written into the view ``take(copy)`` (select_scatter,
    slice_scatter, diagonal_scatter): ``a`` gets the gradient outside the view, ``src`` inside."""

    @staticmethod
    def forward(ctx, a, src, take):
        ctx.take = take
        out = a.copy()
        take(out)[...] = src
        return out

    @staticmethod
    def backward(ctx, g):
        ga = gsrc = None
        if ctx.needs_input_grad[0]:
            ga = g.copy()
            ctx.take(ga)[...] = 0
        if ctx.needs_input_grad[1]:
            gsrc = ctx.take(g).copy()
        return ga, gsrc, None
