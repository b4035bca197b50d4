"""Keras's callbacks: EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, LearningRateScheduler,
CSVLogger, LambdaCallback, TerminateOnNaN, History
(gpudl.train's, taking Keras's arguments), and ``Callback`` for user callbacks written with
Keras's hooks (``on_epoch_end(self, epoch, logs=None)``, ``self.model``,
``self.model.stop_training = True``)."""

import csv
import numbers
import os
import string
import warnings

import numpy as np

from .. import callbacks as C
from ..train import History  # noqa: F401 (Keras's name)
from ..callbacks import TerminateOnNaN  # noqa: F401 (Keras's name)
from .optimizers import check_settable


class EarlyStopping(C.EarlyStopping):
    """Keras 3's EarlyStopping: epochs before ``start_from_epoch`` are not watched; each
    watched epoch counts one wait, reset by an improvement on the best (by more than
    ``min_delta``) that also beats ``baseline`` (when given); a watched epoch without
    improvement stops training once the wait reaches ``patience`` (never at epoch 0).
    ``restore_best_weights`` loads the best watched epoch's weights back when training ends
    (stopped or not). ``stopped_epoch`` and ``best_epoch`` are 0 until set, as in Keras."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        if isinstance(start_from_epoch, bool) or not isinstance(
                start_from_epoch, numbers.Integral) or start_from_epoch < 0:
            raise ValueError(f"EarlyStopping: start_from_epoch must be an int >= 0, got "
                             f"{start_from_epoch!r}")
        if baseline is not None and (isinstance(baseline, bool) or
                                     not isinstance(baseline, numbers.Real)):
            raise ValueError(f"EarlyStopping: baseline must be a number or None, got "
                             f"{baseline!r}")
        super().__init__(monitor=monitor, patience=patience, min_delta=abs(min_delta), mode=mode,
                         restore_best_weights=restore_best_weights)
        self.baseline, self.start_from_epoch = baseline, int(start_from_epoch)

    def on_train_begin(self, model):
        super().on_train_begin(model)
        self.best_epoch = self.stopped_epoch = 0

    def on_epoch_end(self, epoch, logs, model):
        current = _monitored(self.tracker, logs, "EarlyStopping")
        if current is None or epoch < self.start_from_epoch:
            return False
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = C._snapshot(model), epoch
        self.wait += 1
        if self.tracker.improved(current):
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = C._snapshot(model)
            if self.baseline is None or _beats(self.tracker, current, self.baseline):
                self.wait = 0
            return False
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            return True
        return False


def _monitored(tracker, logs, owner):
    """The monitored value of this epoch's logs, or None with Keras's warning when the epoch
    did not log it (fit's ``validation_freq`` skipped the validation)."""
    value = logs.get(tracker.monitor)
    if value is None:
        warnings.warn(f"{owner}: {tracker.monitor!r} is not in this epoch's logs "
                      f"{sorted(logs)} (fit's validation_freq); the epoch is skipped",
                      UserWarning, stacklevel=3)
    return value


def _beats(tracker, value, reference):
    """Whether ``value`` improves on ``reference`` by more than the tracker's min_delta."""
    if tracker.mode == "min":
        return value < reference - tracker.min_delta
    return value > reference + tracker.min_delta


class ModelCheckpoint(C.ModelCheckpoint):
    """Keras's ModelCheckpoint: with ``save_weights_only=False`` and a ``.keras`` path, the
    whole model (``model.save``, for ``keras.models.load_model``); else the weights
    (``model.save_weights``: safetensors, weights in Keras's order, for ``load_weights``).
    ``initial_value_threshold``: a first best that ``monitor`` must beat to be saved.
    ``save_freq``: 'epoch', or an int N: every N training batches (counted across epochs),
    the path formatted with ``epoch``, ``batch`` (1-based) and the batch logs, which hold the
    epoch's running ``loss`` only (Keras's also hold the metrics); a ``monitor`` they lack
    saves with a warning, as Keras does."""

    def __new__(cls, *args, **kwargs):
        save_freq = kwargs.get("save_freq", args[6] if len(args) > 6 else "epoch")
        if cls is ModelCheckpoint and save_freq != "epoch":
            cls = _BatchModelCheckpoint
        return super().__new__(cls)

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch",
                 initial_value_threshold=None):
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(
                save_freq, numbers.Integral) or save_freq < 1):
            raise ValueError(f"ModelCheckpoint: save_freq must be 'epoch' or a positive int, "
                             f"got {save_freq!r}")
        super().__init__(filepath, monitor=monitor, save_best_only=save_best_only, mode=mode)
        self.save_weights_only, self.save_freq = save_weights_only, save_freq
        self.initial_value_threshold = initial_value_threshold

    def on_train_begin(self, model):
        super().on_train_begin(model)
        if self.initial_value_threshold is not None:
            self.tracker.best = self.initial_value_threshold

    def on_epoch_end(self, epoch, logs, model):
        return self.save(epoch, logs, model)

    def save(self, epoch, logs, model):
        """Save as gpudl.callbacks.ModelCheckpoint does, from ``logs``; a monitored value
        they lack saves anyway, with Keras's warning (fit's validation_freq, batch logs)."""
        if not self.save_best_only or self.tracker.monitor in logs:
            return super().on_epoch_end(epoch, logs, model)
        _monitored(self.tracker, logs, "ModelCheckpoint")
        self.save_best_only = False
        try:
            return super().on_epoch_end(epoch, logs, model)
        finally:
            self.save_best_only = True

    def write(self, model, state, path):
        if not self.save_weights_only and path.endswith(".keras") and hasattr(model, "save"):
            model.save(path)
        elif hasattr(model, "save_weights"):           # a Keras model
            model.save_weights(path)
        else:
            super().write(model, state, path)


