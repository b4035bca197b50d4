"""Matrix products that a CUDA graph can capture: cuBLAS through a handle of gpudl's own.

CuPy refuses cuBLAS while a stream captures: each of its cuBLAS calls first sets the handle's
stream, and that setter raises ``NotImplementedError: calling cuBLAS API during stream capture
is currently unsupported`` on a capturing stream (CuPy 13 and 14; seen on the first GPU run:
every graphed Linear, LSTM and GRU step). cuBLAS itself records its kernels into a capture when
its workspace is the user's (cuBLAS guide, "CUDA Graphs support"), as PyTorch's graphs do.

So while a capture runs (``backend.capture_guard`` is set), the matmuls of the ops layer and
of the recurrent kernels come here and call ``cublasGemmStridedBatchedEx`` through ctypes, with
a cuBLAS handle per thread whose stream and workspace are set before each call, as PyTorch's
handles are (setting a stream enqueues nothing, so it is legal in a capture; it also resets the
workspace, hence both). Eager matmuls keep CuPy's path, but for the Winograd convolutions'
(kernels/conv_winograd_cuda.py), which come here in every case: strict fp32 by the compute
type, and their transposed operand read in place where CuPy's batched matmul copies it.

The layout work is plain stride arithmetic (``plan``): a row-major product C = A @ B is the
column-major C^T = B^T @ A^T, so each operand goes to cuBLAS as it lies in memory, a C-order
matrix untransposed and an F-order one (``w.T``) transposed, without a copy; batches are
strided batches, a broadcast operand with stride 0.
"""

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from . import backend, backends

_OP_N, _OP_T = 0, 1
_GEMM_DEFAULT = -1
_DATA_TYPE = {np.dtype(np.float16): 2, np.dtype(np.float32): 0, np.dtype(np.float64): 1}
_COMPUTE_32F, _COMPUTE_32F_FAST_TF32, _COMPUTE_64F = 68, 77, 70
WORKSPACE_BYTES = 32 << 20           # cuBLAS asks for 32 MiB on Hopper for its fastest kernels

DTYPES = tuple(_DATA_TYPE)           # what ``matmul`` takes; anything else keeps CuPy's path

# Small products' workspace (issue 14, session 18; NOT YET TRIED ON A GPU: the next GPU run
# decides, benchmarks/graph_steps.py's "gpudl graphed, small GEMMs without split-K" row).
# On the session-18 H200, cuBLAS (its cuBLASLt heuristics) ran split-K for some of LeNet's
# Linear products at batch 64 (m*n*k 0.05-3 M multiply-adds): a GEMM writing partial sums into
# the workspace, then cublasLt::splitKreduce_kernel, 5 a graphed step (10.6 us, plus ~3.4 us of
# graph idle time each). Split-K's partial sums live in the workspace, and cuBLASLt's heuristics
# keep only algorithms whose workspace fits what the handle was given, so a small product given
# no workspace should run as one kernel. None (the default, as measured so far): every product
# gets WORKSPACE_BYTES. A number: products of at most SMALL_GEMM_MACS multiply-adds (all
# batches together) get that many bytes (0: no split-K), larger ones WORKSPACE_BYTES.
SMALL_GEMM_WORKSPACE_BYTES = None
SMALL_GEMM_MACS = 1 << 22            # LeNet's largest Linear product: 64 x 400 x 120 = 3.1 M

_lib = None
_handles = {}                        # (thread id, device id) -> (handle, workspace memory)


def matmul(a, b, out=None, allow_tf32=None):
    """``a @ b`` (numpy.matmul's shapes and broadcasting) for float16/float32/float64 CuPy
    arrays, on the current stream; into ``out`` (C-contiguous, the result's shape) if given.
    ``allow_tf32``: whether float32 may run on TF32 tensor cores (None: the matmul flag,
    ``backends.matmul_allows_tf32()``; the convolutions pass their own)."""
    xp = backend.get_array_module(a)
    dtype = np.result_type(a.dtype, b.dtype)
    if dtype not in _DATA_TYPE:
        raise TypeError(f"capture_blas.matmul: no cuBLAS product for {dtype}")
    a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    squeeze = [axis for axis, vector in ((-2, a.ndim == 1), (-1, b.ndim == 1)) if vector]
    a = a[None, :] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match in the "
                         f"contracted dimension ({a.shape[-1]} != {b.shape[-2]})")
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if out is not None and (out.shape != batch + (m, n) or out.dtype != dtype or
                            not out.flags.c_contiguous):
        raise ValueError(f"capture_blas.matmul: out must be a C-contiguous {dtype} array of "
                         f"shape {batch + (m, n)}, got {out.dtype} {out.shape}")
    result = out if out is not None else xp.empty(batch + (m, n), dtype)
    if result.size:
        if k == 0:
            result[...] = 0
        else:
            a3, b3 = _batched(xp, a, batch), _batched(xp, b, batch)
            gemm(plan(a3, b3), a3, b3, result, allow_tf32)
    for axis in sorted(squeeze):
        result = result.squeeze(axis)
    return result


