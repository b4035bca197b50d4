"""F.scaled_dot_product_attention, nn.MultiheadAttention and nn.TransformerEncoderLayer against
PyTorch (values and gradients), finite differences, and their input checks."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import nn
from gpudl.testing import gradcheck
from oracle import check_against_torch, torch

TF = torch.nn.functional


def sdpa_pair(**kwargs):
    """The same call for gpudl and torch; mask arrays become each library's tensor."""
    def call(lib, functional):
        def fn(q, k, v, mask=None):
            extra = dict(kwargs)
            if mask is not None:
                extra["attn_mask"] = lib.tensor(mask)
            return functional.scaled_dot_product_attention(q, k, v, **extra)
        return fn
    return call(gd, F), call(torch, TF)


@pytest.mark.parametrize("qs, ks, vs", [
    ((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 6)),          # L != S, Ev != E
    ((2, 3, 5, 8), (1, 3, 7, 8), (7, 8)),                # batch dims broadcast
    ((6, 4), (9, 4), (9, 3)),                            # no batch dims
    ((1, 1, 1, 16), (1, 1, 13, 16), (1, 1, 13, 16)),     # one query
])
@pytest.mark.parametrize("is_causal", [False, True])
def test_sdpa_matches_torch(rng, qs, ks, vs, is_causal):
    ours, theirs = sdpa_pair(is_causal=is_causal)
    check_against_torch(ours, theirs, rng.standard_normal(qs), rng.standard_normal(ks),
                        rng.standard_normal(vs))


@pytest.mark.parametrize("mask_shape", [(5, 7), (3, 1, 7), (2, 3, 5, 7), (1, 7)])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_masks_match_torch(rng, mask_shape, kind):
    mask = rng.random(mask_shape) > 0.3 if kind == "bool" else rng.standard_normal(mask_shape)
    ours, theirs = sdpa_pair(scale=0.21)
    check_against_torch(lambda q, k, v: ours(q, k, v, mask), lambda q, k, v: theirs(q, k, v, mask),
                        rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 7, 4)),
                        rng.standard_normal((2, 3, 7, 4)))


def test_sdpa_fully_masked_rows_give_zeros_and_finite_grads(rng):
    mask = rng.random((2, 5, 6)) > 0.3
    mask[0, 1] = False
    ours, theirs = sdpa_pair()
    q, k, v = (rng.standard_normal(s) for s in ((2, 5, 4), (2, 6, 4), (2, 6, 4)))
    out = check_against_torch(lambda *a: ours(*a, mask), lambda *a: theirs(*a, mask), q, k, v)
    np.testing.assert_array_equal(out.numpy()[0, 1], 0)


def test_sdpa_grouped_query_attention(rng):
    ours, theirs = sdpa_pair(enable_gqa=True, is_causal=True)
    check_against_torch(ours, theirs, rng.standard_normal((2, 6, 5, 4)),
                        rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((2, 2, 5, 3)))


def test_sdpa_float32_matches_torch(rng):
    q, k, v = (rng.standard_normal((2, 4, 33, 16)).astype(np.float32) for _ in range(3))
    ours = F.scaled_dot_product_attention(*map(gd.tensor, (q, k, v)), is_causal=True)
    theirs = TF.scaled_dot_product_attention(*map(torch.tensor, (q, k, v)), is_causal=True)
    assert ours.dtype == gd.float32
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("E, L, S, is_causal, masked", [
    (64, 70, 70, False, True), (64, 130, 130, True, False), (128, 33, 80, False, False),
    (19, 9, 70, True, False)])
def test_sdpa_float16_matches_torch_float64(rng, E, L, S, is_causal, masked):
    """float16 values and gradients (on a GPU: the tensor-core kernels) against torch in float64
    on the same fp16-rounded inputs, within a FlashAttention-like error: P and dS are rounded to
    fp16 before their products."""
    arrays = [rng.standard_normal(s).astype(np.float16) for s in
              ((2, 2, L, E), (2, 2, S, E), (2, 2, S, E), (2, 2, L, E))]
    mask = rng.standard_normal((L, S)).astype(np.float16) if masked else None
    ours = [gd.tensor(a, requires_grad=True) for a in arrays[:3]]
    theirs = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in arrays[:3]]
    y = F.scaled_dot_product_attention(*ours, attn_mask=None if mask is None else
                                       gd.tensor(mask), is_causal=is_causal)
    ty = TF.scaled_dot_product_attention(*theirs, attn_mask=None if mask is None else
                                         torch.tensor(mask.astype(np.float64)),
                                         is_causal=is_causal)
    (y * gd.tensor(arrays[3])).sum().backward()
    (ty * torch.tensor(arrays[3].astype(np.float64))).sum().backward()
    assert y.dtype == gd.float16 and ours[0].grad.dtype == gd.float16
    for got, want in [(y, ty)] + [(a.grad, b.grad) for a, b in zip(ours, theirs)]:
        want = want.detach().numpy()
        err = np.abs(got.numpy().astype(np.float64) - want).max()
        assert err <= 2e-2 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("case", ["plain", "causal", "bool mask", "float mask with grad"])
