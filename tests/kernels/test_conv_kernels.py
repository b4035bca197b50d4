"""kernels.conv (the CPU twin) against direct float64 loops written from the definitions: conv2d and
conv_transpose2d, forward values and both gradients, over a grid of shapes."""

import numpy as np
import pytest

from gpudl import backend
from gpudl.kernels import conv

pytestmark = pytest.mark.skipif(backend.kernel_device(np.zeros(1)) != "cpu",
                                reason="tests the CPU twin")

# (N, C, H, W, K, (kh, kw), stride, padding, dilation, groups)
CASES = [
    (2, 3, 7, 9, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),        # odd sizes, same padding
    (1, 3, 8, 8, 5, (3, 3), (2, 2), (1, 1), (1, 1), 1),        # batch 1, stride 2
    (3, 2, 9, 7, 3, (2, 3), (1, 2), (0, 1), (2, 1), 1),        # non-square everything, dilation
    (2, 4, 6, 6, 6, (3, 3), (1, 1), (2, 2), (1, 1), 2),        # groups, padding > kernel/2
    (2, 3, 5, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), 3),        # depthwise, channel multiplier 2
    (2, 4, 5, 6, 3, (1, 1), (1, 1), (0, 0), (1, 1), 1),        # 1x1
    (1, 2, 6, 5, 2, (1, 1), (2, 3), (0, 0), (1, 1), 1),        # 1x1 strided
    (0, 3, 5, 5, 2, (3, 3), (1, 1), (1, 1), (1, 1), 1),        # empty batch
    (2, 1, 11, 4, 2, (5, 1), (3, 1), (2, 0), (1, 1), 1),       # tall kernel, stride 3
    (1, 2, 4, 4, 2, (4, 4), (1, 1), (0, 0), (1, 1), 1),        # kernel covers the image: 1x1 out
    (2, 2, 7, 7, 3, (3, 3), (2, 2), (0, 0), (3, 3), 1),        # stride and dilation together
]


def _pairs(case):
    return case[6:]


def _padded(x, ph, pw):
    N, C, H, W = x.shape
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + W] = x
    return xp


