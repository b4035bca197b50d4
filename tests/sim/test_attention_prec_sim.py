"""The bfloat16 and TF32 kinds of the tensor-core attention kernels (kernels/attention_tc_cuda.py)
in Numba's CUDA simulator, against the float64 twin on the same inputs (bf16-rounded for bf16).

The f16 kind's tile edges are covered by test_attention_tc_sim.py; the kinds share that code
and differ in the mma, the packing of P/dS (half pairs, or the TF32 key permutation) and the
outputs, which is what these check, forward and backward, each at its precision: bf16 about
1e-2 of max |ref|, TF32 about 1e-3, 3xTF32 float32's. The emulation costs two block barriers
per warp instruction: one call each (the 3xTF32 one on a single mma, its split being all that
differs from TF32).
"""

import numpy as np
import pytest

from gpudl import backend, dtypes
from gpudl.kernels import attention as K

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]

if backend.SIMULATOR:
    from numba import cuda

    from gpudl.kernels import attention_tc_cuda as T, mma

    @cuda.jit
    def _one_mma(a, b, out):
        """out[0]: the 3xTF32 product of a (16x8) and b (8x8), out[1]: one TF32 mma (lane's
        c0..c3)."""
        lane = cuda.threadIdx.x
        g, t = lane >> 2, lane & 3
        d = T._mma_tf32x3(a[g, t], a[g + 8, t], a[g, t + 4], a[g + 8, t + 4], b[t, g],
                          b[t + 4, g], 0.0, 0.0, 0.0, 0.0)
        r = mma.mma_tf32_m16n8k8(mma.to_tf32(a[g, t]), mma.to_tf32(a[g + 8, t]),
                                 mma.to_tf32(a[g, t + 4]), mma.to_tf32(a[g + 8, t + 4]),
                                 mma.to_tf32(b[t, g]), mma.to_tf32(b[t + 4, g]),
                                 0.0, 0.0, 0.0, 0.0)
        for i in range(4):
            out[0, lane, i] = d[i]
            out[1, lane, i] = r[i]


def _max_error(got, want):
    """max |got - want| / max(max |want|, 1)."""
    return float(np.abs(got.astype(np.float64) - want).max()) / max(float(np.abs(want).max()), 1)


def check(rng, dtype, kind, L, S, E, Ev, rel, mask=None, is_causal=False, allow_tf32=False,
          mem_efficient=False):
    q, k, v, gout = (rng.standard_normal(s).astype(np.float32).astype(dtype)
                     for s in ((1, L, E), (1, S, E), (1, S, Ev), (1, L, Ev)))
    flags = {"allow_tf32": allow_tf32, "mem_efficient": mem_efficient}
    assert K.cuda_variant(q, v, **flags) == kind
    out, lse = K.attention_forward(q, k, v, mask, is_causal, **flags)
    grads = K.attention_backward(q, k, v, out, lse, gout, mask, is_causal, **flags)
    q64, k64, v64, g64 = (a.astype(np.float64) for a in (q, k, v, gout))
    ref_out, ref_lse = K._attention_fwd_cpu(q64, k64, v64, mask, is_causal, E ** -0.5)
    ref_grads = K._attention_bwd_cpu(q64, k64, v64, ref_out, ref_lse, g64, mask, is_causal,
                                     E ** -0.5)
    assert out.dtype == dtype and out.shape == ref_out.shape and lse.dtype == np.float32
    errors = {"out": _max_error(out, ref_out)}
    finite = np.isfinite(ref_lse)
    np.testing.assert_array_equal(np.isfinite(lse), finite)
    np.testing.assert_allclose(lse[finite], ref_lse[finite], rtol=rel, atol=rel)
    for name, g, ref in zip("qkv", grads, ref_grads):
        assert g.dtype == dtype and g.shape == ref.shape
        errors[f"d{name}"] = _max_error(g, ref)
    assert max(errors.values()) <= rel, errors
    return out, grads


def test_bfloat16_with_float_mask_odd_head_dim(rng):
    """bf16 P/dS packing and outputs; E = 7 odd (a zero half appended), L = 9 odd, a fully
    masked row (zeros, not NaN)."""
    mask = rng.standard_normal((9, 13)).astype(np.float32)
    mask[2] = -np.inf
    out, grads = check(rng, dtypes.bfloat16, "bf16", 9, 13, 7, 12, 2e-2, mask=mask)
    np.testing.assert_array_equal(out[0, 2].astype(np.float32), 0)
    np.testing.assert_array_equal(grads[0][0, 2].astype(np.float32), 0)


def test_tf32_causal_odd_lengths(rng):
    """float32 with head dims not multiples of 4 and TF32 allowed: PyTorch's math path on TF32
    (the kind ``tf32``); causal, L = 11 and S = 13 odd. The key permutation of P V, dS K, P^T dO
    and dS^T Q is checked by every gradient; TF32's 2^-11 rounding bounds the error."""
    check(rng, np.float32, "tf32", 11, 13, 6, 10, 5e-3, is_causal=True, allow_tf32=True)


