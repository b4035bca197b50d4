"""Variable-length sequences: padding, and PackedSequence (torch.nn.utils.rnn's layout).

A PackedSequence holds the steps of a batch of sequences sorted by decreasing length, time-major:
``data`` stacks, for t = 0, 1, ..., the step t of the ``batch_sizes[t]`` sequences longer than t,
so the same sequences give the same ``data`` as torch. Every function here moves rows with one
differentiable gather (an index tensor built on the host), so gradients flow to the inputs.
"""

from collections import namedtuple

import numpy as np

from ... import creation, dtypes
from ...functions import cat
from ...ops._util import is_int
from ...tensor import Tensor


class PackedSequence(namedtuple("PackedSequence",
                                ["data", "batch_sizes", "sorted_indices", "unsorted_indices"])):
    """A batch of packed sequences (build it with pack_padded_sequence or pack_sequence).

    Attributes:
        data: (sum of lengths, *) the steps, time-major, sequences sorted by decreasing length.
        batch_sizes: int64 CPU tensor, the number of sequences still running at each step.
        sorted_indices: int64 tensor, ``sorted_indices[j]`` is the batch index of the j-th
            longest sequence; None when the batch was given sorted (enforce_sorted=True).
        unsorted_indices: its inverse permutation, or None.
    """

    __slots__ = ()

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if batch_sizes is None:
            raise TypeError("PackedSequence: batch_sizes is required (build one with "
                            "pack_padded_sequence or pack_sequence)")
        if unsorted_indices is None and sorted_indices is not None:
            unsorted_indices = _as_index(_inverse(_host(sorted_indices)), sorted_indices.device)
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    def to(self, *args, **kwargs):
        """The data (and indices, to its device) moved or cast; batch_sizes stays on the CPU."""
        data = self.data.to(*args, **kwargs)
        if data is self.data:
            return self
        indices = [None if i is None else i.to(data.device)
                   for i in (self.sorted_indices, self.unsorted_indices)]
        return type(self)(data, self.batch_sizes, *indices)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    @property
    def is_cuda(self):
        return self.data.device.type == "cuda"

    def is_pinned(self):
        return self.data.is_pinned()


# torch's dtype shorthands: the data cast, the indices and batch_sizes as they are
for _name, _dtype in (("double", "float64"), ("float", "float32"), ("half", "float16"),
                      ("long", "int64"), ("int", "int32"), ("short", "int16"), ("char", "int8"),
                      ("byte", "uint8")):
    setattr(PackedSequence, _name,
            (lambda dtype: lambda self: self.to(getattr(dtypes, dtype)))(_dtype))
    getattr(PackedSequence, _name).__doc__ = f"The packed data as {_dtype}."


def _host(index):
    """An index Tensor, list or array as a host int64 array."""
    if isinstance(index, Tensor):
        index = index.detach().cpu().numpy()
    return np.asarray(index, dtype=np.int64)


def _as_index(array, device):
    return creation.tensor(np.ascontiguousarray(array, dtype=np.int64), device=device)


def _inverse(permutation):
    inverse = np.empty_like(permutation)
    inverse[permutation] = np.arange(permutation.size)
    return inverse


def _check_tensor(op, what, value):
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {what} must be a Tensor, got {type(value).__name__}")


def _lengths(op, lengths, batch, cpu_only):
    """``lengths`` (list, array or 1-D tensor, on the cpu if ``cpu_only``) as a host int64 array
    of ``batch`` entries > 0."""
    if cpu_only and isinstance(lengths, Tensor) and lengths.device.type != "cpu":
        raise ValueError(f"{op}: lengths must be on the cpu (a list or a cpu int64 tensor), got "
                         f"a tensor on {lengths.device}")
    raw = lengths.detach().cpu().numpy() if isinstance(lengths, Tensor) else np.asarray(lengths)
    if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iu"):
        got = f"dtype {raw.dtype}" if raw.ndim == 1 else f"shape {raw.shape}"
        raise ValueError(f"{op}: lengths must be a 1-D sequence of ints, got {got}")
    if raw.size != batch:
        raise ValueError(f"{op}: expected {batch} lengths (one per sequence of the batch), got "
                         f"{raw.size}")
    if raw.size and raw.min() <= 0:
        raise RuntimeError(f"{op}: every length must be > 0, got {raw.tolist()}")
    return raw.astype(np.int64)


