"""Run the optimizers' fused CUDA updates without a GPU.

The optimizers hand ``backend.elementwise_kernel`` CuPy-style (in_params, out_params, operation)
strings. Here the same strings are (1) compiled as C++ by the host compiler and run on NumPy
arrays, so their arithmetic can be compared with torch, and (2) compiled as CUDA by NVRTC for
float and double, so a typo or an fp64 instruction in a float kernel fails without a GPU. The
code mirrors what CuPy generates: ``typedef <dtype> T;``, inputs bound as ``const T &name``,
outputs as ``T &name``, scalars as kernel arguments.
"""

import atexit
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

from gpudl import backend

CTYPES = {np.dtype(np.float32): ("float", ctypes.c_float),
          np.dtype(np.float64): ("double", ctypes.c_double)}
# CuPy's names for parameters of a fixed type (``float64 lr``), as its generated code defines them
TYPE_NAMES = "typedef float float32;\ntypedef double float64;\n"


# Under the strict simulator a cuda tensor's array must stay a device array.
_ARRAY_BASE = np.ndarray
if backend.SIM_DEVICE_ARRAYS:
    from gpudl.sim_device import SimDeviceArray as _ARRAY_BASE


class DeviceLike(_ARRAY_BASE):
    """A NumPy array the optimizers are made to treat as a CuPy array (``get()`` as CuPy's)."""

    def get(self):
        return self.view(np.ndarray).copy()


def _params(spec):
    return [p.split() for p in spec.split(",") if p.strip()]


def kernel_body(in_params, out_params, operation, arrays):
    """The loop body: bindings of array parameters as CuPy writes them, then the operation."""
    lines = [f"const {t} &{n} = _raw_{n}[i];" for t, n in _params(in_params) if n in arrays]
    lines += [f"{t} &{n} = _raw_{n}[i];" for t, n in _params(out_params)]
    return "\n    ".join(lines + [operation])


def _signature(in_params, out_params, arrays):
    args = [f"const {t}* _raw_{n}" if n in arrays else f"{t} {n}"
            for t, n in _params(in_params)]
    args += [f"{t}* _raw_{n}" for t, n in _params(out_params)]
    return ", ".join(args + ["long n"])


class HostKernel:
    """Callable like a cupy.ElementwiseKernel, running the operation on the CPU."""

    cache = {}
    recorded = set()       # (in_params, out_params, operation, array names) seen by __call__
    calls = 0

    def __init__(self, in_params, out_params, operation, name):
        self.spec = (in_params, out_params, operation)
        self.name = name

    def __call__(self, *args):
        in_params, out_params, operation = self.spec
        params = _params(in_params) + _params(out_params)
        n_in = len(_params(in_params))
        _check_types(params, n_in, args)
        # CuPy broadcasts a 0-d input array against the others (the strict simulator's scalars
        # are 0-d arrays): bound here as a scalar; a kernel over 0-d arrays only runs once
        broadcast = any(isinstance(a, np.ndarray) and a.ndim for a in args)
        args = [a.item() if i < n_in and broadcast and isinstance(a, np.ndarray) and a.ndim == 0
                else a for i, a in enumerate(args)]
        # CuPy reads strided inputs in place; the host loop reads a contiguous copy
        args = [np.ascontiguousarray(a) if i < n_in and isinstance(a, np.ndarray) else a
                for i, a in enumerate(args)]
        arrays = frozenset(n for (_, n), a in zip(params, args) if isinstance(a, np.ndarray))
        # T is the dtype of the arrays declared T; a parameter of a fixed type (float32 step)
        # has that type
        dtype = next(a.dtype for (t, _), a in zip(params, args)
                     if t == "T" and isinstance(a, np.ndarray))
        ctype = CTYPES[dtype][0]
        HostKernel.recorded.add((in_params, out_params, operation, arrays))
        HostKernel.calls += 1
        function = self._compile(ctype, arrays)
        size = next(a.size for a in args if isinstance(a, np.ndarray))
        call = []
        for (t, _), a in zip(params, args):
            want = dtype if t == "T" else np.dtype(t)
            if isinstance(a, np.ndarray):
                assert a.dtype == want and a.flags.c_contiguous and a.size == size
                call.append(ctypes.c_void_p(a.ctypes.data))
            else:
                call.append(CTYPES[want][1](a))
        function(*call, ctypes.c_long(size))

    def _compile(self, ctype, arrays):
        in_params, out_params, operation = self.spec
        source = ("#include <cmath>\nusing std::sqrt; using std::isnan; using std::pow;\n"
                  f"typedef {ctype} T;\n{TYPE_NAMES}"
                  f'extern "C" void kernel({_signature(in_params, out_params, arrays)}) {{\n'
                  "  for (long i = 0; i < n; ++i) {\n    "
                  + kernel_body(in_params, out_params, operation, arrays) + "\n  }\n}\n")
        key = hashlib.sha1(source.encode()).hexdigest()
        if key not in HostKernel.cache:
            HostKernel.cache[key] = _build_shared_library(source, key).kernel
        return HostKernel.cache[key]


