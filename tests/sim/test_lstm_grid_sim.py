"""The grid-wide persistent LSTM kernels (kernels/lstm_grid_cuda.py: hidden-unit slices over
blocks, a grid barrier a step) in Numba's CUDA simulator, against the CPU twin in float64.

The simulator runs blocks one after another and its grid barrier waits for the block's own
threads only, so a grid of several blocks runs one step (phase) a launch there
(``steps_per_launch``); a one-block grid also runs a whole sequence in one launch, the GPU's way.
The sizes are shrunk through the module's parameters (segments of 4 weights, a few threads a
block) so that H = 6 and 11 take the grid path; the kernel code is the same at any size."""

import numpy as np
import pytest
from gpudl.kernels import lstm as K
from lstm_launches import count_sequences

from gpudl import backend

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR or backend.DEFAULT_DEVICE != "cuda",
                                 reason="needs NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda")]

T, I = 3, 2
TOL = dict(rtol=2e-5, atol=2e-6)
NAMES = ["y", "h_n", "c_n", "x", "hx", "cx", "w_ih", "w_hh", "b_ih", "b_hh"]


@pytest.fixture
def G(monkeypatch):
    """The grid module shrunk: hidden sizes over 4 take it, segments of 4, 24 threads a block;
    the register kernels and the per-step LSTM refuse to run, grid launches are counted."""
    from gpudl.kernels import lstm_grid_cuda, lstm_persistent_cuda
    monkeypatch.setattr(lstm_persistent_cuda, "HIDDEN_MAX", 4)
    monkeypatch.setattr(lstm_grid_cuda, "REGISTER_HIDDEN_MAX", 4)
    monkeypatch.setattr(lstm_grid_cuda, "SEGMENT", 4)
    monkeypatch.setattr(lstm_grid_cuda, "THREADS_MAX", 24)
    count = count_sequences(monkeypatch, lstm_grid_cuda, refused=[lstm_persistent_cuda])
    monkeypatch.setattr(lstm_grid_cuda, "count", count, raising=False)
    return lstm_grid_cuda


def _random(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _check_layer(rng, B, H, reverse, steps=T):
    w = {"w_ih": _random(rng, 4 * H, I) * 0.5, "w_hh": _random(rng, 4 * H, H) * 0.5,
         "b_ih": _random(rng, 4 * H), "b_hh": _random(rng, 4 * H)}
    x, hx, cx = _random(rng, steps, B, I), _random(rng, B, H), _random(rng, B, H)
    grads_of = [_random(rng, steps, B, H), _random(rng, B, H), _random(rng, B, H)]

    def run(x, hx, cx, w, grads_of, device=None):
        y, h_n, c_n, saved = K.rnn_forward("lstm", x, hx, cx, reverse=reverse, device=device,
                                           **w)
        return [y, h_n, c_n, *K.rnn_backward(saved, w["w_ih"], w["w_hh"], *grads_of)]

    got = run(x, hx, cx, w, grads_of)
    f64 = [a.astype(np.float64) for a in (x, hx, cx)]
    expected = run(*f64, {k: v.astype(np.float64) for k, v in w.items()},
                   [g.astype(np.float64) for g in grads_of], "cpu")
    for name, a, b in zip(NAMES, got, expected):
        assert a.dtype == np.float32, name
        np.testing.assert_allclose(a, b, **TOL, err_msg=name)


@pytest.mark.parametrize("reverse", [False, True])
def test_several_blocks_match_float64_twin(rng, G, monkeypatch, reverse):
    """H = 11: 3 segments of 4 (the last padded), 2 units a block, 6 slices (the last owning
    one unit), and on a 12-SM device 2 batch groups of 2 rows (the last with one): 12 blocks,
    exchanging h (forward) and the gate gradients (backward) through global memory."""
    B, H = 3, 11
    monkeypatch.setattr(G, "SM_COUNT", 12)
    assert G.plan(np.float32, B, H) == (6, 2, 2, 2)
    assert K._path("lstm", None, np.zeros((T, B, I), np.float32), H) == "persistent-grid"
    _check_layer(rng, B, H, reverse)
    assert G.count == {"forward": 1, "backward": 1}


def test_first_hidden_size_over_the_register_kernels(rng, G, monkeypatch):
    """H = 70 with the real segments (2 of 35 weights a thread) and the real lower bound; only
    the units a block owns are lowered (8: 64 threads, 9 blocks), to keep the simulator quick."""
    monkeypatch.setattr(G, "SEGMENT", 64)
    monkeypatch.setattr(G, "REGISTER_HIDDEN_MAX", 64)
    monkeypatch.setattr(G, "THREADS_MAX", 64)
    B, H = 1, 70
    assert G.parts(H) == (2, 35) and G.plan(np.float32, B, H) == (9, 1, 8, 1)
    _check_layer(rng, B, H, reverse=False, steps=2)
    assert G.count == {"forward": 1, "backward": 1}


def test_one_block_runs_the_sequence_in_one_launch(rng, G, monkeypatch):
    """A one-block grid, where the simulator's barrier is exact: the whole time loop (and the
    backward's T + 1 phases) in one launch each, both directions."""
    monkeypatch.setattr(G, "THREADS_MAX", 48)
    monkeypatch.setattr(G, "SM_COUNT", 1)
    monkeypatch.setattr(G, "steps_per_launch", lambda phases: phases)
    launches = []
    real = G.launch
    monkeypatch.setattr(G, "launch", lambda *a, **k: (launches.append(a[5:7]), real(*a, **k)))
    B, H = 2, 6
    assert G.plan(np.float32, B, H)[:2] == (1, 1)
    for reverse in (False, True):
        _check_layer(rng, B, H, reverse)
    assert [(int(a), int(b)) for a, b in launches] == [(0, T), (0, T + 1)] * 2


def test_launcher_refuses_what_plan_refuses(G):
    w_hh = np.zeros((8, 2), np.float32)
    gates = np.zeros((1, 1, 8), np.float32)
    state = np.zeros((2, 1, 2), np.float32)
    with pytest.raises(ValueError, match="hidden size 2 and batch 1"):
        G.forward(False, w_hh, gates, None, state, state[:1], state)
