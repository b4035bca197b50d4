"""A training loop for gpudl models: ``fit`` with a progress bar, validation and callbacks.

The running loss and predictions stay on the device during an epoch; the host reads them every
``LOG_EVERY`` batches (when the progress bar shows) and once at the epoch's end, so a GPU is
synchronised a few times per epoch rather than once per batch.
"""

import contextlib
import math
import numbers
import warnings

import numpy as np

from . import backend
from . import metrics as M
from .autograd import no_grad
from .callbacks import (Callback, EarlyStopping, ModelCheckpoint,  # noqa: F401 (re-exported)
                        TerminateOnNaN)
from .distributed.training import FitContext
from .tensor import Tensor

LOG_EVERY = 10        # batches between progress-bar updates (each one reads the device)

METRICS = {"accuracy": M.accuracy, "acc": M.accuracy, "precision": M.precision,
           "recall": M.recall, "f1": M.f1_score, "f1_score": M.f1_score}


class History(dict):
    """Per-epoch logs: ``history["loss"]``, ``history["val_accuracy"]``, ... (lists of floats).

    ``history.epoch`` lists the epochs run; ``history.history`` is the history itself, as in
    Keras (``model.fit(...).history["loss"]``).
    """

    def __init__(self):
        super().__init__()
        self.epoch = []

    @property
    def history(self):
        return self

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.setdefault(key, []).append(value)


def resolve_metrics(metrics):
    """[(name, fn(y_true, y_pred))] from metric names ('accuracy', 'f1', ...) or callables.

    Before the epoch's predictions reach ``fn`` they go through ``fn.prepare(output, target)``
    (device arrays -> the compact (predictions, targets) ``fn`` takes) when the callable has
    one, else through ``as_labels``.
    """
    if isinstance(metrics, str) or callable(metrics):
        metrics = [metrics]
    resolved = []
    for metric in metrics:
        if isinstance(metric, str):
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(METRICS)} "
                                 "or a callable f(y_true, y_pred) -> float")
            resolved.append(("accuracy" if metric == "acc" else metric, METRICS[metric]))
        elif callable(metric):
            resolved.append((getattr(metric, "__name__", type(metric).__name__), metric))
        else:
            raise TypeError(f"a metric must be a name or a callable, got {type(metric).__name__}")
    return resolved


def as_labels(output, target):
    """Device arrays (predictions, targets) in the form the metrics take.

    Scores with a class axis give their arg-max; one-hot (or probability) targets shaped like
    the scores give theirs; a single score column ``(N, 1)`` beside labels ``(N,)`` is squeezed
    to the labels' shape (the metric thresholds it); anything else (labels, binary scores)
    passes unchanged.
    """
    if output.ndim == target.ndim + 1:
        if output.shape[-1] == 1 and output.shape[:-1] == target.shape:
            return output.reshape(target.shape), target
        return output.argmax(axis=1), target
    if output.shape == target.shape and output.ndim >= 2 and output.shape[1] > 1 \
            and target.dtype.kind == "f":
        return output.argmax(axis=1), target.argmax(axis=1)
    return output, target


