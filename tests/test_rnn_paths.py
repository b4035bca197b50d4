"""Which path a recurrent layer takes (kernels/lstm.py ``choose_path``) and the graphed-steps
path's bookkeeping (kernels/step_graphs.py), on the CPU: the capture is replaced by a plain
re-run of the loop, so what is tested is the key, the buffers kept per key and the copies in and
out, against the per-step path. The CUDA graph itself needs a GPU (tests/test_cuda_graphs.py)."""

import numpy as np
import pytest
from gpudl.kernels import lstm as K
from gpudl.kernels.step_graphs import StepGraphs

F32, F64 = np.float32, np.float64


@pytest.mark.parametrize("mode, dtype, B, H, T, device, capturing, sm_count, expected", [
    ("lstm", F32, 64, 32, 128, "cuda", False, 132, "persistent-regs"),     # sunspots
    ("lstm", F32, 64, 64, 128, "cuda", False, 132, "persistent-regs"),
    ("lstm", F32, 64, 65, 128, "cuda", False, 132, "persistent-grid"),
    ("lstm", F32, 64, 128, 128, "cuda", False, 132, "persistent-grid"),
    ("lstm", F32, 495, 128, 128, "cuda", False, 132, "persistent-grid"),    # README's bounds
    ("lstm", F32, 496, 128, 128, "cuda", False, 132, "graphed-steps"),
    ("lstm", F32, 64, 256, 128, "cuda", False, 132, "persistent-grid"),    # 16 x 8 blocks
    ("lstm", F32, 72, 256, 128, "cuda", False, 132, "persistent-grid"),    # 9 rows a block
    ("lstm", F32, 73, 256, 128, "cuda", False, 132, "graphed-steps"),      # 10 > shared's 9
    ("lstm", F32, 10, 512, 128, "cuda", False, 132, "persistent-grid"),
    ("lstm", F32, 11, 512, 128, "cuda", False, 132, "graphed-steps"),
    ("lstm", F32, 4, 513, 128, "cuda", False, 132, "graphed-steps"),
    ("lstm", F32, 64, 256, 128, "cuda", False, 100, "graphed-steps"),      # a smaller GPU
    ("lstm", F64, 4, 32, 128, "cuda", False, 132, "graphed-steps"),
    ("gru", F32, 4, 32, 128, "cuda", False, 132, "graphed-steps"),
    ("rnn_tanh", F32, 4, 32, 128, "cuda", False, 132, "graphed-steps"),
    ("gru", F32, 4, 32, 3, "cuda", False, 132, "per-step"),                # too short
    ("gru", F32, 0, 32, 128, "cuda", False, 132, "per-step"),              # empty batch
    ("gru", F32, 4, 32, 128, "cuda", True, 132, "per-step"),               # a user's capture
    ("lstm", F32, 4, 32, 128, "cuda", True, 132, "persistent-regs"),       # capturable itself
    ("lstm", F32, 4, 128, 128, "simulator", False, 132, "persistent-grid"),
    ("gru", F32, 4, 32, 128, "simulator", False, 132, "per-step"),         # no graphs there
    ("lstm", F32, 4, 32, 128, "cpu", False, 132, "per-step"),
])
def test_choose_path(mode, dtype, B, H, T, device, capturing, sm_count, expected):
    assert K.choose_path(mode, dtype, B, H, T, device, capturing, sm_count) == expected


def test_forced_path_applies_only_where_it_can(monkeypatch):
    monkeypatch.setattr(K, "FORCE_PATH", "per-step")
    assert K.choose_path("lstm", F32, 4, 32, 128, "cuda") == "per-step"
    monkeypatch.setattr(K, "FORCE_PATH", "graphed-steps")
    assert K.choose_path("lstm", F32, 4, 32, 128, "cuda") == "graphed-steps"
    assert K.choose_path("lstm", F32, 4, 32, 128, "simulator") == "persistent-regs"
    monkeypatch.setattr(K, "FORCE_PATH", "persistent-grid")
    assert K.choose_path("gru", F32, 4, 32, 128, "cuda") == "graphed-steps"


@pytest.fixture
def graphs(monkeypatch):
    """Every layer on the graphed path, its 'graph' a re-run of the captured loop."""
    graphs = StepGraphs(capacity=3, capture=lambda run: run)
    monkeypatch.setattr(K, "_GRAPHS", graphs)
    monkeypatch.setattr(K, "_path", lambda *args: "graphed-steps")
    return graphs


