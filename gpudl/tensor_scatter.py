"""torch's writes by index beyond scatter/scatter_add/index_add: scatter_reduce and
index_reduce (sum, prod, mean, amax, amin), index_copy, index_put, put, masked_scatter, the
scatters into a view (select_scatter, slice_scatter, diagonal_scatter), fill_diagonal_, and the
in-place forms (scatter_, scatter_add_, index_add_, ...).

Writes go through ops.shape.IndexPut (copy, put, add) and ScatterReduce below; in-place forms
run the out-of-place op through gpudl.inplace, as every gpudl in-place op does.
"""

import numpy as np

from . import autograd, backend, dtypes, inplace
from .amp.autocast_mode import cast_inputs, state as _autocast
from .autograd import ArrayFunction
from .functions import require_tensors
from .ops import shape as S
from .ops import sparse, strided
from .ops._util import is_int, normalize_axis, quiet, xp_of
from .tensor import Tensor, where
from .tensor_index import _along, _check_index_range, _index_array, _index_tensor, _source

_REDUCTIONS = ("sum", "prod", "mean", "amax", "amin")


# ----------------------------------------------------------------- scatter_reduce
def _segment_reduce(reduce, target, values, size, xp):
    """Per target slot (0..size-1) the ``reduce`` of ``values`` sent to it (flat arrays), and
    how many were: a sort by slot, a segmented doubling scan, each segment's last element."""
    order = xp.argsort(target, kind="stable")
    slots, ordered = target[order], values[order]
    combine = {"sum": xp.add, "mean": xp.add, "prod": xp.multiply, "amax": xp.maximum,
               "amin": xp.minimum}[reduce]
    n, shift = ordered.size, 1
    while shift < n:                 # scan within runs of equal slots
        same = slots[shift:] == slots[:-shift]
        ordered[shift:] = xp.where(same, combine(ordered[shift:], ordered[:-shift]),
                                   ordered[shift:])
        shift *= 2
    last = xp.ones(n, bool)
    last[:-1] = slots[1:] != slots[:-1]
    reduced = xp.zeros(size + 1, values.dtype)     # slot ``size`` takes the partial results:
    reduced[xp.where(last, slots, size)] = ordered    # no mask, so no read of the device
    reduced = reduced[:size]
    counts = xp.zeros(size, np.int64)
    backend.scatter_add(counts, target, xp.ones(target.size, np.int64))
    return reduced, counts


def _flat_positions(where, shape, xp):
    """The flat positions (in an array of ``shape``) that the index tuple ``where`` names."""
    flat = 0
    for d, part in enumerate(where):
        flat = flat + part * int(np.prod(shape[d + 1:], dtype=np.int64))
    return xp.broadcast_to(flat, np.broadcast_shapes(*(p.shape for p in where))).reshape(-1)


class ScatterReduce(ArrayFunction):
    """``a`` with ``src`` reduced into the flat positions ``target`` (one per src element),
    together with a's own value when ``include_self``; slots no src reaches keep a's value."""

    @staticmethod
    def forward(ctx, a, src, target, reduce, include_self):
        xp = xp_of(a)
        values = src.reshape(-1)
        with quiet(xp):
            reduced, counts = _segment_reduce(reduce, target, values, a.size, xp)
            flat = a.reshape(-1)
            hit = counts > 0
            if include_self:
                own = {"sum": xp.add, "mean": xp.add, "prod": xp.multiply, "amax": xp.maximum,
                       "amin": xp.minimum}[reduce]
                reduced = own(reduced, flat)
            if reduce == "mean":
                divisor = counts + include_self
                reduced = (reduced / xp.maximum(divisor, 1)).astype(a.dtype) \
                    if a.dtype.kind == "f" else reduced // xp.maximum(divisor, 1)
            out = xp.where(hit, reduced, flat).astype(a.dtype, copy=False).reshape(a.shape)
        ctx.conf = (a, src, target, reduce, include_self, out, counts)
        return out

    @staticmethod
    def backward(ctx, g):
        a, src, target, reduce, include_self, out, counts = ctx.conf
        xp = xp_of(g)
        flat_g, flat_a, flat_out = g.reshape(-1), a.reshape(-1), out.reshape(-1)
        hit = counts > 0
        values = src.reshape(-1)
        with quiet(xp):
            if reduce in ("sum", "mean"):
                scale = 1 if reduce == "sum" else 1 / xp.maximum(counts + include_self, 1)
                g_self = flat_g * xp.where(hit, scale if include_self else 0, 1)
                g_src = (flat_g * scale)[target] if reduce == "mean" else flat_g[target]
            elif reduce == "prod":
                g_self, g_src = _prod_grads(flat_a, values, target, include_self, flat_g,
                                            flat_out, hit, xp)
            else:
                share, to_self, to_src = tie_shares(flat_a, values, target, flat_out,
                                                    include_self, hit, g.dtype)
                each = flat_g / share
                g_self, g_src = each * to_self, each[target] * to_src
        return (g_self.reshape(a.shape).astype(a.dtype, copy=False),
                g_src.reshape(src.shape).astype(src.dtype, copy=False), None, None, None)


