"""Upsample (and its older forms UpsamplingNearest2d, UpsamplingBilinear2d) and PixelShuffle:
stateless layers over ``gpudl.ops.resample``."""

from ..ops.resample import channel_shuffle, interpolate, pixel_shuffle, pixel_unshuffle
from .module import Module


class Upsample(Module):
    """``F.interpolate`` with this layer's ``size`` or ``scale_factor``, ``mode`` ('nearest',
    'linear', 'bilinear') and ``align_corners``."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size, self.mode, self.align_corners = size, mode, align_corners
        self.scale_factor = float(scale_factor) if isinstance(scale_factor, (int, float)) \
            else (tuple(float(f) for f in scale_factor) if scale_factor else None)
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input):
        return interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                           self.recompute_scale_factor)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else \
            f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"


class _Rearrangement(Module):
    """A stateless layer calling ``_function(input, value)`` with the one argument it keeps
    under the name ``_argument``."""

    _argument = ""

    def __init__(self, value):
        super().__init__()
        setattr(self, self._argument, value)

    def forward(self, input):
        return type(self)._function(input, getattr(self, self._argument))

    def extra_repr(self):
        return f"{self._argument}={getattr(self, self._argument)}"


class PixelShuffle(_Rearrangement):
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r) with r = upscale_factor."""

    _argument, _function = "upscale_factor", pixel_shuffle

    def __init__(self, upscale_factor):           # torch's keyword name
        super().__init__(upscale_factor)


class UpsamplingNearest2d(Upsample):
    """Upsample with mode='nearest' on (N, C, H, W) input (torch's older name for it)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """Upsample with mode='bilinear' and align_corners=True on (N, C, H, W) input (torch's
    older name for it)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)


# --------------------------------------------------------------------------- nn-vision
class PixelUnshuffle(_Rearrangement):
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W) with r = downscale_factor (PixelShuffle's
    inverse)."""

    _argument, _function = "downscale_factor", pixel_unshuffle

    def __init__(self, downscale_factor):           # torch's keyword name
        super().__init__(downscale_factor)


class ChannelShuffle(_Rearrangement):
    """(N, C, *) with its channels shuffled across ``groups`` (``F.channel_shuffle``)."""

    _argument, _function = "groups", channel_shuffle

    def __init__(self, groups):           # torch's keyword name
        super().__init__(groups)
