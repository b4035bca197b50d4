"""Lazy modules: LazyLinear, LazyConv1d/2d, LazyConvTranspose2d, LazyBatchNorm1d/2d and
LazyInstanceNorm1d/2d infer their input size (in_features, in_channels, num_features) at their
first call, then become the regular class, as torch's.

Until then the parameters (and floating buffers) are UninitializedParameter/UninitializedBuffer:
an optimizer may already hold them, since they are materialised in place. At the first call the
regular layer is built for the inferred size (drawing its initial values from the random
stream exactly as that layer's constructor does, so ``manual_seed`` gives the layer a directly
built one would get); its values, shapes and attributes are adopted and the module's class
becomes the regular one. Loading a state dict before the first call materialises the
parameters with the loaded shapes.
"""

import contextlib

from .. import random
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .linear import Linear
from .normalization import (BatchNorm1d, BatchNorm2d, BatchNorm3d, InstanceNorm1d,
                            InstanceNorm2d, InstanceNorm3d)
from .parameter import UninitializedBuffer, UninitializedParameter, UninitializedTensorMixin

_MODULE_STATE = ("training", "_parameters", "_buffers", "_non_persistent_buffers_set",
                 "_modules", "_forward_hooks")


@contextlib.contextmanager
def throwaway_rng():
    """Random draws inside come from a fresh generator; the global ones are left as they were
    (building a placeholder layer must not advance the user's random stream)."""
    saved = dict(random._generators)
    random._generators.clear()
    random._generators["seed"] = 0
    try:
        yield
    finally:
        random._generators.clear()
        random._generators.update(saved)


def _infer_parameters(module, args, kwargs):
    """The forward pre-hook of a lazy module: materialise, then become ``cls_to_become``."""
    module.initialize_parameters(*args, **kwargs)
    if module.has_uninitialized_params():
        raise RuntimeError(f"module {module._get_name()} has not been fully initialized")
    module._initialize_hook.remove()
    del module._initialize_hook
    if module.cls_to_become is not None:
        module.__class__ = module.cls_to_become


class LazyModuleMixin:
    """What every lazy module shares; ``_size_attribute`` names the inferred size (0 until the
    first call), ``_inferred_size(input)`` reads it from the first input."""

    cls_to_become = None
    _size_attribute = None

    def _lazy_init(self, placeholder, *args, **kwargs):
        """Build as ``cls_to_become(placeholder, *args, **kwargs)`` (any valid size), then make
        every parameter and floating buffer uninitialized."""
        with throwaway_rng():
            self.cls_to_become.__init__(self, placeholder, *args, **kwargs)
        object.__setattr__(self, "_lazy_args", (args, kwargs))
        setattr(self, self._size_attribute, 0)
        for name, param in list(self._parameters.items()):
            if param is not None:
                self._parameters[name] = UninitializedParameter(param.requires_grad,
                                                                param.device, param.dtype)
        for name, buf in list(self._buffers.items()):
            if buf is not None and buf.dtype.kind == "f":
                self._buffers[name] = UninitializedBuffer(False, buf.device, buf.dtype)
        self._initialize_hook = self.register_forward_pre_hook(_infer_parameters,
                                                               with_kwargs=True)

    def has_uninitialized_params(self):
        """Whether a parameter or buffer of this module still has no shape."""
        return any(isinstance(t, UninitializedTensorMixin)
                   for t in list(self._parameters.values()) + list(self._buffers.values()))

    def initialize_parameters(self, input, *args, **kwargs):
        """Give the uninitialized tensors the shapes and initial values the regular layer has
        for ``input``'s size."""
        if not self.has_uninitialized_params():
            return
        size = self._inferred_size(input)
        args, kwargs = self._lazy_args
        first = next(t for t in list(self._parameters.values()) + list(self._buffers.values())
                     if isinstance(t, UninitializedTensorMixin))
        kwargs = dict(kwargs, device=first.device, dtype=first.dtype)
        regular = self.cls_to_become(size, *args, **kwargs)
        for store in ("_parameters", "_buffers"):
            own, built = getattr(self, store), getattr(regular, store)
            for name, value in own.items():
                if isinstance(value, UninitializedTensorMixin):
                    value.materialize(built[name].shape)
                    value._data = built[name]._data
        for name, value in regular.__dict__.items():
            if name not in _MODULE_STATE:
                object.__setattr__(self, name, value)
        del self._lazy_args

    def reset_parameters(self):
        if not self.has_uninitialized_params():
            super().reset_parameters()


def _batched_channels(module, input, spatial_dims):
    """The channel count of (N, C, *spatial) or unbatched (C, *spatial) ``input`` (torch's
    _LazyConvXdMixin._get_in_channels)."""
    unbatched = spatial_dims + 1
    if input.ndim not in (unbatched, unbatched + 1):
        raise RuntimeError(f"Expected {unbatched}D (unbatched) or {unbatched + 1}D (batched) "
                           f"input to {type(module).__name__}, but got input of size: "
                           f"{tuple(input.shape)}")
    return input.shape[1] if input.ndim == unbatched + 1 else input.shape[0]


