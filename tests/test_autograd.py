"""The graph walk: accumulation, retain_graph, freeing, grad modes, deep graphs, custom Functions."""

import sys

import numpy as np
import pytest

import gpudl as gd
from gpudl.autograd import Function


def test_chain_of_10000_ops_does_not_recurse():
    x = gd.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    assert sys.getrecursionlimit() < 10_000 * 2
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 10_000], rtol=1e-3)


def test_diamond_graph_sums_both_paths():
    x = gd.tensor([2.0, 3.0], dtype=gd.float64, requires_grad=True)
    a = x * x
    y = (a + a.exp() + x).sum()      # x reaches y three ways
    y.backward()
    xv = np.array([2.0, 3.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * xv + np.exp(xv * xv) * 2 * xv + 1)


def test_grads_accumulate_across_backward_calls():
    x = gd.tensor([1.0, -2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3 + 2, 3 - 4])


def test_leaf_grads_do_not_alias_each_other():
    a = gd.tensor([1.0, 2.0], requires_grad=True)
    b = gd.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.mul_(10)                        # in-place on one grad (as clip_grad_norm_ does)
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


def test_second_backward_without_retain_graph_raises():
    x = gd.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = gd.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)


def test_saved_arrays_are_freed_after_backward():
    x = gd.tensor(np.ones(4), requires_grad=True)
    y = x.exp()
    node = y.grad_fn
    y.sum().backward()
    assert node.ctx is None


def test_backward_needs_scalar_or_gradient():
    x = gd.tensor(np.ones((2, 3)), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"scalar outputs.*\(2, 3\)"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"grad has shape \(3,\).*\(2, 3\)"):
        y.backward(gd.ones(3))
    y.backward(gd.ones(2, 3) * 0.5)
    np.testing.assert_allclose(x.grad.numpy(), np.ones((2, 3)))


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        gd.tensor([1.0]).sum().backward()


def test_no_grad_and_enable_grad():
    x = gd.tensor([1.0], requires_grad=True)
    with gd.no_grad():
        y = x * 2
        assert not gd.is_grad_enabled()
        with gd.enable_grad():
            z = x * 2
    assert gd.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad

    @gd.no_grad()
    def f(t):
        return t * 3
    assert not f(x).requires_grad and gd.is_grad_enabled()


def test_no_grad_restores_mode_after_exception():
    with pytest.raises(KeyError):
        with gd.no_grad():
            raise KeyError
    assert gd.is_grad_enabled()


def test_detach_and_requires_grad_rules():
    x = gd.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    with pytest.raises(RuntimeError, match="floating point"):
        gd.tensor([1, 2]).requires_grad_()
    with pytest.raises(RuntimeError, match="floating point"):
        gd.tensor([1, 2], requires_grad=True)


def test_retain_grad_on_intermediate():
    x = gd.tensor([1.0, 2.0], requires_grad=True)
    h = (x * 3).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * 3 * np.array([1.0, 2.0]))
    with pytest.warns(UserWarning, match="not a leaf"):       # as torch warns
        assert (x * 3).grad is None


def test_inplace_on_tensor_requiring_grad_is_refused_outside_no_grad():
    w = gd.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w.add_(1.0)
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])       # unchanged
    with gd.no_grad():
        w.sub_(gd.tensor([0.5, 0.5]), alpha=2)
    np.testing.assert_array_equal(w.numpy(), [0.0, 1.0])


