"""create_graph=True (second-order gradients) through the fused nodes: LayerNorm (on cuda
kernels/layer_norm_cuda.py's one-kernel path, which keeps x's rows, not xhat), ResidualLayerNorm
(layer_norm(r + (a + c)) in one node) and LinearReLU (linear's bias and a ReLU in one kernel),
and a post-norm TransformerEncoderLayer built on them: the gradients of a function of the first
gradients, against torch CPU float64 on fresh random inputs. On the CPU and, with
``NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda``, under the strict simulator (tiny shapes), where
the fused paths are asserted taken."""

import numpy as np
import pytest
import torch
import torch.nn.attention  # noqa: F401  (sdpa_kernel)

import gpudl as gd
from gpudl import backend
from gpudl.ops import linalg as L
from gpudl.ops import normalization as N
from test_packed_self_attention import forward_calls

TOL = dict(rtol=1e-8, atol=1e-9)


def _pairs(rng, shapes):
    """(ours, theirs): leaves with the same fresh float64 values (None for a None shape)."""
    arrays = [None if s is None else rng.standard_normal(s) for s in shapes]
    return ([None if a is None else gd.tensor(a, requires_grad=True) for a in arrays],
            [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays])


def _grad_array(t):
    """t.grad as NumPy, zeros where no gradient reached (torch may leave None for an input
    that the second-order graph reaches only through a piecewise-constant mask)."""
    return np.zeros(tuple(t.shape)) if t.grad is None else t.grad.detach().cpu().numpy()


def _second_order(module, y, leaves, upstream, weights):
    """The first gradients of sum(y * upstream) for ``leaves`` (create_graph), then backward
    of their squared norms plus their ``weights``-weighted sums, into the leaves' .grad."""
    firsts = module.autograd.grad((y * module.tensor(upstream)).sum(), leaves,
                                  create_graph=True)
    penalty = 0
    for g, v in zip(firsts, weights):
        penalty = penalty + (g * g).sum() + (g * module.tensor(v)).sum()
    penalty.backward()
    return firsts


def _check(y, ty, ours, theirs, rng):
    """y against torch's ``ty``, then the first gradients and the second-order gradients of
    ``_second_order`` for every leaf of ``ours`` / ``theirs`` (None ones skipped)."""
    np.testing.assert_allclose(y.detach().cpu().numpy(), ty.detach().numpy(), **TOL)
    upstream = rng.standard_normal(tuple(ty.shape))
    leaves = [t for t in ours if t is not None]
    tleaves = [t for t in theirs if t is not None]
    weights = [rng.standard_normal(tuple(t.shape)) for t in tleaves]
    firsts = _second_order(gd, y, leaves, upstream, weights)
    tfirsts = _second_order(torch, ty, tleaves, upstream, weights)
    for i, (g, tg) in enumerate(zip(firsts, tfirsts)):
        np.testing.assert_allclose(g.detach().cpu().numpy(), tg.detach().numpy(), **TOL,
                                   err_msg=f"first gradient {i}")
    for i, (a, t) in enumerate(zip(leaves, tleaves)):
        np.testing.assert_allclose(_grad_array(a), _grad_array(t), **TOL,
                                   err_msg=f"second-order gradient of leaf {i}")


def _fused(t):
    """Whether t's node took kernels/layer_norm_cuda.py's path (it keeps x's rows)."""
    return t.grad_fn.ctx.rows is not None


@pytest.mark.parametrize("shape, ndim, affine", [((3, 4, 6), 1, True), ((2, 3, 5), 2, True),
                                                 ((4, 7), 1, False)])
def test_layer_norm_second_order_matches_torch(rng, shape, ndim, affine):
    norm = shape[-ndim:]
    ours, theirs = _pairs(rng, [shape] + [norm if affine else None] * 2)
    y = gd.nn.functional.layer_norm(ours[0], norm, ours[1], ours[2], 1e-5)
    ty = torch.nn.functional.layer_norm(theirs[0], norm, theirs[1], theirs[2], 1e-5)
    assert _fused(y) == backend.on_device(ours[0]._data)
    _check(y, ty, ours, theirs, rng)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")   # torch's
