"""Small kernels written with each tensor-core primitive of kernels/mma.py, shared by the
simulator test (do they compute the right thing?) and the offline test (does the hardware get
HMMA/LDSM with the fragments in registers?)."""

from numba import cuda, float32, uint32

from gpudl.kernels import mma

ALIGN = mma.LDMATRIX_ALIGN     # a module constant: Numba needs the alignment as a literal


@cuda.jit
def gemm_tf32(a, b, c):
    """c[16*warp : 16*warp+16, :] = a[16 warp rows] @ b (K a multiple of 8, N = 8)."""
    lane = cuda.threadIdx.x & 31
    m0 = (cuda.threadIdx.x >> 5) * 16
    g, t = lane >> 2, lane & 3
    d0 = d1 = d2 = d3 = float32(0)
    for k in range(0, a.shape[1], 8):
        d0, d1, d2, d3 = mma.mma_tf32_m16n8k8(
            mma.to_tf32(a[m0 + g, k + t]), mma.to_tf32(a[m0 + g + 8, k + t]),
            mma.to_tf32(a[m0 + g, k + t + 4]), mma.to_tf32(a[m0 + g + 8, k + t + 4]),
            mma.to_tf32(b[k + t, g]), mma.to_tf32(b[k + t + 4, g]), d0, d1, d2, d3)
    c[m0 + g, 2 * t] = d0
    c[m0 + g, 2 * t + 1] = d1
    c[m0 + g + 8, 2 * t] = d2
    c[m0 + g + 8, 2 * t + 1] = d3


def half_gemm(mma_op, pack):
    @cuda.jit
    def gemm(a, b, c):
        lane = cuda.threadIdx.x & 31
        m0 = (cuda.threadIdx.x >> 5) * 16
        g, t = lane >> 2, lane & 3
        d0 = d1 = d2 = d3 = float32(0)
        for k in range(0, a.shape[1], 16):
            c0 = k + 2 * t
            d0, d1, d2, d3 = mma_op(
                pack(a[m0 + g, c0], a[m0 + g, c0 + 1]),
                pack(a[m0 + g + 8, c0], a[m0 + g + 8, c0 + 1]),
                pack(a[m0 + g, c0 + 8], a[m0 + g, c0 + 9]),
                pack(a[m0 + g + 8, c0 + 8], a[m0 + g + 8, c0 + 9]),
                pack(b[c0, g], b[c0 + 1, g]), pack(b[c0 + 8, g], b[c0 + 9, g]), d0, d1, d2, d3)
        c[m0 + g, 2 * t] = d0
        c[m0 + g, 2 * t + 1] = d1
        c[m0 + g + 8, 2 * t] = d2
        c[m0 + g + 8, 2 * t + 1] = d3
    return gemm


@cuda.jit
def load_fragments(words, out, out_trans):
    """Each lane points at one 16-byte row of a 32x4-word tile: lanes 8m..8m+7 at matrix m."""
    lane = cuda.threadIdx.x
    tile = cuda.shared.array((32, 4), uint32, alignment=ALIGN)
    for w in range(4):
        tile[lane, w] = words[lane, w]
    cuda.syncthreads()
    r = mma.ldmatrix_x4(tile, lane, 0)
    s = mma.ldmatrix_x4_trans(tile, lane, 0)
    for m in range(4):
        out[lane, m] = r[m]
        out_trans[lane, m] = s[m]


@cuda.jit
def quad_reductions(x, out_max, out_sum):
    lane = cuda.threadIdx.x
    out_max[lane] = mma.quad_max(x[lane])
    out_sum[lane] = mma.quad_sum(x[lane])


def staged_copy(cp_async, size):
    """out[:tiles * 128] = src then zeros, through a two-stage cp.async pipeline: 32 threads
    each copy 16 bytes of a 128-value tile as 16 / ``size`` copies of ``size`` bytes, the tail
    zero-filled by ``src_bytes`` (an index past the end is replaced by 0, which is never read)."""
    per = size // 4                                  # float32 values per copy

    @cuda.jit
    def copy(src, out):
        lane = cuda.threadIdx.x
        n = src.shape[0]
        tiles = (n + 127) // 128
        tile = cuda.shared.array((2, 128), float32, alignment=ALIGN)
        for k in range(tiles + 1):
            if k < tiles:                            # issue tile k, one group
                for c in range(4 // per):
                    at = 128 * k + 4 * lane + per * c
                    room = max(0, min(per, n - at))
                    cp_async(tile, k & 1, 4 * lane + per * c, src, at if room > 0 else 0,
                             4 * room)
            mma.cp_async_commit()
            if k > 0:                                # tile k - 1 has landed
                mma.cp_async_wait(1)
                cuda.syncthreads()
                for c in range(4):
                    out[128 * (k - 1) + 4 * lane + c] = tile[(k - 1) & 1, 4 * lane + c]
                cuda.syncthreads()
        mma.cp_async_wait_all()
    return copy
