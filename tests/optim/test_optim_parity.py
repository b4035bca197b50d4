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
