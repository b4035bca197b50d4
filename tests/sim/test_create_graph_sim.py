"""create_graph=True on the (simulated) cuda device: a gradient penalty through conv2d, leaky
relu, linear and the norm, whose second-order graph runs the conv kernels again (the input and
weight gradients as Functions), and one through a stacked LSTM, against torch on the CPU. Tiny shapes: the simulator runs each
CUDA thread in Python."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend
from oracle import torch
from test_public_ops_sim import launches  # noqa: F401  (the launch-counting fixture)

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR or backend.DEFAULT_DEVICE != "cuda",
                                 reason="needs NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda"),
              pytest.mark.usefixtures("strict_fp32_conv")]

TF = torch.nn.functional


def _penalty(module, F_, x, w, b, v):
    h = F_.leaky_relu(F_.conv2d(x, w, b, stride=2, padding=1), 0.2)
    score = F_.linear(h.reshape(h.shape[0], -1), v)
    grad, = module.autograd.grad(score.sum(), x, create_graph=True)
    return ((grad.reshape(grad.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()


def test_gradient_penalty_through_conv2d(launches):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32)
              for s in ((2, 2, 4, 4), (3, 2, 3, 3), (3,), (1, 12))]
    ours = [gd.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    assert ours[0].device == "cuda"
    _penalty(gd, F, *ours).backward()
    _penalty(torch, TF, *theirs).backward()
    assert launches[0] > 0
    # the penalty reaches x and b only through leaky relu's piecewise-constant slope: no
    # gradient (None in both libraries)
    assert ours[0].grad is None and ours[2].grad is None
    for name, p, tp in (("w", ours[1], theirs[1]), ("v", ours[3], theirs[3])):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=2e-4, atol=2e-5,
                                   err_msg=name)


def test_gradient_penalty_through_a_stacked_lstm(launches):
    """The layers' kernels write h_n and c_n into one buffer (ops.rnn.StackedStates) whose
    graph backward the penalty's second walk needs; each layer is recomputed in Tensor ops."""
    rng = np.random.default_rng(1)
    theirs = torch.nn.LSTM(3, 4, num_layers=2)
    ours = gd.nn.LSTM(3, 4, num_layers=2)
    ours.load_state_dict({k: gd.tensor(v.detach().numpy())
                          for k, v in theirs.state_dict().items()})
    data = rng.standard_normal((2, 2, 3)).astype(np.float32)
    grads = []
    for module, lib in ((ours, gd), (theirs, torch)):
        x = lib.tensor(data, requires_grad=True)
        out, (h_n, c_n) = module(x)
        g, = lib.autograd.grad((out ** 2).sum() + (h_n * c_n).sum(), x, create_graph=True)
        (g ** 2).sum().backward()
        grads.append([x.grad.numpy()] + [p.grad.numpy() for p in module.parameters()])
    assert launches[0] > 0
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
