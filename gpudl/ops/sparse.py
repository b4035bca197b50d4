"""embedding (a row gather whose backward scatter-adds) and one_hot."""

import numpy as np

from .. import backend
from ..autograd import ArrayFunction, no_grad
from ..tensor import Tensor
from ._util import xp_of


class IndexOutOfRange(IndexError, ValueError):
    """An index outside its valid range: an IndexError (as torch) and a ValueError (bad value)."""


class Embedding(ArrayFunction):
    @staticmethod
    def forward(ctx, weight, indices, padding_idx, scale_grad_by_freq):
        ctx.save_for_backward(indices)
        ctx.conf = (weight.shape, padding_idx, scale_grad_by_freq)
        return weight[indices]                                      # (*indices.shape, D)

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        shape, padding_idx, scale_grad_by_freq = ctx.conf
        xp = xp_of(g)
        rows, g = indices.reshape(-1), g.reshape(-1, shape[1])      # (n,), (n, D)
        if scale_grad_by_freq:          # each row's gradient divided by its count in the batch
            g = g / picks(rows, shape[0], g.dtype)
        gw = xp.zeros(shape, g.dtype)
        backend.scatter_add(gw, rows, g)        # repeated indices accumulate
        if padding_idx is not None:
            gw[padding_idx] = 0
        return gw, None, None, None


def picks(rows, num, dtype):
    """How often each of ``rows`` (1-D indices into ``num`` rows) is picked, per row, as a
    (len(rows), 1) array of ``dtype`` (scale_grad_by_freq's divisor). Counted by a scatter-add:
    CuPy's bincount reads the device for its output size."""
    xp = xp_of(rows)
    counts = xp.zeros(num, np.int64)
    backend.scatter_add(counts, rows, xp.ones(rows.shape, np.int64))
    return counts[rows, None].astype(dtype)


NO_BAD_INDEX = np.iinfo(np.int64).max
_NEVER = np.iinfo(np.int64).min         # "no ignore_index" for the device reduction
DEFERRED_NOTE = (" (found by a device-side check at the next device read; results computed "
                 "with it are invalid)")


def smallest_bad_index(data, size, ignore_index=None, low=0):
    """The smallest value of integer ``data`` outside [low, size) other than ``ignore_index``, as
    a 0-d int64 array on the data's device (``NO_BAD_INDEX`` when none): one reduction, no read."""
    ignore = _NEVER if ignore_index is None else ignore_index
    if backend.is_device_array(data):
        kernel = backend.reduction_kernel(
            "T x, int64 lo, int64 n, int64 ignore", "int64 y",
            "(x == ignore || (x >= lo && x < n)) ? 0x7fffffffffffffffLL : (long long)x",
            "min(a, b)", "y = a", "0x7fffffffffffffffLL", "gpudl_smallest_bad_index")
        return kernel(data, low, size, ignore)
    bad = ((data < low) | (data >= size)) & (data != ignore)
    return np.where(bad, data.astype(np.int64), NO_BAD_INDEX).min(initial=NO_BAD_INDEX)


# On the cuda device (a GPU, or the simulator standing for one), index range checks are
# device-side and reported at the next device read (backend.defer_check): reading a flag back per
# call would stall every step.
deferred = backend.on_device


def check_range(data, size, make_error, ignore_index=None, low=0):
    """Raise ``make_error(bad value, deferred)`` when integer ``data`` holds a value outside
    [low, size) other than ``ignore_index``: at once on the CPU, at the next device read on the
    cuda device."""
    if not data.size:
        return
    if deferred(data):
        backend.defer_check(smallest_bad_index(data, size, ignore_index, low),
                            lambda value: value == NO_BAD_INDEX,
                            lambda value: make_error(value, True))
        return
    bad = (data < low) | (data >= size)
    if ignore_index is not None:
        bad &= data != ignore_index
    if bad.any():                                   # the first bad value, as torch reports
        raise make_error(int(data[bad].reshape(-1)[0]), False)


