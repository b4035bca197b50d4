"""MaxPool1d/2d/3d, AvgPool1d/2d/3d, AdaptiveAvgPool1d/2d/3d, AdaptiveMaxPool1d/2d/3d,
MaxUnpool1d/2d/3d, LPPool1d/2d/3d: stateless layers over ``gpudl.ops.pool`` and ``pool_nd``."""

from ..ops import pool as P
from ..ops import pool_nd as PN
from ..ops.fractional_pool import fractional_max_pool2d, fractional_max_pool3d
from ..ops.pool import adaptive_avg_pool2d, avg_pool1d, avg_pool2d, max_pool1d, max_pool2d
from .module import Module


class MaxPool2d(Module):
    """2-D max pooling (``F.max_pool2d``); ``stride`` defaults to ``kernel_size``.

    Shape: (N, C, H, W) or (C, H, W) -> (N, C, Ho, Wo) or (C, Ho, Wo). With
    ``return_indices=True`` forward returns ``(output, indices)``.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling (``F.avg_pool2d``); ``stride`` defaults to ``kernel_size``.

    Shape: (N, C, H, W) or (C, H, W) -> (N, C, Ho, Wo) or (C, Ho, Wo).
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` (int or (h, w); None keeps that input size).

    Shape: (N, C, H, W) or (C, H, W) -> (N, C, *output_size) or (C, *output_size).
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class MaxPool1d(MaxPool2d):
    """1-D max pooling (``F.max_pool1d``) over (N, C, L) or (C, L)."""

    def forward(self, input):
        return max_pool1d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool1d(AvgPool2d):
    """1-D average pooling (``F.avg_pool1d``) over (N, C, L) or (C, L)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)

    def forward(self, input):
        return avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad)


class AdaptiveAvgPool1d(AdaptiveAvgPool2d):
    """Average pooling of (N, C, L) or (C, L) input to length ``output_size``."""

    def forward(self, input):
        return P.adaptive_avg_pool1d(input, self.output_size)


class AdaptiveMaxPool2d(AdaptiveAvgPool2d):
    """Max pooling to a fixed ``output_size`` (int or (h, w); None keeps that input size);
    with ``return_indices=True`` forward returns ``(output, indices)``.

    Shape: (N, C, H, W) or (C, H, W) -> (N, C, *output_size) or (C, *output_size).
    """

    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, input):
        return P.adaptive_max_pool2d(input, self.output_size, self.return_indices)


class AdaptiveMaxPool1d(AdaptiveMaxPool2d):
    """Max pooling of (N, C, L) or (C, L) input to length ``output_size``."""

    def forward(self, input):
        return P.adaptive_max_pool1d(input, self.output_size, self.return_indices)


# --------------------------------------------------------------------------- nn-vision: 3-D
class MaxPool3d(MaxPool2d):
    """3-D max pooling (``F.max_pool3d``) over (N, C, D, H, W) or (C, D, H, W); ``stride``
    defaults to ``kernel_size``; with ``return_indices=True`` forward returns
    ``(output, indices)``."""

    def forward(self, input):
        return PN.max_pool3d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                             ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool3d(AvgPool2d):
    """3-D average pooling (``F.avg_pool3d``) over (N, C, D, H, W) or (C, D, H, W); ``stride``
    defaults to ``kernel_size``."""

    def forward(self, input):
        return PN.avg_pool3d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                             self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool3d(AdaptiveAvgPool2d):
    """Average pooling of (N, C, D, H, W) or (C, D, H, W) input to ``output_size``."""

    def forward(self, input):
        return PN.adaptive_avg_pool3d(input, self.output_size)


class AdaptiveMaxPool3d(AdaptiveMaxPool2d):
    """Max pooling of (N, C, D, H, W) or (C, D, H, W) input to ``output_size``; with
    ``return_indices=True`` forward returns ``(output, indices)``."""

    def forward(self, input):
        return PN.adaptive_max_pool3d(input, self.output_size, self.return_indices)


