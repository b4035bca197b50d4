"""The Keras 3 names scripts hit beyond the basics: layers, losses, activations, metrics,
initializers, optimizers and utils of gpudl.keras against independent references (the same
computation in PyTorch or float64 NumPy, formulas written here); Keras itself is not needed."""

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl.keras import activations, layers, losses
from oracle import torch

TF = torch.nn.functional


def _run(layer, x, weights=None):
    """``layer`` built on float64 ``x`` (weights given in Keras's layout), its output."""
    layer(gd.tensor(x[:1].astype(np.float32)))
    layer.double()
    if weights is not None:
        layer.set_weights(weights)
    return layer(gd.tensor(x)).numpy()


# -- activations ---------------------------------------------------------------------------------

ACTIVATIONS = [("celu", lambda t: TF.celu(t)), ("hard_tanh", TF.hardtanh),
               ("log_sigmoid", TF.logsigmoid), ("mish", TF.mish), ("softsign", TF.softsign),
               ("tanh_shrink", TF.tanhshrink), ("soft_shrink", lambda t: TF.softshrink(t, 0.5)),
               ("hard_shrink", lambda t: TF.hardshrink(t, 0.5)),
               ("hard_silu", TF.hardswish), ("glu", lambda t: TF.glu(t, -1)),
               ("squareplus", lambda t: (t + torch.sqrt(t * t + 4)) / 2),
               ("sparse_plus", lambda t: torch.where(t >= 1, t, torch.where(
                   t > -1, (t + 1) ** 2 / 4, 0 * t)))]


