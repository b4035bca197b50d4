"""NAdam, RAdam and Adamax: Adam's moment estimates with other step rules (torch.optim's).

As Adam, each update is one fused kernel per parameter on the GPU, or one multi-tensor launch for
many (CUDA lines sharing Adam's moment_lines; gpudl/optim/kernel_update.py), and in-place NumPy
operations on the CPU, in the order of torch's single-tensor implementation, so the same
gradients give the same parameters to rounding.
"""

import functools

import numpy as np

from .adam import moment_lines, moments_
from .capturable import check_lr
from .kernel_update import KernelUpdate
from .optimizer import (check_betas, check_range, effective_grad, grad_lines,
                        implementation_hints, lerp_, lerp_line, new_state_buffer)

_MOMENT_SCALARS = ("weight_decay", "decay", "beta1_weight", "beta2", "beta2_weight")


def refuse_capturable(name, capturable):
    """These optimizers keep their step count on the host: capturable=True is refused."""
    if capturable:
        raise NotImplementedError(f"{name}: capturable=True is not supported (use Adam, AdamW "
                                  "or RMSprop for CUDA-graph-captured steps)")


def as_float32(value):
    """``value`` rounded to float32, as torch keeps a scalar state (a float32 0-d tensor)."""
    return float(np.float32(value))


def decay_options(group):
    """(coupled weight decay, whether decoupled decay applies) of an Adam variant's group."""
    decoupled = bool(group.get("decoupled_weight_decay")) and bool(group["weight_decay"])
    return (0 if group.get("decoupled_weight_decay") else group["weight_decay"]), decoupled


def moment_values(group):
    """The values of moment_lines' scalars, in _MOMENT_SCALARS' order."""
    beta1, beta2 = group["betas"]
    return (group["weight_decay"], 1 - group["lr"] * group["weight_decay"], 1 - beta1, beta2,
            1 - beta2)


@functools.cache
def _nadam_lines(maximize, coupled_decay, decoupled_decay):
    return tuple(moment_lines(maximize, coupled_decay, decoupled_decay) + [
        "T denom = sqrt(exp_avg_sq / bias_correction2) + eps;",
        "param = param + grad_coef * (g / denom);",
        "param = param + avg_coef * (exp_avg / denom);"])


@functools.cache
def _radam_lines(maximize, coupled_decay, decoupled_decay, rectified):
    lines = moment_lines(maximize, coupled_decay, decoupled_decay)
    lines.append("T update = exp_avg / bias_correction1 * lr;")
    if rectified:
        lines.append("update = update * (bias_correction2_sqrt / (sqrt(exp_avg_sq) + eps));")
        lines.append("update = update * rect;")
    lines.append("param = param - update;")
    return tuple(lines)


@functools.cache
def _adamax_lines(maximize, weight_decay):
    return tuple(grad_lines(maximize, weight_decay) + [
        lerp_line("exp_avg", "g", "beta1_weight"),
        "T decayed = exp_inf * beta2;",
        "T bound = (g < (T)0 ? -g : g) + eps;",
        "exp_inf = (decayed > bound || isnan(decayed)) ? decayed : bound;",   # NaN propagates
        "param = param + neg_clr * (exp_avg / exp_inf);"])


def decayed_grad(param, grad, group):
    """CPU: the gradient an Adam variant uses, after its weight decay: decoupled (``p *= 1 - lr
    * weight_decay``, in place) or coupled (added to the gradient)."""
    coupled, decoupled = decay_options(group)
    if decoupled:
        param *= 1 - group["lr"] * group["weight_decay"]
    return effective_grad(param, grad, coupled, group["maximize"])


class _AdamVariant(KernelUpdate):
    """Options, checks and state shared by NAdam, RAdam and Adamax (``_BUFFERS``: the names of
    the state buffers)."""

    _BUFFERS = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, defaults, capturable):
        refuse_capturable(type(self).__name__, capturable)
        super().__init__(params, defaults)

    def _check_group(self, group):
        name = type(self).__name__
        check_lr(name, group["lr"], check_range)
        for what in ("eps", "weight_decay"):
            check_range(name, what, group[what])
        check_betas(name, group["betas"])
        refuse_capturable(name, group.get("capturable"))

    def _init_state(self, param, group):
        return {"step": 0, **{name: new_state_buffer(param) for name in self._BUFFERS}}


