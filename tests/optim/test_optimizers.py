"""gpudl.optim against torch.optim: same parameters, same gradients, N steps, float32 rounding."""

import copy

import numpy as np
import pytest
from optim_cases import (
    CASES,
    SHAPES,
    assert_close,
    case_id,
    gd_step,
    gradients,
    initial_params,
    run_pair,
    torch_step,
)

import gpudl as gd
import gpudl.optim as optim

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch(case, rng):
    ours, theirs, init = run_pair(torch, case, rng)
    assert_close(ours, theirs)
    moved = max(np.abs(a - a0).max() for a, a0 in zip(ours, init))
    assert moved > 1e-3                                    # the parameters did move


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_float64_parameters(name, rng):
    init = rng.standard_normal((4, 3))
    p, tp = gd.tensor(init, requires_grad=True), torch.tensor(init, requires_grad=True)
    opt, topt = getattr(optim, name)([p], lr=0.05), getattr(torch.optim, name)([tp], lr=0.05)
    for _ in range(6):
        g = rng.standard_normal((4, 3))
        gd_step(opt, [p], [g])
        torch_step(torch, topt, [tp], [g])
    assert p.dtype == np.float64
    np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_updates_in_place_and_keep_identity(rng):
    p = gd.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    array = p._data
    opt = optim.Adam([p], lr=0.1)
    gd_step(opt, [p], [rng.standard_normal((3, 4)).astype(np.float32)])
    assert p._data is array and p.dtype == np.float32
    assert opt.state[p]["step"] == 1


def test_param_groups_with_own_options(rng):
    init = initial_params(rng)
    params = [gd.tensor(a, requires_grad=True) for a in init]
    tparams = [torch.tensor(a, requires_grad=True) for a in init]
    groups = lambda ps: [{"params": ps[:2], "lr": 0.1, "momentum": 0.9},     # noqa: E731
                         {"params": ps[2:], "weight_decay": 0.1}]
    opt = optim.SGD(groups(params), lr=0.01)
    topt = torch.optim.SGD(groups(tparams), lr=0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert opt.param_groups[1]["momentum"] == 0
    for grads in gradients(rng, SHAPES, 8):
        gd_step(opt, params, grads)
        torch_step(torch, topt, tparams, grads)
    assert_close([p.numpy() for p in params], [t.detach().numpy() for t in tparams])


def test_add_param_group(rng):
    a, b = (gd.tensor(rng.standard_normal(3), requires_grad=True) for _ in range(2))
    opt = optim.Adam([a], lr=0.1)
    opt.add_param_group({"params": b, "betas": (0.5, 0.6)})
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["betas"] == (0.5, 0.6)
    with pytest.raises(ValueError, match="more than once"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="beta parameter at index 0"):
        opt.add_param_group({"params": [gd.zeros(2, requires_grad=True)], "betas": (1.0, 0.9)})
    assert len(opt.param_groups) == 2


@pytest.mark.parametrize("case", [c for c in CASES if c[1]], ids=case_id)
def test_state_dict_round_trip_continues_identically(case, rng):
    name, options = case
    init, grads = initial_params(rng), gradients(rng, SHAPES, 10)
    straight = [gd.tensor(a, requires_grad=True) for a in init]
    opt = getattr(optim, name)(straight, **options)
    for g in grads:
        gd_step(opt, straight, g)

    first = [gd.tensor(a, requires_grad=True) for a in init]
    opt1 = getattr(optim, name)(first, **options)
    for g in grads[:5]:
        gd_step(opt1, first, g)
    saved = copy.deepcopy(opt1.state_dict())
    resumed = [gd.tensor(p.numpy(), requires_grad=True) for p in first]
    opt2 = getattr(optim, name)(resumed, lr=123.0)          # options come from the state dict
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == options.get("lr", opt.defaults["lr"])
    for g in grads[5:]:
        gd_step(opt2, resumed, g)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_state_dict_layout_matches_torch(rng):
    init = initial_params(rng)
    params = [gd.tensor(a, requires_grad=True) for a in init]
    tparams = [torch.tensor(a, requires_grad=True) for a in init]
    opt = optim.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}], amsgrad=True)
    topt = torch.optim.Adam([{"params": tparams[:1]}, {"params": tparams[1:], "lr": 0.5}],
                            amsgrad=True)
    grads = gradients(rng, SHAPES, 1)[0]
    gd_step(opt, params, grads)
    torch_step(torch, topt, tparams, grads)
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert [g["params"] for g in ours["param_groups"]] == \
        [g["params"] for g in theirs["param_groups"]]
    assert ours["state"].keys() == theirs["state"].keys()
    for i, state in theirs["state"].items():
        assert set(ours["state"][i]) == set(state)
        assert ours["state"][i]["step"] == int(state["step"])
        np.testing.assert_allclose(ours["state"][i]["exp_avg"].numpy(), state["exp_avg"].numpy(),
                                   rtol=1e-6)
    for g, tg in zip(ours["param_groups"], theirs["param_groups"]):
        assert all(g[k] == tg[k] for k in g)


