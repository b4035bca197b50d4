"""Adam and AdamW (decoupled weight decay), with the AMSGrad variant."""

import functools

import numpy as np

from .. import backend
from ..tensor import Tensor
from .. import multi_tensor
from ..kernels import optim_cpu
from .capturable import advance_step, bias_corrections, check_lr, device_step, \
    device_step_array, fused_bias_corrections, kernel_scalar, lr_array, power_complement
from .optimizer import (
    Optimizer,
    check_betas,
    check_range,
    effective_grad,
    fused,
    grad_lines,
    implementation_hints,
    lerp_,
    lerp_line,
    new_state_buffer,
    square_avg_,
)

_IN = ("T grad, T weight_decay, T decay, T beta1_weight, T beta2, T beta2_weight, "
       "T bias_correction2_sqrt, T eps, T neg_step_size")


def moment_lines(maximize, coupled_decay, decoupled_decay):
    """CUDA lines shared by Adam and its variants: the gradient ``g`` after weight decay
    (coupled, or ``param *= decay``), then the moments ``exp_avg`` and ``exp_avg_sq``."""
    lines = grad_lines(maximize, coupled_decay)
    if decoupled_decay:
        lines.append("param = param * decay;")
    lines.append(lerp_line("exp_avg", "g", "beta1_weight"))
    lines.append("exp_avg_sq = exp_avg_sq * beta2 + beta2_weight * g * g;")
    return lines


@functools.cache
def _adam_lines(amsgrad, maximize, coupled_decay, decoupled_decay):
    lines = moment_lines(maximize, coupled_decay, decoupled_decay)
    second = "exp_avg_sq"
    if amsgrad:
        lines.append("max_exp_avg_sq = (exp_avg_sq > max_exp_avg_sq || isnan(exp_avg_sq)) "
                     "? exp_avg_sq : max_exp_avg_sq;")
        second = "max_exp_avg_sq"
    lines.append(f"T denom = sqrt({second}) / bias_correction2_sqrt + eps;")
    lines.append("param = param + neg_step_size * exp_avg / denom;")
    return tuple(lines)


_GROUP_SCALARS = "T weight_decay, T decay, T beta1_weight, T beta2, T beta2_weight, T eps"
_TENSOR_SCALARS = ("neg_step_size", "bias_correction2_sqrt")


