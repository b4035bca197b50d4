"""Kernel launches without Numba's launcher: Numba's PTX, its parameters packed in one call.

The first GPU run (H200, benchmarks/RESULTS.md) measured Numba's launch at 128 us of host time
per kernel for a specialised dispatcher (100 us with Numba device arrays, 168 us lazily typed):
the whole of an eager LeNet step's 7.2 ms. Numba builds each launch's argument buffer in Python.
So this module loads the PTX that Numba compiles for a (kernel, signature), the PTX the gate
checks, as a CuPy module, and launches it itself with the arguments laid out as Numba's calling
convention lays them out (``layout``): each array as its struct's fields (meminfo, parent,
nitems, itemsize, data, shape..., strides...; 64-bit each), each scalar as itself (a boolean as
one byte).

Session 19: the launch passed those fields as a tuple of NumPy scalars to CuPy's
``Function.__call__`` (33 us a launch on the H200), which wraps each of the ~100 parameters of a
3-array kernel one by one. Now each loaded kernel has a ``struct.Struct`` in native alignment
(``packer``: every parameter at an offset aligned to its own size, as the PTX ``.param`` list
lays them out); a launch collects plain numbers (``values``), packs them with one ``pack_into``
into a fresh ctypes buffer that also holds the driver's ``extra`` array ``{BUFFER_POINTER,
&params, BUFFER_SIZE, &size, END}`` (``CU_LAUNCH_PARAM_*``; ``_Loaded.pack``), and calls
``cuLaunchKernel`` once through CuPy's driver binding on CuPy's current stream. The buffer is
the call's own (a launch may come from several threads, and the driver binding may release the
GIL); the driver copies the parameters during the call, so under CUDA-graph capture the kernel
node holds its own copy. A scalar that does not fit its parameter (an int32 out of range, a
float for an integer) raises ``struct.error`` where Numba's ctypes marshalling would wrap or
raise. The gate checks the layout against every kernel's PTX parameter list offline, sizes,
offsets and total (``check_layout``).

The default for eager launches since session 21 (``GPUDL_LAUNCH=numba`` turns it off): session
20's GPU run passed the kernel, conv, pool, RNN, attention and graph tests with it (1,065) but one,
a hand-written training step captured into a CUDA graph that replayed a NaN loss, cause unknown.
So inside a capture (``backend.capture_guard`` set) kernels still go through Numba's launcher,
until tools/graph_probe.py, which captures that step in parts with Numba's launcher, the packed
one, and the two mixed as now, shows where it went wrong (``IN_CAPTURE``). ``launch`` falls back to Numba for good for a kernel whose PTX CuPy
cannot load (a kernel that needs linking, such as a grid-wide sync's).
"""

import ctypes
import re
import struct

from gpudl import backend

ENABLED = __import__("os").environ.get("GPUDL_LAUNCH", "cupy").strip().lower() != "numba"
IN_CAPTURE = False      # packed launches inside a CUDA graph capture too (see above)
_DEFAULT_SHARED = 48 * 1024       # dynamic shared memory above this needs the function's opt-in
_MAX_DYNAMIC_SHARED = 8           # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
# an array's fields: meminfo and parent (null: nothing on the device reads them), nitems,
# itemsize, data; then shape and strides (int64 each)
_ARRAY_HEAD = "QQqqQ"
# the driver's extra array (CU_LAUNCH_PARAM_BUFFER_POINTER = 1, the parameters' address,
# CU_LAUNCH_PARAM_BUFFER_SIZE = 2, the address of their size as a size_t, CU_LAUNCH_PARAM_END = 0)
# and that size_t, ahead of the parameters in the same buffer: 6 words
_EXTRA = "6Q"
_EXTRA_BYTES = 48
_SCALARS = {"bool": "?", "int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i",
            "uint32": "I", "int64": "q", "uint64": "Q", "float16": "e", "float32": "f",
            "float64": "d"}

_loaded = {}       # (kernel, signature, device) -> _Loaded
FALLBACK = {}      # (kernel, signature) -> why CuPy could not load it: Numba launches it


def layout(signature):
    """Per argument of a Numba signature string: an int (an array of that many dims) or the
    ``struct`` code of the scalar ("?" a boolean, "i" an int32, "d" a float64...)."""
    from numba.core import sigutils, types
    args, _ = sigutils.normalize_signature(signature)
    out = []
    for t in args:
        if isinstance(t, types.Array):
            out.append(t.ndim)
        elif isinstance(t, (types.Integer, types.Float, types.Boolean)) and \
                str(t) in _SCALARS:
            out.append(_SCALARS[str(t)])
        else:
            raise TypeError(f"fast_launch: no layout for a {t} argument")
    return tuple(out)


def param_codes(layout_):
    """The ``struct`` code of every parameter the layout passes, in order."""
    return "".join(_ARRAY_HEAD + "q" * (2 * kind) if isinstance(kind, int) else kind
                   for kind in layout_)


def packer(layout_):
    """The layout's parameter buffer: a ``struct.Struct`` in native alignment."""
    return struct.Struct("@" + param_codes(layout_))


def param_offsets(layout_):
    """(offset, size) of every parameter in ``packer(layout_)``'s buffer, read off ``struct``."""
    codes = param_codes(layout_)
    out = []
    for i, code in enumerate(codes):
        size = struct.calcsize("@" + code)
        out.append((struct.calcsize("@" + codes[:i + 1]) - size, size))
    return out


