"""Tensor shape methods: reshape, permute, expand, split, indexing (a mixin of Tensor)."""

import math

import numpy as np

from . import backend, dtypes
from . import tensor as T          # Tensor itself; resolved at call time (tensor.py imports us)
from .ops import shape as S
from .ops._util import normalize_axes, normalize_axis


def shape_arg(op, shape):
    """reshape(2, 3) and reshape((2, 3)) alike -> a tuple of ints."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for n in shape:
        if type(n) is not int:
            break
    else:
        return tuple(shape)         # plain ints, the common case: nothing to check or convert
    for n in shape:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise TypeError(f"{op}: size must be ints, got {shape!r}")
    return tuple(int(n) for n in shape)


class Size(tuple):
    """torch.Size: a tuple of sizes with ``numel()``. gpudl's shapes are plain tuples, equal to
    the Size of the same sizes (``x.shape == gd.Size([2, 3])``)."""

    def __new__(cls, sizes=()):
        return super().__new__(cls, shape_arg("Size", (tuple(sizes),)))

    def numel(self):
        return math.prod(self)

    def __repr__(self):
        return f"gpudl.Size({list(self)})"


class ShapeMixin:
    """Shape methods; ``self`` is a Tensor."""

    __slots__ = ()

    def reshape(self, *shape):
        shape = shape_arg("reshape", shape)
        unknown, known, negative = 0, 1, False      # -1s, product of the rest, sizes below -1
        for n in shape:
            if n == -1:
                unknown += 1
            else:
                known *= n
                negative = negative or n < -1
        if unknown > 1 or negative:
            bad = True
        elif unknown:
            bad = known == 0 or self._data.size % known != 0
        else:
            bad = known != self._data.size
        if bad:
            raise ValueError(f"reshape: shape {shape} is invalid for input of shape {self.shape} "
                             f"({self._data.size} elements)")
        return S.Reshape.apply(self, shape)

    def view(self, *shape, dtype=None):
        """reshape that shares memory, as torch's view: refused (not copied) when the memory
        layout cannot be read in the new shape (x.t().view(-1)), so edits through it reach x.
        ``view(dtype)`` reads the same bytes as another dtype (see ``_view_as_dtype``)."""
        if dtype is None and len(shape) == 1 and _is_dtype(shape[0]):
            dtype, shape = shape[0], ()
        if dtype is not None:
            if shape:
                raise TypeError("view: pass a shape or a dtype, not both")
            return _view_as_dtype(self, dtype)
        out = self.reshape(*shape)
        if out._data.size and not backend.get_array_module(self._data).may_share_memory(
                out._data, self._data):
            raise RuntimeError(f"view: shape {out.shape} is not compatible with the memory "
                               f"layout of this {self.shape} tensor (a transpose or a strided "
                               "slice); use .reshape(...) (which copies) instead")
        return out

    def view_as(self, other):
        _need_tensor("view_as", other)
        return self.view(other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        start = normalize_axis(start_dim, self.ndim, "flatten")
        end = normalize_axis(end_dim, self.ndim, "flatten")
        if start > end:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        shape = self.shape
        return self.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])

    def squeeze(self, dim=None):
        axes = normalize_axes(dim, self.ndim, "squeeze")
        keep = [n for i, n in enumerate(self.shape) if not (i in axes and n == 1)]
        return self.reshape(tuple(keep))     # a new view even when nothing is squeezed, as torch

    def unsqueeze(self, dim):
        axis = normalize_axis(dim, self.ndim + 1, "unsqueeze")
        shape = self.shape
        return self.reshape(shape[:axis] + (1,) + shape[axis:])

    def permute(self, *dims):
        dims = shape_arg("permute", dims)
        ndim = self._data.ndim
        axes = normalize_axes(dims, ndim, "permute") if dims else ()
        if len(dims) != ndim or len(set(axes)) != ndim:
            raise ValueError(f"permute: dims {dims} are not a permutation of the {ndim} "
                             f"dimensions of a tensor of shape {self.shape}")
        axes = tuple([d % ndim for d in dims])
        if axes == tuple(range(ndim)):
            return S.Reshape.apply(self, self.shape)    # a new view of the same layout, as torch
        return S.Permute.apply(self, axes)

    def transpose(self, dim0, dim1):
        ndim = self._data.ndim
        if ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
            return S.Reshape.apply(self, self.shape)    # a new view, as permute's identity
        a = normalize_axis(dim0, ndim, "transpose")
        b = normalize_axis(dim1, ndim, "transpose")
        if a == b:
            return S.Reshape.apply(self, self.shape)
        axes = list(range(ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return S.Permute.apply(self, tuple(axes))   # a permutation by construction

    swapaxes = transpose

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t: expects a tensor with <= 2 dimensions, got shape {self.shape}")
        return self.T

    def expand(self, *sizes):
        sizes = shape_arg("expand", sizes)
        lead = len(sizes) - self.ndim
        if lead < 0:
            raise ValueError(f"expand: the number of sizes {sizes} must be at least the number "
                             f"of dimensions of shape {self.shape}")
        shape = []
        for i, n in enumerate(sizes):
            own = self.shape[i - lead] if i >= lead else None
            if n == -1:
                if own is None:
                    raise ValueError(f"expand: -1 is not allowed in a new leading dimension {sizes}")
                n = own
            if own is not None and own != 1 and own != n:
                raise ValueError(f"expand: cannot expand shape {self.shape} to {sizes}: "
                                 f"dimension {i} has size {own}")
            shape.append(n)
        shape = tuple(shape)
        if shape == self.shape:
            return S.Reshape.apply(self, shape)         # a new view of the same layout, as torch
        return S.Expand.apply(self, shape)

    def expand_as(self, other):
        _need_tensor("expand_as", other)
        return self.expand(*other.shape)

    def repeat(self, *repeats):
        repeats = shape_arg("repeat", repeats)
        if len(repeats) < self.ndim:
            raise ValueError(f"repeat: {len(repeats)} repeats given for a tensor of shape "
                             f"{self.shape}; need at least {self.ndim}")
        shape = (1,) * (len(repeats) - self.ndim) + self.shape
        spread = self.reshape(tuple(x for n in shape for x in (1, n)))
        tiled = spread.expand(*(x for r, n in zip(repeats, shape) for x in (r, n)))
        out = tiled.reshape(tuple(r * n for r, n in zip(repeats, shape)))
        # a copy, as torch's: the reshape is a view of self when every repeated dim has size 1
        return out.clone() if out._version_counter is self._version_counter else out

    def contiguous(self):
        """Itself when its memory is in row-major order, else a row-major copy (as torch: edits
        of x.T.contiguous() must not reach x)."""
        return self if self._data.flags.c_contiguous else self.clone()

    def split(self, split_size_or_sections, dim=0):
        axis = normalize_axis(dim, self.ndim, "split")
        n = self.shape[axis]
        if isinstance(split_size_or_sections, (int, np.integer)):
            step = int(split_size_or_sections)
            if step <= 0:
                raise ValueError(f"split: split_size must be positive, got {step}")
            sizes = [min(step, n - s) for s in range(0, n, step)] or [0]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ValueError(f"split: sections {sizes} do not add up to size {n} of dim {dim}")
        out, start = [], 0
        for size in sizes:
            out.append(self[(slice(None),) * axis + (slice(start, start + size),)])
            start += size
        return tuple(out)

    def unbind(self, dim=0):
        """The slices along ``dim``, each without that dim: x.unbind(0) is tuple(x)."""
        axis = normalize_axis(dim, self.ndim, "unbind")
        if self.ndim == 0:
            raise IndexError("unbind: a 0-d tensor has no dim to unbind")
        return tuple(self[(slice(None),) * axis + (i,)] for i in range(self.shape[axis]))

    def chunk(self, chunks, dim=0):
        if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1:
            raise RuntimeError(f"chunk: expected chunks to be an int greater than 0, got "
                               f"{chunks!r}")
        axis = normalize_axis(dim, self.ndim, "chunk")
        n = self.shape[axis]
        if n == 0:                        # torch: ``chunks`` empty pieces, not one
            return tuple(self[(slice(None),) * axis + (slice(0, 0),)] for _ in range(chunks))
        return self.split(-(-n // chunks), dim)

    def __getitem__(self, index):
        """Indexing as torch's. A bool tensor index (a mask) gives a data-dependent size: on the
        cuda device it reads the device (a counted sync), as torch does; integer tensor indices
        read nothing (their range check is deferred)."""
        if S.is_basic_index(index):     # ints, slices, None, ...: nothing to convert or reorder
            return S.GetItem.apply(self, index)
        index = _index_arrays(index, self)
        steps = ints_first(index)
        if steps is not None:
            return S.GetItem.apply(S.GetItem.apply(self, steps[0]), steps[1])
        return S.GetItem.apply(self, index)

    def reshape_as(self, other):
        """``self.reshape(other.shape)``."""
        _need_tensor("reshape_as", other)
        return self.reshape(other.shape)


# --------------------------------------------------------------------- module-level helpers
def _need_tensor(op, other):
    """TypeError naming ``other`` when it is not a Tensor (its shape or dtype is read)."""
    if not isinstance(other, T.Tensor):
        raise TypeError(f"{op}: other must be a Tensor, got {type(other).__name__}")




def _index_arrays(index, like):
    """``index`` with its tensors and lists as arrays on ``like``'s device (and its ``...``
    spelled out where NumPy would place the index arrays' dims elsewhere than torch)."""
    if isinstance(index, tuple):
        return _ellipsis_spelled_out(tuple(_index_part(i, like) for i in index), like.ndim)
    return _index_part(index, like)


