"""gpudl.capture_blas: the cuBLAS products a CUDA graph captures (CuPy refuses cuBLAS there).

Without a GPU, the layout work (which operand goes to cuBLAS transposed, leading dimensions,
batch strides, copies) is checked by running each planned call through a NumPy model of
``cublasGemmStridedBatchedEx`` that reads and writes memory exactly as the call's arguments
say, against ``numpy.matmul``. On a GPU, captured products are checked against eager ones.
"""

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend, capture_blas


def _column_major(x3, rows, cols, ld, stride, batch):
    """The (batch, rows, cols) column-major matrices cuBLAS sees at ``x3``'s first element,
    refusing a call that would reach past the memory ``x3`` spans."""
    item = x3.itemsize
    reach = (batch - 1) * stride + (rows - 1) + (cols - 1) * ld
    span = sum((n - 1) * s for n, s in zip(x3.shape, x3.strides)) // item
    assert 0 <= reach <= span, (reach, span)
    return np.lib.stride_tricks.as_strided(x3, (batch, rows, cols), (stride * item, item, ld * item))


def model_gemm(g, a3, b3, out, allow_tf32=None):
    """cuBLAS's strided-batched GEMM, column-major, on NumPy memory: C = op(A) @ op(B) with
    cuBLAS's A at b3 and B at a3 (``capture_blas.plan``'s convention)."""
    assert out.flags.c_contiguous and g.ldc >= g.m
    shape_a = (g.m, g.k) if g.op_a == capture_blas._OP_N else (g.k, g.m)
    shape_b = (g.k, g.n) if g.op_b == capture_blas._OP_N else (g.n, g.k)
    a = _column_major(b3, *shape_a, g.lda, g.stride_a, g.batch)
    b = _column_major(a3, *shape_b, g.ldb, g.stride_b, g.batch)
    assert g.lda >= shape_a[0] and g.ldb >= shape_b[0]
    a = a if g.op_a == capture_blas._OP_N else a.transpose(0, 2, 1)
    b = b if g.op_b == capture_blas._OP_N else b.transpose(0, 2, 1)
    c = np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(out.dtype)
    _column_major(out, g.m, g.n, g.ldc, g.stride_c, g.batch)[...] = c


def _operand(rng, shape, dtype, kind):
    """A fresh random operand of ``shape`` laid out as ``kind``: C order, F order (a
    transposed view), every other column of a wider array, or a broadcast view."""
    if kind == "F":
        return np.swapaxes(_operand(rng, shape[:-2] + shape[-2:][::-1], dtype, "C"), -1, -2)
    if kind == "strided":
        return _operand(rng, shape[:-1] + (2 * shape[-1],), dtype, "C")[..., ::2]
    return rng.standard_normal(shape).astype(dtype)


CASES = [   # (a's shape, b's shape)
    ((5, 7), (7, 3)), ((1, 7), (7, 1)), ((7,), (7, 4)), ((5, 7), (7,)), ((7,), (7,)),
    ((4, 5, 7), (7, 3)), ((5, 7), (4, 7, 3)), ((4, 5, 7), (4, 7, 3)), ((2, 1, 5, 7), (3, 7, 6)),
    ((2, 3, 5, 7), (2, 3, 7, 6)), ((5, 0), (0, 3)), ((0, 7), (7, 3)), ((3, 0, 7), (7, 2)),
]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("kinds", [("C", "C"), ("C", "F"), ("F", "C"), ("F", "F"),
                                   ("strided", "C"), ("C", "strided")])
@pytest.mark.parametrize("shapes", CASES, ids=str)
def test_planned_calls_compute_numpys_matmul(monkeypatch, rng, shapes, kinds, dtype):
    monkeypatch.setattr(capture_blas, "gemm", model_gemm)
    a = _operand(rng, shapes[0], dtype, kinds[0] if len(shapes[0]) > 1 else "C")
    b = _operand(rng, shapes[1], dtype, kinds[1] if len(shapes[1]) > 1 else "C")
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    got = capture_blas.matmul(a, b)
    assert got.shape == expected.shape and got.dtype == dtype
    tolerance = 2e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)


