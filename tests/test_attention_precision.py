"""Which attention kernels the precision flags pick (no kernel runs: the rule is a function), that
the public op passes the flags down, and bfloat16 attention on the CPU.

The rule mirrors PyTorch 2.13 on sm80+ (kernels/attention_tc_cuda.py's docstring has the
sources): float16/bfloat16 on tensor cores; float32 on the memory-efficient path (3xTF32, float32
accuracy) whatever the TF32 flags when it is enabled and both head dims are multiples of 4,
else on the math path, TF32 exactly when ``matmul.allow_tf32``.
"""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl.kernels import attention as K
from gpudl.kernels import attention_tc_cuda as T
from oracle import torch


@pytest.mark.parametrize("dtype, E, Ev, allow_tf32, mem_efficient, kind", [
    ("float16", 64, 64, False, True, "f16"),
    ("float16", 7, 128, True, False, "f16"),           # half kinds ignore the fp32 flags
    ("bfloat16", 19, 33, False, True, "bf16"),
    ("float16", 130, 64, False, True, None),           # past the 128 bucket: twin
    ("bfloat16", 64, 129, False, True, None),
    ("float32", 64, 32, False, True, "tf32x3"),        # torch: mem-efficient, 3xTF32
    ("float32", 64, 32, True, True, "tf32x3"),         # ... whatever matmul.allow_tf32 says
    ("float32", 8, 4, False, True, "tf32x3"),
    ("float32", 64, 32, True, False, "tf32"),          # mem-efficient off: math, TF32 allowed
    ("float32", 64, 32, False, False, None),           # math, strict: SIMT
    ("float32", 6, 10, True, True, "tf32"),            # not multiples of 4: math
    ("float32", 6, 10, False, True, None),
    ("float32", 128, 128, True, True, None),           # past the TF32 buckets (64): SIMT
    ("float32", 66, 64, True, True, None),
    ("float64", 8, 8, True, True, None),
])
def test_variant_follows_pytorchs_rule(dtype, E, Ev, allow_tf32, mem_efficient, kind):
    assert T.variant(np.dtype(gd.bfloat16 if dtype == "bfloat16" else dtype), E, Ev,
                     allow_tf32, mem_efficient) == kind


@pytest.mark.parametrize("dtype, E, allow_tf32, words", [
    ("float16", 64, False, 32), ("bfloat16", 33, False, 32), ("float16", 20, False, 16),
    ("float32", 64, True, 64), ("float32", 8, True, 32)])
def test_sequences_past_the_32_bit_offsets_leave_the_tensor_cores(dtype, E, allow_tf32, words):
    """A (batch*head) slice is staged by 32-bit word offsets: the kernels take at most 2^32
    words of the bucket's rows per sequence (q's or k's), longer ones go to the 64-bit kernels
    (no allocation: the decision is a function of the shapes)."""
    dtype = np.dtype(gd.bfloat16 if dtype == "bfloat16" else dtype)
    limit = 2 ** 32 // words
    assert T.max_rows(T.variant(dtype, E, E, allow_tf32), E) == limit
    assert T.variant(dtype, E, E, allow_tf32, rows=limit) is not None
    assert T.variant(dtype, E, E, allow_tf32, rows=limit + 1) is None


def test_entry_defaults_keep_float32_strict():
    """Direct callers of the kernel entries get strict float32 unless they pass the flags."""
    assert T.variant(np.float32, 64, 64) is None


def test_cpu_arrays_take_the_twin():
    q = np.zeros((1, 4, 8), np.float32)
    assert K.cuda_variant(q, q, True, True) is None
    assert K.cuda_variant(q.astype(gd.bfloat16), q.astype(gd.bfloat16)) is None


@pytest.mark.parametrize("precision, mem_efficient", [("highest", True), ("high", False),
                                                      ("medium", True)])