def conv2d_loops(x, w, b, gy, stride, padding, dilation, groups):
    """y, gx, gw, gb of y = conv2d(x, w) + b, one output pixel and kernel tap at a time."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    N, C, H, W = x.shape
    K, Cg, kh, kw = w.shape
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = _padded(x, ph, pw)
    y, gxp, gw = np.zeros((N, K, Ho, Wo)), np.zeros_like(xp), np.zeros(w.shape)
    for k in range(K):
        cs = slice(k // (K // groups) * Cg, (k // (K // groups) + 1) * Cg)
        for oh in range(Ho):
            for ow in range(Wo):
                for i in range(kh):
                    for j in range(kw):
                        h, v = oh * sh + i * dh, ow * sw + j * dw
                        y[:, k, oh, ow] += xp[:, cs, h, v] @ w[k, :, i, j]
                        gxp[:, cs, h, v] += np.outer(gy[:, k, oh, ow], w[k, :, i, j])
                        gw[k, :, i, j] += gy[:, k, oh, ow] @ xp[:, cs, h, v]
    y += b[:, None, None]
    return y, gxp[:, :, ph:ph + H, pw:pw + W], gw, gy.sum(axis=(0, 2, 3))


def conv_transpose2d_loops(x, w, b, gy, stride, padding, output_padding, groups, dilation):
    """y, gx, gw, gb of y = conv_transpose2d(x, w) + b: every input pixel scatters w * x."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    N, Cin, H, W = x.shape
    _, Cout_g, kh, kw = w.shape
    Ho = (H - 1) * sh - 2 * ph + dh * (kh - 1) + output_padding[0] + 1
    Wo = (W - 1) * sw - 2 * pw + dw * (kw - 1) + output_padding[1] + 1
    y = np.zeros((N, Cout_g * groups, Ho + 2 * ph, Wo + 2 * pw))   # padded output, cropped below
    gyp = _padded(gy, ph, pw)
    gx, gw = np.zeros(x.shape), np.zeros(w.shape)
    for ci in range(Cin):
        cs = slice(ci // (Cin // groups) * Cout_g, (ci // (Cin // groups) + 1) * Cout_g)
        for ih in range(H):
            for iw in range(W):
                for i in range(kh):
                    for j in range(kw):
                        h, v = ih * sh + i * dh, iw * sw + j * dw
                        if h >= Ho + 2 * ph or v >= Wo + 2 * pw:
                            continue
                        y[:, cs, h, v] += np.outer(x[:, ci, ih, iw], w[ci, :, i, j])
                        gx[:, ci, ih, iw] += gyp[:, cs, h, v] @ w[ci, :, i, j]
                        gw[ci, :, i, j] += x[:, ci, ih, iw] @ gyp[:, cs, h, v]
    y = y[:, :, ph:ph + Ho, pw:pw + Wo] + b[:, None, None]
    return y, gx, gw, gy.sum(axis=(0, 2, 3))


def _random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _check(got, want, dtype, name=""):
    tol = 1e-10 if dtype == np.float64 else 2e-4
    assert got.dtype == dtype and got.shape == want.shape, (name, got.dtype, got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES)
def test_conv2d_against_loops(rng, case, dtype):
    N, C, H, W, K, (kh, kw), *_, groups = case
    x = _random(rng, (N, C, H, W), dtype)
    w = _random(rng, (K, C // groups, kh, kw), dtype)
    b = _random(rng, (K,), dtype)
    y = conv.conv2d_forward(x, w, b, *_pairs(case))
    gy = _random(rng, y.shape, dtype)
    want = conv2d_loops(x.astype(float), w.astype(float), b.astype(float), gy.astype(float),
                        *_pairs(case))
    got = (y,) + conv.conv2d_backward(x, w, gy, *_pairs(case))
    for name, g, r in zip(("y", "gx", "gw", "gb"), got, want):
        _check(g, r, dtype, name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N, Cin, H, W, Cout_g, k, stride, padding, output_padding, groups, "
                         "dilation", [
                             (2, 3, 4, 5, 2, (3, 3), (1, 1), (0, 0), (0, 0), 1, (1, 1)),
                             (1, 4, 3, 3, 3, (3, 3), (2, 2), (1, 1), (1, 1), 1, (1, 1)),
                             (2, 4, 3, 4, 1, (2, 3), (2, 3), (1, 0), (1, 2), 2, (1, 1)),
                             (1, 2, 4, 3, 2, (3, 2), (1, 2), (1, 1), (0, 1), 1, (2, 1)),
                             # output_padding >= stride (allowed: < dilation)
                             (2, 2, 4, 3, 3, (3, 2), (1, 2), (1, 0), (1, 1), 1, (2, 1)),
                             (2, 3, 5, 4, 1, (3, 3), (3, 2), (2, 1), (2, 0), 3, (1, 1)),
                             (0, 2, 3, 3, 2, (1, 1), (1, 1), (0, 0), (0, 0), 1, (1, 1)),
                         ])
def test_conv_transpose2d_against_loops(rng, dtype, N, Cin, H, W, Cout_g, k, stride, padding,
                                        output_padding, groups, dilation):
    x = _random(rng, (N, Cin, H, W), dtype)
    w = _random(rng, (Cin, Cout_g) + k, dtype)
    b = _random(rng, (Cout_g * groups,), dtype)
    conf = (stride, padding, output_padding, groups, dilation)
    y = conv.conv_transpose2d_forward(x, w, b, *conf)
    gy = _random(rng, y.shape, dtype)
    want = conv_transpose2d_loops(x.astype(float), w.astype(float), b.astype(float),
                                  gy.astype(float), *conf)
    got = (y,) + conv.conv_transpose2d_backward(x, w, gy, *conf)
    for name, g, r in zip(("y", "gx", "gw", "gb"), got, want):
        _check(g, r, dtype, name)


def test_chunks_of_images_and_a_partial_last_chunk(rng, monkeypatch):
    """Force 2 images per column chunk on a batch of 5, so the last chunk holds one image."""
    case = CASES[0]
    x = _random(rng, (5, 3, 7, 9), np.float64)
    w = _random(rng, (4, 3, 3, 3), np.float64)
    b = _random(rng, (4,), np.float64)
    gy = _random(rng, (5, 4, 7, 9), np.float64)
    per_image = 3 * 9 * 7 * 11 * 8                       # C*kh*kw rows of Ho*Wc float64 values
    monkeypatch.setattr(conv, "COL_CHUNK_BYTES", 2 * per_image)
    want = conv2d_loops(x, w, b, gy, *_pairs(case))
    got = (conv.conv2d_forward(x, w, b, *_pairs(case)),) + conv.conv2d_backward(
        x, w, gy, *_pairs(case))
    for g, r in zip(got, want):
        _check(g, r, np.float64)


def test_non_contiguous_inputs_and_needs(rng):
    case = CASES[2]
    x = _random(rng, (3, 2, 7, 9), np.float64).transpose(0, 1, 3, 2)    # (3, 2, 9, 7) view
    w = _random(rng, (3, 2, 2, 3), np.float64)
    b = np.zeros(3)
    y = conv.conv2d_forward(x, w, None, *_pairs(case))
    gy = _random(rng, y.shape, np.float64)[..., ::-1]                    # negative strides
    want = conv2d_loops(x, w, b, gy, *_pairs(case))
    _check(y, want[0], np.float64)
    gx, gw, gb = conv.conv2d_backward(x, w, gy, *_pairs(case), needs=(False, True, False))
    assert gx is None and gb is None
    _check(gw, want[2], np.float64)


@pytest.mark.parametrize("stride, padding", [((1, 1), (1, 1)), ((1, 1), (0, 0)), ((2, 1), (0, 1))])
@pytest.mark.parametrize("where", ["x", "w"])
def test_nan_propagates_exactly_where_the_definition_says(rng, stride, padding, where):
    """NaN at border and inner pixels (or weights): the same outputs are NaN as in the loops, the
    rest equal. The wide layout's garbage columns read wrapped-around pixels: they must not leak."""
    x = _random(rng, (2, 2, 6, 7), np.float64)
    w = _random(rng, (3, 2, 3, 3), np.float64)
    if where == "x":
        x[1, 0, 2, 0] = x[0, 1, 3, 6] = x[0, 0, 4, 3] = np.nan
    else:
        w[1, 0, 2, 2] = np.nan
    b = _random(rng, (3,), np.float64)
    conf = (stride, padding, (1, 1), 1)
    y = conv.conv2d_forward(x, w, b, *conf)
    gy = _random(rng, y.shape, np.float64)
    want = conv2d_loops(x, w, b, gy, *conf)
    for g, r in zip((y,) + conv.conv2d_backward(x, w, gy, *conf), want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
        np.testing.assert_allclose(g[~np.isnan(r)], r[~np.isnan(r)], rtol=1e-10, atol=1e-10)
    assert np.isnan(want[0]).any() and not np.isnan(want[0]).all()


def test_float16_computes_in_float32_and_returns_float16(rng):
    x = _random(rng, (2, 3, 6, 5), np.float16)
    w = _random(rng, (4, 3, 3, 3), np.float16)
    y = conv.conv2d_forward(x, w, None, (1, 1), (1, 1), (1, 1), 1)
    gy = _random(rng, y.shape, np.float16)
    want = conv2d_loops(x.astype(float), w.astype(float), np.zeros(4), gy.astype(float),
                        (1, 1), (1, 1), (1, 1), 1)
    got = (y,) + conv.conv2d_backward(x, w, gy, (1, 1), (1, 1), (1, 1), 1)
    for g, r in zip(got, want):
        assert g.dtype == np.float16
        np.testing.assert_allclose(g.astype(float), r, rtol=1e-2, atol=3e-2 * np.abs(r).max())


def test_output_size_formulas():
    assert conv.conv2d_output_size(32, 3, 1, 1, 1) == 32
    assert conv.conv2d_output_size(224, 7, 2, 3, 1) == 112
    assert conv.conv2d_output_size(7, 3, 2, 0, 3) == 1
    assert conv.conv_transpose2d_output_size(16, 4, 2, 1, 0, 1) == 32
    assert conv.conv_transpose2d_output_size(3, 3, 2, 1, 1, 1) == 6
