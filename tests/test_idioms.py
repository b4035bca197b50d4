""".data, in-place operators and the small PyTorch idioms (from_numpy, FloatTensor, Tensor.type,
inference_mode, bare @no_grad, gpudl.utils.data), each checked against torch."""

import numpy as np
import pytest
import torch

import gpudl as gd


def _pair(a, requires_grad=False):
    return gd.tensor(a, requires_grad=requires_grad), torch.tensor(a, requires_grad=requires_grad)


# ----------------------------------------------------------------- .data
def test_data_is_a_tensor_sharing_storage_without_history(rng):
    w, _ = _pair(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    d = w.data
    assert isinstance(d, gd.Tensor) and not d.requires_grad and d.grad_fn is None
    assert d.data_ptr() == w.data_ptr()             # the same memory, on any device
    d[0, 0] = 7.0                                   # no error: .data carries no history
    assert w.numpy()[0, 0] == 7.0 and w.requires_grad


def test_sgd_step_through_data_matches_torch(rng):
    a, x = rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal((4, 3))
    (w, tw), (xs, txs) = _pair(a, True), _pair(x.astype(np.float32))
    for _ in range(3):
        for weight, inputs in ((w, xs), (tw, txs)):
            weight.grad = None
            (inputs @ weight).square().sum().backward()
            weight.data -= 0.01 * weight.grad
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert w.requires_grad and w.is_leaf


def test_max_of_outputs_data(rng):
    out, tout = _pair(rng.standard_normal((5, 4)).astype(np.float32), True)
    values, indices = gd.max(out.data, 1)
    tvalues, tindices = torch.max(tout.data, 1)
    np.testing.assert_array_equal(values.numpy(), tvalues.numpy())
    np.testing.assert_array_equal(indices.numpy(), tindices.numpy())


def test_assigning_data_replaces_the_storage():
    w = gd.zeros(2, requires_grad=True)
    w.data = gd.ones(3)
    assert w.shape == (3,) and w.requires_grad and w.numpy().tolist() == [1, 1, 1]
    with pytest.raises(TypeError, match="expected a Tensor"):
        w.data = [1, 2]


# ----------------------------------------------------------------- in-place operators
def test_update_under_no_grad_keeps_the_same_leaf(rng):
    a, g = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    (w, tw) = _pair(a, True)
    w.grad, tw.grad = gd.tensor(g), torch.tensor(g)
    before = w
    with gd.no_grad():
        w -= 0.1 * w.grad
        w *= 2
        w += 1
        w /= 4
    with torch.no_grad():
        tw -= 0.1 * tw.grad
        tw *= 2
        tw += 1
        tw /= 4
    assert w is before and w.requires_grad and w.is_leaf and w.grad_fn is None
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-6)


def test_in_place_on_a_leaf_outside_no_grad_raises_like_torch():
    w, tw = _pair(np.ones(3, np.float32), True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        tw += 1
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in "
                                           "an in-place operation"):
        w += 1
    assert w.numpy().tolist() == [1, 1, 1]


def test_in_place_operators_edit_storage_seen_by_views():
    t, tt = _pair(np.arange(6, dtype=np.float32).reshape(2, 3))
    row, trow = t[0], tt[0]
    before = t
    t += 10
    tt += 10
    assert t is before
    np.testing.assert_array_equal(row.numpy(), trow.numpy())


@pytest.mark.parametrize("make", [lambda t: t.T.contiguous(), lambda t: t[:, ::2].contiguous(),
                                  lambda t: t.contiguous(), lambda t: t[1:].contiguous()])
def test_contiguous_copies_only_a_non_contiguous_tensor_as_torch(rng, make):
    """x.T.contiguous() returned x.T itself: an edit through it changed x (torch copies)."""
    t, tt = _pair(rng.standard_normal((3, 4)))
    for base in (t, tt):
        view = make(base)
        view.mul_(0)
        view[0] = 5.0
    np.testing.assert_array_equal(t.numpy(), tt.numpy())
    y, ty = _pair(rng.standard_normal((3, 4)), True)
    for base in (y, ty):
        (make(base) * 2).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), ty.grad.numpy())


@pytest.mark.parametrize("make", [
    lambda t: t.t().view(-1), lambda t: t[:, 1:3].view(-1), lambda t: t.view(-1),
    lambda t: t[:, ::2].view(-1), lambda t: t.t().view(2, 2, 3), lambda t: t[1:].view(2, 2, 2),
    lambda t: t.unsqueeze(1).expand(3, 2, 4).view(6, 4), lambda t: t.t().view_as(t)])
def test_view_shares_memory_or_raises_as_torch(rng, make):
    """x.t().view(-1) returned a copy (view was reshape): an edit through the "view" silently
    missed x. Now a view shares x's memory or raises, where torch does."""
    t, tt = _pair(rng.standard_normal((3, 4)))
    try:
        expected = make(tt)
    except RuntimeError:
        with pytest.raises(RuntimeError, match="reshape"):
            make(t)
        return
    got = make(t)
    assert got.shape == tuple(expected.shape)
    got.mul_(0)
    expected.mul_(0)
    np.testing.assert_array_equal(t.numpy(), tt.numpy())


def test_accumulating_losses_with_plus_equals_keeps_the_graph(rng):
    a = rng.standard_normal(3).astype(np.float32)
    w, tw = _pair(a, True)
    total, ttotal = gd.zeros(()), torch.zeros(())
    for k in range(3):
        total += (w * k).square().sum()
        ttotal += (tw * k).square().sum()
    total.backward()
    ttotal.backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-6)


