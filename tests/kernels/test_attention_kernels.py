"""kernels.attention's CPU twin against a naive float64 softmax(QK^T)V, values and gradients."""

import tracemalloc

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from gpudl import backend
from gpudl.kernels import attention as K

pytestmark = pytest.mark.skipif(backend.kernel_device(np.zeros(1)) != "cpu",
                                reason="the CPU twin's tests run on the cpu path")


def naive(q, k, v, mask, is_causal, scale, gout):
    """out, lse and (gq, gk, gv) in float64 from the full score matrix, row by row formulas."""
    q, k, v, gout = (a.astype(np.float64) for a in (q, k, v, gout))
    s = np.einsum("ble,bse->bls", q, k) * scale                       # (B, L, S)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask
    if is_causal:
        s = np.where(np.tril(np.ones(s.shape[1:], bool)), s, -np.inf)
    dead = np.all(s == -np.inf, axis=-1, keepdims=True)
    m = np.where(dead, 0, s.max(axis=-1, keepdims=True))
    e = np.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)
    p = np.where(dead, 0, e / np.where(dead, 1, total))
    out = p @ v
    lse = np.where(dead, -np.inf, m + np.log(np.where(dead, 1, total)))[..., 0]
    gv = p.transpose(0, 2, 1) @ gout
    gp = gout @ v.transpose(0, 2, 1)
    gs = p * (gp - (gp * p).sum(axis=-1, keepdims=True))
    return out, lse, (gs @ k * scale, gs.transpose(0, 2, 1) @ q * scale, gv)


@pytest.fixture(params=["default", "tiny"])
def blocks(request, monkeypatch):
    """Run each case with the default tiling and with tiny tiles (many online-softmax steps)."""
    if request.param == "tiny":
        monkeypatch.setattr(K, "BLOCK_Q", 3)
        monkeypatch.setattr(K, "TILE_ELEMENTS", 20)
        monkeypatch.setattr(K, "MIN_BLOCK_K", 4)
    return request.param


def make(rng, B, L, S, E, Ev, dtype=np.float64):
    q, k = rng.standard_normal((B, L, E)), rng.standard_normal((B, S, E))
    v, gout = rng.standard_normal((B, S, Ev)), rng.standard_normal((B, L, Ev))
    return tuple(a.astype(dtype) for a in (q, k, v, gout))


def check(q, k, v, gout, mask=None, is_causal=False, scale=None, rtol=1e-10, atol=1e-12):
    out, lse = K.attention_forward(q, k, v, mask, is_causal, scale)
    grads = K.attention_backward(q, k, v, out, lse, gout, mask, is_causal, scale)
    ref_scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    ref_out, ref_lse, ref_grads = naive(q, k, v, mask, is_causal, ref_scale, gout)
    assert out.dtype == q.dtype and out.shape == ref_out.shape
    np.testing.assert_allclose(out, ref_out, rtol=rtol, atol=atol)
    np.testing.assert_allclose(lse, ref_lse, rtol=rtol, atol=atol)
    for name, g, ref, x in zip("qkv", grads, ref_grads, (q, k, v)):
        assert g.shape == x.shape and g.dtype == x.dtype
        np.testing.assert_allclose(g, ref, rtol=rtol, atol=atol, err_msg=f"gradient of {name}")
    return out, grads


@pytest.mark.parametrize("B, L, S, E, Ev", [
    (2, 7, 11, 8, 8), (3, 13, 5, 16, 9), (1, 33, 70, 64, 64), (2, 9, 17, 128, 128),
    (1, 1, 1, 8, 3), (4, 6, 6, 5, 5)])
def test_matches_naive_reference(rng, blocks, B, L, S, E, Ev):
    check(*make(rng, B, L, S, E, Ev))


@pytest.mark.parametrize("L, S", [(7, 12), (12, 7), (9, 9), (1, 5), (5, 1)])
def test_causal_is_top_left_aligned(rng, blocks, L, S):
    q, k, v, gout = make(rng, 2, L, S, 8, 6)
    check(q, k, v, gout, is_causal=True)


@pytest.mark.parametrize("mask_shape", [(2, 7, 10), (1, 7, 10), (7, 10), (2, 1, 10), (10,)])
def test_bool_mask_broadcasts(rng, blocks, mask_shape):
    q, k, v, gout = make(rng, 2, 7, 10, 8, 8)
    check(q, k, v, gout, mask=rng.random(mask_shape) > 0.3)


def test_float_mask_is_added_with_custom_scale(rng, blocks):
    q, k, v, gout = make(rng, 3, 6, 9, 16, 4)
    mask = rng.standard_normal((3, 6, 9))
    mask[0, 2, ::2] = -np.inf
    check(q, k, v, gout, mask=mask, scale=0.37)


@pytest.mark.parametrize("offset, dtype", [(-150.0, np.float32), (150.0, np.float32),
                                           (-150.0, np.float64), (-1e4, np.float64)])
def test_rows_far_from_the_others_keep_their_own_softmax(rng, blocks, offset, dtype):
    """Rows whose scores sit far below (or above) the rest of their tile: one shift for the
    whole tile would flush them to zero, so they must come out exact all the same."""
    q, k, v, gout = make(rng, 2, 6, 9, 8, 8, dtype)
    mask = np.zeros((2, 6, 9), dtype)
    mask[0, 1] += offset                    # the whole row moves: its softmax does not change
    mask[1, ::2] += offset
    tol = 2e-5 if dtype == np.float32 else 1e-10
    check(q, k, v, gout, mask=mask, rtol=tol, atol=tol)


