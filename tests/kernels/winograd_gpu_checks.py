"""What the GPU tests of the two Winograd paths (unfused, kernels/conv_winograd_cuda.py; fused,
kernels/conv_winograd_fused_cuda.py) share: conv2d forward and backward through gpudl and
through torch in float64, and three checks run on whichever path the caller's fixtures
select (results, NaN confinement, a CUDA graph capture)."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend
from gpudl.kernels import conv

ON_GPU = backend._cupy is not None and backend.DEFAULT_DEVICE == "cuda"
needs_gpu = pytest.mark.skipif(not ON_GPU, reason="needs a GPU (CuPy) as the default device")
PATH_NAMES = ("forward", "grad_input", "grad_weight")


def geometry(x_shape, w_shape, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1):
    return conv.ConvGeometry(x_shape, w_shape, stride, padding, dilation, groups)


def torch_reference(x, w, b, gy, padding):
    """(y, gx, gw, gb) of conv2d in float64 torch."""
    torch = pytest.importorskip("torch")
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=padding)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    return [t.detach().numpy() for t in (ty, tx.grad, tw.grad, tb.grad)]


def run(x, w, b, gy, padding):
    """(y, gx, gw, gb) of gd.conv2d on the default device."""
    tx, tw, tb = (gd.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = gd.conv2d(tx, tw, tb, padding=padding)
    ty.backward(gd.tensor(gy))
    return [t.detach().numpy() for t in (ty, tx.grad, tw.grad, tb.grad)]


def matches_torch(rng, ran, prefix, N, C, H, W, K, padding):
    """Strict fp32 within 2e-5 of the largest value (TF32 would be ~1e-3 off), through the
    primitives named ``prefix.forward`` etc. (the conv_paths_ran fixture's ``ran``)."""
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    Ho, Wo = H + 2 * padding - 2, W + 2 * padding - 2
    gy = rng.standard_normal((N, K, Ho, Wo)).astype(np.float32)
    got = run(x, w, b, gy, padding)
    assert ran == [f"{prefix}.{name}" for name in PATH_NAMES]
    for g, r in zip(got, torch_reference(x, w, b, gy, padding)):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, r, rtol=0, atol=2e-5 * np.abs(r).max())


def nan_stays_in_its_tiles(rng):
    """A NaN input reaches only the 2x2 output tiles whose 4x4 patch holds it."""
    x = rng.standard_normal((2, 32, 10, 10)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    x[1, 3, 5, 6] = np.nan
    y = gd.conv2d(gd.tensor(x), gd.tensor(w), padding=1).numpy()
    oh, ow = np.indices((10, 10))
    touched = ((2 * (oh // 2) <= 6) & (6 <= 2 * (oh // 2) + 3)      # padded pixel (6, 7)
               & (2 * (ow // 2) <= 7) & (7 <= 2 * (ow // 2) + 3))
    assert not np.isnan(y[0]).any() and not np.isnan(y[1][:, ~touched]).any()
    assert np.isnan(y[1][:, touched]).any()


def graph_replays_forward_and_backward(rng):
    """A CUDA graph of conv2d forward and backward, replayed on new input, against torch."""
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
        step()                                  # warm-up: kernel builds, cached tables
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
    want_y, want_gx, want_gw, _ = torch_reference(new_x, w.detach().numpy(), np.zeros(32),
                                                  2 * y.astype(np.float64), 1)
    for got, want in ((y, want_y), (gx, want_gx), (gw, want_gw)):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
