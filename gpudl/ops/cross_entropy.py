"""cross_entropy (log-softmax and NLL fused in one node) and nll_loss.

Layout as torch: input (N, C, d1, ...) or (C,), class dim 1; class-index targets (N, d1, ...)
of an integer dtype, or probability targets shaped like the input. For index targets, 'mean'
divides by the summed weight of the non-ignored targets (torch's weighted mean); for
probabilities by N * d1 * ... . ``label_smoothing`` e mixes in the uniform distribution:
loss = (1 - e) * nll + e / C * sum_c(-w_c log p_c).
"""

from .. import backend
from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..dtypes import LOW_PRECISION, is_floating
from ..autograd import ArrayFunction, is_grad_enabled
from ..kernels import rows as row_kernels
from ..tensor import Tensor
from .loss import check_reduction, expand_grad, reduce_loss
from .reduce import log_softmax_array
from .sparse import DEFERRED_NOTE, NO_BAD_INDEX, IndexOutOfRange, check_range
from ._util import promoted_pair, widened, xp_of


def _picked_targets(x, target, weight, ignore_index):
    """(target index array with ignored entries set to 0 (N, 1, d...), valid mask (N, d...),
    per-target weight wt (N, d...): weight[target], 0 where ignored)."""
    xp = xp_of(x)
    valid = target != ignore_index
    # [:, None], not xp.expand_dims(.., 1): the same view without NumPy's Python wrapper (~1.5 us)
    t = xp.where(valid, target, 0)[:, None]                         # (N, 1, d...)
    if x.shape[1] == 0:             # no classes: every target was ignore_index (else refused)
        wt = xp.zeros(valid.shape, x.dtype)
    elif weight is None:
        wt = valid.astype(x.dtype)
    else:
        wt = weight[t[:, 0]] * valid
    return t, valid, wt


def _class_shape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)                     # broadcast over class dim


def _fused_rows(x, target):
    """Whether the cuda kernels of kernels/cross_entropy_cuda.py take this cross entropy."""
    if backend.kernel_device(x) != "cuda":
        return False
    from ..kernels import cross_entropy_cuda
    return cross_entropy_cuda.supports(x, target)


class CrossEntropy(ArrayFunction):
    """Class-index targets: log-softmax, pick, weigh, smooth and reduce in one node (on cuda,
    for (N, C) logits, three kernels: kernels/cross_entropy_cuda.py)."""

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, smoothing, reduction, range_error=None):
        """``range_error``: given when the targets' range check is left to the cuda kernels
        (``cross_entropy`` decides), its error maker as ops.sparse.check_range's."""
        ctx.rows = None
        if _fused_rows(x, target):
            from ..kernels import cross_entropy_cuda
            loss, ctx.rows, smallest_bad = cross_entropy_cuda.forward(
                x, target, weight, ignore_index, smoothing, reduction)
            if range_error is not None:
                backend.defer_check(smallest_bad, lambda value: value == NO_BAD_INDEX,
                                    lambda value: range_error(value, True))
            ctx.conf = (ignore_index, reduction)
            return loss
        ctx.conf = (smoothing, reduction)
        ctx.row_kernel = x.ndim == 2 and x.shape[1] > 0 and row_kernels.applies(
            row_kernels.CROSS_ENTROPY_MAX_SIZE, x, weight)
        if ctx.row_kernel:
            loss, logp, t, valid, wt, divisor = row_kernels.cross_entropy(
                x, target, weight, ignore_index, smoothing, reduction)
            ctx.save_for_backward(logp, t[:, None], valid, wt, weight, divisor)
            return loss
        xp = xp_of(x)
        logp = log_softmax_array(x, 1)
        t, valid, wt = _picked_targets(x, target, weight, ignore_index)
        loss = (-wt * xp.take_along_axis(logp, t, axis=1)[:, 0] if x.shape[1]
                else xp.zeros_like(wt))                             # (N, d...)
        if smoothing and not x.shape[1]:
            loss = xp.full_like(wt, float("nan"))    # smoothing / 0 classes, as torch's 0 * inf
        elif smoothing:
            w = 1 if weight is None else weight.reshape(_class_shape(x))
            smooth = -(logp * w).sum(axis=1) * valid
            loss = (1 - smoothing) * loss + (smoothing / x.shape[1]) * smooth
        divisor = wt.sum() if reduction == "mean" else 1
        ctx.save_for_backward(logp, t, valid, wt, weight, divisor)
        return reduce_loss(loss, reduction, divisor)

    @staticmethod
    def backward(ctx, g):
        if ctx.rows is not None:
            from ..kernels import cross_entropy_cuda
            return (cross_entropy_cuda.backward(g, ctx.rows, *ctx.conf), None, None, None, None,
                    None, None)
        logp, t, valid, wt, weight, divisor = ctx.saved_tensors
        smoothing, reduction = ctx.conf
        if ctx.row_kernel and row_kernels.applies(row_kernels.CROSS_ENTROPY_MAX_SIZE, logp, g):
            return (row_kernels.cross_entropy_backward(g, logp, t[:, 0], valid, wt, weight,
                                                       smoothing, divisor),
                    None, None, None, None, None, None)
        xp = xp_of(logp)
        n_classes = logp.shape[1]
        if n_classes == 0:
            return xp.zeros_like(logp), None, None, None, None, None, None
        g = expand_grad(g, reduction, divisor)
        g = g[:, None] if reduction == "none" else g     # (N, 1, d...) or scalar
        # d/dx of (1-e) wt (-log p_t) + e/C valid sum_c w_c (-log p_c):
        #   p * ((1-e) wt + e/C valid W) - (1-e) wt onehot(t) - e/C valid w_c
        total_w = n_classes if weight is None else weight.sum()
        coef = (1 - smoothing) * wt + (smoothing / n_classes) * valid * total_w
        gx = xp.exp(logp)
        gx *= coef[:, None]
        if smoothing:
            w = 1 if weight is None else weight.reshape(_class_shape(logp))
            gx -= (smoothing / n_classes) * valid[:, None] * w
        at_target = xp.take_along_axis(gx, t, axis=1)
        xp.put_along_axis(gx, t, at_target - (1 - smoothing) * wt[:, None], axis=1)
        gx *= g
        # ignored targets get exactly 0, even when all are ignored ('mean' divides by 0), as torch
        return xp.where(valid[:, None], gx, 0), None, None, None, None, None, None


