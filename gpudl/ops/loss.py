"""Pointwise losses (mse, l1, huber, smooth_l1, bce, bce_with_logits, kl_div) and reductions.

Every pointwise loss is one ``PointwiseLoss`` node: a rule gives the elementwise value and its
derivatives with respect to input and target; the node applies the optional weight and the
reduction. ``weight`` gets a gradient too; ``pos_weight`` is a constant.
"""

import numpy as np

from .. import backend
from ..amp.autocast_mode import cast_inputs, state as _autocast
from ..autograd import ArrayFunction
from ..dtypes import LOW_PRECISION, is_floating
from ..tensor import Tensor
from . import elementwise as E
from ._util import promoted_pair, sum_to, widened, xp_of
from .sparse import DEFERRED_NOTE

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(op, reduction, size_average=None, reduce=None, allowed=REDUCTIONS):
    """The reduction to use (torch's legacy size_average/reduce flags win when given)."""
    if size_average is not None or reduce is not None:
        reduce = True if reduce is None else reduce
        size_average = True if size_average is None else size_average
        reduction = "none" if not reduce else "mean" if size_average else "sum"
    if reduction not in allowed:
        raise ValueError(f"{op}: reduction must be one of {', '.join(map(repr, allowed))}, "
                         f"got {reduction!r}")
    return reduction