class HostReductionKernel:
    """Callable like a cupy.ReductionKernel over all axes (no ``axis``), running it on the CPU:
    ``a`` starts at the identity, takes ``a = reduce(a, map(i))`` for every element in order,
    then the post-map writes the one output. Only the order of the sum differs from CuPy's
    tree."""

    cache = {}

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name):
        self.spec = (in_params, out_params, map_expr, reduce_expr, post_map_expr, identity)
        self.name = name

    def __call__(self, *args):
        in_params, out_params = self.spec[:2]
        params = _params(in_params)
        assert len(args) == len(params), "the output is allocated here, as CuPy does"
        _check_types(params, len(params), args)
        args = [np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a for a in args]
        arrays = frozenset(n for (_, n), a in zip(params, args) if isinstance(a, np.ndarray))
        dtype = next(a.dtype for a in args if isinstance(a, np.ndarray))
        size = next(a.size for a in args if isinstance(a, np.ndarray))
        out = np.empty((), dtype)
        call = [ctypes.c_void_p(a.ctypes.data) if isinstance(a, np.ndarray)
                else CTYPES[dtype if t == "T" else np.dtype(t)][1](a)
                for (t, _), a in zip(params, args)]
        self._compile(CTYPES[dtype][0], arrays)(*call, ctypes.c_void_p(out.ctypes.data),
                                                ctypes.c_long(size))
        return out

    def _compile(self, ctype, arrays):
        source = "#include <cmath>\n" + reduction_source(*self.spec, arrays, ctype, "")
        key = hashlib.sha1(source.encode()).hexdigest()
        if key not in HostReductionKernel.cache:
            HostReductionKernel.cache[key] = _build_shared_library(source, key).kernel
        return HostReductionKernel.cache[key]


def reduction_source(in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                     arrays, ctype, qualifier="__global__ "):
    """C for a whole reduction in one thread (host C++, or CUDA with the qualifier), binding
    the names as CuPy's ReductionKernel does: the inputs per element in the map, ``a`` and
    ``b`` in the reduction, ``a`` and the outputs in the post-map."""
    inputs = [f"const {t} &{n} = _raw_{n}[i];" for t, n in _params(in_params) if n in arrays]
    outputs = [f"{t} &{n} = _raw_{n}[0];" for t, n in _params(out_params)]
    return (f"typedef {ctype} T;\n{TYPE_NAMES}"
            f'extern "C" {qualifier}void kernel('
            f"{_signature(in_params, out_params, arrays)}) {{\n"
            f"  T a = {identity};\n"
            "  for (long i = 0; i < n; ++i) {\n    " + " ".join(inputs)
            + f"\n    T b = {map_expr};\n    a = {reduce_expr};\n  }}\n  "
            + " ".join(outputs) + f"\n  {post_map_expr};\n}}\n")


def _check_types(params, n_in, args):
    """CuPy's type rule (cupy/_core/_kernel.pyx, _decide_params_type_core): every array
    argument, 0-d ones included, outputs first, must have its parameter's fixed type, and all
    arrays of a placeholder type (T) the same dtype; scalars take the type they are given.
    CuPy raises TypeError("Type is mismatched") otherwise."""
    placeholders = {}
    order = list(range(n_in, len(args))) + list(range(n_in))
    for i in order:
        (ctype, name), value = params[i], args[i]
        if not isinstance(value, np.ndarray):
            if i >= n_in:
                raise TypeError("Output arguments must be cupy.ndarray")
            continue
        want = placeholders.setdefault(ctype, value.dtype) if ctype == "T" else np.dtype(ctype)
        if value.dtype != want:
            raise TypeError(f"Type is mismatched. {name} {value.dtype} {want} {ctype}")


# -ffp-contract=off: no FMA contraction, so the host follows the written order exactly
_GXX_FLAGS = ("-O1", "-ffp-contract=off", "-fPIC")
_PRELUDE = []      # the precompiled header's path, once made (empty: not tried yet)


