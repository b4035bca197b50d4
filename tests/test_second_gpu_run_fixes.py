"""Library bugs the second GPU run (CuPy 14, an H200) found, pinned on the CPU: each test drives
the code path the GPU took, with NumPy made to refuse what CuPy refuses."""

import numpy as np
import pytest

import gpudl as gd

torch = pytest.importorskip("torch")


def _refusing_bfloat16(scan):
    def refuse(a, *args, **kwargs):
        if np.asarray(a).dtype == gd.bfloat16:
            raise TypeError(f"{scan.__name__} of bfloat16 (CuPy's scan kernel has no bfloat16 "
                            "arithmetic)")
        return scan(a, *args, **kwargs)
    return refuse


@pytest.mark.parametrize("zeros", [False, True], ids=["nonzero", "with_a_zero"])
@pytest.mark.parametrize("op", ["prod", "cumsum", "cumprod"])
def test_bfloat16_scans_in_backward_run_in_float32(monkeypatch, rng, op, zeros):
    """CuPy's cumsum/cumprod kernels fail to compile for bfloat16 (no bfloat16 ``+=``/``*=``):
    every scan of a bfloat16 array, the backwards' included, runs in float32. NumPy's scans
    refuse bfloat16 here as CuPy's do; the gradients are torch's (float64 from the same
    bfloat16 values), within bfloat16's rounding."""
    for name in ("cumsum", "cumprod"):
        monkeypatch.setattr(np, name, _refusing_bfloat16(getattr(np, name)))
    x = rng.uniform(0.5, 1.5, (3, 5)).astype(np.float32)
    if zeros:
        x[1, 2] = 0.0
    weights = rng.standard_normal((3, 5)).astype(np.float32)
    a = gd.tensor(x).bfloat16().requires_grad_()
    exact = torch.tensor(a.float().numpy().astype(np.float64), requires_grad=True)
    for lib, t in ((gd, a), (torch, exact)):
        y = t.prod(1) if op == "prod" else getattr(t, op)(1)
        w = lib.tensor(weights[:, 0] if op == "prod" else weights)
        (y * w.to(y.dtype)).sum().backward()
    assert a.grad.dtype == gd.bfloat16
    np.testing.assert_allclose(a.grad.float().numpy(), exact.grad.numpy(), rtol=2 ** -6,
                               atol=1e-2)
