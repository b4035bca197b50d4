"""The torch.nn layers added for breadth (activations, padding, parameter containers,
channel dropout, ...) against torch 2.x: forward values and gradients of inputs and
parameters on fresh random float64 inputs, state_dict layouts, and the argument checks."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import nn
from oracle import check_against_torch, torch

TF = torch.nn.functional if torch is not None else None


def away_from(x, points, gap=1e-3):
    """``x`` with values within ``gap`` of a kink moved off it (finite gradients differ there)."""
    for p in points:
        x = np.where(np.abs(x - p) < gap, p + 2 * gap, x)
    return x


# ---------------------------------------------------------------------- activations

ACTIVATIONS = [
    ("selu", lambda f, x: f.selu(x), ()),
    ("celu", lambda f, x: f.celu(x, 0.7), ()),
    ("hardsigmoid", lambda f, x: f.hardsigmoid(x), (-3, 3)),
    ("hardswish", lambda f, x: f.hardswish(x), (-3, 3)),
    ("softsign", lambda f, x: f.softsign(x), ()),
    ("softmin", lambda f, x: f.softmin(x, dim=1), ()),
    ("logsigmoid", lambda f, x: f.logsigmoid(x), ()),
    ("hardshrink", lambda f, x: f.hardshrink(x, 0.4), (-0.4, 0.4)),
    ("softshrink", lambda f, x: f.softshrink(x, 0.3), (-0.3, 0.3)),
    ("tanhshrink", lambda f, x: f.tanhshrink(x), ()),
    ("threshold", lambda f, x: f.threshold(x, 0.2, -1.5), (0.2,)),
    ("rrelu_eval", lambda f, x: f.rrelu(x, 0.1, 0.3, training=False), ()),
]


@pytest.mark.parametrize("name, call, kinks", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_functions_match_torch(rng, name, call, kinks):
    x = away_from(rng.standard_normal((3, 4, 5)) * 3, kinks)
    check_against_torch(lambda t: call(F, t), lambda t: call(TF, t), x)


def test_logsigmoid_does_not_overflow_and_is_smooth_at_zero(rng):
    x = np.array([-800.0, -40.0, 0.0, 0.5, 40.0, 800.0])
    check_against_torch(F.logsigmoid, TF.logsigmoid, x)


@pytest.mark.parametrize("name, call", [("hardshrink", lambda f, x: f.hardshrink(x)),
                                        ("softshrink", lambda f, x: f.softshrink(x)),
                                        ("threshold", lambda f, x: f.threshold(x, 0.1, -9.0))])
def test_nan_passes_through_as_in_torch(name, call):
    x = np.array([np.nan, -np.inf, np.inf, 0.05, -2.0])
    check_against_torch(lambda t: call(F, t), lambda t: call(TF, t), x, grad=False)


MODULES = [
    ("SELU", (), {}), ("CELU", (0.6,), {}), ("Hardswish", (), {}), ("Hardsigmoid", (), {}),
    ("Softsign", (), {}), ("Softmin", (), {"dim": -1}), ("LogSigmoid", (), {}),
    ("Hardshrink", (0.3,), {}), ("Softshrink", (), {"lambd": 0.2}), ("Tanhshrink", (), {}),
    ("Threshold", (0.1, 7.0), {}), ("Softmax2d", (), {}),
]


@pytest.mark.parametrize("name, args, kwargs", MODULES, ids=[m[0] for m in MODULES])
def test_activation_modules_match_torch(rng, name, args, kwargs):
    ours, theirs = getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    x = away_from(rng.standard_normal((2, 3, 4, 5)) * 3, (-3, 3, -0.3, 0.3, -0.2, 0.2, 0.1))
    check_against_torch(ours, theirs, x)


@pytest.mark.parametrize("num_parameters, shape", [(1, (4, 3, 5)), (3, (4, 3, 5)),
                                                   (3, (2, 3, 4, 4)), (1, (7,)), (6, (2, 6))])
def test_prelu_matches_torch_with_weight_gradients(rng, num_parameters, shape):
    theirs = torch.nn.PReLU(num_parameters).double()
    ours = nn.PReLU(num_parameters, dtype=gd.float64)
    assert list(ours.state_dict()) == ["weight"] and ours.weight.shape == (num_parameters,)
    np.testing.assert_array_equal(ours.weight.numpy(), theirs.weight.detach().numpy())
    weight = rng.uniform(-0.5, 0.5, num_parameters)
    ours.load_state_dict({"weight": weight})
    theirs.load_state_dict({"weight": torch.tensor(weight)})
    check_against_torch(lambda x: ours(x), lambda x: theirs(x), rng.standard_normal(shape),
                        grad=False)
    check_against_torch(F.prelu, TF.prelu, rng.standard_normal(shape), weight)


def test_rrelu_training_draws_one_slope_per_negative_element(rng):
    x = gd.tensor(rng.standard_normal((200, 50)), requires_grad=True)
    y = F.rrelu(x, 0.1, 0.4, training=True)
    y.sum().backward()
    xs, ys, gs = x.numpy(), y.numpy(), x.grad.numpy()
    negative = xs < 0
    slopes = ys[negative] / xs[negative]
    assert slopes.min() >= 0.1 and slopes.max() <= 0.4
    assert abs(slopes.mean() - 0.25) < 0.01 and np.unique(slopes).size > 1000
    np.testing.assert_array_equal(ys[~negative], xs[~negative])
    np.testing.assert_allclose(gs[negative], slopes)
    np.testing.assert_array_equal(gs[~negative], 1.0)
    layer = nn.RReLU(0.1, 0.4)
    assert layer(gd.tensor(xs)).numpy()[negative].tolist() != (0.25 * xs[negative]).tolist()
    np.testing.assert_allclose(layer.eval()(gd.tensor(xs)).numpy(),
                               torch.nn.RReLU(0.1, 0.4).eval()(torch.tensor(xs)).numpy())


@pytest.mark.parametrize("call, error, words", [
    (lambda x: F.prelu(x, gd.ones(2)), ValueError, "1 or 3"),
    (lambda x: F.prelu(x, 0.25), TypeError, "weight must be a Tensor"),
    (lambda x: F.celu(x, 0.0), ValueError, "alpha"),
    (lambda x: F.softshrink(x, -1), ValueError, "lambd must be greater or equal to 0"),
    (lambda x: F.softshrink(x, "a"), TypeError, "lambd"),
    (lambda x: F.rrelu(x, 0.5, 0.1), ValueError, "lower"),
    (lambda x: F.threshold(x, None, 1.0), TypeError, "threshold"),
    (lambda x: F.selu(x.long()), TypeError, "floating"),
    (lambda x: nn.Softmax2d()(x[0, 0]), ValueError, "3-D or 4-D"),
    (lambda x: nn.PReLU(0), ValueError, "num_parameters"),
])
def test_activation_bad_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call(gd.randn(2, 3, 4))


# ---------------------------------------------------------------------- padding layers

PADS = [
    ("ZeroPad1d", (2,), (2, 3, 5)), ("ZeroPad1d", ((1, 3),), (3, 5)),
    ("ZeroPad2d", ((1, 0, 2, 1),), (2, 3, 4, 5)), ("ZeroPad2d", (1,), (3, 4, 5)),
    ("ConstantPad1d", ((2, 1), 3.5), (2, 3, 5)), ("ConstantPad2d", (2, -1.0), (2, 3, 4, 5)),
    ("ReflectionPad1d", ((3, 1),), (2, 3, 5)), ("ReflectionPad2d", ((1, 2, 3, 0),), (2, 3, 4, 5)),
    ("ReplicationPad1d", (4,), (2, 3, 5)), ("ReplicationPad2d", ((2, 0, 1, 3),), (3, 4, 5)),
    ("CircularPad1d", ((2, 3),), (2, 3, 5)), ("CircularPad2d", ((1, 2, 2, 1),), (2, 3, 4, 5)),
    ("ZeroPad3d", ((1, 0, 2, 1, 0, 2),), (2, 2, 3, 4, 5)),
    ("ConstantPad3d", (1, 0.5), (2, 3, 4, 5)),
    ("ReflectionPad3d", ((1, 2, 0, 1, 2, 1),), (1, 2, 3, 4, 5)),
    ("ReplicationPad3d", (2,), (2, 3, 4, 5)),
    ("CircularPad3d", ((1, 1, 2, 0, 0, 2),), (1, 2, 3, 4, 5)),
]


@pytest.mark.parametrize("name, args, shape", PADS, ids=[f"{p[0]}-{len(p[2])}d" for p in PADS])
def test_padding_layers_match_torch(rng, name, args, shape):
    ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    assert ours.padding == theirs.padding
    assert repr(ours) == repr(theirs)
    check_against_torch(ours, theirs, rng.standard_normal(shape))


def test_padding_layers_bad_arguments():
    with pytest.raises(ValueError, match="ZeroPad2d: padding must be an int or a tuple of 4"):
        nn.ZeroPad2d((1, 2))
    with pytest.raises(ValueError, match="ReflectionPad1d: padding"):
        nn.ReflectionPad1d(1.5)
    with pytest.raises(ValueError, match="must not exceed"):
        nn.ReflectionPad1d(5)(gd.randn(2, 3, 5))


# ---------------------------------------------------------------------- parameter containers

class Holder(nn.Module):
    def __init__(self, arrays):
        super().__init__()
        self.plist = nn.ParameterList([nn.Parameter(gd.tensor(a)) for a in arrays[:2]])
        self.plist.append(gd.tensor(arrays[2]))         # a plain tensor becomes a Parameter
        self.pdict = nn.ParameterDict({"scale": nn.Parameter(gd.tensor(arrays[3]))})
        self.pdict["shift"] = gd.tensor(arrays[4])

    def forward(self, x):
        return (x * self.plist[0]).sum() * self.plist[1].sum() + self.plist[2].sum() \
            + (self.pdict["scale"] * x).sum() * self.pdict["shift"].sum()


class TorchHolder(torch.nn.Module):
    """Holder, built from torch's containers."""

    forward = Holder.forward

    def __init__(self, arrays):
        torch.nn.Module.__init__(self)
        self.plist = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(a))
                                             for a in arrays[:2]])
        self.plist.append(torch.tensor(arrays[2]))
        self.pdict = torch.nn.ParameterDict({"scale": torch.nn.Parameter(torch.tensor(arrays[3]))})
        self.pdict["shift"] = torch.tensor(arrays[4])


