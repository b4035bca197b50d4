"""Callbacks for ``gpudl.train.fit``: EarlyStopping, ModelCheckpoint, TerminateOnNaN (Keras's
semantics)."""

import math
import numbers
import os
import string
import warnings

from . import backend
from .autograd import no_grad
from .backend import get_array_module
from .dtypes import is_floating

_HIGHER_IS_BETTER = ("acc", "precision", "recall", "f1")


class Callback:
    """Hooks ``fit`` calls; ``on_epoch_end`` returns True to stop training."""

    def check_logs(self, keys):
        """Called before training with the names each epoch's logs will hold; raise ValueError
        when the callback needs one that is not there."""

    def on_train_begin(self, model):
        """Called before the first epoch."""

    def on_epoch_begin(self, epoch, model):
        """Called before each epoch (0-based ``epoch``)."""

    def on_batch_end(self, batch, logs, model):
        """Called after each training batch with {'loss': the batch's loss (float), 'size': its
        number of samples}; return True to stop.

        fit reads the loss from the device every batch only for callbacks that override this.
        """
        return False

    def on_epoch_end(self, epoch, logs, model):
        """Called after each epoch with its logs ({'loss': ..., 'val_loss': ..., ...})."""
        return False

    def on_train_end(self, model):
        """Called after the last epoch (also when stopped early)."""


class _Monitor:
    """Which logged value to watch and when it improved (Keras's mode and min_delta)."""

    def __init__(self, owner, monitor, mode, min_delta):
        if mode == "auto":
            mode = "max" if any(k in monitor for k in _HIGHER_IS_BETTER) else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
        if not isinstance(min_delta, numbers.Real) or min_delta < 0:
            raise ValueError(f"{owner}: min_delta must be a number >= 0, got {min_delta!r}")
        self.owner, self.monitor, self.mode, self.min_delta = owner, monitor, mode, min_delta
        self.reset()

    def reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf

    def check(self, keys):
        _check_logged(self.owner, "monitor", self.monitor, keys)

    def value(self, logs):
        _check_logged(self.owner, "monitor", self.monitor, logs)
        return logs[self.monitor]

    def improved(self, value):
        """Whether ``value`` beats the best so far by more than min_delta (records it if so)."""
        if self.mode == "min":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
        if better:
            self.best = value
        return better


def _check_logged(owner, what, name, keys):
    if name not in keys:
        raise ValueError(f"{owner}: {what} {name!r} is not among the logged values "
                         f"{sorted(keys)}; give fit validation data (or that metric), or "
                         f"name another value")


def _finite(array):
    return not (array.dtype.kind == "c" or is_floating(array.dtype)) or bool(backend.host_value(
        get_array_module(array).isfinite(array).all(), "callback finiteness check"))


def _snapshot(model):
    """A copy of the model's state dict (tensors copied on their device)."""
    with no_grad():
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    Args:
        monitor: a logged value ('val_loss', 'val_accuracy', 'loss', ...).
        patience: stop after this many epochs in a row without improvement (0 and 1: at the
            first one).
        min_delta: the smallest change that counts as an improvement.
        mode: 'min', 'max', or 'auto' (max for accuracy/precision/recall/f1, else min).
        restore_best_weights: when training ends (stopped or not), load the weights of the best
            epoch back into the model.

    After training, ``stopped_epoch`` is the epoch it stopped at (None if it ran to the end)
    and ``best_epoch`` the best one.
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) \
                or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        self.tracker = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.patience = int(patience)
        self.restore_best_weights = restore_best_weights
        self.on_train_begin(None)

    def check_logs(self, keys):
        self.tracker.check(keys)

    def on_train_begin(self, model):
        self.tracker.reset()
        self.wait, self.best_epoch, self.stopped_epoch, self.best_weights = 0, None, None, None

    def on_epoch_end(self, epoch, logs, model):
        if self.tracker.improved(self.tracker.value(logs)):
            self.wait, self.best_epoch = 0, epoch
            if self.restore_best_weights:
                self.best_weights = _snapshot(model)
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, model):
        if self.restore_best_weights and self.best_weights is not None:
            model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model's state dict with ``gd.save`` after each epoch, or only on improvement.

    Weights holding a NaN or an infinity are never saved (a warning says so), so an existing
    file is never overwritten by a diverged model. A ``monitor`` (with ``save_best_only``) or a
    name in ``path`` that fit will not log fails at fit's start.

    Args:
        path: the file; may name logged values and the (1-based) epoch, e.g.
            ``"ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``.
        monitor, mode: as EarlyStopping's; used with ``save_best_only``.
        save_best_only: save only when ``monitor`` improves.
    """

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto"):
        self.path = os.fspath(path)
        self.save_best_only = save_best_only
        self.tracker = _Monitor("ModelCheckpoint", monitor, mode, 0.0)
        self.saved = []

    def check_logs(self, keys):
        if self.save_best_only:
            self.tracker.check(keys)
        for _, field, _, _ in string.Formatter().parse(self.path):
            name = field.split(".")[0].split("[")[0] if field else None
            if name and name != "epoch":
                _check_logged("ModelCheckpoint", "path field", name, list(keys) + ["epoch"])

    def on_train_begin(self, model):
        self.tracker.reset()
        self.saved = []

    def on_epoch_end(self, epoch, logs, model):
        if self.save_best_only and not self.tracker.improved(self.tracker.value(logs)):
            return False
        path = self.path.format(epoch=epoch + 1, **logs)
        state = model.state_dict()
        bad = [k for k, v in state.items() if not _finite(v._data)]
        if bad:
            warnings.warn(f"ModelCheckpoint: not saving {path}: weights {bad[:3]} hold NaN or "
                          "infinite values", RuntimeWarning, stacklevel=2)
            return False
        self.write(model, state, path)
        self.saved.append(path)
        return False


    def write(self, model, state, path):
        """Write the model's ``state`` dict to ``path``."""
        from .io import save
        save(state, path)


class TerminateOnNaN(Callback):
    """Stop training at the first batch whose loss is NaN or infinite (Keras's callback).

    It reads the loss from the device after every batch. Without it, fit still stops (with a
    warning) after an epoch whose mean loss is not finite.
    """

    def on_batch_end(self, batch, logs, model):
        loss = logs["loss"]
        if math.isfinite(loss):
            return False
        warnings.warn(f"TerminateOnNaN: batch {batch}: invalid loss {loss}, terminating "
                      "training", RuntimeWarning, stacklevel=2)
        self.stopped_batch = batch
        return True
