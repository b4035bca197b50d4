"""The fused Winograd F(2x2, 3x3) kernel on cuda (kernels/conv_winograd_fused_cuda.py): where it
runs (anywhere), and on a GPU its results against PyTorch in float64 (forward and the three
gradients in strict fp32 whatever the matmul flag, partial tiles and blocks, NaN confinement, a
CUDA graph capture). tests/sim/test_conv_winograd_fused_sim.py runs the kernels on tiny shapes
without a GPU."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend
from gpudl.kernels import conv, conv_winograd_fused_cuda as fused

ON_GPU = backend._cupy is not None and backend.DEFAULT_DEVICE == "cuda"
needs_gpu = pytest.mark.skipif(not ON_GPU, reason="needs a GPU (CuPy) as the default device")


def _geometry(x_shape, w_shape, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1):
    return conv.ConvGeometry(x_shape, w_shape, stride, padding, dilation, groups)


@pytest.mark.parametrize("x_shape, w_shape, kwargs, dtype, tf32, runs", [
    ((64, 64, 56, 56), (64, 64, 3, 3), {}, "float32", False, True),
    ((128, 128, 28, 28), (128, 128, 3, 3), {}, "float32", False, True),
    ((64, 32, 32, 32), (48, 32, 3, 3), {"padding": (2, 2)}, "float32", False, True),
    ((64, 32, 32, 32), (48, 32, 3, 3), {"padding": (0, 0)}, "float32", False, True),
    ((16, 64, 32, 32), (64, 64, 3, 3), {}, "float64", False, False),     # conv_cuda's fp64
    ((64, 64, 56, 56), (64, 64, 3, 3), {}, "float32", True, False),       # TF32 kernels
    ((64, 64, 56, 56), (64, 64, 3, 3), {}, "float16", False, False),
    ((64, 64, 56, 56), (64, 64, 3, 3), {"stride": (2, 2)}, "float32", False, False),
    ((64, 64, 56, 56), (64, 64, 3, 3), {"dilation": (2, 2)}, "float32", False, False),
    ((64, 64, 56, 56), (64, 32, 3, 3), {"groups": 2}, "float32", False, False),
    ((64, 64, 56, 56), (64, 64, 5, 5), {}, "float32", False, False),
    ((64, 16, 56, 56), (64, 16, 3, 3), {}, "float32", False, False),      # too few channels
    ((64, 64, 56, 56), (16, 64, 3, 3), {}, "float32", False, False),
    ((1, 32, 16, 16), (32, 32, 3, 3), {}, "float32", False, False),       # too little work
    ((8192, 64, 64, 64), (64, 64, 3, 3), {}, "float32", False, False),    # past the int32 guard
])
def test_where_it_runs(x_shape, w_shape, kwargs, dtype, tf32, runs):
    assert fused.applies(_geometry(x_shape, w_shape, **kwargs), np.dtype(dtype), tf32) == runs


def test_off_switch_and_cropped_transposed_outputs(monkeypatch):
    geo = _geometry((64, 64, 56, 56), (64, 64, 3, 3))
    assert fused.applies(geo, np.dtype("float32"))
    cropped = conv.ConvGeometry((64, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1,
                                out_size=(55, 56))          # conv_transpose2d output_padding
    assert not fused.applies(cropped, np.dtype("float32"))
    monkeypatch.setattr(fused, "ENABLED", False)
    assert not fused.applies(geo, np.dtype("float32"))


# --------------------------------------------------------------------------- on a GPU
@pytest.fixture
def strict(monkeypatch):
    """Strict fp32 convolutions; the matmul flag set to TF32 to show it does not leak in."""
    monkeypatch.setattr(gd.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(gd.backends.cuda.matmul, "allow_tf32", True)
    monkeypatch.setattr(fused, "MIN_WORK", 0)


def _torch_reference(x, w, b, gy, padding):
    torch = pytest.importorskip("torch")
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=padding)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    return [t.detach().numpy() for t in (ty, tx.grad, tw.grad, tb.grad)]


def _run(x, w, b, gy, padding):
    tx, tw, tb = (gd.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = gd.conv2d(tx, tw, tb, padding=padding)
    ty.backward(gd.tensor(gy))
    return [t.detach().numpy() for t in (ty, tx.grad, tw.grad, tb.grad)]


@needs_gpu
@pytest.mark.parametrize("N, C, H, W, K, padding", [
    (16, 64, 32, 32, 64, 1),
    (8, 33, 17, 15, 40, 1),        # odd sizes: partial tiles, steps and channel blocks
    (8, 32, 16, 19, 32, 0),
    (8, 32, 15, 16, 48, 2),
    (3, 35, 7, 9, 70, 3),          # grad_input padded by -1 (cropped)
])
def test_matches_torch_float64(rng, strict, conv_paths_ran, N, C, H, W, K, padding):
    """Strict fp32: within 2e-5 of the largest value (TF32 would be ~1e-3 off)."""
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    Ho, Wo = H + 2 * padding - 2, W + 2 * padding - 2
    gy = rng.standard_normal((N, K, Ho, Wo)).astype(np.float32)
    got = _run(x, w, b, gy, padding)
    assert conv_paths_ran == ["fused.forward", "fused.grad_input", "fused.grad_weight"]
    for g, r in zip(got, _torch_reference(x, w, b, gy, padding)):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, r, rtol=0, atol=2e-5 * np.abs(r).max())


@needs_gpu
def test_nan_stays_in_its_tiles(rng, strict):
    x = rng.standard_normal((2, 32, 10, 10)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    x[1, 3, 5, 6] = np.nan
    y = gd.conv2d(gd.tensor(x), gd.tensor(w), padding=1).numpy()
    oh, ow = np.indices((10, 10))
    touched = ((2 * (oh // 2) <= 6) & (6 <= 2 * (oh // 2) + 3)      # padded pixel (6, 7)
               & (2 * (ow // 2) <= 7) & (7 <= 2 * (ow // 2) + 3))
    assert not np.isnan(y[0]).any() and not np.isnan(y[1][:, ~touched]).any()
    assert np.isnan(y[1][:, touched]).any()


@needs_gpu
def test_a_cuda_graph_captures_forward_and_backward(rng, strict):
    x = gd.tensor(rng.standard_normal((4, 32, 8, 8)).astype(np.float32), requires_grad=True)
    w = gd.tensor(rng.standard_normal((32, 32, 3, 3)).astype(np.float32), requires_grad=True)

    def step():
        x.grad = w.grad = None
        y = gd.conv2d(x, w, padding=1)
        (y * y).sum().backward()
        return y
    side = gd.cuda.Stream()
    side.wait_stream(gd.cuda.current_stream())
    with gd.cuda.stream(side):
        step()                                  # warm-up: kernel builds
    gd.cuda.current_stream().wait_stream(side)
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        static_y = step()
        static_gx, static_gw = x.grad, w.grad
    new_x = rng.standard_normal((4, 32, 8, 8)).astype(np.float32)
    with gd.no_grad():
        x.copy_(gd.tensor(new_x))
    g.replay()
    y, gx, gw = (t.detach().numpy() for t in (static_y, static_gx, static_gw))
    want_y, want_gx, want_gw, _ = _torch_reference(new_x, w.detach().numpy(), np.zeros(32),
                                                   2 * y.astype(np.float64), 1)
    for got, want in ((y, want_y), (gx, want_gx), (gw, want_gw)):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
