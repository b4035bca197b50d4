"""gpudl.metrics against scikit-learn."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import metrics

skm = pytest.importorskip("sklearn.metrics")

FUNCTIONS = [(metrics.precision, skm.precision_score), (metrics.recall, skm.recall_score),
             (metrics.f1_score, skm.f1_score)]


def _labels(rng, n=40, classes=5):
    true = rng.integers(0, classes, n)
    pred = np.where(rng.random(n) < 0.6, true, rng.integers(0, classes, n))   # 60% right + noise
    return true, pred


@pytest.mark.parametrize("ours, theirs", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("average", ["macro", "micro", "weighted", None])
def test_multiclass_scores_match_sklearn(rng, ours, theirs, average):
    true, pred = _labels(rng)
    pred[pred == 3] = 4                          # class 3 never predicted: a zero division
    expected = theirs(true, pred, average=average, zero_division=0)
    np.testing.assert_allclose(ours(true, pred, average=average), expected, rtol=1e-12)
    # Tensors in, and num_classes adding a class absent from both
    expected = theirs(true, pred, average=average, labels=list(range(7)), zero_division=0)
    got = ours(gd.tensor(true), gd.tensor(pred), average=average, num_classes=7)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("ours, theirs", FUNCTIONS, ids=lambda f: f.__name__)
def test_binary_scores_from_labels_and_probabilities(rng, ours, theirs):
    true = rng.integers(0, 2, 30)
    prob = np.clip(true * 0.6 + rng.random(30) * 0.5, 0, 1).astype(np.float32)
    pred = (prob > 0.5).astype(np.int64)
    expected = theirs(true, pred)                 # scikit-learn's default: average='binary'
    assert ours(true, pred, average="binary") == pytest.approx(expected, rel=1e-12)
    assert ours(true, prob, average="binary") == pytest.approx(expected, rel=1e-12)
    logits = np.log(prob + 1e-6) - np.log1p(-prob + 1e-6)
    assert ours(true, logits, average="binary", threshold=0.0) == pytest.approx(expected, rel=1e-6)


def test_accuracy_from_labels_and_logits(rng):
    true = rng.integers(0, 4, 50)
    logits = rng.standard_normal((50, 4)).astype(np.float32)
    logits[np.arange(50)[:35], true[:35]] += 5.0         # 35 right by construction (at least)
    expected = skm.accuracy_score(true, logits.argmax(1))
    assert metrics.accuracy(true, logits) == pytest.approx(expected)
    assert metrics.accuracy(gd.tensor(true), gd.tensor(logits)) == pytest.approx(expected)
    assert metrics.accuracy(true, logits.argmax(1)) == pytest.approx(expected)
    assert expected >= 0.7


def test_accuracy_with_a_class_axis_at_position_one(rng):
    true = rng.integers(0, 3, (4, 5))                     # e.g. per-pixel labels (N, W)
    scores = rng.standard_normal((4, 3, 5))               # (N, C, W)
    expected = np.mean(scores.argmax(1) == true)
    assert metrics.accuracy(true, scores) == pytest.approx(expected)


def test_confusion_matrix_matches_sklearn(rng):
    true, pred = _labels(rng, 60, 4)
    np.testing.assert_array_equal(metrics.confusion_matrix(true, pred),
                                  skm.confusion_matrix(true, pred, labels=range(4)))
    got = metrics.confusion_matrix(gd.tensor(true), gd.tensor(pred), num_classes=6)
    assert got.shape == (6, 6) and got.dtype == np.int64 and got.sum() == 60
    np.testing.assert_array_equal(got, skm.confusion_matrix(true, pred, labels=range(6)))


def test_single_sample_and_perfect_prediction():
    assert metrics.accuracy([2], [2]) == 1.0
    assert metrics.f1_score([0, 1, 2], [0, 1, 2]) == 1.0
    assert metrics.precision([0, 0], [1, 1], average="macro") == 0.0


@pytest.mark.parametrize("call, error, message", [
    (lambda: metrics.accuracy([0, 1, 2], [0, 1]), ValueError, r"shape \(2,\) does not match"),
    (lambda: metrics.accuracy([], []), ValueError, "empty"),
    (lambda: metrics.accuracy([0.5, 1.0], [0, 1]), ValueError, "y_true must hold class indices"),
    (lambda: metrics.f1_score([0, -1], [0, 1]), ValueError, ">= 0"),
    (lambda: metrics.f1_score([0, 1], [0, 1], average="sample"), ValueError, "average must be"),
    (lambda: metrics.recall([0, 1, 2], [0, 1, 2], average="binary"), ValueError, "binary"),
    (lambda: metrics.confusion_matrix([0, 5], [0, 1], num_classes=3), ValueError,
     "class index 5 but num_classes=3"),
    (lambda: metrics.accuracy(object(), [0]), TypeError,
     "y_true must be a Tensor or an array of numbers"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
