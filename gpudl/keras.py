"""Keras-style ``compile`` / ``fit`` / ``evaluate`` / ``predict`` on top of ``gpudl.train``.

``nn.Sequential`` has these as methods (``model.compile(...)``, ``model.fit(x, y, ...)``); here
they are functions taking the model first, so any Module can use them.

Losses follow Keras's defaults (``from_logits=False``): the model ends in ``nn.Softmax`` (or
``nn.Sigmoid`` for binary) and the loss takes probabilities, clipped to ``[1e-7, 1 - 1e-7]``:

- ``categorical_crossentropy``: one-hot (or probability) targets ``(N, C)``;
- ``sparse_categorical_crossentropy``: class-index targets ``(N,)``;
- ``binary_crossentropy``: 0/1 targets shaped like the output (or (N,) beside (N, 1));
- ``mse`` / ``mean_squared_error``, ``mae`` / ``mean_absolute_error``.

Classes are on the last axis, as in Keras ((N, C) or sequences (N, T, C)), and ``accuracy``
follows Keras: a 0.5 threshold for a single output column, else the arg-max over classes.

For a model that outputs logits, pass a callable instead, e.g. ``loss=nn.CrossEntropyLoss()``.
"""

import numbers

import numpy as np

from . import backend, optim, train
from .autograd import no_grad
from .creation import tensor
from .data import DataLoader, TensorDataset
from .nn import functional as F
from .tensor import Tensor

EPSILON = 1e-7       # Keras's backend epsilon: probabilities are clipped away from 0 and 1


def _clipped(p):
    return p.clip(EPSILON, 1 - EPSILON)


def _aligned(y_pred, y_true):
    """``y_true`` as a Tensor of ``y_pred``'s dtype, reshaped to ``y_pred``'s shape when the two
    differ only by a trailing axis of size 1 (Keras's squeeze-or-expand: labels (N,) beside
    predictions (N, 1) must not broadcast to (N, N))."""
    if not isinstance(y_true, Tensor):
        y_true = tensor(y_true)
    shapes = sorted((tuple(y_true.shape), tuple(y_pred.shape)), key=len)
    if len(shapes[1]) == len(shapes[0]) + 1 and shapes[1] == shapes[0] + (1,):
        y_true = y_true.reshape(y_pred.shape)
    return y_true.astype(y_pred.dtype)


def categorical_crossentropy(y_pred, y_true):
    """Mean over all but the last axis of ``-sum(y_true * log(p), axis=-1)``, p = y_pred
    normalised to sum to 1 along the last axis (classes last, as in Keras: (N, C) or
    (N, T, C))."""
    y_true = _aligned(y_pred, y_true)
    p = _clipped(y_pred / y_pred.sum(dim=-1, keepdim=True))
    return -(y_true * p.log()).sum(dim=-1).mean()


def sparse_categorical_crossentropy(y_pred, y_true):
    """``categorical_crossentropy`` with class-index targets ((N,) or (N, T), or with a
    trailing axis of size 1)."""
    labels = y_true if isinstance(y_true, Tensor) else tensor(y_true)
    if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
        labels = labels.reshape(labels.shape[:-1])
    onehot = F.one_hot(labels.long(), y_pred.shape[-1])
    return categorical_crossentropy(y_pred, onehot)


def binary_crossentropy(y_pred, y_true):
    """Mean of ``-(y log p + (1 - y) log(1 - p))`` over all elements (labels shaped (N,)
    beside predictions (N, 1) are reshaped, as Keras does)."""
    y_true = _aligned(y_pred, y_true)
    p = _clipped(y_pred)
    return -(y_true * p.log() + (1 - y_true) * (1 - p).log()).mean()


def mean_squared_error(y_pred, y_true):
    """Mean of ``(y_pred - y_true) ** 2`` over all elements, labels aligned as Keras does."""
    return F.mse_loss(y_pred, _aligned(y_pred, y_true))


def mean_absolute_error(y_pred, y_true):
    """Mean of ``|y_pred - y_true|`` over all elements, labels aligned as Keras does."""
    return F.l1_loss(y_pred, _aligned(y_pred, y_true))


LOSSES = {
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "binary_crossentropy": binary_crossentropy,
    "mse": mean_squared_error, "mean_squared_error": mean_squared_error,
    "mae": mean_absolute_error, "mean_absolute_error": mean_absolute_error,
}


def _class_labels(output, target):
    """Device arrays (predicted, true) flat labels as Keras's accuracy compares them: a single
    score column (or 1-d scores) thresholded at 0.5; else the arg-max over the last axis of the
    scores, and of the targets when they are one-hot (shaped like the scores)."""
    if output.ndim == 1 or output.shape[-1] == 1:
        return (output > 0.5).astype(target.dtype).ravel(), target.ravel()
    if target.shape == output.shape:
        target = target.argmax(axis=-1)
    return output.argmax(axis=-1).ravel(), target.ravel()


def _equal_fraction(y_true, y_pred):
    return float(np.mean(y_true == y_pred))


def _keras_metric(name, prepare):
    metric = lambda y_true, y_pred: _equal_fraction(y_true, y_pred)  # noqa: E731
    metric.__name__, metric.prepare = name, prepare
    return metric


# Keras's accuracy decides per output: binary (one column), sparse (labels) or categorical
KERAS_METRICS = {name: _keras_metric(name, _class_labels)
                 for name in ("accuracy", "binary_accuracy", "categorical_accuracy",
                              "sparse_categorical_accuracy")}
KERAS_METRICS["acc"] = KERAS_METRICS["accuracy"]


