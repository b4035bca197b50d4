"""Tensor methods that pick or place elements by index: gather, scatter, index_select,
index_add, masked_select, narrow, sort, argsort, topk, flip, roll, tril, triu (a mixin of Tensor).

Reads go through ``GetItem`` (its backward accumulates repeated indices); writes through
``IndexPut``; each method only builds the index tuple and checks its arguments.
"""

from collections import namedtuple

import numpy as np

from .amp.autocast_mode import cast_inputs, state as _autocast
from .dtypes import is_floating
from . import backend
from . import tensor as T          # Tensor itself; resolved at call time (tensor.py imports us)
from .ops import shape as S
from .ops._util import normalize_axes, normalize_axis

Sorted = namedtuple("Sorted", ["values", "indices"])


def _index_array(op, index, like, ndim=None):
    """The raw int64 array of an index tensor (or list), on ``like``'s device."""
    raw = index._data if isinstance(index, T.Tensor) else T._raw(np.asarray(index), like)
    if raw.dtype.kind not in "iu":
        raise TypeError(f"{op}: index must be an integer tensor, got {raw.dtype}")
    if ndim is not None and raw.ndim != ndim and not (ndim == 1 and raw.ndim == 0):
        raise ValueError(f"{op}: index must be {ndim}-D, got shape {raw.shape}")
    return raw.astype(np.int64, copy=False)


def _along(op, index, axis, like, size):
    """The index tuple that reads ``index`` along ``axis`` and 0..n-1 along every other axis
    (torch's gather/scatter addressing: out[i][j][k] = x[i][index[i][j][k]][k] for axis 1).
    On the cuda device its range check is queued (a device-side check): call it after the op's
    other refusals, so that a refused call leaves no check behind."""
    if index.ndim != like.ndim:
        raise ValueError(f"{op}: index has {index.ndim} dims but the tensor has {like.ndim}")
    for d, (n, m) in enumerate(zip(index.shape, like.shape)):
        if d != axis and n > m:
            raise ValueError(f"{op}: index shape {tuple(index.shape)} is larger than the "
                             f"tensor's {like.shape} in dim {d}")
    _check_index_range(op, index, size, f"dim {axis} of size {size}")
    xp = backend.get_array_module(index)
    grid = list(xp.ix_(*(xp.arange(n) for n in index.shape))) if index.ndim else []
    grid[axis] = index
    return S.RangeChecked(grid)


def _source(op, src, like, shape):
    """``src`` (a tensor or a number) cut or broadcast to ``shape``, as scatter reads it."""
    if not isinstance(src, T.Tensor):
        return T.Tensor._make(backend.xp_for(like._device).full(shape, src, like.dtype), False,
                              None, 0, like._device)
    if src.ndim != len(shape) or any(n < m for n, m in zip(src.shape, shape)):
        raise ValueError(f"{op}: src of shape {src.shape} is smaller than index {shape}")
    if src.dtype != like.dtype:
        raise TypeError(f"{op}: src has dtype {src.dtype} but the tensor has {like.dtype}")
    return src[tuple(slice(0, n) for n in shape)]


def _index_tensor(index):
    """``index`` (a Tensor, array or list of ints) as a Tensor keeping its integer dtype."""
    from .creation import tensor
    return index if isinstance(index, T.Tensor) else tensor(index)


