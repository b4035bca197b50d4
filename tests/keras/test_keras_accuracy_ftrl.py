"""The accuracy metric objects as Keras's stateful metrics (update_state/result/reset_state,
sample weights) against float64 NumPy, and Keras's Ftrl update against its formula written in
NumPy; the same names against Keras itself are in test_keras_vs_keras.py."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import keras
from gpudl.keras import metrics


def _accuracy_cases(rng):
    scores = rng.random((10, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 10)
    probs = rng.random((10, 3)).astype(np.float32)
    binary = (rng.random((10, 3)) > 0.5).astype(np.float32)
    exact = rng.integers(0, 3, 10)
    return [
        (metrics.SparseCategoricalAccuracy(), labels, scores, scores.argmax(1) == labels),
        (metrics.SparseCategoricalAccuracy(), labels[:, None], scores,
         scores.argmax(1) == labels),
        (metrics.CategoricalAccuracy(), np.eye(4)[labels], scores, scores.argmax(1) == labels),
        (metrics.BinaryAccuracy(threshold=0.3), binary, probs, (probs > 0.3) == binary),
        (metrics.BinaryAccuracy(), binary[:, 0], probs[:, :1], (probs[:, 0] > 0.5) == binary[:, 0]),
        (metrics.Accuracy(), exact, labels % 3, exact == labels % 3),
    ]


def test_accuracy_objects_accumulate_weighted_batches(rng):
    for metric, y_true, y_pred, hits in _accuracy_cases(rng):
        weights = rng.uniform(0.1, 2.0, len(y_true))
        metric.update_state(y_true[:6], y_pred[:6])
        metric.update_state(gd.tensor(y_true[6:]), gd.tensor(y_pred[6:]),
                            sample_weight=weights[6:])
        per_sample = hits.reshape(len(hits), -1).mean(1)
        sample_weights = np.concatenate([np.ones(6), weights[6:]])
        expected = (per_sample * sample_weights).sum() / sample_weights.sum()
        assert float(metric.result()) == pytest.approx(expected, rel=1e-6), metric.name
        metric.reset_state()
        assert float(metric.result()) == 0.0
        assert float(metric(y_true, y_pred)) == pytest.approx(per_sample.mean(), rel=1e-6)


def test_accuracy_objects_keep_names_and_configs():
    metric = metrics.BinaryAccuracy(name="acc_07", threshold=0.7)
    assert metric.name == "acc_07" and metric.get_config()["threshold"] == 0.7
    clone = metrics.BinaryAccuracy.from_config(metric.get_config())
    assert float(clone([[1.0], [0.0]], [[0.8], [0.75]])) == 0.5
    assert metrics.SparseCategoricalAccuracy().name == "sparse_categorical_accuracy"


def _ftrl_reference(p, c, steps, lr, power, initial, l1, l2, shrinkage, beta):
    """Keras 3's Ftrl update_step in float64 for ``sum((p - c) ** 2) / 2``."""
    n, z = np.full_like(p, initial), np.zeros_like(p)
    for _ in range(steps):
        g = p - c
        n_new = n + g * g
        sigma = (n_new ** -power - n ** -power) / lr
        z = z + g + 2 * shrinkage * p - sigma * p
        denominator = n_new ** -power / lr + 2 * (l2 + beta / (2 * lr))
        p = np.where(np.abs(z) > l1, -(z - np.sign(z) * l1), 0.0) / denominator
        n = n_new
    return p


@pytest.mark.parametrize("options", [
    {}, {"l1_regularization_strength": 0.05, "l2_regularization_strength": 0.1},
    {"learning_rate_power": -0.7, "initial_accumulator_value": 0.5,
     "l2_shrinkage_regularization_strength": 0.2, "beta": 0.3, "l1_regularization_strength": 0.3}])
def test_ftrl_follows_keras_formula(rng, options):
    start, target = rng.standard_normal(7), rng.standard_normal(7)
    param = gd.nn.Parameter(gd.tensor(start))
    optimizer = keras.optimizers.Ftrl(learning_rate=0.1, **options).build([param])
    for _ in range(5):
        param.grad = None
        (0.5 * ((param - gd.tensor(target)) ** 2).sum()).backward()
        optimizer.step()
    settings = {"learning_rate_power": -0.5, "initial_accumulator_value": 0.1,
                "l1_regularization_strength": 0.0, "l2_regularization_strength": 0.0,
                "l2_shrinkage_regularization_strength": 0.0, "beta": 0.0, **options}
    expected = _ftrl_reference(start, target, 5, 0.1, settings["learning_rate_power"],
                               settings["initial_accumulator_value"],
                               settings["l1_regularization_strength"],
                               settings["l2_regularization_strength"],
                               settings["l2_shrinkage_regularization_strength"],
                               settings["beta"])
    np.testing.assert_allclose(param.numpy(), expected, rtol=1e-12, atol=1e-14)
    assert isinstance(keras.optimizers.get("ftrl", [param]), type(optimizer))


@pytest.mark.parametrize("argument, value", [("learning_rate_power", 0.5),
                                             ("initial_accumulator_value", -0.1),
                                             ("l1_regularization_strength", -1.0)])
def test_ftrl_refuses_bad_arguments(argument, value):
    with pytest.raises(ValueError, match=argument):
        keras.optimizers.Ftrl(**{argument: value})


def test_precision_recall_top_k_and_class_id(rng):
    """top_k: the k highest scores of each row are the predicted positives (the others never
    count); class_id then keeps one column. Counted here with explicit loops."""
    scores = rng.random((9, 5))
    labels = (rng.random((9, 5)) > 0.6).astype(np.float64)
    weights = rng.uniform(0.5, 2.0, 9)
    for k, class_id, threshold in ((2, None, None), (3, 1, None), (2, None, 0.4), (1, 4, None)):
        tp = fp = fn = 0.0
        for row in range(9):
            top = set(np.argsort(-scores[row], kind="stable")[:k])
            for col in ([class_id] if class_id is not None else range(5)):
                predicted = col in top and (threshold is None or scores[row, col] > threshold)
                tp += weights[row] * (predicted and labels[row, col] == 1)
                fp += weights[row] * (predicted and labels[row, col] == 0)
                fn += weights[row] * (not predicted and labels[row, col] == 1)
        for cls, expected in ((metrics.Precision, tp / (tp + fp)),
                              (metrics.Recall, tp / (tp + fn))):
            metric = cls(thresholds=threshold, top_k=k, class_id=class_id)
            metric.update_state(labels, scores, sample_weight=weights)
            assert float(metric.result()) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="top_k"):
        metrics.Precision(top_k=0)
