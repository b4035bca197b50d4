"""optim.Adafactor against torch.optim.Adafactor: parameters after several steps for vectors,
matrices and higher-dimensional tensors (factored second moment), every option, float32,
state-dict round trips both ways, and refusals."""

import numpy as np
import pytest
import torch

import gpudl as gd

SHAPES = [(4, 5), (3,), (2, 3, 4), (1,), (6, 1)]


def _run(rng, opts, dtype=np.float64, steps=6, ours=None, theirs=None):
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    gd_params = [gd.tensor(a.copy(), requires_grad=True) for a in init]
    torch_params = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    ours = gd.optim.Adafactor(gd_params, **opts)
    theirs = torch.optim.Adafactor(torch_params, **opts)
    _steps(rng, ours, theirs, gd_params, torch_params, steps, dtype)
    return ours, theirs, gd_params, torch_params


def _steps(rng, ours, theirs, gd_params, torch_params, steps, dtype=np.float64):
    for _ in range(steps):
        for p, t in zip(gd_params, torch_params):
            g = rng.standard_normal(t.shape).astype(dtype)
            p.grad, t.grad = gd.tensor(g.copy()), torch.tensor(g.copy())
        ours.step()
        theirs.step()


@pytest.mark.parametrize("opts", [
    {}, {"weight_decay": 0.1, "maximize": True}, {"lr": 0.5, "d": 2.0, "beta2_decay": -0.5},
    {"eps": (1e-20, 1e-2), "lr": 0.05}])
def test_adafactor_matches_torch(rng, opts):
    _, _, gd_params, torch_params = _run(rng, opts)
    for p, t in zip(gd_params, torch_params):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_adafactor_float32(rng):
    _, _, gd_params, torch_params = _run(rng, {}, dtype=np.float32)
    for p, t in zip(gd_params, torch_params):
        assert p.dtype == gd.float32
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=2e-5, atol=1e-6)


def test_adafactor_state_dict_round_trips(rng):
    ours, theirs, gd_params, torch_params = _run(rng, {"lr": 0.1})
    state = theirs.state_dict()["state"]
    assert {k: tuple(v.shape) for k, v in state[0].items() if k != "step"} == \
        {k: v.shape for k, v in ours.state_dict()["state"][0].items() if k != "step"}
    # torch's state into a fresh gpudl optimizer over gpudl's (equal) parameters
    fresh = gd.optim.Adafactor(gd_params, lr=0.1)
    fresh.load_state_dict({"state": {i: {k: v.numpy() for k, v in s.items()}
                                     for i, s in state.items()},
                           "param_groups": theirs.state_dict()["param_groups"]})
    _steps(rng, fresh, theirs, gd_params, torch_params, 3)
    for p, t in zip(gd_params, torch_params):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14)
    # and gpudl's state into torch
    back = torch.optim.Adafactor(torch_params, lr=0.1)
    saved = fresh.state_dict()
    back.load_state_dict({"state": {i: {k: torch.tensor(v.numpy() if hasattr(v, "numpy")
                                                        else float(v))
                                        for k, v in s.items()}
                                    for i, s in saved["state"].items()},
                          "param_groups": saved["param_groups"]})
    _steps(rng, fresh, back, gd_params, torch_params, 2)
    for p, t in zip(gd_params, torch_params):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_adafactor_refusals():
    params = [gd.zeros(3, requires_grad=True)]
    for opts, message in [({"lr": -1.0}, "lr"), ({"beta2_decay": 0.5}, "beta2_decay"),
                          ({"eps": (-1.0, 1e-3)}, "epsilon1"), ({"eps": (None, -1)}, "epsilon2"),
                          ({"d": 0.5}, "clipping threshold d"),
                          ({"weight_decay": -0.1}, "weight_decay")]:
        with pytest.raises(ValueError, match=message):
            gd.optim.Adafactor(params, **opts)
