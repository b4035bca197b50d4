"""Keras's losses: functions ``loss(y_true, y_pred)`` giving one value per sample (reduced over
the last axis, as Keras's), and classes (``BinaryCrossentropy(from_logits=True)``, ...) giving
the mean over the batch (Keras's ``sum_over_batch_size``), optionally sample-weighted.

Probabilities are clipped to ``[eps, 1 - eps]`` (Keras's ``backend.epsilon()``, 1e-7); labels
shaped (N,) beside predictions (N, 1) are reshaped to the predictions' shape, never broadcast to
(N, N); classes are on the last axis, so sequences (N, T, C) work as in Keras.
"""

import math

import numpy as np

from ..creation import tensor
from ..nn import functional as F
from ..nn.module import Module
from ..tensor import Tensor
from .backend import epsilon
from .serialization import Configurable, get_registered_object



def _aligned(y_true, y_pred):
    """``y_true`` as a Tensor of ``y_pred``'s dtype, reshaped to ``y_pred``'s shape when the two
    differ only by a trailing axis of size 1 (Keras's squeeze-or-expand)."""
    if not isinstance(y_true, Tensor):
        y_true = tensor(y_true)
    shorter, longer = sorted((tuple(y_true.shape), tuple(y_pred.shape)), key=len)
    if longer == shorter + (1,):
        y_true = y_true.reshape(y_pred.shape)
    if tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(f"y_true of shape {tuple(y_true.shape)} does not match y_pred of shape "
                         f"{tuple(y_pred.shape)}")
    return y_true.astype(y_pred.dtype)


def _smoothed(y_true, label_smoothing, classes):
    return y_true * (1 - label_smoothing) + label_smoothing / classes if label_smoothing \
        else y_true


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """``-sum(y_true * log p, axis=-1)`` per sample; p = y_pred normalised to sum to 1 (or the
    softmax of logits)."""
    y_true = _smoothed(_aligned(y_true, y_pred), label_smoothing, y_pred.shape[axis])
    if from_logits:
        log_p = F.log_softmax(y_pred, dim=axis)
    else:
        log_p = (y_pred / y_pred.sum(dim=axis, keepdim=True)).clip(epsilon(), 1 - epsilon()).log()
    return -(y_true * log_p).sum(dim=axis)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1):
    """``categorical_crossentropy`` with class-index labels ((N,), (N, T), or with a trailing
    axis of size 1)."""
    labels = y_true if isinstance(y_true, Tensor) else tensor(y_true)
    if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
        labels = labels.reshape(labels.shape[:-1])
    return categorical_crossentropy(F.one_hot(labels.long(), y_pred.shape[-1]), y_pred,
                                    from_logits=from_logits, axis=axis)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """The mean over the last axis of ``-(y log p + (1 - y) log(1 - p))``."""
    y_true = _aligned(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        per_element = F.binary_cross_entropy_with_logits(y_pred, y_true, reduction="none")
    else:
        per_element = _binary_crossentropy_of_probabilities(y_true, y_pred)
    return per_element.mean(dim=axis)


def _binary_crossentropy_of_probabilities(y_true, p):
    p = p.clip(epsilon(), 1 - epsilon())
    return -(y_true * p.log() + (1 - y_true) * (1 - p).log())


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25,
                              gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1):
    """Binary crossentropy times ``(1 - p_t) ** gamma`` (p_t: the probability given to the
    true label), and by ``alpha`` / ``1 - alpha`` per label with ``apply_class_balancing``;
    the mean over ``axis``."""
    y_true = _aligned(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1 - label_smoothing) + 0.5 * label_smoothing
    p = y_pred.sigmoid() if from_logits else y_pred
    p_true = y_true * p + (1 - y_true) * (1 - p)
    focal = (1 - p_true) ** gamma * _binary_crossentropy_of_probabilities(y_true, p)
    if apply_class_balancing:
        focal = (y_true * alpha + (1 - y_true) * (1 - alpha)) * focal
    return focal.mean(dim=axis)


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False,
                                   label_smoothing=0.0, axis=-1):
    """``sum(alpha * (1 - p) ** gamma * -y_true * log p)`` over ``axis``; p = y_pred normalised
    to sum to 1 (or the softmax of logits), clipped to [eps, 1 - eps]."""
    y_true = _smoothed(_aligned(y_true, y_pred), label_smoothing, y_pred.shape[axis])
    p = F.softmax(y_pred, dim=axis) if from_logits else y_pred
    p = (p / p.sum(dim=axis, keepdim=True)).clip(epsilon(), 1 - epsilon())
    return (alpha * (1 - p) ** gamma * -y_true * p.log()).sum(dim=axis)