def _batched(xp, x, batch):
    """``x`` as (batch size, rows, cols) sharing memory where the strides allow (broadcast
    batch dims as stride 0, each matrix C- or F-ordered), else a C-contiguous copy."""
    view = xp.broadcast_to(x, batch + x.shape[-2:])
    size = int(np.prod(batch, dtype=np.int64))
    if layout(view.shape[-2:], view.strides[-2:], view.itemsize) is not None:
        stride = _batch_stride(batch, view.strides[:-2])
        if stride is not None:
            return xp.lib.stride_tricks.as_strided(
                view, (size,) + x.shape[-2:], (stride,) + view.strides[-2:])
    return xp.ascontiguousarray(view).reshape((size,) + x.shape[-2:])


def _batch_stride(batch, strides):
    """The one byte stride that walks the batch dims (sizes ``batch``) as a single dim: 0 when
    they are broadcast, None when no single non-negative stride does."""
    dims = [(d, s) for d, s in zip(batch, strides) if d > 1]
    if all(s == 0 for _, s in dims):
        return 0
    if dims[-1][1] > 0 and all(outer == inner * d_inner for (_, outer), (d_inner, inner)
                               in zip(dims, dims[1:])):
        return dims[-1][1]
    return None


def layout(shape, strides, itemsize):
    """How one (rows, cols) matrix lies: ("C", leading dim) row-major, ("F", leading dim)
    column-major, or None (copy it). A dim of size 1 may have any stride."""
    rows, cols = shape
    row_step, col_step = strides
    if (col_step == itemsize or cols == 1) and (row_step % itemsize == 0 or rows == 1):
        ld = row_step // itemsize if rows > 1 else cols
        if ld >= max(cols, 1):
            return "C", ld
    if (row_step == itemsize or rows == 1) and (col_step % itemsize == 0 or cols == 1):
        ld = col_step // itemsize if cols > 1 else rows
        if ld >= max(rows, 1):
            return "F", ld
    return None


@dataclass(frozen=True)
class Gemm:
    """One cuBLAS strided-batched GEMM in cuBLAS's column-major terms: C^T = B^T @ A^T."""
    m: int                # rows of C^T: the product's columns
    n: int                # cols of C^T: the product's rows
    k: int
    op_a: int             # cuBLAS's A is our b
    lda: int
    stride_a: int
    op_b: int             # cuBLAS's B is our a
    ldb: int
    stride_b: int
    ldc: int
    stride_c: int
    batch: int


def plan(a3, b3):
    """The ``Gemm`` for (batch, m, k) @ (batch, k, n), each operand as ``_batched`` left it."""
    batch, m, k = a3.shape
    n = b3.shape[-1]
    item = a3.itemsize
    order_a, ld_a = layout(a3.shape[1:], a3.strides[1:], item)
    order_b, ld_b = layout(b3.shape[1:], b3.strides[1:], item)
    # a C-order (r, c) matrix is a column-major (c, r) one: untransposed for C^T = B^T A^T
    return Gemm(m=n, n=m, k=k,
                op_a=_OP_N if order_b == "C" else _OP_T, lda=ld_b,
                stride_a=b3.strides[0] // item if batch > 1 else 0,
                op_b=_OP_N if order_a == "C" else _OP_T, ldb=ld_a,
                stride_b=a3.strides[0] // item if batch > 1 else 0,
                ldc=n, stride_c=m * n, batch=batch)


