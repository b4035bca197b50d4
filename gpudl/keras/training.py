"""Keras's ``compile`` / ``fit`` / ``evaluate`` / ``predict`` / ``train_on_batch`` over any gpudl
Module, through gpudl.train's loop (one training loop for both front ends).

``gpudl.keras.Model`` has them as methods; here they are functions taking the model first, so
a plain ``nn.Module`` can use them too (``keras.compile(model, ...)``; its loss may be a gpudl
loss such as ``nn.CrossEntropyLoss()``).

Arrays are cast as Keras casts them: floating point to float32, integers kept (Embedding takes
them; other layers cast). Several inputs or outputs are given as lists of arrays.
"""

import itertools
import math
import numbers
import types
import warnings
from contextlib import contextmanager

import numpy as np

from .. import backend, dtypes, optim, train
from ..autograd import no_grad
from ..creation import tensor
from ..data import DataLoader, TensorDataset
from ..ops.sparse import DEFERRED_NOTE, NO_BAD_INDEX
from ..tensor import Tensor
from . import callbacks as keras_callbacks
from . import losses as keras_losses
from . import metrics as keras_metrics
from . import optimizers as keras_optimizers
from .metrics import WeightedTarget


class Compiled:
    """What ``compile`` attached to a model. The optimizer is built over the weights trainable
    at compile time, or at the first training step of a model compiled before it was built."""

    def __init__(self, model, optimizer, losses, loss_weights, metrics):
        self.model, self.spec = model, optimizer
        self.losses, self.loss_weights, self.metrics = losses, loss_weights, metrics
        self._optimizer, self.trainable, self.class_weights = None, None, None
        if any(True for _ in model.parameters()):
            self.optimizer                       # noqa: B018 (build it now)

    @property
    def optimizer(self):
        if self._optimizer is None:
            params = [p for p in self.model.parameters() if p.requires_grad]
            self._optimizer = keras_optimizers.get(self.spec, params)
            self.trainable = {id(p) for p in params}
        return self._optimizer

    def loss_fn(self, class_weight=None):
        """``loss(output, target)`` for gpudl.train: the (weighted) sum over outputs; a
        ``WeightedTarget`` carries per-sample weights."""
        class_weights = None if not class_weight else ClassWeights(class_weight)
        self.class_weights = class_weights            # for weighted_metrics (training batches)

        def loss(output, target):
            # Keras weighs only the training batches by class: validation runs in eval mode
            weights = class_weights if getattr(self.model, "training", True) else None
            sample_weight = None
            if isinstance(target, WeightedTarget):
                target, sample_weight = target
            total = sum(getattr(self.model, "losses", ()), 0)     # weight regularizers
            if len(self.losses) == 1 and not isinstance(output, (list, tuple)):
                mask = self.model.__dict__.get("output_mask")         # set by this forward
                return _weighted(self.losses[0], target, output, weights,
                                 sample_weight, mask) + total
            outputs, targets = list(output), list(target)
            if len(outputs) != len(self.losses) or len(targets) != len(outputs):
                raise ValueError(f"the model gives {len(outputs)} outputs, there are "
                                 f"{len(targets)} targets and {len(self.losses)} losses")
            for fn, weight, o, t in zip(self.losses, self.loss_weights, outputs, targets):
                total = total + weight * _weighted(fn, t, o, weights, sample_weight)
            return total
        return loss


class ClassWeights:
    """fit's ``class_weight`` ({class: weight}) as a table indexed by label, moved to a device
    once: each batch's weights are gathered there, and on the cuda device a label without a
    weight is a deferred device-side check (backend.defer_check), not a read per batch."""

    def __init__(self, class_weight):
        self.class_weight = class_weight
        size = max(0, *(int(c) + 1 for c in class_weight))
        table = np.zeros(size, np.float32)
        known = np.zeros(size, bool)
        for c, w in class_weight.items():
            if int(c) >= 0:
                table[int(c)], known[int(c)] = w, True
        self._host, self._devices = (table, known), {}

    def of(self, labels, device):
        """The weight of each of ``labels`` (an int64 array on ``device``), as a Tensor."""
        if not backend.on_device(labels):
            missing = sorted(set(labels.tolist()) - set(self.class_weight))
            if missing:
                raise ValueError(f"fit: class_weight has no weight for classes {missing}")
            return tensor(np.array([self.class_weight[c] for c in labels.tolist()],
                                   np.float32), device=device)
        if device not in self._devices:
            self._devices[device] = tuple(backend.to_device_array(a, device)
                                          for a in self._host)
        table, known = self._devices[device]
        xp = backend.get_array_module(labels)
        inside = (labels >= 0) & (labels < table.size)
        row = xp.where(inside, labels, 0)
        bad = xp.where(inside & known[row], NO_BAD_INDEX, labels).min()
        backend.defer_check(bad, lambda value: value == NO_BAD_INDEX, lambda value: ValueError(
            f"fit: class_weight has no weight for class {value}" + DEFERRED_NOTE))
        return Tensor._make(table[row], False, None, 0, device)


