"""F.conv2d, F.conv_transpose2d, nn.Conv2d and nn.ConvTranspose2d: finite differences, PyTorch
(values and gradients, float64 and float32), PyTorch's weights and init, and every refused input."""

import math
import re

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import nn
from gpudl.testing import gradcheck
from oracle import check_against_torch, torch

TF = torch.nn.functional

# PyTorch warns that its own 'same' padding with an even kernel copies the input
pytestmark = [pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),
              pytest.mark.usefixtures("strict_fp32_conv")]   # fp32 tolerances: no TF32 on cuda

# (input shape, weight shape, keyword arguments of conv2d)
CONV2D = [
    ((2, 3, 7, 6), (4, 3, 3, 3), {"padding": 1}),
    ((1, 4, 8, 9), (6, 2, 3, 2), {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2),
                                  "groups": 2}),
    ((2, 3, 6, 6), (6, 1, 3, 3), {"padding": 1, "groups": 3}),                     # depthwise
    ((2, 3, 5, 5), (2, 3, 1, 1), {"stride": 2}),                                  # 1x1 strided
    ((2, 2, 6, 7), (3, 2, 2, 3), {"padding": "same", "dilation": (1, 2)}),        # odd 'same'
    ((1, 2, 6, 6), (3, 2, 3, 3), {"padding": "valid", "stride": 3}),
    ((3, 6, 6), (4, 3, 3, 3), {"padding": 1}),                                    # unbatched
    ((0, 3, 5, 5), (2, 3, 3, 3), {"padding": 1}),                                 # empty batch
]

# (input shape, weight shape, keyword arguments of conv_transpose2d)
TRANSPOSED = [
    ((2, 4, 3, 4), (4, 3, 3, 3), {}),
    ((1, 4, 3, 3), (4, 2, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
    ((2, 4, 3, 4), (4, 1, 2, 3), {"stride": (2, 3), "padding": (1, 0),
                                  "output_padding": (1, 2), "groups": 2}),
    ((1, 2, 4, 3), (2, 2, 3, 2), {"stride": (1, 2), "padding": 1, "output_padding": (1, 0),
                                  "dilation": (2, 1)}),
    ((3, 3, 3), (3, 2, 2, 2), {"stride": 2}),                                     # unbatched
]


def _arrays(rng, x_shape, w_shape, out_channels, dtype=np.float64):
    return [rng.standard_normal(s).astype(dtype)
            for s in (x_shape, w_shape, (out_channels,))]


def _conv2d(lib, kwargs):
    return lambda x, w, b: lib.conv2d(x, w, b, **kwargs)


def _transposed(lib, kwargs):
    return lambda x, w, b: lib.conv_transpose2d(x, w, b, **kwargs)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", CONV2D)
def test_conv2d_matches_torch_float64(rng, x_shape, w_shape, kwargs):
    arrays = _arrays(rng, x_shape, w_shape, w_shape[0])
    check_against_torch(_conv2d(F, kwargs), _conv2d(TF, kwargs), *arrays, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", TRANSPOSED)
def test_conv_transpose2d_matches_torch_float64(rng, x_shape, w_shape, kwargs):
    groups = kwargs.get("groups", 1)
    arrays = _arrays(rng, x_shape, w_shape, w_shape[1] * groups)
    check_against_torch(_transposed(F, kwargs), _transposed(TF, kwargs), *arrays, rtol=1e-9,
                        atol=1e-9)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [CONV2D[0], CONV2D[1], CONV2D[2]])
def test_conv2d_matches_torch_float32(rng, x_shape, w_shape, kwargs):
    x, w, b = _arrays(rng, x_shape, w_shape, w_shape[0], np.float32)
    gx, gw, gb = (gd.tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y, ty = F.conv2d(gx, gw, gb, **kwargs), TF.conv2d(tx, tw, tb, **kwargs)
    assert y.dtype == gd.float32
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    weights = rng.standard_normal(y.shape).astype(np.float32)
    (y * gd.tensor(weights)).sum().backward()
    (ty * torch.tensor(weights)).sum().backward()
    for ours, theirs in ((gx, tx), (gw, tw), (gb, tb)):
        assert ours.grad.dtype == gd.float32
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((64, 1, 28, 28), (6, 1, 5, 5), {"padding": 2}),        # LeNet-5's conv1 at batch 64
    ((64, 6, 14, 14), (16, 6, 5, 5), {}),                   # and conv2
])
def test_lenet_convolutions_in_float32_against_float64(rng, x_shape, w_shape, kwargs):
    """Full-size LeNet layers (on cuda: the few-rows kernels with their real splits, 196 and 25
    partial sums of 256 pixels, and conv2's grad_input in 16 x 32 tiles) against torch in
    float64 on the same float32 values; errors scale with the largest value (50,176-term sums)."""
    x, w, b = _arrays(rng, x_shape, w_shape, w_shape[0], np.float32)
    gx, gw, gb = (gd.tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b))
    y, ty = F.conv2d(gx, gw, gb, **kwargs), TF.conv2d(tx, tw, tb, **kwargs)
    weights = rng.standard_normal(y.shape).astype(np.float32)
    (y * gd.tensor(weights)).sum().backward()
    (ty * torch.tensor(weights.astype(np.float64))).sum().backward()
    for ours, theirs in ((y, ty), (gx.grad, tx.grad), (gw.grad, tw.grad), (gb.grad, tb.grad)):
        assert ours.dtype == gd.float32
        want = theirs.detach().numpy()
        np.testing.assert_allclose(ours.numpy(), want, rtol=1e-4,
                                   atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [CONV2D[1], CONV2D[4], CONV2D[6]])
