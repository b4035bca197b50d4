"""Order statistics and searches of sorted data: the Tensor methods median, kthvalue and mode (a
mixin of Tensor), and the functions searchsorted, bucketize, histc and unique.

Each picks positions on raw arrays (a stable sort: NaN sorts last, as in torch) and reads the
values through ``gather``, so the picked elements get the gradient, as torch's do. Only unique
reads the device (its size depends on the data).
"""

from collections import namedtuple

import numpy as np

from . import backend, dtypes
from . import tensor as T          # Tensor itself; resolved at call time (tensor.py imports us)
from .autograd import ArrayFunction
from .ops._util import is_int, normalize_axis, quiet, xp_of

Picked = namedtuple("Picked", ["values", "indices"])


class OrderMixin:
    """Order statistics along a dim; ``self`` is a Tensor."""

    __slots__ = ()

    def median(self, dim=None, keepdim=False):
        """The lower median: of all elements (a 0-d tensor; ties share the gradient), or along
        ``dim`` as ``(values, indices)``. NaN propagates: a row holding one has median NaN."""
        if dim is None:
            flat = self.reshape(-1)
            if not flat.numel():
                if not dtypes.is_floating(self.dtype):
                    raise ValueError(f"median: the median of an empty {self.dtype} tensor is "
                                     "undefined")
                return T.Tensor._make(backend.xp_for(self._device).full((), np.nan, self.dtype),
                                      False, None, 0, self._device)       # as torch
            picked = flat.detach()._pick("median", 0, False, _median_position)
            return SharedByTies.apply(flat, picked.values._data)
        return self._pick("median", dim, keepdim, _median_position)

    def kthvalue(self, k, dim=-1, keepdim=False):
        """``(values, indices)`` of the ``k``-th smallest element (k from 1) along ``dim``."""
        n = self.shape[normalize_axis(dim, self.ndim, "kthvalue")] if self.ndim else 1
        if not is_int(k) or not 1 <= k <= n:
            raise IndexError(f"kthvalue: k must lie in [1, {n}] for dim {dim} of size {n}, "
                             f"got {k!r}")
        return self._pick("kthvalue", dim, keepdim, lambda data, axis, xp: k - 1)

    def mode(self, dim=-1, keepdim=False):
        """``(values, indices)`` of the most frequent value along ``dim`` (the smallest among
        equally frequent ones; its last index), as torch.mode."""
        return self._pick("mode", dim, keepdim, None)

    def _pick(self, op, dim, keepdim, position):
        """Picked(values, indices) of the element at sorted ``position(data, axis, xp)`` (an int
        or an int64 array with 1 at ``axis``) along ``dim``; ``None`` picks the mode."""
        axis = normalize_axis(dim, self.ndim, op)
        if self.ndim == 0:
            xp = backend.xp_for(self._device)
            return Picked(self.clone(), T.Tensor._make(xp.zeros((), np.int64), False, None, 0,
                                                       self._device))
        if self.shape[axis] == 0:
            raise IndexError(f"{op}: cannot pick from dim {dim} of size 0 (shape {self.shape})")
        data = self._data
        xp = xp_of(data)
        order = xp.argsort(backend.sortable(data), axis=axis, kind="stable")
        if position is None:
            where = _mode_position(xp.take_along_axis(data, order, axis), axis, xp)
        else:
            where = position(data, axis, xp)
            if isinstance(where, int):
                where = xp.full(data.shape[:axis] + (1,) + data.shape[axis + 1:], where, np.int64)
        indices = xp.take_along_axis(order, where, axis).astype(np.int64, copy=False)
        values = self.gather(axis, T.Tensor._make(indices, False, None, 0, self._device))
        if not keepdim:     # values a new tensor, not a view (torch's allows detach_())
            values, indices = values.squeeze(axis).clone(), indices.squeeze(axis)
        return Picked(values, T.Tensor._make(indices, False, None, 0, self._device))


def _median_position(data, axis, xp):
    """The sorted position of the lower median along ``axis``, that of the first NaN in a row
    holding NaNs (NaN sorts last)."""
    n = data.shape[axis]
    middle = (n - 1) // 2
    if data.dtype.kind != "f" and data.dtype != dtypes.bfloat16:
        return middle
    nans = xp.isnan(data).sum(axis=axis, keepdims=True)
    return xp.where(nans > 0, n - nans, middle).astype(np.int64)


