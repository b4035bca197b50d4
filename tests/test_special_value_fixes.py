"""Regression tests for the special-value fuzz (session 26, helper spfuzz): gradients at
+-inf, NaN and -0.0 that torch defines, compared with torch CPU on fresh random inputs."""
import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as GF

torch = pytest.importorskip("torch")
TF = torch.nn.functional

SPECIAL = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e308, -1e-310, 5e-324, 1.0, -1.0,
                    0.5, 2.0, -2.5, 1e-8, 88.0, -745.0, 1e4, -1e4, 7e4])


def _special(rng, shape, dtype, pool=SPECIAL):
    x = rng.standard_normal(shape)
    return np.where(rng.random(shape) < 0.5, rng.choice(pool, size=shape), x).astype(dtype)


def _value_and_grads(lib, fn, arrays, w):
    ts = [lib.tensor(a.copy(), requires_grad=True) for a in arrays]
    y = fn(lib, *ts)
    (y * lib.tensor(w, dtype=y.dtype)).sum().backward()
    return (y.detach().numpy().astype(np.float64),
            [t.grad.numpy().astype(np.float64) for t in ts])


def _compare(fn, arrays, rng, tol):
    w = rng.standard_normal(fn(torch, *[torch.tensor(a) for a in arrays]).shape)
    ty, tg = _value_and_grads(torch, fn, arrays, w)
    gy, gg = _value_and_grads(gd, fn, arrays, w)
    np.testing.assert_allclose(gy, ty, rtol=tol, atol=tol, equal_nan=True)
    for a, b in zip(gg, tg):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logsumexp_gradient_with_inf_elements(dtype):
    """An element at +inf used to move the shift to 0: exp of a large finite element
    overflowed, and its gradient became inf / inf = nan (torch: exp(x - inf) = 0)."""
    rng = np.random.default_rng(0)
    tol = 1e-6 if dtype == np.float64 else 1e-4
    for _ in range(30):
        x = _special(rng, (3, 4), dtype)
        _compare(lambda lib, t: lib.logsumexp(t, -1), [x], rng, tol)
    x = np.array([[7e4, -0.2, np.inf], [np.inf] * 3, [-np.inf] * 3, [1e4, -np.inf, 3.0]], dtype)
    _compare(lambda lib, t: lib.logsumexp(t, 1), [x], rng, tol)


def test_logit_gradient_at_negative_zero():
    """d logit / dx at -0.0 is +inf as torch's (was -inf: 1 / (-0 * 1))."""
    rng = np.random.default_rng(1)
    x = np.array([0.0, -0.0, 0.5, 1.0, -1.0, np.inf, np.nan, 0.25])
    for eps in (None, 0.0, 1e-6):
        _compare(lambda lib, t: lib.logit(t, eps), [x], rng, 1e-7)
    x = gd.tensor([-0.0, 0.3], requires_grad=True)
    (g,) = gd.autograd.grad(gd.logit(x).sum(), x, create_graph=True)
    g.sum().backward()        # double backward through the abs
    assert np.isfinite(x.grad.numpy()[1])


def test_xlog1py_gradient_where_input_is_zero():
    """d/dx xlog1py(x, y) is 0 where x == 0 and y <= -1, as torch's (was log1p(y): nan/-inf)."""
    rng = np.random.default_rng(2)
    pool = np.array([0.0, -0.0, -1.0, -2.0, -1e4, np.nan, np.inf, 2.0, 0.5])
    for _ in range(20):
        x = _special(rng, (2, 5), np.float64, pool)
        y = _special(rng, (2, 5), np.float64, pool)
        _compare(lambda lib, a, b: lib.special.xlog1py(a, b), [x, y], rng, 1e-7)


