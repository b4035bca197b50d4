"""torch.stft and torch.istft for real signals, differentiable, on both devices.

gpudl has no complex dtype, so the spectrum travels in torch's old real layout: the last dim
holds (real, imaginary), as ``torch.view_as_real(torch.stft(..., return_complex=True))``.
``return_complex=True`` (and None, which torch refuses for real input) is refused with an error
pointing to ``return_complex=False``.

The discrete Fourier transforms are matrix products with cos/sin tables (angles reduced exactly
as 2 pi ((f k) mod n) / n), built from differentiable ops, so that the gradients come from
gpudl's matmul, unfold and pad; istft's overlap-add is one Function (forward: ceil(n_fft / hop)
strided adds of frames that do not overlap; backward: the sliding windows of the gradient).
Memory: an (n_fft, n_fft // 2 + 1) table pair per call; time O(frames * n_fft^2), fine for the
n_fft of audio front ends (a few thousand), not a replacement for an FFT on long frames.
"""

import math

import numpy as np

from . import dtypes
from .amp.autocast_mode import autocast, cast_inputs, state as _autocast
from .autograd import ArrayFunction
from .functions import stack
from .ops import strided
from .ops._util import xp_of
from .ops.padding import pad as _pad
from .tensor import Tensor

PAD_MODES = ("constant", "reflect", "replicate", "circular")
ENVELOPE_FLOOR = 1e-11     # torch's istft: the window's overlap-add must stay above this


def _call(op, input, n_fft, hop_length, win_length, window, extra=""):
    return (f"{op}(shape {tuple(input.shape)}, n_fft={n_fft}, hop_length={hop_length}, "
            f"win_length={win_length}, window={'None' if window is None else tuple(window.shape)}"
            f"{extra})")


def _refuse_complex(op, return_complex, default_refused):
    if return_complex is None and default_refused:
        raise RuntimeError(f"{op}: requires the return_complex parameter for real inputs (as "
                           "torch); gpudl has no complex dtype: pass return_complex=False for "
                           "torch's real (..., freq, frames, 2) layout")
    if return_complex:
        raise RuntimeError(f"{op}: return_complex=True needs a complex dtype, which gpudl does "
                           "not have; pass return_complex=False for the real (..., 2) layout "
                           "of torch.view_as_real")


