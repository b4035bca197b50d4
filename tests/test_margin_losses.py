"""The margin, embedding and likelihood losses (and RMSNorm, PairwiseDistance) against torch:
values and gradients of every input (float64, fresh random inputs), each reduction, the
module forms, and the argument checks."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import nn
from oracle import check_against_torch, torch

TF = torch.nn.functional if torch is not None else None
REDUCTIONS = ["none", "mean", "sum"]


def signs(rng, shape):
    return np.where(rng.random(shape) > 0.5, 1.0, -1.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_ranking_loss(rng, reduction):
    x1, x2, y = rng.standard_normal(9), rng.standard_normal(9), signs(rng, 9)
    check_against_torch(lambda a, b: F.margin_ranking_loss(a, b, gd.tensor(y), 0.3,
                                                           reduction=reduction),
                        lambda a, b: TF.margin_ranking_loss(a, b, torch.tensor(y), 0.3,
                                                            reduction=reduction), x1, x2)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_hinge_embedding_loss(rng, reduction):
    x, y = rng.standard_normal((4, 5)) * 2, signs(rng, (4, 5))
    check_against_torch(lambda a: F.hinge_embedding_loss(a, gd.tensor(y), 1.5,
                                                         reduction=reduction),
                        lambda a: TF.hinge_embedding_loss(a, torch.tensor(y), 1.5,
                                                          reduction=reduction), x)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batched", [True, False])
def test_cosine_embedding_loss(rng, reduction, batched):
    shape = (6, 5) if batched else (5,)
    y = signs(rng, shape[:-1])
    check_against_torch(lambda a, b: F.cosine_embedding_loss(a, b, gd.tensor(y), 0.1,
                                                             reduction=reduction),
                        lambda a, b: TF.cosine_embedding_loss(a, b, torch.tensor(y), 0.1,
                                                              reduction=reduction),
                        rng.standard_normal(shape), rng.standard_normal(shape))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p, swap", [(2, False), (1, True), (3, False)])
def test_triplet_margin_loss(rng, reduction, p, swap):
    a, pos, neg = (rng.standard_normal((7, 4)) for _ in range(3))
    check_against_torch(lambda *t: F.triplet_margin_loss(*t, margin=0.8, p=p, swap=swap,
                                                         reduction=reduction),
                        lambda *t: TF.triplet_margin_loss(*t, margin=0.8, p=p, swap=swap,
                                                          reduction=reduction), a, pos, neg)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_margin_loss(rng, reduction):
    y = signs(rng, (3, 6))
    check_against_torch(lambda a: F.soft_margin_loss(a, gd.tensor(y), reduction=reduction),
                        lambda a: TF.soft_margin_loss(a, torch.tensor(y), reduction=reduction),
                        rng.standard_normal((3, 6)) * 4)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_soft_margin_loss(rng, reduction, weighted):
    y = (rng.random((5, 4)) > 0.5).astype(float)
    w = rng.random(4) + 0.5 if weighted else None
    check_against_torch(
        lambda a: F.multilabel_soft_margin_loss(a, gd.tensor(y), None if w is None
                                                else gd.tensor(w), reduction=reduction),
        lambda a: TF.multilabel_soft_margin_loss(a, torch.tensor(y), None if w is None
                                                 else torch.tensor(w), reduction=reduction),
        rng.standard_normal((5, 4)) * 3)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p, weighted, batched", [(1, False, True), (2, True, True),
                                                  (1, True, False)])
def test_multi_margin_loss(rng, reduction, p, weighted, batched):
    shape = (6, 5) if batched else (5,)
    y = rng.integers(0, 5, shape[:-1])
    w = rng.random(5) + 0.5 if weighted else None
    check_against_torch(
        lambda a: F.multi_margin_loss(a, gd.tensor(y), p, 0.7, None if w is None
                                      else gd.tensor(w), reduction=reduction),
        lambda a: TF.multi_margin_loss(a, torch.tensor(y), p, 0.7, None if w is None
                                       else torch.tensor(w), reduction=reduction),
        rng.standard_normal(shape))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("log_input, full", [(True, False), (False, True), (True, True)])
def test_poisson_nll_loss(rng, reduction, log_input, full):
    target = rng.poisson(2.0, (4, 5)).astype(float)
    x = rng.standard_normal((4, 5)) if log_input else rng.random((4, 5)) * 3 + 0.1
    check_against_torch(
        lambda a: F.poisson_nll_loss(a, gd.tensor(target), log_input, full,
                                     reduction=reduction),
        lambda a: TF.poisson_nll_loss(a, torch.tensor(target), log_input, full,
                                      reduction=reduction), x)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("var_shape, full", [((4, 3), False), ((4,), True), ((4, 1), False)])
def test_gaussian_nll_loss(rng, reduction, var_shape, full):
    var = rng.random(var_shape) + 0.1
    var.flat[0] = 1e-9                     # clamped to eps: the gradient passes unclamped
    check_against_torch(
        lambda a, t, v: F.gaussian_nll_loss(a, t, v, full, reduction=reduction),
        lambda a, t, v: TF.gaussian_nll_loss(a, t, v, full, reduction=reduction),
        rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), var)
    check_against_torch(lambda a: F.gaussian_nll_loss(a, gd.zeros(4, 3, dtype=gd.float64), 0.5),
                        lambda a: TF.gaussian_nll_loss(a, torch.zeros(4, 3, dtype=torch.float64),
                                                       0.5), rng.standard_normal((4, 3)))


LOSS_MODULES = [
    ("MarginRankingLoss", dict(margin=0.2), 3),
    ("HingeEmbeddingLoss", dict(margin=0.5), 2),
    ("CosineEmbeddingLoss", dict(margin=-0.1, reduction="sum"), 3),
    ("TripletMarginLoss", dict(margin=2.0, p=1.0, swap=True), 3),
    ("SoftMarginLoss", dict(reduction="none"), 2),
    ("MultiLabelSoftMarginLoss", dict(), 2),
    ("MultiMarginLoss", dict(p=2, margin=0.5), 2),
    ("PoissonNLLLoss", dict(log_input=False), 2),
    ("GaussianNLLLoss", dict(full=True), 3),
]


def module_inputs(rng, name):
    """Float arrays for the differentiable inputs, then the target (as an array)."""
    x = rng.standard_normal((6, 4))
    if name in ("MarginRankingLoss", "CosineEmbeddingLoss"):
        target = signs(rng, 6 if name == "CosineEmbeddingLoss" else (6, 4))
        return [x, rng.standard_normal((6, 4))], target
    if name == "TripletMarginLoss":
        return [x, rng.standard_normal((6, 4)), rng.standard_normal((6, 4))], None
    if name == "MultiMarginLoss":
        return [x], rng.integers(0, 4, 6)
    if name == "MultiLabelSoftMarginLoss":
        return [x], (rng.random((6, 4)) > 0.5).astype(float)
    if name == "PoissonNLLLoss":
        return [rng.random((6, 4)) + 0.2], rng.poisson(1.5, (6, 4)).astype(float)
    if name == "GaussianNLLLoss":
        return [x, rng.random((6, 4)) + 0.2], rng.standard_normal((6, 4))
    return [x], signs(rng, (6, 4))


@pytest.mark.parametrize("name, kwargs, _", LOSS_MODULES, ids=[m[0] for m in LOSS_MODULES])
def test_loss_modules_match_torch(rng, name, kwargs, _):
    ours, theirs = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    arrays, target = module_inputs(rng, name)

    def call(module, tensor):
        if name == "GaussianNLLLoss":           # forward(input, target, var)
            return lambda x, var: module(x, tensor(target), var)
        if target is None:
            return module
        return lambda *xs: module(*xs, tensor(target))
    check_against_torch(call(ours, gd.tensor), call(theirs, torch.tensor), *arrays)


@pytest.mark.parametrize("call, error, words", [
    (lambda: F.margin_ranking_loss(gd.randn(3), gd.randn(3), gd.ones(1, 3)), RuntimeError,
     "same number of dims"),
    (lambda: F.hinge_embedding_loss(gd.randn(3), gd.ones(3), reduction="avg"), ValueError,
     "reduction must be one of"),
    (lambda: F.cosine_embedding_loss(gd.randn(3, 4), gd.randn(3, 4), gd.ones(4)), ValueError,
     "target"),
    (lambda: F.triplet_margin_loss(gd.randn(3, 4), gd.randn(3, 4), gd.randn(4)), RuntimeError,
     "all be 1-D or all 2-D"),
    (lambda: nn.TripletMarginLoss(margin=0), ValueError, "margin must be greater than 0"),
    (lambda: F.soft_margin_loss(gd.randn(3), gd.ones(4)), ValueError, "shape"),
    # .item(): on a device these checks report at the next read
    (lambda: F.multi_margin_loss(gd.randn(3, 4), gd.tensor([0, 1, 4])).item(), IndexError,
     r"class indices in \[0, 4\)"),
    (lambda: F.multi_margin_loss(gd.randn(3, 4), gd.ones(3)), ValueError, "integer target"),
    (lambda: nn.MultiMarginLoss(p=3), ValueError, "p == 1 and p == 2"),
    (lambda: F.gaussian_nll_loss(gd.randn(3, 4), gd.randn(3, 4), -gd.ones(3, 4)).item(),
     ValueError,
     "negative"),
    (lambda: F.gaussian_nll_loss(gd.randn(3, 4), gd.randn(3, 4), gd.ones(2, 4)), ValueError,
     "incorrect size"),
    (lambda: F.poisson_nll_loss(gd.randn(3), [1.0, 2.0, 3.0]), TypeError,
     "target must be a Tensor"),
    (lambda: F.pairwise_distance(gd.randn(3), 1.0), TypeError, "Tensors"),
])
def test_loss_bad_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call()


# ---------------------------------------------------------------------- RMSNorm, distance

@pytest.mark.parametrize("normalized_shape, eps", [(6, None), ((4, 6), 1e-3), ([6], 0.5)])
def test_rms_norm_matches_torch(rng, normalized_shape, eps):
    theirs = torch.nn.RMSNorm(normalized_shape, eps=eps).double()
    ours = nn.RMSNorm(normalized_shape, eps=eps, dtype=gd.float64)
    assert repr(ours) == repr(theirs)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    weight = rng.standard_normal(theirs.weight.shape)
    theirs.load_state_dict({"weight": torch.tensor(weight)})
    ours.load_state_dict({"weight": weight})
    check_against_torch(F.rms_norm, TF.rms_norm, rng.standard_normal((3, 4, 6)),
                        tuple(theirs.normalized_shape), weight, eps)
    check_against_torch(ours, theirs, rng.standard_normal((2, 4, 6)), grad=False)


def test_rms_norm_without_affine_and_in_low_precision(rng):
    assert nn.RMSNorm(5, elementwise_affine=False).weight is None
    x = rng.standard_normal((3, 5))
    got = F.rms_norm(gd.tensor(x).half(), (5,)).float().numpy()
    expected = TF.rms_norm(torch.tensor(x).half(), (5,)).float().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3)
    with pytest.raises(ValueError, match="normalized_shape"):
        F.rms_norm(gd.randn(3, 5), (4,))
    with pytest.raises(ValueError, match="weight has shape"):
        F.rms_norm(gd.randn(3, 5), (5,), gd.ones(4))


@pytest.mark.parametrize("p, keepdim", [(2.0, False), (1.0, True), (3.0, False)])
def test_pairwise_distance_matches_torch(rng, p, keepdim):
    check_against_torch(lambda a, b: F.pairwise_distance(a, b, p, 1e-4, keepdim),
                        lambda a, b: TF.pairwise_distance(a, b, p, 1e-4, keepdim),
                        rng.standard_normal((5, 4)), rng.standard_normal((1, 4)))
    check_against_torch(nn.PairwiseDistance(p, keepdim=keepdim),
                        torch.nn.PairwiseDistance(p, keepdim=keepdim),
                        rng.standard_normal((5, 4)), rng.standard_normal((5, 4)))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("distance, swap", [("default", False), ("cosine", True),
                                            ("l1", False)])
def test_triplet_margin_with_distance_loss(rng, reduction, distance, swap):
    def pick(lib, f):
        if distance == "cosine":
            return lambda x, y: 1 - f.cosine_similarity(x, y)
        if distance == "l1":
            return lambda x, y: (x - y).abs().sum(-1)
        return None
    a, pos, neg = (rng.standard_normal((7, 4)) for _ in range(3))
    check_against_torch(
        lambda *t: F.triplet_margin_with_distance_loss(
            *t, distance_function=pick(gd, F), margin=0.6, swap=swap, reduction=reduction),
        lambda *t: TF.triplet_margin_with_distance_loss(
            *t, distance_function=pick(torch, TF), margin=0.6, swap=swap, reduction=reduction),
        a, pos, neg)
    ours = nn.TripletMarginWithDistanceLoss(distance_function=pick(gd, F), swap=swap,
                                            reduction=reduction)
    theirs = torch.nn.TripletMarginWithDistanceLoss(distance_function=pick(torch, TF), swap=swap,
                                                    reduction=reduction)
    check_against_torch(ours, theirs, a, pos, neg)
    with pytest.raises(RuntimeError, match="same number of dims"):
        F.triplet_margin_with_distance_loss(gd.randn(3, 4), gd.randn(3, 4), gd.randn(4))
    with pytest.raises(ValueError, match="margin must be greater than 0"):
        nn.TripletMarginWithDistanceLoss(margin=-1.0)
    with pytest.raises(TypeError, match="distance_function must be callable"):
        F.triplet_margin_with_distance_loss(gd.randn(4), gd.randn(4), gd.randn(4),
                                            distance_function="l2")