def test_loads_a_torch_optimizer_state_and_continues(rng):
    init = initial_params(rng)
    grads = gradients(rng, SHAPES, 8)
    tparams = [torch.tensor(a, requires_grad=True) for a in init]
    topt = torch.optim.Adam(tparams, lr=0.01, amsgrad=True)
    for g in grads[:4]:
        torch_step(torch, topt, tparams, g)
    state = topt.state_dict()
    converted = {"state": {i: {k: v.numpy() for k, v in s.items()}
                           for i, s in state["state"].items()},
                 "param_groups": state["param_groups"]}
    params = [gd.tensor(t.detach().numpy(), requires_grad=True) for t in tparams]
    opt = optim.Adam(params)
    opt.load_state_dict(converted)
    for g in grads[4:]:
        gd_step(opt, params, g)
        torch_step(torch, topt, tparams, g)
    assert_close([p.numpy() for p in params], [t.detach().numpy() for t in tparams])


def test_refused_load_changes_nothing(rng):
    p = gd.tensor(rng.standard_normal(3), requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    gd_step(opt, [p], [rng.standard_normal(3)])
    before = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(before)
    bad["state"][0]["momentum_buffer"] = np.zeros(4)
    bad["param_groups"][0]["lr"] = 7.0
    with pytest.raises(ValueError, match="momentum_buffer.*shape"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": before["param_groups"] * 2})
    with pytest.raises(ValueError, match="group 0 has 2 parameters"):
        opt.load_state_dict({"state": {}, "param_groups": [dict(before["param_groups"][0],
                                                                params=[0, 1])]})
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    np.testing.assert_array_equal(after["state"][0]["momentum_buffer"].numpy(),
                                  before["state"][0]["momentum_buffer"].numpy())


def test_zero_grad_and_parameters_without_grad(rng):
    a = gd.tensor(rng.standard_normal(3), requires_grad=True)
    b = gd.tensor(rng.standard_normal(2), requires_grad=True)
    b_before = b.numpy().copy()
    opt = optim.SGD([a, b], lr=0.1)
    gd_step(opt, [a], [np.ones(3)])
    np.testing.assert_array_equal(b.numpy(), b_before)     # no grad: untouched, no state
    assert b not in opt.state
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad.numpy(), np.zeros(3))
    opt.zero_grad()
    assert a.grad is None


def test_closure_is_evaluated_with_grad(rng):
    w = gd.tensor(rng.standard_normal(3), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with gd.no_grad():
        loss = opt.step(closure)
    np.testing.assert_allclose(loss.item(), (w.numpy() / 0.8) @ (w.numpy() / 0.8), rtol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD(p, lr=-0.1), "SGD: invalid lr -0.1"),
    (lambda p: optim.SGD(p, momentum=-1), "invalid momentum"),
    (lambda p: optim.SGD(p, nesterov=True), "Nesterov momentum requires"),
    (lambda p: optim.SGD(p, momentum=0.9, dampening=0.1, nesterov=True), "zero dampening"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), r"beta parameter at index 1 1.0 \(expected"),
    (lambda p: optim.Adam(p, betas=(-0.1, 0.9)), "beta parameter at index 0"),
    (lambda p: optim.Adam(p, betas=(0.9,)), "betas must be a pair"),
    (lambda p: optim.AdamW(p, eps=-1e-8), "AdamW: invalid eps"),
    (lambda p: optim.Adam(p, lr=float("nan")), "invalid lr nan"),
    (lambda p: optim.RMSprop(p, alpha=-0.5), "invalid alpha"),
    (lambda p: optim.Adagrad(p, lr_decay=-1), "invalid lr_decay"),
    (lambda p: optim.SGD([], lr=0.1), "empty parameter list"),
    (lambda p: optim.SGD([p[0], p[0]]), "more than once"),
    (lambda p: optim.SGD([p[0] * 2]), "non-leaf"),
])
def test_invalid_options(make, message):
    params = [gd.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match=message):
        make(params)


@pytest.mark.parametrize("params, message", [
    (gd.zeros(3, requires_grad=True), "iterable of Tensors or dicts, got Tensor"),
    ({gd.zeros(3, requires_grad=True)}, "ordered collection"),
    ([np.zeros(3)], "can only optimize Tensors, but one of the params is ndarray"),
])
def test_invalid_params_types(params, message):
    with pytest.raises(TypeError, match=message):
        optim.SGD(params, lr=0.1)
    with pytest.raises(TypeError, match="lr must be a real number"):
        optim.SGD([gd.zeros(3, requires_grad=True)], lr="0.1")


# torch's implementation options: accepted where torch accepts them, kept in the groups as torch
# keeps them (so state dicts carry the same keys), refused where gpudl cannot honour them
HINTS = {"SGD": dict(foreach=False, fused=None, differentiable=False),
         "Adam": dict(foreach=None, fused=True, differentiable=False,
                      decoupled_weight_decay=False),
         "AdamW": dict(foreach=True, fused=None, differentiable=False),
         "RMSprop": dict(foreach=None, differentiable=False),
         "Adagrad": dict(foreach=None, fused=False, differentiable=False)}


