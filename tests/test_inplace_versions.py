"""Version counters: in-place edits of what backward still needs raise, as in PyTorch.

Every case that must raise computed a silently wrong gradient before the counters existed; every
case that must not raise is one PyTorch accepts too (checked against torch where it can run).
"""

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import nn

MODIFIED = r"modified by an inplace operation: .* is at version \d+; expected version \d+ instead"


def _leaf(rng, *shape):
    return gd.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)


# ----------------------------------------------------------------- saved outputs edited in place
def test_exp_output_edited_under_no_grad_raises_with_torch_wording(rng):
    x = _leaf(rng, 3)
    a = x.exp()
    with gd.no_grad():
        a.add_(1)
    with pytest.raises(RuntimeError, match=MODIFIED) as info:
        a.sum().backward()
    assert "output 0 of ExpBackward, is at version 1; expected version 0" in str(info.value)
    assert x.grad is None                      # nothing accumulated before the refusal


@pytest.mark.parametrize("op", ["relu", "sigmoid", "tanh", "exp"])
@pytest.mark.parametrize("edit", ["mul_", "setitem", "fill_", "clamp_", "copy_"])
def test_saved_activation_output_edited_raises(rng, op, edit):
    x = _leaf(rng, 4)
    y = getattr(x, op)()
    with gd.no_grad():
        if edit == "mul_":
            y.mul_(2)
        elif edit == "setitem":
            y[0] = 5.0
        elif edit == "fill_":
            y.fill_(0.5)
        elif edit == "clamp_":
            y.clamp_(0.1, 0.2)
        else:
            y.copy_(gd.ones(4))
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.sum().backward()


def test_same_edit_in_torch_raises_too():
    # the oracle for the pattern above: torch refuses it with the same wording
    x = torch.randn(3, requires_grad=True)
    a = x.sigmoid()
    with torch.no_grad():
        a.mul_(2)
    with pytest.raises(RuntimeError, match=MODIFIED):
        a.sum().backward()


# ----------------------------------------------------------------- saved inputs edited in place
def test_saved_weight_edited_by_mul_raises(rng):
    x, w = _leaf(rng, 3), _leaf(rng, 3)
    loss = (x * w).sum()
    with gd.no_grad():
        w.mul_(2)                              # x's gradient is w: the old w is needed
    with pytest.raises(RuntimeError, match=r"input 1 of MulBackward"):
        loss.backward()


def test_saved_operand_edited_by_item_assignment_raises(rng):
    x = gd.tensor(rng.standard_normal(3).astype(np.float32))   # no grad: editable any time
    w = _leaf(rng, 3)
    loss = (x * w).sum()
    x[0] = 5.0
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


@pytest.mark.parametrize("make_view", [
    lambda t: t.reshape(2, 3), lambda t: t[0], lambda t: t[:, 1:], lambda t: t.T,
    lambda t: t.transpose(0, 1), lambda t: t[None], lambda t: t.detach(),
    lambda t: t.flatten()[2:4], lambda t: t.unsqueeze(0).squeeze(0)])
def test_edit_through_a_view_of_a_saved_tensor_raises(rng, make_view):
    x = gd.tensor(rng.standard_normal((3, 2)).astype(np.float32))
    w = _leaf(rng, 3, 2)
    loss = (x * w).sum()
    view = make_view(x)
    assert view._version_counter is x._version_counter
    view.add_(1)
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


def test_views_made_under_no_grad_share_the_counter(rng):
    x = _leaf(rng, 2, 3)
    y = x.sigmoid()
    with gd.no_grad():
        y.reshape(6)[1:3].zero_()
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.sum().backward()


def test_edit_of_the_base_of_a_saved_view_raises(rng):
    base = gd.tensor(rng.standard_normal((4, 3)).astype(np.float32))
    v = base[1:3]
    w = _leaf(rng, 2, 3)
    loss = (v * w).sum()
    base.sub_(1)
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


def test_expand_view_shares_the_counter(rng):
    x = gd.tensor(rng.standard_normal((1, 3)).astype(np.float32))
    w = _leaf(rng, 4, 3)
    e = x.expand(4, 3)
    loss = (e * w).sum()
    x.mul_(3)
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


def test_linear_weight_edited_raises(rng):
    layer = nn.Linear(3, 2)
    loss = layer(_leaf(rng, 4, 3)).sum()
    with gd.no_grad():
        layer.weight.add_(1)
    with pytest.raises(RuntimeError, match=r"LinearBackward"):
        loss.backward()


def test_rnn_output_edited_raises(rng):
    # the LSTM keeps its hidden states in a buffer its output is a view of
    lstm = nn.LSTM(3, 4)
    out, _ = lstm(_leaf(rng, 5, 2, 3))
    with gd.no_grad():
        out.mul_(0)
    with pytest.raises(RuntimeError, match=MODIFIED):
        out.sum().backward()


def test_gan_pattern_second_backward_after_step_raises(rng):
    # loss.backward(retain_graph=True); opt.step(); loss.backward(): the step changed the saved
    # weights, so the second gradient would be computed with the wrong ones
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = gd.optim.SGD(model.parameters(), lr=0.1)
    loss = model(gd.tensor(rng.standard_normal((8, 3)).astype(np.float32))).mean()
    loss.backward(retain_graph=True)
    opt.step()
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


def test_gan_pattern_in_torch_raises_too(rng):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.randn(8, 3)).mean()
    loss.backward(retain_graph=True)
    opt.step()
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


@pytest.mark.parametrize("make_opt", [
    lambda p: gd.optim.SGD(p, lr=0.1, momentum=0.9), lambda p: gd.optim.Adam(p, lr=0.1),
    lambda p: gd.optim.RMSprop(p, lr=0.1)])
