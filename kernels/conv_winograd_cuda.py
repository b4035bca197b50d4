"""Winograd F(2x2, 3x3) convolutions on cuda: two tile-transform kernels around one batched
cuBLAS GEMM.

The math is kernels/conv_winograd.py's (its docstring; the weight transform G and its Kronecker
square come from there): a 3x3 stride-1 convolution computes each 2x2 block of outputs (a tile)
from the 4x4 patch of padded input under it with 16 products per channel pair instead of 36,

    Y = A^T [ sum over c of (G w G^T)[k, c] . (B^T d[c] B) ] A        (. elementwise)

so a forward is, per chunk of images:

1. ``input_tiles`` kernel: V[xi, c, t] = (B^T d B)[xi] for every tile t and input channel c, one
   thread per (c, t): it loads the 16 values of its patch (zero outside the image), combines the
   rows then the columns by additions, and stores 16 values, each store coalesced along t;
2. U = G w G^T once per call (16, K, C): one small product with kron(G, G);
3. M[xi] = U[xi] @ V[xi] for the 16 positions xi: ONE strided-batched cuBLAS GEMM
   (16, K, C) @ (16, C, T) in strict fp32, through gpudl/capture_blas.py (``_product``: CUDA-graph
   capturable);
4. ``output_tiles`` kernel: y = A^T M A + bias for every tile and output channel, one thread per
   (k, t), storing the outputs of a partial last tile that fall inside (Ho, Wo) only.

The GEMMs do 16 K C T multiply-adds where the direct sum does 36: 2.25x fewer. The price is the
memory V and M pass through: each is 4x the data it comes from (16 values per tile of 4
pixels), written once and read once. Images go in chunks whose V and M fit CHUNK_BYTES.

Gradients:

- grad_input: at stride 1 the adjoint of the convolution in x is the convolution of gy with
  the weights flipped and their channels swapped, padded by 2 - p: the forward above, run on gy
  (a padding above 2 makes that negative, which the input kernel's bounds test takes as is);
- grad_weight: dM = A gY A^T for every tile (``output_tiles_adjoint``, gy zero past its edge),
  dU[xi] = dM[xi] @ V[xi]^T summed over the tiles (one batched GEMM a chunk, the chunk's images
  in about SPLITS splits, each a product of its own so that the GEMM has 16 x SPLITS output
  blocks to spread over the GPU, then a sum over the splits), gw = G^T dU G. dM[5] (A's rows
  1 and 1) is each tile's sum of gy, so the bias gradient, when asked, is one sum over dM[5]
  (a quarter of gy's size).

Whether it runs at all: ``ENABLED`` (below; off, as measured on a GPU). Where it may run
(``applies``): 3x3, stride 1, dilation 1, one group, every output kept, float32
with TF32 off (strict) or float64, at least MIN_CHANNELS input and output channels, MIN_WORK
multiply-adds, and arrays within the int32 index guard (bigger ones keep conv_cuda's 64-bit
build). The channel floor: per output pixel the transforms move about 2 * 4 * (C + K) * 4 bytes
through V and M (each written then read) plus x and y, while the direct sum costs 18 C K flops;
at C = K = 32 the two meet on an H200 (4.8 TB/s, 67 TFLOP/s fp32: ~0.55 ns of traffic plus
0.2 ns of GEMM per pixel against ~1 ns for conv_cuda), and from 64 channels Winograd should win
by about 2x. The work floor keeps small convolutions on conv_cuda's one launch (this path makes
three kernel launches and two or three cuBLAS calls a pass).

Non-finite values: a NaN or infinity in x (or in gy, for grad_input) reaches every output of
the tiles whose patch holds it, through the transforms' additions (inf - inf is NaN): the
outputs of those tiles may be NaN where the direct sum gives a number (or inf); outputs of
other tiles are exact. cuDNN's Winograd does the same. The CPU twin detects non-finite values
and recomputes with im2col; here that check would need a device-to-host read per call, which a
training step must not make (issue 14), so it is not made.

Kernels: one thread per (channel, tile) of one image, (blockIdx.z, blockIdx.y) the split and
the image in it (the forward: one split a chunk), tile values laid out (16, splits, channels,
tiles of a split); the flat index splits into (channel, tile row, tile column) by multiplying with
magic numbers (pool_cuda's ``_magic``): no division anywhere. Index math is int32 (offsets below
the guard), array indices unsigned (Numba wraps negative signed ones with a compare and select).
The transforms themselves are kernels/winograd_transforms.py's, shared with the fused kernels.
"""

