"""Regressions found by the second round of differential program fuzzing (create_graph
programs, nn modules, losses, optimizers, int/bool/half dtypes) run in gpudl and torch: each
case runs the same steps on both libraries from fresh random inputs and compares the results."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gpudl as gd  # noqa: E402


def _numpy(t):
    return None if t is None else t.detach().numpy()


def _assert_same(got, want, rtol=1e-10, atol=1e-12):
    for i, (g, w) in enumerate(zip(got, want)):
        if g is None or w is None:      # no gradient, or one of zeros
            assert all(x is None or not np.any(x) for x in (g, w)), f"item {i}: {g} {w}"
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"item {i}")


# ----------------------------------------------------------------- create_graph masks
# The graph backwards (create_graph=True) of where, maximum/minimum, clamp, hardtanh,
# masked_fill, max(), relu and indexed writes multiplied the gradient by a 0/1 mask: a second
# backward whose upstream is infinite where the first gradient is 0 (sqrt of it) then put
# NaN = 0 * inf into the input not picked. torch's masked backwards give exactly 0 there.
PICKING_OPS = {
    "where": lambda lib, x, y: lib.where(x > 0.3, x * x, y * y),
    "maximum": lambda lib, x, y: lib.maximum(x * x, y),
    "minimum": lambda lib, x, y: lib.minimum(x, y * 2),
    "clamp": lambda lib, x, y: (x * y).clamp(-0.5, 0.5),
    "clamp by tensor": lambda lib, x, y: x.clamp(min=y * 0.5),
    "hardtanh": lambda lib, x, y: lib.nn.functional.hardtanh(x * y),
    "masked_fill": lambda lib, x, y: (x * y).masked_fill(x > 0.3, 2.0),
    "max()": lambda lib, x, y: (x * y).max().reshape(1).expand(6),
    "amax (product rule)": lambda lib, x, y: (x * y).amax(0).reshape(1).expand(6),
    "index_put": lambda lib, x, y: (x * y).index_put((lib.tensor([0, 2]),),
                                                      lib.tensor([7.0, 8.0], dtype=lib.float64)),
    "setitem": lambda lib, x, y: lib.cat([(x * y)[:3], y[3:] * 0 + 5]),
}


@pytest.mark.parametrize("op", PICKING_OPS, ids=list(PICKING_OPS))
def test_second_backward_through_masked_gradient_keeps_unpicked_inputs_finite(rng, op):
    arrays = [rng.standard_normal(6), rng.standard_normal(6), rng.standard_normal(6)]
    results = []
    for lib in (torch, gd):
        x, y, v = (lib.tensor(a, requires_grad=True) for a in arrays)
        gx, gy = lib.autograd.grad(PICKING_OPS[op](lib, x, y), (x, y), grad_outputs=v,
                                   create_graph=True, allow_unused=True)
        loss = sum(g.abs().sqrt().sum() for g in (gx, gy) if g is not None)
        loss.backward()         # upstream 1 / (2 sqrt(0)) = inf wherever a gradient is 0
        results.append([_numpy(t) for t in (gx, gy, x.grad, y.grad, v.grad)])
    _assert_same(results[1], results[0])


# ----------------------------------------------------------------- row-major results
# softmax, log_softmax, softmin, cumsum, cumprod, roll, masked_fill, pad and one_hot of a transposed
# input kept NumPy's transposed order; torch returns them contiguous, so y.view(-1) raised.
ROW_MAJOR_OPS = {
    "softmax": lambda lib, t: t.softmax(0),
    "log_softmax": lambda lib, t: t.log_softmax(0),
    "softmin": lambda lib, t: lib.nn.functional.softmin(t, 0),
    "cumsum": lambda lib, t: t.cumsum(0),
    "cumprod": lambda lib, t: t.cumprod(1),
    "roll": lambda lib, t: t.roll(1, 0),
    "masked_fill": lambda lib, t: t.masked_fill(t > 0, 1.0),
    "pad": lambda lib, t: lib.nn.functional.pad(t, (1, 2)),
}


@pytest.mark.parametrize("op", ROW_MAJOR_OPS, ids=list(ROW_MAJOR_OPS))
def test_op_of_transposed_input_is_contiguous(rng, op):
    array, seed = rng.standard_normal((3, 4)), rng.standard_normal(24)
    results = []
    for lib in (torch, gd):
        x = lib.tensor(array, requires_grad=True)
        y = ROW_MAJOR_OPS[op](lib, x.t())
        flat = y.view(-1)
        (flat * lib.tensor(seed[:flat.shape[0]])).sum().backward()
        results.append([y.is_contiguous(), _numpy(flat), _numpy(x.grad)])
    assert results[1][0] and results[0][0]
    _assert_same(results[1][1:], results[0][1:])


def test_one_hot_of_transposed_input_is_contiguous(rng):
    labels = rng.integers(0, 3, (3, 4))
    results = []
    for lib in (torch, gd):
        y = lib.nn.functional.one_hot(lib.tensor(labels).t(), 3)
        results.append([y.is_contiguous(), y.view(-1).numpy()])
    assert results[1][0] and results[0][0]
    np.testing.assert_array_equal(results[1][1], results[0][1])


# ----------------------------------------------------------------- optimizers
# RMSprop, Adagrad (and every optimizer forming weight_decay * param + grad on the CPU) raised
# TypeError "return arrays must be of ArrayType" on a 0-d parameter: NumPy's 0-d product was a
# scalar, not an array the update could write into. maximize without weight_decay likewise.
OPTIMIZERS_0D = {
    "RMSprop": {"lr": 0.1, "weight_decay": 0.1},
    "RMSprop maximize": {"lr": 0.1, "maximize": True, "centered": True, "momentum": 0.9},
    "Adagrad": {"lr": 0.5, "weight_decay": 0.1},
    "Adagrad maximize": {"lr": 0.5, "maximize": True},
    "SGD": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1, "maximize": True},
    "Adam": {"lr": 0.1, "weight_decay": 0.1, "amsgrad": True},
    "NAdam": {"lr": 0.1, "weight_decay": 0.1},
    "Adadelta": {"lr": 0.5, "weight_decay": 0.1, "maximize": True},
}


@pytest.mark.parametrize("case", OPTIMIZERS_0D, ids=list(OPTIMIZERS_0D))
def test_optimizer_steps_a_0d_parameter(rng, case):
    name, options = case.split()[0], OPTIMIZERS_0D[case]
    start, grads = rng.standard_normal((2, 3)), rng.standard_normal((3, 2, 3))
    results = []
    for lib in (torch, gd):
        params = [lib.nn.Parameter(lib.tensor(start[0, 0])), lib.nn.Parameter(lib.tensor(start[1]))]
        optimizer = getattr(lib.optim, name)(params, **options)
        trace = []
        for grad in grads:
            params[0].grad, params[1].grad = lib.tensor(grad[0, 0]), lib.tensor(grad[1])
            optimizer.step()
            trace += [_numpy(p) for p in params]
        results.append(trace)
    _assert_same(results[1], results[0])


# ----------------------------------------------------------------- create_graph of 0-d inputs
# A 0-d op's forward value can be a NumPy scalar; the graph backward of softplus (and any
# that takes an input's value through Saved.input) returned it as a plain number, so
# gd.autograd.grad(softplus(x), x, create_graph=True) raised AttributeError for a 0-d x.
ZERO_D_OPS = {
    "softplus": lambda lib, x: lib.nn.functional.softplus(x),
    "softplus beta": lambda lib, x: lib.nn.functional.softplus(x * 2, beta=2.0),
    "silu": lambda lib, x: lib.nn.functional.silu(x),
    "gelu": lambda lib, x: lib.nn.functional.gelu(x),
    "elu": lambda lib, x: lib.nn.functional.elu(x - 1),
    "tanh": lambda lib, x: x.tanh(),
}


@pytest.mark.parametrize("op", ZERO_D_OPS, ids=list(ZERO_D_OPS))
def test_second_order_gradient_of_a_0d_input(rng, op):
    value = float(rng.standard_normal())
    results = []
    for lib in (torch, gd):
        x = lib.tensor(value, dtype=lib.float64, requires_grad=True)
        (g,) = lib.autograd.grad(ZERO_D_OPS[op](lib, x), x, create_graph=True)
        (g * g).backward()
        results.append([_numpy(g), _numpy(x.grad)])
    _assert_same(results[1], results[0])


# ----------------------------------------------------------------- create_graph of median()
# median() and nanmedian() of all elements had no graph backward: create_graph=True raised
# NotImplementedError (torch's evenly shared tie gradient, differentiable again).
@pytest.mark.parametrize("op", ["median", "nanmedian"])
def test_second_order_gradient_through_median_of_all_elements(rng, op):
    values = rng.integers(-2, 3, (3, 4)).astype(float)      # ties around the median
    weights = rng.standard_normal((3, 4))
    results = []
    for lib in (torch, gd):
        x = lib.tensor(values, requires_grad=True)
        w = lib.tensor(weights)
        (g,) = lib.autograd.grad(getattr(x * w, op)() * 3, x, create_graph=True)
        ((g * w).sum() ** 2 + (g * g * x).sum()).backward()
        results.append([_numpy(g), _numpy(x.grad)])
    _assert_same(results[1], results[0])


# ----------------------------------------------------------------- create_graph of kl_div
# kl_div had no graph backward: create_graph=True (a gradient penalty, MAML's inner step)
# raised NotImplementedError. Targets are kept positive: at a 0 target torch's gradient is NaN
# (0/0 in xlogy's), gpudl's 0 (deliberate, as its first-order gradient).
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["none", "batchmean", "sum"])
def test_second_order_gradient_through_kl_div(rng, log_target, reduction):
    logits, target = rng.standard_normal((3, 4)), rng.random((3, 4)) + 0.05
    target = np.log(target) if log_target else target
    seed = rng.standard_normal((3, 4) if reduction == "none" else ())
    results = []
    for lib in (torch, gd):
        x = lib.tensor(logits, requires_grad=True)
        t = lib.tensor(target, requires_grad=True)
        loss = lib.nn.functional.kl_div(x.log_softmax(-1), t, reduction=reduction,
                                        log_target=log_target)
        gx, gt = lib.autograd.grad((loss * lib.tensor(seed)).sum(), (x, t), create_graph=True)
        ((gx * gx).sum() + (gt * gt * t).sum()).backward()
        results.append([_numpy(gx), _numpy(gt), _numpy(x.grad), _numpy(t.grad)])
    _assert_same(results[1], results[0])


# ----------------------------------------------------------------- cross_entropy, all ignored
# With every target ignored, 'mean' divides by a total weight of 0 (the loss is NaN, as torch)
# and the gradient is 0; the second backward through that gradient was NaN (the 0 divisor's
# inf times the masked rows' 0), torch's is 0.
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_second_backward_of_cross_entropy_with_every_target_ignored(rng, smoothing, weighted):
    logits, weights = rng.standard_normal((3, 4, 2)), rng.random(4) + 0.1
    results = []
    for lib in (torch, gd):
        x = lib.tensor(logits, requires_grad=True)
        target = lib.full((3, 2), 2, dtype=lib.int64)
        options = {"weight": lib.tensor(weights)} if weighted else {}
        loss = lib.nn.functional.cross_entropy(x, target, ignore_index=2,
                                               label_smoothing=smoothing, **options)
        (g,) = lib.autograd.grad(loss, x, create_graph=True)
        ((g * g).sum() + (g * x).sum()).backward()
        results.append([_numpy(loss), _numpy(g), _numpy(x.grad)])
    assert np.isnan(results[0][0]) and np.isnan(results[1][0])
    _assert_same(results[1][1:], results[0][1:])
