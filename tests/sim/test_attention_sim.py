"""The attention kernels in Numba's CUDA simulator against the CPU twin, forward and backward.

Shapes are small (the simulator runs every CUDA thread in Python) but cross the tile edges:
L and S above the 64-row blocks and not multiples of any tile (several query blocks, several key
tiles, partial edge tiles, skipped causal tiles), in every head-dim bucket with its own tiling.
"""

import numpy as np
import pytest
from numba import cuda

from gpudl import backend
from gpudl.kernels import attention as K

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]


def make(rng, B, L, S, E, Ev, dtype=np.float32):
    shapes = ((B, L, E), (B, S, E), (B, S, Ev), (B, L, Ev))
    return tuple(rng.standard_normal(s).astype(dtype) for s in shapes)


def check(q, k, v, gout, mask=None, is_causal=False, scale=None, tol=2e-5):
    """The entry (cuda path under the simulator) against the twin called directly."""
    from gpudl.kernels import attention_cuda
    assert backend.kernel_device(q) == "cuda" and attention_cuda.supports(q, v)
    scale_ = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    out, lse = K.attention_forward(q, k, v, mask, is_causal, scale)
    ref_out, ref_lse = K._attention_fwd_cpu(q, k, v, mask, is_causal, scale_)
    assert out.dtype == q.dtype and lse.dtype == np.float32
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(lse, ref_lse, rtol=tol, atol=tol)
    grads = K.attention_backward(q, k, v, out, lse, gout, mask, is_causal, scale)
    ref_grads = K._attention_bwd_cpu(q, k, v, ref_out, ref_lse, gout, mask, is_causal, scale_)
    for name, g, ref in zip("qkv", grads, ref_grads):
        assert g.dtype == q.dtype and g.shape == ref.shape
        np.testing.assert_allclose(g, ref, rtol=tol, atol=tol, err_msg=f"gradient of {name}")
    return out, grads


def test_plain_with_several_key_tiles(rng):
    check(*make(rng, 2, 5, 37, 8, 8))


def test_value_dim_differs_and_custom_scale(rng):
    check(*make(rng, 1, 6, 9, 12, 20), scale=0.3)


@pytest.mark.parametrize("L, S", [(4, 9), (9, 4)])
def test_causal_short(rng, L, S):
    check(*make(rng, 2, L, S, 8, 8), is_causal=True)


def test_causal_across_query_and_key_blocks(rng):
    """L = S = 70 > BLOCK = 64: the second query block skips nothing, the first skips the keys
    beyond 64 (forward, dQ) and the dK/dV block of keys 64.. skips queries below 64."""
    check(*make(rng, 1, 70, 70, 4, 4), is_causal=True)


@pytest.mark.parametrize("bucket, E, Ev, L, S, mask_kind, is_causal", [
    (16, 12, 16, 67, 70, None, True),
    (32, 32, 24, 67, 70, "bool", False),
    (64, 64, 40, 67, 70, "float", True),     # forward streams Q in head-dim chunks
    (128, 100, 128, 40, 34, None, False),    # 8 warps; two 32-key (and 32-query) tiles
])
def test_every_head_dim_bucket_across_blocks_and_edges(rng, bucket, E, Ev, L, S, mask_kind,
                                                       is_causal):
    """Two query blocks of 64, several key tiles (and, for S = 70, two dK/dV key blocks), every
    last tile partial; E and Ev zero-padded up to the bucket."""
    from gpudl.kernels import attention_cuda
    q, k, v, gout = make(rng, 1, L, S, E, Ev)
    assert attention_cuda._bucket(q, v) == bucket
    mask = None
    if mask_kind == "bool":
        mask = rng.random((1, L, S)) > 0.3
    elif mask_kind == "float":
        mask = rng.standard_normal((L, S)).astype(np.float32)
        mask[3, :] = -np.inf                                      # a fully masked row
    check(q, k, v, gout, mask=mask, is_causal=is_causal, tol=5e-5)


def test_bool_mask_with_a_fully_masked_row(rng):
    q, k, v, gout = make(rng, 2, 5, 7, 8, 8)
    mask = rng.random((2, 5, 7)) > 0.4
    mask[1, 2] = False
    out, grads = check(q, k, v, gout, mask=mask)
    np.testing.assert_array_equal(out[1, 2], 0)
    np.testing.assert_array_equal(grads[0][1, 2], 0)
    assert all(np.isfinite(g).all() for g in grads)


def test_float_mask_broadcast_over_batch_and_queries(rng):
    q, k, v, gout = make(rng, 3, 4, 6, 8, 8)
    mask = rng.standard_normal((1, 1, 6)).astype(np.float32)
    mask[..., 2] = -np.inf
    check(q, k, v, gout, mask=mask)


@pytest.mark.parametrize("E, is_causal", [(16, False), (64, True)])
def test_float16_inputs(rng, E, is_causal, monkeypatch):
    """The SIMT kernels' float16 signatures (float16 dispatches to the tensor-core kernels,
    tests/sim/test_attention_tc_sim.py)."""
    monkeypatch.setattr(K, "cuda_variant", lambda q, v, *flags: "simt")
    q, k, v, gout = make(rng, 1, 5, 70, E, E, np.float16)
    check(q, k, v, gout, is_causal=is_causal, tol=2e-3)