def test_plus_equals_on_a_non_leaf_gives_torchs_gradient(rng):
    w, tw = _pair(rng.standard_normal(3).astype(np.float32), True)
    for weight in (w, tw):
        h = weight * 2
        h *= weight
        h += 1
        h.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-6)


def test_in_place_operator_refusals_change_nothing():
    i = gd.tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match=r"/=: cannot update a int64 tensor"):
        i /= 2
    with pytest.raises(RuntimeError):
        torch.tensor([1, 2, 3]).__itruediv__(2)
    with pytest.raises(RuntimeError, match=r"\+=: .*shape \(3,\) in place with \(2, 3\)"):
        i += gd.ones(2, 3).long()
    assert i.numpy().tolist() == [1, 2, 3]


def test_clamp_in_place_with_tensor_bounds_matches_torch(rng):
    a = rng.standard_normal((3, 4))
    lo, hi = rng.standard_normal(4) - 0.5, rng.standard_normal((3, 1)) + 0.5
    t, tt = _pair(a)
    t.clamp_(gd.tensor(lo), gd.tensor(hi))      # crashed inside NumPy's clip (Tensor operands)
    tt.clamp_(torch.tensor(lo), torch.tensor(hi))
    np.testing.assert_array_equal(t.numpy(), tt.numpy())


@pytest.mark.parametrize("edit", [
    lambda t: t.add_(0.5), lambda t: t.add_(1, alpha=0.5), lambda t: t.mul_(1.5),
    lambda t: t.div_(2), lambda t: t.clamp_(0.5), lambda t: t.fill_(t[:1]),
    lambda t: t.sub_(True), lambda t: t - True, lambda t: (t > 1) - (t > 2)])
def test_in_place_edits_torch_refuses_are_refused_and_change_nothing(edit):
    """An int tensor cannot hold a float result in place (NumPy raised its own casting error, or
    clip wrote truncated values); fill_ takes one value; bool tensors do not subtract."""
    t, tt = gd.tensor([1, 2, 3]), torch.tensor([1, 2, 3])
    with pytest.raises(RuntimeError):
        edit(tt)
    with pytest.raises((RuntimeError, ValueError)):
        edit(t)
    assert t.numpy().tolist() == [1, 2, 3]


# ----------------------------------------------------------------- idioms
def test_from_numpy_shares_memory_both_ways():
    a = np.arange(4, dtype=np.float64)
    t, tt = gd.from_numpy(a), torch.from_numpy(a.copy())
    assert t.dtype == gd.float64 and str(tt.dtype) == "torch.float64" and t.device == "cpu"
    a[0] = 9
    t[1] = 8
    assert t.numpy().tolist() == [9, 8, 2, 3] and a.tolist() == [9, 8, 2, 3]
    with pytest.raises(TypeError, match="expected a numpy.ndarray"):
        gd.from_numpy([1, 2])
    with pytest.raises(TypeError, match="unsupported dtype complex128"):
        gd.from_numpy(np.zeros(2, complex))


@pytest.mark.parametrize("name", ["FloatTensor", "DoubleTensor", "LongTensor", "IntTensor",
                                  "BoolTensor"])
def test_legacy_constructors(name):
    ours, theirs = getattr(gd, name), getattr(torch, name)
    made, tmade = ours([1, 0, 2]), theirs([1, 0, 2])
    assert str(made.dtype) == str(tmade.dtype).replace("torch.", "").replace("bool", "bool")
    np.testing.assert_array_equal(made.numpy(), tmade.numpy())
    assert ours(2, 3).shape == tuple(theirs(2, 3).shape) and ours().shape == (0,)


def test_tensor_type():
    t = gd.tensor([1.5, 2.5])
    prefix = "gpudl.cuda." if t.is_cuda else "gpudl."
    assert t.type() == prefix + "FloatTensor" and gd.tensor([1]).type() == prefix + "LongTensor"
    assert t.type("torch.DoubleTensor").device == "cpu"
    assert t.type("torch.LongTensor").dtype == gd.int64
    assert t.type(gd.float64).dtype == gd.float64
    np.testing.assert_array_equal(t.type(gd.int64).numpy(),
                                  torch.tensor([1.5, 2.5]).type(torch.int64).numpy())


def test_inference_mode_and_bare_no_grad_decorator():
    w = gd.ones(2, requires_grad=True)

    @gd.no_grad
    def bare():
        return w * 2

    @gd.inference_mode()
    def called():
        return w * 2

    assert bare.__name__ == "bare" and not bare().requires_grad and not called().requires_grad
    with gd.inference_mode():
        assert not gd.is_grad_enabled() and not (w * 2).requires_grad
    with gd.inference_mode(False):
        assert gd.is_grad_enabled()
    assert gd.is_grad_enabled() and (w * 2).requires_grad


def test_utils_data_is_an_alias_of_data():
    import gpudl.utils.data as D
    from gpudl.utils.data import DataLoader
    assert D is gd.data and DataLoader is gd.data.DataLoader and gd.utils.data is gd.data


def test_sort_and_topk_place_nan_as_torch():
    x = np.array([[1.0, np.nan, 3.0, -2.0], [np.nan, 0.0, 5.0, 1.0]])
    ours, theirs = gd.tensor(x), torch.tensor(x)
    for descending in (False, True):
        np.testing.assert_array_equal(ours.sort(1, descending=descending).indices.numpy(),
                                      theirs.sort(1, descending=descending).indices.numpy())
    np.testing.assert_array_equal(ours.topk(2).indices.numpy(), theirs.topk(2).indices.numpy())
