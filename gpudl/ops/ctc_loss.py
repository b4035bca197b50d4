"""Connectionist temporal classification loss (torch.nn.functional.ctc_loss).

One autograd node: the forward runs the forward (alpha) and backward (beta) recursions in log
space, one vectorised step per time step over the whole batch and every position of the
blank-extended targets (``l'`` = blank, l1, blank, l2, ..., blank: length 2S+1); the gradient
is torch's: ``exp(lp) - exp(log(sum_{s: l'_s = c} alpha_t(s) beta_t(s)) + nll - lp)`` for
t < input_length, 0 after (it assumes log_probs come from log_softmax, as torch's does, so
that the gradient reaching the logits is the exact one).
"""

import numpy as np

from .. import backend
from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..autograd import ArrayFunction
from ..dtypes import is_floating
from ..tensor import Tensor
from ._util import is_int, quiet, xp_of
from .loss import check_reduction
from .sparse import DEFERRED_NOTE, check_range


def _shifted(a, by, fill):
    """``a`` (..., S) moved ``by`` positions to higher s (to lower s for ``by`` < 0), filled."""
    xp = xp_of(a)
    out = xp.full_like(a, fill)
    if by > 0:
        out[..., by:] = a[..., :-by]
    else:
        out[..., :by] = a[..., -by:]
    return out


def _logsumexp3(a, b, c):
    xp = xp_of(a)
    return xp.logaddexp(xp.logaddexp(a, b), c)


def _alignment(lp, ext, input_lengths, target_lengths):
    """(log_alpha, log_beta, nll) for log_probs ``lp`` (T, N, C), extended targets ``ext``
    (N, S'), lengths (N,) int arrays on lp's device."""
    xp = xp_of(lp)
    T, N = lp.shape[:2]
    S = ext.shape[1]
    neg_inf = -np.inf
    lp_ext = xp.take_along_axis(lp, xp.broadcast_to(ext[None], (T, N, S)), axis=2)  # (T, N, S')
    s = xp.arange(S)[None, :]
    valid = s < 2 * target_lengths[:, None] + 1                                     # (N, S')
    skip = (s >= 2) & (ext != ext[:, [0]]) & (ext != _shifted(ext, 2, -1))        # l'_s != blank
    skip_back = _shifted(skip, -2, False)          # from s + 2 to s (the same pairs, seen back)
    alpha = xp.full((T, N, S), neg_inf, dtype=lp.dtype)
    beta = xp.full((T, N, S), neg_inf, dtype=lp.dtype)
    with quiet(xp):
        alpha[0, :, :2] = xp.where(valid[:, :2], lp_ext[0, :, :2], neg_inf)
        for t in range(1, T):
            prev = alpha[t - 1]
            reach = _logsumexp3(prev, _shifted(prev, 1, neg_inf),
                                xp.where(skip, _shifted(prev, 2, neg_inf), neg_inf))
            alpha[t] = xp.where(valid, lp_ext[t] + reach, neg_inf)
        last_t = input_lengths - 1                                                   # (N,)
        ends = 2 * target_lengths[:, None] - xp.arange(2)[None, :]                   # 2L, 2L-1
        # clipped: lengths on the device are checked later (deferred), so may be out of range
        final = alpha[xp.clip(last_t, 0, T - 1)[:, None], xp.arange(N)[:, None],
                      xp.clip(ends, 0, S - 1)]                                        # (N, 2)
        final = xp.where((ends >= 0) & (last_t[:, None] >= 0), final, neg_inf)
        nll = -xp.logaddexp(final[:, 0], final[:, 1])
        end_mask = (s == ends[:, :1]) | (s == ends[:, 1:])                           # (N, S')
        nxt = xp.full((N, S), neg_inf, dtype=lp.dtype)
        for t in range(T - 1, -1, -1):
            reach = _logsumexp3(nxt, _shifted(nxt, -1, neg_inf),
                                xp.where(skip_back, _shifted(nxt, -2, neg_inf), neg_inf))
            start = (t == last_t)[:, None]
            inside = (t < last_t)[:, None]
            value = xp.where(start & end_mask, lp_ext[t],
                             xp.where(inside, lp_ext[t] + reach, neg_inf))
            nxt = beta[t] = xp.where(valid, value, neg_inf)
    return alpha, beta, nll


