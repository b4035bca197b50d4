"""Samplers: which dataset indices a DataLoader visits, and in which batches (torch's classes).

Random samplers draw from a ``numpy.random.Generator`` or an int seed given to them, else from
gpudl's CPU generator at the start of each epoch (so ``gd.manual_seed`` reseeds them).
"""

import numbers

import numpy as np

from . import random


class Sampler:
    """Iterates over dataset indices; subclasses define ``__iter__`` (and ``__len__``)."""

    def __iter__(self):
        raise NotImplementedError


def as_generator(generator, seed, where):
    """A NumPy Generator from ``generator``/``seed``; None means gpudl's CPU generator."""
    if generator is not None and seed is not None:
        raise ValueError(f"{where}: pass generator or seed, not both")
    if seed is not None:
        generator = seed
    if generator is None or isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, random.Generator):     # gd.Generator: its cpu stream
        if generator.device.type != "cpu":
            raise RuntimeError(f"{where}: generator must be a cpu Generator, got one on "
                               f"{generator.device.type}")
        return generator.rng()
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise TypeError(f"{where}: generator must be a gd.Generator, a numpy.random.Generator or an "
                    f"int seed, got {type(generator).__name__}")


def draw_from(generator):
    """The generator to draw from now: the one given, else gpudl's CPU generator."""
    return random.generator("cpu") if generator is None else generator


def overrides_with(obj, fast, method):
    """Whether ``type(obj)``'s ``fast`` (a whole-array shortcut) computes what its ``method``
    does: not when a subclass overrides ``method`` alone (a user's sampler with its own
    ``__iter__``, a TensorDataset with its own ``__getitem__``), whose rule the inherited
    shortcut would skip."""
    def owner(name):
        return next(k for k in type(obj).__mro__ if name in k.__dict__)
    return issubclass(owner(fast), owner(method))


def _positive_int(value, name, where):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    return int(value)


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)

    def order(self):
        """This epoch's indices as one int64 array."""
        return np.arange(len(self.data_source), dtype=np.int64)


class RandomSampler(Sampler):
    """A random permutation each epoch, or ``num_samples`` draws with ``replacement=True``."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        if not isinstance(replacement, bool):
            raise TypeError(f"RandomSampler: replacement must be a bool, got {replacement!r}")
        self.data_source, self.replacement = data_source, replacement
        self._num_samples = None if num_samples is None else _positive_int(
            num_samples, "num_samples", "RandomSampler")
        self.generator = as_generator(generator, None, "RandomSampler")

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        return iter(self.order().tolist())

    def order(self):
        """This epoch's indices as one int64 array (a new draw each call)."""
        n, gen = len(self.data_source), draw_from(self.generator)
        if self.replacement:
            return gen.integers(0, n, size=self.num_samples, dtype=np.int64)
        # without replacement: whole permutations, cut to num_samples (torch's rule)
        rounds = -(-self.num_samples // n) if n else 0
        order = [gen.permutation(n) for _ in range(rounds)] or [np.zeros(0, np.int64)]
        return np.concatenate(order)[:self.num_samples].astype(np.int64, copy=False)

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given ``indices`` in a new random order each epoch (torch's train/validation split
    of one dataset)."""

    def __init__(self, indices, generator=None):
        self.indices = indices
        self.generator = as_generator(generator, None, "SubsetRandomSampler")

    def __iter__(self):
        return iter(self.order().tolist())

    def order(self):
        """This epoch's indices as one int64 array (a new permutation each call)."""
        picked = draw_from(self.generator).permutation(len(self.indices))
        return np.asarray(self.indices, dtype=np.int64).reshape(-1)[picked]

    def __len__(self):
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """``num_samples`` indices drawn with probability proportional to ``weights``."""

    def __init__(self, weights, num_samples, replacement=True, generator=None):
        weights = np.asarray(weights.numpy() if hasattr(weights, "numpy") else weights,
                             dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0:
            raise ValueError(f"WeightedRandomSampler: weights must be a non-empty 1-D sequence, "
                             f"got shape {weights.shape}")
        if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("WeightedRandomSampler: weights must be finite, non-negative and "
                             "not all zero")
        self.num_samples = _positive_int(num_samples, "num_samples", "WeightedRandomSampler")
        if not isinstance(replacement, bool):
            raise TypeError(f"WeightedRandomSampler: replacement must be a bool, got "
                            f"{replacement!r}")
        if not replacement and self.num_samples > np.count_nonzero(weights):
            raise ValueError(f"WeightedRandomSampler: cannot draw {self.num_samples} samples "
                             f"without replacement from {np.count_nonzero(weights)} non-zero "
                             "weights")
        self.weights, self.replacement = weights, replacement
        self.generator = as_generator(generator, None, "WeightedRandomSampler")

    def __iter__(self):
        gen = draw_from(self.generator)
        drawn = gen.choice(self.weights.size, size=self.num_samples, replace=self.replacement,
                           p=self.weights / self.weights.sum())
        return iter(drawn.tolist())

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Groups the indices of ``sampler`` into lists of ``batch_size`` (the last one shorter
    unless ``drop_last``)."""

    def __init__(self, sampler, batch_size, drop_last):
        self.sampler = sampler
        self.batch_size = _positive_int(batch_size, "batch_size", "BatchSampler")
        if not isinstance(drop_last, bool):
            raise TypeError(f"BatchSampler: drop_last must be a bool, got {drop_last!r}")
        self.drop_last = drop_last

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def index_arrays(self):
        """The same batches as int64 arrays, cut from the sampler's whole order when it can give
        one (no Python int per sample: what the DataLoader iterates)."""
        if not (hasattr(self.sampler, "order") and overrides_with(self.sampler, "order",
                                                                 "__iter__")):
            return (np.asarray(batch, dtype=np.int64) for batch in self)
        order = self.sampler.order()
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        return (order[a:a + self.batch_size] for a in range(0, stop, self.batch_size))
