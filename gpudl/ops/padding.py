"""F.pad in constant mode: pads (left, right) pairs from the last dim backwards, as torch."""

from ..autograd import Function
from ..tensor import Tensor
from ._util import xp_of


class Pad(Function):
    @staticmethod
    def forward(ctx, x, widths, value):
        ctx.crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape))
        return xp_of(x).pad(x, widths, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.crop], None, None


def pad(input, pad, mode="constant", value=None):
    """Pad ``input`` with ``value`` (0 by default): ``pad = (left, right)`` pads the last dim,
    ``(left, right, top, bottom)`` the last two, and so on. Widths must be non-negative."""
    if not isinstance(input, Tensor):
        raise TypeError(f"pad: input must be a Tensor, got {type(input).__name__}")
    if mode != "constant":
        raise NotImplementedError(f"pad: only mode='constant' is supported, got {mode!r}")
    pad = tuple(pad)
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: pad {pad} must hold (left, right) pairs for at most "
                         f"{input.ndim} dims of input of shape {input.shape}")
    if any(not isinstance(p, int) or p < 0 for p in pad):
        raise ValueError(f"pad: widths must be non-negative ints, got {pad}")
    pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)]        # last dim first
    widths = [(0, 0)] * (input.ndim - len(pairs)) + pairs[::-1]
    return Pad.apply(input, tuple(widths), 0 if value is None else value)
