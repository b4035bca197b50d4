"""Bugs tools/moduleinfo_sweep.py found in gpudl.nn (torch's module_db samples and error inputs,
constructor keywords, repr), each pinned against torch."""

import numpy as np
import pytest
import torch

import gpudl as gd
from gpudl import nn
from torch_gaps import torch_norms_take_bias


@pytest.mark.parametrize("training, eps", [(True, 0.0), (True, -1.0), (False, -1.0)])
def test_batch_norm_refuses_eps_torch_refuses(rng, training, eps):
    x = rng.standard_normal((4, 3, 5))
    for module in (torch.nn.BatchNorm1d(3, eps=eps), nn.BatchNorm1d(3, eps=eps)):
        module.train(training)
        tensor = torch.tensor(x) if isinstance(module, torch.nn.Module) else gd.tensor(x)
        with pytest.raises(ValueError, match="eps must be"):
            module(tensor)


def test_batch_norm_eval_with_zero_eps_matches_torch(rng):
    x = rng.standard_normal((4, 3, 5))
    theirs = torch.nn.BatchNorm1d(3, eps=0.0).double().eval()
    theirs.running_var.uniform_(0.5, 2.0)
    ours = nn.BatchNorm1d(3, eps=0.0, dtype=gd.float64).eval()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    try:
        expected = theirs(torch.tensor(x)).detach()
    except ValueError as error:              # torch 2.11 refuses eps=0 out of training too
        pytest.skip(f"torch {torch.__version__} refuses it: {error}")
    np.testing.assert_allclose(ours(gd.tensor(x)).numpy(), expected, rtol=1e-12)


def test_cross_entropy_refuses_ignore_index_with_probability_targets(rng):
    x = rng.standard_normal((2, 3))
    p = torch.tensor(x).softmax(1).numpy()
    with pytest.raises(RuntimeError, match="ignore_index is not supported"):
        torch.nn.CrossEntropyLoss(ignore_index=1)(torch.tensor(x), torch.tensor(p))
    with pytest.raises(RuntimeError, match="ignore_index is not supported"):
        nn.CrossEntropyLoss(ignore_index=1)(gd.tensor(x), gd.tensor(p))
    np.testing.assert_allclose(    # the default ignore_index still takes probabilities
        nn.CrossEntropyLoss()(gd.tensor(x), gd.tensor(p)).item(),
        torch.nn.CrossEntropyLoss()(torch.tensor(x), torch.tensor(p)).item(), rtol=1e-12)


@pytest.mark.parametrize("name", ["LazyBatchNorm1d", "LazyInstanceNorm1d"])
def test_lazy_norms_take_bias_keyword(rng, name):
    if not torch_norms_take_bias():
        pytest.skip(f"torch {torch.__version__}'s norm layers take no bias keyword")
    x = rng.standard_normal((4, 3, 5))
    ours, theirs = getattr(nn, name)(bias=False), getattr(torch.nn, name)(bias=False)
    ours(gd.tensor(x))
    theirs(torch.tensor(x, dtype=torch.float32))
    assert ours.bias is None
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("make", [
    lambda m: m.BatchNorm1d(4, affine=False),
    lambda m: m.BatchNorm2d(4, bias=False),
    lambda m: m.InstanceNorm1d(4),
    lambda m: m.LayerNorm(4, elementwise_affine=False),
    lambda m: m.LayerNorm(4, bias=False),
    lambda m: m.GroupNorm(2, 4),
    lambda m: m.GroupNorm(2, 4, affine=False),
    lambda m: m.LSTM(2, 3, num_layers=2, proj_size=2, bidirectional=True),
    lambda m: m.TransformerEncoder(m.TransformerEncoderLayer(4, 2, 8, dropout=0.0), 3),
])
@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
def test_repr_matches_torch(make):
    if "Norm" in repr(make(nn)) and not torch_norms_take_bias():
        pytest.skip(f"torch {torch.__version__}'s norm layers take no bias keyword, nor show it")
    # MultiheadAttention's out_proj: torch's Linear subclass exists only for its quantization
    expected = repr(make(torch.nn)).replace("NonDynamicallyQuantizableLinear", "Linear")
    assert repr(make(nn)) == expected


@pytest.mark.parametrize("make", [
    lambda m: m.ModuleList(),
    lambda m: m.ModuleList([m.Linear(2, 3), m.Linear(2, 3), m.ReLU(), m.Linear(2, 3),
                            m.Sequential(m.Linear(1, 1), m.Linear(1, 1))]),
])
def test_module_list_repr_collapses_repeats_as_torch(make):
    assert repr(make(nn)) == repr(make(torch.nn))


@pytest.mark.parametrize("add_bias_kv, add_zero_attn", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("masks", ["none", "bool", "float"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_extra_sources_match_torch(rng, add_bias_kv, add_zero_attn, masks,
                                                       need_weights):
    """Outputs, attention weights, input and parameter gradients (torch's state dict loaded),
    by the module_db sweep's own per-sample check, with masks module_db does not combine."""
    pytest.importorskip("expecttest")
    from test_opinfo_nn import _MODULES, _check_module_sample
    from torch.testing._internal.common_modules import FunctionInput, ModuleInput
    e, n, length, source = 6, 3, 4, 5
    q, k, v = (torch.tensor(rng.standard_normal(s), requires_grad=True)
               for s in ((length, n, e), (source, n, 4), (source, n, e)))
    masks_kw = {}
    if masks != "none":
        attn = rng.random((length, source)) < 0.3
        padding = rng.random((n, source)) < 0.3
        padding[:, 0] = False                 # no fully masked row (torch gives NaN there)
        if masks == "float":
            attn = np.where(attn, -1.5, 0.25)
        masks_kw = dict(attn_mask=torch.tensor(attn), key_padding_mask=torch.tensor(padding))
    sample = ModuleInput(
        constructor_input=FunctionInput(e, 2, add_bias_kv=add_bias_kv,
                                        add_zero_attn=add_zero_attn, kdim=4),
        forward_input=FunctionInput(q, k, v, need_weights=need_weights, **masks_kw))
    problem = _check_module_sample("MultiheadAttention", _MODULES["MultiheadAttention"], sample,
                                   training=True, seed=0)
    assert problem is None


@pytest.mark.parametrize("name, keyword", [("PixelShuffle", "upscale_factor"),
                                           ("PixelUnshuffle", "downscale_factor"),
                                           ("ChannelShuffle", "groups")])
def test_rearrangement_layers_take_torchs_keyword(name, keyword):
    x = np.random.default_rng(0).standard_normal((2, 8, 4, 4))
    expected = getattr(torch.nn, name)(**{keyword: 2})(torch.from_numpy(x)).numpy()
    layer = getattr(gd.nn, name)(**{keyword: 2})
    np.testing.assert_array_equal(layer(gd.tensor(x)).numpy(), expected)
    assert repr(layer) == repr(getattr(torch.nn, name)(**{keyword: 2}))
