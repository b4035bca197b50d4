"""What ``gpudl.train.fit`` needs under a process group: shards, combined logs, rank 0's duties.

Without a process group (or with a world of one) ``FitContext`` changes nothing. Under one:
a model not yet wrapped is wrapped in DistributedDataParallel for the call (so Keras-style
``model.fit`` works unchanged) and unwrapped at the end; each epoch's training loader is
replaced by this rank's DistributedSampler shard (equal sizes, so every rank runs the same
number of steps, which DDP's collectives need); validation runs on the unwrapped module over an
unpadded shard, so the combined loss and metrics count every sample exactly once; only rank 0
shows progress and runs ModelCheckpoint; callbacks see the unwrapped module, so checkpoints have
the module's own keys.
"""

import numpy as np

from .. import backend
from ..tensor import Tensor
from . import backends


def active_group():
    """The default group when one is initialized with more than one rank, else None."""
    from . import _state
    group = _state["group"]
    return group if group is not None and group.world_size > 1 else None


class FitContext:
    def __init__(self, model, callbacks, verbose):
        from ..callbacks import ModelCheckpoint
        from ..nn.parallel import DistributedDataParallel
        self.group = active_group()
        self.model = model
        self.callbacks, self.verbose = list(callbacks), verbose
        self.callback_model = self.eval_model = model
        if self.group is None:
            return
        self.wrapped_here = not isinstance(model, DistributedDataParallel)
        if self.wrapped_here:
            self.model = DistributedDataParallel(model)
        self.callback_model = self.eval_model = self.model.module
        if self.group.rank != 0:
            self.verbose = False
            self.callbacks = [cb for cb in self.callbacks if not isinstance(cb, ModelCheckpoint)]

    def close(self):
        """Remove the gradient hooks of a DistributedDataParallel that ``fit`` made."""
        if self.group is not None and self.wrapped_here:
            self.model.reducer.remove()

    def train_loader(self, loader, epoch):
        if self.group is None:
            return loader
        from .sampler import DistributedSampler
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):      # the user sharded it already
            sampler.set_epoch(epoch)
            return loader
        _check_loader(loader, "train_loader")
        sampler = DistributedSampler(loader.dataset, self.group.world_size, self.group.rank,
                                     shuffle=getattr(loader, "shuffle", False),
                                     drop_last=getattr(loader, "drop_last", False))
        sampler.set_epoch(epoch)
        return _loader_over(loader, np.fromiter(sampler, np.int64, len(sampler)))

    def eval_loader(self, loader):
        if self.group is None:
            return loader
        _check_loader(loader, "val_loader")
        n = len(loader.dataset)
        return _loader_over(loader, np.arange(self.group.rank, n, self.group.world_size))

    def combine(self, loss_sum, count, predictions, targets):
        """Sums of loss and count, and every rank's predictions and targets, in rank order."""
        if self.group is None:
            return loss_sum, count, predictions, targets
        totals = self.group.device_array(np.array([loss_sum, count], np.float64))
        self.group.all_reduce(totals, backends.SUM).wait()
        totals = self.group.host_array(totals)
        if predictions is not None:
            predictions, targets = self._gather_rows(predictions), self._gather_rows(targets)
        return float(totals[0]), int(totals[1]), predictions, targets

    def _gather_rows(self, rows):
        """Every rank's ``rows`` (NumPy, any first size) concatenated in rank order."""
        world, group = self.group.world_size, self.group
        sizes = group.device_array(np.zeros((world, 1), np.int64))
        group.all_gather(sizes, group.device_array(np.array([len(rows)], np.int64))).wait()
        sizes = group.host_array(sizes)
        longest = int(sizes.max())
        padded = np.zeros((longest,) + rows.shape[1:], rows.dtype)
        padded[:len(rows)] = rows
        out = group.device_array(np.empty((world,) + padded.shape, rows.dtype))
        group.all_gather(out, group.device_array(padded)).wait()
        out = group.host_array(out)
        return np.concatenate([out[r, :int(sizes[r, 0])] for r in range(world)])


def _check_loader(loader, name):
    if not (hasattr(loader, "dataset") and hasattr(loader, "batch_size")):
        raise TypeError(f"fit: under a process group {name} must be a gpudl DataLoader (each "
                        f"rank takes its shard of loader.dataset), got {type(loader).__name__}")


def _loader_over(loader, indices):
    """A loader like ``loader`` (batch size, drop_last, collate_fn) over ``indices`` in order."""
    from ..data import DataLoader, Subset, TensorDataset
    dataset = loader.dataset
    if isinstance(dataset, TensorDataset):      # one gather per tensor keeps the fast path
        xp_index = [backend.get_array_module(t._data).asarray(indices) for t in dataset.tensors]
        dataset = TensorDataset(*[Tensor._make(t._data[i], False, None, 0, t.device)
                                  for t, i in zip(dataset.tensors, xp_index)])
    else:
        dataset = Subset(dataset, indices)
    return DataLoader(dataset, batch_size=loader.batch_size, shuffle=False,
                      drop_last=getattr(loader, "drop_last", False),
                      collate_fn=getattr(loader, "collate_fn", None))