import functools

import numpy as np
from numba import cuda, float32, float64, int32, int64, uint32

from gpudl import backend, capture_blas

from . import conv_cuda, conv_winograd
from .budget import Budget
from .launch import launch
from .pool_cuda import _magic
from .winograd_transforms import ag, at, bt, store_ag_rows, store_bt_rows, store_output_tile

# Off by default: on an H200 (session 18, benchmarks/RESULTS.md) compare.py's strict-fp32 3x3
# rows took 1.96 ms (fwd) and 4.47 ms (fwd+bwd) at (64,64,56,56) x 64 with this path, where
# conv_cuda's direct sum took 0.82 and 2.50 ms on the same machine kind (session 13): the
# traffic model in the module docstring does not hold there. On (True) for tests and for
# benchmarks/conv_paths.py, which times both paths side by side in one process.
ENABLED = False
THREADS = 256          # threads per block: memory-bound kernels, one thread per (channel, tile)
MIN_CHANNELS = 32      # below this the traffic through V and M costs more than the GEMM saves
MIN_WORK = 1 << 26     # N*Ho*Wo*C*K: smaller convolutions stay on conv_cuda's single launch
CHUNK_BYTES = 256 << 20    # V and M of one chunk of images
# The weight gradient's products: about SPLITS per position (16 x 16 = 256 K x C blocks, about
# two waves of 128 x 128 cuBLAS tiles on 132 SMs), each reducing over MIN_SPLIT_TILES or more
SPLITS = 16
MIN_SPLIT_TILES = 512
INDEX_LIMIT = conv_cuda.INT32_LIMIT // 4 * 3       # conv_cuda's int32 guard
MAX_CHUNK_IMAGES = 65535                           # blockIdx.y