@pytest.mark.parametrize("name,reference", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activations_match_torch(rng, name, reference):
    x = rng.uniform(-3, 3, (4, 6))
    xg, tx = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, expected = activations.get(name)(xg), reference(tx)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    weights = rng.standard_normal(out.shape)
    (out * gd.tensor(weights)).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(xg.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert activations.get(name) is getattr(activations, name)


def test_threshold_activation():
    x = np.array([-1.0, 0.2, 0.5, 0.9])
    np.testing.assert_array_equal(activations.threshold(gd.tensor(x), 0.5, -2.0).numpy(),
                                  [-2.0, -2.0, -2.0, 0.9])


# -- losses: float64 NumPy formulas ---------------------------------------------------------------

EPS = 1e-7


def _hinge_labels(y):
    return 2 * y - 1 if np.isin(y, (0, 1)).all() else y


def _l2n(x):
    return x / np.sqrt(np.maximum((x * x).sum(-1, keepdims=True), 1e-12))


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _bce(y, p):
    p = np.clip(p, EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _binary_focal(y, p, gamma=2.0):
    p_t = y * p + (1 - y) * (1 - p)
    return ((1 - p_t) ** gamma * _bce(y, p)).mean(-1)


def _categorical_focal(y, p, alpha=0.25, gamma=2.0):
    p = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
    return (alpha * (1 - p) ** gamma * -y * np.log(p)).sum(-1)


LOSSES = [("hinge", "labels", "scores", lambda y, p: np.maximum(1 - _hinge_labels(y) * p,
                                                                 0).mean(-1)),
          ("squared_hinge", "labels", "scores",
           lambda y, p: (np.maximum(1 - _hinge_labels(y) * p, 0) ** 2).mean(-1)),
          ("categorical_hinge", "onehot", "scores",
           lambda y, p: np.maximum(((1 - y) * p).max(-1) - (y * p).sum(-1) + 1, 0)),
          ("log_cosh", "values", "scores", lambda y, p: np.log(np.cosh(p - y)).mean(-1)),
          ("poisson", "values", "probs", lambda y, p: (p - y * np.log(p + EPS)).mean(-1)),
          ("cosine_similarity", "values", "scores", lambda y, p: -(_l2n(y) * _l2n(p)).sum(-1)),
          ("mape", "values", "scores",
           lambda y, p: 100 * (np.abs(y - p) / np.maximum(np.abs(y), EPS)).mean(-1)),
          ("msle", "values", "probs",
           lambda y, p: ((np.log(np.maximum(p, EPS) + 1) - np.log(np.maximum(y, EPS) + 1))
                         ** 2).mean(-1)),
          ("binary_focal_crossentropy", "labels", "probs", _binary_focal),
          ("categorical_focal_crossentropy", "onehot", "probs", _categorical_focal),
          ("dice", "labels", "probs",
           lambda y, p: 1 - 2 * (y * p).sum() / (y.sum() + p.sum() + EPS)),
          ("tversky", "labels", "probs",
           lambda y, p: 1 - (y * p).sum() / ((y * p).sum() + 0.5 * ((1 - p) * y).sum() +
                                             0.5 * (p * (1 - y)).sum() + EPS))]


def _loss_inputs(rng, kind):
    return {"labels": rng.integers(0, 2, (5, 4)).astype(np.float64),
            "onehot": np.eye(4)[rng.integers(0, 4, 5)],
            "values": rng.uniform(0.1, 3.0, (5, 4)),
            "scores": rng.standard_normal((5, 4)),
            "probs": rng.uniform(0.05, 0.95, (5, 4))}[kind]


@pytest.mark.parametrize("name,true_kind,pred_kind,reference", LOSSES,
                         ids=[case[0] for case in LOSSES])
def test_losses_match_numpy_formulas(rng, name, true_kind, pred_kind, reference):
    y, p = _loss_inputs(rng, true_kind), _loss_inputs(rng, pred_kind)
    expected = reference(y, p)
    got = getattr(losses, name)(gd.tensor(y), gd.tensor(p))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    loss_object = losses.get(name)                      # compile(loss=name)
    np.testing.assert_allclose(float(loss_object(gd.tensor(y), gd.tensor(p))),
                               np.mean(expected), rtol=1e-10)


def test_focal_losses_from_logits_with_options(rng):
    y, z = rng.integers(0, 2, (5, 4)).astype(np.float64), rng.standard_normal((5, 4))
    smoothed = y * 0.9 + 0.05
    p = 1 / (1 + np.exp(-z))
    weight = smoothed * 0.4 + (1 - smoothed) * 0.6
    expected = (weight * (1 - (smoothed * p + (1 - smoothed) * (1 - p))) ** 1.5 *
                _bce(smoothed, p)).mean(-1)
    got = losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.4, gamma=1.5,
                                         from_logits=True, label_smoothing=0.1,
                                         reduction="none")(gd.tensor(y), gd.tensor(z))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    onehot = np.eye(4)[rng.integers(0, 4, 5)]
    np.testing.assert_allclose(
        losses.categorical_focal_crossentropy(gd.tensor(onehot), gd.tensor(z), from_logits=True,
                                              gamma=3.0).numpy(),
        _categorical_focal(onehot, _softmax(z), gamma=3.0), rtol=1e-10)


def test_dice_and_tversky_over_axes(rng):
    y, p = rng.integers(0, 2, (3, 4, 5)).astype(np.float64), rng.uniform(0, 1, (3, 4, 5))
    got = losses.dice(gd.tensor(y), gd.tensor(p), axis=(1, 2)).numpy()
    expected = 1 - 2 * (y * p).sum((1, 2)) / (y.sum((1, 2)) + p.sum((1, 2)) + EPS)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    got = losses.Tversky(alpha=0.3, beta=0.7, axis=2, reduction="none")(gd.tensor(y),
                                                                       gd.tensor(p))
    tp, missed, extra = (y * p).sum(2), ((1 - p) * y).sum(2), (p * (1 - y)).sum(2)
    np.testing.assert_allclose(got.numpy(), 1 - tp / (tp + 0.3 * missed + 0.7 * extra + EPS),
                               rtol=1e-10)


# -- layers ---------------------------------------------------------------------------------------

def test_prelu_with_shared_axes_values_and_grads_match_torch(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    alpha = rng.standard_normal((1, 1, 5))
    layer = layers.PReLU(shared_axes=[1, 2])
    out = _run(layer, x, [alpha])
    np.testing.assert_allclose(out, np.maximum(x, 0) + alpha * np.minimum(x, 0), rtol=1e-12)
    xg = gd.tensor(x, requires_grad=True)
    layer(xg).sum().backward()
    tx = torch.tensor(x)
    ta = torch.tensor(alpha, requires_grad=True)
    (torch.relu(tx) - ta * torch.relu(-tx)).sum().backward()
    np.testing.assert_allclose(layer.alpha.grad.numpy(), ta.grad.numpy(), rtol=1e-12)


def test_normalization_layers_match_torch(rng):
    x = rng.standard_normal((2, 3, 4, 6)) * 3 + 1
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    out = _run(layers.GroupNormalization(groups=3), x, [gamma, beta])
    expected = TF.group_norm(torch.tensor(x).permute(0, 3, 1, 2), 3, torch.tensor(gamma),
                             torch.tensor(beta), eps=1e-3).permute(0, 2, 3, 1)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-10, atol=1e-12)
    scale = rng.standard_normal(6)
    out = _run(layers.RMSNormalization(), x, [scale])
    np.testing.assert_allclose(out, x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * scale,
                               rtol=1e-12)
    out = _run(layers.UnitNormalization(axis=(1, 2)), x)
    np.testing.assert_allclose(out, x / np.sqrt((x * x).sum((1, 2), keepdims=True)),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="groups=4"):
        layers.GroupNormalization(groups=4)(gd.ones(1, 6))


@pytest.mark.parametrize("padding,strides,kernel", [("valid", 2, 3), ("same", 2, 3),
                                                    ("valid", 3, 2), ("same", 1, 4)])
def test_conv1d_transpose_matches_torch(rng, padding, strides, kernel):
    x = rng.standard_normal((2, 5, 3))
    w = rng.standard_normal((kernel, 4, 3))                      # Keras: (k, filters, in)
    b = rng.standard_normal(4)
    out = _run(layers.Conv1DTranspose(4, kernel, strides=strides, padding=padding), x, [w, b])
    full = TF.conv_transpose1d(torch.tensor(x).permute(0, 2, 1),
                               torch.tensor(w).permute(2, 1, 0),
                               stride=strides).permute(0, 2, 1).numpy()
    if padding == "valid":                    # kernel < strides: the last steps get the bias
        size = 5 * strides + max(kernel - strides, 0)
        full = np.pad(full, ((0, 0), (0, max(size - full.shape[1], 0)), (0, 0))) + b
        np.testing.assert_allclose(out, full[:, :size], rtol=1e-10, atol=1e-12)
    else:
        size = 5 * strides
        start = max((math.ceil(size / strides) - 1) * strides + kernel - size, 0) // 2
        np.testing.assert_allclose(out, full[:, start:start + size] + b, rtol=1e-10,
                                   atol=1e-12)


def test_depthwise_convs_match_torch_grouped_convs(rng):
    x = rng.standard_normal((2, 6, 7, 3))
    w, b = rng.standard_normal((3, 3, 3, 2)), rng.standard_normal(6)
    out = _run(layers.DepthwiseConv2D(3, depth_multiplier=2, dilation_rate=2), x, [w, b])
    weight = torch.tensor(w).reshape(3, 3, 1, 6).permute(3, 2, 0, 1)
    expected = TF.conv2d(torch.tensor(x).permute(0, 3, 1, 2), weight, torch.tensor(b),
                         dilation=2, groups=3).permute(0, 2, 3, 1)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-10, atol=1e-12)
    x1, w1 = rng.standard_normal((2, 9, 2)), rng.standard_normal((4, 2, 3))
    out = _run(layers.DepthwiseConv1D(4, depth_multiplier=3, strides=2, use_bias=False), x1,
               [w1])
    expected = TF.conv1d(torch.tensor(x1).permute(0, 2, 1),
                         torch.tensor(w1).reshape(4, 1, 6).permute(2, 1, 0), stride=2,
                         groups=2).permute(0, 2, 1)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-10, atol=1e-12)