def tie_shares(a, values, target, out, include_self, hit, dtype):
    """amax/amin: a slot's gradient is shared evenly by the elements equal to its result (as
    torch: a's value counts among the equal ones even when not included). Returns the number
    sharing each slot (at least 1) and the masks (in ``dtype``) of a's and src's sharers."""
    xp = xp_of(a)
    self_is = a == out
    src_is = values == out[target]
    share = self_is.astype(dtype)
    backend.scatter_add(share, target, src_is.astype(dtype))
    to_self = self_is & (bool(include_self) | ~hit)
    return xp.maximum(share, 1), to_self.astype(dtype), src_is.astype(dtype)


def _prod_grads(a, values, target, include_self, g, out, hit, xp):
    """Gradients of a scatter product: each factor's is the product of the others, taken
    without dividing by a zero factor (the slot's product with its zeros replaced by 1 serves
    a slot's only zero; a slot with two zeros gives its factors none)."""
    zero_src = values == 0
    zeros_per_slot = xp.zeros(a.size, np.int64)
    backend.scatter_add(zeros_per_slot, target, zero_src.astype(np.int64))
    zeros_per_slot = zeros_per_slot + (include_self & (a == 0))
    without_zeros, _ = _segment_reduce("prod", target, xp.where(zero_src, 1, values), a.size, xp)
    if include_self:
        without_zeros = without_zeros * xp.where(a == 0, 1, a)
    alone = xp.where(zeros_per_slot == 1, g * without_zeros, 0)       # for a slot's one zero
    if include_self:
        g_self = xp.where(hit, xp.where(a == 0, alone, g * out / xp.where(a == 0, 1, a)), g)
    else:
        g_self = xp.where(hit, 0, g)
    g_src = xp.where(zero_src, alone[target], (g * out)[target] / xp.where(zero_src, 1, values))
    return g_self, g_src


def _reduce_arg(op, reduce):
    if reduce not in _REDUCTIONS:
        raise RuntimeError(f"{op}: reduce argument must be one of {', '.join(_REDUCTIONS)}, "
                           f"got {reduce!r}")


def scatter_reduce(input, dim, index, src, reduce, *, include_self=True):
    """A copy of ``input`` with each ``src[i][j]`` reduced into position ``index[i][j]`` along
    ``dim`` (as scatter addresses it) by ``reduce`` (sum, prod, mean, amax, amin), with the
    input's own value unless ``include_self=False``; positions no index names keep theirs."""
    require_tensors("scatter_reduce", input=input, src=src)
    _reduce_arg("scatter_reduce", reduce)
    if src.dtype != input.dtype:
        raise RuntimeError(f"scatter_reduce: expected self.dtype to be equal to src.dtype, got "
                           f"{input.dtype} and {src.dtype}")
    if input.ndim == 0:
        return scatter_reduce(input.reshape(1), 0, _index_tensor(index).reshape(-1), src.reshape(-1),
                              reduce, include_self=include_self).reshape(())
    axis = normalize_axis(dim, input.ndim, "scatter_reduce")
    raw = _index_array("scatter_reduce", index, input)
    source = _source("scatter_reduce", src, input, raw.shape)
    where = _along("scatter_reduce", raw, axis, input, input.shape[axis])
    xp = xp_of(input._data)
    target = _flat_positions(tuple(xp.where(p < 0, p + input.shape[d], p) if d == axis else p
                                   for d, p in enumerate(where)), input.shape, xp)
    return ScatterReduce.apply(input, source, target, reduce, bool(include_self))