def _sizes(op, call, n_fft, hop_length, win_length):
    for name, value in (("n_fft", n_fft), ("hop_length", hop_length), ("win_length", win_length)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{call}: {name} must be an int, got {type(value).__name__}")
    if hop_length <= 0:
        raise RuntimeError(f"{call}: expected hop_length > 0, but got hop_length={hop_length}")
    if not 0 < win_length <= n_fft:
        raise RuntimeError(f"{call}: expected 0 < win_length <= n_fft, but got "
                           f"win_length={win_length}")


def _window(call, window, win_length, n_fft, like):
    """The window as a tensor of n_fft elements (ones when None), centred as torch pads it."""
    if window is None:
        xp = xp_of(like._data)
        window = Tensor._make(xp.ones(win_length, dtype=like.dtype), False, None, 0,
                              like._device)
    elif not isinstance(window, Tensor):
        raise TypeError(f"{call}: window must be a Tensor or None, got {type(window).__name__}")
    elif window.ndim != 1 or window.shape[0] != win_length:
        raise RuntimeError(f"{call}: expected a 1D window tensor of size equal to "
                           f"win_length={win_length}, but got window with size "
                           f"{tuple(window.shape)}")
    if window.dtype != like.dtype:
        window = window.astype(like.dtype)
    left = (n_fft - win_length) // 2
    return _pad(window, (left, n_fft - win_length - left)) if win_length < n_fft else window


def _dft_tables(n_fft, bins, like):
    """cos and sin of 2 pi f k / n_fft as (n_fft, bins) constant tensors (k rows, f columns)."""
    xp = xp_of(like._data)
    k, f = np.arange(n_fft)[:, None], np.arange(bins)[None, :]
    angle = 2 * math.pi * ((k * f) % n_fft) / n_fft
    return tuple(Tensor._make(xp.asarray(table, dtype=like.dtype), False, None, 0, like._device)
                 for table in (np.cos(angle), np.sin(angle)))


def stft(input, n_fft, hop_length=None, win_length=None, window=None, center=True,
         pad_mode="reflect", normalized=False, onesided=None, return_complex=None):
    """The short-time Fourier transform of a real signal (torch.stft), in the real layout.

    Args:
        input: a (L,) or (B, L) floating tensor.
        n_fft: the transform size; hop_length (n_fft // 4) and win_length (n_fft) as torch.
        window: a (win_length,) tensor (ones when None), zero-padded to n_fft in the middle.
        center: pad n_fft // 2 on both sides with ``pad_mode`` first (frames centred on
            t * hop_length). normalized: scale by n_fft ** -0.5. onesided (default True):
            n_fft // 2 + 1 frequencies, else n_fft.
        return_complex: must be False (gpudl has no complex dtype).

    Shape: (B?, freq, frames, 2), frames = 1 + (L' - n_fft) // hop_length with L' the padded
    length; [..., 0] the real part, [..., 1] the imaginary one.

    Example: ``gd.stft(x, 64, window=gd.hann_window(64), return_complex=False)``
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"stft: input must be a Tensor, got {type(input).__name__}")
    hop_length = n_fft // 4 if hop_length is None and isinstance(n_fft, int) else hop_length
    win_length = n_fft if win_length is None else win_length
    call = _call("stft", input, n_fft, hop_length, win_length, window)
    _refuse_complex(call, return_complex, True)
    _sizes("stft", call, n_fft, hop_length, win_length)
    if input.ndim not in (1, 2):
        raise RuntimeError(f"{call}: expected a 1D or 2D tensor")
    if not dtypes.is_floating(input.dtype):
        raise RuntimeError(f"{call}: expected a tensor of floating point or complex values")
    if pad_mode not in PAD_MODES:
        raise NotImplementedError(f"stft: unrecognised padding mode {pad_mode!r}; expected one "
                                  f"of {PAD_MODES}")
    if not _autocast.active:
        return _stft(input, n_fft, hop_length, win_length, window, center, pad_mode,
                     normalized, onesided, call)
    input, window = cast_inputs("stft", input, window)      # float32 under cpu autocast
    with autocast(input._device, enabled=False):             # and no lowered matmul inside
        return _stft(input, n_fft, hop_length, win_length, window, center, pad_mode,
                     normalized, onesided, call)


def _stft(input, n_fft, hop_length, win_length, window, center, pad_mode, normalized,
          onesided, call):
    x = input if input.ndim == 2 else input.reshape(1, -1)               # (B, L)
    if center:
        x = _pad(x.reshape(1, *x.shape), (n_fft // 2, n_fft // 2), mode=pad_mode)[0]
    length = x.shape[-1]
    if not 0 < n_fft <= length:
        raise RuntimeError(f"{call}: expected 0 < n_fft <= {length}, but got n_fft={n_fft}")
    frames = x.unfold(-1, n_fft, hop_length) * _window(call, window, win_length, n_fft, input)
    bins = n_fft // 2 + 1 if onesided is None or onesided else n_fft
    cos, sin = _dft_tables(n_fft, bins, frames)
    spectrum = stack([frames @ cos, -(frames @ sin)], -1)               # (B, frames, freq, 2)
    if normalized:
        spectrum = spectrum * n_fft ** -0.5
    spectrum = spectrum.transpose(1, 2)                                  # (B, freq, frames, 2)
    return spectrum if input.ndim == 2 else spectrum[0]


class OverlapAdd(ArrayFunction):
    """(B, T, n) frames, frame t added at t * hop: (B, n + hop (T - 1))."""

    @staticmethod
    def forward(ctx, frames, hop):
        xp = xp_of(frames)
        batch, count, n = frames.shape
        ctx.conf = (n, hop)
        stride = -(-n // hop) * hop                    # frames r, r + R, ... do not overlap
        out = xp.zeros((batch, n + hop * (count - 1) + stride), dtype=frames.dtype)
        for r in range(min(stride // hop, count)):
            group = frames[:, r::stride // hop]                              # (B, T_r, n)
            spread = xp.zeros(group.shape[:2] + (stride,), dtype=frames.dtype)
            spread[..., :n] = group
            start = r * hop
            out[:, start:start + spread.shape[1] * stride] += spread.reshape(batch, -1)
        return out[:, :n + hop * (count - 1)]

    @staticmethod
    def backward(ctx, g):
        n, hop = ctx.conf
        return strided.windows_view(g, 1, n, hop).copy(), None


def istft(input, n_fft, hop_length=None, win_length=None, window=None, center=True,
          normalized=False, onesided=None, length=None, return_complex=False):
    """The inverse of ``stft`` (torch.istft) from the real (..., freq, frames, 2) layout.

    Args:
        input: (freq, frames, 2) or (B, freq, frames, 2), as ``stft(..., return_complex=False)``
            gives; freq is n_fft // 2 + 1 when onesided (the default when freq != n_fft),
            else n_fft (then only the first n_fft // 2 + 1 bins are read, as torch).
        n_fft, hop_length, win_length, window, center, normalized: as given to ``stft``.
        length: the output length (cropped, or zero-padded at the end, as torch).
        return_complex: must be False.

    Each frame's inverse real DFT (the imaginary parts of the 0 and n_fft / 2 bins are
    ignored) is windowed and overlap-added, then divided by the overlap-add of the squared
    window, which must stay above 1e-11 over the kept samples (else RuntimeError, as torch).

    Shape: (B?, L) with L = length, or n_fft + hop_length (frames - 1) less n_fft // 2 at both
    ends when ``center``.

    Example: ``gd.istft(gd.stft(x, 64, return_complex=False), 64)``
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"istft: input must be a Tensor, got {type(input).__name__}")
    hop_length = n_fft // 4 if hop_length is None and isinstance(n_fft, int) else hop_length
    win_length = n_fft if win_length is None else win_length
    call = _call("istft", input, n_fft, hop_length, win_length, window,
                 f", center={center}, normalized={normalized}, onesided={onesided}, "
                 f"length={length}")
    _refuse_complex(call, return_complex, False)
    _sizes("istft", call, n_fft, hop_length, win_length)
    if hop_length > win_length:
        raise RuntimeError(f"{call}: expected 0 < hop_length <= win_length")
    if input.ndim not in (3, 4) or input.shape[-1] != 2 or not dtypes.is_floating(input.dtype):
        raise RuntimeError(f"{call}: expected a floating (freq, frames, 2) or (B, freq, frames, "
                           "2) tensor: stft(..., return_complex=False)'s real layout")
    if not _autocast.active:
        return _istft(input, n_fft, hop_length, win_length, window, center, normalized,
                      onesided, length, call)
    with autocast(input._device, enabled=False):      # torch's istft has no autocast kernel:
        return _istft(input, n_fft, hop_length, win_length, window, center, normalized,
                      onesided, length, call)          # its dtype, no lowered matmul inside


