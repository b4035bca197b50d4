"""The fused Winograd F(2x2, 3x3) kernel (kernels/conv_winograd_fused_cuda.py) in Numba's CUDA
simulator, against the CPU twin's direct sum in float64: conv2d forward and its gradients
through the public entries (grad_input is the forward kernel on gy; grad_weight its own), with
odd sizes (partial tiles), paddings 0 to 3, channel counts that are not multiples of the 4-channel
step or of the 32-channel block, several blocks of tiles and of channels, outputs from
NaN-filled arrays (every one written) and poisoned shared memory (tests/sim/sim_blocks.py: no
unwritten tile read). TINY shapes: every CUDA thread runs in Python; the channel and work
floors are lowered so that they qualify."""

import numpy as np
import pytest

from conv_sim_checks import float64_reference as _reference
from conv_sim_checks import winograd_matches as _check_all
from conv_sim_checks import winograd_transpose_matches
from conv_sim_checks import winograd_close as _close
from conv_sim_checks import winograd_inputs as _inputs
from conv_sim_checks import launched_kernels, public_op_matches, winograd_nan_stays_in_its_tiles
from gpudl import backend
from gpudl.kernels import conv, conv_winograd_fused_cuda as fused

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]

CONF = ((1, 1), (1, 1), (1, 1), 1)          # stride, padding 1, dilation, groups
FLOORS = (fused.MIN_CHANNELS, fused.MIN_WORK)


@pytest.fixture
def everywhere(monkeypatch):
    """Every 3x3 stride-1 strict-fp32 conv takes the fused path here."""
    monkeypatch.setattr(fused, "MIN_CHANNELS", 1)
    monkeypatch.setattr(fused, "MIN_WORK", 0)


# (N, C, H, W, K, padding)
CASES = [
    (1, 4, 6, 8, 3, 1),        # whole tiles, one channel step
    (2, 5, 5, 7, 2, 1),        # odd H and W (partial last tiles); 5 channels: a partial step
    (1, 2, 7, 6, 3, 0),        # no padding, odd output rows
    (1, 3, 4, 5, 3, 2),        # padding 2: grad_input runs with padding 0
    (1, 2, 4, 3, 2, 3),        # padding 3: grad_input runs with padding -1 (cropped)
    (3, 3, 9, 10, 2, 1),       # 3 x 25 = 75 tiles: three tile blocks, images across blocks
    (1, 9, 4, 4, 34, 1),       # 34 output (and grad_input's 34 input) channels: two blocks
]


@pytest.mark.parametrize("N, C, H, W, K, p", CASES)
def test_forward_and_gradients_match_the_direct_sum(rng, monkeypatch, everywhere, conv_paths_ran,
                                                    nan_empty, N, C, H, W, K, p):
    _check_all(rng, monkeypatch, N, C, H, W, K, p)
    assert conv_paths_ran == ["fused.forward", "fused.grad_input", "fused.grad_weight"]


def test_weight_gradient_over_several_splits(rng, monkeypatch, everywhere, nan_empty):
    """The tile reduction in 5 splits of 16 tiles (the last one 11: a partial step), over two
    blocks of input and of output channels (34 and 33): partial sums from NaN-filled arrays,
    added in the finishing kernel."""
    monkeypatch.setattr(fused, "MIN_SPAN", 8)
    assert fused._wgrad_splits(75, 4, 64 * 64) == (5, 16)
    x, w, _ = _inputs(rng, 3, 34, 9, 10, 33)
    gy = rng.standard_normal((3, 33, 9, 10)).astype(np.float32)
    got = conv.conv2d_backward(x, w, gy, *CONF, needs=(False, True, True))
    want = _reference(monkeypatch, conv.conv2d_backward, x, w, gy, *CONF, (False, True, True))
    for g, r in zip(got[1:], want[1:]):
        _close(g, r)