@pytest.mark.parametrize("name", sorted(HINTS))
def test_accepts_torchs_implementation_options_and_keeps_its_group_keys(name):
    kwargs = dict(HINTS[name], lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    ours = getattr(optim, name)([gd.zeros(3, requires_grad=True)], **kwargs)
    theirs = getattr(torch.optim, name)([torch.zeros(3, requires_grad=True)], **kwargs)
    group, tgroup = ours.param_groups[0], theirs.param_groups[0]
    assert set(group) == set(tgroup)
    assert {k: group[k] for k in kwargs} == {k: tgroup[k] for k in kwargs}
    assert ours.defaults.keys() == theirs.defaults.keys()


@pytest.mark.parametrize("name", sorted(HINTS))
def test_refuses_differentiable_and_fused_with_foreach(name):
    params = [gd.zeros(3, requires_grad=True)]
    with pytest.raises(NotImplementedError, match=f"{name}: differentiable=True"):
        getattr(optim, name)(params, lr=0.1, differentiable=True)
    with pytest.raises(TypeError, match="foreach must be None or a bool, got 'yes'"):
        getattr(optim, name)(params, lr=0.1, foreach="yes")
    if "fused" in HINTS[name]:
        with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True`"):
            getattr(optim, name)(params, lr=0.1, fused=True, foreach=True)


def test_rmsprop_and_adagrad_positional_order_is_torchs():
    # RMSprop(params, lr, alpha, eps, weight_decay, momentum, centered, capturable, foreach,
    # maximize); Adagrad's sixth positional is foreach (maximize is keyword-only)
    args = (0.1, 0.9, 1e-8, 0.0, 0.0, False, False, None, True)
    ours = optim.RMSprop([gd.zeros(2, requires_grad=True)], *args)
    theirs = torch.optim.RMSprop([torch.zeros(2, requires_grad=True)], *args)
    assert ours.param_groups[0]["maximize"] is theirs.param_groups[0]["maximize"] is True
    assert ours.param_groups[0]["capturable"] is False
    with pytest.raises(TypeError):
        optim.Adagrad([gd.zeros(2, requires_grad=True)], 0.1, 0, 0, 0, 1e-10, None, True)


def test_named_parameters_as_torch(rng):
    # torch.optim takes (name, Tensor) pairs, as named_parameters() gives, and keeps the names
    init = initial_params(rng)
    params = [gd.tensor(a, requires_grad=True) for a in init]
    tparams = [torch.tensor(a, requires_grad=True) for a in init]
    names = [f"p{i}" for i in range(len(init))]
    opt = optim.Adam(list(zip(names, params)), lr=0.05)
    topt = torch.optim.Adam(list(zip(names, tparams)), lr=0.05)
    for g in gradients(rng, SHAPES, 4):
        gd_step(opt, params, g)
        torch_step(torch, topt, tparams, g)
    assert_close([p.numpy() for p in params], [t.detach().numpy() for t in tparams])
    ours, theirs = opt.state_dict()["param_groups"][0], topt.state_dict()["param_groups"][0]
    assert ours["param_names"] == theirs["param_names"] == names
    assert set(ours) == set(theirs)
    with pytest.raises(ValueError, match="all Tensors or all"):
        optim.SGD([("a", params[0]), params[1]], lr=0.1)
    with pytest.raises(ValueError, match="all parameter groups must name"):
        opt.add_param_group({"params": [gd.zeros(2, requires_grad=True)]})


def test_nan_gradient_propagates():
    p = gd.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.Adam([p], lr=0.1)
    gd_step(opt, [p], [np.array([np.nan, 1.0], np.float32)])
    assert np.isnan(p.numpy()[0]) and np.isfinite(p.numpy()[1])


def test_a_subclass_writes_state_of_a_new_parameter_as_in_torch(rng):
    """torch's Optimizer.state is a defaultdict(dict): a hand-written step() reads
    ``self.state[p]`` for a parameter it has not seen, before and after load_state_dict."""

    class Momentum(gd.optim.Optimizer):
        def __init__(self, params, lr):
            super().__init__(params, {"lr": lr})

        @gd.no_grad()
        def step(self):
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state[p]
                    if "buffer" not in state:
                        state["buffer"] = gd.zeros_like(p)
                    state["buffer"].mul_(0.9).add_(p.grad)
                    p.sub_(state["buffer"], alpha=group["lr"])

    start, grad = rng.standard_normal(4), rng.standard_normal(4)
    p = gd.nn.Parameter(gd.tensor(start))
    optimizer = Momentum([p], lr=0.1)
    for _ in range(2):
        p.grad = gd.tensor(grad)
        optimizer.step()
    np.testing.assert_allclose(p.detach().numpy(), start - 0.1 * (1 + 1.9) * grad)
    fresh = Momentum([gd.nn.Parameter(gd.tensor(start))], lr=0.1)
    fresh.load_state_dict({"state": {}, "param_groups": optimizer.state_dict()["param_groups"]})
    assert fresh.state[fresh.param_groups[0]["params"][0]] == {}