def _layer(rng, mode, T, B, I, H):
    G = K.GATES[mode]
    w = [rng.standard_normal(s).astype(F32) * 0.5 for s in ((G * H, I), (G * H, H), (G * H,),
                                                              (G * H,))]
    x, hx = rng.standard_normal((T, B, I)).astype(F32), rng.standard_normal((B, H)).astype(F32)
    cx = rng.standard_normal((B, H)).astype(F32) if mode == "lstm" else None
    grads = [rng.standard_normal(s).astype(F32) for s in ((T, B, H), (B, H), (B, H))]
    return w, x, hx, cx, grads


def _forward(mode, w, x, hx, cx, reverse):
    return K.rnn_forward(mode, x, hx, cx, *w, reverse=reverse)


def _backward(mode, w, out, grads):
    return K.rnn_backward(out[3], w[0], w[1], grads[0], grads[1],
                          grads[2] if mode == "lstm" else None)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_relu"])
def test_graphed_steps_match_the_step_loop(rng, graphs, monkeypatch, mode):
    """Two layers of one key, both forwards before either backward (the saved arrays must be
    the caller's, not the kept buffers), then a second round reusing the captures; both
    directions."""
    T, B, I, H = 5, 3, 4, 6
    layers = [_layer(rng, mode, T, B, I, H) for _ in range(2)]
    for reverse in (False, True):
        for _ in range(2):
            outs = [_forward(mode, w, x, hx, cx, reverse) for w, x, hx, cx, _ in layers]
            got = [(out[:3], _backward(mode, layer[0], out, layer[4]))
                   for layer, out in zip(layers, outs)]
            with monkeypatch.context() as m:
                m.setattr(K, "_path", lambda *args: "per-step")
                for (w, x, hx, cx, grads), (forward, backward) in zip(layers, got):
                    out = _forward(mode, w, x, hx, cx, reverse)
                    for a, b in zip(forward + backward, list(out[:3]) + list(
                            _backward(mode, w, out, grads))):
                        if b is None:
                            assert a is None
                        else:
                            np.testing.assert_array_equal(a, b)
    assert graphs.captures == 4     # (forward, backward) x 2 directions; the rest replayed
    assert len(graphs) == 3         # capacity 3: the oldest dropped


def test_keys_capture_at_their_second_call_and_evict_least_recent():
    runs = []
    graphs = StepGraphs(capacity=2, capture=lambda run: run)

    def body(buffers):
        runs.append(buffers[0].shape)
        buffers[0] += 1

    arrays = {"a": np.zeros(2), "b": np.zeros(3), "c": np.zeros(4)}

    def run(key):
        graphs.run(key, body, [arrays[key]])

    run("a")
    run("b")                        # first calls run as they are
    assert graphs.captures == 0 and len(graphs) == 0
    run("a")
    run("b")
    run("c")
    assert graphs.captures == 2 and len(graphs) == 2
    run("c")                        # captured, a (least recent) dropped
    assert graphs.captures == 3 and len(graphs) == 2
    run("a")                        # a first call again
    assert graphs.captures == 3
    run("a")
    assert graphs.captures == 4
    assert [a.tolist() for a in arrays.values()] == [[4, 4], [2, 2, 2], [2, 2, 2, 2]]


def test_grid_kernels_unavailable_fall_back_to_the_step_loop(rng, monkeypatch):
    """A GPU where the grid kernels fail to build or launch (no libcudadevrt, a refused
    cooperative launch): the layer runs the step loop on the same arrays, and choose_path leaves
    the grid path out from then on."""
    from gpudl.kernels import lstm_grid_cuda

    def unavailable(*args):
        raise lstm_grid_cuda.Unavailable("no libcudadevrt")
    monkeypatch.setitem(lstm_grid_cuda.SEQUENCES, "lstm", (unavailable, unavailable))
    paths = iter(["persistent-grid", "per-step"] * 2)
    monkeypatch.setattr(K, "_path", lambda *args: next(paths))
    w, x, hx, cx, grads = _layer(rng, "lstm", 4, 2, 3, 5)
    out = _forward("lstm", w, x, hx, cx, False)
    got = [*out[:3], *_backward("lstm", w, out, grads)]
    monkeypatch.setattr(K, "_path", lambda *args: "per-step")
    out = _forward("lstm", w, x, hx, cx, False)
    for a, b in zip(got, [*out[:3], *_backward("lstm", w, out, grads)]):
        np.testing.assert_array_equal(a, b)
    assert K.choose_path("lstm", F32, 4, 128, 128, "cuda", grid=False) == "graphed-steps"


