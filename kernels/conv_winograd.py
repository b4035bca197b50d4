"""CPU 3x3 stride-1 convolution by Winograd's F(2x2, 3x3), and its two adjoints.

Each 2x2 block of outputs (a tile) is computed from a 4x4 patch of the padded input with 16
multiplies per (input, output) channel pair instead of 36 (Lavin & Gray, 2015):

    Y = A^T [ (G w G^T) . (B^T d B) ] A        (. elementwise, summed over input channels)

so a forward is: V = B^T d B for every tile and input channel (``_input_tiles``), U = G w G^T per
weight (one small GEMM), then 16 GEMMs M[xi] = U[xi] @ V[xi] (one per position xi of the 4x4
transform, (K, C) @ (C, tiles)), then Y = A^T M A per tile and output channel
(``_output_tiles``). 2.25x fewer multiply-adds in the GEMMs than im2col, which on this machine's
OpenBLAS (AVX2 kernels) is the whole cost of a large conv.

Both gradients are the exact adjoints of those linear steps, so they share the transforms:

- grad_input:  dM = A gY A^T (``_output_tiles_adjoint``), dV[xi] = U[xi]^T @ dM[xi], then the
  4x4 patches B dV B^T added into the padded input gradient (``_input_tiles_adjoint``);
- grad_weight: dU[xi] = sum over tiles dM[xi] @ V[xi]^T (per xi and step of images, the tiles
  on the inner dimension: kernels/small_gemm.py's AVX-512 dot products, both operands' rows
  running along the tiles), then gw = G^T dU G;
- ``backward`` gives both from one dM per step.

The images are split into one part per thread (``cpu_threads.count()``); a thread runs its part
in one Numba call (``_forward_steps``, ``_backward_steps``), a step of as many images as keep V
and M within CHUNK_BYTES (a core's L2 here) at a time: each product reads its operands from L2,
where the transform before it left them. The GEMMs are small_gemm's AVX-512 loops (the 16 of a
step, ``gemm_nn``: OpenBLAS is held to AVX2 kernels here); the work arrays are per thread and
kept for the next call of the same geometry (``conv._scratch``). At (32,16,32,32) x 32 on two
threads, 4 MiB chunks of images handed out from Python one by one measured 4.0-4.3 ms forward +
backward, L2-sized steps in one call 3.6-3.8 (PyTorch 2.8-3.0).

Layout: the kernels see every image split by row and column parity (space to depth),
(..., 2, 2, rows / 2, columns / 2) with [..., r, p, u, j] the pixel (2u + r, 2j + p). Tile
(ty, tx) then reads [r, p, ty + {0, 1}, tx + {0, 1}], so with the tiles of an image numbered
ty * (tw + 1) + tx (one garbage tile per tile row, tx = tw, as the im2col path's garbage
columns), every step of a transform is one long stride-1 loop over all tiles of an image at a
fixed offset: 1 for the next tile column, tw + 1 for the next tile row. LLVM vectorizes none of
the stride-2 loops a plain layout needs (measured 20x slower per element), and short per-row
loops spend more in their set-up than in their work. Each transform splits (x, gy) or merges
(y, the input gradient) one image plane at a time into a small parity-split buffer that stays in
L1, each plain row's column pairs in one vectorized loop (``_split_plane``, ``_merge_plane``):
no chunk-sized copies in between.

The transforms only add and halve: float32 results measured within 7e-7 of the largest output
value against float64 references (shapes of the tests, up to 19 channels).
A NaN or infinity, though, would reach the other outputs of its tile through the transforms (as
inf - inf), where the direct sum keeps it to the outputs whose window holds it: the transforms
report any non-finite value they read and the caller then recomputes with im2col (``None``).
"""

import numba
import numpy as np

from gpudl import cpu_threads

from . import small_gemm

# Winograd F(2x2, 3x3) matrices: weight transform G (4x3); B^T and A^T are spelled out as
# additions in the kernels below.
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
GG = np.kron(G, G)         # (16, 9): U[4a+b] = sum G[a, i] G[b, j] w[3i+j]

