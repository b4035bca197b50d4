"""Conv1d/2d/3d, ConvTranspose1d/2d/3d, Unfold and Fold: PyTorch's layers (arguments, parameter
shapes, initialisation)."""

import numbers

from .. import creation, dtypes
from ..ops.conv import (conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d,
                        conv_transpose3d, fold, unfold)
from ..ops.padding import pad as _pad
from . import init
from .module import Module
from .parameter import Parameter

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(name, value, layer, minimum, dims=2):
    values = (value,) * dims if isinstance(value, numbers.Integral) else value
    if (isinstance(values, str) or not hasattr(values, "__len__") or len(values) != dims
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                       for v in values)):
        what = "a pair of ints" if dims == 2 else f"a tuple of {dims} ints"
        raise TypeError(f"{layer}: {name} must be an int or {what}, got {value!r}")
    if min(values) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{layer}: {name} must be {kind}, got {value!r}")
    return tuple(int(v) for v in values)


class _ConvNd(Module):
    """What Conv2d and ConvTranspose2d share: checks, parameters, PyTorch's default init.
    ``_dims``: the spatial rank (Conv3d and the other ranks' layers set it)."""

    _dims = 2

    def __init__(self, layer, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, padding_mode, transposed, device, dtype):
        super().__init__()
        for name, n in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("groups", groups)):
            if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
                raise ValueError(f"{layer}: {name} must be a positive int, got {n!r}")
        for name, n in (("in_channels", in_channels), ("out_channels", out_channels)):
            if n % groups:
                raise ValueError(f"{layer}: {name} ({n}) must be divisible by groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{layer}: padding_mode must be one of {_PADDING_MODES}, got "
                             f"{padding_mode!r}")
        if padding_mode != "zeros" and transposed:
            raise ValueError(f"{layer}: only 'zeros' padding_mode is supported, got "
                             f"{padding_mode!r}")
        dims = self._dims
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair("kernel_size", kernel_size, layer, 1, dims)
        self.stride = _pair("stride", stride, layer, 1, dims)
        self.padding = padding if isinstance(padding, str) else _pair("padding", padding, layer,
                                                                      0, dims)
        self.dilation = _pair("dilation", dilation, layer, 1, dims)
        self.groups = int(groups)
        self.padding_mode = padding_mode
        dtype = dtypes.as_dtype(dtype, layer) or dtypes.DEFAULT_FLOAT
        weight_shape = ((in_channels, out_channels // groups) if transposed
                        else (out_channels, in_channels // groups))
        self.weight = Parameter(creation.empty(*weight_shape, *self.kernel_size, dtype=dtype,
                                               device=device))
        if bias:
            self.bias = Parameter(creation.empty(out_channels, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.default_layer_init_(self.weight, self.bias)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if isinstance(self.padding, str) or any(self.padding):
            text += f", padding={self.padding}"
        if any(d != 1 for d in self.dilation):
            text += f", dilation={self.dilation}"
        if any(getattr(self, "output_padding", ())):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text

    def _padded(self, input):
        """(input, padding) for the functional call: a padding_mode other than 'zeros' pads the
        input itself in that mode (as torch), leaving no padding to the convolution."""
        if self.padding_mode == "zeros":
            return input, self.padding
        if self.padding == "same":
            totals = [d * (k - 1) for k, d in zip(self.kernel_size, self.dilation)]
            sides = [(t // 2, t - t // 2) for t in totals]
        elif self.padding == "valid":
            sides = [(0, 0)] * len(self.kernel_size)
        else:
            sides = [(p, p) for p in self.padding]
        widths = tuple(w for pair in reversed(sides) for w in pair)
        return _pad(input, widths, mode=self.padding_mode), 0


class Conv2d(_ConvNd):
    """2-D convolution layer: ``F.conv2d(input, weight, bias, stride, padding, dilation, groups)``.

    Args as PyTorch's: in_channels, out_channels, kernel_size, stride=1, padding=0 (an int, a
    pair, 'valid' or 'same'), dilation=1, groups=1, bias=True, padding_mode='zeros' ('reflect',
    'replicate', 'circular': the input padded in that mode first, as torch), device, dtype.
    Parameters: weight (out, in/groups, kH, kW), bias (out,), both
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in/groups * kH * kW.

    Shape: (N, C_in, H, W) or (C_in, H, W) -> (N, C_out, Ho, Wo) or (C_out, Ho, Wo).
    Example: ``nn.Conv2d(3, 16, 3, padding=1)(x)``.
    """

    _layer = "Conv2d"       # the name errors give (Conv1d's parameters are built by a Conv2d)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        layer = self._layer
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{layer}: padding must be 'valid', 'same', an int or a pair, "
                                 f"got {padding!r}")
            if padding == "same" and any(s != 1 for s in _pair("stride", stride, layer, 1,
                                                               self._dims)):
                raise ValueError(f"{layer}: padding='same' is not supported for strided "
                                 f"convolutions (stride {stride!r})")
        super().__init__(layer, in_channels, out_channels, kernel_size, stride, padding,
                         dilation, groups, bias, padding_mode, False, device, dtype)

    def forward(self, input):
        input, padding = self._padded(input)
        return conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation,
                      self.groups)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution layer: ``F.conv_transpose2d`` with this layer's arguments.

    Args as PyTorch's: in_channels, out_channels, kernel_size, stride=1, padding=0,
    output_padding=0, groups=1, bias=True, dilation=1, padding_mode='zeros', device, dtype.
    Parameters: weight (in, out/groups, kH, kW), bias (out,), both U(-1/sqrt(fan_in),
    1/sqrt(fan_in)) with PyTorch's fan_in = out/groups * kH * kW.

    ``forward(input, output_size=None)``: ``output_size`` (the last two entries are used) picks
    the output_padding that gives that size, as PyTorch.
    Shape: (N, C_in, H, W) -> (N, C_out, Ho, Wo), Ho = (H-1)*s - 2p + d*(kH-1) + output_padding
    + 1. Example: ``nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)`` doubles H and W.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        layer = type(self).__name__
        if isinstance(padding, str):
            raise TypeError(f"{layer}: padding must be an int or a tuple of ints, got "
                            f"{padding!r}")
        self.output_padding = _pair("output_padding", output_padding, layer, 0, self._dims)
        super().__init__(layer, in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, padding_mode, True, device, dtype)

    _function = staticmethod(conv_transpose2d)

    def forward(self, input, output_size=None):
        output_padding = self.output_padding
        if output_size is not None:
            output_padding = self._output_padding(input, output_size)
        return self._function(input, self.weight, self.bias, self.stride, self.padding,
                              output_padding, self.groups, self.dilation)

    def _output_padding(self, input, output_size):
        dims, layer = self._dims, type(self).__name__
        size = tuple(int(n) for n in output_size)[-dims:]
        if len(size) != dims:
            raise ValueError(f"{layer}: output_size must hold at least {dims} sizes, got "
                             f"{output_size!r}")
        padding = []
        for axis, (n, want) in enumerate(zip(input.shape[-dims:], size)):
            s, p, d, k = (self.stride[axis], self.padding[axis], self.dilation[axis],
                          self.kernel_size[axis])
            smallest = (n - 1) * s - 2 * p + d * (k - 1) + 1
            if not smallest <= want < smallest + s:
                raise ValueError(
                    f"{layer}: requested output size {size} is not reachable from input "
                    f"of shape {input.shape}: axis {axis} must be in [{smallest}, "
                    f"{smallest + s - 1}]")
            padding.append(want - smallest)
        return tuple(padding)


class Conv1d(Module):
    """1-D convolution layer: ``F.conv1d(input, weight, bias, stride, padding, dilation, groups)``.

    Args as PyTorch's: in_channels, out_channels, kernel_size, stride=1, padding=0 (an int,
    'valid' or 'same'), dilation=1, groups=1, bias=True, padding_mode='zeros', device, dtype.
    Parameters: weight (out, in/groups, k), bias (out,), both U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Shape: (N, C_in, L) or (C_in, L) -> (N, C_out, Lo) or (C_out, Lo).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        kernel_size, stride, dilation = (_single(name, value, 1) for name, value in (
            ("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)))
        if not isinstance(padding, str):
            padding = _single("padding", padding, 0)
        # the 2-D layer checks the rest and builds (out, in/groups, 1, k) parameters
        flat = _FlatConv1d(in_channels, out_channels, (1, kernel_size), (1, stride),
                           padding if isinstance(padding, str) else (0, padding), (1, dilation),
                           groups, bias, padding_mode, device, dtype)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = flat.kernel_size[1:], flat.stride[1:]
        self.padding = padding if isinstance(padding, str) else flat.padding[1:]
        self.dilation, self.padding_mode = flat.dilation[1:], padding_mode
        self.weight = Parameter(flat.weight.detach().squeeze(2))
        if flat.bias is not None:
            self.bias = Parameter(flat.bias.detach())
        else:
            self.register_parameter("bias", None)

    def reset_parameters(self):
        init.default_layer_init_(self.weight, self.bias)

    _padded = _ConvNd._padded

    def forward(self, input):
        input, padding = self._padded(input)
        return conv1d(input, self.weight, self.bias, self.stride, padding, self.dilation,
                      self.groups)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,):
            text += f", padding={self.padding}"
        if self.dilation != (1,):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        text += ", bias=False" if self.bias is None else ""
        return text + (f", padding_mode={self.padding_mode}" if self.padding_mode != "zeros"
                       else "")


class _FlatConv1d(Conv2d):
    _layer = "Conv1d"


def _single(name, value, minimum):
    """Conv1d's int (or 1-tuple) argument, checked with Conv1d's name and the value given."""
    one = value[0] if isinstance(value, (tuple, list)) and len(value) == 1 else value
    if not isinstance(one, numbers.Integral) or isinstance(one, bool):
        raise TypeError(f"Conv1d: {name} must be an int or a 1-tuple of ints, got {value!r}")
    if one < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"Conv1d: {name} must be {kind}, got {value!r}")
    return int(one)


class Unfold(Module):
    """Sliding local blocks (``F.unfold``): (N, C, H, W) -> (N, C*kH*kW, L)."""

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.padding, self.stride = padding, stride

    def forward(self, input):
        return unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"padding={self.padding}, stride={self.stride}")


# --------------------------------------------------------------------------- nn-vision: 1-D/3-D
class Conv3d(Conv2d):
    """3-D convolution layer: ``F.conv3d(input, weight, bias, stride, padding, dilation, groups)``.

    Args as PyTorch's (Conv2d's, with three entries for each size: an int means all three).
    Parameters: weight (out, in/groups, kD, kH, kW), bias (out,), both U(-1/sqrt(fan_in),
    1/sqrt(fan_in)). Shape: (N, C_in, D, H, W) or (C_in, D, H, W) -> (N, C_out, Do, Ho, Wo).
    Example: ``nn.Conv3d(3, 8, 3, padding=1)(x)``.
    """

    _layer = "Conv3d"
    _dims = 3

    def forward(self, input):
        input, padding = self._padded(input)
        return conv3d(input, self.weight, self.bias, self.stride, padding, self.dilation,
                      self.groups)


class ConvTranspose3d(ConvTranspose2d):
    """3-D transposed convolution layer: ``F.conv_transpose3d`` with this layer's arguments
    (ConvTranspose2d's, three entries per size). Weight (in, out/groups, kD, kH, kW).
    Shape: (N, C_in, D, H, W) -> (N, C_out, Do, Ho, Wo); ``forward(input, output_size=None)``."""

    _dims = 3
    _function = staticmethod(conv_transpose3d)


class ConvTranspose1d(ConvTranspose2d):
    """1-D transposed convolution layer: ``F.conv_transpose1d`` with this layer's arguments
    (ConvTranspose2d's, one entry per size). Weight (in, out/groups, k).
    Shape: (N, C_in, L) or (C_in, L) -> (N, C_out, Lo); ``forward(input, output_size=None)``."""

    _dims = 1
    _function = staticmethod(conv_transpose1d)


class Fold(Module):
    """Sliding local blocks summed back into an image (``F.fold``):
    (N, C*kH*kW, L) -> (N, C, *output_size)."""

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.output_size, self.kernel_size = output_size, kernel_size
        self.dilation, self.padding, self.stride = dilation, padding, stride

    def forward(self, input):
        return fold(input, self.output_size, self.kernel_size, self.dilation, self.padding,
                    self.stride)

    def extra_repr(self):
        return (f"output_size={self.output_size}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, padding={self.padding}, stride={self.stride}")
