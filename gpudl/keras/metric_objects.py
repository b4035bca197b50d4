"""Keras's stateful metric objects: ``update_state(y_true, y_pred, sample_weight=None)``,
``result()``, ``reset_state()``; calling one updates it and gives the result.

They accumulate on the host in float64 NumPy (metrics read the predictions to the host anyway:
gpudl's training loop reads each epoch's once). In ``compile(metrics=[...])`` a metric object
is reset at each epoch and updated with the epoch's predictions (sample weights included);
``result()`` then holds the last epoch's value, as in Keras.
"""

import numpy as np

from .. import backend, creation
from ..tensor import Tensor
from .backend import epsilon
from .engine import to_snake_case
from .serialization import Configurable


def host(value):
    """A float64 NumPy array of a Tensor, array or number."""
    if isinstance(value, Tensor):
        value = value.detach().numpy()
    return np.asarray(value, np.float64)


def _divide(a, b):
    """``a / b``, 0 where ``b`` is 0 (Keras's divide_no_nan)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def _weights(sample_weight, n):
    return np.ones(n) if sample_weight is None else \
        np.broadcast_to(host(sample_weight).reshape(-1), (n,)).astype(np.float64)


def _aligned(y_true, y_pred):
    """Keras's squeeze-or-expand: labels (N,) beside predictions (N, 1) take their shape."""
    if y_true.ndim == y_pred.ndim - 1 and y_pred.shape[-1] == 1:
        y_true = y_true.reshape(y_pred.shape)
    elif y_pred.ndim == y_true.ndim - 1 and y_true.shape[-1] == 1:
        y_pred = y_pred.reshape(y_true.shape)
    return y_true, y_pred


class Metric(Configurable):
    """Base class: a subclass defines ``reset_state``, ``update_state`` and ``result``."""

    def __init__(self, name=None, dtype=None):
        self.name = name or to_snake_case(type(self).__name__)
        self.dtype = dtype
        self.reset_state()

    @property
    def __name__(self):                 # gpudl.train logs a metric under its __name__
        return self.name

    def reset_state(self):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        self.update_state(*args, **kwargs)
        return self.result()

    # -- compile(metrics=[...]): the epoch's arrays, packed per sample with their weights
    def prepare(self, output, target):
        from .metrics import WeightedTarget
        weight = target[1] if isinstance(target, WeightedTarget) else None
        target = target[0] if isinstance(target, WeightedTarget) else target
        xp = backend.get_array_module(output)
        n = output.shape[0]
        weight = xp.ones((n, 1), output.dtype) if weight is None else \
            weight.reshape(n, -1)[:, :1].astype(output.dtype)
        self._epoch_shapes = output.shape[1:], target.shape[1:]
        packed = xp.concatenate([target.reshape(n, -1).astype(output.dtype), weight], axis=1)
        return output.reshape(n, -1), packed

    def epoch_value(self, packed_target, output):
        """The metric over one epoch's packed arrays (what gpudl.train calls)."""
        output_shape, target_shape = self._epoch_shapes
        n = output.shape[0]
        self.reset_state()
        self.update_state(packed_target[:, :-1].reshape((n,) + target_shape),
                          output.reshape((n,) + output_shape), sample_weight=packed_target[:, -1])
        value = host(self.result())
        if value.ndim:
            raise ValueError(f"compile: the metric {self.name!r} gives {value.size} values; "
                             "fit logs one number per metric (choose an average)")
        return float(value)

    def _tensor(self, value):
        return creation.tensor(np.asarray(value, np.float32))


class EpochMetric:
    """A Metric as gpudl.train's metric callables: ``prepare`` per batch, the value per epoch."""

    def __init__(self, metric, weighted=True):
        self.metric, self.__name__ = metric, metric.name
        self.prepare = metric.prepare if weighted else self._unweighted

    def _unweighted(self, output, target):
        from .metrics import unweighted
        return self.metric.prepare(output, unweighted(target))

    def __call__(self, y_true, y_pred):
        return self.metric.epoch_value(y_true, y_pred)


# -- reductions -----------------------------------------------------------------------------------

