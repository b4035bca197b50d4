"""Direct CPU weight gradient for convolutions with few taps (LeNet's first layer: 1 -> 6, 5x5).

With C*kh*kw small, im2col's column buffer holds kh*kw copies of each input pixel, and the
weight gradient's GEMM (K rows by C*kh*kw, contracted over every output pixel) is thin: LeNet's
first convolution, (64,1,28,28) x 6, took 0.66-0.68 ms for it on one core. Here each weight is a
dot product, straight from a zero-padded copy of the input, along "wide" rows: output (oh, ow)
at flat index oh * Wp + ow of a plane as wide as the padded input, so that tap (i, j) reads the
padded plane at that index + i * Wp + j, one loop of Ho * Wp along a whole image per tap, four
output channels at a time sharing each load (the output gradient in the same wide layout, zeros
between its rows): 0.41-0.43 ms. The forward pass done the same way (axpy along wide rows) ran
0.53 ms against im2col's 0.40-0.43 (K = 6 is 4 + 2 channels; its stores bind it): not used.

Loop indices are unsigned: with a signed index Numba tests each access for a negative index and
the loops do not vectorise (5-8x slower). Stride 1, no dilation, one group, full outputs
(``applies``), and a finite input (a zero between the gradient's rows times an infinite pixel
would be NaN: the caller checks). Images go to gpudl's threads in parts, each with its own part
of the gradient, summed in part order.
"""

import numba
import numpy as np

from gpudl import cpu_threads

MAX_TAPS = 32           # C * kh * kw: beyond, im2col's GEMM has the better shape
MIN_ROW = 8             # Wo: shorter rows waste most of each wide row

_FAST = {"reassoc", "contract"}


def applies(geo):
    """Whether the direct twin takes this geometry (see module doc)."""
    return (geo.groups == 1 and (geo.sh, geo.sw) == (1, 1) and (geo.dh, geo.dw) == (1, 1)
            and geo.C * geo.kh * geo.kw <= MAX_TAPS and geo.Wo >= MIN_ROW
            and geo.N * geo.K * geo.Ho > 0 and (geo.Ho, geo.Wo) == _full_output(geo))


def _full_output(geo):
    return geo.H + 2 * geo.ph - geo.kh + 1, geo.W + 2 * geo.pw - geo.kw + 1


def grad_weight(x, gy, geo, workers):
    """gw (K, C, kh, kw): the weight gradient of ``forward`` for output gradient gy (x finite)."""
    xp = _padded(x, geo)
    gy = np.ascontiguousarray(gy, dtype=x.dtype)
    parts = _image_parts(geo.N, workers)
    sums = np.zeros((len(parts), geo.K, geo.C, geo.kh, geo.kw), x.dtype)
    cpu_threads.map_threads(lambda p: _grad_weight_images(xp, gy, sums[p], *parts[p]),
                            range(len(parts)), workers)
    gw = sums[0]
    for part in sums[1:]:
        gw += part
    return gw


def _image_parts(N, workers):
    step = -(-N // max(1, workers))
    return [(n0, min(N, n0 + step)) for n0 in range(0, N, step)]


def _padded(x, geo):
    xp = np.zeros((geo.N, geo.C, geo.H + 2 * geo.ph, geo.W + 2 * geo.pw), x.dtype)
    xp[:, :, geo.ph:geo.ph + geo.H, geo.pw:geo.pw + geo.W] = x
    return xp


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _grad_weight_images(xp, gy, gw, n0, n1):
    K, C, kh, kw = gw.shape
    Ho, Wo = gy.shape[2], gy.shape[3]
    Wp = xp.shape[3]
    L = (Ho - 1) * Wp + Wo
    span, K4 = np.uint64(L), K - K % 4
    g_wide = np.zeros((K, L), gy.dtype)             # gy's rows, zeros between them
    for n in range(n0, n1):
        for k in range(K):
            for oh in range(Ho):
                g_wide[k, oh * Wp:oh * Wp + Wo] = gy[n, k, oh]
        for c in range(C):
            src = xp[n, c].ravel()
            for i in range(kh):
                for j in range(kw):
                    off = np.uint64(i * Wp + j)
                    for k in range(0, K4, 4):
                        s0, s1, s2, s3 = _dot4(g_wide[k], g_wide[k + 1], g_wide[k + 2],
                                               g_wide[k + 3], src, off, span)
                        gw[k, c, i, j] += s0
                        gw[k + 1, c, i, j] += s1
                        gw[k + 2, c, i, j] += s2
                        gw[k + 3, c, i, j] += s3
                    for k in range(K4, K):
                        gw[k, c, i, j] += _dot(g_wide[k], src, off, span)


# The loops along a wide row, each its own compiled function: inlined into the tap loops above,
# Numba's code vectorised them only when those loops ran once (K = 4), 10x slower otherwise.
@numba.njit(cache=True, nogil=True, fastmath=_FAST, inline="never")
def _dot4(g0, g1, g2, g3, src, off, span):
    zero = g0.dtype.type(0)
    s0 = s1 = s2 = s3 = zero
    for q in range(span):
        v = src[off + q]
        s0 += g0[q] * v
        s1 += g1[q] * v
        s2 += g2[q] * v
        s3 += g3[q] * v
    return s0, s1, s2, s3


@numba.njit(cache=True, nogil=True, fastmath=_FAST, inline="never")
def _dot(g0, src, off, span):
    s0 = g0.dtype.type(0)
    for q in range(span):
        s0 += g0[q] * src[off + q]
    return s0
