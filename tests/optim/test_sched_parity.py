"""Schedulers against torch's when the optimizer changes under them: a parameter group added
after the scheduler was made (torch scales it, refuses, or gives it the default min_lr, as each
schedule reads per-group lists), and ReduceLROnPlateau's deprecated ``step(metrics, epoch)``."""

import warnings

import numpy as np
import pytest

import gpudl as gd
import gpudl.optim as optim
from gpudl.optim import lr_scheduler as sched

torch = pytest.importorskip("torch")
TS = torch.optim.lr_scheduler
LRS = (0.1, 0.03)


def _pair(rng):
    values = [rng.standard_normal(3) for _ in LRS]
    opt = optim.SGD([{"params": [gd.tensor(v, requires_grad=True)], "lr": lr}
                     for v, lr in zip(values, LRS)], momentum=0.9)
    topt = torch.optim.SGD([{"params": [torch.tensor(v, requires_grad=True)], "lr": lr}
                            for v, lr in zip(values, LRS)], momentum=0.9)
    return opt, topt


def _add_group(opt, topt, rng):
    value = rng.standard_normal(2)
    opt.add_param_group({"params": [gd.tensor(value, requires_grad=True)], "lr": 0.5})
    topt.add_param_group({"params": [torch.tensor(value, requires_grad=True)], "lr": 0.5})


def _lrs(opt):
    return [float(group["lr"]) for group in opt.param_groups]


def _step(scheduler, metric):
    if metric is None:
        scheduler.step()
    else:
        scheduler.step(metric)


def _state(scheduler):
    return {k: v for k, v in scheduler.__dict__.items() if k != "optimizer"}


# (name, args, metric): a metric steps ReduceLROnPlateau
SCALING = [
    ("StepLR", (2, 0.5), None), ("ExponentialLR", (0.9,), None), ("LinearLR", (0.2, 1.0, 4), None),
    ("PolynomialLR", (5, 2.0), None), ("ReduceLROnPlateau", ("min", 0.5, 0), 1.0),
]
REFUSING = [
    ("LambdaLR", (lambda epoch: 0.9 ** epoch,), None), ("MultiplicativeLR", (lambda e: 0.9,), None),
    ("CosineAnnealingLR", (4,), None), ("CosineAnnealingWarmRestarts", (3, 2), None),
    ("CyclicLR", (0.01, 0.1, 3), None),
]


@pytest.mark.parametrize("name, args, metric", SCALING, ids=lambda v: str(v)[:20])
def test_a_group_added_later_is_scheduled_as_torch(name, args, metric, rng):
    opt, topt = _pair(rng)
    scheduler, tscheduler = getattr(sched, name)(opt, *args), getattr(TS, name)(topt, *args)
    for epoch in range(8):
        if epoch == 2:
            _add_group(opt, topt, rng)
        opt.step(), topt.step()
        _step(scheduler, metric), _step(tscheduler, metric)
        np.testing.assert_allclose(_lrs(opt), _lrs(topt), rtol=1e-12)
        np.testing.assert_allclose(scheduler.get_last_lr(), tscheduler.get_last_lr(), rtol=1e-12)


@pytest.mark.parametrize("name, args, metric", REFUSING, ids=lambda v: str(v)[:20])
def test_a_group_added_later_is_refused_where_the_schedule_reads_base_lrs(name, args, metric, rng):
    opt, topt = _pair(rng)
    scheduler = getattr(sched, name)(opt, *args)
    opt.step()
    scheduler.step()
    _add_group(opt, topt, rng)
    before, lrs = _state(scheduler), _lrs(opt)
    with pytest.raises(ValueError, match=rf"{name}.step: expected the 2 param groups .* got 3"):
        scheduler.step()
    assert _state(scheduler) == before and _lrs(opt) == lrs     # the refused step changed nothing


def test_closed_form_step_refuses_a_group_added_later(rng):
    opt, topt = _pair(rng)
    scheduler = sched.StepLR(opt, 2)
    _add_group(opt, topt, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="expected the 2 param groups"):
            scheduler.step(3)          # the closed form reads base_lrs


@pytest.mark.parametrize("which", ["sequential", "chained"])
def test_a_composite_refuses_a_group_added_later_before_any_scheduler_steps(which, rng):
    opt, topt = _pair(rng)
    watched = sched.ExponentialLR(opt, 0.9)
    if which == "sequential":           # the next step starts ExponentialLR: its closed form
        composite = sched.SequentialLR(opt, [sched.ConstantLR(opt, 0.5, 2), watched], [2])
        refusing = "ExponentialLR"
        opt.step()
        composite.step()
    else:
        composite = sched.ChainedScheduler([watched, sched.CosineAnnealingLR(opt, 5)])
        refusing = "CosineAnnealingLR"
    _add_group(opt, topt, rng)
    epochs, lrs = (getattr(composite, "last_epoch", None), watched.last_epoch), _lrs(opt)
    with pytest.raises(ValueError, match=f"{refusing}.step: expected the 2 param groups"):
        composite.step()
    assert (getattr(composite, "last_epoch", None), watched.last_epoch) == epochs
    assert _lrs(opt) == lrs