class _ScaleShift(Function):
    """Two outputs, an int output (non-differentiable) and a non-tensor argument."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x * scale, x + 1, (x > 0).long()

    @staticmethod
    def backward(ctx, g_scaled, g_shifted, g_int):
        return g_scaled * ctx.scale + g_shifted, None


def test_custom_function_with_several_outputs():
    x = gd.tensor([1.0, -2.0], requires_grad=True)
    a, b, c = _ScaleShift.apply(x, 3.0)
    assert a.requires_grad and b.requires_grad and not c.requires_grad
    a.sum().backward()               # b unused: its gradient is zeros
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


class _BadShape(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g[:1]


def test_engine_checks_gradient_shapes():
    x = gd.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"_BadShape.backward returned a gradient of shape"):
        _BadShape.apply(x).sum().backward()


def test_gradient_flows_through_dtype_casts():
    x = gd.tensor([1.0, 2.0], dtype=gd.float64, requires_grad=True)
    y = (x.float() * 2).sum()
    y.backward()
    assert x.grad.dtype == gd.float64
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


# ----------------------------------------------------------------- post-accumulate grad hooks
def test_post_accumulate_hook_runs_once_after_every_path_has_accumulated():
    w = gd.tensor([2.0, 3.0], dtype=gd.float64, requires_grad=True)
    b = gd.tensor([1.0], dtype=gd.float64, requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(("w", t.grad.numpy().copy())))
    b.register_post_accumulate_grad_hook(lambda t: seen.append(("b", t.grad.numpy().copy())))
    a = w * w
    ((a + a.exp() + w).sum() + b.sum() * 0).backward()     # w reaches the loss three ways
    wv = np.array([2.0, 3.0])
    assert [name for name, _ in seen] == ["b", "w"] or [name for name, _ in seen] == ["w", "b"]
    grads = dict(seen)
    np.testing.assert_allclose(grads["w"], 2 * wv + np.exp(wv * wv) * 2 * wv + 1)
    np.testing.assert_allclose(grads["b"], [0.0])


def test_post_accumulate_hook_sees_accumulated_grad_and_can_be_removed():
    w = gd.tensor([1.0, 2.0], requires_grad=True)
    calls = []
    handle = w.register_post_accumulate_grad_hook(lambda t: calls.append(t.grad.numpy().copy()))
    (w * 3).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_allclose(calls[-1], [6.0, 6.0])       # grads accumulate across calls
    handle.remove()
    assert id(w) not in gd.autograd._post_accumulate_hooks      # backward skips the bookkeeping
    (w * 3).sum().backward()
    assert len(calls) == 2
    w.sum().backward()           # a leaf root: no hook left, nothing runs
    assert len(calls) == 2


def test_post_accumulate_hook_skips_leaves_outside_the_graph_and_leaf_root():
    used, unused = gd.tensor([1.0], requires_grad=True), gd.tensor([1.0], requires_grad=True)
    calls = []
    unused.register_post_accumulate_grad_hook(lambda t: calls.append("unused"))
    used.register_post_accumulate_grad_hook(lambda t: calls.append("used"))
    (used * 2).sum().backward()
    used.backward(gd.tensor([1.0]))
    assert calls == ["used", "used"]


def test_post_accumulate_hook_refuses_non_leaf_and_non_callable():
    w = gd.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        (w * 2).register_post_accumulate_grad_hook(print)
    with pytest.raises(TypeError, match="callable"):
        w.register_post_accumulate_grad_hook(3)
    with pytest.raises(RuntimeError, match="does not require grad"):
        gd.tensor([1.0]).register_post_accumulate_grad_hook(print)


def test_item_assignment_of_a_tensor_that_requires_grad_is_recorded_as_torch(rng):
    """out = zeros(...); out[t] = h (h requires grad): out joins the graph, as in torch. It was
    written as plain data, so h's gradient was silently missing (or backward refused to run)."""
    import torch
    w, x = rng.standard_normal((3, 3)), rng.standard_normal((4, 2, 3))
    weights = rng.standard_normal((4, 2, 3))
    grads = []
    for lib in (gd, torch):
        tw, tx = lib.tensor(w, requires_grad=True), lib.tensor(x, requires_grad=True)
        out, h = lib.zeros(4, 2, 3, dtype=lib.float64), lib.zeros(2, 3, dtype=lib.float64)
        for t in range(4):
            h = (tx[t] + h @ tw).tanh()
            out[t] = h                        # the first makes out a non-leaf, the rest extend it
        out[1:3, :, [0, 2]] = tw[0, :2] * 2   # a broadcast value, ints and arrays mixed
        (out * lib.tensor(weights)).sum().backward()
        grads.append((out.detach().numpy(), tw.grad.numpy(), tx.grad.numpy()))
    for got, expected in zip(*grads):
        np.testing.assert_allclose(got, expected, rtol=1e-10)
    leaf = gd.tensor(w, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):       # a leaf that requires grad: refused
        leaf[0] = gd.tensor(w[1], requires_grad=True)
    np.testing.assert_array_equal(leaf.numpy(), w)