def test_sdpa_gradcheck(rng, case):
    q, k, v = (gd.tensor(rng.standard_normal(s), requires_grad=True)
               for s in ((2, 3, 4), (2, 5, 4), (2, 5, 3)))
    inputs = [q, k, v]
    kwargs = {"is_causal": case == "causal"}
    if case == "bool mask":
        mask = rng.random((3, 5)) > 0.3
        mask[:, 0] = True
        kwargs["attn_mask"] = gd.tensor(mask)
    if case == "float mask with grad":              # the plain path: the mask gets a gradient
        inputs.append(gd.tensor(rng.standard_normal((2, 3, 5)), requires_grad=True))
    gradcheck(lambda q, k, v, *m: F.scaled_dot_product_attention(
        q, k, v, attn_mask=m[0] if m else kwargs.get("attn_mask"),
        is_causal=kwargs["is_causal"]), inputs)


def test_sdpa_dropout_keeps_the_expectation_and_is_seeded(rng):
    q, k = gd.tensor(rng.standard_normal((64, 8, 4))), gd.tensor(rng.standard_normal((64, 8, 4)))
    v = gd.ones(64, 8, 1, dtype=gd.float64)          # out = row sums of the dropped weights
    gd.manual_seed(3)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy()
    gd.manual_seed(3)
    again = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy()
    np.testing.assert_array_equal(out, again)
    assert not np.allclose(out, 1.0)                 # some weights dropped, others doubled
    assert abs(out.mean() - 1.0) < 0.1               # 512 rows: std of the mean ~ 0.03
    assert np.all(F.scaled_dot_product_attention(q, k, v, dropout_p=1.0).numpy() == 0)


@pytest.mark.parametrize("args, kwargs, error, words", [
    (((2, 5, 8), (2, 7, 6), (2, 7, 6)), {}, ValueError, "features per head"),
    (((2, 5, 8), (2, 7, 8), (2, 6, 8)), {}, ValueError, "positions"),
    (((2, 5, 8), (3, 7, 8), (3, 7, 8)), {}, ValueError, "batch dimensions"),
    (((2, 5, 8), (2, 7, 8), (2, 7, 8)), {"attn_mask": (5, 6)}, ValueError, "(5, 6)"),
    (((2, 5, 8), (2, 7, 8), (2, 7, 8)), {"attn_mask": (3, 5, 7)}, ValueError, "broadcast"),
    (((2, 5, 8), (2, 7, 8), (2, 7, 8)), {"attn_mask": (5, 7), "is_causal": True}, ValueError,
     "not both"),
    (((2, 5, 8), (2, 7, 8), (2, 7, 8)), {"dropout_p": 1.5}, ValueError, "dropout_p"),
    (((8,), (7, 8), (7, 8)), {}, ValueError, "at least 2"),
    (((2, 3, 5, 8), (2, 2, 7, 8), (2, 2, 7, 8)), {"enable_gqa": True}, ValueError, "enable_gqa"),
])
def test_sdpa_bad_input(args, kwargs, error, words):
    q, k, v = (gd.randn(*s) for s in args)
    if "attn_mask" in kwargs:
        kwargs["attn_mask"] = gd.ones(*kwargs["attn_mask"], dtype=gd.bool)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        F.scaled_dot_product_attention(q, k, v, **kwargs)


def test_sdpa_bad_types():
    q = gd.randn(2, 3, 4)
    with pytest.raises(TypeError, match="key must be a Tensor"):
        F.scaled_dot_product_attention(q, np.zeros((2, 3, 4)), q)
    with pytest.raises(TypeError, match="dtype"):
        F.scaled_dot_product_attention(q, q.double(), q)
    with pytest.raises(TypeError, match="attn_mask must be bool or floating"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=gd.ones(3, 3, dtype=gd.int64))