def _weighted(loss, y_true, y_pred, class_weights, sample_weight=None, mask=None):
    """The loss with per-sample weights: ``sample_weight`` times the ``ClassWeights`` of the
    labels (if any); ``mask``: the output's mask."""
    masked = {} if mask is None else {"mask": mask}
    weights = sample_weight if class_weights is None else _sample_weights(
        y_true._data, y_pred._data, y_pred.device, class_weights, sample_weight)
    if weights is None:
        return loss(y_true, y_pred, **masked)
    return loss(y_true, y_pred, sample_weight=weights, **masked)


def _sample_weights(y_true, y_pred, device, class_weights, sample_weight):
    """Keras's per-sample weights of a batch (device arrays ``y_true``, ``y_pred``):
    ``sample_weight`` times the class weights of the labels (one-hot targets: their arg-max);
    None when there are neither. A Tensor when ``sample_weight`` is one or class weights
    apply, else ``sample_weight`` as given."""
    if class_weights is None:
        return sample_weight
    labels = y_true
    if labels.ndim == y_pred.ndim and y_pred.shape[-1] > 1:
        labels = labels.argmax(axis=-1)                   # one-hot targets
    labels = labels.round().astype(np.int64).reshape(labels.shape[0], -1)[:, 0]
    weights = class_weights.of(labels, device)
    if sample_weight is not None:
        weights = weights.reshape((-1,) + (1,) * (sample_weight.ndim - 1)) * sample_weight
    return weights


class WeightedMetric:
    """An entry of compile's ``weighted_metrics``: the metric weighted per sample as Keras
    weighs it, by ``sample_weight`` (fit's, evaluate's, validation_data's third element) times
    fit's ``class_weight`` on training batches. A name ('accuracy', 'mae', ...) is the weighted
    mean of its per-sample values (values averaged over each sample's other axes first, as
    Keras's ``reduce_to_samplewise_values``); a metric object gets the weights as its
    ``sample_weight``; a function ``fn(y_true, y_pred)`` is a ``MeanMetricWrapper``."""

    def __init__(self, metric, config, index=None):
        self.config, self.index = config, index
        if isinstance(metric, str) and metric in keras_metrics.METRIC_OBJECTS:
            metric = keras_metrics.METRIC_OBJECTS[metric](name=metric)    # 'auc', 'poisson', ...
        if isinstance(metric, str):
            if metric not in keras_metrics.VALUES:
                known = sorted(set(keras_metrics.VALUES) | set(keras_metrics.METRIC_OBJECTS))
                raise ValueError(f"compile: unknown weighted metric {metric!r}; expected one of "
                                 f"{known}, a metric object or a function f(y_true, y_pred)")
            self.values_of, self.metric = keras_metrics.VALUES[metric], None
            base = metric
        else:
            if isinstance(metric, keras_metrics.Metric):
                self.metric = metric
            elif callable(metric):
                self.metric = keras_metrics.MeanMetricWrapper(metric)
            else:
                raise TypeError(f"compile: weighted_metrics entries must be names, metric "
                                f"objects or functions, got {type(metric).__name__}")
            base = self.metric.name
        self.__name__ = base

    def weights(self, output, target):
        sample_weight = target[1] if isinstance(target, WeightedTarget) else None
        model = self.config.model
        class_weights = self.config.class_weights if model.training else None
        device = None if class_weights is None else next(iter(model.parameters())).device
        weights = _sample_weights(keras_metrics.unweighted(target), output, device,
                                  class_weights, sample_weight)
        return weights._data if isinstance(weights, Tensor) else weights

    def prepare(self, output, target):
        if self.index is not None:                   # one output of several
            sample_weight = target[1] if isinstance(target, WeightedTarget) else None
            output = output[self.index]
            target = keras_metrics.unweighted(target)[self.index]
            if sample_weight is not None:
                target = WeightedTarget((target, sample_weight))
        weights, y_true = self.weights(output, target), keras_metrics.unweighted(target)
        if self.metric is not None:
            return self.metric.prepare(output, y_true if weights is None else
                                       WeightedTarget((y_true, weights)))
        xp = backend.get_array_module(output)
        values = self.values_of(output, y_true).astype(output.dtype)
        n = values.shape[0]
        values = values.reshape(n, -1).mean(axis=1)
        weights = xp.ones(n, output.dtype) if weights is None else \
            weights.reshape(n, -1).mean(axis=1).astype(output.dtype)
        return values, weights

    def __call__(self, y_true, y_pred):
        if self.metric is not None:
            return self.metric.epoch_value(y_true, y_pred)
        # prepare gave (values, weights); gpudl.train calls metrics as fn(targets, predictions)
        weights, values = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
        total = weights.sum()
        return float((values * weights).sum() / total) if total else 0.0


