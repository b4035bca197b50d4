"""The persistent LSTM kernels (kernels/lstm_persistent_cuda.py: one launch per layer, direction
and pass) in Numba's CUDA simulator: whole sequences forward and backward against the CPU twin
run in float64, then the nn.LSTM stack (layers, directions, batch_first, initial states) against
PyTorch in float64. Every test checks which path ran, so none can pass on the per-step path."""

import numpy as np
import pytest
from gpudl.kernels import lstm as K
from lstm_launches import count_sequences

import gpudl as gd
from gpudl import backend, nn

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR or backend.DEFAULT_DEVICE != "cuda",
                                 reason="needs NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda")]

T, I = 3, 3
TOL = dict(rtol=2e-5, atol=2e-6)       # float32 kernels against a float64 reference


@pytest.fixture
def P():
    from gpudl.kernels import lstm_persistent_cuda
    return lstm_persistent_cuda


@pytest.fixture
def paths(monkeypatch, P):
    """Counts of persistent forward / backward launches; the per-step LSTM kernels refuse to
    run, so a test that reaches them fails."""
    return count_sequences(monkeypatch, P)


def _random(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _layer(rng, B, H, initial=True, steps=T):
    w = {"w_ih": _random(rng, 4 * H, I) * 0.5, "w_hh": _random(rng, 4 * H, H) * 0.5,
         "b_ih": _random(rng, 4 * H), "b_hh": _random(rng, 4 * H)}
    state = [_random(rng, B, H) if initial else np.zeros((B, H), np.float32) for _ in range(2)]
    return w, _random(rng, steps, B, I), *state


def _run(x, hx, cx, w, reverse, grads_of, device=None):
    """[y, h_n, c_n, g_x, g_hx, g_cx, g_w_ih, g_w_hh, g_b_ih, g_b_hh] of one layer."""
    y, h_n, c_n, saved = K.rnn_forward("lstm", x, hx, cx, reverse=reverse, device=device, **w)
    grads = K.rnn_backward(saved, w["w_ih"], w["w_hh"], *grads_of)
    return [y, h_n, c_n, *grads]


def _float64(arrays):
    if isinstance(arrays, dict):
        return {k: v.astype(np.float64) for k, v in arrays.items()}
    return [a.astype(np.float64) for a in arrays]


def test_rows_per_block(P, monkeypatch):
    assert P.rows_per_block(np.float32, 64, 32) == 1          # the sunspots model: a row a block
    assert P.rows_per_block(np.float32, 200, 16) == 2         # 132 SMs busy first
    assert P.rows_per_block(np.float32, 1000, 32) == 2        # 256 threads
    assert P.rows_per_block(np.float32, 100000, 1) == 64      # 256 threads; blockDim.z <= 64
    assert P.rows_per_block(np.float32, 1000, 64) == 1        # 256 threads, HIDDEN_MAX
    assert P.rows_per_block(np.float32, 1, 65) == 0
    assert P.rows_per_block(np.float64, 4, 8) == 0
    monkeypatch.setattr(P, "HIDDEN_MAX", 0)
    assert P.rows_per_block(np.float32, 4, 8) == 0


@pytest.mark.parametrize("B, H, blocks", [(2, 4, 2), (5, 8, 2), (3, 16, 3), (4, 7, 1)])
@pytest.mark.parametrize("reverse", [False, True])
def test_sequence_matches_float64_twin(rng, paths, P, monkeypatch, B, H, blocks, reverse):
    """(5, 8, 2): 3 rows a block, the last block with a spare row; (4, 7, 1): an odd H, all
    rows in one block."""
    monkeypatch.setattr(P, "TARGET_BLOCKS", blocks)
    w, x, hx, cx = _layer(rng, B, H)
    grads_of = [_random(rng, T, B, H), _random(rng, B, H), _random(rng, B, H)]
    got = _run(x, hx, cx, w, reverse, grads_of)
    expected = _run(*_float64([x, hx, cx]), _float64(w), reverse, _float64(grads_of), "cpu")
    assert paths == {"forward": 1, "backward": 1}
    for name, a, b in zip(["y", "h_n", "c_n", "x", "hx", "cx", "w_ih", "w_hh", "b_ih", "b_hh"],
                          got, expected):
        assert a.dtype == np.float32, name
        np.testing.assert_allclose(a, b, **TOL, err_msg=name)


def test_without_output_gradients_or_initial_state(rng, paths):
    """No gradient for h_n and c_n (None: zeros), zero initial state, y's gradient only."""
    B, H = 3, 6
    w, x, hx, cx = _layer(rng, B, H, initial=False)
    grads_of = [_random(rng, T, B, H), None, None]
    got = _run(x, hx, cx, w, False, grads_of)
    expected = _run(*_float64([x, hx, cx]), _float64(w), False,
                    [grads_of[0].astype(np.float64), None, None], "cpu")
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("given", [(False, False, False), (True, False, True),
                                   (False, True, False)])
@pytest.mark.parametrize("reverse", [False, True])
def test_absent_state_and_output_gradients_are_zeros_in_the_kernels(rng, paths, given, reverse):
    """h0/c0 None (the kernel writes the zero state), and each of gy, g_hn, g_cn None (the
    kernel reads none): the float64 twin's results with zeros there (that no zeros are made
    on the way: tests/sim/test_kernel_count_sim.py)."""
    B, H = 3, 5
    w, x, _, _ = _layer(rng, B, H)
    grads_of = [_random(rng, *shape) if wanted else None
                for shape, wanted in zip([(T, B, H), (B, H), (B, H)], given)]
    zeros = np.zeros((B, H), np.float32)
    expected = _run(*_float64([x, zeros, zeros]), _float64(w), reverse,
                    [g.astype(np.float64) if g is not None else None for g in grads_of], "cpu")
    got = _run(x, None, None, w, reverse, grads_of)
    assert paths == {"forward": 1, "backward": 1}
    for name, a, b in zip(["y", "h_n", "c_n", "x", "hx", "cx", "w_ih", "w_hh", "b_ih", "b_hh"],
                          got, expected):
        np.testing.assert_allclose(a, b, **TOL, err_msg=name)


@pytest.mark.parametrize("biases", [("b_ih", "b_hh"), ("b_ih",), ("b_hh",), ()])
def test_biases_added_in_the_kernel_give_the_bits_of_a_biased_projection(rng, P, biases):
    """The forward kernel adds b_ih + b_hh to the projection as the projection's own
    ``+ (b_ih + b_hh)`` did (rounded the same), for both, one or no biases."""
    B, H = 3, 4
    w, x, hx, cx = _layer(rng, B, H)
    projection = np.einsum("tbi,gi->tbg", x, w["w_ih"]).astype(np.float32)
    bias = sum((w[name] for name in biases), np.zeros(4 * H, np.float32))
    runs = []
    for in_kernel in (False, True):
        gates = projection.copy() if in_kernel else projection + bias
        c, h = np.empty((T + 1, B, H), np.float32), np.empty((T + 1, B, H), np.float32)
        c[0], h[0] = cx, hx
        tanh_c = np.empty((T, B, H), np.float32)
        P.forward(False, w["w_hh"], gates, None, c, tanh_c, h,
                  **({name: w[name] for name in biases} if in_kernel else {}))
        runs.append((gates, c, tanh_c, h))
    for before, after in zip(*runs):
        np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("steps", [1, 6])
def test_sequence_lengths(rng, paths, steps):
    """One step (no value is loaded a step ahead) and a longer sequence."""
    B, H = 2, 3
    w, x, hx, cx = _layer(rng, B, H, steps=steps)
    grads_of = [_random(rng, steps, B, H), _random(rng, B, H), _random(rng, B, H)]
    for reverse in (False, True):
        got = _run(x, hx, cx, w, reverse, grads_of)
        expected = _run(*_float64([x, hx, cx]), _float64(w), reverse, _float64(grads_of), "cpu")
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, **TOL)
    assert paths == {"forward": 2, "backward": 2}


