"""Keras's metrics by name for ``compile(metrics=[...])``.

``accuracy`` decides per output as Keras does: a single score column (or 1-d scores) is
thresholded at 0.5 (binary accuracy); otherwise the arg-max over the last axis is compared with
the labels, or with the arg-max of one-hot targets shaped like the scores. 'mae'/'mse' (and
their long names) are the mean absolute/squared error over every output value, targets (N,)
beside outputs (N, 1) taken as Keras squeezes them. Other names ('precision', 'recall', 'f1')
are gpudl.train's.
"""

import numpy as np

from .. import train
from ..creation import tensor


class WeightedTarget(tuple):
    """A batch's ``(targets, sample_weight)``, told apart from several outputs' targets."""


def unweighted(target):
    return target[0] if isinstance(target, WeightedTarget) else target


def class_labels(output, target):
    """Device arrays (predicted, true) flat labels as Keras's accuracy compares them."""
    target = unweighted(target)
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


def aligned_values(output, target):
    """Device arrays (outputs, targets) flattened alike, for the regression metrics."""
    target = unweighted(target)
    target = target.reshape(output.shape) if target.size == output.size else target
    return output.ravel(), target.ravel()


def _regression_metric(name, error):
    def metric(y_true, y_pred):
        return float(np.mean(error(np.asarray(y_pred, np.float64) - y_true)))
    metric.__name__, metric.prepare = name, aligned_values
    return metric


REGRESSION = {name: _regression_metric(name, error)
              for names, error in ((("mae", "mean_absolute_error"), np.abs),
                                   (("mse", "mean_squared_error"), np.square))
              for name in names}
mae, mse = REGRESSION["mae"], REGRESSION["mse"]
mean_absolute_error, mean_squared_error = REGRESSION["mean_absolute_error"], \
    REGRESSION["mean_squared_error"]

ACCURACIES = {name: _accuracy_metric(name)
              for name in ("accuracy", "binary_accuracy", "categorical_accuracy",
                           "sparse_categorical_accuracy")}
ACCURACIES["acc"] = ACCURACIES["accuracy"]
accuracy = ACCURACIES["accuracy"]
binary_accuracy = ACCURACIES["binary_accuracy"]
categorical_accuracy = ACCURACIES["categorical_accuracy"]
sparse_categorical_accuracy = ACCURACIES["sparse_categorical_accuracy"]


class ForOutput:
    """``metric`` on output ``index`` of a model with several, logged as ``<output>_<name>``
    (Keras 2's naming)."""

    def __init__(self, metric, index, output_name):
        name, self.metric = train.resolve_metrics([metric])[0]
        self.index, self.__name__ = index, f"{output_name}_{name}"
        self.inner_prepare = getattr(self.metric, "prepare", train.as_labels)

    def prepare(self, output, target):
        return self.inner_prepare(output[self.index], unweighted(target)[self.index])

    def __call__(self, y_true, y_pred):
        return self.metric(y_true, y_pred)


class OutputLoss:
    """The loss of output ``index`` of a model with several, logged as ``<output>_loss``
    (Keras's per-output losses): its per-sample values times the sample weights, averaged over
    the epoch, without the output's loss weight."""

    def __init__(self, loss, index, output_name):
        self.loss, self.index, self.__name__ = loss, index, f"{output_name}_loss"

    def prepare(self, output, target):
        sample_weight = target[1] if isinstance(target, WeightedTarget) else None
        values = self.loss.call(tensor(unweighted(target)[self.index]),
                                tensor(output[self.index]))._data
        if sample_weight is not None:
            values = values * sample_weight.reshape(
                sample_weight.shape + (1,) * (values.ndim - sample_weight.ndim))
        return values.ravel(), values.ravel()

    def __call__(self, y_true, y_pred):
        return float(np.mean(y_pred))


def resolve(metrics, output_names=None):
    """Keras metric names mapped to Keras's semantics and checked by gpudl.train. For a model
    with several outputs: a list applies to every output, a dict maps output names to lists."""
    def one(m):
        if isinstance(m, str) and m in METRIC_OBJECTS:
            m = METRIC_OBJECTS[m]()
        if isinstance(m, Metric):
            return EpochMetric(m)
        return ACCURACIES.get(m, REGRESSION.get(m, m)) if isinstance(m, str) else m

    if output_names and len(output_names) > 1 and metrics:
        per_output = metrics if isinstance(metrics, dict) else \
            {name: metrics for name in output_names}
        unknown = sorted(set(per_output) - set(output_names))
        if unknown:
            raise ValueError(f"compile: metrics for unknown outputs {unknown}; outputs: "
                             f"{output_names}")
        resolved = []
        for i, name in enumerate(output_names):
            chosen = per_output.get(name) or []
            chosen = [chosen] if isinstance(chosen, str) or callable(chosen) else chosen
            resolved += [ForOutput(one(m), i, name) for m in chosen]
        train.resolve_metrics(resolved)
        return resolved
    metrics = [metrics] if isinstance(metrics, str) or callable(metrics) else list(metrics or ())
    metrics = [one(m) for m in metrics]
    train.resolve_metrics(metrics)                   # refuses unknown metrics now
    return metrics


# branch keras: Keras's stateful metric objects and the names compile takes for them
from .metric_objects import (AUC, F1Score, FalseNegatives, FalsePositives,  # noqa: E402
                             FBetaScore, IoU, Mean, MeanIoU, MeanMetricWrapper, Metric,
                             Precision, R2Score, Recall, RootMeanSquaredError, Sum,
                             TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy,
                             TrueNegatives, TruePositives, CosineSimilarity, EpochMetric,
                             cosine_similarity, sparse_top_k_categorical_accuracy,
                             top_k_categorical_accuracy)

METRIC_OBJECTS = {"auc": AUC, "AUC": AUC, "top_k_categorical_accuracy": TopKCategoricalAccuracy,
                  "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
                  "cosine_similarity": CosineSimilarity, "r2_score": R2Score,
                  "root_mean_squared_error": RootMeanSquaredError}

# branch keras-2: the accuracy classes as stateful metric objects
from .metric_objects import (Accuracy, BinaryAccuracy, CategoricalAccuracy,  # noqa: E402
                             SparseCategoricalAccuracy)
