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


def _step_arrays(rng, mode, backward, B=B, H=H):
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
@pytest.mark.parametrize("batch, hidden", [(B, H), (19, 5), (2, 300)])
def test_step_kernel_matches_cpu_step(rng, mode, backward, batch, hidden):
    """(19, 5): 3 blocks of 8 batch rows x 32 units, the last partial; (2, 300): 2 blocks of 256
    units, the second partial."""
    from gpudl.kernels import lstm_cuda
    arrays = _step_arrays(rng, mode, backward, batch, hidden)
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


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_float64_sequence_is_float64_exact(rng, mode):
    """float64 layers (gradient checks) compute in float64 on the cuda path: outputs and every
    gradient match torch's float64 layer to 1e-12. The simulator once made the gates float32
    (math.tanh's Python float times a float32 constant is float32 under NumPy 2), ~1e-8 off."""
    torch = pytest.importorskip("torch")
    G = K.GATES[mode]
    f64 = lambda *shape: rng.standard_normal(shape)        # noqa: E731
    w = {"w_ih": f64(G * H, I), "w_hh": f64(G * H, H), "b_ih": f64(G * H), "b_hh": f64(G * H)}
    x, hx, gy, g_hn = f64(T, B, I), f64(B, H), f64(T, B, H), f64(B, H)
    cx, g_cn = (f64(B, H), f64(B, H)) if mode == "lstm" else (None, None)
    y, h_n, c_n, saved = K.rnn_forward(mode, x, hx, cx, **w)
    grads = K.rnn_backward(saved, w["w_ih"], w["w_hh"], gy, g_hn, g_cn)

    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[mode](
        I, H).double()
    torch_names = {"w_ih": "weight_ih_l0", "w_hh": "weight_hh_l0", "b_ih": "bias_ih_l0",
                   "b_hh": "bias_hh_l0"}
    params = [getattr(layer, torch_names[name]) for name in w]
    for param, name in zip(params, w):
        param.data = torch.tensor(w[name])
    tx, thx = torch.tensor(x, requires_grad=True), torch.tensor(hx[None], requires_grad=True)
    tcx = torch.tensor(cx[None], requires_grad=True) if mode == "lstm" else None
    ty, state = layer(tx, (thx, tcx) if mode == "lstm" else thx)
    th_n, tc_n = state if mode == "lstm" else (state, None)
    loss = (ty * torch.tensor(gy)).sum() + (th_n[0] * torch.tensor(g_hn)).sum()
    if mode == "lstm":
        loss = loss + (tc_n[0] * torch.tensor(g_cn)).sum()
    loss.backward()
    expected = [ty, th_n[0], tc_n if tc_n is None else tc_n[0], tx.grad, thx.grad[0],
                tcx if tcx is None else tcx.grad[0]] + [p.grad for p in params]
    for got, want in zip([y, h_n, c_n] + list(grads), expected):
        if want is None:
            assert got is None
        else:
            assert got.dtype == np.float64
            np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_empty_batch_launches_nothing(rng):
    w = _weights(rng, "lstm")
    x = np.zeros((2, 0, I), np.float32)
    state = np.zeros((0, H), np.float32)
    y, _, _, saved = K.rnn_forward("lstm", x, state, state, **w)
    grads = K.rnn_backward(saved, w["w_ih"], w["w_hh"], np.zeros_like(y))
    assert y.shape == (2, 0, H) and grads[0].shape == (2, 0, I)


def test_step_launch_shape_and_limit(rng, monkeypatch):
    from gpudl.kernels import lstm_cuda
    assert lstm_cuda._block(5) == (32, 8) and lstm_cuda._block(100) == (128, 2)
    assert lstm_cuda._block(300) == (256, 1)
    monkeypatch.setattr(lstm_cuda, "MAX_GRID_Y", 2)
    arrays = _step_arrays(rng, "lstm", False, 17, 5)      # 3 blocks of 8 rows: over the limit
    before = [a.copy() for a in arrays]
    with pytest.raises(ValueError, match="batch size 17 needs 3 blocks of 8 rows"):
        lstm_cuda.CELLS["lstm"][0](1, 1, 2, *arrays)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_float16_layers_reach_the_kernels_in_float32(monkeypatch):
    """On a GPU float16 arrays are CuPy arrays, which the kernels took as they were: a float16
    specialisation the gate never compiled, its cell math in half precision (the simulator's
    NumPy arrays were widened, so it never saw that path). They are widened on both devices."""
    import types

    import gpudl as gd
    from gpudl.ops import rnn

    seen = []
    real_forward = K.rnn_forward

    def spy(mode, x, *args, **kwargs):
        seen.append(x.dtype)
        return real_forward(mode, x, *args, **kwargs)
    # every array stands for a CuPy one (is_device_array), as on a GPU
    fake = types.SimpleNamespace(**{k: getattr(backend, k) for k in dir(backend)
                                    if not k.startswith("__")})
    fake.is_device_array = lambda a: isinstance(a, np.ndarray)
    monkeypatch.setattr(rnn, "backend", fake)
    monkeypatch.setattr(K, "rnn_forward", spy)
    x = gd.tensor(np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float16))
    w = _weights(np.random.default_rng(1), "gru", bias=False)
    y, h = rnn.gru_layer(x, None, gd.tensor(w["w_ih"].astype(np.float16)),
                         gd.tensor(w["w_hh"].astype(np.float16)))
    assert seen == [np.float32]
    assert y.dtype == np.float16 and h.dtype == np.float16