class Sum(Metric):
    """The (weighted) sum of the values given."""

    def reset_state(self):
        self.total = 0.0

    def update_state(self, values, sample_weight=None):
        values = host(values)
        weight = 1.0 if sample_weight is None else np.broadcast_to(
            _expand_to(host(sample_weight), values.ndim), values.shape)
        self.total += float((values * weight).sum())

    def result(self):
        return self._tensor(self.total)


def _expand_to(weight, ndim):
    return weight.reshape(weight.shape + (1,) * (ndim - weight.ndim))


class Mean(Metric):
    """The (weighted) mean of the values given."""

    def reset_state(self):
        self.total, self.count = 0.0, 0.0

    def update_state(self, values, sample_weight=None):
        values = host(values)
        weight = np.ones(values.shape) if sample_weight is None else np.broadcast_to(
            _expand_to(host(sample_weight), values.ndim), values.shape)
        self.total += float((values * weight).sum())
        self.count += float(weight.sum())

    def result(self):
        return self._tensor(_divide(self.total, self.count))


class MeanMetricWrapper(Mean):
    """The mean of ``fn(y_true, y_pred, **kwargs)`` (one value per sample), weighted."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        self.fn, self.fn_kwargs = fn, kwargs
        super().__init__(name=name or getattr(fn, "__name__", None), dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _aligned(host(y_true), host(y_pred))
        values = self.fn(creation.tensor(y_true), creation.tensor(y_pred), **self.fn_kwargs)
        super().update_state(host(values), sample_weight)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1 where the one-hot label's class is among the ``k`` highest scores, per sample."""
    return sparse_top_k_categorical_accuracy(host(y_true).argmax(-1), y_pred, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1 where the integer label is among the ``k`` highest scores (ties as Keras: a label
    counts when fewer than ``k`` scores exceed its own), per sample."""
    scores, labels = host(y_pred), host(y_true).astype(np.int64)
    labels = labels.reshape(scores.shape[:-1])
    own = np.take_along_axis(scores, labels[..., None], -1)
    return creation.tensor(((scores > own).sum(-1) < k).astype(np.float32))


class TopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the one-hot label is among the ``k`` highest scores."""

    def __init__(self, k=5, name="top_k_categorical_accuracy", dtype=None):
        super().__init__(top_k_categorical_accuracy, name=name, dtype=dtype, k=k)


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the integer label is among the ``k`` highest scores."""

    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy", dtype=None):
        super().__init__(sparse_top_k_categorical_accuracy, name=name, dtype=dtype, k=k)


def _accuracy_values(y_true, y_pred):
    """1 where the prediction equals the label exactly, per value."""
    y_true, y_pred = _aligned(host(y_true), host(y_pred))
    return (y_true == y_pred).astype(np.float64)


def _binary_accuracy_values(y_true, y_pred, threshold=0.5):
    """1 where ``y_pred > threshold`` agrees with the 0/1 label, per value."""
    y_true, y_pred = _aligned(host(y_true), host(y_pred))
    return (y_true == (y_pred > threshold)).astype(np.float64)


def _sparse_categorical_accuracy_values(y_true, y_pred):
    """1 where the arg-max of the scores is the integer label (labels (N,) or (N, 1))."""
    labels, scores = host(y_true), host(y_pred)
    if labels.ndim == scores.ndim and labels.shape[-1] == 1:
        labels = labels[..., 0]
    return (scores.argmax(-1) == labels).astype(np.float64)


def _categorical_accuracy_values(y_true, y_pred):
    """1 where the arg-max of the scores is the arg-max of the one-hot label."""
    return _sparse_categorical_accuracy_values(host(y_true).argmax(-1), y_pred)


class Accuracy(MeanMetricWrapper):
    """How often predictions equal the labels exactly (weighted by ``sample_weight``)."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(_accuracy_values, name=name, dtype=dtype)


class BinaryAccuracy(MeanMetricWrapper):
    """How often ``y_pred > threshold`` matches the 0/1 labels."""

    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        super().__init__(_binary_accuracy_values, name=name, dtype=dtype, threshold=threshold)


class CategoricalAccuracy(MeanMetricWrapper):
    """How often the arg-max of the scores is the one-hot label's class."""

    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(_categorical_accuracy_values, name=name, dtype=dtype)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often the arg-max of the scores is the integer label."""

    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(_sparse_categorical_accuracy_values, name=name, dtype=dtype)


def cosine_similarity(y_true, y_pred, axis=-1):
    """``sum(l2_normalize(y_true) * l2_normalize(y_pred))`` over ``axis`` (1: same direction)."""
    from .losses import cosine_similarity as loss
    return -loss(y_true, y_pred, axis=axis)


class CosineSimilarity(MeanMetricWrapper):
    """The mean cosine similarity of ``y_true`` and ``y_pred`` along ``axis``."""

    def __init__(self, name="cosine_similarity", dtype=None, axis=-1):
        super().__init__(cosine_similarity, name=name, dtype=dtype, axis=axis)


class RootMeanSquaredError(Mean):
    """``sqrt`` of the (weighted) mean squared error over every value."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _aligned(host(y_true), host(y_pred))
        super().update_state((y_pred - y_true) ** 2, sample_weight)

    def result(self):
        return self._tensor(np.sqrt(_divide(self.total, self.count)))


# -- confusion counts -------------------------------------------------------------------------

_NEG_INF = -1e10      # Keras's score for values outside the top k


class _Confusion(Metric):
    """Weighted counts of ``y_pred > threshold`` against ``y_true`` over every value, for each
    of ``thresholds`` (default 0.5); ``class_id`` keeps one column of the last axis;
    ``top_k`` first sets every score outside the ``top_k`` highest of the last axis to
    Keras's -1e10 (the default threshold then being -1e10: the top k count as positive)."""

    def __init__(self, thresholds=None, name=None, dtype=None, class_id=None, top_k=None):
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"{type(self).__name__}: top_k must be a positive int or None, "
                             f"got {top_k!r}")
        self.several = isinstance(thresholds, (list, tuple))
        default = 0.5 if top_k is None else _NEG_INF
        self.thresholds = np.array(thresholds if self.several else
                                   [default if thresholds is None else thresholds], np.float64)
        self.class_id, self.top_k = class_id, top_k
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        self.tp, self.fp, self.tn, self.fn = (np.zeros(len(self.thresholds)) for _ in range(4))

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _aligned(host(y_true), host(y_pred))
        if self.top_k is not None:
            highest = np.argsort(-y_pred, axis=-1, kind="stable")[..., :self.top_k]
            kept = np.zeros(y_pred.shape, bool)
            np.put_along_axis(kept, highest, True, axis=-1)
            y_pred = np.where(kept, y_pred, _NEG_INF)
        if self.class_id is not None:
            y_true, y_pred = y_true[..., self.class_id], y_pred[..., self.class_id]
        weight = np.broadcast_to(_expand_to(host(1.0 if sample_weight is None else
                                                 sample_weight), y_true.ndim),
                                 y_true.shape).reshape(-1)
        truth, scores = y_true.reshape(-1) != 0, y_pred.reshape(-1)
        positive = scores[None, :] > self.thresholds[:, None]           # (thresholds, values)
        self.tp += (positive & truth) @ weight
        self.fp += (positive & ~truth) @ weight
        self.tn += (~positive & ~truth) @ weight
        self.fn += (~positive & truth) @ weight

    def _out(self, values):
        return self._tensor(values if self.several else values[0])


