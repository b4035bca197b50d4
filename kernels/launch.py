"""Cheap kernel launches: each kernel specialised for one signature at first use, then cached.

A lazily typed ``@cuda.jit`` kernel types every argument in Python at every launch (CuPy arrays
through their ``__cuda_array_interface__``) and then searches its overloads. A specialised
dispatcher (``cuda.jit(signature)(py_func)``) holds exactly one compiled overload and goes straight
to marshalling the arguments. ``specialised`` builds one per (kernel, signature) the first time a
launcher asks for it, never at import (a signature at decoration time needs a driver: NUMBA.md),
and keeps it.

A specialised dispatcher does no type checks: the caller passes exactly the signature's types
(C-contiguous arrays of the right dtype and rank, scalars that fit). Use the signature strings of
the module's ``SIGNATURES`` table so that the gate checks what runs::

    from .launch import launch
    launch(kernel, signature, blocks, threads, *args)            # on CuPy's current stream
    launch(kernel, signature, blocks, threads, *args, shared=n)  # dynamic shared memory
"""

from gpudl import backend

_SPECIALISED = {}    # (kernel, signature) -> dispatcher compiled for that signature only
_CODE_OPTIONS = ("fastmath", "launch_bounds")     # decorator options that change the machine code


def compile_options(kernel):
    """The options ``kernel`` was decorated with that change its code, for ``cuda.jit`` and
    ``compile_ptx`` alike (the gate compiles what launches)."""
    options = getattr(kernel, "targetoptions", None) or {}
    return {name: options[name] for name in _CODE_OPTIONS if options.get(name)}


def specialised(kernel, signature):
    """``kernel`` compiled for exactly ``signature`` (a Numba signature string), built once."""
    key = (kernel, signature)
    dispatcher = _SPECIALISED.get(key)
    if dispatcher is None:
        from numba import cuda
        dispatcher = cuda.jit(signature, **compile_options(kernel))(
            getattr(kernel, "py_func", kernel))
        _SPECIALISED[key] = dispatcher
    return dispatcher


def launch(kernel, signature, blocks, threads, *args, shared=0):
    """Launch ``kernel``'s ``signature`` specialisation on CuPy's current stream (nothing when the
    grid is empty)."""
    if min(blocks if isinstance(blocks, tuple) else (blocks,)) > 0 and threads:
        specialised(kernel, signature)[blocks, threads, backend.launch_stream(), shared](*args)


def specialised_count():
    """How many specialisations exist (tests: a second launch must not build another)."""
    return len(_SPECIALISED)
