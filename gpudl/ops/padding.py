"""F.pad: pads (left, right) pairs from the last dim backwards, as torch. Constant mode (a
negative width crops that side instead) is one Function; reflect, replicate and circular read the
input at mirrored, clamped or wrapped positions (an index per padded dim, whose gradient adds up
where positions repeat)."""

import numpy as np

from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..autograd import ArrayFunction
from ..tensor import Tensor
from ._util import row_major, xp_of

# torch's mode -> numpy.pad's name for the same positions
_INDEX_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class Pad(ArrayFunction):
    @staticmethod
    def forward(ctx, x, widths, value):
        crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, x.shape))
        kept = x[crop]
        grow = tuple((max(lo, 0), max(hi, 0)) for lo, hi in widths)
        ctx.inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(grow, kept.shape))
        ctx.shrink = tuple((max(-lo, 0), max(-hi, 0)) for lo, hi in widths)
        return row_major(xp_of(x).pad(kept, grow, mode="constant", constant_values=value))

    @staticmethod
    def backward(ctx, g):
        return xp_of(g).pad(g[ctx.inner], ctx.shrink, mode="constant"), None, None


def pad(input, pad, mode="constant", value=None):
    """Pad ``input`` with ``value`` (0 by default): ``pad = (left, right)`` pads the last dim,
    ``(left, right, top, bottom)`` the last two, and so on. A negative width removes that many
    elements from that side (as torch); no dim may end up with a negative size."""
    if not isinstance(input, Tensor):
        raise TypeError(f"pad: input must be a Tensor, got {type(input).__name__}")
    if mode != "constant" and mode not in _INDEX_MODES:
        raise NotImplementedError(f"pad: mode must be 'constant', 'reflect', 'replicate' or "
                                  f"'circular', got {mode!r}")
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
    if mode != "constant":
        return _pad_by_index(input, pairs, mode)
    if any(n + min(lo, 0) + min(hi, 0) < 0 for n, (lo, hi) in zip(input.shape, widths)):
        raise ValueError(f"pad: pad {pad} crops more than a dim holds for input of shape "
                         f"{input.shape} (negative widths may remove at most the dim's size)")
    return Pad.apply(input, tuple(widths), 0 if value is None else value)


def _pad_by_index(input, pairs, mode):
    if len(pairs) > 3 or input.ndim not in (len(pairs) + 1, len(pairs) + 2):
        raise ValueError(f"pad: mode={mode!r} pads the last 1 to 3 dims of a (N, C, ...) or "
                         f"(C, ...) input; got {len(pairs)} dims to pad for shape {input.shape}")
    if _autocast.active and mode != "circular":     # torch's names: float32 under cpu autocast
        kind = "reflection" if mode == "reflect" else "replication"
        (input,) = cast_inputs(f"{kind}_pad{len(pairs)}d", input)
    out = input
    for k, (lo, hi) in enumerate(pairs):
        axis = input.ndim - 1 - k
        n = input.shape[axis]
        limit = n - 1 if mode == "reflect" else n
        # torch's 1-D reflection/replication pads refuse an empty result (2-D, 3-D ones not)
        smallest = 1 if mode != "circular" and len(pairs) == 1 else 0
        if mode != "replicate" and (lo > limit or hi > limit) or n == 0 or n + lo + hi < smallest:
            raise ValueError(f"pad: mode={mode!r} widths {(lo, hi)} must not exceed "
                             f"{limit} for dim {axis} of size {n} and must leave at least "
                             f"{smallest} element(s) there")
        # positions in the input; a negative width crops that side, as in torch (circular
        # wraps around what is left after the crop, the others reflect or clamp the input)
        positions = np.arange(n)
        crop = slice(max(-lo, 0), n - max(-hi, 0))
        if mode == "circular":
            positions = np.pad(positions[crop], (max(lo, 0), max(hi, 0)), mode="wrap")
        else:
            positions = np.pad(positions, (max(lo, 0), max(hi, 0)), mode=_INDEX_MODES[mode])
            positions = positions[max(-lo, 0):len(positions) - max(-hi, 0)]
        out = out.index_select(axis, positions)
    return out