def _count_metric(name, attribute):
    def result(self):
        return self._out(getattr(self, attribute))
    return type(name, (_Confusion,), {"result": result, "__doc__":
                                      f"The weighted count of {name} (y_pred > threshold)."})


TruePositives = _count_metric("TruePositives", "tp")
FalsePositives = _count_metric("FalsePositives", "fp")
TrueNegatives = _count_metric("TrueNegatives", "tn")
FalseNegatives = _count_metric("FalseNegatives", "fn")


class Precision(_Confusion):
    """``TP / (TP + FP)`` of ``y_pred > threshold`` (0 when nothing is predicted positive)."""

    def result(self):
        return self._out(_divide(self.tp, self.tp + self.fp))


class Recall(_Confusion):
    """``TP / (TP + FN)`` of ``y_pred > threshold``."""

    def result(self):
        return self._out(_divide(self.tp, self.tp + self.fn))


class AUC(_Confusion):
    """The area under the ROC (or PR) curve, from confusion counts at ``num_thresholds``
    evenly spaced thresholds (Keras's Riemann sums: 'interpolation' (trapezoids; PR: Davis &
    Goadrich's interpolation), 'minoring', 'majoring'). One label column (``multi_label``
    False): every value is one prediction. With evenly spaced thresholds (the default)
    predictions are clipped to [0, 1] first, as Keras's bucketed counts do."""

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation",
                 name=None, dtype=None, thresholds=None, multi_label=False, num_labels=None,
                 label_weights=None, from_logits=False):
        if num_thresholds < 2:
            raise ValueError(f"AUC: num_thresholds must be > 1, got {num_thresholds}")
        if curve not in ("ROC", "PR") or summation_method not in ("interpolation", "minoring",
                                                                  "majoring"):
            raise ValueError(f"AUC: curve must be 'ROC' or 'PR' and summation_method "
                             f"'interpolation', 'minoring' or 'majoring'; got {curve!r}, "
                             f"{summation_method!r}")
        if multi_label or label_weights is not None:
            raise NotImplementedError("AUC: multi_label and label_weights are not supported")
        inner = list(thresholds) if thresholds is not None else \
            [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        self.curve, self.summation_method = curve, summation_method
        self.from_logits = from_logits
        # Keras's bucketed counts for evenly spaced thresholds clip predictions to [0, 1]
        edges = np.array([0.0] + inner + [1.0])
        self.clipped = len(edges) >= 3 and np.allclose(
            edges, np.arange(len(edges)) / (len(edges) - 1), atol=epsilon())
        super().__init__(thresholds=[0.0 - epsilon()] + inner + [1.0 + epsilon()], name=name,
                         dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = host(y_pred)
        if self.from_logits:
            y_pred = 1 / (1 + np.exp(-y_pred))
        if self.clipped:
            y_pred = np.clip(y_pred, 0.0, 1.0)
        super().update_state(y_true, y_pred, sample_weight)

    def result(self):
        tp, fp, tn, fn = self.tp, self.fp, self.tn, self.fn
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._tensor(self._interpolated_pr())
        recall = _divide(tp, tp + fn)
        x, y = (_divide(fp, fp + tn), recall) if self.curve == "ROC" else \
            (recall, _divide(tp, tp + fp))
        pick = {"interpolation": lambda a, b: (a + b) / 2, "minoring": np.minimum,
                "majoring": np.maximum}[self.summation_method]
        return self._tensor(((x[:-1] - x[1:]) * pick(y[:-1], y[1:])).sum())

    def _interpolated_pr(self):
        tp, fp, fn = self.tp, self.fp, self.fn
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        slope = _divide(dtp, np.maximum(p[:-1] - p[1:], 0))
        intercept = tp[1:] - slope * p[1:]
        ratio = np.where((p[:-1] > 0) & (p[1:] > 0), _divide(p[:-1], np.maximum(p[1:], 0)),
                         1.0)
        return _divide(slope * (dtp + intercept * np.log(ratio)),
                       np.maximum(tp[1:] + fn[1:], 0)).sum()


# -- per-class scores -----------------------------------------------------------------------------

class FBetaScore(Metric):
    """Keras's F-beta over classes (last axis): predictions are the top score of each row
    (``threshold`` None) or ``y_pred > threshold``; ``average`` None (one per class), 'micro',
    'macro' or 'weighted'."""

    def __init__(self, average=None, beta=1.0, threshold=None, name="fbeta_score", dtype=None):
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError(f"{type(self).__name__}: average must be None, 'micro', 'macro' or "
                             f"'weighted', got {average!r}")
        if beta <= 0:
            raise ValueError(f"{type(self).__name__}: beta must be > 0, got {beta!r}")
        self.average, self.beta, self.threshold = average, float(beta), threshold
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        self.tp = self.fp = self.fn = self.support = 0.0

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _aligned(host(y_true), host(y_pred))
        if y_pred.ndim != 2 or y_true.shape != y_pred.shape:
            raise ValueError(f"{self.name}: y_true and y_pred must be (samples, classes) of one "
                             f"shape, got {y_true.shape} and {y_pred.shape}")
        if self.threshold is None:
            predicted = (y_pred >= y_pred.max(-1, keepdims=True)) & (np.abs(y_pred) > 1e-9)
        else:
            predicted = y_pred > self.threshold
        predicted = predicted.astype(np.float64)
        weight = _weights(sample_weight, len(y_true))[:, None]
        axis = None if self.average == "micro" else 0
        self.tp = self.tp + (predicted * y_true * weight).sum(axis)
        self.fp = self.fp + (predicted * (1 - y_true) * weight).sum(axis)
        self.fn = self.fn + ((1 - predicted) * y_true * weight).sum(axis)
        self.support = self.support + (y_true * weight).sum(axis)

    def result(self):
        eps, b2 = epsilon(), self.beta ** 2
        precision = self.tp / (self.tp + self.fp + eps)
        recall = self.tp / (self.tp + self.fn + eps)
        score = precision * recall / (b2 * precision + recall + eps) * (1 + b2)
        if self.average == "weighted":
            score = (score * self.support / (np.sum(self.support) + eps)).sum()
        elif self.average is not None:
            score = np.mean(score)
        return self._tensor(score)


class F1Score(FBetaScore):
    """FBetaScore with beta 1: the harmonic mean of precision and recall."""

    def __init__(self, average=None, threshold=None, name="f1_score", dtype=None):
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name, dtype=dtype)


class IoU(Metric):
    """Intersection over union of the classes ``target_class_ids``, from a confusion matrix
    of ``num_classes``: labels are class ids (``sparse_y_true``) or scores whose arg-max (or,
    with ``threshold``, ``> threshold`` for one column) is the class; the mean over the target
    classes that occur."""

    def __init__(self, num_classes, target_class_ids, name=None, dtype=None,
                 ignore_class=None, sparse_y_true=True, sparse_y_pred=True, axis=-1):
        self.num_classes, self.target_class_ids = int(num_classes), list(target_class_ids)
        if any(not 0 <= c < self.num_classes for c in self.target_class_ids):
            raise ValueError(f"{type(self).__name__}: target_class_ids must be in [0, "
                             f"{self.num_classes}), got {self.target_class_ids}")
        self.ignore_class, self.axis = ignore_class, axis
        self.sparse_y_true, self.sparse_y_pred = sparse_y_true, sparse_y_pred
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        self.matrix = np.zeros((self.num_classes, self.num_classes))

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = host(y_true), host(y_pred)
        if not self.sparse_y_true:
            y_true = y_true.argmax(self.axis)
        if not self.sparse_y_pred:
            y_pred = y_pred.argmax(self.axis)
        truth = y_true.reshape(-1).astype(np.int64)
        predicted = y_pred.reshape(-1).astype(np.int64)
        weight = np.ones(truth.shape) if sample_weight is None else np.broadcast_to(
            _expand_to(host(sample_weight), y_true.ndim), y_true.shape).reshape(-1)
        if self.ignore_class is not None:
            keep = truth != self.ignore_class
            truth, predicted, weight = truth[keep], predicted[keep], weight[keep]
        np.add.at(self.matrix, (truth, predicted), weight)

    def result(self):
        true_positives = np.diag(self.matrix)
        denominator = self.matrix.sum(0) + self.matrix.sum(1) - true_positives
        ids = self.target_class_ids
        iou = _divide(true_positives[ids], denominator[ids])
        return self._tensor(_divide(iou.sum(), (denominator[ids] != 0).sum()))


class MeanIoU(IoU):
    """IoU averaged over every class of ``num_classes`` that occurs."""

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None,
                 sparse_y_true=True, sparse_y_pred=True, axis=-1):
        super().__init__(num_classes, list(range(num_classes)), name=name, dtype=dtype,
                         ignore_class=ignore_class, sparse_y_true=sparse_y_true,
                         sparse_y_pred=sparse_y_pred, axis=axis)


