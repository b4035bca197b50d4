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
sees them (a tensor hook, retain_grad, autograd.grad's results, a leaf's ``.grad``, a node's
backward unless its function sets ``takes_sliced_gradients``). The array is always a new
buffer, aliasing nothing the walk received.

A backward that takes them may pass pieces on as they are: ``Stack`` gives each stacked input
its own piece (``stacked_pieces``: ``stack(h_n)[-1]`` sends the last input its gradient and the
others a zero, ``SlicedGradient.zero``, with no full-size zeros and copy), and a function that
reads a zero as "no gradient" (ops.rnn.RecurrentLayer) skips even the zeros (``known_zero``).
"""

import numpy as np

from . import backend


class SlicedGradient:
    """A gradient of ``shape`` and ``dtype``: the sum of ``pieces`` ((index, array) each: the
    gradient of ``tensor[index]``; the index always takes a view, see view_index) and of
    ``whole`` (a full-size gradient array, or None). Immutable: ``+`` makes a new one."""

    __slots__ = ("shape", "dtype", "pieces", "whole", "xp")
    __array_ufunc__ = None      # array + SlicedGradient: NumPy and CuPy leave it to __radd__

    def __init__(self, shape, dtype, pieces, whole=None, xp=None):
        self.shape, self.dtype = shape, dtype
        self.pieces, self.whole = pieces, whole
        self.xp = xp                # the array module where no piece tells it (``zero``)

    @classmethod
    def zero(cls, shape, dtype, xp):
        """A gradient known to be zero: no piece, no full-size part."""
        return cls(shape, dtype, (), None, xp)

    def __add__(self, other):
        if other.__class__ is SlicedGradient:
            return SlicedGradient(self.shape, self.dtype, self.pieces + other.pieces,
                                  _sum(self.whole, other.whole), self.xp or other.xp)
        return SlicedGradient(self.shape, self.dtype, self.pieces, _sum(self.whole, other),
                              self.xp)

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
        if not self.pieces:
            return self.xp.zeros(self.shape, self.dtype) if whole is None else whole.copy()
        xp = backend.get_array_module(self.pieces[0][1])
        if covers_once(self.shape, [index for index, _ in self.pieces]):
            out = xp.empty(self.shape, self.dtype)
            for index, g in self.pieces:
                if whole is None:
                    out[index] = g
                else:
                    xp.add(whole[index], g, out=out[index])
            return out
        pieces = self.pieces
        if whole is None:
            out = xp.zeros(self.shape, self.dtype)
            out[pieces[0][0]] = pieces[0][1]        # a write reads less than an add
            pieces = pieces[1:]
        else:
            out = whole.copy()
        for index, g in pieces:
            region = out[index]
            xp.add(region, g, out=region)
        return out


def _sum(a, b):
    return b if a is None else a if b is None else a + b


def dense(g):
    """``g`` as an array (a SlicedGradient joined, anything else as it is)."""
    return g.array() if g.__class__ is SlicedGradient else g


def known_zero(g):
    """``g`` as an array, or None where it is None or a ``SlicedGradient.zero``."""
    if g.__class__ is not SlicedGradient:
        return g
    return None if not g.pieces and g.whole is None else g.array()


def stacked_pieces(g, axis, count):
    """The gradients of the ``count`` arrays stacked along ``axis`` into what ``g`` (a
    SlicedGradient) is the gradient of, when each of its pieces is one stacked array whole
    (``out[k]``, ``out[:, k]``...): that piece, pieces of one array added, ``SlicedGradient.zero``
    for an array no piece takes. None otherwise (the caller joins g)."""
    if g.whole is not None:
        return None
    lead = (slice(None),) * axis
    taken = {}
    for index, piece in g.pieces:
        k = index[axis] if len(index) == axis + 2 else None
        if (k.__class__ is not int or index[:axis] != lead or index[-1] is not Ellipsis
                or not -count <= k < count):
            return None
        k %= count
        taken[k] = taken[k] + piece if k in taken else piece
    shape = g.shape[:axis] + g.shape[axis + 1:]
    xp = backend.get_array_module(g.pieces[0][1])
    return [taken[k] if k in taken else SlicedGradient.zero(shape, g.dtype, xp)
            for k in range(count)]


def view_index(index):
    """``index`` (a basic index: ints, slices, None, Ellipsis; ops.shape.is_basic_index) as a
    tuple that takes a view of an array also when it picks one element (NumPy then returns a
    scalar, unless the index holds an Ellipsis); None for a bool (a 0-d mask: a copy)."""
    parts = index if index.__class__ is tuple else (index,)
    ellipsis = False
    for p in parts:
        if p is Ellipsis:
            ellipsis = True
        elif p is True or p is False:
            return None
    return parts if ellipsis else parts + (Ellipsis,)


def covers_once(shape, indices):
    """Whether the views ``indices`` (view_index's) of an array of ``shape`` take every element
    exactly once: one view taking all; or views taking all positions of every axis but one,
    along which they do not overlap and leave none out. (Else zeros are filled: correct too.)"""
    if len(indices) == 1:
        return _cut(shape, indices[0]) == (None, None)
    axis, ranges, spans, strided = None, [], [], False
    for index in indices:
        cut = _cut(shape, index)
        if cut is None or cut[0] is None or (axis is not None and cut[0] != axis):
            return False
        axis, taken = cut
        if not taken:
            continue                    # an empty view takes nothing
        ranges.append(taken)
        if taken.step == 1:
            spans.append((taken.start, taken.stop))
        elif taken.step == -1:
            spans.append((taken[-1], taken.start + 1))
        else:
            strided = True
    n = shape[axis]
    if strided:                         # count each position
        counts = np.zeros(n, np.intp)
        for r in ranges:
            counts[r.start:r.stop if r.stop >= 0 else None:r.step] += 1
        return bool((counts == 1).all())
    end = 0                  # intervals: sorted, each must start where the last one ended
    for low, high in sorted(spans):
        if low != end:
            return False
        end = high
    return end == n


def _cut(shape, index):
    """(axis, range of the positions taken) when the view ``index`` of an array of ``shape``
    takes all positions of every axis but ``axis``; (None, None) when it takes them all; None
    when it leaves some out along two axes or more."""
    cut, axis = (None, None), 0
    for p in index:
        if p is None:
            continue
        if p is Ellipsis:
            if p is index[-1]:
                break                   # the axes left are taken whole
            axis = len(shape) - sum(q is not None and q is not Ellipsis
                                    for q in index[index.index(Ellipsis) + 1:])
            continue
        n = shape[axis]
        if p.__class__ is not slice:
            taken = range(p % n, p % n + 1)
        elif p.start is None and p.stop is None and p.step is None:
            axis += 1
            continue
        else:
            taken = range(*p.indices(n))
        if len(taken) != n:
            if cut[0] is not None:
                return None
            cut = (axis, taken)
        axis += 1
    return cut
