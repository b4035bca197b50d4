"""The fused Winograd F(2x2, 3x3) kernels on cuda (kernels/conv_winograd_fused_cuda.py): where
they run (anywhere; the geometry table is in tests/kernels/test_conv_winograd_cuda.py), and on a
GPU their results against PyTorch in float64 (forward and the three gradients in strict fp32
whatever the matmul flag, partial tiles and blocks, NaN confinement, a CUDA graph capture). tests/sim/test_conv_winograd_fused_sim.py runs the kernels on tiny shapes
without a GPU."""

import numpy as np
import pytest

import gpudl as gd
import winograd_gpu_checks as checks
from gpudl.kernels import conv, conv_winograd_fused_cuda as fused

_geometry = checks.geometry


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


@checks.needs_gpu
@pytest.mark.parametrize("N, C, H, W, K, padding", [
    (16, 64, 32, 32, 64, 1),
    (8, 33, 17, 15, 40, 1),        # odd sizes: partial tiles, steps and channel blocks
    (8, 32, 16, 19, 32, 0),
    (8, 32, 15, 16, 48, 2),
    (3, 35, 7, 9, 70, 3),          # grad_input padded by -1 (cropped)
])
def test_matches_torch_float64(rng, strict, conv_paths_ran, N, C, H, W, K, padding):
    checks.matches_torch(rng, conv_paths_ran, "fused", N, C, H, W, K, padding)


@checks.needs_gpu
def test_nan_stays_in_its_tiles(rng, strict):
    checks.nan_stays_in_its_tiles(rng)


@checks.needs_gpu
def test_a_cuda_graph_captures_forward_and_backward(rng, strict):
    checks.graph_replays_forward_and_backward(rng)
