"""N-d convolution on the array module (NumPy or CuPy): im2col + one batched GEMM, and the
Functions of conv3d and conv_transpose3d built on it.

2-D convolutions keep their own kernels (kernels/conv.py, Numba on cuda); this path serves the
spatial ranks without one. Everything is written with ``xp`` calls CuPy also has, so the same code
runs on both devices. float16 and bfloat16 compute in float32 and round back (float32
accumulation, as the tensor-core kernels).

Three primitives, as kernels/conv.py: ``forward`` (y = conv(x, w) + b), ``grad_input`` (its
adjoint in x: the transposed convolution) and ``grad_weight`` (its adjoint in w). ``Geometry``
always describes the plain convolution.
"""

import itertools

import numpy as np

from .. import backend, dtypes
from ..autograd import ArrayFunction
from ._util import xp_of


class Geometry:
    """A plain convolution: input spatial ``size``, ``kernel``, ``stride``, ``padding``,
    ``dilation`` (tuples of the spatial rank), ``groups``, and the output size ``out`` (given
    for a transposed convolution, whose output_padding may leave cells no output reads)."""

    def __init__(self, size, kernel, stride, padding, dilation, groups, out=None):
        self.size, self.kernel, self.stride = tuple(size), tuple(kernel), tuple(stride)
        self.padding, self.dilation, self.groups = tuple(padding), tuple(dilation), groups
        self.out = tuple(out) if out is not None else tuple(
            (n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(
                size, kernel, stride, padding, dilation))

    def taps(self):
        """One tuple of slices per kernel tap (row-major over the kernel): the padded-input
        cells that tap reads for every output cell."""
        for tap in itertools.product(*(range(k) for k in self.kernel)):
            yield (Ellipsis,) + tuple(slice(i * d, i * d + s * (o - 1) + 1, s) for i, d, s, o in
                                      zip(tap, self.dilation, self.stride, self.out))


def _widened(a):
    """``a`` in the dtype the GEMMs run in: float32 for float16 / bfloat16."""
    if a.dtype == dtypes.bfloat16:
        return dtypes.bfloat16_to_float32(a)
    return a.astype(np.float32) if a.dtype == np.float16 else a


def _im2col(x, geo):
    """(N, C, *size) -> columns (N, G, C/G * K, O): K kernel taps, O output cells."""
    xp = xp_of(x)
    pad = ((0, 0), (0, 0)) + tuple((p, p) for p in geo.padding)
    padded = xp.pad(x, pad) if any(geo.padding) else x
    cols = xp.stack([padded[s] for s in geo.taps()], axis=2)          # (N, C, K, *out)
    n, c = x.shape[:2]
    return cols.reshape(n, geo.groups, -1, int(np.prod(geo.out)))


def _col2im(cols, geo, channels):
    """The adjoint of _im2col: columns (N, G, C/G * K, O) summed back into (N, C, *size)."""
    xp = xp_of(cols)
    n = cols.shape[0]
    cols = cols.reshape(n, channels, -1, *geo.out)                    # (N, C, K, *out)
    padded = xp.zeros((n, channels) + tuple(s + 2 * p for s, p in zip(geo.size, geo.padding)),
                      cols.dtype)
    for k, s in enumerate(geo.taps()):
        padded[s] += cols[:, :, k]
    crop = (Ellipsis,) + tuple(slice(p, p + s) for p, s in zip(geo.padding, geo.size))
    return padded[crop]


def _grouped_weight(w, groups):
    """(C_out, C_in/G, *kernel) -> (G, C_out/G, C_in/G * K)."""
    return w.reshape(groups, w.shape[0] // groups, -1)


COL_CHUNK_BYTES = 64 << 20   # columns of one chunk of images at most: memory stays bounded


def _image_chunks(n, geo, channels):
    """Slices of the batch whose columns (channels * K * O float32 values an image) fit in
    COL_CHUNK_BYTES (one image at least)."""
    per_image = channels * int(np.prod(geo.kernel)) * int(np.prod(geo.out)) * 4
    step = max(1, COL_CHUNK_BYTES // max(per_image, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def forward(x, w, b, geo):
    """y = conv(x, w) + b: x (N, C_in, *size), w (C_out, C_in/G, *kernel) -> (N, C_out, *out)."""
    xp = xp_of(x)
    work_w = _grouped_weight(_widened(w), geo.groups)                 # (G, Co/G, Ci/G * K)
    y = xp.empty((x.shape[0], w.shape[0]) + geo.out, work_w.dtype)
    for images in _image_chunks(x.shape[0], geo, x.shape[1]):
        cols = _im2col(_widened(x[images]), geo)                      # (n, G, Ci/G * K, O)
        y[images] = xp.matmul(work_w, cols).reshape(-1, w.shape[0], *geo.out)
    if b is not None:
        y += _widened(b).reshape((-1,) + (1,) * len(geo.out))
    return backend.cast(y, x.dtype)


def grad_input(gy, w, geo, channels, b=None):
    """The adjoint of forward in x: gy (N, C_out, *out) -> (N, channels, *size), plus ``b``
    (channels,) if given (the transposed convolution's bias)."""
    xp = xp_of(gy)
    transposed = _grouped_weight(_widened(w), geo.groups).swapaxes(1, 2)   # (G, Ci/G * K, Co/G)
    gx = xp.empty((gy.shape[0], channels) + geo.size, transposed.dtype)
    for images in _image_chunks(gy.shape[0], geo, channels):
        gy_cols = _widened(gy[images]).reshape(-1, geo.groups, gy.shape[1] // geo.groups,
                                               int(np.prod(geo.out)))
        gx[images] = _col2im(xp.matmul(transposed, gy_cols), geo, channels)
    if b is not None:
        gx += _widened(b).reshape((-1,) + (1,) * len(geo.size))
    return backend.cast(gx, gy.dtype)


def grad_weight(x, gy, geo, weight_shape):
    """The adjoint of forward in w: (C_out, C_in/G, *kernel), summed over the batch."""
    xp = xp_of(x)
    gw = xp.zeros(weight_shape, _widened(x[:0]).dtype)      # (stays zero for an empty batch)
    for images in _image_chunks(x.shape[0], geo, x.shape[1]):
        cols = _im2col(_widened(x[images]), geo)                      # (n, G, Ci/G * K, O)
        gy_cols = _widened(gy[images]).reshape(-1, geo.groups, gy.shape[1] // geo.groups,
                                               cols.shape[-1])
        gw = gw + xp.matmul(gy_cols, cols.swapaxes(2, 3)).sum(axis=0).reshape(weight_shape)
    return backend.cast(gw, x.dtype)


def grad_bias(gy):
    axes = (0,) + tuple(range(2, gy.ndim))
    return backend.cast(_widened(gy).sum(axis=axes), gy.dtype)


class ConvNd(ArrayFunction):
    """conv3d (any spatial rank) on the array module."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        ctx.save_for_backward(x, w)
        ctx.geo = Geometry(x.shape[2:], w.shape[2:], stride, padding, dilation, groups)
        return forward(x, w, b, ctx.geo)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = grad_input(gy, w, ctx.geo, x.shape[1]) if need_x else None
        gw = grad_weight(x, gy, ctx.geo, w.shape) if need_w else None
        gb = grad_bias(gy) if need_b else None
        return gx, gw, gb, None, None, None, None


class ConvTransposeNd(ArrayFunction):
    """conv_transpose3d (any spatial rank): forward is the plain convolution's grad_input, whose
    input is this op's output."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, output_padding, groups, dilation):
        ctx.save_for_backward(x, w)
        size = [(n - 1) * s - 2 * p + d * (k - 1) + o + 1 for n, k, s, p, o, d in zip(
            x.shape[2:], w.shape[2:], stride, padding, output_padding, dilation)]
        ctx.geo = Geometry(size, w.shape[2:], stride, padding, dilation, groups,
                           out=x.shape[2:])
        return grad_input(x, w, ctx.geo, w.shape[1] * groups, b)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = forward(gy, w, None, ctx.geo) if need_x else None
        gw = grad_weight(gy, x, ctx.geo, w.shape) if need_w else None
        gb = grad_bias(gy) if need_b else None
        return gx, gw, gb, None, None, None, None, None
