"""Numba-CUDA kernels for 2-D max, average and adaptive average pooling, forward and backward.

Pooling is memory-bound: each kernel reads its input once and writes its output once. Forward
kernels run one thread per output element; backward kernels one thread per input pixel, gathering
the gradients of every window that covers it (no atomics, so results are deterministic). Max
pooling saves a compact argmax (the offset inside the window, uint8 for windows of up to 256
elements) and its backward gathers the outputs whose saved offset points back at the pixel.

Arrays arrive as C-contiguous planes ``(P, H, W)`` (P = N * C). Window geometry matches the CPU
twins in kernels/pool.py. Kernels are built per accumulator type: float32 for float32 and float16
data (loads widen to float32, so float16 sums do not lose precision), float64 for float64 data
(gradient checks on a GPU). Literals go through the accumulator type, so float32 kernels hold no
fp64 instruction.
"""

import math

import numpy as np
from numba import cuda, float32, float64

from gpudl import backend

from .pool import index_dtype

# Threads per block for every kernel: a flat 1-D grid over outputs (or input pixels). Neighbouring
# threads handle neighbouring columns, so loads and stores coalesce along W; 256 keeps enough
# blocks resident to hide memory latency, which is all these kernels wait on.
THREADS = 256


def _make_kernels(acc):
    """The six pooling kernels with ``acc`` (a Numba float type) as the accumulator type."""

    @cuda.jit(device=True, inline="always")
    def avg_window(o, stride, padding, kernel, size):
        start = o * stride - padding
        end = min(start + kernel, size + padding)
        return max(start, 0), min(end, size), end - start

    @cuda.jit(device=True, inline="always")
    def avg_divisor(oh, ow, H, W, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
        h0, h1, span_h = avg_window(oh, sh, ph, kh, H)
        w0, w1, span_w = avg_window(ow, sw, pw, kw, W)
        if divisor != 0:
            return acc(divisor)
        if count_include_pad:
            return acc(span_h * span_w)
        return acc((h1 - h0) * (w1 - w0))

    @cuda.jit
    def max_fwd(x, y, argmax, kh, kw, sh, sw, ph, pw, dh, dw):
        t = cuda.grid(1)
        P, H, W = x.shape
        Ho, Wo = y.shape[1], y.shape[2]
        if t < P * Ho * Wo:
            p, r = t // (Ho * Wo), t % (Ho * Wo)
            oh, ow = r // Wo, r % Wo
            h0, w0 = oh * sh - ph, ow * sw - pw
            best = x[p, 0, 0]
            arg = -1
            for i in range(kh):
                h = h0 + i * dh
                if 0 <= h < H:
                    for j in range(kw):
                        w = w0 + j * dw
                        if 0 <= w < W:
                            v = x[p, h, w]
                            if arg < 0 or v > best or v != v:    # NaN wins, as in PyTorch
                                best = v
                                arg = i * kw + j
            if arg < 0:              # a dilated window that holds only padding
                y[p, oh, ow] = acc(-math.inf)
                argmax[p, oh, ow] = 0
            else:
                y[p, oh, ow] = best
                argmax[p, oh, ow] = arg

    @cuda.jit
    def max_bwd(gy, argmax, gx, kh, kw, sh, sw, ph, pw, dh, dw):
        t = cuda.grid(1)
        P, H, W = gx.shape
        Ho, Wo = gy.shape[1], gy.shape[2]
        if t < P * H * W:
            p, r = t // (H * W), t % (H * W)
            a, b = r // W + ph, r % W + pw          # the pixel in padded coordinates
            total = acc(0)
            # windows whose start oh * sh lies in [a - (kh - 1) * dh, a]
            for oh in range(max(0, (a - (kh - 1) * dh + sh - 1) // sh), min(Ho - 1, a // sh) + 1):
                di = a - oh * sh
                if di % dh == 0:
                    for ow in range(max(0, (b - (kw - 1) * dw + sw - 1) // sw),
                                    min(Wo - 1, b // sw) + 1):
                        dj = b - ow * sw
                        if dj % dw == 0 and argmax[p, oh, ow] == (di // dh) * kw + dj // dw:
                            total += acc(gy[p, oh, ow])
            gx[p, r // W, r % W] = total

    @cuda.jit
    def avg_fwd(x, y, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
        t = cuda.grid(1)
        P, H, W = x.shape
        Ho, Wo = y.shape[1], y.shape[2]
        if t < P * Ho * Wo:
            p, r = t // (Ho * Wo), t % (Ho * Wo)
            oh, ow = r // Wo, r % Wo
            h0, h1, _ = avg_window(oh, sh, ph, kh, H)
            w0, w1, _ = avg_window(ow, sw, pw, kw, W)
            total = acc(0)
            for h in range(h0, h1):
                for w in range(w0, w1):
                    total += acc(x[p, h, w])
            if h0 < h1 and w0 < w1:
                total /= avg_divisor(oh, ow, H, W, kh, kw, sh, sw, ph, pw, count_include_pad,
                                     divisor)
            y[p, oh, ow] = total

    @cuda.jit
    def avg_bwd(gy, gx, kh, kw, sh, sw, ph, pw, count_include_pad, divisor):
        t = cuda.grid(1)
        P, H, W = gx.shape
        Ho, Wo = gy.shape[1], gy.shape[2]
        if t < P * H * W:
            p, r = t // (H * W), t % (H * W)
            a, b = r // W + ph, r % W + pw          # the pixel in padded coordinates
            total = acc(0)
            for oh in range(max(0, (a - kh + sh) // sh), min(Ho - 1, a // sh) + 1):
                for ow in range(max(0, (b - kw + sw) // sw), min(Wo - 1, b // sw) + 1):
                    total += acc(gy[p, oh, ow]) / avg_divisor(
                        oh, ow, H, W, kh, kw, sh, sw, ph, pw, count_include_pad, divisor)
            gx[p, r // W, r % W] = total

    @cuda.jit
    def adaptive_fwd(x, y):
        t = cuda.grid(1)
        P, H, W = x.shape
        Ho, Wo = y.shape[1], y.shape[2]
        if t < P * Ho * Wo:
            p, r = t // (Ho * Wo), t % (Ho * Wo)
            oh, ow = r // Wo, r % Wo
            h0, h1 = (oh * H) // Ho, ((oh + 1) * H + Ho - 1) // Ho
            w0, w1 = (ow * W) // Wo, ((ow + 1) * W + Wo - 1) // Wo
            total = acc(0)
            for h in range(h0, h1):
                for w in range(w0, w1):
                    total += acc(x[p, h, w])
            y[p, oh, ow] = total / acc((h1 - h0) * (w1 - w0))

    @cuda.jit
    def adaptive_bwd(gy, gx):
        t = cuda.grid(1)
        P, H, W = gx.shape
        Ho, Wo = gy.shape[1], gy.shape[2]
        if t < P * H * W:
            p, r = t // (H * W), t % (H * W)
            h, w = r // W, r % W
            total = acc(0)
            # bins i with floor(i*H/Ho) <= h < ceil((i+1)*H/Ho): i in [h*Ho//H, ceil((h+1)*Ho/H))
            for oh in range((h * Ho) // H, ((h + 1) * Ho + H - 1) // H):
                h0, h1 = (oh * H) // Ho, ((oh + 1) * H + Ho - 1) // Ho
                for ow in range((w * Wo) // W, ((w + 1) * Wo + W - 1) // W):
                    w0, w1 = (ow * W) // Wo, ((ow + 1) * W + Wo - 1) // Wo
                    total += acc(gy[p, oh, ow]) / acc((h1 - h0) * (w1 - w0))
            gx[p, h, w] = total

    return {"max_fwd": max_fwd, "max_bwd": max_bwd, "avg_fwd": avg_fwd, "avg_bwd": avg_bwd,
            "adaptive_fwd": adaptive_fwd, "adaptive_bwd": adaptive_bwd}


_KERNELS = {np.float32: _make_kernels(float32), np.float64: _make_kernels(float64)}  # lazy


def _kernel(name, dtype):
    return _KERNELS[np.float64 if dtype == np.float64 else np.float32][name]


def _launch(kernel, n, *args):
    if n:
        kernel[(n + THREADS - 1) // THREADS, THREADS, backend.launch_stream()](*args)


def _planes(xp, a):
    """(..., H, W) -> a C-contiguous (P, H, W) array."""
    return xp.ascontiguousarray(a).reshape((-1,) + a.shape[-2:])


def _ints(*values):
    return tuple(np.int32(v) for v in values)


# --------------------------------------------------------------------------- launchers
def max_pool2d_forward(x, out, kernel_size, stride, padding, dilation):
    xp = backend.get_array_module(x)
    planes = _planes(xp, x)
    y = xp.empty((planes.shape[0],) + out, x.dtype)
    argmax = xp.empty(y.shape, index_dtype(kernel_size))
    _launch(_kernel("max_fwd", x.dtype), y.size, planes, y, argmax,
            *_ints(*kernel_size, *stride, *padding, *dilation))
    shape = x.shape[:-2] + out
    return y.reshape(shape), argmax.reshape(shape)


def max_pool2d_backward(gy, argmax, input_shape, kernel_size, stride, padding, dilation):
    xp = backend.get_array_module(gy)
    gx = xp.empty((math.prod(input_shape[:-2]),) + tuple(input_shape[-2:]), gy.dtype)
    _launch(_kernel("max_bwd", gy.dtype), gx.size, _planes(xp, gy), _planes(xp, argmax), gx,
            *_ints(*kernel_size, *stride, *padding, *dilation))
    return gx.reshape(input_shape)


def avg_pool2d_forward(x, out, kernel_size, stride, padding, count_include_pad, divisor):
    xp = backend.get_array_module(x)
    planes = _planes(xp, x)
    y = xp.empty((planes.shape[0],) + out, x.dtype)
    _launch(_kernel("avg_fwd", x.dtype), y.size, planes, y,
            *_ints(*kernel_size, *stride, *padding, count_include_pad, divisor))
    return y.reshape(x.shape[:-2] + out)


def avg_pool2d_backward(gy, input_shape, kernel_size, stride, padding, count_include_pad,
                        divisor):
    xp = backend.get_array_module(gy)
    gx = xp.empty((math.prod(input_shape[:-2]),) + tuple(input_shape[-2:]), gy.dtype)
    _launch(_kernel("avg_bwd", gy.dtype), gx.size, _planes(xp, gy), gx,
            *_ints(*kernel_size, *stride, *padding, count_include_pad, divisor))
    return gx.reshape(input_shape)


def adaptive_avg_pool2d_forward(x, out):
    xp = backend.get_array_module(x)
    planes = _planes(xp, x)
    y = xp.empty((planes.shape[0],) + out, x.dtype)
    _launch(_kernel("adaptive_fwd", x.dtype), y.size, planes, y)
    return y.reshape(x.shape[:-2] + out)


def adaptive_avg_pool2d_backward(gy, input_shape):
    xp = backend.get_array_module(gy)
    gx = xp.empty((math.prod(input_shape[:-2]),) + tuple(input_shape[-2:]), gy.dtype)
    _launch(_kernel("adaptive_bwd", gy.dtype), gx.size, _planes(xp, gy), gx)
    return gx.reshape(input_shape)


# --------------------------------------------------------------------------- signature table
def _signatures(name, dtype):
    data = f"{dtype}[:, :, ::1]"
    if name in ("max_fwd", "max_bwd"):
        # (x, y, argmax) or (gy, argmax, gx), with each argmax dtype, then 8 int32 geometry args
        arrays = [(data, data, f"{i}[:, :, ::1]") if name == "max_fwd"
                  else (data, f"{i}[:, :, ::1]", data) for i in ("uint8", "int32")]
        return [f"void({', '.join(a + ('int32',) * 8)})" for a in arrays]
    ints = ("int32",) * (8 if name.startswith("avg") else 0)   # geometry, flag, divisor
    return [f"void({', '.join((data, data) + ints)})"]


SIGNATURES = [
    (_KERNELS[np.float64 if dtype == "float64" else np.float32][name], _signatures(name, dtype))
    for name in _KERNELS[np.float32]
    for dtype in ("float32", "float16", "float64")
]
