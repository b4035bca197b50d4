"""Adafactor (torch.optim.Adafactor, torch 2.5+): Adam-like steps whose second moment of a
matrix is kept factored, as a row and a column average (Shazeer & Stern 2018).

Array operations on the parameter's device (NumPy or CuPy). torch reads two norms back to the
host each step (for the relative step size and the update clipping); here they stay device
arrays, so a step does not synchronise.
"""

import math

import numpy as np

from .. import backend
from ..tensor import Tensor
from .capturable import check_lr
from .optimizer import Optimizer, _state_value, check_range


def _lerp_(start, end, weight):
    """``start.lerp_(end, weight)`` in place with torch's two-sided formula (any device)."""
    if abs(weight) < 0.5:
        start += (end - start) * weight
    else:
        start[...] = end - (end - start) * (1 - weight)


def _mean_square(g, axis):
    """The mean of the squares of ``g`` along ``axis``, kept as a size-1 dim."""
    return (g * g).sum(axis=axis, keepdims=True) / g.shape[axis]


class Adafactor(Optimizer):
    """torch.optim.Adafactor: for step t, ``beta2 = 1 - t**beta2_decay``; a matrix's (or the
    last two dims') gradient squares are averaged per row (``row_var``) and per column
    (``col_var``), their outer product over the mean row average estimating the second moment
    (a vector keeps the full ``variance``); the update ``g / sqrt(max(estimate, eps1**2))`` is
    divided by ``max(1, rms(update) / d)`` and scaled by
    ``max(eps2, rms(param)) * min(lr, 1/sqrt(t))``. ``weight_decay`` multiplies the parameter
    by ``1 - lr * weight_decay`` first. ``eps1=None`` is the dtype's machine epsilon.

    Example:
        >>> opt = gd.optim.Adafactor(model.parameters(), lr=1e-2)
    """

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0, *, foreach=None, maximize=False):
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d,
                        weight_decay=weight_decay, maximize=maximize,
                        foreach=foreach)   # torch's Adafactor has no `differentiable`
        super().__init__(params, defaults)

    def _check_group(self, group):
        check_lr("Adafactor", group["lr"], check_range)
        if not group["beta2_decay"] <= 0:
            raise ValueError(f"Adafactor: beta2_decay should be <= 0 but is: "
                             f"{group['beta2_decay']}")
        eps = group["eps"]
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise ValueError(f"Adafactor: eps must be a pair (eps1 or None, eps2), got {eps!r}")
        if eps[0] is not None:
            check_range("Adafactor", "epsilon1", eps[0])
        check_range("Adafactor", "epsilon2", eps[1])
        check_range("Adafactor", "clipping threshold d", group["d"], 1.0)
        check_range("Adafactor", "weight_decay", group["weight_decay"])

    def _init_state(self, param, group):
        xp = backend.get_array_module(param._data)
        dtype = np.float32 if param.dtype.itemsize < 4 else param.dtype   # master weights
        shape = param.shape

        def zeros(shape):
            return Tensor._make(xp.zeros(shape, dtype), False, None, 0, param.device)

        if len(shape) > 1:
            return {"step": 0, "row_var": zeros(shape[:-1] + (1,)),
                    "col_var": zeros(shape[:-2] + (1, shape[-1]))}
        return {"step": 0, "variance": zeros(shape)}

    def _update(self, param, grad, state, group):
        xp = backend.get_array_module(param)
        lr = float(group["lr"]) if isinstance(group["lr"], Tensor) else group["lr"]
        eps1, eps2 = group["eps"]
        eps1 = np.finfo(param.dtype).eps if eps1 is None else eps1
        grad = -grad if group["maximize"] else grad
        state["step"] += 1
        step = float(state["step"])
        weight = step ** group["beta2_decay"]                 # 1 - beta2 at this step
        rms_param = xp.sqrt((param * param).sum() / max(param.size, 1))
        alpha = xp.maximum(eps2, rms_param) * min(lr, 1 / math.sqrt(step))
        if group["weight_decay"]:
            param *= 1 - lr * group["weight_decay"]
        if grad.ndim > 1:
            row_var, col_var = state["row_var"]._data, state["col_var"]._data
            _lerp_(row_var, _mean_square(grad, -1), weight)
            _lerp_(col_var, _mean_square(grad, -2), weight)
            estimate = row_var @ col_var
            estimate /= xp.maximum(row_var.mean(axis=-2, keepdims=True), eps1)
        else:
            variance = state["variance"]._data
            _lerp_(variance, grad * grad, weight)
            estimate = variance.copy()
        update = grad / xp.sqrt(xp.maximum(estimate, eps1 * eps1))
        rms_update = xp.sqrt((update * update).sum() / max(update.size, 1))
        denom = xp.maximum(1.0, rms_update / group["d"])
        param -= (update * (alpha / denom)).astype(param.dtype, copy=False)

    def _loaded_state(self, index, key, value, param):
        """row_var and col_var have their own shapes (the parameter's with a dim of 1)."""
        if key in ("row_var", "col_var"):
            shape = self._init_state(param, None)[key].shape
            stand_in = Tensor._make(np.empty(shape), False, None, 0, "cpu")
            loaded = _state_value("Adafactor", index, key, value, stand_in)
            array = backend.to_device_array(loaded._data.astype(
                np.float32 if param.dtype.itemsize < 4 else param.dtype), param.device)
            return Tensor._make(array, False, None, 0, param.device)
        return super()._loaded_state(index, key, value, param)
