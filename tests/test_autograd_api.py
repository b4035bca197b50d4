"""autograd.grad, Tensor.register_hook, retains_grad, backward(inputs=) and gradcheck against
torch (float64, fresh random inputs) and finite differences."""

import warnings

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl.autograd import Function


def _pair(rng, *shape):
    a = rng.standard_normal(shape)
    return gd.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def _close(g, t):
    np.testing.assert_allclose(g.detach().numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ autograd.grad
def test_grad_of_leaves_and_computed_tensors_matches_torch(rng):
    (x, tx), (w, tw) = _pair(rng, 3, 4), _pair(rng, 4, 2)
    results = []
    for lib, a, b in ((gd, x, w), (torch, tx, tw)):
        hidden = (a @ b).tanh()
        loss = (hidden * hidden.sum(0)).sum()
        results.append(lib.autograd.grad(loss, [a, hidden, b]))
    for g, t in zip(*results):
        _close(g, t)
    assert x.grad is None and w.grad is None          # nothing accumulated


def test_grad_of_several_outputs_with_grad_outputs_matches_torch(rng):
    (x, tx), = [_pair(rng, 5)]
    weights = rng.standard_normal(5)
    results = []
    for lib, a in ((gd, x), (torch, tx)):
        outs = (a.exp(), (a * 3).sum())
        results.append(lib.autograd.grad(outs, a, grad_outputs=(lib.tensor(weights), None)))
    _close(results[0][0], results[1][0])


def test_grad_unused_inputs(rng):
    x = gd.tensor(rng.standard_normal(3), requires_grad=True)
    unused = gd.tensor(rng.standard_normal(2), requires_grad=True)
    loss = (x * 2).sum()
    with pytest.raises(RuntimeError, match="index 1 appears to not have been used"):
        gd.autograd.grad(loss, [x, unused], retain_graph=True)
    gx, gu = gd.autograd.grad(loss, [x, unused], allow_unused=True, retain_graph=True)
    np.testing.assert_array_equal(gx.numpy(), [2.0, 2.0, 2.0])
    assert gu is None
    _, gu = gd.autograd.grad(loss, [x, unused], materialize_grads=True)
    np.testing.assert_array_equal(gu.numpy(), [0.0, 0.0])


def test_grad_refusals_match_torch():
    x = gd.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="does not require grad"):
        gd.autograd.grad((x * 2).sum(), [gd.tensor([1.0])])
    with pytest.raises(RuntimeError, match="does not require grad and does not have a grad_fn"):
        gd.autograd.grad(gd.tensor([1.0]).sum(), [x])
    with pytest.raises(RuntimeError, match="scalar outputs"):
        gd.autograd.grad(x * 2, [x])


def test_grad_frees_the_graph_unless_retained(rng):
    x = gd.tensor(rng.standard_normal(3), requires_grad=True)
    loss = (x.exp() * x).sum()
    first, = gd.autograd.grad(loss, x, retain_graph=True)
    second, = gd.autograd.grad(loss, x)
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    with pytest.raises(RuntimeError, match="second time"):
        gd.autograd.grad(loss, x)


def test_backward_with_inputs_accumulates_only_into_them(rng):
    (x, tx), (w, tw) = _pair(rng, 3), _pair(rng, 3)
    for lib, a, b in ((gd, x, w), (torch, tx, tw)):
        hidden = a * b
        hidden.retain_grad()
        (hidden.exp().sum()).backward(inputs=[a, hidden])
    _close(x.grad, tx.grad)
    assert w.grad is None and tw.grad is None


def test_backward_with_inputs_fills_a_non_leaf_without_warning(rng):
    """backward(inputs=[hidden]) of a non-leaf that does not retain grad fills its .grad, as
    torch's does, and warns nothing while doing so (it warned that a non-leaf's .grad was read,
    reading it itself inside backward)."""
    (x, tx), = [_pair(rng, 3)]
    filled = {}
    for lib, a in ((gd, x), (torch, tx)):
        hidden = a * a
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            (hidden.exp().sum()).backward(inputs=[hidden])
            filled[lib.__name__] = hidden.grad
    _close(filled["gpudl"], filled["torch"])
    assert x.grad is None and tx.grad is None


# ------------------------------------------------------------------ hooks and retains_grad
def test_hooks_on_leaf_and_non_leaf_match_torch(rng):
    (x, tx), = [_pair(rng, 4)]
    seen = {}
    for name, lib, a in (("gd", gd, x), ("torch", torch, tx)):
        hidden = a * 2
        hidden.retain_grad()
        hidden.register_hook(lambda g: g * 3)                  # replaces the gradient
        a.register_hook(lambda g, name=name: seen.setdefault(name, g.clone()))   # observes
        (hidden.sin() + a * a).sum().backward()
        seen[name + " hidden"] = hidden.grad
        assert hidden.retains_grad and not a.retains_grad
    _close(x.grad, tx.grad)
    _close(seen["gd"], seen["torch"])                          # the summed gradient, once
    _close(seen["gd hidden"], seen["torch hidden"])            # after the hook, as torch


def test_leaf_hook_runs_once_per_backward_and_can_be_removed(rng):
    x = gd.tensor(rng.standard_normal(3), requires_grad=True)
    calls = []
    handle = x.register_hook(lambda g: calls.append(g.numpy().copy()))
    (x * 2 + x * 3).sum().backward()
    assert len(calls) == 1
    np.testing.assert_array_equal(calls[0], [5.0, 5.0, 5.0])
    handle.remove()
    (x * 2).sum().backward()
    assert len(calls) == 1
    np.testing.assert_array_equal(x.grad.numpy(), [7.0, 7.0, 7.0])