def _ellipsis_spelled_out(index, ndim):
    """torch places the dims of an index's arrays where the arrays stand once ``...`` stands
    for its dims; NumPy counts ``...`` as a separator and moves them to the front: for x of
    shape (2, 2, 3), x[:0, [1, 0], ..., [2]] is (0, 2) in torch and (2, 0) in NumPy. With index
    arrays present, ``...`` becomes the slices it stands for."""
    if not any(p is Ellipsis for p in index) or \
            not any(getattr(p, "ndim", 0) for p in index):
        return index
    used = 0
    for p in index:
        if p is None or p is Ellipsis or isinstance(p, (bool, np.bool_)):
            continue
        used += p.ndim if hasattr(p, "ndim") and p.dtype.kind == "b" else 1
    at = next(i for i, p in enumerate(index) if p is Ellipsis)
    return index[:at] + (slice(None),) * max(ndim - used, 0) + index[at + 1:]


def _index_part(index, like):
    if isinstance(index, tuple):
        return tuple(_index_part(i, like) for i in index)
    if isinstance(index, T.Tensor):
        return index._data
    if isinstance(index, list):
        array = np.asarray(index)
        # torch takes [] as an empty index; NumPy makes it float64, which it refuses as one
        return T._raw(array.astype(np.int64) if array.size == 0 else array, like)
    return index


