"""``gd.save`` / ``gd.load``: checkpoints in the safetensors format; PyTorch's zip checkpoints read.

Tensors (gpudl Tensors, NumPy or CuPy arrays) anywhere in nested dicts, lists and tuples become
the file's tensors, named by their dotted path (``"fc1.weight"``, ``"state.0.exp_avg"``); a flat
model ``state_dict`` therefore opens with ``safetensors.torch.load_file`` under exactly
PyTorch's keys. Everything else (the nesting, int keys, numbers, strings, bools, None, lists of
numbers) is kept as JSON in the header's metadata under ``"gpudl"``. A file without that entry
(written by ``safetensors.torch.save_file``, say) loads as a flat ``{name: Tensor}`` dict.
``gd.load`` also reads ``torch.save`` files through a restricted reader (``torch_checkpoint``)
that never runs code from the file. Saves are atomic (a temporary file, then a rename).
"""

import contextlib
import glob
import io
import json
import numbers
import os
import secrets
import time
import zipfile

import numpy as np

from . import backend, dtypes, torch_checkpoint
from .tensor import Tensor

_META_KEY = "gpudl"
_TENSOR, _DICT, _TUPLE = "__tensor__", "__dict__", "__tuple__"
_RESERVED_NAME = "__metadata__"      # the safetensors header's own entry
_MAX_DEPTH = 64                      # nesting deeper than any checkpoint needs
_NAME_MAX = 255                      # bytes in one file name on common file systems
_STALE_SECONDS = 2.0                 # a temporary file untouched this long before a save is stale


def _flatten(obj, path, tensors, open_containers=()):
    """The JSON skeleton of ``obj``; its tensors go into ``tensors`` under dotted names.
    ``open_containers`` holds the ids of the containers being flattened (a cycle is refused)."""
    where = ".".join(path) or "the top level"
    if isinstance(obj, (dict, list, tuple)):
        if id(obj) in open_containers:
            raise ValueError(f"save: the object refers to itself at {where}")
        if len(open_containers) >= _MAX_DEPTH:
            raise ValueError(f"save: nesting deeper than {_MAX_DEPTH} levels at {where}")
        open_containers = open_containers + (id(obj),)
    if isinstance(obj, (Tensor, np.ndarray)) or backend.is_device_array(obj):
        name = ".".join(path)
        if name == _RESERVED_NAME:
            raise ValueError(f"save: the key {_RESERVED_NAME!r} is reserved by the safetensors "
                             "format (its header entry); rename it")
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
            items.append([key, _flatten(value, path + [str(key)], tensors, open_containers)])
        return {_DICT: items}
    if isinstance(obj, (list, tuple)):
        values = [_flatten(v, path + [str(i)], tensors, open_containers)
                  for i, v in enumerate(obj)]
        return {_TUPLE: values} if isinstance(obj, tuple) else values
    if obj is None or isinstance(obj, (str, bool, np.bool_)):
        return obj if not isinstance(obj, np.bool_) else bool(obj)
    if isinstance(obj, numbers.Real):
        return int(obj) if isinstance(obj, numbers.Integral) else float(obj)
    raise TypeError(f"save: cannot store a {type(obj).__name__} at "
                    f"{'.'.join(path) or 'the top level'}; expected tensors, arrays, numbers, "
                    "strings, bools, None, and dicts/lists/tuples of them")


def save(obj, path):
    """Write ``obj`` (a tensor, or a dict or list of tensors, numbers, ... nested) to a
    .safetensors file, or to a binary file object (``io.BytesIO()``, ``open(p, "wb")``).

    The write to a path is atomic: a temporary file in the same folder, then ``os.replace``.

    Example:
        >>> gd.save(model.state_dict(), "model.safetensors")
        >>> gd.save(x, "x.safetensors")                         # gd.load gives x back
        >>> gd.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, p)
    """
    import safetensors.numpy
    alone = isinstance(obj, (Tensor, np.ndarray)) or backend.is_device_array(obj)
    if not alone and not isinstance(obj, (dict, list, tuple)):
        raise TypeError(f"save: obj must be a tensor, or a dict, list or tuple (e.g. a "
                        f"state_dict), got {type(obj).__name__}; save a model's state_dict(), "
                        "not the model")
    tensors = {}
    skeleton = _flatten(obj, ["tensor"] if alone else [], tensors)   # a name for a lone one
    metadata = {"format": "pt", _META_KEY: json.dumps(skeleton)}
    if hasattr(path, "write"):                      # a file object, as torch.save takes
        if isinstance(path, io.TextIOBase):
            raise TypeError(f"save: the file object must be opened for binary writing ('wb'), "
                            f"got {path!r}")
        path.write(safetensors.numpy.save(tensors, metadata=metadata))
        return
    target = os.path.realpath(os.fspath(path))      # through a symlink: write its target
    folder, name = os.path.split(target)
    started = time.time()
    tmp = os.path.join(folder, _temp_prefix(name) + secrets.token_hex(4) + ".tmp")
    try:
        safetensors.numpy.save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, _mode_for(target))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _remove_stale_temps(folder, name, started)


