"""nn.utils (gradient norms, fusion, skip_init, functional_call) and nn.init (dirac_, eye_,
orthogonal_, sparse_, trunc_normal_, the deprecated names) against torch."""

import warnings

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import nn
from gpudl.nn.utils import stateless


def _grads(rng, shapes):
    arrays = [rng.standard_normal(s) for s in shapes]
    ours = [gd.tensor(np.zeros(s), requires_grad=True) for s in shapes]
    theirs = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    for p, t, a in zip(ours, theirs, arrays):
        p.grad, t.grad = gd.tensor(a.copy()), torch.tensor(a.copy())
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, float("inf"), 0.0])
def test_get_total_norm_and_clip_grads_with_norm_match_torch(rng, norm_type):
    ours, theirs = _grads(rng, [(3, 4), (5,), (2, 2, 2)])
    total = nn.utils.get_total_norm([p.grad for p in ours], norm_type)
    t_total = torch.nn.utils.get_total_norm([t.grad for t in theirs], norm_type)
    np.testing.assert_allclose(total.numpy(), t_total.numpy(), rtol=1e-12)
    max_norm = 0.5 * float(t_total)
    nn.utils.clip_grads_with_norm_(ours, max_norm, total)
    torch.nn.utils.clip_grads_with_norm_(theirs, max_norm, t_total)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_deprecated_alias_warns_and_clips(rng):
    ours, theirs = _grads(rng, [(4, 3), (3,)])
    with pytest.warns(FutureWarning, match="clip_grad_norm_"):
        total = nn.utils.clip_grad_norm(ours, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_total = torch.nn.utils.clip_grad_norm(theirs, 0.1)
    np.testing.assert_allclose(total.numpy(), t_total.numpy(), rtol=1e-12)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def test_get_total_norm_empty_and_nonfinite():
    assert nn.utils.get_total_norm([]).item() == 0.0
    bad = gd.tensor([1.0, float("nan")])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.get_total_norm([bad], error_if_nonfinite=True)


def _trained_bn(bn_gd, bn_torch, shape, rng):
    """Give both batch norms the same non-trivial running statistics and affine values."""
    for _ in range(3):
        x = rng.standard_normal(shape) * 2 + 1
        bn_torch(torch.tensor(x))
    state = {k: v.numpy().copy() for k, v in bn_torch.state_dict().items()}
    for k in ("weight", "bias"):
        if k in state:
            state[k] = rng.standard_normal(state[k].shape)
    bn_torch.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    bn_gd.load_state_dict(state)
    bn_gd.eval(), bn_torch.eval()


@pytest.mark.parametrize("transpose,bias,affine", [(False, True, True), (False, False, True),
                                                   (True, True, True), (False, True, False)])
def test_fuse_conv_bn_eval_matches_torch(rng, transpose, bias, affine):
    make = (lambda lib: lib.ConvTranspose2d(3, 4, 3, bias=bias)) if transpose else \
        (lambda lib: lib.Conv2d(3, 4, 3, bias=bias))
    conv_t, conv = make(torch.nn).double().eval(), make(nn).double().eval()
    conv.load_state_dict({k: v.detach().numpy() for k, v in conv_t.state_dict().items()})
    bn_t, bn = torch.nn.BatchNorm2d(4, affine=affine).double(), nn.BatchNorm2d(4, affine=affine)
    bn = bn.double()
    _trained_bn(bn, bn_t, (5, 4, 3, 3), rng)
    fused = nn.utils.fuse_conv_bn_eval(conv, bn, transpose=transpose)
    fused_t = torch.nn.utils.fuse_conv_bn_eval(conv_t, bn_t, transpose=transpose)
    assert fused is not conv and conv.bias is (None if not bias else conv.bias)
    np.testing.assert_allclose(fused.weight.numpy(), fused_t.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(fused.bias.numpy(), fused_t.bias.detach().numpy(), rtol=1e-12,
                               atol=1e-14)
    x = rng.standard_normal((2, 3, 6, 6))
    np.testing.assert_allclose(fused(gd.tensor(x)).numpy(), bn(conv(gd.tensor(x))).numpy(),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("features", [4, 1])
def test_fuse_linear_bn_eval_matches_torch(rng, features):
    lin_t, lin = torch.nn.Linear(3, 4).double().eval(), nn.Linear(3, 4).double().eval()
    lin.load_state_dict({k: v.detach().numpy() for k, v in lin_t.state_dict().items()})
    bn_t, bn = torch.nn.BatchNorm1d(features).double(), nn.BatchNorm1d(features).double()
    _trained_bn(bn, bn_t, (6, features), rng)
    fused, fused_t = nn.utils.fuse_linear_bn_eval(lin, bn), \
        torch.nn.utils.fuse_linear_bn_eval(lin_t, bn_t)
    np.testing.assert_allclose(fused.weight.numpy(), fused_t.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(fused.bias.numpy(), fused_t.bias.detach().numpy(), rtol=1e-12)


def test_fusion_refusals():
    with pytest.raises(ValueError, match="fusion only for eval"):
        nn.utils.fuse_conv_bn_eval(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3).eval())
    with pytest.raises(ValueError, match="out_features \\(4\\) must equal bn.num_features"):
        nn.utils.fuse_linear_bn_eval(nn.Linear(2, 4).eval(), nn.BatchNorm1d(3).eval())


def test_skip_init_leaves_the_random_stream_alone():
    gd.manual_seed(5)
    expected = gd.randn(3).numpy()
    gd.manual_seed(5)
    layer = nn.utils.skip_init(nn.Linear, 6, 4, dtype=gd.float64)
    assert layer.weight.shape == (4, 6) and layer.weight.dtype == gd.float64
    np.testing.assert_array_equal(gd.randn(3).numpy(), expected)

    class NoDevice(nn.Module):
        def __init__(self, n):
            super().__init__()

    with pytest.raises(RuntimeError, match="'device' arg"):
        nn.utils.skip_init(NoDevice, 3)


def test_functional_call_matches_torch_func(rng):
    t_net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2),
                                torch.nn.BatchNorm1d(2)).double()
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2), nn.BatchNorm1d(2)).double()
    net.load_state_dict({k: v.detach().numpy() for k, v in t_net.state_dict().items()})
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    new = {"0.weight": rng.standard_normal((5, 4)), "2.bias": rng.standard_normal(2),
           "3.running_mean": rng.standard_normal(2)}
    ours = {k: gd.tensor(v, requires_grad=k != "3.running_mean") for k, v in new.items()}
    theirs = {k: torch.tensor(v, requires_grad=k != "3.running_mean") for k, v in new.items()}
    x = rng.standard_normal((6, 4))
    net.eval(), t_net.eval()
    assert gd.func.functional_call is stateless.functional_call         # torch.func's name
    y = stateless.functional_call(net, ours, (gd.tensor(x),))
    ty = torch.func.functional_call(t_net, theirs, (torch.tensor(x),))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10)
    w = rng.standard_normal(y.shape)
    (y * gd.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    for k in ("0.weight", "2.bias"):
        np.testing.assert_allclose(ours[k].grad.numpy(), theirs[k].grad.numpy(), rtol=1e-10)
    for k, v in net.state_dict().items():               # the module's own tensors are back
        np.testing.assert_array_equal(v.numpy(), before[k])
    assert net[0].weight.grad is None


def test_functional_call_ties_strict_and_refusals():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3, bias=False)
            self.b = nn.Linear(3, 3, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    net = Tied()
    eye = gd.eye(3)
    x = gd.randn(2, 3)
    np.testing.assert_allclose(stateless.functional_call(net, {"a.weight": eye}, x).numpy(),
                               x.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="which are tied"):
        stateless.functional_call(net, {"a.weight": eye, "b.weight": gd.eye(3)}, x)
    with pytest.raises(RuntimeError, match="Missing key"):
        stateless.functional_call(net, {"a.weight": eye}, x, tie_weights=False, strict=True)
    with pytest.raises(ValueError, match="multiple dictionaries"):
        stateless.functional_call(net, ({"a.weight": eye}, {"a.weight": eye}), x)
    with pytest.raises(TypeError, match="must be a Tensor"):
        stateless.functional_call(net, {"a.weight": np.eye(3)}, x)


# ------------------------------------------------------------------------------------ init
@pytest.mark.parametrize("shape,groups", [((4, 2, 3), 2), ((6, 3, 3, 3), 1), ((4, 4, 3, 3, 3), 2),
                                          ((2, 5, 3, 2), 1)])
def test_dirac_matches_torch(shape, groups):
    t = gd.randn(*shape)
    expected = torch.nn.init.dirac_(torch.empty(shape), groups)
    np.testing.assert_array_equal(nn.init.dirac_(t, groups).numpy(), expected.numpy())


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4)])
def test_eye_matches_torch(shape):
    np.testing.assert_array_equal(nn.init.eye_(gd.randn(*shape)).numpy(),
                                  torch.nn.init.eye_(torch.empty(shape)).numpy())