def _kernels(acc):
    """(input_tiles, output_tiles, output_tiles_adjoint) on ``acc`` (float32 or float64)."""
    I, U = int32, uint32

    @cuda.jit(device=True, inline="always")
    def split(q, mc, sc, mt, st, tiles, tw):
        # q -> (channel, tile row, tile column) for ``tiles`` tiles of ``tw`` columns a plane
        c = I((int64(q) * mc) >> sc)
        r = I(q - c * tiles)
        ty = I((int64(r) * mt) >> st)
        return c, r, ty, I(r - ty * tw)

    @cuda.jit(device=True, inline="always")
    def this_tile(channels, tiles, tw, mc, sc, mt, st):
        # this thread's (channel c, tile r) of image n = blockIdx.z * gridDim.y + blockIdx.y of
        # the chunk, in a (16, S, channels, g * tiles) array of tile values (S = gridDim.z
        # splits of g = gridDim.y images): (whether the thread has one, n, c, tile row, tile
        # column, the offset of its value at position 0 and the step from one position to
        # the next)
        q = I(cuda.blockIdx.x * THREADS + cuda.threadIdx.x)
        g, s, j = I(cuda.gridDim.y), I(cuda.blockIdx.z), I(cuda.blockIdx.y)
        c, r, ty, tx = split(q, mc, sc, mt, st, tiles, tw)
        length = I(g * tiles)                   # tiles of a split
        first = I((s * channels + c) * length + j * tiles + r)
        return (q < channels * tiles, I(s * g + j), c, ty, tx, first,
                I(cuda.gridDim.z * channels * length))

    @cuda.jit(device=True, inline="always")
    def load_row(x, row, h, w0, H, W):
        # the 4 values at (h, w0..w0+3) of a plane whose row h starts at ``row``, 0 outside
        a0 = a1 = a2 = a3 = acc(0)
        if U(h) < U(H):
            if U(w0) < U(W):
                a0 = acc(x[U(row + w0)])
            if U(w0 + 1) < U(W):
                a1 = acc(x[U(row + w0 + 1)])
            if U(w0 + 2) < U(W):
                a2 = acc(x[U(row + w0 + 2)])
            if U(w0 + 3) < U(W):
                a3 = acc(x[U(row + w0 + 3)])
        return a0, a1, a2, a3

    @cuda.jit(device=True, inline="always")
    def at4(m):
        return at(m[0], m[1], m[2], m[3])

    @cuda.jit(device=True, inline="always")
    def load4(a, first, step):
        # a at offsets first, first + step, first + 2 step, first + 3 step
        return (acc(a[U(first)]), acc(a[U(first + step)]), acc(a[U(first + 2 * step)]),
                acc(a[U(first + 3 * step)]))

    @cuda.jit
    def input_tiles(x, v, n0, images, C, H, W, ph, pw, tw, tiles, mc, sc, mt, st):
        # v[xi, s, c, j*tiles + r] = (B^T d B)[xi], d the 4x4 patch of image n0 + n, channel c,
        # under tile r = ty*tw + tx (rows 2ty - ph .., columns 2tx - pw ..), n = s*g + j
        # (this_tile); zero for n past the chunk's ``images`` (a last split's padding)
        live, n, c, ty, tx, out, step = this_tile(C, tiles, tw, mc, sc, mt, st)
        if not live:
            return
        rows = H if n < images else I(0)        # past the chunk: every load out of bounds
        h, w = I(2 * ty - ph), I(2 * tx - pw)
        plane = I(((n0 + n) * C + c) * H * W)
        d0 = load_row(x, I(plane + h * W), h, w, rows, W)
        d1 = load_row(x, I(plane + (h + 1) * W), I(h + 1), w, rows, W)
        d2 = load_row(x, I(plane + (h + 2) * W), I(h + 2), w, rows, W)
        d3 = load_row(x, I(plane + (h + 3) * W), I(h + 3), w, rows, W)
        # B^T d column by column, then times B
        store_bt_rows(v, out, step, bt(d0[0], d1[0], d2[0], d3[0]), bt(d0[1], d1[1], d2[1], d3[1]),
                      bt(d0[2], d1[2], d2[2], d3[2]), bt(d0[3], d1[3], d2[3], d3[3]))

    @cuda.jit
    def output_tiles(m, y, bias, n0, images, K, Ho, Wo, tw, tiles, has_bias, mc, sc, mt, st):
        # y[n0 + n, k, 2ty + i, 2tx + j] = (A^T M A)[i, j] + bias[k] inside (Ho, Wo), M the 16
        # values of tile r = ty*tw + tx of image n < images, channel k, in m (this_tile)
        live, n, k, ty, tx, first, step = this_tile(K, tiles, tw, mc, sc, mt, st)
        if not live or n >= images:
            return
        # A^T M, column by column: p<i><b> is row i, column b
        p00, p10 = at4(load4(m, first, 4 * step))
        p01, p11 = at4(load4(m, I(first + step), 4 * step))
        p02, p12 = at4(load4(m, I(first + 2 * step), 4 * step))
        p03, p13 = at4(load4(m, I(first + 3 * step), 4 * step))
        oh, ow = I(2 * ty), I(2 * tx)
        store_output_tile(y, I((((n0 + n) * K + k) * Ho + oh) * Wo + ow), Wo, ow + 1 < Wo,
                          oh + 1 < Ho, (p00, p01, p02, p03), (p10, p11, p12, p13),
                          acc(bias[U(k)]) if has_bias != 0 else acc(0))

    @cuda.jit
    def output_tiles_adjoint(gy, dm, n0, images, K, Ho, Wo, tw, tiles, mc, sc, mt, st):
        # dm[xi, s, k, j*tiles + r] = (A gY A^T)[xi], gY the 2x2 block of gy[n0 + n, k] under
        # tile r (zero past Ho, Wo, and for n past ``images``): the adjoint of output_tiles'
        live, n, k, ty, tx, out, step = this_tile(K, tiles, tw, mc, sc, mt, st)
        if not live:
            return
        oh, ow = I(2 * ty), I(2 * tx)
        row = I((((n0 + n) * K + k) * Ho + oh) * Wo + ow)
        inside = n < images
        right, below = inside and ow + 1 < Wo, inside and oh + 1 < Ho
        g00 = acc(gy[U(row)]) if inside else acc(0)
        g01 = acc(gy[U(row + 1)]) if right else acc(0)
        g10 = acc(gy[U(row + Wo)]) if below else acc(0)
        g11 = acc(gy[U(row + Wo + 1)]) if right and below else acc(0)
        # A gY column by column, then times A^T
        store_ag_rows(dm, out, step, ag(g00, g10), ag(g01, g11))

    return input_tiles, output_tiles, output_tiles_adjoint


