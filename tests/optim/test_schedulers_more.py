"""OneCycleLR, CyclicLR, LinearLR, ConstantLR, PolynomialLR, MultiplicativeLR,
CosineAnnealingWarmRestarts, SequentialLR and ChainedScheduler against torch's, stepped side by
side with several parameter groups: learning rates, cycled momentum (SGD) and beta1 (Adam), and a
state dict saved mid-way that resumes a fresh scheduler on the same sequence."""

import copy
import warnings

import numpy as np
import pytest

import gpudl as gd
import gpudl.optim as optim
from gpudl.optim import lr_scheduler as sched

torch = pytest.importorskip("torch")
TS = torch.optim.lr_scheduler
STEPS = 60
# flags of the step machinery, not schedule state: torch's, and gpudl's
BOOKKEEPING = {"_get_lr_called_within_step", "_is_initial"}
LRS = (0.1, 0.02, 0.5)


def _optimizers(kind="SGD"):
    params = [gd.tensor(np.ones(2), requires_grad=True) for _ in LRS]
    tparams = [torch.ones(2, dtype=torch.float64, requires_grad=True) for _ in LRS]
    options = {"momentum": 0.9} if kind == "SGD" else {}
    opt = getattr(optim, kind)([{"params": [p], "lr": lr} for p, lr in zip(params, LRS)],
                               **options)
    topt = getattr(torch.optim, kind)([{"params": [p], "lr": lr}
                                       for p, lr in zip(tparams, LRS)], **options)
    return opt, topt


def _lambda_a(epoch):
    return 0.97 if epoch % 3 else 1.02


def _lambda_b(epoch):
    return 0.9


# (name, options, optimizer kind); each builds (ours, theirs) from an (opt, module) pair
CASES = [
    ("OneCycleLR", dict(max_lr=[0.3, 0.05, 1.0], total_steps=STEPS + 1), "SGD"),
    ("OneCycleLR", dict(max_lr=0.4, epochs=4, steps_per_epoch=16, anneal_strategy="linear",
                        three_phase=True, pct_start=0.25), "Adam"),
    ("OneCycleLR", dict(max_lr=0.2, total_steps=STEPS + 1, cycle_momentum=False,
                        div_factor=10.0, final_div_factor=100.0), "Adam"),
    ("CyclicLR", dict(base_lr=0.01, max_lr=[0.1, 0.2, 0.3], step_size_up=7), "SGD"),
    ("CyclicLR", dict(base_lr=[0.01, 0.02, 0.03], max_lr=0.5, step_size_up=4,
                      step_size_down=9, mode="triangular2", base_momentum=0.7,
                      max_momentum=0.95), "Adam"),
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.2, step_size_up=5, mode="exp_range",
                      gamma=0.97), "SGD"),
    ("CyclicLR", dict(base_lr=0.01, max_lr=0.2, step_size_up=5, scale_fn=lambda x: 0.9 ** x,
                      scale_mode="iterations", cycle_momentum=False), "Adagrad"),
    ("LinearLR", dict(start_factor=0.2, end_factor=0.9, total_iters=13), "SGD"),
    ("LinearLR", dict(), "Adam"),
    ("ConstantLR", dict(factor=0.4, total_iters=11), "SGD"),
    ("PolynomialLR", dict(total_iters=23, power=2.5), "SGD"),
    ("MultiplicativeLR", dict(lr_lambda=_lambda_a), "SGD"),
    ("MultiplicativeLR", dict(lr_lambda=[_lambda_a, _lambda_b, _lambda_a]), "SGD"),
    ("CosineAnnealingWarmRestarts", dict(T_0=5), "SGD"),
    ("CosineAnnealingWarmRestarts", dict(T_0=3, T_mult=2, eta_min=0.003), "Adam"),
]


def _momenta(opt):
    return [g["betas"][0] if "betas" in g else g.get("momentum") for g in opt.param_groups]


def _check_same(ours, theirs, opt, topt, where):
    np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12,
                               atol=1e-15, err_msg=where)
    assert [g["lr"] for g in opt.param_groups] == ours.get_last_lr()
    np.testing.assert_allclose(np.array(_momenta(opt), dtype=float),
                               np.array(_momenta(topt), dtype=float), rtol=1e-12, err_msg=where)


