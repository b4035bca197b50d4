"""Layers module_db has no samples for (Upsample, PixelShuffle, Unfold, CosineSimilarity),
against torch: outputs and input gradients."""

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import nn


def _compare(ours, theirs, x, rng, *more):
    a = [gd.tensor(v, requires_grad=True) for v in (x,) + more]
    ta = [torch.tensor(v, requires_grad=True) for v in (x,) + more]
    y, ty = ours(*a), theirs(*ta)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-6, atol=1e-6)
    w = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    (y * gd.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    for g, t in zip(a, ta):
        np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [
    {"scale_factor": 2}, {"size": (5, 7)}, {"scale_factor": 1.5, "mode": "bilinear"},
    {"size": (6, 3), "mode": "bilinear", "align_corners": True},
    {"scale_factor": (2, 3), "mode": "bilinear", "align_corners": False},
])
def test_upsample_matches_torch(rng, options):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    _compare(nn.Upsample(**options), torch.nn.Upsample(**options), x, rng)


def test_upsample_linear_on_sequences(rng):
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    _compare(nn.Upsample(scale_factor=2, mode="linear"),
             torch.nn.Upsample(scale_factor=2, mode="linear"), x, rng)


def test_pixel_shuffle_matches_torch(rng):
    x = rng.standard_normal((2, 8, 3, 4)).astype(np.float32)
    _compare(nn.PixelShuffle(2), torch.nn.PixelShuffle(2), x, rng)


def test_unfold_matches_torch(rng):
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    _compare(nn.Unfold((2, 3), dilation=(1, 2), padding=1, stride=2),
             torch.nn.Unfold((2, 3), dilation=(1, 2), padding=1, stride=2), x, rng)


def test_cosine_similarity_matches_torch(rng):
    x1 = rng.standard_normal((4, 5, 3)).astype(np.float32)
    x2 = rng.standard_normal((1, 5, 3)).astype(np.float32)
    x2[0, :, 1] = 0                                        # a zero vector: the eps clamp
    _compare(nn.CosineSimilarity(dim=1), torch.nn.CosineSimilarity(dim=1), x1, rng, x2)


@pytest.mark.parametrize("call, pattern", [
    (lambda x: nn.Upsample(scale_factor=2, mode="cubic")(x), "mode must be"),
    (lambda x: nn.Upsample(scale_factor=2, mode="linear")(x), "needs 1 spatial"),
    (lambda x: nn.Upsample()(x), "exactly one of size and scale_factor"),
    (lambda x: nn.PixelShuffle(3)(x), "divisible by upscale_factor"),
])
def test_bad_arguments_are_refused(call, pattern):
    with pytest.raises((ValueError, NotImplementedError), match=pattern):
        call(gd.zeros(1, 8, 2, 2))
