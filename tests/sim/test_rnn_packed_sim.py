"""LSTM and GRU on a PackedSequence on the simulated cuda device (Numba's CUDA simulator)
against torch on the CPU: each run of equal batch sizes goes through the CUDA step kernels, from
state slices of the batch. Tiny shapes: the simulator runs every CUDA thread in Python."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import backend, nn
from gpudl.nn.utils import rnn as R
from oracle import torch
from test_public_ops_sim import launches  # noqa: F401  (the fixture counting kernel launches)

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR or backend.DEFAULT_DEVICE != "cuda",
                                 reason="needs NUMBA_ENABLE_CUDASIM=1 GPUDL_DEVICE=cuda")]

TR = torch.nn.utils.rnn
I, H = 3, 4
LENGTHS = [2, 4, 1]                    # unsorted: three runs of batch sizes 3, 2, 2, 1


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_packed_bidirectional_layer_matches_torch(rng, launches, kind):
    theirs = getattr(torch.nn, kind)(I, H, bidirectional=True).double()
    ours = getattr(nn, kind)(I, H, bidirectional=True)
    ours.load_state_dict({k: v.detach().numpy().astype(np.float32)
                          for k, v in theirs.state_dict().items()})
    x = rng.standard_normal((max(LENGTHS), len(LENGTHS), I)).astype(np.float32)
    gx = gd.tensor(x, requires_grad=True)
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    out, hidden = ours(R.pack_padded_sequence(gx, LENGTHS, enforce_sorted=False))
    t_out, t_hidden = theirs(TR.pack_padded_sequence(tx, LENGTHS, enforce_sorted=False))
    h, t_h = (hidden[0], t_hidden[0]) if kind == "LSTM" else (hidden, t_hidden)
    assert gx.device.type == "cuda" and launches[0] > 0
    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.data.numpy(), t_out.data.detach().numpy(), **tol)
    np.testing.assert_allclose(h.numpy(), t_h.detach().numpy(), **tol)
    w_out = rng.standard_normal(tuple(t_out.data.shape))
    w_h = rng.standard_normal(tuple(t_h.shape))
    ((out.data * gd.tensor(w_out.astype(np.float32))).sum()
     + (h * gd.tensor(w_h.astype(np.float32))).sum()).backward()
    ((t_out.data * torch.tensor(w_out)).sum() + (t_h * torch.tensor(w_h)).sum()).backward()
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), **tol)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), **tol)
