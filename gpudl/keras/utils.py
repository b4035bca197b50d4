"""Keras's helpers: ``to_categorical``, ``set_random_seed``, ``normalize``, ``pad_sequences``,
``timeseries_dataset_from_array``, ``PyDataset`` (``Sequence``), ``Progbar`` and the
custom-object registry (``register_keras_serializable``, ``custom_object_scope``, ...)."""

import random
import sys
import time

import numpy as np

from .. import random as gpudl_random
from ..tensor import Tensor
from .serialization import (CustomObjectScope, custom_object_scope,  # noqa: F401 (Keras's names)
                            get_custom_objects, get_registered_name, get_registered_object,
                            register_keras_serializable)


def to_categorical(y, num_classes=None, dtype="float32"):
    """One-hot rows for integer class labels (``num_classes`` defaults to max(y) + 1)."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu" and not np.array_equal(y, np.round(y)):
        raise ValueError("to_categorical: y must hold integer class labels")
    y = y.astype(np.int64)
    if y.ndim and y.shape[-1] == 1 and y.ndim > 1:
        y = y[..., 0]
    num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"to_categorical: labels must be in [0, {num_classes}), got "
                         f"[{y.min()}, {y.max()}]")
    return np.eye(num_classes, dtype=dtype)[y]


def set_random_seed(seed):
    """Seed Python's ``random``, NumPy's global generator and gpudl's generators (weight
    initialisation, dropout), as Keras's does for its backends."""
    gpudl_random.manual_seed_value(seed, "set_random_seed")      # an int, or TypeError
    np.random.seed(seed)                      # refuses seeds outside [0, 2**32) first
    random.seed(seed)
    gpudl_random.manual_seed(seed)


def normalize(x, axis=-1, order=2):
    """``x`` divided by its ``order``-norm along ``axis`` (rows of norm 0 unchanged); a NumPy
    array for arrays, a Tensor (differentiable) for Tensors."""
    if isinstance(x, Tensor):
        from .ops import normalize as tensor_normalize
        return tensor_normalize(x, axis=axis, order=order)
    x = np.asarray(x)
    norms = np.atleast_1d(np.linalg.norm(x, order, axis))
    norms[norms == 0] = 1
    return x / np.expand_dims(norms, axis)


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre",
                  value=0.0):
    """Sequences of different lengths as one (samples, maxlen) array: shorter ones padded with
    ``value`` and longer ones cut, at the start ('pre', Keras's default) or the end ('post')."""
    for name, choice in (("padding", padding), ("truncating", truncating)):
        if choice not in ("pre", "post"):
            raise ValueError(f"pad_sequences: {name} must be 'pre' or 'post', got {choice!r}")
    sequences = [np.asarray(s) for s in sequences]
    if maxlen is None:
        maxlen = max((len(s) for s in sequences), default=0)
    feature_shape = next((s.shape[1:] for s in sequences if len(s)), ())
    out = np.full((len(sequences), maxlen) + feature_shape, value, dtype=dtype)
    for i, sequence in enumerate(sequences):
        if not len(sequence) or not maxlen:
            continue
        kept = sequence[-maxlen:] if truncating == "pre" else sequence[:maxlen]
        if kept.shape[1:] != feature_shape:
            raise ValueError(f"pad_sequences: sequence {i} has entries of shape "
                             f"{kept.shape[1:]}, the others {feature_shape}")
        if padding == "post":
            out[i, :len(kept)] = kept
        else:
            out[i, -len(kept):] = kept
    return out


class PyDataset:
    """Keras's ``PyDataset`` (``Sequence``): subclass it with ``__len__`` (batches per epoch)
    and ``__getitem__(index)`` -> a batch ``(x, y)`` or ``(x, y, sample_weight)``; ``fit``
    takes it as ``x``. ``on_epoch_end`` runs after each pass. Batches are read in order in this
    process (``workers`` and ``use_multiprocessing`` are accepted and not used)."""

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self.workers, self.use_multiprocessing = workers, use_multiprocessing
        self.max_queue_size = max_queue_size

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def on_epoch_end(self):
        """Called after each pass over the batches (e.g. to reshuffle)."""

    @property
    def num_batches(self):
        return len(self)

    def __iter__(self):
        return self.batches()

    def batches(self, shuffle=False):
        """One pass: the batches as Tensors, in order or, with ``shuffle`` (fit's, as Keras's
        PyDatasetAdapter), in an order drawn with Python's ``random.shuffle``; then
        ``on_epoch_end``."""
        from .training import keras_batch
        indices = list(range(len(self)))
        if shuffle:
            random.shuffle(indices)
        for index in indices:
            yield keras_batch(self[index], None, f"{type(self).__name__}[{index}]")
        self.on_epoch_end()


