"""kernels.lstm (the CPU twin) against a naive float64 loop: forward values, and backward against
central finite differences of that loop, for every mode, both directions, with and without bias."""

import numpy as np
import pytest
from gpudl.kernels import lstm as K

MODES = K.MODES


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def oracle(mode, x, hx, cx, w_ih, w_hh, b_ih, b_hh, reverse):
    """The textbook recurrence, one time step at a time, written independently of the kernels."""
    T = x.shape[0]
    b_ih = np.zeros(w_ih.shape[0]) if b_ih is None else b_ih
    b_hh = np.zeros(w_hh.shape[0]) if b_hh is None else b_hh
    h, c = hx, cx
    ys = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        gi = x[t] @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        if mode == "lstm":
            i, f, g, o = np.split(gi + gh, 4, axis=1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
        elif mode == "gru":
            (xr, xz, xn), (hr, hz, hn) = np.split(gi, 3, axis=1), np.split(gh, 3, axis=1)
            r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
            n = np.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
        elif mode == "rnn_tanh":
            h = np.tanh(gi + gh)
        else:
            h = np.maximum(gi + gh, 0)
        ys[t] = h
    return np.stack(ys), h, c


def _inputs(rng, mode, T, B, I, H, bias=True, dtype=np.float64):
    G = K.GATES[mode]
    arrays = {
        "x": rng.standard_normal((T, B, I)), "hx": rng.standard_normal((B, H)),
        "cx": rng.standard_normal((B, H)) if mode == "lstm" else None,
        "w_ih": rng.standard_normal((G * H, I)) * 0.6, "w_hh": rng.standard_normal((G * H, H)) * 0.6,
        "b_ih": rng.standard_normal(G * H) if bias else None,
        "b_hh": rng.standard_normal(G * H) if bias else None,
    }
    return {k: (v.astype(dtype) if v is not None else None) for k, v in arrays.items()}


def _loss(mode, a, weights, reverse):
    y, h_n, c_n = oracle(mode, reverse=reverse, **a)
    total = np.sum(y * weights[0]) + np.sum(h_n * weights[1])
    return total + (np.sum(c_n * weights[2]) if mode == "lstm" else 0.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (1, 1, 2, 3), (3, 2, 1, 1)])
def test_forward_matches_the_naive_loop(rng, mode, reverse, shape):
    a = _inputs(rng, mode, *shape)
    y, h_n, c_n, _ = K.rnn_forward(mode, reverse=reverse, device="cpu", **a)
    ry, rh, rc = oracle(mode, reverse=reverse, **a)
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n, rh, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y[0 if reverse else -1], h_n, rtol=0, atol=0)
    if mode == "lstm":
        np.testing.assert_allclose(c_n, rc, rtol=1e-12, atol=1e-12)
    else:
        assert c_n is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_backward_matches_finite_differences(rng, mode, reverse, bias):
    T, B, I, H = 3, 2, 3, 2
    a = _inputs(rng, mode, T, B, I, H, bias)
    weights = [rng.standard_normal((T, B, H)), rng.standard_normal((B, H)),
               rng.standard_normal((B, H))]
    _, _, _, saved = K.rnn_forward(mode, reverse=reverse, device="cpu", **a)
    names = ("x", "hx", "cx", "w_ih", "w_hh", "b_ih", "b_hh")
    grads = K.rnn_backward(saved, a["w_ih"], a["w_hh"], weights[0], weights[1],
                           weights[2] if mode == "lstm" else None,
                           needs=tuple(a[name] is not None for name in names))
    eps = 1e-6
    for name, grad in zip(names, grads):
        if a[name] is None:
            assert grad is None, name
            continue
        numeric = np.zeros_like(a[name])
        flat = a[name].reshape(-1)
        for k in range(flat.size):
            saved_value = flat[k]
            flat[k] = saved_value + eps
            plus = _loss(mode, a, weights, reverse)
            flat[k] = saved_value - eps
            minus = _loss(mode, a, weights, reverse)
            flat[k] = saved_value
            numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_needs_skips_gradients(rng, mode):
    a = _inputs(rng, mode, 3, 2, 3, 4)
    y, _, _, saved = K.rnn_forward(mode, device="cpu", **a)
    grads = K.rnn_backward(saved, a["w_ih"], a["w_hh"], np.ones_like(y),
                           needs=(False, False, False, True, False, False, True))
    assert [g is None for g in grads] == [True, True, True, False, True, True, False]


@pytest.mark.parametrize("mode", MODES)
def test_float32_agrees_with_float64(rng, mode):
    a64 = _inputs(rng, mode, 6, 4, 5, 7)
    a32 = {k: (v.astype(np.float32) if v is not None else None) for k, v in a64.items()}
    out64 = K.rnn_forward(mode, device="cpu", **a64)
    out32 = K.rnn_forward(mode, device="cpu", **a32)
    assert out32[0].dtype == np.float32
    np.testing.assert_allclose(out32[0], out64[0], rtol=1e-5, atol=1e-5)
    gy = rng.standard_normal(out64[0].shape)
    g64 = K.rnn_backward(out64[3], a64["w_ih"], a64["w_hh"], gy)
    g32 = K.rnn_backward(out32[3], a32["w_ih"], a32["w_hh"], gy.astype(np.float32))
    for g, r in zip(g32, g64):
        if r is not None:
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_empty_batch(rng, mode):
    a = _inputs(rng, mode, 3, 0, 2, 4)
    y, h_n, _, saved = K.rnn_forward(mode, device="cpu", **a)
    assert y.shape == (3, 0, 4) and h_n.shape == (0, 4)
    grads = K.rnn_backward(saved, a["w_ih"], a["w_hh"], np.zeros_like(y))
    assert grads[0].shape == (3, 0, 2)
    np.testing.assert_array_equal(grads[3], 0)


def test_nan_propagates(rng):
    a = _inputs(rng, "lstm", 3, 2, 3, 4)
    a["x"][1, 0, 0] = np.nan
    y, _, c_n, _ = K.rnn_forward("lstm", device="cpu", **a)
    assert not np.isnan(y[0]).any()                 # before the NaN arrives
    assert np.isnan(y[1:, 0]).all() and not np.isnan(y[:, 1]).any()
    assert np.isnan(c_n[0]).all()
