"""The tensor-core attention kernels (kernels/attention_tc_cuda.py) in Numba's CUDA simulator, with
the mma/ldmatrix emulation, against a float64 reference on the same fp16-rounded inputs.

The emulation costs two block barriers per warp instruction, so the shapes are tiny, but each
crosses a tile edge: partial key/query tiles, two key blocks of the dK/dV pass, two forward key
tiles, skipped causal tiles, every head-dim bucket once, odd feature counts (padded words).
Tolerances are FA2's kind: P and dS are rounded to fp16 before their mma, outputs to fp16.
"""

import numpy as np
import pytest

from gpudl import backend
from gpudl.kernels import attention as K

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]


def _reference(q, k, v, gout, mask, is_causal, scale):
    """Forward and gradients in float64 by the twin, from the fp16 values themselves."""
    q, k, v, gout = (a.astype(np.float64) for a in (q, k, v, gout))
    out, lse = K._attention_fwd_cpu(q, k, v, mask, is_causal, scale)
    return out, lse, K._attention_bwd_cpu(q, k, v, out, lse, gout, mask, is_causal, scale)


def _close(got, want, name, rel=2e-2):
    """|got - want| <= rel * max|want| (+ a fp16 ulp of the values): FA2-like."""
    scale = max(float(np.abs(want).max()), 1.0)
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= rel * scale, f"{name}: max error {err:.3g} > {rel} * {scale:.3g}"


def check(rng, B, L, S, E, Ev, bucket, mask_kind=None, is_causal=False, scale=None):
    from gpudl.kernels import attention_tc_cuda
    q, k, v = (rng.standard_normal(s).astype(np.float16)
               for s in ((B, L, E), (B, S, E), (B, S, Ev)))
    gout = rng.standard_normal((B, L, Ev)).astype(np.float16)
    assert K.cuda_variant(q, v) == "f16" and attention_tc_cuda._bucket(q, v, "f16") == bucket
    mask = None
    if mask_kind == "bool":
        mask = rng.random((B, L, S)) > 0.3
        mask[0, 1] = False                                     # a fully masked row
    elif mask_kind == "float":
        mask = rng.standard_normal((L, S)).astype(np.float32)
        mask[1, :] = -np.inf                                   # a fully masked row
    elif mask_kind == "keys":                                  # (B, 1, S): every row alike
        mask = rng.random((B, 1, S)) > 0.2
    elif mask_kind == "rows":                                  # (L, 1): every key alike
        mask = rng.standard_normal((L, 1)).astype(np.float32)
        mask[1] = -np.inf
    out, lse = K.attention_forward(q, k, v, mask, is_causal, scale)
    grads = K.attention_backward(q, k, v, out, lse, gout, mask, is_causal, scale)
    scale = E ** -0.5 if scale is None else scale
    ref_out, ref_lse, ref_grads = _reference(q, k, v, gout, mask, is_causal, scale)
    assert out.dtype == np.float16 and out.shape == ref_out.shape and lse.dtype == np.float32
    _close(out, ref_out, "out")
    finite = np.isfinite(ref_lse)
    np.testing.assert_array_equal(np.isfinite(lse), finite)
    np.testing.assert_allclose(lse[finite], ref_lse[finite], rtol=1e-3, atol=1e-3)
    for name, g, ref in zip("qkv", grads, ref_grads):
        assert g.dtype == np.float16 and g.shape == ref.shape
        _close(g, ref, f"gradient of {name}")
    if mask_kind in ("bool", "float", "rows"):                 # fully masked: zeros, not NaN
        np.testing.assert_array_equal(out[0, 1], 0)
        np.testing.assert_array_equal(grads[0][0, 1], 0)
    return out, lse, grads


def test_e32_two_key_tiles_and_two_key_blocks_with_float_mask(rng):
    """S = 70: forward/dQ key tiles of 64 + 6 (partial), dK/dV key blocks 0 and 64 (partial);
    E = 19 odd (a zero half appended), Ev = 24 padded to the 32 bucket."""
    check(rng, 1, 12, 70, 19, 24, 32, "float")


def test_e64_causal_skips_tiles_per_block(rng):
    """L = 40, S = 70: the query block stops before key tile 64 (forward, dQ); the dK/dV block
    of keys 0.. runs two 32-query edge tiles (causal checks), the block of keys 64.. starts at
    query 64 > L, visits nothing and writes zero gradients."""
    _, _, (gq, gk, gv) = check(rng, 1, 40, 70, 64, 48, 64, is_causal=True)
    np.testing.assert_array_equal(gk[:, 40:], 0)
    np.testing.assert_array_equal(gv[:, 40:], 0)


