"""Layers against torch.nn with copied weights (outputs, gradients, running statistics),
PyTorch's default initialisation, nn.init statistics, and nn.utils clipping."""

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.nn import init
from oracle import torch

pytestmark = pytest.mark.usefixtures("strict_fp32_conv")   # fp32 tolerances: no TF32 conv on cuda

tnn = torch.nn


def copy_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def run_both(ours, theirs, x, grad=True):
    """Forward both models on the same input; backward a random-weighted sum; return outputs."""
    gx, tx = gd.tensor(x, requires_grad=grad), torch.tensor(x, requires_grad=grad)
    y, ty = ours(gx), theirs(tx)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    if grad:
        w = np.random.default_rng(1).standard_normal(y.shape).astype(x.dtype)
        (y * gd.tensor(w)).sum().backward()
        (ty * torch.tensor(w)).sum().backward()
        np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
        for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=name)
    return y, ty


def test_linear_matches_torch_and_default_init_bounds(rng):
    theirs = tnn.Linear(7, 5)
    ours = nn.Linear(7, 5)
    bound = 1 / math.sqrt(7)
    for p in (ours.weight, ours.bias):
        assert p.dtype == np.float32 and np.abs(p.numpy()).max() <= bound
    big = nn.Linear(400, 300)
    # kaiming_uniform_(a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)): std bound / sqrt(3)
    assert big.weight.numpy().std() == pytest.approx(1 / math.sqrt(400) / math.sqrt(3), rel=0.02)
    assert np.abs(big.weight.numpy()).max() == pytest.approx(1 / 20, rel=0.01)
    copy_from_torch(ours, theirs)
    run_both(ours, theirs, rng.standard_normal((3, 2, 7)).astype(np.float32))
    no_bias = nn.Linear(3, 2, bias=False)
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["weight"]


def test_default_init_is_reproducible_with_manual_seed():
    gd.manual_seed(42)
    a = nn.Linear(4, 3).weight.numpy().copy()
    gd.manual_seed(42)
    np.testing.assert_array_equal(a, nn.Linear(4, 3).weight.numpy())


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
@pytest.mark.parametrize("kind, shape", [("1d", (8, 4)), ("1d", (6, 4, 5)), ("2d", (4, 4, 3, 3))])
def test_batch_norm_running_stats_and_eval_match_torch(kind, shape, momentum, rng):
    ours = (nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d)(4, momentum=momentum)
    theirs = (tnn.BatchNorm1d if kind == "1d" else tnn.BatchNorm2d)(4, momentum=momentum)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(rng.standard_normal(4)))
        theirs.bias.copy_(torch.tensor(rng.standard_normal(4)))
    copy_from_torch(ours, theirs)
    for step in range(4):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(np.float32)
        run_both(ours, theirs, x)
        for p in ours.parameters():
            p.grad = None
        theirs.zero_grad()
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(ours, name).numpy(),
                                   getattr(theirs, name).numpy(), rtol=1e-5, err_msg=name)
    assert ours.num_batches_tracked.item() == 4
    assert ours.num_batches_tracked.dtype == np.int64
    ours.eval(), theirs.eval()
    run_both(ours, theirs, rng.standard_normal(shape).astype(np.float32))
    assert ours.num_batches_tracked.item() == 4               # eval does not count


def test_batch_norm_without_affine_or_tracking(rng):
    ours = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    theirs = tnn.BatchNorm1d(3, affine=False, track_running_stats=False)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == []
    ours.eval(), theirs.eval()                 # no running stats: batch statistics even in eval
    run_both(ours, theirs, rng.standard_normal((5, 3)).astype(np.float32))
    with pytest.raises(ValueError, match=r"expected 2D or 3D input, got 4D"):
        ours(gd.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        nn.BatchNorm2d(5)(gd.randn(2, 3, 4, 4))


def test_layer_norm_module_matches_torch(rng):
    ours, theirs = nn.LayerNorm((3, 4)), tnn.LayerNorm((3, 4))
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(rng.standard_normal((3, 4))))
        theirs.bias.copy_(torch.tensor(rng.standard_normal((3, 4))))
    copy_from_torch(ours, theirs)
    run_both(ours, theirs, rng.standard_normal((2, 3, 4)).astype(np.float32))
    plain = nn.LayerNorm(4, elementwise_affine=False)
    assert list(plain.parameters()) == []
    run_both(plain, tnn.LayerNorm(4, elementwise_affine=False),
             rng.standard_normal((3, 4)).astype(np.float32))