def _log_probs_grad(lp, ext, alpha, beta, nll, input_lengths):
    """torch's gradient of each sample's nll with respect to log_probs (T, N, C)."""
    xp = xp_of(lp)
    T, N, C = lp.shape
    with quiet(xp):
        ab = alpha + beta                                                 # (T, N, S')
        top = ab.max(axis=2, keepdims=True)
        top = xp.where(xp.isfinite(top), top, 0)
        one_hot = (ext[:, :, None] == xp.arange(C)[None, None, :]).astype(lp.dtype)
        # sum over the positions s holding class c: (N, T, S') @ (N, S', C)
        summed = xp.matmul(xp.exp(ab - top).transpose(1, 0, 2), one_hot).transpose(1, 0, 2)
        lcab = xp.log(summed) + top                                       # (T, N, C)
        grad = xp.exp(lp) - xp.exp(lcab + nll[None, :, None] - lp)
    inside = xp.arange(T)[:, None] < input_lengths[None, :]
    return xp.where(inside[:, :, None], grad, 0).astype(lp.dtype, copy=False)


class CTCLossNode(ArrayFunction):
    """(log_probs (T, N, C), ext (N, S'), input_lengths, target_lengths, zero_infinity) ->
    nll per sample (N,)."""

    @staticmethod
    def forward(ctx, lp, ext, input_lengths, target_lengths, zero_infinity):
        xp = xp_of(lp)
        alpha, beta, nll = _alignment(lp, ext, input_lengths, target_lengths)
        ctx.saved = (lp, ext, alpha, beta, nll, input_lengths, zero_infinity)
        if zero_infinity:
            nll = xp.where(xp.isinf(nll), 0, nll)
        return nll.astype(lp.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        lp, ext, alpha, beta, nll, input_lengths, zero_infinity = ctx.saved
        xp = xp_of(lp)
        grad = _log_probs_grad(lp, ext, alpha, beta, nll, input_lengths)
        if zero_infinity:
            grad = xp.where(xp.isinf(nll)[None, :, None], 0, grad)
        return grad * g[None, :, None], None, None, None, None


def _lengths(name, value, batch, keep_on_device):
    """``value`` (a Tensor, a sequence of ints or, unbatched, one int) as an int64 array of
    ``batch`` entries: a cuda tensor's stays on the device when ``keep_on_device`` (its checks
    deferred), anything else is on the host (a cuda tensor's read, counted)."""
    if isinstance(value, Tensor):
        if value.dtype.kind not in "iu":
            raise TypeError(f"ctc_loss: {name} must be integers, got dtype {value.dtype}")
        if keep_on_device and backend.on_device(value._data):
            array = value._data.reshape(-1).astype(np.int64)
        else:
            array = backend.to_numpy(value._data, f"ctc_loss({name})").astype(np.int64)
    elif is_int(value):
        array = np.array([value], np.int64)
    elif isinstance(value, (list, tuple)) and all(is_int(v) for v in value):
        array = np.array(value, np.int64)
    else:
        raise TypeError(f"ctc_loss: {name} must be a Tensor or a sequence of ints, got "
                        f"{type(value).__name__}")
    array = array.reshape(-1)
    if array.shape != (batch,):
        raise RuntimeError(f"ctc_loss: {name} must be of size batch_size ({batch}), got "
                           f"{array.size} values")
    return array


def _check_at_most(name, lengths, most, too_large):
    """Refuse ``lengths`` holding a value outside [0, most] (``too_large(value)`` says why a
    value above it is refused): at once on the host, at the next device read for lengths on the
    cuda device."""
    def error(value, late):
        text = f"{name} must be non-negative, got {value}" if value < 0 else too_large(value)
        return RuntimeError(f"ctc_loss: {text}" + (DEFERRED_NOTE if late else ""))
    check_range(lengths, most + 1, error)


def _padded_targets(targets, target_lengths, batch, classes):
    """Targets as an (N, S) int64 NumPy-or-CuPy array of labels, the positions past each
    target's length 0 (padded targets kept, a 1-D concatenation split by the lengths). With
    the lengths on the device (padded targets only) S is the padding's width: nothing read."""
    xp = xp_of(targets._data)
    data = targets._data.astype(np.int64)
    if targets.ndim == 2:
        if targets.shape[0] != batch:
            raise RuntimeError(f"ctc_loss: targets has {targets.shape[0]} rows but the batch "
                               f"size is {batch}")
        if backend.on_device(target_lengths):
            longest = targets.shape[1]
        else:
            longest = int(target_lengths.max()) if batch else 0
        width = targets.shape[1]
        _check_at_most("target_lengths", target_lengths, width, lambda value: (
            f"expected targets to have size at least {value} at dimension 1, but got size "
            f"{width}"))
        used = data[:, :longest]
    else:
        available = data.shape[0]
        _check_at_most("target_lengths", target_lengths, available, lambda value: (
            f"a target length of {value} exceeds the {available} labels of targets"))
        longest = int(target_lengths.max()) if batch else 0
        total = int(target_lengths.sum())
        if total > data.shape[0]:
            raise RuntimeError(f"ctc_loss: target_lengths sum to {total} but targets holds "
                               f"{data.shape[0]} labels")
        starts = np.concatenate([[0], np.cumsum(target_lengths)[:-1]])
        index = np.minimum(starts[:, None] + np.arange(longest)[None, :], max(total - 1, 0))
        used = data[xp.asarray(index)] if total else xp.zeros((batch, longest), np.int64)
    inside = xp.arange(longest)[None, :] < xp.asarray(target_lengths)[:, None]
    used = xp.where(inside, used, 0)
    check_range(used, classes, lambda value, late: ValueError(
        f"ctc_loss: targets must be class indices in [0, {classes}), got {value}"
        + (DEFERRED_NOTE if late else "")))
    return used


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
             zero_infinity=False):
    """The CTC loss of aligning ``targets`` to ``log_probs`` (log_softmax outputs).

    Args:
        log_probs: (T, N, C), or (T, C) unbatched.
        targets: (N, S) padded, or 1-D: the targets concatenated (sum(target_lengths)); (S,)
            unbatched. Class indices, never ``blank``.
        input_lengths, target_lengths: (N,) Tensors or sequences of ints (ints unbatched).
        blank: the blank class. reduction: 'none' ((N,) losses), 'sum', or 'mean' (each loss
            divided by its target length, at least 1, then averaged). zero_infinity: an
            impossible alignment (infinite loss) gives 0 and no gradient.

    Example: ``F.ctc_loss(logits.log_softmax(2), targets, (T,) * N, target_lengths)``.

    Device reads: with the lengths as cuda tensors and padded (N, S) targets, none (the
    recursions run over all S positions of the padding, and the range checks of the lengths and
    targets are deferred to the next device read); 1-D concatenated targets are split on the
    host, so cuda ``target_lengths`` are read then (a counted sync; torch reads both lengths).
    """
    reduction = check_reduction("ctc_loss", reduction)
    if _autocast.active:
        (log_probs,) = cast_inputs("ctc_loss", log_probs)
    for name, value in (("log_probs", log_probs), ("targets", targets)):
        if not isinstance(value, Tensor):
            raise TypeError(f"ctc_loss: {name} must be a Tensor, got {type(value).__name__}")
    if not is_floating(log_probs.dtype):
        raise TypeError(f"ctc_loss: log_probs must be floating point, got {log_probs.dtype}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"ctc_loss: targets must be integers, got dtype {targets.dtype}")
    if log_probs.ndim not in (2, 3):
        raise ValueError(f"ctc_loss: log_probs must be (T, N, C) or unbatched (T, C), got shape "
                         f"{log_probs.shape}")
    unbatched = log_probs.ndim == 2
    if unbatched:
        if targets.ndim != 1:
            raise ValueError(f"ctc_loss: unbatched log_probs take 1-D targets, got shape "
                             f"{targets.shape}")
        log_probs, targets = log_probs.unsqueeze(1), targets.unsqueeze(0)
    elif targets.ndim not in (1, 2):
        raise ValueError(f"ctc_loss: targets must be (N, S) or 1-D, got shape {targets.shape}")
    T, N, C = log_probs.shape
    if not is_int(blank) or not 0 <= blank < C:
        raise ValueError(f"ctc_loss: blank must be in label range [0, {C}), got {blank!r}")
    in_lengths = _lengths("input_lengths", input_lengths, N, True)
    # a 1-D concatenation is split on the host: its lengths are read
    out_lengths = _lengths("target_lengths", target_lengths, N, targets.ndim == 2)
    _check_at_most("input_lengths", in_lengths, T, lambda value: (
        f"expected input_lengths to have value at most {T}, but got value {value}"))
    labels = _padded_targets(targets, out_lengths, N, C)
    xp = xp_of(log_probs._data)
    ext = xp.full((N, 2 * labels.shape[1] + 1), blank, dtype=np.int64)
    ext[:, 1::2] = labels
    nll = CTCLossNode.apply(log_probs, ext, xp.asarray(in_lengths), xp.asarray(out_lengths),
                            bool(zero_infinity))
    if reduction == "sum":
        return nll.sum()
    if reduction == "mean":
        divisor = Tensor._make(xp.maximum(xp.asarray(out_lengths), 1).astype(nll.dtype),
                               False, None, 0, nll.device)
        return (nll / divisor).mean()
    return nll.squeeze(0) if unbatched else nll
