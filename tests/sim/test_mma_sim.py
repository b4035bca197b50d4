"""The tensor-core primitives (kernels/mma.py) in Numba's simulator: small GEMMs written with each
warp-level mma/ldmatrix, following the PTX ISA's fragment tables, against float64 NumPy.

Two warps per block compute different tiles, so the per-warp staging of the emulation is tested
too. TF32 and half inputs are rounded the way the hardware reads them, so the tolerance is the
float32 accumulation's, not the input rounding's."""

import numpy as np
import pytest
from numba import cuda

from gpudl import backend
from gpudl.kernels import mma
from mma_kernels import gemm_tf32, half_gemm, load_fragments, quad_reductions, staged_copy

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]


def _round_tf32(x):
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def _round_bf16(x):
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32)


def _check(c, a, b):
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_tf32_mma_matches_the_fragment_table():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((32, 16)).astype(np.float32)
    b = rng.standard_normal((16, 8)).astype(np.float32)
    c = np.zeros((32, 8), np.float32)
    gemm_tf32[1, 64](a, b, c)
    _check(c, _round_tf32(a), _round_tf32(b))
    assert np.abs(c - a.astype(np.float64) @ b).max() > 1e-6     # TF32 really rounded


@pytest.mark.parametrize("kind", ["f16", "bf16"])
def test_half_mma_matches_the_fragment_table(kind):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((32, 32)).astype(np.float32)
    b = rng.standard_normal((32, 8)).astype(np.float32)
    c = np.zeros((32, 8), np.float32)
    if kind == "f16":
        half_gemm(mma.mma_f16_m16n8k16, mma.pack_f16x2)[1, 64](a, b, c)
        rounded = (a.astype(np.float16), b.astype(np.float16))
    else:
        half_gemm(mma.mma_bf16_m16n8k16, mma.pack_bf16x2)[1, 64](a, b, c)
        rounded = (_round_bf16(a), _round_bf16(b))
    _check(c, *rounded)


def _gemm_passing(a_order, b_order):
    """A TF32 GEMM like ``gemm_tf32`` (one warp) whose A and B registers go to the mma in the
    given orders: (0, 1, 2, 3) and (0, 1) are the PTX table's."""
    @cuda.jit
    def gemm(a, b, c):
        g, t = cuda.threadIdx.x >> 2, cuda.threadIdx.x & 3
        d = (np.float32(0),) * 4
        for k in range(0, a.shape[1], 8):
            regs = (a[g, k + t], a[g + 8, k + t], a[g, k + t + 4], a[g + 8, k + t + 4],
                    b[k + t, g], b[k + t + 4, g])
            d = mma.mma_tf32_m16n8k8(*(mma.to_tf32(regs[i]) for i in a_order),
                                     *(mma.to_tf32(regs[4 + i]) for i in b_order), *d)
        c[g, 2 * t], c[g, 2 * t + 1], c[g + 8, 2 * t], c[g + 8, 2 * t + 1] = d
    return gemm


@pytest.mark.parametrize("a_order, b_order", [((0, 2, 1, 3), (0, 1)), ((1, 0, 2, 3), (0, 1)),
                                              ((0, 1, 2, 3), (1, 0))])
