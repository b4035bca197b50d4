"""Kernel launches through CuPy's launcher: Numba's PTX, packed by CuPy's compiled code.

The first GPU run (H200, benchmarks/RESULTS.md) measured Numba's launch at 128 us of host time
per kernel for a specialised dispatcher (100 us with Numba device arrays, 168 us lazily typed):
the whole of an eager LeNet step's 7.2 ms. Numba builds each launch's argument buffer in Python.
CuPy launches a loaded function from Cython, packing NumPy scalars straight into the parameter
buffer. So this module loads the PTX that Numba compiles for a (kernel, signature), the PTX the
gate checks, as a CuPy module, and launches it with the arguments laid out as Numba's calling
convention lays them out (``layout``): each array as its struct's fields (meminfo, parent,
nitems, itemsize, data, shape..., strides...; 64-bit each), each scalar as itself. The gate
checks that layout against every kernel's PTX parameter list offline (``check_layout``).

Opt-in (``GPUDL_LAUNCH=cupy``) until a GPU has run the suite and the launch benchmark with it;
``launch`` falls back to Numba for good for a kernel whose PTX CuPy cannot load (a kernel that
needs linking, such as a grid-wide sync's).
"""

import re

import numpy as np

from gpudl import backend

ENABLED = __import__("os").environ.get("GPUDL_LAUNCH", "numba").strip().lower() == "cupy"
_ARRAY_FIELDS = 5                 # meminfo, parent, nitems, itemsize, data; then shape, strides
_DEFAULT_SHARED = 48 * 1024       # dynamic shared memory above this needs the function's opt-in
_MAX_DYNAMIC_SHARED = 8           # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

_loaded = {}       # (kernel, signature, device) -> _Loaded
FALLBACK = {}      # (kernel, signature) -> why CuPy could not load it: Numba launches it


class _Loaded:
    def __init__(self, function, layout):
        self.function, self.layout, self.shared_opt_in = function, layout, _DEFAULT_SHARED


def layout(signature):
    """Per argument of a Numba signature string: an int (an array of that many dims) or the
    NumPy scalar type that carries a scalar."""
    from numba.core import sigutils, types
    from numba.np.numpy_support import as_dtype
    args, _ = sigutils.normalize_signature(signature)
    out = []
    for t in args:
        if isinstance(t, types.Array):
            out.append(t.ndim)
        elif isinstance(t, (types.Integer, types.Float, types.Boolean)):
            out.append(as_dtype(t).type)
        else:
            raise TypeError(f"fast_launch: no layout for a {t} argument")
    return tuple(out)


def param_bytes(layout_):
    """The parameter sizes in bytes the layout passes, in order."""
    sizes = []
    for kind in layout_:
        if isinstance(kind, int):
            sizes += [8] * (_ARRAY_FIELDS + 2 * kind)
        else:
            sizes.append(np.dtype(kind).itemsize)
    return sizes


_PARAM = re.compile(r"\.param\s+\.(?:[us]|b|f)(8|16|32|64)\s+\S+?_param_\d+")


def ptx_param_bytes(ptx):
    """The parameter sizes in bytes of the PTX's one entry function."""
    entry = ptx[ptx.index(".entry"):]
    entry = entry[:entry.index(")")]
    return [int(bits) // 8 for bits in _PARAM.findall(entry)]


def check_layout(ptx, signature):
    """None when the layout of ``signature`` passes exactly the PTX entry's parameters, else
    what differs (the gate reports it as the kernel's error)."""
    try:
        ours = param_bytes(layout(signature))
    except TypeError as exc:
        return str(exc)
    theirs = ptx_param_bytes(ptx)
    if ours != theirs:
        return (f"fast_launch layout passes {len(ours)} parameters {ours[:12]}..., the PTX "
                f"takes {len(theirs)} {theirs[:12]}...")
    return None


_ZERO = np.uint64(0)


def flatten(layout_, args):
    """The launch's parameters: numbers in ``layout_``'s order and types."""
    flat = []
    for kind, arg in zip(layout_, args):
        if isinstance(kind, int):
            flat += [_ZERO, _ZERO, np.int64(arg.size), np.int64(arg.dtype.itemsize),
                     np.uint64(backend.address(arg))]
            flat += [np.int64(n) for n in arg.shape]
            flat += [np.int64(s) for s in arg.strides]
        else:
            flat.append(kind(arg))
    return tuple(flat)


def _load(kernel, signature):
    import cupy
    from numba import cuda

    from .launch import compile_options     # launch.py imports this module
    device = cupy.cuda.Device()
    cc = tuple(int(c) for c in device.compute_capability)
    ptx, _ = cuda.compile_ptx(getattr(kernel, "py_func", kernel), signature, cc=cc,
                              **compile_options(kernel))
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
    grid = blocks if isinstance(blocks, tuple) else (blocks,)
    block = threads if isinstance(threads, tuple) else (threads,)
    loaded.function(grid, block, flatten(loaded.layout, args), shared_mem=shared)
    return True


def active():
    """Whether launches go through CuPy (opted in, on a real GPU)."""
    return ENABLED and backend._cupy is not None and not backend.SIMULATOR
