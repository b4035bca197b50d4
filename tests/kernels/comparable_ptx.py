"""PTX to compare across compiles: ``cuda.compile_ptx`` for sm_90 with the counters numba-cuda
puts into names renumbered by first appearance (``_cudapy_smem_<n>`` for shared arrays and
``B<n>v<n>`` in mangled names count what the process compiled before, not the kernel)."""

import re

from numba import cuda


def normalized(ptx):
    for pattern, name in ((r"_cudapy_smem_\d+", "smem"), (r"B\d+v\d+", "id")):
        seen = {}
        ptx = re.sub(pattern, lambda m: seen.setdefault(m.group(0), f"<{name}{len(seen)}>"), ptx)
    return ptx


def ptx_of(kernel, signature, **options):
    """The sm_90 PTX of ``kernel`` (a ``cuda.jit`` kernel) for ``signature``, normalized."""
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0), **options)
    return normalized(ptx)