def _step(opt, topt, ours, theirs):
    opt.step()
    topt.step()
    ours.step()
    theirs.step()


def _case_id(value):
    """A test id that is the same in every process (pytest-xdist compares them): functions by
    name, not by address."""
    if callable(value):
        return value.__name__
    if isinstance(value, dict):
        return "-".join(f"{k}={_case_id(v)}" for k, v in value.items()) or "defaults"
    if isinstance(value, (list, tuple)):
        return ",".join(_case_id(v) for v in value)
    return str(value)


@pytest.mark.parametrize("name, options, kind", CASES, ids=_case_id)
def test_matches_torch_step_by_step_and_resumes_from_a_state_dict(name, options, kind):
    opt, topt = _optimizers(kind)
    ours = getattr(sched, name)(opt, **options)
    theirs = getattr(TS, name)(topt, **options)
    _check_same(ours, theirs, opt, topt, "construction")
    saved = None
    for step in range(STEPS):
        _step(opt, topt, ours, theirs)
        _check_same(ours, theirs, opt, topt, f"step {step}")
        if step == STEPS // 3:
            saved = copy.deepcopy(ours.state_dict())
            saved_groups = copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                                          for g in opt.param_groups])
            assert set(saved) - BOOKKEEPING == set(theirs.state_dict()) - BOOKKEEPING
    # a fresh optimizer and scheduler, resumed from the mid-way state, follow the same rates
    opt2, topt2 = _optimizers(kind)
    for group, state in zip(opt2.param_groups, saved_groups):
        group.update(state)
    resumed = getattr(sched, name)(opt2, **options)
    resumed.load_state_dict(saved)
    for group, state in zip(opt2.param_groups, saved_groups):
        group.update(state)
    reference_opt, _ = _optimizers(kind)
    reference = getattr(sched, name)(reference_opt, **options)
    for _ in range(STEPS // 3 + 1):
        reference_opt.step()
        reference.step()
    for step in range(STEPS - STEPS // 3 - 1):
        opt2.step()
        resumed.step()
        reference_opt.step()
        reference.step()
        assert resumed.get_last_lr() == pytest.approx(reference.get_last_lr(), rel=1e-13)
        assert _momenta(opt2) == pytest.approx(_momenta(reference_opt), rel=1e-13)


def _composites(opt, lib):
    return {
        "sequential": lambda: lib.SequentialLR(
            opt, [lib.LinearLR(opt, start_factor=0.1, total_iters=5),
                  lib.CosineAnnealingLR(opt, T_max=9),
                  lib.ExponentialLR(opt, gamma=0.95)], milestones=[5, 20]),
        "chained": lambda: lib.ChainedScheduler(
            [lib.ConstantLR(opt, factor=0.5, total_iters=4), lib.ExponentialLR(opt, gamma=0.9),
             lib.MultiStepLR(opt, milestones=[7, 13], gamma=0.5)]),
        "chained_sequential": lambda: lib.ChainedScheduler(
            [lib.SequentialLR(opt, [lib.ConstantLR(opt, factor=0.3, total_iters=3),
                                    lib.StepLR(opt, step_size=4, gamma=0.7)], milestones=[6]),
             lib.MultiplicativeLR(opt, lr_lambda=_lambda_b)]),
    }


@pytest.mark.parametrize("which", ["sequential", "chained", "chained_sequential"])
def test_composites_match_torch_and_round_trip(which):
    opt, topt = _optimizers()
    ours = _composites(opt, sched)[which]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # torch: step order warnings
        theirs = _composites(topt, TS)[which]()
    _check_same(ours, theirs, opt, topt, "construction")
    for step in range(STEPS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _step(opt, topt, ours, theirs)
        _check_same(ours, theirs, opt, topt, f"step {step}")
        if step == 10:
            state = copy.deepcopy(ours.state_dict())
            assert set(state) - BOOKKEEPING == set(theirs.state_dict()) - BOOKKEEPING
            assert len(state["_schedulers"]) == len(theirs.state_dict()["_schedulers"])
            lrs = ours.get_last_lr()
    assert ours.state_dict() != state
    ours.load_state_dict(state)
    assert ours.state_dict() == state
    assert ours.get_last_lr() == lrs


def test_bad_arguments_are_refused():
    opt, _ = _optimizers()
    adagrad, _ = _optimizers("Adagrad")
    with pytest.raises(ValueError, match="factor"):
        sched.ConstantLR(opt, factor=1.5)
    with pytest.raises(ValueError, match="start_factor"):
        sched.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="T_0"):
        sched.CosineAnnealingWarmRestarts(opt, T_0=0)
    with pytest.raises(ValueError, match="T_mult"):
        sched.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=0)
    with pytest.raises(ValueError, match="total_steps"):
        sched.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="pct_start"):
        sched.OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=1.5)
    with pytest.raises(ValueError, match="max_lr must have one entry per parameter group"):
        sched.OneCycleLR(opt, max_lr=[0.1, 0.2], total_steps=10)
    before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                            for g in adagrad.param_groups])
    with pytest.raises(ValueError, match="momentum or betas"):
        sched.OneCycleLR(adagrad, max_lr=0.1, total_steps=10)
    with pytest.raises(ValueError, match="momentum or betas"):
        sched.CyclicLR(adagrad, base_lr=0.01, max_lr=0.1)
    with pytest.raises(ValueError, match="max_momentum must have one entry per parameter"):
        sched.CyclicLR(opt, base_lr=0.01, max_lr=0.1, max_momentum=[0.9])
    assert [{k: v for k, v in g.items() if k != "params"}
            for g in adagrad.param_groups] == before, "a refused scheduler changes nothing"
    assert [g["lr"] for g in opt.param_groups] == list(LRS)
    with pytest.raises(ValueError, match="mode"):
        sched.CyclicLR(opt, 0.01, 0.1, mode="sawtooth")
    with pytest.raises(ValueError, match="milestones"):
        sched.SequentialLR(opt, [sched.StepLR(opt, 2), sched.StepLR(opt, 3)], milestones=[])
    other, _ = _optimizers()
    with pytest.raises(ValueError, match="another optimizer"):
        sched.ChainedScheduler([sched.StepLR(opt, 2), sched.StepLR(other, 3)])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        sched.SequentialLR(opt, [sched.ReduceLROnPlateau(opt)], milestones=[])
    one_cycle = sched.OneCycleLR(opt, max_lr=0.1, total_steps=3)
    for _ in range(2):
        one_cycle.step()
    one_cycle.step()
    with pytest.raises(ValueError, match="total_steps"):
        one_cycle.step()


