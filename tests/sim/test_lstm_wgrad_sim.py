"""A recurrent layer's weight and bias gradients in one launch (kernels/lstm_wgrad_cuda.py), in
Numba's CUDA simulator against float64 NumPy: d^T [x | h_prev | 1] split into its three parts.
The LSTM tests (test_lstm_persistent_sim.py) run it inside whole layers; the kernel count of the
sunspots step pins that it is taken there (test_kernel_count_sim.py)."""

import numpy as np
import pytest

from gpudl import backend

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]


@pytest.mark.parametrize("rows, G, I, H", [
    (70, 3, 1, 40),     # 9 warps, rows left over after the unrolled steps; 42 columns: two
                        # chunks of lanes, the bias in the second
    (7, 5, 5, 3),       # one warp, no unrolled step; 9 lanes
    (64, 2, 31, 1)])    # the bias column alone in the second chunk
def test_one_launch_gives_the_three_sums(rng, rows, G, I, H):
    from gpudl.kernels import lstm_wgrad_cuda
    d, x, h_prev = (rng.standard_normal((rows, n)).astype(np.float32) for n in (G, I, H))
    g_w_ih, g_w_hh, g_b = lstm_wgrad_cuda.weight_grads(d, x, h_prev, np)
    d64 = d.astype(np.float64)
    for got, want in ((g_w_ih, d64.T @ x), (g_w_hh, d64.T @ h_prev), (g_b, d64.sum(axis=0))):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_taken_for_small_float32_layers_only():
    """The sunspots layers (384 rows; 34 and 65 columns of [x | h_prev | 1]) are taken, layers
    whose warps would walk more than STEPS_MAX steps, float64 and empty ones are not."""
    from gpudl.kernels import lstm_wgrad_cuda as W

    def arrays(rows, I, H, dtype=np.float32):
        return [np.zeros((rows, n), dtype) for n in (128, I, H)]
    assert W.takes(*arrays(384, 1, 32)) and W.takes(*arrays(384, 32, 32))
    assert (W.steps(384, 34), W.steps(384, 65)) == (12, 18)
    assert W.steps(512, 65) == W.STEPS_MAX and W.takes(*arrays(512, 32, 32))
    assert not W.takes(*arrays(576, 32, 32))
    assert not W.takes(*arrays(384, 64, 64))
    assert not W.takes(*arrays(384, 1, 32, np.float64))
    assert not W.takes(*arrays(0, 1, 32))