def test_parameter_list_and_dict_are_registered_as_torch(rng):
    arrays = [rng.standard_normal(s) for s in [(4,), (3,), (2,), (4,), (5,)]]
    ours = Holder(arrays)
    theirs = TorchHolder(arrays)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == [
        "plist.0", "plist.1", "plist.2", "pdict.scale", "pdict.shift"]
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert all(isinstance(p, nn.Parameter) for p in ours.parameters())
    x = rng.standard_normal(4)
    out, tout = ours(gd.tensor(x)), theirs(torch.tensor(x))
    np.testing.assert_allclose(out.item(), tout.item())
    out.backward()
    tout.backward()
    for (name, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), err_msg=name)
    ours.to(gd.float32)
    assert ours.plist[2].dtype == gd.float32 and ours.pdict["shift"].dtype == gd.float32
    ours.load_state_dict({k: v.detach().numpy() * 2 for k, v in theirs.state_dict().items()})
    np.testing.assert_allclose(ours.pdict["scale"].numpy(), 2 * arrays[3], rtol=1e-6)


def test_parameter_list_and_dict_behave_as_containers(rng):
    plist = nn.ParameterList([gd.randn(2) for _ in range(3)])
    assert len(plist) == 3 and len(plist[1:]) == 2 and plist[-1] is list(plist)[2]
    replacement = nn.Parameter(gd.randn(5))
    plist[0] = replacement
    assert plist[0] is replacement and list(plist.state_dict()) == ["0", "1", "2"]
    plist += [gd.randn(1)]
    assert len(plist) == 4
    with pytest.raises(IndexError, match="out of range"):
        plist[4]
    with pytest.raises(TypeError, match="Tensors or Parameters"):
        plist.append([1.0, 2.0])
    pdict = nn.ParameterDict([("a", gd.randn(2)), ("b", gd.randn(3))])
    assert list(pdict) == ["a", "b"] and "a" in pdict and pdict.get("c") is None
    assert pdict.pop("a").shape == (2,) and list(pdict.keys()) == ["b"]
    with pytest.raises(ValueError, match="ParameterDict.update: expected"):
        pdict.update([("a", gd.randn(1), 3)])


