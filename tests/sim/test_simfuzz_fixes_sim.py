"""Regressions from session 24's differential fuzzing of the cuda path through Numba's CUDA
simulator (fuzzers outside the repo: gpudl against torch 2.13 CPU in float64, random tiny
geometries, every dispatch path of the kernels forced in turn). Each test failed before its fix;
tiny shapes, fresh random inputs against torch float64."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.may_read_device(),
                                 reason="needs the cuda device: a GPU, or NUMBA_ENABLE_CUDASIM=1 "
                                 "with GPUDL_DEVICE=cuda")]
torch = pytest.importorskip("torch")


@pytest.mark.parametrize("offsets", [[0], [0, 0, 0]])
@pytest.mark.parametrize("include_last_offset", [False, True])
def test_embedding_bag_max_without_entries(rng, offsets, include_last_offset):
    """mode='max' over an input of no entries (every bag empty): argmax over none raised a
    ValueError; torch gives zeros and a zero weight gradient."""
    w = rng.standard_normal((5, 3))
    ours = gd.tensor(w.astype(np.float32), device="cuda", requires_grad=True)
    theirs = torch.tensor(w, requires_grad=True)
    idx, offs = np.zeros(0, np.int64), np.array(offsets, np.int64)
    y = F.embedding_bag(gd.tensor(idx, device="cuda"), ours, gd.tensor(offs, device="cuda"),
                        mode="max", include_last_offset=include_last_offset)
    ty = torch.nn.functional.embedding_bag(torch.tensor(idx), theirs, torch.tensor(offs),
                                           mode="max", include_last_offset=include_last_offset)
    assert tuple(y.shape) == tuple(ty.shape) and y.dtype == gd.float32
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    g = rng.standard_normal(tuple(ty.shape))
    (y * gd.tensor(g.astype(np.float32), device="cuda")).sum().backward()
    (ty * torch.tensor(g)).sum().backward()
    np.testing.assert_array_equal(ours.grad.numpy(), theirs.grad.numpy())
