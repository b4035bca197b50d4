"""nn.functional ops (activations, dropout, normalisation, embedding, pad, linear): forward and
gradients against torch.nn.functional in float64, finite differences, and error messages."""

import re

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import nn
from gpudl.testing import gradcheck
from device_checks import call_then_read
from oracle import check_against_torch, torch

TF = torch.nn.functional

ACTIVATIONS = [
    (F.relu, TF.relu),
    (F.sigmoid, torch.sigmoid),
    (F.tanh, torch.tanh),
    (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    (F.gelu, TF.gelu),
    (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    (lambda x: F.elu(x, 0.7), lambda x: TF.elu(x, 0.7)),
    (F.silu, TF.silu),
    (lambda x: F.softplus(x, 2.0, 3.0), lambda x: TF.softplus(x, 2.0, 3.0)),
    (lambda x: F.hardtanh(x, -0.5, 0.8), lambda x: TF.hardtanh(x, -0.5, 0.8)),
    (F.relu6, TF.relu6),
    (lambda x: F.softmax(x, 1), lambda x: TF.softmax(x, 1)),
    (lambda x: F.log_softmax(x, -1), lambda x: TF.log_softmax(x, -1)),
]


def _away_from_kinks(rng, shape, scale=3.0):
    """Random values at least 1e-3 from the points where relu-like ops are not smooth."""
    x = rng.standard_normal(shape) * scale
    for kink in (0.0, -0.5, 0.8, 6.0, 1.5):
        near = np.abs(x - kink) < 1e-3
        x[near] += 2e-3
    return x


@pytest.mark.parametrize("ours, theirs", ACTIVATIONS)
def test_activation_matches_torch_and_finite_differences(ours, theirs, rng):
    x = _away_from_kinks(rng, (3, 5, 2))
    x[0, 0, 0] = 7.0                      # above relu6 and the softplus threshold
    check_against_torch(ours, theirs, x, rtol=1e-6, atol=1e-9)
    gradcheck(ours, [gd.tensor(x[:2, :3], requires_grad=True)])


@pytest.mark.parametrize("ours, theirs", ACTIVATIONS)
def test_activation_float32_in_float32_out(ours, theirs, rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y = ours(gd.tensor(x))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), theirs(torch.tensor(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_activations_are_stable_for_extreme_inputs():
    x = gd.tensor([-1000.0, -80.0, 0.0, 80.0, 1000.0], requires_grad=True)
    for fn in (F.sigmoid, F.silu, F.softplus, F.gelu, F.elu, F.log_softmax):
        y = fn(x, 0) if fn is F.log_softmax else fn(x)
        y.sum().backward()
        assert np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(x.grad.numpy())), fn
        x.grad = None


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_relu_nan_zero_and_nonfinite_gradients_as_torch(dtype, rng):
    x = rng.standard_normal((7, 33)).astype(dtype)
    x[0, :6] = [np.nan, 0.0, -0.0, np.inf, -np.inf, 1e-30]
    g = rng.standard_normal(x.shape).astype(dtype)
    g[0, 6:9] = [np.inf, np.nan, -np.inf]
    x[0, 6:9] = [-1.0, -2.0, 3.0]          # inf/NaN gradients under a clipped input vanish
    ours = gd.tensor(x, requires_grad=True)
    F.relu(ours).backward(gd.tensor(g))
    theirs = torch.tensor(x, requires_grad=True)
    TF.relu(theirs).backward(torch.tensor(g))
    np.testing.assert_array_equal(F.relu(gd.tensor(x)).numpy(), TF.relu(torch.tensor(x)).numpy())
    np.testing.assert_array_equal(ours.grad.numpy(), theirs.grad.numpy())
    assert ours.grad.dtype == dtype


def test_activation_errors():
    with pytest.raises(TypeError, match="relu: input must be a Tensor"):
        F.relu(np.ones(3))
    with pytest.raises(TypeError, match="floating point"):
        F.gelu(gd.tensor([1, 2]))
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(gd.ones(2), approximate="fast")
    with pytest.raises(IndexError, match="out of range"):
        F.softmax(gd.ones(2, 3), 2)


def test_softmax_implicit_dim_warns_like_torch():
    x = gd.randn(2, 3)
    with pytest.warns(UserWarning, match="implicit"):
        y = F.softmax(x)
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1, rtol=1e-6)


def test_linear_matches_torch(rng):
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    check_against_torch(F.linear, TF.linear, x, w, b)
    check_against_torch(lambda x, w: F.linear(x, w), lambda x, w: TF.linear(x, w), x, w)
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(5, 3\)"):
        F.linear(gd.tensor(x), gd.tensor(rng.standard_normal((5, 3))))


# ---------------------------------------------------------------- dropout
def test_dropout_statistics_and_gradient():
    gd.manual_seed(1)
    x = gd.ones(200, 500, requires_grad=True)
    y = F.dropout(x, p=0.3)
    zeros = (y.numpy() == 0).mean()
    assert abs(zeros - 0.3) < 0.01
    assert abs(y.numpy().mean() - 1.0) < 0.02                 # expectation preserved
    np.testing.assert_allclose(np.unique(y.numpy()), [0.0, 1 / 0.7], rtol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y.numpy())   # same mask, same scale


def test_dropout_identity_cases_and_seed():
    x = gd.randn(4, 5)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert np.all(F.dropout(x, 1.0).numpy() == 0)
    gd.manual_seed(3)
    a = F.dropout(x, 0.5).numpy()
    gd.manual_seed(3)
    np.testing.assert_array_equal(a, F.dropout(x, 0.5).numpy())
    assert F.dropout(x.astype(gd.float32), 0.5).dtype == np.float32


@pytest.mark.parametrize("p", [-0.1, 1.5, "0.5"])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(gd.ones(3), p)


# ---------------------------------------------------------------- batch norm
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6), (2, 3, 4, 5), (1, 3, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch(shape, training, rng):
    c = shape[1]
    x, w, b = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    ours_rm, ours_rv = gd.tensor(rm), gd.tensor(rv)
    th_rm, th_rv = torch.tensor(rm), torch.tensor(rv)
    check_against_torch(
        lambda x, w, b: F.batch_norm(x, ours_rm, ours_rv, w, b, training, 0.2, 1e-3),
        lambda x, w, b: TF.batch_norm(x, th_rm, th_rv, w, b, training, 0.2, 1e-3),
        x, w, b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours_rm.numpy(), th_rm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours_rv.numpy(), th_rv.numpy(), rtol=1e-12)


def test_batch_norm_gradcheck_without_affine_or_running_stats(rng):
    x = gd.tensor(rng.standard_normal((4, 3, 2)), requires_grad=True)
    w = gd.tensor(rng.standard_normal(3), requires_grad=True)
    gradcheck(lambda x, w: F.batch_norm(x, None, None, w, None, True), [x, w])
    gradcheck(lambda x: F.batch_norm(x, None, None, training=True), [x])


def test_batch_norm_errors():
    x = gd.randn(4, 3)
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 3\)"):
        F.batch_norm(gd.randn(1, 3), gd.zeros(3), gd.ones(3), training=True)
    with pytest.raises(ValueError, match=r"running_mean has shape \(4,\).*3 channels"):
        F.batch_norm(x, gd.zeros(4), gd.ones(4))
    with pytest.raises(ValueError, match="needed when not training"):
        F.batch_norm(x, None, None, training=False)



@pytest.mark.parametrize("shape, groups, refused", [((1, 1), 1, True), ((1, 2, 1), 2, True),
                                                    ((2, 2, 1), 2, False), ((1, 2, 1), 1, False)])
def test_group_norm_of_one_value_per_group_is_refused_as_torch(shape, groups, refused):
    """torch refuses N * C/G * spatial == 1 values; gpudl normalised them to the bias."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours = "more than 1 value per group"
    for call, error in ((lambda: torch.nn.functional.group_norm(torch.tensor(x), groups), ""),
                        (lambda: F.group_norm(gd.tensor(x), groups), ours)):
        if refused:
            with pytest.raises(ValueError, match=error):
                call()
        else:
            call()


@pytest.mark.parametrize("shape", [(2, 3, 1), (2, 3, 1, 1)])
def test_instance_norm_refuses_one_spatial_element_as_torch(shape):
    # the variance of one value: torch refuses, the output would be all zeros
    layer = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d}[len(shape)]
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        TF.instance_norm(torch.ones(shape))
    for call in (lambda: F.instance_norm(gd.ones(*shape)), lambda: layer(3)(gd.ones(*shape)),
                 lambda: layer(3).eval()(gd.ones(*shape))):
        with pytest.raises(ValueError, match=r"instance_norm: expected more than 1 spatial "
                                             r"element.*" + re.escape(str(shape))):
            call()
    tracked = layer(3, track_running_stats=True).eval()       # running statistics: accepted
    assert tracked(gd.ones(*shape)).shape == shape


def test_instance_norm_names_itself_for_a_wrong_weight():
    with pytest.raises(ValueError, match=r"instance_norm: weight has shape \(3,\)"):
        nn.InstanceNorm1d(3, affine=True)(gd.ones(2, 4, 5))


# ---------------------------------------------------------------- layer norm
@pytest.mark.parametrize("shape, normalized", [((4, 5), (5,)), ((2, 3, 4), (3, 4)),
                                               ((3, 7), 7)])
def test_layer_norm_matches_torch(shape, normalized, rng):
    nshape = (normalized,) if isinstance(normalized, int) else normalized
    x = rng.standard_normal(shape) * 3 - 1
    w, b = rng.standard_normal(nshape), rng.standard_normal(nshape)
    check_against_torch(lambda x, w, b: F.layer_norm(x, normalized, w, b, 1e-4),
                        lambda x, w, b: TF.layer_norm(x, nshape, w, b, 1e-4),
                        x, w, b, rtol=1e-6, atol=1e-9)
    check_against_torch(lambda x: F.layer_norm(x, normalized),
                        lambda x: TF.layer_norm(x, nshape), x, rtol=1e-6, atol=1e-9)
    gradcheck(lambda x, w, b: F.layer_norm(x, normalized, w, b),
              [gd.tensor(x, requires_grad=True), gd.tensor(w, requires_grad=True),
               gd.tensor(b, requires_grad=True)])


def test_layer_norm_float32_and_errors(rng):
    x = rng.standard_normal((3, 8)).astype(np.float32) * 100 + 50
    y = F.layer_norm(gd.tensor(x), (8,))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), TF.layer_norm(torch.tensor(x), (8,)).numpy(),
                               atol=1e-4)
    with pytest.raises(ValueError, match=r"normalized_shape \(4,\).*\(3, 8\)"):
        F.layer_norm(gd.tensor(x), 4)
    with pytest.raises(ValueError, match=r"weight has shape \(7,\)"):
        F.layer_norm(gd.tensor(x), 8, gd.ones(7))


# ---------------------------------------------------------------- embedding, one_hot, pad
def test_embedding_matches_torch_with_repeats_and_padding(rng):
    weight = rng.standard_normal((6, 3))
    idx = np.array([[0, 2, 2], [5, 0, 2]])
    check_against_torch(lambda w: F.embedding(gd.tensor(idx), w, padding_idx=2),
                        lambda w: TF.embedding(torch.tensor(idx), w, padding_idx=2), weight)
    check_against_torch(lambda w: F.embedding(gd.tensor(idx), w),
                        lambda w: TF.embedding(torch.tensor(idx), w), weight)


def test_embedding_padding_row_gets_no_gradient_and_repeats_accumulate():
    w = gd.tensor(np.arange(12.0).reshape(4, 3), requires_grad=True)
    F.embedding(gd.tensor([1, 1, 1, 3]), w, padding_idx=-1).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy()[:, 0], [0, 3, 0, 0])


def test_embedding_max_norm_renormalises_like_torch(rng):
    weight = rng.standard_normal((5, 4)) * 3
    idx = np.array([0, 3, 3])
    ours, theirs = gd.tensor(weight), torch.tensor(weight)
    y = F.embedding(gd.tensor(idx), ours, max_norm=1.5)
    ty = TF.embedding(torch.tensor(idx), theirs, max_norm=1.5)
    np.testing.assert_allclose(y.numpy(), ty.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_embedding_errors():
    w = gd.randn(4, 2)
    # the cpu names the range held; the cuda device's check (at the next read) the smallest
    with pytest.raises(IndexError, match=r"\[0, 3\] but holds (values in \[-1, 4\]|-1 \(found "
                                         r"by a device-side check)"):
        call_then_read(F.embedding, gd.tensor([0, 4, -1]), w)
    with pytest.raises(ValueError):                       # also a ValueError
        call_then_read(F.embedding, gd.tensor([9]), w)
    with pytest.raises(TypeError, match="integer"):
        F.embedding(gd.tensor([0.0]), w)
    with pytest.raises(IndexError, match="padding_idx"):
        F.embedding(gd.tensor([0]), w, padding_idx=4)


def test_one_hot_matches_torch():
    t = np.array([[0, 3], [2, 1]])
    np.testing.assert_array_equal(F.one_hot(gd.tensor(t)).numpy(),
                                  TF.one_hot(torch.tensor(t)).numpy())
    assert F.one_hot(gd.tensor(t), 6).shape == (2, 2, 6)
    with pytest.raises(IndexError, match=r"\[0, 2\]"):
        call_then_read(F.one_hot, gd.tensor(t), 3)


def test_pad_matches_torch(rng):
    x = rng.standard_normal((2, 3, 4))
    check_against_torch(lambda x: F.pad(x, (1, 2)), lambda x: TF.pad(x, (1, 2)), x)
    check_against_torch(lambda x: F.pad(x, (0, 1, 2, 0), value=-1.5),
                        lambda x: TF.pad(x, (0, 1, 2, 0), value=-1.5), x)
    with pytest.raises(ValueError, match="pairs"):
        F.pad(gd.tensor(x), (1, 2, 3))
    for mode in ("reflect", "replicate", "circular"):
        check_against_torch(lambda x: F.pad(x, (2, 1), mode=mode),
                            lambda x: TF.pad(x, (2, 1), mode=mode), x)
    with pytest.raises(NotImplementedError, match="mode must be"):
        F.pad(gd.tensor(x), (1, 1), mode="mirror")
    with pytest.raises(ValueError, match="must not exceed 3"):
        F.pad(gd.tensor(x), (4, 0), mode="reflect")


def test_float32_erf_approximation_error_bound():
    import math
    from gpudl.kernels import activation as K
    xs = np.linspace(-6, 6, 24001)
    exact = np.array([math.erf(v) for v in xs])
    assert np.abs(K.erf_cpu(xs.astype(np.float32)) - exact).max() < 5e-7
    np.testing.assert_allclose(K.erf_cpu(xs), exact, rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("hard", [False, True])
def test_gumbel_softmax_samples_the_softmax_with_torchs_gradients(hard, rng):
    """Draws differ from torch's (other generators), so: rows sum to 1 (one-hot when hard),
    the argmax frequencies follow softmax(logits) (the Gumbel-max trick), gradients are those of
    a softmax (each row's sum 0), for gpudl and torch alike."""
    probs = np.array([0.2, 0.5, 0.3])
    for lib in (gd, torch):
        lib.manual_seed(int(rng.integers(1 << 30)))
        logits = lib.tensor(np.log(np.tile(probs, (4000, 1))), requires_grad=True)
        y = lib.nn.functional.gumbel_softmax(logits, tau=0.7, hard=hard, dim=1)
        (y * lib.tensor(rng.standard_normal((4000, 3)))).sum().backward()
        values = y.detach().numpy()
        np.testing.assert_allclose(values.sum(1), 1.0, rtol=1e-12)
        if hard:
            assert set(np.unique(values)) <= {0.0, 1.0}
        np.testing.assert_allclose(np.bincount(values.argmax(1), minlength=3) / 4000, probs,
                                   atol=0.035, err_msg=lib.__name__)
        grad = logits.grad.numpy()
        assert np.abs(grad).max() > 0.01
        np.testing.assert_allclose(grad.sum(1), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="tau must be positive"):
        F.gumbel_softmax(gd.zeros(2, 3), tau=0.0)
