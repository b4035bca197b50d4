"""Datasets, the DataLoader, and small real data sets that load offline.

``DataLoader`` batches any ``Dataset`` (``__len__`` + ``__getitem__``) with ``default_collate``;
for a ``TensorDataset`` it gathers whole batches with one indexing operation per tensor instead of
collating samples one by one. Shuffling draws from gpudl's CPU generator (``gd.manual_seed``) or
from the generator/seed given, so the same seed gives the same batches.
"""

import math
import numbers

import numpy as np

from . import backend, random
from .creation import tensor
from .tensor import Tensor


class Dataset:
    """A map-style data set: subclasses define ``__len__`` and ``__getitem__(index)``."""

    def __getitem__(self, index):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError


class TensorDataset(Dataset):
    """Samples are ``(t[i] for t in tensors)``: tensors (or arrays) sharing their first size.

    Example:
        >>> ds = TensorDataset(x, y)        # x (N, 1, 8, 8), y (N,)
        >>> image, label = ds[0]
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: expected at least one tensor")
        tensors = tuple(t if isinstance(t, Tensor) else tensor(t) for t in tensors)
        sizes = [t.shape[0] if t.ndim else None for t in tensors]
        if None in sizes or len(set(sizes)) != 1:
            raise ValueError("TensorDataset: all tensors must have the same first size, got "
                             f"shapes {[t.shape for t in tensors]}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, [int(i) for i in indices]

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __len__(self):
        return len(self.indices)


def _as_generator(generator, seed, where):
    """A NumPy Generator from ``generator``/``seed``; None means gpudl's CPU generator."""
    if generator is not None and seed is not None:
        raise ValueError(f"{where}: pass generator or seed, not both")
    if seed is not None:
        generator = seed
    if generator is None or isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise TypeError(f"{where}: generator must be a numpy.random.Generator or an int seed, got "
                    f"{type(generator).__name__}")


def _permutation(n, generator):
    return random.permutation(n, "cpu") if generator is None else generator.permutation(n)