def test_e128_bool_mask_partial_tiles(rng):
    check(rng, 1, 10, 12, 100, 128, 128, "bool")


@pytest.mark.parametrize("scale", [-0.3, 0.0])
def test_negative_and_zero_scales_with_masks_and_causal(rng, scale):
    """The kernels fold the scale into the exp2's FFMA and take row maxima of raw scores, which
    holds for scales >= 0 only: a negative one runs on K negated. Scale 0 makes every visible
    score 0 (uniform weights) while hidden ones (mask, causal, bounds) must stay at weight 0,
    not 0 * -inf = NaN; a fully masked row stays zero. S = 70: a full key tile (the folded hot
    loop) and a partial one (checks)."""
    check(rng, 1, 12, 70, 19, 24, 32, "float", scale=scale)
    check(rng, 1, 70, 70, 64, 64, 64, is_causal=True, scale=scale)


@pytest.mark.parametrize("mask_kind", ["keys", "rows"])
def test_e64_broadcast_masks(rng, mask_kind):
    """Masks broadcast over queries (a key padding mask: the staged tile repeats mask row 0) or
    over keys (widened on the host to the keys, rows padded to 16 bytes); at e64 the forward
    and dK/dV stage their mask tiles, dQ (no shared memory left) reads the mask per element.
    S = 70: a full key tile and a partial one."""
    check(rng, 2, 12, 70, 64, 64, 64, mask_kind)


def test_double_buffering_over_several_tiles(rng):
    """Unmasked e32 double-buffers K/V (forward, dQ) and Q/dO (dK/dV). S = 200: the forward and
    dQ run the partial edge key tile 192.. first, which prefetches key tile 0, then tiles 0, 64,
    128, each prefetching the next into the other buffer; L = 140: dK/dV likewise over the
    query tiles 128.., 0, 64."""
    check(rng, 1, 140, 200, 32, 32, 32)


def test_double_buffering_with_causal_edge_tiles(rng):
    """Causal, unmasked e32: query block 0 runs only its diagonal edge tile (nothing to
    prefetch after it), block 64 the edge tile 64.. which prefetches full tile 0, block 128 the
    edge tile 128.. then full tiles 0 and 64 (forward, dQ); dK/dV's key blocks run their
    diagonal edge tiles, then the full query tiles after them."""
    check(rng, 1, 140, 200, 32, 32, 32, is_causal=True)


@pytest.mark.parametrize("dtype, ev, strict, owns", [
    (np.float16, 8, False, True),
    (np.float16, 7, False, False),          # an odd Ev: a padded buffer, a view of it
    (np.float32, 8, False, True),           # tf32x3 (memory-efficient, the default)
    (np.float32, 7, True, True),            # strict fp32: attention_cuda's SIMT kernels
])
def test_4d_outputs_are_allocated_in_their_final_shape(rng, monkeypatch, dtype, ev, strict,
                                                       owns):
    """The ops layer's (N, H, L, Ev) output comes from the kernels in that shape (an array owning
    its memory where the kernel's layout allows: autograd then makes no overlap tests), with
    torch's values (float64 reference on the same rounded inputs) and gradients."""
    import gpudl as gd
    from gpudl import backends
    from oracle import torch
    if strict:
        monkeypatch.setitem(backends._sdp, "mem_efficient", False)
        monkeypatch.setattr(backends.cuda.matmul, "allow_tf32", False)
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((1, 2, 5, 8), (1, 2, 6, 8),
                                                               (1, 2, 6, ev)))
    g = rng.standard_normal((1, 2, 5, ev)).astype(dtype)
    ours = [gd.tensor(a, device="cuda", requires_grad=True) for a in (q, k, v)]
    out = gd.nn.functional.scaled_dot_product_attention(*ours)
    out.backward(gd.tensor(g, device="cuda"))
    theirs = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in (q, k, v)]
    want = torch.nn.functional.scaled_dot_product_attention(*theirs)
    want.backward(torch.tensor(g.astype(np.float64)))
    assert out.shape == (1, 2, 5, ev) and out.dtype == dtype
    assert (out._data.base is None) == owns
    rel = {np.float16: 2e-2, np.float32: 1e-4}[dtype]
    _close(out.numpy(), want.detach().numpy(), "out", rel)
    for name, t, w in zip("qkv", ours, theirs):
        _close(t.grad.numpy(), w.grad.numpy(), "d" + name, rel)
