"""kernels/optim_cpu.py: SGD's and Adam's one-pass CPU loops give the same bits as the NumPy
update they replace (run with the loops turned off) in every option, float32 and float64, over
several steps, through the batched step and ``foreach=False``; and match torch 2.13."""

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl.kernels import optim_cpu

SGD_OPTIONS = [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=0.1),
               dict(momentum=0.5, dampening=0.3, maximize=True), dict(weight_decay=0.2),
               dict(maximize=True, weight_decay=0.05), dict()]
ADAM_OPTIONS = [dict(), dict(amsgrad=True), dict(weight_decay=0.1, maximize=True),
                dict(betas=(0.3, 0.9), amsgrad=True, weight_decay=0.01),       # lerp: w >= 0.5
                dict(decoupled_weight_decay=True, weight_decay=0.1), dict(eps=1e-3)]
CASES = ([("SGD", o) for o in SGD_OPTIONS] + [("Adam", o) for o in ADAM_OPTIONS]
         + [("AdamW", dict()), ("AdamW", dict(amsgrad=True, maximize=True))])
SHAPES = [(5, 3), (7,), (2, 3, 2, 2)]


def run(name, options, dtype, seed, steps=4, lib=gd):
    """The parameters and optimizer state after ``steps`` steps of fresh random gradients."""
    rng = np.random.default_rng(seed)
    params = [lib.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True,
                         device="cpu")
              for s in SHAPES]
    lr = 0.05 if name == "SGD" else 0.01
    opt = getattr(lib.optim, name)(params, lr=lr, **options)
    for _ in range(steps):
        for p in params:
            p.grad = lib.tensor(rng.standard_normal(p.shape).astype(dtype), device="cpu")
        opt.step()
    state = [{k: v.numpy().copy() for k, v in opt.state[p].items()
              if hasattr(v, "numpy") and v.ndim} for p in params]
    return [p.detach().numpy().copy() for p in params], state


@pytest.fixture
def numpy_path(monkeypatch):
    """Turn the loops off: the NumPy update runs."""
    def off():
        monkeypatch.setattr(optim_cpu, "applies", lambda *arrays: False)
    return off


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("foreach", [None, False])
@pytest.mark.parametrize("name,options", CASES)
def test_loops_give_the_numpy_updates_bits(name, options, foreach, dtype, numpy_path):
    seed = np.random.SeedSequence().entropy
    calls = []
    loops = optim_cpu._loops()
    real = dict(loops)
    loops.update({k: (lambda f: lambda *a: calls.append(1) or f(*a))(f) for k, f in real.items()})
    try:
        params, state = run(name, dict(options, foreach=foreach), dtype, seed)
    finally:
        loops.update(real)
    assert len(calls) == 4 * len(SHAPES)            # every update ran the loop
    numpy_path()
    expected_params, expected_state = run(name, dict(options, foreach=foreach), dtype, seed)
    for got, want in zip(params, expected_params):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(state, expected_state):
        assert got.keys() == want.keys()
        for key in got:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("name,options", CASES)
def test_loops_match_torch(name, options):
    seed = np.random.SeedSequence().entropy
    params, _ = run(name, options, np.float64, seed)
    expected, _ = run(name, options, np.float64, seed, lib=torch)
    for got, want in zip(params, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_nan_and_inf_follow_the_numpy_path(numpy_path):
    """amsgrad's running maximum keeps a NaN (np.maximum's rule); an inf gradient spreads as in
    the NumPy update."""
    def steps():
        p = gd.tensor(np.array([1.0, 2.0, 3.0, 4.0], np.float32), requires_grad=True,
                      device="cpu")
        opt = gd.optim.Adam([p], lr=0.1, amsgrad=True)
        for g in ([np.nan, 1, 1, np.inf], [1, 1, 1, 1], [1, np.nan, -np.inf, 1]):
            p.grad = gd.tensor(np.array(g, np.float32), device="cpu")
            opt.step()
        return p.detach().numpy().copy(), opt.state[p]["max_exp_avg_sq"].numpy().copy()

    got = steps()
    numpy_path()
    want = steps()
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_non_contiguous_and_mixed_dtype_states_take_the_numpy_path():
    rng = np.random.default_rng()
    base = gd.tensor(rng.standard_normal((4, 6)).astype(np.float32), device="cpu")
    assert not optim_cpu.applies(base.numpy().T, base.numpy().T)
    assert not optim_cpu.applies(base.numpy(), base.numpy().astype(np.float64))
    assert optim_cpu.applies(base.numpy(), base.numpy().copy())
