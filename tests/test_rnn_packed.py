"""gpudl.nn.utils.rnn (pad/pack/unpack) and LSTM/GRU/RNN on PackedSequence input, against
torch.nn.utils.rnn and torch's layers: same packed data, batch sizes and indices, same outputs,
final states and gradients (input, initial states, every weight), sorted and unsorted batches,
bidirectional and stacked; bad arguments refused."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.nn.utils import rnn as R

torch = pytest.importorskip("torch")
TR = torch.nn.utils.rnn

I, H = 3, 4
KINDS = [("LSTM", {}), ("GRU", {}), ("RNN", {}), ("RNN", {"nonlinearity": "relu"})]
OPTIONS = [{}, {"bidirectional": True, "num_layers": 2},
           {"batch_first": True, "bidirectional": True}, {"num_layers": 2, "bias": False}]


def _close(ours, theirs, atol=1e-10):
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-9,
                               atol=atol)


def _sequences(rng, lengths, features=2):
    arrays = [rng.standard_normal((n, features)) for n in lengths]
    return [gd.tensor(a, requires_grad=True) for a in arrays], \
        [torch.tensor(a, requires_grad=True) for a in arrays]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_sequence_matches_torch_with_gradients(batch_first, side):
    rng = np.random.default_rng(0)
    ours, theirs = _sequences(rng, [3, 5, 1, 5])
    a = R.pad_sequence(ours, batch_first=batch_first, padding_value=-2.5, padding_side=side)
    b = TR.pad_sequence(theirs, batch_first=batch_first, padding_value=-2.5, padding_side=side)
    _close(a, b)
    weight = rng.standard_normal(b.shape)
    (a * gd.tensor(weight)).sum().backward()
    (b * torch.tensor(weight)).sum().backward()
    for x, y in zip(ours, theirs):
        _close(x.grad, y.grad)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths,enforce_sorted", [([5, 4, 4, 2, 1], True),
                                                     ([2, 5, 1, 4, 5, 3], False)])
def test_pack_and_pad_packed_match_torch(batch_first, lengths, enforce_sorted):
    rng = np.random.default_rng(1)
    shape = (len(lengths), 6, 2) if batch_first else (6, len(lengths), 2)
    x = rng.standard_normal(shape)
    gx, tx = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ours = R.pack_padded_sequence(gx, lengths, batch_first, enforce_sorted)
    theirs = TR.pack_padded_sequence(tx, torch.tensor(lengths), batch_first, enforce_sorted)
    _close(ours.data, theirs.data)
    assert ours.batch_sizes.tolist() == theirs.batch_sizes.tolist()
    assert ours.batch_sizes.dtype == gd.int64 and ours.batch_sizes.device.type == "cpu"
    for a, b in ((ours.sorted_indices, theirs.sorted_indices),
                 (ours.unsorted_indices, theirs.unsorted_indices)):
        assert (a is None) == (b is None)
        assert a is None or a.tolist() == b.tolist()
    padded, lens = R.pad_packed_sequence(ours, batch_first, padding_value=7.0, total_length=8)
    t_padded, t_lens = TR.pad_packed_sequence(theirs, batch_first, padding_value=7.0,
                                              total_length=8)
    _close(padded, t_padded)
    assert lens.tolist() == t_lens.tolist() == lengths
    weight = rng.standard_normal(t_padded.shape)
    (padded * gd.tensor(weight)).sum().backward()
    (t_padded * torch.tensor(weight)).sum().backward()
    _close(gx.grad, tx.grad)


def test_pack_sequence_round_trips():
    rng = np.random.default_rng(2)
    ours, theirs = _sequences(rng, [2, 6, 3])
    packed = R.pack_sequence(ours, enforce_sorted=False)
    t_packed = TR.pack_sequence(theirs, enforce_sorted=False)
    _close(packed.data, t_packed.data)
    for a, b in zip(R.unpack_sequence(packed), ours):
        _close(a, b)
    padded = R.pad_sequence(ours, batch_first=True)
    for a, b in zip(R.unpad_sequence(padded, [2, 6, 3], batch_first=True), ours):
        _close(a, b)
    for a, b in zip(R.unpad_sequence(R.pad_sequence(ours), gd.tensor([2, 6, 3])), ours):
        _close(a, b)


def _pair(kind, extra, options):
    torch_module = getattr(torch.nn, kind)(I, H, **extra, **options).double()
    module = getattr(nn, kind)(I, H, **extra, **options, dtype="float64")
    module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})
    return torch_module, module


@pytest.mark.parametrize("kind,extra", KINDS)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("lengths,enforce_sorted,with_hx", [([5, 5, 3, 2, 1], True, True),
                                                            ([2, 5, 1, 3, 5, 3], False, True),
                                                            ([4, 1, 3], False, False)])
def test_layers_on_packed_input_match_torch(kind, extra, options, lengths, enforce_sorted,
                                            with_hx):
    rng = np.random.default_rng(3)
    torch_module, module = _pair(kind, extra, options)
    batch_first = options.get("batch_first", False)
    batch, steps = len(lengths), max(lengths)
    x = rng.standard_normal((batch, steps, I) if batch_first else (steps, batch, I))
    layers = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    hx = [rng.standard_normal((layers, batch, H)) for _ in range(2 if kind == "LSTM" else 1)]
    hx = hx if with_hx else []
    gx, tx = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    g_hx = [gd.tensor(h, requires_grad=True) for h in hx]
    t_hx = [torch.tensor(h, requires_grad=True) for h in hx]

    def run(m, pack, inp, states):
        packed = pack(inp, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
        if not states:
            return m(packed)
        return m(packed, tuple(states) if kind == "LSTM" else states[0])

    out, final = run(module, R.pack_padded_sequence, gx, g_hx)
    t_out, t_final = run(torch_module, TR.pack_padded_sequence, tx, t_hx)
    assert isinstance(out, R.PackedSequence)
    assert out.batch_sizes.tolist() == t_out.batch_sizes.tolist()
    _close(out.data, t_out.data)
    final = list(final) if kind == "LSTM" else [final]
    t_final = list(t_final) if kind == "LSTM" else [t_final]
    for a, b in zip(final, t_final):
        _close(a, b)
    weight = rng.standard_normal(t_out.data.shape)
    loss = (out.data * gd.tensor(weight)).sum() + sum((s * s).sum() for s in final)
    t_loss = (t_out.data * torch.tensor(weight)).sum() + sum((s * s).sum() for s in t_final)
    loss.backward()
    t_loss.backward()
    _close(gx.grad, tx.grad, atol=1e-9)
    for a, b in zip(g_hx, t_hx):
        _close(a.grad, b.grad, atol=1e-9)
    t_params = dict(torch_module.named_parameters())
    for name, p in module.named_parameters():
        _close(p.grad, t_params[name].grad, atol=1e-9)


def test_packed_output_pads_back_like_unpacked_runs():
    """Each sequence of a packed batch gives what the layer gives it alone (no padding)."""
    rng = np.random.default_rng(4)
    module = nn.LSTM(I, H, bidirectional=True, dtype="float64")
    sequences = [gd.tensor(rng.standard_normal((n, I))) for n in (4, 2, 3)]
    out, (h_n, _) = module(R.pack_sequence(sequences, enforce_sorted=False))
    padded, lengths = R.pad_packed_sequence(out)
    for i, s in enumerate(sequences):
        alone, (h_alone, _) = module(s)
        _close(padded[:lengths[i].item(), i], alone)
        _close(h_n[:, i], h_alone)


def test_bad_arguments_are_refused():
    x = gd.tensor(np.random.default_rng(5).standard_normal((4, 3, 2)))
    with pytest.raises(RuntimeError, match="decreasing order"):
        R.pack_padded_sequence(x, [2, 4, 1])
    with pytest.raises(ValueError, match="expected 3 lengths"):
        R.pack_padded_sequence(x, [4, 2])
    with pytest.raises(RuntimeError, match="> 0"):
        R.pack_padded_sequence(x, [4, 2, 0])
    with pytest.raises(ValueError, match="exceeds"):
        R.pack_padded_sequence(x, [5, 2, 1])
    with pytest.raises(ValueError, match="padding_side"):
        R.pad_sequence([x[0]], padding_side="middle")
    with pytest.raises(ValueError, match="shape"):
        R.pad_sequence([x[:, 0], x[:, 0, :1]])
    with pytest.raises(TypeError, match="PackedSequence"):
        R.pad_packed_sequence(x)
    packed = R.pack_padded_sequence(x, [4, 2, 1])
    with pytest.raises(ValueError, match="total_length"):
        R.pad_packed_sequence(packed, total_length=3)
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        nn.GRU(5, 3, dtype="float64")(packed)
    with pytest.raises(ValueError, match="h_0"):
        nn.GRU(2, 3, dtype="float64")(packed, gd.zeros(1, 2, 3, dtype="float64"))


def test_packed_sequence_moves_and_derives_its_inverse_permutation():
    x = gd.tensor(np.random.default_rng(6).standard_normal((4, 3, 2)), device="cpu")
    packed = R.pack_padded_sequence(x, [2, 4, 1], enforce_sorted=False)
    assert packed.cpu() is packed and not packed.is_cuda
    cast = packed.to(gd.float32)
    assert cast.data.dtype == gd.float32 and cast.batch_sizes.tolist() == [3, 2, 1, 1]
    assert cast.sorted_indices.tolist() == [1, 0, 2]
    rebuilt = R.PackedSequence(packed.data, packed.batch_sizes, packed.sorted_indices)
    assert rebuilt.unsorted_indices.tolist() == [1, 0, 2]
    with pytest.raises(TypeError, match="batch_sizes is required"):
        R.PackedSequence(packed.data)
