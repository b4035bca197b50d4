"""Keras-style ``compile`` / ``fit`` / ``evaluate`` / ``predict`` on top of ``gpudl.train``.

``nn.Sequential`` has these as methods (``model.compile(...)``, ``model.fit(x, y, ...)``); here
they are functions taking the model first, so any Module can use them.

Losses follow Keras's defaults (``from_logits=False``): the model ends in ``nn.Softmax`` (or
``nn.Sigmoid`` for binary) and the loss takes probabilities, clipped to ``[1e-7, 1 - 1e-7]``:

- ``categorical_crossentropy``: one-hot (or probability) targets ``(N, C)``;
- ``sparse_categorical_crossentropy``: class-index targets ``(N,)``;
- ``binary_crossentropy``: 0/1 targets shaped like the output;
- ``mse`` / ``mean_squared_error``, ``mae`` / ``mean_absolute_error``.

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


def categorical_crossentropy(y_pred, y_true):
    """Mean over the batch of ``-sum(y_true * log(p))``, p = y_pred normalised to sum to 1."""
    p = _clipped(y_pred / y_pred.sum(dim=1, keepdim=True))
    return -(y_true * p.log()).sum(dim=1).mean()


def sparse_categorical_crossentropy(y_pred, y_true):
    """``categorical_crossentropy`` with class-index targets."""
    p = _clipped(y_pred / y_pred.sum(dim=1, keepdim=True))
    return F.nll_loss(p.log(), y_true)


def binary_crossentropy(y_pred, y_true):
    """Mean of ``-(y log p + (1 - y) log(1 - p))`` over all elements."""
    p = _clipped(y_pred)
    return -(y_true * p.log() + (1 - y_true) * (1 - p).log()).mean()


LOSSES = {
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "binary_crossentropy": binary_crossentropy,
    "mse": F.mse_loss, "mean_squared_error": F.mse_loss,
    "mae": F.l1_loss, "mean_absolute_error": F.l1_loss,
}

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


def evaluate(model, x, y, batch_size=32, return_dict=False):
    """The loss (and metrics) of a compiled model on ``x``, ``y``: a float when no metrics were
    compiled, else ``[loss, metric, ...]`` (or a dict with ``return_dict=True``)."""
    config = _compiled(model, "evaluate")
    logs = train.evaluate(model, config.loss, _loader(x, y, batch_size, False, "evaluate"),
                          config.metrics)
    if return_dict:
        return logs
    return logs["loss"] if len(logs) == 1 else list(logs.values())


def predict(model, x, batch_size=32):
    """The model's outputs for ``x`` in eval mode, batch by batch, as one NumPy array (read
    from the device once)."""
    was_training = getattr(model, "training", False)
    model.eval()
    outputs = []
    with no_grad():
        for (xb,) in _loader(x, None, batch_size, False, "predict"):
            outputs.append(model(xb)._data)
    model.train(was_training)
    if not outputs:
        raise ValueError("predict: x has no samples")
    return backend.to_numpy(backend.get_array_module(outputs[0]).concatenate(outputs))
