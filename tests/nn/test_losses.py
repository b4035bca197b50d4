"""Losses against torch.nn.functional (float64, forward and input/target/weight gradients),
finite differences, every reduction, and the errors bad targets raise."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import nn
from gpudl.testing import gradcheck
from device_checks import call_then_read
from oracle import check_against_torch, torch

TF = torch.nn.functional
REDUCTIONS = ["none", "mean", "sum"]


def _check(ours, theirs, *arrays, **kw):
    check_against_torch(ours, theirs, *arrays, rtol=1e-6, atol=1e-10, **kw)


# ---------------------------------------------------------------- regression losses
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, kwargs", [("mse_loss", {}), ("l1_loss", {}),
                                          ("huber_loss", {"delta": 0.7}),
                                          ("smooth_l1_loss", {"beta": 0.6}),
                                          ("smooth_l1_loss", {"beta": 0.0})])
def test_regression_losses_match_torch(name, kwargs, reduction, rng):
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    _check(lambda x, t: getattr(F, name)(x, t, reduction=reduction, **kwargs),
           lambda x, t: getattr(TF, name)(x, t, reduction=reduction, **kwargs), x, t)
    gradcheck(lambda x, t: getattr(F, name)(x, t, reduction=reduction, **kwargs),
              [gd.tensor(x, requires_grad=True), gd.tensor(t, requires_grad=True)])


def test_regression_losses_float32_and_legacy_flags(rng):
    x, t = rng.standard_normal((5, 2)).astype(np.float32), rng.standard_normal((5, 2))
    loss = F.mse_loss(gd.tensor(x), gd.tensor(t.astype(np.float32)))
    assert loss.dtype == np.float32 and loss.shape == ()
    summed = F.l1_loss(gd.tensor(x), gd.tensor(t, dtype=gd.float32), size_average=False)
    np.testing.assert_allclose(summed.item(), np.abs(x - t).sum(), rtol=1e-5)


# ---------------------------------------------------------------- cross entropy
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(6, 4), (3, 5, 2, 3), (4,)])
def test_cross_entropy_class_indices(shape, weighted, smoothing, reduction, rng):
    x = rng.standard_normal(shape) * 2
    n_classes = shape[1] if len(shape) > 1 else shape[0]
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    t = rng.integers(0, n_classes, tshape)
    if t.ndim:
        t.reshape(-1)[::3] = 7                     # some ignored targets
    w = rng.random(n_classes) + 0.2 if weighted else None
    kw = dict(ignore_index=7, reduction=reduction, label_smoothing=smoothing)

    def ours(x):
        return F.cross_entropy(x, gd.tensor(t), None if w is None else gd.tensor(w), **kw)

    def theirs(x):
        return TF.cross_entropy(x, torch.tensor(t), None if w is None else torch.tensor(w), **kw)

    _check(ours, theirs, x)
    gradcheck(ours, [gd.tensor(x, requires_grad=True)])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_probability_targets(reduction, smoothing, rng):
    # the class weight is differentiated too, as torch does for probability targets
    x = rng.standard_normal((4, 5, 3))
    p = rng.random((4, 5, 3))
    p /= p.sum(axis=1, keepdims=True)
    _check(lambda x, p: F.cross_entropy(x, p, reduction=reduction, label_smoothing=smoothing),
           lambda x, p: TF.cross_entropy(x, p, reduction=reduction, label_smoothing=smoothing),
           x, p)
    _check(lambda x, p, w: F.cross_entropy(x, p, w, reduction=reduction,
                                           label_smoothing=smoothing),
           lambda x, p, w: TF.cross_entropy(x, p, w, reduction=reduction,
                                            label_smoothing=smoothing),
           x, p, rng.random(5) + 0.1)


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_class_index_weight_that_requires_grad_is_refused_as_torch(loss):
    x, target = gd.randn(4, 3), gd.tensor([0, 2, 1, 1])
    weight = gd.tensor([1.0, 2.0, 0.5], requires_grad=True)
    with pytest.raises(RuntimeError, match=f"{loss}: weight requires grad"):
        getattr(F, loss)(x, target, weight)
    with pytest.raises(RuntimeError, match="not differentiable"):
        getattr(TF, loss)(torch.randn(4, 3), torch.tensor([0, 2, 1, 1]),
                          torch.tensor([1.0, 2.0, 0.5], requires_grad=True))
    with gd.no_grad():
        expected = getattr(F, loss)(x, target, weight.detach())
        np.testing.assert_allclose(getattr(F, loss)(x, target, weight).numpy(),
                                   expected.numpy())


def test_cross_entropy_all_ignored_mean_is_nan_like_torch():
    x = gd.randn(2, 3)
    loss = F.cross_entropy(x, gd.tensor([-100, -100]))
    assert np.isnan(loss.item())
    assert np.isnan(TF.cross_entropy(torch.randn(2, 3), torch.tensor([-100, -100])).item())


def test_cross_entropy_is_stable_for_huge_logits():
    x = gd.tensor([[1e4, -1e4, 0.0], [-3e4, 3e4, 2.0]], requires_grad=True)
    loss = F.cross_entropy(x, gd.tensor([1, 1]))
    loss.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(x.grad.numpy()))
    np.testing.assert_allclose(loss.item(), 1e4, rtol=1e-6)


def test_cross_entropy_float32_and_one_node():
    x = gd.randn(8, 10, requires_grad=True)
    loss = F.cross_entropy(x, gd.tensor(np.arange(8) % 10))
    assert loss.dtype == np.float32
    assert type(loss.grad_fn.function).__name__ == "type" and \
        loss.grad_fn.function.__name__ == "CrossEntropy"


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_matches_torch(reduction, rng):
    x = rng.standard_normal((5, 4, 2))
    t = rng.integers(0, 4, (5, 2))
    t[0, 0] = -1
    w = rng.random(4) + 0.5
    for weight in (None, w):
        _check(lambda x: F.nll_loss(x, gd.tensor(t), None if weight is None else gd.tensor(weight),
                                    ignore_index=-1, reduction=reduction),
               lambda x: TF.nll_loss(x, torch.tensor(t), None if weight is None else
                                     torch.tensor(weight), ignore_index=-1, reduction=reduction),
               x)


def test_cross_entropy_errors():
    x = gd.randn(4, 3)
    with pytest.raises(IndexError, match=r"target 3 is out of bounds.*\[0, 2\]"):
        call_then_read(F.cross_entropy, x, gd.tensor([0, 1, 3, 2]))
    with pytest.raises(ValueError, match="out of bounds"):
        call_then_read(F.cross_entropy, x, gd.tensor([0, -2, 1, 2]))
    with pytest.raises(ValueError, match=r"target of shape \(4,\).*got target of shape \(5,\)"):
        F.cross_entropy(x, gd.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match=r"probability target of shape \(4, 2\)"):
        F.cross_entropy(x, gd.randn(4, 2))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.cross_entropy(x, gd.tensor([0, 1, 2, 0]), reduction="avg")
    with pytest.raises(ValueError, match=r"weight of shape \(2,\)"):
        F.cross_entropy(x, gd.tensor([0, 1, 2, 0]), weight=gd.ones(2))
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, gd.tensor([0, 1, 2, 0]), label_smoothing=1.5)
    with pytest.raises(TypeError, match="Tensors"):
        F.cross_entropy(x, [0, 1, 2, 0])
    with pytest.raises(TypeError, match="integer"):
        F.nll_loss(x, gd.randn(4, 3))


# ---------------------------------------------------------------- binary cross entropy
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_matches_torch(reduction, rng):
    p = rng.random((4, 3)) * 0.98 + 0.01
    t = rng.random((4, 3))
    w = rng.random((4, 3))
    _check(lambda p, t: F.binary_cross_entropy(p, t, reduction=reduction),
           lambda p, t: TF.binary_cross_entropy(p, t, reduction=reduction), p, t)
    _check(lambda p, t: F.binary_cross_entropy(p, t, gd.tensor(w), reduction=reduction),
           lambda p, t: TF.binary_cross_entropy(p, t, torch.tensor(w), reduction=reduction),
           p, t)
    gradcheck(lambda p, t, w: F.binary_cross_entropy(p, t, w, reduction=reduction),
              [gd.tensor(a, requires_grad=True) for a in (p, t, w)])


def test_binary_cross_entropy_clamps_log_like_torch():
    p = np.array([0.0, 1.0, 0.0, 1.0])
    t = np.array([1.0, 0.0, 0.0, 1.0])
    ours = F.binary_cross_entropy(gd.tensor(p), gd.tensor(t), reduction="none").numpy()
    theirs = TF.binary_cross_entropy(torch.tensor(p), torch.tensor(t), reduction="none")
    np.testing.assert_allclose(ours, theirs.numpy())
    assert ours[0] == 100
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        call_then_read(F.binary_cross_entropy, gd.tensor([1.5]), gd.tensor([1.0]))
    with pytest.raises(ValueError, match=r"\(3, 1\).*\(3,\)"):
        F.binary_cross_entropy(gd.rand(3), gd.rand(3, 1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_matches_torch(reduction, rng):
    x = rng.standard_normal((5, 3)) * 4
    t = (rng.random((5, 3)) > 0.5).astype(float)
    w, pw = rng.random((5, 3)), rng.random(3) * 3
    _check(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction),
           lambda x, t: TF.binary_cross_entropy_with_logits(x, t, reduction=reduction), x, t)
    _check(lambda x, t: F.binary_cross_entropy_with_logits(
               x, t, gd.tensor(w), reduction=reduction, pos_weight=gd.tensor(pw)),
           lambda x, t: TF.binary_cross_entropy_with_logits(
               x, t, torch.tensor(w), reduction=reduction, pos_weight=torch.tensor(pw)), x, t)
    gradcheck(lambda x, t, w: F.binary_cross_entropy_with_logits(
        x, t, w, reduction=reduction, pos_weight=gd.tensor(pw)),
        [gd.tensor(a, requires_grad=True) for a in (x, t, w)])


def test_bce_with_logits_is_stable_for_huge_logits():
    x = gd.tensor([-500.0, 500.0, 1e4], requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, gd.tensor([1.0, 0.0, 1.0]), reduction="sum")
    loss.backward()
    np.testing.assert_allclose(loss.item(), 1000.0)
    np.testing.assert_allclose(x.grad.numpy(), [-1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"pos_weight of shape \(4,\)"):
        F.binary_cross_entropy_with_logits(gd.randn(2, 3), gd.rand(2, 3),
                                           pos_weight=gd.ones(4))


# ---------------------------------------------------------------- KL divergence
@pytest.mark.filterwarnings("ignore:reduction")
@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch(reduction, log_target, rng):
    x = np.log(rng.dirichlet(np.ones(4), size=3))
    t = rng.dirichlet(np.ones(4), size=3)
    if log_target:
        t = np.log(t)
    else:
        t[0, 1] = 0.0                             # a zero target contributes zero
    # target gradients too where torch defines them (log targets, or no zero target)
    _check(lambda x, t: F.kl_div(x, t, reduction=reduction, log_target=log_target),
           lambda x, t: TF.kl_div(x, t, reduction=reduction, log_target=log_target), x, t,
           grad=log_target)
    if not log_target:
        t_pos = np.abs(t) + 0.1
        _check(lambda x, t: F.kl_div(x, t, reduction=reduction),
               lambda x, t: TF.kl_div(x, t, reduction=reduction), x, t_pos)
    xt = gd.tensor(x, requires_grad=True)
    gradcheck(lambda x: F.kl_div(x, gd.tensor(t), reduction=reduction, log_target=log_target),
              [xt])
    check_against_torch(
        lambda x: F.kl_div(x, gd.tensor(t), reduction=reduction, log_target=log_target),
        lambda x: TF.kl_div(x, torch.tensor(t), reduction=reduction, log_target=log_target), x)


# ---------------------------------------------------------------- loss modules
def test_loss_modules_match_functional_and_register_weights(rng):
    x, t = gd.tensor(rng.standard_normal((4, 3))), gd.tensor(rng.integers(0, 3, 4))
    w = gd.tensor(rng.random(3))
    module = nn.CrossEntropyLoss(weight=w, label_smoothing=0.1, reduction="sum")
    np.testing.assert_allclose(module(x, t).item(),
                               F.cross_entropy(x, t, w, label_smoothing=0.1,
                                               reduction="sum").item())
    assert list(module.state_dict()) == list(
        torch.nn.CrossEntropyLoss(weight=torch.ones(3)).state_dict())
    assert list(nn.BCEWithLogitsLoss(pos_weight=gd.ones(3)).state_dict()) == ["pos_weight"]
    probs = F.softmax(x, 1)
    np.testing.assert_allclose(nn.NLLLoss()(probs.log(), t).item(),
                               F.cross_entropy(x, t).item(), rtol=1e-6)
    assert nn.KLDivLoss(reduction="batchmean")(probs.log(), probs).item() == pytest.approx(0)
    assert nn.MSELoss(size_average=False).reduction == "sum"
    assert nn.HuberLoss(delta=2.0)(x, x * 0).item() == pytest.approx(
        F.huber_loss(x, x * 0, delta=2.0).item())
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.L1Loss(reduction="batchmean")


# ---------------------------------------------------------------- binary targets in [0, 1]
@pytest.mark.parametrize("target", [[0.0, 2.0], [-0.1, 0.5], [float("nan"), 1.0]])
def test_binary_cross_entropy_refuses_targets_outside_0_1_as_torch(target):
    p = [0.3, 0.6]
    with pytest.raises(RuntimeError, match="target should be between 0 and 1"):
        TF.binary_cross_entropy(torch.tensor(p), torch.tensor(target))
    with pytest.raises(RuntimeError, match="target should be between 0 and 1"):
        call_then_read(F.binary_cross_entropy, gd.tensor(p), gd.tensor(target))
    with pytest.raises(RuntimeError, match="target should be between 0 and 1"):
        call_then_read(nn.BCELoss(), gd.tensor(p), gd.tensor(target))


def test_binary_cross_entropy_refuses_input_outside_0_1_as_torch():
    with pytest.raises(RuntimeError, match="input should be between 0 and 1"):
        TF.binary_cross_entropy(torch.tensor([1.5]), torch.tensor([1.0]))
    with pytest.raises(RuntimeError, match="input should be between 0 and 1"):
        call_then_read(F.binary_cross_entropy, gd.tensor([1.5]), gd.tensor([1.0]))


@pytest.mark.parametrize("loss", ["binary_cross_entropy", "gaussian_nll_loss"])
def test_a_loss_refused_for_its_shapes_queues_no_value_check(loss):
    """Out-of-range values with mismatched shapes: refused at the call for the shapes on both
    devices, before the value checks (queued on the cuda device) run: a refused call changes
    nothing. torch checks the sizes first too."""
    from gpudl import backend
    bad, shorter = gd.tensor([1.5, -2.0, 0.5]), gd.tensor([0.5, 0.5])
    call, match = {
        "binary_cross_entropy": (lambda: F.binary_cross_entropy(bad, shorter), "shape"),
        "gaussian_nll_loss": (lambda: F.gaussian_nll_loss(gd.zeros(2, 3), gd.zeros(2, 3),
                                                          gd.tensor([[-1.0, 2.0]])),
                              "var is of incorrect size")}[loss]
    with pytest.raises(ValueError, match=match):
        call()
    assert not backend._deferred, "the refused call queued a device-side check"


def test_binary_cross_entropy_accepts_the_bounds_and_soft_targets(rng):
    p = rng.uniform(0.05, 0.95, 5)
    t = np.array([0.0, 1.0, 0.25, 0.5, 1.0])
    _check(lambda p, t: F.binary_cross_entropy(p, t), lambda p, t: TF.binary_cross_entropy(p, t),
           p, t)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"weight": np.zeros(0, np.float32)},
                                     {"label_smoothing": 0.1, "ignore_index": -1}])
def test_cross_entropy_without_classes_where_every_target_is_ignored(reduction, options):
    """(N, 0) logits, every target ignore_index: torch gives 'mean' NaN (0 / 0), 'sum' 0 and
    'none' zeros (NaN everywhere with label smoothing: smoothing / 0 classes), and an empty
    gradient; gpudl raised NumPy's IndexError picking a class that does not exist."""
    targets = np.full(3, options.get("ignore_index", -100), np.int64)
    tx = torch.zeros((3, 0), requires_grad=True)
    want = torch.nn.functional.cross_entropy(
        tx, torch.from_numpy(targets), reduction=reduction,
        **{k: torch.from_numpy(v) if k == "weight" else v for k, v in options.items()})
    want.sum().backward()
    x = gd.zeros((3, 0), requires_grad=True)
    got = F.cross_entropy(x, gd.tensor(targets), reduction=reduction,
                          **{k: gd.tensor(v) if k == "weight" else v for k, v in options.items()})
    got.sum().backward()
    np.testing.assert_array_equal(got.numpy(), want.detach().numpy())
    finite = ~np.isnan(got.numpy())
    np.testing.assert_array_equal(np.signbit(got.numpy()[finite]),          # 0.0, not -0.0
                                  np.signbit(want.detach().numpy()[finite]))
    assert got.dtype == gd.float32 and x.grad.shape == (3, 0)
