"""Keras's metrics by name for ``compile(metrics=[...])``.

``accuracy`` decides per output as Keras does: a single score column (or 1-d scores) is
thresholded at 0.5 (binary accuracy); otherwise the arg-max over the last axis is compared with
the labels, or with the arg-max of one-hot targets shaped like the scores. 'binary_accuracy'
(every value ``y_pred > 0.5`` against its label), 'categorical_accuracy' and
'sparse_categorical_accuracy' are Keras's functions of those names. 'mae'/'mse' (and their long
names) are the mean absolute/squared error over every output value, targets (N,) beside outputs
(N, 1) taken as Keras squeezes them. Compile's metrics, these and metric objects alike,
are not weighted by sample or class weights (Keras weighs only ``weighted_metrics``); the
mean metrics skip the output's masked steps. Other names ('precision', 'recall', 'f1') are
gpudl.train's.
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


def _mean_metric(name, values_of):
    """Keras's MeanMetricWrapper for compile(metrics=[name]): the mean of
    ``values_of(output, target)`` over the epoch (compile's ``metrics`` are not weighted by
    sample weights in Keras: that is ``weighted_metrics``)."""
    def prepare(output, target, mask=None):
        values = values_of(output, unweighted(target)).astype(output.dtype)
        if mask is not None and mask.size and values.size % mask.size == 0:
            # Keras's MeanMetricWrapper weighs by the output's mask: masked steps do not count
            values = values.reshape(mask.size, -1)[mask.reshape(-1).astype(bool)]
        values = values.ravel()
        return values, values

    def metric(values, _):
        return float(np.mean(np.asarray(values, np.float64))) if len(values) else 0.0
    metric.__name__, metric.prepare, metric.masked = name, prepare, True
    return metric


def masked_by(metric, model):
    """``metric`` (a compile metric by name) reading ``model``'s output mask at each batch."""
    def prepare(output, target):
        mask = model.__dict__.get("output_mask")
        return metric.prepare(output, target, None if mask is None else mask._data)

    def bound(y_true, y_pred):
        return metric(y_true, y_pred)
    bound.__name__, bound.prepare = metric.__name__, prepare
    return bound


def _like_output(output, target):
    return target.reshape(output.shape) if target.size == output.size else target


def _sparse_labels(output, target):
    if target.ndim == output.ndim and target.shape[-1] == 1:
        target = target[..., 0]
    return target


def _accuracy_values(output, target):
    predicted, true = class_labels(output, target)
    return predicted == true


VALUES = {"accuracy": _accuracy_values,
          "binary_accuracy": lambda o, t: _like_output(o, t) == (o > 0.5),
          "categorical_accuracy": lambda o, t: o.argmax(axis=-1) == t.argmax(axis=-1),
          "sparse_categorical_accuracy": lambda o, t: o.argmax(axis=-1) == _sparse_labels(o, t),
          "mae": lambda o, t: abs(o - _like_output(o, t)),
          "mse": lambda o, t: (o - _like_output(o, t)) ** 2}
VALUES.update(acc=VALUES["accuracy"], mean_absolute_error=VALUES["mae"],
              mean_squared_error=VALUES["mse"])

REGRESSION = {name: _mean_metric(name, VALUES[name])
              for name in ("mae", "mse", "mean_absolute_error", "mean_squared_error")}
mae, mse = REGRESSION["mae"], REGRESSION["mse"]
mean_absolute_error, mean_squared_error = REGRESSION["mean_absolute_error"], \
    REGRESSION["mean_squared_error"]

ACCURACIES = {name: _mean_metric(name, VALUES[name])
              for name in ("accuracy", "acc", "binary_accuracy", "categorical_accuracy",
                           "sparse_categorical_accuracy")}
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
            return EpochMetric(m, weighted=False)       # Keras: compile's metrics unweighted
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

# session 24: the losses as metric classes; compile(metrics=[...]) takes their names too
from .metric_objects import (LOSS_METRICS, BinaryCrossentropy,  # noqa: E402
                             CategoricalCrossentropy, CategoricalHinge, Hinge, KLDivergence,
                             LogCoshError, MeanAbsoluteError, MeanAbsolutePercentageError,
                             MeanSquaredError, MeanSquaredLogarithmicError, Poisson,
                             SparseCategoricalCrossentropy, SquaredHinge)

METRIC_OBJECTS.update({name: cls for name, cls in LOSS_METRICS.items()
                       if name not in REGRESSION})