def test_paths_share_the_saved_layout(rng, P, monkeypatch):
    """A persistent forward's buffers feed the per-step backward and give the same gradients:
    both paths keep the activations in one layout."""
    B, H = 3, 5
    w, x, hx, cx = _layer(rng, B, H)
    gy, g_hn, g_cn = _random(rng, T, B, H), _random(rng, B, H), _random(rng, B, H)
    y, _, _, saved = K.rnn_forward("lstm", x, hx, cx, **w)
    persistent = K.rnn_backward(saved, w["w_ih"], w["w_hh"], gy, g_hn, g_cn)
    monkeypatch.setattr(P, "HIDDEN_MAX", 0)                    # the per-step backward
    stepwise = K.rnn_backward(saved, w["w_ih"], w["w_hh"], gy, g_hn, g_cn)
    for a, b in zip(persistent, stepwise):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_too_large_hidden_size_takes_the_step_path(rng, P, monkeypatch, reverse):
    """H over HIDDEN_MAX: the per-step kernels run, with the same results."""
    B, H = 2, 5
    monkeypatch.setattr(P, "HIDDEN_MAX", H - 1)
    assert P.rows_per_block(np.float32, B, H) == 0
    called = []
    monkeypatch.setitem(P.SEQUENCES, "lstm", (called.append, called.append))
    w, x, hx, cx = _layer(rng, B, H)
    grads_of = [_random(rng, T, B, H), _random(rng, B, H), _random(rng, B, H)]
    got = _run(x, hx, cx, w, reverse, grads_of)
    expected = _run(*_float64([x, hx, cx]), _float64(w), reverse, _float64(grads_of), "cpu")
    assert called == []
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, **TOL)


