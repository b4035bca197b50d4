"""Classification metrics: accuracy, precision, recall, F1 and the confusion matrix.

Arguments are in scikit-learn's order, ``(y_true, y_pred)``, and may be Tensors, NumPy or CuPy
arrays (read to the host once). ``y_true`` holds class indices. ``y_pred`` holds either class
indices, scores with a class axis at position 1 (logits or probabilities, ``(N, C)`` or
``(N, C, ...)``: the arg-max is taken), or binary scores shaped like ``y_true`` (floating point:
thresholded at ``threshold``; 0.5 suits probabilities, 0.0 logits).
"""

import numpy as np

from . import backend
from .tensor import Tensor

AVERAGES = ("macro", "micro", "weighted", "binary", None)


def _host(values, name, where):
    array = backend.to_numpy(values._data if isinstance(values, Tensor) else values, "metrics")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{where}: {name} must be a Tensor or an array of numbers, got "
                        f"{type(values).__name__} of dtype {array.dtype}")
    return array


def _labels(y_true, y_pred, threshold, where):
    """(true, pred) as flat int64 label arrays, checked."""
    true, pred = _host(y_true, "y_true", where), _host(y_pred, "y_pred", where)
    if pred.ndim == true.ndim + 1 and pred.ndim >= 2:
        pred = pred.argmax(axis=1)                 # scores over classes (N, C, ...) -> (N, ...)
    elif pred.dtype.kind == "f" and pred.shape == true.shape:
        pred = pred > threshold                    # binary scores
    if pred.shape != true.shape:
        raise ValueError(f"{where}: y_pred of shape {pred.shape} does not match y_true of shape "
                         f"{true.shape} (expected labels of the same shape, or scores with a "
                         "class axis at position 1)")
    for name, values in (("y_true", true), ("y_pred", pred)):
        if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
            raise ValueError(f"{where}: {name} must hold class indices, got non-integer values")
        if values.size and values.min() < 0:
            raise ValueError(f"{where}: {name} must hold class indices >= 0, got {values.min()}")
    if true.size == 0:
        raise ValueError(f"{where}: y_true and y_pred are empty")
    return true.astype(np.int64).ravel(), pred.astype(np.int64).ravel()


def _num_classes(true, pred, num_classes, where):
    largest = int(max(true.max(), pred.max())) + 1
    if num_classes is None:
        return largest
    if largest > num_classes:
        raise ValueError(f"{where}: found class index {largest - 1} but num_classes="
                         f"{num_classes}")
    return int(num_classes)


def accuracy(y_true, y_pred, threshold=0.5):
    """The fraction of predictions equal to the targets (a Python float).

    Example:
        >>> accuracy(labels, logits)        # logits (N, C) -> arg-max over classes
    """
    true, pred = _labels(y_true, y_pred, threshold, "accuracy")
    return float(np.mean(true == pred))


def confusion_matrix(y_true, y_pred, num_classes=None, threshold=0.5):
    """``(C, C)`` int64 counts: row = true class, column = predicted class.

    ``C`` is ``num_classes``, or the largest class index seen plus one.
    """
    true, pred = _labels(y_true, y_pred, threshold, "confusion_matrix")
    c = _num_classes(true, pred, num_classes, "confusion_matrix")
    return np.bincount(true * c + pred, minlength=c * c).reshape(c, c)


def _scores(kind, y_true, y_pred, average, num_classes, threshold, zero_division):
    if average not in AVERAGES:
        raise ValueError(f"{kind}: average must be one of {AVERAGES}, got {average!r}")
    true, pred = _labels(y_true, y_pred, threshold, kind)
    c = _num_classes(true, pred, num_classes, kind)
    if average == "binary" and c > 2:
        raise ValueError(f"{kind}: average='binary' needs labels 0 and 1, found {c} classes; "
                         "use average='macro', 'micro', 'weighted' or None")
    matrix = np.bincount(true * c + pred, minlength=c * c).reshape(c, c)
    tp, support, predicted = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    if num_classes is None and average != "binary":     # classes present, as scikit-learn
        present = (support + predicted) > 0
        tp, support, predicted = tp[present], support[present], predicted[present]
    if average == "micro":
        tp, support, predicted = tp.sum(keepdims=True), support.sum(keepdims=True), \
            predicted.sum(keepdims=True)
    denominator = {"precision": predicted, "recall": support, "f1": predicted + support}[kind]
    numerator = 2 * tp if kind == "f1" else tp
    per_class = np.where(denominator > 0, numerator / np.maximum(denominator, 1),
                         zero_division).astype(np.float64)
    if average is None:
        return per_class
    if average == "binary":
        return float(per_class[1]) if c > 1 else float(zero_division)
    if average == "weighted":
        total = support.sum()
        return float(per_class @ support / total) if total else float(zero_division)
    return float(per_class.mean())


def precision(y_true, y_pred, average="macro", num_classes=None, threshold=0.5,
              zero_division=0.0):
    """Precision ``tp / (tp + fp)`` per class, averaged.

    Args:
        average: 'macro' (unweighted mean over classes), 'micro' (from the summed counts),
            'weighted' (mean weighted by each class's support), 'binary' (class 1 only) or
            None (an array, one value per class).
        num_classes: the classes are ``range(num_classes)``; by default the classes present
            in y_true or y_pred, as scikit-learn does.
        zero_division: the value of a class with a zero denominator.
    """
    return _scores("precision", y_true, y_pred, average, num_classes, threshold, zero_division)


def recall(y_true, y_pred, average="macro", num_classes=None, threshold=0.5, zero_division=0.0):
    """Recall ``tp / (tp + fn)`` per class, averaged (arguments as ``precision``)."""
    return _scores("recall", y_true, y_pred, average, num_classes, threshold, zero_division)


def f1_score(y_true, y_pred, average="macro", num_classes=None, threshold=0.5,
             zero_division=0.0):
    """F1 ``2 tp / (2 tp + fp + fn)`` per class, averaged (arguments as ``precision``)."""
    return _scores("f1", y_true, y_pred, average, num_classes, threshold, zero_division)
