"""The convolution kernels (kernels/conv_cuda.py) in Numba's CUDA simulator against the CPU twin:
conv2d and conv_transpose2d, forward and both gradients, on TINY shapes (every CUDA thread runs in
Python). The same entry points run both paths; the twin is selected by pretending every array
lives on the CPU."""

import numpy as np
import pytest

from conv_sim_checks import forward_and_backward_match, on_cpu
from gpudl import backend
from gpudl.kernels import conv, conv_cuda

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]

# (N, C, H, W, K, (kh, kw), stride, padding, dilation, groups)
CASES = [
    (2, 3, 5, 6, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),        # plain 3x3, odd sizes
    (1, 4, 7, 6, 6, (3, 2), (2, 1), (1, 0), (1, 2), 2),        # strided, dilated, grouped
    (2, 3, 4, 4, 3, (3, 3), (1, 1), (1, 1), (1, 1), 3),        # depthwise
    (1, 2, 5, 5, 3, (1, 1), (2, 2), (0, 0), (1, 1), 1),        # 1x1, stride 2
    (1, 1, 5, 14, 65, (1, 1), (1, 1), (0, 0), (1, 1), 1),      # > one tile of rows and pixels
    (1, 2, 3, 4, 20, (2, 2), (1, 1), (1, 1), (1, 1), 1),       # 17-64 rows: the 64-row tiles
]


_cpu = on_cpu


def _arrays(rng, case, dtype=np.float32):
    N, C, H, W, K, (kh, kw), *_, groups = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b


def _close(got, want, tol=1e-4):
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES)
def test_conv2d_matches_twin(rng, monkeypatch, case):
    x, w, b = _arrays(rng, case)
    conf = case[6:]
    y = conv.conv2d_forward(x, w, b, *conf)
    _close(y, _cpu(monkeypatch, conv.conv2d_forward, x, w, b, *conf))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    needs = (True, True, case[4] < 8)     # the bias kernel is one block per channel: slow here
    got = conv.conv2d_backward(x, w, gy, *conf, needs=needs)
    want = _cpu(monkeypatch, conv.conv2d_backward, x, w, gy, *conf, needs)
    for g, r, need in zip(got, want, needs):
        assert (g is None) == (not need)
        if need:
            _close(g, r)


@pytest.mark.parametrize("needs", [(False, True, False), (False, True, True)])
def test_weight_gradient_split_over_blocks(rng, monkeypatch, needs):
    """Force several reduction splits (a real GPU splits above MIN_SPLIT pixels, FEW_MIN_SPLIT in
    the few-rows build this 4-channel case takes: 60 pixels in splits of 32, the last one short
    of a whole 32-pixel tile); the bias gradient folded into the same pass sums its splits too."""
    case = CASES[0]
    x, w, _ = _arrays(rng, case)
    gy = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    want = _cpu(monkeypatch, conv.conv2d_backward, x, w, gy, *case[6:])
    monkeypatch.setattr(conv_cuda, "MIN_SPLIT", 16)
    monkeypatch.setattr(conv_cuda, "FEW_MIN_SPLIT", 16)
    assert conv_cuda._weight_splits(60, 27, 4, 1, conv_cuda.FEW_ROWS) == (2, 32)
    got = conv.conv2d_backward(x, w, gy, *case[6:], needs=needs)
    _close(got[1], want[1])
    if needs[2]:
        _close(got[2], want[2])


@pytest.mark.parametrize("case", [
    (1, 1, 28, 28, 6, (5, 5), (1, 1), (2, 2), (1, 1), 1),     # LeNet's conv1 at batch 1
    (2, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0), (1, 1), 1),    # and conv2 at batch 2
])
def test_lenet_layers_match_twin(rng, monkeypatch, case):
    """LeNet's layers on the few-rows kernels: conv1's weight gradient in 4 splits of 224 pixels
    (7 tiles of 32; the last split 112), conv2's over 5 column tiles of 32 taps and 200 pixels
    (the last tile 8), conv2's grad_input in 16 x 32 tiles, 13 tiles of 32 steps each."""
    assert conv_cuda._weight_splits(784, 25, 6, 1, conv_cuda.FEW_ROWS) == (4, 224)
    x, w, b = _arrays(rng, case)
    conf = case[6:]
    y = conv.conv2d_forward(x, w, b, *conf)
    _close(y, _cpu(monkeypatch, conv.conv2d_forward, x, w, b, *conf))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    needs = (case[1] > 1, True, True)
    got = conv.conv2d_backward(x, w, gy, *conf, needs=needs)
    want = _cpu(monkeypatch, conv.conv2d_backward, x, w, gy, *conf, needs)
    for g, r, need in zip(got, want, needs):
        if need:
            _close(g, r)