def _mode_position(ordered, axis, xp):
    """The sorted position of the mode along ``axis`` of the sorted ``ordered``: the last
    element of the first longest run of equal values. Runs are counted on the device by a
    scatter-add into one slot per (row, run): no read of the device."""
    rows = xp.moveaxis(ordered, axis, -1)
    lead, n = rows.shape[:-1], rows.shape[-1]
    rows = rows.reshape(-1, n)
    starts = xp.ones(rows.shape, bool)
    starts[:, 1:] = rows[:, 1:] != rows[:, :-1]
    run = xp.cumsum(starts, axis=1) - 1 + xp.arange(rows.shape[0])[:, None] * n
    counts = xp.zeros(rows.size, np.int64)
    backend.scatter_add(counts, run.reshape(-1), xp.ones(rows.size, np.int64))
    counts = counts.reshape(rows.shape)
    best = xp.argmax(counts, axis=1)[:, None]         # the first longest run: smallest value
    last = xp.take_along_axis(xp.cumsum(counts, axis=1), best, 1) - 1
    return xp.moveaxis(last.reshape(lead + (1,)), -1, axis).astype(np.int64, copy=False)


class SharedByTies(ArrayFunction):
    """The 0-d ``value`` picked from ``a`` (median of all elements), its gradient shared evenly
    by the elements equal to it (the NaNs when it is NaN), as torch's evenly_distribute."""

    @staticmethod
    def forward(ctx, a, value):
        ctx.conf = (a, value)
        return value.copy()

    @staticmethod
    def backward(ctx, g):
        a, value = ctx.conf
        xp = xp_of(a)
        ties = (a == value) | (xp.isnan(a) & xp.isnan(value))
        return xp.where(ties, g / ties.sum(), 0).astype(a.dtype, copy=False), None


def searchsorted(sorted_sequence, input, *, out_int32=False, right=False, side=None,
                 sorter=None):
    """For each value of ``input``, the position in ``sorted_sequence`` (sorted along its last
    dim) that keeps it sorted: the first such (``side='left'``) or the last (``right=True`` or
    ``side='right'``). A 1-D sequence serves every value; an N-D one holds one sequence per row
    of ``input`` (same leading dims). ``sorter`` gives the sort order of an unsorted sequence."""
    if not isinstance(sorted_sequence, T.Tensor):
        raise TypeError(f"searchsorted: sorted_sequence must be a Tensor, got "
                        f"{type(sorted_sequence).__name__}")
    if side not in (None, "left", "right"):
        raise ValueError(f"searchsorted: side must be 'left' or 'right', got {side!r}")
    if side == "left" and right:
        raise ValueError("searchsorted: side='left' and right=True contradict each other")
    right = right or side == "right"
    boundaries = sorted_sequence._data
    if boundaries.ndim == 0:
        raise ValueError("searchsorted: sorted_sequence must have at least one dim")
    xp = xp_of(boundaries)
    if sorter is not None:
        if not isinstance(sorter, T.Tensor) or sorter.shape != sorted_sequence.shape \
                or sorter.dtype.kind not in "iu":
            raise ValueError(f"searchsorted: sorter must be an integer tensor of shape "
                             f"{sorted_sequence.shape}, got {getattr(sorter, 'shape', sorter)!r}")
        boundaries = xp.take_along_axis(boundaries, sorter._data.astype(np.int64), -1)
    scalar = not isinstance(input, T.Tensor)
    values = T._raw(input, sorted_sequence) if not scalar else xp.asarray(input)
    if not scalar and values.dtype != boundaries.dtype:       # compare in the promoted dtype
        common = dtypes.promote_types(values.dtype, boundaries.dtype)
        values, boundaries = values.astype(common), boundaries.astype(common)
    if boundaries.ndim == 1:
        found = xp.searchsorted(boundaries, values, side="right" if right else "left")
    else:
        if scalar or values.shape[:-1] != boundaries.shape[:-1]:
            raise ValueError(f"searchsorted: an N-D sorted_sequence (shape {boundaries.shape}) "
                             f"needs input of the same leading dims, got "
                             f"{getattr(values, 'shape', ())}")
        found = search_rows(boundaries, values, right, xp)
    found = xp.asarray(found).astype(np.int32 if out_int32 else np.int64)
    return T.Tensor._make(found, False, None, 0, sorted_sequence._device)


