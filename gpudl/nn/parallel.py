"""DistributedDataParallel: one model replica per process, gradients averaged over the group."""

import contextlib

from .. import backend
from .. import distributed as dist
from ..autograd import is_grad_enabled
from ..distributed.reducer import Reducer
from .module import Module


class DistributedDataParallel(Module):
    """Wrap ``module`` so that ``backward`` leaves every rank with the same averaged gradients.

    At wrap time rank 0's parameters and buffers are broadcast to every rank. Each backward
    averages the gradients in buckets of about ``bucket_cap_mb`` MB, launched from gradient hooks
    as the buckets fill (gpudl.distributed.reducer). With ``broadcast_buffers`` rank 0's buffers
    (BatchNorm statistics) are broadcast before every forward. Use ``no_sync()`` to accumulate
    gradients locally over several backward passes; the next synced backward averages the sum.
    ``find_unused_parameters=True`` lets a forward leave parameters out of the loss (their
    gradients are averaged over the ranks that used them, and stay None where no rank did).
    Save checkpoints from ``ddp.module`` (its state dict has no ``module.`` prefix).

    Example:
        >>> dist.init_process_group()
        >>> model = DistributedDataParallel(Net())
        >>> loss_fn(model(x), y).backward()        # gradients averaged over the ranks
    """

    def __init__(self, module, device_ids=None, output_device=None, dim=0,
                 broadcast_buffers=True, process_group=None, bucket_cap_mb=25,
                 find_unused_parameters=False):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be a gpudl.nn.Module, got "
                            f"{type(module).__name__}")
        if not (isinstance(bucket_cap_mb, (int, float)) and bucket_cap_mb > 0):
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be a positive number, "
                             f"got {bucket_cap_mb!r}")
        dist._check_group_arg(process_group, "DistributedDataParallel")
        group = dist._group("DistributedDataParallel")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.require_backward_grad_sync = True
        named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        _broadcast_coalesced(group, [p for _, p in module.named_parameters()]
                             + [b for _, b in module.named_buffers()])
        self.reducer = Reducer([p for _, p in named], group, bucket_cap_mb,
                               self.find_unused_parameters, names=[n for n, _ in named])

    def forward(self, *args, **kwargs):
        if self.broadcast_buffers:
            _broadcast_coalesced(dist._group("DistributedDataParallel"),
                                 [b for _, b in self.module.named_buffers()])
        output = self.module(*args, **kwargs)
        if is_grad_enabled() and self.require_backward_grad_sync:
            self.reducer.prepare_for_backward(output)
        else:
            self.reducer.skip_backward()
        return output

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes of forwards run inside only accumulate ``.grad`` locally."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous


def _broadcast_coalesced(group, tensors):
    """Overwrite ``tensors`` with rank 0's: one broadcast per dtype and device, not per tensor."""
    if group.world_size == 1:
        return
    kinds = {}
    for t in tensors:
        if t is not None and t._data.size:
            kinds.setdefault((t.dtype, t.device), []).append(t)
    for same in kinds.values():
        xp = backend.get_array_module(same[0]._data)
        flat = xp.concatenate([t._data.reshape(-1) for t in same])
        group.broadcast(flat, 0).wait()
        start = 0
        for t in same:
            t._data[...] = flat[start:start + t._data.size].reshape(t._data.shape)
            start += t._data.size
