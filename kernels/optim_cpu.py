"""SGD's and Adam's CPU updates of one parameter in one Numba pass.

gpudl/optim's NumPy updates run a parameter through 6 (SGD with momentum) to 14 (Adam) in-place
ufunc calls, each a pass over the arrays and ~0.5-1 us of call overhead, which is what a small
model's optimizer step costs. These loops do the same operations on each element in the same
order and in the parameter's dtype, with each scalar rounded to that dtype first (as NumPy rounds
a Python float mixed with a float32 array), without fused multiply-adds (no fastmath): the same
bits as the NumPy path. Scalars are passed already rounded (``scalars``); every loop takes flat
C-contiguous arrays of one float32/float64 dtype (``applies``). One thread: an optimizer step's
parameters are small, and a large one is a handful of memory passes either way. Compiled on
first use and cached on disk.
"""

import numpy as np

_FLOATS = (np.float32, np.float64)


def applies(param, *arrays):
    """Whether the loops take ``param`` with ``arrays`` (its gradient and state buffers): NumPy
    float32/float64 arrays of one dtype and shape, all C-contiguous."""
    if type(param) is not np.ndarray or param.dtype not in _FLOATS or not param.flags.c_contiguous:
        return False
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype != param.dtype or a.shape != param.shape \
                or not a.flags.c_contiguous:
            return False
    return True


def lerp_weights(weight, dtype):
    """``(small, w, 1 - w)`` of optimizer.lerp_'s two-sided formula, rounded as it rounds them:
    ``small`` chooses ``start + w * (end - start)`` over ``end - (1 - w) * (end - start)``."""
    w = dtype.type(weight)
    return abs(weight) < 0.5, w, 1 - w


def sgd_loop():
    """The compiled ``_sgd_loop`` (its arguments: see there)."""
    return _loops()["sgd"]


def adam_loop():
    """The compiled ``_adam_loop`` (its arguments: see there)."""
    return _loops()["adam"]


# ------------------------------------------------------------------ loops
# They take the C-contiguous arrays as they are (of any number of dimensions: one compilation
# each) and flatten them inside: no reshape call per array and update in Python.
def _sgd_loop(param, grad, buf, first, weight_decay, momentum, dampening_weight, neg_lr,
              decayed, has_momentum, dampening, nesterov, maximize):
    """SGD's update (optim/sgd.py) of C-contiguous arrays: ``buf`` the momentum buffer (any array
    without momentum), written whole on the ``first`` step; weight_decay, momentum,
    dampening_weight (1 - dampening) and neg_lr (-lr) in the arrays' dtype; then whether there
    is weight decay, momentum, dampening, nesterov, maximize."""
    param, grad, buf = param.reshape(-1), grad.reshape(-1), buf.reshape(-1)
    for i in range(param.size):
        d = -grad[i] if maximize else grad[i]       # optimizer.effective_grad
        if decayed:
            d = param[i] * weight_decay - grad[i] if maximize else grad[i] + param[i] * weight_decay
        if has_momentum:
            if first:
                b = d
            else:
                b = buf[i] * momentum + (d * dampening_weight if dampening else d)
            buf[i] = b
            d = d + b * momentum if nesterov else b
        param[i] = param[i] + d * neg_lr


def _adam_loop(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, maximize, coupled,
               decoupled, weight_decay, decay, beta2, beta2_weight, eps, small, w, one_minus_w,
               bias_correction2_sqrt, neg_step_size):
    """Adam's update (optim/adam.py) of C-contiguous arrays; ``max_exp_avg_sq`` without
    amsgrad a scratch array (written, its values unused); flags amsgrad, maximize, coupled and
    decoupled weight decay; then in the arrays' dtype weight_decay, decay (1 - lr *
    weight_decay), beta2, beta2_weight (1 - beta2), eps, ``lerp_weights(1 - beta1)`` and the
    step's bias_correction2_sqrt and neg_step_size.

    Each option's alternatives are both computed and one kept (branch-free), and every array
    written every time: branches on the flags inside the loop kept LLVM from vectorising it
    (2.6 ns a float32 value instead of 0.2)."""
    param, grad, exp_avg, exp_avg_sq = (param.reshape(-1), grad.reshape(-1),
                                        exp_avg.reshape(-1), exp_avg_sq.reshape(-1))
    max_exp_avg_sq = max_exp_avg_sq.reshape(-1)
    for i in range(param.size):
        p = param[i] * decay if decoupled else param[i]
        gr = grad[i]
        ascent = p * weight_decay - gr               # optimizer.effective_grad
        descent = gr + p * weight_decay
        if coupled:
            g = ascent if maximize else descent
        else:
            g = -gr if maximize else gr
        diff = g - exp_avg[i]                        # optimizer.lerp_
        near = exp_avg[i] + diff * w
        far = g - diff * one_minus_w
        m = near if small else far
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2 + g * beta2_weight * g     # optimizer.square_avg_
        exp_avg_sq[i] = v
        top = max_exp_avg_sq[i]                      # np.maximum: NaN wins
        top = v if not top >= v and top == top else top
        max_exp_avg_sq[i] = top
        v = top if amsgrad else v
        param[i] = p + m / (np.sqrt(v) / bias_correction2_sqrt + eps) * neg_step_size


_compiled = {}


def _loops():
    if not _compiled:
        import numba

        jit = numba.njit(cache=True, nogil=True, error_model="numpy")
        _compiled.update(sgd=jit(_sgd_loop), adam=jit(_adam_loop))
    return _compiled