def index_reduce(input, dim, index, source, reduce, *, include_self=True):
    """A copy of ``input`` with the slices of ``source`` reduced into the slices at the 1-D
    ``index`` along ``dim`` by ``reduce`` (prod, mean, amax, amin)."""
    require_tensors("index_reduce", input=input, source=source)
    if input.ndim == 0:
        return index_reduce(input.reshape(1), dim, index, source.reshape(-1), reduce,
                            include_self=include_self).reshape(())
    if reduce not in ("prod", "mean", "amax", "amin"):
        raise RuntimeError(f"index_reduce: reduce argument must be either prod, mean, amax or "
                           f"amin, got {reduce!r}")
    axis = normalize_axis(dim, input.ndim, "index_reduce")
    rows = _index_array("index_reduce", index, input, ndim=1).reshape(-1)
    expected = input.shape[:axis] + (rows.size,) + input.shape[axis + 1:]
    if source.shape != expected:
        raise RuntimeError(f"index_reduce: source must have shape {expected}, got "
                           f"{source.shape}")
    shape = [1] * input.ndim
    shape[axis] = rows.size
    spread = xp_of(rows).broadcast_to(rows.reshape(shape), expected)
    return scatter_reduce(input, axis, Tensor._make(spread, False, None, 0, input._device),
                          source, reduce, include_self=include_self)


# ----------------------------------------------------------------- copies and puts
def index_copy(input, dim, index, source):
    """A copy of ``input`` with the slices at the 1-D ``index`` along ``dim`` replaced by those
    of ``source``."""
    require_tensors("index_copy", input=input, source=source)
    if _autocast.active:
        input, source = cast_inputs("index_copy", input, source)
    if input.ndim == 0:
        return index_copy(input.reshape(1), 0, index, source.reshape(1)).reshape(())
    axis = normalize_axis(dim, input.ndim, "index_copy")
    rows = _index_array("index_copy", index, input, ndim=1).reshape(-1)
    expected = input.shape[:axis] + (rows.size,) + input.shape[axis + 1:]
    if source.shape != expected and not (source.ndim == 0 and rows.size == 1 and
                                         input.ndim <= 1):
        raise RuntimeError(f"index_copy: source must have shape {expected}, got {source.shape}")
    if source.dtype != input.dtype:
        raise RuntimeError(f"index_copy: self and source expected to have the same dtype, got "
                           f"{input.dtype} and {source.dtype}")
    _check_index_range("index_copy", rows, input.shape[axis], f"dim {dim} of size "
                       f"{input.shape[axis]}")
    return S.IndexPut.apply(input, (slice(None),) * axis + (rows,), source.reshape(expected),
                            False)


def index_put(input, indices, values, accumulate=False):
    """A copy of ``input`` with ``values`` (broadcast) written at ``input[indices]`` (a tuple of
    index or bool tensors), added instead when ``accumulate`` (repeated positions add up)."""
    require_tensors("index_put", input=input, values=values)
    if _autocast.active:
        input, values = cast_inputs("index_put", input, values)
    if values.dtype != input.dtype:
        raise RuntimeError(f"index_put: values must have the dtype of self ({input.dtype}), "
                           f"got {values.dtype}")
    if not isinstance(indices, (tuple, list)) or not all(isinstance(i, Tensor) or i is None
                                                          for i in indices):
        raise TypeError("index_put: indices must be a tuple of Tensors")
    xp = xp_of(input._data)
    where = tuple(slice(None) if i is None else i._data for i in indices)
    if len(where) > input.ndim:
        raise IndexError(f"index_put: too many indices for a tensor of dimension {input.ndim}")
    queued = len(backend._deferred)
    S.check_advanced(input.shape, where, "index_put")      # the index range: queued on cuda
    shape = xp.broadcast_to(xp.zeros((), bool), input.shape)[where].shape
    try:
        values = values.expand(*shape) if values.shape != shape else values
    except ValueError:
        del backend._deferred[queued:]          # a refused call leaves no check behind
        raise RuntimeError(f"index_put: shape mismatch: value tensor of shape {values.shape} "
                           f"cannot be broadcast to indexing result of shape {shape}") from None
    return S.IndexPut.apply(input, where, values, bool(accumulate))


