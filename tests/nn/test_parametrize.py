"""nn.utils.parametrize, nn.utils.parametrizations and the old-style weight_norm/spectral_norm
against torch: state-dict keys both ways, outputs and gradients with torch's weights, the power
iteration's buffers after training-mode calls, removal, and refusals."""

import warnings

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import nn
from gpudl.nn.utils import parametrizations, parametrize


def _numpy_state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _torch_state(module):
    return {k: torch.tensor(v.numpy().copy()) for k, v in module.state_dict().items()}


def _check_call(ours, theirs, x, rng, rtol=1e-10):
    """Same output and same gradients (input and every parameter, by torch's names)."""
    gx, tx = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = ours(gx), theirs(tx)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=rtol, atol=1e-12)
    w = rng.standard_normal(tuple(ty.shape))
    (y * gd.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=rtol, atol=1e-12)
    t_params = dict(theirs.named_parameters())
    names = [k for k, _ in ours.named_parameters()]
    assert names == list(t_params)
    for k, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), t_params[k].grad.numpy(), rtol=rtol,
                                   atol=1e-12, err_msg=k)


def _pair(factory_gd, factory_torch, wrap_gd, wrap_torch):
    """The same layer in both libraries, wrapped, with torch's state loaded into gpudl's."""
    theirs = wrap_torch(factory_torch().double())
    ours = wrap_gd(factory_gd().double())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(_numpy_state(theirs))
    return ours, theirs


class Symmetric(nn.Module):
    def forward(self, x):
        return x.triu() + x.triu(1).transpose(-1, -2)


class TorchSymmetric(torch.nn.Module):
    def forward(self, x):
        return x.triu() + x.triu(1).transpose(-1, -2)


class Scale(nn.Module):
    def forward(self, x):
        return 2 * x

    def right_inverse(self, y):
        return y / 2


def test_register_parametrization_keys_property_and_gradients(rng):
    ours, theirs = _pair(lambda: nn.Linear(5, 5), lambda: torch.nn.Linear(5, 5),
                         lambda m: parametrize.register_parametrization(m, "weight", Symmetric()),
                         lambda m: torch.nn.utils.parametrize.register_parametrization(
                             m, "weight", TorchSymmetric()))
    assert type(ours).__name__ == "ParametrizedLinear"
    assert list(ours.state_dict()) == ["bias", "parametrizations.weight.original"]
    assert parametrize.is_parametrized(ours) and parametrize.is_parametrized(ours, "weight")
    assert not parametrize.is_parametrized(ours, "bias")
    assert parametrize.type_before_parametrizations(ours) is nn.Linear
    w = ours.weight.numpy()
    np.testing.assert_array_equal(w, w.T)
    _check_call(ours, theirs, rng.standard_normal((3, 5)), rng)


def test_right_inverse_assignment_chain_and_remove(rng):
    lin = nn.Linear(4, 3).double()
    start = lin.weight.numpy().copy()
    parametrize.register_parametrization(lin, "weight", Scale())
    # right_inverse ran at registration: the parametrized weight is still the original one
    np.testing.assert_allclose(lin.weight.numpy(), start)
    np.testing.assert_allclose(lin.parametrizations.weight.original.numpy(), start / 2)
    parametrize.register_parametrization(lin, "weight", Scale())       # a chain of two
    np.testing.assert_allclose(lin.weight.numpy(), 2 * start)
    target = rng.standard_normal((3, 4))
    lin.weight = gd.tensor(target)                                      # through right_inverse
    np.testing.assert_allclose(lin.weight.numpy(), target)
    np.testing.assert_allclose(lin.parametrizations.weight.original.numpy(), target / 4)
    original = lin.parametrizations.weight.original
    parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)
    assert type(lin) is nn.Linear and "parametrizations" not in lin._modules
    assert lin.weight is original
    np.testing.assert_allclose(lin.weight.numpy(), target / 4)
    assert list(lin.state_dict()) == ["bias", "weight"]     # re-registered last, as torch


def test_remove_leave_parametrized_keeps_the_value_and_identity():
    lin = nn.Linear(4, 4).double()
    parametrize.register_parametrization(lin, "weight", Symmetric())
    value = lin.weight.numpy().copy()
    original = lin.parametrizations.weight.original
    parametrize.remove_parametrizations(lin, "weight")
    assert lin.weight is original and isinstance(lin.weight, nn.Parameter)
    np.testing.assert_allclose(lin.weight.numpy(), value)


def test_cached_computes_once():
    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            calls.append(1)
            return x * 1

    lin = nn.Linear(3, 3)
    parametrize.register_parametrization(lin, "weight", Counting())
    calls.clear()
    with parametrize.cached():
        a, b = lin.weight, lin.weight
    assert len(calls) == 1 and a is b
    lin.weight
    assert len(calls) == 2