class _BatchModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint(save_freq=N): saves from the batch hooks (the loss read every batch)."""

    def check_logs(self, keys):
        for _, field, _, _ in string.Formatter().parse(self.path):
            name = field.split(".")[0].split("[")[0] if field else None
            if name:
                C._check_logged("ModelCheckpoint", "path field", name,
                                ["epoch", "batch", "loss"])

    def on_train_begin(self, model):
        super().on_train_begin(model)
        self.since_saved = 0

    def on_epoch_begin(self, epoch, model):
        self.epoch, self.loss_sum, self.count = epoch, 0.0, 0

    def on_batch_end(self, batch, logs, model):
        self.loss_sum += logs["loss"] * logs["size"]
        self.count += logs["size"]
        self.since_saved += 1
        if self.since_saved >= self.save_freq:
            self.since_saved = 0
            self.save(self.epoch, {"loss": self.loss_sum / self.count, "batch": batch + 1},
                      model)
        return False

    def on_epoch_end(self, epoch, logs, model):
        return False


class ReduceLROnPlateau(C.Callback):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement
    of ``monitor`` (by more than ``min_delta``), then wait ``cooldown`` epochs; never below
    ``min_lr`` (Keras's rules). Reads the optimizer ``compile`` built."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        self.tracker = C._Monitor("ReduceLROnPlateau", monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown, self.min_lr = factor, patience, cooldown, min_lr
        self.on_train_begin(None)

    def check_logs(self, keys):
        self.tracker.check(keys)

    def on_train_begin(self, model):
        self.tracker.reset()
        self.wait = self.cooldown_counter = 0

    def on_epoch_end(self, epoch, logs, model):
        from .training import compiled
        optimizer = compiled(model, "ReduceLROnPlateau").optimizer
        logs["learning_rate"] = _current_rate(optimizer)
        current = _monitored(self.tracker, logs, "ReduceLROnPlateau")
        if current is None:
            return False
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.tracker.improved(current):
            self.wait = 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            # Keras: a rate already at min_lr is left (a schedule is refused only when it
            # would be changed), and the counters restart only after a reduction
            if self.wait >= self.patience and _current_rate(optimizer) > np.float32(self.min_lr):
                check_settable(optimizer, "ReduceLROnPlateau")
                for group in optimizer.param_groups:
                    if group["lr"] > self.min_lr:
                        group["lr"] = max(group["lr"] * self.factor, self.min_lr)
                self.cooldown_counter, self.wait = self.cooldown, 0
        return False


def _current_rate(optimizer):
    """Keras's ``optimizer.learning_rate`` after the epoch: the rate the next update would use
    (with a schedule, ``schedule(iterations)``, not the rate of the last update)."""
    schedule = getattr(optimizer, "learning_rate_schedule", None)
    if schedule is not None:
        return float(schedule(optimizer.iterations))
    return optimizer.param_groups[0]["lr"]


class LearningRateScheduler(C.Callback):
    """Keras's LearningRateScheduler: before each epoch the learning rate of every parameter
    group becomes ``schedule(epoch, lr)`` (or ``schedule(epoch)``, Keras's older form), ``epoch``
    counted from 0; each epoch's logs get the ``learning_rate`` it ran with."""

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable, got "
                            f"{type(schedule).__name__}")
        self.schedule = schedule

    def on_epoch_begin(self, epoch, model):
        from .training import compiled
        optimizer = compiled(model, "LearningRateScheduler").optimizer
        lr = optimizer.param_groups[0]["lr"]
        try:
            new_lr = self.schedule(epoch, lr)
        except TypeError:                        # schedule(epoch), as Keras also accepts
            new_lr = self.schedule(epoch)
        check_settable(optimizer, "LearningRateScheduler")
        if isinstance(new_lr, bool) or not isinstance(new_lr, numbers.Real):
            raise ValueError(f"LearningRateScheduler: schedule({epoch}) must return a float, got "
                             f"{new_lr!r}")
        for group in optimizer.param_groups:
            group["lr"] = float(new_lr)

    def on_epoch_end(self, epoch, logs, model):
        from .training import compiled
        logs["learning_rate"] = compiled(model, "LearningRateScheduler").optimizer \
            .param_groups[0]["lr"]
        return False


