"""gd.cuda.make_graphed_callables: graphed module/function == eager, and torch's argument rules.

On the CPU the graphed callables run eagerly; on a GPU (tools/gpu_check.sh) the same test
compares the forward/backward graph replays with eager steps.
"""

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn


def _pair():
    gd.manual_seed(4)
    a = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 2))
    gd.manual_seed(4)
    b = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 2))
    return a, b


def test_graphed_module_trains_like_the_eager_module():
    eager, graphed = _pair()
    sample = gd.randn(6, 5)
    graphed = gd.cuda.make_graphed_callables(graphed, (sample,))
    assert isinstance(graphed, nn.Module)
    opts = [gd.optim.SGD(m.parameters(), lr=0.1, momentum=0.5) for m in (eager, graphed)]
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = gd.tensor(rng.standard_normal((6, 5)).astype(np.float32))
        y = gd.tensor(rng.integers(0, 2, 6))
        for model, opt in zip((eager, graphed), opts):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for pe, pg in zip(eager.parameters(), graphed.parameters()):
        np.testing.assert_allclose(pg.numpy(), pe.numpy(), rtol=1e-5, atol=1e-6)


def test_graphed_function_gives_input_gradients_like_eager():
    w = gd.randn(4, 3)

    def f(x, z):
        return (x @ w).tanh() * z, x.sum()

    x = gd.randn(2, 4, requires_grad=True)
    z = gd.randn(2, 3)
    g = gd.cuda.make_graphed_callables(f, (x, z))
    xs = gd.randn(2, 4, requires_grad=True)
    zs = gd.randn(2, 3)
    out, total = g(xs, zs)
    (out.sum() + total).backward()
    xe = xs.detach().clone().requires_grad_()
    oe, te = f(xe, zs)
    (oe.sum() + te).backward()
    np.testing.assert_allclose(out.numpy(), oe.numpy(), rtol=1e-5)
    np.testing.assert_allclose(xs.grad.numpy(), xe.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_tuple_of_callables_and_argument_checks():
    a, b = _pair()
    x = gd.randn(3, 5)
    ga, gb = gd.cuda.make_graphed_callables((a, b), ((x,), (x,)))
    with pytest.raises(ValueError, match=r"argument 0 is float32 \(4, 5\).*\(3, 5\)"):
        ga(gd.randn(4, 5))
    with pytest.raises(ValueError, match="requires_grad=True"):
        gb(gd.randn(3, 5, requires_grad=True))
    with pytest.raises(TypeError, match="expected 1 arguments"):
        ga(x, x)


@pytest.mark.parametrize("callables, sample_args, match", [
    (lambda x: x, ([1.0],), "tuple of Tensors"),
    ((lambda x: x, lambda x: x), ((gd.zeros(1),),), "one tuple of sample_args per callable"),
    (3, (gd.zeros(1),), "callable 0 is a int"),
])
def test_bad_arguments_are_refused(callables, sample_args, match):
    with pytest.raises((TypeError, ValueError), match=match):
        gd.cuda.make_graphed_callables(callables, sample_args)


def test_trainable_buffers_and_bad_warmup_are_refused():
    m = nn.Linear(2, 2)
    m.register_buffer("scale", gd.ones(2, requires_grad=True))
    with pytest.raises(ValueError, match="buffer that requires grad"):
        gd.cuda.make_graphed_callables(m, (gd.zeros(1, 2),))
    with pytest.raises(ValueError, match="num_warmup_iters"):
        gd.cuda.make_graphed_callables(nn.Linear(2, 2), (gd.zeros(1, 2),), num_warmup_iters=-1)