def test_dropout_module_statistics_and_eval_identity():
    layer = nn.Dropout(0.25)
    x = gd.ones(100, 400)
    y = layer(x).numpy()
    assert abs((y == 0).mean() - 0.25) < 0.01 and abs(y.mean() - 1) < 0.02
    layer.eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.2)


def test_embedding_module(rng):
    emb = nn.Embedding(10, 4, padding_idx=3)
    assert np.all(emb.weight.numpy()[3] == 0)
    big = nn.Embedding(500, 64)
    assert big.weight.numpy().std() == pytest.approx(1.0, rel=0.02)      # N(0, 1) as torch
    theirs = tnn.Embedding(10, 4, padding_idx=3)
    copy_from_torch(emb, theirs)
    idx = rng.integers(0, 10, (3, 5))
    y = emb(gd.tensor(idx))
    ty = theirs(torch.tensor(idx))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy())
    w = rng.standard_normal(y.shape).astype(np.float32)
    (y * gd.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(emb.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-5,
                               atol=1e-6)
    pretrained = nn.Embedding.from_pretrained(gd.tensor(rng.standard_normal((4, 2))))
    assert not pretrained.weight.requires_grad and pretrained.weight.shape == (4, 2)
    assert nn.Embedding.from_pretrained(np.ones((3, 2)), freeze=False).weight.requires_grad


@pytest.mark.parametrize("name, args", [("ReLU", ()), ("LeakyReLU", (0.1,)), ("GELU", ()),
                                        ("Sigmoid", ()), ("Tanh", ()), ("Softmax", (1,)),
                                        ("LogSoftmax", (1,)), ("ELU", (0.5,)), ("SiLU", ()),
                                        ("Softplus", ()), ("Hardtanh", ()), ("ReLU6", ())])
def test_activation_modules_match_torch(name, args, rng):
    run_both(getattr(nn, name)(*args), getattr(tnn, name)(*args),
             (rng.standard_normal((4, 5)) * 3).astype(np.float32))


def test_flatten_unflatten_identity(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    run_both(nn.Flatten(), tnn.Flatten(), x)
    run_both(nn.Flatten(0, 2), tnn.Flatten(0, 2), x)
    run_both(nn.Unflatten(1, (3, 1)), tnn.Unflatten(1, (3, 1)), x)
    run_both(nn.Unflatten(-1, (5, -1)), tnn.Unflatten(-1, (5, -1)), x)
    ident = nn.Identity(3, unused=True)
    t = gd.tensor(x)
    assert ident(t) is t
    with pytest.raises(ValueError, match=r"cannot be unflattened into \(2, 2\)"):
        nn.Unflatten(1, (2, 2))(t)


def test_mlp_training_step_matches_torch(rng):
    ours = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 3))
    theirs = tnn.Sequential(tnn.Linear(6, 8), tnn.ReLU(), tnn.Dropout(0.0), tnn.Linear(8, 3))
    copy_from_torch(ours, theirs)
    x, t = rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 3, 5)
    nn.CrossEntropyLoss()(ours(gd.tensor(x)), gd.tensor(t)).backward()
    tnn.CrossEntropyLoss()(theirs(torch.tensor(x)), torch.tensor(t)).backward()
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=name)


# ---------------------------------------------------------------- nn.init
def test_fan_and_gain_match_torch():
    for shape in [(5, 3), (8, 4, 3, 3), (2, 6, 5)]:
        assert init._calculate_fan_in_and_fan_out(gd.empty(*shape)) == \
            tnn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))
    for args in [("relu",), ("tanh",), ("leaky_relu",), ("leaky_relu", 0.3), ("sigmoid",),
                 ("conv2d",), ("selu",), ("linear",)]:
        assert init.calculate_gain(*args) == pytest.approx(tnn.init.calculate_gain(*args))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(gd.empty(3))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")