def compile(model, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None,
            weighted_metrics=None):
    """Attach an optimizer, losses and metrics to ``model`` (Keras's ``compile``).

    Args:
        optimizer: a Keras name ('adam', 'sgd', 'rmsprop', 'adagrad', 'adamw'), a
            gpudl.keras.optimizers object, or a gpudl.optim optimizer. Built over the weights
            trainable now (``layer.trainable = False`` before compile freezes them for this
            model, as in Keras 2's GAN recipes).
        loss: a Keras name, a gpudl.keras.losses object or function ``f(y_true, y_pred)``, a
            gpudl loss Module; for several outputs, a list (or one for all).
        metrics: names ('accuracy' with Keras's rules, 'precision', 'recall', 'f1') or
            ``fn(y_true, y_pred)`` callables.
        loss_weights: one float per output.
        weighted_metrics: metrics weighted by sample weights (and fit's class weights), see
            ``WeightedMetric``; logged under their names, ``weighted_<name>`` when ``metrics``
            has that name too (Keras's rule); for several outputs as ``metrics`` (a list for
            each output, or a dict by output name), logged as ``<output>_<name>``.
    """
    if loss is None:
        raise ValueError("compile: give a loss, e.g. loss='mse' or "
                         "loss='sparse_categorical_crossentropy'")
    if not isinstance(optimizer, (str, keras_optimizers.Optimizer, optim.Optimizer)):
        raise TypeError(f"compile: optimizer must be a name or an optimizer object (gpudl.keras."
                        f"optimizers or gpudl.optim), got {type(optimizer).__name__}")
    outputs = getattr(model, "n_outputs", 1)
    names = getattr(model, "output_names", None) if outputs > 1 else None
    loss = _by_output_name(loss, names, "loss")
    loss_weights = _by_output_name(loss_weights, names, "loss_weights", default=1.0)
    losses = [keras_losses.get(fn) for fn in loss] if isinstance(loss, (list, tuple)) else \
        [keras_losses.get(loss)]
    if len(losses) == 1 and outputs > 1:
        losses = losses * outputs
    if len(losses) != outputs:
        raise ValueError(f"compile: the model has {outputs} outputs; got {len(losses)} losses")
    loss_weights = [1.0] * len(losses) if loss_weights is None else list(loss_weights)
    if len(loss_weights) != len(losses):
        raise ValueError(f"compile: loss_weights needs {len(losses)} values, got "
                         f"{len(loss_weights)}")
    metrics = keras_metrics.resolve(metrics, names)
    if outputs == 1:                         # Keras's mean metrics skip the output's masked steps
        metrics = [keras_metrics.masked_by(m, model) if getattr(m, "masked", False) else m
                   for m in metrics]
    if outputs > 1:
        names = names or [f"output_{i}" for i in range(outputs)]
        metrics = [keras_metrics.OutputLoss(fn, i, name)
                   for i, (fn, name) in enumerate(zip(losses, names))] + metrics
    if isinstance(optimizer, str):
        keras_optimizers.named(optimizer)        # refuse an unknown name now
    config = Compiled(model, optimizer, losses, loss_weights, metrics)
    config.metrics = metrics + _weighted_metrics(weighted_metrics, config, metrics,
                                                 names if outputs > 1 else None)
    object.__setattr__(model, "_compiled", config)
    return model


