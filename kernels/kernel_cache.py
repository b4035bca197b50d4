"""Compiled kernels kept on disk, keyed by everything their code depends on.

Numba compiles each kernel at its first use on a GPU, in every process and at every start: 1 to
37 s a kernel for gpudl's (the tensor-core attention's take longest), minutes for a transformer's
first step, and again in each of the GPU check's 14 test processes. numba-cuda can keep compiled
kernels on disk (``cache=True``), but it keys an entry by the kernel function's own bytecode and
closure only: an edit to a module-level device function the kernel calls, or to a global constant
it reads, would load stale machine code, and the closures of gpudl's tensor-core kernels (Numba
intrinsics made at run time) pickle differently in each process, so they would never hit.

So gpudl keys an entry itself (``code_key``): a SHA-256 of the bytecode and constants of the
kernel and of every function, device function and intrinsic it reaches through its closure and
globals (a global gpudl module through the attributes the code names), with the values of the
numbers, strings, dtypes and Numba types it meets there, plus the numba and numba-cuda versions;
a kernel that reaches anything else (an array, an object of its own class) is not cached and
compiles as before. Numba's cache stores and loads the compiled kernel (its cubin for the device's
compute capability) under that key (``specialised``, for kernels/launch.py); the packed launch
(kernels/fast_launch.py) keeps its PTX the same way (``ptx``), and the driver keeps the machine
code it builds from the PTX in its own cache.

Off unless ``GPUDL_KERNEL_CACHE`` is set: to a directory, or to 1 for ``~/.cache/gpudl/kernels``
(the GPU check turns it on once a two-process round trip has passed on that machine:
tools/kernel_cache_check.py). Entries never go stale, since a change to any code a kernel reaches
changes its key; delete the directory to reclaim the space.
"""

import hashlib
import os
import types

import numpy as np

_VERSIONS = None


class Uncacheable(TypeError):
    """The kernel reaches a value whose effect on its code ``code_key`` cannot describe."""


def directory():
    """The cache directory, or None when the cache is off (``GPUDL_KERNEL_CACHE``)."""
    setting = os.environ.get("GPUDL_KERNEL_CACHE", "").strip()
    if setting in ("", "0"):
        return None
    if setting == "1":
        return os.path.join(os.path.expanduser("~"), ".cache", "gpudl", "kernels")
    return os.path.abspath(setting)


def _versions():
    global _VERSIONS
    if _VERSIONS is None:
        import numba
        import numba_cuda
        _VERSIONS = f"numba {numba.__version__}, numba-cuda {numba_cuda.__version__}"
    return _VERSIONS