def test_a_broadcast_operand_is_read_in_place_with_a_zero_batch_stride(monkeypatch, rng):
    calls = []
    monkeypatch.setattr(capture_blas, "gemm", lambda g, *arrays: (calls.append(g),
                                                                  model_gemm(g, *arrays)))
    a, w = rng.standard_normal((6, 5, 7)), rng.standard_normal((3, 7))
    got = capture_blas.matmul(a, w.T)            # a Linear layer's x @ w.T: no copy of w
    np.testing.assert_allclose(got, a @ w.T, rtol=1e-12)
    (g,) = calls
    assert (g.batch, g.stride_a, g.op_a, g.lda) == (6, 0, capture_blas._OP_T, 7)


def test_into_out_and_refusals(monkeypatch, rng):
    monkeypatch.setattr(capture_blas, "gemm", model_gemm)
    a, b = rng.standard_normal((4, 6)), rng.standard_normal((5, 6))
    out = np.full((4, 5), np.nan)
    assert capture_blas.matmul(a, b.T, out=out) is out
    np.testing.assert_allclose(out, a @ b.T, rtol=1e-12)
    with pytest.raises(ValueError, match=r"\(6 != 5\)"):
        capture_blas.matmul(a, b)
    with pytest.raises(ValueError, match="C-contiguous float64 array of shape"):
        capture_blas.matmul(a, b.T, out=np.empty((5, 4)).T)
    with pytest.raises(TypeError, match="int64"):
        capture_blas.matmul(a.astype(np.int64), b.T.astype(np.int64))


def test_winograd_products_are_planned_in_place(monkeypatch, rng):
    """conv_winograd_cuda's products in a capture: dM @ V^T over the tiles (V transposed in
    place: an F-order operand) and w's flat rows transposed, into C-contiguous outputs."""
    monkeypatch.setattr(capture_blas, "gemm", lambda g, a3, b3, out, allow_tf32: (
        calls.append((a3, b3, allow_tf32)), model_gemm(g, a3, b3, out)))
    calls = []
    dm, v = rng.standard_normal((16, 3, 11)), rng.standard_normal((16, 5, 11))
    du = np.empty((16, 3, 5))
    capture_blas.matmul(dm, v.transpose(0, 2, 1), out=du, allow_tf32=False)
    np.testing.assert_allclose(du, dm @ v.transpose(0, 2, 1))
    gg, flat = rng.standard_normal((16, 9)), rng.standard_normal((6, 9))
    np.testing.assert_allclose(capture_blas.matmul(gg, flat.T, allow_tf32=False), gg @ flat.T)
    for (a3, b3, allow_tf32), (a, b) in zip(calls, [(dm, v), (gg, flat)]):
        assert np.shares_memory(a3, a) and np.shares_memory(b3, b)     # no copies
        assert allow_tf32 is False


def test_compute_type_follows_the_flag_unless_told(monkeypatch):
    monkeypatch.setattr(gd.backends.cuda.matmul, "allow_tf32", True)
    assert capture_blas.compute_type(np.dtype(np.float32)) == capture_blas._COMPUTE_32F_FAST_TF32
    assert capture_blas.compute_type(np.dtype(np.float32), False) == capture_blas._COMPUTE_32F
    monkeypatch.setattr(gd.backends.cuda.matmul, "allow_tf32", False)
    assert capture_blas.compute_type(np.dtype(np.float32)) == capture_blas._COMPUTE_32F
    assert capture_blas.compute_type(np.dtype(np.float64), True) == capture_blas._COMPUTE_64F


def test_layout_names_how_a_matrix_lies():
    assert capture_blas.layout((3, 4), (32, 8), 8) == ("C", 4)
    assert capture_blas.layout((3, 4), (8, 24), 8) == ("F", 3)
    assert capture_blas.layout((3, 4), (64, 8), 8) == ("C", 8)      # rows of a wider array
    assert capture_blas.layout((3, 4), (64, 16), 8) is None         # every other column
    assert capture_blas.layout((3, 4), (-32, 8), 8) is None         # flipped rows


gpu = pytest.mark.skipif(not (backend.cuda_available() and not backend.SIMULATOR),
                         reason="needs a GPU (CuPy refuses cuBLAS only in a real capture)")


