"""torch's wider shape breadth: views (diagonal, select, unfold, tensor_split and the
h/v/dsplit family, ravel), reorderings (rot90, fliplr, flipud, msort), joins (atleast_Nd,
column_stack, dstack, block_diag, cartesian_prod, combinations), diagonal builders (diag_embed,
diagflat, vander), the in-place metadata ops (t_, transpose_, squeeze_, unsqueeze_, ...) and a
tensor's storage metadata (stride, storage_offset, data_ptr, ...).

Views share their input's memory and remember it for autograd as every gpudl view does
(Function.is_view); everything else is built from gpudl's differentiable ops.
"""

import numpy as np

from . import autograd, backend, creation, dtypes, inplace
from .functions import _method, _tensors, cat, require_tensors, stack
from .ops import strided
from .ops._util import is_int, normalize_axis
from .tensor import Tensor
from .torch_names import vstack


# ----------------------------------------------------------------- views
def diagonal(input, offset=0, dim1=0, dim2=1):
    """The ``offset``-th diagonal of the matrices spanned by ``dim1`` and ``dim2``, as a view:
    those dims removed, the diagonal appended last (torch.diagonal)."""
    require_tensors("diagonal", input=input)
    d1, d2 = _two_dims("diagonal", input.ndim, dim1, dim2)
    if not is_int(offset):
        raise TypeError(f"diagonal: offset must be an int, got {offset!r}")
    offset = int(offset)
    return strided.StridedView.apply(
        input, lambda a: strided.diagonal_view(a, offset, d1, d2), False)


def _two_dims(op, ndim, dim1, dim2):
    d1, d2 = normalize_axis(dim1, ndim, op), normalize_axis(dim2, ndim, op)
    if ndim < 2 or d1 == d2:
        raise RuntimeError(f"{op}: dim1 and dim2 must name two different dims of a tensor with at "
                           f"least 2 dims, got dim1={dim1}, dim2={dim2} for {ndim} dims")
    return d1, d2


def select(input, dim, index):
    """The slice at ``index`` along ``dim``, that dim removed (a view): ``x.select(1, 2)`` is
    ``x[:, 2]``."""
    require_tensors("select", input=input)
    if input.ndim == 0:
        raise IndexError("select: cannot select from a 0-d tensor")
    axis = normalize_axis(dim, input.ndim, "select")
    if isinstance(index, Tensor):
        index = index.item()
    n = input.shape[axis]
    if not is_int(index) or not -n <= index < n:
        raise IndexError(f"select: index {index} out of range for tensor of size "
                         f"{list(input.shape)} at dimension {dim}")
    return input[(slice(None),) * axis + (int(index),)]


def unfold(self, dimension, size, step):
    """Every window of ``size`` elements along ``dimension``, ``step`` apart, as a new last
    dim, a view (torch.Tensor.unfold): a (4, 10) tensor unfolded (1, 3, 2) is (4, 4, 3).
    Overlapping windows add up their gradients."""
    for name, value in (("size", size), ("step", step)):
        if not is_int(value):
            raise TypeError(f"unfold: {name} must be an int, got {value!r}")
    source = self if self.ndim else self.reshape(1)
    axis = normalize_axis(dimension, source.ndim, "unfold")
    n = source.shape[axis]
    if not 0 <= size <= n or step <= 0:
        raise RuntimeError(f"unfold: needs 0 <= size <= {n} (the size of dim {dimension}) and "
                           f"step > 0, got size {size}, step {step}")
    size, step = int(size), int(step)
    out = strided.StridedView.apply(source, lambda a: strided.windows_view(a, axis, size, step),
                                    step < size)
    return out.reshape(size) if not self.ndim else out


def ravel(input):
    """The elements as a 1-D tensor: a view when the memory is contiguous, else a copy."""
    require_tensors("ravel", input=input)
    return input.reshape(-1)