@pytest.mark.parametrize("L, S, E, Ev, masked, is_causal", [
    (20, 70, 64, 40, True, False),      # e64 masked build: two full key tiles, one edge tile
    (70, 70, 60, 64, False, True),      # e64 unmasked: causal edge tiles, then the hot loop
])
def test_tf32x3_attention_is_float32_accurate(rng, L, S, E, Ev, masked, is_causal):
    """float32 with memory-efficient SDP on: the 3xTF32 kernels (the forward's Q fragments
    reloaded from shared memory per key tile) at float32's accuracy, which a lost small part
    (TF32's 2^-11) or a Q fragment of the wrong k step would break."""
    mask = rng.standard_normal((L, S)).astype(np.float32) if masked else None
    check(rng, np.float32, "tf32x3", L, S, E, Ev, 2e-5, mask=mask, is_causal=is_causal,
          mem_efficient=True)


def test_tf32x3_mma_is_float32_accurate(rng):
    """One m16n8k8 product by the big/small split against float64: float32's accuracy, where a
    single TF32 mma (also run) is off by ~1e-3."""
    a = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal((8, 8)).astype(np.float32)
    out = np.zeros((2, 32, 4), np.float32)
    _one_mma[1, 32](a, b, out)
    want = a.astype(np.float64) @ b.astype(np.float64)
    got = np.zeros((2, 16, 8))
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for n in range(2):
            got[n, g, 2 * t:2 * t + 2] = out[n, lane, :2]
            got[n, g + 8, 2 * t:2 * t + 2] = out[n, lane, 2:]
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    assert np.all(np.abs(got[0] - want) <= 8 * 2.0 ** -22 * scale + 1e-30)
    assert np.abs(got[1] - want).max() > 1e-4 * np.abs(want).max()


def test_sequences_past_the_offset_limit_run_the_64_bit_kernels(rng, monkeypatch):
    """With the 32-bit offset limit lowered to 64 rows of 32 words (e64 f16), a 70-key call
    runs attention_cuda's SIMT kernels (still right); bfloat16, which has no SIMT build, is
    refused by name. The limit itself is tested on the CPU (test_attention_precision.py)."""
    monkeypatch.setattr(T, "OFFSET_LIMIT", 64 * 32)
    q = rng.standard_normal((1, 12, 64)).astype(np.float16)
    v = rng.standard_normal((1, 64, 64)).astype(np.float16)
    assert K.cuda_variant(q, v) == "f16"
    check(rng, np.float16, "simt", 12, 70, 64, 64, 2e-2)
    with pytest.raises(ValueError, match="sequences up to 64 rows"):
        K.cuda_variant(dtypes.float32_to_bfloat16(np, q), dtypes.float32_to_bfloat16(
            np, rng.standard_normal((1, 70, 64)).astype(np.float32)))


def test_causal_forward_split_over_blocks_matches_the_twin(rng, monkeypatch):
    """The causal float32 forward with each query block's key tiles split over 3 blocks
    (``_split_keys``) and combined (``_combine_splits``): L = 70, so query block 0 has only
    edge tiles, in split 0 (splits 1 and 2 see no key: output 0, lse -inf, weight 0 in the
    combination), and block 1 two full tiles of 32 keys, one in split 0 beside the edge tile
    and one in split 1, none in split 2."""
    monkeypatch.setattr(T, "_key_splits", lambda B, L, is_causal, kind, masked: 3)
    launched = []
    real = T.launch
    monkeypatch.setattr(T, "launch", lambda kernel, *a, **k: launched.append(
        (kernel, a[1])) or real(kernel, *a, **k))
    L, E, Ev = 70, 64, 40
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((1, L, E), (1, L, E),
                                                                     (1, L, Ev)))
    out, lse = K.attention_forward(q, k, v, None, True, mem_efficient=True)
    assert [kernel.__name__ for kernel, _ in launched] == [
        "_attention_tc_fwd_kernel_tf32x3_e64_nomask", "_combine_splits"]
    assert launched[0][1] == (1, 2, 3)                  # (batch, query blocks, splits)
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    ref_out, ref_lse = K._attention_fwd_cpu(q64, k64, v64, None, True, E ** -0.5)
    assert _max_error(out, ref_out) <= 2e-5
    finite = np.isfinite(ref_lse)
    np.testing.assert_array_equal(np.isfinite(lse), finite)
    np.testing.assert_allclose(lse[finite], ref_lse[finite], rtol=2e-5, atol=2e-5)


def test_key_splits_only_for_a_causal_float32_forward_in_one_wave():
    from gpudl.kernels import attention_tc_cuda as tc
    assert tc._key_splits(4 * 8, 1024, True, "tf32x3") == 2      # 512 blocks, one wave
    assert tc._key_splits(4 * 8, 1024, True, "tf32") == 2
    assert tc._key_splits(4 * 8, 1024, False, "tf32x3") == 1     # not causal: every block alike
    assert tc._key_splits(4 * 8, 1024, True, "f16") == 1         # half partial outputs
    assert tc._key_splits(4 * 16, 1024, True, "tf32x3") == 1     # two waves already
    assert tc._key_splits(64, 192, True, "tf32x3") == 1          # 3 query blocks: too short
    assert tc._key_splits(4 * 8, 1024, True, "tf32x3", masked=True) == 1