class CSVLogger(C.Callback):
    """Keras's CSVLogger: one row per epoch, ``epoch`` (from 0) then the logged values in sorted
    key order (``val_*`` columns reading NA when there is no validation, as Keras writes them);
    ``append=True`` adds to an existing file, writing the header only into an empty one."""

    def __init__(self, filename, separator=",", append=False):
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self.file = self.writer = None

    def on_train_begin(self, model):
        header = not (self.append and os.path.exists(self.filename) and
                      os.path.getsize(self.filename))
        self.file = open(self.filename, "a" if self.append else "w", newline="")
        self.header, self.writer = header, None

    def on_epoch_end(self, epoch, logs, model):
        if self.writer is None:
            keys = sorted(logs)
            if not any(k.startswith("val_") for k in keys):
                keys += [f"val_{k}" for k in keys]
            self.writer = csv.DictWriter(self.file, ["epoch"] + keys,
                                         delimiter=self.separator)
            if self.header:
                self.writer.writeheader()
        self.writer.writerow({"epoch": epoch, **{k: logs.get(k, "NA")
                                                 for k in self.writer.fieldnames[1:]}})
        self.file.flush()
        return False

    def on_train_end(self, model):
        self.file.close()
        self.writer = None


class Callback:
    """Base class for callbacks written against Keras's hooks; fit adapts them to gpudl.train's.

    ``self.model`` is the model; set ``self.model.stop_training = True`` to stop after the
    epoch. ``on_train_batch_end`` reads the loss every batch (only when overridden); its
    ``logs["loss"]`` is Keras's: the running mean over the epoch's batches so far.
    """

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass


class _KerasHooks(C.Callback):
    """A Keras-style Callback as gpudl.train sees it."""

    def __init__(self, callback):
        self.callback = callback

    def on_train_begin(self, model):
        self.callback.set_model(model)
        object.__setattr__(model, "stop_training", False)
        self.callback.on_train_begin({})

    def on_epoch_begin(self, epoch, model):
        self.callback.on_epoch_begin(epoch, {})

    def on_epoch_end(self, epoch, logs, model):
        self.callback.on_epoch_end(epoch, logs)
        return bool(getattr(model, "stop_training", False))

    def on_train_end(self, model):
        self.callback.on_train_end({})


class _KerasBatchHooks(_KerasHooks):
    """Keras's batch logs: ``loss`` is the epoch's running mean so far (weighted by the batch
    sizes, as Keras's loss tracker), not the batch's own loss."""

    def on_epoch_begin(self, epoch, model):
        self.loss_sum = self.count = 0
        super().on_epoch_begin(epoch, model)

    def on_batch_end(self, batch, logs, model):
        self.loss_sum += logs["loss"] * logs["size"]
        self.count += logs["size"]
        self.callback.on_train_batch_end(batch, {"loss": self.loss_sum / self.count})
        return bool(getattr(model, "stop_training", False))


def adapt(callbacks):
    """gpudl.train callbacks from a mix of gpudl and Keras-style ones."""
    adapted = []
    for cb in callbacks or ():
        if isinstance(cb, Callback):
            batch = type(cb).on_train_batch_end is not Callback.on_train_batch_end or \
                "on_train_batch_end" in vars(cb)
            cb = (_KerasBatchHooks if batch else _KerasHooks)(cb)
        adapted.append(cb)
    return adapted


class LambdaCallback(Callback):
    """Keras's LambdaCallback: hooks given as functions, with Keras's signatures
    (``on_epoch_end=lambda epoch, logs: ...``, ``on_train_begin=lambda logs: ...``)."""

    HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
             "on_train_batch_end")

    def __init__(self, **hooks):
        super().__init__()
        for name, fn in hooks.items():
            if name not in self.HOOKS:
                raise (NotImplementedError if name.startswith("on_") else TypeError)(
                    f"LambdaCallback: {name} is not supported; hooks: {list(self.HOOKS)}")
            if fn is not None:
                setattr(self, name, fn)


class TensorBoard(C.Callback):
    """Keras's TensorBoard callback is not there: gpudl writes no TensorBoard event files (it
    has no tensorboard dependency). Constructing one raises, naming what to use instead."""

    def __init__(self, log_dir="logs", **kwargs):
        raise NotImplementedError("TensorBoard: gpudl.keras writes no TensorBoard event files; "
                                  "log the epochs with keras.callbacks.CSVLogger(path) or read "
                                  "the History that fit returns (gpudl.train.plot_history "
                                  f"plots it); got log_dir={log_dir!r}")