def tensor_split(input, indices_or_sections, dim=0):
    """Views splitting ``dim``: into ``n`` parts (an int; the first ``size % n`` one longer), or
    at the given indices (a sequence, or a 1-D int tensor; a 0-d one is a count)."""
    require_tensors("tensor_split", input=input)
    if input.ndim == 0:
        raise RuntimeError("tensor_split: expected at least a 1-dimensional tensor")
    axis = normalize_axis(dim, input.ndim, "tensor_split")
    n = input.shape[axis]
    split = indices_or_sections
    if isinstance(split, Tensor):
        if split.dtype.kind not in "iu" or split.ndim > 1:
            raise RuntimeError(f"tensor_split: indices_or_sections must be a 0-d or 1-D int64 "
                               f"tensor, got {split.dtype} of shape {split.shape}")
        split = split.item() if split.ndim == 0 else split.tolist()
    if is_int(split):
        if split <= 0:
            raise RuntimeError(f"tensor_split: number of sections must be larger than 0, got "
                               f"{split}")
        small, extra = divmod(n, split)
        bounds = np.cumsum([0] + [small + 1] * extra + [small] * (split - extra)).tolist()
    else:
        points = list(split)
        if not all(is_int(p) for p in points):
            raise TypeError(f"tensor_split: indices must be ints, got {split!r}")
        bounds = [0] + [min(max(p + n if p < 0 else p, 0), n) for p in points] + [n]
    lead = (slice(None),) * axis
    return tuple(input[lead + (slice(start, max(start, end)),)]
                 for start, end in zip(bounds[:-1], bounds[1:]))


def _directional_split(name, dim_of, least):
    def split(input, indices_or_sections):
        require_tensors(name, input=input)
        if input.ndim < least:
            raise RuntimeError(f"{name}: requires a tensor with at least {least} dimension"
                               f"{'s' if least > 1 else ''}, but got a tensor with {input.ndim}")
        dim = dim_of(input.ndim)
        if is_int(indices_or_sections) and (indices_or_sections == 0 or
                                            input.shape[dim] % indices_or_sections):
            raise RuntimeError(f"{name}: dim {dim} of size {input.shape[dim]} is not divisible "
                               f"by the split size {indices_or_sections}")
        return tensor_split(input, indices_or_sections, dim)
    split.__name__ = name
    split.__doc__ = (f"tensor_split along dim {dim_of(3)}{' (0 for 1-D)' if least == 1 else ''}"
                     ", an int count having to divide that dim evenly (torch." + name + ").")
    return split


hsplit = _directional_split("hsplit", lambda ndim: 1 if ndim > 1 else 0, 1)
vsplit = _directional_split("vsplit", lambda ndim: 0, 2)
dsplit = _directional_split("dsplit", lambda ndim: 2, 3)


def split_with_sizes(input, split_sizes, dim=0):
    """Views of ``dim`` cut into pieces of ``split_sizes`` (which must add up to its size)."""
    require_tensors("split_with_sizes", input=input)
    sizes = list(split_sizes)
    if not all(is_int(s) and s >= 0 for s in sizes):
        raise RuntimeError(f"split_with_sizes: split_sizes must be non-negative ints, got "
                           f"{split_sizes!r}")
    return input.split(sizes, dim)


# ----------------------------------------------------------------- reorderings
def rot90(input, k=1, dims=(0, 1)):
    """``input`` rotated by 90 degrees ``k`` times in the plane ``dims``, from the first axis
    towards the second (a copy)."""
    require_tensors("rot90", input=input)
    dims = list(dims)
    if len(dims) != 2:
        raise RuntimeError(f"rot90: expected total rotation dims == 2, but got dims = {len(dims)}")
    if input.ndim < 2:
        raise RuntimeError(f"rot90: expected total dims >= 2, but got total dims = {input.ndim}")
    d0, d1 = (normalize_axis(d, input.ndim, "rot90") for d in dims)
    if d0 == d1:
        raise RuntimeError(f"rot90: expected rotation dims to be different, got dims {dims}")
    if not is_int(k):
        raise TypeError(f"rot90: k must be an int, got {k!r}")
    k %= 4
    if k == 1:
        return input.flip(d1).transpose(d0, d1)
    if k == 2:
        return input.flip(d0, d1)
    if k == 3:
        return input.flip(d0).transpose(d0, d1)
    return input.clone()


def fliplr(input):
    """The order along dim 1 reversed (a copy); input at least 2-D."""
    require_tensors("fliplr", input=input)
    if input.ndim < 2:
        raise RuntimeError(f"fliplr: input must be >= 2-d, got {input.ndim}-d")
    return input.flip(1)


def flipud(input):
    """The order along dim 0 reversed (a copy); input at least 1-D."""
    require_tensors("flipud", input=input)
    if input.ndim < 1:
        raise RuntimeError("flipud: input must be >= 1-d, got a 0-d tensor")
    return input.flip(0)


