"""Keras's cropping layers (Cropping1D/2D/3D): rows, columns or frames cut from each end of
the spatial axes (channels last by default)."""

import numbers

from ..engine import Layer


def _pairs(where, cropping, rank):
    """``cropping`` as ``rank`` (before, after) pairs: an int, ``rank`` ints, or pairs."""
    if isinstance(cropping, numbers.Integral):
        cropping = ((cropping, cropping),) * rank
    cropping = tuple((c, c) if isinstance(c, numbers.Integral) else tuple(c) for c in cropping)
    if len(cropping) != rank or any(len(c) != 2 or min(c) < 0 for c in cropping):
        raise ValueError(f"{where}: cropping must be an int, {rank} ints or {rank} pairs of "
                         f"ints >= 0, got {cropping!r}")
    return tuple((int(a), int(b)) for a, b in cropping)


class _Cropping(Layer):
    rank = 2

    def __init__(self, cropping, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.cropping = _pairs(type(self).__name__, cropping, self.rank)
        self.data_format = data_format or "channels_last"

    def call(self, inputs):
        first = 1 if self.data_format == "channels_last" else 2
        index = [slice(None)] * inputs.ndim
        for i, (before, after) in enumerate(self.cropping):
            size = inputs.shape[first + i]
            if before + after >= size:
                raise ValueError(f"{self.name}: cropping {self.cropping} leaves nothing of "
                                 f"inputs of shape {tuple(inputs.shape)}")
            index[first + i] = slice(before, size - after)
        return inputs[tuple(index)]


class Cropping1D(_Cropping):
    """(N, L, C) -> (N, L - before - after, C); ``cropping`` an int or (before, after)."""

    rank = 1

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__((tuple(cropping),) if not isinstance(cropping, numbers.Integral)
                         else cropping, **kwargs)


class Cropping2D(_Cropping):
    """(N, H, W, C) cropped: ``cropping`` an int, (rows, cols) or ((top, bottom), (left,
    right))."""

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)


class Cropping3D(_Cropping):
    """(N, D, H, W, C) cropped along the three spatial axes."""

    rank = 3

    def __init__(self, cropping=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)
