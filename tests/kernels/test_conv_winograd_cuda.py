"""Winograd F(2x2, 3x3) on cuda (kernels/conv_winograd_cuda.py): where it runs (anywhere; and
where the fused kernels run, kernels/conv_winograd_fused_cuda.py), and on
a GPU its results against PyTorch in float64 (forward, the three gradients, strict fp32 whatever
the matmul flag, a CUDA graph capture, NaN confinement). The simulator tests
(tests/sim/test_conv_winograd_sim.py) run the kernels on tiny shapes without a GPU."""

import numpy as np
import pytest

import gpudl as gd
import winograd_gpu_checks as checks
from gpudl.kernels import conv, conv_winograd_cuda as wg, conv_winograd_fused_cuda as fused

_geometry = checks.geometry


# where each Winograd path applies: (unfused conv_winograd_cuda, fused conv_winograd_fused_cuda)
@pytest.mark.parametrize("x_shape, w_shape, kwargs, dtype, tf32, runs", [
    ((64, 64, 56, 56), (64, 64, 3, 3), {}, "float32", False, (True, True)),
    ((128, 128, 28, 28), (128, 128, 3, 3), {}, "float32", False, (True, True)),
    ((64, 32, 32, 32), (48, 32, 3, 3), {"padding": (2, 2)}, "float32", False, (True, True)),
    ((64, 32, 32, 32), (48, 32, 3, 3), {"padding": (0, 0)}, "float32", False, (True, True)),
    ((16, 64, 32, 32), (64, 64, 3, 3), {"padding": (2, 2)}, "float64", False, (True, False)),
    ((64, 64, 56, 56), (64, 64, 3, 3), {}, "float32", True, (False, False)),  # TF32 kernels
    ((64, 64, 56, 56), (64, 64, 3, 3), {}, "float16", False, (False, False)),
    ((64, 64, 56, 56), (64, 64, 3, 3), {"stride": (2, 2)}, "float32", False, (False, False)),
    ((64, 64, 56, 56), (64, 64, 3, 3), {"dilation": (2, 2)}, "float32", False, (False, False)),
    ((64, 64, 56, 56), (64, 32, 3, 3), {"groups": 2}, "float32", False, (False, False)),
    ((64, 64, 56, 56), (64, 64, 5, 5), {}, "float32", False, (False, False)),
    ((64, 16, 56, 56), (64, 16, 3, 3), {}, "float32", False, (False, False)),  # few channels
    ((64, 64, 56, 56), (16, 64, 3, 3), {}, "float32", False, (False, False)),
    ((1, 32, 28, 28), (32, 32, 3, 3), {}, "float32", False, (False, False)),   # little work
    ((32, 32, 28, 28), (32, 32, 3, 3), {}, "float32", False, (False, True)),   # 2^24 < 2^26
    ((8192, 64, 64, 64), (64, 64, 3, 3), {}, "float32", False, (False, False)),  # past int32
])
def test_where_it_runs(x_shape, w_shape, kwargs, dtype, tf32, runs):
    geo = _geometry(x_shape, w_shape, **kwargs)
    assert (wg.applies(geo, np.dtype(dtype), tf32), fused.applies(geo, np.dtype(dtype), tf32)) \
        == runs


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


@checks.needs_gpu
@pytest.mark.parametrize("N, C, H, W, K, padding", [
    (16, 64, 32, 32, 64, 1),       # the module's own floors: 2**26 multiply-adds
    (8, 33, 17, 15, 40, 1),        # odd sizes: partial tiles, several blocks
    (8, 32, 16, 19, 32, 0),
    (8, 32, 15, 16, 48, 2),
])
def test_matches_torch_float64(rng, monkeypatch, strict, ran, N, C, H, W, K, padding):
    monkeypatch.setattr(wg, "MIN_WORK", 0)
    checks.matches_torch(rng, ran, "winograd", N, C, H, W, K, padding)


@checks.needs_gpu
def test_chunked_run_matches_one_chunk(rng, monkeypatch, strict):
    monkeypatch.setattr(wg, "MIN_WORK", 0)
    x = rng.standard_normal((5, 32, 12, 13)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    gy = rng.standard_normal((5, 32, 12, 13)).astype(np.float32)
    whole = checks.run(x, w, b, gy, 1)
    monkeypatch.setattr(wg, "CHUNK_BYTES", 2 * 16 * 64 * 6 * 7 * 4)       # 2 images a chunk
    for g, r in zip(checks.run(x, w, b, gy, 1), whole):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * np.abs(r).max())


@checks.needs_gpu
def test_nan_stays_in_its_tiles(rng, monkeypatch, strict):
    monkeypatch.setattr(wg, "MIN_WORK", 0)
    checks.nan_stays_in_its_tiles(rng)


@checks.needs_gpu
def test_a_cuda_graph_captures_forward_and_backward(rng, monkeypatch, strict):
    """The tile kernels and the cuBLAS products (gpudl's own handle in a capture) replay."""
    monkeypatch.setattr(wg, "MIN_WORK", 0)
    checks.graph_replays_forward_and_backward(rng)