_KERNELS = {name: _kernels(acc) for name, acc in (("float32", float32), ("float64", float64))}


def _signatures(data):
    """(input_tiles, output_tiles, output_tiles_adjoint)'s signatures for ``data`` arrays:
    flat arrays, int32 sizes, then the two int64 magic-number pairs."""
    def signature(arrays, sizes):
        return f"void({', '.join([f'{data}[::1]'] * arrays + ['int32'] * sizes + ['int64'] * 4)})"
    return signature(2, 9), signature(3, 8), signature(2, 7)


# --------------------------------------------------------------------------- where it runs
def applies(geo, dtype, allow_tf32=False):
    """Whether ``geo`` runs here for ``dtype`` data (the module docstring says why)."""
    name = np.dtype(dtype).name
    if name not in _KERNELS or (name == "float32" and allow_tf32) or \
            not conv_winograd.computes(geo):
        return False
    # tiles of an image: of y here, of x in grad_input (the forward run backwards)
    tiles = -(-max(geo.H, geo.Ho) // 2) * -(-max(geo.W, geo.Wo) // 2)
    return (min(geo.C, geo.K) >= MIN_CHANNELS
            and geo.N * geo.Ho * geo.Wo * geo.C * geo.K >= MIN_WORK
            and max(geo.N * geo.C * geo.H * geo.W, geo.N * geo.K * geo.Ho * geo.Wo,
                    16 * max(geo.C, geo.K) * tiles) < INDEX_LIMIT)


class _Plan:
    """Tiles of one image, images per chunk, and the magic numbers that split a thread's
    index, for geometry ``geo`` and ``itemsize``-byte values."""

    def __init__(self, geo, itemsize):
        self.th, self.tw = -(-geo.Ho // 2), -(-geo.Wo // 2)
        self.tiles = self.th * self.tw
        per_image = 16 * (geo.C + geo.K) * self.tiles * itemsize
        self.nb = int(max(1, min(geo.N, MAX_CHUNK_IMAGES, CHUNK_BYTES // per_image)))
        self.magic = tuple(np.int64(v) for v in _magic(self.tiles) + _magic(self.tw))

    def chunks(self, N):
        """(first image, images) of each chunk."""
        return [(n0, min(self.nb, N - n0)) for n0 in range(0, N, self.nb)]


def _blocks(n):
    return (n + THREADS - 1) // THREADS


# --------------------------------------------------------------------------- products
def _product(a, b, out):
    """out = a @ b (batched) in strict precision, on the current stream. On the GPU always
    through capture_blas, gpudl's own cuBLAS handle (the ops layer's route while a CUDA graph
    captures, where CuPy refuses cuBLAS): it takes the compute type per call (strict fp32
    whatever the matmul flag and the handle's math mode), and it hands a transposed operand to
    cuBLAS as it lies, where CuPy's batched matmul first copies each operand to C order (V^T
    in grad_weight: a copy as large as V per chunk). The simulator's arrays: NumPy's matmul."""
    if backend.is_device_array(a):
        return capture_blas.matmul(a, b, out=out, allow_tf32=False)
    return backend.get_array_module(a).matmul(a, b, out=out)


@functools.lru_cache(maxsize=8)
def _weight_transform(xp, dtype):
    """kron(G, G) (16, 9) on the device, made once per dtype (a transfer: refused in a capture)."""
    table = conv_winograd.GG.astype(dtype)
    return table if xp is np else backend.to_device_array(table, "cuda",
                                                          "Winograd's weight transform table")


def _weight_tiles(w, dtype):
    """U = G w G^T for every (k, c): (16, K, C) from w (K, C, 3, 3)."""
    xp = backend.get_array_module(w)
    K, C = w.shape[:2]
    gg = _weight_transform(xp, np.dtype(dtype).name)
    flat = xp.ascontiguousarray(w, dtype=dtype).reshape(K * C, 9)
    return _product(gg, flat.T, xp.empty((16, K * C), dtype)).reshape(16, K, C)


def _launch(name, dtype, blocks, *args):
    """Kernel ``name`` of the ``dtype`` build, specialised for its SIGNATURES entry."""
    index = ("input", "output", "adjoint").index(name)
    launch(_KERNELS[dtype][index], _signatures(dtype)[index], blocks, THREADS, *args)


def _input_tiles(x, v, n0, m, geo, plan, ph, pw, per_split):
    """v (16, S, C, per_split * tiles) = the input tiles of images n0..n0+m of x, padded by
    (ph, pw), in S = ceil(m / per_split) splits (zero past image m)."""
    grid = (_blocks(geo.C * plan.tiles), per_split, -(-m // per_split))
    _launch("input", x.dtype.name, grid, x.reshape(-1), v.reshape(-1), n0, m, geo.C, geo.H,
            geo.W, ph, pw, plan.tw, plan.tiles, *plan.magic)


def _run_forward(x, u, b, geo, ph, pw):
    """y (N, K, Ho, Wo) = the Winograd convolution of x with weight tiles ``u`` (16, K, C),
    padded by (ph, pw) (negative: cropped), plus ``b`` (K,) when given. A chunk's tiles are
    one split: V (16, C, tiles of the chunk), one GEMM per position."""
    xp = backend.get_array_module(x)
    dtype = x.dtype
    y = xp.empty(geo.y_shape, dtype)
    plan = _Plan(geo, dtype.itemsize)
    T = plan.nb * plan.tiles
    v_buf, m_buf = xp.empty(16 * geo.C * T, dtype), xp.empty(16 * geo.K * T, dtype)
    bias = x.reshape(-1)[:1] if b is None else xp.ascontiguousarray(b, dtype=dtype)
    for n0, m in plan.chunks(geo.N):
        t = m * plan.tiles
        v = v_buf[:16 * geo.C * t].reshape(16, geo.C, t)
        mt = m_buf[:16 * geo.K * t].reshape(16, geo.K, t)
        _input_tiles(x, v, n0, m, geo, plan, ph, pw, m)
        _product(u, v, mt)
        _launch("output", dtype.name, (_blocks(geo.K * plan.tiles), m, 1), mt.reshape(-1),
                y.reshape(-1), bias, n0, m, geo.K, geo.Ho, geo.Wo, plan.tw, plan.tiles,
                int(b is not None), *plan.magic)
    return y


def _splits(images, tiles):
    """Images per split of the weight gradient's products over a chunk of ``images``: about
    SPLITS splits, each reducing over MIN_SPLIT_TILES tiles at least."""
    return max(1, min(images, max(-(-images // SPLITS), -(-MIN_SPLIT_TILES // tiles))))


# --------------------------------------------------------------------------- entry points
def forward(x, w, b, geo):
    """y = conv(x, w) + b, (N, K, Ho, Wo) in x's dtype."""
    xp = backend.get_array_module(x)
    x = xp.ascontiguousarray(x)
    return _run_forward(x, _weight_tiles(w, x.dtype), b, geo, geo.ph, geo.pw)


def grad_input(gy, w, geo, b=None):
    """The adjoint of forward in x: the convolution of gy with w flipped and its channels
    swapped, padded by 2 - p; plus ``b`` (C,) when given (conv_transpose2d's bias)."""
    xp = backend.get_array_module(gy)
    gy = xp.ascontiguousarray(gy, dtype=np.result_type(gy.dtype, w.dtype))
    flipped = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]                 # (C, K, 3, 3)
    adjoint = type(geo)(gy.shape, flipped.shape, (1, 1), (2 - geo.ph, 2 - geo.pw), (1, 1), 1)
    return _run_forward(gy, _weight_tiles(flipped, gy.dtype), b, adjoint, adjoint.ph,
                        adjoint.pw)


def grad_weight(x, gy, geo, with_bias=False):
    """The adjoint of forward in w: gw (K, C, 3, 3); with ``with_bias``, (gw, gb), gb (K,) from
    the tiles of gy the weight gradient makes anyway. Each chunk's images go in S splits of g
    (``_splits``; the last one padded with zero tiles): one strided-batched GEMM of 16 S
    products dM @ V^T, each reducing over one split's tiles, then a sum over the splits. One
    product per position would reduce over the whole chunk into only 16 K x C blocks, too few
    to fill the GPU unless cuBLAS splits the reduction itself."""
    xp = backend.get_array_module(x)
    x, gy = xp.ascontiguousarray(x), xp.ascontiguousarray(gy, dtype=x.dtype)
    dtype = x.dtype
    plan = _Plan(geo, dtype.itemsize)
    g = _splits(plan.nb, plan.tiles)
    padded = -(-plan.nb // g) * g                        # images of a chunk with its padding
    v_buf = xp.empty(16 * geo.C * padded * plan.tiles, dtype)
    dm_buf = xp.empty(16 * geo.K * padded * plan.tiles, dtype)
    parts_buf = xp.empty(16 * (padded // g) * geo.K * geo.C, dtype)
    du = xp.zeros((16, geo.K, geo.C), dtype)
    gb = xp.zeros(geo.K, dtype) if with_bias else None
    for n0, m in plan.chunks(geo.N):
        S = -(-m // g)
        t = S * g * plan.tiles
        v = v_buf[:16 * geo.C * t].reshape(16 * S, geo.C, g * plan.tiles)
        dm = dm_buf[:16 * geo.K * t].reshape(16 * S, geo.K, g * plan.tiles)
        _input_tiles(x, v, n0, m, geo, plan, geo.ph, geo.pw, g)
        _launch("adjoint", dtype.name, (_blocks(geo.K * plan.tiles), g, S), gy.reshape(-1),
                dm.reshape(-1), n0, m, geo.K, geo.Ho, geo.Wo, plan.tw, plan.tiles,
                *plan.magic)
        parts = _product(dm, v.transpose(0, 2, 1),
                         parts_buf[:16 * S * geo.K * geo.C].reshape(16 * S, geo.K, geo.C))
        du += parts.reshape(16, S, geo.K, geo.C).sum(axis=1)
        if with_bias:     # A's rows 1, 1: dM[5] holds each tile's sum of gy
            gb += dm.reshape(16, S, geo.K, -1)[5].sum(axis=(0, 2))
    gw = _product(du.reshape(16, geo.K * geo.C).T, _weight_transform(xp, dtype.name),
                  xp.empty((geo.K * geo.C, 9), dtype)).reshape(geo.w_shape)
    return (gw, gb) if with_bias else gw


def _signature_table():
    """Every kernel of both builds with the signature its launcher uses. Memory-bound: at
    least half the warps resident to keep loads in flight; no division anywhere."""
    budget = Budget(threads=THREADS, min_occupancy=0.5, max_div64=0)
    return [(kernel, [signature], budget)
            for name in _KERNELS
            for kernel, signature in zip(_KERNELS[name], _signatures(name))]


SIGNATURES = _signature_table()
