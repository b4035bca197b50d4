"""BatchNorm1d, BatchNorm2d, LayerNorm and GroupNorm, with PyTorch's parameters, buffers and defaults."""

from .. import creation, dtypes
from ..ops._util import is_int
from ..ops.local_response_norm import local_response_norm
from ..ops.normalization import batch_norm, group_norm, instance_norm, layer_norm, rms_norm
from . import init
from .module import Module, Parameter


class _BatchNorm(Module):
    """Shared by BatchNorm1d/2d: ``weight``/``bias`` (affine), and the buffers
    ``running_mean``, ``running_var`` and int64 ``num_batches_tracked`` (track_running_stats).
    ``momentum=None`` makes the running statistics a cumulative average."""

    _ndims = ()
    # torch's checkpoints from before num_batches_tracked (and its state dicts rebuilt as plain
    # dicts, which lose their version) load without it: the counter keeps its value
    _optional_state = ("num_batches_tracked",)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        if not is_int(num_features) or num_features <= 0:
            raise ValueError(f"{type(self).__name__}: num_features must be a positive int, got "
                             f"{num_features!r}")
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        dtype = dtypes.as_dtype(dtype, type(self).__name__) or dtypes.DEFAULT_FLOAT
        if affine:
            self.weight = Parameter(creation.ones(num_features, dtype=dtype, device=device))
        else:
            self.register_parameter("weight", None)
        if affine and bias:
            self.bias = Parameter(creation.zeros(num_features, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean",
                                 creation.zeros(num_features, dtype=dtype, device=device))
            self.register_buffer("running_var",
                                 creation.ones(num_features, dtype=dtype, device=device))
            self.register_buffer("num_batches_tracked",
                                 creation.tensor(0, dtype=dtypes.int64, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input):
        if input.ndim not in self._ndims:
            raise ValueError(f"{type(self).__name__}: expected "
                             f"{' or '.join(f'{n}D' for n in self._ndims)} input, got "
                             f"{input.ndim}D input of shape {input.shape}")
        momentum = 0.0 if self.momentum is None else self.momentum
        counts = self.training and self.track_running_stats
        if counts and self.momentum is None:    # cumulative moving average, on the device
            momentum = (self.num_batches_tracked.double() + 1).reciprocal()
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        out = batch_norm(input, self.running_mean if track else None,
                         self.running_var if track else None, self.weight, self.bias,
                         use_batch_stats, momentum, self.eps)
        if counts:      # after the call: a batch it refuses is not counted (torch counts it)
            self.num_batches_tracked.add_(1)
        return out

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) input over N (and L) per channel."""

    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input over N, H and W per channel."""

    _ndims = (4,)


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` dims; ``weight`` (ones) and ``bias``
    (zeros) of that shape when ``elementwise_affine``."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if is_int(normalized_shape):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(n) for n in normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        dtype = dtypes.as_dtype(dtype, "LayerNorm") or dtypes.DEFAULT_FLOAT
        if elementwise_affine:
            self.weight = Parameter(creation.ones(self.normalized_shape, dtype=dtype,
                                                  device=device))
            if bias:
                self.bias = Parameter(creation.zeros(self.normalized_shape, dtype=dtype,
                                                     device=device))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input):
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalise (N, C, ...) input over groups of C / num_groups channels; per-channel
    ``weight`` (ones) and ``bias`` (zeros) when ``affine``."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, bias=True, device=None,
                 dtype=None):
        super().__init__()
        if not is_int(num_groups) or not is_int(num_channels) \
                or num_groups <= 0 or num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels!r}) must be divisible by "
                             f"a positive num_groups ({num_groups!r})")
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps, self.affine = eps, affine
        dtype = dtypes.as_dtype(dtype, "GroupNorm") or dtypes.DEFAULT_FLOAT
        self.register_parameter("weight", Parameter(creation.ones(
            num_channels, dtype=dtype, device=device)) if affine else None)
        self.register_parameter("bias", Parameter(creation.zeros(
            num_channels, dtype=dtype, device=device)) if affine and bias else None)

    reset_parameters = LayerNorm.reset_parameters      # ones and zeros, where present

    def forward(self, input):
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class _InstanceNorm(_BatchNorm):
    """Shared by InstanceNorm1d/2d: torch's defaults (affine=False, track_running_stats=False);
    input statistics in training or without running stats, else the running ones."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)

    def forward(self, input):
        if input.ndim not in self._ndims:
            raise ValueError(f"{type(self).__name__}: expected "
                             f"{' or '.join(f'{n}D' for n in self._ndims)} input, got "
                             f"{input.ndim}D input of shape {input.shape}")
        unbatched = input.ndim == self._ndims[0]
        x = input.unsqueeze(0) if unbatched else input
        out = instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats,
                            # momentum=None leaves the running statistics as they are (torch)
                            0.0 if self.momentum is None else self.momentum, self.eps)
        return out.squeeze(0) if unbatched else out


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation of (N, C, L) or (C, L) input over L per sample and channel."""

    _ndims = (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation of (N, C, H, W) or (C, H, W) input over H, W per sample/channel."""

    _ndims = (3, 4)


class RMSNorm(Module):
    """Divide by the root mean square over the trailing ``normalized_shape`` dims (plus
    ``eps``; None: the dtype's machine epsilon), then scale by ``weight`` (ones) when
    ``elementwise_affine``; no centring and no bias."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None,
                 dtype=None):
        super().__init__()
        if is_int(normalized_shape):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(n) for n in normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        dtype = dtypes.as_dtype(dtype, "RMSNorm") or dtypes.DEFAULT_FLOAT
        self.register_parameter("weight", Parameter(creation.ones(
            self.normalized_shape, dtype=dtype, device=device)) if elementwise_affine else None)

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)

    def forward(self, input):
        return rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


# --------------------------------------------------------------------------- nn-vision
class BatchNorm3d(_BatchNorm):
    """Batch normalisation of (N, C, D, H, W) input over N, D, H and W per channel."""

    _ndims = (5,)


class InstanceNorm3d(_InstanceNorm):
    """Instance normalisation of (N, C, D, H, W) or (C, D, H, W) input over D, H, W per sample
    and channel."""

    _ndims = (4, 5)


class LocalResponseNorm(Module):
    """``F.local_response_norm`` across channels: input / (k + alpha / size * the sum of squares
    over ``size`` neighbouring channels) ** beta. Input (N, C, *), at least 3-D."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input):
        return local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over (N, C, *) input whose batch statistics, in torch, are those of the whole
    batch across the processes of ``process_group``. Here it is BatchNorm of this process's
    batch: alone (no process group, or a world size of 1) and in eval mode that is exactly
    torch's; training with gpudl.distributed's group of more than one process is refused, as
    gpudl has no differentiable all-reduce of the statistics yet (use BatchNorm and DDP, or
    eval-mode statistics)."""

    _ndims = (2, 3, 4, 5)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype)
        self.process_group = process_group

    def forward(self, input):
        if self.training:
            import sys
            distributed = sys.modules.get("gpudl.distributed")    # loaded only when used
            if distributed is not None and distributed.is_initialized() \
                    and distributed.get_world_size(self.process_group) > 1:
                raise RuntimeError(
                    f"SyncBatchNorm: training across {distributed.get_world_size()} processes "
                    "needs the batch statistics all-reduced through the graph, which gpudl does "
                    "not do; use BatchNorm (each process's own statistics) or eval mode")
        return super().forward(input)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every BatchNorm*d in it (itself included) replaced by a
        SyncBatchNorm holding the same parameters, buffers and mode (torch's)."""
        out = module
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            out = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group)
            for name in ("weight", "bias"):
                setattr(out, name, getattr(module, name))
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(out, name, getattr(module, name))
            out.train(module.training)
        for name, child in module.named_children():
            setattr(out, name, cls.convert_sync_batchnorm(child, process_group))
        return out
