"""The tensor-core attention kernels as the hardware would run them, without a GPU: SASS for sm_90
through ptxas/cuobjdump. The hot (key/query tile) loop must hold the HMMAs, the exp2s and the
ldmatrix loads of each tile (an ldmatrix hoisted out of the loop would read a stale tile: LLVM
once took the inline asm for a pure function), with no local memory."""

import pytest
from numba import cuda

from gpudl.kernels import attention_tc_cuda as T
from gpudl.kernels import gate, numba_inlining

try:
    gate.tool("ptxas"), gate.tool("cuobjdump")
except RuntimeError as exc:                      # pragma: no cover - the test extra has them
    pytest.skip(str(exc), allow_module_level=True)


@pytest.fixture(autouse=True, scope="module")
def _helpers_built_once():
    """Compile-only tests: each inlined helper's untyped IR built once for the module, as the
    check builds it (numba_inlining.callee_cache), not once per call site; left afterwards."""
    with numba_inlining.callee_cache():
        yield


def _hot_loop(kind, n, tmp_path):
    """Opcodes of the hot loop of pass ``n`` (forward, dQ, dK/dV) of the e32 unmasked kernel of
    ``kind``, and its HMMA count, after checking: no fp64, no spills, no stack, no LDL/STL in
    the loop, an exp2 in it."""
    kernel = T._KERNELS[(32, False, kind)][n]
    ptx, _ = cuda.compile_ptx(kernel.py_func, T._signatures(kind)[n], cc=(9, 0))
    assert ".f64" not in ptx
    info, sass = gate.assemble(ptx, str(tmp_path))
    (resources,) = gate.parse_ptxas(info).values()
    assert resources.spills == 0 and resources.stack == 0
    instructions = [i for f in gate.parse_sass(sass).values() for i in f]
    hot = gate.summarise(instructions).hot
    body = [i.opcode for i in instructions if hot.span[0] <= i.address <= hot.span[1]]
    assert any(op.startswith("MUFU.EX2") for op in body)
    assert not [op for op in body if op.split(".")[0] in ("LDL", "STL")]
    return body, hot.hmma


@pytest.mark.parametrize("n, tile_ldsm", [(0, 16), (1, 28), (2, 36)])
def test_hot_loop_runs_on_tensor_cores(n, tile_ldsm, tmp_path):
    """e32, no mask, per tile: forward 8 (K) + 8 (V, .trans); dQ 2 + 8 (Q, K) for S, 2 + 8
    (dO, V) for dP, 8 (K, .trans) for dS K; dK/dV likewise 10 + 10 + 8 + 8."""
    body, hmma = _hot_loop("f16", n, tmp_path)
    assert sum(op.startswith("HMMA.16816.F32") for op in body) == hmma > 0
    assert sum(op.startswith("LDSM.16") for op in body) >= tile_ldsm
    assert any(op.startswith("LDSM.16.MT88.4") for op in body)


@pytest.mark.parametrize("kind, hmma", [("tf32", 64), ("bf16", 32)])
def test_other_kinds_run_their_mma_in_the_tile_loop(kind, hmma, tmp_path):
    """Forward e32: the tile loop (the SASS's innermost loop: the TF32 rounding once left the
    staging a loop of its own) holds the kind's HMMA, 64 TF32 m16n8k8 (Q K^T and P V, 32 each)
    or 32 BF16 m16n8k16."""
    body, found = _hot_loop(kind, 0, tmp_path)
    opcode = "HMMA.1688.F32.TF32" if kind == "tf32" else "HMMA.16816.F32.BF16"
    assert sum(op.startswith(opcode) for op in body) == found == hmma


@pytest.mark.parametrize("kind, dtype, d", [("f16", "float16", 19), ("f16", "float16", 16),
                                            ("tf32", "float32", 6), ("tf32x3", "float32", 8)])
def test_words_are_aligned_16_byte_rows(kind, dtype, d):
    """The kernels copy 16-byte chunks by cp.async: _words gives rows of a multiple of 4 words,
    16-byte aligned (a misaligned view is copied, odd head dims zero-padded), same values."""
    import numpy as np
    buffer = np.random.default_rng(0).standard_normal(2 * 3 * d + 1).astype(dtype)
    a = buffer[1:].reshape(2, 3, d)                # 2 or 4 bytes past an aligned start
    words = T._words(np, a, kind)
    assert words.dtype == np.uint32 and words.shape[2] % 4 == 0
    assert words.__array_interface__["data"][0] % 16 == 0
    values = words.view(np.uint16 if kind == "f16" else np.float32)
    np.testing.assert_array_equal(values[:, :, :d], a.view(values.dtype))
    assert not values[:, :, d:].any()
