"""2-D convolution (NCHW, grouped, strided, padded, dilated) and its adjoint, the transposed conv.

Three primitives carry every entry point, each on both devices:

- ``forward(x, w, b, geo)``: y = conv(x, w) + b
- ``grad_input(gy, w, geo)``: the adjoint of forward in x (the transposed convolution)
- ``grad_weight(x, gy, geo)``: the adjoint of forward in w

so ``conv_transpose2d`` forward is ``grad_input`` and its backward is ``forward`` (grad input) and
``grad_weight`` with the roles of x and gy swapped. ``geo`` (ConvGeometry) describes the plain
convolution in every case.

CPU twin: im2col + one BLAS GEMM per chunk of images, in a "wide" column layout. The padded image
plane of one channel is a flat row of S = Hp*Wp (+ tail) values; for kernel tap (i, j) the input
pixel of output (oh, ow) sits at flat offset ``i*dh*Wp + j*dw + oh*sh*Wp + ow*sw``. When sw == 1
we compute Wc = Wp output columns per row instead of Wo (the last Wp - Wo are garbage, cropped
away; 6% extra work at 32x32), so that with sh == 1 the whole (Ho, Wc) block of one tap is ONE
contiguous slice of the plane: the column copy is a long memcpy-like loop instead of Ho*Wo short
rows. The column buffer of a chunk, (C, kh, kw, nb, Ho*Wc), is sized to stay in cache
(COL_CHUNK_BYTES). The copies run in ``numba.njit`` loops (short-row loops there are ~10x slower
per element than long ones, hence the wide layout); col2im accumulates one channel plane at a time
in a cache-resident scratch row, gathering nothing twice.
"""

import numba
import numpy as np

from gpudl import backend

