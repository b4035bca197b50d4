"""gpudl.autograd.graph.save_on_cpu on the (simulated) cuda device: what backward needs waits in
host memory and comes back to the device before each node's backward; the gradients are those
of a run without it, and torch's on the CPU."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend
from gpudl.autograd.graph import save_on_cpu
from oracle import torch

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR or backend.DEFAULT_DEVICE != "cuda",
                                 reason="needs NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda")]


def _loss(x, w):
    return ((x @ w).tanh() * x.sum(1, keepdim=True)).exp().sum()


def test_save_on_cpu_keeps_saved_arrays_on_the_host_until_backward():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (4, 2))]
    grads = []
    for hooks in (False, True):
        x, w = (gd.tensor(a, requires_grad=True) for a in arrays)
        assert x.device == "cuda"
        if hooks:
            with save_on_cpu(pin_memory=True):
                loss = _loss(x, w)
            packed = loss.grad_fn.next_functions[0][0].ctx.saved_tensors[0].value
            assert packed[0].type == "cuda" and packed[1].device.type == "cpu"
        else:
            loss = _loss(x, w)
        loss.backward()
        assert x.grad.device == "cuda"
        grads.append((x.grad.numpy(), w.grad.numpy()))
    tx, tw = (torch.tensor(a, requires_grad=True) for a in arrays)
    _loss(tx, tw).backward()
    for ours, plain, theirs in zip(grads[1], grads[0], (tx.grad, tw.grad)):
        np.testing.assert_array_equal(ours, plain)
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-6)