# Keras's default learning rates (and RMSprop's rho=0.9) when an optimizer is given by name
OPTIMIZERS = {
    "adam": lambda params: optim.Adam(params, lr=1e-3),
    "adamw": lambda params: optim.AdamW(params, lr=1e-3, weight_decay=4e-3),
    "sgd": lambda params: optim.SGD(params, lr=1e-2),
    "rmsprop": lambda params: optim.RMSprop(params, lr=1e-3, alpha=0.9, eps=1e-7),
    "adagrad": lambda params: optim.Adagrad(params, lr=1e-3, initial_accumulator_value=0.1,
                                            eps=1e-7),
}


class _Compiled:
    __slots__ = ("optimizer", "loss", "metrics")

    def __init__(self, optimizer, loss, metrics):
        self.optimizer, self.loss, self.metrics = optimizer, loss, metrics


def compile(model, optimizer="adam", loss="mse", metrics=()):
    """Attach an optimizer, a loss and metrics to ``model`` for ``fit``/``evaluate``.

    Args:
        optimizer: a name ('adam', 'adamw', 'sgd', 'rmsprop', 'adagrad'; Keras's default
            learning rates) or a gpudl.optim optimizer over the model's parameters.
        loss: a name (see the module docstring) or ``fn(y_pred, y_true)`` -> scalar Tensor.
        metrics: names ('accuracy', 'precision', 'recall', 'f1') or ``fn(y_true, y_pred)``.
    """
    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"compile: unknown optimizer {optimizer!r}; expected one of "
                             f"{sorted(OPTIMIZERS)} or a gpudl.optim optimizer")
        optimizer = OPTIMIZERS[optimizer.lower()](list(model.parameters()))
    elif not isinstance(optimizer, optim.Optimizer):
        raise TypeError(f"compile: optimizer must be a name or a gpudl.optim optimizer, got "
                        f"{type(optimizer).__name__}")
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"compile: unknown loss {loss!r}; expected one of {sorted(LOSSES)} "
                             "or a callable loss(y_pred, y_true)")
        loss = LOSSES[loss]
    elif not callable(loss):
        raise TypeError(f"compile: loss must be a name or a callable, got {type(loss).__name__}")
    metrics = [metrics] if isinstance(metrics, str) or callable(metrics) else list(metrics)
    metrics = [KERAS_METRICS.get(m, m) if isinstance(m, str) else m for m in metrics]
    train.resolve_metrics(metrics)                   # refuse unknown metrics now
    object.__setattr__(model, "_compiled", _Compiled(optimizer, loss, metrics))
    return model


def _compiled(model, where):
    config = getattr(model, "__dict__", {}).get("_compiled")
    if config is None:
        raise RuntimeError(f"{where}: the model is not compiled; call "
                           "model.compile(optimizer=..., loss=...) first")
    return config


def _as_tensor(values, name, where):
    if isinstance(values, Tensor):
        return values
    if isinstance(values, np.ndarray) or backend.is_device_array(values) \
            or isinstance(values, (list, tuple)):
        return tensor(values)
    raise TypeError(f"{where}: {name} must be a Tensor or an array, got {type(values).__name__}")


def _loader(x, y, batch_size, shuffle, where):
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")
    x = _as_tensor(x, "x", where)
    if y is None:
        return DataLoader(TensorDataset(x), batch_size=batch_size)
    return DataLoader(TensorDataset(x, _as_tensor(y, "y", where)), batch_size=batch_size,
                      shuffle=shuffle)


def _split(x, y, validation_split):
    """Keras's validation_split: the last fraction of the samples, taken before shuffling."""
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
    x, y = _as_tensor(x, "x", "fit"), _as_tensor(y, "y", "fit")
    n_val = int(len(x) * validation_split)
    if n_val == 0:
        raise ValueError(f"fit: validation_split={validation_split} of {len(x)} samples leaves "
                         "no validation samples")
    cut = len(x) - n_val
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def fit(model, x, y, batch_size=32, epochs=1, validation_data=None, validation_split=0.0,
        shuffle=True, callbacks=(), verbose=1):
    """Train a compiled model on arrays ``x``, ``y``; returns the History (Keras's ``fit``).

    ``validation_data=(x_val, y_val)``, or ``validation_split`` (the last fraction of x, y).
    """
    config = _compiled(model, "fit")
    if validation_data is None and validation_split:
        (x, y), validation_data = _split(x, y, validation_split)
    val_loader = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("fit: validation_data must be a pair (x_val, y_val)")
        val_loader = _loader(*validation_data, batch_size, False, "fit")
    return train.fit(model, config.loss, config.optimizer,
                     _loader(x, y, batch_size, shuffle, "fit"), epochs, val_loader=val_loader,
                     metrics=config.metrics, callbacks=callbacks, verbose=bool(verbose))


def evaluate(model, x, y, batch_size=32, verbose=1, return_dict=False):
    """The loss (and metrics) of a compiled model on ``x``, ``y``: a float when no metrics were
    compiled, else ``[loss, metric, ...]`` (or a dict with ``return_dict=True``). ``verbose``
    is accepted as Keras's is (nothing is printed)."""
    config = _compiled(model, "evaluate")
    logs = train.evaluate(model, config.loss, _loader(x, y, batch_size, False, "evaluate"),
                          config.metrics)
    if return_dict:
        return logs
    return logs["loss"] if len(logs) == 1 else list(logs.values())


def predict(model, x, batch_size=32, verbose=0):
    """The model's outputs for ``x`` in eval mode, batch by batch, as one NumPy array (read
    from the device once). The model's train/eval mode is restored, even on an exception."""
    was_training = getattr(model, "training", False)
    model.eval()
    outputs = []
    try:
        with no_grad():
            for (xb,) in _loader(x, None, batch_size, False, "predict"):
                outputs.append(model(xb).data)
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("predict: x has no samples")
    return backend.to_numpy(backend.get_array_module(outputs[0]).concatenate(outputs))
