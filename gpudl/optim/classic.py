"""Adadelta, Rprop and ASGD (torch.optim's): on the GPU one fused kernel per parameter or one
multi-tensor launch for many (gpudl/optim/kernel_update.py), in-place NumPy on the CPU, in the
order of torch's single-tensor implementations."""

import functools

import numpy as np

from .adam_variants import as_float32, refuse_capturable
from .capturable import check_lr
from .kernel_update import KernelUpdate
from .optimizer import check_range, effective_grad, grad_lines, implementation_hints, \
    new_state_buffer, square_avg_


@functools.cache
def _adadelta_lines(maximize, weight_decay):
    return tuple(grad_lines(maximize, weight_decay) + [
        "square_avg = square_avg * rho + rho_weight * g * g;",
        "T std = sqrt(square_avg + eps);",
        "T delta = sqrt(acc_delta + eps) / std * g;",
        "acc_delta = acc_delta * rho + rho_weight * delta * delta;",
        "param = param + neg_lr * delta;"])


@functools.cache
def _rprop_lines(maximize):
    # a NaN product or gradient stays NaN, as torch's sign() and clamp() keep it
    return tuple(grad_lines(maximize, False) + [
        "T s = g * prev;",
        "T factor = (s > (T)0) ? etaplus : (s < (T)0) ? etaminus : (s == (T)0) ? (T)1 : s;",
        "T size = step_size * factor;",
        "size = (size < step_min) ? step_min : size;",
        "step_size = (size > step_max) ? step_max : size;",
        "g = (s < (T)0) ? (T)0 : g;",
        "T direction = (g > (T)0) ? (T)1 : (g < (T)0) ? (T)-1 : g;",
        "param = param - direction * step_size;",
        "prev = g;"])


@functools.cache
def _asgd_lines(maximize, weight_decay, averaging):
    return tuple(grad_lines(maximize, weight_decay) + [
        "param = param * decay;",
        "param = param - eta * g;",
        "ax = ax + (param - ax) * mu;" if averaging else "ax = param;"])


class Adadelta(KernelUpdate):
    """torch.optim.Adadelta: ``v = rho * v + (1 - rho) * g * g``, ``d = sqrt(u + eps) /
    sqrt(v + eps) * g``, ``u = rho * u + (1 - rho) * d * d``, ``p -= lr * d``.

    Example:
        >>> opt = gd.optim.Adadelta(model.parameters())
    """

    _KERNEL = "gpudl_adadelta"
    _BUFFERS = ("square_avg", "acc_delta")
    _GROUP_SCALARS = ("weight_decay", "rho", "rho_weight", "eps", "neg_lr")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        refuse_capturable("Adadelta", capturable)
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=bool(capturable),
                        **implementation_hints(foreach, differentiable))
        super().__init__(params, defaults)

    def _check_group(self, group):
        check_lr("Adadelta", group["lr"], check_range)
        for what in ("eps", "weight_decay"):
            check_range("Adadelta", what, group[what])
        check_range("Adadelta", "rho", group["rho"])
        if group["rho"] > 1:
            raise ValueError(f"Adadelta: invalid rho {group['rho']!r} (expected in [0, 1])")
        refuse_capturable("Adadelta", group.get("capturable"))

    def _init_state(self, param, group):
        return {"step": 0, "square_avg": new_state_buffer(param),
                "acc_delta": new_state_buffer(param)}

    def _group_values(self, group):
        return group["weight_decay"], group["rho"], 1 - group["rho"], group["eps"], -group["lr"]

    def _lines(self, group, variant):
        return _adadelta_lines(group["maximize"], bool(group["weight_decay"]))

    def _step_numbers(self, state, group):
        state["step"] += 1
        return None, ()

    def _cpu_update(self, param, grad, state, group, variant, numbers):
        rho = group["rho"]
        square_avg, acc_delta = state["square_avg"]._data, state["acc_delta"]._data
        g = effective_grad(param, grad, group["weight_decay"], group["maximize"])
        scratch = self._scratch(param)
        square_avg_(square_avg, g, rho, scratch)
        std = np.sqrt(square_avg + group["eps"])
        delta = np.add(acc_delta, group["eps"], out=scratch)
        np.sqrt(delta, out=delta)
        delta /= std
        delta *= g
        acc_delta *= rho
        acc_delta += (1 - rho) * delta * delta
        delta *= -group["lr"]
        param += delta


