"""The CPU LSTM's whole-pass Numba chains (kernels/lstm.py ``_lstm_forward_rows`` /
``_lstm_backward_rows``), run on row groups of the batch, one thread each (``_on_row_groups``):
the float32 tanh they use against float64 NumPy, the same bits whatever the number of groups,
gradients against PyTorch in float64, and a failing group's exception reaching the caller."""

import time

import numpy as np
import pytest
import torch
from gpudl import cpu_threads
from gpudl.kernels import lstm as K


@pytest.fixture(autouse=True)
def threaded_groups(monkeypatch):
    """The row groups on threads (kernels/lstm.py THREADED_GROUPS, on by default: kept on here
    whatever the default becomes)."""
    monkeypatch.setattr(K, "THREADED_GROUPS", True)


def _ulps(got, x):
    """|got - tanh(x)| in float32 ulps of tanh(x), tanh taken in float64."""
    exact = np.tanh(x.astype(np.float64))
    return np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(exact).astype(np.float32))


@pytest.mark.parametrize("shape", [(1, 1), (3, 37), (16, 512)])
def test_tanh32_within_8_ulps_of_float64(shape):
    rng = np.random.default_rng()
    x = (rng.standard_normal(shape) * rng.choice([1e-3, 0.5, 3, 12], shape)).astype(np.float32)
    out = np.full_like(x, np.nan)
    K._tanh_rows(x, out)
    assert _ulps(out, x).max() <= 8
    in_place = x.copy()
    K._tanh_in_place(in_place)
    np.testing.assert_array_equal(in_place, out)


def test_tanh32_over_its_whole_range():
    x = np.linspace(-10, 10, 1_000_001, dtype=np.float32)[None]
    out = np.empty_like(x)
    K._tanh_rows(x, out)
    assert _ulps(out, x).max() <= 8


def test_tanh32_special_values():
    x = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 40.0, -40.0]], np.float32)
    out = np.empty_like(x)
    K._tanh_rows(x, out)
    assert np.isnan(out[0, 0])
    np.testing.assert_array_equal(out[0, [1, 2, 3, 4, 6, 7]], [1, -1, 0, 0, 1, -1])
    assert abs(out[0, 5] - x[0, 5]) <= np.spacing(x[0, 5])     # tanh(x) = x this close to 0
    assert not np.signbit(out[0, 3]) and np.signbit(out[0, 4])


def _lstm_case(rng, dtype, T, B, I=5, H=12):
    return dict(
        x=rng.standard_normal((T, B, I)).astype(dtype),
        hx=rng.standard_normal((B, H)).astype(dtype), cx=rng.standard_normal((B, H)).astype(dtype),
        w_ih=(0.4 * rng.standard_normal((4 * H, I))).astype(dtype),
        w_hh=(0.4 * rng.standard_normal((4 * H, H))).astype(dtype),
        b_ih=rng.standard_normal(4 * H).astype(dtype),
        b_hh=rng.standard_normal(4 * H).astype(dtype),
        gy=rng.standard_normal((T, B, H)).astype(dtype),
        g_hn=rng.standard_normal((B, H)).astype(dtype),
        g_cn=rng.standard_normal((B, H)).astype(dtype))


def _run(case, reverse, bias=True):
    """Every output and gradient of one layer, as fresh arrays (the layer reuses its buffers)."""
    b_ih, b_hh = (case["b_ih"], case["b_hh"]) if bias else (None, None)
    y, h_n, c_n, saved = K.rnn_forward("lstm", case["x"], case["hx"], case["cx"], case["w_ih"],
                                       case["w_hh"], b_ih, b_hh, reverse)
    outputs = [np.array(y), np.array(h_n), np.array(c_n)]
    grads = K.rnn_backward(saved, case["w_ih"], case["w_hh"], case["gy"], case["g_hn"],
                           case["g_cn"])
    return outputs + [np.array(g) for g in grads]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 4, 7, 8, 13, 16, 23])
@pytest.mark.parametrize("reverse", [False, True])
def test_row_groups_give_the_same_bits(monkeypatch, dtype, B, reverse):
    case = _lstm_case(np.random.default_rng(), dtype, T=6, B=B)
    results = []
    for threads in (1, 2, 3, 1):
        monkeypatch.setattr(cpu_threads, "count", lambda threads=threads: threads)
        results.append(_run(case, reverse))
    for other in results[1:]:
        for got, first in zip(other, results[0]):
            np.testing.assert_array_equal(got, first)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("reverse, bias", [(False, True), (True, True), (False, False)])
def test_float32_passes_match_torch_float64(monkeypatch, threads, reverse, bias):
    monkeypatch.setattr(cpu_threads, "count", lambda: threads)
    T, B = 32, 16
    case = _lstm_case(np.random.default_rng(), np.float32, T, B)
    got = _run(case, reverse, bias)
    if not bias:
        case["b_ih"] = case["b_hh"] = np.zeros_like(case["b_ih"])

    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in case.items()}
    x = t["x"].flip(0) if reverse else t["x"]
    out, h_n, c_n = torch._VF.lstm(x, (t["hx"][None], t["cx"][None]),
                                     [t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"]],
                                     True, 1, 0.0, False, False, False)
    y = out.flip(0) if reverse else out
    ((y * t["gy"]).sum() + (h_n[0] * t["g_hn"]).sum() + (c_n[0] * t["g_cn"]).sum()).backward()
    expected = [y, h_n[0], c_n[0]] + [t[k].grad for k in ("x", "hx", "cx", "w_ih", "w_hh",
                                                         "b_ih", "b_hh")]
    for name, g, e in zip(["y", "h_n", "c_n", "x", "hx", "cx", "w_ih", "w_hh", "b_ih", "b_hh"],
                          got, expected):
        e = e.detach().numpy()
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(e).max()),
                                   err_msg=name)