def test_hooks_are_checked_as_torch():
    x = gd.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        gd.tensor([1.0]).register_hook(lambda g: g)
    y = x * 2
    y.register_hook(lambda g: g[:1])
    with pytest.raises(RuntimeError, match="changed the size"):
        y.sum().backward()
    with pytest.raises(TypeError, match="callable"):
        x.register_hook(3)


def test_hook_on_an_autograd_grad_input_sees_its_gradient(rng):
    (x, tx), = [_pair(rng, 3)]
    results = []
    for lib, a in ((gd, x), (torch, tx)):
        a.register_hook(lambda g: g * 10)
        results.append(lib.autograd.grad((a * a).sum(), a)[0])
    _close(*results)


# ------------------------------------------------------------------ gradcheck
@pytest.mark.parametrize("fn", [
    lambda a, b: (a @ b).tanh(),
    lambda a, b: (a.softmax(-1) * a.exp()).sum(1),
    lambda a, b: (a[:, :2] * b.t()[:, :2].sigmoid(), a.relu() + 1),
])
def test_gradcheck_accepts_correct_gradients(rng, fn):
    a = gd.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = gd.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    assert gd.autograd.gradcheck(fn, (a, b))


class _WrongSquare(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        a, = ctx.saved_tensors
        return g * a                # missing the factor 2


def test_gradcheck_rejects_a_wrong_backward(rng):
    a = gd.tensor(rng.standard_normal(4), requires_grad=True)
    assert gd.autograd.gradcheck(_WrongSquare.apply, (a,), raise_exception=False) is False
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        gd.autograd.gradcheck(_WrongSquare.apply, (a,))
    with pytest.raises(ValueError, match="requires_grad"):
        gd.autograd.gradcheck(_WrongSquare.apply, (a.detach(),))


def test_gradcheck_through_inplace_on_views(rng):
    def fn(a, b):
        y = a * 1
        y[0].mul_(b[0])
        y.t()[1].relu_()
        return y
    a = gd.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = gd.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    assert gd.autograd.gradcheck(fn, (a, b))


def test_retain_grad_follows_an_inplace_edit_and_hooks_stay_as_torch(rng):
    (x, tx), = [_pair(rng, 4)]
    hooked = {}
    for name, a in (("gd", x), ("torch", tx)):
        y = a * 2
        y.retain_grad()
        y.register_hook(lambda g, name=name: hooked.setdefault(name, g.clone()))
        y.mul_(a)                   # y.grad: of the new values; the hook: of the old ones
        (y * y).sum().backward()
        hooked[name + " y"] = y.grad
    _close(hooked["gd y"], hooked["torch y"])
    _close(hooked["gd"], hooked["torch"])
    _close(x.grad, tx.grad)


# ------------------------------------------------------------------ custom Functions' ctx marks
class _DoubleInPlace(Function):
    """Doubles its input in place."""

    @staticmethod
    def forward(ctx, a):
        a *= 2                      # an in-place operator, where torch's twin calls mul_
        ctx.mark_dirty(a)
        return a

    @staticmethod
    def backward(ctx, g):
        return g * 2


class _TorchDoubleInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        a.mul_(2)
        ctx.mark_dirty(a)
        return a

    @staticmethod
    def backward(ctx, g):
        return g * 2


@pytest.mark.parametrize("through_view", [False, True])
def test_mark_dirty_rebases_the_edited_input_as_torch(rng, through_view):
    (x, tx), = [_pair(rng, 3, 4)]
    results = []
    for lib, a, fn in ((gd, x, _DoubleInPlace), (torch, tx, _TorchDoubleInPlace)):
        y = a * 1.5
        target = y[1] if through_view else y
        out = fn.apply(target)
        assert out is target
        (y * y).sum().backward()
        results.append(y)
    _close(*results)
    _close(x.grad, tx.grad)
    leaf = gd.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        _DoubleInPlace.apply(leaf)


class _SplitSign(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.set_materialize_grads(False)
        sign = a.sign()
        ctx.mark_non_differentiable(sign)
        return a * 3, sign

    @staticmethod
    def backward(ctx, g, g_sign):
        assert g_sign is None                   # not materialized as zeros
        return g * 3


def test_mark_non_differentiable_and_set_materialize_grads(rng):
    x = gd.tensor(rng.standard_normal(3), requires_grad=True)
    scaled, sign = _SplitSign.apply(x)
    assert scaled.requires_grad and not sign.requires_grad
    scaled.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0, 3.0])


def test_backward_with_inputs_and_a_gradient_array(rng):
    (x, tx), = [_pair(rng, 3)]
    weights = rng.standard_normal(3)
    for a, g in ((x, weights), (tx, torch.tensor(weights))):
        (a * 2).exp().backward(g, inputs=a)
    _close(x.grad, tx.grad)


def test_detach_in_place_cuts_the_graph_as_torch(rng):
    """Truncated BPTT the old way: ``hidden.detach_()`` between chunks; the gradient of the last
    chunk's loss stops there, as torch's."""
    w0, steps = rng.standard_normal((3, 3)) * 0.5, rng.standard_normal((6, 2, 3))
    grads = []
    for lib in (gd, torch):
        w = lib.tensor(w0, requires_grad=True)
        hidden = lib.zeros(2, 3, dtype=lib.float64)
        for i, x in enumerate(steps):
            if i % 3 == 0:
                hidden.detach_()
                assert not hidden.requires_grad and hidden.grad_fn is None
            hidden = lib.tanh(lib.tensor(x) + hidden @ w)
        hidden.sum().backward()
        grads.append(w.grad.numpy())
        view = (lib.tensor(w0, requires_grad=True) * 2)[:1]
        with pytest.raises(RuntimeError, match="(?i)can't detach views in-place"):
            view.detach_()
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)
