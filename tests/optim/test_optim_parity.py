"""Optimizer state dicts laid out as torch's where the options leave a parameter without state
(SGD without momentum) and where torch's groups lack an implementation option (Adafactor)."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.optim as optim

torch = pytest.importorskip("torch")


def _stepped(make, rng, shapes=((3, 2), (4,))):
    values = [rng.standard_normal(s) for s in shapes]
    params = [gd.tensor(v, requires_grad=True) for v in values]
    tparams = [torch.tensor(v, requires_grad=True) for v in values]
    opt, topt = make(optim, params), make(torch.optim, tparams)
    for _ in range(2):
        grads = [rng.standard_normal(s) for s in shapes]
        for p, tp, g in zip(params, tparams, grads):
            p.grad, tp.grad = gd.tensor(g), torch.tensor(g)
        opt.step(), topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-12)
    return opt, topt


@pytest.mark.parametrize("options", [dict(), dict(weight_decay=0.1, maximize=True)])
def test_sgd_without_momentum_saves_no_state_entries_as_torch(options, rng):
    opt, topt = _stepped(lambda lib, ps: lib.SGD(ps, lr=0.1, **options), rng)
    saved, tsaved = opt.state_dict(), topt.state_dict()
    assert saved["state"] == tsaved["state"] == {}
    opt.load_state_dict(tsaved)                     # and torch's loads
    assert opt.state_dict()["state"] == {}


def test_sgd_with_momentum_keeps_its_buffers(rng):
    opt, topt = _stepped(lambda lib, ps: lib.SGD(ps, lr=0.1, momentum=0.9), rng)
    saved, tsaved = opt.state_dict(), topt.state_dict()
    assert saved["state"].keys() == tsaved["state"].keys() == {0, 1}
    for i in (0, 1):
        np.testing.assert_allclose(saved["state"][i]["momentum_buffer"].numpy(),
                                   tsaved["state"][i]["momentum_buffer"].numpy(), rtol=1e-12)


def test_adafactor_groups_have_torchs_keys(rng):
    opt, topt = _stepped(lambda lib, ps: lib.Adafactor(ps, lr=0.01), rng)
    group, tgroup = opt.state_dict()["param_groups"][0], topt.state_dict()["param_groups"][0]
    assert set(group) == set(tgroup)
    assert opt.defaults.keys() == topt.defaults.keys()
    opt.load_state_dict(topt.state_dict())
    assert set(opt.param_groups[0]) == set(topt.param_groups[0])


HOST_LR = [("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1)),
           ("Adadelta", dict(lr=0.9, weight_decay=0.1)), ("Adamax", dict(lr=0.02)),
           ("NAdam", dict(lr=0.01, momentum_decay=0.01, weight_decay=0.1)),
           ("RAdam", dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1)),
           ("Rprop", dict(lr=0.01)), ("ASGD", dict(lr=0.01, t0=2, weight_decay=0.1))]


@pytest.mark.parametrize("name, options", HOST_LR, ids=lambda v: v if isinstance(v, str) else "")
def test_a_tensor_lr_steps_as_torch_and_follows_a_scheduler(name, options, rng):
    """torch takes a 0-d Tensor lr for every optimizer; its scalars then round to float32 in
    places (up to ~3e-7 here), gpudl reads the lr's value: the same steps as torch's with that
    value as a number."""
    lr = options["lr"]
    value = float(torch.tensor(lr))                      # the float32 value both hold
    opt, topt = _stepped(
        lambda lib, ps: getattr(lib, name)(
            ps, **dict(options, lr=gd.tensor(lr) if lib is optim else value)), rng)
    scheduler = optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)   # writes the Tensor in place
    tscheduler = torch.optim.lr_scheduler.StepLR(topt, 1, gamma=0.5)
    params = opt.param_groups[0]["params"]
    tparams = topt.param_groups[0]["params"]
    for _ in range(3):
        for p, tp in zip(params, tparams):
            g = rng.standard_normal(p.shape)
            p.grad, tp.grad = gd.tensor(g), torch.tensor(g)
        opt.step(), topt.step()
        scheduler.step(), tscheduler.step()
        assert isinstance(opt.param_groups[0]["lr"], gd.Tensor)
        for p, tp in zip(params, tparams):
            np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-12,
                                       atol=1e-15)


@pytest.mark.parametrize("name", [n for n, _ in HOST_LR])
def test_a_tensor_lr_of_the_wrong_kind_is_refused_naming_it(name):
    param = gd.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=rf"{name}: a Tensor lr must be a one-element floating "
                                         r"tensor, got dtype int64 and shape \(2,\)"):
        getattr(optim, name)([param], lr=gd.tensor([1, 2]))