def test_unsafe_allows_a_shape_change_and_safe_refuses_it():
    class FirstRow(nn.Module):
        def forward(self, x):
            return x[:1]

    lin = nn.Linear(3, 4)
    with pytest.raises(ValueError, match="may not change the shape"):
        parametrize.register_parametrization(lin, "weight", FirstRow())
    assert type(lin) is nn.Linear and "weight" in lin._parameters   # refused: unchanged
    parametrize.register_parametrization(lin, "weight", FirstRow(), unsafe=True)
    assert lin.weight.shape == (1, 3)


def test_parametrization_refusals():
    lin = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="does not have a parameter, a buffer"):
        parametrize.register_parametrization(lin, "nothing", Symmetric())
    with pytest.raises(ValueError, match="does not have a parametrization on weight"):
        parametrize.remove_parametrizations(lin, "weight")
    parametrize.register_parametrization(lin, "weight", Symmetric())
    with pytest.raises(RuntimeError, match="does not implement right_inverse"):
        lin.weight = gd.ones(3, 3)
    parametrizations.weight_norm(nn.Linear(3, 2))
    wn = parametrizations.weight_norm(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="sequence of tensors"):
        parametrize.remove_parametrizations(wn, "weight", leave_parametrized=False)


@pytest.mark.parametrize("dim", [0, 1, None, -2])
def test_parametrizations_weight_norm_matches_torch(rng, dim):
    ours, theirs = _pair(
        lambda: nn.Conv2d(3, 4, 3), lambda: torch.nn.Conv2d(3, 4, 3),
        lambda m: parametrizations.weight_norm(m, dim=dim),
        lambda m: torch.nn.utils.parametrizations.weight_norm(m, dim=dim))
    assert list(ours.state_dict()) == ["bias", "parametrizations.weight.original0",
                                       "parametrizations.weight.original1"]
    _check_call(ours, theirs, rng.standard_normal((2, 3, 6, 6)), rng)
    # and the other way: gpudl's state into a fresh torch layer
    back = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv2d(3, 4, 3).double(),
                                                       dim=dim)
    back.load_state_dict(_torch_state(ours))
    np.testing.assert_allclose(back.weight.detach().numpy(), ours.weight.numpy(), rtol=1e-12)


@pytest.mark.parametrize("make", ["linear", "conv_transpose"])
def test_parametrizations_spectral_norm_matches_torch_in_train_and_eval(rng, make):
    gd_layer, torch_layer = {
        "linear": (lambda: nn.Linear(6, 4), lambda: torch.nn.Linear(6, 4)),
        "conv_transpose": (lambda: nn.ConvTranspose2d(3, 5, 3),
                           lambda: torch.nn.ConvTranspose2d(3, 5, 3))}[make]
    ours, theirs = _pair(gd_layer, torch_layer, parametrizations.spectral_norm,
                         torch.nn.utils.parametrizations.spectral_norm)
    assert list(ours.state_dict()) == ["bias", "parametrizations.weight.original",
                                       "parametrizations.weight.0._u",
                                       "parametrizations.weight.0._v"]
    shape = (5, 6) if make == "linear" else (2, 3, 4, 4)
    for _ in range(3):                  # training mode: one power-iteration step per access
        _check_call(ours, theirs, rng.standard_normal(shape), rng)
        ours.zero_grad(), theirs.zero_grad()
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key].numpy(), value.numpy(), rtol=1e-10,
                                   atol=1e-13, err_msg=key)
    ours.eval(), theirs.eval()
    u = ours.parametrizations.weight[0]._u.numpy().copy()
    _check_call(ours, theirs, rng.standard_normal(shape), rng)
    np.testing.assert_array_equal(ours.parametrizations.weight[0]._u.numpy(), u)


def test_parametrized_spectral_norm_bounds_the_largest_singular_value():
    lin = parametrizations.spectral_norm(nn.Linear(8, 6).double())
    for _ in range(30):
        lin.weight
    assert abs(np.linalg.svd(lin.weight.numpy(), compute_uv=False)[0] - 1) < 1e-6


def test_parametrized_spectral_norm_refusals():
    with pytest.raises(ValueError, match="n_power_iterations"):
        parametrizations.spectral_norm(nn.Linear(3, 3), n_power_iterations=0)
    with pytest.raises(IndexError, match="Dimension out of range"):
        parametrizations.spectral_norm(nn.Linear(3, 3), dim=2)
    with pytest.raises(ValueError, match="no parameter or buffer with name 'kernel'"):
        parametrizations.spectral_norm(nn.Linear(3, 3), name="kernel")


