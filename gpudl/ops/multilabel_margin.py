"""multilabel_margin_loss: the multi-class multi-label hinge loss (torch's formula)."""

import numpy as np

from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..tensor import Tensor
from .loss import _check_probabilities, check_reduction
from .margin_loss import _reduced, _tensors
from ._util import xp_of


def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """For each sample: the sum over its target classes j (``target``'s leading entries, up to
    the first -1) and its other classes i of ``max(0, 1 - (input[j] - input[i]))``, divided by
    the number of classes. input (N, C) or (C,); target of the same shape, integer.

    Example: ``F.multilabel_margin_loss(x, gd.tensor([[3, 0, -1, 1]]))`` for classes 3 and 0.
    """
    op = "multilabel_margin_loss"
    if _autocast.active:
        (input,) = cast_inputs(op, input)
    reduction = check_reduction(op, reduction, size_average, reduce)
    _tensors(op, input=input, target=target)
    if np.dtype(target.dtype).kind not in "iu" or input.ndim > 2 or \
            target.shape != input.shape:
        raise ValueError(f"{op}: expected input (N, C) or (C,) and an integer target of the "
                         f"same shape, got input {input.shape} and target {target.shape} of "
                         f"{target.dtype}")
    batched = input.ndim == 2
    scores = input if batched else input.reshape(1, -1)                    # (N, C)
    labels = target._data.reshape(scores.shape).astype(np.int64)
    xp = xp_of(labels)
    classes = scores.shape[-1]
    if labels.size:
        _check_probabilities(((labels < -1) | (labels >= classes)).any(), lambda late: (
            f"{op}: target values must be class indices in [0, {classes}) or -1 (the end "
            "of the targets)"), IndexError)
    listed = xp.cumprod(labels != -1, axis=1).astype(bool)                # before the first -1
    safe = xp.where(listed, xp.clip(labels, 0, classes - 1), 0)
    is_target = ((safe[:, :, None] == xp.arange(classes)[None, None, :])
                 & listed[:, :, None]).any(axis=1)                          # (N, C)
    pairs = (listed[:, :, None] & ~is_target[:, None, :]).astype(scores._data.dtype)
    index = Tensor._make(safe, False, None, 0, input.device)
    target_scores = scores.gather(1, index)                                  # (N, J)
    hinge = (1 - target_scores.unsqueeze(2) + scores.unsqueeze(1)).clamp_min(0)  # (N, J, C)
    mask = Tensor._make(pairs, False, None, 0, input.device)
    loss = (hinge * mask).sum((1, 2)) / classes
    return _reduced(loss if batched else loss.reshape(()), reduction)
