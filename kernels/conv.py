"""2-D convolution (NCHW, grouped, strided, padded, dilated) and its adjoint, the transposed conv.

Three primitives carry every entry point, each on both devices:

- ``forward(x, w, b, geo)``: y = conv(x, w) + b
- ``grad_input(gy, w, geo)``: the adjoint of forward in x (the transposed convolution)
- ``grad_weight(x, gy, geo)``: the adjoint of forward in w

so ``conv_transpose2d`` forward is ``grad_input`` and its backward is ``forward`` (grad input) and
``grad_weight`` with the roles of x and gy swapped. ``geo`` (ConvGeometry) describes the plain
convolution in every case.

Which path runs (``_primitives``): on the CPU, the twin below (strict: float32 in float32, float16
computed in float32, float64 in float64). On cuda, by dtype and the ``allow_tf32`` argument
(the ops layer passes ``gd.backends.cudnn.allow_tf32``, True by default as in PyTorch; the
kernels never read the flag themselves):

===============================  ============================================================
float16 / bfloat16               tensor cores (conv_tc_cuda): F16 / BF16 mma, fp32 accumulation
float32, ``allow_tf32=True``     tensor cores (conv_tc_cuda): TF32 mma, fp32 accumulation,
                                 from ``TF32_MIN_FLOPS`` per forward on (smaller: as strict)
float32, ``allow_tf32=False``    SIMT FP32 FMA (conv_cuda): strict fp32
float64                          SIMT FP64 (conv_cuda)
===============================  ============================================================

Strict float32 3x3 stride-1 convolutions with at least 32 input and output channels and enough
work run as Winograd F(2x2, 3x3) in fused kernels (conv_winograd_fused_cuda: forward, grad_input
and grad_weight, 2.25x fewer FMAs than the direct sum, transforms in shared memory).
With ``conv_winograd_cuda.ENABLED`` (off by default: slower than the direct sum on an H200,
benchmarks/RESULTS.md, session 18) they, and float64 ones, run the unfused Winograd instead
(conv_winograd_cuda: two tile-transform kernels around one batched cuBLAS GEMM in strict
precision). Unlike the direct sum, a NaN or infinity there reaches the other outputs of its
2x2 output tile (as in cuDNN's Winograd); the CPU twin detects it and recomputes, the GPU path
cannot without a device-to-host read (conv_winograd_cuda's docstring).

Tensors too large for int32 indexing run conv_cuda's 64-bit SIMT build whatever the dtype
(bfloat16 widened to float32).

CPU twin: im2col + one BLAS GEMM per chunk of images, in a "wide" polyphase column layout.
The padded (Hp, Wp) plane of every channel is split into sh*sw phase planes (space to depth:
phase (a, b) holds padded pixels (a + sh*u, b + sw*v), u < Hq, v < Wq; sh*sw NumPy strided copies
per chunk), so that kernel tap (i, j) reads ONE phase at stride 1: output (oh, ow) takes phase
(i*dh % sh, j*dw % sw) at (oh + i*dh // sh, ow + j*dw // sw). Computing Wq columns per output row
instead of Wo (the last Wq - Wo are garbage, cropped away: 6% extra work at 32x32 stride 1), a
tap's whole (Ho, Wq) block is one contiguous slice of its flattened phase plane, so each column
copy is one long loop in ``numba.njit`` code rather than Ho*Wo short strided rows (a 32-element
row loop there costs ~10x more per element than a long one). The column buffer of a chunk,
(C, kh, kw, nb, Ho*Wq), is sized to stay in cache (COL_CHUNK_BYTES). col2im is the same walk
backwards: it accumulates each channel's phases in place, then one strided copy per phase writes
every input pixel once. The chunks are shared by ``cpu_threads.count()`` threads, BLAS on one
thread meanwhile (each thread its own scratch buffers), once a call has THREADED_MACS
multiply-adds (below that a thread hand-off costs more than it saves).

The forward of a convolution with at least TAPS_MIN_CHANNELS output channels a group and
TAPS_MIN_COLUMNS wide output values an image builds no column buffer either: each tap's row is
read where it lies in the phase planes (small_gemm.gemm_nn_rows: w @ the tap rows, 8 output
channels at a time in AVX-512 registers), the wide rows then cropped (``_taps_in_place_forward``).
A 1x1 convolution is one such product per image over the image itself (``_pointwise_products``).

Weight gradients are dot products along the columns (kernels/small_gemm.py, AVX-512 where the
CPU has it; OpenBLAS runs its AVX2 kernels here): gy_wide's rows against each tap's slice of the
phase planes, read where they lie, so the weight gradient builds no column buffer (but for an x
holding NaN or inf, whose garbage columns must be zeroed); a 1x1 conv's gy[n] against x[n],
summed over the images in one pass.

3x3 stride-1 convolutions with enough channels and work (``conv_winograd.applies``) run
Winograd F(2x2, 3x3) instead (conv_winograd): 2.25x fewer multiply-adds in the GEMMs, which are
the whole cost of a large conv on this machine's AVX2 OpenBLAS kernels.
"""

import collections
import functools
import operator
import threading

import numba
import numpy as np

from gpudl import backend, cpu_threads, dtypes

from . import conv_winograd, small_gemm
from . import reduce as totals

