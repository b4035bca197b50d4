"""gpudl.func's grad, grad_and_value and vmap against torch.func: values, per-sample gradients
through functional_call, nesting, a backward through the result, has_aux, argnums, in/out
dims, randomness modes and the refusals."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import func

torch = pytest.importorskip("torch")


def _pair(rng, *shapes):
    arrays = [rng.standard_normal(s) for s in shapes]
    return [gd.tensor(a) for a in arrays], [torch.tensor(a) for a in arrays]


def test_grad_of_a_scalar_function_and_of_its_gradient(rng):
    (x,), (tx,) = _pair(rng, (4,))
    f = {gd: lambda v: (v.sin() * v ** 2).sum(), torch: lambda v: (v.sin() * v ** 2).sum()}
    np.testing.assert_allclose(func.grad(f[gd])(x).numpy(),
                               torch.func.grad(f[torch])(tx).numpy(), rtol=1e-12)
    second = {gd: lambda v: func.grad(f[gd])(v).sum(),
              torch: lambda v: torch.func.grad(f[torch])(v).sum()}
    np.testing.assert_allclose(func.grad(second[gd])(x).numpy(),
                               torch.func.grad(second[torch])(tx).numpy(), rtol=1e-12)


def test_per_sample_gradients_through_functional_call_match_torch(rng):
    model, tmodel = gd.nn.Linear(3, 2).double(), torch.nn.Linear(3, 2).double()
    model.load_state_dict({k: gd.tensor(v.detach().numpy())
                           for k, v in tmodel.state_dict().items()})
    (x, y), (tx, ty) = _pair(rng, (6, 3), (6, 2))

    def loss(lib, module, params, sample, target):
        out = lib.func.functional_call(module, params, (sample.unsqueeze(0),))
        return ((out - target.unsqueeze(0)) ** 2).sum()
    ours = gd.vmap(func.grad(lambda p, s, t: loss(gd, model, p, s, t)), in_dims=(None, 0, 0))(
        {k: v.detach() for k, v in model.named_parameters()}, x, y)
    theirs = torch.func.vmap(torch.func.grad(lambda p, s, t: loss(torch, tmodel, p, s, t)),
                             in_dims=(None, 0, 0))(
        {k: v.detach() for k, v in tmodel.named_parameters()}, tx, ty)
    assert set(ours) == {"weight", "bias"} and ours["weight"].shape == (6, 2, 3)
    for key in ours:
        np.testing.assert_allclose(ours[key].numpy(), theirs[key].numpy(), rtol=1e-12)


def test_grad_options_match_torch(rng):
    (a, b), (ta, tb) = _pair(rng, (3,), (3,))

    def f(u, v):
        return (u * v.exp()).sum(), {"u": u * 2}
    for argnums in (0, 1, (0, 1)):
        ours, aux = func.grad(f, argnums=argnums, has_aux=True)(a, b)
        theirs, taux = torch.func.grad(f, argnums=argnums, has_aux=True)(ta, tb)
        for g, tg in zip(ours if isinstance(ours, tuple) else (ours,),
                         theirs if isinstance(theirs, tuple) else (theirs,)):
            np.testing.assert_allclose(g.numpy(), tg.numpy(), rtol=1e-12)
        np.testing.assert_allclose(aux["u"].numpy(), taux["u"].numpy())
    g, value = func.grad_and_value(lambda u: (u ** 2).sum())(a)
    np.testing.assert_allclose(value.numpy(), (a.numpy() ** 2).sum())
    np.testing.assert_allclose(g.numpy(), 2 * a.numpy())


def test_a_backward_through_grads_result_reaches_the_inputs(rng):
    (w,), (tw,) = _pair(rng, (3,))
    w.requires_grad_()
    tw.requires_grad_()
    func.grad(lambda v: (v ** 3).sum())(w).sum().backward()
    torch.func.grad(lambda v: (v ** 3).sum())(tw).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-12)


def test_vmap_dims_and_nested_outputs_match_torch(rng):
    (x, y), (tx, ty) = _pair(rng, (3, 4), (4, 3))

    def f(u, v):
        return u * v.sum(), (u.max(), {"n": u.norm()})
    ours = gd.vmap(f, in_dims=(1, 0), out_dims=(1, 0))(x, y)
    theirs = torch.vmap(f, in_dims=(1, 0), out_dims=(1, 0))(tx, ty)
    np.testing.assert_allclose(ours[0].numpy(), theirs[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours[1][0].numpy(), theirs[1][0].numpy())
    np.testing.assert_allclose(ours[1][1]["n"].numpy(), theirs[1][1]["n"].numpy(), rtol=1e-12)


def test_vmap_randomness_modes():
    with pytest.raises(RuntimeError, match="random operation while in randomness error mode"):
        gd.vmap(lambda a: a + gd.randn(2))(gd.zeros(3, 2))
    same = gd.vmap(lambda a: a + gd.randn(2), randomness="same")(gd.zeros(3, 2)).numpy()
    assert (same == same[0]).all()
    different = gd.vmap(lambda a: a + gd.randn(2), randomness="different")(gd.zeros(3, 2))
    assert not (different.numpy() == different.numpy()[0]).all()


def test_refusals_name_the_argument():
    with pytest.raises(ValueError, match="the mapped dimensions have different sizes"):
        gd.vmap(lambda a, b: a + b)(gd.ones(2), gd.ones(3))
    with pytest.raises(ValueError, match=r"in_dims\[0\]=2 is out of range"):
        gd.vmap(lambda a: a, in_dims=2)(gd.ones(2, 2))
    with pytest.raises(ValueError, match="at least one argument must be mapped"):
        gd.vmap(lambda a: a, in_dims=None)(gd.ones(2))
    with pytest.raises(RuntimeError, match="one-element Tensor, got a Tensor of shape"):
        func.grad(lambda a: a * 2)(gd.ones(2))
    with pytest.raises(TypeError, match="only floating point Tensors"):
        func.grad(lambda a: a.sum())(gd.tensor([1, 2]))
    with pytest.raises(ValueError, match="argnums 2 out of range"):
        func.grad(lambda a: a.sum(), argnums=2)(gd.ones(2))


@pytest.mark.parametrize("argnums", [0, 1, (0, 1)])
def test_jacrev_and_jacfwd_match_torch(rng, argnums):
    (a, b), (ta, tb) = _pair(rng, (3,), (2,))

    def f(u, v):
        return (u[:2] * v).sin(), u.exp().sum()
    for ours, theirs in ((func.jacrev, torch.func.jacrev), (func.jacfwd, torch.func.jacfwd)):
        got, want = ours(f, argnums)(a, b), theirs(f, argnums)(ta, tb)
        flat_got = [t for block in got for t in (block if isinstance(block, tuple) else (block,))]
        flat_want = [t for block in want for t in (block if isinstance(block, tuple) else (block,))]
        assert [t.shape for t in flat_got] == [tuple(t.shape) for t in flat_want]
        for g, w in zip(flat_got, flat_want):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-15)


def test_hessian_and_jacobians_aux_match_torch(rng):
    (x,), (tx,) = _pair(rng, (3,))
    h = func.hessian(lambda u: (u ** 3 * u.sin()).sum())(x)
    th = torch.func.hessian(lambda u: (u ** 3 * u.sin()).sum())(tx)
    np.testing.assert_allclose(h.numpy(), th.numpy(), rtol=1e-12)
    jac, aux = func.jacrev(lambda u: (u ** 2, {"m": u.mean()}), has_aux=True)(x)
    np.testing.assert_allclose(jac.numpy(), np.diag(2 * x.numpy()))
    assert float(aux["m"]) == pytest.approx(float(x.mean())) and not aux["m"].requires_grad


def test_autograd_functional_takes_torchs_speed_options(rng):
    (x,), (tx,) = _pair(rng, (3,))
    for options in ({"vectorize": True}, {"vectorize": True, "strategy": "forward-mode"}):
        ours = gd.autograd.functional.jacobian(lambda u: u.tanh(), x, **options)
        theirs = torch.autograd.functional.jacobian(lambda u: u.tanh(), tx, **options)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
    ours = gd.autograd.functional.hessian(lambda u: (u ** 4).sum(), x, vectorize=True,
                                          outer_jacobian_strategy="forward-mode")
    np.testing.assert_allclose(ours.numpy(), np.diag(12 * x.numpy() ** 2), rtol=1e-12)
    with pytest.raises(ValueError, match="'forward-mode' needs vectorize=True"):
        gd.autograd.functional.jacobian(lambda u: u, x, strategy="forward-mode")
    with pytest.raises(ValueError, match="strategy must be 'forward-mode' or 'reverse-mode'"):
        gd.autograd.functional.jacobian(lambda u: u, x, strategy="fast")