class Rprop(KernelUpdate):
    """torch.optim.Rprop: each element's step size grows by ``etas[1]`` while its gradient keeps
    its sign and shrinks by ``etas[0]`` when it flips (that step is then skipped), within
    ``step_sizes``; ``p -= sign(g) * step_size``. Step sizes start at ``lr``.

    Example:
        >>> opt = gd.optim.Rprop(model.parameters(), lr=1e-2)
    """

    # the sign-dependent step sizes are per element (a state buffer): no per-tensor numbers
    _KERNEL = "gpudl_rprop"
    _BUFFERS = ("prev", "step_size")
    _GROUP_SCALARS = ("etaminus", "etaplus", "step_min", "step_max")

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        refuse_capturable("Rprop", capturable)
        defaults = dict(lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes),
                        maximize=maximize, capturable=bool(capturable),
                        **implementation_hints(foreach, differentiable))
        super().__init__(params, defaults)

    def _check_group(self, group):
        check_lr("Rprop", group["lr"], check_range)
        etas, sizes = group["etas"], group["step_sizes"]
        for what, pair in (("etas", etas), ("step_sizes", sizes)):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"Rprop: {what} must be a pair, got {pair!r}")
        for i, eta in enumerate(etas):
            check_range("Rprop", f"etas[{i}]", eta)
        if not (0 < etas[0] < 1 < etas[1]):
            raise ValueError(f"Rprop: invalid etas {tuple(etas)!r} (expected 0 < etaminus < 1 "
                             "< etaplus)")
        check_range("Rprop", "step_sizes[0]", sizes[0])
        check_range("Rprop", "step_sizes[1]", sizes[1], sizes[0])
        refuse_capturable("Rprop", group.get("capturable"))

    def _init_state(self, param, group):
        return {"step": 0, "prev": new_state_buffer(param),
                "step_size": new_state_buffer(param, group["lr"])}

    def _group_values(self, group):
        return (*group["etas"], *group["step_sizes"])

    def _lines(self, group, variant):
        return _rprop_lines(group["maximize"])

    def _step_numbers(self, state, group):
        state["step"] += 1
        return None, ()

    def _cpu_update(self, param, grad, state, group, variant, numbers):
        etaminus, etaplus = group["etas"]
        step_min, step_max = group["step_sizes"]
        prev, step_size = state["prev"]._data, state["step_size"]._data
        g = -grad if group["maximize"] else grad
        sign = np.sign(g * prev)
        flipped = sign < 0
        factor = np.where(sign > 0, etaplus, np.where(flipped, etaminus, np.where(
            sign == 0, 1, sign))).astype(param.dtype)          # NaN stays NaN
        step_size *= factor
        np.clip(step_size, step_min, step_max, out=step_size)
        g = np.where(flipped, 0, g).astype(param.dtype)      # a flipped sign skips this step
        param -= np.sign(g) * step_size
        prev[...] = g


class ASGD(KernelUpdate):
    """torch.optim.ASGD, averaged SGD: ``p = p * (1 - lambd * eta) - eta * g``, the average
    ``ax`` follows p from step ``t0`` on, ``eta = lr / (1 + lambd * lr * t) ** alpha``. The
    scalars eta and mu are kept rounded to float32, as torch keeps them (0-d float32 tensors).

    Example:
        >>> opt = gd.optim.ASGD(model.parameters(), lr=1e-2)
    """

    _scalar_state = ("eta", "mu")
    _KERNEL = "gpudl_asgd"
    _BUFFERS = ("ax",)
    _GROUP_SCALARS = ("weight_decay",)
    # averaging (mu != 1) or not is a variant of the lines: one launch each
    _TENSOR_SCALARS = ("decay", "eta", "mu")

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0,
                 foreach=None, maximize=False, differentiable=False, capturable=False):
        refuse_capturable("ASGD", capturable)
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                        maximize=maximize, capturable=bool(capturable),
                        **implementation_hints(foreach, differentiable))
        super().__init__(params, defaults)

    def _check_group(self, group):
        check_lr("ASGD", group["lr"], check_range)
        check_range("ASGD", "weight_decay", group["weight_decay"])
        for what in ("lambd", "alpha", "t0"):
            check_range("ASGD", what, group[what], -np.inf)
        refuse_capturable("ASGD", group.get("capturable"))

    def _init_state(self, param, group):
        return {"step": 0, "eta": as_float32(group["lr"]), "mu": 1.0,
                "ax": new_state_buffer(param)}

    def _group_values(self, group):
        return (group["weight_decay"],)

    def _lines(self, group, averaging):
        return _asgd_lines(group["maximize"], bool(group["weight_decay"]), averaging)

    def _step_numbers(self, state, group):
        """This step's numbers, from eta and mu as they were; then their next values."""
        state["step"] = step = state["step"] + 1
        lr, lambd, eta, mu = group["lr"], group["lambd"], state["eta"], state["mu"]
        state["eta"] = as_float32(lr / ((1 + lambd * lr * step) ** group["alpha"]))
        state["mu"] = as_float32(1 / max(1, step - group["t0"]))
        return mu != 1, (1 - lambd * eta, eta, mu)

    def _cpu_update(self, param, grad, state, group, averaging, numbers):
        decay, eta, mu = numbers
        ax = state["ax"]._data
        g = effective_grad(param, grad, group["weight_decay"], group["maximize"])
        param *= decay
        param -= eta * g
        if averaging:
            ax += (param - ax) * mu
        else:
            ax[...] = param