# ---------------------------------------------------------------------- channel dropout

@pytest.mark.parametrize("name, shape, channel_dims", [
    ("dropout1d", (40, 30, 7), 2), ("dropout1d", (300, 7), 1), ("dropout2d", (30, 40, 3, 4), 2),
    ("dropout3d", (20, 30, 2, 3, 2), 2), ("dropout3d", (400, 2, 3, 2), 1)])
def test_channel_dropout_zeroes_whole_channels(rng, name, shape, channel_dims):
    p = 0.3
    x = gd.tensor(rng.standard_normal(shape) + 5, requires_grad=True)   # never 0 itself
    y = getattr(F, name)(x, p, training=True)
    ratio = (y / x).detach().numpy()
    channels = ratio.reshape(ratio.shape[:channel_dims] + (-1,))
    assert np.allclose(channels, channels[..., :1])            # one draw per channel
    assert set(np.round(np.unique(channels), 9)) == {0.0, round(1 / (1 - p), 9)}
    assert abs((channels[..., 0] == 0).mean() - p) < 0.05
    y.backward(gd.ones(*shape))
    np.testing.assert_allclose(x.grad.numpy(), ratio)
    assert getattr(F, name)(x, p, training=False) is x


def test_dropout2d_on_3d_input_warns_and_drops_channels_of_dim_1(rng):
    x = gd.tensor(rng.standard_normal((20, 30, 8)) + 5)
    with pytest.warns(UserWarning, match="3D input"):
        y = nn.Dropout2d(0.5)(x)
    ratio = (y / x).numpy()
    assert np.allclose(ratio, ratio[..., :1])