def test_plateau_with_one_min_lr_per_group_refuses_a_group_added_later(rng):
    opt, topt = _pair(rng)
    scheduler = sched.ReduceLROnPlateau(opt, patience=0, min_lr=[0.01, 0.02])
    scheduler.step(1.0)
    _add_group(opt, topt, rng)
    before = _state(scheduler)
    with pytest.raises(RuntimeError, match="expected 2 param groups .* got 3"):
        scheduler.step(2.0)
    assert _state(scheduler) == before
    scheduler.min_lrs = [0.01, 0.02, 0.03]       # torch's remedy
    scheduler.step(2.0)


def test_plateau_step_with_an_epoch_warns_and_sets_it_as_torch(rng):
    opt, topt = _pair(rng)
    scheduler, tscheduler = sched.ReduceLROnPlateau(opt, patience=1), TS.ReduceLROnPlateau(
        topt, patience=1)
    metrics = rng.uniform(1.0, 2.0, size=6)
    for i, metric in enumerate(metrics):
        if i == 2:
            with pytest.warns(UserWarning, match="deprecated"):
                scheduler.step(metric, 7)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tscheduler.step(metric, 7)
        else:
            scheduler.step(metric), tscheduler.step(metric)
        assert scheduler.last_epoch == tscheduler.last_epoch
        np.testing.assert_allclose(_lrs(opt), _lrs(topt), rtol=1e-12)


ORDERS = {   # what is called after the scheduler is made
    "optimizer first": ("opt", "sched", "opt", "sched"),
    "scheduler first": ("sched", "opt", "sched"),
    "scheduler twice": ("sched", "sched", "opt", "sched"),
    "step replaced": ("replace", "opt", "sched"),
}
WARNING_CASES = [
    ("StepLR", lambda S, o: S.StepLR(o, 2)), ("CyclicLR", lambda S, o: S.CyclicLR(o, 0.01, 0.1)),
    ("SequentialLR", lambda S, o: S.SequentialLR(o, [S.ConstantLR(o), S.StepLR(o, 2)], [2])),
    ("ChainedScheduler", lambda S, o: S.ChainedScheduler([S.ConstantLR(o), S.StepLR(o, 2)])),
    ("ReduceLROnPlateau", lambda S, o: S.ReduceLROnPlateau(o)),
    ("CosineAnnealingWarmRestarts", lambda S, o: S.CosineAnnealingWarmRestarts(o, 2)),
]


def _warnings_of(lib, scheduler_module, make, order, rng):
    opt = lib.SGD([_parameter(lib, rng)], lr=0.1, momentum=0.9)
    scheduler = make(scheduler_module, opt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for call in order:
            if call == "replace":
                opt.step = lambda closure=None: None
            elif call == "opt":
                opt.step()
            elif isinstance(scheduler, scheduler_module.ReduceLROnPlateau):
                scheduler.step(1.0)
            else:
                scheduler.step()
    return [(str(w.message), w.filename) for w in caught]


def _parameter(lib, rng):
    value = rng.standard_normal(3)
    if lib is optim:
        tensor = gd.tensor(value, requires_grad=True)
        tensor.grad = gd.tensor(rng.standard_normal(3))
    else:
        tensor = torch.tensor(value, requires_grad=True)
        tensor.grad = torch.tensor(rng.standard_normal(3))
    return tensor


@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize("name, make", WARNING_CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_scheduler_step_before_optimizer_step_warns_as_torch(name, make, order, rng):
    ours = _warnings_of(optim, sched, make, ORDERS[order], rng)
    theirs = _warnings_of(torch.optim, TS, make, ORDERS[order], rng)
    assert len(ours) == len(theirs)
    for (message, filename), (tmessage, tfilename) in zip(ours, theirs):
        before = "Detected call" in tmessage
        assert ("before optimizer.step()" in message) == before
        assert ("was replaced" in message) == (not before)
        # pointing at the caller, as torch's: this file, or the composite that stepped it
        assert filename.endswith("test_sched_parity.py") == tfilename.endswith(__file__[-20:])


def test_the_step_wrapper_keeps_a_step_set_on_the_instance_and_holds_no_reference(rng):
    import gc
    import weakref
    opt = optim.SGD([_parameter(optim, rng)], lr=0.1)
    calls = []

    def counted_step(closure=None):          # as gpudl.keras sets on the optimizer it builds
        calls.append(closure)
        return optim.SGD.step(opt, closure)
    opt.step = counted_step
    scheduler = sched.StepLR(opt, 2)
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler.step()
    assert calls == [None]
    fresh = optim.SGD([_parameter(optim, rng)], lr=0.1)
    sched.StepLR(fresh, 2)
    alive = weakref.ref(fresh)
    del fresh
    gc.collect()
    assert alive() is None
