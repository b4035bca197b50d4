"""Read PyTorch's zip checkpoints (``torch.save(state_dict, "model.pth")``) without PyTorch.

A ``.pt``/``.pth`` file since PyTorch 1.6 is an uncompressed zip: ``<name>/data.pkl`` is a pickle
of the object, whose tensors point at storages ``<name>/data/<key>`` (raw little-endian bytes).
Unpickling runs whatever callables the file names, so this reader allows only the handful that a
state dict needs (an ``OrderedDict``, a ``Counter``, the tensor and parameter rebuild functions, the storage
types) and implements them itself; any other global is refused before anything runs. Storages are
read straight from the file at their offset, after checking every size and offset against the
archive and the memory budget, so a crafted file cannot read out of bounds or allocate without end.
"""

import collections
import contextlib
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from . import dtypes

# torch storage type -> NumPy dtype (bfloat16: ml_dtypes', which is gd.bfloat16)
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LOCAL_HEADER = struct.Struct("<4s22xHH")       # signature, ..., name length, extra length
_MAX_PICKLE_BYTES = 1 << 30


class _StorageType:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _TensorRecord:
    """A tensor as the pickle describes it; turned into an array once the whole file is read.
    No ``__dict__`` and no ``__setstate__``: a pickle cannot BUILD anything onto it."""
    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array


class _Unpickler(pickle.Unpickler):
    """Resolves only the allowed globals; storages come from ``read_storage``; every array it
    makes is charged to ``budget`` (bytes), so a crafted record cannot allocate without end."""

    def __init__(self, data, read_storage, budget):
        super().__init__(io.BytesIO(data))
        self._read_storage = read_storage
        self.budget = budget
        self._allowed = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            # MultiStepLR's milestones (torch's weights-only loader allows it too)
            ("collections", "Counter"): collections.Counter,
            ("torch", "Size"): tuple,          # a shape kept in a checkpoint (allowed by torch too)
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            **{("torch", name): _StorageType(name) for name in _STORAGES},
        }

    def charge(self, nbytes):
        self.budget -= nbytes
        if self.budget < 0:
            raise ValueError("its tensors need more memory than this machine has free")

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"the checkpoint names {module}.{name}, which a state dict does not need; "
                "gpudl loads only tensors, numbers, strings and containers of them") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and type(pid[4]) is int and pid[4] >= 0):
            raise pickle.UnpicklingError(f"unexpected storage reference {pid!r:.80}")
        return self._read_storage(pid[1].name, pid[2], pid[4], self)

    def _rebuild_tensor(self, storage, offset, size, stride, requires_grad=False, hooks=None,
                        metadata=None):
        if not (isinstance(storage, np.ndarray) and isinstance(size, tuple)
                and isinstance(stride, tuple) and len(size) == len(stride)
                and all(type(v) is int and v >= 0 for v in size + stride + (offset,))):
            raise pickle.UnpicklingError("a tensor record has malformed size, stride or offset")
        numel = 1
        for n in size:
            numel *= n
        self.charge(numel * storage.itemsize)
        if numel == 0:
            return _TensorRecord(np.zeros(size, storage.dtype))
        extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
        if extent > storage.size:
            raise pickle.UnpicklingError(f"a tensor reaches element {extent - 1} of a storage "
                                         f"of {storage.size} elements")
        item = storage.itemsize
        view = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * item for s in stride])
        return _TensorRecord(np.array(view))

    @staticmethod
    def _rebuild_parameter(record, requires_grad=False, hooks=None, *state):
        if not isinstance(record, _TensorRecord):
            raise pickle.UnpicklingError("a parameter record does not hold a tensor")
        return record


def _data_offset(f, info, file_size):
    """Where an uncompressed zip member's bytes start, checked to lie inside the file."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"member {info.filename!r} is compressed; torch.save never compresses, "
                         "so this is not a checkpoint gpudl reads")
    f.seek(info.header_offset)
    header = f.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size:
        raise ValueError(f"member {info.filename!r} has a damaged local header")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    if signature != b"PK\x03\x04":
        raise ValueError(f"member {info.filename!r} has a damaged local header")
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    if start + info.file_size > file_size:
        raise ValueError(f"member {info.filename!r} runs past the end of the file")
    return start


def _to_plain(node):
    """OrderedDicts to dicts and tensor records to arrays; anything but state-dict values is
    refused (sets, bytes, ...)."""
    if isinstance(node, _TensorRecord):
        return node.array
    if isinstance(node, dict):
        return {key: _to_plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_to_plain(v) for v in node]
    if isinstance(node, tuple):
        return tuple(_to_plain(v) for v in node)
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise ValueError(f"the checkpoint holds a {type(node).__name__}, which gpudl does not load")


def read(path, available_bytes):
    """The object saved in the zip checkpoint at ``path`` (or in a binary file object), with
    NumPy arrays for its tensors.

    Raises ValueError for anything that is not a plain state-dict-like checkpoint or that would
    need more than ``available_bytes`` of memory.
    """
    opened = (open(path, "rb") if isinstance(path, (str, bytes, os.PathLike))
              else contextlib.nullcontext(path))
    with opened as f, zipfile.ZipFile(f) as archive:
        file_size = f.seek(0, io.SEEK_END)
        members = {info.filename: info for info in archive.infolist()}
        pickles = [name for name in members if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError("it is a zip archive without exactly one <name>/data.pkl, so not a "
                             "torch.save checkpoint")
        root = pickles[0][:-len("data.pkl")]
        byteorder = members.get(root + "byteorder")
        if byteorder is not None:
            f.seek(_data_offset(f, byteorder, file_size))
            if f.read(min(byteorder.file_size, 16)).strip() != b"little":
                raise ValueError("the checkpoint was written on a big-endian machine; "
                                 "gpudl reads little-endian checkpoints only")
        info = members[pickles[0]]
        if info.file_size > min(_MAX_PICKLE_BYTES, available_bytes):
            raise ValueError(f"its pickle claims {info.file_size} bytes, more than can be read")
        f.seek(_data_offset(f, info, file_size))
        data = f.read(info.file_size)
        storages = {}                        # tied weights name one storage several times

        def read_storage(type_name, key, numel, unpickler):
            if (type_name, key) in storages:
                return storages[type_name, key]
            member = members.get(f"{root}data/{key}")
            if member is None or not key.isdigit():
                raise ValueError(f"storage {key!r} named by the pickle is not in the archive")
            dtype = _STORAGES[type_name]
            raw = np.dtype(dtype)
            if member.file_size != numel * raw.itemsize:
                raise ValueError(f"storage {key!r} holds {member.file_size} bytes, not the "
                                 f"{numel} x {raw.itemsize} its record claims")
            unpickler.charge(member.file_size)
            f.seek(_data_offset(f, member, file_size))
            array = np.frombuffer(f.read(member.file_size), raw).copy()
            storages[type_name, key] = array
            return array

        try:
            return _to_plain(_Unpickler(data, read_storage, available_bytes).load())
        except RecursionError:
            raise ValueError("its pickle is nested too deeply") from None
        except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
                KeyError, struct.error, OverflowError, UnicodeDecodeError) as exc:
            raise ValueError(f"its pickle was refused: {exc}") from exc
