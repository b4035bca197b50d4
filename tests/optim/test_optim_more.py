"""NAdam, RAdam, Adamax, Adadelta, Rprop, ASGD and LBFGS against torch.optim: a small float64
model trained on fresh random batches by both, with two parameter groups, weight decay and
maximize; the same parameters after N steps, state dicts with torch's keys that round-trip (and
torch's own state dict loads and continues); bad options refused. Their float32 updates and
fused GPU kernels are checked with every optimizer's (optim_cases.CASES)."""

import copy

import numpy as np
import pytest
from optim_cases import CASES as ALL_CASES
from optim_cases import case_id

import gpudl as gd
import gpudl.optim as optim
from gpudl import nn

torch = pytest.importorskip("torch")

NEW = ("NAdam", "RAdam", "Adamax", "Adadelta", "Rprop", "ASGD")
CASES = [case for case in ALL_CASES if case[0] in NEW]
STEPS = 25


def _models(rng):
    """The same MLP (4 -> 6 -> 2) in torch and gpudl, float64."""
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(),
                                 torch.nn.Linear(6, 2)).double()
    for p in theirs.parameters():
        p.data = torch.tensor(rng.standard_normal(p.shape) * 0.5)
    ours = nn.Sequential(nn.Linear(4, 6, dtype="float64"), nn.Tanh(),
                         nn.Linear(6, 2, dtype="float64"))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def _groups(params, options):
    """Two groups: the first layer with the options, the second with its own lr."""
    params = list(params)
    return [{"params": params[:2]}, {"params": params[2:], "lr": options.get("lr", 1.0) * 0.5}]


def _train_step(ours, theirs, opt, topt, rng, closure=False):
    x, y = rng.standard_normal((8, 4)), rng.standard_normal((8, 2))
    gx, gy, tx, ty = gd.tensor(x), gd.tensor(y), torch.tensor(x), torch.tensor(y)

    def ours_loss():
        opt.zero_grad()
        loss = ((ours(gx) - gy) ** 2).mean()
        loss.backward()
        return loss

    def theirs_loss():
        topt.zero_grad()
        loss = ((theirs(tx) - ty) ** 2).mean()
        loss.backward()
        return loss

    if closure:
        return opt.step(ours_loss), topt.step(theirs_loss)
    ours_loss(), theirs_loss()
    opt.step()
    topt.step()