class CrossEntropyProbs(ArrayFunction):
    """Probability targets: loss = -sum_c w_c t_c log p_c (targets smoothed first)."""

    @staticmethod
    def forward(ctx, x, target, weight, smoothing, reduction):
        logp = log_softmax_array(x, 1)
        n_classes = x.shape[1]
        t = target * (1 - smoothing) + smoothing / n_classes if smoothing else target
        w = None if weight is None else weight.reshape(_class_shape(x))
        wt = t if w is None else t * w
        loss = -(logp * wt).sum(axis=1)                              # (N, d...)
        divisor = loss.size if reduction == "mean" else 1
        ctx.save_for_backward(logp, t, wt, w)
        ctx.conf = (smoothing, reduction, divisor)
        return reduce_loss(loss, reduction, divisor)

    @staticmethod
    def backward(ctx, g):
        logp, t, wt, w = ctx.saved_tensors
        smoothing, reduction, divisor = ctx.conf
        xp = xp_of(logp)
        need_x, need_t, need_w = ctx.needs_input_grad[:3]
        g = expand_grad(g, reduction, divisor)
        g = g[:, None] if reduction == "none" else g
        gx = (xp.exp(logp) * wt.sum(axis=1, keepdims=True) - wt) * g if need_x else None
        gt = gw = None
        if need_t:
            gt = -logp * (1 - smoothing) * g
            gt = gt if w is None else gt * w
        if need_w:                                   # d/dw_c of -sum_c w_c t_c log p_c
            per_class = -t * logp * g
            gw = per_class.sum(axis=tuple(i for i in range(per_class.ndim) if i != 1))
        return gx, gt, gw, None, None


class NLLLoss(ArrayFunction):
    """-weight[t] * input[n, t] for log-probability input."""

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction):
        xp = xp_of(x)
        t, valid, wt = _picked_targets(x, target, weight, ignore_index)
        loss = -wt * xp.take_along_axis(x, t, axis=1)[:, 0]
        divisor = wt.sum() if reduction == "mean" else 1
        ctx.save_for_backward(t, valid, wt, divisor)
        ctx.conf = (x.shape, x.dtype, reduction)
        return reduce_loss(loss, reduction, divisor)

    @staticmethod
    def backward(ctx, g):
        t, valid, wt, divisor = ctx.saved_tensors
        shape, dtype, reduction = ctx.conf
        xp = xp_of(wt)
        g = expand_grad(g, reduction, divisor)
        gx = xp.zeros(shape, dtype)
        # ignored targets get exactly 0, even when all are ignored ('mean' divides by 0), as torch
        xp.put_along_axis(gx, t, xp.where(valid, -wt * g, 0)[:, None], axis=1)
        return gx, None, None, None, None


# ---------------------------------------------------------------- public functions
def _check_input(op, input, target, weight):
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{op}: input and target must be Tensors, got {type(input).__name__} "
                        f"and {type(target).__name__}")
    if not is_floating(input.dtype):
        raise TypeError(f"{op}: input must be a floating point tensor, got {input.dtype}")
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have a class dimension, got a 0-d tensor")
    n_classes = input.shape[1] if input.ndim > 1 else input.shape[0]
    if weight is not None:
        if not isinstance(weight, Tensor):
            raise TypeError(f"{op}: weight must be a Tensor or None, got {type(weight).__name__}")
        if weight.shape != (n_classes,):
            raise ValueError(f"{op}: weight of shape {weight.shape} must have one entry per "
                             f"class, ({n_classes},) for input of shape {input.shape}")
        weight = weight.astype(input.dtype)
    return n_classes, weight


def _constant_weight(op, weight):
    """The weight's array for class-index targets, where (as in torch) it gets no gradient."""
    if weight is None:
        return None
    if weight.requires_grad and is_grad_enabled():
        raise RuntimeError(f"{op}: weight requires grad, but the loss is not differentiable "
                           "with respect to weight for class-index targets (as in torch); "
                           "pass weight.detach()")
    return weight._data


