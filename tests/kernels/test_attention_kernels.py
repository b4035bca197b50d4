"""kernels.attention's CPU twin against a naive float64 softmax(QK^T)V, values and gradients."""

import math
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


def masking_row_3(rng, kind):
    """A (.., 5, 8) mask for (2, 5, 8) scores that hides every key of query 3 in batch row 1."""
    if kind == "bool":
        mask = rng.random((2, 5, 8)) > 0.3
        mask[1, 3] = False
    elif kind == "float":
        mask = rng.standard_normal((2, 5, 8))
        mask[1, 3] = -np.inf
    elif kind == "key padding":             # every key of batch row 1 padded away
        mask = np.ones((2, 1, 8), bool)
        mask[1] = False
    else:                                   # "all hidden": no key for anyone
        mask = np.zeros((1, 1), bool)
    return mask


@pytest.mark.parametrize("kind", ["bool", "float", "key padding"])
def test_fully_masked_rows_give_zeros_and_zero_gradients(rng, blocks, kind):
    q, k, v, gout = make(rng, 2, 5, 8, 8, 8)
    out, grads = check(q, k, v, gout, mask=masking_row_3(rng, kind))
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
    # the tiles' bound grows with the threads (8 on a 16-core machine): the whole matrix too
    n, e = max(2048, 256 * math.ceil(4 * math.sqrt(K.CPU_THREADS))), 32
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


# --------------------------------------------------------------------------- attention_small
# float32 calls of one tile run in kernels/attention_small.py (BLAS GEMMs, one Numba pass
# between them); the cases above run it only where they are float32.

@pytest.fixture
def small_calls(monkeypatch):
    """Counts the calls that attention_small's forward and backward took."""
    calls = {"forward": 0, "backward": 0}
    for name in calls:
        def spy(*args, _name=name, _run=getattr(K.attention_small, name), **kwargs):
            calls[_name] += 1
            return _run(*args, **kwargs)
        monkeypatch.setattr(K.attention_small, name, spy)
    return calls