def gemm(g, a3, b3, out, allow_tf32=None):
    """Run ``g`` on the current stream: ``out`` (C-contiguous) = a3 @ b3 (``allow_tf32`` as in
    ``matmul``)."""
    lib = _library()
    handle, workspace = _handle(lib)
    stream = backend._cupy.cuda.get_current_stream().ptr
    _check(lib.cublasSetStream_v2(handle, ctypes.c_void_p(stream)), "cublasSetStream")
    _check(lib.cublasSetWorkspace_v2(handle, ctypes.c_void_p(workspace.ptr),
                                     ctypes.c_size_t(workspace_bytes(g))), "cublasSetWorkspace")
    dtype = out.dtype
    compute = compute_type(dtype, allow_tf32)
    scalar = ctypes.c_double if dtype == np.float64 else ctypes.c_float
    one, zero = scalar(1), scalar(0)
    kind = _DATA_TYPE[dtype]
    status = lib.cublasGemmStridedBatchedEx(
        handle, g.op_a, g.op_b, g.m, g.n, g.k, ctypes.byref(one),
        ctypes.c_void_p(backend.address(b3)), kind, g.lda, ctypes.c_longlong(g.stride_a),
        ctypes.c_void_p(backend.address(a3)), kind, g.ldb, ctypes.c_longlong(g.stride_b),
        ctypes.byref(zero), ctypes.c_void_p(backend.address(out)), kind, g.ldc,
        ctypes.c_longlong(g.stride_c), g.batch, compute, _GEMM_DEFAULT)
    _check(status, "cublasGemmStridedBatchedEx")


def workspace_bytes(g):
    """The workspace the product ``g`` may use: SMALL_GEMM_WORKSPACE_BYTES for a small one when
    that is set, else WORKSPACE_BYTES."""
    small = SMALL_GEMM_WORKSPACE_BYTES
    if small is None or g.m * g.n * g.k * g.batch > SMALL_GEMM_MACS:
        return WORKSPACE_BYTES
    if not 0 <= small <= WORKSPACE_BYTES:
        raise ValueError(f"capture_blas.SMALL_GEMM_WORKSPACE_BYTES: expected None or 0 to "
                         f"{WORKSPACE_BYTES} bytes, got {small}")
    return small


def compute_type(dtype, allow_tf32=None):
    """cuBLAS's compute type for ``dtype`` products: float32 on TF32 tensor cores only when
    ``allow_tf32`` (None: the matmul flag) says so."""
    if dtype == np.float64:
        return _COMPUTE_64F
    if allow_tf32 is None:
        allow_tf32 = backends.matmul_allows_tf32()
    return _COMPUTE_32F_FAST_TF32 if dtype == np.float32 and allow_tf32 else _COMPUTE_32F


def _check(status, what):
    if status != 0:
        raise RuntimeError(f"{what} failed with cuBLAS status {status}")


def _handle(lib):
    """This thread's cuBLAS handle for the current device, and its workspace: device memory of
    its own, outside any graph's pool. Both are made at the first captured product, with the
    thread's capture mode relaxed (the first GPU run: cublasCreate inside a "global" capture
    failed with CUBLAS_STATUS_NOT_INITIALIZED; inside a relaxed one it worked)."""
    cupy = backend._cupy
    key = (threading.get_ident(), cupy.cuda.runtime.getDevice())
    entry = _handles.get(key)
    if entry is None:
        from .cuda_graphs import relaxed_capture_mode
        handle = ctypes.c_void_p()
        with relaxed_capture_mode():    # both allocate: refused in a "global" capture
            _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
            workspace = cupy.cuda.memory.Memory(WORKSPACE_BYTES)
        entry = _handles[key] = (handle, workspace)
    return entry


def _library():
    """libcublas, the copy CuPy loaded (found in this process's memory map after CuPy made its
    own handle), else by name."""
    global _lib
    if _lib is None:
        cupy = backend._cupy
        cupy.cuda.device.get_cublas_handle()                # loads CuPy's libcublas
        major = cupy.cuda.runtime.runtimeGetVersion() // 1000
        candidates = _mapped("libcublas.so") + [f"libcublas.so.{major}", "libcublas.so"]
        for name in candidates:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise RuntimeError(f"capture_blas: libcublas not found (tried {candidates})")
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.cublasSetStream_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.cublasSetWorkspace_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        int_ = ctypes.c_int
        lib.cublasGemmStridedBatchedEx.argtypes = [
            ctypes.c_void_p, int_, int_, int_, int_, int_, ctypes.c_void_p,
            ctypes.c_void_p, int_, int_, ctypes.c_longlong,
            ctypes.c_void_p, int_, int_, ctypes.c_longlong,
            ctypes.c_void_p, ctypes.c_void_p, int_, int_, ctypes.c_longlong,
            int_, int_, int_]
        for function in (lib.cublasCreate_v2, lib.cublasSetStream_v2, lib.cublasSetWorkspace_v2,
                         lib.cublasGemmStridedBatchedEx):
            function.restype = ctypes.c_int
        _lib = lib
    return _lib


def _mapped(name):
    """Paths of loaded libraries whose file name starts with ``name`` (Linux's memory map)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" + name in line}
    except OSError:
        return []
    return sorted(p for p in paths if p.rsplit("/", 1)[-1].startswith(name))