def _weighted_metrics(weighted_metrics, config, metrics, names):
    """compile's ``weighted_metrics`` as ``WeightedMetric`` objects, named as Keras names
    them: ``<output>_<name>`` for a model with several outputs (a list applies to each, a dict
    maps output names to lists, a list of one list per output is taken in output order),
    ``weighted_`` before a name ``metrics`` already logs."""
    if weighted_metrics is None:
        return []
    if isinstance(weighted_metrics, str) or not isinstance(weighted_metrics,
                                                           (list, tuple, dict)):
        raise TypeError(f"compile: weighted_metrics must be a list, tuple or dict (by output "
                        f"name) of metrics, got {type(weighted_metrics).__name__}")
    outputs = names or [None]
    if isinstance(weighted_metrics, dict):
        if names is None:
            raise ValueError("compile: weighted_metrics as a dict needs a model with several "
                             "named outputs")
        unknown = sorted(set(weighted_metrics) - set(names))
        if unknown:
            raise ValueError(f"compile: weighted_metrics for unknown outputs {unknown}; "
                             f"outputs: {names}")
    per_output = names is not None and not isinstance(weighted_metrics, dict) and \
        len(weighted_metrics) == len(names) and \
        all(m is None or isinstance(m, (list, tuple)) for m in weighted_metrics)
    taken = {getattr(m, "__name__", None) for m in metrics}
    resolved = []
    for index, output in enumerate(outputs):
        if isinstance(weighted_metrics, dict):
            chosen = weighted_metrics.get(output) or []
        else:                            # Keras 3: one list per output; a flat list: each
            chosen = (weighted_metrics[index] or []) if per_output else weighted_metrics
        for metric in [chosen] if isinstance(chosen, str) or callable(chosen) else chosen:
            entry = WeightedMetric(metric, config, None if output is None else index)
            prefix = "" if output is None else f"{output}_"
            entry.__name__ = prefix + entry.__name__
            if entry.__name__ in taken:
                entry.__name__ = f"{prefix}weighted_{entry.__name__[len(prefix):]}"
            taken.add(entry.__name__)
            resolved.append(entry)
    return resolved


def _by_output_name(values, names, what, default=None):
    """A dict keyed by output names as a list in output order (other values unchanged)."""
    if not isinstance(values, dict):
        return values
    if not names:
        raise ValueError(f"compile: {what} as a dict needs a model with several named outputs")
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"compile: {what} for unknown outputs {unknown}; outputs: {names}")
    if default is None and set(values) != set(names):
        raise ValueError(f"compile: {what} misses outputs {sorted(set(names) - set(values))}")
    return [values.get(name, default) for name in names]


def compiled(model, where):
    config = getattr(model, "__dict__", {}).get("_compiled")
    if config is None:
        raise RuntimeError(f"{where}: the model is not compiled; call "
                           "model.compile(optimizer=..., loss=...) first")
    return config


@contextmanager
def trainable_as_compiled(model, config):
    """Gradients for exactly the weights that were trainable at compile time."""
    config.optimizer                             # noqa: B018 (built, trainable known)
    params = list(model.parameters())
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(id(p) in config.trainable)
    try:
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


def _as_tensor(values, name, where):
    """A Tensor from an array (floating point cast to float32, as Keras's floatx)."""
    if isinstance(values, Tensor):
        return values
    if isinstance(values, (np.ndarray, list, tuple, numbers.Number)) or \
            backend.is_device_array(values):
        array = values if backend.is_device_array(values) else np.asarray(values)
        if array.dtype.kind in "fb":
            return tensor(array, dtype=dtypes.DEFAULT_FLOAT)
        if array.dtype.kind in "iu":
            return tensor(array)
    raise TypeError(f"{where}: {name} must be a Tensor or an array (or a list of them for "
                    f"several inputs/outputs), got {type(values).__name__}")


