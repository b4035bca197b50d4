"""nn.LSTM(proj_size=P) against torch: parameter names and shapes (weight_hr_l{k}), outputs,
states and every gradient with torch's weights, both directions, stacked layers, batch_first,
unbatched and packed input; refusals."""

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import nn
from gpudl.nn.utils.rnn import pack_padded_sequence


def _pair(**options):
    theirs = torch.nn.LSTM(5, 7, proj_size=3, **options).double()
    ours = nn.LSTM(5, 7, proj_size=3, **options).double()
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def _close(a, b):
    np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("options", [
    {}, {"num_layers": 2, "bidirectional": True}, {"bias": False, "batch_first": True},
    {"num_layers": 3, "bidirectional": True, "batch_first": True}])
def test_projected_lstm_matches_torch(rng, options):
    ours, theirs = _pair(**options)
    layers = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x = rng.standard_normal((4, 6, 5))
    batch = x.shape[0] if options.get("batch_first") else x.shape[1]
    h0, c0 = rng.standard_normal((layers, batch, 3)), rng.standard_normal((layers, batch, 7))
    ours_in = [gd.tensor(a, requires_grad=True) for a in (x, h0, c0)]
    theirs_in = [torch.tensor(a, requires_grad=True) for a in (x, h0, c0)]
    out, (h, c) = ours(ours_in[0], tuple(ours_in[1:]))
    t_out, (t_h, t_c) = theirs(theirs_in[0], tuple(theirs_in[1:]))
    for a, b in ((out, t_out), (h, t_h), (c, t_c)):
        assert a.shape == tuple(b.shape)
        _close(a, b)
    weights = [rng.standard_normal(tuple(t.shape)) for t in (t_out, t_h, t_c)]
    sum((a * gd.tensor(w)).sum() for a, w in zip((out, h, c), weights)).backward()
    sum((b * torch.tensor(w)).sum() for b, w in zip((t_out, t_h, t_c), weights)).backward()
    for a, b in zip(ours_in, theirs_in):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-12)
    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), t_params[name].grad.numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)


def test_projected_lstm_unbatched_and_packed(rng):
    ours, theirs = _pair(bidirectional=True)
    x = rng.standard_normal((6, 3, 5))
    out, (h, c) = ours(gd.tensor(x[:, 0]))
    t_out, (t_h, t_c) = theirs(torch.tensor(x[:, 0]))
    assert out.shape == (6, 6) and h.shape == (2, 3) and c.shape == (2, 7)
    _close(out, t_out), _close(h, t_h), _close(c, t_c)
    lengths = [6, 4, 2]
    packed, (h, c) = ours(pack_padded_sequence(gd.tensor(x), lengths))
    t_packed, (t_h, t_c) = theirs(torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x),
                                                                          lengths))
    _close(packed.data, t_packed.data), _close(h, t_h), _close(c, t_c)


def test_projected_lstm_default_init_and_repr():
    lstm = nn.LSTM(4, 8, proj_size=2)
    assert lstm.weight_hr_l0.shape == (2, 8) and lstm.weight_hh_l0.shape == (32, 2)
    bound = 1 / np.sqrt(8)
    assert all(np.abs(p.numpy()).max() <= bound for p in lstm.parameters())
    assert repr(lstm) == repr(torch.nn.LSTM(4, 8, proj_size=2))


def test_projected_lstm_refusals():
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        nn.LSTM(4, 3, proj_size=3)
    with pytest.raises(ValueError, match="proj_size should be a positive integer or zero"):
        nn.LSTM(4, 3, proj_size=-1)
    lstm = nn.LSTM(4, 6, proj_size=2)
    with pytest.raises(ValueError, match=r"expected h_0 of shape \(1, 5, 2\)"):
        lstm(gd.randn(3, 5, 4), (gd.zeros(1, 5, 6), gd.zeros(1, 5, 6)))
    with pytest.raises(ValueError, match=r"expected c_0 of shape \(1, 5, 6\)"):
        lstm(gd.randn(3, 5, 4), (gd.zeros(1, 5, 2), gd.zeros(1, 5, 2)))
