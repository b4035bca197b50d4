"""embedding (a row gather whose backward scatter-adds) and one_hot."""

from .. import backend
from ..autograd import Function, no_grad
from ..tensor import Tensor
from ._util import xp_of


class IndexOutOfRange(IndexError, ValueError):
    """An index outside its valid range: an IndexError (as torch) and a ValueError (bad value)."""


class Embedding(Function):
    @staticmethod
    def forward(ctx, weight, indices, padding_idx):
        ctx.save_for_backward(indices)
        ctx.conf = (weight.shape, padding_idx)
        return weight[indices]                                      # (*indices.shape, D)

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        shape, padding_idx = ctx.conf
        gw = xp_of(g).zeros(shape, g.dtype)
        # repeated indices accumulate
        backend.scatter_add(gw, indices.reshape(-1), g.reshape(-1, shape[1]))   # (n, D)
        if padding_idx is not None:
            gw[padding_idx] = 0
        return gw, None, None


def check_indices(op, name, indices, size):
    """Refuse non-integer ``indices`` (TypeError) or any outside [0, size) (IndexOutOfRange)."""
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must be an integer tensor, got {indices.dtype}")
    data = indices.data
    if data.size and bool(((data < 0) | (data >= size)).any()):     # one device sync
        lo, hi = int(data.min()), int(data.max())
        raise IndexOutOfRange(f"{op}: {name} must lie in [0, {size - 1}] but holds values in "
                              f"[{lo}, {hi}]")


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    """Rows of ``weight`` (num_embeddings, embedding_dim) picked by integer ``input``:
    output shape ``input.shape + (embedding_dim,)``. Row ``padding_idx`` gets no gradient;
    ``max_norm`` renormalises the picked rows in place to that norm at most, as torch does."""
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"embedding: input and weight must be Tensors, got "
                        f"{type(input).__name__} and {type(weight).__name__}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got "
                         f"shape {weight.shape}")
    if scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: scale_grad_by_freq and sparse are not supported")
    num = weight.shape[0]
    check_indices("embedding", "input", input, num)
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise IndexOutOfRange(f"embedding: padding_idx must be within [{-num}, {num - 1}], "
                                  f"got {padding_idx}")
        padding_idx %= num
    if max_norm is not None:
        _renorm_rows(weight, input, max_norm, norm_type)
    return Embedding.apply(weight, input, padding_idx)


def _renorm_rows(weight, indices, max_norm, norm_type):
    xp = xp_of(weight.data)
    rows = xp.unique(indices.data.reshape(-1))
    picked = weight.data[rows]
    norms = (xp.abs(picked) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0).astype(weight.dtype)
    with no_grad():
        weight[rows] = picked * scale[:, None]        # in place, as torch: bumps the version


def one_hot(tensor, num_classes=-1):
    """int64 tensor of shape ``tensor.shape + (num_classes,)`` with a 1 at each index;
    ``num_classes=-1`` means max(tensor) + 1."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"one_hot: tensor must be a Tensor, got {type(tensor).__name__}")
    if num_classes == -1:
        if tensor.data.size == 0:
            raise ValueError("one_hot: cannot infer num_classes of an empty tensor")
        num_classes = int(tensor.data.max()) + 1
    check_indices("one_hot", "tensor", tensor, num_classes)
    xp = xp_of(tensor.data)
    out = tensor.data[..., None] == xp.arange(num_classes)
    return Tensor._make(out.astype(xp.int64), False, None, 0, tensor.device)