def test_weight_tiles_are_g_w_g_transposed(rng, nan_empty):
    """ut[c, k // 32, xi, k % 32] = (G w[k, c] G^T)[xi], zero in the padding; the rotated,
    channel-swapped build (grad_input's) the same of w[c, k] turned by 180 degrees."""
    from gpudl.kernels import conv_winograd
    K, C = 35, 6
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    G = conv_winograd.G
    for flip in (False, True):
        kout, cin = (C, K) if flip else (K, C)
        strides = (9, C * 9) if flip else (C * 9, 9)
        ut, Kp, Cp = fused._weight_tiles(w, kout, cin, *strides, flip)
        assert (Kp, Cp) == (-(-kout // 32) * 32, -(-cin // 4) * 4)
        got = ut.reshape(Cp, Kp // 32, 16, 32).transpose(0, 1, 3, 2).reshape(Cp, Kp, 4, 4)
        taps = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1] if flip else w      # (kout, cin, 3, 3)
        want = np.zeros((Cp, Kp, 4, 4))
        want[:cin, :kout] = np.einsum("ai,kcij,bj->ckab", G, taps.astype(np.float64), G)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_public_op_on_device_arrays(rng, monkeypatch, everywhere, conv_paths_ran):
    public_op_matches(rng, monkeypatch)
    assert conv_paths_ran == ["fused.forward", "fused.grad_input", "fused.grad_weight"]


def test_strided_output_gradient_is_copied_once(rng, monkeypatch, everywhere):
    """A broadcast gy (``y.sum().backward()``) is made contiguous once for grad_input and the
    weight gradient together."""
    x, w, _ = _inputs(rng, 1, 2, 5, 4, 3)
    gy = np.broadcast_to(np.float32(1), (1, 3, 5, 4))
    copies = []
    real = np.ascontiguousarray

    def counted(a, *args, **kwargs):
        if a is gy:
            copies.append(1)
        return real(a, *args, **kwargs)
    monkeypatch.setattr(np, "ascontiguousarray", counted)
    got = conv.conv2d_backward(x, w, gy, *CONF, needs=(True, True, False))
    monkeypatch.setattr(np, "ascontiguousarray", real)
    assert copies == [1]
    want = _reference(monkeypatch, conv.conv2d_backward, x, w, np.ones(gy.shape), *CONF,
                      (True, True, False))
    for g, r in zip(got[:2], want[:2]):
        _close(g, r)


def test_a_float16_output_gradient_is_widened(rng, monkeypatch, everywhere):
    x, w, _ = _inputs(rng, 1, 2, 5, 4, 3)
    gy = rng.standard_normal((1, 3, 5, 4)).astype(np.float16)
    got = conv.conv2d_backward(x, w, gy, *CONF, needs=(True, True, False))
    want = _reference(monkeypatch, conv.conv2d_backward, x, w, gy, *CONF, (True, True, False))
    for g, r in zip(got[:2], want[:2]):
        _close(g, r)


def test_conv_transpose2d(rng, monkeypatch, everywhere, conv_paths_ran):
    """A stride-1 3x3 transposed conv is the fused grad_input with its bias added per tile; its
    backward is the fused forward and weight gradient with x and gy swapped."""
    winograd_transpose_matches(rng, monkeypatch)
    assert conv_paths_ran == ["fused.grad_input", "fused.forward", "fused.grad_weight"]


def test_nan_stays_in_the_tiles_that_read_it(rng, monkeypatch, everywhere):
    winograd_nan_stays_in_its_tiles(rng, monkeypatch)


def test_only_strict_float32_3x3_stride_1_runs_here(rng, monkeypatch, everywhere, conv_paths_ran):
    """Other geometries and dtypes keep their kernels; the module's own floors keep a tiny conv
    on conv_cuda; the unfused Winograd, when turned on, comes first."""
    from gpudl.kernels import conv_winograd_cuda as wg
    x, w, b = _inputs(rng, 1, 4, 6, 6, 4)
    conv.conv2d_forward(x, w, b, (2, 2), (1, 1), (1, 1), 1)
    conv.conv2d_forward(x, w, b, (1, 1), (1, 1), (2, 2), 1)
    conv.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, *CONF)
    assert conv_paths_ran == ["direct.forward"] * 3
    monkeypatch.setattr(wg, "ENABLED", True)
    monkeypatch.setattr(wg, "MIN_CHANNELS", 1)
    monkeypatch.setattr(wg, "MIN_WORK", 0)
    conv.conv2d_forward(x, w, b, *CONF)
    assert conv_paths_ran[-1] == "winograd.forward"
    monkeypatch.setattr(wg, "ENABLED", False)
    monkeypatch.setattr(fused, "MIN_CHANNELS", FLOORS[0])
    monkeypatch.setattr(fused, "MIN_WORK", FLOORS[1])
    conv.conv2d_forward(x, w, b, *CONF)
    assert conv_paths_ran[-1] == "direct.forward"


def test_launches_pass_the_gated_signatures(rng, monkeypatch, everywhere):
    """launch.check_arguments runs under the simulator: the launchers' arguments have exactly
    the SIGNATURES types (a GPU's specialised dispatcher would refuse others), and every kernel
    of the table launches in a forward and backward."""
    assert launched_kernels(rng, monkeypatch) == {kernel for kernel, *_ in fused.SIGNATURES}
