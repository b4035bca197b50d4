"""The gradient of a tensor read in basic-index pieces (chunk, split, unbind, x[:, :k], x[0]),
kept as those pieces until something needs it as one array.

Each piece's backward (ops.shape.GetItem) used to allocate zeros of the whole tensor and write
its piece there, and the autograd walk then added the full-size gradients: for
``linear(x, w, b).chunk(3, -1)`` 3 zero-fills, 3 writes and 2 additions, with three full-size
buffers alive. A ``SlicedGradient`` holds the pieces (and the sum of any full-size gradients
that reached the same tensor), and ``array()`` joins them once into a fresh buffer: not
zero-filled when the pieces cover the tensor exactly once along one axis (what split, chunk,
unbind and tensor_split make), each piece written in one kernel; else zeros (or a copy of the
full-size part) with each piece added in one kernel, so overlapping, repeated or strided pieces
add up as separate gradients did. The sums may round differently from adding full-size arrays
in arrival order (three or more contributions to one element), never more than that.

gpudl.autograd adds these as it adds arrays and turns them into arrays before anything else
sees them (a node's backward, a tensor hook, retain_grad, autograd.grad's results, a leaf's
``.grad``). The array is always a new buffer, aliasing nothing the walk received.
"""

import numpy as np

from . import backend


class SlicedGradient:
    """A gradient of ``shape`` and ``dtype``: the sum of ``pieces`` ((index, array) each: the
    gradient of ``tensor[index]``; the index always takes a view, see view_index) and of
    ``whole`` (a full-size gradient array, or None). Immutable: ``+`` makes a new one."""

    __slots__ = ("shape", "dtype", "pieces", "whole")
    __array_ufunc__ = None      # array + SlicedGradient: NumPy and CuPy leave it to __radd__

    def __init__(self, shape, dtype, pieces, whole=None):
        self.shape, self.dtype = shape, dtype
        self.pieces, self.whole = pieces, whole

    def __add__(self, other):
        if other.__class__ is SlicedGradient:
            return SlicedGradient(self.shape, self.dtype, self.pieces + other.pieces,
                                  _sum(self.whole, other.whole))
        return SlicedGradient(self.shape, self.dtype, self.pieces, _sum(self.whole, other))

    __radd__ = __add__

    def arrays(self):
        """The arrays summed (pieces, then the full-size part if any)."""
        parts = [g for _, g in self.pieces]
        return parts if self.whole is None else parts + [self.whole]

    def array(self):
        """The gradient as one new array."""
        whole = self.whole
        if isinstance(whole, np.generic):       # 0-d NumPy arithmetic returns scalars
            whole = np.asarray(whole)
        xp = backend.get_array_module(self.pieces[0][1])
        if covers_once(self.shape, [index for index, _ in self.pieces]):
            out = xp.empty(self.shape, self.dtype)
            for index, g in self.pieces:
                if whole is None:
                    out[index] = g
                else:
                    xp.add(whole[index], g, out=out[index])
            return out
        out = xp.zeros(self.shape, self.dtype) if whole is None else whole.copy()
        for index, g in self.pieces:
            region = out[index]
            xp.add(region, g, out=region)
        return out


def _sum(a, b):
    return b if a is None else a if b is None else a + b


def dense(g):
    """``g`` as an array (a SlicedGradient joined, anything else as it is)."""
    return g.array() if g.__class__ is SlicedGradient else g


def view_index(index):
    """``index`` (a basic index: ints, slices, None, Ellipsis) as a tuple that takes a view
    of an array also when it picks one element (NumPy then returns a scalar, unless the index
    holds an Ellipsis); None when it is no such index (a bool is a 0-d mask: a copy)."""
    parts = index if isinstance(index, tuple) else (index,)
    for p in parts:
        if not (p is None or p is Ellipsis or isinstance(p, slice)
                or (isinstance(p, int) and not isinstance(p, bool))):
            return None
    return parts if any(p is Ellipsis for p in parts) else parts + (Ellipsis,)


def covers_once(shape, indices):
    """Whether the views ``indices`` (view_index's) of an array of ``shape`` take every element
    exactly once: they take whole axes but one, along which their positions do not overlap and
    leave none out. (Pieces cut along two axes count as not covering: zeros then.)"""
    selections = [_positions(shape, index) for index in indices]
    cut = {axis for positions in selections for axis, taken in enumerate(positions)
           if taken != range(shape[axis])}
    if not cut:
        return len(indices) == 1
    if len(cut) > 1:
        return False
    (axis,) = cut
    counts = np.zeros(shape[axis], np.intp)
    for positions in selections:
        taken = positions[axis]
        counts[taken.start:taken.stop if taken.stop >= 0 else None:taken.step] += 1
    return bool((counts == 1).all())


def _positions(shape, index):
    """For each axis of ``shape``, the range of positions the view ``index`` takes."""
    explicit = sum(p is not None and p is not Ellipsis for p in index)
    ranges = []
    for p in index:
        axis = len(ranges)
        if p is None:
            continue
        if p is Ellipsis:
            ranges += [range(n) for n in shape[axis:axis + len(shape) - explicit]]
        elif isinstance(p, slice):
            ranges.append(range(*p.indices(shape[axis])))
        else:
            ranges.append(range(p % shape[axis], p % shape[axis] + 1))
    return ranges + [range(n) for n in shape[len(ranges):]]