def test_layer_norm_module_backward_create_graph(rng):
    """nn.LayerNorm, loss.backward(create_graph=True), then a penalty on x.grad."""
    x = rng.standard_normal((3, 5, 6))
    ours, ref = gd.nn.LayerNorm(6, dtype=np.float64), torch.nn.LayerNorm(6, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(rng.standard_normal(6)))
        ref.bias.copy_(torch.tensor(rng.standard_normal(6)))
    ours.load_state_dict({k: gd.tensor(v.detach().numpy()) for k, v in ref.state_dict().items()})
    ours.to(backend.DEFAULT_DEVICE)
    xg, xt = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    u = rng.standard_normal(x.shape)
    y, ty = ours(xg), ref(xt)
    assert _fused(y) == backend.on_device(xg._data)
    (y * gd.tensor(u)).sum().backward(create_graph=True)
    (ty * torch.tensor(u)).sum().backward(create_graph=True)
    first = [xg.grad, ours.weight.grad]
    tfirst = [xt.grad, ref.weight.grad]
    for t in (xg, ours.weight, ours.bias):
        t.grad = None
    for t in (xt, ref.weight, ref.bias):
        t.grad = None
    sum(g.pow(2).sum() for g in first).backward()
    sum(g.pow(2).sum() for g in tfirst).backward()
    for name, a, t in (("x", xg, xt), ("weight", ours.weight, ref.weight),
                       ("bias", ours.bias, ref.bias)):
        np.testing.assert_allclose(_grad_array(a), _grad_array(t), **TOL, err_msg=name)


@pytest.mark.parametrize("with_c, affine", [(True, True), (False, True), (True, False)])
def test_residual_layer_norm_second_order_matches_torch(rng, with_c, affine):
    shape, D = (2, 3, 6), 6
    ours, theirs = _pairs(rng, [shape, shape, (D,) if with_c else None]
                          + [(D,) if affine else None] * 2)
    y = N.residual_layer_norm(*ours, 1e-5)
    tr, ta, tc, tw, tb = theirs
    ty = torch.nn.functional.layer_norm(tr + (ta if tc is None else ta + tc), (D,), tw, tb,
                                        1e-5)
    assert _fused(y) == backend.on_device(ours[0]._data)
    _check(y, ty, ours, theirs, rng)


def test_residual_layer_norm_second_order_of_computed_inputs(rng):
    """r and a computed (not leaves), one of them needing no gradient: the gradient reaches
    the leaves below through the sum's place in the graph."""
    shape, D = (4, 5), 5
    ours, theirs = _pairs(rng, [shape, (D, D), (D,), (D,), (D,)])
    const = rng.standard_normal(shape)

    def run(module, x, m, c, w, b):
        r = x * 2
        a = module.tensor(const) @ m
        return r, a, c, w, b
    y = N.residual_layer_norm(*run(gd, *ours), 1e-5)
    tr, ta, tc, tw, tb = run(torch, *theirs)
    ty = torch.nn.functional.layer_norm(tr + (ta + tc), (D,), tw, tb, 1e-5)
    _check(y, ty, ours, theirs, rng)


def test_linear_relu_second_order_matches_torch(rng):
    """(LinearReLU takes a bias: TransformerEncoderLayer calls it only with one.)"""
    ours, theirs = _pairs(rng, [(2, 3, 5), (4, 5), (4,)])
    y = L.LinearReLU.apply(*ours)
    ty = torch.relu(torch.nn.functional.linear(*theirs))
    _check(y, ty, ours, theirs, rng)


def test_transformer_encoder_layer_grad_norm_penalty_matches_torch(rng, monkeypatch):
    """Post-norm, batch_first, dropout 0, in training mode: the parameters' gradient-norm
    penalty differentiated (on the cuda device through PackedSelfAttention, LinearReLU and two
    fused ResidualLayerNorms)."""
    E, H, F, batch, L_ = 4, 2, 6, 2, 3
    norms = forward_calls(monkeypatch, N.ResidualLayerNorm)
    relus = forward_calls(monkeypatch, L.LinearReLU)
    torch.manual_seed(int(rng.integers(1 << 30)))
    ref = torch.nn.TransformerEncoderLayer(E, H, F, dropout=0.0, batch_first=True,
                                           dtype=torch.float64)
    with torch.no_grad():           # non-trivial norm parameters
        for n in (ref.norm1, ref.norm2):
            n.weight.copy_(torch.tensor(1 + rng.standard_normal(E) / 2))
            n.bias.copy_(torch.tensor(rng.standard_normal(E) / 2))
    ours = gd.nn.TransformerEncoderLayer(E, H, F, dropout=0.0, batch_first=True,
                                         dtype=np.float64)
    ours.load_state_dict({k: gd.tensor(v.detach().numpy()) for k, v in ref.state_dict().items()})
    ours.to(backend.DEFAULT_DEVICE)
    x = rng.standard_normal((batch, L_, E))
    xg, xt = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    names = [name for name, _ in ref.named_parameters()]
    mine = dict(ours.named_parameters())
    ours_leaves = [xg] + [mine[n] for n in names]
    theirs_leaves = [xt] + [p for _, p in ref.named_parameters()]
    y = ours(xg)
    # torch's fused CPU attention has no double backward: its math path
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        ty = ref(xt)
    on_device = backend.on_device(xg._data)
    assert (len(norms), len(relus)) == ((2, 1) if on_device else (0, 0))
    _check(y, ty, ours_leaves, theirs_leaves, rng)