def _is_several(values):
    return isinstance(values, (list, tuple)) and values and all(
        isinstance(v, (np.ndarray, Tensor)) or backend.is_device_array(v) for v in values)


def _tensors(values, name, where):
    """A list of Tensors: one per input (or output)."""
    if isinstance(values, dict):
        values = list(values.values())
    if _is_several(values):
        return [_as_tensor(v, f"{name}[{i}]", where) for i, v in enumerate(values)]
    return [_as_tensor(values, name, where)]


def _batches(xs, ys, batch_size, shuffle, where, sample_weight=None):
    """Batches ``(x1, ..., y)`` of the arrays: a plain DataLoader when each batch is already
    in that form (one target, no weights: what gpudl.train and a process group's sharding
    take), else ``_Batches`` (several targets as a tuple, sample weights)."""
    if len(ys) <= 1 and sample_weight is None:
        _check_batching(xs, ys, batch_size, where)
        return DataLoader(TensorDataset(*xs, *ys), batch_size=batch_size, shuffle=shuffle)
    return _Batches(xs, ys, batch_size, shuffle, where, sample_weight)


def _check_batching(xs, ys, batch_size, where):
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")
    sizes = {t.shape[0] if t.ndim else None for t in xs + ys}
    if len(sizes) != 1:
        raise ValueError(f"{where}: x and y must have the same first size (samples), got "
                         f"shapes {[tuple(t.shape) for t in xs + ys]}")


class _Batches:
    """A DataLoader over inputs and targets, giving ``(x1, ..., y)`` with ``y`` a tuple when
    there are several targets, or a ``WeightedTarget`` with sample weights."""

    def __init__(self, xs, ys, batch_size, shuffle, where, sample_weight=None):
        _check_batching(xs, ys + ([sample_weight] if sample_weight is not None else []),
                        batch_size, where)
        self.n_x, self.n_y = len(xs), len(ys)
        self.weighted = sample_weight is not None
        extra = [sample_weight] if self.weighted else []
        self.loader = DataLoader(TensorDataset(*xs, *ys, *extra), batch_size=batch_size,
                                 shuffle=shuffle)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            xs, ys = batch[:self.n_x], batch[self.n_x:self.n_x + self.n_y]
            if not ys:
                yield tuple(xs)
                continue
            target = ys[0] if len(ys) == 1 else tuple(ys)
            yield tuple(xs) + ((WeightedTarget((target, batch[-1])) if self.weighted
                                else target),)


def _split(xs, ys, validation_split):
    """Keras's validation_split: the last fraction of the samples, taken before shuffling."""
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
    n = len(xs[0])
    cut = int(math.floor(n * (1.0 - validation_split)))      # Keras's split point
    if cut in (0, n):
        raise ValueError(f"fit: validation_split={validation_split} of {n} samples leaves "
                         f"{cut} training and {n - cut} validation samples (both must be >= 1)")
    return ([t[:cut] for t in xs], [t[:cut] for t in ys]), \
        ([t[cut:] for t in xs], [t[cut:] for t in ys])


def _is_loader(x):
    return not isinstance(x, (np.ndarray, Tensor, list, tuple, dict, numbers.Number)) and \
        not backend.is_device_array(x) and hasattr(x, "__iter__")


