"""Winograd F(2x2, 3x3) on cuda (kernels/conv_winograd_cuda.py) in Numba's CUDA simulator,
against the CPU twin's direct sum in float64: conv2d forward, grad_input, grad_weight and
grad_bias through the public entries, with odd sizes (partial tiles), paddings 0 to 3, several
blocks, chunks of images, which path ran, and where a NaN may go. TINY shapes: every CUDA
thread runs in Python. The channel and work floors are lowered so that these shapes qualify."""

import numpy as np
import pytest

from conv_sim_checks import float64_reference as _reference
from conv_sim_checks import winograd_matches as _check_all
from conv_sim_checks import winograd_transpose_matches
from conv_sim_checks import winograd_close as _close
from conv_sim_checks import winograd_inputs as _inputs
from conv_sim_checks import launched_kernels, public_op_matches, winograd_nan_stays_in_its_tiles
from gpudl import backend
from gpudl.kernels import conv, conv_winograd_cuda as wg

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]

@pytest.fixture
def everywhere(monkeypatch):
    """Every 3x3 stride-1 strict-fp32 conv takes the Winograd path here."""
    monkeypatch.setattr(wg, "ENABLED", True)
    monkeypatch.setattr(wg, "MIN_CHANNELS", 1)
    monkeypatch.setattr(wg, "MIN_WORK", 0)


@pytest.fixture
def ran(conv_paths_ran):
    return conv_paths_ran


# (N, C, H, W, K, padding)
CASES = [
    (2, 3, 6, 8, 4, 1),        # whole tiles
    (2, 3, 5, 7, 2, 1),        # odd H and W: partial last tiles
    (1, 2, 7, 6, 3, 0),        # no padding, odd output rows
    (1, 2, 4, 5, 3, 2),        # padding 2: grad_input runs with padding 0
    (1, 2, 4, 3, 2, 3),        # padding 3: grad_input runs with padding -1 (cropped)
    (1, 9, 10, 12, 5, 1),      # 9 * 30 = 270 (channel, tile) threads: two blocks
]


@pytest.mark.parametrize("N, C, H, W, K, p", CASES)
def test_forward_and_gradients_match_the_direct_sum(rng, monkeypatch, everywhere, ran, nan_empty,
                                                    N, C, H, W, K, p):
    """Outputs come from empty arrays filled with NaN (``nan_empty``): every one is written."""
    _check_all(rng, monkeypatch, N, C, H, W, K, p)
    assert ran == ["winograd.forward", "winograd.grad_input", "winograd.grad_weight"]


def test_float64(rng, monkeypatch, everywhere, ran):
    _check_all(rng, monkeypatch, 1, 2, 5, 6, 3, 1, np.float64)
    assert "direct.forward" not in ran and "winograd.forward" in ran


@pytest.mark.parametrize("needs", [(False, True, True), (False, True, False), (True, False, True)])
def test_what_is_asked_is_what_is_made(rng, monkeypatch, everywhere, needs):
    """The bias gradient from the tiles of gy (dM[5]) alone or beside the weight gradient."""
    x, w, _ = _inputs(rng, 2, 3, 5, 6, 4)
    gy = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    conf = ((1, 1), (1, 1), (1, 1), 1)
    got = conv.conv2d_backward(x, w, gy, *conf, needs=needs)
    want = _reference(monkeypatch, conv.conv2d_backward, x, w, gy, *conf, needs)
    assert [g is not None for g in got] == list(needs)
    for g, r in zip(got, want):
        if g is not None:
            _close(g, r)


def test_public_op_on_device_arrays(rng, monkeypatch, everywhere, ran):
    public_op_matches(rng, monkeypatch)
    assert ran == ["winograd.forward", "winograd.grad_input", "winograd.grad_weight"]


def test_a_float16_output_gradient_is_widened(rng, monkeypatch, everywhere):
    """gy may come in another dtype than x and w (float16 from a cast downstream): the input
    gradient runs in the weights' float32, as the weight gradient runs in x's."""
    x, w, _ = _inputs(rng, 1, 2, 5, 4, 3)
    gy = rng.standard_normal((1, 3, 5, 4)).astype(np.float16)
    conf = ((1, 1), (1, 1), (1, 1), 1)
    got = conv.conv2d_backward(x, w, gy, *conf, needs=(True, True, False))
    want = _reference(monkeypatch, conv.conv2d_backward, x, w, gy, *conf, (True, True, False))
    for g, r in zip(got[:2], want[:2]):
        _close(g, r)


