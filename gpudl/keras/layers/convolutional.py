"""Keras's convolution, pooling and resampling layers over channels-last data (the default;
``data_format='channels_first'`` takes PyTorch's layout).

Kernels have Keras's layouts, (kh, kw, in, out) for Conv2D and (kh, kw, out, in) for
Conv2DTranspose; gpudl's NCHW kernels do the work. ``padding='same'`` pads as Keras/TensorFlow:
``pad_total = max((ceil(n / s) - 1) * s + k_eff - n, 0)``, the extra one on the right/bottom.
"""

import math
import numbers

from ...nn import functional as F
from .. import activations
from ..engine import Layer
from .core import check_positive_int


def _tuple(where, name, value, n):
    value = (value,) * n if isinstance(value, numbers.Integral) else tuple(value)
    if len(value) != n:
        raise ValueError(f"{where}: {name} must be an int or {n} ints, got {value!r}")
    check_positive_int(where, **{f"{name}[{i}]": v for i, v in enumerate(value)})
    return tuple(int(v) for v in value)


def _check_choice(where, name, value, choices):
    if value not in choices:
        raise ValueError(f"{where}: {name} must be one of {choices}, got {value!r}")
    return value


def same_padding(size, kernel, stride, dilation=1):
    """(before, after) zeros that make a 'same' convolution or pooling output ceil(n / s)."""
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def check_ndim(layer, inputs, ndim):
    """Keras's input-spec check: a clear error instead of a failure deep in a kernel."""
    if inputs.ndim != ndim:
        raise ValueError(f"{layer.name} ({type(layer).__name__}): expected inputs with {ndim} "
                         f"dims (batch included), got shape {tuple(inputs.shape)}")


def _to_nchw(x, data_format):
    """Channels-last (N, *spatial, C) -> channels-first (N, C, *spatial)."""
    return x.permute(0, x.ndim - 1, *range(1, x.ndim - 1)) if data_format == "channels_last" \
        else x


def _from_nchw(x, data_format):
    return x.permute(0, *range(2, x.ndim), 1) if data_format == "channels_last" else x


def _pad_same(x, kernel, stride, dilation, value=0.0):
    """Pad a channels-first tensor (2 or 3 spatial dims) for 'same' output sizes."""
    widths = []                                     # F.pad's order: the last axis first
    for n, k, s, d in reversed(list(zip(x.shape[2:], kernel, stride, dilation))):
        widths.extend(same_padding(n, k, s, d))
    if any(widths):
        x = F.pad(x, tuple(widths), value=value)
    return x


_CONV = {4: F.conv2d, 5: F.conv3d}
_CONV_TRANSPOSE = {4: F.conv_transpose2d, 5: F.conv_transpose3d}
_MAX_POOL = {4: F.max_pool2d, 5: F.max_pool3d}
_AVG_POOL = {4: F.avg_pool2d, 5: F.avg_pool3d}


