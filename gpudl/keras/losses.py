"""Keras's losses: functions ``loss(y_true, y_pred)`` giving one value per sample (reduced over
the last axis, as Keras's), and classes (``BinaryCrossentropy(from_logits=True)``, ...) giving
the mean over the batch (Keras's ``sum_over_batch_size``), optionally sample-weighted.

Probabilities are clipped to ``[eps, 1 - eps]`` (Keras's ``backend.epsilon()``, 1e-7); labels
shaped (N,) beside predictions (N, 1) are reshaped to the predictions' shape, never broadcast to
(N, N); classes are on the last axis, so sequences (N, T, C) work as in Keras.
"""

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
        p = y_pred.clip(epsilon(), 1 - epsilon())
        per_element = -(y_true * p.log() + (1 - y_true) * (1 - p).log())
    return per_element.mean(dim=axis)


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


mse, mae, kld = mean_squared_error, mean_absolute_error, kl_divergence
MSE, MAE, KLD = mse, mae, kld


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
        count, and the mean is over the unmasked ones (Keras's rule)."""
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


MeanSquaredError = _loss_class("MeanSquaredError", mean_squared_error, "Keras's MSE loss.")
MeanAbsoluteError = _loss_class("MeanAbsoluteError", mean_absolute_error, "Keras's MAE loss.")
KLDivergence = _loss_class("KLDivergence", kl_divergence, "Keras's KL divergence loss.")

ALL = {"categorical_crossentropy": CategoricalCrossentropy,
       "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
       "binary_crossentropy": BinaryCrossentropy,
       "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
       "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
       "huber": Huber, "huber_loss": Huber, "kld": KLDivergence, "kl_divergence": KLDivergence}


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
