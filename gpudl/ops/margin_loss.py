"""Margin, embedding and likelihood losses with torch.nn.functional's signatures:
margin_ranking, hinge_embedding, cosine_embedding, triplet_margin (and _with_distance), soft_margin,
multilabel_soft_margin, multi_margin, poisson_nll and gaussian_nll.

Each is a composite of Tensor ops (autograd and both devices come with them); the formulas,
including where a target outside {1, -1} lands, are torch's, and so are the autocast policies
(float32 for the ones torch lists; multilabel_soft_margin_loss and gaussian_nll_loss are in no
list).
"""

import math
import numbers

import numpy as np

from .. import creation
from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..dtypes import is_floating, result_type
from ..tensor import Tensor
from ..tensor_math import where
from .activation import logsigmoid
from .distance import pairwise_distance
from .loss import _check_probabilities, check_reduction
from ._util import xp_of


def _reduced(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def _prepared(op, reduction, size_average, reduce, tensors, broadcast=True):
    """``(reduction, *tensors)``: the reduction checked (torch's legacy flags applied), the
    ``tensors`` (name -> Tensor) checked and cast as torch's autocast policy for ``op`` says
    (an op in no list: unchanged), and with ``broadcast`` their shapes checked to broadcast."""
    reduction = check_reduction(op, reduction, size_average, reduce)
    values = tuple(tensors.values())
    if _autocast.active:
        values = cast_inputs(op, *values)
    _tensors(op, **dict(zip(tensors, values)))
    if broadcast:
        _broadcast(op, *values)
    return (reduction,) + tuple(values)


def _tensors(op, **tensors):
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    first = next(iter(tensors.values()))
    if not is_floating(first.dtype):
        raise TypeError(f"{op}: {next(iter(tensors))} must be a floating point tensor, got "
                        f"{first.dtype}")


def _broadcast(op, *tensors):
    try:
        return np.broadcast_shapes(*(t.shape for t in tensors))
    except ValueError:
        raise ValueError(f"{op}: shapes {', '.join(str(t.shape) for t in tensors)} are not "
                         f"broadcastable") from None


def _same_ndim(op, **tensors):
    """torch's RuntimeError when the inputs (by name) differ in their number of dims."""
    if len({t.ndim for t in tensors.values()}) > 1:
        names, shapes = list(tensors), [str(t.shape) for t in tensors.values()]
        raise RuntimeError(f"{op}: {', '.join(names[:-1])} and {names[-1]} must have the same "
                           f"number of dims, got shapes {', '.join(shapes[:-1])} and "
                           f"{shapes[-1]}")


def _number(op, name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    return float(value)


def margin_ranking_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None,
                        reduction="mean"):
    """max(0, -target * (input1 - input2) + margin): target 1 asks input1 to rank higher."""
    op = "margin_ranking_loss"
    reduction, input1, input2, target = _prepared(
        op, reduction, size_average, reduce, dict(input1=input1, input2=input2, target=target),
        broadcast=False)
    _same_ndim(op, input1=input1, input2=input2, target=target)
    _broadcast(op, input1, input2, target)
    margin = _number(op, "margin", margin)
    loss = (-target.astype(input1.dtype) * (input1 - input2) + margin).clamp_min(0)
    return _reduced(loss, reduction)


def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None,
                         reduction="mean"):
    """input where target is 1, max(0, margin - input) where target is -1 (a target outside
    {1, -1} gets both terms, as torch)."""
    op = "hinge_embedding_loss"
    reduction, input, target = _prepared(op, reduction, size_average, reduce,
                                         dict(input=input, target=target))
    margin = _number(op, "margin", margin)
    loss = where(target != 1, (margin - input).clamp_min(0), 0.0) \
        + where(target != -1, input, 0.0)
    return _reduced(loss, reduction)


