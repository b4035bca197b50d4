"""The tensor-core conv kernels (kernels/conv_tc_cuda.py) in Numba's simulator, with the mma /
ldmatrix emulation of kernels/mma.py, against the CPU twin in float64 on the inputs rounded the
way the hardware reads them (TF32, float16, bfloat16).

The tolerance is the float32 accumulation's, per element: n * 2^-24 times the same product on
|inputs| (n the reduction length), plus half an ulp of the output's dtype for half outputs. TINY
shapes: the emulation costs two block barriers per mma, so one or two blocks of one to three
k-tiles each."""

import ml_dtypes
import numpy as np
import pytest

from gpudl import backend
from gpudl.kernels import conv, conv_tc_cuda

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = {"tf32": np.dtype(np.float32), "f16": np.dtype(np.float16), "bf16": BF16}


def _round(a, kind):
    """What the hardware multiplies: TF32 rounds to nearest, ties away (cvt.rna); halves are
    already what they are."""
    if kind != "tf32":
        return a.astype(np.float64)
    bits = a.astype(np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64)


def _arrays(rng, kind, *shapes):
    return [rng.standard_normal(s).astype(DTYPES[kind]) for s in shapes]


def _check(got, fn, operands, kind, n, out_dtype, bias=None):
    """``got`` against fn(float64 rounded operands) + bias (added in float32, unrounded),
    within the accumulation's bound."""
    extra = 0 if bias is None else bias.astype(np.float64).reshape(-1, 1, 1)
    want = fn(*[_round(a, kind) for a in operands]) + extra
    bound = fn(*[np.abs(_round(a, kind)) for a in operands]) + np.abs(extra)
    tol = n * 2.0 ** -24 * bound + 1e-30
    if out_dtype != np.float32:
        tol = tol + np.abs(want) * float(ml_dtypes.finfo(out_dtype).eps)
    assert got.dtype == out_dtype and got.shape == want.shape
    err = np.abs(got.astype(np.float64) - want)
    assert (err <= tol).all(), f"max error {err.max():.3g}, worst excess {(err - tol).max():.3g}"
    return want


