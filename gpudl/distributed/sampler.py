"""DistributedSampler: each rank's share of a data set's indices, as PyTorch partitions them."""

import math
import numbers

import numpy as np


def _count(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"DistributedSampler: {name} must be an int, got {type(value).__name__}")
    return int(value)


# torch.randperm on the CPU (randperm_cpu in ATen's TensorFactories.cpp) shuffles in two ways:
# for ``n < std::numeric_limits<uint32_t>::max() / 20`` a Fisher-Yates with one 32-bit draw per
# swap, from there on the "inside-out" Fisher-Yates with 64-bit draws
WIDE_DRAWS_FROM = (2**32 - 1) // 20
_CHUNK = 1 << 20          # draws made at a time: memory stays small for any n


def torch_draws(rng, count, wide):
    """The next ``count`` values of torch's CPU ``random()`` (32 bits) or ``random64()`` (two
    32-bit draws, the first the high half), as uint64."""
    draws = rng.randint(0, 2**32, size=count * (2 if wide else 1), dtype=np.uint32)
    draws = draws.astype(np.uint64)
    return (draws[0::2] << np.uint64(32)) | draws[1::2] if wide else draws


def torch_randperm(n, seed):
    """``torch.randperm(n, generator=torch.Generator().manual_seed(seed))`` without torch.

    PyTorch's CPU generator is a standard MT19937 seeded with the seed's low 32 bits, which is
    NumPy's ``RandomState``. Below ``WIDE_DRAWS_FROM`` its randperm swaps position i with
    i + (next 32-bit draw) % (n - i) for i = 0 .. n - 2; from there on, for i = 0 .. n - 1,
    z = (next 64-bit draw) % (i + 1), ``order[i] = order[z]``, ``order[z] = i``.
    """
    from ..kernels.permutation import fisher_yates, inside_out
    rng = np.random.RandomState(seed & 0xFFFFFFFF)
    order = np.arange(n, dtype=np.int64)
    wide = n >= WIDE_DRAWS_FROM
    steps, shuffle = (n, inside_out) if wide else (max(n - 1, 0), fisher_yates)
    for start in range(0, steps, _CHUNK):
        shuffle(order, torch_draws(rng, min(_CHUNK, steps - start), wide), start)
    return order


class DistributedSampler:
    """Indices of the ``rank``-th of ``num_replicas`` equal shards of ``dataset``.

    As PyTorch's: every rank draws the same order (a permutation seeded by ``seed + epoch`` when
    ``shuffle``, else 0..N-1), pads it by repeating its start to a multiple of ``num_replicas``
    (or, with ``drop_last``, cuts the tail), and takes every ``num_replicas``-th index from
    ``rank``. Call ``set_epoch(epoch)`` before each epoch for a new order. The permutation is
    the one ``torch.randperm`` draws from a generator seeded with ``seed + epoch``, so each rank
    gets exactly the indices PyTorch's sampler gives it.

    Args:
        dataset: anything with ``__len__``.
        num_replicas, rank: default to the process group's world size and rank.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        if num_replicas is None or rank is None:
            from . import get_rank, get_world_size, is_initialized
            if not is_initialized():
                raise RuntimeError("DistributedSampler: pass num_replicas= and rank=, or call "
                                   "gpudl.distributed.init_process_group() first")
            num_replicas = get_world_size() if num_replicas is None else num_replicas
            rank = get_rank() if rank is None else rank
        num_replicas, rank = _count(num_replicas, "num_replicas"), _count(rank, "rank")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: need num_replicas >= 1 and 0 <= rank < "
                             f"num_replicas, got num_replicas={num_replicas}, rank={rank}")
        if not hasattr(dataset, "__len__"):
            raise TypeError(f"DistributedSampler: dataset must define __len__, got "
                            f"{type(dataset).__name__}")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed, self.drop_last = bool(shuffle), _count(seed, "seed"), drop_last
        self.epoch = 0
        n = len(dataset)
        if drop_last and n % num_replicas:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch):
        """Use the order of ``epoch`` (same on every rank for the same seed)."""
        self.epoch = _count(epoch, "epoch")

    def _order(self):
        n = len(self.dataset)
        if self.shuffle:
            return torch_randperm(n, self.seed + self.epoch)
        return np.arange(n)

    def __iter__(self):
        order = np.asarray(self._order(), dtype=np.int64)
        if self.drop_last:
            order = order[:self.total_size]
        elif len(order) < self.total_size:
            order = np.resize(order, self.total_size)        # repeats from the start
        return iter(order[self.rank:self.total_size:self.num_replicas].tolist())

    def __len__(self):
        return self.num_samples