def _istft(input, n_fft, hop_length, win_length, window, center, normalized, onesided, length,
           call):
    spectrum = input if input.ndim == 4 else input.reshape(1, *input.shape)
    bins = spectrum.shape[1]
    onesided = bins != n_fft if onesided is None else onesided
    if bins != (n_fft // 2 + 1 if onesided else n_fft):
        raise RuntimeError(f"{call}: expected the frequency dimension (3rd to the last) of the "
                           f"input to be {n_fft // 2 + 1 if onesided else n_fft} (n_fft / 2 + 1 "
                           f"when onesided, n_fft otherwise), but got {bins}")
    half = n_fft // 2 + 1
    spectrum = spectrum[:, :half].transpose(1, 2)                        # (B, frames, half, 2)
    if normalized:
        spectrum = spectrum * math.sqrt(n_fft)
    cos, sin = _dft_tables(n_fft, half, spectrum)
    weight = np.full(half, 2.0)
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0
    xp = xp_of(spectrum._data)
    weight = Tensor._make(xp.asarray(weight / n_fft, dtype=spectrum.dtype), False, None, 0,
                          spectrum._device)
    imaginary_weight = weight * Tensor._make(xp.asarray(
        (np.arange(half) % (n_fft / 2) != 0).astype(float), dtype=spectrum.dtype), False,
        None, 0, spectrum._device)                     # the 0 and n/2 bins' sines: exactly 0
    frames = (spectrum[..., 0] * weight) @ cos.T - (spectrum[..., 1] * imaginary_weight) @ sin.T
    w = _window(call, window, win_length, n_fft, spectrum)
    signal = OverlapAdd.apply(frames * w, hop_length)                   # (B, n + hop (T - 1))
    envelope = OverlapAdd.apply((w * w).expand(1, frames.shape[1], n_fft), hop_length)[0]
    expected = signal.shape[-1]
    start = n_fft // 2 if center else 0
    end = start + length if length is not None else (expected - n_fft // 2 if center
                                                     else expected)
    signal, envelope = signal[:, start:end], envelope[start:end]
    if float(envelope.abs().min()) < ENVELOPE_FLOOR:
        raise RuntimeError(f"{call}: window overlap add min: {float(envelope.abs().min())} "
                           f"(must be >= {ENVELOPE_FLOOR}: choose a window and hop_length "
                           "whose squared windows overlap everywhere)")
    signal = signal / envelope
    if end > expected:
        signal = _pad(signal, (0, end - expected))
    return signal if input.ndim == 4 else signal[0]


Tensor.stft, Tensor.istft = stft, istft
