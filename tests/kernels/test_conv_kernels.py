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


# --------------------------------------------------------------------------- Winograd F(2x2, 3x3)
@pytest.fixture
def winograd_everywhere(monkeypatch):
    """Every 3x3 stride-1 conv takes the Winograd path (no size or channel minimum)."""
    from gpudl.kernels import conv_winograd
    monkeypatch.setattr(conv_winograd, "MIN_WORK", 0)
    monkeypatch.setattr(conv_winograd, "MIN_CHANNELS", 1)
    return conv_winograd


@pytest.fixture
def no_im2col(monkeypatch):
    """The im2col loops fail if reached, so a test knows which path it checked."""
    def refuse(*args):
        raise AssertionError("im2col path taken")
    monkeypatch.setattr(conv, "_im2col_cpu", refuse)
    monkeypatch.setattr(conv, "_col2im_cpu", refuse)


# (N, C, H, W, K, padding)
WINOGRAD_CASES = [
    (2, 3, 8, 8, 4, (1, 1)),        # even output
    (3, 5, 7, 9, 6, (1, 1)),        # odd output rows and columns
    (2, 4, 5, 6, 3, (0, 0)),        # no padding: 3x4 outputs
    (1, 2, 4, 5, 2, (2, 2)),        # padding past the kernel's reach
    (2, 3, 6, 5, 2, (0, 2)),        # different padding per axis
    (2, 2, 3, 3, 3, (0, 0)),        # one output pixel
    (1, 1, 1, 1, 1, (1, 1)),        # one input pixel
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N, C, H, W, K, padding", WINOGRAD_CASES)
def test_winograd_against_loops(rng, winograd_everywhere, no_im2col, dtype, N, C, H, W, K, padding):
    x, w, b = (_random(rng, s, dtype) for s in ((N, C, H, W), (K, C, 3, 3), (K,)))
    conf = ((1, 1), padding, (1, 1), 1)
    y = conv.conv2d_forward(x, w, b, *conf)
    gy = _random(rng, y.shape, dtype)
    want = conv2d_loops(x.astype(float), w.astype(float), b.astype(float), gy.astype(float), *conf)
    for got, ref, name in zip((y,) + conv.conv2d_backward(x, w, gy, *conf), want,
                              ("y", "gx", "gw", "gb")):
        _check(got, ref, dtype, name)


def test_winograd_chunks_partial_last_chunk_and_views(rng, winograd_everywhere, no_im2col,
                                                      monkeypatch):
    """Two images per chunk on a batch of 5, with a transposed x view and a broadcast gy (what
    ``y.sum().backward()`` hands in); twice, so the second call reuses the first's buffers."""
    per_image = 16 * (3 + 4) * 4 * 5 * 8                     # 16 (C + K) tiles (4 x (4 + 1)) f64
    monkeypatch.setattr(winograd_everywhere, "CHUNK_BYTES", 2 * per_image)
    for _ in range(2):
        x = _random(rng, (5, 3, 9, 7), np.float64).transpose(0, 1, 3, 2)       # (5, 3, 7, 9)
        w = _random(rng, (4, 3, 3, 3), np.float64)
        b = _random(rng, (4,), np.float64)
        conf = ((1, 1), (1, 1), (1, 1), 1)
        gy = np.broadcast_to(_random(rng, (1, 4, 1, 9), np.float64), (5, 4, 7, 9))
        want = conv2d_loops(x, w, b, gy, *conf)
        got = (conv.conv2d_forward(x, w, b, *conf),) + conv.conv2d_backward(x, w, gy, *conf)
        for g, r in zip(got, want):
            _check(g, r, np.float64)


def test_winograd_conv_transpose2d(rng, winograd_everywhere, no_im2col):
    """A stride-1 3x3 transposed conv is a Winograd grad_input forward, its backward a Winograd
    forward and weight gradient."""
    x, w, b = (_random(rng, s, np.float64) for s in ((2, 4, 5, 6), (4, 3, 3, 3), (3,)))
    conf = ((1, 1), (1, 1), (0, 0), 1, (1, 1))
    y = conv.conv_transpose2d_forward(x, w, b, *conf)
    gy = _random(rng, y.shape, np.float64)
    want = conv_transpose2d_loops(x, w, b, gy, *conf)
    for g, r in zip((y,) + conv.conv_transpose2d_backward(x, w, gy, *conf), want):
        _check(g, r, np.float64)


@pytest.mark.parametrize("where", ["x", "w", "gy"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_winograd_non_finite_values_fall_back_to_the_direct_sum(rng, winograd_everywhere, where,
                                                                bad):
    """The transforms would spread a NaN or inf over its whole tile (inf - inf): such calls are
    recomputed by im2col, so the same outputs are NaN/inf as in the loops and the rest equal."""
    x = _random(rng, (2, 2, 6, 7), np.float64)
    w = _random(rng, (3, 2, 3, 3), np.float64)
    gy = _random(rng, (2, 3, 6, 7), np.float64)
    target = {"x": x, "w": w, "gy": gy}[where]
    target.flat[rng.integers(target.size, size=2)] = bad
    b = _random(rng, (3,), np.float64)
    conf = ((1, 1), (1, 1), (1, 1), 1)
    want = conv2d_loops(x, w, b, gy, *conf)
    got = (conv.conv2d_forward(x, w, b, *conf),) + conv.conv2d_backward(x, w, gy, *conf)
    for g, r in zip(got, want):
        finite = np.isfinite(r)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
        np.testing.assert_array_equal(np.isinf(g), np.isinf(r))
        np.testing.assert_allclose(g[finite], r[finite], rtol=1e-10, atol=1e-10)


def test_winograd_runs_only_where_it_applies():
    from gpudl.kernels import conv_winograd

    def applies(x_shape, w_shape, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1,
                out_size=None):
        return conv_winograd.applies(conv.ConvGeometry(x_shape, w_shape, stride, padding,
                                                       dilation, groups, out_size))
    big, w3 = (32, 32, 32, 32), (64, 32, 3, 3)
    assert applies(big, w3) and applies((32, 16, 32, 32), (32, 16, 3, 3))
    assert not applies(big, w3, stride=(2, 2))
    assert not applies(big, w3, dilation=(1, 2))
    assert not applies(big, (64, 16, 3, 3), groups=2)
    assert not applies(big, (64, 32, 5, 5), padding=(2, 2))
    assert not applies(big, w3, out_size=(31, 32))          # a cropped (transposed-conv) output
    assert not applies((2, 4, 16, 16), (8, 4, 3, 3))        # tiny: im2col is cheaper
    assert not applies((32, 3, 224, 224), (64, 3, 3, 3))    # 3 input channels: transforms dominate


@pytest.mark.parametrize("bad", [None, "x", "gy"])
def test_winograd_on_two_threads(rng, winograd_everywhere, monkeypatch, bad):
    """Chunks shared by two threads (each with its own work arrays, BLAS on one thread): the
    same values as the loops, and a non-finite value seen by either thread still falls back."""
    from gpudl import cpu_threads
    monkeypatch.setattr(cpu_threads, "count", lambda: 2)
    per_image = 16 * (3 + 4) * 4 * 5 * 8
    monkeypatch.setattr(winograd_everywhere, "CHUNK_BYTES", per_image)
    x = _random(rng, (7, 3, 7, 9), np.float64)
    w = _random(rng, (4, 3, 3, 3), np.float64)
    b = _random(rng, (4,), np.float64)
    gy = _random(rng, (7, 4, 7, 9), np.float64)
    conf = ((1, 1), (1, 1), (1, 1), 1)
    if bad:                                     # in the last chunk: the second thread's
        {"x": x, "gy": gy}[bad][6, 1, 3, 4] = np.inf
    want = conv2d_loops(x, w, b, gy, *conf)
    got = (conv.conv2d_forward(x, w, b, *conf),) + conv.conv2d_backward(x, w, gy, *conf)
    for g, r in zip(got, want):
        np.testing.assert_array_equal(np.isfinite(g), np.isfinite(r))
        finite = np.isfinite(r)
        np.testing.assert_allclose(g[finite], r[finite], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] > 0])
def test_im2col_chunks_on_two_threads(rng, monkeypatch, case):
    """The im2col path with its chunks (one image each) shared by two threads, BLAS on one
    thread meanwhile: the same values as the loops, a NaN where they have one."""
    from gpudl import cpu_threads
    monkeypatch.setattr(cpu_threads, "count", lambda: 2)
    monkeypatch.setattr(conv, "COL_CHUNK_BYTES", 1)
    monkeypatch.setattr(conv, "THREADED_MACS", 0)              # threaded however small
    N, C, H, W, K, (kh, kw) = case[:6]
    groups = case[9]
    x = _random(rng, (N + 2, C, H, W), np.float64)           # 3 to 5 chunks
    x[-1, 0, H // 2, W // 2] = np.nan                          # the last chunk's thread
    w = _random(rng, (K, C // groups, kh, kw), np.float64)
    b = _random(rng, (K,), np.float64)
    y = conv.conv2d_forward(x, w, b, *_pairs(case))
    gy = _random(rng, y.shape, np.float64)
    want = conv2d_loops(x, w, b, gy, *_pairs(case))
    for g, r in zip((y,) + conv.conv2d_backward(x, w, gy, *_pairs(case)), want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
        np.testing.assert_allclose(g[~np.isnan(r)], r[~np.isnan(r)], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True), (True, True, False)])
def test_winograd_each_gradient_alone(rng, winograd_everywhere, no_im2col, needs):
    """One pass over gy's tiles gives both gradients; asked for one, it computes only that."""
    x, w, b = (_random(rng, s, np.float64) for s in ((3, 4, 7, 6), (5, 4, 3, 3), (5,)))
    conf = ((1, 1), (1, 1), (1, 1), 1)
    gy = _random(rng, (3, 5, 7, 6), np.float64)
    want = conv2d_loops(x, w, b, gy, *conf)[1:]
    got = conv.conv2d_backward(x, w, gy, *conf, needs=needs)
    for g, r, need in zip(got, want, needs):
        if need:
            _check(g, r, np.float64)
        else:
            assert g is None


# (N, C, H, W, K, (kh, kw), padding): few-tap geometries (stride 1), LeNet's among them
FEW_TAP_CASES = [
    (3, 1, 9, 10, 6, (5, 5), (2, 2)),       # LeNet's first layer, smaller: 4 + 2 channels
    (2, 2, 7, 8, 5, (3, 3), (1, 0)),        # padding on one axis, 4 + 1 channels
    (1, 3, 6, 9, 1, (2, 3), (0, 1)),        # one output channel, non-square kernel
    (2, 2, 8, 8, 9, (3, 1), (1, 0)),        # 2 x 4 + 1 channels
    (4, 1, 3, 12, 4, (3, 3), (0, 0)),       # one output row
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N, C, H, W, K, ks, padding", FEW_TAP_CASES)
def test_few_tap_convolutions_against_loops(rng, dtype, N, C, H, W, K, ks, padding):
    x, w = _random(rng, (N, C, H, W), dtype), _random(rng, (K, C) + ks, dtype)
    b = _random(rng, (K,), dtype)
    conf = ((1, 1), padding, (1, 1), 1)
    y = conv.conv2d_forward(x, w, b, *conf)
    gy = _random(rng, y.shape, dtype)
    gx, gw, gb = conv.conv2d_backward(x, w, gy, *conf)
    want = conv2d_loops(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                        gy.astype(np.float64), *conf)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    for got, ref in zip((y, gx, gw, gb), want):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * 10)


def test_pointwise_weight_gradient_on_two_threads(rng, monkeypatch):
    """A 1x1 conv's weight gradient, its images shared by two threads (5 images: 3 and 2), each
    thread's partial sum added: the loops' values, a NaN where they have one."""
    from gpudl import cpu_threads
    monkeypatch.setattr(cpu_threads, "count", lambda: 2)
    monkeypatch.setattr(conv, "POINTWISE_GW_SPLIT", 0)
    x = _random(rng, (5, 6, 4, 5), np.float64)
    w = _random(rng, (7, 6, 1, 1), np.float64)
    b = _random(rng, (7,), np.float64)
    gy = _random(rng, (5, 7, 4, 5), np.float64)
    conf = ((1, 1), (0, 0), (1, 1), 1)
    _check(conv.conv2d_backward(x, w, gy, *conf)[1], conv2d_loops(x, w, b, gy, *conf)[2],
           np.float64)
    x[4, 2, 1, 1] = np.nan                                      # the second thread's images
    got, want = conv.conv2d_backward(x, w, gy, *conf)[1], conv2d_loops(x, w, b, gy, *conf)[2]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


@pytest.fixture(params=["taps in place", "im2col"])
def forward_path(request, monkeypatch):
    """The forward's two non-Winograd paths, each forced for any size (the other refused)."""
    taps = request.param == "taps in place"
    monkeypatch.setattr(conv.small_gemm, "outruns_blas", lambda: taps)
    monkeypatch.setattr(conv, "TAPS_MIN_COLUMNS", 0 if taps else 1 << 60)
    monkeypatch.setattr(conv, "TAPS_MIN_CHANNELS", 1)
    if taps:
        def refuse(*args):
            raise AssertionError("the forward built a column buffer")
        monkeypatch.setattr(conv, "_im2col_cpu", refuse)
    return request.param


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES)
def test_forward_paths_against_loops(rng, case, dtype, forward_path, monkeypatch):
    """Every geometry of CASES (groups, strides, dilations, paddings, output rows of one value)
    through each forward path, on one thread and with single-image chunks on two."""
    from gpudl import cpu_threads
    N, C, H, W, K, (kh, kw), *_, groups = case
    x = _random(rng, (N, C, H, W), dtype)
    w = _random(rng, (K, C // groups, kh, kw), dtype)
    b = _random(rng, (K,), dtype)
    want = None
    for threads in (1, 2):
        if threads == 2:
            monkeypatch.setattr(cpu_threads, "count", lambda: 2)
            monkeypatch.setattr(conv, "COL_CHUNK_BYTES", 1)
            monkeypatch.setattr(conv, "THREADED_MACS", 0)
        y = conv.conv2d_forward(x, w, b, *_pairs(case))
        if want is None:
            want = conv2d_loops(x.astype(float), w.astype(float), b.astype(float),
                                np.zeros(y.shape), *_pairs(case))[0]
        _check(y, want.astype(dtype), dtype, f"y on {threads} threads")


@pytest.mark.parametrize("stride, padding", [((1, 1), (1, 1)), ((1, 1), (0, 0)), ((2, 1), (0, 1))])
def test_forward_paths_keep_nan_where_the_definition_says(rng, stride, padding, forward_path):
    """A NaN of x reaches exactly the outputs whose windows hold it on either path: the wide
    rows' garbage columns read wrapped-around pixels and must not leak into real ones."""
    x = _random(rng, (2, 3, 9, 10), np.float64)
    x[1, 0, 2, 0] = x[0, 1, 3, 9] = x[0, 2, 8, 4] = np.nan
    w = _random(rng, (7, 3, 3, 3), np.float64)
    b = _random(rng, (7,), np.float64)
    conf = (stride, padding, (1, 1), 1)
    y = conv.conv2d_forward(x, w, b, *conf)
    want = conv2d_loops(x, w, b, np.zeros(y.shape), *conf)[0]
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_allclose(y[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-10, atol=1e-10)
    assert np.isnan(want).any() and not np.isnan(want).all()


def test_taps_in_place_where_it_applies(monkeypatch):
    from gpudl.kernels.conv import ConvGeometry, _reads_taps_in_place
    lenet_conv2 = ConvGeometry((64, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0), (1, 1), 1)
    stem = ConvGeometry((8, 3, 112, 112), (32, 3, 7, 7), (2, 2), (3, 3), (1, 1), 1)
    few_outputs = ConvGeometry((64, 6, 14, 14), (4, 6, 5, 5), (1, 1), (0, 0), (1, 1), 1)
    small_image = ConvGeometry((64, 16, 4, 4), (32, 16, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert _reads_taps_in_place(lenet_conv2) and _reads_taps_in_place(stem)
    assert not _reads_taps_in_place(few_outputs) and not _reads_taps_in_place(small_image)
    monkeypatch.setattr(conv.small_gemm, "outruns_blas", lambda: False)     # BLAS as wide
    assert _reads_taps_in_place(lenet_conv2)                # no column buffer still pays


def test_the_gemm_takes_the_few_rows_tile_up_to_16_rows():
    """3 to 16 rows (a 3-channel image's grad_input, LeNet's 6 and 16 channels) in a 16-row
    tile, not a 64-row one of mostly zero padding; grad_weight's rows are out channels against
    taps and keep ``_row_tile``; the 64-bit build keeps its 128 rows."""
    from numba import int32, int64

    from gpudl.kernels import conv_cuda
    tiles = [conv_cuda._gemm_row_tile(rows, int32) for rows in (1, 3, 16, 17, 64, 65)]
    assert tiles == [16, 16, 16, 64, 64, 128]
    assert conv_cuda._gemm_row_tile(3, int64) == 128
    assert [conv_cuda.threads_for(bm) for bm in (16, 64, 128)] == [128, 128, 256]
    # the narrow tile: 16 x 32, each of its 4 warps multiplies 8 of a shared tile's 32 steps
    assert (conv_cuda.k_split(32), conv_cuda.tile_depth(32), conv_cuda.tile_depth(128)) == \
        (4, 32, 8)


def test_the_few_rows_gemm_is_narrow_while_its_wide_grid_is_small():
    """LeNet's few-rows gemms with long reductions (conv2's forward and grad_input: 50 and 98
    blocks of 128 pixels, 150 and 400 steps) take the 16 x 32 tile; a reduction of one narrow
    tile (conv1's forward: 25 steps), a grid of TARGET_BLOCKS or more 128-pixel blocks (a
    3-channel stem's grad_input, LeNet's conv2 grad_input at batch 512) and every 64- or
    128-row gemm keep BN = 128."""
    from gpudl.kernels import conv_cuda as cc

    assert [cc._gemm_col_tile(16, n, 1, r) for n, r in ((64 * 10 * 10, 150), (64 * 14 * 14, 400),
                                                         (64 * 28 * 28, 25))] == [32, 32, 128]
    assert cc._gemm_col_tile(16, 512 * 14 * 14, 1, 400) == 128
    assert cc._gemm_col_tile(16, 32 * 112 * 112, 4, 64 * 16) == 128   # (32, 3, 224, 224) 7x7 s2
    assert cc._gemm_col_tile(64, 64, 1, 400) == cc._gemm_col_tile(128, 64, 1, 400) == 128
    assert cc._wgrad_cols(16) == 32 and cc._wgrad_cols(64) == cc._wgrad_cols(128) == 128


def _old_weight_splits(Q, R, Kg, G, bm):
    """The weight gradient's split before the few-rows build had its own (session 17)."""
    tiles = -(-R // 128) * -(-Kg // bm) * G
    splits = max(1, min(-(-Q // 1024), -(-512 // tiles), 65535 // G))
    split_len = -(-(-(-Q // splits)) // 8) * 8
    return -(-Q // split_len), split_len


def test_weight_gradient_splits_lenet_short_and_large_convs_as_before():
    """LeNet's two weight gradients (6 x 25 and 16 x 150 over 50,176 and 6,400 pixels) spread
    over 196 and 5 x 25 blocks of 8 tiles (they ran 128- and 115-tile loops in 49 and 2 x 7
    blocks); the 64- and 128-row builds (the benchmark's 3x3 and 7x7 stem) split as before."""
    from gpudl.kernels import conv_cuda as cc

    assert cc._weight_splits(64 * 28 * 28, 25, 6, 1, 16) == (196, 256)
    assert cc._weight_splits(64 * 10 * 10, 150, 16, 1, 16) == (25, 256)
    assert _old_weight_splits(64 * 28 * 28, 25, 6, 1, 16) == (49, 1024)
    for Q, R, Kg, G in [(64 * 56 * 56, 576, 64, 1), (32 * 112 * 112, 147, 64, 1),
                        (8 * 14 * 14, 2304, 256, 1), (64 * 16 * 16, 9, 32, 32)]:
        bm = cc._gemm_row_tile(Kg, __import__("numba").int32)
        assert cc._weight_splits(Q, R, Kg, G, bm) == _old_weight_splits(Q, R, Kg, G, bm)


def test_the_stem_grad_input_takes_the_few_channel_kernel():
    """The ResNet stem's grad_input ((32, 3, 224, 224) x 64 7x7, stride 2, padding 3: Cg = 3)
    runs conv_dgrad_few_kernel: four phases of 112 x 112 pixels with 3 x 3, 3 x 4, 4 x 3 and
    4 x 4 taps (rows x columns), 7 x 2 tiles of 16 x 64 a phase (87.5% real pixels);
    more than 4 channels a group, the 64-bit build, taps spanning 9 columns, row taps with
    holes in their span or a tile filled below Cg * DIRECT_MIN_FILL keep the gemm."""
    from numba import int32, int64

    from gpudl.kernels import conv_cuda as cc

    stem = conv.ConvGeometry((32, 3, 224, 224), (64, 3, 7, 7), (2, 2), (3, 3), (1, 1), 1)
    assert cc._takes_direct(stem, int32) and not cc._takes_direct(stem, int64)
    table, Hg, Wg = cc._direct_table(7, 7, 2, 2, 3, 3, 1, 1, 224, 224)
    assert (Hg, Wg) == (112, 112) and cc._direct_fill(Hg, Wg) == 0.875
    assert table[:, 0].tolist() == [3, 4, 3, 4]                          # column taps
    assert table[:, 9].tolist() == [3, 3, 4, 4]                          # row taps (span)
    assert table[:, 7].tolist() == [18, 18, 19, 19]                      # patch rows
    assert table[:, 8].tolist() == [66, 67, 66, 67]                      # patch columns
    # phase (0, 0) reads gy at (u + e_i, t + e_j), e = 1, 0, -1 for taps 1, 3, 5: patch row
    # and column offsets 2, 1, 0; its first column tap (j = 1) meets w[., ., 5, 1], w[., ., 3,
    # 1], w[., ., 1, 1] at row offsets 0, 1, 2, and nothing past its span
    head, span = cc.DIRECT_HEAD, cc.DIRECT_SPAN
    assert table[0, 5:7].tolist() == [-1, -1]
    assert table[0, head:head + 3].tolist() == [2, 1, 0]
    assert table[0, head + span:head + 2 * span].tolist() == [36, 22, 8] + [-1] * 5
    five = conv.ConvGeometry((32, 10, 224, 224), (64, 5, 7, 7), (2, 2), (3, 3), (1, 1), 2)
    assert not cc._takes_direct(five, int32)
    wide = conv.ConvGeometry((1, 3, 64, 64), (8, 3, 9, 9), (1, 1), (4, 4), (1, 1), 1)
    assert cc._direct_table(9, 9, 1, 1, 4, 4, 1, 1, 64, 64) is None
    assert not cc._takes_direct(wide, int32)
    holes = conv.ConvGeometry((1, 3, 64, 64), (8, 3, 3, 3), (1, 1), (2, 2), (2, 1), 1)
    assert cc._direct_table(3, 3, 1, 1, 2, 2, 2, 1, 64, 64) is None     # rows 0, 2, 4 of 5
    assert not cc._takes_direct(holes, int32)
    small = conv.ConvGeometry((8, 4, 8, 8), (16, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert cc._direct_fill(8, 8) == 1 / 16 and not cc._takes_direct(small, int32)
    depthwise = conv.ConvGeometry((8, 32, 112, 112), (32, 1, 3, 3), (1, 1), (1, 1), (1, 1), 32)
    assert cc._takes_direct(depthwise, int32)