def msort(input):
    """``input`` sorted along dim 0 (the values of ``sort(input, 0)``)."""
    require_tensors("msort", input=input)
    return input.sort(0).values


def argwhere(input):
    """The (count, ndim) int64 indices of the nonzero elements (torch.argwhere); reads the
    device on cuda (a data-dependent size)."""
    require_tensors("argwhere", input=input)
    return input.nonzero()


def take(input, index):
    """The elements of the flattened ``input`` at ``index`` (any shape; negative counts from
    the end), in index's shape."""
    from .tensor_index import _check_index_range, _index_array
    require_tensors("take", input=input, index=index)
    raw = _index_array("take", index, input)
    _check_index_range("take", raw, input.numel(), f"a tensor of {input.numel()} elements",
                       negative=True)
    flat = input.reshape(-1)
    return flat[Tensor._make(raw.reshape(-1), False, None, 0, input._device)].reshape(raw.shape)


# ----------------------------------------------------------------- joins
def _at_least(name, ndim, shape_of):
    def at_least(*tensors):
        single = len(tensors) == 1 and isinstance(tensors[0], Tensor)
        if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
            tensors = tuple(tensors[0])
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name}: expected Tensors, argument {i} is {type(t).__name__}")
        out = tuple(t if t.ndim >= ndim else t.reshape(shape_of(t.shape)) for t in tensors)
        return out[0] if single else out
    at_least.__name__ = name
    at_least.__doc__ = (f"Each tensor with at least {ndim} dims (views; a tensor with more as it "
                        "is): one tensor gives a tensor, several (or a list) a tuple.")
    return at_least


atleast_1d = _at_least("atleast_1d", 1, lambda shape: (1,))
atleast_2d = _at_least("atleast_2d", 2, lambda shape: (1,) + shape + (1,) * (1 - len(shape)))
atleast_3d = _at_least("atleast_3d", 3, lambda shape: {0: (1, 1, 1), 1: (1,) + shape + (1,),
                                                       2: shape + (1,)}[len(shape)])


def column_stack(tensors):
    """Tensors side by side as columns: 0-D and 1-D ones as (n, 1) columns, then joined along
    dim 1."""
    tensors = _tensors("column_stack", tensors)
    return cat([t.reshape(t.numel(), 1) if t.ndim < 2 else t for t in tensors], 1)


def dstack(tensors):
    """Tensors made at least 3-D (atleast_3d), joined along dim 2."""
    return cat(atleast_3d(_tensors("dstack", tensors)), 2)


def block_diag(*tensors):
    """A 2-D tensor with the given tensors (0-D, 1-D as one row, or 2-D) as blocks along its
    diagonal, zeros elsewhere, in their promoted dtype."""
    if not tensors:
        return creation.empty(1, 0)
    tensors = _tensors("block_diag", tensors, promote=False)
    # torch's promotion, as for an op's operands: a 0-d block counts only by its category
    dtype = tensors[0].dtype if len(tensors) == 1 else dtypes.result_type(*tensors)
    tensors = [t.to(dtype=dtype) for t in tensors]
    for i, t in enumerate(tensors):
        if t.ndim > 2:
            raise RuntimeError(f"block_diag: input tensors must have 2 or fewer dimensions. "
                               f"Input {i} has {t.ndim} dimensions")
    blocks = [t.reshape(1, -1) if t.ndim < 2 else t for t in tensors]
    width = sum(b.shape[1] for b in blocks)
    rows, left = [], 0
    for b in blocks:
        pad = dict(dtype=b.dtype, device=b._device)
        rows.append(cat([creation.zeros(b.shape[0], left, **pad), b,
                         creation.zeros(b.shape[0], width - left - b.shape[1], **pad)], 1))
        left += b.shape[1]
    return cat(rows, 0)


def cartesian_prod(*tensors):
    """Every combination of one element from each 1-D tensor, as rows (itertools.product's
    order); one tensor is returned as it is."""
    tensors = _tensors("cartesian_prod", tensors)
    for i, t in enumerate(tensors):
        if t.ndim != 1:
            raise RuntimeError(f"cartesian_prod: expect a 1D vector, but got shape {t.shape} "
                               f"for tensor {i}")
    if len(tensors) == 1:
        return tensors[0]
    from .functions import meshgrid
    return stack([g.reshape(-1) for g in meshgrid(*tensors, indexing="ij")], 1)