def _assert_same_parameters(ours, theirs, rtol=1e-10, atol=1e-12):
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_training_matches_torch(case, rng):
    name, options = case
    ours, theirs = _models(rng)
    start = [p.numpy().copy() for p in ours.parameters()]
    opt = getattr(optim, name)(_groups(ours.parameters(), options), **options)
    topt = getattr(torch.optim, name)(_groups(theirs.parameters(), options), **options)
    for _ in range(STEPS):
        _train_step(ours, theirs, opt, topt, rng)
    _assert_same_parameters(ours, theirs)
    moved = max(np.abs(p.numpy() - s).max() for p, s in zip(ours.parameters(), start))
    assert moved > 1e-3


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_state_dict_has_torchs_keys_round_trips_and_loads_torchs(case, rng):
    name, options = case
    ours, theirs = _models(rng)
    opt = getattr(optim, name)(_groups(ours.parameters(), options), **options)
    topt = getattr(torch.optim, name)(_groups(theirs.parameters(), options), **options)
    for _ in range(5):
        _train_step(ours, theirs, opt, topt, rng)
    state, t_state = opt.state_dict(), topt.state_dict()
    assert state["state"].keys() == t_state["state"].keys()
    for i, entry in t_state["state"].items():
        assert set(state["state"][i]) == set(entry)
        for key, value in entry.items():       # the same values (steps and scalars included)
            np.testing.assert_allclose(np.asarray(gd.tensor(state["state"][i][key]).numpy()
                                                  if hasattr(state["state"][i][key], "numpy")
                                                  else state["state"][i][key], dtype=float),
                                       value.numpy(), rtol=1e-10, atol=1e-14, err_msg=key)
    for group, t_group in zip(state["param_groups"], t_state["param_groups"]):
        assert group.keys() == t_group.keys()
        assert group == t_group
    # a fresh optimizer loading our state dict continues exactly as the original
    batches = [(rng.standard_normal((8, 4)), rng.standard_normal((8, 2))) for _ in range(4)]
    twin = copy.deepcopy(ours)
    twin_opt = getattr(optim, name)(_groups(twin.parameters(), options), **options)
    twin_opt.load_state_dict(copy.deepcopy(state))
    # and one loading torch's (converted to arrays) continues as torch
    from_torch = copy.deepcopy(ours)
    from_torch_opt = getattr(optim, name)(_groups(from_torch.parameters(), options), **options)
    from_torch_opt.load_state_dict({"state": {i: {k: v.numpy() for k, v in s.items()}
                                              for i, s in t_state["state"].items()},
                                    "param_groups": t_state["param_groups"]})
    for model, o in ((ours, opt), (twin, twin_opt), (from_torch, from_torch_opt)):
        for x, y in batches:
            o.zero_grad()
            ((model(gd.tensor(x)) - gd.tensor(y)) ** 2).mean().backward()
            o.step()
    for x, y in batches:
        topt.zero_grad()
        ((theirs(torch.tensor(x)) - torch.tensor(y)) ** 2).mean().backward()
        topt.step()
    for a, b in zip(ours.parameters(), twin.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    _assert_same_parameters(from_torch, theirs)


def _rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("options", [dict(), dict(history_size=3, max_iter=7),
                                     dict(lr=0.5, max_iter=5, max_eval=7)])
def test_lbfgs_matches_torch(line_search_fn, options, rng):
    start = rng.standard_normal(2) * 0.5 - 1
    x, tx = gd.tensor(start, requires_grad=True), torch.tensor(start, requires_grad=True)
    options = dict(options)
    lr = options.pop("lr", 1 if line_search_fn else 1e-3)
    opt = optim.LBFGS([x], lr=lr, line_search_fn=line_search_fn, **options)
    topt = torch.optim.LBFGS([tx], lr=lr, line_search_fn=line_search_fn, **options)

    def closure(o, v):
        def run():
            o.zero_grad()
            loss = _rosenbrock(v)
            loss.backward()
            return loss
        return run

    for _ in range(6):
        loss, t_loss = opt.step(closure(opt, x)), topt.step(closure(topt, tx))
        # rounding differences (an ulp in the loss's ops) grow along the path: 1e-12 here
        assert float(loss) == pytest.approx(t_loss.item(), rel=1e-9, abs=1e-12)
        np.testing.assert_allclose(x.numpy(), tx.detach().numpy(), rtol=1e-9, atol=1e-10)
        assert opt.state[x]["func_evals"] == topt.state[tx]["func_evals"]
        assert opt.state[x]["n_iter"] == topt.state[tx]["n_iter"]
    assert abs(start - x.numpy()).max() > 1e-2
    state, t_state = opt.state_dict(), topt.state_dict()
    assert set(state["state"][0]) == set(t_state["state"][0])
    assert state["param_groups"] == t_state["param_groups"]


def test_lbfgs_on_a_model_and_its_state_dict_round_trip(rng):
    ours, theirs = _models(rng)
    opt = optim.LBFGS(ours.parameters(), history_size=5, max_iter=4,
                      line_search_fn="strong_wolfe")
    topt = torch.optim.LBFGS(theirs.parameters(), history_size=5, max_iter=4,
                             line_search_fn="strong_wolfe")
    for _ in range(4):
        loss, t_loss = _train_step(ours, theirs, opt, topt, rng, closure=True)
        assert float(loss) == pytest.approx(t_loss.item(), rel=1e-10)
    _assert_same_parameters(ours, theirs, rtol=1e-8, atol=1e-10)
    twin = copy.deepcopy(ours)
    twin_opt = optim.LBFGS(twin.parameters(), history_size=5, max_iter=4,
                           line_search_fn="strong_wolfe")
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    x, y = gd.tensor(rng.standard_normal((8, 4))), gd.tensor(rng.standard_normal((8, 2)))
    for model, o in ((ours, opt), (twin, twin_opt)):
        def closure():
            o.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss
        o.step(closure)
    for a, b in zip(ours.parameters(), twin.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("make, error, message", [
    (lambda p: optim.NAdam(p, lr=-1), ValueError, "NAdam: invalid lr -1"),
    (lambda p: optim.NAdam(p, momentum_decay=-0.1), ValueError, "invalid momentum_decay"),
    (lambda p: optim.RAdam(p, betas=(0.9, 1.0)), ValueError, "beta parameter at index 1"),
    (lambda p: optim.Adamax(p, eps=-1), ValueError, "Adamax: invalid eps"),
    (lambda p: optim.Adadelta(p, rho=1.5), ValueError, r"invalid rho 1.5 \(expected in"),
    (lambda p: optim.Rprop(p, etas=(1.2, 0.5)), ValueError, "0 < etaminus < 1 < etaplus"),
    (lambda p: optim.Rprop(p, step_sizes=(1.0,)), ValueError, "step_sizes must be a pair"),
    (lambda p: optim.ASGD(p, weight_decay=-1), ValueError, "ASGD: invalid weight_decay"),
    (lambda p: optim.NAdam(p, capturable=True), NotImplementedError, "capturable=True"),
    (lambda p: optim.Adadelta(p, differentiable=True), NotImplementedError, "differentiable"),
    (lambda p: optim.LBFGS(p, line_search_fn="armijo"), ValueError,
     "line_search_fn must be None or 'strong_wolfe', got 'armijo'"),
    (lambda p: optim.LBFGS(p, history_size=0), ValueError, "history_size must be a positive"),
    (lambda p: optim.LBFGS([{"params": p[:1]}, {"params": p[1:]}]), ValueError,
     "one parameter group"),
])
def test_invalid_options(make, error, message):
    params = [gd.zeros(3, requires_grad=True), gd.zeros(2, requires_grad=True)]
    with pytest.raises(error, match=message):
        make(params)


def test_lbfgs_needs_a_closure():
    opt = optim.LBFGS([gd.zeros(3, requires_grad=True)])
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step()
