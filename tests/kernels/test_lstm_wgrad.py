"""The one-launch weight gradients of a short recurrent layer (kernels/lstm_wgrad_cuda.py) on a
GPU against CuPy's GEMMs and sum; the simulator runs the same kernel everywhere else
(tests/sim/test_lstm_wgrad_sim.py)."""

import numpy as np
import pytest

from gpudl import backend


@pytest.mark.parametrize("rows, G, I, H", [(384, 128, 1, 32), (384, 128, 32, 32),
                                           (512, 128, 32, 32), (5, 8, 3, 2)])
def test_on_the_gpu_one_launch_gives_the_gemms_numbers(rng, rows, G, I, H):
    """On a GPU (tools/gpu_check.sh): the sunspots layers' shapes (384 rows), one at the
    STEPS_MAX bound, and a tiny one."""
    if backend._cupy is None:
        pytest.skip("needs CuPy and a GPU; the simulator test runs everywhere else")
    import cupy
    from gpudl.kernels import lstm_wgrad_cuda
    d, x, h_prev = (cupy.asarray(rng.standard_normal((rows, n)).astype(np.float32))
                    for n in (G, I, H))
    got = lstm_wgrad_cuda.weight_grads(d, x, h_prev, cupy)
    want = (d.T @ x, d.T @ h_prev, d.sum(axis=0))
    for a, b in zip(got, want):
        np.testing.assert_allclose(cupy.asnumpy(a), cupy.asnumpy(b), rtol=1e-4, atol=1e-4)
