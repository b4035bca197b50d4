"""nn.Upsample and nn.PixelShuffle against torch (module_db has no samples for them)."""

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import nn


def _compare(ours, theirs, x, rng):
    a, ta = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = ours(a), theirs(ta)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-6, atol=1e-6)
    w = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    (y * gd.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-5, atol=1e-5)


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


@pytest.mark.parametrize("call, pattern", [
    (lambda x: nn.Upsample(scale_factor=2, mode="bicubic")(x), "mode must be"),
    (lambda x: nn.Upsample(scale_factor=2, mode="linear")(x), "needs 1 spatial"),
    (lambda x: nn.Upsample()(x), "exactly one of size and scale_factor"),
    (lambda x: nn.PixelShuffle(3)(x), "divisible by upscale_factor"),
])
def test_bad_arguments_are_refused(call, pattern):
    with pytest.raises((ValueError, NotImplementedError), match=pattern):
        call(gd.zeros(1, 8, 2, 2))