class _Conv(Layer):
    """What Conv1D and Conv2D share: arguments, the kernel and a 2-D NCHW convolution."""

    rank = 2

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None,
                 dilation_rate=1, groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        where = type(self).__name__
        check_positive_int(where, filters=filters, groups=groups)
        self.filters, self.groups = int(filters), int(groups)
        self.kernel_size = _tuple(where, "kernel_size", kernel_size, self.rank)
        self.strides = _tuple(where, "strides", strides, self.rank)
        self.dilation_rate = _tuple(where, "dilation_rate", dilation_rate, self.rank)
        allowed = ("valid", "same", "causal") if self.rank == 1 else ("valid", "same")
        self.padding = _check_choice(where, "padding", str(padding).lower(), allowed)
        self.data_format = _check_choice(where, "data_format", data_format or "channels_last",
                                         ("channels_last", "channels_first"))
        self.activation, self.use_bias = activations.get(activation), use_bias
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def build(self, input_shape):
        channels = input_shape[-1 if self.data_format == "channels_last" else 1]
        if channels % self.groups or self.filters % self.groups:
            raise ValueError(f"{self.name}: input channels {channels} and filters "
                             f"{self.filters} must be multiples of groups={self.groups}")
        self.add_weight("kernel", self.kernel_size + (channels // self.groups, self.filters),
                        self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)

    def _conv2d(self, x, kernel, stride, dilation):
        """Channels-first x (NCHW or NCDHW), Keras (*k, in, out) kernel -> channels-first
        output with bias."""
        spatial = x.ndim - 2
        if self.padding == "same":
            x = _pad_same(x, kernel.shape[:spatial], stride, dilation)
        weight = kernel.permute(spatial + 1, spatial, *range(spatial))
        return _CONV[x.ndim](x, weight, self.bias if self.use_bias else None, stride=stride,
                             dilation=dilation, groups=self.groups)


class Conv2D(_Conv):
    """2-D convolution: (N, H, W, C) -> (N, H', W', filters) (channels_last, the default)."""

    def call(self, inputs):
        check_ndim(self, inputs, self.rank + 2)
        out = self._conv2d(_to_nchw(inputs, self.data_format), self.kernel, self.strides,
                           self.dilation_rate)
        return self.activation(_from_nchw(out, self.data_format))


class Conv1D(_Conv):
    """1-D convolution: (N, L, C) -> (N, L', filters); padding 'valid', 'same' or 'causal'."""

    rank = 1

    def call(self, inputs):
        check_ndim(self, inputs, 3)
        x = inputs.permute(0, 2, 1) if self.data_format == "channels_last" else inputs
        if self.padding == "causal":
            x = F.pad(x, ((self.kernel_size[0] - 1) * self.dilation_rate[0], 0))
        x = x[:, :, None, :]                                         # (N, C, 1, L)
        out = self._conv2d(x, self.kernel[None], (1,) + self.strides,
                           (1,) + self.dilation_rate)[:, :, 0, :]    # (N, filters, L')
        out = out.permute(0, 2, 1) if self.data_format == "channels_last" else out
        return self.activation(out)


class Conv2DTranspose(_Conv):
    """Transposed 2-D convolution (the gradient of a Keras Conv2D with the same arguments);
    kernel (kh, kw, filters, in). Output size per dim, as Keras: 'same' ``n * s``, 'valid'
    ``n * s + max(k_eff - s, 0)``; with ``output_padding`` p, ``(n - 1) * s + k_eff - 2 * pad
    + p`` (pad = k // 2 for 'same', 0 for 'valid')."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None,
                 **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding, **kwargs)
        if self.padding == "causal":
            raise ValueError(f"{type(self).__name__}: padding must be 'valid' or 'same', got "
                             "'causal'")
        self.output_padding = None if output_padding is None else tuple(
            int(p) for p in ((output_padding,) * self.rank
                             if isinstance(output_padding, numbers.Integral) else output_padding))
        if self.output_padding and any(not 0 <= p < s for p, s in
                                       zip(self.output_padding, self.strides)):
            raise ValueError(f"Conv2DTranspose: output_padding {self.output_padding} must be "
                             f"smaller than strides {self.strides}")

    def build(self, input_shape):
        channels = input_shape[-1 if self.data_format == "channels_last" else 1]
        self.add_weight("kernel", self.kernel_size + (self.filters, channels),
                        self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)

    def call(self, inputs):
        check_ndim(self, inputs, self.rank + 2)
        out = self._transpose2d(_to_nchw(inputs, self.data_format), self.kernel,
                                self.kernel_size, self.strides, self.dilation_rate,
                                self.output_padding)
        return self.activation(_from_nchw(out, self.data_format))

    def _transpose2d(self, x, kernel, kernel_size, strides, dilation, output_padding):
        """Channels-first x, Keras (*k, out, in) kernel -> channels-first output with bias
        (Keras's sizes)."""
        spatial = x.ndim - 2
        full = _CONV_TRANSPOSE[x.ndim](x, kernel.permute(spatial + 1, spatial, *range(spatial)),
                                       stride=strides, dilation=dilation)
        for i, (n, k, s, d) in enumerate(zip(x.shape[2:], kernel_size, strides, dilation)):
            axis = 2 + i
            size = _transposed_size(n, k, s, d, self.padding,
                                    None if output_padding is None else output_padding[i])
            # the forward conv on `size` pads `start` before: crop that much from the front
            start = same_padding(size, k, s, d)[0] if self.padding == "same" else 0
            extra = start + size - full.shape[axis]             # k < s: zeros at the end
            if extra > 0:
                widths = [0] * (2 * spatial)
                widths[2 * (x.ndim - 1 - axis) + 1] = extra
                full = F.pad(full, tuple(widths))
            index = [slice(None)] * x.ndim
            index[axis] = slice(start, start + size)
            full = full[tuple(index)]
        if self.use_bias:
            full = full + self.bias.reshape((1, -1) + (1,) * spatial)
        return full


def _transposed_size(n, k, s, d, padding, output_padding):
    """Keras's output length of a transposed convolution along one axis."""
    effective = (k - 1) * d + 1
    if output_padding is not None:
        pad = k // 2 if padding == "same" else 0
        return (n - 1) * s + effective - 2 * pad + output_padding
    return n * s if padding == "same" else n * s + max(effective - s, 0)


class Conv1DTranspose(Conv2DTranspose):
    """Transposed 1-D convolution: (N, L, C) -> (N, L', filters); kernel (k, filters, in);
    output lengths as Conv2DTranspose's."""

    rank = 1

    def call(self, inputs):
        check_ndim(self, inputs, 3)
        x = inputs.permute(0, 2, 1) if self.data_format == "channels_last" else inputs
        padding = None if self.output_padding is None else (0,) + self.output_padding
        out = self._transpose2d(x[:, :, None, :], self.kernel[None], (1,) + self.kernel_size,
                                (1,) + self.strides, (1,) + self.dilation_rate,
                                padding)[:, :, 0, :]
        return self.activation(out.permute(0, 2, 1) if self.data_format == "channels_last"
                               else out)


class DepthwiseConv2D(_Conv):
    """Each input channel convolved with its own ``depth_multiplier`` filters: (N, H, W, C)
    -> (N, H', W', C * depth_multiplier), output channel ``c * depth_multiplier + m``; kernel
    (kh, kw, C, depth_multiplier), Keras's weight ``kernel``."""

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1,
                 data_format=None, dilation_rate=1, activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        check_positive_int(type(self).__name__, depth_multiplier=depth_multiplier)
        super().__init__(1, kernel_size, strides=strides, padding=padding,
                         data_format=data_format, dilation_rate=dilation_rate,
                         activation=activation, use_bias=use_bias,
                         kernel_initializer=depthwise_initializer,
                         bias_initializer=bias_initializer, **kwargs)
        self.depth_multiplier = int(depth_multiplier)

    def build(self, input_shape):
        channels = input_shape[-1 if self.data_format == "channels_last" else 1]
        self.groups = channels
        self.add_weight("kernel", self.kernel_size + (channels, self.depth_multiplier),
                        self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (channels * self.depth_multiplier,), self.bias_initializer)

    def grouped_kernel(self):
        """(..., C, m) -> (..., 1, C * m): the kernel of a convolution with C groups."""
        return self.kernel.reshape(tuple(self.kernel.shape[:-2]) + (1, -1))

    def call(self, inputs):
        check_ndim(self, inputs, 4)
        out = self._conv2d(_to_nchw(inputs, self.data_format), self.grouped_kernel(),
                           self.strides, self.dilation_rate)
        return self.activation(_from_nchw(out, self.data_format))


class DepthwiseConv1D(DepthwiseConv2D):
    """Depthwise 1-D convolution: (N, L, C) -> (N, L', C * depth_multiplier); kernel
    (k, C, depth_multiplier)."""

    rank = 1

    def call(self, inputs):
        check_ndim(self, inputs, 3)
        x = inputs.permute(0, 2, 1) if self.data_format == "channels_last" else inputs
        out = self._conv2d(x[:, :, None, :], self.grouped_kernel()[None], (1,) + self.strides,
                           (1,) + self.dilation_rate)[:, :, 0, :]
        return self.activation(out.permute(0, 2, 1) if self.data_format == "channels_last"
                               else out)


class _Pooling2D(Layer):
    kind = "max"
    rank = 2

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 **kwargs):
        super().__init__(**kwargs)
        where = type(self).__name__
        self.pool_size = _tuple(where, "pool_size", pool_size, self.rank)
        self.strides = self.pool_size if strides is None else _tuple(where, "strides",
                                                                     strides, self.rank)
        self.padding = _check_choice(where, "padding", str(padding).lower(), ("valid", "same"))
        self.data_format = _check_choice(where, "data_format", data_format or "channels_last",
                                         ("channels_last", "channels_first"))

    def call(self, inputs):
        check_ndim(self, inputs, self.rank + 2)
        return _from_nchw(self.pool(_to_nchw(inputs, self.data_format)), self.data_format)

    def pool(self, x):
        """Pool a channels-first tensor (2 or 3 spatial dims)."""
        no_dilation = (1,) * len(self.pool_size)
        if self.kind == "max":
            if self.padding == "same":
                x = _pad_same(x, self.pool_size, self.strides, no_dilation, float("-inf"))
            return _MAX_POOL[x.ndim](x, self.pool_size, self.strides)
        average = _AVG_POOL[x.ndim]
        if self.padding == "valid":
            return average(x, self.pool_size, self.strides)
        # TensorFlow's 'same' average counts only the real values under each window
        ones = x[:1, :1] * 0 + 1
        sums = average(_pad_same(x, self.pool_size, self.strides, no_dilation), self.pool_size,
                       self.strides)
        counts = average(_pad_same(ones, self.pool_size, self.strides, no_dilation),
                         self.pool_size, self.strides)
        return sums / counts


class MaxPooling2D(_Pooling2D):
    """Max over ``pool_size`` windows (strides default to pool_size)."""


class AveragePooling2D(_Pooling2D):
    kind = "avg"


class _Pooling1D(_Pooling2D):
    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        pool = _tuple(type(self).__name__, "pool_size", pool_size, 1)
        stride = pool if strides is None else _tuple(type(self).__name__, "strides", strides, 1)
        super().__init__((1,) + pool, (1,) + stride, padding, data_format, **kwargs)

    def call(self, inputs):
        check_ndim(self, inputs, 3)
        x = inputs.permute(0, 2, 1) if self.data_format == "channels_last" else inputs
        out = self.pool(x[:, :, None, :])[:, :, 0, :]
        return out.permute(0, 2, 1) if self.data_format == "channels_last" else out


class MaxPooling1D(_Pooling1D):
    pass


class AveragePooling1D(_Pooling1D):
    kind = "avg"


class _GlobalPooling(Layer):
    spatial_dims = 2

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format or "channels_last"
        self.keepdims = keepdims

    def call(self, inputs):
        n = self.spatial_dims
        axes = tuple(range(1, 1 + n)) if self.data_format == "channels_last" else \
            tuple(range(2, 2 + n))
        return self.reduce(inputs, axes)


class GlobalAveragePooling2D(_GlobalPooling):
    def reduce(self, x, axes):
        return x.mean(dim=axes, keepdim=self.keepdims)


class GlobalMaxPooling2D(_GlobalPooling):
    def reduce(self, x, axes):
        for axis in sorted(axes, reverse=True):
            x = x.max(dim=axis, keepdim=self.keepdims).values
        return x


class GlobalAveragePooling1D(GlobalAveragePooling2D):
    """The mean over the steps; with a mask (Embedding(mask_zero=True), Masking) the mean of
    the unmasked steps, as Keras (a sample with every step masked gives 0, Keras's 0/0 NaN)."""
    spatial_dims = 1
    consumes_mask = True

    def call(self, inputs, mask=None):
        if mask is None:
            return super().call(inputs)
        axis = 1 if self.data_format == "channels_last" else 2
        keep = mask.astype(inputs.dtype).unsqueeze(2 if axis == 1 else 1)
        total = (inputs * keep).sum(dim=axis, keepdim=self.keepdims)
        return total / keep.sum(dim=axis, keepdim=self.keepdims).clip(1.0, None)


class GlobalMaxPooling1D(GlobalMaxPooling2D):
    spatial_dims = 1


class GlobalAveragePooling3D(GlobalAveragePooling2D):
    spatial_dims = 3


class GlobalMaxPooling3D(GlobalMaxPooling2D):
    spatial_dims = 3


class UpSampling2D(Layer):
    """Repeat rows and columns ``size`` times (nearest neighbour)."""

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.size = _tuple("UpSampling2D", "size", size, 2)
        if interpolation != "nearest":
            raise NotImplementedError(f"UpSampling2D: only interpolation='nearest' is "
                                      f"supported, got {interpolation!r}")
        self.data_format = data_format or "channels_last"

    def call(self, inputs):
        x = _to_nchw(inputs, self.data_format)
        n, c, h, w = x.shape
        sh, sw = self.size
        x = x[:, :, :, None, :, None].expand(n, c, h, sh, w, sw).reshape(n, c, h * sh, w * sw)
        return _from_nchw(x, self.data_format)


class ZeroPadding2D(Layer):
    """Zeros around the image: ``padding`` an int, (rows, cols) or ((top, bottom), (left, right))."""

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(padding, numbers.Integral):
            padding = ((padding, padding), (padding, padding))
        elif all(isinstance(p, numbers.Integral) for p in padding):
            padding = ((padding[0], padding[0]), (padding[1], padding[1]))
        self.padding = tuple(tuple(int(v) for v in p) for p in padding)
        self.data_format = data_format or "channels_last"

    def call(self, inputs):
        (top, bottom), (left, right) = self.padding
        x = F.pad(_to_nchw(inputs, self.data_format), (left, right, top, bottom))
        return _from_nchw(x, self.data_format)
