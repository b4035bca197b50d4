"""bfloat16 ops on the cuda device, where CuPy 14 has gaps that the strict simulator copies
(gpudl/sim_device.py): its where has no bfloat16 loop (the result is float32), its sorts and
scans refuse bfloat16. Each op must keep bfloat16 and give torch's bfloat16 values, and its
backward must run. On a GPU the same tests run CuPy itself."""

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

OPS = {   # name -> f(module, functional, x, y) on a (4, 6) input x and a second input y
    "huber_loss": lambda m, f, x, y: f.huber_loss(x, y, reduction="none"),
    "smooth_l1_loss": lambda m, f, x, y: f.smooth_l1_loss(x, y, reduction="none"),
    "hardtanh": lambda m, f, x, y: f.hardtanh(x),
    "leaky_relu": lambda m, f, x, y: f.leaky_relu(x, 0.1),
    "elu": lambda m, f, x, y: f.elu(x),
    "softplus": lambda m, f, x, y: f.softplus(x),
    "threshold": lambda m, f, x, y: f.threshold(x, 0.1, 2.0),
    "softshrink": lambda m, f, x, y: f.softshrink(x),
    "relu": lambda m, f, x, y: f.relu(x),
    "where": lambda m, f, x, y: m.where(x > 0, x, y),
    "masked_fill": lambda m, f, x, y: x.masked_fill(y > 0, 1.5),
    "clamp": lambda m, f, x, y: x.clamp(-0.5, 0.5),
    "cumsum": lambda m, f, x, y: x.cumsum(1),
    "cumprod": lambda m, f, x, y: x.cumprod(1),
    "sort": lambda m, f, x, y: x.sort(1).values,
    "topk": lambda m, f, x, y: x.topk(2, 1).values,
    "median": lambda m, f, x, y: x.median(1).values,
    "max": lambda m, f, x, y: x.max(1).values,
}


@pytest.mark.parametrize("name", list(OPS))
def test_keeps_bfloat16_and_torchs_values(rng, name):
    a = np.round(rng.standard_normal((4, 6)) * 8) / 8
    b = np.round(rng.standard_normal((4, 6)) * 8) / 8
    x = gd.tensor(a, dtype=gd.bfloat16, device="cuda", requires_grad=True)
    y = gd.tensor(b, dtype=gd.bfloat16, device="cuda")
    tx = torch.tensor(a, dtype=torch.bfloat16, requires_grad=True)
    ty = torch.tensor(b, dtype=torch.bfloat16)
    ours, theirs = OPS[name](gd, F, x, y), OPS[name](torch, torch.nn.functional, tx, ty)
    assert ours.dtype == gd.bfloat16
    np.testing.assert_allclose(ours.detach().float().numpy(), theirs.detach().float().numpy(),
                               rtol=2 ** -7, atol=2 ** -7)
    ours.float().sum().backward()
    theirs.float().sum().backward()
    assert x.grad.dtype == gd.bfloat16
    np.testing.assert_allclose(x.grad.float().numpy(), tx.grad.float().numpy(), rtol=2 ** -6,
                               atol=2 ** -6)