def mean_squared_error(y_true, y_pred):
    return ((y_pred - _aligned(y_true, y_pred)) ** 2).mean(dim=-1)


def mean_absolute_error(y_true, y_pred):
    return (y_pred - _aligned(y_true, y_pred)).abs().mean(dim=-1)


def huber(y_true, y_pred, delta=1.0):
    return F.huber_loss(y_pred, _aligned(y_true, y_pred), reduction="none",
                        delta=delta).mean(dim=-1)


def kl_divergence(y_true, y_pred):
    y_true = _aligned(y_true, y_pred).clip(epsilon(), 1)
    return (y_true * (y_true / y_pred.clip(epsilon(), 1)).log()).sum(dim=-1)


def _hinge_labels(y_true, y_pred):
    """Keras's rule: labels that are all 0 or 1 become -1 or 1 (one host read)."""
    y_true = _aligned(y_true, y_pred)
    binary = bool(((y_true == 0).logical_or(y_true == 1)).all().item())
    return 2 * y_true - 1 if binary else y_true


def hinge(y_true, y_pred):
    """``mean(max(1 - y_true * y_pred, 0))`` over the last axis; labels -1/1 (0/1 converted)."""
    return (1 - _hinge_labels(y_true, y_pred) * y_pred).clip(0, None).mean(dim=-1)


def squared_hinge(y_true, y_pred):
    """``mean(max(1 - y_true * y_pred, 0) ** 2)`` over the last axis (0/1 labels converted)."""
    return ((1 - _hinge_labels(y_true, y_pred) * y_pred).clip(0, None) ** 2).mean(dim=-1)


def categorical_hinge(y_true, y_pred):
    """``max(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0)`` per sample."""
    y_true = _aligned(y_true, y_pred)
    positive = (y_true * y_pred).sum(dim=-1)
    negative = ((1 - y_true) * y_pred).amax(dim=-1)
    return (negative - positive + 1).clip(0, None)


def log_cosh(y_true, y_pred):
    """``mean(log(cosh(y_pred - y_true)))`` over the last axis, computed stably."""
    x = y_pred - _aligned(y_true, y_pred)
    return (x + F.softplus(-2 * x) - math.log(2.0)).mean(dim=-1)


def poisson(y_true, y_pred):
    """``mean(y_pred - y_true * log(y_pred + eps))`` over the last axis."""
    return (y_pred - _aligned(y_true, y_pred) * (y_pred + epsilon()).log()).mean(dim=-1)


def _l2_normalized(x, axis):
    return x / (x * x).sum(dim=axis, keepdim=True).clip(1e-12, None).sqrt()


def cosine_similarity(y_true, y_pred, axis=-1):
    """``-sum(l2_normalize(y_true) * l2_normalize(y_pred))`` over ``axis`` (-1 is most alike)."""
    y_true = _aligned(y_true, y_pred)
    return -(_l2_normalized(y_true, axis) * _l2_normalized(y_pred, axis)).sum(dim=axis)


def mean_absolute_percentage_error(y_true, y_pred):
    """``100 * mean(|y_true - y_pred| / max(|y_true|, eps))`` over the last axis."""
    y_true = _aligned(y_true, y_pred)
    return 100 * ((y_true - y_pred) / y_true.abs().clip(epsilon(), None)).abs().mean(dim=-1)


def mean_squared_logarithmic_error(y_true, y_pred):
    """``mean((log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1)) ** 2)`` over the last
    axis."""
    y_true = _aligned(y_true, y_pred)
    difference = (y_pred.clip(epsilon(), None) + 1).log() - (y_true.clip(epsilon(), None) +
                                                              1).log()
    return (difference ** 2).mean(dim=-1)


def _sum(x, axis):
    return x.sum() if axis is None else x.sum(dim=tuple(axis) if isinstance(axis, (list, tuple))
                                              else axis)


def dice(y_true, y_pred, axis=None):
    """``1 - 2 * sum(y_true * y_pred) / (sum(y_true) + sum(y_pred) + eps)`` over ``axis``
    (None: everything, one value)."""
    y_true = _aligned(y_true, y_pred)
    overlap = _sum(y_true * y_pred, axis)
    return 1 - 2 * overlap / (_sum(y_true, axis) + _sum(y_pred, axis) + epsilon())


def tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None):
    """Keras's Tversky loss: ``1 - TP / (TP + alpha * sum((1 - y_pred) * y_true) + beta *
    sum(y_pred * (1 - y_true)) + eps)`` over ``axis`` (Keras's terms, as it writes them)."""
    y_true = _aligned(y_true, y_pred)
    overlap = _sum(y_true * y_pred, axis)
    missed = _sum((1 - y_pred) * y_true, axis)
    extra = _sum(y_pred * (1 - y_true), axis)
    return 1 - overlap / (overlap + alpha * missed + beta * extra + epsilon())


mse, mae, kld = mean_squared_error, mean_absolute_error, kl_divergence
MSE, MAE, KLD = mse, mae, kld
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error
logcosh = log_cosh


class Loss(Configurable):
    """A loss object: ``loss(y_true, y_pred, sample_weight=None)`` -> the mean over the batch of
    the per-sample losses (weighted by ``sample_weight`` when given)."""

    fn = None

    def __init__(self, name=None, reduction="sum_over_batch_size", **options):
        if reduction not in ("sum_over_batch_size", "sum", "none", "auto", None):
            raise ValueError(f"{type(self).__name__}: unknown reduction {reduction!r}")
        self.name, self.reduction, self.options = name, reduction, options

    def call(self, y_true, y_pred):
        return type(self).fn(y_true, y_pred, **self.options)

    def __call__(self, y_true, y_pred, sample_weight=None, mask=None):
        """``mask`` (the output's mask, e.g. padded steps of a sequence): masked entries do not
        count, and the mean is over the unmasked ones (Keras's rule). NumPy arrays are taken
        as Keras does (float arrays as float32)."""
        y_true, y_pred = _from_numpy(y_true), _from_numpy(y_pred)
        values = self.call(y_true, y_pred)
        if mask is not None and tuple(mask.shape) == tuple(values.shape):
            keep = mask.astype(values.dtype)
            values = values * keep * (keep.numel() / keep.sum().clip(1e-7, None))
        if sample_weight is not None and values.ndim == 0:
            raise ValueError(f"{self.name or type(self).__name__}: the loss gives one value per "
                             "batch; sample and class weights need per-sample losses (use a "
                             "Keras loss name or object)")
        if sample_weight is not None:
            weight = sample_weight if isinstance(sample_weight, Tensor) else tensor(
                sample_weight)
            values = values * weight.astype(values.dtype).reshape(
                tuple(weight.shape) + (1,) * (values.ndim - weight.ndim))
        if self.reduction in ("none", None):
            return values
        return values.sum() if self.reduction == "sum" else values.mean()


def _from_numpy(value):
    if isinstance(value, np.ndarray):
        return tensor(value.astype(np.float32) if value.dtype.kind == "f" else value)
    return value


def _loss_class(name, fn, doc):
    return type(name, (Loss,), {"fn": staticmethod(fn), "__doc__": doc})


class BinaryCrossentropy(Loss):
    fn = staticmethod(binary_crossentropy)

    def __init__(self, from_logits=False, label_smoothing=0.0, **kwargs):
        super().__init__(from_logits=from_logits, label_smoothing=label_smoothing, **kwargs)


class CategoricalCrossentropy(Loss):
    fn = staticmethod(categorical_crossentropy)

    def __init__(self, from_logits=False, label_smoothing=0.0, **kwargs):
        super().__init__(from_logits=from_logits, label_smoothing=label_smoothing, **kwargs)


class SparseCategoricalCrossentropy(Loss):
    fn = staticmethod(sparse_categorical_crossentropy)

    def __init__(self, from_logits=False, **kwargs):
        super().__init__(from_logits=from_logits, **kwargs)


class Huber(Loss):
    fn = staticmethod(huber)

    def __init__(self, delta=1.0, **kwargs):
        super().__init__(delta=delta, **kwargs)


class BinaryFocalCrossentropy(Loss):
    """Keras's binary focal crossentropy (see ``binary_focal_crossentropy``)."""

    fn = staticmethod(binary_focal_crossentropy)

    def __init__(self, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False,
                 label_smoothing=0.0, axis=-1, **kwargs):
        super().__init__(apply_class_balancing=apply_class_balancing, alpha=alpha, gamma=gamma,
                         from_logits=from_logits, label_smoothing=label_smoothing, axis=axis,
                         **kwargs)


class CategoricalFocalCrossentropy(Loss):
    """Keras's categorical focal crossentropy (see ``categorical_focal_crossentropy``)."""

    fn = staticmethod(categorical_focal_crossentropy)

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1,
                 **kwargs):
        super().__init__(alpha=alpha, gamma=gamma, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis, **kwargs)


