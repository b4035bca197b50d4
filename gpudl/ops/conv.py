"""conv2d and conv_transpose2d: PyTorch's functional convolutions, one Function each.

The Functions only call the entries of ``kernels.conv`` (which pick the device path); this module
checks the user's arguments first, so a refused call raises before any work and changes nothing.
Inputs are (N, C, H, W) or unbatched (C, H, W). The transposed convolution is the adjoint of the
convolution: its forward is conv2d's input gradient, its backward conv2d's forward and weight
gradient (kernels/conv.py).
"""

import numbers

from .. import backend, backends, kernels
from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..dtypes import is_floating
from ..autograd import Function
from ..tensor import Tensor
from ._util import EmptyOutputError
from .padding import pad as _pad


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, dilation, groups)
        return kernels.conv.conv2d_forward(x, w, b, *ctx.conf,
                                           allow_tf32=backends.conv_allows_tf32())

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        gx, gw, gb = kernels.conv.conv2d_backward(x, w, gy, *ctx.conf,
                                                  needs=ctx.needs_input_grad[:3],
                                                  allow_tf32=backends.conv_allows_tf32())
        return gx, gw, gb, None, None, None, None


class ConvTranspose2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding, output_padding, groups, dilation):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, output_padding, groups, dilation)
        return kernels.conv.conv_transpose2d_forward(x, w, b, *ctx.conf,
                                                     allow_tf32=backends.conv_allows_tf32())

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        gx, gw, gb = kernels.conv.conv_transpose2d_backward(
            x, w, gy, *ctx.conf, needs=ctx.needs_input_grad[:3],
            allow_tf32=backends.conv_allows_tf32())
        return gx, gw, gb, None, None, None, None, None


