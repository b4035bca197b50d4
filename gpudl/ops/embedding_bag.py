"""embedding_bag: the sum, mean or maximum of each bag of embedding rows.

The rows are gathered with ``embedding`` and combined by autograd-tracked tensor ops: sums and
means scatter-add each row, times its weight, into its bag (``index_add``); maxima pick, per bag
and column, the row holding the largest value (the gradient goes to that row alone, as torch's).
The bag of each entry and the counts come from ``offsets`` on the tensors' device, without a
read back.
"""

from .. import backend, creation
from ..tensor import Tensor
from ._util import xp_of
from .sparse import DEFERRED_NOTE, IndexOutOfRange, check_range, embedding, embedding_refusals

_MODES = ("sum", "mean", "max")


def embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2,
                  scale_grad_by_freq=False, mode="mean", sparse=False, per_sample_weights=None,
                  include_last_offset=False, padding_idx=None):
    """torch.nn.functional.embedding_bag: ``input`` (bags, length) holds one bag a row; a 1-D
    ``input`` holds bags one after another, bag ``i`` starting at ``offsets[i]`` (the first
    offset 0, non-decreasing; with ``include_last_offset`` the last offset ends the last bag).
    Returns (bags, embedding_dim); an empty bag gives zeros. ``per_sample_weights`` (``input``'s
    shape) scales each row, with ``mode="sum"`` only; entries equal to ``padding_idx`` are left
    out (nor counted in a mean)."""
    if mode not in _MODES:
        raise ValueError(f"embedding_bag: mode must be one of {_MODES}, got {mode!r}")
    if not isinstance(input, Tensor):
        raise TypeError(f"embedding_bag: input must be a Tensor, got {type(input).__name__}")
    if per_sample_weights is not None:
        if mode != "sum":
            raise NotImplementedError(f"embedding_bag: per_sample_weights is only supported for "
                                      f"mode='sum', got mode={mode!r}")
        if tuple(per_sample_weights.shape) != tuple(input.shape):
            raise ValueError(f"embedding_bag: per_sample_weights must have input's shape "
                             f"{tuple(input.shape)}, got {tuple(per_sample_weights.shape)}")
    _same_device(input=input, weight=weight, offsets=offsets,
                 per_sample_weights=per_sample_weights)
    xp = xp_of(input._data)
    if input.ndim == 2:
        if offsets is not None:
            raise ValueError("embedding_bag: offsets must be None when input is 2-D, got a "
                             f"{type(offsets).__name__}")
    elif input.ndim == 1:
        _check_offsets(offsets, include_last_offset)
    else:
        raise ValueError(f"embedding_bag: input must be 1-D or 2-D, got shape {input.shape}")
    # every refusal at the call comes before the index checks (queued on cuda) are made
    # sparse=True: a dense gradient (see ops/sparse.embedding)
    padding_idx = embedding_refusals("embedding_bag", input, weight, padding_idx)
    if scale_grad_by_freq:      # torch's own gradients there look wrong (see nnfuzz's note)
        raise NotImplementedError("embedding_bag: scale_grad_by_freq=True is not supported")
    if input.ndim == 2:
        bags, length = input.shape
        bag_of = xp.repeat(xp.arange(bags), length)
    else:
        bags, bag_of = _bags_from_offsets(input, offsets, include_last_offset, xp)
    flat = input.reshape(-1)
    rows = embedding(flat, weight, None, max_norm, norm_type, scale_grad_by_freq, sparse)
    kept = xp.ones(flat.shape, dtype=bool) if padding_idx is None else \
        flat._data != padding_idx
    if mode == "max":
        return _bag_maxima(rows, bag_of, kept, bags, xp)
    bag_index = creation.tensor(bag_of, device=input.device)
    empty = creation.zeros(bags, weight.shape[1], dtype=weight.dtype, device=weight.device)
    scale = creation.tensor(kept.astype(weight._data.dtype), device=input.device)
    if per_sample_weights is not None:
        scale = scale * per_sample_weights.reshape(-1)
    sums = empty.index_add(0, bag_index, rows * scale.unsqueeze(1))
    if mode == "sum":
        return sums
    # entries per bag by a scatter-add: CuPy's bincount and boolean masks read the device
    counts = xp.zeros(bags, weight._data.dtype)
    backend.scatter_add(counts, bag_of, kept.astype(weight._data.dtype))
    return sums / creation.tensor(xp.maximum(counts, 1)[:, None], device=input.device)


def _same_device(**tensors):
    """Refuse tensors on different devices, as torch does (CuPy would be handed NumPy arrays:
    a cpu ``input`` with cuda ``offsets`` failed in searchsorted on the GPU)."""
    given = {name: t for name, t in tensors.items() if isinstance(t, Tensor)}
    devices = {t._device for t in given.values()}
    if len(devices) > 1:
        where = ", ".join(f"{name} on {t._device}" for name, t in given.items())
        raise RuntimeError(f"embedding_bag: expected all tensors on the same device, got "
                           f"{where}; move them with .to(device)")


def _check_offsets(offsets, include_last_offset):
    """Refuse offsets a 1-D input cannot take (their values are checked in _bags_from_offsets)."""
    if offsets is not None and not isinstance(offsets, Tensor):
        raise TypeError(f"embedding_bag: offsets must be a Tensor or None, got "
                        f"{type(offsets).__name__}")
    if not isinstance(offsets, Tensor) or offsets.ndim != 1:
        raise ValueError("embedding_bag: a 1-D input needs 1-D offsets (each bag's start), got "
                         f"{offsets if offsets is None else tuple(offsets.shape)}")
    if include_last_offset and offsets.shape[0] < 1:
        raise ValueError("embedding_bag: include_last_offset needs at least one offset")


def _bags_from_offsets(input, offsets, include_last_offset, xp):
    """(number of bags, the bag of each entry of the 1-D ``input``), the offsets' values
    checked (queued on cuda)."""
    n, starts = input.shape[0], offsets._data
    if include_last_offset:
        starts = starts[:-1]

    def error(name, bound):
        def make(value, late):
            return IndexOutOfRange(f"embedding_bag: {name} must lie in [0, {bound}] but holds "
                                   f"{value}" + (DEFERRED_NOTE if late else ""))
        return make

    check_range(offsets._data[:1], 1, error("offsets[0]", 0))
    check_range(offsets._data, n + 1, error("offsets", n))
    check_range(xp.diff(offsets._data), n + 1, error("the steps between offsets", n))
    return starts.shape[0], xp.searchsorted(starts, xp.arange(n), side="right") - 1


def _bag_maxima(rows, bag_of, kept, bags, xp):
    """Per bag and column the largest entry of the bag's rows (zeros for an empty bag)."""
    if rows.shape[0] == 0:
        # no entries at all: every bag is empty (argmax over none would raise); zeros that
        # stay in the graph, so weight gets its (zero) gradient as torch gives it
        return rows.sum(0, keepdim=True).expand(bags, rows.shape[1]) * 0
    members = (bag_of[None, :] == xp.arange(bags)[:, None]) & kept[None, :]      # (bags, n)
    candidates = xp.where(members[:, :, None], rows._data[None], -xp.inf)
    winner = creation.tensor(candidates.argmax(axis=1), device=rows.device)   # (bags, D)
    nonempty = members.any(axis=1, keepdims=True).astype(rows._data.dtype)
    return rows.take_along_dim(winner, 0) * creation.tensor(nonempty, device=rows.device)