_PARAM = re.compile(r"\.param\s+\.(?:[us]|b|f)(8|16|32|64)\s+\S+?_param_\d+")


def ptx_param_bytes(ptx):
    """The parameter sizes in bytes of the PTX's one entry function."""
    entry = ptx[ptx.index(".entry"):]
    entry = entry[:entry.index(")")]
    return [int(bits) // 8 for bits in _PARAM.findall(entry)]


def ptx_param_offsets(ptx):
    """(offsets, total bytes) of the PTX entry's parameter buffer: each parameter at the next
    offset that is a multiple of its size (the ABI's alignment of a scalar parameter)."""
    offsets, end = [], 0
    for size in ptx_param_bytes(ptx):
        end += -end % size
        offsets.append(end)
        end += size
    return offsets, end


def check_layout(ptx, signature):
    """None when the layout of ``signature`` packs exactly the PTX entry's parameters (sizes,
    offsets, total), else what differs (the gate reports it as the kernel's error)."""
    try:
        layout_ = layout(signature)
    except TypeError as exc:
        return str(exc)
    ours = param_offsets(layout_)
    theirs = ptx_param_bytes(ptx)
    sizes = [size for _, size in ours]
    if sizes != theirs:
        return (f"fast_launch layout passes {len(sizes)} parameters {sizes[:12]}..., the PTX "
                f"takes {len(theirs)} {theirs[:12]}...")
    offsets, total = ptx_param_offsets(ptx)
    for i, ((offset, _), want) in enumerate(zip(ours, offsets)):
        if offset != want:
            return f"fast_launch packs parameter {i} at byte {offset}, the PTX's is at {want}"
    if packer(layout_).size != total:
        return (f"fast_launch packs {packer(layout_).size} bytes of parameters, the PTX's "
                f"take {total}")
    return None


def values(layout_, args):
    """The launch's parameters as plain numbers, in ``layout_``'s order."""
    out = []
    for kind, arg in zip(layout_, args):
        if kind.__class__ is int:
            out += (0, 0, arg.size, arg.dtype.itemsize, backend.address(arg))
            out += arg.shape
            out += arg.strides
        else:
            out.append(arg)
    return out


class _Loaded:
    """A loaded kernel: its function and how to pack its parameters."""

    def __init__(self, function, layout_):
        self.function, self.layout, self.shared_opt_in = function, layout_, _DEFAULT_SHARED
        self.params = packer(layout_)
        whole = struct.Struct("@" + _EXTRA + param_codes(layout_))
        assert whole.size == _EXTRA_BYTES + self.params.size     # the parameters 8-aligned
        self._pack_into = whole.pack_into
        self._buffer = ctypes.c_uint64 * -(-whole.size // 8)     # 8-aligned, zeroed

    def pack(self, args):
        """A fresh buffer holding the driver's extra array, the parameters' size and the
        parameters of ``args``; returns (buffer, address of the extra array). Keep the buffer
        alive until the launch returns."""
        buffer = self._buffer()
        at = ctypes.addressof(buffer)
        self._pack_into(buffer, 0, 1, at + _EXTRA_BYTES, 2, at + 40, 0, self.params.size,
                        *values(self.layout, args))
        return buffer, at


def _load(kernel, signature):
    import cupy
    from numba import cuda

    from . import kernel_cache
    from .launch import compile_options     # launch.py imports this module
    device = cupy.cuda.Device()
    cc = tuple(int(c) for c in device.compute_capability)
    ptx = kernel_cache.ptx(getattr(kernel, "py_func", kernel), signature, cc,
                           compile_options(kernel), cuda.compile_ptx)
    problem = check_layout(ptx, signature)
    if problem:
        raise RuntimeError(problem)
    name = re.search(r"\.entry\s+(\S+?)\s*\(", ptx).group(1)
    module = cupy.cuda.function.Module()
    module.load(ptx.encode())
    return _Loaded(module.get_function(name), layout(signature))


def launch(kernel, signature, blocks, threads, args, shared=0):
    """Launch ``kernel``'s ``signature`` build on CuPy's current stream; False if this kernel
    must go through Numba (``FALLBACK`` says why), after which the caller launches it there."""
    key = (kernel, signature)
    if key in FALLBACK:
        return False
    import cupy
    device_key = key + (cupy.cuda.runtime.getDevice(),)
    loaded = _loaded.get(device_key)
    if loaded is None:
        try:
            loaded = _loaded[device_key] = _load(kernel, signature)
        except Exception as exc:   # noqa: BLE001 - Numba's launcher takes any kernel it can't
            FALLBACK[key] = f"{type(exc).__name__}: {exc}"
            return False
    if shared > loaded.shared_opt_in:
        cupy.cuda.driver.funcSetAttribute(loaded.function.ptr, _MAX_DYNAMIC_SHARED, shared)
        loaded.shared_opt_in = shared
    gx, gy, gz = (blocks + (1, 1))[:3] if isinstance(blocks, tuple) else (blocks, 1, 1)
    bx, by, bz = (threads + (1, 1))[:3] if isinstance(threads, tuple) else (threads, 1, 1)
    buffer, extra = loaded.pack(args)
    cupy.cuda.driver.launchKernel(loaded.function.ptr, gx, gy, gz, bx, by, bz, shared,
                                  cupy.cuda.get_current_stream().ptr, 0, extra)
    del buffer          # read by the driver during the call: alive until it returned
    return True


def active():
    """Whether eager launches go through CuPy (not turned off, on a real GPU)."""
    return ENABLED and backend._cupy is not None and not backend.SIMULATOR