def reduce_loss(loss, reduction, divisor):
    """loss as is ('none'), its sum ('sum'), or its sum / divisor (the mean variants; an empty
    or fully ignored batch gives NaN, as in torch)."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    xp = xp_of(loss)
    with xp.errstate(invalid="ignore", divide="ignore") if hasattr(xp, "errstate") else _null:
        return loss.sum() / divisor


def expand_grad(g, reduction, divisor):
    """The gradient reaching each element of the unreduced loss (broadcastable)."""
    return g if reduction in ("none", "sum") else g / divisor


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_null = _Null()


# ---------------------------------------------------------------- rules: value and derivatives
class _MSE:
    @staticmethod
    def value(x, t, _):
        d = x - t
        return d * d

    @staticmethod
    def grad(x, t, _):
        d = 2 * (x - t)
        return d, -d

    # On a GPU, an unweighted float32/float64 MSE is one CuPy kernel a pass where the rule's
    # array expressions took four forward and up to five backward: the loss (reduced in the
    # same kernel) and the gradients as torch's mse_loss_backward writes them,
    # norm * (input - target) * grad with norm = 2 / n ('mean') or 2, and the target's the
    # negation of the input's.
    DEVICE_VALUE = ("T x, T t", "T y", "y = (x - t) * (x - t);", "gpudl_mse_loss")
    DEVICE_REDUCED = ("T x, T t, T divisor", "T y", "(x - t) * (x - t)", "a + b",
                      "y = a / divisor", "0", "gpudl_mse_loss_reduced")
    DEVICE_GRAD = ("T x, T t, T g, T norm", "T gx", "gx = norm * (x - t) * g;",
                   "gpudl_mse_loss_backward")
    DEVICE_GRADS = ("T x, T t, T g, T norm", "T gx, T gt",
                    "gx = norm * (x - t) * g; gt = -gx;", "gpudl_mse_loss_backward_both")

    @staticmethod
    def device_value(x, t, reduction, divisor):
        if reduction == "none":
            return backend.elementwise_kernel(*_MSE.DEVICE_VALUE)(x, t)
        return backend.reduction_kernel(*_MSE.DEVICE_REDUCED)(x, t, divisor)

    @staticmethod
    def device_grads(x, t, g, reduction, divisor, need_x, need_t):
        norm = 2 / divisor if reduction == "mean" else 2.0
        if need_t:
            gx, gt = backend.elementwise_kernel(*_MSE.DEVICE_GRADS)(x, t, g, norm)
            return (gx if need_x else None), gt
        return backend.elementwise_kernel(*_MSE.DEVICE_GRAD)(x, t, g, norm), None


class _L1:
    @staticmethod
    def value(x, t, _):
        return abs(x - t)

    @staticmethod
    def grad(x, t, _):
        d = E.abs_grad_sign(x - t)        # 0 at a NaN difference, as torch
        return d, -d


class _Huber:
    @staticmethod
    def value(x, t, delta):
        d = abs(x - t)
        return xp_of(d).where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta))

    @staticmethod
    def grad(x, t, delta):
        d = xp_of(x).clip(x - t, -delta, delta)
        return d, -d


class _SmoothL1:
    @staticmethod
    def value(x, t, beta):
        d = abs(x - t)
        return xp_of(d).where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)

    @staticmethod
    def grad(x, t, beta):
        d = x - t
        xp = xp_of(d)
        d = xp.where(abs(d) < beta, d / beta, xp.sign(d))
        return d, -d


def _clamped_logs(x):
    """log(x), log(1 - x), each at least -100 as torch clamps them (no -inf for 0 or 1)."""
    xp = xp_of(x)
    with xp.errstate(divide="ignore") if hasattr(xp, "errstate") else _null:
        return xp.maximum(xp.log(x), -100), xp.maximum(xp.log1p(-x), -100)


class _BCE:
    @staticmethod
    def value(x, t, _):
        log_x, log_1mx = _clamped_logs(x)
        return -(t * log_x + (1 - t) * log_1mx)

    @staticmethod
    def grad(x, t, _):
        log_x, log_1mx = _clamped_logs(x)
        return (x - t) / xp_of(x).maximum(x * (1 - x), 1e-12), log_1mx - log_x


def _softplus_neg(x):
    """log(1 + exp(-x)) without overflow."""
    return xp_of(x).logaddexp(0, -x)


class _BCEWithLogits:
    @staticmethod
    def value(x, t, pos_weight):
        if pos_weight is None:
            return (1 - t) * x + _softplus_neg(x)
        return (1 - t) * x + (1 + (pos_weight - 1) * t) * _softplus_neg(x)

    @staticmethod
    def grad(x, t, pos_weight):
        s_neg = E.sigmoid_array(-x)
        if pos_weight is None:
            return (1 - t) - s_neg, -x
        gx = (1 - t) - (1 + (pos_weight - 1) * t) * s_neg
        return gx, -x + (pos_weight - 1) * _softplus_neg(x)


def _log_nonzero(t):
    """log(t), 0 where t == 0 (NaN for negative or NaN t, as torch's xlogy(t, t))."""
    xp = xp_of(t)
    zero = t == 0
    with xp.errstate(invalid="ignore") if hasattr(xp, "errstate") else _null:
        return xp.where(zero, 0, xp.log(xp.where(zero, 1, t)))


def _xlogx(t):
    """t * log(t), 0 where t == 0 (torch's xlogy(t, t): NaN for negative t)."""
    return t * _log_nonzero(t)


class _KLDiv:
    """target * (log(target) - input); with log_target, exp(target) * (target - input)."""

    @staticmethod
    def value(x, t, log_target):
        xp = xp_of(x)
        if log_target:
            return xp.exp(t) * (t - x)
        return _xlogx(t) - t * x

    @staticmethod
    def grad(x, t, log_target):
        xp = xp_of(x)
        if log_target:
            e = xp.exp(t)
            return -e, e * (t - x + 1)
        # d/dt t log t = log t + 1; 0 at t == 0 (torch gives NaN there: 0/0 in xlogy's grad)
        return -t, xp.where(t == 0, 0, _log_nonzero(t) + 1) - x


def _in_device_kernels(rule, x, weight):
    """Whether the rule's own device kernels compute this loss (see _MSE)."""
    return (weight is None and hasattr(rule, "device_value") and backend.is_device_array(x)
            and x.dtype in (np.float32, np.float64) and x.size > 0)


class PointwiseLoss(ArrayFunction):
    @staticmethod
    def forward(ctx, x, t, weight, rule, param, reduction, divisor):
        ctx.save_for_backward(x, t, weight)
        ctx.conf = (rule, param, reduction, divisor)
        if _in_device_kernels(rule, x, weight):
            return rule.device_value(x, t, reduction, divisor)
        loss = rule.value(x, t, param)
        if weight is not None:
            loss = loss * weight
        return reduce_loss(loss.astype(x.dtype, copy=False), reduction, divisor)

    @staticmethod
    def backward(ctx, g):
        x, t, weight = ctx.saved_tensors
        rule, param, reduction, divisor = ctx.conf
        need_x, need_t, need_w = ctx.needs_input_grad[:3]
        if _in_device_kernels(rule, x, weight) and g.dtype == x.dtype:
            return (*rule.device_grads(x, t, g, reduction, divisor, need_x, need_t),
                    None, None, None, None, None)
        g = expand_grad(g, reduction, divisor)
        gx = gt = gw = None
        if need_x or need_t:
            dx, dt = rule.grad(x, t, param)
            scale = g if weight is None else g * weight
            gx = sum_to(dx * scale, x.shape) if need_x else None
            gt = sum_to(dt * scale, t.shape) if need_t else None
        if need_w:
            gw = sum_to(rule.value(x, t, param) * g, weight.shape)
        return gx, gt, gw, None, None, None, None


# ---------------------------------------------------------------- public functions
def _checked_pair(op, input, target):
    """(input, target) after type and shape checks, in their promoted dtype (an integer
    target in the input's)."""
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{op}: input and target must be Tensors, got {type(input).__name__} "
                        f"and {type(target).__name__}")
    if not is_floating(input.dtype):
        raise TypeError(f"{op}: input must be a floating point tensor, got {input.dtype}")
    if target.shape != input.shape:
        raise ValueError(f"{op}: target of shape {target.shape} must have the input's shape "
                         f"{input.shape} (broadcasting the two is almost always a bug)")
    if target._data.dtype != input._data.dtype:         # (a call only when they differ)
        input, target = promoted_pair(input, target)
    return input, target.astype(input.dtype)


def _checked_weight(op, name, weight, input):
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(weight).__name__}")
    try:
        fits = np.broadcast_shapes(weight.shape, input.shape) == input.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: {name} of shape {weight.shape} does not broadcast to the input's "
                         f"shape {input.shape}")
    return weight.astype(input.dtype)


