"""RMSprop (optionally centered, with momentum) and Adagrad."""

import functools

import numpy as np

from .. import backend
from ..tensor import Tensor
from .. import multi_tensor
from .capturable import advance_step, check_lr, device_step, device_step_array, kernel_scalar, \
    lr_array
from .optimizer import (
    Optimizer,
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

_RMSPROP_IN = "T grad, T neg_lr, T alpha, T alpha_weight, T eps, T weight_decay, T momentum"
_ADAGRAD_IN = "T grad, T neg_clr, T eps, T weight_decay"


@functools.cache
def _rmsprop_lines(centered, momentum, maximize, weight_decay):
    lines = grad_lines(maximize, weight_decay)
    lines.append("square_avg = square_avg * alpha + alpha_weight * g * g;")
    if centered:
        lines.append(lerp_line("grad_avg", "g", "alpha_weight"))
        lines.append("T avg = sqrt(square_avg - grad_avg * grad_avg) + eps;")
    else:
        lines.append("T avg = sqrt(square_avg) + eps;")
    if momentum:
        lines.append("momentum_buffer = momentum_buffer * momentum + g / avg;")
        lines.append("param = param + neg_lr * momentum_buffer;")
    else:
        lines.append("param = param + neg_lr * g / avg;")
    return tuple(lines)


@functools.cache
def _adagrad_lines(maximize, weight_decay):
    return tuple(grad_lines(maximize, weight_decay) + [
        "state_sum = state_sum + g * g;",
        "param = param + neg_clr * g / (sqrt(state_sum) + eps);"])


_RMSPROP_EXTRA = ("momentum_buffer", "grad_avg")      # optional state, in the kernels' order


@functools.cache
def _multi_tensor_rmsprop(centered, momentum, maximize, weight_decay):
    outs = ("param", "square_avg") + (("momentum_buffer",) if momentum else ()) + \
        (("grad_avg",) if centered else ())
    return multi_tensor.Update("gpudl_mt_rmsprop", ("grad",), outs, _RMSPROP_IN.partition(", ")[2],
                               _rmsprop_lines(centered, momentum, maximize, weight_decay))


@functools.cache
def _multi_tensor_adagrad(maximize, weight_decay):
    scalars = _ADAGRAD_IN.partition(", ")[2].replace("T neg_clr, ", "")
    return multi_tensor.Update("gpudl_mt_adagrad", ("grad",), ("param", "state_sum"), scalars,
                               _adagrad_lines(maximize, weight_decay), ("neg_clr",))


class RMSprop(Optimizer):
    """torch.optim.RMSprop: ``v = alpha * v + (1 - alpha) * g * g``, ``p -= lr * g / (sqrt(v) +
    eps)``; ``centered=True`` subtracts the squared running mean of g from v, ``momentum > 0``
    accumulates ``b = momentum * b + g / (sqrt(v) + eps)`` and steps by ``lr * b``.
    ``capturable=True`` keeps ``state["step"]`` on the device and ``lr`` may be a 0-d Tensor, as in
    Adam (gpudl/optim/capturable.py).

    Example:
        >>> opt = gd.optim.RMSprop(model.parameters(), lr=1e-2, momentum=0.9)
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize,
                        capturable=bool(capturable),
                        **implementation_hints(foreach, differentiable))
        super().__init__(params, defaults)

    def _check_group(self, group):
        check_lr("RMSprop", group["lr"], check_range)
        for what in ("alpha", "eps", "weight_decay", "momentum"):
            check_range("RMSprop", what, group[what])

    def _init_state(self, param, group):
        step = device_step(param) if group["capturable"] else 0
        state = {"step": step, "square_avg": new_state_buffer(param)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = new_state_buffer(param)
        if group["centered"]:
            state["grad_avg"] = new_state_buffer(param)
        return state

    def _update_batched(self, updates, group):
        """Float32/float64 contiguous device tensors with a number lr: one multi-tensor launch
        per dtype (and ``SLOTS`` tensors), with ``capturable`` one more to advance the steps."""
        if isinstance(group["lr"], Tensor):
            return updates
        capturable, momentum, centered = group["capturable"], group["momentum"] > 0, \
            group["centered"]
        wanted = {"momentum_buffer": momentum, "grad_avg": centered}
        batches, rest = {}, []
        for param, grad, state in updates:
            arrays = (grad, param, state["square_avg"]._data) + tuple(
                state[k]._data for k in _RMSPROP_EXTRA if k in state)
            step = device_step_array(state, param) if capturable else None
            if (multi_tensor.batchable(*arrays) and (step is not None or not capturable)
                    and all((k in state) == wanted[k] for k in _RMSPROP_EXTRA)):
                batches.setdefault(param.dtype, []).append((arrays, state, step))
            else:
                rest.append((param, grad, state))
        update = _multi_tensor_rmsprop(centered, momentum, group["maximize"],
                                       bool(group["weight_decay"]))
        alpha = group["alpha"]
        for batch in batches.values():
            if capturable:
                multi_tensor.launch(multi_tensor.STEP_INCREMENT, [(s,) for *_, s in batch], ())
            else:
                for arrays, state, _ in batch:
                    advance_step(state, arrays[1], False)
            multi_tensor.launch(update, [arrays for arrays, _, _ in batch],
                                (-group["lr"], alpha, 1 - alpha, group["eps"],
                                 group["weight_decay"], group["momentum"]))
        return rest

    def _update(self, param, grad, state, group):
        advance_step(state, param, group["capturable"])
        neg_lr = kernel_scalar(-lr_array(group["lr"]), param.dtype)
        alpha, momentum, centered = group["alpha"], group["momentum"], group["centered"]
        square_avg = state["square_avg"]._data
        extra = [state[k]._data for k in ("momentum_buffer", "grad_avg") if k in state]
        if backend.is_device_array(param):
            lines = _rmsprop_lines(centered, momentum > 0, group["maximize"],
                                   bool(group["weight_decay"]))
            outs = "T param, T square_avg" + (", T momentum_buffer" if momentum > 0 else "") \
                + (", T grad_avg" if centered else "")
            kernel = fused(_RMSPROP_IN, outs, lines, "gpudl_rmsprop")
            kernel(grad, neg_lr, alpha, 1 - alpha, group["eps"], group["weight_decay"],
                   momentum, param, square_avg, *extra)
            return
        g = effective_grad(param, grad, group["weight_decay"], group["maximize"])
        avg = self._scratch(param)
        square_avg_(square_avg, g, alpha, avg)
        if centered:
            grad_avg = state["grad_avg"]._data
            lerp_(grad_avg, g, 1 - alpha, avg)
            np.multiply(grad_avg, grad_avg, out=avg)
            np.subtract(square_avg, avg, out=avg)
            np.sqrt(avg, out=avg)
        else:
            np.sqrt(square_avg, out=avg)
        avg += group["eps"]
        if momentum > 0:
            buf = state["momentum_buffer"]._data
            buf *= momentum
            np.divide(g, avg, out=avg)
            buf += avg
            np.multiply(buf, neg_lr, out=avg)
        else:
            np.divide(g, avg, out=avg)
            avg *= neg_lr
        param += avg


class Adagrad(Optimizer):
    """torch.optim.Adagrad: ``s += g * g``, ``p -= clr * g / (sqrt(s) + eps)`` with
    ``clr = lr / (1 + (t - 1) * lr_decay)``; the sums start at ``initial_accumulator_value``.

    Example:
        >>> opt = gd.optim.Adagrad(model.parameters(), lr=1e-2)
    """

    _reads_lr_as_number = True        # a Tensor lr is read each step

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps,
                        maximize=maximize, **implementation_hints(foreach, differentiable, fused=fused))
        super().__init__(params, defaults)
        for group in self.param_groups:        # torch creates Adagrad's state eagerly
            for p in group["params"]:
                self.state[p] = self._init_state(p, group)

    def _check_group(self, group):
        check_lr("Adagrad", group["lr"], check_range)
        for what in ("lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            check_range("Adagrad", what, group[what])

    def _init_state(self, param, group):
        return {"step": 0, "sum": new_state_buffer(param, group["initial_accumulator_value"])}

    def _update_batched(self, updates, group):
        """Float32/float64 contiguous device tensors: one multi-tensor launch per dtype (and
        ``SLOTS`` tensors), each tensor's decayed lr given with it."""
        if isinstance(group["lr"], Tensor):
            return updates
        batches, rest = {}, []
        for param, grad, state in updates:
            arrays = (grad, param, state["sum"]._data)
            if multi_tensor.batchable(*arrays) and isinstance(state["step"], int):
                batches.setdefault(param.dtype, []).append((arrays, state))
            else:
                rest.append((param, grad, state))
        update = _multi_tensor_adagrad(group["maximize"], bool(group["weight_decay"]))
        for batch in batches.values():
            decayed = []
            for _, state in batch:
                state["step"] = step = state["step"] + 1
                decayed.append((-(group["lr"] / (1 + (step - 1) * group["lr_decay"])),))
            multi_tensor.launch(update, [arrays for arrays, _ in batch],
                                (group["eps"], group["weight_decay"]), decayed)
        return rest

    def _update(self, param, grad, state, group):
        state["step"] = step = state["step"] + 1
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        state_sum = state["sum"]._data
        if backend.is_device_array(param):
            lines = _adagrad_lines(group["maximize"], bool(group["weight_decay"]))
            kernel = fused(_ADAGRAD_IN, "T param, T state_sum", lines, "gpudl_adagrad")
            kernel(grad, -clr, group["eps"], group["weight_decay"], param, state_sum)
            return
        g = effective_grad(param, grad, group["weight_decay"], group["maximize"])
        scratch = np.multiply(g, g, out=self._scratch(param))
        state_sum += scratch
        np.sqrt(state_sum, out=scratch)
        scratch += group["eps"]
        np.divide(g, scratch, out=scratch)
        scratch *= -clr
        param += scratch