def cosine_embedding_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None,
                          reduction="mean"):
    """1 - cos(input1, input2) where target is 1, max(0, cos - margin) where target is -1;
    inputs (N, D) with target (N,), or (D,) with a 0-D target."""
    op = "cosine_embedding_loss"
    reduction, input1, input2, target = _prepared(
        op, reduction, size_average, reduce, dict(input1=input1, input2=input2, target=target),
        broadcast=False)
    if target.ndim not in (0, 1) or input1.shape != input2.shape \
            or input1.ndim != target.ndim + 1 or input1.shape[:-1] != target.shape:
        raise ValueError(f"{op}: expected inputs (N, D) and target (N,), or inputs (D,) and a "
                         f"0-D target; got {input1.shape}, {input2.shape} and {target.shape}")
    margin = _number(op, "margin", margin)
    epsilon = 1e-12                                  # torch's, added to each squared norm
    products = (input1 * input2).sum(-1)
    norms = ((input1.square().sum(-1) + epsilon) * (input2.square().sum(-1) + epsilon)).sqrt()
    cos = products / norms
    loss = where(target == 1, 1 - cos, 0.0) + where(target == -1, (cos - margin).clamp_min(0),
                                                    0.0)
    return _reduced(loss, reduction)


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False,
                        size_average=None, reduce=None, reduction="mean"):
    """max(0, d(anchor, positive) - d(anchor, negative) + margin), d the pairwise p-norm
    distance; ``swap`` uses min(d(a, n), d(p, n)) as the negative distance."""
    op = "triplet_margin_loss"
    reduction, anchor, positive, negative = _prepared(
        op, reduction, size_average, reduce,
        dict(anchor=anchor, positive=positive, negative=negative), broadcast=False)
    if not anchor.ndim == positive.ndim == negative.ndim or anchor.ndim not in (1, 2):
        raise RuntimeError(f"{op}: anchor, positive and negative must all be 1-D or all 2-D, "
                           f"got shapes {anchor.shape}, {positive.shape} and {negative.shape}")
    return _triplet(op, anchor, positive, negative,
                    lambda x, y: pairwise_distance(x, y, p, eps), margin, swap, reduction)


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None,
                                      margin=1.0, swap=False, reduction="mean"):
    """triplet_margin_loss with any ``distance_function(x, y)`` returning one distance per
    row (default: pairwise_distance, the Euclidean distance)."""
    op = "triplet_margin_with_distance_loss"
    reduction, anchor, positive, negative = _prepared(
        op, reduction, None, None, dict(anchor=anchor, positive=positive, negative=negative),
        broadcast=False)
    _same_ndim(op, anchor=anchor, positive=positive, negative=negative)
    if distance_function is not None and not callable(distance_function):
        raise TypeError(f"{op}: distance_function must be callable or None, got "
                        f"{type(distance_function).__name__}")
    return _triplet(op, anchor, positive, negative, distance_function or pairwise_distance,
                    margin, swap, reduction)


def _triplet(op, anchor, positive, negative, distance, margin, swap, reduction):
    margin = _number(op, "margin", margin)
    if margin <= 0:
        raise ValueError(f"{op}: margin must be greater than 0, got {margin}")
    to_positive = distance(anchor, positive)
    to_negative = distance(anchor, negative)
    if swap:
        to_negative = to_negative.minimum(distance(positive, negative))
    return _reduced((margin + to_positive - to_negative).clamp_min(0), reduction)


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """log(1 + exp(-target * input)), target in {1, -1}."""
    op = "soft_margin_loss"
    reduction, input, target = _prepared(op, reduction, size_average, reduce,
                                         dict(input=input, target=target), broadcast=False)
    if input.shape != target.shape:
        raise ValueError(f"{op}: target of shape {target.shape} must have the input's shape "
                         f"{input.shape}")
    return _reduced(-logsigmoid(target.astype(input.dtype) * input), reduction)


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None,
                                reduction="mean"):
    """Binary cross entropy of sigmoid(input) against 0/1 ``target`` per class, optionally
    weighted per class, averaged over the classes (the last dim): one loss per sample."""
    op = "multilabel_soft_margin_loss"
    reduction, input, target = _prepared(op, reduction, size_average, reduce,
                                         dict(input=input, target=target), broadcast=False)
    if input.shape != target.shape or input.ndim == 0:
        raise ValueError(f"{op}: target of shape {target.shape} must have the input's shape "
                         f"{input.shape} (N, C) or (C,)")
    loss = -(target * logsigmoid(input) + (1 - target) * logsigmoid(-input))
    if weight is not None:
        loss = loss * weight
    return _reduced(loss.sum(-1) / input.shape[-1], reduction)


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None,
                      reduce=None, reduction="mean"):
    """Multi-class hinge loss: the sum over classes i != target of
    max(0, margin - input[target] + input[i])**p (times weight[target]), divided by the
    number of classes; input (N, C) with int target (N,), or (C,) with a 0-D target."""
    op = "multi_margin_loss"
    if _autocast.active:
        input, weight = cast_inputs(op, input, weight)
    reduction = check_reduction(op, reduction, size_average, reduce)
    _tensors(op, input=input, target=target)
    if p not in (1, 2):
        raise ValueError(f"{op}: only p == 1 and p == 2 are supported, got {p!r}")
    batched = input.ndim == 2
    if input.ndim > 2 or np.dtype(target.dtype).kind not in "iu" or (
            target.shape != input.shape[:1] if batched else target.numel() != 1):
        raise ValueError(f"{op}: expected input (N, C) with an integer target (N,), or (C,) or "
                         f"a 0-D input with one integer target; got input {input.shape} and "
                         f"target {target.shape} of {target.dtype}")
    margin = _number(op, "margin", margin)
    scores = input if batched else input.reshape(1, -1)             # (N, C)
    classes = scores.shape[-1]
    index = target.long().reshape(-1, 1)
    if index.numel():
        _check_probabilities(((index._data < 0) | (index._data >= classes)).any(), lambda late: (
            f"{op}: target values must be class indices in [0, {classes})"), IndexError)
        index = index.clamp(0, classes - 1)     # on a device the check reports at a later read
    loss = (margin - scores.gather(-1, index) + scores).clamp_min(0)
    if p == 2:
        loss = loss.square()
    if weight is not None:
        loss = loss * weight.astype(input.dtype)[index.reshape(-1)].unsqueeze(-1)
    positions = Tensor._make(xp_of(index._data).arange(classes), False, None, 0, input.device)
    others = index != positions
    loss = where(others, loss, 0.0).sum(-1) / classes                # (N,)
    return _reduced(loss if batched else loss.reshape(target.shape), reduction)


