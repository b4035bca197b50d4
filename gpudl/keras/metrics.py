"""Keras's metrics by name for ``compile(metrics=[...])``.

``accuracy`` decides per output as Keras does: a single score column (or 1-d scores) is
thresholded at 0.5 (binary accuracy); otherwise the arg-max over the last axis is compared with
the labels, or with the arg-max of one-hot targets shaped like the scores. Other names
('precision', 'recall', 'f1') are gpudl.train's.
"""

import numpy as np

from .. import train


def class_labels(output, target):
    """Device arrays (predicted, true) flat labels as Keras's accuracy compares them."""
    if output.ndim == 1 or output.shape[-1] == 1:
        target = target.reshape(output.shape) if target.size == output.size else target
        return (output > 0.5).astype(target.dtype).ravel(), target.ravel()
    if target.shape == output.shape:
        target = target.argmax(axis=-1)
    return output.argmax(axis=-1).ravel(), target.ravel()


def _equal_fraction(y_true, y_pred):
    return float(np.mean(y_true == y_pred))


def _accuracy_metric(name):
    def metric(y_true, y_pred):
        return _equal_fraction(y_true, y_pred)
    metric.__name__, metric.prepare = name, class_labels
    return metric


class _AccuracyObject:
    """A metric object (``metrics=[SparseCategoricalAccuracy()]``): logged under ``name``."""

    default_name = "accuracy"

    def __init__(self, name=None):
        self.__name__ = name or self.default_name

    def __call__(self, y_true, y_pred):
        return _equal_fraction(y_true, y_pred)


class Accuracy(_AccuracyObject):
    """Keras's ``Accuracy`` class: how often predictions equal the targets exactly."""

    @staticmethod
    def prepare(output, target):
        return output.ravel(), target.reshape(output.shape).ravel() \
            if target.size == output.size else target.ravel()


class BinaryAccuracy(_AccuracyObject):
    default_name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        super().__init__(name)
        self.threshold = threshold

    def prepare(self, output, target):
        predicted = (output > self.threshold).astype(target.dtype)
        return predicted.ravel(), target.reshape(output.shape).ravel()


class CategoricalAccuracy(_AccuracyObject):
    default_name = "categorical_accuracy"

    @staticmethod
    def prepare(output, target):
        return output.argmax(axis=-1).ravel(), target.argmax(axis=-1).ravel()


class SparseCategoricalAccuracy(_AccuracyObject):
    default_name = "sparse_categorical_accuracy"

    @staticmethod
    def prepare(output, target):
        return output.argmax(axis=-1).ravel(), target.ravel()


ACCURACIES = {name: _accuracy_metric(name)
              for name in ("accuracy", "binary_accuracy", "categorical_accuracy",
                           "sparse_categorical_accuracy")}
ACCURACIES["acc"] = ACCURACIES["accuracy"]
accuracy = ACCURACIES["accuracy"]
binary_accuracy = ACCURACIES["binary_accuracy"]
categorical_accuracy = ACCURACIES["categorical_accuracy"]
sparse_categorical_accuracy = ACCURACIES["sparse_categorical_accuracy"]


def resolve(metrics):
    """Keras metric names mapped to Keras's semantics; checked by gpudl.train."""
    metrics = [metrics] if isinstance(metrics, str) or callable(metrics) else list(metrics or ())
    metrics = [ACCURACIES.get(m, m) if isinstance(m, str) else m for m in metrics]
    train.resolve_metrics(metrics)                   # refuses unknown metrics now
    return metrics
