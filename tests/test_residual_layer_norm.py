"""ResidualLayerNorm (gpudl/ops/normalization.py): layer_norm(r + (a + c)) in one node (on cuda
one kernel, kernels/layer_norm_cuda.add_forward), and TransformerEncoderLayer's fused post-norm
forward built on it and PackedSelfAttention, against torch CPU float64 on fresh random inputs,
forward and gradients."""

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import backend
from gpudl.ops import normalization as N
from test_packed_self_attention import forward_calls


def _compare(y, ref, named, rng, dtype, tol):
    """y against torch's ``ref``, then the gradients of a random upstream weighting of both:
    ``named`` (name, ours, theirs) triples, None ones skipped; gradients to 10 * tol."""
    np.testing.assert_allclose(y.detach().cpu().numpy(), ref.detach().numpy(), rtol=tol,
                               atol=tol)
    upstream = rng.standard_normal(ref.shape)
    (y * gd.tensor(upstream.astype(dtype))).sum().backward()
    (ref * torch.tensor(upstream)).sum().backward()
    for name, ours, theirs in named:
        if ours is not None:
            np.testing.assert_allclose(ours.grad.cpu().numpy(), theirs.grad.numpy(),
                                       rtol=10 * tol, atol=10 * tol, err_msg=name)


def _pair(rng, shape, dtype, grad=True):
    a = rng.standard_normal(shape)
    return (gd.tensor(a.astype(dtype), requires_grad=grad),
            torch.tensor(a, requires_grad=grad))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_c, affine", [(True, True), (False, True), (True, False)])
def test_residual_layer_norm_matches_torch(rng, dtype, with_c, affine):
    shape, D = (3, 5, 12), 12
    (r, tr), (a, ta) = _pair(rng, shape, dtype), _pair(rng, shape, dtype)
    (c, tc) = _pair(rng, (D,), dtype) if with_c else (None, None)
    (w, tw), (b, tb) = ((_pair(rng, (D,), dtype), _pair(rng, (D,), dtype)) if affine
                        else ((None, None), (None, None)))
    y = N.residual_layer_norm(r, a, c, w, b, 1e-5)
    ref = torch.nn.functional.layer_norm(tr + (ta if tc is None else ta + tc), (D,), tw, tb,
                                         1e-5)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    _compare(y, ref, (("r", r, tr), ("a", a, ta), ("c", c, tc), ("weight", w, tw),
                      ("bias", b, tb)), rng, dtype, tol)
    if with_c and affine:
        arrays = [t.grad._data for t in (r, a, c, w, b)]
        xp = backend.get_array_module(arrays[0])
        # r's and a's gradients may share their array; the parameters' are their own
        for i, x in enumerate(arrays[2:], 2):
            assert not any(xp.shares_memory(x, other) for j, other in enumerate(arrays)
                           if j != i)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transformer_encoder_layer_fused_post_norm_matches_torch(rng, monkeypatch, dtype):
    """batch_first, no dropout (in training mode): on the cuda device the layer runs
    PackedSelfAttention and two ResidualLayerNorms; anywhere, torch's output and gradients."""
    E, H, F, batch, L = 8, 2, 16, 3, 5
    calls = forward_calls(monkeypatch, N.ResidualLayerNorm)
    torch.manual_seed(int(rng.integers(1 << 30)))
    ref = torch.nn.TransformerEncoderLayer(E, H, F, dropout=0.0, batch_first=True,
                                           dtype=torch.float64)
    ours = gd.nn.TransformerEncoderLayer(E, H, F, dropout=0.0, batch_first=True,
                                         dtype=np.float64)
    ours.load_state_dict({k: gd.tensor(v.detach().numpy()) for k, v in ref.state_dict().items()})
    ours.to(backend.DEFAULT_DEVICE).to(dtype)
    x = rng.standard_normal((batch, L, E))
    xt = torch.tensor(x, requires_grad=True)
    xg = gd.tensor(x.astype(dtype), requires_grad=True)
    # float32 on the cuda device: the 3xTF32 attention kernels, fp32-like
    tol = 1e-9 if dtype == np.float64 else 2e-4
    mine = dict(ours.named_parameters())
    _compare(ours(xg), ref(xt), [("x", xg, xt)] + [(name, mine[name], p) for name, p in
                                                   ref.named_parameters()], rng, dtype, tol)
    assert len(calls) == (2 if backend.on_device(xg._data) else 0)


