"""Callbacks for ``gpudl.train.fit``: EarlyStopping and ModelCheckpoint (Keras's semantics)."""

import math
import numbers
import os

from .autograd import no_grad

_HIGHER_IS_BETTER = ("acc", "precision", "recall", "f1")


class Callback:
    """Hooks ``fit`` calls; ``on_epoch_end`` returns True to stop training."""

    def on_train_begin(self, model):
        """Called before the first epoch."""

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

    def value(self, logs):
        if self.monitor not in logs:
            raise ValueError(f"{self.owner}: monitor {self.monitor!r} is not among the logged "
                             f"values {sorted(logs)}; give fit validation data, or monitor "
                             "another value")
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

    def on_train_begin(self, model):
        self.tracker.reset()
        self.saved = []

    def on_epoch_end(self, epoch, logs, model):
        from .io import save
        if self.save_best_only and not self.tracker.improved(self.tracker.value(logs)):
            return False
        path = self.path.format(epoch=epoch + 1, **logs)
        save(model.state_dict(), path)
        self.saved.append(path)
        return False