# ---------------------------------------------------------------------- MultiheadAttention

def load_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def compare_modules(ours, theirs, inputs, kwargs_ours, kwargs_torch, rtol=1e-9, atol=1e-10):
    """Outputs (each of a tuple), input gradients and parameter gradients."""
    gx = [gd.tensor(a, requires_grad=True) for a in inputs]
    tx = [torch.tensor(a, requires_grad=True) for a in inputs]
    out, tout = ours(*gx, **kwargs_ours), theirs(*tx, **kwargs_torch)
    out, tout = (out, tout) if isinstance(out, tuple) else ((out,), (tout,))
    loss, tloss = 0, 0
    for i, (a, b) in enumerate(zip(out, tout)):
        assert (a is None) == (b is None)
        if a is None:
            continue
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"output {i}")
        w = np.random.default_rng(i).standard_normal(a.shape)
        loss, tloss = loss + (a * gd.tensor(w)).sum(), tloss + (b * torch.tensor(w)).sum()
    loss.backward()
    tloss.backward()
    for i, (a, b) in enumerate(zip(gx, tx)):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i}")
    params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(params[name].grad.numpy(), p.grad.numpy(), rtol=rtol,
                                   atol=atol, err_msg=f"gradient of {name}")


def masks_for(rng, kind, n, heads, length, source):
    """(attn_mask, key_padding_mask) arrays in torch's MHA convention (True = not attended)."""
    if kind == "none":
        return None, None
    attn = rng.random((length, source)) > 0.7
    pad = rng.random((n, source)) > 0.8
    pad[:, 0] = False                       # torch's weights path gives NaN on fully masked rows
    attn[:, 0] = False
    if kind == "float":
        attn = np.where(attn, -np.inf, rng.standard_normal(attn.shape))
        pad = np.where(pad, -np.inf, 0.0)
    if kind == "3d":
        attn = rng.random((n * heads, length, source)) > 0.7
        attn[..., 0] = False
    return attn, pad


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("masks", ["none", "bool", "float", "3d"])
def test_multihead_attention_matches_torch(rng, batch_first, need_weights, masks):
    theirs = torch.nn.MultiheadAttention(12, 3, batch_first=batch_first).double()
    ours = nn.MultiheadAttention(12, 3, batch_first=batch_first, dtype=gd.float64)
    load_from_torch(ours, theirs)
    n, length, source = 2, 5, 7
    shape = (lambda t: (n, t, 12)) if batch_first else (lambda t: (t, n, 12))
    attn, pad = masks_for(rng, masks, n, 3, length, source)
    kw = dict(need_weights=need_weights)
    kw_gd = dict(kw, attn_mask=None if attn is None else gd.tensor(attn),
                 key_padding_mask=None if pad is None else gd.tensor(pad))
    kw_torch = dict(kw, attn_mask=None if attn is None else torch.tensor(attn),
                    key_padding_mask=None if pad is None else torch.tensor(pad))
    compare_modules(ours, theirs, [rng.standard_normal(shape(length)),
                                   rng.standard_normal(shape(source)),
                                   rng.standard_normal(shape(source))], kw_gd, kw_torch)


def test_multihead_attention_self_attention_kdim_and_unaveraged_weights(rng):
    theirs = torch.nn.MultiheadAttention(8, 2, kdim=5, vdim=3).double()
    ours = nn.MultiheadAttention(8, 2, kdim=5, vdim=3, dtype=gd.float64)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    load_from_torch(ours, theirs)
    kw = dict(average_attn_weights=False)
    compare_modules(ours, theirs, [rng.standard_normal((4, 2, 8)), rng.standard_normal((6, 2, 5)),
                                   rng.standard_normal((6, 2, 3))], kw, kw)
    packed_t = torch.nn.MultiheadAttention(8, 4, bias=False).double()
    packed = nn.MultiheadAttention(8, 4, bias=False, dtype=gd.float64)
    load_from_torch(packed, packed_t)
    x = rng.standard_normal((5, 8))                     # unbatched self-attention
    out, w = packed(*(gd.tensor(x),) * 3)
    tout, tw = packed_t(*(torch.tensor(x),) * 3)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-10)


