"""Datasets, the DataLoader, and small real data sets that load offline.

``DataLoader`` batches any ``Dataset`` (``__len__`` + ``__getitem__``) with ``default_collate``;
for a ``TensorDataset`` it gathers whole batches with one indexing operation per tensor instead of
collating samples one by one. Shuffling draws from gpudl's CPU generator (``gd.manual_seed``) or
from the generator/seed given, so the same seed gives the same batches.
"""

import bisect
import itertools
import math
import numbers

import numpy as np

from . import backend, workers
from .creation import tensor
from .samplers import (BatchSampler, RandomSampler, Sampler, SequentialSampler,  # noqa: F401
                       SubsetRandomSampler, WeightedRandomSampler, as_generator, draw_from,
                       overrides_with)
from .tensor import Tensor
from .workers import get_worker_info  # noqa: F401  (torch.utils.data's name)


class Dataset:
    """A map-style data set: subclasses define ``__len__`` and ``__getitem__(index)``. No
    ``__len__`` here (as torch): a stream's ``len()`` raises TypeError, which ``list()`` and
    ``len()``-probing code take as "no length", not an error."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__}: a Dataset subclass must define "
                                  "__getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


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


class ConcatDataset(Dataset):
    """The samples of ``datasets`` one after another; ``cumulative_sizes[i]`` is the length of
    the first ``i + 1`` together, as torch's."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __getitem__(self, index):
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"ConcatDataset: index {index} is out of range for length {n}")
        index %= n
        which = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[which - 1] if which else 0
        return self.datasets[which][index - start]

    def __len__(self):
        return self.cumulative_sizes[-1]


class StackDataset(Dataset):
    """Samples of several data sets of one length taken together: ``StackDataset(a, b)[i]`` is
    ``(a[i], b[i])``, ``StackDataset(x=a, y=b)[i]`` is ``{'x': a[i], 'y': b[i]}`` (torch's)."""

    def __init__(self, *args, **kwargs):
        if args and kwargs:
            raise ValueError("StackDataset: supported either tuple-like (via args) or dict-like "
                             "(via kwargs) input/output, but both types are given")
        if not args and not kwargs:
            raise ValueError("StackDataset: at least one dataset should be passed")
        self.datasets = args or kwargs
        lengths = {len(d) for d in (args or kwargs.values())}
        if len(lengths) != 1:
            raise ValueError(f"StackDataset: size mismatch between datasets, got lengths "
                             f"{sorted(lengths)}")
        self._length = lengths.pop()

    def __getitem__(self, index):
        if isinstance(self.datasets, dict):
            return {key: dataset[index] for key, dataset in self.datasets.items()}
        return tuple(dataset[index] for dataset in self.datasets)

    def __len__(self):
        return self._length