def put(input, index, source, accumulate=False):
    """A copy of ``input`` with the elements of ``source`` written at the flat positions
    ``index`` (negative from the end), added instead when ``accumulate``."""
    require_tensors("put", input=input, index=index, source=source)
    raw = _index_array("put", index, input).reshape(-1)
    if raw.size != source.numel():
        raise RuntimeError(f"put: expected source and index to have the same number of "
                           f"elements, but got source: {source.numel()}, index: {raw.size}")
    if source.dtype != input.dtype:
        raise RuntimeError(f"put: expected self and source to have the same dtype, got "
                           f"{input.dtype} and {source.dtype}")
    _check_index_range("put", raw, input.numel(), f"a tensor of {input.numel()} elements",
                       negative=True)
    flat = S.IndexPut.apply(input.reshape(-1), (raw,), source.reshape(-1), bool(accumulate))
    return flat.reshape(input.shape)


def masked_scatter(input, mask, source):
    """A copy of ``input`` with the elements where the bool ``mask`` holds replaced, in
    order, by the first elements of ``source``. Reads nothing: element i takes source's
    element (the count of masked elements before it), a gather; too short a ``source`` is
    refused at once on the cpu, at the next device read on the cuda device."""
    require_tensors("masked_scatter", input=input, mask=mask, source=source)
    if mask.dtype != dtypes.bool_:
        raise RuntimeError(f"masked_scatter: expected BoolTensor for mask, got {mask.dtype}")
    if source.dtype != input.dtype:
        raise RuntimeError(f"masked_scatter: expected self and source to have same dtypes but "
                           f"got {input.dtype} and {source.dtype}")
    try:
        shape = np.broadcast_shapes(input.shape, mask.shape)
    except ValueError:
        raise RuntimeError(f"masked_scatter: mask of shape {mask.shape} does not broadcast "
                           f"with {input.shape}") from None
    xp = xp_of(mask._data)
    chosen = xp.broadcast_to(mask._data, shape)
    # the source element each one takes (a running count: int64, whatever a bool sum gives)
    taken_from = xp.cumsum(chosen.reshape(-1).astype(np.int64)) - 1
    size = source.numel()

    def too_short(count, late):
        return RuntimeError(f"masked_scatter: expected source to have at least {count + 1} "
                            f"elements (the ones in mask), got {size}"
                            + (sparse.DEFERRED_NOTE if late else ""))
    sparse.check_range(taken_from[-1:], max(size, 0), too_short, low=-1)
    if size == 0:                                       # nothing to take (nor, checked, to put)
        return input.expand(*shape).clone() if input.shape != shape else input.clone()
    index = Tensor._make(xp.clip(taken_from, 0, size - 1), False, None, 0, source._device)
    taken = source.reshape(-1).index_select(0, index).reshape(shape)
    return where(Tensor._make(chosen, False, None, 0, mask._device), taken, input)


# ----------------------------------------------------------------- scatters into a view
def _into_view(op, input, src, take, view_shape):
    require_tensors(op, input=input, src=src)
    if src.shape != view_shape:
        raise RuntimeError(f"{op}: expected src to have a size equal to the slice of self. src "
                           f"size = {list(src.shape)}, slice size = {list(view_shape)}")
    if src.dtype != input.dtype:
        src = src.astype(input.dtype)
    return strided.IntoView.apply(input, src, take)


def select_scatter(input, src, dim, index):
    """A copy of ``input`` with ``src`` written into ``input.select(dim, index)``."""
    require_tensors("select_scatter", input=input)
    view = input.select(dim, index)               # checks dim and index
    axis = normalize_axis(dim, input.ndim, "select_scatter")
    spot = (slice(None),) * axis + (int(index), Ellipsis)        # a view even when 0-d
    return _into_view("select_scatter", input, src, lambda a: a[spot], view.shape)


def slice_scatter(input, src, dim=0, start=None, end=None, step=1):
    """A copy of ``input`` with ``src`` written into ``input[..., start:end:step, ...]`` (along
    ``dim``)."""
    require_tensors("slice_scatter", input=input)
    if not is_int(step) or step <= 0:
        raise RuntimeError(f"slice_scatter: slice step must be positive, got {step!r}")
    axis = normalize_axis(dim, input.ndim, "slice_scatter")
    spot = (slice(None),) * axis + (slice(start, end, step),)
    view_shape = input.shape[:axis] + (len(range(*slice(start, end, step).indices(
        input.shape[axis]))),) + input.shape[axis + 1:] if input.ndim else ()
    return _into_view("slice_scatter", input, src, lambda a: a[spot], view_shape)


