"""Matrix products on the CPU: BLAS on one thread per call, large products' rows shared by
gpudl's own threads (``cpu_threads.map_serial_blas``).

OpenBLAS's worker threads keep spinning for up to ~0.1 s after each threaded GEMM (its
THREAD_TIMEOUT, 2^28 cycles) on cores that gpudl's own threads need next: in a LeNet-5 step on
the 2-core machine here, OpenBLAS's worker burnt 4.1-5.3 ms of CPU per 5.6-6.9 ms step, most of
it spinning between the small Linear layers' GEMMs, and two threads were slower than one (4.4
ms). With every GEMM of the step on one BLAS thread: 4.05 ms. Products of at least
``SPLIT_FLOPS`` run as row blocks on gpudl's threads, each its own single-threaded GEMM (the
shared operand is packed once per block: negligible at that size).

Where BLAS runs narrower vectors than the CPU has (``small_gemm.outruns_blas``: OpenBLAS held to
its AVX2 kernels by ``OPENBLAS_CORETYPE`` on an AVX-512 CPU, as here), 2-D float32/float64
products whose shape suits them run on kernels/small_gemm.py's loops instead, compiled for the
host's vector width (``_kernel_for``): long contractions (K >= 128) as dot products
(``gemm_nt``: 1.4x OpenBLAS on a transformer's (256, 256) @ (256, 64)), short ones with wide
rows as rows of b scaled and added (``gemm_nn``: 1.3x on (256, 64) @ (64, 192)), each only
where the operands already lie as it reads them.
"""

import functools
import math

import numpy as np

from . import cpu_threads

SPLIT_FLOPS = 1 << 24       # 16 MFLOP: below this a product runs whole on the calling thread
MIN_ROWS_PER_THREAD = 16
SERIAL_GEMM = 1 << 16       # M*N*K of one matrix product below which OpenBLAS never threads
SERIAL_GEMV = 1 << 13       # M*N of one matrix-vector product (see _serial_in_blas)


LONG_CONTRACTION = 128      # from here gemm_nt's dot products (a's rows and b's columns
WIDE_ROWS = 128             # contiguous); gemm_nn where b's rows are contiguous and this wide


def matmul(a, b, out=None):
    """``a @ b`` of two NumPy arrays (numpy.matmul's shapes and broadcasting), into ``out``
    when given. A C-contiguous stack of matrices times one matrix (a Linear layer on a
    (batch, seq, features) input) runs as one product of all the stack's rows: numpy.matmul
    would run one BLAS call per matrix (8 GEMMs of 32 rows in a transformer step, at 40% of
    the speed of one of 256 rows)."""
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous and \
            (out is None or out.flags.c_contiguous):
        M = math.prod(a.shape[:-1])         # not -1: reshape cannot infer it from size 0
        rows_out = None if out is None else out.reshape(M, b.shape[1])
        flat = matmul(a.reshape(M, a.shape[-1]), b, rows_out)
        return flat.reshape(a.shape[:-1] + (b.shape[1],)) if out is None else out
    if _serial_in_blas(a, b):
        return np.matmul(a, b, out=out)
    workers = cpu_threads.count() if _flops(a, b) >= SPLIT_FLOPS else 1
    product = _kernel_for(a, b) if out is None or out.flags.c_contiguous else _blas
    if product is not _blas and out is None:
        out = np.empty((a.shape[0], b.shape[1]), a.dtype)
    if workers > 1 and a.ndim >= 2 and b.ndim >= 2 and \
            a.shape[-2] >= MIN_ROWS_PER_THREAD * workers:
        return _by_rows(a, b, workers, out, product)
    with cpu_threads.serial_blas():
        return product(a, b, out)


def _serial_in_blas(a, b):
    """Whether each of the product's BLAS calls is too small for OpenBLAS to thread (its GEMM
    runs on one thread below M*N*K = 2^18, GEMV below M*N = 9,216; these bounds keep a 4x and
    a 1.1x margin): BLAS's thread count need not be set (two threadpoolctl calls, ~3 us,
    most of a tiny product's time) and its threads stay asleep anyway."""
    m = a.shape[-2] if a.ndim > 1 else 1
    n = b.shape[-1] if b.ndim > 1 else 1
    size = m * n * a.shape[-1]
    return size < SERIAL_GEMM if m > 1 and n > 1 else size < SERIAL_GEMV


def _kernel_for(a, b):
    """The product function for ``a @ b``: small_gemm's loops (``_nt``, ``_nn``) for the 2-D
    float32/float64 products they run faster than BLAS here with the operands as they are
    (a transposing copy costs what they save), else ``_blas``."""
    if not (type(a) is type(b) is np.ndarray and a.ndim == b.ndim == 2 and a.dtype == b.dtype
            and a.dtype in (np.float32, np.float64)) or not _loops_outrun_blas():
        return _blas
    (M, K), N = a.shape, b.shape[1]
    if min(M, N) < 16:
        return _blas
    if K >= LONG_CONTRACTION and a.flags.c_contiguous and b.T.flags.c_contiguous:
        return _nt
    if N >= WIDE_ROWS and K >= 4 and M % 8 == 0 and b.flags.c_contiguous:
        return _nn
    return _blas


def _loops_outrun_blas():
    return _small_gemm().outruns_blas()


@functools.cache
def _small_gemm():
    """kernels/small_gemm, imported at the first product (``import gpudl`` loads no Numba);
    cached, since an import statement costs its Python-level lookups at every GEMM."""
    from .kernels import small_gemm

    return small_gemm


def _blas(a, b, out):
    return np.matmul(a, b, out=out)


def _nt(a, b, out):
    _small_gemm()._gemm_nt_blocked(a, b.T, out)        # blocks of the contraction stay in L1
    return out


def _nn(a, b, out):
    return _small_gemm().gemm_nn(a, b, out)


def _flops(a, b):
    if a.ndim == 0 or b.ndim == 0:
        return 0
    if a.ndim == 1 or b.ndim == 1:
        return 2 * max(a.size, b.size)
    if a.ndim == b.ndim == 2:           # no batch dims: numpy.broadcast_shapes costs ~1.5 us
        return 2 * a.shape[0] * a.shape[1] * b.shape[1]
    batch = math.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    return 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


def _by_rows(a, b, workers, out, product):
    """``product`` (a, b, out) by blocks of a's rows (whole blocks of 8) on ``workers`` threads."""
    if out is None:     # like a: the strict simulator's device arrays stay device arrays
        out = np.empty_like(a, np.result_type(a, b), "C", shape=np.broadcast_shapes(
            a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]))
    M = a.shape[-2]
    per_thread = -(-M // workers)
    step = -(-per_thread // 8) * 8                  # whole blocks of 8 rows: gemm_nn's fast path

    def rows(r0):
        product(a[..., r0:r0 + step, :], b, out[..., r0:r0 + step, :])
    cpu_threads.map_serial_blas(rows, range(0, M, step), workers)
    return out
