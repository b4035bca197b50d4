"""F.ctc_loss / nn.CTCLoss against torch (float64, fresh random inputs): losses for every
reduction, padded and concatenated targets, repeated labels, empty targets, unbatched inputs,
impossible alignments with and without zero_infinity, and the gradients through log_softmax
and directly with respect to log_probs (torch's formula); refusals name the argument."""

import numpy as np
import pytest
import torch

import gpudl as gd
import gpudl.nn.functional as F
from device_checks import call_then_read
from gpudl import nn

TF = torch.nn.functional


def _case(rng, T=11, N=4, C=6, S=5, blank=0):
    logits = rng.standard_normal((T, N, C))
    target_lengths = rng.integers(0, S + 1, N)
    target_lengths[0] = S
    input_lengths = np.maximum(rng.integers(T // 2, T + 1, N), 2 * target_lengths + 1)
    input_lengths = np.minimum(input_lengths, T)
    labels = [c for c in range(C) if c != blank]
    targets = rng.choice(labels, (N, S))
    targets[0, 2] = targets[0, 1]                   # a repeated label needs a blank between
    return logits, targets, input_lengths, target_lengths


def _compare(rng, logits, targets, input_lengths, target_lengths, through_softmax=True,
             lengths_as=gd.tensor, **options):
    ours_in = gd.tensor(logits, requires_grad=True)
    theirs_in = torch.tensor(logits, requires_grad=True)
    ours_lp = ours_in.log_softmax(-1) if through_softmax else ours_in
    theirs_lp = theirs_in.log_softmax(-1) if through_softmax else theirs_in
    ours = F.ctc_loss(ours_lp, gd.tensor(targets), lengths_as(input_lengths),
                      lengths_as(target_lengths), **options)
    theirs = TF.ctc_loss(theirs_lp, torch.tensor(targets), torch.tensor(input_lengths),
                         torch.tensor(target_lengths), **options)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    weights = rng.standard_normal(tuple(theirs.shape))
    (ours * gd.tensor(weights)).sum().backward()
    (theirs * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(ours_in.grad.numpy(), theirs_in.grad.numpy(), rtol=1e-9,
                               atol=1e-12)
    return ours


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("concatenated", [False, True])
def test_ctc_matches_torch(rng, reduction, concatenated):
    logits, targets, input_lengths, target_lengths = _case(rng)
    if concatenated:
        targets = np.concatenate([targets[n, :k] for n, k in enumerate(target_lengths)])
    _compare(rng, logits, targets, input_lengths, target_lengths, reduction=reduction)


@pytest.mark.parametrize("blank", [3, 5])
def test_ctc_other_blank_and_direct_log_probs_gradient(rng, blank):
    logits, targets, input_lengths, target_lengths = _case(rng, blank=blank)
    log_probs = torch.tensor(logits).log_softmax(-1).numpy()
    # torch's gradient with respect to log_probs themselves (exp(lp) - occupation / p)
    _compare(rng, log_probs, targets, input_lengths, target_lengths, through_softmax=False,
             blank=blank, reduction="sum")


def test_ctc_lengths_as_tuples_and_module(rng):
    logits, targets, input_lengths, target_lengths = _case(rng)
    _compare(rng, logits, targets, input_lengths, target_lengths,
             lengths_as=lambda a: tuple(int(v) for v in a))
    loss = nn.CTCLoss(reduction="sum")(gd.tensor(logits).log_softmax(-1), gd.tensor(targets),
                                       gd.tensor(input_lengths), gd.tensor(target_lengths))
    expected = torch.nn.CTCLoss(reduction="sum")(
        torch.tensor(logits).log_softmax(-1), torch.tensor(targets),
        torch.tensor(input_lengths), torch.tensor(target_lengths))
    np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-10)


def test_ctc_unbatched(rng):
    logits = rng.standard_normal((9, 5))
    targets = np.array([1, 2, 2, 4])
    ours = F.ctc_loss(gd.tensor(logits).log_softmax(-1), gd.tensor(targets), 9, 4,
                      reduction="none")
    theirs = TF.ctc_loss(torch.tensor(logits).log_softmax(-1), torch.tensor(targets),
                         torch.tensor(9), torch.tensor(4), reduction="none")
    assert ours.shape == tuple(theirs.shape) == ()
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10)


@pytest.mark.parametrize("zero_infinity", [False, True])
def test_ctc_impossible_alignment(rng, zero_infinity):
    logits, targets, input_lengths, target_lengths = _case(rng)
    targets[1, :3] = [2, 2, 2]
    target_lengths[1] = 3
    input_lengths[1] = 4                             # 2, blank, 2, blank, 2 needs 5 steps
    ours = F.ctc_loss(gd.tensor(logits).log_softmax(-1), gd.tensor(targets),
                      gd.tensor(input_lengths), gd.tensor(target_lengths), reduction="none",
                      zero_infinity=zero_infinity)
    theirs = TF.ctc_loss(torch.tensor(logits).log_softmax(-1), torch.tensor(targets),
                         torch.tensor(input_lengths), torch.tensor(target_lengths),
                         reduction="none", zero_infinity=zero_infinity)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10)
    assert np.isinf(ours.numpy()[1]) != zero_infinity
    if zero_infinity:
        _compare(rng, logits, targets, input_lengths, target_lengths, zero_infinity=True)


def test_ctc_float32(rng):
    logits, targets, input_lengths, target_lengths = _case(rng)
    ours = F.ctc_loss(gd.tensor(logits.astype(np.float32)).log_softmax(-1), gd.tensor(targets),
                      gd.tensor(input_lengths), gd.tensor(target_lengths))
    theirs = TF.ctc_loss(torch.tensor(logits.astype(np.float32)).log_softmax(-1),
                         torch.tensor(targets), torch.tensor(input_lengths),
                         torch.tensor(target_lengths))
    assert ours.dtype == gd.float32
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5)


def test_ctc_refusals(rng):
    logits, targets, input_lengths, target_lengths = _case(rng)
    lp, tg = gd.tensor(logits).log_softmax(-1), gd.tensor(targets)
    il, tl = gd.tensor(input_lengths), gd.tensor(target_lengths)
    with pytest.raises(ValueError, match="blank must be in label range"):
        F.ctc_loss(lp, tg, il, tl, blank=6)
    with pytest.raises(RuntimeError, match="input_lengths to have value at most 11"):
        call_then_read(F.ctc_loss, lp, tg, gd.tensor(input_lengths + 20), tl)
    with pytest.raises(RuntimeError, match="input_lengths must be of size batch_size"):
        F.ctc_loss(lp, tg, il[:2], tl)
    with pytest.raises(RuntimeError, match="size at least 6 at dimension 1"):
        call_then_read(F.ctc_loss, lp, tg, il, gd.tensor(target_lengths * 0 + 6))
    with pytest.raises(TypeError, match="targets must be integers"):
        F.ctc_loss(lp, tg.double(), il, tl)
    with pytest.raises(ValueError, match="targets must be class indices"):
        call_then_read(F.ctc_loss, lp, gd.tensor(targets + 6), il, tl)
    with pytest.raises(ValueError, match="reduction"):
        F.ctc_loss(lp, tg, il, tl, reduction="avg")
    with pytest.raises(TypeError, match="input_lengths must be a Tensor or a sequence"):
        F.ctc_loss(lp, tg, "11", tl)