def fit(model, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
        validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
        sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
        validation_batch_size=None, validation_freq=1):
    """Train a compiled model on ``x``, ``y`` (arrays, or lists of arrays for several inputs or
    outputs, or dicts keyed by the model's input and output names; or ``x`` an iterable of
    ``(x, y)`` batches such as a DataLoader); returns the History (``history.history["loss"]``).
    ``sample_weight`` (N,) weighs each sample's loss (times ``class_weight[label]`` when both
    are given), as Keras's mean over the batch.

    ``initial_epoch``: the epoch to resume at (epochs ``initial_epoch .. epochs - 1`` run).
    ``steps_per_epoch``: batches per epoch, as Keras's epoch iterator takes them: the batches
    continue from one epoch to the next, an epoch ends early (with a warning) when the data
    runs out, and the next one starts the data again; with arrays and no ``batch_size`` the
    batch size is ``ceil(samples / steps_per_epoch)``. ``validation_batch_size`` (default:
    ``batch_size``) batches the validation data; ``validation_steps``: each validation reads
    at most that many batches, from a new iterator each time (as Keras's evaluate);
    ``validation_freq``: validate every that many epochs (or after the 1-based epochs listed);
    the callbacks watching a ``val_`` value skip the other epochs with a warning, as Keras's."""
    config = compiled(model, "fit")
    steps = _positive_or_none(steps_per_epoch, "steps_per_epoch", "fit")
    val_steps = _positive_or_none(validation_steps, "validation_steps", "fit")
    given_batch_size = batch_size
    x, y = _by_name(model, x, "x", "fit"), _by_name(model, y, "y", "fit")
    if _is_loader(x):
        loader, val = keras_batches(x, model, "fit", shuffle), validation_data
        batch_size = 32 if batch_size is None else batch_size
    else:
        if y is None:
            raise ValueError("fit: give targets y (or x as an iterable of (x, y) batches)")
        xs, ys = _tensors(x, "x", "fit"), _tensors(y, "y", "fit")
        weights = None if sample_weight is None else _as_tensor(sample_weight, "sample_weight",
                                                               "fit")
        if validation_data is None and validation_split:
            (xs, ys), validation_data = _split(xs, ys + ([weights] if weights is not None else []),
                                               validation_split)
            if weights is not None:                   # Keras weighs the validation too
                ys, weights = ys[:-1], ys[-1]
                validation_data = (validation_data[0], validation_data[1][:-1],
                                   validation_data[1][-1])
        batch_size = _batch_size(batch_size, xs, steps)
        loader = _batches(xs, ys, batch_size, shuffle, "fit", weights)
        val = validation_data
    if val is not None and _is_loader(val):
        val = keras_batches(val, model, "fit")
    elif val is not None:
        if not isinstance(val, (tuple, list)) or len(val) not in (2, 3):
            raise ValueError("fit: validation_data must be (x_val, y_val) or (x_val, y_val, "
                             "sample_weight_val)")
        val_weights = val[2] if len(val) == 3 else None
        if val_weights is not None:
            val_weights = _as_tensor(val_weights, "sample_weight_val", "fit")
        val_xs = _tensors(_by_name(model, val[0], "x_val", "fit"), "x_val", "fit")
        val = _batches(val_xs, _tensors(_by_name(model, val[1], "y_val", "fit"), "y_val", "fit"),
                       _batch_size(validation_batch_size or given_batch_size, val_xs, val_steps),
                       False, "fit", val_weights)
    if steps is not None:
        loader = StepsPerEpoch(loader, steps)
    if val is not None and val_steps is not None:
        val = StepsPerEpoch(val, val_steps, restart=True)
    with trainable_as_compiled(model, config):
        history = train.fit(model, config.loss_fn(class_weight), config.optimizer, loader,
                            epochs, val_loader=val, metrics=config.metrics,
                            callbacks=keras_callbacks.adapt(callbacks), verbose=bool(verbose),
                            initial_epoch=initial_epoch, validation_freq=validation_freq)
    if epochs > 0:                           # Keras: the EMA weights written in (use_ema)
        keras_optimizers.finalize(config.optimizer)
    history.model = model                                    # Keras's History attributes
    history.params = {"verbose": 1 if verbose == "auto" else verbose, "epochs": epochs,
                      "steps": len(loader) if hasattr(loader, "__len__") else None}
    return history


def _batch_size(batch_size, xs, steps):
    """Keras's ArrayDataAdapter: ``batch_size``, else ``ceil(samples / steps)`` with steps,
    else 32."""
    if batch_size is not None:
        return batch_size
    return math.ceil(len(xs[0]) / steps) if steps and xs[0].ndim else 32


def _positive_or_none(value, name, where):
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                              or value < 1):
        raise ValueError(f"{where}: {name} must be a positive int or None, got {value!r}")
    return value