class CosineSimilarity(Loss):
    """Keras's cosine-similarity loss: -1 when the vectors point the same way."""

    fn = staticmethod(cosine_similarity)

    def __init__(self, axis=-1, **kwargs):
        super().__init__(axis=axis, **kwargs)


class Dice(Loss):
    """Keras's Dice loss; ``axis=None`` (the default) gives one value for the whole batch."""

    fn = staticmethod(dice)

    def __init__(self, reduction="sum_over_batch_size", name="dice", axis=None, **kwargs):
        super().__init__(reduction=reduction, name=name, axis=axis, **kwargs)


class Tversky(Loss):
    """Keras's Tversky loss; ``axis=None`` (the default) gives one value for the whole batch."""

    fn = staticmethod(tversky)

    def __init__(self, alpha=0.5, beta=0.5, reduction="sum_over_batch_size", name="tversky",
                 axis=None, **kwargs):
        super().__init__(alpha=alpha, beta=beta, reduction=reduction, name=name, axis=axis,
                         **kwargs)


MeanSquaredError = _loss_class("MeanSquaredError", mean_squared_error, "Keras's MSE loss.")
Hinge = _loss_class("Hinge", hinge, "Keras's hinge loss (0/1 labels become -1/1).")
SquaredHinge = _loss_class("SquaredHinge", squared_hinge, "Keras's squared hinge loss.")
CategoricalHinge = _loss_class("CategoricalHinge", categorical_hinge,
                               "Keras's categorical hinge loss.")
LogCosh = _loss_class("LogCosh", log_cosh, "Keras's log-cosh loss.")
Poisson = _loss_class("Poisson", poisson, "Keras's Poisson loss.")
MeanAbsolutePercentageError = _loss_class("MeanAbsolutePercentageError",
                                          mean_absolute_percentage_error, "Keras's MAPE loss.")
MeanSquaredLogarithmicError = _loss_class("MeanSquaredLogarithmicError",
                                          mean_squared_logarithmic_error, "Keras's MSLE loss.")
MeanAbsoluteError = _loss_class("MeanAbsoluteError", mean_absolute_error, "Keras's MAE loss.")
KLDivergence = _loss_class("KLDivergence", kl_divergence, "Keras's KL divergence loss.")

ALL = {"categorical_crossentropy": CategoricalCrossentropy,
       "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
       "binary_crossentropy": BinaryCrossentropy,
       "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
       "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
       "huber": Huber, "huber_loss": Huber, "kld": KLDivergence, "kl_divergence": KLDivergence,
       # branch keras: the losses Keras 3 adds
       "hinge": Hinge, "squared_hinge": SquaredHinge, "categorical_hinge": CategoricalHinge,
       "log_cosh": LogCosh, "logcosh": LogCosh, "poisson": Poisson,
       "cosine_similarity": CosineSimilarity, "mape": MeanAbsolutePercentageError,
       "mean_absolute_percentage_error": MeanAbsolutePercentageError,
       "msle": MeanSquaredLogarithmicError,
       "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
       "binary_focal_crossentropy": BinaryFocalCrossentropy,
       "categorical_focal_crossentropy": CategoricalFocalCrossentropy, "dice": Dice,
       "tversky": Tversky}


def get(identifier):
    """A loss object from a Keras name, a Loss object, a function ``f(y_true, y_pred)``
    (per-sample values, averaged as Keras does), or a gpudl loss Module such as
    ``nn.CrossEntropyLoss()`` (called as ``loss(output, target)``)."""
    if isinstance(identifier, str) and identifier not in ALL:
        identifier = get_registered_object(identifier) or identifier
    if isinstance(identifier, str):
        if identifier not in ALL:
            raise ValueError(f"unknown loss {identifier!r}; expected one of {sorted(ALL)} or a "
                             "callable loss(y_true, y_pred)")
        return ALL[identifier]()
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, Module):           # a gpudl loss: loss(output, target)
        wrapped = Loss(name=type(identifier).__name__)
        wrapped.call = lambda y_true, y_pred: identifier(y_pred, y_true)
        return wrapped
    if callable(identifier):
        wrapped = Loss(name=getattr(identifier, "__name__", None))
        wrapped.call = identifier
        return wrapped
    raise TypeError(f"a loss must be a name, a Loss or a callable, got "
                    f"{type(identifier).__name__}")