def test_backward_takes_torchs_keywords(rng):
    """backward(create_graph=False) raised TypeError (an unexpected keyword) where torch runs.
    (create_graph=True: test_create_graph.py.)"""
    x = gd.tensor(rng.standard_normal(3), requires_grad=True)
    (x * 2).sum().backward(retain_graph=None, create_graph=False, inputs=None)
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])
    (x * 2).sum().backward(inputs=[x])      # supported since: see test_autograd_api.py
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 4.0, 4.0])


def test_setting_requires_grad_is_checked_as_torch():
    """t.requires_grad = True on an int tensor was accepted (its gradients then truncated to
    ints), and on a computed tensor it cut the graph silently; torch refuses both."""
    import torch
    for lib in (torch, gd):
        ints = lib.tensor([1, 2])
        with pytest.raises(RuntimeError):
            ints.requires_grad = True
        assert not ints.requires_grad
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        for flag in (False, True):
            with pytest.raises(RuntimeError):
                y.requires_grad = flag
        assert y.requires_grad
        leaf = lib.tensor([1.0, 2.0])
        leaf.requires_grad = True                 # a float leaf: allowed, as torch
        (leaf * 3).sum().backward()
        np.testing.assert_array_equal(leaf.grad.numpy(), [3.0, 3.0])


def test_set_grad_enabled_as_a_call_and_as_a_block():
    import torch
    x = gd.tensor([1.0, 2.0], requires_grad=True)
    for train in (False, True):
        with gd.set_grad_enabled(train):
            assert gd.is_grad_enabled() is train and torch.set_grad_enabled(train)
            assert (x * 2).requires_grad is train
        assert gd.is_grad_enabled()
    gd.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        gd.set_grad_enabled(True)
    assert (x * 2).requires_grad


def test_assigning_grad_is_checked_as_torch():
    """t.grad = g took any value: a float64 g on a float32 tensor made later accumulations
    float64, a wrong shape broke the optimizer's step far from the assignment."""
    import torch
    for lib in (torch, gd):
        t = lib.tensor([1.0, 2.0], requires_grad=True)
        for bad in (lib.ones(3), lib.ones(2, dtype=lib.float64), lib.ones(2, dtype=lib.int64)):
            with pytest.raises(RuntimeError):
                t.grad = bad
            assert t.grad is None
        t.grad = lib.full((2,), 0.5)              # the right shape and dtype: kept, accumulated
        (t * 2).sum().backward()
        np.testing.assert_array_equal(t.grad.numpy(), [2.5, 2.5])
        t.grad = None
        assert t.grad is None


@pytest.mark.parametrize("build,second_runs", [
    (lambda x, lib: (x + 1).reshape(2, 2).sum(), True),       # no node saves an array
    (lambda x, lib: lib.cat([-x, x[1:]]).sum() - x[:2].sum(), True),   # nor here
    (lambda x, lib: (x * x).sum(), False),                    # saves x
    (lambda x, lib: (x * lib.ones(4)).sum(), False),          # saves the other factor
    (lambda x, lib: (x + 1).sum() + x.exp().sum(), False)])   # exp saves its output
def test_second_backward_fails_only_where_an_array_was_freed_as_torch(build, second_runs):
    """A second backward without retain_graph raised for every graph; torch frees only saved
    tensors, so a graph whose nodes saved none runs again (and accumulates again)."""
    import torch
    grads = []
    for lib in (gd, torch):
        x = lib.tensor([1.0, -2.0, 0.5, 3.0], requires_grad=True)
        y = build(x, lib)
        y.backward()
        if second_runs:
            y.backward()
        else:
            with pytest.raises(RuntimeError, match="second time"):
                y.backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1])
