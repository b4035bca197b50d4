"""Winograd F(2x2, 3x3) on cuda (kernels/conv_winograd_cuda.py): where it runs (anywhere), and on
a GPU its results against PyTorch in float64 (forward, the three gradients, strict fp32 whatever
the matmul flag, a CUDA graph capture, NaN confinement). The simulator tests
(tests/sim/test_conv_winograd_sim.py) run the kernels on tiny shapes without a GPU."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend
from gpudl.kernels import conv, conv_winograd_cuda as wg

ON_GPU = backend._cupy is not None and backend.DEFAULT_DEVICE == "cuda"
needs_gpu = pytest.mark.skipif(not ON_GPU, reason="needs a GPU (CuPy) as the default device")


def _geometry(x_shape, w_shape, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1):
    return conv.ConvGeometry(x_shape, w_shape, stride, padding, dilation, groups)


@pytest.mark.parametrize("x_shape, w_shape, kwargs, dtype, tf32, runs", [
    ((64, 64, 56, 56), (64, 64, 3, 3), {}, "float32", False, True),
    ((128, 128, 28, 28), (128, 128, 3, 3), {}, "float32", False, True),
    ((16, 64, 32, 32), (64, 64, 3, 3), {"padding": (2, 2)}, "float64", False, True),
    ((64, 64, 56, 56), (64, 64, 3, 3), {}, "float32", True, False),       # TF32 kernels
    ((64, 64, 56, 56), (64, 64, 3, 3), {}, "float16", False, False),
    ((64, 64, 56, 56), (64, 64, 3, 3), {"stride": (2, 2)}, "float32", False, False),
    ((64, 64, 56, 56), (64, 64, 3, 3), {"dilation": (2, 2)}, "float32", False, False),
    ((64, 64, 56, 56), (64, 32, 3, 3), {"groups": 2}, "float32", False, False),
    ((64, 64, 56, 56), (64, 64, 5, 5), {}, "float32", False, False),
    ((64, 16, 56, 56), (64, 16, 3, 3), {}, "float32", False, False),      # too few channels
    ((1, 32, 28, 28), (32, 32, 3, 3), {}, "float32", False, False),       # too little work
    ((8192, 64, 64, 64), (64, 64, 3, 3), {}, "float32", False, False),    # past the int32 guard
])
def test_where_it_runs(x_shape, w_shape, kwargs, dtype, tf32, runs):
    assert wg.applies(_geometry(x_shape, w_shape, **kwargs), np.dtype(dtype), tf32) == runs


def test_a_transposed_conv_whose_output_is_cropped_does_not_run_here():
    """conv_transpose2d with output_padding keeps fewer outputs than the natural size."""
    geo = conv._transposed_geometry(np.empty((64, 64, 56, 56)), np.empty((64, 64, 3, 3)),
                                    (1, 1), (1, 1), (0, 0), 1, (1, 1))
    assert wg.applies(geo, np.dtype("float32"))
    cropped = conv.ConvGeometry((64, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1,
                                out_size=(55, 56))
    assert not wg.applies(cropped, np.dtype("float32"))


def test_chunks_keep_v_and_m_within_the_bound(monkeypatch):
    geo = _geometry((64, 64, 56, 56), (64, 64, 3, 3))
    plan = wg._Plan(geo, 4)
    assert plan.tiles == 28 * 28
    assert plan.nb * 16 * (64 + 64) * plan.tiles * 4 <= wg.CHUNK_BYTES
    assert sum(m for _, m in plan.chunks(64)) == 64
    monkeypatch.setattr(wg, "CHUNK_BYTES", 1)
    assert wg._Plan(geo, 4).chunks(3) == [(0, 1), (1, 1), (2, 1)]      # one image at least


# --------------------------------------------------------------------------- on a GPU
@pytest.fixture
def strict(monkeypatch):
    """Strict fp32 convolutions on the Winograd path (off by default); the matmul flag set to
    TF32 to show it does not leak in."""
    monkeypatch.setattr(wg, "ENABLED", True)
    monkeypatch.setattr(gd.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(gd.backends.cuda.matmul, "allow_tf32", True)


@pytest.fixture
def ran(conv_paths_ran):
    return conv_paths_ran


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
    (16, 64, 32, 32, 64, 1),       # the module's own floors: 2**26 multiply-adds
    (8, 33, 17, 15, 40, 1),        # odd sizes: partial tiles, several blocks
    (8, 32, 16, 19, 32, 0),
    (8, 32, 15, 16, 48, 2),
])
def test_matches_torch_float64(rng, monkeypatch, strict, ran, N, C, H, W, K, padding):
    """Strict fp32: within 2e-5 of the largest value (TF32 would be ~1e-3 off)."""
    monkeypatch.setattr(wg, "MIN_WORK", 0)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    Ho, Wo = H + 2 * padding - 2, W + 2 * padding - 2
    gy = rng.standard_normal((N, K, Ho, Wo)).astype(np.float32)
    got = _run(x, w, b, gy, padding)
    assert ran == ["winograd.forward", "winograd.grad_input", "winograd.grad_weight"]
    for g, r in zip(got, _torch_reference(x, w, b, gy, padding)):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, r, rtol=0, atol=2e-5 * np.abs(r).max())


@needs_gpu
def test_chunked_run_matches_one_chunk(rng, monkeypatch, strict):
    monkeypatch.setattr(wg, "MIN_WORK", 0)
    x = rng.standard_normal((5, 32, 12, 13)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    gy = rng.standard_normal((5, 32, 12, 13)).astype(np.float32)
    whole = _run(x, w, b, gy, 1)
    monkeypatch.setattr(wg, "CHUNK_BYTES", 2 * 16 * 64 * 6 * 7 * 4)       # 2 images a chunk
    for g, r in zip(_run(x, w, b, gy, 1), whole):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * np.abs(r).max())


@needs_gpu
def test_nan_stays_in_its_tiles(rng, monkeypatch, strict):
    monkeypatch.setattr(wg, "MIN_WORK", 0)
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
def test_a_cuda_graph_captures_forward_and_backward(rng, monkeypatch, strict):
    """The tile kernels and the cuBLAS products (gpudl's own handle in a capture) replay."""
    monkeypatch.setattr(wg, "MIN_WORK", 0)
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
        step()                                  # warm-up: kernel builds, the cached G (x) G
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
