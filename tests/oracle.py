"""Check a gpudl expression against the same expression in PyTorch (float64), values and grads."""

import numpy as np
import pytest

import gpudl as gd
from torch_gaps import skip_where_torch_lacks_the_derivative

torch = pytest.importorskip("torch")


def check_against_torch(gd_fn, torch_fn, *arrays, rtol=1e-7, atol=1e-9, grad=True, seed=0):
    """Run ``gd_fn`` on gpudl tensors and ``torch_fn`` on torch tensors made from the same
    float64 ``arrays``; compare outputs and, contracting outputs with random weights, every grad.

    Non-array arguments (ints, index arrays) pass through unchanged to both functions.
    """
    def is_diff(a):
        return isinstance(a, np.ndarray) and a.dtype.kind == "f"

    gd_in = [gd.tensor(a, requires_grad=grad) if is_diff(a) else a for a in arrays]
    th_in = [torch.tensor(a, requires_grad=grad) if is_diff(a) else a for a in arrays]
    y, ty = gd_fn(*gd_in), torch_fn(*th_in)
    ys = y if isinstance(y, (tuple, list)) else (y,)
    tys = ty if isinstance(ty, (tuple, list)) else (ty,)
    assert len(ys) == len(tys)
    for a, b in zip(ys, tys):
        assert tuple(a.shape) == tuple(b.shape), (a.shape, b.shape)
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=rtol, atol=atol)
    if not grad:
        return y
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(a.shape) if a.dtype.kind == "f" else None for a in ys]
    loss = sum((a * gd.tensor(w)).sum() for a, w in zip(ys, weights) if w is not None)
    tloss = sum((b * torch.tensor(w)).sum() for b, w in zip(tys, weights) if w is not None)
    loss.backward()
    with skip_where_torch_lacks_the_derivative():
        tloss.backward()
    for i, (a, b) in enumerate(zip(gd_in, th_in)):
        if isinstance(a, gd.Tensor) and a.requires_grad:
            expected = b.grad.numpy() if b.grad is not None else np.zeros(a.shape)
            got = a.grad.numpy() if a.grad is not None else np.zeros(a.shape)
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol,
                                       err_msg=f"gradient of input {i}")
    return y