def _is_int(part):
    return isinstance(part, (int, np.integer)) and not isinstance(part, (bool, np.bool_))


def ints_first(index):
    """torch selects with the ints of an index before it applies its index arrays; NumPy treats
    ints as index arrays, which moves the indexed dims to the front when a slice separates them:
    for x of shape (4, 5, 6), x[0, :, [1, 2]] is (5, 2) in torch and (2, 5) in NumPy. For an
    index (of raw parts) mixing ints and arrays, torch's two steps, (ints and slices, arrays on
    the result); None otherwise (NumPy's one step agrees)."""
    if not isinstance(index, tuple):
        return None
    arrays = [p for p in index if hasattr(p, "ndim") and p.ndim]
    if not arrays or not any(_is_int(p) or (hasattr(p, "ndim") and not p.ndim
                                             and p.dtype.kind in "iu") for p in index):
        return None
    if any(isinstance(p, (bool, np.bool_)) or (hasattr(p, "ndim") and not p.ndim
                                                and p.dtype.kind == "b") for p in index):
        return None                       # a bool scalar adds a dim: leave it to NumPy
    first, second = [], []
    for part in index:
        if hasattr(part, "ndim") and part.ndim:           # an index array or a bool mask
            first.extend([slice(None)] * (part.ndim if part.dtype.kind == "b" else 1))
            second.append(part)
        elif _is_int(part):
            first.append(part)
        elif hasattr(part, "ndim"):     # a 0-d int array: an int (NumPy would copy, not view)
            first.append(backend.host_value(part, "indexing with a 0-d index tensor"))
        else:                                             # a slice, None, Ellipsis
            first.append(part)
            second.append(part if part is Ellipsis else slice(None))
    return tuple(first), tuple(second)


def _is_dtype(value):
    """Whether view's single argument names a dtype (gd/np dtype, a NumPy scalar type, torch's
    dtype or its name) rather than a size."""
    if isinstance(value, (int, np.integer, tuple, list)):
        return False
    try:
        dtypes.as_dtype(value)
    except TypeError:
        return False
    return True


def _view_as_dtype(x, dtype):
    """torch's ``x.view(dtype)``: x's bytes read as ``dtype``, sharing memory and version
    counter with x. The same dtype is a plain view (in the graph); another is not
    differentiable. An element size that changes scales the last dim, which must be
    contiguous (and, growing, divisible by the ratio): torch's rules, its messages."""
    dtype = dtypes.as_dtype(dtype, "view")
    if dtype == x.dtype:
        return x.view(x.shape)
    old, new = x._data.dtype.itemsize, np.dtype(dtype).itemsize
    what = f"to view {x.dtype} as {dtype} (different element sizes)"
    if old != new:
        if x.ndim == 0:
            raise RuntimeError(f"view: self.dim() cannot be 0 {what}")
        if x.shape[-1] != 1 and x._data.strides[-1] != old:
            raise RuntimeError(f"view: self.stride(-1) must be 1 {what}, got "
                               f"{x._data.strides[-1] // old}")
        if new > old and x.shape[-1] % (new // old):
            raise RuntimeError(f"view: self.size(-1) must be divisible by {new // old} {what}, "
                               f"got {x.shape[-1]}")
    try:
        data = x._data.view(dtype)
    except ValueError as exc:           # a layout NumPy/CuPy cannot reinterpret
        raise RuntimeError(f"view: cannot view this {x.shape} tensor {what}: {exc}") from None
    out = T.Tensor._make(data, False, None, 0, x._device)
    out._version_counter = x._version_counter          # edits through either are seen
    return out