def search_rows(boundaries, values, right, xp):
    """searchsorted row by row, batched: each row's values and boundaries are merged by one
    stable sort (values first for 'left', so an equal boundary counts after them); a value's
    position there less the values before it is the number of boundaries before it."""
    n, m = boundaries.shape[-1], values.shape[-1]
    lead = values.shape[:-1]
    rows = int(np.prod(lead))
    boundaries, values = boundaries.reshape(rows, n), values.reshape(rows, m)
    parts = (boundaries, values) if right else (values, boundaries)
    order = xp.argsort(backend.sortable(xp.concatenate(parts, axis=1)), axis=1, kind="stable")
    is_value = order >= n if right else order < m
    values_before = xp.cumsum(is_value, axis=1) - is_value
    boundaries_before = xp.arange(n + m) - values_before
    rank = xp.argsort(order, axis=1)                 # where each merged element went
    placed = rank[:, n:] if right else rank[:, :m]
    return xp.take_along_axis(boundaries_before, placed, 1).reshape(lead + (m,))


def bucketize(input, boundaries, *, out_int32=False, right=False):
    """The bucket of each value among the sorted 1-D ``boundaries``: i with
    boundaries[i-1] < x <= boundaries[i] (``right=True``: boundaries[i-1] <= x < boundaries[i])."""
    if not isinstance(boundaries, T.Tensor) or boundaries.ndim != 1:
        raise ValueError(f"bucketize: boundaries must be a 1-D tensor, got "
                         f"{getattr(boundaries, 'shape', type(boundaries).__name__)}")
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


def histc(input, bins=100, min=0, max=0):
    """Counts of ``input``'s values in ``bins`` equal bins over [min, max] (the data's own
    range when min == max), values outside ignored, in input's dtype, as torch.histc."""
    if not isinstance(input, T.Tensor) or not dtypes.is_floating(input.dtype):
        raise TypeError(f"histc: input must be a floating point tensor, got "
                        f"{getattr(input, 'dtype', type(input).__name__)}")
    if not is_int(bins) or bins <= 0:
        raise ValueError(f"histc: bins must be a positive int, got {bins!r}")
    if min > max:
        raise ValueError(f"histc: min ({min}) must not exceed max ({max})")
    x = input._data.reshape(-1)
    xp = xp_of(x)
    if min == max and x.size:              # the data's range, on the device
        low, high = xp.nanmin(x), xp.nanmax(x)
    else:
        low, high = x.dtype.type(min), x.dtype.type(max)
    widen = low == high                     # as torch: an empty range becomes [min-1, max+1]
    low, high = xp.where(widen, low - 1, low), xp.where(widen, high + 1, high)
    inside = (x >= low) & (x <= high)
    with quiet(xp):                        # NaN and far-out values: masked below
        position = ((x - low) * bins / (high - low)).astype(np.int64)
    position = xp.where(inside, xp.minimum(position, bins - 1), 0)
    counts = xp.zeros(bins, x.dtype)
    backend.scatter_add(counts, position, inside.astype(x.dtype))
    return T.Tensor._make(counts, False, None, 0, input._device)


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct values of ``input`` (flattened, or the distinct slices along ``dim``),
    sorted; with ``return_inverse`` where each element (slice) went, with ``return_counts`` how
    often each occurs. The output size depends on the data: on the cuda device this reads it."""
    if not isinstance(input, T.Tensor):
        raise TypeError(f"unique: input must be a Tensor, got {type(input).__name__}")
    data = input._data
    xp = xp_of(data)
    backend.count_read(data, "unique (a data-dependent size)")
    keys = backend.sortable(data)
    if dim is None:
        found = xp.unique(keys.reshape(-1), return_inverse=True, return_counts=True)
        inverse_shape = data.shape
    else:
        axis = normalize_axis(dim, input.ndim, "unique")
        found = xp.unique(keys, return_inverse=True, return_counts=True, axis=axis)
        inverse_shape = (data.shape[axis],)
    values, inverse, counts = found
    values = backend.cast(values, data.dtype)           # exact: widened bfloat16 goes back
    wrap = lambda a: T.Tensor._make(a, False, None, 0, input._device)  # noqa: E731
    out = [wrap(values)]
    if return_inverse:
        out.append(wrap(inverse.reshape(inverse_shape).astype(np.int64, copy=False)))
    if return_counts:
        out.append(wrap(counts.astype(np.int64, copy=False)))
    return out[0] if len(out) == 1 else tuple(out)


OrderMixin.histc, OrderMixin.unique = histc, unique        # torch's Tensor methods too
