"""F.pad in constant mode: pads (left, right) pairs from the last dim backwards, as torch;
a negative width crops that side instead."""

from ..autograd import Function
from ..tensor import Tensor
from ._util import xp_of


class Pad(Function):
    @staticmethod
    def forward(ctx, x, widths, value):
        crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, x.shape))
        kept = x[crop]
        grow = tuple((max(lo, 0), max(hi, 0)) for lo, hi in widths)
        ctx.inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(grow, kept.shape))
        ctx.shrink = tuple((max(-lo, 0), max(-hi, 0)) for lo, hi in widths)
        return xp_of(x).pad(kept, grow, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return xp_of(g).pad(g[ctx.inner], ctx.shrink, mode="constant"), None, None


def pad(input, pad, mode="constant", value=None):
    """Pad ``input`` with ``value`` (0 by default): ``pad = (left, right)`` pads the last dim,
    ``(left, right, top, bottom)`` the last two, and so on. A negative width removes that many
    elements from that side (as torch); no dim may end up with a negative size."""
    if not isinstance(input, Tensor):
        raise TypeError(f"pad: input must be a Tensor, got {type(input).__name__}")
    if mode != "constant":
        raise NotImplementedError(f"pad: only mode='constant' is supported, got {mode!r}")
    pad = tuple(pad)
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: pad {pad} must hold (left, right) pairs for at most "
                         f"{input.ndim} dims of input of shape {input.shape}")
    if any(not isinstance(p, int) or isinstance(p, bool) for p in pad):
        raise TypeError(f"pad: widths must be ints, got {pad}")
    pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)]        # last dim first
    widths = [(0, 0)] * (input.ndim - len(pairs)) + pairs[::-1]
    if any(n + lo + hi < 0 for n, (lo, hi) in zip(input.shape, widths)):
        raise ValueError(f"pad: pad {pad} would give a negative size for input of shape "
                         f"{input.shape}")
    return Pad.apply(input, tuple(widths), 0 if value is None else value)