@pytest.mark.parametrize("op", ["abs", "l1_loss"])
def test_abs_and_l1_gradient_at_nan_is_zero(op):
    """torch's abs / l1_loss gradient at a NaN (difference) is 0 (its sgn(nan) = 0); NumPy's
    sign gave nan."""
    rng = np.random.default_rng(3)
    if op == "abs":
        fn = lambda lib, t: t.abs()            # noqa: E731
    else:
        fn = lambda lib, a, b: (TF if lib is torch else GF).l1_loss(a, b, reduction="none")  # noqa: E731
    for _ in range(20):
        arrays = [_special(rng, (2, 3), np.float64) for _ in range(1 if op == "abs" else 2)]
        _compare(fn, arrays, rng, 1e-7)
    x = gd.tensor([np.nan, 1.0, -2.0], requires_grad=True)
    (g,) = gd.autograd.grad(x.abs().sum(), x, create_graph=True)
    assert g.tolist() == [0.0, 1.0, -1.0]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_rms_norm_default_eps_of_low_precision_input(dtype):
    """eps=None is float32's epsilon for float16/bfloat16 input, as torch's (it was the input
    dtype's own, 1e-3 / 8e-3, which swamped small activations: 0.03 instead of 0.69)."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((4, 8)) * np.array([[1.0], [1e-1], [1e-2], [1e-3]])).astype(np.float32)
    w = rng.standard_normal(8).astype(np.float32)
    t = torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=True)
    g = gd.tensor(x, dtype=getattr(gd, dtype), requires_grad=True)
    ty = TF.rms_norm(t, (8,), torch.tensor(w, dtype=t.dtype))
    gy = GF.rms_norm(g, (8,), gd.tensor(w, dtype=g.dtype))
    assert gy.dtype == getattr(gd, dtype)
    np.testing.assert_allclose(gy.detach().float().numpy(), ty.detach().float().numpy(),
                               rtol=2e-2, atol=2e-2)
    ty.float().sum().backward()
    gy.float().sum().backward()
    np.testing.assert_allclose(g.grad.float().numpy(), t.grad.float().numpy(), rtol=5e-2, atol=5e-2)
    m = gd.nn.RMSNorm(8).to(getattr(gd, dtype))          # the module's default eps is None too
    np.testing.assert_allclose(m(g).float().detach().numpy(),
                               TF.rms_norm(t, (8,)).float().detach().numpy(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("op", ["sign", "sgn", "round", "floor", "ceil", "trunc"])
@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_zero_derivative_ops_give_zeros_at_inf_or_nan_upstream(op, dtype):
    """A zero derivative gives zeros, as torch's zeros_like(grad): g * 0 was NaN wherever the
    incoming gradient was inf or NaN (lp_pool's sign(out) * relu(|out|) at an infinite out)."""
    rng = np.random.default_rng(5)
    x = _special(rng, (2, 4), np.float32)
    w = np.array([np.inf, -np.inf, np.nan, 1.0] * 2).reshape(2, 4)
    grads = []
    for lib in (torch, gd):
        t = lib.tensor(x, dtype=getattr(lib, dtype), requires_grad=True)
        getattr(t, op)().backward(lib.tensor(w, dtype=t.dtype))
        grads.append(t.grad.float().numpy())
    np.testing.assert_array_equal(grads[1], grads[0])
    t = gd.tensor(x.astype(np.float64), requires_grad=True)           # the create_graph path
    (g,) = gd.autograd.grad(getattr(t, op)(), t, gd.tensor(w), create_graph=True)
    np.testing.assert_array_equal(g.numpy(), np.zeros_like(x))


def test_lp_pool_gradient_next_to_an_infinite_element():
    rng = np.random.default_rng(6)
    for _ in range(20):
        x = _special(rng, (2, 6), np.float64, SPECIAL[1:])       # no NaN
        _compare(lambda lib, t: (TF if lib is torch else GF).lp_pool1d(t.unsqueeze(0), 2, 2),
                 [x], rng, 1e-7)


@pytest.mark.parametrize("eps", [-1.0, -1e-3])
def test_logit_negative_eps_is_none(eps):
    """torch's kernels take a negative eps as None: no clamp, gradient nan outside [0, 1] (it
    clamped to [eps, 1 - eps] and gave finite gradients at negative inputs)."""
    rng = np.random.default_rng(7)
    x = np.array([-0.19, 0.0, -0.0, 0.3, 1.5, 0.7, np.nan, 1.0])
    _compare(lambda lib, t: lib.logit(t, eps), [x], rng, 1e-7)
    _compare(lambda lib, t: t.logit(eps), [x], rng, 1e-7)


def test_one_hot_of_float_input_raises_type_error():
    """A float tensor with inf was read by max() first: OverflowError, not the dtype error."""
    for v in ([1.0, np.inf], [1.0, 2.0]):
        with pytest.raises(TypeError, match="one_hot: tensor must be an integer tensor"):
            GF.one_hot(gd.tensor(v))


@pytest.mark.parametrize("op", ["lp_pool1d", "lp_pool2d", "lp_pool3d"])
def test_lp_pool_of_a_number_raises_type_error(op):
    with pytest.raises(TypeError, match=f"{op}: input must be a Tensor, got int"):
        getattr(GF, op)(-1, 2, 2)


@pytest.mark.parametrize("op", ["i1", "i1e"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bessel_i1_gradient_at_subnormal_inputs(op, dtype):
    """d i1 / dx is 1/2 near 0: at a subnormal x, 1 / x overflowed (nan at 5e-324, -inf at
    -1e-310); torch gives 0.5."""
    rng = np.random.default_rng(8)
    x = np.array([5e-324, -1e-310, 1e-300, 1e-45, -3e-39, 1e-19, -1e-17, 1e-8, 0.0, -0.0, 0.7,
                  -2.0, 30.0], dtype=dtype)
    _compare(lambda lib, t: getattr(lib.special, op)(t), [x], rng,
             1e-7 if dtype == np.float64 else 1e-5)
