"""gd.cuda.make_graphed_callables: graphed module/function == eager, and torch's argument rules.

On the CPU the graphed callables run eagerly; the ``graphs`` fixture also runs each test on the
GPU's path with its forward and backward graphs recorded by the CPU recorder
(``GRAPHS_ON_CPU``), and on a GPU (tools/gpu_check.sh) the same tests compare the CUDA graph
replays with eager steps.
"""

import numpy as np
import pytest

import gpudl as gd
from gpudl import graphed_callables, nn

ON_GPU = gd.backend._cupy is not None


@pytest.fixture(params=["eager", "graphs"], autouse=True)
def graphs(request, monkeypatch):
    """Whether the callables replay graphs (always on a GPU; on the CPU recorded call lists)."""
    if ON_GPU and request.param == "eager":
        pytest.skip("a GPU always takes the graphs")
    monkeypatch.setattr(graphed_callables, "GRAPHS_ON_CPU", request.param == "graphs")
    return request.param == "graphs"


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


# ---------------------------------------------------------------- the graphs' semantics
def test_warm_up_and_capture_leave_parameters_and_grads_alone(graphs):
    model, _ = _pair()
    before = [p.numpy().copy() for p in model.parameters()]
    gd.cuda.make_graphed_callables(model, (gd.randn(3, 5),))
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), b)
        assert p.grad is None


def test_static_inputs_and_outputs_as_torch(graphs):
    """torch's contract: each call copies its arguments into the sample tensors (static inputs)
    and returns the graph's static outputs, which the next call overwrites."""
    model, eager = _pair()
    sample = gd.randn(3, 5)
    graphed = gd.cuda.make_graphed_callables(model, (sample,))
    x1, x2 = gd.randn(3, 5), gd.randn(3, 5)
    first = graphed(x1)
    expected1 = eager(x1).detach().numpy().copy()
    np.testing.assert_allclose(first.detach().numpy(), expected1, rtol=1e-5, atol=1e-6)
    second = graphed(x2)
    np.testing.assert_allclose(second.detach().numpy(), eager(x2).detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    if graphs:
        np.testing.assert_array_equal(sample.numpy(), x2.numpy())
        np.testing.assert_array_equal(first.detach().numpy(), second.detach().numpy())
    else:
        np.testing.assert_allclose(first.detach().numpy(), expected1, rtol=1e-6)


def test_gradients_accumulate_over_calls_like_eager(graphs):
    """Two forward+backward calls without zero_grad: .grad holds their sum, as eager; the
    backward graph uses the forward graph's arrays of the latest call."""
    eager, model = _pair()
    graphed = gd.cuda.make_graphed_callables(model, (gd.randn(4, 5),))
    rng = np.random.default_rng(3)
    for _ in range(2):
        x = gd.tensor(rng.standard_normal((4, 5)).astype(np.float32))
        w = gd.tensor(rng.standard_normal((4, 2)).astype(np.float32))
        for m in (eager, graphed):
            (m(x) * w).sum().backward()
    for pe, pg in zip(eager.parameters(), graphed.parameters()):
        np.testing.assert_allclose(pg.grad.numpy(), pe.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_a_tuple_of_modules_chains_gradients_through_their_inputs(graphs):
    """torch's example: module2's sample input requires grad, so its backward graph gives the
    gradient that flows back into module1's graph."""
    gd.manual_seed(8)
    eager1, eager2 = nn.Sequential(nn.Linear(5, 7), nn.ReLU()), nn.Linear(7, 3)
    gd.manual_seed(8)
    m1, m2 = nn.Sequential(nn.Linear(5, 7), nn.ReLU()), nn.Linear(7, 3)
    g1, g2 = gd.cuda.make_graphed_callables(
        (m1, m2), ((gd.randn(4, 5),), (gd.randn(4, 7, requires_grad=True),)))
    assert g1 is m1 and g2 is m2
    rng = np.random.default_rng(5)
    opts = [gd.optim.SGD([*a.parameters(), *b.parameters()], lr=0.1)
            for a, b in ((eager1, eager2), (g1, g2))]
    for _ in range(3):
        x = gd.tensor(rng.standard_normal((4, 5)).astype(np.float32))
        y = gd.tensor(rng.integers(0, 3, 4))
        for (a, b), opt in zip(((eager1, eager2), (g1, g2)), opts):
            opt.zero_grad()
            nn.functional.cross_entropy(b(a(x)), y).backward()
            opt.step()
    for e, g in ((eager1, g1), (eager2, g2)):
        for pe, pg in zip(e.parameters(), g.parameters()):
            np.testing.assert_allclose(pg.numpy(), pe.numpy(), rtol=1e-5, atol=1e-6)


def test_eval_mode_and_no_grad_run_the_original_forward(graphs):
    model, eager = _pair()
    sample = gd.randn(3, 5)
    kept = sample.numpy().copy()
    graphed = gd.cuda.make_graphed_callables(model, (sample,))
    x = gd.randn(3, 5)
    with gd.no_grad():
        np.testing.assert_allclose(graphed(x).numpy(), eager(x).numpy(), rtol=1e-5, atol=1e-6)
    graphed.eval()
    np.testing.assert_allclose(graphed(x).detach().numpy(), eager(x).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sample.numpy(), kept)      # no graph replayed: not copied in


def test_an_input_that_does_not_reach_the_outputs(graphs):
    def f(x, unused):
        return x * 2

    args = (gd.randn(3, requires_grad=True), gd.randn(3, requires_grad=True))
    if graphs:
        with pytest.raises(RuntimeError, match="allow_unused_input=True"):
            gd.cuda.make_graphed_callables(f, args)
    g = gd.cuda.make_graphed_callables(f, args, allow_unused_input=True)
    x, u = gd.randn(3, requires_grad=True), gd.randn(3, requires_grad=True)
    g(x, u).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(3, 2.0, np.float32))
    assert u.grad is None