# Bytes of column buffer per chunk of images: written by im2col then read by the GEMM while still in
# the L2/L3 caches (2-5 MB measured best for (32,16,32,32) 3x3 on a 2-core EPYC; one image per
# chunk at least).
COL_CHUNK_BYTES = 4 << 20


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
    twin's wide layout: padded plane (Hp, Wp), Wc computed columns per output row, S values per
    padded plane.
    """

    __slots__ = ("N", "C", "H", "W", "K", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw",
                 "groups", "Ho", "Wo", "Hp", "Wp", "Wc", "S")

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups, out_size=None):
        self.N, self.C, self.H, self.W = (int(v) for v in x_shape)
        self.K, _, self.kh, self.kw = (int(v) for v in w_shape)
        self.sh, self.sw = stride
        self.ph, self.pw = padding
        self.dh, self.dw = dilation
        self.groups = groups
        self.Ho = conv2d_output_size(self.H, self.kh, self.sh, self.ph, self.dh)
        self.Wo = conv2d_output_size(self.W, self.kw, self.sw, self.pw, self.dw)
        if out_size is not None:
            self.Ho, self.Wo = (int(v) for v in out_size)
        self.Hp, self.Wp = self.H + 2 * self.ph, self.W + 2 * self.pw
        self.Wc = self.Wp if self.sw == 1 else self.Wo
        # the last tap of the last wide row reads (kw - 1) * dw values past the plane
        self.S = self.Hp * self.Wp + (self.kw - 1) * self.dw

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
        return (self.ph, self.pw, self.Wp, self.S, self.sh, self.sw, self.dh, self.dw, self.Wc,
                self.Wo)


# --------------------------------------------------------------------------- CPU twin: copies
@numba.njit(cache=True, inline="always")
def _zero_garbage(row, Wo, Wc):
    """Zero the Wc - Wo garbage columns of every output row held in ``row`` (Ho*Wc values)."""
    for start in range(Wo, row.size, Wc):
        for q in range(start, start + Wc - Wo):
            row[q] = 0


@numba.njit(cache=True)
def _im2col_cpu(x, n0, col, ph, pw, Wp, S, sh, sw, dh, dw, Wc, Wo):
    """col[c, i, j, n, oh*Wc + ow] = padded x[n0 + n, c] at tap (i, j) of output (oh, ow); the
    garbage columns ow >= Wo are zeroed (they would read wrapped-around pixels: NaN must not leak
    from there into the weight gradient)."""
    C, kh, kw, nb, L = col.shape
    H, W = x.shape[2], x.shape[3]
    plane = np.zeros(S, dtype=x.dtype)         # one padded channel plane; borders stay zero
    contiguous = sh * Wp == Wc * sw             # stride 1: a tap's whole block is one slice
    rows, row_len = (1, L) if contiguous else (L // Wc, Wc)
    for c in range(C):
        for n in range(nb):
            for h in range(H):
                dst = plane[(h + ph) * Wp + pw:(h + ph) * Wp + pw + W]
                src = x[n0 + n, c, h]
                for v in range(W):
                    dst[v] = src[v]
            for i in range(kh):
                for j in range(kw):
                    out = col[c, i, j, n]
                    for r in range(rows):
                        start = i * dh * Wp + j * dw + r * sh * Wp
                        dst = out[r * row_len:(r + 1) * row_len]
                        if sw == 1:                 # a contiguous slice vectorises
                            src = plane[start:start + row_len]
                            for q in range(row_len):
                                dst[q] = src[q]
                        else:
                            strided = plane[start:start + row_len * sw:sw]
                            for q in range(row_len):
                                dst[q] = strided[q]
                    _zero_garbage(out, Wo, Wc)


@numba.njit(cache=True)
def _col2im_cpu(col, n0, gx, ph, pw, Wp, S, sh, sw, dh, dw, Wc, Wo):
    """gx[n0 + n, c] = sum over taps of col (the adjoint of _im2col_cpu), cropped to (H, W).
    Zeroes col's garbage columns first (a NaN weight times a zero garbage gy is NaN)."""
    C, kh, kw, nb, L = col.shape
    H, W = gx.shape[2], gx.shape[3]
    plane = np.empty(S, dtype=gx.dtype)
    contiguous = sh * Wp == Wc * sw
    rows, row_len = (1, L) if contiguous else (L // Wc, Wc)
    for c in range(C):
        for n in range(nb):
            plane[:] = 0
            for i in range(kh):
                for j in range(kw):
                    inp = col[c, i, j, n]
                    _zero_garbage(inp, Wo, Wc)
                    for r in range(rows):
                        start = i * dh * Wp + j * dw + r * sh * Wp
                        src = inp[r * row_len:(r + 1) * row_len]
                        if sw == 1:
                            dst = plane[start:start + row_len]
                            for q in range(row_len):
                                dst[q] += src[q]
                        else:
                            strided = plane[start:start + row_len * sw:sw]
                            for q in range(row_len):
                                strided[q] += src[q]
            for h in range(H):
                src = plane[(h + ph) * Wp + pw:(h + ph) * Wp + pw + W]
                dst = gx[n0 + n, c, h]
                for v in range(W):
                    dst[v] = src[v]


# --------------------------------------------------------------------------- CPU twin: GEMMs
def _work_dtype(dtype):
    """float32/float64 run as they are; anything else (float16) computes in float32."""
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def _images_per_chunk(geo, rows, dtype):
    per_image = rows * geo.Ho * geo.Wc * np.dtype(dtype).itemsize
    return int(max(1, min(geo.N, COL_CHUNK_BYTES // max(per_image, 1))))


def _wide(buf, lead, m, geo):
    """A (lead, m, Ho, Wc) view of the front of a flat chunk buffer (garbage columns included)."""
    return buf[:lead * m * geo.Ho * geo.Wc].reshape(lead, m, geo.Ho, geo.Wc)


def _forward_cpu(x, w, b, geo):
    dtype = _work_dtype(x.dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    G, K = geo.groups, geo.K
    R = geo.C // G * geo.kh * geo.kw
    y = np.empty(geo.y_shape, dtype)
    if y.size == 0 or R == 0:
        y[...] = 0 if b is None else b.reshape(-1, 1, 1)
        return y
    wm = w.astype(dtype, copy=False).reshape(G, K // G, R)
    nb = _images_per_chunk(geo, geo.C * geo.kh * geo.kw, dtype)
    col_buf = np.empty(geo.C * geo.kh * geo.kw * nb * geo.Ho * geo.Wc, dtype)
    y_buf = np.empty(K * nb * geo.Ho * geo.Wc, dtype)
    bias = None if b is None else b.astype(dtype, copy=False).reshape(K, 1, 1, 1)
    for n0 in range(0, geo.N, nb):
        m = min(nb, geo.N - n0)
        col = _wide(col_buf, geo.C * geo.kh * geo.kw, m, geo)
        _im2col_cpu(x, n0, col.reshape(geo.C, geo.kh, geo.kw, m, -1), *geo.layout())
        y_wide = _wide(y_buf, K, m, geo)                                  # (K, m, Ho, Wc)
        np.matmul(wm, col.reshape(G, R, -1), out=y_wide.reshape(G, K // G, -1))
        out = y[n0:n0 + m].transpose(1, 0, 2, 3)                          # (K, m, Ho, Wo)
        if bias is None:
            np.copyto(out, y_wide[..., :geo.Wo])
        else:
            np.add(y_wide[..., :geo.Wo], bias, out=out)
    return y


def _gy_wide(gy, n0, m, buf, geo):
    """gy[n0:n0+m] as (K, m, Ho, Wc) in ``buf``; the garbage columns stay zero."""
    gyw = _wide(buf, geo.K, m, geo)
    gyw[..., :geo.Wo] = gy[n0:n0 + m].transpose(1, 0, 2, 3)
    return gyw


def _grad_input_cpu(gy, w, geo):
    dtype = _work_dtype(gy.dtype)
    G, K = geo.groups, geo.K
    R = geo.C // G * geo.kh * geo.kw
    gx = np.zeros(geo.x_shape, dtype)
    if gx.size == 0 or gy.size == 0:
        return gx
    wt = w.astype(dtype, copy=False).reshape(G, K // G, R).transpose(0, 2, 1)   # (G, R, Kg)
    nb = _images_per_chunk(geo, geo.C * geo.kh * geo.kw, dtype)
    gy_buf = np.zeros(K * nb * geo.Ho * geo.Wc, dtype)
    col_buf = np.empty(geo.C * geo.kh * geo.kw * nb * geo.Ho * geo.Wc, dtype)
    for n0 in range(0, geo.N, nb):
        m = min(nb, geo.N - n0)
        gyw = _gy_wide(gy, n0, m, gy_buf, geo)
        col = _wide(col_buf, geo.C * geo.kh * geo.kw, m, geo)
        np.matmul(wt, gyw.reshape(G, K // G, -1), out=col.reshape(G, R, -1))
        _col2im_cpu(col.reshape(geo.C, geo.kh, geo.kw, m, -1), n0, gx, *geo.layout())
    return gx


def _grad_weight_cpu(x, gy, geo):
    dtype = _work_dtype(x.dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    G, K = geo.groups, geo.K
    R = geo.C // G * geo.kh * geo.kw
    gw = np.zeros((G, K // G, R), dtype)
    if gy.size == 0 or gw.size == 0:
        return gw.reshape(geo.w_shape)
    nb = _images_per_chunk(geo, geo.C * geo.kh * geo.kw + K, dtype)
    gy_buf = np.zeros(K * nb * geo.Ho * geo.Wc, dtype)
    col_buf = np.empty(geo.C * geo.kh * geo.kw * nb * geo.Ho * geo.Wc, dtype)
    for n0 in range(0, geo.N, nb):
        m = min(nb, geo.N - n0)
        col = _wide(col_buf, geo.C * geo.kh * geo.kw, m, geo)
        _im2col_cpu(x, n0, col.reshape(geo.C, geo.kh, geo.kw, m, -1), *geo.layout())
        gyw = _gy_wide(gy, n0, m, gy_buf, geo)
        gw += np.matmul(gyw.reshape(G, K // G, -1), col.reshape(G, R, -1).transpose(0, 2, 1))
    return gw.reshape(geo.w_shape)


def _grad_bias_cpu(gy):
    return gy.sum(axis=(0, 2, 3), dtype=_work_dtype(gy.dtype))


# --------------------------------------------------------------------------- entry points
def _primitives(x):
    """(forward, grad_input, grad_weight, grad_bias) for the device holding ``x``."""
    if backend.kernel_device(x) == "cuda":
        from . import conv_cuda
        return conv_cuda.forward, conv_cuda.grad_input, conv_cuda.grad_weight, conv_cuda.grad_bias
    return _forward_cpu, _grad_input_cpu, _grad_weight_cpu, _grad_bias_cpu


def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """y = conv2d(x, w) + b. x (N, C, H, W), w (K, C/groups, kh, kw), b (K,) or None;
    stride/padding/dilation are (h, w) int pairs. Returns y (N, K, Ho, Wo) in x's dtype."""
    geo = ConvGeometry(x.shape, w.shape, stride, padding, dilation, groups)
    forward = _primitives(x)[0]
    return _cast(forward(x, w, b, geo), x.dtype)


def conv2d_backward(x, w, gy, stride, padding, dilation, groups, needs=(True, True, True)):
    """Gradients of conv2d_forward: (gx, gw, gb), None where ``needs`` is False."""
    geo = ConvGeometry(x.shape, w.shape, stride, padding, dilation, groups)
    _, grad_input, grad_weight, grad_bias = _primitives(x)
    gx = _cast(grad_input(gy, w, geo), x.dtype) if needs[0] else None
    gw = _cast(grad_weight(x, gy, geo), w.dtype) if needs[1] else None
    gb = _cast(grad_bias(gy), gy.dtype) if len(needs) > 2 and needs[2] else None
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


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, groups, dilation):
    """y = conv_transpose2d(x, w) + b: x (N, Cin, H, W), w (Cin, Cout/groups, kh, kw), b (Cout,)
    or None. Returns y (N, Cout, Hout, Wout), Hout = (H-1)*s - 2p + d*(kh-1) + output_padding
    + 1."""
    geo = _transposed_geometry(x, w, stride, padding, output_padding, groups, dilation)
    grad_input = _primitives(x)[1]
    y = grad_input(x, w, geo)
    if b is not None:
        y += b.reshape(-1, 1, 1).astype(y.dtype, copy=False)
    return _cast(y, x.dtype)


def conv_transpose2d_backward(x, w, gy, stride, padding, output_padding, groups, dilation,
                              needs=(True, True, True)):
    """Gradients of conv_transpose2d_forward: (gx, gw, gb), None where ``needs`` is False."""
    geo = _transposed_geometry(x, w, stride, padding, output_padding, groups, dilation)
    forward, _, grad_weight, grad_bias = _primitives(x)
    gx = _cast(forward(gy, w, None, geo), x.dtype) if needs[0] else None
    gw = _cast(grad_weight(gy, x, geo), w.dtype) if needs[1] else None
    gb = _cast(grad_bias(gy), gy.dtype) if len(needs) > 2 and needs[2] else None
    return gx, gw, gb


def _cast(a, dtype):
    return a if a.dtype == dtype else a.astype(dtype)