@pytest.mark.parametrize("shape", [(3, 5), (6, 2), (4, 2, 3)])
def test_orthogonal_rows_or_columns_are_orthonormal(shape):
    w = nn.init.orthogonal_(gd.empty(*shape, dtype=gd.float64), gain=2.0).numpy()
    flat = w.reshape(shape[0], -1)
    gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    np.testing.assert_allclose(gram, 4 * np.eye(gram.shape[0]), atol=1e-12)


def test_sparse_zeros_a_fixed_count_per_column():
    w = nn.init.sparse_(gd.empty(50, 40, dtype=gd.float64), sparsity=0.3, std=0.5).numpy()
    t = torch.nn.init.sparse_(torch.empty(50, 40, dtype=torch.float64), 0.3, 0.5).numpy()
    assert ((w == 0).sum(0) == (t == 0).sum(0)).all()            # 15 zeros per column
    nonzero = w[w != 0]
    assert 0.4 < nonzero.std() < 0.6
    assert len({tuple(np.flatnonzero(c == 0)) for c in w.T}) > 30        # the rows differ
    with pytest.raises(ValueError, match="2 dimensions"):
        nn.init.sparse_(gd.empty(3, 3, 3), 0.1)


def test_trunc_normal_stays_within_bounds():
    w = nn.init.trunc_normal_(gd.empty(4000, dtype=gd.float64), mean=1.0, std=2.0, a=-0.5,
                              b=1.5).numpy()
    assert w.min() >= -0.5 and w.max() <= 1.5 and abs(w.mean() - 0.5) < 0.05