class StepsPerEpoch:
    """``steps`` batches of ``loader`` per epoch, as Keras's EpochIterator takes them with
    ``steps_per_epoch``: one iterator runs on across epochs; an epoch ends early, with a
    warning, when the loader runs out (``len(loader)`` batches seen, or StopIteration); the
    epoch after that starts a new iterator (a new shuffle). ``restart``: a new iterator for
    every pass (Keras's evaluate, validation_steps)."""

    def __init__(self, loader, steps, restart=False):
        self.loader, self.steps, self.restart = loader, steps, restart
        self.known = len(loader) if hasattr(loader, "__len__") else None
        self.iterator, self.seen = None, 0

    def __len__(self):
        return self.steps

    def __iter__(self):
        if self.iterator is None or self.restart:
            self.iterator, self.seen = iter(self.loader), 0
        for _ in range(self.steps):
            if self.known is not None and self.seen >= self.known:
                _ran_out()
                break
            try:
                batch = next(self.iterator)
            except StopIteration:
                _ran_out()
                self.iterator = None
                return
            self.seen += 1
            yield batch
        if self.known is not None and self.seen >= self.known:
            self.iterator = None


def keras_batches(loader, model, where, shuffle=False):
    """``loader`` (an iterable of batches: a Python generator, a PyDataset, ...) as gpudl.train
    takes it: a gpudl DataLoader unchanged, a PyDataset's batches in a new random order each
    pass with ``shuffle`` (Keras's rule), anything else read through ``KerasBatches``."""
    from .utils import PyDataset
    if isinstance(loader, PyDataset):
        return ShuffledPyDataset(loader) if shuffle else loader
    if isinstance(loader, (DataLoader, KerasBatches, _Batches, StepsPerEpoch)):
        return loader
    return (SizedKerasBatches if hasattr(loader, "__len__") else KerasBatches)(loader, model,
                                                                              where)


class KerasBatches:
    """Batches in Keras's form ``(x, y)`` or ``(x, y, sample_weight)`` of arrays (``x`` and
    ``y`` one array, or a list or a dict by input/output name for several) as ``(x1, ...,
    target)`` of Tensors (target a ``WeightedTarget`` with sample weights); a batch of Tensors
    only (gpudl's ``(x1, ..., y)``) passes unchanged.

    A Python generator is read as Keras's GeneratorDataAdapter reads it: its first
    ``PEEKED`` batches are taken once and every pass starts with them before going on with the
    generator (so ``validation_steps <= 2`` validates on the same batches each epoch)."""

    PEEKED = 2                            # Keras's NUM_BATCHES_FOR_TENSOR_SPEC

    def __init__(self, loader, model, where):
        self.loader, self.model, self.where = loader, model, where
        self.peeked = None

    def _batches(self):
        if not isinstance(self.loader, types.GeneratorType):
            return self.loader
        if self.peeked is None:
            self.peeked = list(itertools.islice(self.loader, self.PEEKED))
        return itertools.chain(self.peeked, self.loader)

    def __iter__(self):
        for batch in self._batches():
            if _of_tensors(batch):                  # gpudl's (x1, ..., target) already
                yield batch
            else:
                yield keras_batch(batch, self.model, self.where)


def _of_tensors(value):
    """Whether ``value`` is a Tensor, or a non-empty tuple/list of them (nested)."""
    if isinstance(value, (tuple, list)):
        return bool(value) and all(_of_tensors(v) for v in value)
    return isinstance(value, Tensor)


def keras_batch(batch, model, where):
    """One batch in Keras's form ``(x, y)`` or ``(x, y, sample_weight)`` (arrays; ``x`` and
    ``y`` one array, a list, or a dict by the model's input/output names) as gpudl.train's
    ``(x1, ..., target)`` of Tensors, ``target`` a ``WeightedTarget`` with sample weights."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        size = f" of {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        raise ValueError(f"{where}: each batch must be (x, y) or (x, y, sample_weight), got "
                         f"{type(batch).__name__}{size}")
    xs = _tensors(_by_name(model, batch[0], "x", where), "x", where)
    ys = _tensors(_by_name(model, batch[1], "y", where), "y", where)
    target = ys[0] if len(ys) == 1 else tuple(ys)
    if len(batch) == 3 and batch[2] is not None:
        target = WeightedTarget((target, _as_tensor(batch[2], "sample_weight", where)))
    return tuple(xs) + (target,)


class ShuffledPyDataset:
    """A PyDataset read in a new random order each pass (``PyDataset.batches(shuffle=True)``)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __iter__(self):
        return self.dataset.batches(shuffle=True)


class SizedKerasBatches(KerasBatches):
    def __len__(self):
        return len(self.loader)


