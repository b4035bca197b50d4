"""MultiLabelMarginLoss, AdaptiveLogSoftmaxWithLoss and NLLLoss2d against torch: values and
gradients (input and parameters) with torch's weights, and refusals."""

import numpy as np
import pytest
import torch

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import nn


def _label_lists(rng, n, classes):
    rows = []
    for _ in range(n):
        k = rng.integers(0, classes + 1)
        row = list(rng.choice(classes, k, replace=False))
        row += [-1] * (classes - k)
        if k < classes - 1:
            row[k + 1] = rng.integers(0, classes)   # after the -1: ignored
        rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_multilabel_margin_matches_torch(rng, reduction):
    x = rng.standard_normal((7, 5))
    y = _label_lists(rng, 7, 5)
    ours_x, theirs_x = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ours = nn.MultiLabelMarginLoss(reduction=reduction)(ours_x, gd.tensor(y))
    theirs = torch.nn.MultiLabelMarginLoss(reduction=reduction)(theirs_x, torch.tensor(y))
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12)
    w = rng.standard_normal(tuple(theirs.shape))
    (ours * gd.tensor(w)).sum().backward()
    (theirs * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), rtol=1e-12)


def test_multilabel_margin_unbatched_and_refusals(rng):
    x, y = rng.standard_normal(4), np.array([2, 0, -1, 3])
    np.testing.assert_allclose(
        F.multilabel_margin_loss(gd.tensor(x), gd.tensor(y), reduction="none").numpy(),
        torch.nn.functional.multilabel_margin_loss(torch.tensor(x), torch.tensor(y),
                                                   reduction="none").numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        F.multilabel_margin_loss(gd.tensor(x), gd.tensor(y[:3]))
    with pytest.raises(IndexError, match="class indices in \\[0, 4\\)"):
        F.multilabel_margin_loss(gd.tensor(x), gd.tensor(np.array([4, -1, 0, 0]))).item()
    with pytest.raises(ValueError, match="integer target"):
        F.multilabel_margin_loss(gd.tensor(x), gd.tensor(y.astype(float)))


def _adaptive_pair(**options):
    theirs = torch.nn.AdaptiveLogSoftmaxWithLoss(12, 15, [3, 8, 12], **options).double()
    ours = nn.AdaptiveLogSoftmaxWithLoss(12, 15, [3, 8, 12], **options).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("options", [{}, {"div_value": 2.0, "head_bias": True}])
def test_adaptive_log_softmax_matches_torch(rng, options):
    ours, theirs = _adaptive_pair(**options)
    x = rng.standard_normal((10, 12))
    y = rng.integers(0, 15, 10)
    y[:4] = [0, 5, 9, 14]                                 # every cluster used
    ours_x, theirs_x = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, loss = ours(ours_x, gd.tensor(y))
    t_out, t_loss = theirs(theirs_x, torch.tensor(y))
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(loss.numpy(), t_loss.detach().numpy(), rtol=1e-12)
    w = rng.standard_normal(10)
    ((out * gd.tensor(w)).sum() + loss).backward()
    ((t_out * torch.tensor(w)).sum() + t_loss).backward()
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), rtol=1e-10,
                               atol=1e-14)
    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), t_params[name].grad.numpy(), rtol=1e-10,
                                   atol=1e-14, err_msg=name)
    np.testing.assert_allclose(ours.log_prob(ours_x).numpy(),
                               theirs.log_prob(theirs_x).detach().numpy(), rtol=1e-12)
    np.testing.assert_array_equal(ours.predict(ours_x).numpy(), theirs.predict(theirs_x).numpy())
    single, single_loss = ours(ours_x[3], gd.tensor(y[3]))
    assert single.shape == () and abs(single.item() - t_out[3].item()) < 1e-12


def test_adaptive_log_softmax_refusals():
    with pytest.raises(ValueError, match="cutoffs should be a sequence of unique"):
        nn.AdaptiveLogSoftmaxWithLoss(8, 10, [5, 3])
    with pytest.raises(ValueError, match="length larger than 0"):
        nn.AdaptiveLogSoftmaxWithLoss(8, 10, [])
    module = nn.AdaptiveLogSoftmaxWithLoss(8, 10, [3])
    with pytest.raises(RuntimeError, match="Target values should be in \\[0, 9\\]"):
        module(gd.randn(2, 8), gd.tensor([1, 10]))
    with pytest.raises(RuntimeError, match="same size in the batch"):
        module(gd.randn(3, 8), gd.tensor([1, 2]))
    with pytest.raises(RuntimeError, match="multi-target not supported"):
        module(gd.randn(3, 8), gd.tensor([[1, 2]]))


def test_nll_loss_2d_is_nll_loss(rng):
    x = rng.standard_normal((2, 4, 3, 3))
    y = rng.integers(0, 4, (2, 3, 3))
    with pytest.warns(FutureWarning, match="NLLLoss2d` has been deprecated"):
        ours = nn.NLLLoss2d()(gd.tensor(x).log_softmax(1), gd.tensor(y))
    with pytest.warns(FutureWarning):
        theirs = torch.nn.NLLLoss2d()(torch.tensor(x).log_softmax(1), torch.tensor(y))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