MIN_CHANNELS = 16           # below this, the transforms cost more than the GEMM saves
MIN_WORK = 1 << 24          # N*Ho*Wo*C*K: smaller convs stay on im2col (already ~free)
CHUNK_BYTES = 1 << 20       # V and M of one step's images: kept in a core's L2 between steps


def computes(geo):
    """Whether F(2x2, 3x3) computes this geometry: 3x3, stride 1, dilation 1, one group, every
    output kept (the GPU path, conv_winograd_cuda, shares this rule)."""
    natural = (geo.Ho, geo.Wo) == (geo.H + 2 * geo.ph - 2, geo.W + 2 * geo.pw - 2)
    return (geo.kh == geo.kw == 3 and geo.sh == geo.sw == geo.dh == geo.dw == geo.groups == 1
            and natural and min(geo.N, geo.Ho, geo.Wo) > 0)


def applies(geo):
    """Whether this geometry runs here: ``computes`` it, with enough channels and work for the
    transforms to pay."""
    return (computes(geo) and min(geo.C, geo.K) >= MIN_CHANNELS
            and geo.N * geo.Ho * geo.Wo * geo.C * geo.K >= MIN_WORK)


class _Plan:
    """Tile counts, the images of each thread's part and of each step within it, and the work
    array shapes for one geometry."""

    def __init__(self, geo, dtype, workers):
        self.th, self.tw = -(-geo.Ho // 2), -(-geo.Wo // 2)        # tiles per image
        self.half = self.tw + 1                                     # tile columns + garbage
        self.tiles = self.th * self.half                            # per image, garbage included
        per_image = 16 * (geo.C + geo.K) * self.tiles * np.dtype(dtype).itemsize
        self.nb = int(max(1, min(geo.N, CHUNK_BYTES // per_image)))  # images a step
        self.parts = range(0, geo.N, -(-geo.N // max(1, workers)))  # a thread's images each
        self.per_part = self.parts.step
        self.tc = self.nb * self.tiles                              # tiles a step
        # the 16 planes one cache line past a multiple of the page size: 16 write streams at
        # a 4 KiB multiple would share cache sets
        self.shapes = {"v": (16, geo.C * self.tc + 16), "m": (16, geo.K * self.tc + 16)}


def _weight_tiles(w, dtype):
    """U = G w G^T for every (k, c): (16, K, C), as one GEMM with kron(G, G)."""
    K, C = w.shape[:2]
    flat = w.astype(dtype, copy=False).reshape(K * C, 9)
    return np.ascontiguousarray((flat @ GG.astype(dtype).T).T).reshape(16, K, C)


def _weight_tiles_adjoint(du, K, C):
    """gw = G^T dU G for every (k, c): (K, C, 3, 3) from dU (16, K, C)."""
    return (du.reshape(16, K * C).T @ GG.astype(du.dtype)).reshape(K, C, 3, 3)


@numba.njit(cache=True, nogil=True)
def _split_plane(img, plane, row0, col0, half):
    """plane[r, p, u*half + j] = img[h, w] for (h + row0, w + col0) = (2u + r, 2j + p): one
    image plane placed at (row0, col0) in a parity-split plane (the rest of it left as it is).
    Each row's column pairs in one loop, an interleaved load the compiler vectorizes (2x
    NumPy's strided copies); an odd last column in a pass of its own (a store after that loop,
    in the same nest, measured 2.5x slower)."""
    H, W = img.shape
    c0, pairs = col0 % 2, W // 2            # plain column 2i lands at parity c0, 2i+1 at 1 - c0
    for h in range(H):
        row, r, start = img[h], (h + row0) % 2, (h + row0) // 2 * half
        even = plane[r, c0, start + col0 // 2:start + col0 // 2 + pairs]
        odd = plane[r, 1 - c0, start + (col0 + 1) // 2:start + (col0 + 1) // 2 + pairs]
        for i in range(pairs):
            even[i] = row[2 * i]
            odd[i] = row[2 * i + 1]
    if W % 2:
        for h in range(H):
            plane[(h + row0) % 2, c0, (h + row0) // 2 * half + col0 // 2 + pairs] = img[h, W - 1]


@numba.njit(cache=True, nogil=True)
def _merge_plane(plane, img, row0, col0, half):
    """The inverse of _split_plane: img from the parity-split plane."""
    H, W = img.shape
    c0, pairs = col0 % 2, W // 2
    for h in range(H):
        row, r, start = img[h], (h + row0) % 2, (h + row0) // 2 * half
        even = plane[r, c0, start + col0 // 2:start + col0 // 2 + pairs]
        odd = plane[r, 1 - c0, start + (col0 + 1) // 2:start + (col0 + 1) // 2 + pairs]
        for i in range(pairs):
            row[2 * i] = even[i]
            row[2 * i + 1] = odd[i]
    if W % 2:
        for h in range(H):
            img[h, W - 1] = plane[(h + row0) % 2, c0, (h + row0) // 2 * half + col0 // 2 + pairs]


# --------------------------------------------------------------------------- tile transforms
@numba.njit(cache=True, nogil=True)
def _input_tiles(x, n0, m, v, tc, half, L, row0, col0):
    """v[4a+b, c*tc + n*L + t] = (B^T d B)[a, b] for the 4x4 patch d of tile t of image n0 + n
    (L tiles per image) of x padded by (row0, col0): each plane parity-split (``_split_plane``),
    then the rows of B^T d (d0-d2, d1+d2, d2-d1, d1-d3) for every tile at once, then the same
    along the columns. Returns False if a value read is not finite."""
    C = x.shape[1]
    xpad = np.zeros((2, 2, L + half), x.dtype)     # the padding stays zero
    s = np.empty((4, 2, L), x.dtype)
    check = np.zeros(L, x.dtype)           # elementwise (a sum would serialise the loop)
    for c in range(C):
        for n in range(m):
            _split_plane(x[n0 + n, c], xpad, row0, col0, half)
            for p in range(2):
                # rows 2ty, 2ty+1, 2ty+2, 2ty+3 of tile row ty: r0, r1 at ty, r2, r3 at ty + 1
                r0, r1 = xpad[0, p, :L], xpad[1, p, :L]
                r2, r3 = xpad[0, p, half:], xpad[1, p, half:]
                s0, s1, s2, s3 = s[0, p], s[1, p], s[2, p], s[3, p]
                for f in range(L):
                    s0[f] = r0[f] - r2[f]
                for f in range(L):
                    s1[f] = r1[f] + r2[f]
                for f in range(L):
                    s2[f] = r2[f] - r1[f]
                for f in range(L):
                    s3[f] = r1[f] - r3[f]
                for f in range(L):
                    check[f] += (s0[f] + s1[f] + s3[f]) * 0
            t0 = c * tc + n * L
            for a in range(4):
                ev, od = s[a, 0], s[a, 1]            # columns 2tx, 2tx+1; 2tx+2, 2tx+3 at f+1
                d0, d1 = v[4 * a, t0:t0 + L], v[4 * a + 1, t0:t0 + L]
                d2, d3 = v[4 * a + 2, t0:t0 + L], v[4 * a + 3, t0:t0 + L]
                for f in range(L - 1):
                    d0[f] = ev[f] - ev[f + 1]
                for f in range(L - 1):
                    d1[f] = od[f] + ev[f + 1]
                for f in range(L - 1):
                    d2[f] = ev[f + 1] - od[f]
                for f in range(L - 1):
                    d3[f] = od[f] - od[f + 1]
                d0[L - 1] = d1[L - 1] = d2[L - 1] = d3[L - 1] = 0     # a garbage tile
    return np.all(check == 0)


@numba.njit(cache=True, nogil=True)
def _input_tiles_adjoint(dv, tc, m, gx, n0, half, L, row0, col0):
    """The adjoint of _input_tiles: gx[n0 + n, c] from every tile's patch B dV B^T, added into a
    parity-split padded plane (tiles overlap by 2 rows and columns) then merged
    (``_merge_plane``). The garbage tiles' dV must be zero (they are: their dM is)."""
    C = gx.shape[1]
    gxpad = np.empty((2, 2, L + half), dv.dtype)
    gs = np.empty((4, 2, L), dv.dtype)
    for n in range(m):
        for c in range(C):
            t0 = c * tc + n * L
            for a in range(4):          # columns: the adjoint of ev[f] - ev[f+1], ...
                v0, v1 = dv[4 * a, t0:t0 + L], dv[4 * a + 1, t0:t0 + L]
                v2, v3 = dv[4 * a + 2, t0:t0 + L], dv[4 * a + 3, t0:t0 + L]
                ev, od = gs[a, 0], gs[a, 1]
                for f in range(L):
                    ev[f] = v0[f]
                for f in range(L - 1):
                    ev[f + 1] += v1[f] + v2[f] - v0[f]
                for f in range(L):
                    od[f] = v1[f] - v2[f] + v3[f]
                for f in range(L - 1):
                    od[f + 1] -= v3[f]
            gxpad[...] = 0
            for p in range(2):          # rows: the adjoint of r0 - r2, r1 + r2, r2 - r1, r1 - r3
                g0, g1 = gxpad[0, p, :L], gxpad[1, p, :L]
                g2, g3 = gxpad[0, p, half:], gxpad[1, p, half:]
                s0, s1, s2, s3 = gs[0, p], gs[1, p], gs[2, p], gs[3, p]
                for f in range(L):
                    g0[f] += s0[f]
                for f in range(L):
                    g1[f] += s1[f] - s2[f] + s3[f]
                for f in range(L):
                    g2[f] += s1[f] + s2[f] - s0[f]
                for f in range(L):
                    g3[f] -= s3[f]
            _merge_plane(gxpad, gx[n0 + n, c], row0, col0, half)


@numba.njit(cache=True, nogil=True)
def _output_tiles(mt, tc, m, y, n0, bias, half, L):
    """y[n0 + n, k] = (A^T M A) + bias[k] for every tile of image n0 + n (L tiles, garbage
    included): the two rows of A^T M (m0+m1+m2, m1-m2-m3) for every tile at once, then the same
    along the columns into a parity-split plane, merged into y (``_merge_plane``)."""
    K = y.shape[1]
    pr = np.empty((2, 4, L), mt.dtype)
    out = np.empty((2, 2, L), mt.dtype)
    for n in range(m):
        for k in range(K):
            bk = bias[k]
            t0 = k * tc + n * L
            for b in range(4):
                m0, m1 = mt[b, t0:t0 + L], mt[4 + b, t0:t0 + L]
                m2, m3 = mt[8 + b, t0:t0 + L], mt[12 + b, t0:t0 + L]
                p0, p1 = pr[0, b], pr[1, b]
                for f in range(L):
                    p0[f] = m0[f] + m1[f] + m2[f]
                for f in range(L):
                    p1[f] = m1[f] - m2[f] - m3[f]
            for i in range(2):
                c0, c1, c2, c3 = pr[i, 0], pr[i, 1], pr[i, 2], pr[i, 3]
                ev, od = out[i, 0], out[i, 1]
                for f in range(L):
                    ev[f] = c0[f] + c1[f] + c2[f] + bk
                for f in range(L):
                    od[f] = c1[f] - c2[f] - c3[f] + bk
            _merge_plane(out, y[n0 + n, k], 0, 0, half)


@numba.njit(cache=True, nogil=True)
def _output_tiles_adjoint(gy, n0, m, dm, tc, half, L, gb):
    """dm[:, k*tc + n*L + t] = A gY A^T for tile t's 2x2 block of gy[n0 + n, k], parity-split
    (``_split_plane``; zero past an odd edge and in the garbage tiles): A gY's rows are g0,
    g0+g1, g0-g1, -g1, and the same along the columns; gb[k] = the sum of gy[n0:n0+m, k].
    Returns False if a value read is not finite."""
    K = gy.shape[1]
    gys = np.zeros((2, 2, L), gy.dtype)    # the odd edge and the garbage tiles stay zero
    q = np.empty((2, 2, L), gy.dtype)
    check = np.zeros(L, gy.dtype)
    total = np.empty(L, gy.dtype)          # elementwise over the images, summed once per k
    for k in range(K):
        total[:] = 0
        for n in range(m):
            _split_plane(gy[n0 + n, k], gys, 0, 0, half)
            for p in range(2):
                g0, g1, plus, minus = gys[0, p], gys[1, p], q[0, p], q[1, p]
                for f in range(L):
                    plus[f] = g0[f] + g1[f]
                for f in range(L):
                    minus[f] = g0[f] - g1[f]
                for f in range(L):
                    check[f] += plus[f] * 0
                for f in range(L):
                    total[f] += plus[f]
            t0 = k * tc + n * L
            for a in range(4):
                if a == 0:
                    ev, od, sign = gys[0, 0], gys[0, 1], 1
                elif a == 1:
                    ev, od, sign = q[0, 0], q[0, 1], 1
                elif a == 2:
                    ev, od, sign = q[1, 0], q[1, 1], 1
                else:
                    ev, od, sign = gys[1, 0], gys[1, 1], -1
                d0, d1 = dm[4 * a, t0:t0 + L], dm[4 * a + 1, t0:t0 + L]
                d2, d3 = dm[4 * a + 2, t0:t0 + L], dm[4 * a + 3, t0:t0 + L]
                for f in range(L):
                    d0[f] = sign * ev[f]
                for f in range(L):
                    d1[f] = sign * (ev[f] + od[f])
                for f in range(L):
                    d2[f] = sign * (ev[f] - od[f])
                for f in range(L):
                    d3[f] = -sign * od[f]
        gb[k] = total.sum()
    return np.all(check == 0)


# --------------------------------------------------------------------------- the three products
def _buffers(scratch, geo, plan, dtype, *roles):
    """Per-chunk work arrays (``_Plan.shapes``), kept for the next call of this geometry."""
    return [scratch(geo, "winograd-" + role, plan.shapes[role], dtype) for role in roles]


def forward(x, w, bias, geo, scratch, dtype):
    """y = conv(x, w) + bias (bias a (K,) array), or None if x or w holds a non-finite value."""
    if not np.isfinite(w).all():
        return None
    workers = cpu_threads.count()         # threads, each on a part of the images
    plan = _Plan(geo, dtype, workers)
    u = _weight_tiles(w, dtype)
    y = np.empty(geo.y_shape, dtype)
    rows = small_gemm.row_starts(geo.C, plan.tc)[0]
    zero = np.zeros(geo.K, dtype)

    def part(n0):
        v, mt = _buffers(scratch, geo, plan, dtype, "v", "m")
        return _forward_steps(x, n0, min(geo.N, n0 + plan.per_part), plan.nb, u, v, rows, mt,
                              zero, y, bias, plan.half, plan.tiles, geo.ph, geo.pw)
    return y if all(cpu_threads.map_serial_blas(part, plan.parts, workers)) else None


@numba.njit(cache=True, nogil=True)
def _forward_steps(x, n0, n1, nb, u, v, rows, mt, zero, y, bias, half, L, row0, col0):
    """Images n0..n1 of the forward, nb a step: input tiles, the 16 GEMMs, output tiles, each
    step's V and M still in L2 from the step before (one call: no Python between steps).
    False if a value read is not finite."""
    tc = nb * L
    for s0 in range(n0, n1, nb):
        m = min(nb, n1 - s0)
        if not _input_tiles(x, s0, m, v, tc, half, L, row0, col0):
            return False
        small_gemm._gemm_nn_planes(u, v, rows, mt, tc, m * L, zero)
        _output_tiles(mt, tc, m, y, s0, bias, half, L)
    return True


def backward(x, w, gy, geo, scratch, dtype, need_gx=True, need_gw=True, need_gb=False):
    """(gx, gw, gb) of the forward (None where not needed), or None if x (for gw), w (for gx)
    or gy holds a non-finite value. Per chunk of images, gY's tiles dM serve both gradients,
    and the pass that makes them sums gy for the bias."""
    if need_gx and not np.isfinite(w).all():
        return None
    workers = cpu_threads.count()         # threads, each on a part of the images
    plan = _Plan(geo, dtype, workers)
    ut = np.ascontiguousarray(_weight_tiles(w, dtype).transpose(0, 2, 1)) if need_gx else None
    gx = np.empty(geo.x_shape, dtype) if need_gx else None
    none = np.empty((0, 0, 0, 0), dtype)          # for x or gx when not needed
    k_rows, c_rows = small_gemm.row_starts(geo.K, plan.tc), small_gemm.row_starts(geo.C, plan.tc)

    def part(n0):
        """This part's dU (16, K, C) and its sum of gy per channel (K,); None if not finite."""
        v, dm = _buffers(scratch, geo, plan, dtype, "v", "m")
        du = np.zeros((16, geo.K, geo.C), dtype)
        gb = np.zeros(geo.K, dtype)
        done = _backward_steps(x if need_gw else none, gy, n0, min(geo.N, n0 + plan.per_part),
                               plan.nb, v, dm, ut if need_gx else np.empty((16, 0, 0), dtype),
                               k_rows, c_rows, gx if need_gx else none, du, gb, plan.half,
                               plan.tiles, geo.ph, geo.pw, need_gw, need_gx)
        return (du, gb) if done else None
    parts = cpu_threads.map_serial_blas(part, plan.parts, workers)
    if any(part is None for part in parts):
        return None
    du, gb = (np.sum([part[i] for part in parts], axis=0) for i in range(2))
    gw = _weight_tiles_adjoint(du, geo.K, geo.C) if need_gw else None
    return gx, gw, gb if need_gb else None


@numba.njit(cache=True, nogil=True)
def _backward_steps(x, gy, n0, n1, nb, v, dm, ut, k_rows, c_rows, gx, du, gb, half, L, row0,
                    col0, need_gw, need_gx):
    """Images n0..n1 of the backward, nb a step: gY's tiles dM (and gy's sums into gb), then
    dU += dM V^T over the step's tiles (x's tiles V made here) and the input gradient from
    dV = U^T dM (made over V: the weight gradient is done with it). False if a value read is
    not finite."""
    tc = nb * L
    K, C = du.shape[1], du.shape[2]
    step_du = np.empty_like(du)
    step_gb = np.empty_like(gb)
    zero = np.zeros(C, du.dtype)
    for s0 in range(n0, n1, nb):
        m = min(nb, n1 - s0)
        if not _output_tiles_adjoint(gy, s0, m, dm, tc, half, L, step_gb):
            return False
        gb += step_gb
        if need_gw:
            if not _input_tiles(x, s0, m, v, tc, half, L, row0, col0):
                return False
            small_gemm._gemm_nt_planes(dm, k_rows, v, c_rows, m * L, step_du)
            du += step_du
        if need_gx:
            small_gemm._gemm_nn_planes(ut, dm, k_rows[0], v, tc, m * L, zero)
            _input_tiles_adjoint(v, tc, m, gx, s0, half, L, row0, col0)
    return True


def grad_input(gy, w, geo, scratch, dtype):
    """The input gradient, or None if gy or w holds a non-finite value."""
    done = backward(None, w, gy, geo, scratch, dtype, need_gw=False)
    return None if done is None else done[0]