def _temp_prefix(name):
    """``.NAME.`` cut so that the temporary name (prefix + 8 hex + .tmp) fits in 255 bytes."""
    room = _NAME_MAX - len(".") - len(".") - 8 - len(".tmp")
    cut = name.encode()[:room].decode(errors="ignore")
    return f".{cut}."


def _mode_for(target):
    """An overwritten file keeps its mode; a new one gets the umask's (0644 under 022)."""
    try:
        return os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _remove_stale_temps(folder, name, started):
    """Temporary files of earlier saves of this path that were killed before they finished
    (untouched for a while before this save began: never another save's file in progress)."""
    prefix = _temp_prefix(name)
    for stale in glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + "*.tmp")):
        rest = os.path.basename(stale)[len(prefix):-len(".tmp")]
        try:
            if len(rest) == 8 and os.path.getmtime(stale) < started - _STALE_SECONDS:
                os.unlink(stale)
        except OSError:
            pass


def _check_header(path):
    """Refuse what is plainly not a safetensors file before handing it to the parser, and say
    which format it is: ``"safetensors"`` or ``"torch-zip"`` (a ``torch.save`` checkpoint).

    A safetensors file starts with the header's length (8 bytes, little-endian) and the JSON
    header itself, ``{...``.
    """
    with _opened(path) as f:
        size = f.seek(0, io.SEEK_END)
        f.seek(0)
        head = f.read(9)
        path = _name(path)
    if size == 0:
        raise ValueError(f"load: {path!r} is empty (an interrupted write?)")
    header = int.from_bytes(head[:8], "little") if len(head) == 9 else None
    if header is not None and head[8:9] == b"{" and header <= size - 8:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) > 1 and head[0] == 0x80 and head[1] in (2, 3, 4, 5):      # pickle PROTO opcode
        raise ValueError(
            f"load: {path!r} is a bare pickle (a torch.save checkpoint from before PyTorch 1.6, "
            "or pickle.dump), not a safetensors file or a zip checkpoint; gpudl never unpickles "
            "arbitrary objects. Re-save it in PyTorch with torch.save(state_dict, path) or "
            "safetensors.torch.save_file(state_dict, path)")
    raise ValueError(f"load: {path!r} is not a safetensors file or is truncated (header "
                     f"length {header}, file size {size} bytes)")


def _available_memory():
    """Bytes this process could still allocate (MemAvailable on Linux, physical memory else)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _rebuild(node, tensors, depth=0):
    if depth > _MAX_DEPTH:
        raise ValueError(f"nesting deeper than {_MAX_DEPTH} levels")
    if isinstance(node, list):
        return [_rebuild(v, tensors, depth + 1) for v in node]
    if not isinstance(node, dict):
        return node
    if _TENSOR in node:
        return tensors[node[_TENSOR]]
    if _TUPLE in node:
        return tuple(_rebuild(v, tensors, depth + 1) for v in node[_TUPLE])
    return {key: _rebuild(value, tensors, depth + 1) for key, value in node[_DICT]}


def _opened(source):
    """A binary file open on ``source``: a path (opened and closed), or a file object (seeked to
    its start, left open)."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
        return contextlib.nullcontext(source)
    return open(source, "rb")


def _name(source):
    return source if not isinstance(source, io.BytesIO) else "the file object"