def _names(code):
    """Every name the code object (and the code nested in it) loads as a global or attribute."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _code(code):
    parts = [code.co_code.hex(), repr(code.co_names), repr(code.co_freevars)]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            parts.append(_code(const))
        elif isinstance(const, frozenset):          # ``x in {...}``: in hash order
            parts.append(f"frozenset({sorted(map(repr, const))})")
        else:
            parts.append(repr(const))
    return "code(" + ",".join(parts) + ")"


class _Describer:
    """Text that changes whenever the machine code a function compiles to may change."""

    def __init__(self):
        self.seen = set()

    def value(self, obj):
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            return repr(obj)
        if isinstance(obj, (tuple, list)):
            return f"{type(obj).__name__}({','.join(self.value(v) for v in obj)})"
        if isinstance(obj, (set, frozenset)):
            return f"set({sorted(self.value(v) for v in obj)})"
        if isinstance(obj, dict):
            items = sorted((repr(k), self.value(v)) for k, v in obj.items())
            return f"dict({items})"
        if isinstance(obj, (np.generic, np.dtype)):
            return f"{type(obj).__name__}({obj!r})"
        from numba.core import types as numba_types
        if isinstance(obj, numba_types.Type):
            return f"numba({obj})"
        from llvmlite import ir
        if isinstance(obj, ir.Type):                    # in intrinsics' code generators
            return f"llvm({obj})"
        if isinstance(obj, types.ModuleType):
            return f"module({obj.__name__})"
        if isinstance(obj, type):
            return f"class({obj.__module__}.{obj.__qualname__})"
        if hasattr(obj, "py_func"):                     # a Numba dispatcher (kernel, device)
            options = getattr(obj, "targetoptions", {})
            code_options = {k: options[k] for k in sorted(options)
                            if k in ("fastmath", "launch_bounds", "inline", "forceinline",
                                     "opt", "debug", "lineinfo")}
            return f"dispatcher({code_options!r},{self.function(obj.py_func)})"
        if hasattr(obj, "_defn"):                       # a Numba intrinsic
            return f"intrinsic({self.function(obj._defn)})"
        if isinstance(obj, types.FunctionType):
            return self.function(obj)
        if isinstance(obj, types.BuiltinFunctionType):
            return f"builtin({getattr(obj, '__module__', '')}.{obj.__qualname__})"
        raise Uncacheable(f"a {type(obj).__module__}.{type(obj).__qualname__} value")

    def function(self, func):
        name = f"{func.__module__}.{func.__qualname__}"
        if id(func) in self.seen:           # recursion, or a helper reached twice: named once
            return f"function({name})"
        self.seen.add(id(func))
        parts = [name, _code(func.__code__), self.value(func.__defaults__)]
        for var, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
            try:
                contents = cell.cell_contents
            except ValueError:          # a cell not filled yet (a function defined later)
                raise Uncacheable(f"an empty closure cell {var!r}") from None
            parts.append(f"{var}={self.value(contents)}")
        names = _names(func.__code__)
        for var in sorted(names):
            if var in func.__globals__:
                value = func.__globals__[var]
                parts.append(f"{var}={self.value(value)}")
                if isinstance(value, types.ModuleType) and value.__name__.startswith("gpudl"):
                    # gpudl's own module: what the code reaches through it (``mma.mma_tf32``)
                    for attr in sorted(names):
                        if attr in vars(value):
                            parts.append(f"{var}.{attr}={self.value(vars(value)[attr])}")
        return f"function({','.join(parts)})"


def code_key(kernel, *extra):
    """The SHA-256 hex digest of everything ``kernel``'s machine code depends on (its function
    and all it reaches, the numba versions) and of ``extra`` (signature, target, options).
    Raises ``Uncacheable`` where that cannot be described."""
    func = getattr(kernel, "py_func", kernel)
    text = _Describer().function(func) + repr(extra) + _versions()
    return hashlib.sha256(text.encode()).hexdigest()


def specialised(py_func, signature, options):
    """``cuda.jit(signature, **options)(py_func)``, its compiled kernel loaded from and saved
    to the cache (Numba's ``CUDACache`` in ``directory()``, under ``code_key``); without the
    cache, under the simulator, or for an uncacheable kernel, the plain build."""
    from numba import cuda

    from gpudl import backend
    where = None if backend.SIMULATOR else directory()
    try:
        key = code_key(py_func, signature, sorted(options.items())) if where else None
    except Uncacheable:
        key = None
    if key is None:
        return cuda.jit(signature, **options)(py_func)
    from numba.core import sigutils
    # built as cuda.jit(signature) builds it (the same target options), caching turned on
    # before the compile, which then looks the kernel up under gpudl's key
    dispatcher = cuda.jit(**options)(py_func)
    config = backend.numba_cuda_config()
    previous, config.CACHE_DIR = config.CACHE_DIR, where
    try:
        dispatcher.enable_caching()         # its locator reads CACHE_DIR here
        dispatcher._cache._index_key = lambda sig, codegen: (sig, codegen.magic_tuple(), key)
        argtypes, _ = sigutils.normalize_signature(signature)
        dispatcher.compile(argtypes)
    except Exception as exc:  # noqa: BLE001 - the cache must never stop a kernel from running
        import warnings
        warnings.warn(f"gpudl's kernel cache in {where} failed for {py_func.__qualname__} "
                      f"({type(exc).__name__}: {exc}); compiling it without the cache",
                      RuntimeWarning, stacklevel=2)
        return cuda.jit(signature, **options)(py_func)
    finally:
        config.CACHE_DIR = previous
    dispatcher._specialized = True
    dispatcher.disable_compile()
    return dispatcher


def ptx(py_func, signature, cc, options, compile_ptx):
    """The PTX of ``py_func`` for ``signature`` on compute capability ``cc``:
    ``compile_ptx(py_func, signature, cc=cc, **options)[0]``, read from the cache when it holds
    it, written there when it did not (and the cache is on)."""
    where = directory()
    key = None
    if where:
        try:
            key = code_key(py_func, signature, tuple(cc), sorted(options.items()), "ptx")
        except Uncacheable:
            key = None
    path = os.path.join(where, "ptx", f"{key}.ptx") if key else None
    if path and os.path.exists(path):
        with open(path) as f:
            return f.read()
    text, _ = compile_ptx(py_func, signature, cc=cc, **options)
    if path:
        partial = f"{path}.{os.getpid()}.tmp"     # whole files only: processes write at once
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(partial, "w") as f:
                f.write(text)
            os.replace(partial, path)
        except OSError:             # a read-only or full disk: the kernel runs all the same
            pass
    return text