@pytest.mark.parametrize("make", [
    lambda o: sched.LinearLR(o, start_factor=0.25, total_iters=4),
    lambda o: sched.ConstantLR(o, factor=0.5, total_iters=3),
    lambda o: sched.PolynomialLR(o, total_iters=5, power=2.0),
    lambda o: sched.MultiplicativeLR(o, lr_lambda=_lambda_a),
    lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2),
    lambda o: sched.SequentialLR(o, [sched.ConstantLR(o, factor=0.5, total_iters=2),
                                     sched.ExponentialLR(o, gamma=0.8)], milestones=[3]),
], ids=["LinearLR", "ConstantLR", "PolynomialLR", "MultiplicativeLR", "WarmRestarts",
        "SequentialLR"])
def test_a_tensor_lr_is_written_in_place_with_the_same_values(make):
    """A 0-d tensor lr (capturable optimizers, CUDA graphs) keeps its identity and follows the
    rates a float lr gets."""
    p = gd.tensor(np.ones(2), requires_grad=True)
    lr = gd.tensor(0.1, dtype="float64")
    opt = optim.Adam([p], lr=lr, capturable=True)
    float_opt = optim.Adam([gd.tensor(np.ones(2), requires_grad=True)], lr=0.1)
    ours, reference = make(opt), make(float_opt)
    for _ in range(12):
        ours.step()
        reference.step()
        assert opt.param_groups[0]["lr"] is lr
        assert lr.item() == pytest.approx(float_opt.param_groups[0]["lr"], rel=1e-12)