def test_multihead_attention_causal_hint_uses_the_kernel(rng):
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True).double()
    ours = nn.MultiheadAttention(8, 2, batch_first=True, dtype=gd.float64)
    load_from_torch(ours, theirs)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(6, dtype=torch.float64)
    x = rng.standard_normal((3, 6, 8))
    kw_gd = dict(attn_mask=gd.tensor(causal.numpy()), is_causal=True, need_weights=False)
    kw_torch = dict(attn_mask=causal, is_causal=True, need_weights=False)
    compare_modules(ours, theirs, [x, x, x], kw_gd, kw_torch)


def test_multihead_attention_initialisation_and_dropout():
    mha = nn.MultiheadAttention(16, 4, dropout=0.5, batch_first=True)
    bound = np.sqrt(6 / (16 + 48))                      # xavier_uniform_ on (3E, E)
    w = mha.in_proj_weight.numpy()
    assert w.shape == (48, 16) and np.abs(w).max() <= bound and w.std() > bound / 3
    assert np.all(mha.in_proj_bias.numpy() == 0) and np.all(mha.out_proj.bias.numpy() == 0)
    x = gd.randn(2, 5, 16)
    train = mha(x, x, x, need_weights=False)[0].numpy()
    mha.eval()
    first, second = (mha(x, x, x)[0].numpy() for _ in range(2))
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(train, first)


@pytest.mark.parametrize("make, words", [
    (lambda: nn.MultiheadAttention(10, 3), "divisible by num_heads"),
    (lambda: nn.MultiheadAttention(8, 0), "num_heads must be a positive int"),
])
def test_multihead_attention_bad_construction(make, words):
    with pytest.raises(ValueError, match=words):
        make()


def test_multihead_attention_bad_input():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = gd.randn(2, 5, 8)
    with pytest.raises(ValueError, match="query has 6 features but 8 were expected"):
        mha(gd.randn(2, 5, 6), x, x)
    with pytest.raises(ValueError, match="batch sizes differ"):
        mha(gd.randn(3, 5, 8), x, x)
    with pytest.raises(ValueError, match=r"key_padding_mask has shape \(2, 4\)"):
        mha(x, x, x, key_padding_mask=gd.ones(2, 4, dtype=gd.bool))
    with pytest.raises(ValueError, match=r"attn_mask has shape \(5, 4\)"):
        mha(x, x, x, attn_mask=gd.ones(5, 4, dtype=gd.bool))
    with pytest.raises(ValueError, match="is_causal"):
        mha(x, x, x, is_causal=True)


# ---------------------------------------------------------------------- Transformer encoder

@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_encoder_layer_matches_torch(rng, norm_first, activation, batch_first):
    kw = dict(dim_feedforward=24, dropout=0.0, activation=activation, norm_first=norm_first,
              batch_first=batch_first, layer_norm_eps=1e-6)
    theirs = torch.nn.TransformerEncoderLayer(12, 3, **kw).double()
    ours = nn.TransformerEncoderLayer(12, 3, dtype=gd.float64, **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()
                                                     if n != "activation"]
    load_from_torch(ours, theirs)
    x = rng.standard_normal((2, 7, 12) if batch_first else (7, 2, 12))
    pad = rng.random((2, 7)) > 0.7
    pad[:, 0] = False
    compare_modules(ours, theirs, [x], dict(src_key_padding_mask=gd.tensor(pad)),
                    dict(src_key_padding_mask=torch.tensor(pad)))


def test_encoder_stack_with_final_norm_and_causal_mask(rng):
    layer_t = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0).double()
    theirs = torch.nn.TransformerEncoder(layer_t, 2, norm=torch.nn.LayerNorm(8).double(),
                                         enable_nested_tensor=False)
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0,
                                                            dtype=gd.float64), 2,
                                 norm=nn.LayerNorm(8, dtype=gd.float64),
                                 enable_nested_tensor=False)     # torch's call, as written there
    assert list(ours.state_dict()) == list(theirs.state_dict())
    load_from_torch(ours, theirs)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    compare_modules(ours, theirs, [rng.standard_normal((5, 3, 8))],
                    dict(mask=gd.tensor(causal.numpy()), is_causal=True),
                    dict(mask=causal, is_causal=True))