class IterableDataset(Dataset):
    """A data set read as a stream: subclasses define ``__iter__``, yielding samples. A
    DataLoader batches them in order (no shuffle or sampler); with ``num_workers`` > 0 each
    worker reads its own copy (shard it with ``get_worker_info()``, as in torch) and the loader
    takes a batch from each worker in turn."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__}: an IterableDataset subclass must "
                                  "define __iter__")

    def __add__(self, other):
        return ChainDataset([self, other])


class ChainDataset(IterableDataset):
    """The samples of each IterableDataset in ``datasets``, one stream after another."""

    def __init__(self, datasets):
        self.datasets = list(datasets)

    def __iter__(self):
        return itertools.chain.from_iterable(self.datasets)


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
    order = draw_from(as_generator(generator, seed, "random_split")).permutation(n)
    bounds = np.cumsum([0] + lengths)
    return [Subset(dataset, order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def default_collate(samples):
    """Stack a list of samples into a batch, keeping the structure of one sample.

    Tensors and NumPy arrays are stacked along a new first axis (dtype kept); Python and NumPy
    numbers become a 1-D tensor (ints int64, floats float32 as ``gd.tensor`` makes them, not
    torch's float64); tuples, lists and dicts are collated element by element (a tuple gives a
    list, as torch's; a namedtuple keeps its type); strings and anything else stay a list.
    """
    first = samples[0]
    if isinstance(first, (Tensor, np.ndarray)) and any(s.shape != first.shape for s in samples):
        raise ValueError(f"default_collate: samples have different shapes "
                         f"{sorted({tuple(s.shape) for s in samples})}; pass a collate_fn that "
                         "pads or packs them")
    if isinstance(first, Tensor):
        xp = backend.get_array_module(first._data)
        return Tensor._make(xp.stack([s._data for s in samples]), False, None, 0, first.device)
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
        return _like(first, [default_collate(list(column)) for column in zip(*samples)])
    return list(samples)


class DataLoader:
    """Iterate over ``dataset`` in batches, as ``torch.utils.data.DataLoader``.

    Args:
        dataset: a ``Dataset`` (anything with ``__len__`` and ``__getitem__``).
        batch_size: samples per batch (None: no batching; each sample is converted alone).
        shuffle: a new random order every epoch (see ``generator``/``seed``).
        sampler: the order of indices (a ``Sampler`` or any iterable of indices); excludes
            ``shuffle``.
        batch_sampler: an iterable of index lists; excludes batch_size, shuffle, sampler and
            drop_last.
        num_workers: worker processes that load batches while the main process trains (0: load
            in the main process). Workers make cpu tensors, as torch's do: move batches with
            ``.to(device)``. A TensorDataset holding cuda tensors is gathered in the main process.
        collate_fn: list of samples -> batch; ``default_collate`` by default.
        pin_memory: batches in page-locked host memory, for faster copies to the GPU (a no-op
            without CUDA).
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        timeout: seconds to wait for a worker's batch (0: forever).
        worker_init_fn: called as ``worker_init_fn(worker_id)`` in each worker, after seeding.
        multiprocessing_context: a start method name or context ("fork" on Linux by default).
        generator, seed: a ``numpy.random.Generator`` or an int seed for the shuffling and the
            workers' base seed; by default gpudl's CPU generator, which ``gd.manual_seed`` reseeds.
        prefetch_factor: batches loaded ahead per worker (2 by default when num_workers > 0).
        persistent_workers: keep the workers alive from one epoch to the next.

    Batches never share memory with the dataset: editing a batch in place leaves the data alone.

    Example:
        >>> loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
        >>> for xb, yb in loader: ...
    """

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                 worker_init_fn=None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor=None, persistent_workers=False, seed=None):
        if not isinstance(dataset, IterableDataset) and not (
                hasattr(dataset, "__getitem__") and (hasattr(dataset, "__len__")
                                                     or sampler is not None
                                                     or batch_sampler is not None)):
            raise TypeError("DataLoader: dataset must define __len__ and __getitem__ (or "
                            "__getitem__ and a sampler that names its indices), or be an "
                            f"IterableDataset, got {type(dataset).__name__}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
                batch_size, numbers.Integral) or batch_size <= 0):
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        for name, value in (("collate_fn", collate_fn), ("worker_init_fn", worker_init_fn)):
            if value is not None and not callable(value):
                raise TypeError(f"DataLoader: {name} must be callable, got {type(value).__name__}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) \
                or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers must be a non-negative int, got "
                             f"{num_workers!r}")
        if num_workers == 0 and (prefetch_factor is not None or persistent_workers):
            raise ValueError("DataLoader: prefetch_factor and persistent_workers need "
                             "num_workers > 0")
        prefetch_factor = 2 if prefetch_factor is None else prefetch_factor
        if isinstance(prefetch_factor, bool) or not isinstance(prefetch_factor, numbers.Integral) \
                or prefetch_factor <= 0:
            raise ValueError(f"DataLoader: prefetch_factor must be a positive int, got "
                             f"{prefetch_factor!r}")
        if not isinstance(timeout, numbers.Real) or timeout < 0:
            raise ValueError(f"DataLoader: timeout must be a non-negative number, got {timeout!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None
                                          or drop_last):
            raise ValueError("DataLoader: batch_sampler option is mutually exclusive with "
                             "batch_size, shuffle, sampler, and drop_last")
        self.dataset, self.num_workers = dataset, int(num_workers)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.collate_fn, self.pin_memory = collate_fn, bool(pin_memory)
        self.timeout, self.worker_init_fn = timeout, worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.prefetch_factor, self.persistent_workers = int(prefetch_factor), persistent_workers
        self.generator = as_generator(generator, seed, "DataLoader")
        self.batch_size = None if batch_sampler is not None else batch_size
        self._pool = None
        self._stream = isinstance(dataset, IterableDataset)
        if self._stream:
            _check_stream_options(shuffle, sampler, batch_sampler)
            self.sampler = self.batch_sampler = None
            return
        if batch_sampler is None and batch_size is not None:
            if sampler is None:
                sampler = (RandomSampler(dataset, generator=self.generator) if self.shuffle
                           else SequentialSampler(dataset))
            batch_sampler = BatchSampler(sampler, int(batch_size), self.drop_last)
        self.sampler = sampler if sampler is not None else SequentialSampler(dataset)
        self.batch_sampler = batch_sampler

    def __len__(self):
        if self._stream:              # a stream with a length (else its len() raises)
            n, size = len(self.dataset), self.batch_size
            return n if size is None else n // size if self.drop_last else -(-n // size)
        return len(self.batch_sampler if self.batch_sampler is not None else self.sampler)

    def _index_batches(self):
        if self.batch_sampler is None:               # batch_size=None: one sample at a time
            return (index for index in self.sampler)
        if isinstance(self.batch_sampler, BatchSampler) and overrides_with(
                self.batch_sampler, "index_arrays", "__iter__"):
            return self.batch_sampler.index_arrays()
        return iter(self.batch_sampler)

    def _fetch(self, indices):
        """The batch for ``indices`` (a list, or one index when batch_size is None)."""
        if self.batch_sampler is None:
            return (self.collate_fn or _convert)(_load(self.dataset, indices))
        if (isinstance(self.dataset, TensorDataset) and self.collate_fn is None
                and type(self.dataset).__getitem__ is TensorDataset.__getitem__):
            rows = _rows(indices)
            return [_gather(t, rows) for t in self.dataset.tensors]     # a list, as torch
        return (self.collate_fn or default_collate)([_load(self.dataset, int(i))
                                                     for i in indices])

    def _stream_batches(self):
        samples = iter(self.dataset)
        if self.batch_size is None:
            yield from ((self.collate_fn or _convert)(sample) for sample in samples)
            return
        collate = self.collate_fn or default_collate
        while True:
            batch = list(itertools.islice(samples, self.batch_size))
            if not batch or (self.drop_last and len(batch) < self.batch_size):
                return
            yield collate(batch)

    def __iter__(self):
        # every new iterator draws the workers' base seed, as torch's, before the sampler's
        # first draw and with or without workers: the order then does not depend on
        # num_workers (persistent workers, already running, draw none, as torch's reused one)
        pool = self._pool
        base_seed = (None if pool is not None and pool.alive else
                     int(draw_from(self.generator).integers(0, 2 ** 63 - 1)))
        if self._stream:
            produced = (self._stream_batches() if self.num_workers == 0
                        else self._from_workers(None, base_seed))
        else:
            batches = self._index_batches()
            if self.num_workers == 0 or _on_gpu(self.dataset):
                produced = (self._fetch(indices) for indices in batches)
            else:
                produced = self._from_workers(batches, base_seed)
        return (_pinned(batch) for batch in produced) if self.pin_memory else produced

    def _from_workers(self, batches, base_seed):
        """The batches of index lists ``batches`` loaded by the workers; ``batches`` None: a
        stream's, each worker batching its own pass over it (workers.StreamBatches)."""
        pool = self._pool
        if pool is None or not pool.alive:
            if base_seed is None:            # the persistent pool died since __iter__ looked
                base_seed = int(draw_from(self.generator).integers(0, 2 ** 63 - 1))
            fetch = workers.StreamBatches(self._stream_batches) if self._stream else self._fetch
            pool = workers.WorkerPool(fetch, self.dataset, self.num_workers, base_seed,
                                      self.worker_init_fn, self.multiprocessing_context,
                                      self.timeout)
            if self.persistent_workers:
                self._pool = pool
        try:
            yield from (pool.run_streams(self.prefetch_factor) if batches is None
                        else pool.run(batches, self.prefetch_factor))
        finally:
            if not self.persistent_workers:
                pool.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pool"] = None            # worker processes stay with the loader that made them
        return state


def _check_stream_options(shuffle, sampler, batch_sampler):
    for name, value in (("shuffle", shuffle), ("sampler", sampler),
                        ("batch_sampler", batch_sampler)):
        if value:
            raise ValueError(f"DataLoader with IterableDataset: expected unspecified {name} "
                             f"option, but got {name}={value!r}")


def _load(dataset, index):
    """``dataset[index]``, re-raising a failure with the same type, naming the index."""
    try:
        return dataset[index]
    except Exception as exc:
        raise workers.same_type_error(
            type(exc), f"{exc} (DataLoader: raised by dataset[{index}])") from exc


def _convert(sample):
    """batch_size=None: a sample's NumPy arrays and scalars become tensors; Python numbers and
    the structure stay, as torch's default_convert."""
    return _map_leaves(lambda leaf: tensor(leaf) if isinstance(leaf, (np.ndarray, np.number))
                       else leaf, sample)


default_convert = _convert


def _map_leaves(fn, batch):
    """``batch`` with ``fn`` applied to everything inside its dicts, tuples and lists."""
    if isinstance(batch, dict):
        return {key: _map_leaves(fn, value) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return _like(batch, [_map_leaves(fn, value) for value in batch])
    return fn(batch)


def _like(sequence, items):
    """``items`` in the kind of sequence torch's collate, convert and pin_memory give for
    ``sequence``: a namedtuple keeps its type, a plain tuple becomes a list."""
    if hasattr(sequence, "_fields"):
        return type(sequence)(*items)
    return list(items) if isinstance(sequence, tuple) else type(sequence)(items)


def _rows(indices):
    """A slice when ``indices`` are consecutive (a cheap copy), else an int64 array."""
    rows = np.asarray(indices, dtype=np.int64)
    if rows.size and rows[-1] - rows[0] == rows.size - 1 and (np.diff(rows) == 1).all():
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def _gather(t, rows):
    """Rows of a tensor as a new tensor with no graph, never a view of the data set."""
    if isinstance(rows, slice):
        return Tensor._make(t._data[rows].copy(), False, None, 0, t._device)
    return Tensor._make(t._data[backend.get_array_module(t._data).asarray(rows)], False, None, 0,
                        t._device)


def _on_gpu(dataset):
    """True for a TensorDataset in GPU memory: workers (host processes) cannot read it."""
    return isinstance(dataset, TensorDataset) and any(
        backend.is_device_array(t._data) for t in dataset.tensors)


def _pinned(batch):
    """``batch`` with its host tensors copied to page-locked memory (CUDA only)."""
    return _map_leaves(lambda leaf: Tensor._make(backend.pinned_copy(leaf._data), False, None, 0,
                                                 "cpu")
                       if isinstance(leaf, Tensor) and leaf._device == "cpu" else leaf, batch)


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
