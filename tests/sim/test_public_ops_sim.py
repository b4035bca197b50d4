"""Each kernel family through its PUBLIC op (gpudl.nn.functional / nn layers) in Numba's CUDA
simulator, forward and backward, against torch on the CPU.

The kernel-level sim tests call the entry points with arrays; these go through Tensor, autograd
and the ops' own reshapes and broadcasts, which is where a read-only view once reached a kernel
("assignment destination is read-only"). Every test counts kernel launches, so it cannot pass by
silently taking a CPU route. Shapes are tiny: the simulator runs each CUDA thread in Python.
"""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend, nn
from oracle import torch

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR or backend.DEFAULT_DEVICE != "cuda",
                                 reason="needs NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda"),
              pytest.mark.usefixtures("strict_fp32_conv",     # fp32 tolerances: no TF32
                                      "strict_fp32_attention")]  # no emulated 3xTF32 (slow)

if backend.SIMULATOR:
    from numba import cuda        # the simulator's, for the two raw kernels at the end

TF = torch.nn.functional
TOL = dict(rtol=2e-4, atol=2e-5)


@pytest.fixture
def launches(monkeypatch):
    """How many kernel launches ran (each launch asks backend.launch_stream for its stream)."""
    count = [0]
    real = backend.launch_stream

    def counted():
        count[0] += 1
        return real()
    monkeypatch.setattr(backend, "launch_stream", counted)
    return count


def _pair(rng, *shape):
    """The same float32 values as a gpudl tensor (on the simulated cuda device) and a torch
    tensor, both requiring grad."""
    a = rng.standard_normal(shape).astype(np.float32)
    ours = gd.tensor(a, requires_grad=True)
    assert ours.device == "cuda"
    return ours, torch.tensor(a, requires_grad=True)


def _check_grads(pairs):
    for ours, theirs in pairs:
        assert ours.grad is not None
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), **TOL)


def _backward(out_ours, out_theirs, rng):
    g = rng.standard_normal(out_theirs.shape).astype(np.float32)
    np.testing.assert_allclose(out_ours.detach().numpy(), out_theirs.detach().numpy(), **TOL)
    (out_ours * gd.tensor(g)).sum().backward()
    (out_theirs * torch.tensor(g)).sum().backward()


def test_conv2d_forward_backward(rng, launches):
    x, tx = _pair(rng, 2, 2, 5, 6)
    w, tw = _pair(rng, 3, 2, 3, 3)
    b, tb = _pair(rng, 3)
    _backward(F.conv2d(x, w, b, stride=(1, 2), padding=1),
              TF.conv2d(tx, tw, tb, stride=(1, 2), padding=1), rng)
    _check_grads([(x, tx), (w, tw), (b, tb)])
    assert launches[0] >= 2


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_pool2d_forward_backward(rng, launches, pool):
    x, tx = _pair(rng, 1, 2, 5, 6)
    if pool == "max":
        ours, theirs = F.max_pool2d(x, 3, stride=2, padding=1), TF.max_pool2d(tx, 3, 2, 1)
    else:
        ours = F.avg_pool2d(x, 2, stride=2, padding=1, count_include_pad=False)
        theirs = TF.avg_pool2d(tx, 2, stride=2, padding=1, count_include_pad=False)
    _backward(ours, theirs, rng)
    _check_grads([(x, tx)])
    assert launches[0] >= 2


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_recurrent_layer_forward_backward(rng, launches, kind):
    ours, theirs = getattr(nn, kind)(3, 4), getattr(torch.nn, kind)(3, 4)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.tensor(rng.uniform(-0.5, 0.5, tuple(p.shape)).astype(np.float32)))
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x, tx = _pair(rng, 4, 2, 3)                       # (T, B, input)
    out, hidden = ours(x)
    t_out, t_hidden = theirs(tx)
    h = hidden[0] if kind == "LSTM" else hidden
    t_h = t_hidden[0] if kind == "LSTM" else t_hidden
    _backward(out.sum(0) + h[0], t_out.sum(0) + t_h[0], rng)
    _check_grads([(x, tx)] + [(p, q) for p, q in zip(ours.parameters(), theirs.parameters())])
    assert launches[0] >= 2


@pytest.mark.parametrize("case", ["plain", "causal", "bool mask", "float mask"])
def test_scaled_dot_product_attention_forward_backward(rng, launches, case):
    # (1, 2, 9, 4): the shape that reached the kernel read-only through the op's broadcasts
    (q, tq), (k, tk), (v, tv) = (_pair(rng, 1, 2, 9, 4) for _ in range(3))
    kwargs, t_kwargs = {}, {}
    if case == "causal":
        kwargs = t_kwargs = {"is_causal": True}
    elif case == "bool mask":
        keep = rng.random((9, 9)) > 0.3
        keep[:, 0] = True                               # no fully masked row
        kwargs, t_kwargs = {"attn_mask": gd.tensor(keep)}, {"attn_mask": torch.tensor(keep)}
    elif case == "float mask":
        bias = rng.standard_normal((2, 9, 9)).astype(np.float32)   # broadcast over the batch
        kwargs, t_kwargs = {"attn_mask": gd.tensor(bias)}, {"attn_mask": torch.tensor(bias)}
    _backward(F.scaled_dot_product_attention(q, k, v, **kwargs),
              TF.scaled_dot_product_attention(tq, tk, tv, **t_kwargs), rng)
    _check_grads([(q, tq), (k, tk), (v, tv)])
    assert launches[0] >= 2


def _add_one_into(src, dst):
    i = cuda.grid(1)
    if i < dst.size:
        dst[i] = src[i] + 1.0


def _scribble(src):
    i = cuda.grid(1)
    if i < src.size:
        src[i] = 7.0


def test_read_only_arguments_are_accepted_and_guarded():
    add_one_into, scribble = cuda.jit(_add_one_into), cuda.jit(_scribble)
    src = np.broadcast_to(np.float32(2.0), (4,))       # read-only, as broadcasts are
    dst = np.zeros(4, np.float32)
    add_one_into[1, 4, backend.launch_stream()](src, dst)
    np.testing.assert_array_equal(dst, [3.0] * 4)       # writable arguments still come back
    with pytest.raises(RuntimeError, match="wrote into a read-only argument"):
        scribble[1, 4, backend.launch_stream()](np.broadcast_to(np.float32(2.0), (4,)))