class R2Score(Metric):
    """The coefficient of determination per output column, ``1 - SS_res / SS_tot``
    (weighted), aggregated by ``class_aggregation`` ('uniform_average',
    'variance_weighted_average' or None); ``num_regressors`` gives the adjusted R2."""

    def __init__(self, class_aggregation="uniform_average", num_regressors=0, name="r2_score",
                 dtype=None):
        if class_aggregation not in ("uniform_average", "variance_weighted_average", None):
            raise ValueError(f"R2Score: unknown class_aggregation {class_aggregation!r}")
        self.class_aggregation, self.num_regressors = class_aggregation, int(num_regressors)
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        self.sum = self.squared_sum = self.residual = self.count = 0.0
        self.num_samples = 0

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _aligned(host(y_true), host(y_pred))
        y_true = y_true.reshape(len(y_true), -1)
        y_pred = y_pred.reshape(y_true.shape)
        weight = np.broadcast_to(_weights(sample_weight, len(y_true))[:, None], y_true.shape)
        self.sum = self.sum + (y_true * weight).sum(0)
        self.squared_sum = self.squared_sum + (y_true * y_true * weight).sum(0)
        self.residual = self.residual + ((y_true - y_pred) ** 2 * weight).sum(0)
        self.count = self.count + weight.sum(0)
        self.num_samples += y_true.size

    def result(self):
        total = self.squared_sum - self.sum * (self.sum / self.count)
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = 1 - self.residual / total
        scores = np.where(np.isinf(scores), 0.0, scores)
        if self.class_aggregation == "uniform_average":
            scores = np.mean(scores)
        elif self.class_aggregation == "variance_weighted_average":
            scores = np.sum(total * scores) / np.sum(total)
        n, p = self.num_samples, self.num_regressors
        if p and p < n - 1:
            scores = 1 - (1 - scores) * (n - 1) / (n - p - 1)
        return self._tensor(scores)