def _padded_lengths(op, what, padded, lengths, batch_first, cpu_only):
    """Check a padded batch ``padded`` (argument ``what``) and its ``lengths``; return them as
    a host array."""
    _check_tensor(op, what, padded)
    if padded.ndim < 2:
        raise ValueError(f"{op}: {what} must have at least 2 dims (time and batch), got shape "
                         f"{padded.shape}")
    batch_dim, time_dim = (0, 1) if batch_first else (1, 0)
    lengths = _lengths(op, lengths, padded.shape[batch_dim], cpu_only)
    if lengths.size and lengths.max() > padded.shape[time_dim]:
        raise ValueError(f"{op}: a length {lengths.max()} exceeds the {padded.shape[time_dim]} "
                         f"steps of {what} (shape {padded.shape})")
    return lengths


def _batch_sizes(sorted_lengths):
    """The per-step batch sizes of lengths sorted in decreasing order."""
    return (sorted_lengths[None, :] > np.arange(sorted_lengths[0])[:, None]).sum(1)


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack tensors of shapes (L_i, *) into (T, B, *) (``(B, T, *)`` with batch_first), T the
    longest L_i, the rest filled with ``padding_value`` after each sequence (or before it with
    ``padding_side='left'``)."""
    op = "pad_sequence"
    if isinstance(sequences, Tensor):
        sequences = list(sequences.unbind(0))
    if not isinstance(sequences, (list, tuple)):
        raise TypeError(f"{op}: sequences must be a list of Tensors, got "
                        f"{type(sequences).__name__}")
    if not sequences:
        raise ValueError(f"{op}: sequences must be a non-empty list of Tensors, got an empty "
                         f"{type(sequences).__name__}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"{op}: padding_side must be 'left' or 'right', got {padding_side!r}")
    for i, s in enumerate(sequences):
        _check_tensor(op, f"sequences[{i}]", s)
        if s.ndim == 0 or s.shape[1:] != sequences[0].shape[1:] or s.dtype != sequences[0].dtype:
            raise ValueError(f"{op}: every sequence must have shape (L, *{sequences[0].shape[1:]}) "
                             f"and dtype {sequences[0].dtype}, got sequences[{i}] of shape "
                             f"{s.shape}, dtype {s.dtype}")
    lengths = np.array([s.shape[0] for s in sequences], dtype=np.int64)
    longest = int(lengths.max())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pad_row = int(lengths.sum())
    index = np.full((len(sequences), longest), pad_row, dtype=np.int64)      # (B, T)
    for i, (start, length) in enumerate(zip(starts, lengths)):
        where = slice(0, length) if padding_side == "right" else slice(longest - length, longest)
        index[i, where] = np.arange(start, start + length)
    first = sequences[0]
    padding = creation.full((1,) + first.shape[1:], padding_value, dtype=first.dtype,
                            device=first.device)
    rows = cat(list(sequences) + [padding])
    return rows[_as_index(index if batch_first else index.T, first.device)]


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """pad_sequence's inverse: the list of ``padded_sequences[:L_i, i]`` (``[i, :L_i]`` with
    batch_first). ``lengths`` may be on any device, as in torch."""
    lengths = _padded_lengths("unpad_sequence", "padded_sequences", padded_sequences, lengths,
                              batch_first, cpu_only=False)
    if batch_first:
        return [padded_sequences[i, :length] for i, length in enumerate(lengths.tolist())]
    return [padded_sequences[:length, i] for i, length in enumerate(lengths.tolist())]


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded batch (T, B, *) (``(B, T, *)`` with batch_first) whose sequence i has
    ``lengths[i]`` valid steps. With ``enforce_sorted=True`` the lengths must be in decreasing
    order; otherwise the batch is sorted and the permutation kept in the PackedSequence."""
    op = "pack_padded_sequence"
    lengths = _padded_lengths(op, "input", input, lengths, batch_first, cpu_only=True)
    if lengths.size == 0:
        raise ValueError(f"{op}: got an empty batch (input shape {input.shape})")
    if enforce_sorted:
        if np.any(np.diff(lengths) > 0):
            raise RuntimeError(f"{op}: lengths must be sorted in decreasing order when "
                               f"enforce_sorted is True, got {lengths.tolist()}; pass "
                               "enforce_sorted=False to pack an unsorted batch")
        order = np.arange(lengths.size)
    else:
        order = np.argsort(-lengths, kind="stable")
    batch_sizes = _batch_sizes(lengths[order])
    steps = np.repeat(np.arange(batch_sizes.size), batch_sizes)
    sequences = np.concatenate([order[:n] for n in batch_sizes])
    where = (sequences, steps) if batch_first else (steps, sequences)
    data = input[tuple(_as_index(w, input.device) for w in where)]
    sorted_indices = None if enforce_sorted else _as_index(order, input.device)
    return PackedSequence(data, creation.tensor(batch_sizes.astype(np.int64), device="cpu"),
                          sorted_indices,
                          None if enforce_sorted else _as_index(_inverse(order), input.device))


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """pack_padded_sequence's inverse: ``(padded, lengths)``, padded (T, B, *) (``(B, T, *)`` with
    batch_first) in the original batch order, T the longest length or ``total_length``, and the
    lengths as an int64 CPU tensor."""
    op = "pad_packed_sequence"
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"{op}: sequence must be a PackedSequence, got "
                        f"{type(sequence).__name__}")
    data = sequence.data
    batch_sizes = _host(sequence.batch_sizes)
    steps = batch_sizes.size
    if total_length is not None:
        if not is_int(total_length) or total_length < steps:
            raise ValueError(f"{op}: total_length must be an int >= the longest sequence "
                             f"({steps}), got {total_length!r}")
        steps = int(total_length)
    batch = int(batch_sizes[0])
    pad_row = data.shape[0]
    index = np.full((steps, batch), pad_row, dtype=np.int64)                    # (T, B) sorted
    starts = np.concatenate([[0], np.cumsum(batch_sizes)[:-1]])
    for t, (start, n) in enumerate(zip(starts, batch_sizes)):
        index[t, :n] = np.arange(start, start + n)
    lengths = (batch_sizes[None, :] > np.arange(batch)[:, None]).sum(1)         # sorted order
    if sequence.unsorted_indices is not None:
        unsorted = _host(sequence.unsorted_indices)
        index, lengths = index[:, unsorted], lengths[unsorted]
    padding = creation.full((1,) + data.shape[1:], padding_value, dtype=data.dtype,
                            device=data.device)
    rows = cat([data, padding])
    padded = rows[_as_index(index.T if batch_first else index, data.device)]
    return padded, creation.tensor(lengths.astype(np.int64), device="cpu")


def pack_sequence(sequences, enforce_sorted=True):
    """Pack a list of tensors (L_i, *) (in decreasing length unless ``enforce_sorted=False``)."""
    padded = pad_sequence(sequences)
    return pack_padded_sequence(padded, [s.shape[0] for s in sequences],
                                enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences):
    """pack_sequence's inverse: the list of tensors (L_i, *) in the original order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)


__all__ = ["PackedSequence", "pad_sequence", "unpad_sequence", "pack_padded_sequence",
           "pad_packed_sequence", "pack_sequence", "unpack_sequence"]