@pytest.mark.parametrize("fn, kwargs, expected_std, bound", [
    (init.uniform_, {"a": -0.3, "b": 0.5}, 0.8 / math.sqrt(12), (-0.3, 0.5)),
    (init.normal_, {"mean": 0.0, "std": 0.7}, 0.7, None),
    (init.xavier_uniform_, {"gain": 2.0}, 2 * math.sqrt(2 / (200 + 300)),
     (-2 * math.sqrt(6 / 500), 2 * math.sqrt(6 / 500))),
    (init.xavier_normal_, {}, math.sqrt(2 / 500), None),
    (init.kaiming_uniform_, {"nonlinearity": "relu"}, math.sqrt(2 / 300),
     (-math.sqrt(6 / 300), math.sqrt(6 / 300))),
    (init.kaiming_uniform_, {"a": math.sqrt(5)}, math.sqrt(1 / 3 / 300),
     (-1 / math.sqrt(300), 1 / math.sqrt(300))),
    (init.kaiming_normal_, {"mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(2 / 200),
     None),
    (init.trunc_normal_, {"std": 1.0, "a": -1.0, "b": 1.5}, None, (-1.0, 1.5)),
])
def test_init_statistics_follow_the_formula(fn, kwargs, expected_std, bound):
    t = gd.empty(200, 300)
    assert fn(t, **kwargs) is t
    values = t.numpy()
    if expected_std is not None:
        assert values.std() == pytest.approx(expected_std, rel=0.02)
    if bound is not None:
        assert values.min() >= bound[0] and values.max() <= bound[1]
        assert values.min() < bound[0] + 0.02 * (bound[1] - bound[0])
        assert values.max() > bound[1] - 0.02 * (bound[1] - bound[0])


def test_trunc_normal_matches_truncated_distribution_mean():
    t = init.trunc_normal_(gd.empty(100000), mean=0.0, std=1.0, a=0.0, b=3.0).numpy()
    # mean of N(0, 1) truncated to [0, 3]: (phi(0) - phi(3)) / (Phi(3) - Phi(0))
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    expected = (phi(0) - phi(3)) / (0.5 * math.erf(3 / math.sqrt(2)))
    assert t.mean() == pytest.approx(expected, rel=0.01) and t.min() >= 0 and t.max() <= 3


def test_constant_zeros_ones_orthogonal_and_no_graph():
    w = nn.Parameter(gd.empty(6, 4))
    init.constant_(w, 0.5)
    assert np.all(w.numpy() == 0.5) and w.grad_fn is None and w.requires_grad
    assert np.all(init.zeros_(w).numpy() == 0) and np.all(init.ones_(w).numpy() == 1)
    for shape in [(6, 4), (4, 6), (3, 2, 2)]:
        q = init.orthogonal_(gd.empty(*shape), gain=2.0).numpy().reshape(shape[0], -1)
        small = min(q.shape)
        gram = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
        np.testing.assert_allclose(gram, 4 * np.eye(small), atol=1e-5)
    with pytest.raises(TypeError, match="floating point"):
        init.normal_(gd.tensor([1, 2]))
    with pytest.raises(ValueError, match="fan_avg"):
        init.kaiming_uniform_(gd.empty(2, 2), mode="fan_avg")


@pytest.mark.parametrize("shape, groups", [((3, 5), None), ((5, 3), None), ((4, 3, 3), 1),
                                           ((6, 2, 3, 3), 2), ((4, 6, 2, 3, 5), 1),
                                           ((6, 3, 3, 4), 3)])
def test_eye_and_dirac_as_torch(shape, groups):
    ours, theirs = nn.Parameter(gd.randn(*shape)), torch.nn.Parameter(torch.randn(*shape))
    if groups is None:
        init.eye_(ours)
        torch.nn.init.eye_(theirs)
    else:
        init.dirac_(ours, groups)
        torch.nn.init.dirac_(theirs, groups)
    np.testing.assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())
    assert ours.grad_fn is None and ours.requires_grad


def test_eye_and_dirac_refuse_other_shapes():
    with pytest.raises(ValueError, match="eye_: only tensors with 2 dimensions"):
        init.eye_(gd.empty(2, 2, 2))
    with pytest.raises(ValueError, match="dirac_: only tensors with 3, 4, or 5 dimensions"):
        init.dirac_(gd.empty(2, 2))
    with pytest.raises(ValueError, match=r"dim 0 \(5\) must be divisible by groups \(2\)"):
        init.dirac_(gd.empty(5, 2, 3), groups=2)


