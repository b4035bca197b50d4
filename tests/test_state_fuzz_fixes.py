"""Regression tests for the bugs the state/serialization fuzz (session 25, statefuzz) found:
checkpoints, optimizer/scheduler/module state, RNG state and data loading against torch CPU."""

import io

import numpy as np
import pytest

import gpudl as gd

torch = pytest.importorskip("torch")


def _pair(rng, lr=0.1):
    w0 = rng.standard_normal(4)
    tp = torch.nn.Parameter(torch.tensor(w0))
    gp = gd.nn.Parameter(gd.tensor(w0))
    return tp, torch.optim.SGD([tp], lr=lr, momentum=0.9), gp, gd.optim.SGD([gp], lr=lr, momentum=0.9)


def test_torch_checkpoint_with_multisteplr_milestones_resumes():
    """torch's MultiStepLR keeps its milestones in a collections.Counter: a torch.save'd
    {model, optimizer, scheduler} checkpoint was refused by gd.load."""
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((7, 4))
    tp, topt, gp, gopt = _pair(rng)
    tsched = torch.optim.lr_scheduler.MultiStepLR(topt, milestones=[2, 2, 5], gamma=0.5)
    gsched = gd.optim.lr_scheduler.MultiStepLR(gopt, milestones=[2, 2, 5], gamma=0.5)
    for g in grads[:3]:
        tp.grad = torch.tensor(g)
        topt.step()
        tsched.step()
    buf = io.BytesIO()
    torch.save({"w": tp.detach(), "opt": topt.state_dict(), "sched": tsched.state_dict()}, buf)
    ck = gd.load(io.BytesIO(buf.getvalue()))
    with gd.no_grad():
        gp.copy_(ck["w"])
    gopt.load_state_dict(ck["opt"])
    gsched.load_state_dict(ck["sched"])
    for g in grads[3:]:
        tp.grad = torch.tensor(g)
        topt.step()
        tsched.step()
        gp.grad = gd.tensor(g)
        gopt.step()
        gsched.step()
    np.testing.assert_allclose(gp.numpy(), tp.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert gsched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-15)