# --------------------------------------------------------------------------- public functions
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as PyTorch) over (N, C, H, W) or (C, H, W) input.

    Args:
        input: (N, C_in, H, W) or unbatched (C_in, H, W).
        weight: (C_out, C_in / groups, kH, kW).
        bias: (C_out,) or None.
        stride, dilation: an int or an (h, w) pair, positive.
        padding: an int or an (h, w) pair of zeros on both sides, or ``'valid'`` (none) or
            ``'same'`` (output as large as the input; stride 1 only; an odd total puts the extra
            zero at the bottom/right, as PyTorch).
        groups: C_in and C_out split into this many groups, each convolved separately
            (``groups == C_in``: depthwise).

    Shape: (N, C_in, H, W) -> (N, C_out, Ho, Wo), Ho = floor((H + 2p - d*(kH-1) - 1) / s) + 1.
    Example: ``conv2d(x, w, b, stride=2, padding=1)``.
    """
    if _autocast.active:
        input, weight, bias = cast_inputs("conv2d", input, weight, bias)
    op = "conv2d"
    shapes = _check_tensors(op, input, weight, bias)
    stride = _pair(op, "stride", stride, 1, shapes)
    dilation = _pair(op, "dilation", dilation, 1, shapes)
    groups = _groups(op, groups, shapes)
    _check_weight(op, input, weight, bias, groups, in_dim=1, out_dim=0, shapes=shapes)
    kernel = tuple(weight.shape[2:])
    if isinstance(padding, str):
        input, padding = _string_padding(op, input, padding, kernel, stride, dilation, shapes)
    else:
        padding = _pair(op, "padding", padding, 0, shapes)
    _check_size(op, input, weight, kernel, padding, dilation)
    return _unbatched(input, lambda x: Conv2d.apply(x, weight, bias, stride, padding, dilation,
                                                    groups))


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """2-D transposed convolution (the gradient of conv2d with respect to its input) over
    (N, C, H, W) or (C, H, W) input.

    Args:
        input: (N, C_in, H, W) or unbatched (C_in, H, W).
        weight: (C_in, C_out / groups, kH, kW).
        bias: (C_out,) or None.
        stride, dilation: an int or an (h, w) pair, positive.
        padding: an int or an (h, w) pair: ``dilation * (k - 1) - padding`` zeros pad the input.
        output_padding: an int or an (h, w) pair added to one side of the output, smaller than
            the stride or the dilation.
        groups: C_in and C_out split into this many groups.

    Shape: (N, C_in, H, W) -> (N, C_out, Ho, Wo),
    Ho = (H - 1) * s - 2p + d * (kH - 1) + output_padding + 1.
    Example: ``conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)`` doubles H and W
    for a 3x3 kernel.
    """
    if _autocast.active:
        input, weight, bias = cast_inputs("conv_transpose2d", input, weight, bias)
    op = "conv_transpose2d"
    shapes = _check_tensors(op, input, weight, bias)
    stride = _pair(op, "stride", stride, 1, shapes)
    dilation = _pair(op, "dilation", dilation, 1, shapes)
    padding = _pair(op, "padding", padding, 0, shapes)
    output_padding = _pair(op, "output_padding", output_padding, 0, shapes)
    groups = _groups(op, groups, shapes)
    _check_weight(op, input, weight, bias, groups, in_dim=0, out_dim=1, shapes=shapes)
    for axis, (op_, s, d) in enumerate(zip(output_padding, stride, dilation)):
        if op_ >= max(s, d):
            raise ValueError(
                f"{op}: output_padding {output_padding} must be smaller than either stride "
                f"{stride} or dilation {dilation} (axis {axis}) {shapes}")
    size = [(n - 1) * s - 2 * p + d * (k - 1) + o + 1 for n, k, s, p, o, d in zip(
        input.shape[-2:], weight.shape[2:], stride, padding, output_padding, dilation)]
    if min(size) < 1:
        raise EmptyOutputError(
            f"{op}: output size {tuple(size)} is not positive for stride {stride}, padding "
            f"{padding}, output_padding {output_padding}, dilation {dilation} {shapes}")
    return _unbatched(input, lambda x: ConvTranspose2d.apply(x, weight, bias, stride, padding,
                                                             output_padding, groups, dilation))


# --------------------------------------------------------------------------- checks
def _check_tensors(op, input, weight, bias):
    """Types, dtypes and ranks; returns "(input shape ..., weight shape ...)" for messages."""
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{op}: bias must be a Tensor or None, got {type(bias).__name__}")
    shapes = f"(input shape {input.shape}, weight shape {weight.shape})"
    if not is_floating(input.dtype):
        raise TypeError(f"{op}: input must be floating point, got dtype {input.dtype} {shapes}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise TypeError(f"{op}: input dtype {input.dtype} and {name} dtype {t.dtype} differ "
                            f"{shapes}")
    if input.ndim not in (3, 4):
        raise ValueError(f"{op}: expected 3-D (unbatched) or 4-D (batched) input {shapes}")
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D {shapes}")
    return shapes


def _pair(op, name, value, minimum, shapes):
    """An int or a pair of ints -> a tuple of two ints, each >= minimum."""
    values = (value, value) if isinstance(value, numbers.Integral) else value
    if (isinstance(values, str) or not hasattr(values, "__len__") or len(values) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                       for v in values)):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r} {shapes}")
    values = (int(values[0]), int(values[1]))
    if min(values) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{op}: {name} must be {kind}, got {value!r} {shapes}")
    return values


def _groups(op, groups, shapes):
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool):
        raise TypeError(f"{op}: groups must be an int, got {groups!r} {shapes}")
    if groups < 1:
        raise ValueError(f"{op}: groups must be positive, got {groups} {shapes}")
    return int(groups)


def _check_weight(op, input, weight, bias, groups, in_dim, out_dim, shapes):
    """Channels: input C_in == weight.shape[in_dim] (* groups for conv2d), C_out divisible."""
    channels = input.shape[-3]
    expected = weight.shape[1] * groups if in_dim == 1 else weight.shape[0]
    if channels != expected:
        raise ValueError(f"{op}: input has {channels} channels but weight expects {expected} "
                         f"with groups={groups} {shapes}")
    if weight.shape[0] % groups:                 # conv2d: out channels; transposed: in channels
        raise ValueError(f"{op}: groups={groups} does not divide weight.shape[0] = "
                         f"{weight.shape[0]} {shapes}")
    out_channels = weight.shape[out_dim] * (groups if out_dim == 1 else 1)
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"{op}: bias of shape {bias.shape} does not match the "
                         f"{out_channels} output channels {shapes}")
    if min(weight.shape[2:]) < 1:
        raise ValueError(f"{op}: weight has an empty kernel {shapes}")


def _string_padding(op, input, padding, kernel, stride, dilation, shapes):
    """'valid' or 'same' -> (input, symmetric padding); 'same' with an odd total pads the input's
    bottom/right by one first, as PyTorch."""
    if padding == "valid":
        return input, (0, 0)
    if padding != "same":
        raise ValueError(f"{op}: padding must be 'valid', 'same', an int or a pair, "
                         f"got {padding!r} {shapes}")
    if stride != (1, 1):
        raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                         f"(stride {stride}) {shapes}")
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    extra = [t % 2 for t in total]
    if any(extra):
        input = _pad(input, (0, extra[1], 0, extra[0]))
    return input, (total[0] // 2, total[1] // 2)


def _check_size(op, input, weight, kernel, padding, dilation):
    padded = [n + 2 * p for n, p in zip(input.shape[-2:], padding)]
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if any(s > n for s, n in zip(span, padded)):
        raise EmptyOutputError(
            f"{op}: padded input size {tuple(padded)} is smaller than the (dilated) kernel size "
            f"{tuple(span)} (input shape {input.shape}, weight shape {weight.shape}, padding "
            f"{padding}, dilation {dilation})")


def _unbatched(input, fn):
    """Apply ``fn`` to a 4-D input; a 3-D (unbatched) input runs as a batch of one."""
    if input.ndim == 4:
        return fn(input)
    return fn(input.unsqueeze(0)).squeeze(0)


def _single(op, name, value):
    """An int, or a 1-tuple of one (torch's 1-D spelling)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{op}: {name} must be an int or a 1-tuple, got {value!r}")
        value = value[0]
    return value


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution over (N, C_in, L) or (C_in, L) input with weight (C_out, C_in/groups, k),
    computed by conv2d on a height-1 image (same kernels, same checks).

    padding: an int, a 1-tuple, 'valid' or 'same'. Shape: (N, C_in, L) -> (N, C_out, Lo),
    Lo = floor((L + 2p - d*(k-1) - 1) / s) + 1. Example: ``conv1d(x, w, padding=1)``.
    """
    if _autocast.active:
        input, weight, bias = cast_inputs("conv1d", input, weight, bias)
    op = "conv1d"
    if getattr(input, "ndim", None) not in (2, 3) or getattr(weight, "ndim", None) != 3:
        raise ValueError(f"{op}: expected input (N, C, L) or (C, L) and weight (C_out, C_in, k), "
                         f"got shapes {getattr(input, 'shape', None)} and "
                         f"{getattr(weight, 'shape', None)}")
    padding = padding if isinstance(padding, str) else (0, _single(op, "padding", padding))
    out = conv2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias,
                 (1, _single(op, "stride", stride)), padding,
                 (1, _single(op, "dilation", dilation)), groups)
    return out.squeeze(-2)


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Sliding local blocks (im2col), as ``F.unfold``: (N, C, H, W) -> (N, C*kH*kW, L), L the
    number of blocks, channel-major then kernel row and column. Computed as a grouped conv2d
    with one-hot kernels, so its gradient is conv2d's (blocks overlapping add up)."""
    op = "unfold"
    if getattr(input, "ndim", None) not in (3, 4):
        raise ValueError(f"{op}: expected (N, C, H, W) or (C, H, W) input, got shape "
                         f"{getattr(input, 'shape', None)}")
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    channels = input.shape[-3]
    picks = backend.xp_for(input._device).eye(kh * kw, dtype=input.dtype).reshape(
        kh * kw, 1, kh, kw)
    weight = Tensor._make(picks, False, None, 0, input._device).repeat(channels, 1, 1, 1)
    blocks = conv2d(input, weight, None, stride, padding, dilation, groups=channels)
    return blocks.reshape(*blocks.shape[:-2], blocks.shape[-2] * blocks.shape[-1])