def test_cropping_and_global_pooling_3d(rng):
    x = rng.standard_normal((2, 5, 6, 7, 3))
    np.testing.assert_array_equal(_run(layers.Cropping3D(((1, 0), 2, (0, 3))), x),
                                  x[:, 1:, 2:4, :4])
    np.testing.assert_array_equal(_run(layers.Cropping2D(((1, 2), (0, 1))), x[:, 0]),
                                  x[:, 0, 1:4, :6])
    np.testing.assert_array_equal(_run(layers.Cropping1D(2), x[:, 0, 0]), x[:, 0, 0, 2:5])
    np.testing.assert_allclose(_run(layers.GlobalAvgPool3D(), x), x.mean((1, 2, 3)))
    np.testing.assert_array_equal(_run(layers.GlobalMaxPool3D(keepdims=True), x),
                                  x.max((1, 2, 3), keepdims=True))
    with pytest.raises(ValueError, match="leaves nothing"):
        layers.Cropping1D((3, 3))(gd.ones(1, 6, 2))
    with pytest.raises(ValueError, match="cropping"):
        layers.Cropping2D(((1, 2, 3), (0, 1)))


def test_merges_dot_and_minimum(rng):
    a, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 6, 5))
    out = layers.Dot(axes=2)([gd.tensor(a), gd.tensor(b)]).numpy()
    np.testing.assert_allclose(out, np.einsum("nik,njk->nij", a, b), rtol=1e-12)
    out = layers.Dot(axes=(1, 1), normalize=True)([gd.tensor(a[:, 0]), gd.tensor(b[:, 0])])
    cosine = (a[:, 0] * b[:, 0]).sum(1) / np.linalg.norm(a[:, 0], axis=1) / \
        np.linalg.norm(b[:, 0], axis=1)
    np.testing.assert_allclose(out.numpy(), cosine[:, None], rtol=1e-12)
    np.testing.assert_array_equal(layers.minimum([gd.tensor(a), gd.tensor(a[:, ::-1])]).numpy(),
                                  np.minimum(a, a[:, ::-1]))
    with pytest.raises(ValueError, match="differ"):
        layers.Dot(axes=1)([gd.tensor(a), gd.tensor(b)])