def check_indices(op, name, indices, size):
    """Refuse non-integer ``indices`` (TypeError) or any outside [0, size) (IndexOutOfRange)."""
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must be an integer tensor, got {indices.dtype}")

    def error(value, late):
        if late:
            return IndexOutOfRange(f"{op}: {name} must lie in [0, {size - 1}] but holds {value}"
                                   + DEFERRED_NOTE)
        lo, hi = int(indices._data.min()), int(indices._data.max())      # host data: no sync
        return IndexOutOfRange(f"{op}: {name} must lie in [0, {size - 1}] but holds values in "
                               f"[{lo}, {hi}]")
    check_range(indices._data, size, error)


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    """Rows of ``weight`` (num_embeddings, embedding_dim) picked by integer ``input``:
    output shape ``input.shape + (embedding_dim,)``. Row ``padding_idx`` gets no gradient;
    ``max_norm`` renormalises the picked rows in place to that norm at most, as torch does;
    ``scale_grad_by_freq`` divides each row's gradient by how often ``input`` picks it.
    ``sparse=True`` is accepted but the gradient stays dense (gpudl has no sparse tensors):
    zero in the rows no index picks, which is how gd.optim.SparseAdam finds the rows to
    update."""
    padding_idx = embedding_refusals("embedding", input, weight, padding_idx)
    num = weight.shape[0]
    check_indices("embedding", "input", input, num)      # queued on cuda: after the refusals
    if max_norm is not None:
        _renorm_rows(weight, input, max_norm, norm_type)
    return Embedding.apply(weight, input, padding_idx, bool(scale_grad_by_freq))


def embedding_refusals(op, input, weight, padding_idx):
    """Refuse what ``op`` (embedding, embedding_bag) refuses at the call, before any of its
    index checks is queued; returns ``padding_idx`` in [0, num_embeddings) (or None)."""
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"{op}: input and weight must be Tensors, got "
                        f"{type(input).__name__} and {type(weight).__name__}")
    if weight.ndim != 2:
        raise ValueError(f"{op}: weight must be 2-D (num_embeddings, embedding_dim), got "
                         f"shape {weight.shape}")
    if input.dtype.kind not in "iu":
        raise TypeError(f"{op}: input must be an integer tensor, got {input.dtype}")
    num = weight.shape[0]
    if padding_idx is None:
        return None
    if not -num <= padding_idx < num:
        raise IndexOutOfRange(f"{op}: padding_idx must be within [{-num}, {num - 1}], "
                              f"got {padding_idx}")
    return padding_idx % num


def _renorm_rows(weight, indices, max_norm, norm_type):
    xp = xp_of(weight._data)
    # every picked row, repeats included: a repeat writes the same value again, and unique()
    # would read the device for its data-dependent size
    rows = indices._data.reshape(-1)
    picked = weight._data[rows]
    norms = (xp.abs(picked) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0).astype(weight.dtype)
    with no_grad():
        weight[rows] = picked * scale[:, None]        # in place, as torch: bumps the version


def one_hot(tensor, num_classes=-1):
    """int64 tensor of shape ``tensor.shape + (num_classes,)`` with a 1 at each index;
    ``num_classes=-1`` means max(tensor) + 1, which reads the device on cuda (a counted sync,
    as torch's); a given ``num_classes`` reads nothing (the range check is deferred)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"one_hot: tensor must be a Tensor, got {type(tensor).__name__}")
    if tensor._data.dtype.kind not in "iu":     # before max(): int(inf) raised OverflowError
        raise TypeError(f"one_hot: tensor must be an integer tensor, got {tensor.dtype}")
    if num_classes == -1:
        if tensor._data.size == 0:
            raise ValueError("one_hot: cannot infer num_classes of an empty tensor")
        num_classes = int(backend.host_value(tensor._data.max(), "one_hot(num_classes=-1)")) + 1
    check_indices("one_hot", "tensor", tensor, num_classes)
    xp = xp_of(tensor._data)
    out = tensor._data[..., None] == xp.arange(num_classes)
    # row-major, as torch's: NumPy keeps a transposed input's order (a later .view raised)
    return Tensor._make(out.astype(xp.int64, order="C"), False, None, 0, tensor.device)
