"""Optimizer configurations and a runner that steps gpudl and torch.optim on the same gradients."""

import numpy as np

import gpudl as gd
import gpudl.optim as optim
from gpudl import backend

# (class name, options): every option of every optimizer, alone and combined
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.7, weight_decay=0.05, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.7, nesterov=True, weight_decay=0.01, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.6), eps=1e-3)),        # lerp weight >= 0.5 branch
    ("Adam", dict(lr=0.02, weight_decay=0.05, amsgrad=True, maximize=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.2, decoupled_weight_decay=True)),     # == AdamW
    ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True, decoupled_weight_decay=True,
                  foreach=False, fused=None)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.2, amsgrad=True)),
    ("AdamW", dict(lr=0.01, betas=(0.5, 0.9), maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, alpha=0.3, centered=True, momentum=0.5, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, eps=1e-4, maximize=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1, initial_accumulator_value=0.5)),
    ("Adagrad", dict(lr=0.1, eps=1e-3, maximize=True)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, momentum_decay=0.01, maximize=True)),
    ("NAdam", dict(lr=0.01, betas=(0.3, 0.6), weight_decay=0.2, decoupled_weight_decay=True)),
    ("RAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01, betas=(0.5, 0.8), weight_decay=0.1, maximize=True)),
    ("RAdam", dict(lr=0.01, weight_decay=0.2, decoupled_weight_decay=True)),
    ("Adamax", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01, betas=(0.3, 0.9), eps=1e-3, weight_decay=0.1, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.6, eps=1e-4, weight_decay=0.1, maximize=True)),
    ("Rprop", dict(lr=0.01)),
    ("Rprop", dict(lr=0.02, etas=(0.3, 1.5), step_sizes=(1e-3, 0.05), maximize=True)),
    ("ASGD", dict(lr=0.01)),
    ("ASGD", dict(lr=0.02, lambd=0.01, alpha=0.5, t0=5, weight_decay=0.1, maximize=True)),
]

SHAPES = [(3, 5), (7,), (1,), (2, 3, 2)]


def case_id(case):
    name, options = case
    return name + "(" + ",".join(f"{k}={v}" for k, v in options.items()) + ")"


def initial_params(rng, shapes=SHAPES):
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def gradients(rng, shapes, steps):
    """Fresh random gradients per step, with a spread of magnitudes."""
    return [[(rng.standard_normal(s) * rng.choice([1e-3, 1.0, 10.0])).astype(np.float32)
             for s in shapes] for _ in range(steps)]


def gd_step(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = gd.tensor(g)
    opt.step()


def torch_step(torch, opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g)
    opt.step()


def run_pair(torch, case, rng, steps=12, wrap=None, torch_options=None):
    """Step gpudl and torch ``steps`` times from the same parameters on the same gradients.

    ``wrap(array)`` may replace each gpudl parameter's array (the fused-kernel tests use it);
    ``torch_options`` replace the case's options for torch (an option torch refuses on the CPU).
    Returns (gpudl arrays, torch arrays, initial arrays).
    """
    name, options = case
    init = initial_params(rng)
    params = [gd.tensor(a, requires_grad=True) for a in init]
    if wrap is not None:
        for p in params:
            p._data = wrap(p._data)
    tparams = [torch.tensor(a, requires_grad=True) for a in init]
    opt = getattr(optim, name)(params, **options)
    topt = getattr(torch.optim, name)(tparams, **(options if torch_options is None
                                                   else torch_options))
    for grads in gradients(rng, SHAPES, steps):
        gd_step(opt, params, grads)
        torch_step(torch, topt, tparams, grads)
    return ([backend.to_numpy(p._data).view(np.ndarray) for p in params],
            [t.detach().numpy() for t in tparams], init)


def assert_close(ours, theirs):
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
