"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay."""

import functools

import numpy as np

from .. import backend
from ..tensor import Tensor
from .. import multi_tensor
from ..kernels import optim_cpu
from .capturable import check_lr, kernel_scalar, lr_array
from .optimizer import (Optimizer, check_range, effective_grad, fused, grad_lines,
                        implementation_hints)

_IN = "T grad, T lr, T momentum, T dampening_weight, T weight_decay"


@functools.cache
def _sgd_lines(momentum, first_step, nesterov, maximize, weight_decay):
    lines = grad_lines(maximize, weight_decay)
    if momentum:
        lines.append("momentum_buffer = g;" if first_step else
                     "momentum_buffer = momentum_buffer * momentum + dampening_weight * g;")
        lines.append("g = g + momentum * momentum_buffer;" if nesterov else "g = momentum_buffer;")
    lines.append("param = param + (-lr) * g;")
    return tuple(lines)


@functools.cache
def _multi_tensor_sgd(momentum, first_step, nesterov, maximize, weight_decay):
    """SGD's update of many tensors in one launch: the per-parameter kernel's lines."""
    outs = ("param", "momentum_buffer") if momentum else ("param",)
    return multi_tensor.Update("gpudl_mt_sgd" + "_momentum" * momentum, ("grad",), outs,
                               _IN.partition(", ")[2],
                               _sgd_lines(momentum, first_step, nesterov, maximize, weight_decay))


class SGD(Optimizer):
    """torch.optim.SGD: ``p -= lr * d``, where d is the gradient (+ weight_decay * p), or its
    momentum buffer ``b = momentum * b + (1 - dampening) * d`` (``b = d`` on the first step), or
    with ``nesterov=True`` ``d + momentum * b``. ``maximize=True`` ascends instead. ``lr`` may be
    a 0-d Tensor, read where it lies (gpudl/optim/capturable.py).

    Example:
        >>> opt = gd.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        **implementation_hints(foreach, differentiable, fused=fused))
        super().__init__(params, defaults)

    def _check_group(self, group):
        check_lr("SGD", group["lr"], check_range)
        for what in ("momentum", "weight_decay"):
            check_range("SGD", what, group[what])
        check_range("SGD", "dampening", group["dampening"], -np.inf)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum > 0 and zero dampening, "
                             f"got momentum={group['momentum']}, dampening={group['dampening']}")

    def _init_state(self, param, group):
        return {}

    def _update_batched(self, updates, group):
        """Float32/float64 contiguous device tensors with a number lr: one multi-tensor launch
        per dtype and first-step-or-not (and ``SLOTS`` tensors); such CPU tensors: one pass of
        kernels/optim_cpu.py's loop each."""
        if isinstance(group["lr"], Tensor):
            return updates
        updates = self._update_on_cpu(updates, group)
        momentum = bool(group["momentum"])
        batches, rest = {}, []
        for param, grad, state in updates:
            buf = state.get("momentum_buffer")
            if not multi_tensor.batchable(grad, param, *(() if buf is None else (buf._data,))):
                rest.append((param, grad, state))
                continue
            first = momentum and buf is None
            if first:
                buf = state["momentum_buffer"] = Tensor._make(
                    backend.get_array_module(param).empty_like(param), False, None, 0, None)
            arrays = (grad, param) + ((buf._data,) if momentum else ())
            batches.setdefault((param.dtype, first), []).append(arrays)
        for (_, first), tensors in batches.items():
            update = _multi_tensor_sgd(momentum, first, group["nesterov"], group["maximize"],
                                       bool(group["weight_decay"]))
            multi_tensor.launch(update, tensors, (group["lr"], group["momentum"],
                                                  1 - group["dampening"], group["weight_decay"]))
        return rest

    def _update_on_cpu(self, updates, group):
        """Update the CPU arrays of ``updates`` (``(param, grad, state)``) that the one-pass
        loop takes (a number lr), the group's numbers rounded once per dtype; return the rest."""
        loop, rest, scalars = None, [], {}
        momentum = group["momentum"]
        flags = (bool(group["weight_decay"]), bool(momentum), bool(group["dampening"]),
                 bool(group["nesterov"]), bool(group["maximize"]))
        for param, grad, state in updates:
            buf = state.get("momentum_buffer")
            if not optim_cpu.applies(param, grad, *(() if buf is None else (buf._data,))):
                rest.append((param, grad, state))
                continue
            if loop is None:
                loop = optim_cpu.sgd_loop()
            numbers = scalars.get(param.dtype)
            if numbers is None:
                t = param.dtype.type
                numbers = scalars[param.dtype] = (t(group["weight_decay"]), t(momentum),
                                                  t(1 - group["dampening"]), -t(group["lr"]))
            first = flags[1] and buf is None
            if first:
                buf = state["momentum_buffer"] = Tensor._make(np.empty_like(param), False, None,
                                                              0, None)
            loop(param, grad, param if buf is None else buf._data, first, *numbers, *flags)
        return rest

    def _update(self, param, grad, state, group):
        if not isinstance(group["lr"], Tensor) and \
                not self._update_on_cpu(((param, grad, state),), group):
            return
        momentum = group["momentum"]
        lr = kernel_scalar(lr_array(group["lr"]), param.dtype)     # a 0-d Tensor lr stays put
        buf = state.get("momentum_buffer")
        if backend.is_device_array(param):
            lines = _sgd_lines(bool(momentum), buf is None, group["nesterov"],
                               group["maximize"], bool(group["weight_decay"]))
            scalars = (grad, lr, momentum, 1 - group["dampening"],
                       group["weight_decay"])
            if not momentum:
                fused(_IN, "T param", lines, "gpudl_sgd")(*scalars, param)
                return
            if buf is None:
                buf = state["momentum_buffer"] = Tensor._make(
                    backend.get_array_module(param).empty_like(param), False, None, 0, None)
            fused(_IN, "T param, T momentum_buffer", lines, "gpudl_sgd_momentum")(
                *scalars, param, buf._data)
            return
        d = effective_grad(param, grad, group["weight_decay"], group["maximize"])
        scratch = self._scratch(param)
        if momentum:
            if buf is None:
                buf = state["momentum_buffer"] = Tensor._make(
                    d.copy() if d is grad else d, False, None, 0, None)
            else:
                buf._data *= momentum
                if group["dampening"]:
                    d_weighted = np.multiply(d, 1 - group["dampening"], out=scratch)
                else:
                    d_weighted = d                  # 1 * d: torch's alpha=1 is exact too
                buf._data += d_weighted
            if group["nesterov"]:
                np.multiply(buf._data, momentum, out=scratch)
                d = np.add(d, scratch, out=scratch)
            else:
                d = buf._data
        np.multiply(d, -lr, out=scratch)
        param += scratch