def test_conv2d_gradcheck(rng, x_shape, w_shape, kwargs):
    inputs = [gd.tensor(a, requires_grad=True)
              for a in _arrays(rng, x_shape, w_shape, w_shape[0])]
    assert gradcheck(_conv2d(F, kwargs), inputs)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [TRANSPOSED[2], TRANSPOSED[3]])
def test_conv_transpose2d_gradcheck(rng, x_shape, w_shape, kwargs):
    groups = kwargs.get("groups", 1)
    inputs = [gd.tensor(a, requires_grad=True)
              for a in _arrays(rng, x_shape, w_shape, w_shape[1] * groups)]
    assert gradcheck(_transposed(F, kwargs), inputs)


def test_without_bias_and_input_only_gradient(rng):
    x, w, _ = _arrays(rng, (2, 3, 5, 5), (4, 3, 3, 3), 4)
    gx, gw = gd.tensor(x, requires_grad=True), gd.tensor(w)
    F.conv2d(gx, gw, stride=2).sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    TF.conv2d(tx, torch.tensor(w), stride=2).sum().backward()
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-9)
    assert gw.grad is None


# a few input channels a group, images large enough for the direct grad_input kernel's tiles
# (kernels/conv_cuda.py conv_dgrad_few_kernel, taken on the cuda device): a stem, a grayscale
# 5x5, a depthwise layer with multiplier 2, and a transposed convolution to 3 channels
FEW_CHANNELS = [
    ((1, 3, 64, 128), (8, 3, 7, 7), {"stride": 2, "padding": 3}),
    ((2, 1, 33, 70), (4, 1, 5, 5), {"padding": 2}),
    ((1, 4, 34, 66), (8, 1, 3, 3), {"padding": 1, "groups": 4}),
]