# Bytes of column buffer per chunk of images: written by im2col then read by the GEMM while still in
# the L2/L3 caches (2-5 MB measured best for (32,16,32,32) 3x3 on a 2-core EPYC; one image per
# chunk at least).
COL_CHUNK_BYTES = 4 << 20
SCRATCH_SHAPES = 4          # geometries whose scratch buffers each thread keeps for the next call
_scratch_cache = threading.local()


def conv2d_output_size(size, kernel, stride, padding, dilation):
    """Output length of a convolution along one axis (PyTorch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose2d_output_size(size, kernel, stride, padding, output_padding, dilation):
    """Output length of a transposed convolution along one axis (PyTorch's formula)."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


class ConvGeometry:
    """Shapes of one plain convolution: x (N, C, H, W) * w (K, C/groups, kh, kw) -> (N, K, Ho, Wo).

    Stride, padding and dilation are (h, w) int pairs. ``out_size`` keeps only the first
    (Ho, Wo) outputs: a transposed conv whose output_padding reaches the dilation (not the stride)
    is the adjoint of a conv whose last output rows/columns are dropped. Also holds the CPU
    twin's wide layout: phase planes of (Hq, Wq) plus a tail (S values), Wq computed columns per
    output row.
    """

    __slots__ = ("N", "C", "H", "W", "K", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw",
                 "groups", "Ho", "Wo", "Hq", "Wq", "S", "key")

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups, out_size=None):
        self.N, self.C, self.H, self.W = map(int, x_shape)
        self.K, _, self.kh, self.kw = map(int, w_shape)
        self.sh, self.sw = stride
        self.ph, self.pw = padding
        self.dh, self.dw = dilation
        self.groups = groups
        self.Ho = conv2d_output_size(self.H, self.kh, self.sh, self.ph, self.dh)
        self.Wo = conv2d_output_size(self.W, self.kw, self.sw, self.pw, self.dw)
        if out_size is not None:
            self.Ho, self.Wo = map(int, out_size)
        self.Hq = -(-(self.H + 2 * self.ph) // self.sh)     # phase plane rows: ceil(Hp / sh)
        self.Wq = -(-(self.W + 2 * self.pw) // self.sw)     # and columns, computed per output row
        # the garbage columns of a tap's last output row read up to (kw-1)*dw // sw values past
        # the phase plane
        self.S = self.Hq * self.Wq + (self.kw - 1) * self.dw // self.sw
        self.key = _geometry_key(self)      # hashable

    def pointwise(self):
        """A 1x1 convolution, stride 1, no padding, one group, every output kept: a plain
        GEMM per image, no columns needed."""
        return (self.kh == self.kw == self.sh == self.sw == self.groups == 1
                and self.ph == self.pw == 0 and (self.Ho, self.Wo) == (self.H, self.W))

    @property
    def y_shape(self):
        return (self.N, self.K, self.Ho, self.Wo)

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.K, self.C // self.groups, self.kh, self.kw)

    def layout(self):
        """The scalar arguments of the CPU im2col/col2im loops."""
        return (self.sh, self.sw, self.dh, self.dw, self.Wq, self.Wo)

    def phase_buffer(self, images, dtype, role):
        """Phase planes for a chunk of images, (images, C, sh, sw, S), zeroed when made and
        reused by the next call of this geometry and ``role`` (the padding stays zero: each
        role only ever writes the same real pixels, or the whole buffer)."""
        return _scratch(self, role, (images, self.C, self.sh, self.sw, self.S), dtype)


# ConvGeometry.key: its fields but the key, read by one C call (a generator of getattr calls cost
# ~25 Python calls per geometry, four geometries per LeNet step)
_geometry_key = operator.attrgetter(*ConvGeometry.__slots__[:-1])


def _scratch(geo, role, shape, dtype):
    """A zeroed-when-made buffer for ``role`` in calls of geometry ``geo``, kept per thread for
    the next call of the same geometry: no allocation (and page faults) per call for the column
    buffer and its companions. The last SCRATCH_SHAPES geometries keep theirs."""
    cache = getattr(_scratch_cache, "buffers", None)
    if cache is None:
        cache = _scratch_cache.buffers = collections.OrderedDict()
    key = geo.key
    buffers = cache.pop(key, None) or {}
    cache[key] = buffers
    while len(cache) > SCRATCH_SHAPES:
        cache.popitem(last=False)
    buf = buffers.get((role, shape, dtype))
    if buf is None:     # forward and the gradients chunk differently: one buffer per shape
        buf = buffers[(role, shape, dtype)] = np.zeros(shape, dtype)
    return buf


# --------------------------------------------------------------------------- CPU twin: copies
def _phase_views(phases, m, geo):
    """For each phase (a, b): (the phase's block of real pixels in ``phases[:m]``, the matching
    (rows, columns) slices of an (N, C, H, W) image). ``phases``: (nb, C, sh, sw, S), image-major
    so that a partial chunk's view keeps every image's layout (and zero padding)."""
    pairs = []
    for a in range(geo.sh):
        u0 = -(-(geo.ph - a) // geo.sh)                 # first phase row inside the image
        rows = slice(a + geo.sh * u0 - geo.ph, geo.H, geo.sh)
        n_rows = len(range(geo.H)[rows])
        for b in range(geo.sw):
            v0 = -(-(geo.pw - b) // geo.sw)
            cols = slice(b + geo.sw * v0 - geo.pw, geo.W, geo.sw)
            n_cols = len(range(geo.W)[cols])
            plane = phases[:m, :, a, b, :geo.Hq * geo.Wq].reshape(
                m, geo.C, geo.Hq, geo.Wq)                                   # (m, C, Hq, Wq)
            pairs.append((plane[:, :, u0:u0 + n_rows, v0:v0 + n_cols], (rows, cols)))
    return pairs


def _split_phases(x, n0, m, phases, geo):
    """Copy images x[n0:n0+m] into their padded phase planes (the padding stays zero)."""
    for block, (rows, cols) in _phase_views(phases, m, geo):
        block[...] = x[n0:n0 + m, :, rows, cols]


def _merge_phases(phases, gx, n0, m, geo):
    """The inverse: gx[n0:n0+m] from the real pixels of the phase planes."""
    for block, (rows, cols) in _phase_views(phases, m, geo):
        gx[n0:n0 + m, :, rows, cols] = block


@numba.njit(cache=True, nogil=True)
def _all_finite(a):
    """No NaN or infinity in ``a`` (stops at the first)."""
    for v in a.ravel():
        if not np.isfinite(v):
            return False
    return True


@numba.njit(cache=True, inline="always")
def _zero_garbage(block, Wo, Wq):
    """Zero the Wq - Wo garbage columns of every output row held in ``block`` (Ho*Wq values)."""
    for start in range(Wo, block.size, Wq):
        for q in range(start, start + Wq - Wo):
            block[q] = 0


@numba.njit(cache=True, nogil=True)
def _im2col_cpu(phases, col, sh, sw, dh, dw, Wq, Wo, zero_garbage):
    """col[c, i, j, n, oh*Wq + ow] = padded image n, channel c at tap (i, j) of output (oh, ow):
    one contiguous slice of phase (i*dh % sh, j*dw % sw). The garbage columns ow >= Wo read
    wrapped-around pixels: ``zero_garbage`` zeroes them, for the weight gradient of an x holding
    NaN or inf (times a zero garbage gy they must give 0)."""
    C, kh, kw, nb, L = col.shape
    for c in range(C):
        for n in range(nb):
            for i in range(kh):
                for j in range(kw):
                    start = (i * dh // sh) * Wq + j * dw // sw
                    src = phases[n, c, i * dh % sh, j * dw % sw, start:start + L]
                    dst = col[c, i, j, n]
                    for q in range(L):
                        dst[q] = src[q]
                    if zero_garbage:
                        _zero_garbage(dst, Wo, Wq)


@numba.njit(cache=True, nogil=True)
def _col2im_cpu(col, phases, sh, sw, dh, dw, Wq, Wo, zero_garbage):
    """phases[n, c] = sum over taps of col (the adjoint of _im2col_cpu). ``zero_garbage`` zeroes
    col's garbage columns first: they hold w @ 0, NaN if w is not finite."""
    C, kh, kw, nb, L = col.shape
    for c in range(C):
        for n in range(nb):
            phases[n, c] = 0
            for i in range(kh):
                for j in range(kw):
                    src = col[c, i, j, n]
                    if zero_garbage:
                        _zero_garbage(src, Wo, Wq)
                    start = (i * dh // sh) * Wq + j * dw // sw
                    dst = phases[n, c, i * dh % sh, j * dw % sw, start:start + L]
                    for q in range(L):
                        dst[q] += src[q]


@numba.njit(cache=True, nogil=True)
def _crop_cpu(y_wide, y, n0, bias):
    """y[n0 + n, k] = y_wide[k, n, :, :Wo] + bias[k]: drop the garbage columns (and transpose)."""
    K, m, Ho, _ = y_wide.shape
    Wo = y.shape[3]
    for n in range(m):
        for k in range(K):
            for oh in range(Ho):
                src, dst = y_wide[k, n, oh], y[n0 + n, k, oh]
                for q in range(Wo):
                    dst[q] = src[q] + bias[k]


@numba.njit(cache=True, nogil=True)
def _widen_cpu(gy, n0, gy_wide):
    """gy_wide[k, n, :, :Wo] = gy[n0 + n, k]; the garbage columns are left alone (zero)."""
    K, m, Ho, _ = gy_wide.shape
    Wo = gy.shape[3]
    for k in range(K):
        for n in range(m):
            for oh in range(Ho):
                src, dst = gy[n0 + n, k, oh], gy_wide[k, n, oh]
                for q in range(Wo):
                    dst[q] = src[q]


# --------------------------------------------------------------------------- CPU twin: GEMMs
def _work_dtype(dtype):
    """float32/float64 run as they are; anything else (float16) computes in float32."""
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


THREADED_MACS = 1 << 23    # below this many multiply-adds a call's chunks stay on one thread


def _chunk_workers(geo):
    """Threads for one call's chunks of images: one for small convolutions, where handing a
    chunk to another thread (~0.1 ms) costs more than it saves (a (2,4,16,16) x 8 3x3 conv
    forward + backward: 0.27 ms threaded, 0.14 ms on one thread)."""
    macs = geo.N * geo.K * geo.Ho * geo.Wo * (geo.C // geo.groups) * geo.kh * geo.kw
    return cpu_threads.count() if macs >= THREADED_MACS else 1


def _images_per_chunk(geo, rows, dtype, workers):
    """Images per chunk: ``rows`` wide rows of each in COL_CHUNK_BYTES at most, the chunks
    shared evenly by ``workers`` threads."""
    per_image = rows * geo.Ho * geo.Wq * np.dtype(dtype).itemsize
    return cpu_threads.chunk_size(geo.N, COL_CHUNK_BYTES // max(per_image, 1), workers)


def _wide(buf, lead, m, geo):
    """A (lead, m, Ho, Wq) view of the front of a flat chunk buffer (garbage columns included)."""
    return buf[:lead * m * geo.Ho * geo.Wq].reshape(lead, m, geo.Ho, geo.Wq)


def _columns(buf, m, geo):
    """The chunk's column buffer as im2col fills it: (C, kh, kw, m, Ho*Wq)."""
    return _wide(buf, geo.C * geo.kh * geo.kw, m, geo).reshape(geo.C, geo.kh, geo.kw, m, -1)


def _gemm_view(a, groups, columns):
    """(groups, rows / groups, columns): an array as the operand of one GEMM per group."""
    return a.reshape(groups, -1, columns)


def _forward_cpu(x, w, b, geo):
    dtype = _work_dtype(x.dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    G, K = geo.groups, geo.K
    bias = np.zeros(K, dtype) if b is None else b.astype(dtype, copy=False)
    y = np.empty(geo.y_shape, dtype)
    if y.size == 0 or geo.C == 0:
        y[...] = bias.reshape(-1, 1, 1)
        return y
    if geo.pointwise():
        wm = np.ascontiguousarray(w.reshape(K, geo.C), dtype=dtype)
        _pointwise_products(wm, x.reshape(geo.N, geo.C, -1), y.reshape(geo.N, K, -1), geo, bias)
        return y
    if conv_winograd.applies(geo):
        done = conv_winograd.forward(x, w, bias, geo, _scratch, dtype)
        if done is not None:                    # None: a non-finite value, im2col below
            return done
    wm = _gemm_view(w.astype(dtype, copy=False), G, w[0].size)              # (G, Kg, R)
    if _reads_taps_in_place(geo):
        return _taps_in_place_forward(x, wm, bias, y, geo, dtype)
    workers = _chunk_workers(geo)          # threads, each on whole chunks of images
    nb = _images_per_chunk(geo, geo.C * geo.kh * geo.kw, dtype, workers)

    def chunk(n0):
        m = min(nb, geo.N - n0)
        col_buf = _scratch(geo, "col", (geo.C * geo.kh * geo.kw * nb * geo.Ho * geo.Wq,), dtype)
        y_buf = _scratch(geo, "y", (K * nb * geo.Ho * geo.Wq,), dtype)
        phases = geo.phase_buffer(nb, dtype, "split")
        col = _columns(col_buf, m, geo)
        _split_phases(x, n0, m, phases, geo)
        _im2col_cpu(phases, col, *geo.layout(), False)           # garbage outputs are dropped
        y_wide = _wide(y_buf, K, m, geo)                                    # (K, m, Ho, Wq)
        cols = m * geo.Ho * geo.Wq
        np.matmul(wm, _gemm_view(col, G, cols), out=_gemm_view(y_wide, G, cols))
        _crop_cpu(y_wide, y, n0, bias)
    cpu_threads.map_serial_blas(chunk, range(0, geo.N, nb), workers)
    return y


TAPS_MIN_COLUMNS = 64       # computed output values per image and channel (Ho * Wq) from which
TAPS_MIN_CHANNELS = 6       # the forward reads the taps in place, with this many per group


def _reads_taps_in_place(geo):
    """Whether the forward multiplies the weights into each tap's slice of the phase planes
    where it lies (``_taps_in_place_forward``) rather than into im2col's column buffer. With
    OpenBLAS's AVX-512 kernels too: no column buffer to write and read saves more than BLAS's
    wider GEMM gains (LeNet-5 step 3.8-3.9 ms through im2col + BLAS, 3.0-3.1 in place; the 7x7
    s2 stem 4.0 and 3.6-4.1)."""
    return (geo.K // geo.groups >= TAPS_MIN_CHANNELS
            and geo.Ho * geo.Wq >= TAPS_MIN_COLUMNS)


def _taps_in_place_forward(x, wm, bias, y, geo, dtype):
    """y = conv(x, w) + bias without a column buffer: per image and group, the wide output rows
    (Kg, Ho*Wq) = w_g (Kg, R) @ the R tap rows, each a slice of the image's phase planes
    (``_tap_rows``; the rows im2col would copy), by small_gemm's AVX-512 loop, then cropped.
    LeNet-5's conv forwards on two threads: (64,1,28,28) x 6 5x5 0.42 -> 0.19 ms (PyTorch 0.19),
    (64,6,14,14) x 16 0.45 -> 0.33 ms (PyTorch 0.12) against im2col + OpenBLAS; the 7x7 s2 stem
    (8,3,112,112) x 32 forward + backward 5.5 -> 4.6 ms."""
    G, Kg = geo.groups, geo.K // geo.groups
    rows = -(-Kg // 8) * 8                  # whole blocks of 8 output rows: the loop's fast path
    weights = np.zeros((G, rows, wm.shape[2]), dtype)
    weights[:, :Kg] = wm
    workers = _chunk_workers(geo)
    nb = _images_per_chunk(geo, geo.C * geo.sh * geo.sw + geo.K, dtype, workers)

    def chunk(n0):
        m = min(nb, geo.N - n0)
        phases = geo.phase_buffer(nb, dtype, "split")
        _split_phases(x, n0, m, phases, geo)
        wide = _scratch(geo, "y-image", (rows, geo.Ho * geo.Wq), dtype)
        for g in range(G):
            taps = _tap_rows(geo, m, g)[1]
            _taps_forward_images(weights[g], phases.reshape(-1), taps, wide, y, n0, g * Kg,
                                 bias)
    cpu_threads.map_serial_blas(chunk, range(0, geo.N, nb), workers)
    return y


@numba.njit(cache=True, nogil=True)
def _taps_forward_images(w, phases, taps, wide, y, n0, k0, bias):
    """For each image n of the chunk: wide = w @ its tap rows (taps[n]: offsets into the flat
    phase planes), then y[n0 + n, k0:k0 + Kg] = wide's real columns + bias."""
    Kg, Ho, Wo = min(w.shape[0], y.shape[1] - k0), y.shape[2], y.shape[3]
    Wq = wide.shape[1] // Ho
    zero = np.zeros(w.shape[0], w.dtype)
    flat = wide.reshape(-1)
    for n in range(taps.shape[0]):
        small_gemm._gemm_nn_flat(w, phases, taps[n], flat, wide.shape[1], wide.shape[1], zero)
        for k in range(Kg):
            bk = bias[k0 + k]
            for oh in range(Ho):
                src, dst = wide[k, oh * Wq:oh * Wq + Wo], y[n0 + n, k0 + k, oh]
                for q in range(Wo):
                    dst[q] = src[q] + bk


def _grad_input_cpu(gy, w, geo):
    dtype = _work_dtype(gy.dtype)
    gy = gy.astype(dtype, copy=False)
    G, K = geo.groups, geo.K
    if geo.pointwise() and gy.size and geo.x_shape[0] * geo.C:
        wt = np.ascontiguousarray(w.reshape(K, geo.C).T, dtype=dtype)
        gx = np.empty(geo.x_shape, dtype)
        _pointwise_products(wt, np.ascontiguousarray(gy).reshape(geo.N, K, -1),
                            gx.reshape(geo.N, geo.C, -1), geo)
        return gx
    gx = np.zeros(geo.x_shape, dtype)
    if gx.size == 0 or gy.size == 0:
        return gx
    w = np.ascontiguousarray(w, dtype=dtype)
    if conv_winograd.applies(geo):
        done = conv_winograd.grad_input(gy, w, geo, _scratch, dtype)
        if done is not None:
            return done
    wt = _gemm_view(w, G, w[0].size).transpose(0, 2, 1)                   # (G, R, Kg)
    finite_w = _all_finite(w)
    workers = _chunk_workers(geo)
    nb = _images_per_chunk(geo, geo.C * geo.kh * geo.kw + K, dtype, workers)

    def chunk(n0):
        m = min(nb, geo.N - n0)
        gy_buf = _scratch(geo, "gy", (K * nb * geo.Ho * geo.Wq,), dtype)  # garbage columns stay 0
        col_buf = _scratch(geo, "col", (geo.C * geo.kh * geo.kw * nb * geo.Ho * geo.Wq,), dtype)
        phases = geo.phase_buffer(nb, dtype, "merge")
        gy_wide = _wide(gy_buf, K, m, geo)                                  # (K, m, Ho, Wq)
        _widen_cpu(gy, n0, gy_wide)
        col = _columns(col_buf, m, geo)
        cols = m * geo.Ho * geo.Wq
        np.matmul(wt, _gemm_view(gy_wide, G, cols), out=_gemm_view(col, G, cols))
        _col2im_cpu(col, phases, *geo.layout(), not finite_w)
        _merge_phases(phases, gx, n0, m, geo)
    cpu_threads.map_serial_blas(chunk, range(0, geo.N, nb), workers)
    return gx


def _grad_weight_cpu(x, gy, geo, with_bias=False):
    """The weight gradient; with ``with_bias``, (gw, gb): the 1x1 and Winograd paths sum gy
    for gb in their own pass over it."""
    dtype = _work_dtype(x.dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    gy = gy.astype(dtype, copy=False)
    gw = gb = None
    if gy.size and geo.K * geo.C * geo.kh * geo.kw:
        if geo.pointwise():
            gw, gb = _pointwise_grad_weight(x, np.ascontiguousarray(gy), geo, with_bias)
            gw = gw.reshape(geo.w_shape)
        elif conv_winograd.applies(geo):
            done = conv_winograd.backward(x, None, gy, geo, _scratch, dtype, need_gx=False,
                                          need_gb=with_bias)
            if done is not None:            # None: a non-finite value, im2col below
                _, gw, gb = done
    if gw is None:
        gw = _im2col_grad_weight(x, gy, geo, dtype)
    if with_bias and gb is None:
        gb = _grad_bias_cpu(gy)
    return (gw, gb) if with_bias else gw


def _tap_rows(geo, m, g):
    """Row offsets for small_gemm.gemm_nt_rows, group g of a chunk of m images: gy_wide's rows
    (k, image) in the flat (K, m, Ho*Wq) buffer, (m, K/G); and for each image the start of tap
    (i, j) of channel c in the flat phase planes (nb, C, sh, sw, S), the slice im2col copies
    (``_im2col_cpu``), (m, C/G * kh * kw) in the weight's (c, i, j) order. Made once per
    geometry (~40 us each: a tiny conv's whole weight gradient took ~25)."""
    return _tap_rows_of(geo.key, m, g)


@functools.lru_cache(maxsize=64)
def _tap_rows_of(key, m, g):
    geo = _Fields(zip(ConvGeometry.__slots__, key))
    Kg, Cg, L = geo.K // geo.groups, geo.C // geo.groups, geo.Ho * geo.Wq
    n = np.arange(m)[:, None]
    k = np.arange(g * Kg, (g + 1) * Kg)[None, :]
    a_rows = (k * m + n) * L
    c, i, j = (v.ravel()[None, :] for v in np.meshgrid(
        np.arange(g * Cg, (g + 1) * Cg), np.arange(geo.kh), np.arange(geo.kw), indexing="ij"))
    plane = ((n * geo.C + c) * geo.sh + i * geo.dh % geo.sh) * geo.sw + j * geo.dw % geo.sw
    b_rows = plane * geo.S + (i * geo.dh // geo.sh) * geo.Wq + j * geo.dw // geo.sw
    return a_rows.astype(np.int64), b_rows.astype(np.int64)


class _Fields(dict):
    """A ConvGeometry's fields by attribute, from its key."""
    __getattr__ = dict.__getitem__


def _im2col_grad_weight(x, gy, geo, dtype):
    G, K = geo.groups, geo.K
    gw = np.zeros((G, K // G, geo.C // G * geo.kh * geo.kw), dtype)
    if gy.size == 0 or gw.size == 0:
        return gw.reshape(geo.w_shape)
    finite_x = _all_finite(x)
    workers = _chunk_workers(geo)
    nb = _images_per_chunk(geo, geo.C * geo.kh * geo.kw + K, dtype, workers)

    def chunk(n0):
        """This chunk's share of the weight gradient."""
        m = min(nb, geo.N - n0)
        gy_buf = _scratch(geo, "gy", (K * nb * geo.Ho * geo.Wq,), dtype)
        phases = geo.phase_buffer(nb, dtype, "split")
        _split_phases(x, n0, m, phases, geo)
        gy_wide = _wide(gy_buf, K, m, geo)
        _widen_cpu(gy, n0, gy_wide)
        part = np.empty(gw.shape, dtype)
        if finite_x:
            # gw[k, (c, i, j)] = sum over images and wide columns of gy_wide[k] times tap (i, j)'s
            # slice of channel c's phase plane: im2col's columns read where they lie
            for g in range(G):
                a_rows, b_rows = _tap_rows(geo, m, g)
                small_gemm.gemm_nt_rows(gy_buf, a_rows, phases.reshape(-1), b_rows,
                                        geo.Ho * geo.Wq, part[g])
            return part
        # a NaN or inf of x in a garbage column would reach gw as 0 * inf: the columns built,
        # garbage zeroed
        col_buf = _scratch(geo, "col", (geo.C * geo.kh * geo.kw * nb * geo.Ho * geo.Wq,), dtype)
        col = _columns(col_buf, m, geo)
        _im2col_cpu(phases, col, *geo.layout(), True)
        cols = m * geo.Ho * geo.Wq              # both operands' rows run along the columns
        return small_gemm.gemm_nt_planes(gy_wide.reshape(G, -1), col.reshape(G, -1), cols, cols,
                                         part)
    for part in cpu_threads.map_serial_blas(chunk, range(0, geo.N, nb), workers):
        gw += part
    return gw.reshape(geo.w_shape)


POINTWISE_CHUNK_BYTES = 1 << 20    # y of a chunk of images: still in L2 when its bias is added


def _pointwise_products(a, b, out, geo, bias=None):
    """out[n] = a @ b[n] (+ bias[:, None]) for every image n, b (N, rows, HW) and out
    (N, M, HW) C-contiguous, by chunks of images shared by the threads. Per image
    small_gemm.gemm_nn (the bias its first pass's start) where its blocking fits and it outruns
    BLAS (1.3-1.5x OpenBLAS's AVX2 kernels here), else one BLAS GEMM per chunk, the bias added
    by its thread while the chunk's out is in the caches."""
    workers = _chunk_workers(geo)
    nb = cpu_threads.chunk_size(geo.N, POINTWISE_CHUNK_BYTES // max(out[0].nbytes, 1), workers)
    own = small_gemm.gemm_nn_fits(*a.shape) and small_gemm.outruns_blas()

    def chunk(n0):
        block = out[n0:n0 + nb]
        if own:
            for n in range(n0, n0 + block.shape[0]):
                small_gemm.gemm_nn(a, b[n], out[n], bias)
            return
        np.matmul(a, b[n0:n0 + nb], out=block)
        if bias is not None:
            block += bias[:, None]
    cpu_threads.map_serial_blas(chunk, range(0, geo.N, nb), workers)
    return out


POINTWISE_GW_SPLIT = 1 << 22    # multiply-adds from which a 1x1 weight gradient shares its images


def _pointwise_grad_weight(x, gy, geo, with_bias):
    """(gw (K, C), gb (K,) or None): gw the sum over images of gy[n] (K, HW) @ x[n] (C, HW).T
    in one pass (kernels/small_gemm.py's dot products: both operands run along HW, the
    contraction; 1.7x OpenBLAS's AVX2 per-image GEMMs and their sum on (32,128,28,28)), the
    images shared by the threads, each thread's partial sums (and gy's sums, for the bias)
    added in order."""
    N, K, C = geo.N, geo.K, geo.C
    a, bt = gy.reshape(N, K, -1), x.reshape(N, C, -1)
    workers = cpu_threads.count() if N * K * C * a.shape[2] >= POINTWISE_GW_SPLIT else 1
    step = -(-N // workers)

    def images(n0):
        gw = small_gemm.gemm_nt_sum(a[n0:n0 + step], bt[n0:n0 + step],
                                    np.empty((K, C), gy.dtype))
        return gw, totals.channel_totals(a[n0:n0 + step]) if with_bias else None
    parts = cpu_threads.map_threads(images, range(0, N, step), workers)
    gw = functools.reduce(np.add, [part[0] for part in parts])
    return gw, functools.reduce(np.add, [part[1] for part in parts]) if with_bias else None


def _winograd_backward_cpu(x, w, gy, geo, need_gb=False):
    """(gx, gw, gb) from one Winograd pass over gy's tiles (gb None unless ``need_gb``), or None
    (a non-finite value)."""
    dtype = _work_dtype(x.dtype)
    return conv_winograd.backward(np.ascontiguousarray(x, dtype=dtype),
                                  np.ascontiguousarray(w, dtype=dtype),
                                  gy.astype(dtype, copy=False), geo, _scratch, dtype,
                                  need_gb=need_gb)


def _grad_bias_cpu(gy):
    if totals.applies(gy):
        return totals.channel_totals(gy.reshape(gy.shape[0], gy.shape[1], -1))
    return gy.sum(axis=(0, 2, 3), dtype=_work_dtype(gy.dtype))


# --------------------------------------------------------------------------- entry points
def _device(x):
    """The kernels' device for ``x``: bfloat16 is welcome on cuda (the tensor-core kernels take
    it as integer words; conv_tc_cuda widens it for the SIMT kernels it falls back to)."""
    return backend.kernel_device(x, bfloat16=True)


# A TF32 convolution lays its operands out for the tensor cores in kernels of their own (x and
# the weights before the forward, gy twice and the weights again in the backward): about 8 more
# launches per forward and backward than the SIMT path, ~25 us at a few us each. Below about a
# quarter GFLOP per forward (LeNet's layers: 0.01-0.02 at batch 64) that is more than the tensor
# cores can save, so those convolutions run strict fp32, which TF32 permission allows.
TF32_MIN_FLOPS = 1 << 28


def _forward_flops(geo):
    return 2 * geo.N * geo.Ho * geo.Wo * geo.K * (geo.C // geo.groups) * geo.kh * geo.kw


_TENSOR_CORE_KINDS = {np.dtype(np.float16): "f16", np.dtype(dtypes.bfloat16): "bf16"}
_FLOAT32 = np.dtype(np.float32)


def _primitives(x, allow_tf32=False, geo=None):
    """(forward, grad_input, grad_weight, grad_bias) for the device holding ``x``. On cuda:

    - float16 / bfloat16 data: the tensor-core kernels (conv_tc_cuda: F16 / BF16 mma, float32
      accumulation);
    - float32 with ``allow_tf32`` (the ops layer passes ``gd.backends.cudnn.allow_tf32``,
      PyTorch's default True): the tensor-core kernels on TF32 (inputs rounded to 10 mantissa
      bits, float32 accumulation) for convolutions ``geo`` of at least ``TF32_MIN_FLOPS`` per
      forward, the strict kernels below for smaller ones;
    - float32 without it (strict fp32) and float64: the SIMT kernels (conv_cuda), but for the
      3x3 stride-1 convolutions ``geo`` with enough channels and work: the fused Winograd
      F(2x2, 3x3) kernels for float32 (conv_winograd_fused_cuda; the bias gradient
      conv_cuda's), or with ``conv_winograd_cuda.ENABLED`` (off by
      default) the unfused one (conv_winograd_cuda; its grad_bias is conv_cuda's), float64
      too.

    Tensors past the int32 index guard run conv_cuda's 64-bit SIMT build in every case
    (bfloat16 widened to float32 for it: conv_cuda has no bfloat16 build). The CPU twin
    ignores ``allow_tf32``: it is strict, as PyTorch's CPU convolutions."""
    if _device(x) == "cuda":
        from . import conv_cuda
        kind = _TENSOR_CORE_KINDS.get(x.dtype)        # (not dtype.name: Python, ~1.5 us)
        tf32 = x.dtype == _FLOAT32 and allow_tf32 and (
            geo is None or _forward_flops(geo) >= TF32_MIN_FLOPS)
        if kind or tf32:
            from . import conv_tc_cuda as tc
            return tc.forward, tc.grad_input, tc.grad_weight, conv_cuda.grad_bias
        if geo is not None:
            from . import conv_winograd_cuda as wg
            if wg.ENABLED and wg.applies(geo, x.dtype):
                return wg.forward, wg.grad_input, wg.grad_weight, conv_cuda.grad_bias
            from . import conv_winograd_fused_cuda as fused
            if fused.applies(geo, x.dtype):
                return fused.forward, fused.grad_input, fused.grad_weight, conv_cuda.grad_bias
        return conv_cuda.forward, conv_cuda.grad_input, conv_cuda.grad_weight, conv_cuda.grad_bias
    return _forward_cpu, _grad_input_cpu, _grad_weight_cpu, _grad_bias_cpu


def conv2d_forward(x, w, b, stride, padding, dilation, groups, allow_tf32=False):
    """y = conv2d(x, w) + b. x (N, C, H, W), w (K, C/groups, kh, kw), b (K,) or None;
    stride/padding/dilation are (h, w) int pairs; ``allow_tf32``: float32 may run on TF32
    tensor cores (cuda). Returns y (N, K, Ho, Wo) in x's dtype."""
    geo = ConvGeometry(x.shape, w.shape, stride, padding, dilation, groups)
    forward = _primitives(x, allow_tf32, geo)[0]
    return backend.cast(forward(x, w, b, geo), x.dtype)


def _contiguous_once(x, gy, needs, first, second):
    """gy made C-contiguous once, when conv_cuda's SIMT kernels ``first`` and ``second`` (the
    backward's two gemms; or the fused Winograd kernel and conv_cuda's weight gradient) will
    both read it: each flattens its operand with ``ascontiguousarray``, so a strided gy
    (broadcast by ``y.sum().backward()``) was copied twice, once per kernel. Other paths (CPU,
    tensor cores, the unfused Winograd) keep gy as it is."""
    if not (needs[0] and needs[1] and _device(x) == "cuda"):
        return gy
    from . import conv_cuda, conv_winograd_fused_cuda as fused
    simt = (conv_cuda.forward, conv_cuda.grad_input, fused.forward, fused.grad_input)
    if first in simt and second in (conv_cuda.grad_weight, fused.grad_weight):
        return backend.get_array_module(gy).ascontiguousarray(gy)
    return gy


def conv2d_backward(x, w, gy, stride, padding, dilation, groups, needs=(True, True, True),
                    allow_tf32=False):
    """Gradients of conv2d_forward: (gx, gw, gb), None where ``needs`` is False."""
    geo = ConvGeometry(x.shape, w.shape, stride, padding, dilation, groups)
    _, grad_input, grad_weight, grad_bias = _primitives(x, allow_tf32, geo)
    need_b = len(needs) > 2 and needs[2]
    if _device(x) == "cpu" and geo.pointwise():
        # a strided gy (broadcast by y.sum().backward()) copied once here, not by each GEMM
        # thread and again for the weight gradient
        gy = np.ascontiguousarray(gy)
    gy = _contiguous_once(x, gy, needs, grad_input, grad_weight)
    if needs[0] and needs[1] and _device(x) == "cpu" and conv_winograd.applies(geo):
        done = _winograd_backward_cpu(x, w, gy, geo, need_b)
        if done is not None:
            gx, gw, gb = done
            gb = backend.cast(gb, gy.dtype) if need_b else None
            return backend.cast(gx, x.dtype), backend.cast(gw, w.dtype), gb
    gx = backend.cast(grad_input(gy, w, geo), x.dtype) if needs[0] else None
    if needs[1] and need_b:
        gw, gb = grad_weight(x, gy, geo, with_bias=True)      # one pass over gy gives both
        return gx, backend.cast(gw, w.dtype), backend.cast(gb, gy.dtype)
    gw = backend.cast(grad_weight(x, gy, geo), w.dtype) if needs[1] else None
    gb = backend.cast(grad_bias(gy), gy.dtype) if need_b else None
    return gx, gw, gb


def _transposed_geometry(x, w, stride, padding, output_padding, groups, dilation):
    """The plain convolution whose grad_input is conv_transpose2d(x, w): its input is the
    transposed conv's output (N, Cout, Hout, Wout), its weight is w (Cin, Cout/groups, kh, kw)."""
    N, _, H, W = x.shape
    _, cout_g, kh, kw = w.shape
    h_out = conv_transpose2d_output_size(H, kh, stride[0], padding[0], output_padding[0],
                                         dilation[0])
    w_out = conv_transpose2d_output_size(W, kw, stride[1], padding[1], output_padding[1],
                                         dilation[1])
    return ConvGeometry((N, cout_g * groups, h_out, w_out), w.shape, stride, padding, dilation,
                        groups, out_size=(H, W))


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, groups, dilation,
                             allow_tf32=False):
    """y = conv_transpose2d(x, w) + b: x (N, Cin, H, W), w (Cin, Cout/groups, kh, kw), b (Cout,)
    or None. Returns y (N, Cout, Hout, Wout), Hout = (H-1)*s - 2p + d*(kh-1) + output_padding
    + 1."""
    geo = _transposed_geometry(x, w, stride, padding, output_padding, groups, dilation)
    grad_input = _primitives(x, allow_tf32, geo)[1]
    if b is not None and _device(x) == "cuda":
        return backend.cast(grad_input(x, w, geo, b), x.dtype)         # the kernel adds the bias
    y = grad_input(x, w, geo)
    if b is not None:
        y += b.reshape(-1, 1, 1).astype(y.dtype, copy=False)
    return backend.cast(y, x.dtype)


def conv_transpose2d_backward(x, w, gy, stride, padding, output_padding, groups, dilation,
                              needs=(True, True, True), allow_tf32=False):
    """Gradients of conv_transpose2d_forward: (gx, gw, gb), None where ``needs`` is False."""
    geo = _transposed_geometry(x, w, stride, padding, output_padding, groups, dilation)
    forward, _, grad_weight, grad_bias = _primitives(x, allow_tf32, geo)
    gy = _contiguous_once(x, gy, needs, forward, grad_weight)
    gx = backend.cast(forward(gy, w, None, geo), x.dtype) if needs[0] else None
    gw = backend.cast(grad_weight(gy, x, geo), w.dtype) if needs[1] else None
    gb = backend.cast(grad_bias(gy), gy.dtype) if len(needs) > 2 and needs[2] else None
    return gx, gw, gb
