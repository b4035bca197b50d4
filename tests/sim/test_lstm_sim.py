"""The fused LSTM/GRU/RNN step kernels (kernels/lstm_cuda.py) in Numba's CUDA simulator, against
the CPU twin: each step kernel on its own, then whole sequences forward and backward."""

import numpy as np
import pytest
from gpudl.kernels import lstm as K

from gpudl import backend

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]

T, B, I, H = 3, 2, 3, 5          # TINY: the simulator runs every CUDA thread in Python


def _weights(rng, mode, bias=True):
    G = K.GATES[mode]
    f32 = np.float32
    return {"w_ih": rng.standard_normal((G * H, I)).astype(f32),
            "w_hh": rng.standard_normal((G * H, H)).astype(f32),
            "b_ih": rng.standard_normal(G * H).astype(f32) if bias else None,
            "b_hh": rng.standard_normal(G * H).astype(f32) if bias else None}


def _random(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _step_arrays(rng, mode, backward):
    """Random arguments for one step function, in its argument order."""
    G = K.GATES[mode]
    seq, state, gate_seq = (T, B, H), (T + 1, B, H), (T, B, G * H)
    if not backward:
        shapes = {"lstm": [gate_seq, (B, 4 * H), state, seq, state],
                  "gru": [gate_seq, (B, 3 * H), (H,), seq, state],
                  "rnn": [gate_seq, (B, H), state]}[mode.split("_")[0]]
    else:
        shapes = {"lstm": [seq, (B, H), (B, H), gate_seq, state, seq, gate_seq],
                  "gru": [seq, (B, H), (B, H), gate_seq, seq, state, gate_seq, gate_seq],
                  "rnn": [seq, (B, H), state, gate_seq]}[mode.split("_")[0]]
    arrays = [_random(rng, *shape) for shape in shapes]
    if backward and mode in ("lstm", "gru"):
        arrays[3] = 1 / (1 + np.exp(-arrays[3]))    # saved gates are activations in (0, 1)
    return arrays


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("backward", [False, True])
def test_step_kernel_matches_cpu_step(rng, mode, backward):
    from gpudl.kernels import lstm_cuda
    arrays = _step_arrays(rng, mode, backward)
    extra = (mode == "rnn_relu",) if mode.startswith("rnn") else ()
    on_gpu = [a.copy() for a in arrays]
    on_cpu = [a.copy() for a in arrays]
    t, s_in, s_out = 1, 1, 2
    lstm_cuda.CELLS[mode][backward](t, s_in, s_out, *on_gpu, *extra)
    K.CELLS[mode][backward](t, s_in, s_out, *on_cpu, *extra)
    for a, b in zip(on_gpu, on_cpu):                # every buffer the step writes, and the rest
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("mode", K.MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_sequence_matches_cpu_twin(rng, mode, reverse):
    assert backend.kernel_device(np.zeros(1)) == "cuda"
    w = _weights(rng, mode, bias=mode != "rnn_relu")
    x, hx = _random(rng, T, B, I), _random(rng, B, H)
    cx = _random(rng, B, H) if mode == "lstm" else None
    gy, g_hn, g_cn = _random(rng, T, B, H), _random(rng, B, H), _random(rng, B, H)
    results = []
    for device in (None, "cpu"):                    # None: the entry's choice, the cuda path here
        y, h_n, c_n, saved = K.rnn_forward(mode, x, hx, cx, reverse=reverse, device=device, **w)
        grads = K.rnn_backward(saved, w["w_ih"], w["w_hh"], gy, g_hn,
                               g_cn if mode == "lstm" else None)
        results.append([y, h_n, c_n] + list(grads))
    for got, expected in zip(*results):
        if expected is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_empty_batch_launches_nothing(rng):
    w = _weights(rng, "lstm")
    x = np.zeros((2, 0, I), np.float32)
    state = np.zeros((0, H), np.float32)
    y, _, _, saved = K.rnn_forward("lstm", x, state, state, **w)
    grads = K.rnn_backward(saved, w["w_ih"], w["w_hh"], np.zeros_like(y))
    assert y.shape == (2, 0, H) and grads[0].shape == (2, 0, I)