@gpu
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_a_captured_linear_layer_matches_eager(rng, dtype):
    layer = gd.nn.Linear(64, 48).to(getattr(gd, dtype))
    x = gd.tensor(rng.standard_normal((2, 16, 64)), dtype=getattr(gd, dtype), requires_grad=True)
    eager = layer(x)
    eager.sum().backward()
    eager_grads = [x.grad.numpy(), layer.weight.grad.numpy()]
    x.grad = None
    layer.zero_grad()
    graph = gd.cuda.CUDAGraph()
    with gd.cuda.graph(graph):
        captured = layer(x)
        captured.sum().backward()
    graph.replay()
    tolerance = 1e-2 if dtype == "float16" else 1e-5
    np.testing.assert_allclose(captured.float().numpy(), eager.float().numpy(),
                               rtol=tolerance, atol=tolerance)
    for got, expected in zip([x.grad.numpy(), layer.weight.grad.numpy()], eager_grads):
        np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64),
                                   rtol=tolerance, atol=tolerance)


def test_small_products_get_the_small_workspace_only_when_told(monkeypatch):
    """capture_blas.SMALL_GEMM_WORKSPACE_BYTES (off by default: every product keeps the full
    workspace, so cuBLAS may split K); set, products of at most SMALL_GEMM_MACS multiply-adds
    get it (0: no room for split-K's partial sums), larger ones the full workspace."""
    fc1 = capture_blas.Gemm(m=120, n=64, k=400, op_a=1, lda=400, stride_a=0, op_b=0, ldb=400,
                            stride_b=0, ldc=120, stride_c=0, batch=1)   # LeNet's fc1 forward
    big = capture_blas.Gemm(m=1024, n=1024, k=1024, op_a=0, lda=1024, stride_a=0, op_b=0,
                            ldb=1024, stride_b=0, ldc=1024, stride_c=0, batch=1)
    assert capture_blas.SMALL_GEMM_WORKSPACE_BYTES is None
    full = capture_blas.WORKSPACE_BYTES
    assert capture_blas.workspace_bytes(fc1) == capture_blas.workspace_bytes(big) == full
    monkeypatch.setattr(capture_blas, "SMALL_GEMM_WORKSPACE_BYTES", 0)
    assert capture_blas.workspace_bytes(fc1) == 0
    assert capture_blas.workspace_bytes(big) == full
    monkeypatch.setattr(capture_blas, "SMALL_GEMM_WORKSPACE_BYTES", -1)
    with pytest.raises(ValueError, match="SMALL_GEMM_WORKSPACE_BYTES: expected None or 0 to "
                                         ".* bytes, got -1"):
        capture_blas.workspace_bytes(fc1)


@gpu
@pytest.mark.parametrize("workspace", [None, 0])
def test_lenets_linear_layers_captured_with_either_workspace_match_float64(rng, monkeypatch,
                                                                           workspace):
    """LeNet-5's three Linear layers at batch 64, forward and backward captured in a graph with
    the full workspace and with none for small products (the switch the next GPU run times)."""
    monkeypatch.setattr(capture_blas, "SMALL_GEMM_WORKSPACE_BYTES", workspace)
    monkeypatch.setattr(gd.backends.cuda.matmul, "allow_tf32", False)
    sizes = (400, 120, 84, 10)
    ws = [rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(sizes, sizes[1:])]
    bs = [rng.standard_normal(o) for o in sizes[1:]]
    x64 = rng.standard_normal((64, 400))
    layers = [(gd.tensor(w.astype(np.float32), requires_grad=True),
               gd.tensor(b.astype(np.float32), requires_grad=True)) for w, b in zip(ws, bs)]
    x = gd.tensor(x64.astype(np.float32), requires_grad=True)
    graph = gd.cuda.CUDAGraph()
    with gd.cuda.graph(graph):
        h = x
        for w, b in layers:
            h = gd.nn.functional.linear(h, w, b)
        h.sum().backward()
    graph.replay()
    hs, h_ref = [x64], x64                  # float64 NumPy: forward, then the backward by hand
    for w, b in zip(ws, bs):
        h_ref = h_ref @ w.T + b
        hs.append(h_ref)
    np.testing.assert_allclose(h.numpy(), h_ref, rtol=1e-4, atol=1e-4)
    g = np.ones_like(h_ref)
    for (w_t, b_t), w, h_in in reversed(list(zip(layers, ws, hs))):
        np.testing.assert_allclose(w_t.grad.numpy(), g.T @ h_in, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(b_t.grad.numpy(), g.sum(axis=0), rtol=1e-4, atol=1e-4)
        g = g @ w
    np.testing.assert_allclose(x.grad.numpy(), g, rtol=1e-4, atol=1e-4)