def test_dropout_modules_follow_train_and_eval(rng):
    x = gd.tensor(rng.standard_normal((4, 6, 3, 3)))
    for layer in (nn.Dropout2d(0.4), nn.AlphaDropout(0.4)):
        assert not np.allclose(layer(x).numpy(), x.numpy())
        assert layer.eval()(x) is x
    assert repr(nn.Dropout2d(0.2)) == repr(torch.nn.Dropout2d(0.2))
    with pytest.raises(ValueError, match="Dropout1d: probability"):
        nn.Dropout1d(1.5)
    with pytest.raises(RuntimeError, match="dropout1d: expected a 2-D or 3-D input"):
        F.dropout1d(gd.randn(2, 3, 4, 5), 0.5)
    with pytest.raises(TypeError, match="alpha_dropout: input must be a floating"):
        F.alpha_dropout(gd.ones(3, dtype=gd.int64), 0.5, training=True)


def test_alpha_dropout_keeps_mean_and_variance_and_matches_torch_values(rng):
    p = 0.2
    x = gd.tensor(rng.standard_normal(400_000), requires_grad=True)
    y = F.alpha_dropout(x, p, training=True)
    ys = y.detach().numpy()
    assert abs(ys.mean()) < 0.01 and abs(ys.var() - 1) < 0.02
    torch.manual_seed(0)
    ty = TF.alpha_dropout(torch.tensor(x.numpy()), p, training=True).numpy()
    # the random streams differ, the value of a dropped unit and the affine map of the kept
    # ones must not: the dropped value is the one that repeats
    values, counts = np.unique(ty, return_counts=True)
    dropped = values[counts.argmax()]
    kept, t_kept = ~np.isclose(ys, dropped, rtol=1e-12), ~np.isclose(ty, dropped, rtol=1e-12)
    assert abs((~kept).mean() - p) < 0.005
    xs = x.numpy()
    np.testing.assert_allclose(np.polyfit(xs[kept], ys[kept], 1),
                               np.polyfit(xs[t_kept], ty[t_kept], 1), rtol=1e-9)
    y.backward(gd.ones(*ys.shape))
    np.testing.assert_allclose(x.grad.numpy()[kept], np.polyfit(xs[t_kept], ty[t_kept], 1)[0])
    np.testing.assert_array_equal(x.grad.numpy()[~kept], 0.0)


# ---------------------------------------------------------------------- adaptive pooling

@pytest.mark.parametrize("shape, output_size", [((2, 3, 7, 9), (3, 4)), ((3, 8, 8), 4),
                                                ((1, 2, 5, 6), (None, 4)), ((2, 1, 3, 4), (5, 6)),
                                                ((2, 2, 6, 5), 1)])
def test_adaptive_max_pool2d_matches_torch(rng, shape, output_size):
    x = rng.standard_normal(shape)
    check_against_torch(lambda t: F.adaptive_max_pool2d(t, output_size),
                        lambda t: TF.adaptive_max_pool2d(t, output_size), x)
    _, indices = F.adaptive_max_pool2d(gd.tensor(x), output_size, return_indices=True)
    _, expected = TF.adaptive_max_pool2d(torch.tensor(x), output_size, return_indices=True)
    assert indices.dtype == gd.int64
    np.testing.assert_array_equal(indices.numpy(), expected.numpy())
    ours, theirs = nn.AdaptiveMaxPool2d(output_size), torch.nn.AdaptiveMaxPool2d(output_size)
    assert repr(ours) == repr(theirs)
    check_against_torch(ours, theirs, x)