def _read_safetensors(path):
    """(arrays by name, metadata) of a safetensors file (a path, or the bytes of a file object
    in a BytesIO), its sizes checked against free memory before the parser allocates (its
    allocation failures are Rust panics, not Python errors)."""
    from safetensors import safe_open
    source, path = path, _name(path)
    with _opened(source) as f:
        header_length = int.from_bytes(f.read(8), "little")
        if header_length > min(100 << 20, _available_memory()):
            raise ValueError(f"load: {path!r} claims a {header_length}-byte header")
        try:
            header = json.loads(f.read(header_length))
            needed = sum(int(end) - int(start) for name, entry in header.items()
                         if name != _RESERVED_NAME for start, end in [entry["data_offsets"]])
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise ValueError(f"load: {path!r} is not a valid safetensors file (header: "
                             f"{exc})") from None
    available = _available_memory()
    if needed > available:
        raise ValueError(f"load: {path!r} holds {needed / 2**30:.1f} GiB of tensors, more than "
                         f"the {available / 2**30:.1f} GiB of memory free")
    try:
        if isinstance(source, io.BytesIO):
            return _arrays_of_bytes(source.getvalue()), header.get(_RESERVED_NAME) or {}
        with safe_open(path, framework="np") as f:
            return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # the parser's errors include pyo3's PanicException (BaseException)
        raise ValueError(f"load: {path!r} is not a valid safetensors file ({exc})") from exc


# safetensors dtype names -> NumPy dtypes (bfloat16: ml_dtypes', which safetensors.numpy's
# bytes reader lacks; its file reader, safe_open, has it)
_BYTES_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
                 "BF16": dtypes.bfloat16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
                 "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
                 "U8": np.uint8, "BOOL": np.bool_}


def _arrays_of_bytes(data):
    """{name: array} of the safetensors file held in ``data`` (bytes), checked by the parser."""
    from safetensors import deserialize
    arrays = {}
    for name, view in deserialize(data):
        dtype = _BYTES_DTYPES.get(view["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name!r} has dtype {view['dtype']}, which gpudl does not "
                             f"load (expected one of {sorted(_BYTES_DTYPES)})")
        arrays[name] = np.frombuffer(view["data"], dtype=dtype).reshape(view["shape"]).copy()
    return arrays


def _tensors_of(node, device):
    """Every NumPy array in a loaded torch checkpoint as a gpudl Tensor on ``device``."""
    if isinstance(node, np.ndarray):
        return Tensor._make(backend.to_device_array(node, device), False, None, 0, device)
    if isinstance(node, dict):
        return {key: _tensors_of(value, device) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_tensors_of(v, device) for v in node)
    return node


def load(path, device=None, *, map_location=None, weights_only=True):
    """Read a checkpoint: a file written by ``gd.save`` (or any .safetensors file), or a
    PyTorch zip checkpoint (``torch.save(model.state_dict(), "model.pth")``, PyTorch >= 1.6),
    from a path or a binary file object (read to its end).

    Tensors come back as gpudl Tensors on ``device`` (or ``map_location``, PyTorch's name for it:
    a device or device string; default ``gd.device()``). Loading is always weights-only, whatever
    ``weights_only`` says: nothing is unpickled except the few objects a state dict is made of
    (tensors, OrderedDicts), which gpudl rebuilds itself, so loading a file never runs code from it.
    Truncated, empty, crafted or foreign files raise ValueError.
    """
    if hasattr(path, "read"):                       # a file object, as torch.load takes
        data = None if isinstance(path, io.TextIOBase) else path.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"load: the file object must be opened for binary reading ('rb'), "
                            f"got {path!r}")
        path = io.BytesIO(data)
    else:
        path = os.fspath(path)
    if device is not None and map_location is not None:
        raise TypeError("load: pass device or map_location, not both")
    if isinstance(map_location, dict) or callable(map_location):
        raise TypeError(f"load: map_location must be a device or a device string such as "
                        f"'cpu' or 'cuda:0', got {type(map_location).__name__} (gpudl does not "
                        "take PyTorch's dict or callable forms)")
    if not isinstance(weights_only, bool):
        raise TypeError(f"load: weights_only must be a bool, got {type(weights_only).__name__}")
    device = backend.check_device(device if map_location is None else map_location, "load")
    if _check_header(path) == "torch-zip":
        try:
            return _tensors_of(torch_checkpoint.read(path, _available_memory()), device)
        except ValueError as exc:
            raise ValueError(f"load: {_name(path)!r}: {exc}") from exc
        except zipfile.BadZipFile as exc:
            raise ValueError(f"load: {_name(path)!r} is a damaged zip archive ({exc})") from exc
    arrays, metadata = _read_safetensors(path)
    tensors = {name: Tensor._make(backend.to_device_array(a, device), False, None, 0, device)
               for name, a in arrays.items()}
    if _META_KEY not in metadata:
        return tensors
    try:
        return _rebuild(json.loads(metadata[_META_KEY]), tensors)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ValueError(f"load: {_name(path)!r} has a damaged gpudl structure entry "
                         f"({exc})") from exc