class IndexMixin:
    """Indexing methods; ``self`` is a Tensor."""

    __slots__ = ()

    def gather(self, dim, index):
        """Values at ``index`` along ``dim``: out[i][j] = self[i][index[i][j]] for dim 1 (index
        has self's number of dims, no larger elsewhere). Example: ``x.gather(1, idx)``."""
        raw = _index_array("gather", index, self)
        if raw.size == 0:                        # an empty result, still in the graph
            return S.GetItem.apply(self.reshape(-1), raw.reshape(-1)).reshape(raw.shape)
        if self.ndim == 0:                       # torch treats a 0-d tensor as one element
            return self.reshape(1).gather(0, _index_tensor(index).reshape(-1)).reshape(raw.shape)
        axis = normalize_axis(dim, self.ndim, "gather")
        index = raw
        return S.GetItem.apply(self, _along("gather", index, axis, self, self.shape[axis]
                                            if self.ndim else 1))

    def _put(self, op, dim, index, src, accumulate):
        if self.ndim == 0:
            src = src.reshape(1) if isinstance(src, T.Tensor) and src.ndim == 0 else src
            return self.reshape(1)._put(op, 0, _index_tensor(index).reshape(1), src,
                                        accumulate).reshape(())
        axis = normalize_axis(dim, self.ndim, op)
        index = _index_array(op, index, self)
        source = _source(op, src, self, index.shape)     # refused before _along queues a check
        where = _along(op, index, axis, self, self.shape[axis] if self.ndim else 1)
        return S.IndexPut.apply(self, where, source, accumulate)

    def scatter(self, dim, index, src=None, value=None, *, reduce=None):
        """A copy with ``src`` (or the number ``value``) written at ``index`` along ``dim``,
        gather's inverse: out[i][index[i][j]] = src[i][j] for dim 1."""
        if reduce is not None:
            raise NotImplementedError(f"scatter: reduce={reduce!r} is not supported; use "
                                      "scatter_add")
        if (src is None) == (value is None):
            raise TypeError("scatter: pass exactly one of src or value")
        return self._put("scatter", dim, index, src if value is None else value, False)

    def scatter_add(self, dim, index, src):
        """A copy with ``src`` added at ``index`` along ``dim`` (repeated indices add up)."""
        if _autocast.active:
            self, index, src = cast_inputs("scatter_add", self, index, src)
        return self._put("scatter_add", dim, index, src, True)

    def index_select(self, dim, index):
        """The slices at the 1-D ``index`` along ``dim``, in that order (repeats allowed)."""
        if self.ndim == 0:
            return self.reshape(1).index_select(0, index).reshape(())
        axis = normalize_axis(dim, self.ndim, "index_select")
        rows = _index_array("index_select", index, self, ndim=1).reshape(-1)
        _check_rows("index_select", rows, self.shape[axis] if self.ndim else 1)
        return S.GetItem.apply(self, (slice(None),) * axis + (rows,))

    def index_add(self, dim, index, source, *, alpha=1):
        """A copy with ``alpha * source`` added to the slices at ``index`` along ``dim``; source
        has self's shape with len(index) along dim."""
        if self.ndim == 0 and isinstance(source, T.Tensor) and source.ndim == 0:
            return self.reshape(1).index_add(0, index, source.reshape(1), alpha=alpha).reshape(())
        axis = normalize_axis(dim, self.ndim, "index_add")
        rows = _index_array("index_add", index, self, ndim=1).reshape(-1)
        expected = self.shape[:axis] + (rows.size,) + self.shape[axis + 1:]
        if not isinstance(source, T.Tensor) or source.shape != expected:
            raise ValueError(f"index_add: source must be a tensor of shape {expected}, got "
                             f"{getattr(source, 'shape', type(source).__name__)}")
        _check_rows("index_add", rows, self.shape[axis] if self.ndim else 1)
        source = source if alpha == 1 else source * alpha
        source = source if source.dtype == self.dtype else source.astype(self.dtype)
        return S.IndexPut.apply(self, (slice(None),) * axis + (rows,), source, True)

    def masked_select(self, mask):
        """The 1-D tensor of elements where the bool ``mask`` (broadcast) holds, in order. Its
        size depends on the data: on the cuda device this reads the device (a counted sync),
        as torch does."""
        mask = T._raw(mask, self)
        if getattr(mask, "dtype", None) != np.bool_:
            raise TypeError(f"masked_select: mask must be a bool tensor, got "
                            f"{getattr(mask, 'dtype', type(mask).__name__)}")
        try:
            shape = np.broadcast_shapes(self.shape, mask.shape)
        except ValueError:
            raise ValueError(f"masked_select: mask of shape {mask.shape} does not broadcast "
                             f"with {self.shape}") from None
        xp = backend.get_array_module(mask)
        return S.GetItem.apply(self.expand(*shape), xp.broadcast_to(mask, shape))

    def narrow(self, dim, start, length):
        """``length`` elements from ``start`` along ``dim`` (a view in torch, a slice here)."""
        if self.ndim == 0:
            raise RuntimeError("narrow: cannot narrow a 0-d tensor (it has no dim to narrow)")
        axis = normalize_axis(dim, self.ndim, "narrow")
        if isinstance(start, T.Tensor):
            if start.ndim or start.dtype.kind not in "iu":
                raise TypeError(f"narrow: start must be an int or a 0-d integer tensor, got "
                                f"{start.dtype} of shape {start.shape}")
            start = start.item()
        if isinstance(start, bool) or isinstance(length, bool):
            raise TypeError("narrow: start and length must be ints, got a bool")
        n = self.shape[axis]
        if not -n <= start <= n:            # torch: a bad start is an index error...
            raise IndexError(f"narrow: start {start} is out of range for dim {dim} of size {n}")
        start = start + n if start < 0 else start
        if not (0 <= length and start + length <= n):    # ...a bad length a runtime one
            raise RuntimeError(f"narrow: start {start} and length {length} do not fit in dim "
                             f"{dim} of size {n}")
        return self[(slice(None),) * axis + (slice(start, start + length),)]

    def argsort(self, dim=-1, descending=False, stable=False):
        """int64 indices that sort along ``dim``; ties keep their order (always stable)."""
        axis = normalize_axis(dim, self.ndim, "argsort")
        data = backend.sortable(self._data if self.ndim else self._data.reshape(1))
        xp = backend.get_array_module(data)
        if descending:       # a stable descending order: sort the negation (bools, unsigned
            # ints widened first: their negation would wrap)
            data = -(data.astype(np.int64) if data.dtype.kind in "bu" else data)
            if is_floating(data.dtype):     # NaN counts as the largest, as in torch: first
                data = xp.where(xp.isnan(data), -xp.inf, data)
        order = xp.argsort(data, axis=axis, kind="stable").astype(np.int64)
        order = order if self.ndim else order.reshape(())
        return T.Tensor._make(order, False, None, 0, self._device)

    def sort(self, dim=-1, descending=False, stable=False):
        """``(values, indices)`` sorted along ``dim``; values carry the gradient."""
        order = self.argsort(dim, descending, stable)
        return Sorted(self.gather(dim, order) if self.ndim else self.clone(), order)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        """``(values, indices)`` of the ``k`` largest (or smallest) along ``dim``, sorted."""
        axis = normalize_axis(dim, self.ndim, "topk")
        n = self.shape[axis] if self.ndim else 1
        if not 0 <= k <= n:
            raise IndexError(f"topk: k={k} is out of range for dim {dim} of size {n}")
        order = self.argsort(dim, descending=largest)
        if self.ndim:
            order = order[(slice(None),) * axis + (slice(0, k),)]
            return Sorted(self.gather(dim, order), order)
        return Sorted(self.clone() if k else self[None][:0].reshape(()), order)

    def flip(self, *args, dims=None):
        """A copy with the order along ``dims`` reversed: ``x.flip(0)``, ``x.flip((0, 1))``."""
        dims = args if dims is None else (dims,)
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return S.Flip.apply(self, normalize_axes(tuple(dims), self.ndim, "flip")) if self.ndim \
            else self.clone()

    def roll(self, shifts, dims=None):
        """Elements shifted cyclically by ``shifts`` along ``dims`` (the flattened tensor when
        dims is None), as torch.roll."""
        if not isinstance(shifts, (int, np.integer)) and len(shifts) == 0:
            raise RuntimeError("roll: shifts must hold at least one int, got an empty sequence")
        if dims is None:
            shifts = _ints(shifts, "roll")
            if len(shifts) != 1:
                raise RuntimeError(f"roll: without dims, shifts must be one int (the flattened "
                                   f"tensor's shift), got {shifts}")
            return S.Roll.apply(self.reshape(-1), shifts[0], None).reshape(self.shape)
        shifts, dims = _ints(shifts, "roll"), _ints(dims, "roll")
        if len(shifts) != len(dims):
            raise ValueError(f"roll: shifts {shifts} and dims {dims} must have the same length")
        axes = tuple(normalize_axis(d, self.ndim, "roll") for d in dims)
        return S.Roll.apply(self, shifts, axes)

    def tril(self, diagonal=0):
        """The lower triangle of the last two dims (from ``diagonal``), zeros above."""
        return self._triangle("tril", diagonal, False)

    def triu(self, diagonal=0):
        """The upper triangle of the last two dims (from ``diagonal``), zeros below."""
        return self._triangle("triu", diagonal, True)

    def _triangle(self, op, diagonal, upper):
        if self.ndim < 2:
            raise ValueError(f"{op}: input must have at least 2 dimensions, got shape "
                             f"{self.shape}")
        return S.Triangle.apply(self, int(diagonal), upper)

    def take_along_dim(self, indices, dim=None):
        """Values at ``indices`` along ``dim``, the two broadcast against each other in the
        other dims (torch.take_along_dim); with ``dim=None`` both are flattened."""
        if not isinstance(indices, T.Tensor):
            raise TypeError(f"take_along_dim: indices must be a Tensor, got "
                            f"{type(indices).__name__}")
        raw = _index_array("take_along_dim", indices, self)
        if dim is None:
            return self.reshape(-1).gather(0, T.Tensor._make(raw.reshape(-1), False, None, 0,
                                                             self._device))
        axis = normalize_axis(dim, self.ndim, "take_along_dim")
        _check_rows("take_along_dim", raw, self.shape[axis], negative=True)   # the index given
        raw = _from_the_end(raw, self.shape[axis])
        if raw.ndim != self.ndim:
            raise ValueError(f"take_along_dim: indices must have as many dims as input "
                             f"({self.ndim}), got shape {raw.shape}")
        try:
            shape = list(np.broadcast_shapes(_with(self.shape, axis, 1), _with(raw.shape, axis, 1)))
        except ValueError:
            raise ValueError(f"take_along_dim: input of shape {self.shape} and indices of shape "
                             f"{raw.shape} do not broadcast outside dim {dim}") from None
        source = self.expand(*_with(shape, axis, self.shape[axis]))
        spread = backend.get_array_module(raw).broadcast_to(raw, _with(shape, axis,
                                                                      raw.shape[axis]))
        return source.gather(axis, T.Tensor._make(spread, False, None, 0, self._device))

    def index_fill(self, dim, index, value):
        """A copy with the slices at the 1-D ``index`` along ``dim`` set to ``value`` (a number
        or a 0-d tensor, which then gets the gradient of those slices, each counted once)."""
        if not isinstance(value, (T.Tensor, int, float, bool, np.number)):
            raise TypeError(f"index_fill: value must be a number or a 0-d tensor, got "
                            f"{type(value).__name__}")
        if self.ndim == 0:
            return self.reshape(1).index_fill(0, index, value).reshape(())
        axis = normalize_axis(dim, self.ndim, "index_fill")
        rows = _index_array("index_fill", index, self, ndim=1).reshape(-1)
        _check_rows("index_fill", rows, self.shape[axis], negative=True)
        filled = backend.xp_for(self._device).zeros(self.shape[axis], bool)
        filled[rows] = True                               # repeated rows: set once
        mask = filled.reshape(_with((1,) * self.ndim, axis, self.shape[axis]))
        return self.masked_fill(T.Tensor._make(mask, False, None, 0, self._device), value)

    def nonzero(self, *, as_tuple=False):
        """Indices of the nonzero elements: an int64 (count, ndim) tensor, or with
        ``as_tuple`` one 1-D tensor per dim. Its size depends on the data: on the cuda device
        this reads the device, as torch does."""
        backend.count_read(self._data, "nonzero (a data-dependent size)")
        xp = backend.get_array_module(self._data)
        found = xp.nonzero(self._data if self.ndim else self._data.reshape(1))
        found = [a.astype(np.int64, copy=False) for a in found]
        if as_tuple:
            return tuple(T.Tensor._make(a, False, None, 0, self._device) for a in found)
        out = xp.stack(found, axis=1) if self.ndim else xp.zeros((found[0].size, 0), np.int64)
        return T.Tensor._make(out, False, None, 0, self._device)

    def repeat_interleave(self, repeats, dim=None, *, output_size=None):
        """Each element (or slice along ``dim``) repeated ``repeats`` times in place, an int or
        a 1-D tensor of one count per slice; ``dim=None`` works on the flattened tensor. Tensor
        counts on the cuda device are read (the output size depends on them), as torch does,
        unless ``output_size`` (their sum) is given: then nothing is read, and a wrong sum is
        a deferred device-side check."""
        source = self.reshape(-1) if dim is None else self
        axis = 0 if dim is None else normalize_axis(dim, self.ndim, "repeat_interleave")
        n = source.shape[axis] if source.ndim else 1
        if output_size is not None and (isinstance(output_size, bool) or not isinstance(
                output_size, (int, np.integer)) or output_size < 0):
            raise ValueError(f"repeat_interleave: output_size must be an int >= 0, got "
                             f"{output_size!r}")
        if (output_size is not None and isinstance(repeats, T.Tensor)
                and backend.on_device(repeats._data)):
            index = _positions_on_device(repeats, n, int(output_size), "repeat_interleave")
        else:
            index = _repeated_positions(repeats, n, self._device, "repeat_interleave")
        if output_size is not None and output_size != index.size:
            raise ValueError(f"repeat_interleave: output_size is {output_size} but the repeats "
                             f"add up to {index.size}")
        if source.ndim == 0:
            source = source.reshape(1)
        return S.GetItem.apply(source, (slice(None),) * axis + (index,))

    def diag(self, diagonal=0):
        """A 1-D tensor as the ``diagonal``-th diagonal of a square matrix (zeros elsewhere), or
        the ``diagonal``-th diagonal of a 2-D tensor as a 1-D tensor (torch.diag)."""
        if self.ndim not in (1, 2):
            raise ValueError(f"diag: input must be 1-D or 2-D, got shape {self.shape}")
        if isinstance(diagonal, bool) or not isinstance(diagonal, (int, np.integer)):
            raise TypeError(f"diag: diagonal must be an int, got {diagonal!r}")
        return S.Diag.apply(self, int(diagonal))