Sequence = PyDataset


class _ArrayBatches:
    """Batches ``(x, y)`` of NumPy arrays, an iterable that can be traversed again."""

    def __init__(self, x, y, order, batch_size):
        self.x, self.y, self.order, self.batch_size = x, y, order, batch_size

    def __len__(self):
        return -(-len(self.order) // self.batch_size)

    def __iter__(self):
        from .training import _as_tensor
        for start in range(0, len(self.order), self.batch_size):
            chosen = self.order[start:start + self.batch_size]
            x = _as_tensor(self.x[chosen], "x", "timeseries_dataset_from_array")
            if self.y is None:
                yield (x,)
            else:
                yield x, _as_tensor(self.y[chosen], "y", "timeseries_dataset_from_array")


def timeseries_dataset_from_array(data, targets, sequence_length, sequence_stride=1,
                                  sampling_rate=1, batch_size=128, shuffle=False, seed=None,
                                  start_index=None, end_index=None):
    """Windows of ``sequence_length`` steps (every ``sampling_rate``-th one) starting every
    ``sequence_stride`` steps in ``data[start_index:end_index]``, batched; the target of the
    window starting at ``i`` is ``targets[i]`` (None: windows only). An iterable of batches
    ``fit``/``predict`` take (Keras gives a tf.data.Dataset)."""
    data = np.asarray(data)
    start = start_index or 0
    end = len(data) if end_index is None else end_index
    span = (sequence_length - 1) * sampling_rate
    starts = np.arange(start, end - span, sequence_stride)
    if shuffle:
        np.random.default_rng(seed).shuffle(starts)
    windows = starts[:, None] + np.arange(0, span + 1, sampling_rate)[None, :]
    x = data[windows]
    y = None if targets is None else np.asarray(targets)[starts]
    return _ArrayBatches(x, y, np.arange(len(starts)), batch_size)


class Progbar:
    """Keras's text progress bar: ``update(current, values=[(name, value), ...])`` prints
    ``current/target`` and the running means of the values; ``add(n)`` advances by n."""

    def __init__(self, target, width=20, verbose=1, interval=0.05, stateful_metrics=None,
                 unit_name="step"):
        self.target, self.width, self.verbose, self.interval = target, width, verbose, interval
        self.stateful_metrics = set(stateful_metrics or ())
        self.unit_name, self.current = unit_name, 0
        self._sums, self._start, self._last = {}, time.time(), 0.0

    def update(self, current, values=None, finalize=None):
        for name, value in values or ():
            value = float(value)
            if name in self.stateful_metrics:
                self._sums[name] = (value, 1)
            else:
                total, count = self._sums.get(name, (0.0, 0))
                self._sums[name] = (total + value * (current - self.current), count +
                                    (current - self.current))
        self.current = current
        finalize = self.target is not None and current >= self.target if finalize is None \
            else finalize
        now = time.time()
        if self.verbose != 1 or (not finalize and now - self._last < self.interval):
            return
        self._last = now
        done = f"{current}/{self.target}" if self.target else f"{current}"
        bar = ""
        if self.target:
            filled = int(self.width * min(current / self.target, 1))
            bar = " [" + "=" * filled + "." * (self.width - filled) + "]"
        metrics = " - ".join(f"{name}: {total / max(count, 1):.4f}"
                             for name, (total, count) in self._sums.items())
        sys.stdout.write(f"\r{done}{bar} - {now - self._start:.0f}s" +
                         (f" - {metrics}" if metrics else "") + ("\n" if finalize else ""))
        sys.stdout.flush()

    def add(self, n, values=None):
        self.update(self.current + n, values)