@pytest.mark.parametrize("shape, output_size", [((2, 3, 11), 4), ((3, 8), 8), ((2, 2, 5), 7)])
def test_adaptive_1d_pools_match_torch(rng, shape, output_size):
    x = rng.standard_normal(shape)
    check_against_torch(nn.AdaptiveMaxPool1d(output_size),
                        torch.nn.AdaptiveMaxPool1d(output_size), x)
    check_against_torch(nn.AdaptiveAvgPool1d(output_size),
                        torch.nn.AdaptiveAvgPool1d(output_size), x)
    _, indices = nn.AdaptiveMaxPool1d(output_size, return_indices=True)(gd.tensor(x))
    _, expected = TF.adaptive_max_pool1d(torch.tensor(x), output_size, return_indices=True)
    np.testing.assert_array_equal(indices.numpy(), expected.numpy())


def test_adaptive_pools_bad_arguments():
    with pytest.raises(ValueError, match="adaptive_max_pool2d: expected"):
        F.adaptive_max_pool2d(gd.randn(4, 5), 2)
    with pytest.raises(ValueError, match="output_size must be positive"):
        F.adaptive_max_pool2d(gd.randn(1, 4, 5), (0, 2))
    with pytest.raises(TypeError, match="output_size must be an int or a tuple of 2 ints"):
        F.adaptive_max_pool2d(gd.randn(1, 4, 5), 2.5)
    with pytest.raises(ValueError, match=r"adaptive_avg_pool1d: expected \(N, C, L\)"):
        F.adaptive_avg_pool1d(gd.randn(1, 2, 4, 5), 2)


# ---------------------------------------------------------------------- Bilinear, upsampling

@pytest.mark.parametrize("bias, lead", [(True, (6,)), (False, (2, 3)), (True, ())])
def test_bilinear_matches_torch(rng, bias, lead):
    theirs = torch.nn.Bilinear(3, 4, 5, bias=bias).double()
    ours = nn.Bilinear(3, 4, 5, bias=bias, dtype=gd.float64)
    assert repr(ours) == repr(theirs)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    assert np.abs(ours.weight.numpy()).max() <= 1 / np.sqrt(3)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x1, x2 = rng.standard_normal(lead + (3,)), rng.standard_normal(lead + (4,))
    check_against_torch(ours, theirs, x1, x2)
    params = [rng.standard_normal((5, 3, 4))] + ([rng.standard_normal(5)] if bias else [])
    check_against_torch(F.bilinear, TF.bilinear, x1, x2, *params)
    with pytest.raises(ValueError, match="bilinear: expected"):
        ours(gd.randn(*lead, 4), gd.randn(*lead, 4))


@pytest.mark.parametrize("name, kwargs", [("UpsamplingNearest2d", dict(scale_factor=2)),
                                          ("UpsamplingNearest2d", dict(size=(5, 7))),
                                          ("UpsamplingBilinear2d", dict(scale_factor=3)),
                                          ("UpsamplingBilinear2d", dict(size=(6, 4)))])
def test_upsampling_layers_match_torch(rng, name, kwargs):
    ours, theirs = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    assert repr(ours) == repr(theirs)
    check_against_torch(ours, theirs, rng.standard_normal((2, 3, 3, 4)))


# ---------------------------------------------------------------------- in-place F forms

@pytest.mark.parametrize("name, args", [("relu_", ()), ("elu_", (0.7,)), ("leaky_relu_", (0.2,)),
                                        ("hardtanh_", (-0.5, 0.8)), ("celu_", (1.3,)),
                                        ("selu_", ()), ("threshold_", (0.1, -2.0)),
                                        ("rrelu_", (0.1, 0.3, False))])
def test_in_place_activations_write_their_input(rng, name, args):
    x = rng.standard_normal((4, 5))
    ours, theirs = gd.tensor(x), torch.tensor(x)
    version = ours._version
    assert getattr(F, name)(ours, *args) is ours
    getattr(TF, name)(theirs, *args)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy())
    assert ours._version > version
    leaf = gd.tensor(x, requires_grad=True)
    with pytest.raises(RuntimeError, match=f"{name}: a leaf"):
        getattr(F, name)(leaf, *args)
    np.testing.assert_array_equal(leaf.detach().numpy(), x)        # refused: unchanged
    with gd.no_grad():
        getattr(F, name)(leaf, *args)
    np.testing.assert_allclose(leaf.detach().numpy(), theirs.numpy())