class _Running:
    """An epoch's loss sum and predictions, kept on the device until ``logs()`` reads them.

    Predictions are kept once per distinct ``prepare`` (see ``resolve_metrics``).
    """

    def __init__(self, metric_fns, run=None):
        self.metric_fns, self.run = metric_fns, run
        self.prepares = list(dict.fromkeys(_prepare_of(fn) for _, fn in metric_fns))
        self.loss_sum, self.count = 0.0, 0
        self.pending = {prepare: [] for prepare in self.prepares}
        self.host = {prepare: ([], []) for prepare in self.prepares}

    def add(self, loss, output, target):
        first = target
        while isinstance(first, (tuple, list)):           # several outputs, sample weights
            first = first[0]
        n = first.shape[0] if first.ndim else 1
        self.loss_sum = self.loss_sum + loss._data * n       # stays on the device
        self.count += n
        for prepare in self.prepares:
            self.pending[prepare].append(prepare(_arrays(output), _arrays(target)))

    def logs(self, where):
        """{'loss': mean loss, metric: value} of this process: reads the device once.

        Raises ValueError when no batch was added (``where`` names the data in the message).
        """
        return self._summary(where, *self._read())

    def combined_logs(self, where):
        """``logs()`` over every rank of the process group (all ranks call it together)."""
        if self.run is None or self.run.group is None:
            return self.logs(where)
        loss_sum, count, rows = self._read()
        loss_sum, count, _, _ = self.run.combine(loss_sum, count, None, None)
        rows = {prepare: self.run.combine(0.0, 0, *pair)[2:] for prepare, pair in rows.items()}
        return self._summary(where, loss_sum, count, rows)

    def _read(self):
        """(loss sum, count, {prepare: (predictions, targets)}) on the host."""
        rows = {}
        for prepare, pending in self.pending.items():
            predictions, targets = self.host[prepare]
            for pred, true in pending:
                predictions.append(backend.to_numpy(pred, "fit/evaluate metrics"))
                targets.append(backend.to_numpy(true, "fit/evaluate metrics"))
            pending.clear()
            rows[prepare] = (np.concatenate(predictions), np.concatenate(targets)) \
                if predictions else (None, None)
        loss_sum = self.loss_sum if isinstance(self.loss_sum, float) else \
            backend.host_value(self.loss_sum, "fit/evaluate loss")     # once per epoch
        return float(loss_sum), self.count, rows

    def _summary(self, where, loss_sum, count, rows):
        if count == 0:
            raise ValueError(f"{where} yielded no batch; a loss over no samples is undefined "
                             "(check the data's length and batch_size)")
        logs = {"loss": loss_sum / count}
        for name, fn in self.metric_fns:
            predictions, targets = rows[_prepare_of(fn)]
            logs[name] = float(fn(targets, predictions))
        return logs


def _arrays(value):
    """The device array of a Tensor, or of each Tensor in nested tuples/lists (type kept)."""
    if isinstance(value, (tuple, list)):
        return type(value)(_arrays(v) for v in value)
    return value._data


def _prepare_of(metric_fn):
    return getattr(metric_fn, "prepare", as_labels)