@pytest.mark.parametrize("dims", [(1,), (0, 2)])
def test_mean_backward_then_layer_norm_matches_torch(rng, dims):
    """Mean's backward writes the whole gradient in one kernel on the device (C-contiguous, no
    broadcast view for LayerNorm's backward to copy): values as torch's."""
    x = rng.standard_normal((3, 4, 6))
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    xg = gd.tensor(x.astype(np.float32), requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    ours = gd.nn.functional.layer_norm(xg, (6,), gd.tensor(w.astype(np.float32)),
                                       gd.tensor(b.astype(np.float32))).mean(dims)
    ref = torch.nn.functional.layer_norm(xt, (6,), torch.tensor(w), torch.tensor(b)).mean(dims)
    g = rng.standard_normal(ref.shape)
    (ours * gd.tensor(g.astype(np.float32))).sum().backward()
    (ref * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(ours.detach().cpu().numpy(), ref.detach().numpy(), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(xg.grad.cpu().numpy(), xt.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_a_hooked_or_causal_layer_runs_its_submodules(monkeypatch):
    """The fused post-norm forward calls no submodule: a layer whose linear2 has a forward hook,
    or a call with is_causal=True, takes the plain path (the hook runs; is_causal without a
    mask is refused as before)."""
    calls = forward_calls(monkeypatch, N.ResidualLayerNorm)
    layer = gd.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                          dtype=np.float64).to(backend.DEFAULT_DEVICE)
    seen = []
    layer.linear2.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    x = gd.randn(2, 3, 8, dtype=np.float64)
    layer(x)
    assert seen == [(2, 3, 8)] and calls == []
    with pytest.raises(ValueError, match="is_causal"):
        gd.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                      dtype=np.float64).to(backend.DEFAULT_DEVICE)(
            x, is_causal=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_relu_matches_torch(rng, dtype):
    """LinearReLU (the fused layer's linear1 and ReLU: on cuda the bias add and the ReLU in one
    kernel) against torch, forward and the gradients of x, weight and bias."""
    from gpudl.ops.linalg import LinearReLU
    (x, tx), (w, tw), (b, tb) = (_pair(rng, s, dtype) for s in ((4, 5, 6), (7, 6), (7,)))
    _compare(LinearReLU.apply(x, w, b), torch.relu(torch.nn.functional.linear(tx, tw, tb)),
             (("x", x, tx), ("weight", w, tw), ("bias", b, tb)), rng, dtype,
             1e-5 if dtype == np.float32 else 1e-12)


def test_backward_twice_with_retain_graph(rng):
    """A second backward through retained LinearReLU and ResidualLayerNorm nodes adds the same
    gradients again."""
    from gpudl.ops.linalg import LinearReLU
    (x, tx), (w, tw), (b, tb), (r, tr) = (_pair(rng, s, np.float64)
                                          for s in ((3, 4), (5, 4), (5,), (3, 5)))
    y = N.residual_layer_norm(r, LinearReLU.apply(x, w, b), None, None, None)
    ref = torch.nn.functional.layer_norm(tr + torch.relu(torch.nn.functional.linear(tx, tw, tb)),
                                         (5,))
    upstream = rng.standard_normal(ref.shape)
    for _ in range(2):
        (y * gd.tensor(upstream)).sum().backward(retain_graph=True)
        (ref * torch.tensor(upstream)).sum().backward(retain_graph=True)
    for ours, theirs in ((x, tx), (w, tw), (b, tb), (r, tr)):
        np.testing.assert_allclose(ours.grad.cpu().numpy(), theirs.grad.numpy(), rtol=1e-12,
                                   atol=1e-12)