def test_head_dim_above_the_buckets_falls_back_to_the_twin(rng):
    from gpudl.kernels import attention_cuda
    q, k, v, gout = make(rng, 1, 2, 3, 130, 4)
    assert not attention_cuda.supports(q, v)
    out, lse = K.attention_forward(q, k, v)
    np.testing.assert_allclose(out, K._attention_fwd_cpu(q, k, v, None, False, 130 ** -0.5)[0])


@pytest.mark.parametrize("L, S, is_causal", [(5, 70, True), (70, 33, False)])
def test_every_output_is_written_without_a_zero_fill(rng, nan_empty, L, S, is_causal):
    """Outputs and gradients come from empty arrays filled with NaN: every element must be
    written, the zeros too (causal with L < S: keys 5.. meet no query, and their dK/dV block
    visits no query tile)."""
    out, grads = check(*make(rng, 1, L, S, 16, 16), is_causal=is_causal)
    if is_causal:
        np.testing.assert_array_equal(grads[1][:, L:], 0)
        np.testing.assert_array_equal(grads[2][:, L:], 0)


def test_causal_tiles_past_the_diagonal_are_never_read(rng):
    """NaN values of keys 64.. reach the queries that see them (64..), never the first query
    block: its forward and dQ key loops stop at its diagonal. A visited tile would add
    0 * NaN = NaN (p = 0 beyond the diagonal), so this fails if causal tiles are not skipped."""
    q, k, v, gout = make(rng, 1, 70, 70, 16, 16)
    v[:, 64:] = np.nan
    out, lse = K.attention_forward(q, k, v, None, True, None)
    gq = K.attention_backward(q, k, v, out, lse, gout, None, True, None)[0]
    first = (slice(None), slice(0, 64))
    ref_out, ref_lse = K._attention_fwd_cpu(q[first], k[first], v[first], None, True, 0.25)
    ref_gq = K._attention_bwd_cpu(q[first], k[first], v[first], ref_out, ref_lse, gout[first],
                                  None, True, 0.25)[0]
    np.testing.assert_allclose(out[first], ref_out, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(gq[first], ref_gq, rtol=2e-5, atol=2e-5)
    assert np.isnan(out[:, 64:]).all()


@pytest.mark.parametrize("mask_kind", [None, "float"])
def test_launches_one_forward_and_three_backward_kernels(rng, monkeypatch, mask_kind):
    """FA2's backward: the delta kernel (rowsum(dO * O), no copies), dQ, dK/dV; the forward one
    kernel. Counted at the launcher: every Numba launch asks backend.launch_stream once."""
    from gpudl.kernels import launch
    q, k, v, gout = make(rng, 1, 3, 4, 8, 8)
    mask = None if mask_kind is None else rng.standard_normal((3, 4)).astype(np.float32)
    count = [0]
    real = launch.backend.launch_stream

    def counted():
        count[0] += 1
        return real()
    monkeypatch.setattr(launch.backend, "launch_stream", counted)
    out, lse = K.attention_forward(q, k, v, mask, False, None)
    assert count[0] == 1
    K.attention_backward(q, k, v, out, lse, gout, mask, False, None)
    assert count[0] == 4


@pytest.mark.parametrize("is_causal", [False, True])
def test_the_unmasked_kernels_never_read_the_mask(rng, monkeypatch, is_causal):
    """Without a mask the kernels get a dummy one: filled with NaN here, so a read anywhere in
    the forward, dQ or dK/dV kernel would show."""
    from gpudl.kernels import attention_cuda
    real = attention_cuda._additive_mask

    def poisoned(xp, mask):
        return xp.full((1, 1, 1), np.nan, np.float32) if mask is None else real(xp, mask)
    monkeypatch.setattr(attention_cuda, "_additive_mask", poisoned)
    check(*make(rng, 1, 6, 9, 8, 8), is_causal=is_causal)


@pytest.mark.parametrize("late_first", [True, False])
def test_blocks_start_longest_first_and_take_any_batch(late_first):
    """``block_place`` over ``grid``'s (batch, tiles) grid: each (tile, batch row) exactly
    once; in the order blocks start (linear index, x fastest) the rank runs over every batch
    row before the next, from the last tile (causal queries: the most keys) with ``late_first``.
    The batch sits on x, so batches past CUDA's 65,535 grid rows launch; tiles are capped."""
    from gpudl.kernels import attention_cuda

    @cuda.jit
    def record(out):
        start, b = attention_cuda.block_place(64, late_first)
        if cuda.threadIdx.x == 0:
            linear = cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x
            out[linear, 0] = start
            out[linear, 1] = b

    grid = attention_cuda.grid(3 * 64 - 5, 64, 4)
    assert grid == (4, 3)
    out = cuda.to_device(np.full((12, 2), -1, np.int64))
    record[grid, 32](out)
    order = [tuple(p) for p in out.copy_to_host()]
    tiles = [2, 1, 0] if late_first else [0, 1, 2]
    assert order == [(64 * t, b) for t in tiles for b in range(4)]
    assert attention_cuda.grid(1024, 64, 70_000) == (70_000, 16)
    with pytest.raises(ValueError, match="65535"):
        attention_cuda.grid(65_536 * 64, 64, 1)