@pytest.mark.parametrize("x_shape, w_shape, kwargs", FEW_CHANNELS)
def test_few_input_channels_input_gradient_matches_torch_float32(rng, x_shape, w_shape, kwargs):
    """float32 input gradients against torch's float64 ones (on a GPU: the direct kernel,
    checked to be the path taken)."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / math.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    gx = gd.tensor(x, requires_grad=True)
    y = F.conv2d(gx, gd.tensor(w), **kwargs)
    g = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    TF.conv2d(tx, torch.tensor(w.astype(np.float64)), **kwargs).backward(
        torch.tensor(g.astype(np.float64)))
    if gx.device.type == "cuda":
        from gpudl.kernels import conv, conv_cuda
        geo = conv.ConvGeometry(x_shape, w_shape, *(_pair(kwargs.get(k, d)) for k, d in
                                (("stride", 1), ("padding", 0), ("dilation", 1))),
                                kwargs.get("groups", 1))
        assert conv_cuda._takes_direct(geo, conv_cuda.int32)
    y.backward(gd.tensor(g))
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=1e-4,
                               atol=1e-4 * np.abs(tx.grad.numpy()).max())


def test_conv_transpose2d_to_three_channels_matches_torch_float32(rng):
    """A generator's last layer (64 -> 3 channels, stride 2): the few-channel kernel's forward
    use, with its bias."""
    x = rng.standard_normal((2, 16, 20, 36)).astype(np.float32)
    w = (rng.standard_normal((16, 3, 4, 4)) / 8).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    ours = F.conv_transpose2d(gd.tensor(x), gd.tensor(w), gd.tensor(b), stride=2, padding=1)
    theirs = TF.conv_transpose2d(*(torch.tensor(a.astype(np.float64)) for a in (x, w, b)),
                                 stride=2, padding=1).numpy()
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("fn, tfn, w_shape", [(F.conv2d, TF.conv2d, (3, 2, 3, 3)),
                                              (F.conv_transpose2d, TF.conv_transpose2d,
                                               (2, 3, 3, 3))])
def test_nan_propagates_like_torch(rng, fn, tfn, w_shape):
    x, w = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal(w_shape)
    x[1, 0, 0, 5] = x[0, 1, 3, 2] = np.nan
    gx, tx = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    gw, tw = gd.tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    y, ty = fn(gx, gw, padding=1), tfn(tx, tw, padding=1)
    np.testing.assert_array_equal(np.isnan(y.numpy()), np.isnan(ty.detach().numpy()))
    assert np.isnan(y.numpy()).any()
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_array_equal(np.isnan(gw.grad.numpy()), np.isnan(tw.grad.numpy()))


# --------------------------------------------------------------------------- modules
def test_conv2d_module_loads_torch_weights(rng):
    layer = torch.nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=1, dilation=(2, 1), groups=2)
    ours = nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=1, dilation=(2, 1), groups=2)
    state = layer.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in state.items()}
    ours.load_state_dict({k: v.numpy() for k, v in state.items()})
    x = rng.standard_normal((2, 4, 7, 8)).astype(np.float32)
    gx, tx = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = ours(gx), layer(tx)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.weight.grad.numpy(), layer.weight.grad.numpy(), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(ours.bias.grad.numpy(), layer.bias.grad.numpy(), rtol=1e-4)


def test_conv_transpose2d_module_loads_torch_weights(rng):
    layer = torch.nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, groups=2, bias=False)
    ours = nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, groups=2, bias=False)
    assert ours.bias is None and ours.weight.shape == tuple(layer.weight.shape) == (4, 3, 4, 4)
    ours.load_state_dict({k: v.numpy() for k, v in layer.state_dict().items()})
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(ours(gd.tensor(x)).numpy(),
                               layer(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    sized = ours(gd.tensor(x), output_size=(11, 11))
    want = layer(torch.tensor(x), output_size=[11, 11])
    np.testing.assert_allclose(sized.numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=re.escape("(2, 4, 5, 5)")):
        ours(gd.tensor(x), output_size=(13, 13))


@pytest.mark.parametrize("make, fan_in", [
    (lambda: nn.Conv2d(32, 64, (3, 5), groups=2), 16 * 15),
    (lambda: nn.ConvTranspose2d(64, 32, 3, groups=4), 8 * 9),        # torch: out/groups * k*k
])
def test_default_init_is_torchs(make, fan_in):
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    w, b = layer.weight.numpy(), layer.bias.numpy()
    assert w.dtype == np.float32 and np.abs(w).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.03 * bound
    assert np.abs(b).max() <= bound and len(np.unique(b)) == b.size


def test_module_refusals():
    with pytest.raises(ValueError, match="only 'zeros' padding_mode"):
        nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")    # Conv2d pads in that mode
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(2, 2, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"in_channels \(3\) must be divisible by groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(2, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="kernel_size"):
        nn.ConvTranspose2d(2, 2, 0)


@pytest.mark.parametrize("layer", [nn.Conv2d, nn.ConvTranspose2d, nn.Conv1d])
def test_groups_zero_is_a_value_error_naming_groups(layer):
    with pytest.raises(ValueError, match="groups must be a positive int, got 0"):
        layer(4, 6, 3, groups=0)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(kernel_size=0), ValueError, "Conv1d: kernel_size must be positive, got 0"),
    (dict(kernel_size=3, stride=0), ValueError, "Conv1d: stride must be positive, got 0"),
    (dict(kernel_size=3, padding=-1), ValueError, "Conv1d: padding must be non-negative, got -1"),
    (dict(kernel_size=(3, 3)), TypeError, r"Conv1d: kernel_size must be an int or a 1-tuple"),
    (dict(kernel_size=3, groups=4), ValueError, r"Conv1d: out_channels \(6\) must be divisible"),
    (dict(kernel_size=3, padding="same", stride=2), ValueError, "Conv1d: padding='same'"),
    (dict(kernel_size=3, padding_mode="mirror"), ValueError, "Conv1d: padding_mode"),
])
def test_conv1d_refusals_name_conv1d_and_the_value_given(kwargs, error, message):
    with pytest.raises(error, match=message):
        nn.Conv1d(4, 6, **kwargs)


def test_conv1d_takes_one_tuples_as_torch(rng):
    kwargs = dict(kernel_size=(3,), stride=(2,), padding=(1,), dilation=(2,))
    ours, theirs = nn.Conv1d(4, 6, **kwargs), torch.nn.Conv1d(4, 6, **kwargs)
    assert (ours.kernel_size, ours.stride, ours.padding, ours.dilation) == \
        (theirs.kernel_size, theirs.stride, theirs.padding, theirs.dilation)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = rng.standard_normal((2, 4, 11)).astype(np.float32)
    np.testing.assert_allclose(ours(gd.tensor(x)).numpy(),
                               theirs(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- refused inputs
def _t(*shape, dtype=np.float32):
    return gd.tensor(np.ones(shape, dtype))


BAD = [
    ("channel mismatch", F.conv2d, (_t(2, 3, 8, 8), _t(6, 4, 3, 3)), {}, ValueError),
    ("group mismatch", F.conv2d, (_t(2, 4, 8, 8), _t(6, 4, 3, 3)), {"groups": 2}, ValueError),
    ("groups do not divide out channels", F.conv2d, (_t(2, 4, 8, 8), _t(5, 2, 3, 3)),
     {"groups": 2}, ValueError),
    ("kernel larger than padded input", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 7, 7)),
     {"padding": 1}, ValueError),
    ("dilated kernel larger", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3)), {"dilation": 2},
     ValueError),
    ("zero stride", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3)), {"stride": 0}, ValueError),
    ("negative stride", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3)), {"stride": (1, -2)},
     ValueError),
    ("zero dilation", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3)), {"dilation": 0}, ValueError),
    ("negative padding", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3)), {"padding": -1},
     ValueError),
    ("zero groups", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3)), {"groups": 0}, ValueError),
    ("2-D input", F.conv2d, (_t(4, 4), _t(3, 1, 3, 3)), {}, ValueError),
    ("5-D input", F.conv2d, (_t(1, 1, 2, 4, 4), _t(3, 2, 3, 3)), {}, ValueError),
    ("3-D weight", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3)), {}, ValueError),
    ("bias shape", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3), _t(4)), {}, ValueError),
    ("padding string", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3)), {"padding": "full"},
     ValueError),
    ("same with stride", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3)),
     {"padding": "same", "stride": 2}, ValueError),
    ("stride of three", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3)), {"stride": (1, 1, 1)},
     TypeError),
    ("float stride", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3)), {"stride": 1.5}, TypeError),
    ("dtype mismatch", F.conv2d, (_t(1, 2, 4, 4), _t(3, 2, 3, 3, dtype=np.float64)), {},
     TypeError),
    ("transposed channel mismatch", F.conv_transpose2d, (_t(1, 3, 4, 4), _t(4, 2, 3, 3)), {},
     ValueError),
    ("output_padding >= stride and dilation", F.conv_transpose2d,
     (_t(1, 4, 4, 4), _t(4, 2, 3, 3)), {"stride": 2, "output_padding": 2}, ValueError),
    ("transposed output too small", F.conv_transpose2d, (_t(1, 4, 1, 1), _t(4, 2, 1, 1)),
     {"padding": 1}, ValueError),
    ("transposed groups do not divide in channels", F.conv_transpose2d,
     (_t(1, 3, 4, 4), _t(3, 2, 3, 3)), {"groups": 2}, ValueError),
    ("transposed string padding", F.conv_transpose2d, (_t(1, 4, 4, 4), _t(4, 2, 3, 3)),
     {"padding": "same"}, TypeError),
]


@pytest.mark.parametrize("name, fn, args, kwargs, error", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_naming_the_shapes(name, fn, args, kwargs, error):
    before = [a.numpy().copy() for a in args]
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message.startswith(fn.__name__ + ":"), message
    for t in args[:2]:
        assert str(tuple(t.shape)) in message, message
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a.numpy(), b)


def test_non_tensor_arguments_are_type_errors():
    with pytest.raises(TypeError, match="input must be a Tensor, got ndarray"):
        F.conv2d(np.ones((1, 2, 4, 4)), _t(3, 2, 3, 3))
    with pytest.raises(TypeError, match="bias must be a Tensor or None, got list"):
        F.conv_transpose2d(_t(1, 4, 4, 4), _t(4, 2, 3, 3), [0.0, 0.0])
    with pytest.raises(TypeError, match="floating point"):
        F.conv2d(gd.tensor(np.ones((1, 2, 4, 4), np.int64)), _t(3, 2, 3, 3))


@pytest.mark.parametrize("name, x_shape, w_shape, kwargs", [
    ("conv2d", (1, 2, 2, 2), (3, 2, 3, 3), {}),
    ("conv2d", (1, 2, 5, 4), (3, 2, 2, 3), dict(dilation=(1, 2))),
    ("conv_transpose2d", (1, 2, 1, 2), (2, 1, 1, 2), dict(stride=(1, 2), padding=(1, 2))),
])
def test_a_kernel_larger_than_its_input_raises_runtime_error_as_torch(name, x_shape, w_shape,
                                                                      kwargs):
    """torch raises RuntimeError; gpudl's error is also a ValueError (a bad argument)."""
    x, w = (np.random.default_rng(0).standard_normal(s).astype(np.float32)
            for s in (x_shape, w_shape))
    with pytest.raises(RuntimeError):
        getattr(TF, name)(torch.tensor(x), torch.tensor(w), **kwargs)
    with pytest.raises(RuntimeError) as error:
        getattr(F, name)(gd.tensor(x), gd.tensor(w), **kwargs)
    assert isinstance(error.value, ValueError)