def _split_batch(batch, where):
    """(inputs tuple, target) from a batch ``(x, y)`` or ``(x1, x2, ..., y)``."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return tuple(batch[:-1]), batch[-1]
    raise TypeError(f"{where}: each batch must be a tuple (inputs..., target), got "
                    f"{type(batch).__name__}")


def _detached(output):
    """``output.detach()``, or each of several outputs detached."""
    if isinstance(output, (tuple, list)):
        return type(output)(o.detach() for o in output)
    return output.detach()


def _loss(loss_fn, output, target, where):
    loss = loss_fn(output, target)
    if not isinstance(loss, Tensor) or loss._data.size != 1:
        raise TypeError(f"{where}: loss_fn must return a one-element Tensor, got "
                        f"{type(loss).__name__}{getattr(loss, 'shape', '')}")
    return loss


def _train_epoch(model, loss_fn, optimizer, loader, metric_fns, bar, batch_callbacks=(),
                 run=None, autocast=None, scaler=None):
    """One pass over ``loader``; returns (logs, stopped): stopped when a batch callback asked."""
    model.train()
    running = _Running(metric_fns, run)
    callback_model = model if run is None else run.callback_model
    for i, batch in enumerate(loader):
        inputs, target = _split_batch(batch, "fit")
        optimizer.zero_grad()
        with autocast or contextlib.nullcontext():
            output = model(*inputs)
            loss = _loss(loss_fn, output, target, "fit")
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        counted = running.count
        with no_grad():
            running.add(loss.detach(), _detached(output), target)
        bar.update(1)
        if not bar.disable and (i + 1) % LOG_EVERY == 0:
            bar.set_postfix(_rounded(running.logs("fit: the training data")), refresh=False)
        if batch_callbacks:                      # reads the loss every batch: only when asked
            batch_logs = {"loss": float(loss.item()), "size": running.count - counted}
            if any([cb.on_batch_end(i, batch_logs, callback_model) for cb in batch_callbacks]):
                return running.combined_logs("fit: the training data"), True
    return running.combined_logs("fit: the training data"), False


def evaluate(model, loss_fn, loader, metrics=()):
    """Mean loss and metrics of ``model`` over ``loader`` in eval mode without gradients.

    Returns:
        {'loss': float, metric name: float, ...}

    Raises ValueError when ``loader`` yields no batch.
    """
    return _evaluate(model, loss_fn, loader, resolve_metrics(metrics), "evaluate")


def _evaluate(model, loss_fn, loader, metric_fns, where, run=None):
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        running = _Running(metric_fns, run)
        with no_grad():
            for batch in loader:
                inputs, target = _split_batch(batch, where)
                output = model(*inputs)
                running.add(_loss(loss_fn, output, target, where), output, target)
        data = "the validation data" if where == "fit" else "the data"
        return running.combined_logs(f"{where}: {data}")
    finally:
        model.train(was_training)


def _rounded(logs):
    return {k: f"{v:.4g}" for k, v in logs.items()}


def _step_scheduler(scheduler, logs):
    from .optim.lr_scheduler import ReduceLROnPlateau
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(logs.get("val_loss", logs["loss"]))
    else:
        scheduler.step()


def _overrides(callback, hook):
    return getattr(type(callback), hook) is not getattr(Callback, hook)


def fit(model, loss_fn, optimizer, train_loader, epochs, val_loader=None, metrics=(),
        callbacks=(), scheduler=None, verbose=True, autocast=None, scaler=None, initial_epoch=0,
        validation_freq=1):
    """Train ``model`` for ``epochs`` epochs; returns the ``History`` of per-epoch logs.

    Args:
        model: a Module; it is switched to train() for training and eval() for validation.
        loss_fn: ``loss_fn(output, target)`` -> one-element Tensor (e.g. nn.CrossEntropyLoss()).
        optimizer: a gpudl.optim optimizer over the model's parameters.
        train_loader, val_loader: iterables of batches ``(x, y)`` or ``(x1, ..., y)``.
        metrics: names ('accuracy', 'precision', 'recall', 'f1') or ``fn(y_true, y_pred)``
            callables; logged for training and, prefixed ``val_``, for validation.
        callbacks: Callback objects (EarlyStopping, ModelCheckpoint, TerminateOnNaN, ...).
        scheduler: stepped once per epoch; ReduceLROnPlateau gets val_loss (else loss). The
            learning rate is then logged as ``lr``.
        verbose: show a tqdm progress bar per epoch with the running loss and metrics.
        autocast: a ``gd.autocast(...)`` region the training forward and loss run in (mixed
            precision); validation runs outside it.
        scaler: a ``gd.amp.GradScaler``: the loss is scaled for backward and the optimizer
            stepped through it (a step with an inf/NaN gradient is skipped).
        initial_epoch: the epoch to start at (Keras's, to resume a run): epochs
            ``initial_epoch .. epochs - 1`` are run, numbered so for callbacks and the History.
        validation_freq: validate after every ``validation_freq``-th epoch (an int: when
            ``(epoch + 1) % validation_freq == 0``), or after the 1-based epochs listed (Keras's
            rule); the other epochs' logs have no ``val_`` values.

    Under a process group (gpudl.distributed) the model is trained as a
    DistributedDataParallel (wrapped for the call unless it is one already): each rank trains on
    its shard of ``train_loader`` (a DistributedSampler's), validation is split over the ranks,
    logs are combined over all of them, and only rank 0 shows progress and runs
    ModelCheckpoint (callbacks get the unwrapped module).

    NaN guard: when an epoch's loss is NaN or infinite, fit warns (a RuntimeWarning naming
    the value) and stops after that epoch's callbacks; the History it returns ends with that
    epoch. ``TerminateOnNaN`` stops at the first such batch instead (it reads the loss every
    batch). An epoch or validation set without any batch raises ValueError.

    Example:
        >>> history = fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=10,
        ...               val_loader=val, metrics=["accuracy"],
        ...               callbacks=[EarlyStopping(patience=3, restore_best_weights=True)])
    """
    from tqdm.auto import tqdm
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral) or \
            initial_epoch < 0:
        raise ValueError(f"fit: initial_epoch must be a non-negative int, got {initial_epoch!r}")
    validates = _validation_epochs(validation_freq)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"fit: callbacks must be Callback objects, got {type(cb).__name__}")
    metric_fns = resolve_metrics(metrics)
    keys = ["loss"] + [name for name, _ in metric_fns]
    keys += ["val_" + k for k in keys] if val_loader is not None else []
    keys += ["lr"] if scheduler is not None else []
    for cb in callbacks:
        cb.check_logs(keys)                      # a monitor fit will not log fails now
    history = History()
    run = FitContext(model, callbacks, verbose)      # changes nothing without a process group
    model, callbacks, verbose = run.model, run.callbacks, run.verbose
    batch_callbacks = [cb for cb in callbacks if _overrides(cb, "on_batch_end")]
    for cb in callbacks:
        cb.on_train_begin(run.callback_model)
    for epoch in range(initial_epoch, epochs):
        for cb in callbacks:
            cb.on_epoch_begin(epoch, run.callback_model)
        loader = run.train_loader(train_loader, epoch)
        total = len(loader) if hasattr(loader, "__len__") else None
        bar = tqdm(total=total, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch",
                   disable=not verbose, dynamic_ncols=True)
        try:
            logs, stop = _train_epoch(model, loss_fn, optimizer, loader, metric_fns, bar,
                                      batch_callbacks, run, autocast, scaler)
            if val_loader is not None and validates(epoch):
                val = _evaluate(run.eval_model, loss_fn, run.eval_loader(val_loader), metric_fns,
                                "fit", run)
                logs.update(("val_" + k, v) for k, v in val.items())
            if scheduler is not None:
                _step_scheduler(scheduler, logs)
                logs["lr"] = optimizer.param_groups[0]["lr"]
            bar.set_postfix(_rounded(logs))
        finally:
            bar.close()
        stops = [cb.on_epoch_end(epoch, logs, run.callback_model) for cb in callbacks]
        history.append(epoch, logs)           # after the callbacks, with what they logged
        if not math.isfinite(logs["loss"]) and not stop:
            warnings.warn(f"fit: the training loss is {logs['loss']} in epoch {epoch + 1}; "
                          "training stopped (TerminateOnNaN stops at the first such batch)",
                          RuntimeWarning, stacklevel=2)
            stop = True
        if stop or any(stops):
            break
    for cb in callbacks:
        cb.on_train_end(run.callback_model)
    run.close()
    return history


def _validation_epochs(validation_freq):
    """``validates(epoch)`` for fit's ``validation_freq`` (a positive int, or a list of
    1-based epochs)."""
    if isinstance(validation_freq, numbers.Integral) and not isinstance(validation_freq, bool):
        if validation_freq < 1:
            raise ValueError(f"fit: validation_freq must be a positive int or a list of epochs, "
                             f"got {validation_freq!r}")
        return lambda epoch: (epoch + 1) % validation_freq == 0
    if isinstance(validation_freq, (list, tuple, set, range)) and all(
            isinstance(e, numbers.Integral) and not isinstance(e, bool) for e in validation_freq):
        chosen = set(validation_freq)
        return lambda epoch: epoch + 1 in chosen
    raise ValueError(f"fit: validation_freq must be a positive int or a list of epochs, got "
                     f"{validation_freq!r}")


def plot_history(history, path):
    """Plot each logged quantity per epoch (training and validation curves) to a PNG file.

    Needs matplotlib (an optional dependency). ``history`` is a History or a dict of lists.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plot_history needs matplotlib: pip install matplotlib "
                          "(or pip install gpudl[examples])") from exc
    history = getattr(history, "history", history)
    names = [k for k in history if not k.startswith("val_")]
    if not names:
        raise ValueError(f"plot_history: nothing to plot in {sorted(history)}")
    figure = Figure(figsize=(4.5 * len(names), 3.5))
    FigureCanvasAgg(figure)
    for i, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), i + 1)
        epochs = range(1, len(history[name]) + 1)
        axes.plot(epochs, history[name], marker="o", label="training")
        if "val_" + name in history:
            axes.plot(epochs, history["val_" + name], marker="o", label="validation")
            axes.legend()
        axes.set_title(name)
        axes.set_xlabel("epoch")
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path