@functools.cache
def _multi_tensor_adam(amsgrad, maximize, coupled_decay, decoupled_decay, capturable):
    """Adam's update of many tensors in one launch (gpudl/multi_tensor.py): the lines of
    the per-parameter kernel; the bias corrections given per tensor, or with ``capturable``
    computed from each tensor's device step count (already advanced) as
    fused_bias_corrections computes them."""
    outs = ("param", "exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())
    lines = _adam_lines(amsgrad, maximize, coupled_decay, decoupled_decay)
    name = "gpudl_mt_adam" + "_amsgrad" * amsgrad
    if not capturable:
        return multi_tensor.Update(name, ("grad",), outs, _GROUP_SCALARS, lines, _TENSOR_SCALARS)
    neg_step_size, bias_correction2_sqrt = bias_corrections("s", "step_lr", "step_beta1",
                                                            "step_beta2")
    return multi_tensor.Update(
        name + "_capturable", ("grad",), outs,
        _GROUP_SCALARS + ", float64 step_lr, float64 step_beta1, float64 step_beta2", lines,
        pointers=(("float32", "step"),),
        prologue=("const double s = *step;", f"const T neg_step_size = {neg_step_size};",
                  f"const T bias_correction2_sqrt = {bias_correction2_sqrt};"))


def moments_(exp_avg, exp_avg_sq, g, beta1, beta2, scratch):
    """Adam's moment updates in place (NumPy or CuPy arrays): ``m = lerp(m, g, 1 - beta1)``,
    ``v = beta2 * v + (1 - beta2) * g * g``."""
    lerp_(exp_avg, g, 1 - beta1, scratch)
    square_avg_(exp_avg_sq, g, beta2, scratch)


class Adam(Optimizer):
    """torch.optim.Adam: ``m = lerp(m, g, 1 - beta1)``, ``v = beta2 * v + (1 - beta2) * g * g``,
    ``p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``, where g is the
    gradient plus ``weight_decay * p`` (L2 penalty). ``amsgrad=True`` uses the running maximum of
    v; ``maximize=True`` ascends; ``decoupled_weight_decay=True`` is AdamW.

    ``capturable=True`` keeps the step count on the device (``state["step"]``, a 0-d float32
    tensor) and computes the bias corrections there, so a replayed CUDA graph advances them; ``lr``
    may be a 0-d Tensor, read where it lies (gpudl/optim/capturable.py). On the CPU both give the
    same numbers as the defaults.

    Example:
        >>> opt = gd.optim.Adam(model.parameters(), lr=1e-3)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, capturable=bool(capturable),
                        **implementation_hints(foreach, differentiable, fused=fused),
                        decoupled_weight_decay=bool(decoupled_weight_decay))
        super().__init__(params, defaults)

    def _check_group(self, group):
        name = type(self).__name__
        check_lr(name, group["lr"], check_range)
        for what in ("eps", "weight_decay"):
            check_range(name, what, group[what])
        check_betas(name, group["betas"])

    def _init_state(self, param, group):
        step = device_step(param) if group["capturable"] else 0
        state = {"step": step, "exp_avg": new_state_buffer(param),
                 "exp_avg_sq": new_state_buffer(param)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = new_state_buffer(param)
        return state

    def _update_batched(self, updates, group):
        """Float32/float64 contiguous device tensors with a number lr: one multi-tensor launch
        per dtype (and ``SLOTS`` tensors), with ``capturable`` one more to advance the steps."""
        if isinstance(group["lr"], Tensor):
            return updates
        updates = self._update_on_cpu(updates, group)
        amsgrad, capturable = group["amsgrad"], group["capturable"]
        batches, rest = {}, []
        for param, grad, state in updates:
            arrays = (grad, param, state["exp_avg"]._data, state["exp_avg_sq"]._data) + \
                ((state["max_exp_avg_sq"]._data,) if amsgrad else ())
            step = device_step_array(state, param) if capturable else None
            if multi_tensor.batchable(*arrays) and (step is not None or not capturable):
                batches.setdefault(param.dtype, []).append((arrays, state, step))
            else:
                rest.append((param, grad, state))
        for batch in batches.values():
            self._update_multi_tensor(batch, group)
        return rest

    def _update_multi_tensor(self, batch, group):
        lr, weight_decay, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
        decoupled = group["decoupled_weight_decay"]
        update = _multi_tensor_adam(group["amsgrad"], group["maximize"],
                                    bool(weight_decay) and not decoupled,
                                    bool(weight_decay) and decoupled, group["capturable"])
        scalars = (weight_decay, 1 - lr * weight_decay, 1 - beta1, beta2, 1 - beta2,
                   group["eps"])
        if group["capturable"]:
            multi_tensor.launch(multi_tensor.STEP_INCREMENT, [(step,) for *_, step in batch], ())
            multi_tensor.launch(update, [arrays + (step,) for arrays, _, step in batch],
                                scalars + (lr, beta1, beta2))
            return
        corrections = []
        for arrays, state, _ in batch:
            step = advance_step(state, arrays[1], False)
            corrections.append((-lr / power_complement(beta1, step),
                                power_complement(beta2, step) ** 0.5))
        multi_tensor.launch(update, [arrays for arrays, _, _ in batch], scalars, corrections)

    def _update_on_cpu(self, updates, group):
        """Update the CPU arrays of ``updates`` (``(param, grad, state)``) that the one-pass
        loop takes (a number lr, not capturable), the group's numbers rounded once per dtype
        and the bias corrections once per dtype and step; return the rest."""
        if group["capturable"]:
            return updates
        loop, rest, scalars, corrections = None, [], {}, {}
        lr, weight_decay, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
        amsgrad, decoupled = group["amsgrad"], group["decoupled_weight_decay"]
        flags = (bool(amsgrad), bool(group["maximize"]), bool(weight_decay) and not decoupled,
                 bool(weight_decay) and decoupled)
        for param, grad, state in updates:
            exp_avg, exp_avg_sq = state["exp_avg"]._data, state["exp_avg_sq"]._data
            second = state["max_exp_avg_sq"]._data if amsgrad else self._scratch(param)
            if not optim_cpu.applies(param, grad, exp_avg, exp_avg_sq, second):
                rest.append((param, grad, state))
                continue
            if loop is None:
                loop = optim_cpu.adam_loop()
            t = param.dtype.type
            numbers = scalars.get(t)
            if numbers is None:
                numbers = scalars[t] = (t(weight_decay), t(1 - lr * weight_decay), t(beta2),
                                        t(1 - beta2), t(group["eps"]),
                                        *optim_cpu.lerp_weights(1 - beta1, param.dtype))
            step = advance_step(state, param, False)
            step_numbers = corrections.get((t, step))
            if step_numbers is None:
                step_numbers = corrections[t, step] = (
                    t(power_complement(beta2, step) ** 0.5),
                    t(-lr / power_complement(beta1, step)))
            loop(param, grad, exp_avg, exp_avg_sq, second, *flags, *numbers, *step_numbers)
        return rest

    def _update(self, param, grad, state, group):
        if not isinstance(group["lr"], Tensor) and \
                not self._update_on_cpu(((param, grad, state),), group):
            return
        lr, weight_decay, (beta1, beta2) = lr_array(group["lr"]), group["weight_decay"], \
            group["betas"]
        amsgrad = group["amsgrad"]
        dtype = param.dtype
        on_device = backend.is_device_array(param)
        fused_scalars = on_device and group["capturable"] and \
            fused_bias_corrections(state, param, lr, (beta1, beta2))
        if fused_scalars:
            neg_step_size, bias_correction2_sqrt = fused_scalars
        else:
            step = advance_step(state, param, group["capturable"])
            neg_step_size = kernel_scalar(-lr / power_complement(beta1, step), dtype)
            bias_correction2_sqrt = kernel_scalar(power_complement(beta2, step) ** 0.5, dtype)
        decay = kernel_scalar(1 - lr * weight_decay, dtype)
        decoupled = group["decoupled_weight_decay"]
        coupled = weight_decay if not decoupled else 0
        exp_avg, exp_avg_sq = state["exp_avg"]._data, state["exp_avg_sq"]._data
        second = state["max_exp_avg_sq"]._data if amsgrad else None
        if on_device:
            lines = _adam_lines(amsgrad, group["maximize"], bool(coupled),
                                bool(weight_decay) and decoupled)
            outs = "T param, T exp_avg, T exp_avg_sq" + (", T max_exp_avg_sq" if amsgrad else "")
            kernel = fused(_IN, outs, lines, "gpudl_adam")
            kernel(grad, weight_decay, decay, 1 - beta1, beta2, 1 - beta2, bias_correction2_sqrt,
                   group["eps"], neg_step_size, param, exp_avg, exp_avg_sq,
                   *([second] if amsgrad else []))
            return
        if decoupled and weight_decay:
            param *= decay
        g = effective_grad(param, grad, coupled, group["maximize"])
        scratch = self._scratch(param)
        moments_(exp_avg, exp_avg_sq, g, beta1, beta2, scratch)
        if amsgrad:
            np.maximum(second, exp_avg_sq, out=second)
        np.sqrt(second if amsgrad else exp_avg_sq, out=scratch)
        scratch /= bias_correction2_sqrt
        scratch += group["eps"]
        np.divide(exp_avg, scratch, out=scratch)
        scratch *= neg_step_size
        param += scratch


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, ``p *= 1 - lr * weight_decay``
    before the Adam step (default ``weight_decay=1e-2``)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
