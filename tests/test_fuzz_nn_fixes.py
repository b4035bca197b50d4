"""Regression tests for the nn bugs tests/test_fuzz_nn_parity.py found (session 16), one plain
example each, compared with torch. Each failed on the code before its fix."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gpudl as gd  # noqa: E402
from fuzz_parity import assert_same  # noqa: E402


def pair(shape, seed=0, dtype="float64", requires_grad=True):
    values = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    g, t = gd.tensor(values.copy()), torch.from_numpy(values.copy())
    return g.requires_grad_(requires_grad), t.requires_grad_(requires_grad)


def copied(build):
    """The module ``build(lib)`` of torch and of gpudl (float64, torch's state copied in)."""
    t, g = build(torch).double(), build(gd).double()
    g.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    return g, t


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("dims", [1, 2])
def test_conv_padding_valid_with_a_padding_mode(mode, dims):
    # padding='valid' read as the string's five letters: "pad (0, 0, ...) must hold pairs"
    g, t = copied(lambda L: getattr(L.nn, f"Conv{dims}d")(2, 3, 2, padding="valid",
                                                              padding_mode=mode))
    x, tx = pair((1, 2) + (4,) * dims)
    assert_same(g(x), t(tx))


@pytest.mark.parametrize("call", [
    lambda L, x: L.nn.functional.avg_pool3d(x, 3, padding=1),
    lambda L, x: L.nn.AvgPool3d(3, padding=1)(x),
    lambda L, x: L.nn.functional.lp_pool3d(x, 2, 3, ceil_mode=True),
])
def test_avg_pool3d_refuses_a_kernel_larger_than_the_input(call):
    # torch refuses when a dim of the unpadded input is smaller than the kernel; gpudl averaged
    x, tx = pair((3, 2, 4, 1))
    with pytest.raises(RuntimeError):
        call(torch, tx)
    with pytest.raises(RuntimeError, match="kernel_size"):
        call(gd, x)
    assert_same(gd.nn.functional.avg_pool3d(x, (2, 3, 1), padding=(1, 1, 0)),
                torch.nn.functional.avg_pool3d(tx, (2, 3, 1), padding=(1, 1, 0)))


@pytest.mark.parametrize("widths", [(-2, 4), (2, -3), (-1, -1)])
def test_constant_pad_refuses_a_crop_larger_than_the_dim(widths):
    # gpudl checked only size + left + right >= 0: (2, 1) padded by (-2, 4) gave zeros (2, 3)
    x, tx = pair((2, 1))
    with pytest.raises(RuntimeError):
        torch.nn.functional.pad(tx, widths)
    with pytest.raises(ValueError, match="pad"):
        gd.nn.functional.pad(x, widths)
    assert_same(gd.nn.functional.pad(x, (-1, 2)), torch.nn.functional.pad(tx, (-1, 2)))


def test_instance_norm_momentum_none_keeps_the_running_statistics():
    # torch passes momentum 0.0 for momentum=None (no cumulative average in InstanceNorm);
    # gpudl used 0.1, so running_mean moved after each training step
    g, t = copied(lambda L: L.nn.InstanceNorm1d(3, momentum=None, track_running_stats=True))
    for seed in range(2):
        x, tx = pair((2, 3, 5), seed)
        assert_same(g(x), t(tx))
    assert_same(g.running_mean, t.running_mean)
    assert_same(g.running_var, t.running_var)
    g.eval(), t.eval()
    assert_same(g(x), t(tx))


@pytest.mark.parametrize("module", [False, True])
def test_embedding_scale_grad_by_freq(module):
    # was NotImplementedError; each row's gradient is divided by its count in the batch
    indices = np.array([[1, 1, 2], [1, 3, 0]])
    if module:
        g, t = copied(lambda L: L.nn.Embedding(4, 2, scale_grad_by_freq=True, padding_idx=0))
        gw, tw = g.weight, t.weight
        out, want = g(gd.tensor(indices)), t(torch.from_numpy(indices))
    else:
        gw, tw = pair((4, 2))
        out = gd.nn.functional.embedding(gd.tensor(indices), gw, scale_grad_by_freq=True)
        want = torch.nn.functional.embedding(torch.from_numpy(indices), tw,
                                             scale_grad_by_freq=True)
    assert_same(out, want)
    cotangent = np.random.default_rng(1).standard_normal(want.shape)
    (out * gd.tensor(cotangent)).sum().backward()
    (want * torch.from_numpy(cotangent)).sum().backward()
    assert_same(gw.grad, tw.grad)


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_reflect_and_replicate_pad_refuse_an_empty_result(mode):
    # torch: "input (W: 1) is too small. Calculated output W: 0"; gpudl returned (1, 2, 0)
    x, tx = pair((1, 2, 2))
    with pytest.raises(RuntimeError):
        torch.nn.functional.pad(tx, (0, -2), mode=mode)
    with pytest.raises(ValueError, match="at least 1"):
        gd.nn.functional.pad(x, (0, -2), mode=mode)
    assert_same(gd.nn.functional.pad(x, (0, -1), mode=mode),
                torch.nn.functional.pad(tx, (0, -1), mode=mode))
    assert_same(gd.nn.functional.pad(x, (0, -2), mode="circular"),
                torch.nn.functional.pad(tx, (0, -2), mode="circular"))
    # torch's 2-D (and 3-D) pads of these modes do return an empty dim
    assert_same(gd.nn.functional.pad(x, (0, -2, 0, 0), mode=mode),
                torch.nn.functional.pad(tx, (0, -2, 0, 0), mode=mode))


def test_batch_norm_refused_batch_is_not_counted():
    # a batch the call refuses (one value per channel) changes nothing, num_batches_tracked
    # included (torch counts it: a deliberate difference, the project's rule); the cumulative
    # average (momentum=None) of the next batches then matches torch's over the same batches
    g, t = copied(lambda L: L.nn.BatchNorm1d(3, momentum=None))
    x, tx = pair((1, 3))
    with pytest.raises(ValueError):
        t(tx)
    with pytest.raises(ValueError, match="more than 1 value"):
        g(x)
    assert int(g.num_batches_tracked.item()) == 0
    t.num_batches_tracked.zero_()
    for seed in range(2):
        x, tx = pair((4, 3), seed)
        assert_same(g(x), t(tx))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert_same(getattr(g, name), getattr(t, name))


@pytest.mark.parametrize("call", [
    lambda L, x: L.nn.functional.adaptive_max_pool2d(x, 3, return_indices=True),
    lambda L, x: L.nn.functional.max_pool2d(x, 2, padding=1, dilation=2),
    lambda L, x: L.nn.functional.max_unpool2d(
        *L.nn.functional.max_pool2d(x, 2, return_indices=True), 2),
    lambda L, x: L.nn.functional.grid_sample(x, x.new_zeros((0, 2, 3, 2)), align_corners=False),
    lambda L, x: L.nn.functional.fractional_max_pool2d(x, 2, output_size=2,
                                                       return_indices=True),
])
def test_pooling_and_sampling_of_an_empty_batch(call):
    # reshape(n, c, -1) of an empty batch is ambiguous: "shape (0, 3, -1) is invalid"
    x, tx = pair((0, 3, 4, 4))
    got, want = call(gd, x), call(torch, tx)
    assert_same(got, want)
    (got[0] if isinstance(got, tuple) else got).sum().backward()
    (want[0] if isinstance(want, tuple) else want).sum().backward()
    assert_same(x.grad, tx.grad)


@pytest.mark.parametrize("name", ["conv3d", "conv_transpose3d", "conv1d"])
def test_conv_weight_gradient_of_an_empty_batch(name):
    # the weight gradient summed over no chunks was the int 0: "'int' has no attribute reshape"
    x, tx = pair((0, 2) + (3,) * int(name[-2]))
    w, tw = pair((2, 2) + (2,) * int(name[-2]), seed=1)
    got = getattr(gd.nn.functional, name)(x, w)
    want = getattr(torch.nn.functional, name)(tx, tw)
    assert_same(got, want)
    got.sum().backward()
    want.sum().backward()
    assert_same(w.grad, tw.grad)
    assert_same(x.grad, tx.grad)


def test_affine_grid_refuses_an_empty_batch():
    # torch: "Expected non-zero, positive output size"; gpudl returned an empty grid
    theta, ttheta = pair((0, 2, 3))
    with pytest.raises(ValueError):
        torch.nn.functional.affine_grid(ttheta, (0, 1, 3, 2), align_corners=False)
    with pytest.raises(ValueError, match="size"):
        gd.nn.functional.affine_grid(theta, (0, 1, 3, 2), align_corners=False)


def test_embedding_scale_grad_by_freq_double_backward_is_the_formula():
    """create_graph through Embedding(scale_grad_by_freq=True): the weight gradient's rows are
    the picked cotangents divided by each row's count, so d(sum gw^2)/dv = 2 gw[row] / count.
    Checked against that formula in float64 (torch 2.13's own double backward leaves the
    division out)."""
    rng = np.random.default_rng(3)
    w, v = rng.standard_normal((5, 3)), rng.standard_normal((2, 3, 3))
    idx = np.array([[1, 4, 1], [1, 0, 2]])
    weight, cotangent = gd.tensor(w, requires_grad=True), gd.tensor(v, requires_grad=True)
    out = gd.nn.functional.embedding(gd.tensor(idx), weight, padding_idx=0,
                                     scale_grad_by_freq=True)
    (gw,) = gd.autograd.grad((out * cotangent).sum(), weight, create_graph=True)
    (gv,) = gd.autograd.grad((gw * gw).sum(), cotangent)
    rows, counts = idx.reshape(-1), np.bincount(idx.reshape(-1), minlength=5)
    expected_gw = np.zeros((5, 3))
    np.add.at(expected_gw, rows, v.reshape(-1, 3) / counts[rows, None])
    expected_gw[0] = 0
    expected_gv = np.where((rows != 0)[:, None], 2 * expected_gw[rows] / counts[rows, None], 0)
    np.testing.assert_allclose(gw.detach().numpy(), expected_gw, rtol=1e-12)
    np.testing.assert_allclose(gv.numpy(), expected_gv.reshape(v.shape), rtol=1e-12)
