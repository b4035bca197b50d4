"""NAdam, RAdam and Adamax: Adam's moment estimates with other step rules (torch.optim's).

The updates are written once on raw arrays with NumPy-style operations, so the same code runs on
NumPy (CPU) and CuPy (GPU) arrays: a few elementwise launches per parameter on the GPU rather than
one fused kernel as Adam's (a fused form can come when a profile asks for it). The order of
operations is torch's single-tensor implementation's, so float64 parameters match it to rounding.
"""

import numpy as np

from .. import backend
from .adam import moments_
from .optimizer import (
    Optimizer,
    check_betas,
    check_range,
    effective_grad,
    implementation_hints,
    lerp_,
    new_state_buffer,
)


def refuse_capturable(name, capturable):
    """These optimizers keep their step count on the host: capturable=True is refused."""
    if capturable:
        raise NotImplementedError(f"{name}: capturable=True is not supported (use Adam, AdamW "
                                  "or RMSprop for CUDA-graph-captured steps)")


def as_float32(value):
    """``value`` rounded to float32, as torch keeps a scalar state (a float32 0-d tensor)."""
    return float(np.float32(value))


def work_array(optimizer, param):
    """A scratch array like ``param``: the optimizer's reused CPU buffer, or a new device array."""
    if backend.is_device_array(param):
        return backend.get_array_module(param).empty_like(param)
    return optimizer._scratch(param)


def decayed_grad(param, grad, group):
    """The gradient an Adam variant uses, after its weight decay: decoupled (``p *= 1 - lr *
    weight_decay``, in place) or coupled (added to the gradient)."""
    weight_decay = group["weight_decay"]
    if weight_decay and group.get("decoupled_weight_decay"):
        param *= 1 - group["lr"] * weight_decay
        weight_decay = 0
    return effective_grad(param, grad, weight_decay, group["maximize"])


class _AdamVariant(Optimizer):
    """Options, checks and state shared by NAdam, RAdam and Adamax (``_SECOND``: the name of the
    second state buffer)."""

    _SECOND = "exp_avg_sq"

    def __init__(self, params, defaults, capturable):
        refuse_capturable(type(self).__name__, capturable)
        super().__init__(params, defaults)

    def _check_group(self, group):
        name = type(self).__name__
        for what in ("lr", "eps", "weight_decay"):
            check_range(name, what, group[what])
        check_betas(name, group["betas"])
        refuse_capturable(name, group.get("capturable"))

    def _init_state(self, param, group):
        return {"step": 0, "exp_avg": new_state_buffer(param),
                self._SECOND: new_state_buffer(param)}


class NAdam(_AdamVariant):
    """torch.optim.NAdam: Adam with Nesterov momentum, ``mu_t = beta1 * (1 - 0.5 * 0.96 **
    (t * momentum_decay))``: ``p -= lr * ((1 - mu_t) / (1 - prod mu) * g + mu_{t+1} /
    (1 - prod mu * mu_{t+1}) * m) / (sqrt(v / (1 - beta2**t)) + eps)``.
    ``decoupled_weight_decay=True`` decays the parameters as AdamW (NAdamW).

    Example:
        >>> opt = gd.optim.NAdam(model.parameters(), lr=2e-3)
    """

    _scalar_state = ("mu_product",)

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

    def _update(self, param, grad, state, group):
        state["step"] = step = state["step"] + 1
        lr, (beta1, beta2) = group["lr"], group["betas"]
        g = decayed_grad(param, grad, group)
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * group["momentum_decay"]))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * group["momentum_decay"]))
        state["mu_product"] = mu_product = as_float32(np.float32(state["mu_product"])
                                                      * np.float32(mu))
        exp_avg, exp_avg_sq = state["exp_avg"]._data, state["exp_avg_sq"]._data
        scratch = work_array(self, param)
        moments_(exp_avg, exp_avg_sq, g, beta1, beta2, scratch)
        denom = np.divide(exp_avg_sq, 1 - beta2 ** step, out=scratch)
        np.sqrt(denom, out=denom)
        denom += group["eps"]
        param += (-lr * (1.0 - mu) / (1.0 - mu_product)) * (g / denom)
        param += ((-lr * mu_next) / (1.0 - mu_product * mu_next)) * (exp_avg / denom)


class RAdam(_AdamVariant):
    """torch.optim.RAdam: Adam whose adaptive step is rectified by the variance of its second
    moment estimate; while that variance is intractable (``rho_t <= 5``, the first steps) the
    step is SGD with momentum, ``p -= lr * m / (1 - beta1**t)``.
    ``decoupled_weight_decay=True`` decays the parameters as AdamW.

    Example:
        >>> opt = gd.optim.RAdam(model.parameters(), lr=1e-3)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        maximize=maximize, capturable=bool(capturable),
                        decoupled_weight_decay=bool(decoupled_weight_decay),
                        **implementation_hints(foreach, differentiable))
        super().__init__(params, defaults, capturable)

    def _update(self, param, grad, state, group):
        state["step"] = step = state["step"] + 1
        lr, (beta1, beta2) = group["lr"], group["betas"]
        g = decayed_grad(param, grad, group)
        exp_avg, exp_avg_sq = state["exp_avg"]._data, state["exp_avg_sq"]._data
        moments_(exp_avg, exp_avg_sq, g, beta1, beta2, work_array(self, param))
        bias_correction2 = 1 - beta2 ** step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
        update = exp_avg / (1 - beta1 ** step) * lr
        if rho_t > 5.0:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                    / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            update *= bias_correction2 ** 0.5 / (np.sqrt(exp_avg_sq) + group["eps"])
            update *= rect
        param -= update


class Adamax(_AdamVariant):
    """torch.optim.Adamax: Adam with the infinity norm, ``u = max(beta2 * u, |g| + eps)``,
    ``p -= lr / (1 - beta1**t) * m / u``.

    Example:
        >>> opt = gd.optim.Adamax(model.parameters(), lr=2e-3)
    """

    _SECOND = "exp_inf"

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        maximize=maximize, capturable=bool(capturable),
                        **implementation_hints(foreach, differentiable))
        super().__init__(params, defaults, capturable)

    def _update(self, param, grad, state, group):
        state["step"] = step = state["step"] + 1
        beta1, beta2 = group["betas"]
        g = effective_grad(param, grad, group["weight_decay"], group["maximize"])
        exp_avg, exp_inf = state["exp_avg"]._data, state["exp_inf"]._data
        scratch = work_array(self, param)
        lerp_(exp_avg, g, 1 - beta1, scratch)
        exp_inf *= beta2
        np.abs(g, out=scratch)
        scratch += group["eps"]
        np.maximum(exp_inf, scratch, out=exp_inf)
        np.divide(exp_avg, exp_inf, out=scratch)
        scratch *= -(group["lr"] / (1 - beta1 ** step))
        param += scratch