def _check_class_targets(op, input, target, n_classes, ignore_index, queue=True):
    """Refuse a target of the wrong shape; check the targets' range (on cuda queued for the
    next device read) unless not ``queue`` (a kernel of the op checks). Returns the range
    error's maker (ops.sparse.check_range's ``make_error``)."""
    expected = input.shape[:1] + input.shape[2:] if input.ndim > 1 else ()
    if target.shape != expected:
        raise ValueError(f"{op}: expected class-index target of shape {expected} for input of "
                         f"shape {input.shape} (N, C, d1, ...), got target of shape "
                         f"{target.shape}")

    def error(value, late):
        return IndexOutOfRange(f"{op}: target {value} is out of bounds: class indices must lie "
                               f"in [0, {n_classes - 1}] (or equal ignore_index={ignore_index})"
                               + (DEFERRED_NOTE if late else ""))
    if queue:
        check_range(target._data, n_classes, error, ignore_index)
    return error


def _batched(input, target, index_targets):
    """Give 1-D input (C,) a batch dim: (1, C); targets () -> (1,) or (C,) -> (1, C)."""
    if input.ndim > 1:
        return input, target
    return input.reshape(1, -1), target.reshape(1) if index_targets else target.reshape(1, -1)


def _unbatched(loss, input, reduction):
    return loss.reshape(()) if input.ndim == 1 and reduction == "none" else loss


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross entropy between softmax(input) over dim 1 and ``target``.

    Args:
        input: logits (N, C), (N, C, d1, ...) or (C,).
        target: class indices (N,), (N, d1, ...) or () of an integer dtype, or class
            probabilities of the input's shape.
        weight: (C,) per-class weights. ignore_index: index targets to skip (index targets only).
        reduction: 'none', 'mean' (weighted mean over non-ignored targets) or 'sum'.
        label_smoothing: e in [0, 1]: targets become (1 - e) * target + e / C.
    """
    if _autocast.active:
        input, target, weight = cast_inputs("cross_entropy", input, target, weight)
    op = "cross_entropy"
    reduction = check_reduction(op, reduction, size_average, reduce)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    n_classes, weight = _check_input(op, input, target, weight)
    if target._data.dtype.kind not in "biu" and target._data.dtype != input._data.dtype:
        input, target = promoted_pair(input, target)  # probabilities: torch's promotion
    if input.dtype in LOW_PRECISION:          # reduced in float32, as torch; the input's dtype
        return cross_entropy(widened(input), widened(target), widened(weight),
                             ignore_index=ignore_index, reduction=reduction,
                             label_smoothing=label_smoothing).to(input.dtype)
    if target.dtype.kind in "iu":
        # the weight is refused before the targets' check is queued (on cuda it is deferred)
        weight = _constant_weight(op, weight)
        # the fused kernels find the smallest bad target as they reduce the loss ('none' has
        # no reduction); other paths queue the check's own kernel
        in_kernel = (reduction != "none" and input.ndim == 2
                     and _fused_rows(input._data, target._data))
        error = _check_class_targets(op, input, target, n_classes, ignore_index, not in_kernel)
        x, t = _batched(input, target, True)
        loss = CrossEntropy.apply(x, t, weight, int(ignore_index), float(label_smoothing),
                                  reduction, error if in_kernel else None)
    elif is_floating(target.dtype):
        if ignore_index != -100:
            raise RuntimeError(f"{op}: ignore_index is not supported for floating point "
                               f"(probability) targets, got ignore_index={ignore_index}")
        if target.shape != input.shape:
            raise ValueError(f"{op}: probability target of shape {target.shape} must have the "
                             f"input's shape {input.shape}")
        x, t = _batched(input, target.astype(input.dtype), False)
        loss = CrossEntropyProbs.apply(x, t, weight, float(label_smoothing), reduction)
    else:
        raise TypeError(f"{op}: target must hold class indices (integer) or probabilities "
                        f"(floating point), got {target.dtype}")
    return _unbatched(loss, input, reduction)


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log likelihood -weight[t] * input[n, t] of log-probabilities ``input``
    (N, C, d1, ...) or (C,) at integer class targets (N, d1, ...) or (); 'mean' divides by the
    summed weight of the non-ignored targets."""
    if _autocast.active:
        input, target, weight = cast_inputs("nll_loss", input, target, weight)
    op = "nll_loss"
    reduction = check_reduction(op, reduction, size_average, reduce)
    n_classes, weight = _check_input(op, input, target, weight)
    if input.dtype in LOW_PRECISION:
        return nll_loss(widened(input), target, widened(weight), ignore_index=ignore_index,
                        reduction=reduction).to(input.dtype)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must be an integer tensor of class indices, got "
                        f"{target.dtype}")
    weight = _constant_weight(op, weight)
    _check_class_targets(op, input, target, n_classes, ignore_index)
    x, t = _batched(input, target, True)
    loss = NLLLoss.apply(x, t, weight, int(ignore_index), reduction)
    return _unbatched(loss, input, reduction)
