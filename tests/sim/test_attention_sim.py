"""The attention kernels in Numba's CUDA simulator against the CPU twin, forward and backward.

Shapes are tiny (the simulator runs every CUDA thread in Python) but cross the tile edges:
S > BLOCK_K (several key tiles), L > BLOCK_Q and S > BLOCK_KV in one causal case (several query
and key blocks, skipped tiles).
"""

import numpy as np
import pytest

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
    """L = S = 70 > BLOCK_Q = BLOCK_KV = 64: the second blocks skip nothing, the first skips
    the keys beyond 64 (forward, dQ) and the dK/dV block of keys 64.. skips queries below 64."""
    check(*make(rng, 1, 70, 70, 4, 4), is_causal=True)


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


def test_float16_inputs(rng):
    q, k, v, gout = make(rng, 1, 5, 7, 16, 16, np.float16)
    check(q, k, v, gout, tol=2e-3)


def test_head_dim_above_the_buckets_falls_back_to_the_twin(rng):
    from gpudl.kernels import attention_cuda
    q, k, v, gout = make(rng, 1, 2, 3, 130, 4)
    assert not attention_cuda.supports(q, v)
    out, lse = K.attention_forward(q, k, v)
    np.testing.assert_allclose(out, K._attention_fwd_cpu(q, k, v, None, False, 130 ** -0.5)[0])
