"""Local response normalisation across channels (AlexNet's): F.local_response_norm from
differentiable tensor ops."""

from .. import creation
from ..functions import cat
from ..tensor import Tensor


def _channel_window_sum(squares, before, after):
    """Sum over channels [c - before, c + after] of (N, C, ...) ``squares``, zeros past the
    ends."""
    channels = squares.shape[1]
    shape = list(squares.shape)
    parts = []
    for width, place in ((before, 0), (after, 1)):
        if width:
            shape[1] = width
            parts.insert(len(parts) * place, creation.zeros(tuple(shape), dtype=squares.dtype,
                                                            device=squares._device))
    parts.insert(1 if before else 0, squares)
    padded = cat(parts, 1) if len(parts) > 1 else squares
    total = padded.narrow(1, 0, channels)
    for shift in range(1, before + after + 1):
        total = total + padded.narrow(1, shift, channels)
    return total


def _check(op, input, size):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim < 3:
        raise ValueError(f"{op}: expected 3-D or higher input (N, C, ...), got shape "
                         f"{tuple(input.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{op}: size must be a positive int, got {size!r}")


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """input / (k + alpha / size * sum of squares over ``size`` neighbouring channels) ** beta,
    the window [c - size//2, c + (size-1)//2] zero-padded, as ``F.local_response_norm``.
    Input (N, C, *) with at least one dim after C."""
    _check("local_response_norm", input, size)
    if input.numel() == 0:
        return input
    total = _channel_window_sum(input * input, size // 2, (size - 1) // 2)
    return input / (total * (alpha / size) + k).pow(beta)