@pytest.mark.parametrize("name,args", [
    ("uniform", ()), ("normal", ()), ("constant", (0.3,)), ("xavier_uniform", ()),
    ("xavier_normal", ()), ("kaiming_uniform", ()), ("kaiming_normal", ()), ("orthogonal", ()),
    ("sparse", (0.2,)), ("eye", ()), ("dirac", ())])
def test_deprecated_init_names_warn_as_torch(name, args):
    shape = (4, 4, 3) if name == "dirac" else (4, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = getattr(nn.init, name)(gd.empty(*shape), *args)
        getattr(torch.nn.init, name)(torch.empty(shape), *args)
    ours, theirs = caught
    assert ours.category is theirs.category is FutureWarning
    assert str(ours.message) == str(theirs.message)
    assert out.shape == shape


@pytest.mark.parametrize("name,args", [
    ("uniform_", (-1.0, 2.0)), ("normal_", (0.5, 2.0)), ("trunc_normal_", ()),
    ("xavier_uniform_", ()), ("xavier_normal_", ()), ("kaiming_uniform_", ()),
    ("kaiming_normal_", ()), ("orthogonal_", ()), ("sparse_", (0.3,))])
def test_init_generator_argument_as_torch(name, args):
    """torch's ``generator=``: the same seed gives the same values, and the global random
    stream is left alone."""
    def seeded(seed):           # on the tensors' (default) device, as a torch user makes it
        return gd.Generator(gd.empty(0).device).manual_seed(seed)

    gd.manual_seed(3)
    expected_global = gd.randn(4).numpy()
    gd.manual_seed(3)
    first = getattr(nn.init, name)(gd.empty(6, 5), *args, generator=seeded(7)).numpy()
    np.testing.assert_array_equal(gd.randn(4).numpy(), expected_global)
    second = getattr(nn.init, name)(gd.empty(6, 5), *args, generator=seeded(7)).numpy()
    np.testing.assert_array_equal(first, second)
    other = getattr(nn.init, name)(gd.empty(6, 5), *args, generator=seeded(8)).numpy()
    assert not np.array_equal(first, other)
    getattr(torch.nn.init, name)(torch.empty(6, 5), *args,
                                 generator=torch.Generator().manual_seed(7))   # torch takes it
