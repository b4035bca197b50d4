"""Structured pruning (gd.nn.utils.prune.ln_structured, random_structured, LnStructured,
RandomStructured) against torch.nn.utils.prune: the same masks after a sequence of structured
and unstructured prunings of a conv weight (fresh random values, float64), the state_dict keys
weight_orig/weight_mask, the forward, remove and is_pruned; random channels are whole channels
of the right count; bad arguments are refused as torch refuses them."""

import numpy as np
import pytest

import gpudl as gd
from gpudl.nn.utils import prune

torch = pytest.importorskip("torch")
import torch.nn.utils.prune as torch_prune  # noqa: E402  (torch does not import it itself)


def _convs(rng):
    weight, bias = rng.standard_normal((6, 4, 3, 3)), rng.standard_normal(6)
    ours, theirs = gd.nn.Conv2d(4, 6, 3, dtype="float64"), torch.nn.Conv2d(4, 6, 3).double()
    ours.load_state_dict({"weight": weight, "bias": bias})
    theirs.load_state_dict({"weight": torch.tensor(weight), "bias": torch.tensor(bias)})
    return ours, theirs


STEPS = [
    ("ln_structured", dict(amount=2, n=2, dim=0)),
    ("ln_structured", dict(amount=0.5, n=1, dim=1)),
    ("l1_unstructured", dict(amount=0.3)),
    ("ln_structured", dict(amount=1, n=float("inf"), dim=-1)),
    ("ln_structured", dict(amount=1, n=float("-inf"), dim=2)),
    ("ln_structured", dict(amount=0.25, n=3, dim=0)),
    ("ln_structured", dict(amount=0, n=3, dim=1))]


def test_ln_structured_matches_torch_step_by_step(rng):
    ours, theirs = _convs(rng)
    for name, options in STEPS:
        getattr(prune, name)(ours, "weight", **options)
        getattr(torch_prune, name)(theirs, "weight", **options)
        np.testing.assert_array_equal(ours.weight_mask.numpy(), theirs.weight_mask.numpy(),
                                      err_msg=f"{name} {options}")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert prune.is_pruned(ours)
    x = rng.standard_normal((2, 4, 5, 5))
    np.testing.assert_allclose(ours(gd.tensor(x)).detach().numpy(),
                               theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    prune.remove(ours, "weight")
    torch_prune.remove(theirs, "weight")
    assert list(ours.state_dict()) == list(theirs.state_dict()) and not prune.is_pruned(ours)
    np.testing.assert_allclose(ours.weight.detach().numpy(), theirs.weight.detach().numpy())


def test_ln_structured_with_importance_scores_and_the_class(rng):
    ours, theirs = _convs(rng)
    scores = rng.standard_normal((6, 4, 3, 3))
    prune.LnStructured.apply(ours, "weight", 3, 1, 0, importance_scores=gd.tensor(scores))
    torch_prune.LnStructured.apply(theirs, "weight", 3, 1, 0,
                                   importance_scores=torch.tensor(scores))
    np.testing.assert_array_equal(ours.weight_mask.numpy(), theirs.weight_mask.numpy())
    t = gd.tensor(rng.standard_normal((5, 2)))
    mask = prune.LnStructured(0.4, "fro", dim=0).compute_mask(
        t, gd.ones(5, 2, dtype=gd.float64))
    their_mask = torch_prune.LnStructured(0.4, "fro", dim=0).compute_mask(
        torch.tensor(t.numpy()), torch.ones(5, 2, dtype=torch.float64))
    np.testing.assert_array_equal(mask.numpy(), their_mask.numpy())


@pytest.mark.parametrize("amount, dim, pruned", [(2, 0, 2), (0.5, 1, 2), (2, -1, 2)])
def test_random_structured_prunes_whole_channels(rng, amount, dim, pruned):
    ours, _ = _convs(rng)
    prune.random_structured(ours, "weight", amount=amount, dim=dim)
    mask = ours.weight_mask.numpy()
    others = tuple(d for d in range(4) if d != dim % 4)
    per_channel = mask.sum(axis=others)
    assert set(np.unique(per_channel)) <= {0.0, mask.size / mask.shape[dim]}     # whole channels
    assert (per_channel == 0).sum() == pruned
    prune.random_structured(ours, "weight", amount=1, dim=dim)              # one more of the rest
    assert (ours.weight_mask.numpy().sum(axis=others) == 0).sum() == pruned + 1
    assert list(ours.state_dict()) == ["bias", "weight_orig", "weight_mask"]


@pytest.mark.parametrize("call, error, message", [
    (lambda m, p: p.ln_structured(m, "bias", 1, 2, 0), ValueError, "multidimensional"),
    (lambda m, p: p.ln_structured(m, "weight", 1, 2, 4), IndexError, "Invalid index 4"),
    (lambda m, p: p.ln_structured(m, "weight", 1, "fro", 0), RuntimeError, "fro"),
    (lambda m, p: p.ln_structured(m, "weight", 7, 2, 0), ValueError, "smaller than the number"),
    (lambda m, p: p.ln_structured(m, "weight", 1.5, 2, 0), ValueError, "range"),
    (lambda m, p: p.random_structured(m, "weight", -1, 0), ValueError, "non-negative"),
    (lambda m, p: p.random_structured(m, "weight", "1", 0), TypeError, "Invalid type")])
def test_structured_refusals_as_torch_and_nothing_changes(rng, call, error, message):
    ours, theirs = _convs(rng)
    with pytest.raises(error, match=message):
        call(ours, prune)
    with pytest.raises(error):
        call(theirs, torch_prune)
    assert list(ours.state_dict()) == ["weight", "bias"] and not prune.is_pruned(ours)