def _pointwise(op, rule, param, input, target, reduction, weight=None):
    input, target = _checked_pair(op, input, target)
    weight = _checked_weight(op, "weight", weight, input)
    if input.dtype in LOW_PRECISION:          # reduced in float32, as torch; the input's dtype
        return _pointwise(op, rule, param, widened(input), widened(target), reduction,
                          widened(weight)).to(input.dtype)
    if reduction == "mean":
        divisor = input._data.size
    elif reduction == "batchmean":
        divisor = input.shape[0] if input.ndim else 1
    else:
        divisor = 1
    return PointwiseLoss.apply(input, target, weight, rule, param, reduction, divisor)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Squared error (input - target)**2, reduced by ``reduction`` ('none', 'mean', 'sum')."""
    if _autocast.active:
        input, target = cast_inputs("mse_loss", input, target)
    reduction = check_reduction("mse_loss", reduction, size_average, reduce)
    return _pointwise("mse_loss", _MSE, None, input, target, reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Absolute error |input - target|, reduced."""
    if _autocast.active:
        input, target = cast_inputs("l1_loss", input, target)
    reduction = check_reduction("l1_loss", reduction, size_average, reduce)
    return _pointwise("l1_loss", _L1, None, input, target, reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d**2 where |d| < delta, else delta (|d| - 0.5 delta); d = input - target."""
    if _autocast.active:
        input, target = cast_inputs("huber_loss", input, target)
    reduction = check_reduction("huber_loss", reduction)
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    return _pointwise("huber_loss", _Huber, float(delta), input, target, reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """0.5 d**2 / beta where |d| < beta, else |d| - 0.5 beta (l1_loss when beta == 0)."""
    if _autocast.active:
        input, target = cast_inputs("smooth_l1_loss", input, target)
    reduction = check_reduction("smooth_l1_loss", reduction, size_average, reduce)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    if beta == 0:
        return _pointwise("smooth_l1_loss", _L1, None, input, target, reduction)
    return _pointwise("smooth_l1_loss", _SmoothL1, float(beta), input, target, reduction)


def _check_probabilities(bad, message, error=RuntimeError):
    """error(message(late)) when the bool ``bad`` holds: at once for host data, at the
    next device read for device data (backend.defer_check: a read per call would stall a step)."""
    if backend.on_device(bad):
        backend.defer_check(bad, lambda value: not value,
                            lambda value: error(message(True) + DEFERRED_NOTE))
    elif bad:
        raise error(message(False))


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """-(target log(input) + (1 - target) log(1 - input)) for probabilities ``input`` in
    [0, 1]; each log is clamped to >= -100 as in torch, so 0 and 1 give finite losses."""
    if _autocast.active:
        input, target, weight = cast_inputs("binary_cross_entropy", input, target, weight)
    reduction = check_reduction("binary_cross_entropy", reduction, size_average, reduce)
    # the operands are refused (as torch, first) before the value checks are queued on cuda
    _checked_weight("binary_cross_entropy", "weight",
                    weight, _checked_pair("binary_cross_entropy", input, target)[0])
    # RuntimeError, as torch. A NaN input passes (fit's NaN guard reports it); a NaN target not
    if input._data.size:
        _check_probabilities(((input._data < 0) | (input._data > 1)).any(), lambda late: (
            "binary_cross_entropy: all elements of input should be between 0 and 1 (pass "
            "logits to binary_cross_entropy_with_logits instead)"))
    if target._data.size:
        data = target._data
        _check_probabilities(~((data >= 0) & (data <= 1)).all(), lambda late: (
            "binary_cross_entropy: all elements of target should be between 0 and 1 "
            "(probabilities or 0/1 labels)" + ("" if late else ", got values in "
                                               f"[{float(data.min())}, {float(data.max())}]")))
    return _pointwise("binary_cross_entropy", _BCE, None, input, target, reduction, weight)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """Binary cross entropy of sigmoid(input), computed from the logits without overflow.

    ``pos_weight`` (broadcast over the last dim, e.g. one per class) weighs positive targets;
    ``weight`` weighs each element.
    """
    if _autocast.active:
        input, target, weight, pos_weight = cast_inputs(
            "binary_cross_entropy_with_logits", input, target, weight, pos_weight)
    op = "binary_cross_entropy_with_logits"
    reduction = check_reduction(op, reduction, size_average, reduce)
    if isinstance(input, Tensor):
        pos_weight = _checked_weight(op, "pos_weight", pos_weight, input)
    return _pointwise(op, _BCEWithLogits, None if pos_weight is None else pos_weight._data,
                      input, target, reduction, weight)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Kullback-Leibler divergence target * (log(target) - input), ``input`` being
    log-probabilities; ``reduction='batchmean'`` divides the sum by the batch size (the true
    KL divergence per sample), 'mean' by the number of elements (as torch)."""
    if _autocast.active:
        input, target = cast_inputs("kl_div", input, target)
    reduction = check_reduction("kl_div", reduction, size_average, reduce,
                                REDUCTIONS + ("batchmean",))
    return _pointwise("kl_div", _KLDiv, bool(log_target), input, target, reduction)