class NAdam(_AdamVariant):
    """torch.optim.NAdam: Adam with Nesterov momentum, ``mu_t = beta1 * (1 - 0.5 * 0.96 **
    (t * momentum_decay))``: ``p -= lr * ((1 - mu_t) / (1 - prod mu) * g + mu_{t+1} /
    (1 - prod mu * mu_{t+1}) * m) / (sqrt(v / (1 - beta2**t)) + eps)``.
    ``decoupled_weight_decay=True`` decays the parameters as AdamW (NAdamW).

    Example:
        >>> opt = gd.optim.NAdam(model.parameters(), lr=2e-3)
    """

    _scalar_state = ("mu_product",)
    _KERNEL = "gpudl_nadam"
    _GROUP_SCALARS = _MOMENT_SCALARS + ("eps",)
    _TENSOR_SCALARS = ("bias_correction2", "grad_coef", "avg_coef")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay,
                        decoupled_weight_decay=bool(decoupled_weight_decay), maximize=maximize,
                        capturable=bool(capturable),
                        **implementation_hints(foreach, differentiable))
        super().__init__(params, defaults, capturable)

    def _check_group(self, group):
        super()._check_group(group)
        check_range("NAdam", "momentum_decay", group["momentum_decay"])

    def _init_state(self, param, group):
        return dict(super()._init_state(param, group), mu_product=1.0)

    def _group_values(self, group):
        return moment_values(group) + (group["eps"],)

    def _lines(self, group, variant):
        coupled, decoupled = decay_options(group)
        return _nadam_lines(group["maximize"], bool(coupled), decoupled)

    def _step_numbers(self, state, group):
        state["step"] = step = state["step"] + 1
        lr, (beta1, beta2) = group["lr"], group["betas"]
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * group["momentum_decay"]))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * group["momentum_decay"]))
        state["mu_product"] = mu_product = as_float32(np.float32(state["mu_product"])
                                                      * np.float32(mu))
        grad_coef = -lr * (1.0 - mu) / (1.0 - mu_product)
        avg_coef = (-lr * mu_next) / (1.0 - mu_product * mu_next)
        return None, (1 - beta2 ** step, grad_coef, avg_coef)

    def _cpu_update(self, param, grad, state, group, variant, numbers):
        bias_correction2, grad_coef, avg_coef = numbers
        exp_avg, exp_avg_sq = state["exp_avg"]._data, state["exp_avg_sq"]._data
        g = decayed_grad(param, grad, group)
        scratch = self._scratch(param)
        moments_(exp_avg, exp_avg_sq, g, *group["betas"], scratch)
        denom = np.divide(exp_avg_sq, bias_correction2, out=scratch)
        np.sqrt(denom, out=denom)
        denom += group["eps"]
        param += grad_coef * (g / denom)
        param += avg_coef * (exp_avg / denom)


class RAdam(_AdamVariant):
    """torch.optim.RAdam: Adam whose adaptive step is rectified by the variance of its second
    moment estimate; while that variance is intractable (``rho_t <= 5``, the first steps) the
    step is SGD with momentum, ``p -= lr * m / (1 - beta1**t)``.
    ``decoupled_weight_decay=True`` decays the parameters as AdamW.

    Example:
        >>> opt = gd.optim.RAdam(model.parameters(), lr=1e-3)
    """

    _KERNEL = "gpudl_radam"
    _GROUP_SCALARS = _MOMENT_SCALARS + ("lr", "eps")
    # rectified or not is a variant of the lines (one launch each): it depends on the step only
    _TENSOR_SCALARS = ("bias_correction1", "bias_correction2_sqrt", "rect")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        maximize=maximize, capturable=bool(capturable),
                        decoupled_weight_decay=bool(decoupled_weight_decay),
                        **implementation_hints(foreach, differentiable))
        super().__init__(params, defaults, capturable)

    def _group_values(self, group):
        return moment_values(group) + (group["lr"], group["eps"])

    def _lines(self, group, rectified):
        coupled, decoupled = decay_options(group)
        return _radam_lines(group["maximize"], bool(coupled), decoupled, rectified)

    def _step_numbers(self, state, group):
        state["step"] = step = state["step"] + 1
        beta1, beta2 = group["betas"]
        bias_correction2 = 1 - beta2 ** step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
        rectified = rho_t > 5.0               # else the variance is intractable: no adaptive step
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5 if rectified else 1.0
        return rectified, (1 - beta1 ** step, bias_correction2 ** 0.5, rect)

    def _cpu_update(self, param, grad, state, group, rectified, numbers):
        bias_correction1, bias_correction2_sqrt, rect = numbers
        exp_avg, exp_avg_sq = state["exp_avg"]._data, state["exp_avg_sq"]._data
        g = decayed_grad(param, grad, group)
        moments_(exp_avg, exp_avg_sq, g, *group["betas"], self._scratch(param))
        update = exp_avg / bias_correction1 * group["lr"]
        if rectified:
            update *= bias_correction2_sqrt / (np.sqrt(exp_avg_sq) + group["eps"])
            update *= rect
        param -= update


class Adamax(_AdamVariant):
    """torch.optim.Adamax: Adam with the infinity norm, ``u = max(beta2 * u, |g| + eps)``,
    ``p -= lr / (1 - beta1**t) * m / u``.

    Example:
        >>> opt = gd.optim.Adamax(model.parameters(), lr=2e-3)
    """

    _KERNEL = "gpudl_adamax"
    _BUFFERS = ("exp_avg", "exp_inf")
    _GROUP_SCALARS = ("weight_decay", "beta1_weight", "beta2", "eps")
    _TENSOR_SCALARS = ("neg_clr",)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        maximize=maximize, capturable=bool(capturable),
                        **implementation_hints(foreach, differentiable))
        super().__init__(params, defaults, capturable)

    def _group_values(self, group):
        beta1, beta2 = group["betas"]
        return group["weight_decay"], 1 - beta1, beta2, group["eps"]

    def _lines(self, group, variant):
        return _adamax_lines(group["maximize"], bool(group["weight_decay"]))

    def _step_numbers(self, state, group):
        state["step"] = step = state["step"] + 1
        return None, (-(group["lr"] / (1 - group["betas"][0] ** step)),)

    def _cpu_update(self, param, grad, state, group, variant, numbers):
        (neg_clr,) = numbers
        beta1, beta2 = group["betas"]
        exp_avg, exp_inf = state["exp_avg"]._data, state["exp_inf"]._data
        g = effective_grad(param, grad, group["weight_decay"], group["maximize"])
        scratch = self._scratch(param)
        lerp_(exp_avg, g, 1 - beta1, scratch)
        exp_inf *= beta2
        np.abs(g, out=scratch)
        scratch += group["eps"]
        np.maximum(exp_inf, scratch, out=exp_inf)
        np.divide(exp_avg, exp_inf, out=scratch)
        scratch *= neg_clr
        param += scratch