# -- the losses as metrics (Keras's regression, probabilistic and hinge metric classes) ----------

def _loss_metric(class_name, loss_name, default_name, **options):
    """A MeanMetricWrapper class over the Keras loss function ``loss_name`` (its per-sample
    values), with Keras's signature ``(name=default_name, dtype=None, **options)``."""
    def __init__(self, name=default_name, dtype=None, **kwargs):
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            raise TypeError(f"{class_name}: unexpected argument(s) {unknown}")
        chosen = {**options, **kwargs}
        if chosen.pop("ignore_class", None) is not None:
            raise NotImplementedError(f"{class_name}: ignore_class is not supported, got "
                                      f"ignore_class={kwargs['ignore_class']!r}")
        from . import losses
        MeanMetricWrapper.__init__(self, getattr(losses, loss_name), name=name, dtype=dtype,
                                   **chosen)
    doc = (f"The (weighted) mean of ``keras.losses.{loss_name}`` per sample (Keras's "
           f"``metrics.{class_name}``).")
    return type(class_name, (MeanMetricWrapper,), {"__init__": __init__, "__doc__": doc,
                                                   "__module__": __name__})


MeanSquaredError = _loss_metric("MeanSquaredError", "mean_squared_error", "mean_squared_error")
MeanAbsoluteError = _loss_metric("MeanAbsoluteError", "mean_absolute_error",
                                 "mean_absolute_error")