class LazyLinear(LazyModuleMixin, Linear):
    """A Linear whose in_features is the last dim of its first input."""

    cls_to_become = Linear
    _size_attribute = "in_features"

    def __init__(self, out_features, bias=True, device=None, dtype=None):
        self._lazy_init(1, out_features, bias, device=device, dtype=dtype)

    def _inferred_size(self, input):
        return input.shape[-1]


class _LazyConv(LazyModuleMixin):
    _size_attribute = "in_channels"
    _spatial_dims = 2

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        self._lazy_init(groups, out_channels, kernel_size, stride, padding, dilation, groups,
                        bias, padding_mode, device=device, dtype=dtype)

    def _inferred_size(self, input):
        channels = _batched_channels(self, input, self._spatial_dims)
        if channels % self.groups:
            raise ValueError(f"{type(self).__name__}: in_channels ({channels}) must be divisible "
                             f"by groups ({self.groups})")
        return channels


class LazyConv1d(_LazyConv, Conv1d):
    """A Conv1d whose in_channels is read from its first input (N, C, L) or (C, L)."""

    cls_to_become = Conv1d
    _spatial_dims = 1


class LazyConv2d(_LazyConv, Conv2d):
    """A Conv2d whose in_channels is read from its first input (N, C, H, W) or (C, H, W)."""

    cls_to_become = Conv2d


class _LazyConvTranspose(_LazyConv):
    """Lazy transposed convolutions: torch's argument order (output_padding, then groups)."""

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, padding_mode="zeros", device=None,
                 dtype=None):
        self._lazy_init(groups, out_channels, kernel_size, stride, padding, output_padding,
                        groups, bias, dilation, padding_mode, device=device, dtype=dtype)


class _LazyNorm(LazyModuleMixin):
    """Lazy batch and instance norms: num_features is dim 1 of the first input, as torch's
    (whose lazy instance norms default to affine=True, track_running_stats=True)."""

    _size_attribute = "num_features"

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        self._lazy_init(1, eps, momentum, affine, track_running_stats, device=device,
                        dtype=dtype, bias=bias)

    def _inferred_size(self, input):
        if input.ndim < 2:
            raise ValueError(f"{type(self).__name__}: expected an input of at least 2 "
                             f"dimensions to read num_features from, got shape "
                             f"{tuple(input.shape)}")
        return input.shape[1]


class LazyBatchNorm1d(_LazyNorm, BatchNorm1d):
    """A BatchNorm1d whose num_features is read from its first input (N, C) or (N, C, L)."""

    cls_to_become = BatchNorm1d


class LazyBatchNorm2d(_LazyNorm, BatchNorm2d):
    """A BatchNorm2d whose num_features is read from its first input (N, C, H, W)."""

    cls_to_become = BatchNorm2d


class LazyInstanceNorm1d(_LazyNorm, InstanceNorm1d):
    """An InstanceNorm1d whose num_features is read from its first input (dim 1, as torch)."""

    cls_to_become = InstanceNorm1d


class LazyInstanceNorm2d(_LazyNorm, InstanceNorm2d):
    """An InstanceNorm2d whose num_features is read from its first input (dim 1, as torch)."""

    cls_to_become = InstanceNorm2d


class LazyConvTranspose2d(_LazyConvTranspose, ConvTranspose2d):
    """A ConvTranspose2d whose in_channels is read from its first input."""

    cls_to_become = ConvTranspose2d


def _lazy_class(lazy, base, spatial_dims=None):
    """The class ``Lazy<base>``: ``lazy`` (the mixin of its family) over ``base``, becoming
    ``base`` once its first input gave the size."""
    attributes = {"cls_to_become": base, "__module__": __name__,
                  "__qualname__": f"Lazy{base.__name__}",
                  "__doc__": f"A {base.__name__} whose {lazy._size_attribute} is read from its "
                             "first input."}
    if spatial_dims is not None:
        attributes["_spatial_dims"] = spatial_dims
    return type(f"Lazy{base.__name__}", (lazy, base), attributes)


LazyConv3d = _lazy_class(_LazyConv, Conv3d, 3)
LazyConvTranspose1d = _lazy_class(_LazyConvTranspose, ConvTranspose1d, 1)
LazyConvTranspose3d = _lazy_class(_LazyConvTranspose, ConvTranspose3d, 3)
LazyBatchNorm3d = _lazy_class(_LazyNorm, BatchNorm3d)
LazyInstanceNorm3d = _lazy_class(_LazyNorm, InstanceNorm3d)