def _from_the_end(index, size):
    """``index`` with its negative values counted from the end (take_along_dim along a dim does,
    as torch; the gather it calls does not)."""
    return backend.get_array_module(index).where(index < 0, index + size, index)


def _check_rows(op, rows, size, negative=False):
    _check_index_range(op, rows, size, f"dim of size {size}", negative)


def _check_index_range(op, index, size, where, negative=False):
    """IndexError unless every value of ``index`` lies in [0, size), or [-size, size) where
    torch's op counts negative indices from the end (``negative``: index_fill, take, put; not
    gather, scatter, index_select, index_add, index_copy): at once on the CPU, at the next device
    read on the cuda device (a device-side check, ops/sparse.check_range)."""
    from .ops import sparse           # imports Tensor, which imports this module

    def error(value, late):
        return IndexError(f"{op}: index {value} out of range for {where}"
                          + (sparse.DEFERRED_NOTE if late else ""))
    sparse.check_range(index, size, error, low=-size if negative else 0)


def _ints(value, op):
    values = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if any(not isinstance(v, (int, np.integer)) or isinstance(v, bool) for v in values):
        raise TypeError(f"{op}: expected ints, got {value!r}")
    return tuple(int(v) for v in values)



def _with(shape, axis, size):
    """``shape`` (a sequence) with ``size`` at ``axis``, as a tuple."""
    shape = list(shape)
    shape[axis] = size
    return tuple(shape)