def test_chunks_of_images(rng, monkeypatch, everywhere, ran):
    """A bound of two images' V and M: chunks of 2, 2 and 1 images (a partial last one),
    the weight gradient summed over them."""
    N, C, H, W, K = 5, 2, 5, 4, 3
    tiles = 3 * 2
    monkeypatch.setattr(wg, "CHUNK_BYTES", 2 * 16 * (C + K) * tiles * 4)
    geo = conv.ConvGeometry((N, C, H, W), (K, C, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert wg._Plan(geo, 4).chunks(N) == [(0, 2), (2, 2), (4, 1)]
    _check_all(rng, monkeypatch, N, C, H, W, K, 1)
    assert "winograd.grad_weight" in ran


def test_weight_gradient_split_over_images(rng, monkeypatch, everywhere, nan_empty):
    """5 images in splits of 3: two products per position, the second split padded with an
    image of zero tiles (its buffers start as NaN here: the kernels must write the zeros)."""
    monkeypatch.setattr(wg, "SPLITS", 2)
    monkeypatch.setattr(wg, "MIN_SPLIT_TILES", 1)
    assert wg._splits(5, 6) == 3
    x, w, _ = _inputs(rng, 5, 2, 5, 4, 3)
    gy = rng.standard_normal((5, 3, 5, 4)).astype(np.float32)
    conf = ((1, 1), (1, 1), (1, 1), 1)
    got = conv.conv2d_backward(x, w, gy, *conf, needs=(False, True, True))
    want = _reference(monkeypatch, conv.conv2d_backward, x, w, gy, *conf, (False, True, True))
    for g, r in zip(got[1:], want[1:]):
        _close(g, r)


def test_conv_transpose2d(rng, monkeypatch, everywhere, ran):
    """A stride-1 3x3 transposed conv is Winograd's grad_input, its bias added per tile; its
    backward is Winograd's forward and weight gradient with x and gy swapped."""
    winograd_transpose_matches(rng, monkeypatch)
    assert ran == ["winograd.grad_input", "winograd.forward", "winograd.grad_weight"]


@pytest.mark.parametrize("stride, padding, dilation, groups, kernel, allow_tf32", [
    ((2, 2), (1, 1), (1, 1), 1, 3, False),
    ((1, 1), (1, 1), (2, 2), 1, 3, False),
    ((1, 1), (1, 1), (1, 1), 2, 3, False),
    ((1, 1), (2, 2), (1, 1), 1, 5, False),
    ((1, 1), (1, 1), (1, 1), 1, 3, True),           # TF32 allowed: the tensor-core kernels
])
def test_other_geometries_keep_their_kernels(rng, monkeypatch, everywhere, ran, stride, padding,
                                             dilation, groups, kernel, allow_tf32):
    monkeypatch.setattr(conv, "TF32_MIN_FLOPS", 0)      # (smaller ones run as strict fp32)
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 4 // groups, kernel, kernel)).astype(np.float32)
    conv.conv2d_forward(x, w, None, stride, padding, dilation, groups, allow_tf32=allow_tf32)
    assert not any(name.startswith("winograd") for name in ran)
    assert ran == ([] if allow_tf32 else ["direct.forward"])


def test_off_by_default(rng, monkeypatch, ran):
    """``ENABLED`` off (the default: slower than the direct sum on an H200): a conv the floors
    let through still runs conv_cuda."""
    assert wg.ENABLED is False
    monkeypatch.setattr(wg, "MIN_CHANNELS", 1)
    monkeypatch.setattr(wg, "MIN_WORK", 0)
    x, w, b = _inputs(rng, 1, 2, 6, 6, 3)
    assert wg.applies(conv.ConvGeometry(x.shape, w.shape, (1, 1), (1, 1), (1, 1), 1), x.dtype)
    conv.conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), 1)
    assert ran == ["direct.forward"]


def test_the_floors_decide(rng, monkeypatch, ran):
    """With the module's own floors a tiny conv stays on conv_cuda."""
    monkeypatch.setattr(wg, "ENABLED", True)
    x, w, b = _inputs(rng, 1, 2, 6, 6, 3)
    conv.conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), 1)
    assert ran == ["direct.forward"]


def test_nan_stays_in_the_tiles_that_read_it(rng, monkeypatch, everywhere):
    winograd_nan_stays_in_its_tiles(rng, monkeypatch)


def test_launches_pass_the_gated_signatures(rng, monkeypatch, everywhere):
    """launch.check_arguments runs under the simulator: the launchers' arguments have exactly
    the SIGNATURES types (a GPU's specialised dispatcher would refuse others). And every
    kernel of the table launches in a forward and backward."""
    assert launched_kernels(rng, monkeypatch) == {
        kernel for kernel, *_ in wg.SIGNATURES if kernel in wg._KERNELS["float32"]}