# (N, C, H, W, K, (kh, kw), stride, padding, dilation, groups)
CASES = {
    "3x3 pad 1": (1, 3, 5, 5, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "3x2 stride 2 dilated, groups 2": (1, 4, 7, 6, 4, (3, 2), (2, 1), (1, 0), (1, 2), 2),
    "3x2 stride (2, 1) dilated": (1, 2, 5, 6, 3, (3, 2), (2, 1), (1, 0), (1, 2), 1),
    "1x1, 65 rows: BM 128, edge tiles": (1, 1, 3, 5, 65, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    # pipeline edges: more k-tiles than stages and tap-ring slots (tf32 forward: 72 taps = 5 tiles
    # of 16; weight gradient: 63 pixels = 4 tiles, the last partial), odd sizes, stride, padding
    "3x3 stride 2, 8 channels: 5 k-tiles": (1, 8, 5, 5, 4, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    "3x3 pad 1, 7x9: 4 pixel tiles": (1, 1, 7, 9, 2, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    # half weight gradient: a word pairs images 2n and 2n + 1; three images, the last one alone
    "1x2 pad (0, 1), 3 images": (3, 2, 2, 3, 2, (1, 2), (1, 1), (0, 1), (1, 1), 1),
    # 16-byte channel chunks for halves (20 channels: chunks of 8, the last partial) and in
    # grad_input (16 output channels; stride (2, 1): two phases)
    "1x2 pad (0, 1), 20 channels": (1, 20, 2, 3, 2, (1, 2), (1, 1), (0, 1), (1, 1), 1),
    "2x1 stride (2, 1), 16 outputs": (1, 2, 4, 2, 16, (2, 1), (2, 1), (0, 0), (1, 1), 1),
}


def _geometry(case):
    N, C, H, W, K, (kh, kw), stride, padding, dilation, groups = case
    return conv.ConvGeometry((N, C, H, W), (K, C // groups, kh, kw), stride, padding, dilation,
                             groups)


# each kernel build once or twice: the emulation is slow (tf32 3x3 pad 1 has two k-tiles: the
# double buffer and the tap ring; half has one)
@pytest.mark.parametrize("kind,name", [("tf32", "3x3 pad 1"), ("f16", "3x3 pad 1"),
                                       ("bf16", "1x1, 65 rows: BM 128, edge tiles"),
                                       ("tf32", "3x3 stride 2, 8 channels: 5 k-tiles"),
                                       ("bf16", "1x2 pad (0, 1), 20 channels")])
def test_forward(rng, kind, name):
    geo = _geometry(CASES[name])
    x, w, b = _arrays(rng, kind, geo.x_shape, geo.w_shape, (geo.K,))
    y = conv_tc_cuda.forward(x, w, b, geo)
    want = _check(y, lambda x, w: conv._forward_cpu(x, w, None, geo), (x, w), kind,
                  geo.C // geo.groups * geo.kh * geo.kw + 1, DTYPES[kind], bias=b)
    if kind == "tf32":      # really TF32: the unrounded product differs by more than the bound
        exact = conv._forward_cpu(x.astype(np.float64), w.astype(np.float64),
                                  b.astype(np.float64), geo)
        assert np.abs(exact - want).max() > 1e-5


@pytest.mark.parametrize("name", ["3x2 stride (2, 1) dilated", "2x1 stride (2, 1), 16 outputs"])
def test_grad_input_per_phase_with_bias(rng, name):
    """Stride (2, 1): two phases, each its own tap list; with a bias, as conv_transpose2d."""
    geo = _geometry(CASES[name])
    gy, w = _arrays(rng, "f16", geo.y_shape, geo.w_shape)
    b = rng.standard_normal(geo.C).astype(np.float16)
    gx = conv_tc_cuda.grad_input(gy, w, geo, b)
    _check(gx, lambda gy, w: conv._grad_input_cpu(gy, w, geo), (gy, w), "f16",
           geo.K // geo.groups * geo.kh * geo.kw + 1, np.float16, bias=b)


@pytest.mark.parametrize("kind,name", [("tf32", "3x3 pad 1"),
                                       ("bf16", "3x2 stride 2 dilated, groups 2"),
                                       ("f16", "1x1, 65 rows: BM 128, edge tiles"),
                                       ("tf32", "3x3 pad 1, 7x9: 4 pixel tiles"),
                                       ("f16", "1x2 pad (0, 1), 3 images")])
def test_grad_weight(rng, kind, name):
    """tf32: 25 pixels, two k-tiles (the pixel carries); bf16: grouped, strided; f16: the BM 128
    build."""
    geo = _geometry(CASES[name])
    x, gy = _arrays(rng, kind, geo.x_shape, geo.y_shape)
    gw, gb = conv_tc_cuda.grad_weight(x, gy, geo, with_bias=True)
    _check(gw, lambda x, gy: conv._grad_weight_cpu(x, gy, geo), (x, gy), kind,
           geo.N * geo.Ho * geo.Wo, np.float32)
    np.testing.assert_allclose(gb, gy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("dtype,allow_tf32,tensor_cores", [
    (np.float32, True, True), (np.float32, False, False), (np.float16, False, True)])
def test_public_conv_picks_the_path(rng, monkeypatch, dtype, allow_tf32, tensor_cores):
    """F.conv2d / conv_transpose2d forward and backward reach the tensor-core kernels for float16,
    and for float32 exactly when ``gd.backends.cudnn.allow_tf32`` is on (PyTorch's default; the
    suite turns it off). The tensor-core kernels are stood in for by the SIMT ones here (their
    numerics are tested above; the emulation is slow)."""
    import gpudl as gd
    import gpudl.nn.functional as F
    from gpudl.kernels import conv_cuda

    calls = []
    for name in ("forward", "grad_input", "grad_weight"):
        def stand_in(*args, name=name, **kwargs):
            calls.append(name)
            return getattr(conv_cuda, name)(*args, **kwargs)
        monkeypatch.setattr(conv_tc_cuda, name, stand_in)
    monkeypatch.setattr(gd.backends.cudnn, "allow_tf32", allow_tf32)
    monkeypatch.setattr(conv, "TF32_MIN_FLOPS", 0)      # this tiny conv counts as large
    x = gd.tensor(rng.standard_normal((1, 2, 3, 3)).astype(dtype), requires_grad=True)
    w = gd.tensor(rng.standard_normal((2, 2, 1, 1)).astype(dtype), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    F.conv_transpose2d(x, w).sum().backward()
    assert x.device == "cuda"
    want = ["forward", "grad_input", "grad_weight", "grad_input", "forward", "grad_weight"]
    assert calls == (want if tensor_cores else [])


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,tensor_cores", [
    ((64, 1, 28, 28), (6, 1, 5, 5), 1, 0, False),          # LeNet-5's layers at batch 64
    ((64, 6, 12, 12), (16, 6, 5, 5), 1, 0, False),
    ((64, 64, 56, 56), (64, 64, 3, 3), 1, 1, True),        # the asv benchmark shapes
    ((32, 3, 224, 224), (64, 3, 7, 7), 2, 3, True)])
def test_tf32_takes_tensor_cores_only_where_they_pay(x_shape, w_shape, stride, padding,
                                                     tensor_cores):
    """With TF32 allowed, float32 convolutions below ``TF32_MIN_FLOPS`` per forward run the
    strict kernels (fewer launches: no operand layout passes); larger ones the tensor cores.
    Half data always take the tensor cores; TF32 off never does."""
    geo = conv.ConvGeometry(x_shape, w_shape, (stride,) * 2, (padding,) * 2, (1, 1), 1)
    x = backend.to_device_array(np.zeros(1, np.float32), "cuda")
    assert (conv._primitives(x, True, geo)[0] is conv_tc_cuda.forward) == tensor_cores
    assert conv._primitives(x, False, geo)[0] is not conv_tc_cuda.forward
    half = backend.to_device_array(np.zeros(1, np.float16), "cuda")
    assert conv._primitives(half, False, geo)[0] is conv_tc_cuda.forward


def test_public_bfloat16_conv_runs_on_bf16_tensor_cores(rng, monkeypatch):
    """F.conv2d / conv_transpose2d of bfloat16 tensors on cuda, forward and backward, reach the
    BF16 tensor-core kernels (they were refused before: "bfloat16 tensors have no Numba-CUDA
    kernels") and return bfloat16 values and gradients within the accumulation's bound."""
    import gpudl as gd
    import gpudl.nn.functional as F

    calls = []
    for name in ("forward", "grad_input", "grad_weight"):
        def spy(*args, name=name, real=getattr(conv_tc_cuda, name), **kwargs):
            calls.append((name, args[0].dtype.name))
            return real(*args, **kwargs)
        monkeypatch.setattr(conv_tc_cuda, name, spy)
    geo = _geometry(CASES["3x3 pad 1"])
    x, w, b = _arrays(rng, "bf16", geo.x_shape, geo.w_shape, (geo.K,))
    gy = _arrays(rng, "bf16", geo.y_shape)[0]
    xt, wt, bt = (gd.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, padding=1)
    y.backward(gd.tensor(gy))
    assert xt.device == "cuda" and y.dtype == xt.grad.dtype == wt.grad.dtype == gd.bfloat16
    assert calls == [("forward", "bfloat16"), ("grad_input", "bfloat16"),
                     ("grad_weight", "bfloat16")]
    n = geo.C * geo.kh * geo.kw + 1
    _check(y.numpy(), lambda x, w: conv._forward_cpu(x, w, None, geo), (x, w), "bf16", n, BF16,
           bias=b)
    _check(xt.grad.numpy(), lambda gy, w: conv._grad_input_cpu(gy, w, geo), (gy, w), "bf16",
           geo.K * geo.kh * geo.kw, BF16)
    # the weight gradient: float32 accumulation, then bfloat16's rounding (gw has w's dtype)
    _check(wt.grad.numpy(), lambda x, gy: conv._grad_weight_cpu(x, gy, geo), (x, gy), "bf16",
           geo.N * geo.Ho * geo.Wo, BF16)
    calls.clear()
    F.conv_transpose2d(gd.tensor(x), gd.tensor(w.transpose(1, 0, 2, 3).copy()))
    assert calls == [("grad_input", "bfloat16")]


def test_bfloat16_past_the_int32_guard_runs_the_simt_kernels_in_float32(rng, monkeypatch):
    """conv_cuda (the SIMT kernels) has no bfloat16 build: the rare tensors past the int32
    guard (forced here) run it on float32 widened exactly, and come back in bfloat16."""
    monkeypatch.setattr(conv_tc_cuda, "_fits", lambda *sizes, image: False)
    geo = _geometry(CASES["3x3 pad 1"])
    x, w, b = _arrays(rng, "bf16", geo.x_shape, geo.w_shape, (geo.K,))
    gy = _arrays(rng, "bf16", geo.y_shape)[0]
    n = geo.C * geo.kh * geo.kw + 1
    _check(conv_tc_cuda.forward(x, w, b, geo), lambda x, w: conv._forward_cpu(x, w, None, geo),
           (x, w), "bf16", n, BF16, bias=b)
    _check(conv_tc_cuda.grad_input(gy, w, geo), lambda gy, w: conv._grad_input_cpu(gy, w, geo),
           (gy, w), "bf16", n, BF16)
    gw, gb = conv_tc_cuda.grad_weight(x, gy, geo, with_bias=True)
    _check(gw, lambda x, gy: conv._grad_weight_cpu(x, gy, geo), (x, gy), "bf16",
           geo.N * geo.Ho * geo.Wo, np.float32)
    assert gb.dtype == np.float32


@pytest.mark.parametrize("planes,channels,pixels,per", [(2, 9, 5, 4), (3, 3, 4, 1), (1, 8, 3, 4)])
def test_tf32_layout_kernel_is_the_host_rounding_and_layout(rng, monkeypatch, planes, channels,
                                                            pixels, per):
    """The one-pass layout kernel against the CuPy composition it replaces (and which stays the
    fallback past its grid): equal bits, a partial last chunk zero-filled, infinities and NaN
    kept, values on a rounding tie rounded away from zero."""
    a = rng.standard_normal((planes, channels, pixels)).astype(np.float32)
    a.reshape(-1)[:4] = [np.inf, -np.inf, np.nan, 0.0]
    tie = np.array(0x3F801000, np.uint32).view(np.float32)           # 1 + 2**-11: a TF32 tie
    a.reshape(-1)[4:6] = [tie, -tie]
    composed = conv_tc_cuda._vectors(np, conv_tc_cuda._tf32(np, a).reshape(
        planes, 1, channels, pixels, 1), per, np.float32).reshape(-1)
    ours = conv_tc_cuda._tf32_chunks(np, a, planes, channels, pixels, per)
    assert ours.shape == composed.shape
    np.testing.assert_array_equal(ours.view(np.uint32) | (np.isnan(ours) * 0xFFFFFFFF),
                                  composed.view(np.uint32) | (np.isnan(composed) * 0xFFFFFFFF))
    assert np.array(0x3F802000, np.uint32).view(np.float32) in ours
    for limit in ("INDEX_LIMIT", "GRID_YZ"):               # the fallbacks (uint32, grid): the same
        with monkeypatch.context() as m:
            m.setattr(conv_tc_cuda, limit, 0)
            np.testing.assert_array_equal(conv_tc_cuda._tf32_chunks(np, a, planes, channels,
                                                                    pixels, per), composed)