def _positions_on_device(repeats, n, total, op):
    """``_repeated_positions`` of a cuda tensor of counts adding up to ``total``, without a
    read: output j comes from the first position whose running count passes j. Negative counts
    and a sum other than ``total`` are deferred checks."""
    from .ops import sparse           # imports Tensor, which imports this module
    if repeats.dtype.kind not in "iu" or repeats.ndim > 1:
        raise TypeError(f"{op}: repeats must be an int or a 0-d/1-D integer tensor, got "
                        f"{repeats.dtype}{repeats.shape}")
    counts = repeats._data.reshape(-1).astype(np.int64)
    if counts.size not in (1, n):
        raise ValueError(f"{op}: repeats must hold one count per slice ({n}), got {counts.size}")
    xp = backend.get_array_module(counts)
    counts = xp.broadcast_to(counts, (n,))
    if n == 0:
        return xp.zeros(0, np.int64)
    sparse.check_range(counts, np.iinfo(np.int64).max, lambda value, late: ValueError(
        f"{op}: repeats must be non-negative, got {value}" + sparse.DEFERRED_NOTE))
    ends = xp.cumsum(counts)
    backend.defer_check(ends[-1], lambda value: value == total, lambda value: ValueError(
        f"{op}: output_size is {total} but the repeats add up to {value}"
        + sparse.DEFERRED_NOTE))
    positions = xp.searchsorted(ends, xp.arange(total, dtype=np.int64), side="right")
    return xp.minimum(positions, n - 1)     # past the end only when the (checked) sum is short