@functools.cache
def _build_directory():
    """One directory for this process's host builds, removed when it exits (a directory per
    kernel, never removed, left ~9,000 of them in /tmp after a few CI runs)."""
    directory = tempfile.mkdtemp(prefix="gpudl_fused_")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def _prelude():
    """``-include`` arguments for a precompiled header of the C++ headers the host kernels
    include: parsing <cmath> and <algorithm> was two thirds of each g++ run (0.22 -> 0.07 s,
    ~110 kernels in the optimizer tests). None where it cannot be made (g++ then parses them)."""
    if not _PRELUDE:
        header = os.path.join(_build_directory(), "prelude.h")
        with open(header, "w") as f:
            f.write("#include <cmath>\n#include <algorithm>\n")
        made = subprocess.run([shutil.which("g++") or "g++", *_GXX_FLAGS, "-x", "c++-header",
                               header, "-o", header + ".gch"], capture_output=True)
        _PRELUDE.append(["-include", header] if made.returncode == 0 else [])
    return _PRELUDE[0]


def _build_shared_library(source, key):
    directory = _build_directory()
    src, lib = os.path.join(directory, key + ".cpp"), os.path.join(directory, key + ".so")
    with open(src, "w") as f:
        f.write(source)
    subprocess.run([shutil.which("g++") or "g++", *_GXX_FLAGS, *_prelude(), "-shared", src,
                    "-o", lib], check=True, capture_output=True, text=True)
    return ctypes.CDLL(lib)


def cuda_source(in_params, out_params, operation, arrays, ctype):
    """CUDA C for one kernel, as CuPy would assemble it (grid-stride loop over n elements)."""
    return (f"typedef {ctype} T;\n{TYPE_NAMES}"
            f'extern "C" __global__ void fused({_signature(in_params, out_params, arrays)}) {{\n'
            "  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n;\n"
            "       i += (long)blockDim.x * gridDim.x) {\n    "
            + kernel_body(in_params, out_params, operation, arrays) + "\n  }\n}\n")


def nvrtc_ptx(source, arch=b"compute_80"):
    """Compile CUDA C with NVRTC; returns the PTX or raises AssertionError with the log."""
    from cuda.bindings import nvrtc
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), b"fused.cu", 0, [], [])
    options = [b"--gpu-architecture=" + arch]
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        raise AssertionError(f"NVRTC failed:\n{log.decode()}\n{source}")
    _, size = nvrtc.nvrtcGetPTXSize(prog)
    ptx = b" " * size
    nvrtc.nvrtcGetPTX(prog, ptx)
    return ptx.decode()


class HostRawKernel:
    """Callable like the cupy.RawKernel of a multi-tensor update (gpudl/multi_tensor.py),
    running its CUDA source as host C++: every (block, thread) of the grid in turn, which is
    exact for a kernel without shared memory or barriers. The table (a one-element structured
    NumPy array) is passed by pointer and copied, as the driver copies a by-value argument."""

    cache = {}
    launches = 0
    sources = set()        # (code, name) of the kernels launched

    def __init__(self, code, name):
        self.code, self.name = code, name

    def __call__(self, grid, block, args):
        table, *scalars = args
        assert isinstance(table, np.ndarray) and table.size == 1 and table.dtype.fields
        assert all(isinstance(s, np.generic) for s in scalars), "raw kernel scalars must be typed"
        HostRawKernel.launches += 1
        HostRawKernel.sources.add((self.code, self.name))
        boxes = [np.array(s) for s in scalars]
        pointers = (ctypes.c_void_p * max(len(boxes), 1))(*[b.ctypes.data for b in boxes])
        self._compile(scalars)(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]),
                               ctypes.c_void_p(table.ctypes.data), pointers)

    def _compile(self, scalars):
        ctypes_of = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
        unpacked = ", ".join(f"*(const {ctypes_of[s.dtype]}*)args[{k}]"
                             for k, s in enumerate(scalars))
        source = ("#include <cmath>\n#include <algorithm>\n"
                  "using std::sqrt; using std::isnan; using std::isfinite; using std::pow;\n"
                  "using std::min;\n"
                  "struct Dim { unsigned int x, y, z; };\n"
                  "static Dim blockIdx, threadIdx, blockDim, gridDim;\n"
                  "#define __global__\n" + self.code
                  + 'extern "C" void launch(unsigned int blocks, unsigned int threads, '
                  "const Table* table, void** args) {\n"
                  "  blockDim.x = threads; gridDim.x = blocks;\n"
                  "  for (unsigned int b = 0; b < blocks; ++b) {\n    blockIdx.x = b;\n"
                  "    for (unsigned int t = 0; t < threads; ++t) {\n      threadIdx.x = t;\n"
                  f"      {self.name}(*table{', ' if unpacked else ''}{unpacked});\n"
                  "    }\n  }\n}\n")
        key = hashlib.sha1(source.encode()).hexdigest()
        if key not in HostRawKernel.cache:
            HostRawKernel.cache[key] = _build_shared_library(source, key).launch
        return HostRawKernel.cache[key]
