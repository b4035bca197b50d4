"""Schedulers against torch.optim.lr_scheduler, step by step."""

import copy
import json
import warnings

import numpy as np
import pytest

import gpudl as gd
import gpudl.optim as optim
from gpudl.optim import lr_scheduler as sched

torch = pytest.importorskip("torch")

SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("StepLR", dict(step_size=1)),
    ("StepLR", dict(step_size=2.0, gamma=0.5)),     # a whole float, as torch's tutorial passes
    ("MultiStepLR", dict(milestones=[2, 5, 5, 11], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=7)),
    ("CosineAnnealingLR", dict(T_max=4, eta_min=0.01)),
    ("LambdaLR", dict(lr_lambda=lambda epoch: 1 / (1 + epoch) ** 0.5)),
    ("LambdaLR", dict(lr_lambda=[lambda e: 0.95 ** e, lambda e: min(1.0, (e + 1) / 5)])),
]
# ids without object addresses: pytest-xdist workers must collect the same names
SCHEDULER_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(SCHEDULERS)]


def _optimizers(lrs=(0.1, 0.02)):
    params = [gd.zeros(2, requires_grad=True) for _ in lrs]
    tparams = [torch.zeros(2, requires_grad=True) for _ in lrs]
    opt = optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], momentum=0.9)
    topt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(tparams, lrs)],
                           momentum=0.9)
    return opt, topt


@pytest.mark.parametrize("name, options", SCHEDULERS, ids=SCHEDULER_IDS)
def test_matches_torch_step_by_step(name, options):
    opt, topt = _optimizers()
    ours = getattr(sched, name)(opt, **options)
    theirs = getattr(torch.optim.lr_scheduler, name)(topt, **options)
    assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-15)
    for epoch in range(25):
        opt.step()
        topt.step()
        ours.step()
        theirs.step()
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-13,
                                   err_msg=f"epoch {epoch}")
        assert [g["lr"] for g in opt.param_groups] == ours.get_last_lr()


@pytest.mark.parametrize("name, options", SCHEDULERS, ids=SCHEDULER_IDS)
def test_deprecated_step_with_an_epoch_matches_torch(name, options):
    # step(epoch) jumps to that epoch (torch's closed form where it has one), warning as torch
    opt, topt = _optimizers()
    ours = getattr(sched, name)(opt, **options)
    theirs = getattr(torch.optim.lr_scheduler, name)(topt, **options)
    for epoch in [None, 3, 7, None, 2, 11, None, 0, None]:
        opt.step()
        topt.step()
        if epoch is None:
            ours.step()
        else:
            with pytest.warns(UserWarning, match=r"step\(epoch\) is deprecated"):
                ours.step(epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.step(epoch)
        assert ours.last_epoch == theirs.last_epoch
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-13,
                                   err_msg=f"step({epoch})")


PLATEAU = [
    dict(),
    dict(mode="max", factor=0.5, patience=1),
    dict(threshold=0.1, threshold_mode="abs", patience=0, cooldown=2),
    dict(factor=0.2, patience=2, min_lr=[0.05, 0.001], threshold_mode="rel"),
    dict(mode="max", threshold=0.05, threshold_mode="abs", patience=1, cooldown=1, min_lr=0.03),
]


@pytest.mark.parametrize("options", PLATEAU, ids=str)
def test_reduce_on_plateau_matches_torch(options, rng):
    opt, topt = _optimizers()
    ours = sched.ReduceLROnPlateau(opt, **options)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **options)
    # improving, then a noisy plateau just above the best value, then improving again
    plateau = 0.5 + 0.001 + 0.02 * np.abs(rng.standard_normal(20))
    metrics = np.concatenate([np.linspace(1.0, 0.5, 6), plateau, np.linspace(0.5, 0.2, 6)])
    for epoch, m in enumerate(metrics):
        ours.step(gd.tensor(m) if epoch % 2 else float(m))
        theirs.step(float(m))
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-15), epoch
        assert ours.num_bad_epochs == theirs.num_bad_epochs
    assert ours.get_last_lr() != [0.1, 0.02]          # the schedule did reduce


def test_state_dict_round_trip_resumes_the_schedule():
    opt, _ = _optimizers()
    straight = sched.CosineAnnealingLR(opt, T_max=6, eta_min=0.001)
    expected = []
    for _ in range(12):
        straight.step()
        expected.append(straight.get_last_lr())

    opt1, _ = _optimizers()
    first = sched.CosineAnnealingLR(opt1, T_max=6, eta_min=0.001)
    for _ in range(5):
        first.step()
    saved_opt = copy.deepcopy(opt1.state_dict())
    saved = json.loads(json.dumps(first.state_dict()))     # survives a JSON round trip (gd.save)
    opt2, _ = _optimizers()
    opt2.load_state_dict(saved_opt)
    resumed = sched.CosineAnnealingLR(opt2, T_max=1)
    resumed.load_state_dict(saved)
    got = expected[:5]
    for _ in range(7):
        resumed.step()
        got.append(resumed.get_last_lr())
    assert got == expected


def test_lambda_state_dict_keeps_callable_objects_state():
    class Warmup:
        def __init__(self, steps):
            self.steps = steps

        def __call__(self, epoch):
            return min(1.0, (epoch + 1) / self.steps)

    opt, _ = _optimizers((0.1,))
    state = sched.LambdaLR(opt, Warmup(4)).state_dict()
    assert state["lr_lambdas"] == [{"steps": 4}]
    other = sched.LambdaLR(opt, Warmup(10))
    other.load_state_dict(state)
    assert other.lr_lambdas[0].steps == 4
    assert sched.LambdaLR(opt, lambda e: 1.0).state_dict()["lr_lambdas"] == [None]


def test_multistep_state_dict_through_json():
    opt, _ = _optimizers()
    s = sched.MultiStepLR(opt, milestones=[2, 4])
    s.step()
    copy_ = sched.MultiStepLR(_optimizers()[0], milestones=[9])
    copy_.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert copy_.milestones == {2: 1, 4: 1}


@pytest.mark.parametrize("make, error, message", [
    (lambda o: sched.StepLR(o, step_size=0), ValueError, "step_size must be a positive int"),
    (lambda o: sched.StepLR(o, step_size=1.5), ValueError, "step_size must be a positive int"),
    (lambda o: sched.CosineAnnealingLR(o, T_max=0), ValueError, "T_max"),
    (lambda o: sched.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor must be < 1.0"),
    (lambda o: sched.ReduceLROnPlateau(o, mode="lowest"), ValueError, "mode must be"),
    (lambda o: sched.ReduceLROnPlateau(o, threshold_mode="x"), ValueError, "threshold_mode"),
    (lambda o: sched.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, "expected 2 min_lrs"),
    (lambda o: sched.LambdaLR(o, [lambda e: 1.0]), ValueError, "expected 2 lr_lambdas"),
    (lambda o: sched.LambdaLR(o, 0.5), TypeError, "callable"),
    (lambda o: sched.StepLR("adam", step_size=1), TypeError, "expected an Optimizer"),
    (lambda o: sched.StepLR(o, step_size=2, last_epoch=3), KeyError, "initial_lr"),
])
def test_invalid_arguments(make, error, message):
    opt, _ = _optimizers()
    with pytest.raises(error, match=message):
        make(opt)
