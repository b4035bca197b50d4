"""Keras's helpers: ``to_categorical``, ``set_random_seed``."""

import random

import numpy as np

from .. import random as gpudl_random


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


def set_random_seed(seed):
    """Seed Python's ``random``, NumPy's global generator and gpudl's generators (weight
    initialisation, dropout), as Keras's does for its backends."""
    gpudl_random.manual_seed_value(seed, "set_random_seed")      # an int, or TypeError
    np.random.seed(seed)                      # refuses seeds outside [0, 2**32) first
    random.seed(seed)
    gpudl_random.manual_seed(seed)
