"""PyTorch's functional convolutions: conv1d/2d/3d, conv_transpose1d/2d/3d, convolution,
unfold and fold. conv2d and conv_transpose2d are one Function each over kernels/conv.py (1-D runs
as 2-D on a height-1 image); the 3-D ones run ops/conv_nd.py's im2col and GEMM.

The Functions only call the entries of ``kernels.conv`` (which pick the device path); this module
checks the user's arguments first, so a refused call raises before any work and changes nothing.
Inputs are (N, C, H, W) or unbatched (C, H, W). The transposed convolution is the adjoint of the
convolution: its forward is conv2d's input gradient, its backward conv2d's forward and weight
gradient (kernels/conv.py).
"""

import numbers

import numpy as np

from .. import backend, backends, kernels
from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..dtypes import is_floating
from ..autograd import ArrayFunction
from ..tensor import Tensor
from . import conv_nd
from ._util import EmptyOutputError
from .padding import pad as _pad


class Conv2d(ArrayFunction):
    # on cuda, kernels.conv's gradients are new arrays, or disjoint views of one new buffer (the
    # weight and bias gradients of conv_cuda's one pass): .grad takes them uncopied; the CPU
    # paths may return views of scratch buffers
    new_gradients = "cuda"

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


class ConvTranspose2d(ArrayFunction):
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
    return _convolution("conv2d", 2, Conv2d, input, weight, bias, stride, padding, dilation,
                        groups)


def _convolution(op, dims, function, input, weight, bias, stride, padding, dilation, groups):
    """The checked call of a ``dims``-D convolution: ``function`` applied to batched input."""
    if _autocast.active:
        input, weight, bias = cast_inputs(op, input, weight, bias)
    shapes = _check_tensors(op, input, weight, bias, dims)
    stride = _pair(op, "stride", stride, 1, shapes, dims)
    dilation = _pair(op, "dilation", dilation, 1, shapes, dims)
    groups = _groups(op, groups, shapes)
    _check_weight(op, input, weight, bias, groups, in_dim=1, out_dim=0, shapes=shapes)
    kernel = tuple(weight.shape[2:])
    if isinstance(padding, str):
        input, padding = _string_padding(op, input, padding, kernel, stride, dilation, shapes)
    else:
        padding = _pair(op, "padding", padding, 0, shapes, dims)
    _check_size(op, input, weight, kernel, padding, dilation)
    return _unbatched(input, lambda x: function.apply(x, weight, bias, stride, padding,
                                                      dilation, groups), dims + 2)


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
    return _conv_transpose("conv_transpose2d", 2, ConvTranspose2d, input, weight, bias, stride,
                           padding, output_padding, groups, dilation)


def _conv_transpose(op, dims, function, input, weight, bias, stride, padding, output_padding,
                    groups, dilation):
    """The checked call of a ``dims``-D transposed convolution: ``function`` on batched input."""
    if _autocast.active:
        input, weight, bias = cast_inputs(op, input, weight, bias)
    shapes = _check_tensors(op, input, weight, bias, dims)
    if isinstance(padding, str):
        raise TypeError(f"{op}: padding must be an int or a tuple of ints, got {padding!r} "
                        f"{shapes}")
    stride = _pair(op, "stride", stride, 1, shapes, dims)
    dilation = _pair(op, "dilation", dilation, 1, shapes, dims)
    padding = _pair(op, "padding", padding, 0, shapes, dims)
    output_padding = _pair(op, "output_padding", output_padding, 0, shapes, dims)
    groups = _groups(op, groups, shapes)
    _check_weight(op, input, weight, bias, groups, in_dim=0, out_dim=1, shapes=shapes)
    for axis, (op_, s, d) in enumerate(zip(output_padding, stride, dilation)):
        if op_ >= max(s, d):
            raise ValueError(
                f"{op}: output_padding {output_padding} must be smaller than either stride "
                f"{stride} or dilation {dilation} (axis {axis}) {shapes}")
    size = [(n - 1) * s - 2 * p + d * (k - 1) + o + 1 for n, k, s, p, o, d in zip(
        input.shape[-dims:], weight.shape[2:], stride, padding, output_padding, dilation)]
    if min(size) < 1:
        raise EmptyOutputError(
            f"{op}: output size {tuple(size)} is not positive for stride {stride}, padding "
            f"{padding}, output_padding {output_padding}, dilation {dilation} {shapes}")
    return _unbatched(input, lambda x: function.apply(x, weight, bias, stride, padding,
                                                      output_padding, groups, dilation), dims + 2)


# --------------------------------------------------------------------------- checks
def _check_tensors(op, input, weight, bias, dims=2):
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
    if input.ndim not in (dims + 1, dims + 2):
        raise ValueError(f"{op}: expected {dims + 1}-D (unbatched) or {dims + 2}-D (batched) "
                         f"input {shapes}")
    if weight.ndim != dims + 2:
        raise ValueError(f"{op}: weight must be {dims + 2}-D {shapes}")
    return shapes


