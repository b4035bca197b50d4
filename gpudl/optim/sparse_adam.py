"""SparseAdam (torch.optim.SparseAdam): Adam that updates only the rows a gradient touches.

torch feeds it sparse gradients (``nn.Embedding(sparse=True)``), whose rows are the looked-up
ones, and updates the moments and parameters of those rows only. gpudl has no sparse tensors:
an embedding's gradient is dense, zero in every row no index picked, so a row takes part in a
step when its gradient holds a nonzero value (rows: dim 0; of a 1-D parameter, its elements).
torch's rule differs only for a looked-up row whose whole gradient is exactly zero: torch
updates it (its moments decay), gpudl leaves it. The formulas and their order of operations
are torch's, on the parameter's device, without a read.
"""

import math

from .. import backend
from ..tensor import Tensor
from .capturable import check_lr, lr_array
from .optimizer import Optimizer, check_betas, check_range, new_state_buffer


class SparseAdam(Optimizer):
    """torch.optim.SparseAdam: for each row ``r`` touched by the gradient ``g`` (see the module)
    ``m[r] += (1 - beta1) * (g[r] - m[r])``, ``v[r] += (1 - beta2) * (g[r]**2 - v[r])`` and
    ``p[r] -= lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m[r] / (sqrt(v[r]) + eps)``; untouched
    rows keep their moments and values. Args as torch's: lr (> 0, a number or a one-element
    tensor), betas, eps (> 0), maximize.

    Example:
        >>> table = gd.nn.Embedding(1000, 16, sparse=True)
        >>> opt = gd.optim.SparseAdam(table.parameters(), lr=1e-2)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, maximize=maximize))

    def _check_group(self, group):
        check_lr("SparseAdam", group["lr"], check_range)
        if not isinstance(group["lr"], Tensor) and not group["lr"] > 0:
            raise ValueError(f"SparseAdam: invalid learning rate {group['lr']!r} (expected > 0)")
        check_range("SparseAdam", "epsilon", group["eps"])
        if not group["eps"] > 0:
            raise ValueError(f"SparseAdam: invalid epsilon value {group['eps']!r} (expected > 0)")
        check_betas("SparseAdam", group["betas"])

    def _init_state(self, param, group):
        return {"step": 0, "exp_avg": new_state_buffer(param),
                "exp_avg_sq": new_state_buffer(param)}

    def _update(self, param, grad, state, group):
        xp = backend.get_array_module(param)
        beta1, beta2 = group["betas"]
        grad = -grad if group["maximize"] else grad
        state["step"] += 1
        step = state["step"]
        touched = grad != 0
        if grad.ndim > 1:
            touched = touched.any(axis=tuple(range(1, grad.ndim)), keepdims=True)
        exp_avg, exp_avg_sq = state["exp_avg"]._data, state["exp_avg_sq"]._data
        numer = (grad - exp_avg) * (1 - beta1) + exp_avg            # torch: update + old
        second = (grad * grad - exp_avg_sq) * (1 - beta2) + exp_avg_sq
        exp_avg[...] = xp.where(touched, numer, exp_avg)
        exp_avg_sq[...] = xp.where(touched, second, exp_avg_sq)
        step_size = lr_array(group["lr"]) * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        change = -step_size * (numer / (xp.sqrt(second) + group["eps"]))
        param += xp.where(touched, change, 0).astype(param.dtype, copy=False)
