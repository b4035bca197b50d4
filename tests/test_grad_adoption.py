"""A leaf's first gradient from Linear or LayerNorm becomes its .grad without a copy
(``ArrayFunction.new_gradients``, autograd._accumulate): the values stay torch's, no two .grad
arrays share memory, in-place edits of one .grad reach nothing else, and a gradient a hook saw
is still copied."""

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import backend



def _models(rng, dtype):
    """The same Linear -> LayerNorm -> ReLU -> Linear (and the first weight applied again) in
    gpudl (default device) and torch CPU float64, with fresh random parameters."""
    arrays = {"w1": rng.standard_normal((6, 6)), "b1": rng.standard_normal(6),
              "g": 1 + 0.1 * rng.standard_normal(6), "beta": rng.standard_normal(6),
              "w2": rng.standard_normal((3, 6)), "b2": rng.standard_normal(3)}
    ours = {k: gd.tensor(v.astype(dtype), requires_grad=True) for k, v in arrays.items()}
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    return ours, theirs


def _loss(lib, p, x):
    F = lib.nn.functional
    h = F.linear(x, p["w1"], p["b1"])
    h = F.layer_norm(h, (6,), p["g"], p["beta"])
    h = F.linear(F.relu(h), p["w1"])                 # w1 again: its second gradient adds
    return (F.linear(h, p["w2"], p["b2"]) ** 2).mean()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adopted_gradients_match_torch_and_stay_apart(rng, dtype):
    ours, theirs = _models(rng, dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for step in range(2):                            # the second backward accumulates
        x = rng.standard_normal((5, 6))
        loss = _loss(gd, ours, gd.tensor(x.astype(dtype)))
        ref = _loss(torch, theirs, torch.tensor(x))
        loss.backward()
        ref.backward()
        np.testing.assert_allclose(loss.item(), ref.item(), rtol=tol, atol=tol)
        for name, p in ours.items():
            np.testing.assert_allclose(p.grad.cpu().numpy(), theirs[name].grad.numpy(),
                                       rtol=tol, atol=tol, err_msg=f"{name} step {step}")
        arrays = [p.grad._data for p in ours.values()]
        xp = backend.get_array_module(arrays[0])
        for i, a in enumerate(arrays):
            for b in arrays[i + 1:]:
                assert not xp.shares_memory(a, b)
        # an in-place edit of one .grad changes no other gradient, here or in the next step
        ours["b1"].grad.mul_(0.5)
        with torch.no_grad():
            theirs["b1"].grad.mul_(0.5)


def test_first_gradient_is_the_products_own_array():
    """The weight's .grad is the array Linear's backward made (no copy); a second backward
    adds into a new array."""
    x = gd.randn(4, 3)
    w = gd.randn(2, 3, requires_grad=True)
    made = []
    from gpudl.ops import linalg
    real = linalg.Linear.backward

    def backward(ctx, g):
        grads = real(ctx, g)
        made.append(grads[1])
        return grads
    linalg.Linear.backward = staticmethod(backward)
    try:
        gd.nn.functional.linear(x, w).sum().backward()
    finally:
        linalg.Linear.backward = staticmethod(real)
    assert w.grad._data is made[0]
    np.testing.assert_allclose(w.grad.cpu().numpy(), np.tile(x.cpu().numpy().sum(0), (2, 1)),
                               rtol=1e-5)


def test_a_gradient_a_hook_kept_is_not_the_grad():
    """A leaf with a hook takes a copy: editing .grad in place leaves what the hook kept."""
    rng = np.random.default_rng(7)
    x = gd.tensor(rng.standard_normal((4, 3)).astype(np.float32))
    w = gd.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    kept = []
    w.register_hook(lambda g: kept.append(g) or g)
    gd.nn.functional.linear(x, w).sum().backward()
    before = kept[0].cpu().numpy().copy()
    w.grad.zero_()
    np.testing.assert_array_equal(kept[0].cpu().numpy(), before)
    np.testing.assert_allclose(before, np.tile(x.cpu().numpy().sum(0), (2, 1)), rtol=1e-5)
