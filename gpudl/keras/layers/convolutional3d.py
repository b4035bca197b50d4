"""Keras's 3-D convolution, pooling and resampling layers over (N, D, H, W, C) data
(channels_last, the default; ``data_format='channels_first'`` takes (N, C, D, H, W)).

Kernels have Keras's layouts, (kd, kh, kw, in, out) for Conv3D and (kd, kh, kw, out, in) for
Conv3DTranspose; the 2-D layers' code does the work with gpudl's 3-D kernels, so 'same'
padding and transposed output sizes follow the same Keras rules.
"""

from ...nn import functional as F
from .convolutional import (Conv2D, Conv2DTranspose, _Pooling2D, _from_nchw, _to_nchw, _tuple,
                            check_ndim)
from ..engine import Layer
from .reshaping import _pairs


class Conv3D(Conv2D):
    """3-D convolution: (N, D, H, W, C) -> (N, D', H', W', filters); kernel
    (kd, kh, kw, C // groups, filters)."""

    rank = 3


class Conv3DTranspose(Conv2DTranspose):
    """Transposed 3-D convolution; kernel (kd, kh, kw, filters, C); output sizes as
    Conv2DTranspose's."""

    rank = 3


class MaxPooling3D(_Pooling2D):
    """Max over ``pool_size`` (kd, kh, kw) windows (strides default to pool_size)."""

    rank = 3

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None,
                 **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling3D(MaxPooling3D):
    """Mean over ``pool_size`` windows; 'same' averages only the values inside the input."""

    kind = "avg"


class UpSampling3D(Layer):
    """Repeat frames, rows and columns ``size`` (sd, sh, sw) times (nearest neighbour)."""

    def __init__(self, size=(2, 2, 2), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.size = _tuple("UpSampling3D", "size", size, 3)
        self.data_format = data_format or "channels_last"

    def call(self, inputs):
        check_ndim(self, inputs, 5)
        x = _to_nchw(inputs, self.data_format)
        for axis, repeats in zip((2, 3, 4), self.size):
            if repeats > 1:
                x = x.repeat_interleave(repeats, dim=axis)
        return _from_nchw(x, self.data_format)


class ZeroPadding3D(Layer):
    """Zeros around the volume: ``padding`` an int, (d, h, w) or three (before, after) pairs."""

    def __init__(self, padding=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _pairs("ZeroPadding3D", padding, 3)
        self.data_format = data_format or "channels_last"

    def call(self, inputs):
        check_ndim(self, inputs, 5)
        widths = tuple(w for pair in reversed(self.padding) for w in pair)
        return _from_nchw(F.pad(_to_nchw(inputs, self.data_format), widths), self.data_format)