def diagonal_scatter(input, src, offset=0, dim1=0, dim2=1):
    """A copy of ``input`` with ``src`` written into ``input.diagonal(offset, dim1, dim2)``."""
    require_tensors("diagonal_scatter", input=input)
    view = input.diagonal(offset, dim1, dim2)      # checks the dims
    d1, d2 = normalize_axis(dim1, input.ndim, "diagonal_scatter"), normalize_axis(
        dim2, input.ndim, "diagonal_scatter")
    return _into_view("diagonal_scatter", input, src,
                      lambda a: strided.diagonal_view(a, int(offset), d1, d2), view.shape)


@autograd.recorded("inplace")
def fill_diagonal_(self, fill_value, wrap=False):
    """Fill the main diagonal (all dims equal when more than 2) with ``fill_value``; a tall
    matrix restarts its diagonal every cols + 1 rows when ``wrap``."""
    if self.ndim < 2:
        raise RuntimeError(f"fill_diagonal_: dimensions must larger than 1, got {self.ndim}")
    if self.ndim > 2 and len(set(self.shape)) != 1:
        raise RuntimeError(f"fill_diagonal_: all dimensions of input must be of equal length, "
                           f"got shape {self.shape}")
    rows, cols = self.shape[0], self.shape[-1]
    xp = backend.xp_for(self._device)
    if self.ndim == 2:
        step = cols + 1
        end = rows * cols if wrap and rows > cols + 1 else min(rows, cols) * cols
    else:
        step = sum(int(np.prod(self.shape[d + 1:])) for d in range(self.ndim))
        end = self.numel()
    positions = Tensor._make(xp.arange(0, end, step, dtype=np.int64), False, None, 0,
                             self._device)
    value = fill_value if isinstance(fill_value, Tensor) else \
        Tensor._make(xp.asarray(fill_value, self.dtype), False, None, 0, self._device)
    values = value.astype(self.dtype).expand(positions.shape[0])
    return inplace.apply(self, "fill_diagonal_",
                         lambda t: put(t, positions, values), (value,))


# ----------------------------------------------------------------- in-place forms
def _in_place(name, method, reads):
    """``name``: ``method`` in place; ``reads(args, kwargs)``: the tensors it reads."""
    @autograd.recorded("inplace")
    def edit(self, *args, **kwargs):
        return inplace.apply(self, name, lambda t: method(t, *args, **kwargs),
                             reads(args, kwargs))
    edit.__name__ = name
    edit.__doc__ = f"{name[:-1]} in place."
    return edit


def _tensors_in(args, kwargs):
    return tuple(a for a in (*args, *kwargs.values()) if isinstance(a, Tensor))


def _scatter_with_reduce(self, dim, index, src=None, value=None, *, reduce=None):
    if reduce is None:
        return self.scatter(dim, index, src, value)
    if reduce not in ("add", "multiply"):
        raise RuntimeError(f"scatter_: reduce argument must be either add or multiply, got "
                           f"{reduce!r}")
    if src is None:
        src = value if isinstance(value, Tensor) else None
    raw = _index_array("scatter_", index, self)
    if src is None:
        src = Tensor._make(xp_of(raw).full(raw.shape, value, self.dtype), False, None, 0,
                           self._device)
    return scatter_reduce(self, dim, index, src, "sum" if reduce == "add" else "prod")


for _name, _method_of in (("scatter_", _scatter_with_reduce),
                          ("scatter_add_", Tensor.scatter_add),
                          ("index_add_", Tensor.index_add),
                          ("index_copy_", index_copy), ("index_put_", index_put),
                          ("index_reduce_", index_reduce), ("scatter_reduce_", scatter_reduce),
                          ("masked_scatter_", masked_scatter), ("put_", put)):
    setattr(Tensor, _name, _in_place(_name, _method_of, _tensors_in))
for _function in (scatter_reduce, index_reduce, index_copy, index_put, put, masked_scatter,
                  select_scatter, slice_scatter, diagonal_scatter):
    setattr(Tensor, _function.__name__, _function)
Tensor.fill_diagonal_ = fill_diagonal_
del _name, _method_of, _function