@pytest.mark.parametrize("B, threads", [(16, 2), (17, 2), (23, 3), (8, 5), (12, 2), (3, 2)])
def test_row_groups_cover_the_batch_in_blocks_of_4(monkeypatch, B, threads):
    monkeypatch.setattr(cpu_threads, "count", lambda: threads)
    seen = []
    K._on_row_groups(lambda tag, r0, r1: seen.append((tag, r0, r1)), B, "x")
    seen.sort()
    assert [r[0] for r in seen] == ["x"] * len(seen)
    assert seen[0][1] == 0 and seen[-1][2] == B
    assert all(a[2] == b[1] for a, b in zip(seen, seen[1:]))
    assert all(r0 % K.GROUP_ROWS == 0 and r1 > r0 for _, r0, r1 in seen)
    # more groups than threads where the batch allows (a thread held up takes fewer)
    assert len(seen) == max(1, min(threads * K.GROUPS_PER_THREAD, B // K.GROUP_ROWS))


def test_a_failing_row_group_raises_in_the_caller(monkeypatch):
    """The group's exception reaches the caller, and only once no thread still runs a group
    (the buffers are the caller's again); groups not started by then are skipped."""
    monkeypatch.setattr(cpu_threads, "count", lambda: 2)
    started, done = [], []

    def chain(r0, r1):
        started.append((r0, r1))
        if r0 == 8:
            raise ValueError(f"rows {r0}:{r1} failed")
        time.sleep(0.01)
        done.append((r0, r1))

    with pytest.raises(ValueError, match="rows 8:12 failed"):
        K._on_row_groups(chain, 16)
    assert sorted(done) == sorted(r for r in started if r != (8, 12))
    assert (8, 12) in started and (0, 4) in done
    assert cpu_threads._state["serial"] == 0        # BLAS got its threads back


@pytest.mark.parametrize("threads", [1, 2])
def test_input_gradient_only_when_wanted(monkeypatch, threads):
    """The backward chains make the input's gradient step by step: without it, the other
    gradients are the same bits."""
    monkeypatch.setattr(cpu_threads, "count", lambda: threads)
    case = _lstm_case(np.random.default_rng(), np.float32, T=7, B=12)
    _, _, _, saved = K.rnn_forward("lstm", case["x"], case["hx"], case["cx"], case["w_ih"],
                                   case["w_hh"], case["b_ih"], case["b_hh"])
    args = (saved, case["w_ih"], case["w_hh"], case["gy"], case["g_hn"], case["g_cn"])
    every = [np.array(g) for g in K.rnn_backward(*args)]
    some = K.rnn_backward(*args, needs=(False,) + (True,) * 6)
    assert some[0] is None
    for got, expected in zip(some[1:], every[1:]):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 32, 33, 512, 4096 + 3])
def test_gemm_parts_cover_the_rows_once_each_start_aligned(n):
    parts = K._row_parts(n)
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a < b for a, b in parts) and all(p[1] == q[0] for p, q in zip(parts, parts[1:]))
    assert all(a % 16 == 0 for a, _ in parts) and len(parts) <= K.GEMM_PARTS


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("needs", [(False, True, True, True, False, False, True),
                                   (True, False, False, False, True, True, False),
                                   (False, False, False, True, True, False, False)])
def test_weight_gradients_any_subset_any_threads(monkeypatch, threads, needs):
    """The weight and bias gradients from the chains' column copies (``_column_weight_grads``):
    None where not wanted, and where wanted the same bits as with every gradient wanted on one
    thread (which test_gradients_match_torch_float64 checks against PyTorch)."""
    case = _lstm_case(np.random.default_rng(), np.float32, T=9, B=13, I=33, H=20)
    monkeypatch.setattr(cpu_threads, "count", lambda: 1)
    every = _run(case, False)[3:]
    monkeypatch.setattr(cpu_threads, "count", lambda: threads)
    _, _, _, saved = K.rnn_forward("lstm", case["x"], case["hx"], case["cx"], case["w_ih"],
                                   case["w_hh"], case["b_ih"], case["b_hh"])
    some = K.rnn_backward(saved, case["w_ih"], case["w_hh"], case["gy"], case["g_hn"],
                          case["g_cn"], needs=needs)
    for wanted, got, want in zip(needs, some, every):
        assert (got is None) == (not wanted)
        if wanted:
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_backward_without_the_forwards_transposed_weights(monkeypatch, threads):
    """A forward told no backward follows keeps no transposed weights; a backward on it anyway
    makes them itself and gives the same bits."""
    monkeypatch.setattr(cpu_threads, "count", lambda: threads)
    case = _lstm_case(np.random.default_rng(), np.float32, T=6, B=9)
    results = []
    for for_backward in (True, False):
        y, _, _, saved = K.rnn_forward("lstm", case["x"], case["hx"], case["cx"], case["w_ih"],
                                       case["w_hh"], case["b_ih"], case["b_hh"],
                                       for_backward=for_backward)
        assert ("w_cols" in saved) == for_backward
        grads = K.rnn_backward(saved, case["w_ih"], case["w_hh"], case["gy"], case["g_hn"],
                               case["g_cn"])
        results.append([np.array(y)] + [np.array(g) for g in grads])
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)
