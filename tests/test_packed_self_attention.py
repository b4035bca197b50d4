"""PackedSelfAttention (gpudl/ops/attention.py): MultiheadAttention's unmasked self-attention
with its in-projection written straight into heads (one batched GEMM), against torch CPU
float64 on fresh random inputs, forward and gradients of x, in_proj_weight and in_proj_bias; and
MultiheadAttention / TransformerEncoderLayer taking it on the cuda device with torch's results."""

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import backend
from gpudl.ops import attention as A


def forward_calls(monkeypatch, function):
    """A list that gets an entry at each forward of the ArrayFunction ``function``."""
    calls = []
    real = function.forward

    def forward(ctx, *args):
        calls.append(1)
        return real(ctx, *args)
    monkeypatch.setattr(function, "forward", staticmethod(forward))
    return calls


def _torch_packed(x, w, b, heads, causal):
    N, L, E = x.shape
    D = E // heads
    proj = x @ w.T + (0 if b is None else b)
    q, k, v = (t.reshape(N, L, heads, D).transpose(1, 2) for t in proj.chunk(3, dim=-1))
    scores = q @ k.transpose(-2, -1) / D ** 0.5     # written out: twice differentiable
    if causal:
        scores = scores.masked_fill(~torch.ones(L, L, dtype=torch.bool).tril(), -torch.inf)
    out = scores.softmax(-1) @ v
    return out.transpose(1, 2).reshape(N, L, E)


def _tol(dtype):
    # float32 on the cuda device runs the 3xTF32 attention kernels: fp32-like, not exact
    return (2e-4, 2e-4) if dtype == np.float32 else (1e-9, 1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal, bias", [(False, True), (True, True), (False, False)])
def test_packed_self_attention_matches_torch(rng, dtype, causal, bias):
    N, L, E, H = 2, 5, 8, 2
    arrays = [rng.standard_normal((N, L, E)), rng.standard_normal((3 * E, E)) / 3,
              rng.standard_normal(3 * E) if bias else None]
    upstream = rng.standard_normal((N, L, E))
    ours = [None if a is None else gd.tensor(a.astype(dtype), requires_grad=True)
            for a in arrays]
    theirs = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    y = A.packed_self_attention(ours[0], ours[1], ours[2], H, causal)
    ref = _torch_packed(*theirs, H, causal)
    rtol, atol = _tol(dtype)
    assert y.shape == (N, L, E) and y.dtype == dtype
    np.testing.assert_allclose(y.detach().cpu().numpy(), ref.detach().numpy(), rtol=rtol,
                               atol=atol)
    (y * gd.tensor(upstream.astype(dtype))).sum().backward()
    (ref * torch.tensor(upstream)).sum().backward()
    for name, a, b in zip(("x", "in_proj_weight", "in_proj_bias"), ours, theirs):
        if a is None:
            continue
        np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), rtol=rtol,
                                   atol=10 * atol, err_msg=name)


def test_packed_self_attention_input_without_grad(rng):
    """x without grad (a model's input): only the weight and bias gradients are made."""
    x = gd.tensor(rng.standard_normal((3, 4, 8)))
    w = gd.tensor(rng.standard_normal((24, 8)), requires_grad=True)
    b = gd.tensor(rng.standard_normal(24), requires_grad=True)
    A.packed_self_attention(x, w, b, 4).sum().backward()
    tw = torch.tensor(w.detach().cpu().numpy(), requires_grad=True)
    tb = torch.tensor(b.detach().cpu().numpy(), requires_grad=True)
    _torch_packed(torch.tensor(x.cpu().numpy()), tw, tb, 4, False).sum().backward()
    np.testing.assert_allclose(w.grad.cpu().numpy(), tw.grad.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b.grad.cpu().numpy(), tb.grad.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_takes_the_packed_path(rng, monkeypatch, batch_first):
    """On the cuda device TransformerEncoderLayer's call (need_weights=False, no mask, eval or
    no dropout) runs PackedSelfAttention; anywhere, the results are torch's."""
    E, H, N, L = 8, 2, 3, 5
    calls = forward_calls(monkeypatch, A.PackedSelfAttention)
    torch.manual_seed(int(rng.integers(1 << 30)))
    ref = torch.nn.MultiheadAttention(E, H, batch_first=batch_first, dtype=torch.float64)
    ours = gd.nn.MultiheadAttention(E, H, batch_first=batch_first, dtype=np.float64)
    ours.load_state_dict({k: gd.tensor(v.detach().numpy()) for k, v in ref.state_dict().items()})
    ours.to(backend.DEFAULT_DEVICE)
    x = rng.standard_normal((N, L, E) if batch_first else (L, N, E))
    xt = torch.tensor(x, requires_grad=True)
    xg = gd.tensor(x, requires_grad=True)
    out, weights = ours(xg, xg, xg, need_weights=False)
    ref_out, _ = ref(xt, xt, xt, need_weights=False)
    assert weights is None
    np.testing.assert_allclose(out.detach().cpu().numpy(), ref_out.detach().numpy(), rtol=1e-9,
                               atol=1e-9)
    g = rng.standard_normal(out.shape)
    (out * gd.tensor(g)).sum().backward()
    (ref_out * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(xg.grad.cpu().numpy(), xt.grad.numpy(), rtol=1e-8, atol=1e-9)
    for name, p in ref.named_parameters():
        mine = dict(ours.named_parameters())[name]
        np.testing.assert_allclose(mine.grad.cpu().numpy(), p.grad.numpy(), rtol=1e-8,
                                   atol=1e-9, err_msg=name)
    assert len(calls) == (1 if backend.on_device(xg._data) else 0)


def test_packed_self_attention_second_order_matches_torch(rng):
    """create_graph=True through the op (its graph backward): the gradient of a function of
    the first gradient, against torch."""
    x = rng.standard_normal((2, 3, 4))
    w, b = rng.standard_normal((12, 4)) / 2, rng.standard_normal(12)
    ours = [gd.tensor(a, requires_grad=True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    gx, = gd.autograd.grad(A.packed_self_attention(*ours, 2).pow(2).sum(), ours[0],
                           create_graph=True)
    tgx, = torch.autograd.grad(_torch_packed(*theirs, 2, False).pow(2).sum(), theirs[0],
                               create_graph=True)
    gx.pow(2).sum().backward()
    tgx.pow(2).sum().backward()
    for name, a, t in zip(("x", "in_proj_weight", "in_proj_bias"), ours, theirs):
        np.testing.assert_allclose(a.grad.cpu().numpy(), t.grad.numpy(), rtol=1e-8, atol=1e-9,
                                   err_msg=name)