# ---------------------------------------------------------------- nn.utils
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, -math.inf, 0.0, 0.5, -2.0, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
@pytest.mark.parametrize("zero_grad", [False, True])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, zero_grad, rng):
    # torch's joint norm is the norm of the per-gradient norms: with norm_type 0 it counts the
    # gradients holding a non-zero entry, -inf is the smallest |entry|
    grads = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (5,), (2, 2, 2)]]
    if zero_grad:
        grads.append(np.zeros(2, np.float32))
    ours = [nn.Parameter(gd.zeros(*g.shape)) for g in grads]
    theirs = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for p, tp, g in zip(ours, theirs, grads):
        p.grad = gd.tensor(g)
        tp.grad = torch.tensor(g)
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type, foreach=None)
    ttotal = tnn.utils.clip_grad_norm_(theirs, max_norm, norm_type, foreach=None)
    assert isinstance(total, gd.Tensor) and total.shape == ()
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=1e-5)
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_clip_grad_norm_takes_a_tensor_max_norm_as_torch(rng):
    g = rng.standard_normal(5) * 10
    p, tp = nn.Parameter(gd.zeros(5)), torch.zeros(5, requires_grad=True)
    p.grad, tp.grad = gd.tensor(g.astype(np.float32)), torch.tensor(g.astype(np.float32))
    total = nn.utils.clip_grad_norm_([p], gd.tensor(0.5))
    ttotal = tnn.utils.clip_grad_norm_([tp], torch.tensor(0.5))
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=1e-6)
    np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-6)


def test_clip_grad_norm_nonfinite_and_value(rng):
    p = nn.Parameter(gd.zeros(3))
    p.grad = gd.tensor([1.0, float("nan"), 2.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    q = nn.Parameter(gd.zeros(4))
    q.grad = gd.tensor([-3.0, -0.5, 0.2, 9.0])
    nn.utils.clip_grad_value_(q, 1.0)
    np.testing.assert_allclose(q.grad.numpy(), [-1.0, -0.5, 0.2, 1.0], rtol=1e-7)
    assert nn.utils.clip_grad_norm_([nn.Parameter(gd.zeros(1))], 1.0).item() == 0.0


def test_parameters_to_vector_round_trip():
    model = nn.Linear(3, 2)
    vec = nn.utils.parameters_to_vector(model.parameters())
    assert vec.shape == (8,)
    nn.utils.vector_to_parameters(vec * 0 + 1, model.parameters())
    assert np.all(model.weight.numpy() == 1) and np.all(model.bias.numpy() == 1)
    with pytest.raises(ValueError, match="9 elements"):
        nn.utils.vector_to_parameters(gd.ones(9), model.parameters())


@pytest.mark.parametrize("in_features, out_features, lead", [(0, 3, (4,)), (3, 0, (4,)),
                                                             (0, 3, (2, 5)), (2, 3, (0,))])
def test_linear_with_zero_sized_dimensions_runs_backward_as_torch(in_features, out_features,
                                                                  lead):
    ours = nn.Linear(in_features, out_features)
    theirs = tnn.Linear(in_features, out_features)
    copy_from_torch(ours, theirs)
    x = np.zeros(lead + (in_features,), np.float32)
    xo, xt = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    yo.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(yo.numpy(), yt.detach().numpy())
    for got, want in ((xo.grad, xt.grad), (ours.weight.grad, theirs.weight.grad),
                      (ours.bias.grad, theirs.bias.grad)):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got.numpy(), want.numpy())


# ---------------------------------------------------------------- sizes given as NumPy integers
@pytest.mark.parametrize("name, args", [
    ("Linear", (4, 6)), ("BatchNorm1d", (4,)), ("BatchNorm2d", (4,)), ("InstanceNorm2d", (4,)),
    ("LayerNorm", (4,)), ("LayerNorm", ((3, 4),)), ("GroupNorm", (2, 4)), ("Embedding", (10, 4)),
    ("LSTMCell", (4, 6)), ("GRUCell", (4, 6)), ("MultiheadAttention", (8, 2)),
    ("TransformerEncoderLayer", (8, 2, 16)), ("LSTM", (4, 6, 2))])
def test_layers_take_numpy_integer_sizes(name, args):
    # n_classes = y.max() + 1 is a NumPy integer; torch's layers take it (its RNN/LSTM/GRU
    # refuse it with a TypeError; gpudl takes it there too)
    numpy_args = tuple(tuple(np.int64(v) for v in a) if isinstance(a, tuple) else np.int64(a)
                       for a in args)
    ours, theirs = getattr(nn, name)(*numpy_args), getattr(tnn, name)(*args)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


def test_embedding_padding_idx_must_be_an_int():
    with pytest.raises(TypeError, match=r"Embedding: padding_idx must be an int or None, got 2\.0"):
        nn.Embedding(5, 3, padding_idx=2.0)
    assert nn.Embedding(5, 3, padding_idx=np.int64(-1)).padding_idx == 4