MeanAbsolutePercentageError = _loss_metric("MeanAbsolutePercentageError",
                                           "mean_absolute_percentage_error",
                                           "mean_absolute_percentage_error")
MeanSquaredLogarithmicError = _loss_metric("MeanSquaredLogarithmicError",
                                           "mean_squared_logarithmic_error",
                                           "mean_squared_logarithmic_error")
LogCoshError = _loss_metric("LogCoshError", "log_cosh", "logcosh")
KLDivergence = _loss_metric("KLDivergence", "kl_divergence", "kl_divergence")
Poisson = _loss_metric("Poisson", "poisson", "poisson")
Hinge = _loss_metric("Hinge", "hinge", "hinge")
SquaredHinge = _loss_metric("SquaredHinge", "squared_hinge", "squared_hinge")
CategoricalHinge = _loss_metric("CategoricalHinge", "categorical_hinge", "categorical_hinge")
BinaryCrossentropy = _loss_metric("BinaryCrossentropy", "binary_crossentropy",
                                  "binary_crossentropy", from_logits=False, label_smoothing=0)
CategoricalCrossentropy = _loss_metric("CategoricalCrossentropy", "categorical_crossentropy",
                                       "categorical_crossentropy", from_logits=False,
                                       label_smoothing=0, axis=-1)
SparseCategoricalCrossentropy = _loss_metric("SparseCategoricalCrossentropy",
                                             "sparse_categorical_crossentropy",
                                             "sparse_categorical_crossentropy",
                                             from_logits=False, ignore_class=None, axis=-1)
LOSS_METRICS = {cls().name: cls for cls in (
    MeanSquaredError, MeanAbsoluteError, MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError, LogCoshError, KLDivergence, Poisson, Hinge, SquaredHinge,
    CategoricalHinge, BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy)}