def test_swapped_fragment_registers_give_a_wrong_product(a_order, b_order):
    """The emulation places each register where the table says: the table's order passes the
    check that swapped registers fail."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((16, 16)).astype(np.float32)
    b = rng.standard_normal((16, 8)).astype(np.float32)
    want = _round_tf32(a).astype(np.float64) @ _round_tf32(b)
    c = np.zeros((16, 8), np.float32)
    _gemm_passing((0, 1, 2, 3), (0, 1))[1, 32](a, b, c)
    _check(c, _round_tf32(a), _round_tf32(b))
    _gemm_passing(a_order, b_order)[1, 32](a, b, c)
    assert np.abs(c - want).max() > 0.1 * np.abs(want).max()


def test_a_warp_whose_lanes_do_not_all_reach_the_mma_is_refused():
    @cuda.jit
    def half_the_warp(a, b, c):
        if cuda.threadIdx.x < 16:
            c[cuda.threadIdx.x, 0] = mma.mma_tf32_m16n8k8(a[0, 0], a[0, 0], a[0, 0], a[0, 0],
                                                          b[0, 0], b[0, 0], 0.0, 0.0, 0.0, 0.0)[0]
    a, b, c = np.ones((8, 8), np.float32), np.ones((8, 8), np.float32), np.zeros((16, 8))
    with pytest.raises(RuntimeError, match="did not all reach the mma"):
        half_the_warp[1, 32](a, b, c)


def test_ldmatrix_gives_fragments_and_their_transposes():
    rng = np.random.default_rng(2)
    halves = rng.standard_normal((32, 8)).astype(np.float16)   # 4 matrices of 8 rows x 8 halves
    words = np.ascontiguousarray(halves).view(np.uint32)         # (32, 4)
    out = np.zeros((32, 4), np.uint32)
    out_trans = np.zeros((32, 4), np.uint32)
    load_fragments[1, 32](words, out, out_trans)
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for m in range(4):
            matrix = halves[8 * m:8 * m + 8]
            assert out[lane, m] == words[8 * m + g, t]
            pair = np.array([matrix[2 * t, g], matrix[2 * t + 1, g]], np.float16)
            assert out_trans[lane, m] == pair.view(np.uint32)[0]


def test_packing_rounds_like_the_hardware():
    x = np.float32(1.0 + 2.0 ** -11 + 2.0 ** -20)          # above a float16 tie: rounds up
    assert mma.pack_f16x2(x, np.float32(-2)) == np.array([x, -2], np.float16).view(np.uint32)[0]
    assert int(mma.pack_bf16x2(np.float32(1.0), np.float32(3.0))) == (0x4040 << 16) | 0x3F80
    assert mma.to_tf32(np.float32(1.0 + 2.0 ** -11)) == np.float32(1.0 + 2.0 ** -10)  # tie: away


def test_quad_reductions_combine_the_four_lanes_of_a_group():
    x = np.random.default_rng(3).standard_normal(64).astype(np.float32)
    out_max, out_sum = np.zeros(64, np.float32), np.zeros(64, np.float32)
    quad_reductions[1, 64](x, out_max, out_sum)
    groups = x.reshape(16, 4)
    np.testing.assert_array_equal(out_max, np.repeat(groups.max(axis=1), 4))
    np.testing.assert_allclose(out_sum, np.repeat(groups.sum(axis=1), 4), rtol=1e-6)


@pytest.mark.parametrize("size", [4, 8, 16])
def test_cp_async_pipeline_copies_and_zero_fills(size):
    """Three 128-value tiles through two stages; the last tile is partial (301 values: a 16-byte
    copy with 4 source bytes, then copies with none)."""
    src = np.random.default_rng(4).standard_normal(301).astype(np.float32)
    out = np.full(384, np.nan, np.float32)
    staged_copy(getattr(mma, f"cp_async_{size}"), size)[1, 32](src, out)
    np.testing.assert_array_equal(out, np.concatenate([src, np.zeros(83, np.float32)]))


def test_cp_async_lands_when_its_group_is_waited_for():
    """The emulation's landing moment is the latest the hardware allows: a tile read before its
    wait shows the old contents, so a kernel missing a wait fails here too."""
    src = np.arange(8, dtype=np.float32)
    tile = np.zeros((2, 4), np.float32)
    mma.cp_async_16(tile, 0, 0, src, 0, 16)
    mma.cp_async_commit()
    mma.cp_async_8(tile, 1, 2, src, 4, 4)                  # 4 of 8 bytes: the rest zero-filled
    mma.cp_async_commit()
    assert not tile.any()
    mma.cp_async_wait(1)                                   # the older group only
    np.testing.assert_array_equal(tile, [[0, 1, 2, 3], [0, 0, 0, 0]])
    tile[1, 3] = 7
    mma.cp_async_wait_all()
    np.testing.assert_array_equal(tile, [[0, 1, 2, 3], [0, 0, 4, 0]])
    with pytest.raises(RuntimeError, match="aligned"):
        mma.cp_async_16(tile, 0, 1, src, 0, 16)
    with pytest.raises(RuntimeError, match="outside"):
        mma.cp_async_16(tile, 0, 0, src, 8, 16)
