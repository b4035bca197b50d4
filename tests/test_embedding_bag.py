"""nn.EmbeddingBag and F.embedding_bag against torch 2.13 CPU: every mode, offsets with empty
bags and include_last_offset, padding_idx, per_sample_weights, 2-D input; values and gradients
in float64 on fresh random inputs."""

import numpy as np
import pytest

import gpudl as gd
from device_checks import call_then_read

torch = pytest.importorskip("torch")


def _both(rng, inputs, offsets, **options):
    weight = rng.standard_normal((9, 4))
    psw = rng.standard_normal(np.shape(inputs)) if options.pop("weighted", False) else None
    out_grad = None
    results = []
    for lib in (torch, gd):
        w = lib.tensor(weight, requires_grad=True)
        p = None if psw is None else lib.tensor(psw, requires_grad=True)
        out = lib.nn.functional.embedding_bag(
            lib.tensor(inputs), w, None if offsets is None else lib.tensor(offsets),
            per_sample_weights=p, **options)
        if out_grad is None:
            out_grad = rng.standard_normal(tuple(out.shape))
        out.backward(lib.tensor(out_grad))
        results.append([out.detach().numpy(), w.grad.numpy()] + ([] if p is None else
                                                                  [p.grad.numpy()]))
    for theirs, ours in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 3])
@pytest.mark.parametrize("include_last_offset", [False, True])
def test_offsets_with_empty_bags(mode, padding_idx, include_last_offset, rng):
    inputs = rng.integers(0, 9, 11)
    inputs[[1, 6]] = 3                               # the padding index occurs
    offsets = [0, 2, 2, 7, 11] if include_last_offset else [0, 2, 2, 7]
    _both(rng, inputs, offsets, mode=mode, padding_idx=padding_idx,
          include_last_offset=include_last_offset, weighted=mode == "sum")


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_two_dimensional_input(mode, rng):
    inputs = rng.integers(0, 9, (5, 3))
    inputs[2] = 0                                    # a bag of padding only
    _both(rng, inputs, None, mode=mode, padding_idx=0)


def test_module_as_torch(rng):
    ours = gd.nn.EmbeddingBag(12, 5, mode="sum", padding_idx=1)
    theirs = torch.nn.EmbeddingBag(12, 5, mode="sum", padding_idx=1)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    assert not ours.weight.detach().numpy()[1].any()
    ours.load_state_dict({"weight": gd.tensor(theirs.weight.detach().numpy())})
    inputs, offsets = rng.integers(0, 12, 7), np.array([0, 3, 3])
    expected = theirs(torch.tensor(inputs), torch.tensor(offsets)).detach().numpy()
    np.testing.assert_allclose(ours(gd.tensor(inputs), gd.tensor(offsets)).detach().numpy(),
                               expected, rtol=1e-6)


def test_bad_arguments_are_refused_with_their_names():
    weight, inputs = gd.randn(5, 2), gd.tensor([0, 1, 2])
    F = gd.nn.functional
    with pytest.raises(IndexError, match=r"offsets\[0\] must lie in \[0, 0\] but holds 1"):
        call_then_read(F.embedding_bag, inputs, weight, gd.tensor([1, 2]))
    with pytest.raises(IndexError, match="steps between offsets"):
        call_then_read(F.embedding_bag, inputs, weight, gd.tensor([0, 2, 1]))
    with pytest.raises(IndexError, match=r"offsets must lie in \[0, 3\] but holds 4"):
        call_then_read(F.embedding_bag, inputs, weight, gd.tensor([0, 4]))
    with pytest.raises(ValueError, match="needs 1-D offsets"):
        F.embedding_bag(inputs, weight)
    with pytest.raises(ValueError, match="offsets must be None when input is 2-D"):
        F.embedding_bag(inputs.view(1, 3), weight, gd.tensor([0]))
    with pytest.raises(NotImplementedError, match="only supported for mode='sum'"):
        F.embedding_bag(inputs, weight, gd.tensor([0]), per_sample_weights=gd.ones(3))
    with pytest.raises(ValueError, match="mode must be 'sum', 'mean' or 'max', got 'median'"):
        gd.nn.EmbeddingBag(5, 2, mode="median")
    with pytest.raises(ValueError, match="mode must be one of"):
        F.embedding_bag(inputs, weight, gd.tensor([0]), mode="median")