def combinations(input, r=2, with_replacement=False):
    """The length-``r`` combinations of the elements of a 1-D tensor, as rows, in
    itertools.combinations order (with_replacement: combinations_with_replacement)."""
    require_tensors("combinations", input=input)
    if input.ndim != 1:
        raise RuntimeError(f"combinations: expect a 1D vector, but got shape {input.shape}")
    if not is_int(r) or r < 0:
        raise RuntimeError(f"combinations: expect a non-negative number, but got {r!r}")
    if r == 0:
        return creation.empty(0, dtype=input.dtype, device=input._device)
    n = input.shape[0]
    grid = np.indices((n,) * r).reshape(r, -1)     # every r-tuple of positions, in lex order
    ordered = grid[:-1] <= grid[1:] if with_replacement else grid[:-1] < grid[1:]
    chosen = grid[:, ordered.all(axis=0)].T        # (count, r)
    index = Tensor._make(backend.to_device_array(np.ascontiguousarray(chosen, np.int64),
                                                 input._device), False, None, 0, input._device)
    return input[index]


def vander(x, N=None, increasing=False):
    """The Vandermonde matrix of the 1-D ``x``: column j is ``x ** (N-1-j)`` (``x ** j`` when
    increasing), N columns (len(x) by default); integer input gives int64."""
    require_tensors("vander", x=x)
    if x.ndim != 1:
        raise RuntimeError(f"vander: x must be a one-dimensional tensor, got shape {x.shape}")
    n = x.shape[0] if N is None else N
    if not is_int(n) or n < 0:
        raise RuntimeError(f"vander: N must be non-negative, got {N!r}")
    if dtypes.category(x.dtype) < 2:
        x = x.astype(dtypes.int64)
    columns = creation.ones(x.shape[0], min(n, 1), dtype=x.dtype, device=x._device)
    if n > 1:
        powers = x.reshape(-1, 1).expand(x.shape[0], n - 1).cumprod(1)
        columns = cat([columns, powers], 1)
    return columns if increasing else columns.flip(1)


def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    """The last dim of ``input`` placed on the ``offset``-th diagonal of new matrices in dims
    ``dim1`` and ``dim2`` of the result (one dim more than input), zeros elsewhere."""
    require_tensors("diag_embed", input=input)
    if input.ndim == 0:
        raise RuntimeError("diag_embed: input must have at least 1 dimension")
    d1, d2 = _two_dims("diag_embed", input.ndim + 1, dim1, dim2)
    if not is_int(offset):
        raise TypeError(f"diag_embed: offset must be an int, got {offset!r}")
    return strided.DiagEmbed.apply(input, int(offset), d1, d2)


def diagflat(input, offset=0):
    """The flattened ``input`` on the ``offset``-th diagonal of a square matrix."""
    require_tensors("diagflat", input=input)
    return input.reshape(-1).diag(offset)


# ----------------------------------------------------------------- in-place metadata ops
def _restride_(op, make_view):
    """The in-place form of a view op: the tensor itself takes the view's shape and strides,
    as torch's t_/transpose_/squeeze_/unsqueeze_ (one version bump; in the graph when it
    is, as TBackward; refused on a leaf that requires grad)."""
    def edit(self, *args, **kwargs):
        if inplace.needs_graph(self):
            inplace._refuse(self, op)
        before = object.__new__(Tensor)        # the tensor as it was, for the view's history
        for slot in ("_data", "_requires_grad", "_grad", "grad_fn", "_out_index", "_device",
                     "_version_counter", "_view"):
            setattr(before, slot, getattr(self, slot))
        after = make_view(before, *args, **kwargs)
        if after is before:
            after = before.reshape(before.shape)        # nothing changes: still one edit
        self._data, self.grad_fn, self._out_index = after._data, after.grad_fn, after._out_index
        self._requires_grad = after._requires_grad
        if self._view is not None:          # still a view of the same base, one step more
            self._view = after._view
        self._bump_version()
        if self._view is not None:
            inplace.view_is_current(self)
        return self
    edit.__name__ = op
    edit.__doc__ = f"{op[:-1]} in place: this tensor takes the result's shape and strides."
    return autograd.recorded("inplace")(edit)


