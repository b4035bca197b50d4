"""Keras's data helpers: ``to_categorical``."""

import numpy as np


def to_categorical(y, num_classes=None, dtype="float32"):
    """One-hot rows for integer class labels (``num_classes`` defaults to max(y) + 1)."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu" and not np.array_equal(y, np.round(y)):
        raise ValueError("to_categorical: y must hold integer class labels")
    y = y.astype(np.int64)
    if y.ndim and y.shape[-1] == 1 and y.ndim > 1:
        y = y[..., 0]
    num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"to_categorical: labels must be in [0, {num_classes}), got "
                         f"[{y.min()}, {y.max()}]")
    return np.eye(num_classes, dtype=dtype)[y]