class _MaxUnpoolNd(Module):
    """Shared by MaxUnpool1d/2d/3d: kernel_size, stride (default kernel_size), padding, each an
    int or one per spatial dim; ``forward(input, indices, output_size=None)``."""

    _dims = 2
    _function = None

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name, dims = type(self).__name__, self._dims
        self.kernel_size = PN._sizes(name, "kernel_size", kernel_size, dims)
        self.stride = PN._sizes(name, "stride", stride if stride is not None else kernel_size,
                                dims)
        self.padding = PN._sizes(name, "padding", padding, dims)

    def forward(self, input, indices, output_size=None):
        return type(self)._function(input, indices, self.kernel_size, self.stride, self.padding,
                                    output_size)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool1d(_MaxUnpoolNd):
    """The inverse of MaxPool1d (``F.max_unpool1d``): values placed at their indices, zeros
    elsewhere."""

    _dims = 1
    _function = PN.max_unpool1d


class MaxUnpool2d(_MaxUnpoolNd):
    """The inverse of MaxPool2d (``F.max_unpool2d``): values placed at their indices, zeros
    elsewhere."""

    _dims = 2
    _function = PN.max_unpool2d


class MaxUnpool3d(_MaxUnpoolNd):
    """The inverse of MaxPool3d (``F.max_unpool3d``): values placed at their indices, zeros
    elsewhere."""

    _dims = 3
    _function = PN.max_unpool3d


class _LPPoolNd(Module):
    """Shared by LPPool1d/2d/3d: power-average pooling (``F.lp_pool*d``) with ``norm_type`` p."""

    _function = None

    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False):
        super().__init__()
        self.norm_type, self.kernel_size = norm_type, kernel_size
        self.stride, self.ceil_mode = stride, ceil_mode

    def forward(self, input):
        return type(self)._function(input, float(self.norm_type), self.kernel_size, self.stride,
                                    self.ceil_mode)

    def extra_repr(self):
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, ceil_mode={self.ceil_mode}")


class LPPool1d(_LPPoolNd):
    """Power-average pooling over (N, C, L): (sum of x ** p over each window) ** (1 / p)."""

    _function = PN.lp_pool1d


class LPPool2d(_LPPoolNd):
    """Power-average pooling over (N, C, H, W): (sum of x ** p over each window) ** (1 / p)."""

    _function = PN.lp_pool2d


class LPPool3d(_LPPoolNd):
    """Power-average pooling over (N, C, D, H, W): (sum of x ** p over each window) ** (1/p)."""

    _function = PN.lp_pool3d


class _FractionalMaxPoolNd(Module):
    """Fractional max pooling (``F.fractional_max_pool{2,3}d``) to ``output_size`` or
    ``output_ratio`` (one of them; ratios in (0, 1)); the buffer ``_random_samples``
    (N, C, dims), if given, fixes the windows, else each call draws new ones. With
    ``return_indices=True`` forward returns ``(output, indices)``."""

    dims, name, _function = 2, "FractionalMaxPool2d", None

    def __init__(self, kernel_size, output_size=None, output_ratio=None, return_indices=False,
                 _random_samples=None):
        super().__init__()
        name, dims = self.name, self.dims
        self.kernel_size = PN._sizes(name, "kernel_size", kernel_size, dims)
        self.return_indices = return_indices
        self.register_buffer("_random_samples", _random_samples)
        self.output_size = None if output_size is None else PN._sizes(name, "output_size",
                                                                       output_size, dims)
        self.output_ratio = None if output_ratio is None else (
            tuple(output_ratio) if isinstance(output_ratio, (tuple, list))
            else (output_ratio,) * dims)
        if (output_size is None) == (output_ratio is None):
            raise ValueError(f"{name}: specify exactly one of output_size and output_ratio, got "
                             f"{output_size!r} and {output_ratio!r}")
        if self.output_ratio is not None and not all(0 < r < 1 for r in self.output_ratio):
            raise ValueError(f"{name}: output_ratio must be between 0 and 1 (got "
                             f"{output_ratio!r})")

    def forward(self, input):
        return type(self)._function(input, self.kernel_size, self.output_size,
                                    self.output_ratio, self.return_indices,
                                    _random_samples=self._random_samples)


class FractionalMaxPool2d(_FractionalMaxPoolNd):
    """Fractional max pooling over (N, C, H, W): see ``_FractionalMaxPoolNd``; the buffer
    ``_random_samples`` is (N, C, 2)."""

    dims, name, _function = 2, "FractionalMaxPool2d", staticmethod(fractional_max_pool2d)


class FractionalMaxPool3d(_FractionalMaxPoolNd):
    """Fractional max pooling over (N, C, T, H, W): see ``_FractionalMaxPoolNd``; the buffer
    ``_random_samples`` is (N, C, 3)."""

    dims, name, _function = 3, "FractionalMaxPool3d", staticmethod(fractional_max_pool3d)
