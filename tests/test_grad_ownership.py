"""A leaf's first gradient from Linear (every device) or Conv2d (cuda) becomes its .grad without
a copy (``ArrayFunction.new_gradients``, autograd._accumulate: one copy kernel a parameter in a
graphed step before), and nothing a user sees changes: values against torch float64, each .grad its own
memory, in-place edits of one .grad touch no other, accumulation over steps, and a hooked leaf's
gradient still copied."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend
from gpudl.ops import conv as conv_ops, linalg
from oracle import torch

pytestmark = pytest.mark.usefixtures("strict_fp32_conv")     # fp32 tolerances: no TF32 on cuda

TF = torch.nn.functional
SHAPES = {"c1.w": (3, 1, 3, 3), "c1.b": (3,), "c2.w": (4, 3, 3, 3), "c2.b": (4,),
          "f1.w": (12, 16), "f1.b": (12,), "f2.w": (5, 12), "f2.b": (5,)}


def _lenet_like(lib, functional, p, x, y):
    """Conv, ReLU, 2x2 max pool twice, then two Linear layers and cross entropy (LeNet-5's
    layers, smaller): the same code for gpudl and torch."""
    h = functional.max_pool2d(functional.relu(functional.conv2d(x, p["c1.w"], p["c1.b"])), 2)
    h = functional.max_pool2d(functional.relu(functional.conv2d(h, p["c2.w"], p["c2.b"])), 2)
    h = functional.relu(functional.linear(h.reshape(x.shape[0], -1), p["f1.w"], p["f1.b"]))
    return functional.cross_entropy(functional.linear(h, p["f2.w"], p["f2.b"]), y)


def _inputs(rng, batch=3):
    params = {k: rng.standard_normal(s) * 0.5 for k, s in SHAPES.items()}
    return params, rng.standard_normal((batch, 1, 14, 14)), rng.integers(0, 5, batch)


def _host(array):
    return np.asarray(array.get() if hasattr(array, "get") else array)


def _shares(a, b):
    xp = backend.get_array_module(a)
    return bool(xp.may_share_memory(a, b))


def test_two_steps_of_gradients_match_torch_and_share_no_memory(rng):
    p, x, y = _inputs(rng)
    gp = {k: gd.tensor(v.astype(np.float32), requires_grad=True) for k, v in p.items()}
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    for step in range(2):                  # the second step adds into the first's .grad
        x_step = x + step
        _lenet_like(gd, F, gp, gd.tensor(x_step.astype(np.float32)), gd.tensor(y)).backward()
        _lenet_like(torch, TF, tp, torch.tensor(x_step), torch.tensor(y)).backward()
        for k in SHAPES:
            np.testing.assert_allclose(_host(gp[k].grad._data), tp[k].grad.numpy(),
                                       rtol=2e-4, atol=2e-5, err_msg=f"{k} at step {step}")
    grads = [gp[k].grad._data for k in SHAPES]
    for i, a in enumerate(grads):
        for b in grads[i + 1:]:
            assert not _shares(a, b)


def test_editing_one_grad_in_place_leaves_the_others(rng):
    """Conv2d's weight and bias gradients come from one buffer on cuda (conv_cuda's one pass):
    zeroing one .grad must not touch the other, nor a Linear's."""
    p, x, y = _inputs(rng)
    gp = {k: gd.tensor(v.astype(np.float32), requires_grad=True) for k, v in p.items()}
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    _lenet_like(gd, F, gp, gd.tensor(x.astype(np.float32)), gd.tensor(y)).backward()
    _lenet_like(torch, TF, tp, torch.tensor(x), torch.tensor(y)).backward()
    for edited in ("c1.w", "c2.b", "f1.w"):
        gp[edited].grad.zero_()
        tp[edited].grad.zero_()
    for k in SHAPES:
        np.testing.assert_allclose(_host(gp[k].grad._data), tp[k].grad.numpy(), rtol=2e-4,
                                   atol=2e-5, err_msg=k)


def _record_backward(monkeypatch, function):
    """The arrays ``function``'s backward returns, as a list filled when it runs."""
    returned = []
    backward = function.backward

    def recording(ctx, g):
        grads = backward(ctx, g)
        returned.extend(grads)
        return grads
    monkeypatch.setattr(function, "backward", staticmethod(recording))
    return returned


def test_conv_gradients_become_grad_uncopied_on_cuda_only(rng, monkeypatch):
    """Conv2d declares its gradients new on cuda only (the CPU paths may return views of
    scratch buffers): .grad is the returned array exactly where it is a device array."""
    returned = _record_backward(monkeypatch, conv_ops.Conv2d)
    w = gd.tensor(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), requires_grad=True)
    x = gd.tensor(rng.standard_normal((1, 1, 6, 6)).astype(np.float32))
    F.conv2d(x, w).sum().backward()
    assert (w.grad._data is returned[1]) == backend.is_device_array(returned[1])


def test_linear_gradients_become_grad_uncopied(rng, monkeypatch):
    returned = _record_backward(monkeypatch, linalg.Linear)
    x = gd.tensor(rng.standard_normal((4, 6)).astype(np.float32), requires_grad=True)
    w = gd.tensor(rng.standard_normal((3, 6)).astype(np.float32), requires_grad=True)
    b = gd.tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True)
    weights = rng.standard_normal((4, 3))
    (F.linear(x, w, b) * gd.tensor(weights.astype(np.float32))).sum().backward()
    for leaf, array in zip((x, w, b), returned):
        assert leaf.grad._data is array
    tx, tw, tb = (torch.tensor(_host(t._data).astype(np.float64), requires_grad=True)
                  for t in (x, w, b))
    (TF.linear(tx, tw, tb) * torch.tensor(weights)).sum().backward()
    for leaf, want in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(_host(leaf.grad._data), want.grad.numpy(), rtol=1e-5,
                                   atol=1e-6)


def test_a_hooked_leaf_keeps_a_copy(rng):
    """A leaf hook may keep the gradient it is given: .grad must not be that array."""
    kept = []
    w = gd.tensor(rng.standard_normal((3, 5)).astype(np.float32), requires_grad=True)
    w.register_hook(lambda g: kept.append(g))
    x = gd.tensor(rng.standard_normal((2, 5)).astype(np.float32))
    F.linear(x, w).sum().backward()
    assert len(kept) == 1
    assert not _shares(w.grad._data, kept[0]._data)
    w.grad.zero_()
    want = np.broadcast_to(x.numpy().sum(axis=0, dtype=np.float64), (3, 5))
    np.testing.assert_allclose(_host(kept[0]._data), want, rtol=1e-5, atol=1e-6)
