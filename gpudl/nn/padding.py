"""Padding layers (ZeroPad, ConstantPad, ReflectionPad, ReplicationPad, CircularPad; 1d to 3d),
each a stateless Module over ``F.pad`` with torch's arguments: ``padding`` an int (every side)
or a tuple (left, right[, top, bottom])."""

from ..ops._util import is_int
from ..ops.padding import pad
from .module import Module


class _PadNd(Module):
    _mode = "constant"
    _sides = 2                       # 1d pads (left, right); 2d (left, right, top, bottom)

    def __init__(self, padding):
        super().__init__()
        self.padding = self._widths(padding)

    def _widths(self, padding):
        name = type(self).__name__
        if is_int(padding):
            return (int(padding),) * self._sides
        if not isinstance(padding, (tuple, list)) or len(padding) != self._sides \
                or not all(is_int(p) for p in padding):
            raise ValueError(f"{name}: padding must be an int or a tuple of {self._sides} ints, "
                             f"got {padding!r}")
        return tuple(int(p) for p in padding)

    def forward(self, input):
        return pad(input, self.padding, self._mode)

    def extra_repr(self):
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    def __init__(self, padding, value):
        super().__init__(padding)
        self.value = value

    def forward(self, input):
        return pad(input, self.padding, "constant", self.value)

    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPadNd):
    """Pad the last dim with ``value``."""


class ConstantPad2d(_ConstantPadNd):
    """Pad the last two dims with ``value``."""

    _sides = 4


class ZeroPad1d(ConstantPad1d):
    """Pad the last dim with zeros."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return f"{self.padding}"


class ZeroPad2d(ConstantPad2d):
    """Pad the last two dims with zeros."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return f"{self.padding}"


class ReflectionPad1d(_PadNd):
    """Pad the last dim with its reflection (the edge not repeated)."""

    _mode = "reflect"


class ReflectionPad2d(_PadNd):
    """Pad the last two dims with their reflection (the edge not repeated)."""

    _mode, _sides = "reflect", 4


class ReplicationPad1d(_PadNd):
    """Pad the last dim by repeating its edge values."""

    _mode = "replicate"


class ReplicationPad2d(_PadNd):
    """Pad the last two dims by repeating their edge values."""

    _mode, _sides = "replicate", 4


class CircularPad1d(_PadNd):
    """Pad the last dim by wrapping around (the values from the other end)."""

    _mode = "circular"


class CircularPad2d(_PadNd):
    """Pad the last two dims by wrapping around."""

    _mode, _sides = "circular", 4


class ConstantPad3d(_ConstantPadNd):
    """Pad the last three dims with ``value``."""

    _sides = 6


class ZeroPad3d(ConstantPad3d):
    """Pad the last three dims with zeros."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return f"{self.padding}"


class ReflectionPad3d(_PadNd):
    """Pad the last three dims with their reflection (the edge not repeated)."""

    _mode, _sides = "reflect", 6


class ReplicationPad3d(_PadNd):
    """Pad the last three dims by repeating their edge values."""

    _mode, _sides = "replicate", 6


class CircularPad3d(_PadNd):
    """Pad the last three dims by wrapping around."""

    _mode, _sides = "circular", 6
