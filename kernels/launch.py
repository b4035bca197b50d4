"""Cheap kernel launches: each kernel specialised for one signature at first use, then cached.

A lazily typed ``@cuda.jit`` kernel types every argument in Python at every launch (CuPy arrays
through their ``__cuda_array_interface__``) and then searches its overloads. A specialised
dispatcher (``cuda.jit(signature)(py_func)``) holds exactly one compiled overload and goes straight
to marshalling the arguments. ``specialised`` builds one per (kernel, signature) the first time a
launcher asks for it, never at import (a signature at decoration time needs a driver: numba-cuda raises CudaSupportError without one),
and keeps it.

Numba synchronises the host with the stream named in each CuPy argument's
``__cuda_array_interface__`` before a launch (``NUMBA_CUDA_ARRAY_INTERFACE_SYNC``, on by
default). CuPy names its current stream there, the stream every gpudl kernel launches on, so the
wait orders nothing: it only stalled the host until the GPU had drained its queue, once per array
argument of every launch, so that an eager step could never queue work ahead of the GPU. ``launch``
turns it off for its own launches (and restores it: a user's own Numba code keeps the default).

Numba's ``dispatcher[grid, block, stream, shared]`` validates the dimensions and wraps the
stream anew at every launch; ``configured`` keeps the configured launcher per (kernel,
signature, grid, block, stream, shared) instead (not under the simulator, whose ``[...]``
configures the kernel object itself).

A specialised dispatcher does no type checks: the caller passes exactly the signature's types
(C-contiguous arrays of the right dtype and rank, scalars that fit). Use the signature strings of
the module's ``SIGNATURES`` table so that the gate checks what runs::

    from .launch import launch
    launch(kernel, signature, blocks, threads, *args)            # on CuPy's current stream
    launch(kernel, signature, blocks, threads, *args, shared=n)  # dynamic shared memory
"""

from gpudl import backend

from . import (fast_launch, kernel_cache, numba_call_types, numba_dataflow, numba_inlining,
               numpy_compat)

numpy_compat.apply()    # before numba-cuda's first compilation, which looks the names up

if not backend.SIMULATOR:      # the simulator runs kernels as Python: it compiles nothing
    numba_inlining.apply()
    numba_dataflow.apply()
    numba_call_types.apply()
    # the grids are sized on purpose (a persistent kernel's block per SM, a small step's few
    # blocks): Numba's per-launch low-occupancy check costs host time and flooded the first GPU
    # run's log with warnings
    backend.numba_cuda_config().CUDA_LOW_OCCUPANCY_WARNINGS = 0

_NUMBA_CONFIG = backend.numba_cuda_config()
_SPECIALISED = {}    # (kernel, signature) -> dispatcher compiled for that signature only
_CONFIGURED = {}     # (kernel, signature, blocks, threads, stream, shared) -> configured launcher
_MAX_CONFIGURED = 4096
FAST_LAUNCH = fast_launch.active()
_CODE_OPTIONS = ("fastmath", "launch_bounds")     # decorator options that change the machine code


def compile_options(kernel):
    """The options ``kernel`` was decorated with that change its code, for ``cuda.jit`` and
    ``compile_ptx`` alike (the gate compiles what launches)."""
    options = getattr(kernel, "targetoptions", None) or {}
    return {name: options[name] for name in _CODE_OPTIONS if options.get(name)}


def specialised(kernel, signature):
    """``kernel`` compiled for exactly ``signature`` (a Numba signature string), built once
    (loaded from the disk cache when it is on: kernels/kernel_cache.py)."""
    key = (kernel, signature)
    dispatcher = _SPECIALISED.get(key)
    if dispatcher is None:
        dispatcher = kernel_cache.specialised(getattr(kernel, "py_func", kernel), signature,
                                              compile_options(kernel))
        _SPECIALISED[key] = dispatcher
    return dispatcher


def launch(kernel, signature, blocks, threads, *args, shared=0):
    """Launch ``kernel``'s ``signature`` specialisation on CuPy's current stream (nothing when the
    grid is empty). On a GPU it goes through kernels/fast_launch.py's packed launch; through
    Numba's launcher instead with ``GPUDL_LAUNCH=numba``, and inside a CUDA graph capture unless
    ``fast_launch.IN_CAPTURE`` is set."""
    if min(blocks if isinstance(blocks, tuple) else (blocks,)) > 0 and threads:
        if backend.SIMULATOR:       # its kernel's [...] configures the kernel itself
            check_arguments(kernel, signature, args)
            dispatcher = specialised(kernel, signature)[blocks, threads,
                                                        backend.launch_stream(), shared]
        elif FAST_LAUNCH and (backend.capture_guard is None or fast_launch.IN_CAPTURE) and \
                fast_launch.launch(kernel, signature, blocks, threads, args, shared):
            return
        else:
            dispatcher = configured(kernel, signature, blocks, threads, shared)
        config = _NUMBA_CONFIG
        sync, config.CUDA_ARRAY_INTERFACE_SYNC = config.CUDA_ARRAY_INTERFACE_SYNC, 0
        try:
            dispatcher(*args)
        finally:
            config.CUDA_ARRAY_INTERFACE_SYNC = sync


def configured(kernel, signature, blocks, threads, shared):
    """``specialised(kernel, signature)[blocks, threads, stream, shared]`` on CuPy's current
    stream, built once per launch configuration: Numba's ``[...]`` validates the dimensions and
    wraps the stream in a cuda.core Stream each time (7.4 us of host time per launch on the
    2-core VM, benchmarks/RESULTS.md session 19), and the configured launcher holds nothing
    that changes between launches. At most ``_MAX_CONFIGURED`` are kept (then all dropped)."""
    stream = backend.launch_stream()
    key = (kernel, signature, blocks, threads, stream, shared)
    try:
        dispatcher = _CONFIGURED.get(key)
    except TypeError:               # unhashable dimensions (a list): configured per launch
        return specialised(kernel, signature)[blocks, threads, stream, shared]
    if dispatcher is None:
        if len(_CONFIGURED) >= _MAX_CONFIGURED:
            _CONFIGURED.clear()
        dispatcher = _CONFIGURED[key] = specialised(kernel, signature)[blocks, threads, stream,
                                                                       shared]
    return dispatcher


def check_arguments(kernel, signature, args):
    """Refuse arguments that do not have ``signature``'s types. The simulator ignores signatures,
    while a GPU's specialised dispatcher would refuse the launch, so the simulator tests check
    here that every launcher passes exactly the types the gate compiled."""
    from numba import typeof, types
    from numba.core import sigutils
    wanted, _ = sigutils.normalize_signature(signature)
    name = getattr(kernel, "__name__", "kernel")
    if len(wanted) != len(args):
        raise TypeError(f"{name}: {len(args)} arguments for a signature of {len(wanted)}")
    for i, (want, arg) in enumerate(zip(wanted, args)):
        if isinstance(want, types.Array):
            got = typeof(arg)
            ok = (isinstance(got, types.Array) and got.dtype == want.dtype
                  and got.ndim == want.ndim and want.layout in ("A", got.layout))
        elif isinstance(arg, bool) or not isinstance(arg, (int, float)):
            got = typeof(arg)
            ok = got == want
        else:                                   # a Python number: converted to the signature's
            got = typeof(arg)
            ok = isinstance(want, types.Integer) if isinstance(arg, int) else \
                isinstance(want, types.Float)
        if not ok:
            raise TypeError(f"{name}: argument {i} is {got}, the signature {signature!r} "
                            f"wants {want}")


def specialised_count():
    """How many specialisations exist (tests: a second launch must not build another)."""
    return len(_SPECIALISED)