def test_old_weight_norm_matches_torch_and_warns(rng):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours, theirs = _pair(lambda: nn.Linear(5, 4), lambda: torch.nn.Linear(5, 4),
                             nn.utils.weight_norm, torch.nn.utils.weight_norm)
    assert [w.category for w in caught] == [FutureWarning, FutureWarning]
    assert "deprecated" in str(caught[0].message)
    assert list(ours.state_dict()) == ["bias", "weight_g", "weight_v"]
    assert ours.weight_g.shape == (4, 1)
    _check_call(ours, theirs, rng.standard_normal((3, 5)), rng)
    with pytest.raises(RuntimeError, match="Cannot register two weight_norm hooks"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nn.utils.weight_norm(ours)
    nn.utils.remove_weight_norm(ours)
    torch.nn.utils.remove_weight_norm(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["bias", "weight"]
    np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="weight_norm of 'weight' not found"):
        nn.utils.remove_weight_norm(ours)


@pytest.mark.parametrize("dim", [None, 1])
def test_old_spectral_norm_matches_torch(rng, dim):
    ours, theirs = _pair(lambda: nn.Conv2d(2, 3, 3), lambda: torch.nn.Conv2d(2, 3, 3),
                         lambda m: nn.utils.spectral_norm(m, dim=dim),
                         lambda m: torch.nn.utils.spectral_norm(m, dim=dim))
    assert list(ours.state_dict()) == ["bias", "weight_orig", "weight_u", "weight_v"]
    for _ in range(3):
        _check_call(ours, theirs, rng.standard_normal((2, 2, 5, 5)), rng)
        ours.zero_grad(), theirs.zero_grad()
    np.testing.assert_allclose(ours.weight_u.numpy(), theirs.weight_u.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.weight_v.numpy(), theirs.weight_v.numpy(), rtol=1e-10)
    ours.eval(), theirs.eval()
    _check_call(ours, theirs, rng.standard_normal((2, 2, 5, 5)), rng)
    nn.utils.remove_spectral_norm(ours)
    torch.nn.utils.remove_spectral_norm(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), rtol=1e-10)
    with pytest.raises(ValueError, match="spectral_norm of 'weight' not found"):
        nn.utils.remove_spectral_norm(ours)


def test_old_spectral_norm_refusals():
    lin = nn.utils.spectral_norm(nn.Linear(3, 3))
    with pytest.raises(RuntimeError, match="Cannot register two spectral_norm hooks"):
        nn.utils.spectral_norm(lin)
    with pytest.raises(ValueError, match="n_power_iterations"):
        nn.utils.spectral_norm(nn.Linear(3, 3), n_power_iterations=0)
    with pytest.raises(ValueError, match="uninitialized parameters"):
        nn.utils.spectral_norm(nn.LazyLinear(3))


@pytest.mark.parametrize("shape,options", [
    ((5, 5), {}), ((5, 5), {"orthogonal_map": "householder"}), ((6, 3), {}), ((3, 6), {}),
    ((6, 3), {"orthogonal_map": "matrix_exp"}),
    ((6, 3), {"orthogonal_map": "householder", "use_trivialization": False}),
    ((3, 6), {"orthogonal_map": "householder", "use_trivialization": False})])
def test_parametrizations_orthogonal_matches_torch(rng, shape, options):
    theirs = torch.nn.Linear(*shape).double()
    ours = nn.Linear(*shape).double()
    ours.load_state_dict(_numpy_state(theirs))
    torch.nn.utils.parametrizations.orthogonal(theirs, **options)
    parametrizations.orthogonal(ours, **options)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(_numpy_state(theirs))      # torch's random completion of a base
    # move away from the starting point (below the diagonal: torch truncates the diagonal's
    # signs for householder)
    original = theirs.parametrizations.weight.original
    step = np.tril(rng.standard_normal(tuple(original.shape)), -1) * 0.3
    with torch.no_grad():
        original.add_(torch.tensor(step))
    with gd.no_grad():
        ours.parametrizations.weight.original.add_(gd.tensor(step))
    w = ours.weight.numpy()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(gram, np.eye(min(w.shape)), atol=1e-12)
    _check_call(ours, theirs, rng.standard_normal((4, shape[0])), rng, rtol=1e-9)


def test_orthogonal_assignment_and_refusals(rng):
    theirs = torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(4, 4).double())
    ours = parametrizations.orthogonal(nn.Linear(4, 4).double())
    q = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    with torch.no_grad():
        theirs.weight = torch.tensor(q)
    ours.weight = gd.tensor(q)
    np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), atol=1e-14)
    np.testing.assert_allclose(ours.weight.numpy(), q, atol=1e-14)
    with pytest.raises(ValueError, match="Expected a matrix or batch of matrices"):
        parametrizations.orthogonal(nn.Linear(3, 3), name="bias")
    with pytest.raises(ValueError, match="orthogonal_map has to be one of"):
        parametrizations.orthogonal(nn.Linear(3, 3), orthogonal_map="qr")
    with pytest.raises(NotImplementedError, match="Cayley"):
        parametrizations.orthogonal(nn.Linear(3, 3), orthogonal_map="cayley")
    lin = parametrizations.orthogonal(nn.Linear(3, 3).double(), use_trivialization=False)
    with pytest.raises(NotImplementedError, match="use_trivialization=False"):
        lin.weight = gd.eye(3, dtype=gd.float64)