def test_every_optimizer_step_bumps_the_versions(rng, make_opt):
    w = _leaf(rng, 3)
    opt = make_opt([w])
    (w * w).sum().backward()
    opt.step()
    assert w._version == 1


# ----------------------------------------------------------------- edits that must not raise
def test_edit_of_an_unsaved_tensor_is_fine(rng):
    x = _leaf(rng, 3)
    y = x + 1                                  # Add keeps neither operand
    with gd.no_grad():
        y.add_(1)
    (y * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])


def test_edit_of_a_copy_is_fine(rng):
    x = gd.tensor(rng.standard_normal(4).astype(np.float32))
    w = _leaf(rng, 4)
    loss = (x * w).sum()
    copies = [x[[0, 2]], x.clone(), x * 1, gd.tensor(x.numpy())]
    for c in copies:
        assert c._version_counter is not x._version_counter
        c.add_(100)
    loss.backward()
    np.testing.assert_array_equal(w.grad.numpy(), x.numpy())


def test_leaf_updates_after_backward_are_fine(rng):
    w = _leaf(rng, 3)
    x = gd.tensor(rng.standard_normal(3).astype(np.float32))
    for _ in range(3):
        loss = (x * w).sum()
        loss.backward()
        with gd.no_grad():
            w.sub_(0.1 * w.grad)
            w.grad.zero_()
    assert w._version == 3


def test_ordinary_training_matches_torch(rng):
    xs = rng.standard_normal((16, 3)).astype(np.float32)
    ys = rng.standard_normal((16, 1)).astype(np.float32)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
    ref = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1))
    with torch.no_grad():
        for p, q in zip(model.parameters(), ref.parameters()):
            q.copy_(torch.from_numpy(p.numpy()))
    opt = gd.optim.Adam(model.parameters(), lr=0.01)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    before = [(p._version, q._version) for p, q in zip(model.parameters(), ref.parameters())]
    for _ in range(5):
        opt.zero_grad()
        nn.MSELoss()(model(gd.tensor(xs)), gd.tensor(ys)).backward()
        opt.step()
        ref_opt.zero_grad()
        torch.nn.MSELoss()(ref(torch.from_numpy(xs)), torch.from_numpy(ys)).backward()
        ref_opt.step()
    for p, q, (vp, vq) in zip(model.parameters(), ref.parameters(), before):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)
        assert p._version - vp == q._version - vq == 5


def test_version_counts_match_torch():
    x, t = gd.zeros(4), torch.zeros(4)
    for edit in (lambda a: a.add_(1), lambda a: a.mul_(2), lambda a: a.div_(2),
                 lambda a: a.sub_(1), lambda a: a.zero_(), lambda a: a.fill_(3),
                 lambda a: a.clamp_(0, 1), lambda a: a.copy_(a * 2),
                 lambda a: a.__setitem__(0, 7.0), lambda a: a.uniform_(),
                 lambda a: a.normal_()):
        edit(x)
        edit(t)
        assert x._version == t._version
    view, tview = x[1:], t[1:]
    view.add_(1)
    tview.add_(1)
    assert x._version == view._version == t._version == tview._version


def test_nn_init_and_load_state_dict_bump_the_version():
    layer = nn.Linear(2, 2)
    before = layer.weight._version
    nn.init.zeros_(layer.weight)
    assert layer.weight._version == before + 1
    layer.load_state_dict(nn.Linear(2, 2).state_dict())
    assert layer.weight._version == before + 2


def test_embedding_max_norm_renormalises_in_place_like_torch():
    ours, theirs = nn.Embedding(5, 3, max_norm=0.1), torch.nn.Embedding(5, 3, max_norm=0.1)
    before = ours.weight._version, theirs.weight._version
    ours(gd.tensor([0, 1]))
    theirs(torch.tensor([0, 1]))
    assert ours.weight._version - before[0] == theirs.weight._version - before[1] == 1


def test_views_share_counters_with_inputs_aliasing_their_memory():
    """An output viewing an array that owns its memory shares the counter of an input that
    reaches the same memory another way (np.frombuffer: its base is not that array), and not of
    an input in another array's memory."""
    from gpudl import autograd
    owner = np.arange(12, dtype=np.float32)
    alias = np.frombuffer(memoryview(owner), dtype=np.float32)
    other = np.arange(12, dtype=np.float32)
    for raw, shared in ((alias, True), (other, False), (owner[6:], True), (owner[9:], False)):
        inp = gd.Tensor._make(raw, False, None, 0, "cpu")
        out = gd.Tensor._make(owner[2:8], False, None, 0, "cpu")
        autograd._share_view_counters((inp,), (raw,), (out._data,), (out,))
        assert (out._version_counter is inp._version_counter) == shared


def test_editing_a_factor_whose_gradient_is_not_needed_is_fine_as_torch(rng):
    """y = x * w with only w requiring grad: backward reads x, not w, so editing w in place
    afterwards is fine in torch (likewise x / c reads only c). Mul and Div kept both operands,
    so the edit raised at backward."""
    a, b = rng.standard_normal(3), rng.standard_normal(3)
    grads = []
    for lib in (gd, torch):
        x, w = lib.tensor(a), lib.tensor(b, requires_grad=True)
        y = (x * w).sum() + (x / w.detach()).sum()
        v = lib.tensor(b, requires_grad=True)
        z = (v * x).sum()
        with lib.no_grad():
            w.mul_(2)                          # w is not read by any backward here
        (y + z).backward()
        grads.append((w.grad.numpy(), v.grad.numpy()))
    for got, expected in zip(*grads):
        np.testing.assert_allclose(got, expected)