def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8,
                     reduce=None, reduction="mean"):
    """Negative log likelihood of ``target`` under a Poisson of rate exp(input)
    (``log_input``) or input: exp(input) - target * input, or input - target * log(input +
    eps); ``full`` adds Stirling's approximation of log(target!) where target > 1."""
    op = "poisson_nll_loss"
    reduction, input, target = _prepared(op, reduction, size_average, reduce,
                                         dict(input=input, target=target))
    if is_floating(target.dtype):      # a composite in torch: a 0-d tensor ranks below the other
        dtype = result_type(input, target)
        input = input.astype(dtype)
    target = target.astype(input.dtype)
    if log_input:
        loss = input.exp() - target * input
    else:
        loss = input - target * (input + eps).log()
    if full:
        safe = where(target > 1, target, 2.0)         # no log(0) where the term is dropped
        stirling = safe * safe.log() - safe + 0.5 * (2 * math.pi * safe).log()
        loss = loss + where(target > 1, stirling, 0.0)
    return _reduced(loss, reduction)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """Negative log likelihood of ``target`` under a Gaussian of mean ``input`` and variance
    ``var``: 0.5 (log(var) + (input - target)**2 / var) (+ 0.5 log(2 pi) when ``full``).
    ``var`` has the input's shape, or one dim fewer, or a 1 in one dim (shared variance); it
    is clamped to at least ``eps`` for the value, its gradient passing unclamped, as torch."""
    op = "gaussian_nll_loss"
    reduction = check_reduction(op, reduction)
    if isinstance(var, numbers.Real) and not isinstance(var, bool):
        if var < 0:
            raise ValueError(f"{op}: var has negative entry/entries, got {var}")
        _tensors(op, input=input)
        var = creation.full_like(input, float(var))
    _tensors(op, input=input, target=target, var=var)
    if var.shape != input.shape:
        if var.shape == input.shape[:-1]:
            var = var.unsqueeze(-1)
        elif var.ndim != input.ndim or sum(v for i, v in zip(input.shape, var.shape)
                                           if i != v) != 1:
            raise ValueError(f"{op}: var is of incorrect size: {var.shape} for input "
                             f"{input.shape} (expected the input's shape, one dim fewer, or a "
                             f"1 in one dim)")
    if var.numel():             # queued on cuda: after the refusals above
        _check_probabilities((var._data < 0).any(), lambda late: (
            f"{op}: var has negative entry/entries"), ValueError)
    held = var.detach()
    var = var + (held.clamp_min(eps) - held)          # clamped value, identity gradient
    loss = 0.5 * (var.log() + (input - target).square() / var)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduced(loss, reduction)