def test_masking_makes_the_lstm_skip_padded_steps(rng):
    """Trailing all-zero steps: the LSTM's last output equals its output on the real steps."""
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    x[0, 4:] = 0
    masked = __import__("gpudl").keras.Sequential([layers.Input((6, 3)), layers.Masking(),
                                                   layers.LSTM(4)])
    plain = layers.LSTM(4)
    plain(gd.tensor(x[:1, :4]))
    plain.set_weights(masked.layers[1].get_weights())
    out = masked.predict(x, verbose=0)
    np.testing.assert_allclose(out[0], plain(gd.tensor(x[:1, :4])).numpy()[0], rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(out[0], plain(gd.tensor(x[:1])).numpy()[0], atol=1e-4)


def test_category_encoding_modes(rng):
    ids = rng.integers(0, 5, (4, 3))
    expected = np.zeros((4, 5))
    for row, values in enumerate(ids):
        for v in values:
            expected[row, v] += 1
    np.testing.assert_array_equal(
        layers.CategoryEncoding(5, output_mode="count")(gd.tensor(ids)).numpy(), expected)
    np.testing.assert_array_equal(
        layers.CategoryEncoding(5)(gd.tensor(ids)).numpy(), (expected > 0).astype(float))
    np.testing.assert_array_equal(
        layers.CategoryEncoding(5, output_mode="one_hot")(gd.tensor(ids[:, :1])).numpy(),
        np.eye(5)[ids[:, 0]])
    with pytest.raises(ValueError, match=r"ids must be in \[0, 5\)"):
        layers.CategoryEncoding(5)(gd.tensor([[5]]))
    with pytest.raises(ValueError, match="output_mode"):
        layers.CategoryEncoding(5, output_mode="tf_idf")


def test_noise_layers_train_only_and_keep_moments(rng):
    x = rng.standard_normal((400, 250)).astype(np.float32)
    for layer in (layers.AlphaDropout(0.2, seed=1), layers.GaussianNoise(0.5, seed=2),
                  layers.GaussianDropout(0.3, seed=3)):
        np.testing.assert_array_equal(layer(gd.tensor(x), training=False).numpy(), x)
        noisy = layer(gd.tensor(x), training=True).numpy()
        assert not np.allclose(noisy, x)
        assert abs(noisy.mean()) < 0.02                       # mean 0 and variance kept
    selu_like = layers.AlphaDropout(0.2, seed=4)(gd.tensor(x), training=True).numpy()
    assert abs(selu_like.std() - 1) < 0.02
    noise = layers.GaussianNoise(0.5, seed=5)(gd.tensor(x), training=True).numpy() - x
    assert abs(noise.std() - 0.5) < 0.01
    ratio = layers.GaussianDropout(0.3, seed=6)(gd.tensor(np.ones((400, 250), np.float32)),
                                               training=True).numpy()
    assert abs(ratio.std() - math.sqrt(0.3 / 0.7)) < 0.01
    with pytest.raises(ValueError, match="rate"):
        layers.AlphaDropout(1.5)


def test_activity_regularization_and_additive_attention(rng):
    x = rng.standard_normal((4, 3))
    layer = layers.ActivityRegularization(l1=0.1, l2=0.2)
    np.testing.assert_array_equal(layer(gd.tensor(x)).numpy(), x)
    assert float(layer.losses[0]) == pytest.approx(
        (0.1 * np.abs(x).sum() + 0.2 * (x * x).sum()) / 4, rel=1e-12)
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    attention = layers.AdditiveAttention()
    attention([gd.tensor(q[:, :1].astype(np.float32)), gd.tensor(v.astype(np.float32))])
    attention.double()
    scale = rng.standard_normal(4)
    attention.set_weights([scale])
    out = attention([gd.tensor(q), gd.tensor(v)]).numpy()
    scores = (scale * np.tanh(q[:, :, None, :] + v[:, None, :, :])).sum(-1)
    np.testing.assert_allclose(out, _softmax(scores) @ v, rtol=1e-10)


# -- metrics: NumPy references ------------------------------------------------------------------

from gpudl import keras  # noqa: E402
from gpudl.keras import metrics  # noqa: E402


def test_auc_is_the_exact_roc_area_for_scores_between_thresholds(rng):
    """Scores strictly between the evenly spaced thresholds: the trapezoids give the exact
    area, P(positive's score > negative's) + P(tie) / 2, weighted."""
    thresholds = 21
    scores = (rng.integers(0, thresholds - 1, 300) + 0.5) / (thresholds - 1)
    labels = (rng.uniform(size=300) < scores).astype(np.float64)
    weights = rng.uniform(0.5, 2, 300)
    pos, neg = labels == 1, labels == 0
    pair_weight = np.outer(weights[pos], weights[neg])
    above = (scores[pos][:, None] > scores[neg][None, :]) + \
        0.5 * (scores[pos][:, None] == scores[neg][None, :])
    expected = (pair_weight * above).sum() / pair_weight.sum()
    auc = metrics.AUC(num_thresholds=thresholds)
    auc.update_state(labels[:150], scores[:150], sample_weight=weights[:150])
    auc.update_state(labels[150:], scores[150:], sample_weight=weights[150:])
    assert float(auc.result()) == pytest.approx(expected, rel=1e-6)
    auc.reset_state()
    assert float(auc.result()) == 0.0


def test_confusion_metrics_precision_recall(rng):
    y, p = rng.integers(0, 2, (40, 3)), rng.uniform(size=(40, 3))
    w = rng.uniform(0, 2, 40)
    for threshold in (0.5, 0.3):
        predicted = p > threshold
        tp = ((predicted & (y == 1)) * w[:, None]).sum()
        fp = ((predicted & (y == 0)) * w[:, None]).sum()
        fn = ((~predicted & (y == 1)) * w[:, None]).sum()
        assert float(metrics.Precision(threshold)(y, p, sample_weight=w)) == \
            pytest.approx(tp / (tp + fp), rel=1e-6)
        assert float(metrics.Recall(threshold)(y, p, sample_weight=w)) == \
            pytest.approx(tp / (tp + fn), rel=1e-6)
        assert float(metrics.TruePositives(threshold)(y, p, sample_weight=w)) == \
            pytest.approx(tp, rel=1e-6)
    several = metrics.FalsePositives(thresholds=[0.2, 0.8])(y, p).numpy()
    np.testing.assert_array_equal(several, [((p > t) & (y == 0)).sum() for t in (0.2, 0.8)])
    column = metrics.Recall(class_id=1)(y, p).numpy()
    assert column == pytest.approx(((p[:, 1] > 0.5) & (y[:, 1] == 1)).sum() / y[:, 1].sum(),
                                   rel=1e-6)


@pytest.mark.parametrize("average", [None, "micro", "macro", "weighted"])
def test_f1_score_averages(rng, average):
    y = np.eye(4)[rng.integers(0, 4, 60)]
    p = rng.uniform(size=(60, 4))
    predicted = (p == p.max(1, keepdims=True)).astype(float)
    axis = None if average == "micro" else 0
    tp, fp = (predicted * y).sum(axis), (predicted * (1 - y)).sum(axis)
    fn = ((1 - predicted) * y).sum(axis)
    eps = 1e-7
    precision, recall = tp / (tp + fp + eps), tp / (tp + fn + eps)
    f1 = 2 * precision * recall / (precision + recall + eps)
    if average == "weighted":
        f1 = (f1 * y.sum(0) / (y.sum() + eps)).sum()
    elif average == "macro":
        f1 = f1.mean()
    np.testing.assert_allclose(metrics.F1Score(average=average)(y, p).numpy(), f1, rtol=1e-6)
    with pytest.raises(ValueError, match="average"):
        metrics.F1Score(average="samples")


def test_iou_r2_topk_rmse_and_means(rng):
    labels, predicted = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    matrix = np.zeros((3, 3))
    np.add.at(matrix, (labels, predicted), 1)
    iou = np.diag(matrix) / (matrix.sum(0) + matrix.sum(1) - np.diag(matrix))
    assert float(metrics.MeanIoU(3)(labels, predicted)) == pytest.approx(iou.mean(), rel=1e-6)
    assert float(metrics.IoU(3, [0, 2])(labels, predicted)) == \
        pytest.approx(iou[[0, 2]].mean(), rel=1e-6)
    y, p = rng.standard_normal((40, 2)), rng.standard_normal((40, 2))
    r2 = 1 - ((y - p) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    assert float(metrics.R2Score()(y, p)) == pytest.approx(r2.mean(), rel=1e-6)
    assert float(metrics.RootMeanSquaredError()(y, p)) == \
        pytest.approx(np.sqrt(((y - p) ** 2).mean()), rel=1e-6)
    scores, classes = rng.standard_normal((30, 5)), rng.integers(0, 5, 30)
    in_top2 = (np.argsort(-scores, 1)[:, :2] == classes[:, None]).any(1)
    assert float(metrics.SparseTopKCategoricalAccuracy(k=2)(classes, scores)) == \
        pytest.approx(in_top2.mean())
    assert float(metrics.TopKCategoricalAccuracy(k=2)(np.eye(5)[classes], scores)) == \
        pytest.approx(in_top2.mean())
    values, weights = rng.standard_normal(10), rng.uniform(size=10)
    mean = metrics.Mean()
    mean.update_state(values[:4], weights[:4])
    mean.update_state(values[4:], weights[4:])
    assert float(mean.result()) == pytest.approx((values * weights).sum() / weights.sum(),
                                                 rel=1e-6)
    assert float(metrics.Sum()(values)) == pytest.approx(values.sum(), rel=1e-6)
    wrapped = metrics.MeanMetricWrapper(losses.mean_absolute_error, name="mae_metric")
    assert float(wrapped(y, p)) == pytest.approx(np.abs(y - p).mean(), rel=1e-6)


def test_metric_objects_in_fit_follow_each_epoch_with_sample_weights(rng):
    """With a zero learning rate the epoch's predictions are predict()'s: the logged values
    are the metrics of those, not weighted (Keras weighs compile's ``metrics`` by no sample
    weight; only the loss); the object keeps the last epoch's result."""
    x = rng.standard_normal((64, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.standard_normal(64) > 0).astype(np.float32)
    weights = rng.uniform(0.5, 2, 64)
    model = keras.Sequential([keras.Input((5,)), layers.Dense(1, activation="sigmoid")])
    auc, precision = metrics.AUC(), metrics.Precision(name="prec")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="binary_crossentropy",
                  metrics=[auc, precision, "auc"])
    logs = model.fit(x, y, sample_weight=weights, epochs=2, batch_size=16, verbose=0).history
    assert set(logs) == {"loss", "auc", "prec"}
    p = model.predict(x, verbose=0)
    for name, metric in (("auc", metrics.AUC()), ("prec", metrics.Precision())):
        metric.update_state(y, p)
        assert logs[name] == pytest.approx([float(metric.result())] * 2, rel=1e-6)
    assert float(auc.result()) == pytest.approx(logs["auc"][1], rel=1e-6)


# -- optimizers: Keras 3's update formulas in float64 NumPy ---------------------------------------

def _keras_rule_reference(name, p, c, steps, lr, wd=0.0):
    """Keras's update_step for ``f(p) = sum((p - c) ** 2) / 2`` (gradient p - c)."""
    m, v = np.zeros_like(p), np.zeros_like(p)
    product, eps = 1.0, 1e-7
    for t in range(1, steps + 1):
        g = p - c                       # the gradient at the step's start, then the decay
        p = p - lr * wd * p
        if name == "Adamax":
            m += (g - m) * 0.1
            v = np.maximum(0.999 * v, np.abs(g))
            p = p - lr * m / ((1 - 0.9 ** t) * (v + eps))
        elif name == "Nadam":
            u_t, u_next = 0.9 * (1 - 0.5 * 0.96 ** t), 0.9 * (1 - 0.5 * 0.96 ** (t + 1))
            product *= u_t
            m += (g - m) * 0.1
            v += (g * g - v) * 0.001
            m_hat = u_next * m / (1 - product * u_next) + (1 - u_t) * g / (1 - product)
            p = p - lr * m_hat / (np.sqrt(v / (1 - 0.999 ** t)) + eps)
        elif name == "Adadelta":
            m = 0.95 * m + 0.05 * g * g
            delta = -np.sqrt(v + eps) * g / np.sqrt(m + eps)
            v = 0.95 * v + 0.05 * delta * delta
            p = p + lr * delta
        elif name == "Lion":
            p = p - lr * np.sign(0.9 * m + 0.1 * g)
            m = 0.99 * m + 0.01 * g
        elif name == "Lamb":
            m += (g - m) * 0.1
            v += (g * g - v) * 0.001
            r = m / (1 - 0.9 ** t) / (np.sqrt(v / (1 - 0.999 ** t)) + eps)
            p = p - np.linalg.norm(p) / np.linalg.norm(r) * lr * r
    return p


@pytest.mark.parametrize("name", ["Adamax", "Nadam", "Adadelta", "Lion", "Lamb"])
@pytest.mark.parametrize("weight_decay", [None, 0.1])
def test_keras_optimizer_rules(rng, name, weight_decay):
    start, target = rng.standard_normal(6), rng.standard_normal(6)
    param = gd.nn.Parameter(gd.tensor(start))
    optimizer = getattr(keras.optimizers, name)(learning_rate=0.05,
                                                weight_decay=weight_decay).build([param])
    for _ in range(6):
        param.grad = None
        (0.5 * ((param - gd.tensor(target)) ** 2).sum()).backward()
        optimizer.step()
    expected = _keras_rule_reference(name, start, target, 6, 0.05, weight_decay or 0.0)
    np.testing.assert_allclose(param.numpy(), expected, rtol=1e-12, atol=1e-14)
    assert keras.optimizers.get(name.lower(), [param]).__class__.__name__.startswith("Keras")


# -- initializers and utils -----------------------------------------------------------------------

def test_identity_and_lowercase_initializers():
    layer = layers.Dense(3, kernel_initializer=keras.initializers.Identity(gain=2.0))
    layer(gd.ones(1, 4))
    np.testing.assert_array_equal(layer.get_weights()[0], 2 * np.eye(4, 3))
    assert keras.initializers.glorot_uniform is keras.initializers.GlorotUniform
    assert isinstance(keras.initializers.get("identity"), keras.initializers.Identity)
    with pytest.raises(ValueError, match="2-D"):
        layers.Conv1D(2, 3, kernel_initializer="identity")(gd.ones(1, 5, 2))


def test_pad_sequences_and_normalize():
    sequences = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    np.testing.assert_array_equal(keras.utils.pad_sequences(sequences, maxlen=4),
                                  [[0, 1, 2, 3], [0, 0, 0, 4], [6, 7, 8, 9]])
    np.testing.assert_array_equal(
        keras.utils.pad_sequences(sequences, maxlen=2, padding="post", truncating="post",
                                  value=-1), [[1, 2], [4, -1], [5, 6]])
    assert keras.utils.pad_sequences(sequences).shape == (3, 5)
    with pytest.raises(ValueError, match="padding"):
        keras.utils.pad_sequences(sequences, padding="middle")
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(keras.utils.normalize(x), [[0.6, 0.8], [0.0, 0.0]])
    np.testing.assert_allclose(keras.utils.normalize(x, axis=0, order=1),
                               [[1.0, 1.0], [0.0, 0.0]])


def test_timeseries_windows_and_py_dataset_in_fit(rng):
    data, targets = np.arange(40.0).reshape(20, 2), np.arange(20)
    batches = list(keras.utils.timeseries_dataset_from_array(
        data, targets, sequence_length=3, sequence_stride=2, sampling_rate=2, batch_size=3,
        start_index=1))
    starts = np.arange(1, 20 - 4, 2)
    windows = np.concatenate([b[0].numpy() for b in batches])
    np.testing.assert_array_equal(windows, data[starts[:, None] + np.array([0, 2, 4])])
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]),
                                  targets[starts])

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epochs_ended = 0

        def __len__(self):
            return 3

        def __getitem__(self, index):
            x = np.full((4, 2), index, np.float32)
            return x, x.sum(1, keepdims=True)

        def on_epoch_end(self):
            self.epochs_ended += 1

    batches = Batches()
    model = keras.Sequential([keras.Input((2,)), layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    history = model.fit(batches, epochs=2, verbose=0).history
    kernel, bias = model.get_weights()
    predictions = [np.full((4, 2), i) @ kernel + bias for i in range(3)]
    expected = np.mean([((p - 2 * i) ** 2).mean() for i, p in enumerate(predictions)])
    assert history["loss"] == pytest.approx([expected] * 2, rel=1e-5)
    assert batches.epochs_ended == 2


def test_progbar_prints_running_means(capsys):
    bar = keras.utils.Progbar(4, interval=0)
    bar.update(2, [("loss", 1.0)])
    bar.update(4, [("loss", 2.0)])
    assert capsys.readouterr().out.rstrip().endswith("4/4 [====================] - 0s - "
                                                     "loss: 1.5000")


# -- recurrent cells, RNN, Keras-style custom layers ---------------------------------------------

@pytest.mark.parametrize("cell,layer", [("LSTMCell", "LSTM"), ("GRUCell", "GRU"),
                                        ("SimpleRNNCell", "SimpleRNN")])
def test_rnn_of_a_cell_equals_the_layer_and_its_steps(rng, cell, layer):
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    wrapped = layers.RNN(getattr(layers, cell)(6), return_sequences=True, return_state=True)
    whole = getattr(layers, layer)(6, return_sequences=True, return_state=True)
    outputs = wrapped(gd.tensor(x))
    whole(gd.tensor(x))
    whole.set_weights(wrapped.get_weights())            # the same names, shapes and layouts
    for a, b in zip(outputs, whole(gd.tensor(x))):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    step = wrapped.cell
    states = step.get_initial_state(3)
    for t in range(5):                                   # cell(x_t, states) step by step
        out, states = step(gd.tensor(x[:, t]), states)
        np.testing.assert_allclose(out.numpy(), outputs[0].numpy()[:, t], rtol=1e-5,
                                   atol=1e-6)
    with pytest.raises(NotImplementedError, match="dropout"):
        getattr(layers, cell)(4, dropout=0.2)


def test_rnn_runs_a_custom_cell_with_masks(rng):
    """A Keras-style cell (add_weight(shape=...), state_size, call(inputs, states)) against a
    NumPy loop; masked steps keep the state and repeat the output."""

    class MinimalCell(layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units, self.state_size = units, units

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units),
                                          initializer="random_normal")
            self.recurrent_kernel = self.add_weight(shape=(self.units, self.units),
                                                    initializer="random_normal")

        def call(self, inputs, states):
            output = (inputs @ self.kernel + states[0] @ self.recurrent_kernel).tanh()
            return output, [output]

    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    mask = np.ones((2, 6), bool)
    mask[0, 4:] = mask[1, :2] = False
    rnn = layers.RNN(MinimalCell(4), return_sequences=True)
    out = rnn(gd.tensor(x), mask=gd.tensor(mask)).numpy()
    assert [name for name, _ in rnn.named_parameters()] == ["cell.kernel",
                                                            "cell.recurrent_kernel"]
    kernel, recurrent = (w.astype(np.float64) for w in rnn.get_weights())
    h, previous, expected = np.zeros((2, 4)), np.zeros((2, 4)), []
    for t in range(6):
        new = np.tanh(x[:, t] @ kernel + h @ recurrent)
        keep = mask[:, t:t + 1]
        h, previous = np.where(keep, new, h), np.where(keep, new, previous)
        expected.append(previous)
    np.testing.assert_allclose(out, np.stack(expected, 1), rtol=1e-5, atol=1e-6)


def test_add_weight_takes_keras_3_arguments():
    class Scaled(layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 2), regularizer="l2")
            self.count = self.add_weight(shape=(), initializer="zeros", trainable=False)
            self.add_weight(shape=(2,), initializer="ones")

        def call(self, inputs):
            return inputs @ self.w

    layer = Scaled()
    layer(gd.ones(1, 3))
    assert list(layer.state_dict()) == ["w", "variable", "count"]
    assert layer.count_params() == 3 * 2 + 2 + 1
    assert [w.shape for w in layer.trainable_weights] == [(3, 2), (2,)]
    assert float(layer.losses[0]) == pytest.approx(0.01 * (layer.w.numpy() ** 2).sum(), rel=1e-6)
    np.testing.assert_array_equal(layer.variable.numpy(), [1.0, 1.0])
    with pytest.raises(NotImplementedError, match="constraint"):
        layers.Dense(2).add_weight(shape=(2,), constraint=lambda w: w)


