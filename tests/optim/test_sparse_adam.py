"""gd.optim.SparseAdam against torch.optim.SparseAdam on nn.Embedding(sparse=True): torch's
gradients are sparse (the looked-up rows), gpudl's dense (zero in the other rows); the tables,
moments and step counts agree after several steps of fresh random lookups with repeated
indices, padding_idx, maximize and a tensor lr; rows never looked up keep their values; bad
options are refused as torch refuses them."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn

torch = pytest.importorskip("torch")

ROWS, DIM, STEPS = 12, 3, 6


def _tables(rng, dtype, padding_idx):
    weight = rng.standard_normal((ROWS, DIM)).astype(dtype)
    if padding_idx is not None:
        weight[padding_idx] = 0
    ours = nn.Embedding(ROWS, DIM, padding_idx=padding_idx, sparse=True, dtype=str(weight.dtype),
                        _weight=gd.tensor(weight))
    theirs = torch.nn.Embedding(ROWS, DIM, padding_idx=padding_idx, sparse=True,
                                _weight=torch.tensor(weight))
    return ours, theirs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [
    {}, {"lr": 0.05, "betas": (0.8, 0.9), "eps": 1e-6}, {"lr": 0.01, "maximize": True},
    {"padding_idx": 2, "lr": 0.02}, {"tensor_lr": 0.03}], ids=str)
def test_sparse_adam_matches_torch_on_sparse_embeddings(rng, dtype, options):
    options = dict(options)
    padding_idx = options.pop("padding_idx", None)
    ours, theirs = _tables(rng, dtype, padding_idx)
    if "tensor_lr" in options:
        lr = options.pop("tensor_lr")
        ours_opt = gd.optim.SparseAdam(ours.parameters(), lr=gd.tensor(lr), **options)
        theirs_opt = torch.optim.SparseAdam(theirs.parameters(), lr=torch.tensor(lr), **options)
    else:
        ours_opt = gd.optim.SparseAdam(ours.parameters(), **options)
        theirs_opt = torch.optim.SparseAdam(theirs.parameters(), **options)
    never = [ROWS - 1]                                    # a row no lookup picks
    untouched = ours.weight.detach().numpy()[never].copy()
    for _ in range(STEPS):
        index = rng.integers(0, ROWS - 1, (4, 5))        # repeats: gradients add up
        if padding_idx is not None:
            index[0, :2] = padding_idx
        weights = rng.standard_normal((4, 5, DIM)).astype(dtype)
        for table, opt, lib in ((ours, ours_opt, gd), (theirs, theirs_opt, torch)):
            opt.zero_grad()
            (table(lib.tensor(index)) * lib.tensor(weights)).sum().backward()
            opt.step()
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12)
    np.testing.assert_allclose(ours.weight.detach().numpy(), theirs.weight.detach().numpy(),
                               **tolerance)
    np.testing.assert_array_equal(ours.weight.detach().numpy()[never], untouched)
    state, their_state = ours_opt.state[ours.weight], theirs_opt.state[theirs.weight]
    assert state["step"] == their_state["step"] == STEPS
    for key in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_allclose(state[key].numpy(), their_state[key].numpy(), **tolerance)


def test_an_embedding_with_sparse_true_has_a_dense_gradient_of_the_looked_up_rows(rng):
    weight = rng.standard_normal((5, 2))
    ours = nn.Embedding(5, 2, sparse=True, dtype="float64", _weight=gd.tensor(weight))
    theirs = torch.nn.Embedding(5, 2, sparse=True, _weight=torch.tensor(weight))
    index = [[0, 3, 3], [1, 0, 3]]
    ours(gd.tensor(index)).pow(2).sum().backward()
    theirs(torch.tensor(index)).pow(2).sum().backward()
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.to_dense().numpy())


@pytest.mark.parametrize("options, message", [
    (dict(lr=0.0), "learning rate"), (dict(lr=-1.0), "lr"), (dict(eps=0.0), "epsilon"),
    (dict(betas=(1.0, 0.9)), "beta parameter at index 0"),
    (dict(betas=(0.9, -0.1)), "beta parameter at index 1")])
def test_sparse_adam_refuses_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        gd.optim.SparseAdam([gd.zeros(2, requires_grad=True)], **options)
    with pytest.raises(ValueError):
        torch.optim.SparseAdam([torch.zeros(2, requires_grad=True)], **options)

