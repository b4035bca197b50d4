"""``gd.save`` / ``gd.load``: checkpoints in the safetensors format, never a pickle.

Tensors (gpudl Tensors, NumPy or CuPy arrays) anywhere in nested dicts, lists and tuples become
the file's tensors, named by their dotted path (``"fc1.weight"``, ``"state.0.exp_avg"``); a flat
model ``state_dict`` therefore opens with ``safetensors.torch.load_file`` under exactly
PyTorch's keys. Everything else (the nesting, int keys, numbers, strings, bools, None, lists of
numbers) is kept as JSON in the header's metadata under ``"gpudl"``. A file without that entry
(written by ``safetensors.torch.save_file``, say) loads as a flat ``{name: Tensor}`` dict.
"""

import json
import numbers
import os
import tempfile

import numpy as np

from . import backend
from .tensor import Tensor

_META_KEY = "gpudl"
_TENSOR, _DICT, _TUPLE = "__tensor__", "__dict__", "__tuple__"


def _flatten(obj, path, tensors):
    """The JSON skeleton of ``obj``; its tensors go into ``tensors`` under dotted names."""
    if isinstance(obj, (Tensor, np.ndarray)) or backend.is_device_array(obj):
        name = ".".join(path)
        if name in tensors:
            raise ValueError(f"save: two tensors would be stored under the name {name!r}; "
                             "rename a key (names are dotted paths)")
        array = backend.to_numpy(obj._data if isinstance(obj, Tensor) else obj)
        tensors[name] = array if array.flags.c_contiguous else array.copy(order="C")
        return {_TENSOR: name}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if isinstance(key, bool) or not isinstance(key, (str, numbers.Integral)):
                raise TypeError(f"save: dict keys must be str or int, got {key!r} at "
                                f"{'.'.join(path) or 'the top level'}")
            key = key if isinstance(key, str) else int(key)
            items.append([key, _flatten(value, path + [str(key)], tensors)])
        return {_DICT: items}
    if isinstance(obj, (list, tuple)):
        values = [_flatten(v, path + [str(i)], tensors) for i, v in enumerate(obj)]
        return {_TUPLE: values} if isinstance(obj, tuple) else values
    if obj is None or isinstance(obj, (str, bool, np.bool_)):
        return obj if not isinstance(obj, np.bool_) else bool(obj)
    if isinstance(obj, numbers.Real):
        return int(obj) if isinstance(obj, numbers.Integral) else float(obj)
    raise TypeError(f"save: cannot store a {type(obj).__name__} at "
                    f"{'.'.join(path) or 'the top level'}; expected tensors, arrays, numbers, "
                    "strings, bools, None, and dicts/lists/tuples of them")


def save(obj, path):
    """Write ``obj`` (a dict or list of tensors, numbers, ... nested) to a .safetensors file.

    The write is atomic: a temporary file in the same folder, then ``os.replace``.

    Example:
        >>> gd.save(model.state_dict(), "model.safetensors")
        >>> gd.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, p)
    """
    import safetensors.numpy
    if not isinstance(obj, (dict, list, tuple)):
        raise TypeError(f"save: obj must be a dict, list or tuple (e.g. a state_dict), got "
                        f"{type(obj).__name__}; wrap a single tensor as {{'tensor': t}}")
    tensors = {}
    skeleton = _flatten(obj, [], tensors)
    metadata = {"format": "pt", _META_KEY: json.dumps(skeleton)}
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    os.close(fd)
    try:
        safetensors.numpy.save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _check_header(path):
    """Refuse what is plainly not a safetensors file before handing it to the parser.

    A safetensors file starts with the header's length (8 bytes, little-endian) and the JSON
    header itself, ``{...``.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if size == 0:
        raise ValueError(f"load: {path!r} is empty (an interrupted write?)")
    header = int.from_bytes(head[:8], "little") if len(head) == 9 else None
    if header is not None and head[8:9] == b"{" and header <= size - 8:
        return
    pickled = len(head) > 1 and head[0] == 0x80 and head[1] in (2, 3, 4, 5)   # PROTO opcode
    if head.startswith(b"PK\x03\x04") or pickled:
        raise ValueError(
            f"load: {path!r} is a pickle or a zip archive (a torch.save checkpoint?), not a "
            "safetensors file; gpudl never unpickles. Convert it in PyTorch with "
            "safetensors.torch.save_file(state_dict, path)")
    raise ValueError(f"load: {path!r} is not a safetensors file or is truncated (header "
                     f"length {header}, file size {size} bytes)")


def _rebuild(node, tensors):
    if isinstance(node, list):
        return [_rebuild(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if _TENSOR in node:
        return tensors[node[_TENSOR]]
    if _TUPLE in node:
        return tuple(_rebuild(v, tensors) for v in node[_TUPLE])
    return {key: _rebuild(value, tensors) for key, value in node[_DICT]}


def load(path, device=None):
    """Read a file written by ``gd.save`` (or any .safetensors file) back.

    Tensors come back as gpudl Tensors on ``device`` (default: ``gd.device()``). Nothing is
    unpickled; truncated, empty or foreign files (pickles included) raise ValueError.
    """
    from safetensors import safe_open
    path = os.fspath(path)
    device = backend.check_device(device, "load")
    _check_header(path)
    try:
        with safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:     # the parser's errors come as several Rust-side types
        raise ValueError(f"load: {path!r} is not a valid safetensors file ({exc})") from exc
    tensors = {name: Tensor._make(backend.to_device_array(a, device), False, None, 0, device)
               for name, a in arrays.items()}
    if _META_KEY not in metadata:
        return tensors
    try:
        return _rebuild(json.loads(metadata[_META_KEY]), tensors)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"load: {path!r} has a damaged gpudl structure entry ({exc})") from exc