def test_public_op_passes_the_flags_down(monkeypatch, precision, mem_efficient):
    """F.scaled_dot_product_attention reads matmul.allow_tf32 and mem_efficient_sdp_enabled
    at forward and at backward time and hands them to the kernel entries."""
    seen = []

    def spy(entry):
        def call(*args, **kwargs):
            seen.append((entry.__name__, {name: kwargs.get(name)
                                          for name in ("allow_tf32", "mem_efficient")}))
            return entry(*args, **kwargs)
        return call

    monkeypatch.setattr(K, "attention_forward", spy(K.attention_forward))
    monkeypatch.setattr(K, "attention_backward", spy(K.attention_backward))
    saved = gd.get_float32_matmul_precision(), gd.backends.cuda.mem_efficient_sdp_enabled()
    try:
        gd.set_float32_matmul_precision(precision)
        gd.backends.cuda.enable_mem_efficient_sdp(mem_efficient)
        q = gd.randn(1, 2, 5, 8, requires_grad=True)
        F.scaled_dot_product_attention(q, q, q).sum().backward()
    finally:
        gd.set_float32_matmul_precision(saved[0])
        gd.backends.cuda.enable_mem_efficient_sdp(saved[1])
    want = {"allow_tf32": precision != "highest", "mem_efficient": mem_efficient}
    assert seen == [("attention_forward", want), ("attention_backward", want)]


def test_mem_efficient_switch_matches_torch_and_refuses_non_bools():
    assert gd.backends.cuda.mem_efficient_sdp_enabled() is \
        torch.backends.cuda.mem_efficient_sdp_enabled() is True
    with pytest.raises(TypeError, match="enable_mem_efficient_sdp: expected a bool"):
        gd.backends.cuda.enable_mem_efficient_sdp(1)
    assert gd.backends.cuda.mem_efficient_sdp_enabled() is True


def _matches_torch_float64(dtype, shape_q, shape_v, rel, is_causal):
    """SDPA values and gradients in ``dtype`` against torch float64 on the same values:
    max error <= rel * max(|ref|, 1)."""
    rng = np.random.default_rng(13)
    b, h, n, e = shape_q
    arrays = [rng.standard_normal(s).astype(np.float32) for s in
              (shape_q, (b, h, n, e), shape_v, shape_v[:2] + (n, shape_v[3]))]
    q, k, v = (gd.tensor(a, dtype=dtype, requires_grad=True) for a in arrays[:3])
    gout = gd.tensor(arrays[3], dtype=dtype)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    out.backward(gout)
    tq, tk, tv = (torch.tensor(t.detach().numpy().astype(np.float64), requires_grad=True)
                  for t in (q, k, v))
    t_out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=is_causal)
    t_out.backward(torch.tensor(gout.numpy().astype(np.float64)))
    assert out.dtype == dtype and q.grad.dtype == dtype
    for ours, theirs in ((out, t_out), (q.grad, tq.grad), (k.grad, tk.grad), (v.grad, tv.grad)):
        want = theirs.detach().numpy()
        err = np.abs(ours.numpy().astype(np.float64) - want).max()
        assert err <= rel * max(np.abs(want).max(), 1)


@pytest.mark.parametrize("is_causal", [False, True])
def test_bfloat16_attention_matches_torch_float64(is_causal):
    """bfloat16 within its ~1e-2. On the CPU the twin (ml_dtypes; float32 compute, rounded
    once); with GPUDL_DEVICE=cuda on a GPU the bf16 tensor-core kernels."""
    _matches_torch_float64(gd.bfloat16, (2, 3, 9, 8), (2, 3, 9, 12), 2e-2, is_causal)


def test_float32_attention_with_tf32_allowed_matches_torch_float64():
    """Head dim 6 (not a multiple of 4) with TF32 allowed: on a GPU the ``tf32`` kernels, within
    TF32's ~1e-3 (on the CPU the strict twin, far inside it)."""
    saved = gd.get_float32_matmul_precision()
    try:
        gd.set_float32_matmul_precision("high")
        _matches_torch_float64(gd.float32, (2, 2, 70, 6), (2, 2, 70, 10), 5e-3, True)
    finally:
        gd.set_float32_matmul_precision(saved)


@pytest.mark.parametrize("n", [300, 64 * 4 + 1])
def test_causal_float32_attention_long_enough_to_split_matches_torch_float64(n):
    """Causal float32 with 4 or more query blocks: on a GPU the 3xTF32 forward splits each
    query block's keys over two blocks and combines them (attention_tc_cuda ``_key_splits``),
    within float32's accuracy; on the CPU the twin."""
    from gpudl.kernels import attention_tc_cuda
    assert attention_tc_cuda._key_splits(2 * 2, n, True, "tf32x3") == 2
    _matches_torch_float64(gd.float32, (2, 2, n, 64), (2, 2, n, 40), 2e-5, True)