@pytest.mark.parametrize("case", [CASES[0], (1, 3, 9, 8, 4, (5, 9), (1, 1), (2, 4), (1, 1), 1)])
def test_the_wide_few_rows_gemm_matches_twin(rng, monkeypatch, case):
    """The few-rows gemm's 16 x 128 tile, which a grid of TARGET_BLOCKS or more 128-pixel blocks
    takes (these tiny shapes take the narrow 16 x 32 tile otherwise): forward (4 rows; 27 and 135
    steps) and grad_input (3 rows)."""
    monkeypatch.setattr(conv_cuda, "TARGET_BLOCKS", 1)
    assert conv_cuda._gemm_col_tile(conv_cuda.FEW_ROWS, 60, 1, 135) == conv_cuda.BN
    x, w, b = _arrays(rng, case)
    conf = case[6:]
    y = conv.conv2d_forward(x, w, b, *conf)
    _close(y, _cpu(monkeypatch, conv.conv2d_forward, x, w, b, *conf))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    got = conv.conv2d_backward(x, w, gy, *conf, needs=(True, False, False))
    _close(got[0], _cpu(monkeypatch, conv.conv2d_backward, x, w, gy, *conf,
                        (True, False, False))[0])


# (N, C, H, W, K, (kh, kw), stride, padding, dilation, groups): the 256-thread 128x128 tile
# (more than 64 GEMM rows) with partial edge tiles, across two pixel tiles and, in the weight
# gradient, two tap tiles; and grad_input phases that get no tap at all
WIDE_CASES = [
    (1, 2, 12, 12, 70, (1, 1), (1, 1), (0, 0), (1, 1), 1),      # 144 pixels: 128 + 16
    (1, 70, 12, 11, 2, (1, 1), (1, 1), (0, 0), (1, 1), 1),      # grad_input with 70 rows
    (1, 3, 9, 8, 4, (5, 9), (1, 1), (2, 4), (1, 1), 1),         # 135 taps: 128 + 7
    (1, 2, 7, 8, 3, (2, 2), (3, 3), (1, 0), (2, 1), 1),         # stride 3: empty phases
    (2, 4, 9, 7, 4, (3, 2), (3, 2), (2, 1), (2, 3), 2),         # every knob at once
    (1, 18, 5, 4, 20, (2, 3), (2, 1), (1, 1), (1, 1), 1),       # 17-64 rows: the 64-row tile
    (1, 3, 7, 6, 13, (3, 3), (2, 2), (1, 1), (1, 1), 1),        # a stem in small: 13 and 3 rows
]


def _forward_and_backward_match_twin(rng, monkeypatch, case):
    x, w, b = _arrays(rng, case)
    forward_and_backward_match(rng, monkeypatch, x, w, b, case[6:], _close, _cpu)


@pytest.mark.parametrize("case", WIDE_CASES)
def test_tiles_and_phases_match_twin(rng, monkeypatch, case):
    _forward_and_backward_match_twin(rng, monkeypatch, case)


def test_two_row_tiles_of_128(rng, monkeypatch):
    """More than 128 output channels: two 128-row tiles, the second one partial."""
    case = (1, 2, 3, 3, 130, (1, 1), (1, 1), (0, 0), (1, 1), 1)
    x, w, b = _arrays(rng, case)
    y = conv.conv2d_forward(x, w, b, *case[6:])
    _close(y, _cpu(monkeypatch, conv.conv2d_forward, x, w, b, *case[6:]))


