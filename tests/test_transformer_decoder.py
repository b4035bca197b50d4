"""TransformerDecoderLayer, TransformerDecoder and nn.Transformer against torch: state_dict
names and shapes, a torch model's weights loaded into gpudl giving the same outputs and
gradients (float64, dropout 0 so train and eval agree), masks and the causal hint."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from oracle import torch
from test_attention import compare_modules, load_from_torch


def same_state_dict_layout(ours, theirs):
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    for name, value in theirs_sd.items():
        assert tuple(ours_sd[name].shape) == tuple(value.shape), name


def padding(rng, n, length):
    pad = rng.random((n, length)) > 0.7
    pad[:, 0] = False
    return pad


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_decoder_layer_matches_torch(rng, norm_first, activation, batch_first):
    kw = dict(dim_feedforward=20, dropout=0.0, activation=activation, norm_first=norm_first,
              batch_first=batch_first, layer_norm_eps=1e-6)
    theirs = torch.nn.TransformerDecoderLayer(12, 3, **kw).double()
    ours = nn.TransformerDecoderLayer(12, 3, dtype=gd.float64, **kw)
    same_state_dict_layout(ours, theirs)
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()
                                                     if n != "activation"]
    load_from_torch(ours, theirs)
    tgt_shape, mem_shape = ((2, 5, 12), (2, 7, 12)) if batch_first else ((5, 2, 12), (7, 2, 12))
    tgt_pad, mem_pad = padding(rng, 2, 5), padding(rng, 2, 7)
    memory_mask = rng.random((5, 7)) > 0.7
    memory_mask[:, 0] = False
    masks = dict(tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad,
                 memory_mask=memory_mask)
    compare_modules(ours, theirs, [rng.standard_normal(tgt_shape), rng.standard_normal(mem_shape)],
                    {k: gd.tensor(v) for k, v in masks.items()},
                    {k: torch.tensor(v) for k, v in masks.items()})


@pytest.mark.parametrize("tgt_is_causal", [None, True, False])
def test_decoder_stack_with_final_norm_and_causal_mask(rng, tgt_is_causal):
    theirs = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0), 2,
        norm=torch.nn.LayerNorm(8)).double()
    ours = nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0,
                                                            dtype=gd.float64), 2,
                                 norm=nn.LayerNorm(8, dtype=gd.float64))
    same_state_dict_layout(ours, theirs)
    load_from_torch(ours, theirs)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(6, dtype=torch.float64)
    ours_mask = nn.Transformer.generate_square_subsequent_mask(6, dtype=gd.float64)
    np.testing.assert_array_equal(ours_mask.numpy(), causal.numpy())
    compare_modules(ours, theirs, [rng.standard_normal((6, 3, 8)), rng.standard_normal((4, 3, 8))],
                    dict(tgt_mask=ours_mask, tgt_is_causal=tgt_is_causal),
                    dict(tgt_mask=causal, tgt_is_causal=tgt_is_causal))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_loads_a_torch_state_dict_and_matches_in_eval_mode(rng, batch_first,
                                                                        norm_first):
    kw = dict(d_model=16, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
              dim_feedforward=24, dropout=0.1, batch_first=batch_first, norm_first=norm_first)
    theirs = torch.nn.Transformer(**kw).double().eval()
    ours = nn.Transformer(dtype=gd.float64, **kw).eval()
    same_state_dict_layout(ours, theirs)
    load_from_torch(ours, theirs)
    src = rng.standard_normal((3, 7, 16) if batch_first else (7, 3, 16))
    tgt = rng.standard_normal((3, 5, 16) if batch_first else (5, 3, 16))
    src_pad, tgt_pad = padding(rng, 3, 7), padding(rng, 3, 5)
    tgt_mask = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    kwargs = dict(src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
                  memory_key_padding_mask=src_pad, tgt_mask=tgt_mask.numpy())
    compare_modules(ours, theirs, [src, tgt], {k: gd.tensor(v) for k, v in kwargs.items()},
                    {k: torch.tensor(v) for k, v in kwargs.items()}, rtol=1e-8, atol=1e-9)


def test_transformer_unbatched_and_causal_hint(rng):
    theirs = torch.nn.Transformer(8, 2, 1, 1, 12, dropout=0.0).double()
    ours = nn.Transformer(8, 2, 1, 1, 12, dropout=0.0, dtype=gd.float64)
    load_from_torch(ours, theirs)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    compare_modules(ours, theirs, [rng.standard_normal((6, 8)), rng.standard_normal((4, 8))],
                    dict(tgt_mask=gd.tensor(mask.numpy()), tgt_is_causal=True),
                    dict(tgt_mask=mask, tgt_is_causal=True))


def test_transformer_float32_default_and_initialisation(rng):
    model = nn.Transformer(16, 4, 1, 1, 32)
    assert all(p.dtype == gd.float32 for p in model.parameters())
    w = model.encoder.layers[0].linear1.weight.numpy()     # xavier: U(-a, a), a = sqrt(6/48)
    assert np.abs(w).max() <= np.sqrt(6 / 48) and np.abs(w).max() > 0.5 * np.sqrt(6 / 48)
    out = model(gd.tensor(rng.standard_normal((5, 2, 16)).astype(np.float32)),
                gd.tensor(rng.standard_normal((3, 2, 16)).astype(np.float32)))
    assert out.shape == (3, 2, 16) and out.dtype == gd.float32


def test_custom_encoder_and_decoder_are_used():
    enc, dec = nn.Identity(), nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 8), 1)
    model = nn.Transformer(8, 2, custom_encoder=enc, custom_decoder=dec)
    assert model.encoder is enc and model.decoder is dec


def test_bad_arguments():
    with pytest.raises(ValueError, match="TransformerDecoderLayer: activation"):
        nn.TransformerDecoderLayer(8, 2, activation="swish")
    with pytest.raises(ValueError, match="num_layers"):
        nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2), 0)
    with pytest.raises(TypeError, match="decoder_layer must be a Module"):
        nn.TransformerDecoder("layer", 2)
    model = nn.Transformer(8, 2, 1, 1, 8)
    with pytest.raises(RuntimeError, match="batch number"):
        model(gd.randn(4, 2, 8), gd.randn(3, 5, 8))
    with pytest.raises(RuntimeError, match="d_model=8"):
        model(gd.randn(4, 2, 8), gd.randn(3, 2, 6))
    with pytest.raises(ValueError, match="sz"):
        nn.Transformer.generate_square_subsequent_mask(-1)


def test_transformer_inference_matches_torch_fast_path(rng):
    """Under no_grad in eval mode torch runs its fused encoder path (nested tensors: zeros at
    padded source positions); the decoder masks those positions, so outputs still agree."""
    kw = dict(d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
              dim_feedforward=32, batch_first=True)
    theirs = torch.nn.Transformer(**kw).double().eval()
    ours = nn.Transformer(dtype=gd.float64, **kw).eval()
    load_from_torch(ours, theirs)
    src, tgt = rng.standard_normal((2, 6, 16)), rng.standard_normal((2, 4, 16))
    src_pad = padding(rng, 2, 6)
    with torch.no_grad():
        expected = theirs(torch.tensor(src), torch.tensor(tgt),
                          src_key_padding_mask=torch.tensor(src_pad),
                          memory_key_padding_mask=torch.tensor(src_pad))
    with gd.no_grad():
        got = ours(gd.tensor(src), gd.tensor(tgt), src_key_padding_mask=gd.tensor(src_pad),
                   memory_key_padding_mask=gd.tensor(src_pad))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-8, atol=1e-9)


def test_transformer_forward_reads_nothing_from_the_device(rng, monkeypatch):
    """Masks, the causal hint left to None and the padding masks need no device-to-host read
    (torch reads tgt_mask back to detect a causal one; gpudl applies it as given)."""
    from gpudl import backend
    monkeypatch.setattr(backend, "_READS_DEVICE", True)     # every array counts as on the device
    model = nn.Transformer(8, 2, 1, 1, 12, dropout=0.0, batch_first=True)
    src, tgt = gd.randn(2, 5, 8), gd.randn(2, 4, 8)
    mask = nn.Transformer.generate_square_subsequent_mask(4)
    pad = gd.tensor(padding(rng, 2, 5))
    before = gd.cuda.sync_count()
    model(src, tgt, tgt_mask=mask, src_key_padding_mask=pad, memory_key_padding_mask=pad)
    assert gd.cuda.sync_count() == before