def _ran_out():
    warnings.warn("the input ran out of data before the steps asked for (steps_per_epoch, "
                  "validation_steps or steps): this pass ends here and the next one starts "
                  "the data again (Keras's rule)", UserWarning, stacklevel=3)


def _by_name(model, values, which, where):
    """A dict of arrays keyed by the model's input (``which`` 'x', 'x_val') or output ('y',
    'y_val') names, as the list in the model's order (Keras's rule: extra keys are ignored);
    anything else unchanged. A model without such names takes the dict's own order."""
    if not isinstance(values, dict):
        return values
    inputs = which.startswith("x")
    names = getattr(model, "input_keys" if inputs else "output_names", None)
    if not names:
        return list(values.values())
    missing = [name for name in names if name not in values]
    if missing:
        raise ValueError(f"{where}: {which} is a dict without the model's "
                         f"{'input' if inputs else 'output'} names {missing}; expected the keys "
                         f"{list(names)}, got {list(values)}")
    return [values[name] for name in names]


def train_on_batch(model, x, y, sample_weight=None, class_weight=None, return_dict=False):
    """One optimizer step on one batch; the loss (and metrics) before the step."""
    config = compiled(model, "train_on_batch")
    x, y = _by_name(model, x, "x", "train_on_batch"), _by_name(model, y, "y", "train_on_batch")
    xs, ys = _tensors(x, "x", "train_on_batch"), _tensors(y, "y", "train_on_batch")
    target = ys[0] if len(ys) == 1 else tuple(ys)
    if sample_weight is not None:
        target = WeightedTarget((target, _as_tensor(sample_weight, "sample_weight",
                                                    "train_on_batch")))
    batch = tuple(xs) + (target,)
    with trainable_as_compiled(model, config):
        history = train.fit(model, config.loss_fn(class_weight), config.optimizer, [batch], 1,
                            metrics=config.metrics, verbose=False)
    return _result({k: v[-1] for k, v in history.items()}, return_dict)


def _result(logs, return_dict):
    if return_dict:
        return logs
    return logs["loss"] if len(logs) == 1 else list(logs.values())


def evaluate(model, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
             steps=None, return_dict=False):
    """The loss (and metrics) of a compiled model on ``x``, ``y``: a float when no metrics were
    compiled, else ``[loss, metric, ...]`` (or a dict with ``return_dict=True``). ``steps``: at
    most that many batches (Keras's: with arrays and no ``batch_size``, ``ceil(samples /
    steps)`` a batch). ``verbose`` is accepted as Keras's is (nothing is printed)."""
    config = compiled(model, "evaluate")
    steps = _positive_or_none(steps, "steps", "evaluate")
    x, y = _by_name(model, x, "x", "evaluate"), _by_name(model, y, "y", "evaluate")
    if _is_loader(x):
        loader = keras_batches(x, model, "evaluate")
    else:
        weights = None if sample_weight is None else _as_tensor(sample_weight, "sample_weight",
                                                               "evaluate")
        xs = _tensors(x, "x", "evaluate")
        loader = _batches(xs, _tensors(y, "y", "evaluate"), _batch_size(batch_size, xs, steps),
                          False, "evaluate", weights)
    if steps is not None:
        loader = StepsPerEpoch(loader, steps, restart=True)
    logs = train.evaluate(model, config.loss_fn(), loader, config.metrics)
    return _result(logs, return_dict)


def predict(model, x, batch_size=None, verbose="auto"):
    """The model's outputs for ``x`` in eval mode, batch by batch: one NumPy array (a list for
    several outputs), read from the device once. The train/eval mode is restored, even on an
    exception."""
    loader = _batches(_tensors(_by_name(model, x, "x", "predict"), "x", "predict"), [],
                      32 if batch_size is None else batch_size, False, "predict")
    was_training = getattr(model, "training", False)
    model.eval()
    outputs = []
    try:
        with no_grad():
            for xs in loader:
                out = model(*xs)
                outputs.append([o._data for o in out] if isinstance(out, (list, tuple))
                               else out._data)
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("predict: x has no samples")
    if isinstance(outputs[0], list):
        return [_joined([batch[i] for batch in outputs]) for i in range(len(outputs[0]))]
    return _joined(outputs)


def _joined(arrays):
    return backend.to_numpy(backend.get_array_module(arrays[0]).concatenate(arrays))