t_ = _restride_("t_", Tensor.t)
transpose_ = _restride_("transpose_", Tensor.transpose)
swapaxes_ = swapdims_ = _restride_("swapaxes_", Tensor.transpose)
squeeze_ = _restride_("squeeze_", Tensor.squeeze)
unsqueeze_ = _restride_("unsqueeze_", Tensor.unsqueeze)


# ----------------------------------------------------------------- storage metadata
def stride(self, dim=None):
    """The step in elements between neighbours along each dim (or along ``dim``)."""
    steps = tuple(s // self._data.itemsize for s in self._data.strides)
    return steps if dim is None else steps[normalize_axis(dim, self.ndim, "stride")]


def is_contiguous(self, memory_format=None):
    """Whether the elements lie in row-major order without gaps (sizes 1 and 0 ignored)."""
    if memory_format not in (None, "contiguous_format") and \
            str(memory_format) != "torch.contiguous_format":
        raise NotImplementedError(f"is_contiguous: memory_format {memory_format!r} is not "
                                  "supported (only the contiguous format)")
    return bool(self._data.flags.c_contiguous)


def data_ptr(self):
    """The address of the first element (host memory on the cpu device, GPU memory on cuda)."""
    data = self._data
    if backend.is_device_array(data):
        return int(data.data.ptr)
    return int(data.__array_interface__["data"][0])


def storage_offset(self):
    """The first element's distance, in elements, from the start of the memory it lies in."""
    data = self._data
    if backend.is_device_array(data):
        start = data.data.mem.ptr
    else:
        owner = data
        while getattr(owner, "base", None) is not None:
            owner = owner.base
        start = owner.__array_interface__["data"][0]
    return (data_ptr(self) - int(start)) // data.itemsize


def element_size(self):
    """Bytes per element."""
    return self._data.itemsize


def get_device(self):
    """The GPU index of a cuda tensor; -1 for a cpu tensor."""
    return 0 if self._device == "cuda" else -1


def pin_memory(self):
    """A copy in page-locked host memory (CuPy's pinned memory), which copies to the GPU
    faster; itself when pinned already. As torch, refused when no GPU is there to use it."""
    from . import cuda
    if not cuda.is_available():
        raise RuntimeError("pin_memory: Cannot access accelerator device when none is available.")
    if self._device == "cuda":
        raise RuntimeError(f"pin_memory: cannot pin '{self.type()}': only dense CPU tensors can "
                           "be pinned")
    if is_pinned(self):
        return self
    return Tensor._make(backend.pinned_copy(self._data), False, None, 0, "cpu")


def is_pinned(self):
    """Whether the tensor lies in page-locked host memory (made by pin_memory)."""
    owner = self._data
    while getattr(owner, "base", None) is not None:
        owner = owner.base
    return type(owner).__name__ == "PinnedMemoryPointer"


_METADATA = {"stride": stride, "is_contiguous": is_contiguous, "data_ptr": data_ptr,
             "storage_offset": storage_offset, "element_size": element_size,
             "get_device": get_device, "pin_memory": pin_memory, "is_pinned": is_pinned,
             "nelement": Tensor.numel, "ndimension": Tensor.dim}
for _name, _function in _METADATA.items():
    setattr(Tensor, _name, _function)
Tensor.itemsize = property(lambda self: self._data.itemsize, doc="Bytes per element.")
Tensor.nbytes = property(lambda self: self._data.nbytes, doc="Bytes of all elements.")
Tensor.is_cpu = property(lambda self: self._device == "cpu", doc="Whether on the cpu device.")

Tensor.unfold, Tensor.t_, Tensor.transpose_ = unfold, t_, transpose_
Tensor.swapaxes_, Tensor.swapdims_, Tensor.squeeze_, Tensor.unsqueeze_ = (swapaxes_, swapdims_,
                                                                          squeeze_, unsqueeze_)
Tensor.swapdims = Tensor.swapaxes
for _function in (diagonal, select, ravel, tensor_split, hsplit, vsplit, dsplit,
                  split_with_sizes, rot90, fliplr, flipud, msort, argwhere, take, diag_embed,
                  diagflat):
    setattr(Tensor, _function.__name__, _function)
del _name, _function

swapaxes = swapdims = _method("swapaxes")
unbind = _method("unbind")
concat = concatenate = cat
row_stack = vstack