ON_GPU = __import__("gpudl").backend._cupy is not None


@pytest.mark.skipif(not ON_GPU, reason="needs a GPU (CuPy)")
@pytest.mark.parametrize("path, B, H", [("persistent-grid", 8, 128), ("persistent-grid", 5, 256),
                                        ("persistent-grid", 3, 512), ("graphed-steps", 8, 128),
                                        ("graphed-steps", 4, 32), ("per-step", 8, 128)])
@pytest.mark.parametrize("reverse", [False, True])
def test_gpu_paths_match_float64_twin(rng, monkeypatch, path, B, H, reverse):
    """On a GPU each path of a layer (forced) against the CPU twin in float64, three times (the
    graphed path: a plain run, the capture and its replay, a replay)."""
    import cupy
    from gpudl.kernels import lstm_grid_cuda
    monkeypatch.setattr(K, "FORCE_PATH", path)
    T, I = 6, 5
    w, x, hx, cx, grads = _layer(rng, "lstm", T, B, I, H)
    assert K._path("lstm", None, cupy.asarray(x), H) == path
    f64 = lambda a: a.astype(F64)   # noqa: E731
    out = K.rnn_forward("lstm", f64(x), f64(hx), f64(cx), *map(f64, w), reverse=reverse,
                        device="cpu")
    expected = [*out[:3], *K.rnn_backward(out[3], f64(w[0]), f64(w[1]), *map(f64, grads))]
    for _ in range(3):
        d = [cupy.asarray(a) for a in (x, hx, cx)]
        dw, dg = [cupy.asarray(a) for a in w], [cupy.asarray(a) for a in grads]
        out = K.rnn_forward("lstm", *d, *dw, reverse=reverse)
        got = [*out[:3], *K.rnn_backward(out[3], dw[0], dw[1], *dg)]
        for a, b in zip(got, expected):
            _assert_float32_close(cupy.asnumpy(a), b)
    assert not lstm_grid_cuda.FAILED


def _assert_float32_close(got, expected):
    """float32 against a float64 reference: the relative error of the whole array far under
    1e-3, and no element off by more than a few thousandths of the array's scale. Elementwise
    rtol=1e-4 failed on the first GPU run at gradients where terms cancel (0.2933 against
    0.2927 in an array up to 9: float32 rounding over 6 steps of 512-wide sums)."""
    scale = max(float(np.abs(expected).max()), 1e-30)
    error = np.linalg.norm(got - expected) / max(float(np.linalg.norm(expected)), 1e-30)
    assert error < 1e-4, error
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=3e-4 * scale)


@pytest.mark.skipif(not ON_GPU, reason="needs a GPU (CuPy)")
@pytest.mark.parametrize("hidden", [128, 600])     # the grid kernels; the step loop
def test_gpu_whole_step_capture_takes_the_wide_lstm(hidden):
    """A user's whole-step CUDA graph around an LSTM the grid kernels take (a cooperative launch
    captured into the graph) or one the step loop takes (its steps go into the user's graph, no
    graph of its own): replays equal eager steps."""
    import gpudl as gd
    from gpudl import nn
    gd.manual_seed(0)
    lstm = nn.LSTM(3, hidden)
    x = gd.randn(5, 2, 3)
    grads = []

    def step():
        lstm.zero_grad()
        out, (h, c) = lstm(x)
        (out.square().sum() + h.sum() + c.sum()).backward()
        return [p.grad.numpy().copy() for p in lstm.parameters()]

    eager = step()
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        lstm.zero_grad()
        out, (h, c) = lstm(x)
        (out.square().sum() + h.sum() + c.sum()).backward()
    for _ in range(2):
        g.replay()
        grads.append([p.grad.numpy().copy() for p in lstm.parameters()])
    for replay in grads:
        for a, b in zip(replay, eager):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