F32_TOL = dict(rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("B, L, S, E, Ev, is_causal", [
    (2, 64, 64, 16, 16, False), (2, 64, 64, 16, 16, True), (3, 13, 5, 16, 9, False),
    (1, 1, 1, 8, 3, False), (2, 7, 12, 8, 6, True), (2, 12, 7, 8, 6, True),
    (4, 33, 70, 32, 24, False), (1, 5, 130, 64, 64, True)])
def test_small_calls_match_naive_reference(rng, small_calls, B, L, S, E, Ev, is_causal):
    check(*make(rng, B, L, S, E, Ev, np.float32), is_causal=is_causal, **F32_TOL)
    assert small_calls == {"forward": 1, "backward": 1}


@pytest.mark.parametrize("is_causal, mask_kind", [(False, None), (True, None),
                                                  (False, "bool"), (False, "float")])
def test_small_calls_keep_probabilities_for_backward(rng, small_calls, is_causal, mask_kind):
    """keep_probs: forward returns P, backward uses it (untouched) instead of recomputing it;
    the gradients match the recomputed ones and the naive reference."""
    q, k, v, gout = make(rng, 3, 9, 12, 8, 5, np.float32)
    mask = None if mask_kind is None else (rng.random((9, 12)) > 0.3 if mask_kind == "bool"
                                           else rng.standard_normal((3, 9, 12)))
    out, lse, probs = K.attention_forward(q, k, v, mask, is_causal, 0.4, keep_probs=True)
    kept = probs.copy()
    grads = K.attention_backward(q, k, v, out, lse, gout, mask, is_causal, 0.4, probs)
    again = K.attention_backward(q, k, v, out, lse, gout, mask, is_causal, 0.4)
    np.testing.assert_array_equal(probs, kept)
    ref_out, _, ref_grads = naive(q, k, v, mask, is_causal, 0.4, gout)
    np.testing.assert_allclose(out, ref_out, **F32_TOL)
    for g, g2, ref in zip(grads, again, ref_grads):
        np.testing.assert_allclose(g, g2, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g, ref, **F32_TOL)
    assert small_calls == {"forward": 1, "backward": 2}
    _, _, none = K.attention_forward(q.astype(np.float64), k, v, keep_probs=True)
    assert none is None                     # the twin keeps nothing


@pytest.mark.parametrize("mask_shape", [(2, 7, 10), (1, 7, 10), (7, 10), (2, 1, 10), (10,),
                                        (2, 7, 1), (1, 1)])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_small_calls_broadcast_masks(rng, small_calls, mask_shape, kind):
    q, k, v, gout = make(rng, 2, 7, 10, 8, 8, np.float32)
    if kind == "bool":
        mask = rng.random(mask_shape) > 0.3
        mask.reshape(-1)[0] = True          # the (1, 1) case: one visible key for everyone
    else:
        mask = rng.standard_normal(mask_shape).astype(np.float32)
    check(q, k, v, gout, mask=mask, scale=0.37, **F32_TOL)
    assert small_calls == {"forward": 1, "backward": 1}


@pytest.mark.parametrize("kind", ["bool", "float", "key padding", "all hidden"])
def test_small_calls_give_zeros_for_fully_masked_rows(rng, small_calls, kind):
    q, k, v, gout = make(rng, 2, 5, 8, 8, 8, np.float32)
    mask = masking_row_3(rng, kind)
    if kind == "float":
        mask[0, 1, ::2] = -np.inf           # and half the keys of another row
    out, grads = check(q, k, v, gout, mask=mask, **F32_TOL)
    np.testing.assert_array_equal(out[1, 3], 0)
    np.testing.assert_array_equal(grads[0][1, 3], 0)
    assert all(np.isfinite(g).all() for g in grads)
    assert small_calls == {"forward": 1, "backward": 1}


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("B, small", [(4, True), (5, False)])
def test_small_path_threshold_is_one_tile(rng, small_calls, B, small, is_causal):
    """(B, 128, 128): four batch rows fill one 64K-score tile; a fifth makes two tiles, which
    the blocked twin runs. Both sides of the boundary match the reference."""
    check(*make(rng, B, 128, 128, 8, 8, np.float32), is_causal=is_causal, **F32_TOL)
    assert small_calls == ({"forward": 1, "backward": 1} if small
                           else {"forward": 0, "backward": 0})


def test_small_calls_of_float16_compute_in_float32(rng, small_calls):
    q, k, v, gout = make(rng, 2, 9, 14, 16, 16, np.float16)
    out, lse = K.attention_forward(q, k, v, None, True)
    assert out.dtype == np.float16 and lse.dtype == np.float32
    ref_out, ref_lse, ref_grads = naive(q, k, v, None, True, 0.25, gout)
    np.testing.assert_allclose(out, ref_out, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-5, atol=1e-5)
    grads = K.attention_backward(q, k, v, out, lse, gout, None, True)
    for g, ref in zip(grads, ref_grads):
        assert g.dtype == np.float16
        np.testing.assert_allclose(g, ref, rtol=2e-2, atol=1e-1)
    assert small_calls == {"forward": 1, "backward": 1}


def test_small_calls_propagate_nan_and_inf(rng, small_calls):
    q, k, v, gout = make(rng, 1, 4, 6, 8, 8, np.float32)
    q[0, 1, 2] = np.nan
    out, lse = K.attention_forward(q, k, v)
    assert np.isnan(out[0, 1]).all() and np.isnan(lse[0, 1])
    assert np.isfinite(np.delete(out[0], 1, axis=0)).all()
    q[0, 1, 2] = np.inf                     # an infinite score: exp(inf - inf) is NaN too
    out, _ = K.attention_forward(q, k, v)
    assert np.isnan(out[0, 1]).any() and np.isfinite(np.delete(out[0], 1, axis=0)).all()


def test_small_exp_matches_float64_exp():
    """attention_small's own float32 exp (of scaled, shifted scores): within 1e-7 relative
    where float32 is normal, 0 under its range and for -inf, NaN kept."""
    x = np.concatenate([np.linspace(-100, 88, 400_001), [-np.inf, np.nan, -0.0],
                        np.random.default_rng(7).standard_normal(10_001) * 30]).astype(np.float32)
    x = np.minimum(x, np.float32(88))
    rows = 3                                # row r: exp(2 x - shift_r), its own shift
    shifts = np.array([0.0, 3.5, -80.0], np.float32)
    x = x[:x.size // rows * rows].reshape(rows, -1) / 2
    got = x.copy()
    K.attention_small._exp_rows(got.reshape(-1), rows, np.float32(2.0), shifts)
    y = (x * np.float32(2.0) - shifts[:, None]).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = np.exp(y)
    normal = (y >= -87.3) & (y <= 88)
    assert np.max(np.abs(got[normal] / ref[normal] - 1)) < 1e-7
    assert np.all(got[y < -87.3] == 0) and np.isnan(got[np.isnan(y)]).all()
    assert np.all(got[y == 0] == 1)


@pytest.mark.parametrize("dtype, mem_efficient", [(np.float32, False), (np.float32, True),
                                                  (np.float16, False)])
def test_on_the_gpu_a_batch_past_the_grid_y_limit(rng, dtype, mem_efficient):
    """On a GPU (tools/gpu_check.sh): 70,000 batch x head rows, more than a grid's y dimension
    takes (65,535; the kernels put the batch on x since session 17), causal, forward and
    backward of the SIMT and tensor-core kernels against the CPU twin."""
    if backend._cupy is None:
        pytest.skip("needs CuPy and a GPU; the simulator tests the block order everywhere else")
    import cupy
    from gpudl.kernels import attention as K
    B, L, E = 70_000, 3, 16
    q, k, v, gout = (rng.standard_normal((B, L, E)).astype(dtype) for _ in range(4))
    device = [cupy.asarray(a) for a in (q, k, v, gout)]
    assert K.cuda_variant(device[0], device[2], False, mem_efficient) is not None
    out, lse = K.attention_forward(*device[:3], is_causal=True, mem_efficient=mem_efficient)
    grads = K.attention_backward(*device[:3], out, lse, device[3], is_causal=True,
                                 mem_efficient=mem_efficient)
    wide = [a.astype(np.float32) for a in (q, k, v, gout)]
    ref_out, ref_lse = K._attention_fwd_cpu(*wide[:3], None, True, 1 / np.sqrt(E))
    ref_grads = K._attention_bwd_cpu(*wide[:3], ref_out, ref_lse, wide[3], None, True,
                                     1 / np.sqrt(E))
    tol = 2e-2 if dtype == np.float16 else 1e-4
    np.testing.assert_allclose(cupy.asnumpy(out).astype(np.float32), ref_out, rtol=tol, atol=tol)
    for g, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(cupy.asnumpy(g).astype(np.float32), ref, rtol=tol, atol=tol)
