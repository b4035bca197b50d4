"""The convolution kernels (kernels/conv_cuda.py) in Numba's CUDA simulator against the CPU twin:
conv2d and conv_transpose2d, forward and both gradients, on TINY shapes (every CUDA thread runs in
Python). The same entry points run both paths; the twin is selected by pretending every array
lives on the CPU."""

import numpy as np
import pytest

from gpudl import backend
from gpudl.kernels import conv, conv_cuda

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]

# (N, C, H, W, K, (kh, kw), stride, padding, dilation, groups)
CASES = [
    (2, 3, 5, 6, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),        # plain 3x3, odd sizes
    (1, 4, 7, 6, 6, (3, 2), (2, 1), (1, 0), (1, 2), 2),        # strided, dilated, grouped
    (2, 3, 4, 4, 3, (3, 3), (1, 1), (1, 1), (1, 1), 3),        # depthwise
    (1, 2, 5, 5, 3, (1, 1), (2, 2), (0, 0), (1, 1), 1),        # 1x1, stride 2
    (1, 1, 5, 14, 65, (1, 1), (1, 1), (0, 0), (1, 1), 1),      # > one tile of rows and pixels
]


def _cpu(monkeypatch, fn, *args):
    with monkeypatch.context() as m:
        m.setattr(backend, "kernel_device", lambda array: "cpu")
        return fn(*args)


def _arrays(rng, case, dtype=np.float32):
    N, C, H, W, K, (kh, kw), *_, groups = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b


def _close(got, want, tol=1e-4):
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES)
def test_conv2d_matches_twin(rng, monkeypatch, case):
    x, w, b = _arrays(rng, case)
    conf = case[6:]
    y = conv.conv2d_forward(x, w, b, *conf)
    _close(y, _cpu(monkeypatch, conv.conv2d_forward, x, w, b, *conf))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    needs = (True, True, case[4] < 8)     # the bias kernel is one block per channel: slow here
    got = conv.conv2d_backward(x, w, gy, *conf, needs=needs)
    want = _cpu(monkeypatch, conv.conv2d_backward, x, w, gy, *conf, needs)
    for g, r, need in zip(got, want, needs):
        assert (g is None) == (not need)
        if need:
            _close(g, r)


def test_weight_gradient_split_over_blocks(rng, monkeypatch):
    """Force several reduction splits (a real GPU splits above MIN_SPLIT pixels)."""
    case = CASES[0]
    x, w, _ = _arrays(rng, case)
    gy = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    want = _cpu(monkeypatch, conv.conv2d_backward, x, w, gy, *case[6:])[1]
    monkeypatch.setattr(conv_cuda, "MIN_SPLIT", 16)
    _close(conv.conv2d_backward(x, w, gy, *case[6:], needs=(False, True, False))[1], want)


@pytest.mark.parametrize("stride, padding, output_padding, groups, dilation", [
    ((2, 2), (1, 1), (1, 1), 1, (1, 1)),
    ((2, 1), (0, 1), (1, 0), 2, (1, 2)),
    ((1, 1), (1, 0), (1, 1), 1, (2, 2)),          # output_padding >= stride (< dilation)
])
def test_conv_transpose2d_matches_twin(rng, monkeypatch, stride, padding, output_padding, groups,
                                       dilation):
    x = rng.standard_normal((2, 4, 3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)      # (Cin, Cout/groups, kh, kw)
    b = rng.standard_normal(3 * groups).astype(np.float32)
    conf = (stride, padding, output_padding, groups, dilation)
    y = conv.conv_transpose2d_forward(x, w, b, *conf)
    _close(y, _cpu(monkeypatch, conv.conv_transpose2d_forward, x, w, b, *conf))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    got = conv.conv_transpose2d_backward(x, w, gy, *conf)
    want = _cpu(monkeypatch, conv.conv_transpose2d_backward, x, w, gy, *conf)
    for g, r in zip(got, want):
        _close(g, r)


def test_float16_inputs_accumulate_in_float32(rng, monkeypatch):
    case = CASES[0]
    x, w, b = _arrays(rng, case, np.float16)
    y = conv.conv2d_forward(x, w, b, *case[6:])
    assert y.dtype == np.float16
    want = _cpu(monkeypatch, conv.conv2d_forward, x.astype(np.float32), w.astype(np.float32),
                b.astype(np.float32), *case[6:])
    np.testing.assert_allclose(y.astype(np.float32), want, rtol=1e-2, atol=1e-2)


def test_nan_propagates(rng):
    case = CASES[0]
    x, w, b = _arrays(rng, case)
    x[0, 1, 2, 3] = np.nan
    y = conv.conv2d_forward(x, w, b, *case[6:])
    assert np.isnan(y[0, :, 1:4, 2:5]).all() and not np.isnan(y[1]).any()