def test_bad_arguments_are_refused_naming_them():
    cases = [(lambda: layers.Dot(axes="last"), ValueError, "axes"),
             (lambda: layers.GaussianNoise(-1.0), ValueError, "stddev"),
             (lambda: layers.PReLU(shared_axes=[3])(gd.ones(2, 4)), ValueError, "shared_axes"),
             (lambda: layers.DepthwiseConv2D(3, depth_multiplier=0), ValueError,
              "depth_multiplier"),
             (lambda: layers.Conv1DTranspose(2, 3, padding="causal"), ValueError, "padding"),
             (lambda: layers.RNN(layers.Dense(3)), TypeError, "cell"),
             (lambda: metrics.AUC(curve="ROCK"), ValueError, "curve"),
             (lambda: metrics.IoU(3, [0, 3]), ValueError, "target_class_ids"),
             (lambda: metrics.R2Score(class_aggregation="median"), ValueError,
              "class_aggregation"),
             (lambda: keras.optimizers.Lion(beta_1=0.0), ValueError, "beta_1"),
             (lambda: keras.optimizers.Nadam(clipnorm=-1.0), ValueError, "clipnorm"),
             (lambda: keras.backend.set_epsilon(0), ValueError, "set_epsilon"),
             (lambda: keras.random.uniform((2,), seed="x"), TypeError, "seed"),
             (lambda: keras.ops.split(gd.ones(5), 2), ValueError, "indices_or_sections")]
    for make, error, word in cases:
        with pytest.raises(error, match=word):
            make()


@pytest.mark.parametrize("mode,axes", [("horizontal", [(2,)]), ("vertical", [(1,)]),
                                       ("horizontal_and_vertical", [(1, 2)])])
def test_random_flip_flips_whole_images_in_training_only(rng, mode, axes):
    x = rng.standard_normal((64, 3, 4, 2)).astype(np.float32)
    out = layers.RandomFlip(mode, seed=3)(gd.tensor(x), training=True).numpy()
    flipped = np.flip(x, axes[0])
    same = np.all(out == x, axis=(1, 2, 3))
    turned = np.all(out == flipped, axis=(1, 2, 3))
    assert np.all(same | turned) and 16 < turned.sum() < 48
    model = keras.Sequential([keras.Input((3, 4, 2)), layers.RandomFlip(mode)])
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)       # inference
    with pytest.raises(ValueError, match="mode"):
        layers.RandomFlip("diagonal")
