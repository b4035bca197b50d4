"""Matrix products on the CPU: BLAS on one thread per call, large products' rows shared by
gpudl's own threads (``cpu_threads.map_serial_blas``).

OpenBLAS's worker threads keep spinning for up to ~0.1 s after each threaded GEMM (its
THREAD_TIMEOUT, 2^28 cycles) on cores that gpudl's own threads need next: in a LeNet-5 step on
the 2-core machine here, OpenBLAS's worker burnt 4.1-5.3 ms of CPU per 5.6-6.9 ms step, most of
it spinning between the small Linear layers' GEMMs, and two threads were slower than one (4.4
ms). With every GEMM of the step on one BLAS thread: 4.05 ms. Products of at least
``SPLIT_FLOPS`` run as row blocks on gpudl's threads, each its own single-threaded GEMM (the
shared operand is packed once per block: negligible at that size).
"""

import math

import numpy as np

from . import cpu_threads

SPLIT_FLOPS = 1 << 24       # 16 MFLOP: below this a product runs whole on the calling thread
MIN_ROWS_PER_THREAD = 16


def matmul(a, b, out=None):
    """``a @ b`` of two NumPy arrays (numpy.matmul's shapes and broadcasting), into ``out``
    when given."""
    workers = cpu_threads.count() if _flops(a, b) >= SPLIT_FLOPS else 1
    if workers > 1 and a.ndim >= 2 and b.ndim >= 2 and \
            a.shape[-2] >= MIN_ROWS_PER_THREAD * workers:
        return _by_rows(a, b, workers, out)
    with cpu_threads.serial_blas():
        return np.matmul(a, b, out=out)


def _flops(a, b):
    if a.ndim == 0 or b.ndim == 0:
        return 0
    if a.ndim == 1 or b.ndim == 1:
        return 2 * max(a.size, b.size)
    batch = math.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    return 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


def _by_rows(a, b, workers, out):
    if out is None:
        out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
                       + (a.shape[-2], b.shape[-1]), np.result_type(a, b))
    M = a.shape[-2]
    step = -(-M // workers)

    def rows(r0):
        np.matmul(a[..., r0:r0 + step, :], b, out=out[..., r0:r0 + step, :])
    cpu_threads.map_serial_blas(rows, range(0, M, step), workers)
    return out