def random_split(dataset, lengths, generator=None, seed=None):
    """Split ``dataset`` into non-overlapping random ``Subset``s of the given lengths (ints
    summing to ``len(dataset)``, or fractions summing to 1, remainders going round-robin)."""
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1):
        counts = [math.floor(n * f) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n or any(x < 0 for x in lengths):
        raise ValueError(f"random_split: lengths {lengths} must be non-negative and sum to the "
                         f"data set's length {n} (or be fractions summing to 1)")
    order = _permutation(n, _as_generator(generator, seed, "random_split"))
    bounds = np.cumsum([0] + lengths)
    return [Subset(dataset, order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def default_collate(samples):
    """Stack a list of samples into a batch, keeping the structure of one sample.

    Tensors and NumPy arrays are stacked along a new first axis (dtype kept); Python and NumPy
    numbers become a 1-D tensor (ints int64, floats float32 as ``gd.tensor`` makes them, not
    torch's float64); tuples, lists and dicts are collated element by element; strings and
    anything else stay a list.
    """
    first = samples[0]
    if isinstance(first, (Tensor, np.ndarray)) and any(s.shape != first.shape for s in samples):
        raise ValueError(f"default_collate: samples have different shapes "
                         f"{sorted({tuple(s.shape) for s in samples})}; pass a collate_fn that "
                         "pads or packs them")
    if isinstance(first, Tensor):
        xp = backend.get_array_module(first.data)
        return Tensor._make(xp.stack([s.data for s in samples]), False, None, 0, first.device)
    if isinstance(first, np.ndarray):
        return tensor(np.stack(samples))
    if isinstance(first, (numbers.Number, np.number, np.bool_)):
        return tensor(list(samples))
    if isinstance(first, dict):
        return {key: default_collate([s[key] for s in samples]) for key in first}
    if isinstance(first, (tuple, list)):
        if any(len(s) != len(first) for s in samples):
            raise ValueError("default_collate: samples have different lengths: "
                             f"{sorted({len(s) for s in samples})}")
        columns = [default_collate(list(column)) for column in zip(*samples)]
        return type(first)(*columns) if hasattr(first, "_fields") else type(first)(columns)
    return list(samples)


class DataLoader:
    """Iterate over ``dataset`` in batches.

    Args:
        dataset: a ``Dataset`` (anything with ``__len__`` and ``__getitem__``).
        batch_size: samples per batch.
        shuffle: a new random order every epoch (see ``generator``/``seed``).
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        collate_fn: list of samples -> batch; ``default_collate`` by default.
        generator, seed: a ``numpy.random.Generator`` or an int seed for the shuffling; by
            default gpudl's CPU generator, which ``gd.manual_seed`` reseeds.

    Example:
        >>> loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
        >>> for xb, yb in loader: ...
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, collate_fn=None,
                 generator=None, seed=None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError("DataLoader: dataset must define __len__ and __getitem__, got "
                            f"{type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader: collate_fn must be callable, got "
                            f"{type(collate_fn).__name__}")
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.collate_fn = collate_fn
        self.generator = _as_generator(generator, seed, "DataLoader")

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _batches(self):
        """Index arrays (shuffled) or slices (in order), one per batch."""
        n = len(self.dataset)
        stop = len(self) * self.batch_size if self.drop_last else n
        starts = range(0, stop, self.batch_size)
        if not self.shuffle:
            return [slice(a, min(a + self.batch_size, n)) for a in starts]
        order = _permutation(n, self.generator)
        return [order[a:a + self.batch_size] for a in starts]

    def __iter__(self):
        fast = isinstance(self.dataset, TensorDataset) and self.collate_fn is None
        collate = self.collate_fn or default_collate
        for index in self._batches():
            if fast:
                yield tuple(_gather(t, index) for t in self.dataset.tensors)
            else:
                items = range(index.start, index.stop) if isinstance(index, slice) else index
                yield collate([self.dataset[int(i)] for i in items])


def _gather(t, index):
    """Rows ``index`` (a slice or an int array) of a tensor, as a new tensor with no graph."""
    if not isinstance(index, slice):
        index = backend.get_array_module(t.data).asarray(index)
    return Tensor._make(t.data[index], False, None, 0, t.device)


# ----------------------------------------------------------------- real data sets
def _require(module, what):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise ImportError(f"{what} needs the optional package {module.split('.')[0]!r}: "
                          "pip install gpudl[data]") from exc


def load_digits(as_tensors=True):
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), bundled offline.

    Returns:
        (images, labels): images ``(1797, 1, 8, 8)`` float32 scaled to [0, 1], labels
        ``(1797,)`` int64; Tensors, or NumPy arrays with ``as_tensors=False``.
    """
    datasets = _require("sklearn.datasets", "load_digits")
    digits = datasets.load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]      # (N, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    return (tensor(images), tensor(labels)) if as_tensors else (images, labels)


def load_sunspots(as_tensors=True):
    """Yearly mean sunspot numbers 1700-2008 (309 values, from statsmodels), bundled offline.

    Returns:
        (years, values): ``(309,)`` int64 years and ``(309,)`` float32 sunspot numbers;
        Tensors, or NumPy arrays with ``as_tensors=False``.
    """
    sunspots = _require("statsmodels.datasets.sunspots", "load_sunspots")
    frame = sunspots.load_pandas().data
    years = frame["YEAR"].to_numpy().astype(np.int64)
    values = frame["SUNACTIVITY"].to_numpy().astype(np.float32)
    return (tensor(years), tensor(values)) if as_tensors else (years, values)


def sliding_windows(series, window, horizon=1):
    """Supervised pairs from a 1-D series for sequence models.

    Returns:
        (inputs, targets): ``inputs[i] = series[i : i + window]`` shaped ``(N, window, 1)`` and
        ``targets[i] = series[i + window : i + window + horizon]`` shaped ``(N, horizon)``, with
        ``N = len(series) - window - horizon + 1``; NumPy in, NumPy out; Tensor in, Tensor out.
    """
    values = series.numpy() if isinstance(series, Tensor) else np.asarray(series)
    if values.ndim != 1:
        raise ValueError(f"sliding_windows: series must be 1-D, got shape {values.shape}")
    if window < 1 or horizon < 1 or window + horizon > len(values):
        raise ValueError(f"sliding_windows: need 1 <= window, 1 <= horizon and window + horizon "
                         f"<= len(series); got window={window}, horizon={horizon}, "
                         f"len(series)={len(values)}")
    views = np.lib.stride_tricks.sliding_window_view(values, window + horizon)
    inputs = np.ascontiguousarray(views[:, :window, None])      # (N, window, 1)
    targets = np.ascontiguousarray(views[:, window:])           # (N, horizon)
    if isinstance(series, Tensor):
        return tensor(inputs, device=series.device), tensor(targets, device=series.device)
    return inputs, targets
from .distributed.sampler import DistributedSampler  # noqa: E402,F401 (gpudl.distributed's)