def test_launcher_refuses_what_does_not_fit(P):
    B, H = 2, 65
    arrays = [np.zeros(s, np.float32) for s in
              [(T, B, 4 * H), (B, 4 * H), (T + 1, B, H), (T, B, H), (T + 1, B, H)]]
    with pytest.raises(ValueError, match="hidden size 65 does not take the persistent"):
        P.forward(False, np.zeros((4 * H, H), np.float32), *arrays)


@pytest.mark.parametrize("layers, bidirectional, batch_first, initial",
                         [(2, True, False, True), (1, False, True, False),
                          (2, False, True, True)])
def test_nn_lstm_matches_torch(rng, paths, layers, bidirectional, batch_first, initial):
    from oracle import torch
    B, H = 3, 4
    ours = nn.LSTM(I, H, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    theirs = torch.nn.LSTM(I, H, num_layers=layers, bidirectional=bidirectional,
                           batch_first=batch_first).double()
    ours.load_state_dict({k: v.detach().numpy().astype(np.float32)
                          for k, v in theirs.state_dict().items()})
    D = 2 if bidirectional else 1
    x = _random(rng, *((B, T, I) if batch_first else (T, B, I)))
    states = [_random(rng, layers * D, B, H) for _ in range(2)] if initial else None
    gx = gd.tensor(x, requires_grad=True)
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    g_states = [gd.tensor(s, requires_grad=True) for s in states] if initial else None
    t_states = [torch.tensor(s.astype(np.float64), requires_grad=True)
                for s in states] if initial else None
    out, (h_n, c_n) = ours(gx, tuple(g_states) if initial else None)
    t_out, (t_h, t_c) = theirs(tx, tuple(t_states) if initial else None)
    weights = [_random(rng, *a.shape) for a in (out, h_n, c_n)]
    loss = sum((a * gd.tensor(w)).sum() for a, w in zip((out, h_n, c_n), weights))
    t_loss = sum((a * torch.tensor(w.astype(np.float64))).sum()
                 for a, w in zip((t_out, t_h, t_c), weights))
    loss.backward()
    t_loss.backward()
    assert paths == {"forward": layers * D, "backward": layers * D}
    tol = dict(rtol=1e-4, atol=1e-5)
    for a, b in zip((out, h_n, c_n), (t_out, t_h, t_c)):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), **tol)
    pairs = [(gx, tx)] + list(zip(ours.parameters(), theirs.parameters()))
    pairs += list(zip(g_states, t_states)) if initial else []
    for a, b in pairs:
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), **tol)