def test_64_bit_build_matches_twin(rng, monkeypatch):
    """Tensors past the int32 guard take the int64 kernels: forced here by lowering the guard."""
    monkeypatch.setattr(conv_cuda, "INT32_LIMIT", 64)
    assert conv_cuda._index(65, image=1) == conv_cuda.int64
    _forward_and_backward_match_twin(rng, monkeypatch, CASES[1])


@pytest.mark.parametrize("stride, padding, output_padding, groups, dilation", [
    ((2, 2), (1, 1), (1, 1), 1, (1, 1)),
    ((2, 1), (0, 1), (1, 0), 2, (1, 2)),
    ((1, 1), (1, 0), (1, 1), 1, (2, 2)),          # output_padding >= stride (< dilation)
])
def test_conv_transpose2d_matches_twin(rng, monkeypatch, stride, padding, output_padding, groups,
                                       dilation):
    x = rng.standard_normal((2, 4, 3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)      # (Cin, Cout/groups, kh, kw)
    b = rng.standard_normal(3 * groups).astype(np.float32)
    conf = (stride, padding, output_padding, groups, dilation)
    forward_and_backward_match(rng, monkeypatch, x, w, b, conf, _close, _cpu,
                               conv.conv_transpose2d_forward, conv.conv_transpose2d_backward)


def test_float16_inputs_accumulate_in_float32(rng, monkeypatch):
    case = CASES[1]
    x, w, b = _arrays(rng, case, np.float16)
    y = conv.conv2d_forward(x, w, b, *case[6:])
    assert y.dtype == np.float16
    gy = rng.standard_normal(y.shape).astype(np.float16)
    got = (y,) + conv.conv2d_backward(x, w, gy, *case[6:])
    f32 = [a.astype(np.float32) for a in (x, w, b, gy)]
    want = (_cpu(monkeypatch, conv.conv2d_forward, *f32[:3], *case[6:]),) + _cpu(
        monkeypatch, conv.conv2d_backward, f32[0], f32[1], f32[3], *case[6:])
    for g, r in zip(got, want):
        assert g.dtype == np.float16
        np.testing.assert_allclose(g.astype(np.float32), r, rtol=1e-2,
                                   atol=1e-2 * max(1, np.abs(r).max()))


def test_nan_propagates(rng):
    case = CASES[0]
    x, w, b = _arrays(rng, case)
    x[0, 1, 2, 3] = np.nan
    y = conv.conv2d_forward(x, w, b, *case[6:])
    assert np.isnan(y[0, :, 1:4, 2:5]).all() and not np.isnan(y[1]).any()


def test_an_image_past_the_int32_range_is_refused():
    with pytest.raises(ValueError, match="one image holds"):
        conv_cuda._index(10, image=conv_cuda.IMAGE_LIMIT)


@pytest.mark.parametrize("case", [WIDE_CASES[3], WIDE_CASES[4]])
def test_every_output_is_written_without_a_zero_fill(rng, monkeypatch, nan_empty, case):
    """y, gx and the weight-gradient partials come from empty arrays filled with NaN: every
    element must be written (grad_input's stride phases, the ones no tap reaches included, and
    partial edge tiles), so no zero-fill is needed."""
    _forward_and_backward_match_twin(rng, monkeypatch, case)


def test_conv_transpose2d_writes_every_output_with_its_bias(rng, monkeypatch, nan_empty):
    """conv_transpose2d's output is grad_input's gx plus the bias: stride 3 leaves phases that no
    tap reaches, whose pixels hold only the bias."""
    x = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    conf = ((3, 3), (0, 0), (0, 0), 1, (1, 1))
    y = conv.conv_transpose2d_forward(x, w, b, *conf)
    _close(y, _cpu(monkeypatch, conv.conv_transpose2d_forward, x, w, b, *conf))
    untouched = y[0, :, 2::3, :]                    # rows 2 and 5 of 8: no tap reaches them
    assert untouched.shape == (3, 2, 8)
    np.testing.assert_array_equal(untouched, np.broadcast_to(b[:, None, None], untouched.shape))


# --------------------------------------------------------------------------- few-channel dgrad
# (N, C, H, W, K, (kh, kw), stride, padding, dilation, groups) with at most 4 input channels a
# group: grad_input on conv_dgrad_few_kernel (tile fill forced: these images are tiny)
FEW_CHANNEL_CASES = [
    (1, 1, 5, 7, 2, (3, 3), (1, 1), (1, 1), (1, 1), 1),        # Cg = 1
    (2, 2, 6, 5, 3, (2, 3), (2, 1), (0, 1), (1, 2), 1),        # Cg = 2, strides 2 x 1, dilated
    (1, 3, 9, 9, 5, (7, 7), (2, 2), (3, 3), (1, 1), 1),        # a stem in small: 9 to 16 taps
    (1, 8, 5, 6, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2),        # Cg = 4, two groups
    (1, 4, 6, 6, 8, (3, 3), (2, 2), (1, 1), (1, 1), 4),        # depthwise, multiplier 2
    (1, 1, 18, 67, 1, (3, 3), (1, 1), (1, 1), (1, 1), 1),      # 2 x 2 tiles, both partial; Kg 1
    (1, 2, 7, 8, 3, (2, 2), (3, 3), (1, 0), (2, 1), 1),        # stride 3: phases with no tap
    (1, 3, 6, 9, 3, (1, 8), (1, 1), (0, 0), (1, 1), 1),        # a span of 8 columns: the most
    (1, 1, 12, 5, 2, (8, 2), (1, 1), (0, 1), (1, 1), 1),       # and of 8 rows
    (1, 2, 7, 6, 3, (3, 2), (2, 1), (2, 0), (2, 1), 1),        # dilation 2 at stride 2: dense
]


def _torch_grad_input(x, w, gy, stride, padding, dilation, groups):
    torch = pytest.importorskip("torch")
    return torch.nn.grad.conv2d_input(x.shape, torch.tensor(w, dtype=torch.float64),
                                      torch.tensor(gy, dtype=torch.float64), stride=stride,
                                      padding=padding, dilation=dilation,
                                      groups=groups).numpy()


def _direct_calls(monkeypatch):
    calls = []
    real = conv_cuda._grad_input_direct

    def spy(*args):
        calls.append(args[3])          # geo
        return real(*args)
    monkeypatch.setattr(conv_cuda, "_grad_input_direct", spy)
    monkeypatch.setattr(conv_cuda, "DIRECT_MIN_FILL", 0.0)
    return calls


@pytest.mark.parametrize("case", FEW_CHANNEL_CASES)
def test_few_channel_grad_input_matches_torch(rng, monkeypatch, nan_empty, case):
    """Every output of gx written (gx comes from a NaN-filled np.empty) and equal to torch's
    float64 input gradient, over Cg = 1..4, groups, strides 1-3, padding, dilation (column taps
    2 apart; row taps 2 apart at stride 2: one a phase), partial 16 x 64 tiles, spans of 8 rows
    or columns."""
    calls = _direct_calls(monkeypatch)
    x, w, _ = _arrays(rng, case)
    conf = case[6:]
    geo = conv.ConvGeometry(x.shape, w.shape, *conf[:3], conf[3])
    gy = rng.standard_normal((case[0], case[4], geo.Ho, geo.Wo)).astype(np.float32)
    got = conv.conv2d_backward(x, w, gy, *conf, needs=(True, False, False))[0]
    assert len(calls) == 1
    want = _torch_grad_input(x, w, gy, *conf)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_few_channel_grad_input_float64_and_float16(rng, monkeypatch):
    """The float64 build (gradient checks) to float64 rounding; float16 data (conv_cuda's own
    grad_input: conv2d sends fp16 to tensor cores) accumulate in float32."""
    calls = _direct_calls(monkeypatch)
    case = FEW_CHANNEL_CASES[2]
    conf = case[6:]
    x, w, _ = _arrays(rng, case, np.float64)
    gy = rng.standard_normal((1, 5, 5, 5))
    got = conv.conv2d_backward(x, w, gy, *conf, needs=(True, False, False))[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _torch_grad_input(x, w, gy, *conf), rtol=1e-12, atol=1e-12)
    h = [a.astype(np.float16) for a in (x, w, gy)]     # (conv2d takes fp16 to tensor cores)
    got = conv_cuda.grad_input(h[2], h[1], conv.ConvGeometry(x.shape, w.shape, *conf))
    assert got.dtype == np.float16 and len(calls) == 2
    want = _torch_grad_input(*[a.astype(np.float64) for a in h], *conf)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-2,
                               atol=1e-2 * np.abs(want).max())


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose2d_few_channels_with_bias(rng, monkeypatch, nan_empty, groups):
    """conv_transpose2d with 3 output channels a group is the few-channel grad_input with a
    bias, which the kernel adds as it stores (stride 2, output_padding 1)."""
    torch = pytest.importorskip("torch")
    calls = _direct_calls(monkeypatch)
    x = rng.standard_normal((2, 2 * groups, 3, 4)).astype(np.float32)
    w = rng.standard_normal((2 * groups, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3 * groups).astype(np.float32)
    conf = ((2, 2), (1, 1), (1, 1), groups, (1, 1))
    y = conv.conv_transpose2d_forward(x, w, b, *conf)
    assert len(calls) == 1
    t = [torch.tensor(a, dtype=torch.float64) for a in (x, w, b)]
    want = torch.nn.functional.conv_transpose2d(*t, stride=2, padding=1, output_padding=1,
                                                groups=groups).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_backward_hands_one_contiguous_gy_to_both_gemms(rng, monkeypatch):
    """A broadcast gy (``y.sum().backward()``) is made contiguous once, and grad_input and
    grad_weight both read that same array (each used to copy it: two copies a backward)."""
    case = CASES[0]
    x, w, _ = _arrays(rng, case)
    conf = case[6:]
    gy = np.broadcast_to(np.float32(1.5), (2, 4, 5, 6))
    seen = []
    for name in ("grad_input", "grad_weight"):
        real = getattr(conv_cuda, name)

        def spy(*args, real=real, name=name, **kwargs):
            seen.append((name, args[0 if name == "grad_input" else 1]))
            return real(*args, **kwargs)
        monkeypatch.setattr(conv_cuda, name, spy)
    copies = []
    real_contiguous = np.ascontiguousarray

    def counting(a, *args, **kwargs):
        out = real_contiguous(a, *args, **kwargs)
        if isinstance(a, np.ndarray) and a.shape == gy.shape and not np.shares_memory(out, a):
            copies.append(a.strides)
        return out
    monkeypatch.setattr(np, "ascontiguousarray", counting)
    got = conv.conv2d_backward(x, w, gy, *conf, needs=(True, True, False))
    assert [name for name, _ in seen] == ["grad_input", "grad_weight"]
    assert seen[0][1] is seen[1][1] and seen[0][1].flags.c_contiguous
    assert copies == [gy.strides]                                   # one copy, not two
    monkeypatch.undo()
    want = _cpu(monkeypatch, conv.conv2d_backward, x, w, np.ascontiguousarray(gy), *conf,
                (True, True, False))
    for g, r in zip(got[:2], want[:2]):
        _close(g, r)


def test_few_channel_grad_input_non_finite_where_the_definition_says(rng, monkeypatch):
    """An inf and a NaN in gy reach exactly the gx pixels whose taps read them (inf, -inf or
    NaN as torch's float64 sums have them), no others: the tile's padding and the halo rows of
    other phases multiply no non-finite value into a pixel that does not read it."""
    calls = _direct_calls(monkeypatch)
    case = FEW_CHANNEL_CASES[2]
    conf = case[6:]
    x, w, _ = _arrays(rng, case)
    gy = rng.standard_normal((1, 5, 5, 5)).astype(np.float32)
    gy[0, 1, 2, 3], gy[0, 4, 0, 0] = np.inf, np.nan
    got = conv.conv2d_backward(x, w, gy, *conf, needs=(True, False, False))[0]
    assert len(calls) == 1
    want = _torch_grad_input(x, w, gy, *conf)
    assert np.isfinite(want).any() and not np.isfinite(want).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