@pytest.mark.parametrize("B, is_causal", [(3, False), (3, True), (1, False), (4, True)])
def test_threaded_tiles_match_naive_reference(rng, blocks, monkeypatch, B, is_causal):
    """Two worker threads whatever the machine's load: tasks taken as threads finish, and (B
    not a multiple of the workers) key ranges split with their query gradients summed."""
    monkeypatch.setattr(K, "SERIAL_WORK", 0)
    monkeypatch.setattr(K, "CPU_THREADS", 2)
    monkeypatch.setattr(K.cpu_threads, "count", lambda: 2)
    blas_threads = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    q, k, v, gout = make(rng, B, 40, 40 if is_causal else 150, 16, 12)
    check(q, k, v, gout, is_causal=is_causal)
    assert [pool["num_threads"] for pool in threadpool_info()       # BLAS got its threads back
            if pool["user_api"] == "blas"] == blas_threads


@pytest.mark.parametrize("kind", ["bool", "float", "key padding"])
def test_fully_masked_rows_give_zeros_and_zero_gradients(rng, blocks, kind):
    q, k, v, gout = make(rng, 2, 5, 8, 8, 8)
    if kind == "bool":
        mask = rng.random((2, 5, 8)) > 0.3
        mask[1, 3] = False
    elif kind == "float":
        mask = rng.standard_normal((2, 5, 8))
        mask[1, 3] = -np.inf
    else:                                   # every key of batch row 1 padded away
        mask = np.ones((2, 1, 8), bool)
        mask[1] = False
    out, grads = check(q, k, v, gout, mask=mask)
    np.testing.assert_array_equal(out[1, 3], 0)
    np.testing.assert_array_equal(grads[0][1, 3], 0)
    assert all(np.isfinite(g).all() for g in grads)


def test_no_keys_at_all_gives_zeros(rng):
    q, k, v, gout = make(rng, 2, 3, 0, 4, 5)
    out, lse = K.attention_forward(q, k, v)
    np.testing.assert_array_equal(out, np.zeros((2, 3, 5)))
    assert np.all(lse == -np.inf)
    gq, gk, gv = K.attention_backward(q, k, v, out, lse, gout)
    np.testing.assert_array_equal(gq, 0)
    assert gk.shape == (2, 0, 4) and gv.shape == (2, 0, 5)


def test_empty_batch_and_queries(rng):
    for B, L in ((0, 4), (2, 0)):
        q, k, v, gout = make(rng, B, L, 3, 4, 4)
        out, lse = K.attention_forward(q, k, v)
        assert out.shape == (B, L, 4) and lse.shape == (B, L)
        assert [g.shape for g in K.attention_backward(q, k, v, out, lse, gout)] == \
            [q.shape, k.shape, v.shape]


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-5), (np.float16, 2e-2)])
def test_low_precision_inputs_accumulate_in_float32(rng, blocks, dtype, rtol):
    q, k, v, gout = make(rng, 2, 9, 14, 16, 16, dtype)
    mask = rng.random((9, 14)) > 0.2
    out, lse = K.attention_forward(q, k, v, mask, False)
    assert out.dtype == dtype and lse.dtype == np.float32
    ref_out, ref_lse, ref_grads = naive(q, k, v, mask, False, 0.25, gout)
    np.testing.assert_allclose(out, ref_out, rtol=rtol, atol=rtol)
    grads = K.attention_backward(q, k, v, out, lse, gout, mask, False)
    for g, ref in zip(grads, ref_grads):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, ref, rtol=rtol, atol=5 * rtol)


def test_nan_propagates(rng):
    q, k, v, gout = make(rng, 1, 4, 6, 8, 8)
    q[0, 1, 2] = np.nan
    out, lse = K.attention_forward(q, k, v)
    assert np.isnan(out[0, 1]).all() and not np.isnan(np.delete(out[0], 1, axis=0)).any()


def test_forward_memory_is_bounded_by_the_tiles(rng):
    """L = S = 4096, E = 64: the score matrix alone would be 64 MiB in float32."""
    n, e = 4096, 64
    q, k, v = (rng.standard_normal((1, n, e), dtype=np.float32) for _ in range(3))
    full_matrix = n * n * 4
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out, lse = K.attention_forward(q, k, v, None, True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tile_bound = 6 * K.TILE_ELEMENTS * 4 * K.CPU_THREADS + out.nbytes + lse.nbytes
    assert peak < tile_bound < full_matrix / 4, (peak, tile_bound)
    rows = [5, 2047, 4095]                  # spot-check rows against a naive float64 row
    s = (q[0, rows].astype(np.float64) @ k[0].T.astype(np.float64)) / 8
    s[np.arange(n)[None, :] > np.array(rows)[:, None]] = -np.inf
    p = np.exp(s - s.max(axis=1, keepdims=True))
    expected = (p / p.sum(axis=1, keepdims=True)) @ v[0].astype(np.float64)
    np.testing.assert_allclose(out[0, rows], expected, rtol=1e-4, atol=1e-5)


def test_backward_memory_is_bounded_by_the_tiles(rng):
    n, e = 2048, 32
    q, k, v, gout = (rng.standard_normal((1, n, e), dtype=np.float32) for _ in range(4))
    out, lse = K.attention_forward(q, k, v)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        grads = K.attention_backward(q, k, v, out, lse, gout)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * K.TILE_ELEMENTS * 4 * K.CPU_THREADS + 6 * q.nbytes < n * n * 4, peak
    assert all(np.isfinite(g).all() for g in grads)