def _pair(op, name, value, minimum, shapes, dims=2):
    """An int or ``dims`` ints (a pair for 2-D) -> a tuple of ``dims`` ints, each >= minimum."""
    if type(value) is int and value >= minimum:     # the common case, without the ABC checks
        return (value,) * dims
    values = (value,) * dims if isinstance(value, numbers.Integral) else value
    if (isinstance(values, str) or not hasattr(values, "__len__") or len(values) != dims
            or not all(type(v) is int or (isinstance(v, numbers.Integral)
                                          and not isinstance(v, bool)) for v in values)):
        what = "a pair of ints" if dims == 2 else f"a tuple of {dims} ints"
        raise TypeError(f"{op}: {name} must be an int or {what}, got {value!r} {shapes}")
    values = tuple(map(int, values))
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
    channels = input.shape[1 - weight.ndim]
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
        return input, (0,) * len(kernel)
    if padding != "same":
        raise ValueError(f"{op}: padding must be 'valid', 'same', an int or a pair, "
                         f"got {padding!r} {shapes}")
    if any(s != 1 for s in stride):
        raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                         f"(stride {stride}) {shapes}")
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    extra = [t % 2 for t in total]
    if any(extra):
        input = _pad(input, tuple(w for e in reversed(extra) for w in (0, e)))
    return input, tuple(t // 2 for t in total)


def _check_size(op, input, weight, kernel, padding, dilation):
    padded = [n + 2 * p for n, p in zip(input.shape[-len(padding):], padding)]
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if any(s > n for s, n in zip(span, padded)):
        raise EmptyOutputError(
            f"{op}: padded input size {tuple(padded)} is smaller than the (dilated) kernel size "
            f"{tuple(span)} (input shape {input.shape}, weight shape {weight.shape}, padding "
            f"{padding}, dilation {dilation})")


def _unbatched(input, fn, batched_ndim=4):
    """Apply ``fn`` to a batched input; an unbatched one runs as a batch of one."""
    if input.ndim == batched_ndim:
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
    number of blocks, channel-major then kernel row and column. One gather from the zero-padded
    image (``_tap_positions``): the values are moved, never multiplied (a convolution with
    one-hot kernels would round them to TF32 on a GPU), and the gradient is its scatter-add."""
    op = "unfold"
    if not isinstance(input, Tensor) or input.ndim not in (3, 4):
        raise ValueError(f"{op}: expected (N, C, H, W) or (C, H, W) input, got shape "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    shapes = f"(input shape {input.shape})"
    kernel, dilation, padding, stride = _window(op, kernel_size, dilation, padding, stride,
                                                shapes)
    blocks, taps = _tap_positions(input.shape[-2:], kernel, dilation, padding, stride,
                                  input._device)
    if min(blocks) < 1:
        raise EmptyOutputError(f"{op}: the {tuple(input.shape[-2:])} image padded by {padding} "
                               f"holds no block of kernel_size {kernel} with dilation "
                               f"{dilation} (blocks {blocks[0]} x {blocks[1]}) {shapes}")
    top, left = padding
    padded = _pad(input, (left, left, top, top)) if top or left else input
    flat = padded.reshape(*padded.shape[:-2], padded.shape[-2] * padded.shape[-1])
    taps_per_channel = kernel[0] * kernel[1]
    return flat.index_select(-1, taps).reshape(*input.shape[:-3],
                                               input.shape[-3] * taps_per_channel,
                                               blocks[0] * blocks[1])


def _window(op, kernel_size, dilation, padding, stride, shapes):
    """unfold's and fold's window arguments, each checked and made a pair of ints."""
    return (_pair(op, "kernel_size", kernel_size, 1, shapes),
            _pair(op, "dilation", dilation, 1, shapes), _pair(op, "padding", padding, 0, shapes),
            _pair(op, "stride", stride, 1, shapes))


def _tap_positions(size, kernel, dilation, padding, stride, device):
    """((block rows, block columns), the int64 index of every block's taps in the zero-padded
    ``size`` image flattened, tap-major (kernel row, kernel column) then block row and column):
    unfold gathers there and fold adds there. Built on ``device`` (no host-to-device copy)."""
    xp = backend.xp_for(device)
    padded = [n + 2 * p for n, p in zip(size, padding)]
    blocks = [(n - d * (k - 1) - 1) // s + 1 for n, k, d, s in zip(padded, kernel, dilation,
                                                                    stride)]
    if min(blocks) < 1:
        return blocks, None
    rows = (xp.arange(kernel[0]) * dilation[0])[:, None, None, None] + \
        (xp.arange(blocks[0]) * stride[0])[None, None, :, None]
    columns = (xp.arange(kernel[1]) * dilation[1])[None, :, None, None] + \
        (xp.arange(blocks[1]) * stride[1])[None, None, None, :]
    index = (rows * padded[1] + columns).reshape(-1).astype(np.int64)
    return blocks, Tensor._make(index, False, None, 0, device)


# --------------------------------------------------------------------------- nn-vision: 1-D/3-D
def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-D convolution over (N, C_in, D, H, W) or (C_in, D, H, W) input with weight
    (C_out, C_in / groups, kD, kH, kW), as ``torch.nn.functional.conv3d``: the arguments of
    conv2d with three entries where conv2d takes two (or one int for all). Runs as im2col and one
    GEMM on the array module (ops/conv_nd.py) on both devices.

    Shape: Do = floor((D + 2p - d*(kD-1) - 1) / s) + 1, and so for H and W.
    Example: ``conv3d(x, w, padding=1)``.
    """
    return _convolution("conv3d", 3, conv_nd.ConvNd, input, weight, bias, stride, padding,
                        dilation, groups)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """3-D transposed convolution (conv3d's gradient in its input) over (N, C_in, D, H, W) or
    (C_in, D, H, W) input with weight (C_in, C_out / groups, kD, kH, kW), as
    ``torch.nn.functional.conv_transpose3d`` (arguments as conv_transpose2d, three entries each).

    Shape: Do = (D - 1) * s - 2p + d * (kD - 1) + output_padding + 1, and so for H and W.
    """
    return _conv_transpose("conv_transpose3d", 3, conv_nd.ConvTransposeNd, input, weight, bias,
                           stride, padding, output_padding, groups, dilation)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """1-D transposed convolution over (N, C_in, L) or (C_in, L) input with weight
    (C_in, C_out / groups, k), as ``torch.nn.functional.conv_transpose1d``: conv_transpose2d on a
    height-1 image (the same kernels and checks).

    Shape: Lo = (L - 1) * s - 2p + d * (k - 1) + output_padding + 1.
    """
    op = "conv_transpose1d"
    if getattr(input, "ndim", None) not in (2, 3) or getattr(weight, "ndim", None) != 3:
        raise ValueError(f"{op}: expected input (N, C, L) or (C, L) and weight (C_in, C_out, k), "
                         f"got shapes {getattr(input, 'shape', None)} and "
                         f"{getattr(weight, 'shape', None)}")
    if _autocast.active:
        input, weight, bias = cast_inputs(op, input, weight, bias)
    out = conv_transpose2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias,
                           (1, _single(op, "stride", stride)), (0, _single(op, "padding", padding)),
                           (0, _single(op, "output_padding", output_padding)), groups,
                           (1, _single(op, "dilation", dilation)))
    return out.squeeze(-2)


def convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding,
                groups):
    """``torch.convolution``: conv1d/2d/3d or conv_transpose1d/2d/3d by ``transposed`` and the
    weight's rank (every argument required, as torch's)."""
    dims = getattr(weight, "ndim", 0) - 2
    if dims not in (1, 2, 3):
        raise ValueError(f"convolution: weight must be 3-D, 4-D or 5-D, got shape "
                         f"{getattr(weight, 'shape', None)}")
    if transposed:
        function = (conv_transpose1d, conv_transpose2d, conv_transpose3d)[dims - 1]
        return function(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return (conv1d, conv2d, conv3d)[dims - 1](input, weight, bias, stride, padding, dilation,
                                              groups)


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum sliding local blocks back into an image (col2im), as ``F.fold``: the adjoint of
    ``unfold``. (N, C*kH*kW, L) or (C*kH*kW, L) -> (N, C, H, W), L the number of blocks of an
    ``output_size`` (H, W) image. One scatter-add into the zero-padded image (unfold's
    positions), then the padding cropped: sums of the values, with no other arithmetic."""
    op = "fold"
    if not isinstance(input, Tensor) or input.ndim not in (2, 3):
        raise ValueError(f"{op}: expected (N, C*kH*kW, L) or (C*kH*kW, L) input, got shape "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    shapes = f"(input shape {input.shape})"
    size = _pair(op, "output_size", output_size, 1, shapes)
    kernel, dilation, padding, stride = _window(op, kernel_size, dilation, padding, stride,
                                                shapes)
    blocks, positions = _tap_positions(size, kernel, dilation, padding, stride, input._device)
    taps = kernel[0] * kernel[1]
    if input.shape[-2] % taps:
        raise ValueError(f"{op}: input.shape[-2] = {input.shape[-2]} must be divisible by the "
                         f"product of kernel_size {kernel} {shapes}")
    if min(blocks) < 1 or input.shape[-1] != blocks[0] * blocks[1]:
        raise ValueError(f"{op}: input.shape[-1] = {input.shape[-1]} does not match the "
                         f"{blocks[0]} x {blocks[1]} blocks of output_size {size} with "
                         f"kernel_size {kernel}, dilation {dilation}, padding {padding}, "
                         f"stride {stride} {shapes}")
    channels = input.shape[-2] // taps
    padded = [n + 2 * p for n, p in zip(size, padding)]
    lead = input.shape[:-2]
    zeros = backend.xp_for(input._device).zeros((*lead, channels, padded[0] * padded[1]),
                                                dtype=input.dtype)
    summed = Tensor._make(zeros, False, None, 0, input._device).index_add(
        -1, positions, input.reshape(*lead, channels, taps * input.shape[-1]))
    image = summed.reshape(*lead, channels, *padded)
    return image[..., padding[0]:padding[0] + size[0], padding[1]:padding[1] + size[1]]