def test_captured_training_step_replays_the_persistent_kernels(rng, paths):
    """A sunspots-like step (2-layer LSTM, Linear head, MSE, Adam) under gd.cuda.graph: replays
    run the persistent kernels again and match eager steps."""
    def model():
        gd.manual_seed(3)
        return nn.ModuleList([nn.LSTM(1, 4, num_layers=2, batch_first=True), nn.Linear(4, 1)])

    def step(m, opt, x, y):
        opt.zero_grad()
        out, _ = m[0](x)
        loss = nn.functional.mse_loss(m[1](out[:, -1]), y)
        loss.backward()
        opt.step()
        return loss

    def replay(g, statics, batch):
        for static, value in zip(statics, batch):
            static.copy_(value)
        g.replay()
        return static_loss.numpy().copy()

    data = [(gd.tensor(_random(rng, 2, T, 1)), gd.tensor(_random(rng, 2, 1))) for _ in range(3)]
    eager, graphed = model(), model()
    opt_e, opt_g = (gd.optim.Adam(m.parameters(), lr=0.01) for m in (eager, graphed))
    losses = [step(eager, opt_e, *batch).numpy().copy() for batch in data]
    statics, g = [t.clone() for t in data[0]], gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        static_loss = step(graphed, opt_g, *statics)
    before = dict(paths)
    replayed = [replay(g, statics, batch) for batch in data]
    assert paths["forward"] - before["forward"] == 2 * len(data)      # 2 layers a replay
    assert paths["backward"] - before["backward"] == 2 * len(data)
    np.testing.assert_allclose(replayed, losses, rtol=1e-5)
    for pe, pg in zip(eager.parameters(), graphed.parameters()):
        np.testing.assert_allclose(pg.numpy(), pe.numpy(), rtol=1e-5, atol=1e-6)


def _stack_kernels(call):
    """How many ``cupy stack`` kernels ``call()`` launches (benchmarks/kernel_count.py: counted,
    not run; the results are garbage)."""
    from benchmarks import kernel_count
    counter = kernel_count.Counter()
    with kernel_count.counting_hooks(counter):
        counter.on = True
        call()
        counter.on = False
    return counter.kernels["cupy stack"]


def test_final_states_are_the_kernels_writes_and_fresh_tensors(rng, paths):
    """nn.LSTM's h_n and c_n: the persistent kernels write each layer's final states into one
    (layers * directions, B, H) buffer each, no stack copies them (it took 2); still fresh
    tensors as torch's: edited in place they change nothing else (output, c_n, a second call's
    states), and gradients flow through the edit as in torch (float64 there)."""
    from oracle import torch
    B, H, layers = 3, 4, 2
    ours = nn.LSTM(I, H, num_layers=layers, bidirectional=True)
    theirs = torch.nn.LSTM(I, H, num_layers=layers, bidirectional=True).double()
    ours.load_state_dict({k: v.detach().numpy().astype(np.float32)
                          for k, v in theirs.state_dict().items()})
    x = _random(rng, T, B, I)
    assert _stack_kernels(lambda: ours(gd.tensor(x))) == 0
    out, (h_n, c_n) = ours(gd.tensor(x))
    t_out, (t_h, t_c) = theirs(torch.tensor(x.astype(np.float64)))
    out_before, c_before = out.numpy().copy(), c_n.numpy().copy()
    _, (h_again, _) = ours(gd.tensor(x))
    h_n.mul_(2)
    c_n[0] = 5
    t_h.mul_(2)
    t_c[0] = 5
    np.testing.assert_array_equal(out.numpy(), out_before)
    np.testing.assert_array_equal(c_n.numpy()[1:], c_before[1:])
    np.testing.assert_array_equal(h_n.numpy(), 2 * h_again.numpy())
    weights = [_random(rng, *a.shape) for a in (out, h_n, c_n)]
    sum((a * gd.tensor(w)).sum() for a, w in zip((out, h_n, c_n), weights)).backward()
    sum((a * torch.tensor(w.astype(np.float64))).sum()
        for a, w in zip((t_out, t_h, t_c), weights)).backward()
    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h_n.numpy(), t_h.detach().numpy(), **tol)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), **tol)


def test_final_states_of_other_paths_are_stacked(rng, monkeypatch):
    """A layer the persistent kernel does not take: the states are stacked as before, and
    h_n[-1] is the last layer's final state."""
    monkeypatch.setattr(K, "FORCE_PATH", "per-step")
    lstm = nn.LSTM(I, 4, num_layers=2)
    x = gd.tensor(_random(rng, T, 2, I))
    assert _stack_kernels(lambda: lstm(x)) == 2
    out, (h_n, c_n) = lstm(x)
    np.testing.assert_array_equal(h_n.numpy()[-1], out.numpy()[-1])