def _repeated_positions(repeats, n, device, op):
    """The int64 positions 0..n-1, position i repeated ``repeats`` (an int) or ``repeats[i]``
    (a 1-D tensor; a one-element one for all) times, on ``device``."""
    if isinstance(repeats, (int, np.integer)) and not isinstance(repeats, bool):
        if repeats < 0:
            raise ValueError(f"{op}: repeats must be non-negative, got {repeats}")
        xp = backend.xp_for(device)
        return xp.repeat(xp.arange(n, dtype=np.int64), int(repeats))    # no read of the device
    if not isinstance(repeats, T.Tensor) or repeats.dtype.kind not in "iu" or repeats.ndim > 1:
        raise TypeError(f"{op}: repeats must be an int or a 0-d/1-D integer tensor, got "
                        f"{getattr(repeats, 'dtype', type(repeats).__name__)}"
                        f"{getattr(repeats, 'shape', '')}")
    counts = backend.to_numpy(repeats._data, f"{op} (the repeats decide the output size)")
    counts = counts.reshape(-1)
    if counts.size == 1:
        counts = np.full(n, counts[0])
    if counts.size != n:
        raise ValueError(f"{op}: repeats must hold one count per slice ({n}), got {counts.size}")
    if (counts < 0).any():
        raise ValueError(f"{op}: repeats must be non-negative, got {counts.min()}")
    return backend.to_device_array(np.repeat(np.arange(n, dtype=np.int64), counts), device)