def test_encoder_layers_are_independent_copies():
    layer = nn.TransformerEncoderLayer(8, 2, 16)
    stack = nn.TransformerEncoder(layer, 3)
    first, second = stack.layers[0], stack.layers[1]
    assert first is not layer and first.linear1.weight is not second.linear1.weight
    np.testing.assert_array_equal(first.linear1.weight.numpy(), layer.linear1.weight.numpy())
    first.linear1.weight.data[...] = 0
    assert np.abs(second.linear1.weight.numpy()).sum() > 0
    with pytest.raises(ValueError, match="activation"):
        nn.TransformerEncoderLayer(8, 2, activation="swish")
    with pytest.raises(ValueError, match="num_layers"):
        nn.TransformerEncoder(layer, 0)


def test_plain_calls_check_their_arguments_every_time(rng):
    """Unmasked calls skip checks already passed for their shapes and dtypes; a call that
    differs (another shape, a float64 key) is checked, and refused, all the same."""
    q, k, v = (gd.tensor(rng.standard_normal((2, 5, 8)).astype(np.float32)) for _ in range(3))
    F.scaled_dot_product_attention(q, k, v)
    F.scaled_dot_product_attention(q, k, v)
    with pytest.raises(ValueError, match="features per head"):
        F.scaled_dot_product_attention(q, gd.tensor(np.zeros((2, 5, 7), np.float32)), v)
    with pytest.raises(TypeError, match="share one floating dtype"):
        F.scaled_dot_product_attention(q, k.double(), v)
    with pytest.raises(TypeError, match="must be a Tensor"):
        F.scaled_dot_product_attention(q, k._data, v)


@pytest.mark.parametrize("shape", [(1, 2, 64, 16), (3, 9, 8), (2, 1, 3, 5, 4)])
@pytest.mark.parametrize("is_causal", [False, True])
def test_planned_plain_calls_match_torch_float64(rng, shape, is_causal):
    """Unmasked float32 calls whose q, k and v share their batch dims run on a plan kept per
    shapes: each call (the first, and again with fresh values on the kept plan), with and
    without requires_grad and on transposed (non-contiguous) inputs, against torch in float64.
    The output owns its memory, and an in-place edit of it is still seen by backward."""
    def arrays(transposed):
        if not transposed:
            return [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
        swapped = shape[:-2] + shape[-1:] + shape[-2:-1]
        return [rng.standard_normal(swapped).astype(np.float32).swapaxes(-1, -2)
                for _ in range(3)]

    for grad, transposed in ((True, False), (True, False), (False, False), (True, True)):
        values = arrays(transposed)
        ours = [gd.tensor(a, requires_grad=grad) for a in values]
        theirs = [torch.tensor(a.astype(np.float64), requires_grad=grad) for a in values]
        out = F.scaled_dot_product_attention(*ours, is_causal=is_causal)
        want = TF.scaled_dot_product_attention(*theirs, is_causal=is_causal)
        assert out.dtype == gd.float32 and out.shape == shape and out.requires_grad == grad
        np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=2e-5, atol=2e-6)
        if not grad:
            continue
        weights = rng.standard_normal(shape)
        (out * gd.tensor(weights.astype(np.float32))).sum().backward()
        (want * torch.tensor(weights)).sum().backward()
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-5)
    q, k, v = (gd.tensor(a, requires_grad=True) for a in arrays(False))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    if out._data.size > 1 and len(shape) == 4 and out.device == "cpu":
        # the CPU's small float32 path writes it in place in its own array (the cuda kernels
        # return a view of their (B, L, Ev) output, as the CPU's larger calls do)
        assert out._data.base is None
    with gd.no_grad():
        out.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_planned_plain_calls_float64_and_broadcast_batch_match_torch(rng):
    """The plan's other cases: float64 (the blocked twin, not the small float32 path) and
    batch dims that broadcast (no plan: the general path), called twice each."""
    for shapes, dtype in ((((2, 3, 6, 8),) * 3, np.float64),
                          (((2, 3, 6, 8), (1, 3, 7, 8), (3, 7, 5)), np.float32)):
        for _ in range(2):
            values = [rng.standard_normal(s).astype(dtype) for s in shapes]
            ours = [gd.tensor(a, requires_grad=True) for a in values]
            theirs = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in values]
            out = F.scaled_dot_product_attention(*ours)
            want = TF.scaled_dot_product_attention(*theirs)
            tol = 1e-10 if dtype == np.float64 else 2e-5
            assert out.dtype == dtype
            np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=tol, atol=tol)
            out.sum().backward()
            want.sum().backward()
            for a, b in zip(ours, theirs):
                np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=10 * tol,
                                           atol=10 * tol)
